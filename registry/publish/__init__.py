"""What saereg writes for people: the generated docs and the browsable catalogue page,
the contributor scaffold (`saereg new`, `sync-check`) and the upstream importer."""
