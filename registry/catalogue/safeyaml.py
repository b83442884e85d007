"""Reading YAML that strangers wrote, with bounds.

Release files may come from anywhere (``SAEREG_RELEASES``, plugin packages, pull
requests), so the parser must not let a file do more than describe data: a duplicate key
would silently replace a block (a second ``saes:``), aliases let a 1 KB file expand into
gigabytes ("billion laughs"), and deep nesting exhausts the C loader's stack. Before any
document is built, the event stream (flat, non-recursive) is checked: no anchors or
aliases, nesting at most `MAX_DEPTH` deep, no key twice in one mapping. Bytes must be
UTF-8; other encodings are named as such rather than misread.
"""

from __future__ import annotations

import codecs
import gc
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from saereg.base.errors import ReleaseFileError

#: Release files nest 5 levels deep (release → saes → entry → sha256 → value).
MAX_DEPTH = 32
#: The largest built-in release file is ~160 KB.
MAX_BYTES = 16 * 1024 * 1024


def decode(data: bytes, where: str) -> str:
    """UTF-8 bytes → text; a UTF-16/32 file or stray bytes are reported as what they are."""
    if len(data) > MAX_BYTES:
        raise ReleaseFileError(
            f"{where}: {len(data)} bytes is too large for a release file "
            f"(limit {MAX_BYTES // (1024 * 1024)} MiB)"
        )
    for bom, name in (
        (codecs.BOM_UTF32_LE, "UTF-32"),
        (codecs.BOM_UTF32_BE, "UTF-32"),
        (codecs.BOM_UTF16_LE, "UTF-16"),
        (codecs.BOM_UTF16_BE, "UTF-16"),
    ):
        if data.startswith(bom):
            raise ReleaseFileError(
                f"{where}: the file is encoded as {name}; release files are UTF-8 "
                "(re-save it as UTF-8)"
            )
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ReleaseFileError(
            f"{where}:{line}: not UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
            "release files are UTF-8 (re-save it as UTF-8)"
        ) from None
    if "\x00" in text:
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise ReleaseFileError(
            f"{where}:{line}: contains a NUL character (is it UTF-16 without a byte-order "
            "mark, or a binary file?); release files are UTF-8 text"
        )
    return text


def loader_class() -> type:
    """PyYAML's safe loader class, the C one where libyaml is there (~10x faster)."""
    import yaml  # deferred: yaml

    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml is ~10x faster


def _fail(where: str, mark: Any, message: str) -> ReleaseFileError:
    line = f":{mark.line + 1}" if mark is not None else ""
    return ReleaseFileError(f"{where}{line}: {message}")


def check_structure(text: str, where: str) -> None:
    """Refuse anchors/aliases, nesting deeper than MAX_DEPTH and duplicate keys.

    Works on the parser's event stream, so nothing is built and no recursion happens.
    Raises ReleaseFileError (with the line) for these and for malformed YAML.
    """
    import yaml  # imported on first use: the resolve path reads compiled JSON only

    # One frame per open collection: [is_mapping, expecting_a_key, {key: line}].
    stack: list[list[Any]] = []
    try:
        for event in yaml.parse(text, Loader=loader_class()):
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                raise _fail(
                    where,
                    event.start_mark,
                    "YAML anchors and aliases (&name, *name, <<) are not allowed in release "
                    "files; write the values out",
                )
            is_node = isinstance(
                event, yaml.ScalarEvent | yaml.MappingStartEvent | yaml.SequenceStartEvent
            )
            if is_node and stack and stack[-1][0]:
                frame = stack[-1]
                if frame[1]:
                    if not isinstance(event, yaml.ScalarEvent):
                        raise _fail(where, event.start_mark, "mapping keys must be plain text")
                    first = frame[2].get(event.value)
                    if first is not None:
                        raise _fail(
                            where,
                            event.start_mark,
                            f"duplicate key {event.value!r} (first at line {first}); the "
                            "second would silently replace the first",
                        )
                    frame[2][event.value] = event.start_mark.line + 1
                frame[1] = not frame[1]
            if isinstance(event, yaml.MappingStartEvent | yaml.SequenceStartEvent):
                if len(stack) >= MAX_DEPTH:
                    raise _fail(
                        where,
                        event.start_mark,
                        f"nested more than {MAX_DEPTH} levels deep; release files are flat",
                    )
                stack.append([isinstance(event, yaml.MappingStartEvent), True, {}])
            elif isinstance(event, yaml.MappingEndEvent | yaml.SequenceEndEvent):
                stack.pop()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        context = getattr(exc, "context", None)
        raise _fail(
            where, mark, f"not valid YAML: {problem}" + (f" ({context})" if context else "")
        ) from None


def load(text: str, where: str, *, scan: bool = True) -> Any:
    """Parse one YAML document after `check_structure` has passed (`scan=False` skips it,
    for files shipped with saereg: `saereg validate` checks those in CI)."""
    import yaml  # deferred: yaml

    if scan:
        check_structure(text, where)
    try:
        return yaml.load(text, Loader=loader_class())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise _fail(where, mark, f"not valid YAML: {problem}") from None


@contextmanager
def gc_paused() -> Iterator[None]:
    """Parsing allocates thousands of small objects, which can trigger a full garbage
    collection; in a process that imported torch that walk alone costs ~80 ms. Parsed
    documents hold no reference cycles, so the collector is paused meanwhile."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def load_yaml(text: str, where: str, *, scan: bool = True) -> Any:
    """`load` with the garbage collector paused: the way to parse a whole release file."""
    with gc_paused():
        return load(text, where, scan=scan)
