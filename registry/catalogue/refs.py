"""Parsing the ways a user names an SAE.

Three spellings are accepted:

* ``RELEASE/SAE_ID`` — the release name never contains '/', the SAE id may
  (``gemma-scope-2b-pt-res/layer_12/width_16k/average_l0_82``);
* a Neuronpedia source id ``MODEL/LAYER-SET`` (``gpt2-small/8-res-jb``);
* ``hf:ORG/REPO[@REVISION]/PATH`` — a path inside a Hugging Face repository, at a
  branch, tag or commit (default: the release's pin, or main for a repository no
  release describes).

Which of the first two a string is depends on the catalogue (is the first part a release
name?), so parsing returns candidates and the resolver decides.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import unquote

from saereg.base.errors import UnknownReferenceError

RELEASE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
NEURONPEDIA_RE = re.compile(r"^[^/\s]+/[^/\s]+$")
#: Longer words get no did-you-mean suggestions.
MAX_COMPARED = 256
HF_REPO_PATH_RE = re.compile(
    r"^([A-Za-z0-9][A-Za-z0-9._-]*)/([A-Za-z0-9][A-Za-z0-9._-]*)(?:@([A-Za-z0-9][A-Za-z0-9._-]*))?(?:/(.*))?$"
)


@dataclass(frozen=True)
class Reference:
    """A parsed reference: `kind` is 'release', 'hf' or 'bare'."""

    text: str
    kind: str
    release: str | None = None
    sae_id: str | None = None
    repo_id: str | None = None
    path: str | None = None
    revision: str | None = None  # hf: references only, from ``@REVISION``

    @property
    def could_be_neuronpedia(self) -> bool:
        return self.kind == "release" and bool(NEURONPEDIA_RE.match(self.text))


def parse_reference(text: str) -> Reference:
    """Split a reference into its parts; raises UnknownReferenceError for malformed text."""
    ref = text.strip()
    if not ref:
        raise UnknownReferenceError("Empty SAE reference; expected RELEASE/SAE_ID.")
    if ref.startswith("hf:"):
        repo_id, revision, path = parse_hf_reference(ref)
        if not path:
            raise UnknownReferenceError(
                f"Malformed reference {text!r}: expected hf:ORG/REPO[@REVISION]/PATH "
                "(for example hf:jbloom/GPT2-Small-SAEs-Reformatted/blocks.8.hook_resid_pre)."
            )
        return Reference(ref, "hf", repo_id=repo_id, path=path, revision=revision)
    release, sep, sae_id = ref.partition("/")
    if not sep:
        return Reference(ref, "bare", release=release)
    if not sae_id:
        raise UnknownReferenceError(
            f"Malformed reference {text!r}: nothing after '/'; expected RELEASE/SAE_ID."
        )
    return Reference(ref, "release", release=release, sae_id=sae_id)


def parse_hf_reference(text: str) -> tuple[str, str | None, str]:
    """``hf:ORG/REPO[@REVISION][/PATH]`` → (repo id, revision or None, path or "").

    A path that could leave the repository (absolute, ``..``, %-encoded tricks, control
    characters) is an UnknownReferenceError: it names nothing inside the repository."""
    ref = text.strip()
    match = HF_REPO_PATH_RE.match(ref[3:]) if ref.startswith("hf:") else None
    if not match:
        raise UnknownReferenceError(
            f"Malformed reference {text!r}: expected hf:ORG/REPO[@REVISION]/PATH "
            "(for example hf:jbloom/GPT2-Small-SAEs-Reformatted/blocks.8.hook_resid_pre)."
        )
    raw = match.group(4) or ""
    path = raw.strip("/")
    if raw.startswith("/") or "//" in path:
        raise UnknownReferenceError(f"reference {text!r}: path {raw!r} is not a relative path.")
    if path:
        where = f"reference {text!r} (a path must stay inside {match.group(1)}/{match.group(2)})"
        check_relative_path(path, what=where)
        decoded = unquote(path)
        check_relative_path(decoded, what=where + ", once %-decoded")
        if any(ord(c) < 32 for c in decoded):
            raise UnknownReferenceError(f"{where}: path {path!r} contains control characters.")
    return f"{match.group(1)}/{match.group(2)}", match.group(3), path


def check_relative_path(path: str, what: str) -> None:
    """Refuse paths that could leave the repository they belong to."""
    if path.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", path):
        raise UnknownReferenceError(f"{what}: path {path!r} is absolute; paths are relative.")
    if ".." in re.split(r"[/\\]", path):
        raise UnknownReferenceError(f"{what}: path {path!r} contains '..'.")


def best_matches(groups: Iterable[tuple[str, Iterable[str]]], n: int = 3) -> tuple[str, ...]:
    """Rank candidates from several pools, each compared with its own word, best first."""
    scored: list[tuple[float, str]] = []
    for word, candidates in groups:
        for cand in close_matches(word, candidates, n=n):
            score = difflib.SequenceMatcher(None, word, cand).ratio()
            scored.append((score, cand))
    scored.sort(key=lambda t: -t[0])
    out: list[str] = []
    for _, cand in scored:
        if cand not in out:
            out.append(cand)
    return tuple(out[:n])


def close_matches(word: str, candidates: Iterable[str], n: int = 3) -> tuple[str, ...]:
    """Up to `n` candidates that look like `word`, best first."""
    if len(word) > MAX_COMPARED:  # difflib is quadratic; nothing that long is a typo
        return ()
    pool = list(candidates)
    found = difflib.get_close_matches(word, pool, n=n, cutoff=0.6)
    if len(found) < n:
        lowered = word.lower()
        for cand in pool:
            if len(found) >= n:
                break
            if cand not in found and (lowered in cand.lower() or cand.lower() in lowered):
                found.append(cand)
    return tuple(found[:n])
