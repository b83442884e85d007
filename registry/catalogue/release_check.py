"""The safety rules of `saereg validate`, enforced again wherever a release is loaded.

`validate` runs in CI for the built-in catalogue, but release files also arrive through
``SAEREG_RELEASES`` and plugin packages, and those are read by `resolve`, `list` and
`fetch` directly. Two levels:

* `safety_problems` — cheap, pure Python, run on every read of a release that is not
  built in (the built-in ones pass `saereg validate` in CI): names that could leave the
  cache directory or shadow another release, paths and pins that could leave the
  repository or base URL, duplicate ids.
* `schema_problems` — the full schema and the reviewer's blocking lints, run once per
  change of a release file that is not built in (its result is cached with the parsed
  document), so `resolve` on the built-in catalogue never imports jsonschema.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from saereg.base.errors import ReleaseFileError
from saereg.catalogue.refs import RELEASE_NAME_RE

MAX_NAME = 100
REPO_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
#: Problems listed in full in one message; the rest are counted.
SHOWN = 3


def check_relative(path: str) -> str | None:
    """Why `path` could escape its repository, or None if it is a safe relative path."""
    if path.startswith(("/", "\\", "~")) or re.match(r"^[A-Za-z]:", path):
        return "is absolute; paths are relative to the repository"
    if "://" in path:
        return "is a URL; paths are relative to the repository (or base_url)"
    if "\\" in path:
        return "contains a backslash; use '/' between folders"
    parts = path.split("/")
    if ".." in parts:
        return "contains '..'; a path must stay inside its repository"
    if any(p in ("", ".") for p in parts[:-1]) or path.endswith("/."):
        return "contains an empty or '.' segment"
    return None


#: Segments of plain characters, none starting with '.': safe without further checks.
_PLAIN_PATH = re.compile(r"^(?:[\w+=,@-][\w.+=,@-]*/)*[\w+=,@-][\w.+=,@-]*/?$", re.ASCII)


def unsafe_path(path: Any) -> str | None:
    """Why `path` is not a safe relative path inside a repository, or None."""
    if not isinstance(path, str) or not path:
        return "is not a non-empty string"
    if _PLAIN_PATH.match(path):  # the common case, ~10x cheaper than the checks below
        return None
    decoded = unquote(path)
    for candidate in dict.fromkeys((path, decoded)):
        why = check_relative(candidate)
        if why:
            return why + (" (once %-decoded)" if candidate is not path else "")
    if any(ord(c) < 32 for c in decoded):
        return "contains control characters"
    return None


def unsafe_release_name(name: Any) -> str | None:
    if not isinstance(name, str) or len(name) > MAX_NAME or not RELEASE_NAME_RE.match(name):
        return (
            f"release name {name!r} is not letters, digits, '.', '_' or '-' (at most 100, "
            "starting with a letter or digit)"
        )
    return None


def safety_problems(doc: Mapping[str, Any], source_file: str | None) -> list[str]:
    """Every way this (migrated) release document could escape or take over something."""
    problems: list[str] = []
    name = doc.get("name")
    why = unsafe_release_name(name)
    if why:
        problems.append(why)
    elif source_file and Path(source_file).name != f"{name}.yaml":
        problems.append(
            f"release name {name!r} does not match the file name {Path(source_file).name!r}"
        )
    repo_id, base_url = doc.get("repo_id"), doc.get("base_url")
    if (repo_id is None) == (base_url is None):
        problems.append("exactly one of 'repo_id' and 'base_url' must be set")
    if repo_id is not None and not (isinstance(repo_id, str) and REPO_ID_RE.match(repo_id)):
        problems.append(f"repo_id {repo_id!r} is not a Hugging Face repository id ORG/NAME")
    if base_url is not None:
        parts = urlsplit(base_url) if isinstance(base_url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
            problems.append(f"base_url {base_url!r} is not an http(s) URL")
    saes = doc.get("saes")
    if not isinstance(saes, list):
        return [*problems, "'saes' must be a list"]
    ids: set[str] = set()
    neuronpedia: set[str] = set()
    for i, sae in enumerate(saes):
        if not isinstance(sae, Mapping):
            problems.append(f"saes[{i}] is not a mapping")
            continue
        sae_id = sae.get("id")
        if not isinstance(sae_id, str) or not sae_id or len(sae_id) > 1000:
            problems.append(f"saes[{i}].id must be a non-empty string")
        elif sae_id in ids:
            problems.append(f"saes[{i}]: duplicate SAE id {sae_id!r}")
        else:
            ids.add(sae_id)
        why = unsafe_path(sae.get("path"))
        if why:
            problems.append(f"saes[{i}].path {sae.get('path')!r} {why}")
        np_id = sae.get("neuronpedia")
        if np_id is not None:
            if not isinstance(np_id, str):
                problems.append(f"saes[{i}].neuronpedia must be a string")
            elif np_id in neuronpedia:
                problems.append(f"saes[{i}]: duplicate Neuronpedia id {np_id!r}")
            neuronpedia.add(str(np_id))
        pins = sae.get("sha256")
        if pins is None:
            continue
        if not isinstance(pins, Mapping):
            problems.append(f"saes[{i}].sha256 must map file paths to checksums")
            continue
        for key, value in pins.items():
            why = unsafe_path(key)
            if why:
                problems.append(f"saes[{i}].sha256 key {key!r} {why}")
            if not isinstance(value, str) or not SHA256_RE.match(value):
                problems.append(f"saes[{i}].sha256[{key!r}] is not 64 lowercase hex digits")
    return problems


def schema_problems(text: str, source_file: str) -> list[str]:
    """The schema's findings for one file (the reviewer's lints stay advisory here: a
    release with, say, an unstated hook layer still loads; `saereg validate` blocks it)."""
    # deferred: yaml and jsonschema, through the schema checks
    from saereg.catalogue.schema import check_schema, parse_release_text

    parsed = parse_release_text(text, source_file)
    if parsed.doc is not None:
        check_schema(parsed)
    return [
        f"line {f.line}: {f.json_path}: {f.message}" if f.line else f"{f.json_path}: {f.message}"
        for f in parsed.findings
        if f.severity == "error"
    ]


def raise_if(problems: list[str], where: str) -> None:
    """One ReleaseFileError for all `problems` (the first few in the message)."""
    if not problems:
        return
    shown = "; ".join(problems[:SHOWN])
    more = f" (and {len(problems) - SHOWN} more)" if len(problems) > SHOWN else ""
    raise ReleaseFileError(
        f"{where}: invalid release file, not loaded: {shown}{more}. "
        f"Run `saereg validate {where}` for every problem with its line.",
        tuple(problems),
    )
