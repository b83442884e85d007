"""The `saereg` command line: `app` is the entry point with its error boundary; each
other module adds one group of commands."""

from saereg.cli.app import main

__all__ = ["main"]
