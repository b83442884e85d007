"""What every command shares: exit codes and how values and JSON are printed."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from typing import Any

#: 0 ok, 1 failure, 2 bad usage or a reference/value that names nothing.
EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2

#: What `ArgumentParser.add_subparsers` returns: command modules add their parsers to it.
Subparsers = argparse._SubParsersAction


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def print_json_records(records: list[dict[str, Any]]) -> None:
    """A JSON array with one compact record per line.

    `json.dump(..., indent=2)` runs the pure-Python encoder (the C one cannot indent):
    140,000 records took ~12 s that way. Each record goes through the C encoder instead,
    and the array still reads (and greps) a record a line."""
    encode = json.JSONEncoder(separators=(",", ":"), default=str).encode
    write_json_lines(
        "\n".join(map(encode, records[i : i + 2048])).encode() for i in range(0, len(records), 2048)
    )


def write_json_lines(chunks: Iterable[bytes]) -> None:
    """A JSON array of the objects in `chunks` (each chunk: objects a line, no commas),
    written as it comes, one object a line."""
    sys.stdout.flush()
    buffer = getattr(sys.stdout, "buffer", None)  # None: a text stream (redirect_stdout)
    write = buffer.write if buffer is not None else lambda b: sys.stdout.write(b.decode())
    first = True
    for chunk in chunks:
        if not chunk:
            continue
        write(b"[\n" if first else b",\n")
        write(chunk.replace(b"}\n{", b"},\n{"))  # a raw newline is never inside a string
        first = False
    write(b"[]\n" if first else b"\n]\n")
    (buffer or sys.stdout).flush()


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
