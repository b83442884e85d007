"""The compiled catalogue index: every SAE of every release, as one row each.

`list`, Neuronpedia-id lookups and did-you-mean suggestions need the whole catalogue;
parsing hundreds of YAML files each time costs seconds, so the rows are compiled once:

* for the built-in releases, the index ships with saereg (``releases/compiled/index.json``,
  written by ``saereg docs`` from the release files and checked by ``saereg docs --check``
  in CI, like the generated pages), so the first `list` after ``pip install`` costs what a
  later one does. It names every file it was built from with its size and sha256; the
  first use on a machine checks those digests once and remembers the result (keyed by the
  files' size and mtime) in ``$SAEREG_CACHE/index``, so an edited checkout never reads a
  stale index;
* release directories of your own (``SAEREG_RELEASES``, plugins) are compiled into
  ``$SAEREG_CACHE/index/catalog-v4.json``, with a fingerprint of the files it was built
  from (name, size, mtime), and rebuilt only when one changes. The built-in rows come from
  the shipped index there too, so only your own files are parsed.

Both are sectioned files (compiled.encode_sectioned): a header with every release's
summary and the byte span of its rows, so `list --model M` parses only M's releases.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from operator import attrgetter
from pathlib import Path
from typing import Any, BinaryIO

from saereg.base.errors import CatalogueWarning
from saereg.catalogue.compiled import (
    encode_sectioned,
    index_dir,
    read_compiled,
    read_sectioned_header,
    write_bytes,
    write_compiled,
)
from saereg.catalogue.records import Release
from saereg.catalogue.release_dirs import (
    MODELS_FILE,
    builtin_release_dir,
    is_builtin,
    release_files,
)
from saereg.catalogue.release_files import read_releases
from saereg.catalogue.safeyaml import gc_paused

INDEX_VERSION = 4  # 3: rows carry the entry's kind; 4: sectioned, shipped with saereg
#: The shipped index of the built-in releases, relative to the built-in release directory.
SHIPPED_INDEX = "compiled/index.json"
#: Catalogue problems shown as warnings each time the index is used; the rest are counted.
SHOWN_PROBLEMS = 5

#: Columns of one SAE row in the index, in order.
ROW_FIELDS = (
    "release",
    "id",
    "path",
    "hook_name",
    "hook_layer",
    "d_sae",
    "d_in",
    "context_size",
    "normalize_activations",
    "architecture",
    "neuronpedia",
    "l0",
    "kind",
)
RELEASE_FIELDS = (
    "name",
    "format",
    "publisher",
    "model",
    "repo_id",
    "repo_aliases",
    "base_url",
    "file",
    "n_saes",
    "builtin",
)


class CatalogIndex:
    """Every release (a summary each) and one record per SAE (`ROW_FIELDS`, then the
    release's model, format and repository), with the problems found building it:
    release files left out (invalid) and ids claimed twice, one sentence each.

    Each release's records are kept as text, one JSON object a line without the fields
    the release gives (`release`, `model`, `format`, `repo_id`): parsed only when asked
    for (`records_of`), and written out as they are by `json_lines`, so `list --json`
    encodes nothing and `list --model M` reads only M's releases.

    (A plain class: this module is imported on the resolve path, and defining a
    dataclass costs about a millisecond.)"""

    __slots__ = (
        "_base",
        "_body",
        "_file",
        "_parsed",
        "_sections",
        "_spans",
        "problems",
        "releases",
    )

    def __init__(
        self,
        releases: dict[str, dict[str, Any]],
        sections: dict[str, bytes] | None = None,
        problems: tuple[str, ...] = (),
        *,
        file: BinaryIO | None = None,
        spans: dict[str, list[int]] | None = None,
        base: int = 0,
    ) -> None:
        self.releases, self.problems = releases, problems
        self._sections = sections if sections is not None else {}
        self._file, self._spans, self._base = file, spans or {}, base
        self._body: memoryview | None = None
        self._parsed: dict[str, list[dict[str, Any]]] = {}

    def __del__(self) -> None:
        file = getattr(self, "_file", None)  # the header's file, kept open for the sections
        if file is not None:
            file.close()

    def _section(self, name: str) -> bytes:
        data = self._sections.get(name)
        if data is not None:
            return data
        span = self._spans.get(name)
        if span is None or self._file is None:
            return b""
        if self._body is not None:
            return bytes(self._body[span[0] : span[1]])
        # The file stays open from the header's read, so a concurrent rewrite (an atomic
        # rename) cannot mix two versions.
        return os.pread(self._file.fileno(), span[1] - span[0], self._base + span[0])

    def _load_body(self, names: Sequence[str]) -> None:
        """Map the body when many sections are wanted: one mapping instead of many reads,
        and slicing it reads only the pages of the sections asked for (`list --model M` at
        ten times today's catalogue wants a tenth of a 40 MB file; reading it all cost
        more than parsing M's records)."""
        if self._file is not None and self._body is None and len(names) > 16:
            try:
                mapped = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
            except (OSError, ValueError):  # an empty or unmappable file: read it instead
                self._file.seek(self._base)
                self._body = memoryview(self._file.read())
            else:
                self._body = memoryview(mapped)[self._base :]

    def _release_fields(self, name: str) -> tuple[Any, Any, Any]:
        rel = self.releases[name]
        return rel["model"], rel["format"], rel["repo_id"] or rel["base_url"]

    def records_of(self, names: Iterable[str]) -> list[dict[str, Any]]:
        """The records of the releases `names`, in the order given."""
        names = list(names)
        self._load_body(names)
        out: list[dict[str, Any]] = []
        for name in names:
            records = self._parsed.get(name)
            if records is None:
                data = self._section(name)
                items = []
                if data:
                    with gc_paused():  # one line per record: never a raw newline inside
                        items = json.loads(b"[{" + data.replace(b"\n", b"},{") + b"}]")
                model, fmt, repo = self._release_fields(name)
                records = [
                    {"release": name, **item, "model": model, "format": fmt, "repo_id": repo}
                    for item in items
                ]
                self._parsed[name] = records
            out.extend(records)
        return out

    def records(self, rows: Sequence[Any] | None = None) -> list[dict[str, Any]]:
        """Every record, or those of `rows` (records, or rows in `ROW_FIELDS` order)."""
        if rows is None:
            return self.records_of(self.releases)
        out = []
        for row in rows:
            if isinstance(row, dict):
                out.append(row)
                continue
            model, fmt, repo = self._release_fields(row[0])
            rec = dict(zip(ROW_FIELDS, row, strict=True))
            rec["model"], rec["format"], rec["repo_id"] = model, fmt, repo
            out.append(rec)
        return out

    @property
    def rows(self) -> list[list[Any]]:
        """Every SAE as a list in `ROW_FIELDS` order, in catalogue order."""
        return self.rows_of(self.releases)

    def rows_of(self, names: Iterable[str]) -> list[list[Any]]:
        return [[r[f] for f in ROW_FIELDS] for r in self.records_of(names)]

    def json_lines(self, names: Iterable[str]) -> Iterator[bytes]:
        """The records of `names` as JSON objects (compact, as `json.dumps` with
        separators (",", ":") writes them), a chunk per release, no separators between:
        `list --json` writes them without parsing or encoding a single record."""
        names = list(names)
        self._load_body(names)
        for name in names:
            data = self._section(name)
            if not data:
                continue
            model, fmt, repo = self._release_fields(name)
            head = b'{"release":' + _dumps(name) + b","
            tail = (
                b',"model":' + _dumps(model) + b',"format":' + _dumps(fmt)
                + b',"repo_id":' + _dumps(repo) + b"}"
            )  # fmt: skip
            yield head + (tail + b"\n" + head).join(data.split(b"\n")) + tail

    def repo_names(self) -> dict[str, str]:
        """Every name a release's repository answers to (its repo_id and its former names,
        `repo_aliases`) → that repo_id."""
        out = {rel["repo_id"]: rel["repo_id"] for rel in self.releases.values() if rel["repo_id"]}
        for rel in self.releases.values():  # a current name is never taken over by an alias
            for alias in (rel.get("repo_aliases") or ()) if rel["repo_id"] else ():
                out.setdefault(alias, rel["repo_id"])
        return out

    def by_neuronpedia(self) -> dict[str, tuple[str, str]]:
        """Neuronpedia id → (release, SAE id); the first claim wins (built-in releases
        come first), later claims are in `problems`."""
        out: dict[str, tuple[str, str]] = {}
        for r in self.records():
            if r["neuronpedia"]:
                out.setdefault(r["neuronpedia"], (r["release"], r["id"]))
        return out

    def encode(self, header: dict[str, Any]) -> bytes:
        """The index as a sectioned file, with `header` (its stamp or sources) on top."""
        sections = {name: self._section(name) for name in self.releases}
        return encode_sectioned(
            {**header, "releases": self.releases, "problems": list(self.problems)}, sections
        )

    @classmethod
    def open(cls, path: Path) -> tuple[CatalogIndex, dict[str, Any]]:
        """(index, header) of the sectioned file at `path`: only the header is read now.
        OSError if unreadable; ValueError/KeyError/TypeError if damaged."""
        fh = path.open("rb")
        try:
            header, base = read_sectioned_header(fh)
            releases = header["releases"]
            spans = header["spans"]
            if not isinstance(releases, dict) or set(releases) != set(spans):
                raise ValueError("a damaged index header")
            problems = tuple(str(p) for p in header["problems"])
        except BaseException:
            fh.close()
            raise
        return cls(releases, None, problems, file=fh, spans=spans, base=base), header


def _dumps(value: Any) -> bytes:
    return json.dumps(value).encode()


def release_section(release: Release) -> bytes:
    """A release's records as the index keeps them: one JSON object a line, without the
    fields the release gives (see CatalogIndex).

    The records of a release are encoded in one call of the C encoder, then cut apart at
    `},{"id":`: every record is flat and starts with "id", and inside an encoded string a
    quote is always escaped (`\\"`), so that sequence occurs only between records; nor can
    an encoded string hold a raw newline. (One call per record took seconds at 140,000.)"""
    if not release.saes:
        return b""
    keys = ROW_FIELDS[1:]
    assert keys[0] == "id" and keys[-1] == "kind"
    values = attrgetter(*keys[:-1])  # then the kind the entry resolves to
    text = _ENCODE(
        [dict(zip(keys, (*values(e), e.resolved_kind), strict=True)) for e in release.saes]
    )
    return text[2:-2].replace('},{"id":', '\n"id":').encode()


#: What json.dumps(..., separators=(",", ":")) writes, without its per-call set-up.
_ENCODE = json.JSONEncoder(separators=(",", ":")).encode


# --------------------------------------------------------------------------- fingerprints


def _stat_row(path: str | Path, name: str) -> list[Any]:
    try:
        st = os.stat(path)
    except OSError:  # a dangling link: build_index reports it
        return [name, None, None]
    return [name, st.st_size, st.st_mtime_ns]


def _fingerprint(dirs: Sequence[Path]) -> list[list[Any]]:
    fp = [_stat_row(path, str(path)) for d in dirs for path in release_files(d)]
    # Rows hold canonical model names and derived widths: the models tables count too.
    for table in dict.fromkeys(d / MODELS_FILE for d in [builtin_release_dir(), *dirs]):
        if table.is_file():
            fp.append(_stat_row(table, str(table)))
    return fp


def _source_files(directory: Path) -> list[tuple[str, str]]:
    """(name relative to `directory`, path) of what a shipped index is built from: the
    release files (as `release_files` lists them) and the models table. Plain strings:
    this runs on every `list`, for thousands of files."""
    root = str(directory) + os.sep
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        names = []
    # As release_files() lists them, without a Path object per file.
    files = [(n, root + n) for n in names if n.endswith(".yaml") and not n.startswith(".")]
    table = root + MODELS_FILE
    if os.path.isfile(table):
        files.append((MODELS_FILE, table))
    return files


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def shipped_sources(directory: Path) -> list[list[Any]]:
    """[name, size, sha256] of every file a shipped index of `directory` is built from."""
    return [[name, os.stat(p).st_size, _sha256(p)] for name, p in _source_files(directory)]


# --------------------------------------------------------------------------- building


def build_index(dirs: Sequence[Path], shipped: CatalogIndex | None = None) -> CatalogIndex:
    """Parse the release files of `dirs` into an index (the built-in directory's rows are
    taken from `shipped` when given: it was checked against those very files)."""
    problems: list[str] = []
    if shipped is None:
        return index_of(read_releases(dirs, problems), problems)
    builtin_dir = builtin_release_dir()
    parse = [d for d in dirs if d != builtin_dir]
    return index_of(read_releases(parse, problems), problems, shipped)


def index_of(
    releases: Iterable[Release], problems: list[str], base: CatalogIndex | None = None
) -> CatalogIndex:
    """The index of `releases` (after those of `base`, whose names win), with `problems`
    (files left out while reading) and the claims two SAEs make on one id or path."""
    summaries: dict[str, dict[str, Any]] = {}
    sections: dict[str, bytes] = {}
    claims: dict[str, list[tuple[str, str | None, str]]] = {}  # release → (id, np id, path)
    builtin_dirs: dict[str, bool] = {}
    if base is not None:
        summaries.update(base.releases)
        sections.update((name, base._section(name)) for name in base.releases)
    for rel in releases:
        if rel.name in summaries:  # a built-in release of that name wins
            problems.append(
                f"{rel.source_file}: release {rel.name!r} is already defined by "
                f"{summaries[rel.name]['file']}; this copy is ignored"
            )
            continue
        folder = os.path.dirname(rel.source_file or "")
        if folder not in builtin_dirs:
            builtin_dirs[folder] = bool(folder) and is_builtin(Path(folder) / "x.yaml")
        summaries[rel.name] = {
            "name": rel.name,
            "format": rel.format,
            "publisher": rel.publisher,
            "model": rel.model,
            "repo_id": rel.repo_id,
            "repo_aliases": list(rel.repo_aliases),
            "base_url": rel.base_url,
            "file": rel.source_file,
            "n_saes": len(rel.saes),
            "builtin": builtin_dirs[folder],
        }
        sections[rel.name] = release_section(rel)
        claims[rel.name] = [(e.id, e.neuronpedia, e.path) for e in rel.saes]
    index = CatalogIndex(summaries, sections, ())
    index.problems = (*problems, *_claim_problems(index, claims))
    return index


def _claim_problems(
    index: CatalogIndex, known: Mapping[str, list[tuple[str, str | None, str]]]
) -> Iterable[str]:
    """Neuronpedia ids and hub paths claimed by two SAEs (the first claim keeps them).
    `known`: (id, Neuronpedia id, path) of releases at hand; the others are read."""
    claimed_np: dict[str, str] = {}
    builtin_paths: dict[tuple[str, str], str] = {}
    for name, rel in index.releases.items():
        entries = known.get(name)
        if entries is None:
            entries = [(r["id"], r["neuronpedia"], r["path"]) for r in index.records_of([name])]
        for sae_id, np_id, sae_path in entries:
            ref = f"{name}/{sae_id}"
            if np_id:
                first = claimed_np.setdefault(np_id, ref)
                if first != ref:
                    yield (
                        f"{rel['file']}: Neuronpedia id {np_id!r} of {ref} is already used by "
                        f"{first}, which keeps it"
                    )
            if rel["repo_id"]:
                key = (rel["repo_id"], sae_path.strip("/"))
                if rel["builtin"]:
                    builtin_paths.setdefault(key, ref)
                elif key in builtin_paths:
                    yield (
                        f"{rel['file']}: hf:{key[0]}/{key[1]} of {ref} is a built-in "
                        f"SAE ({builtin_paths[key]}), which keeps the reference"
                    )


def report_problems(index: CatalogIndex) -> None:
    """Each catalogue problem as a warning (one line each in the CLI)."""
    for problem in index.problems[:SHOWN_PROBLEMS]:
        warnings.warn(problem, CatalogueWarning, stacklevel=3)
    extra = len(index.problems) - SHOWN_PROBLEMS
    if extra > 0:
        warnings.warn(
            f"… and {extra} more catalogue problems (`saereg validate DIR` lists them)",
            CatalogueWarning,
            stacklevel=3,
        )


# --------------------------------------------------------------------------- the shipped index


def shipped_index_path(directory: Path | None = None) -> Path:
    return (directory or builtin_release_dir()) / SHIPPED_INDEX


def render_shipped_index(releases: Iterable[Release] | None = None) -> bytes:
    """The shipped index of the built-in releases, built from the release files alone:
    deterministic (no absolute paths, no times), so `saereg docs --check` compares bytes.
    `releases`: those already read (the built-in ones are picked out), to read none again.
    """
    directory = builtin_release_dir()
    if releases is None:
        index = build_index([directory])
    else:
        folders: dict[str, bool] = {}  # is_builtin resolves the path: once per folder
        chosen = []
        for rel in releases:
            folder = os.path.dirname(rel.source_file or "")
            if folder not in folders:
                folders[folder] = bool(folder) and is_builtin(Path(folder) / "x.yaml")
            if folders[folder]:
                chosen.append(rel)
        index = index_of(chosen, [])
    releases = {
        name: {**rel, "file": Path(rel["file"]).name if rel["file"] else None}
        for name, rel in index.releases.items()
    }
    plain = CatalogIndex(releases, {n: index._section(n) for n in releases}, index.problems)
    header = {"version": INDEX_VERSION, "sources": shipped_sources(directory)}
    return plain.encode(header)


def load_shipped_index() -> CatalogIndex | None:
    """The shipped index of the built-in releases, or None if there is none or it was not
    built from the files that are there now (then the cache is used, as for any folder)."""
    directory = builtin_release_dir()
    path = shipped_index_path(directory)
    try:
        index, header = CatalogIndex.open(path)
        sources = header["sources"]
        if header.get("version") != INDEX_VERSION or not _sources_match(directory, path, sources):
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    root = str(directory) + os.sep  # plain strings: a Path per release costs ~10 µs each
    for rel in index.releases.values():
        rel["file"] = root + rel["file"] if rel.get("file") else None
    return index


def _sources_match(directory: Path, index_file: Path, sources: list[list[Any]]) -> bool:
    """Whether the files in `directory` (that of the shipped index `index_file`) are those
    `sources` names (sizes and sha256).

    The digests are read once per state of the folder: a stamp of the index's and the
    files' sizes and mtimes in the cache says they were checked (the stamp is ours, so a
    stale or missing one only means reading the files again)."""
    files = _source_files(directory)
    if [s[0] for s in sources] != [name for name, _ in files]:
        return False
    stamp = [INDEX_VERSION, _stat_row(index_file, str(index_file))]
    stamp.append([_stat_row(p, name) for name, p in files])
    if [s[1] for s in sources] != [row[1] for row in stamp[2]]:
        return False
    digest = hashlib.sha256(str(index_file).encode()).hexdigest()[:16]
    checked = index_dir() / f"shipped-v{INDEX_VERSION}-{digest}.json"
    if read_compiled(checked, stamp) is not None:
        return True
    try:
        if any(_sha256(p) != s[2] for (_, p), s in zip(files, sources, strict=True)):
            return False
    except OSError:
        return False
    write_compiled(checked, {"stamp": stamp})
    return True


# --------------------------------------------------------------------------- loading


def _index_path() -> Path:
    return index_dir() / f"catalog-v{INDEX_VERSION}.json"


def load_index(dirs: Sequence[Path] | None = None) -> CatalogIndex:
    """The index for `dirs` (default: the built-in releases), rebuilt if stale."""
    builtin_dir = builtin_release_dir()
    dirs = list(dirs) if dirs is not None else [builtin_dir]
    shipped = load_shipped_index() if builtin_dir in dirs[:1] else None
    if shipped is not None and len(dirs) == 1:
        report_problems(shipped)
        return shipped
    stamp = [INDEX_VERSION, _fingerprint(dirs)]
    path = _index_path()
    try:
        index, header = CatalogIndex.open(path)
        if header.get("stamp") != stamp:
            raise ValueError("stale")
    except (OSError, ValueError, KeyError, TypeError):  # none yet, stale, or damaged
        index = build_index(dirs, shipped)
        write_bytes(path, index.encode({"stamp": stamp}))
    report_problems(index)
    return index
