"""Getting bytes and keeping them: hub and URL downloads, the canonical safetensors file
and its config, entries read in place from the hub cache, integrity digests, and
saereg's own cache with its temporary files.

It works on tensors and files; it never builds a module and never knows a format."""
