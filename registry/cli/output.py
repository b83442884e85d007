"""What every command shares: exit codes and how values and JSON are printed."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

#: 0 ok, 1 failure, 2 bad usage or a reference/value that names nothing.
EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2

#: What `ArgumentParser.add_subparsers` returns: command modules add their parsers to it.
Subparsers = argparse._SubParsersAction


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def fmt(value: Any) -> str:
    """A value as a table cell: None is 'unknown', lists are comma-separated."""
    if value is None:
        return "unknown"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    return str(value)
