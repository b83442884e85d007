"""SAEs no release file describes: local folders and files, and uncatalogued ``hf:`` repos.

`resolve_source` turns such a reference into what a catalogue reference resolves to (a
`Release`, an `SAEEntry` and the `Format` that reads it), so `saereg.loading` runs the
same fetch → convert → canonical cache → module pipeline on it:

* the files are listed (a local folder, or the repository online or in the HF cache);
* every installed format's `Format.detect` says where its SAEs are and how sure it is;
  two formats equally sure of one SAE, or several SAEs where one was asked for, is an
  error that says how to choose (``format=``, ``sae=``), never a guess;
* what the files cannot say comes from the caller's overrides (hook_name, model, k, ...);
  hooks the format's path conventions imply fill in what is still unknown.

The canonical cache key: ``local`` + the SAE's folder or file + a digest of the overrides,
at a revision that digests every file it reads (a changed folder converts again); for a
repository ``hf:ORG/REPO`` + the path, at the commit the files came from.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from saereg.base.errors import ArgumentError, SaeregError, UnknownReferenceError
from saereg.catalogue.models import canonical_model
from saereg.catalogue.records import Release, SAEEntry, layer_of_hook
from saereg.catalogue.refs import close_matches, parse_hf_reference
from saereg.formats import (
    SMALL_FILE_LIMIT,
    CanonicalFileError,
    Format,
    Match,
    MultiLayerFormat,
    get_registry,
)
from saereg.store import hub_listing, local
from saereg.store.fetch import FetchError, RemoteFile

#: SAE-entry fields a caller may state for an SAE whose files do not (keyword overrides).
ENTRY_OVERRIDES = (
    "hook_name",
    "hook_name_out",
    "hook_layer",
    "hf_hook_name",
    "k",
    "context_size",
    "normalize_activations",
    "norm_scaling_factor",
    "dataset",
)
#: Every keyword `load_sae`/`load_config`/`fetch_canonical` take for such an SAE.
OVERRIDES = ("format", "sae", "model", *ENTRY_OVERRIDES)
_INTS = {"hook_layer", "k", "context_size"}
#: Fields the format's path conventions may fill in when neither files nor caller say.
_FALLBACKS = ("hook_name", "hook_layer", "hf_hook_name", "context_size", "dataset")
#: Paths list with numbers as numbers: ae_200.pt before ae_1000.pt, layer_2 before layer_10.
_NUMBER = re.compile(r"[0-9]+")
LOCAL_RELEASE = local.LOCAL_RELEASE
HF_PREFIX = local.HF_RELEASE_PREFIX


class SourceError(SaeregError):
    """A local folder or repository cannot be read as SAE files (exit code 1)."""


def is_path_reference(ref: object) -> bool:
    """Whether `ref` names a local file or folder: an `os.PathLike`, or text starting with
    ``/``, ``./``, ``../`` or ``~`` (a bare word is a release name)."""
    if isinstance(ref, os.PathLike):
        return True
    if not isinstance(ref, str):
        return False
    text = ref.strip()
    return text in (".", "..", "~") or text.startswith(("/", "./", "../", "~/", ".\\", "..\\"))


def check_overrides(overrides: Mapping[str, Any], what: str = "load_sae()") -> dict[str, Any]:
    """The overrides given (None means not given), checked: unknown names get close
    matches, ints must be ints."""
    out: dict[str, Any] = {}
    for key, value in overrides.items():
        if key not in OVERRIDES:
            near = close_matches(key, OVERRIDES)
            raise ArgumentError(
                f"{what} got an unexpected keyword argument {key!r}; for an SAE no release "
                f"describes it takes {', '.join(OVERRIDES)}."
                + (f" Did you mean: {', '.join(near)}?" if near else "")
            )
        if value is None:
            continue
        if key in _INTS and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise ArgumentError(f"{what}: {key}={value!r} must be a non-negative integer")
        if key == "norm_scaling_factor" and not isinstance(value, (int, float)):
            raise ArgumentError(f"{what}: norm_scaling_factor={value!r} must be a number")
        if key not in _INTS and key != "norm_scaling_factor" and not isinstance(value, str):
            raise ArgumentError(f"{what}: {key}={value!r} must be a string")
        out[key] = value
    return out


@dataclass(frozen=True)
class Candidate:
    """One SAE the formats found: its path in the listing and the formats that claim it,
    most confident first."""

    path: str
    claims: tuple[tuple[Format, Match], ...]


@dataclass
class Listing:
    """Files to detect in: a local folder (or a file's folder) or a repository."""

    label: str  # what the user named, for messages
    files: list[str]
    read_small: Callable[[str], bytes]
    root: Path | None = None  # local: the folder the listing is relative to
    repo_id: str | None = None
    commit: str | None = None
    target: str = ""  # the path inside the listing the user named ("" = all of it)
    is_file: bool = False
    read: list[str] = field(default_factory=list)


def _reader(read: Callable[[str], bytes], seen: list[str]) -> Callable[[str], bytes]:
    def read_small(path: str) -> bytes:
        seen.append(path)
        try:
            return read(path)
        except FetchError as exc:
            raise CanonicalFileError(str(exc)) from None

    return read_small


def local_listing(ref: str | os.PathLike[str]) -> Listing:
    """The listing of a local folder, or of the folder of a local file (which it targets)."""
    text = os.fspath(ref)
    path = Path(text).expanduser()
    try:
        path.stat()
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnknownReferenceError(
                f"{text}: a symbolic link loop (it leads back to itself); it names no file"
            ) from None
        if isinstance(exc, FileNotFoundError):
            if os.path.lexists(path):
                raise UnknownReferenceError(
                    f"{text}: a symbolic link to nothing ({os.readlink(path)} does not exist)"
                ) from None
            raise UnknownReferenceError(f"{text} does not exist (no such file or folder)") from None
        raise SourceError(f"{text}: cannot read it: {exc.strerror or exc}") from None
    path = path.resolve()
    if path.is_dir():
        try:
            return _local(text, path, local.list_folder(path), "")
        except local.LocalSourceError as exc:
            raise SourceError(str(exc)) from None
    files = sorted(p.name for p in path.parent.iterdir() if p.is_file())
    return _local(text, path.parent, files, path.name)


def _local(label: str, root: Path, files: list[str], target: str) -> Listing:
    seen: list[str] = []
    read = _reader(lambda p: local.read_small(root, p, SMALL_FILE_LIMIT), seen)
    return Listing(label, files, read, root=root, target=target, is_file=bool(target), read=seen)


def located(listing: Listing, fmt: str | None = None) -> tuple[Listing, list[Candidate]]:
    """The listing to read a local file in, and its candidates: a file no format finds in
    its own folder is tried one folder up as ``FOLDER/FILE`` (``checkpoints/ae_100.pt``
    beside config.json), listing only that folder's files and the file's folder's."""
    found = candidates(listing, fmt)
    root = listing.root
    if found or not listing.is_file or root is None or root.parent == root:
        return listing, found
    try:
        files = [p.name for p in root.parent.iterdir() if p.is_file()]
    except OSError:
        return listing, found
    files = sorted(files + [f"{root.name}/{name}" for name in listing.files])
    wider = _local(listing.label, root.parent, files, f"{root.name}/{listing.target}")
    return (wider, wide) if (wide := candidates(wider, fmt)) else (listing, found)


def hub_source_listing(repo_id: str, revision: str | None, path: str, label: str) -> Listing:
    """The listing of a repository (online from the hub, offline from the HF cache)."""
    commit, files = hub_listing.hub_listing(repo_id, revision)
    seen: list[str] = []
    read = _reader(lambda p: hub_listing.hub_read_small(repo_id, commit, p, SMALL_FILE_LIMIT), seen)
    return Listing(
        label, files, read, repo_id=repo_id, commit=commit, target=path, is_file=path in files
    )


def candidates(listing: Listing, fmt: str | None = None) -> list[Candidate]:
    """The SAEs of `listing` (under its target), each with the formats that claim it."""
    found = get_registry().detect(listing.files, listing.read_small, only=fmt)
    by_path: dict[str, list[tuple[Format, Match]]] = {}
    for format_, match in found:
        for path in match.paths:
            by_path.setdefault(path, []).append((format_, match))
    target = listing.target
    if target:
        exact = {p: c for p, c in by_path.items() if p == target}
        if not listing.is_file:  # a folder: and the SAEs it holds
            exact.update({p: c for p, c in by_path.items() if p.startswith(target + "/")})
        if not exact and listing.is_file and listing.root is not None:  # its folder's SAE
            exact = {p: c for p, c in by_path.items() if p == target.rpartition("/")[0]}
        by_path = exact
    order = sorted(by_path, key=lambda p: _NUMBER.sub(lambda n: n[0].zfill(12), p))
    return [Candidate(p, tuple(by_path[p])) for p in order]


def _dictionary(candidate: Candidate) -> bool:
    """Whether the best claim on `candidate` is a multi-layer dictionary's folder."""
    return isinstance(candidate.claims[0][0], MultiLayerFormat)


def outermost(found: Sequence[Candidate]) -> list[Candidate]:
    """`found` less what other formats claim inside a multi-layer dictionary's folder: its
    layers (``mntss_clt``, ``mwhanna_transcoder`` read them alone) load by naming them
    (``sae=PATH`` or the file); its own format's claims there (checkpoints) stay."""
    folders = {c.path: c.claims[0][0] for c in found if _dictionary(c)}

    def hidden(c: Candidate) -> bool:  # inside a dictionary's folder, another format's claim
        up = [f for f in folders if f != c.path and (f == "" or c.path.startswith(f + "/"))]
        return any(folders[f] is not c.claims[0][0] for f in up)

    return [c for c in found if not hidden(c)]


def _no_sae(listing: Listing, fmt: str | None) -> UnknownReferenceError:
    names = sorted(get_registry().formats)
    if fmt is None and not listing.files:
        what = "an empty folder" if listing.repo_id is None else "an empty repository"
        return UnknownReferenceError(f"{listing.label} is {what}: there is no SAE to load.")
    shown = ", ".join(listing.files[:6]) + (", …" if len(listing.files) > 6 else "")
    where = f"{listing.label} ({len(listing.files)} files: {shown})"
    if listing.target and listing.repo_id is not None:
        near = close_matches(listing.target, listing.files)
        return UnknownReferenceError(
            f"no SAE at {listing.target!r} in {listing.repo_id} that a format recognises "
            f"(installed: {', '.join(names)}); `saereg detect hf:{listing.repo_id}` lists "
            "what it holds.",
            near,
        )
    if fmt is not None:
        return UnknownReferenceError(f"format {fmt!r} finds no SAE in {where}.")
    return UnknownReferenceError(
        f"no installed format recognises the files in {where}; installed formats: "
        f"{', '.join(names)}. If it is one of them, pass format=NAME (CLI: --source-format)."
    )


def _claimed_by_others(listing: Listing, fmt: str, sae: str | None) -> None:
    """Raise when the format the caller named finds no SAE where other formats do: the
    error names what the files are (each claim's format, kind and reason) and how to load
    them, instead of letting the named format fail on a file it expected."""
    others = [c for c in outermost(candidates(listing)) if sae is None or c.path == sae.strip("/")]
    if not others:
        return
    shown = []
    for c in others[:4]:
        other, match = c.claims[0]
        sure = _dictionary(c) and match.confidence >= 0.5
        what = f", a {other.kind} (multi-layer dictionary)" if sure else ""
        shown.append(
            f"{c.path or '.'}: format {other.name!r}{what}, confidence "
            f"{match.confidence:.2f} ({match.reason})"
        )
    best = others[0].claims[0][0].name
    if max(c.claims[0][1].confidence for c in others) < 0.5:  # unsure claims: their reasons
        how = "what it is and how to load it is in the reason above"
    elif any(_dictionary(c) for c in others):
        how = (
            f"load it as detected (no format=, or format={best!r}) with "
            "saereg.load_dictionary(REF) or saereg.load_sae(REF), which return the dictionary"
        )
    else:
        how = f"load it as detected: saereg.load_sae(REF) with no format= (or format={best!r})"
    raise ArgumentError(
        f"{listing.label}: format {fmt!r} finds no SAE there, but detection does: "
        + "; ".join(shown)
        + (f"; and {len(others) - 4} more" if len(others) > 4 else "")
        + f". {how[0].upper()}{how[1:]}."
    )


def choose(
    listing: Listing, found: Sequence[Candidate], fmt: str | None, sae: str | None
) -> tuple[Format, Match | None, str]:
    """The one SAE the reference names: (format, its match, path in the listing)."""
    if sae is not None:
        picked = [c for c in found if c.path == sae.strip("/")]
        if not picked:
            paths = [c.path or "." for c in found]
            raise UnknownReferenceError(
                f"{listing.label} holds no SAE {sae!r} (it holds: {', '.join(paths) or 'none'})",
                close_matches(sae, paths),
            )
        found = picked
    else:  # a folder that is itself an SAE names it; what it holds is picked with sae=
        own = [c for c in found if c.path == listing.target and not listing.is_file]
        found = own or outermost(found)
    if not found:
        if fmt is not None:
            _claimed_by_others(listing, fmt, sae)
        if fmt is not None and (listing.is_file or listing.repo_id is None):
            # the caller names the format; the file (or the folder) is the SAE
            return get_registry().format(fmt), None, listing.target
        raise _no_sae(listing, fmt)
    if len(found) > 1:
        shown = ", ".join(f"{c.path or '.'} ({c.claims[0][0].name})" for c in found[:8]) + (
            ", …" if len(found) > 8 else ""
        )
        how = (
            f"name one as hf:{listing.repo_id}/PATH"
            if listing.repo_id
            else "pass sae=PATH (CLI: --sae) or name its own folder or file"
        )
        raise UnknownReferenceError(
            f"{listing.label} holds {len(found)} SAEs: {shown}; {how} (`saereg detect` lists them)."
        )
    best = found[0]
    top = best.claims[0][1].confidence
    tied = [fm for fm in best.claims if fm[1].confidence == top]
    if len(tied) > 1:
        names = ", ".join(f"{f.name} ({m.reason})" for f, m in tied)
        raise UnknownReferenceError(
            f"{listing.label}: {len(tied)} formats recognise {best.path or 'it'} equally: {names}. "
            f"Choose with format=NAME (CLI: --source-format NAME), e.g. format={tied[0][0].name!r}."
        )
    format_, match = best.claims[0]
    return format_, match, best.path


def _digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:12]


def resolve_source(
    ref: str | os.PathLike[str], overrides: Mapping[str, Any], revision: str | None = None
) -> tuple[Release, SAEEntry, Format, str | None]:
    """A local path or uncatalogued ``hf:`` reference → (release, entry, format, revision)."""
    given = check_overrides(overrides)
    fmt_name, sae = given.pop("format", None), given.pop("sae", None)
    if fmt_name is not None:
        get_registry().format(fmt_name)  # an unknown format: say so before listing anything
    model = given.pop("model", None)
    if is_path_reference(ref):
        listing = local_listing(ref)
    else:
        text = str(ref)
        repo_id, ref_revision, path = parse_hf_reference(text)
        if ref_revision and revision and ref_revision != revision:
            raise ArgumentError(
                f"{text} names revision {ref_revision!r} but revision={revision!r} was passed"
            )
        path = "" if path == "." else path  # the repository itself (a dictionary's root)
        listing = hub_source_listing(repo_id, ref_revision or revision, path, text)
    listing, found = located(listing, fmt_name)
    chosen, _match, path = choose(listing, found, fmt_name, sae)
    if model is None:  # what the publisher's config names (as `saereg detect` shows it)
        model = _stated_model(listing, chosen, path)
    if model:  # one name for a model, as the catalogue's releases have (`model="gpt2"`)
        model = canonical_model(model)
    release, entry = _records(listing, chosen, path, given, model)
    if isinstance(chosen, MultiLayerFormat):
        layers = _match.n_layers.get(path) if _match is not None else None
        entry = dataclasses.replace(entry, kind=chosen.kind, n_layers=layers)
        return release, entry, chosen, listing.commit
    wrapped = DetectedFormat(chosen, listing)
    return release, entry, wrapped, listing.commit


def _stated_model(listing: Listing, fmt: Format, path: str) -> str | None:
    """The model the SAE's own configs name; None when they name none or cannot be read
    (loading goes on without a model, as before)."""
    try:
        named = fmt.model_named(listing.files, listing.read_small, path)
    except (SaeregError, OSError, ValueError):
        return None
    return named[0] if named is not None else None


def _records(
    listing: Listing, fmt: Format, path: str, given: Mapping[str, Any], model: str | None
) -> tuple[Release, SAEEntry]:
    fields = {k: v for k, v in given.items() if k in ENTRY_OVERRIDES}
    if listing.repo_id is not None:
        if not path and not isinstance(fmt, MultiLayerFormat):
            raise UnknownReferenceError(
                f"{listing.label}: the SAE's files are at the top of {listing.repo_id}; saereg "
                "reads SAEs from a folder or file inside it (download the repository with "
                "`hf download` and load the folder)."
            )
        path = path or "."  # a dictionary at the top: the repository
        release = Release(
            name=HF_PREFIX + listing.repo_id,
            format=fmt.name,
            publisher=listing.repo_id.split("/", 1)[0],
            model=model or "",
            revision=listing.commit,
            saes=(),
            repo_id=listing.repo_id,
        )
        sae_id = path + (f"~{_digest(fields)}" if fields else "")
        return release, SAEEntry(id=sae_id, path=path, **fields)
    assert listing.root is not None
    root = listing.root
    if not path:  # the folder (or the folder of the file) named is itself the SAE
        path, root = root.name, root.parent
    leaf = path.rstrip("/").rsplit("/", 1)[-1][:80]
    sae_id = f"{leaf}~{_digest([str(root / path), fields, model, fmt.name])}"
    release = Release(
        name=LOCAL_RELEASE,
        format=fmt.name,
        publisher=LOCAL_RELEASE,
        model=model or "",
        revision=None,
        saes=(),
        base_url=local.local_release_url(root),
        description=str(root / path),
    )
    return release, SAEEntry(id=sae_id, path=path, **fields)


class DetectedFormat(Format):
    """A format as it reads a detected SAE: the files it names, less optional ones the
    listing lacks (no request for a file known to be absent); after converting, what is
    still unknown of the hooks from the format's path conventions, and a missing TopK k
    named as an error that says which keyword supplies it."""

    def __init__(self, inner: Format, listing: Listing) -> None:
        self.inner, self.listing = inner, listing
        self.name, self.summary = inner.name, inner.summary

    @property
    def loads(self) -> bool:
        return self.inner.loads

    def describe(self, release: Release, entry: SAEEntry) -> dict[str, Any]:
        return self.inner.describe(release, entry)

    def detect(self, listing: Sequence[str], read_small: Any) -> Match | None:
        return self.inner.detect(listing, read_small)

    def model_named(
        self, listing: Sequence[str], read_small: Any, path: str
    ) -> tuple[str, str] | None:
        return self.inner.model_named(listing, read_small, path)

    def _present(self, release: Release, path: str) -> bool:
        root = local.local_root(release)
        if root is not None:
            return (root / path).is_file()
        return path in set(self.listing.files)

    def files(self, release: Release, entry: SAEEntry) -> list[RemoteFile]:
        return [
            f
            for f in self.inner.files(release, entry)
            if not f.optional or self._present(release, f.path)
        ]

    def convert(
        self, release: Release, entry: SAEEntry, local_files: Mapping[str, Path]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        config, tensors = self.inner.convert(release, entry, local_files)
        return self._complete(release, entry, config), tensors

    def config_only(
        self,
        release: Release,
        entry: SAEEntry,
        local_files: Mapping[str, Path],
        tensor_shapes: Mapping[str, Mapping[str, tuple[str, tuple[int, ...]]]],
    ) -> dict[str, Any] | None:
        config = self.inner.config_only(release, entry, local_files, tensor_shapes)
        return None if config is None else self._complete(release, entry, config)

    def _complete(
        self, release: Release, entry: SAEEntry, config: dict[str, Any]
    ) -> dict[str, Any]:
        out = dict(config)
        if out.get("architecture") == "topk" and not out.get("k"):
            if not entry.k:
                raise CanonicalFileError(
                    f"{self.listing.label}: a TopK SAE, but its files do not say k (how many "
                    "latents it keeps); pass k=N (CLI: --k N)"
                )
            out["k"] = entry.k
        try:
            derived = self.inner.describe(release, entry)
        except (ValueError, KeyError, TypeError):
            derived = {}
        for key in ENTRY_OVERRIDES:  # a None from the format must not hide what the user said
            if key in out and out[key] is None and getattr(entry, key) is not None:
                del out[key]
        for key in _FALLBACKS:
            if out.get(key) is None and getattr(entry, key) is None and derived.get(key):
                out[key] = derived[key]
        if out.get("hook_layer") is None and entry.hook_layer is None:
            out["hook_layer"] = layer_of_hook(out.get("hook_name") or entry.hook_name)
        unknown_out = out.get("hook_name_out") is None and entry.hook_name_out is None
        if out.get("transcoder") and unknown_out and derived.get("hook_name_out"):
            out["hook_name_out"] = derived["hook_name_out"]
        return out


# --------------------------------------------------------------------------- reporting


@dataclass(frozen=True)
class Found:
    """One SAE `detect_report` found, with a reference that loads exactly it."""

    path: str
    ref: str
    sae: str | None  # the `sae=` keyword the reference needs, if any
    claims: tuple[tuple[str, float, str], ...]  # (format, confidence, reason), best first
    kind: str | None = None  # a multi-layer dictionary's kind (clt, transcoder_set, ...)
    n_layers: int | None = None  # and its layer (or site) count
    model: str | None = None  # the model its own config names, as written there
    model_from: str | None = None  # and where: "FILE KEY"


@dataclass(frozen=True)
class Report:
    """What `saereg detect` prints: the listing, what was read, the SAEs found."""

    source: str
    repo_id: str | None
    commit: str | None
    root: str | None
    n_files: int
    read: tuple[str, ...]
    saes: tuple[Found, ...]


def detect_report(
    ref: str | os.PathLike[str], fmt: str | None = None, sae: str | None = None
) -> Report:
    """Every SAE a local path or ``hf:`` reference holds, and the formats claiming each;
    for the SAE `sae` names (or the only one), the model its config files name."""
    if fmt is not None:
        get_registry().format(fmt)
    if str(ref).strip().startswith(HF_PREFIX):
        repo_id, revision, path = parse_hf_reference(str(ref))
        path = "" if path == "." else path
        listing = hub_source_listing(repo_id, revision, path, str(ref))
    else:  # anything else names a local file or folder (no catalogue to confuse it with)
        listing = local_listing(ref)
    listing, every = located(listing, fmt)
    found = outermost(every)
    if not found:
        raise _no_sae(listing, fmt)
    saes = []
    for c in found:
        claims = tuple((f.name, m.confidence, m.reason) for f, m in c.claims)
        best, match = c.claims[0]
        layered: dict[str, Any] = {}
        if isinstance(best, MultiLayerFormat):
            layered = {"kind": best.kind, "n_layers": match.n_layers.get(c.path)}
        if (len(found) == 1 and sae is None) or sae == c.path:
            named = best.model_named(listing.files, listing.read_small, c.path)
            if named is not None:
                layered.update(model=named[0], model_from=named[1])
        if listing.repo_id is not None:
            at = f"hf:{listing.repo_id}@{listing.commit}"
            ref_ = f"{at}/{c.path}" if c.path else at
            saes.append(Found(c.path, ref_, None, claims, **layered))
            continue
        assert listing.root is not None
        here = listing.root / c.path if c.path else (listing.root if not listing.is_file else None)
        if here is not None and here.exists():
            saes.append(Found(c.path, str(here), None, claims, **layered))
        else:  # a path that is no file (a layer of a cross-layer transcoder), or the file's folder
            target = listing.root if not listing.is_file else listing.root / listing.target
            saes.append(Found(c.path, str(target), c.path or None, claims, **layered))
    return Report(
        str(ref),
        listing.repo_id,
        listing.commit,
        None if listing.root is None else str(listing.root),
        len(listing.files),
        tuple(dict.fromkeys(listing.read)),
        tuple(saes),
    )
