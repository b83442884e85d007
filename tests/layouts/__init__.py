"""Tiny SAEs in each publisher's exact file layout, one module per format.

Each module `tests/layouts/<format>.py` (named after the `format:` value in release files)
exposes `CASES: list[LayoutCase]`. The catalogue-wide test serves every case's files from
the local fake hub, writes a release file around it, loads it with `saereg.load_sae` and
compares encode/decode/forward with the case's `reference`, which is the publisher's math
written independently in the test (never saereg's plugin or module code).
"""
