"""A JSON Schema validator for the few keywords saereg's canonical config schema uses.

Importing jsonschema costs ~0.15 s (attrs, referencing, format checkers): more than the
rest of a first `load_sae` of a multi-GB SAE read in place. The canonical config is
validated on every conversion, so it is checked here against the same schema file
(`schemas/sae.v1.json` stays the one definition). A keyword this module does not know
raises `UnsupportedSchema`, and the tests compare its verdicts with jsonschema's, so the
schema cannot silently outgrow it. Release files keep using jsonschema (schema.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

#: Keywords that only annotate.
_ANNOTATIONS = {"$schema", "$id", "title", "description", "$defs", "default", "examples"}
_TYPES = {
    "object": lambda v: isinstance(v, Mapping),
    "array": lambda v: isinstance(v, list | tuple),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


class UnsupportedSchema(Exception):
    """The schema uses a keyword this validator does not implement."""


def _same(a: Any, b: Any) -> bool:
    """JSON equality: true is not 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return bool(a == b)


def iter_errors(
    schema: Mapping[str, Any], value: Any, root: Mapping[str, Any] | None = None, path: tuple = ()
) -> Iterator[tuple[tuple, str]]:
    """(JSON path, message) for every violation of `schema` by `value`."""
    root = root if root is not None else schema
    unknown = set(schema) - _ANNOTATIONS - set(_CHECKS)
    if unknown:
        raise UnsupportedSchema(f"unsupported JSON Schema keyword(s) {sorted(unknown)}")
    for key, arg in schema.items():
        check = _CHECKS.get(key)
        if check is not None:
            yield from check(arg, value, schema, root, path)


def _ref(arg: str, value: Any, schema: Any, root: Any, path: tuple) -> Iterator[tuple]:
    if not arg.startswith("#/"):
        raise UnsupportedSchema(f"only local $ref are supported, not {arg!r}")
    target: Any = root
    for part in arg[2:].split("/"):
        target = target[part]
    yield from iter_errors(target, value, root, path)


def _type(arg: Any, value: Any, schema: Any, root: Any, path: tuple) -> Iterator[tuple]:
    names = [arg] if isinstance(arg, str) else list(arg)
    if not any(_TYPES[n](value) for n in names):
        yield path, f"{value!r} is not of type {' or '.join(names)}"


def _enum(arg: Any, value: Any, schema: Any, root: Any, path: tuple) -> Iterator[tuple]:
    if not any(_same(value, option) for option in arg):
        yield path, f"{value!r} is not one of {arg!r}"


def _const(arg: Any, value: Any, schema: Any, root: Any, path: tuple) -> Iterator[tuple]:
    if not _same(value, arg):
        yield path, f"{arg!r} was expected"


def _properties(arg: Any, value: Any, schema: Any, root: Any, path: tuple) -> Iterator[tuple]:
    if isinstance(value, Mapping):
        for key, sub in arg.items():
            if key in value:
                yield from iter_errors(sub, value[key], root, (*path, key))


def _required(arg: Any, value: Any, schema: Any, root: Any, path: tuple) -> Iterator[tuple]:
    if isinstance(value, Mapping):
        for key in arg:
            if key not in value:
                yield path, f"{key!r} is a required property"


def _additional(arg: Any, value: Any, schema: Any, root: Any, path: tuple) -> Iterator[tuple]:
    if not isinstance(value, Mapping):
        return
    extra = [k for k in value if k not in schema.get("properties", {})]
    if arg is False and extra:
        yield path, f"additional properties are not allowed ({', '.join(map(repr, extra))})"
    elif isinstance(arg, Mapping):
        for key in extra:
            yield from iter_errors(arg, value[key], root, (*path, key))


def _items(arg: Any, value: Any, schema: Any, root: Any, path: tuple) -> Iterator[tuple]:
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield from iter_errors(arg, item, root, (*path, i))


def _min_items(arg: Any, value: Any, schema: Any, root: Any, path: tuple) -> Iterator[tuple]:
    if isinstance(value, list | tuple) and len(value) < arg:
        yield path, f"{value!r} should have at least {arg} item(s)"


def _min_length(arg: Any, value: Any, schema: Any, root: Any, path: tuple) -> Iterator[tuple]:
    if isinstance(value, str) and len(value) < arg:
        yield path, f"{value!r} should be at least {arg} character(s) long"


def _minimum(arg: Any, value: Any, schema: Any, root: Any, path: tuple) -> Iterator[tuple]:
    if _TYPES["number"](value) and value < arg:
        yield path, f"{value!r} is less than the minimum of {arg}"


def _exclusive_minimum(
    arg: Any, value: Any, schema: Any, root: Any, path: tuple
) -> Iterator[tuple]:
    if _TYPES["number"](value) and value <= arg:
        yield path, f"{value!r} is less than or equal to the minimum of {arg}"


def _pattern(arg: Any, value: Any, schema: Any, root: Any, path: tuple) -> Iterator[tuple]:
    if isinstance(value, str) and not re.search(arg, value):
        yield path, f"{value!r} does not match {arg!r}"


def _one_of(arg: Any, value: Any, schema: Any, root: Any, path: tuple) -> Iterator[tuple]:
    matches = sum(not any(True for _ in iter_errors(sub, value, root, path)) for sub in arg)
    if matches != 1:
        which = "none" if matches == 0 else "more than one"
        yield path, f"{value!r} is valid under {which} of the given schemas"


_CHECKS = {
    "$ref": _ref,
    "type": _type,
    "enum": _enum,
    "const": _const,
    "properties": _properties,
    "required": _required,
    "additionalProperties": _additional,
    "items": _items,
    "minItems": _min_items,
    "minLength": _min_length,
    "minimum": _minimum,
    "exclusiveMinimum": _exclusive_minimum,
    "pattern": _pattern,
    "oneOf": _one_of,
}
