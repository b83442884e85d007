"""Checking release files against the JSON Schema, with errors people can act on.

Each problem becomes a `Finding` that names the file, the line, the JSON path
(``$.saes[3].d_sae``) and says in a plain sentence what is wrong. Line numbers come from
the YAML node tree, which is composed once and then constructed into Python objects.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from saereg.base.errors import ReleaseFileError
from saereg.catalogue.migrations import CURRENT_SCHEMA, migrate
from saereg.catalogue.refs import close_matches
from saereg.catalogue.release_dirs import builtin_schema_dir
from saereg.catalogue.safeyaml import check_structure, decode, loader_class

JsonPath = tuple[str | int, ...]


@dataclass(frozen=True)
class Finding:
    """One problem in one release file. `severity` is 'error' (blocking) or 'hint'."""

    file: str
    line: int | None
    path: JsonPath
    message: str
    severity: str = "error"
    code: str = "schema"

    @property
    def json_path(self) -> str:
        out = "$"
        for part in self.path:
            out += f"[{part}]" if isinstance(part, int) else f".{part}"
        return out

    def render(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.severity} [{self.code}] {self.json_path}: {self.message}"


@dataclass
class ParsedFile:
    """A release file parsed with its node-to-line map (None where it could not be parsed)."""

    file: str
    doc: dict[str, Any] | None
    lines: dict[JsonPath, int]
    findings: list[Finding]

    def line_of(self, path: JsonPath) -> int | None:
        """The line of `path`, or of its nearest ancestor that has one."""
        for cut in range(len(path), -1, -1):
            line = self.lines.get(tuple(path[:cut]))
            if line is not None:
                return line
        return None


def _line_map(node: yaml.Node, path: JsonPath, out: dict[JsonPath, int]) -> None:
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            _line_map(value_node, (*path, key), out)
            out[(*path, key)] = key_node.start_mark.line + 1  # the key's line reads best
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _line_map(item, (*path, i), out)


def parse_release_text(text: str, file: str) -> ParsedFile:
    lines: dict[JsonPath, int] = {}
    try:
        check_structure(text, file)
    except ReleaseFileError as exc:
        return _unreadable(file, exc, "yaml")
    try:
        loader = loader_class()(text)
        try:
            node = loader.get_single_node()
            doc = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        context = getattr(exc, "context", None)
        message = f"not valid YAML: {problem}" + (f" ({context})" if context else "")
        line = mark.line + 1 if mark is not None else None
        return ParsedFile(file, None, lines, [Finding(file, line, (), message, code="yaml")])
    if node is not None:
        _line_map(node, (), lines)
    if not isinstance(doc, dict):
        got = "an empty file" if doc is None else f"a {type(doc).__name__}"
        return ParsedFile(
            file,
            None,
            lines,
            [
                Finding(
                    file, 1, (), f"a release file must be a YAML mapping, got {got}", code="yaml"
                )
            ],
        )
    return ParsedFile(file, doc, lines, [])


@lru_cache(maxsize=4)
def load_schema(version: int = CURRENT_SCHEMA) -> dict[str, Any]:
    path = builtin_schema_dir() / f"release.v{version}.json"
    with path.open(encoding="utf-8") as fh:
        return json.load(fh)


@lru_cache(maxsize=4)
def _validator(version: int = CURRENT_SCHEMA) -> Any:
    from jsonschema import Draft202012Validator  # deferred: jsonschema

    schema = load_schema(version)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def check_schema(parsed: ParsedFile, *, invalid_too: bool = False) -> dict[str, Any] | None:
    """Migrate and validate `parsed.doc`; findings are appended to `parsed.findings`.

    Returns the migrated document when it is structurally valid, else None (with
    `invalid_too`, also when it migrated but breaks the schema: `validate` lints it too,
    so one run reports every problem).
    """
    assert parsed.doc is not None
    original_version = parsed.doc.get("schema")
    try:
        doc = migrate(parsed.doc, parsed.file)
    except ReleaseFileError as exc:
        message = str(exc).split(": ", 1)[-1]
        parsed.findings.append(
            Finding(
                parsed.file,
                parsed.line_of(("schema",)) or 1,
                ("schema",),
                message,
                code="schema-version",
            )
        )
        return None
    if original_version != CURRENT_SCHEMA:
        parsed.findings.append(
            Finding(
                parsed.file,
                parsed.line_of(("schema",)),
                ("schema",),
                f"written in schema version {original_version}; it was migrated in memory "
                f"— rewrite it as version {CURRENT_SCHEMA} (`saereg migrate {parsed.file}`)",
                severity="hint",
                code="old-schema",
            )
        )
    errors = sorted(_validator().iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
    for error in errors:
        path = tuple(error.absolute_path)
        for sub_path, message in _humanize(error):
            full = (*path, *sub_path)
            parsed.findings.append(Finding(parsed.file, parsed.line_of(full), full, message))
    return None if errors and not invalid_too else doc


_TYPE_WORDS = {
    "integer": "an integer",
    "number": "a number",
    "string": "a string",
    "object": "a mapping",
    "array": "a list",
    "null": "null",
    "boolean": "true or false",
}
_PATTERN_WORDS = {
    "revision": "a 40-character lowercase hexadecimal commit hash (or null)",
    "repo_id": "a Hugging Face repository id ORG/NAME",
    "base_url": "an http(s) URL ending in '/'",
    "name": "letters, digits, '.', '_' or '-', starting with a letter or digit",
    "format": "a lowercase plugin name such as gemma_scope",
    "neuronpedia": "a Neuronpedia source id MODEL/LAYER-SET, e.g. gpt2-small/8-res-jb",
    "id": "an id without spaces",
}


def _describe_value(value: Any) -> str:
    kind = {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "a boolean",
        list: "a list",
        dict: "a mapping",
        type(None): "null",
    }.get(type(value), type(value).__name__)
    shown = repr(value) if not isinstance(value, dict | list) else kind
    return shown if shown == kind else f"{shown} ({kind})"


def _humanize(error: Any) -> Iterator[tuple[JsonPath, str]]:
    validator = error.validator
    value = error.instance
    field = next((p for p in reversed(list(error.absolute_path)) if isinstance(p, str)), "")
    if validator == "required":
        missing = error.message.split("'")[1]
        yield (), f"missing required field {missing!r}"
    elif validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        for extra in sorted(set(value) - set(allowed)):
            hint = close_matches(extra, allowed, n=1)
            tip = f"; did you mean {hint[0]!r}?" if hint else f" (allowed: {', '.join(allowed)})"
            yield (extra,), f"unknown field {extra!r}{tip}"
    elif validator == "type":
        wanted = error.validator_value
        wanted = wanted if isinstance(wanted, list) else [wanted]
        words = " or ".join(_TYPE_WORDS.get(w, w) for w in wanted)
        yield (), f"expected {words}, got {_describe_value(value)}"
    elif validator == "enum":
        options = ", ".join("null" if o is None else str(o) for o in error.validator_value)
        yield (), f"{_describe_value(value)} is not one of: {options}"
    elif validator == "const" and field == "schema":
        yield (), f"schema version must be {error.validator_value}, got {value!r}"
    elif validator == "pattern":
        wanted = _PATTERN_WORDS.get(field, f"text matching {error.validator_value}")
        yield (), f"{value!r} is not {wanted}"
    elif validator in {"minimum", "exclusiveMinimum", "maximum", "minItems", "minLength"}:
        yield (), f"{_describe_value(value)} is out of range ({validator} {error.validator_value})"
    elif validator == "oneOf" and not error.absolute_path and isinstance(value, dict):
        both = "repo_id" in value and "base_url" in value
        yield (
            (),
            (
                "set only one of 'repo_id' and 'base_url'"
                if both
                else "missing 'repo_id' (a Hugging Face repository) or 'base_url' (plain URLs)"
            ),
        )
    elif validator in {"oneOf", "anyOf"}:
        context: Sequence[Any] = error.context or []
        types = [c.validator_value for c in context if c.validator == "type"]
        others = [c for c in context if c.validator != "type"]
        if others:
            yield from _humanize(min(others, key=lambda c: len(list(c.relative_path))))
        else:
            flat: list[str] = []
            for t in types:
                flat.extend(t if isinstance(t, list) else [t])
            words = " or ".join(dict.fromkeys(_TYPE_WORDS.get(t, t) for t in flat))
            yield (), f"expected {words}, got {_describe_value(value)}"
    else:
        yield (), error.message


def read_and_check(path: Path) -> ParsedFile:
    try:
        text = decode(path.read_bytes(), str(path))
    except OSError as exc:
        message = f"cannot read: {exc.strerror or exc}"
        return ParsedFile(str(path), None, {}, [Finding(str(path), None, (), message, code="io")])
    except ReleaseFileError as exc:
        return _unreadable(str(path), exc, "io")
    return parse_release_text(text, str(path))


def _unreadable(file: str, exc: ReleaseFileError, code: str) -> ParsedFile:
    """A file the safe reader refused, as one finding ('FILE:LINE: message' split up)."""
    line_text, _, message = str(exc).removeprefix(file).partition(": ")
    line = int(line_text[1:]) if line_text[1:].isdigit() else None
    return ParsedFile(file, None, {}, [Finding(file, line, (), message, code=code)])
