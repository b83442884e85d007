"""What exists: release files and their schema (safe YAML, migrations, lint), the models
table and hook sites, the compiled index, references and the resolver.

Nothing in this layer imports torch, downloads, or knows a publisher's file layout: it is
the resolve/list/validate path, which must stay fast."""
