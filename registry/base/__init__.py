"""The foundation every layer may use: the errors saereg raises, where it keeps files
(settings), its version, and plugin discovery (the entry points and the hooks they
implement). Nothing here knows a release, a tensor or a format."""
