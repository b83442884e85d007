"""circuit-tracer's multi-layer dictionaries: cross-layer transcoders and transcoder sets.

Both are folders (the repository root, or the entry's path) holding a ``config.yaml``
(``model_kind: cross_layer_transcoder | transcoder_set``, ``feature_input_hook``,
``feature_output_hook``, optionally ``transcoders:`` and ``special_load_fn``), read as
circuit-tracer's `load_transcoders` (utils/hf_utils.py) reads them.

* ``circuit_tracer_clt`` (CrossLayerTranscoder, cross_layer_transcoder.py), per source
  layer i: ``W_enc_{i}.safetensors`` with ``W_enc_{i} [d_transcoder, d_model]``
  (F.linear orientation), ``b_enc_{i} [d_transcoder]``, ``b_dec_{i} [d_model]`` (the
  bias of layer i's output) and optionally ``threshold_{i} [d_transcoder]`` (JumpReLU,
  strict >); ``W_dec_{i}.safetensors`` with ``W_dec_{i} [d_transcoder, n_layers - i,
  d_model]``: the decoders to target layers i, i+1, …. Canonical: W_enc transposed (a
  view), W_dec kept as it is, so both are read in place.
* ``circuit_tracer_set`` (TranscoderSet, single_layer_transcoder.py): one transcoder per
  layer, ``layer_{i}.safetensors`` in the folder, or the files the ``transcoders:`` list
  names as ``hf://REPO[@REV]/PATH`` (``?revision=REV`` also read), each with ``W_enc
  [d_transcoder, d_model]``, ``W_dec [d_transcoder, d_model]``, ``b_enc``, ``b_dec`` and
  optionally ``activation_function.threshold`` (JumpReLU) and ``W_skip [d_model,
  d_model]`` (skip = x @ W_skipᵀ).

**What is lost / refused.** circuit-tracer counts a CLT's layers by globbing the folder;
a release states ``n_layers`` instead (detection, for a folder or repository no release
describes, counts the ``W_enc_{i}`` files as circuit-tracer does), and a layer file
whose decoder count disagrees with it is an error naming the file. ``transcoders:``
entries naming another repository, a local path, or a path leaving the repository are
refused (saereg fetches a release's files from its own repository at one revision); in
a local folder (a downloaded copy) ``hf://REPO/PATH`` is read as ``PATH`` inside it.
circuit-tracer's CLT skip connection
(``W_skip [n_layers, d_model, d_model]``, ``x @ W_skip``) is never written by its
``to_safetensors``, so no published CLT in this layout has one; the canonical layer
keeps the slot (``W_skip``, ``x @ W_skipᵀ``) for Gemma Scope 2's ``affine_skip_connection``.
``special_load_fn`` (Gemma Scope npz or Gemma Scope 2 repacks) is not read by this
plugin: such a config is refused with a sentence saying so.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from saereg.formats import (
    CanonicalFileError,
    Match,
    MultiLayerFormat,
    ReadSmall,
    Release,
    RemoteFile,
    SAEEntry,
    hookimpl,
)

from ._tensors import require, safetensors_arrays, transposed, uniform_dtype

_SET_TENSORS = frozenset(
    ("W_enc", "W_dec", "b_enc", "b_dec", "activation_function.threshold", "W_skip")
)
_CLT_ENC = re.compile(r"^W_enc_(\d+)\.safetensors$")
_SET_LAYER = re.compile(r"^layer_(\d+)\.safetensors$")


def _join(folder: str, name: str) -> str:
    folder = folder.strip("/")
    return name if folder in ("", ".") else f"{folder}/{name}"


def read_config_yaml(path: Path, where: str) -> dict[str, Any]:
    """A circuit-tracer config.yaml as a mapping (safe YAML only)."""
    import yaml  # deferred: yaml

    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise CanonicalFileError(f"{where} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise CanonicalFileError(f"{where} must be a mapping")
    return raw


def _small_yaml(read_small: ReadSmall, path: str) -> dict[str, Any] | None:
    """A small YAML mapping of a listing, or None (detection never fails on a malformed
    file; loading reports it)."""
    import yaml  # deferred: yaml

    try:
        raw = yaml.safe_load(read_small(path))
    except (CanonicalFileError, yaml.YAMLError, UnicodeDecodeError, ValueError):
        return None
    return raw if isinstance(raw, dict) else None


def layer_indices(files: Sequence[str], folder: str, pattern: re.Pattern[str]) -> list[int]:
    """The layer numbers of the files directly in `folder` whose names match `pattern`."""
    prefix = f"{folder}/" if folder else ""
    found = []
    for path in files:
        if path.startswith(prefix) and "/" not in path[len(prefix) :]:
            match = pattern.match(path[len(prefix) :])
            if match:
                found.append(int(match.group(1)))
    return sorted(found)


def _hook(raw: Mapping[str, Any], key: str, default: str, where: str) -> str:
    value = raw.get(key, default)
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9_.]+", value):
        raise CanonicalFileError(f"{where}: {key} {value!r} is not a hook name")
    return value


class _CircuitTracerFormat(MultiLayerFormat):
    model_kind = ""

    def files(self, release: Release, entry: SAEEntry) -> list[RemoteFile]:
        return [RemoteFile(_join(entry.path, "config.yaml"))]

    def describe(self, release: Release, entry: SAEEntry) -> dict[str, Any]:
        return {"kind": self.kind, "normalize_activations": "none"}

    def detect(self, listing: Sequence[str], read_small: ReadSmall) -> Match | None:
        """Folders whose ``config.yaml`` says this ``model_kind`` (the key circuit-tracer's
        `load_transcoders` dispatches on) and that hold its layer files (or, for a set,
        list them): one dictionary per folder, its layers counted as circuit-tracer
        counts them (the files there, or the ``transcoders:`` list)."""
        counts: dict[str, int] = {}
        read = []
        for config in sorted(p for p in listing if p.rpartition("/")[2] == "config.yaml"):
            raw = _small_yaml(read_small, config)
            read.append(config)
            if raw is None or raw.get("model_kind") != self.model_kind:
                continue
            if raw.get("special_load_fn"):
                continue  # Gemma Scope repacks: not this layout (convert would refuse it)
            folder = config.rpartition("/")[0]
            n_layers = self._count(listing, folder, raw)
            if n_layers:
                counts[folder] = n_layers
        if not counts:
            return None
        return Match(
            tuple(sorted(counts)),
            1.0,
            f"config.yaml with model_kind: {self.model_kind} and its layer files ("
            + ", ".join(f"{n} layers in {f or '.'}" for f, n in sorted(counts.items()))
            + ")",
            tuple(read),
            counts,
        )

    def _count(self, listing: Sequence[str], folder: str, raw: Mapping[str, Any]) -> int:
        raise NotImplementedError

    def _config(self, entry: SAEEntry, small: Mapping[str, Path]) -> dict[str, Any]:
        name = _join(entry.path, "config.yaml")
        raw = read_config_yaml(small[name], name)
        kind = raw.get("model_kind")
        if kind is not None and kind != self.model_kind:
            raise CanonicalFileError(
                f"{name}: model_kind is {kind!r}, but format {self.name!r} reads "
                f"{self.model_kind!r} folders; the release names the wrong format"
            )
        if raw.get("special_load_fn"):
            raise CanonicalFileError(
                f"{name}: special_load_fn {raw['special_load_fn']!r} (Gemma Scope repacks) is "
                f"not read by format {self.name!r}"
            )
        return raw

    def _hooks(
        self, entry: SAEEntry, raw: Mapping[str, Any], n_layers: int
    ) -> tuple[list[str], list[str]]:
        where = _join(entry.path, "config.yaml")
        hook_in = _hook(raw, "feature_input_hook", "hook_resid_mid", where)
        hook_out = _hook(raw, "feature_output_hook", "hook_mlp_out", where)
        hooks = (
            [f"blocks.{i}.{hook_in}" for i in range(n_layers)],
            [f"blocks.{i}.{hook_out}" for i in range(n_layers)],
        )
        for listed, found, key in (
            (entry.hook_name, hooks[0][0], "feature_input_hook"),
            (entry.hook_name_out, hooks[1][0], "feature_output_hook"),
        ):
            if listed and listed != found:
                raise CanonicalFileError(
                    f"{where}: its {key} puts layer 0 at {found}, but the release lists "
                    f"{listed}; correct the release"
                )
        return hooks


class CircuitTracerCLTFormat(_CircuitTracerFormat):
    name = "circuit_tracer_clt"
    kind = "clt"
    model_kind = "cross_layer_transcoder"
    summary = "circuit-tracer cross-layer transcoders (config.yaml, W_enc_{i}/W_dec_{i})"

    def _count(self, listing: Sequence[str], folder: str, raw: Mapping[str, Any]) -> int:
        """circuit-tracer counts the W_enc_{i} files; a gap makes the missing layer's
        files an error naming them when that layer loads."""
        found = layer_indices(listing, folder, _CLT_ENC)
        return found[-1] + 1 if found else 0

    def layer_files(
        self, release: Release, entry: SAEEntry, layer: int, small_files: Mapping[str, Path]
    ) -> list[RemoteFile]:
        self._config(entry, small_files)
        return [
            RemoteFile(_join(entry.path, f"W_enc_{layer}.safetensors"), weights=True),
            RemoteFile(_join(entry.path, f"W_dec_{layer}.safetensors"), weights=True),
        ]

    def convert_layer(
        self,
        release: Release,
        entry: SAEEntry,
        layer: int,
        n_layers: int,
        local_files: Mapping[str, Path],
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        raw = self._config(entry, local_files)
        i = layer
        enc_file = _join(entry.path, f"W_enc_{i}.safetensors")
        dec_file = _join(entry.path, f"W_dec_{i}.safetensors")
        enc = safetensors_arrays(local_files[enc_file])
        dec = safetensors_arrays(local_files[dec_file])
        require(enc, (f"W_enc_{i}", f"b_enc_{i}", f"b_dec_{i}"), enc_file)
        require(dec, (f"W_dec_{i}",), dec_file)
        _only(enc, {f"W_enc_{i}", f"b_enc_{i}", f"b_dec_{i}", f"threshold_{i}"}, enc_file)
        _only(dec, {f"W_dec_{i}"}, dec_file)
        w_enc = enc[f"W_enc_{i}"]
        if len(w_enc.shape) != 2:
            raise CanonicalFileError(
                f"{enc_file}: W_enc_{i} has shape {list(w_enc.shape)}; expected "
                "[d_transcoder, d_model]"
            )
        d_sae, d_in = w_enc.shape
        w_dec = dec[f"W_dec_{i}"]
        if len(w_dec.shape) != 3 or w_dec.shape[0] != d_sae:
            raise CanonicalFileError(
                f"{dec_file}: W_dec_{i} has shape {list(w_dec.shape)}; expected "
                f"[{d_sae}, n_layers - {i}, d_model] (one decoder per target layer)"
            )
        if w_dec.shape[1] != n_layers - i:
            raise CanonicalFileError(
                f"{dec_file}: W_dec_{i} holds decoders to {w_dec.shape[1]} target layers, but "
                f"layer {i} of a {n_layers}-layer CLT writes to {n_layers - i} (n_layers="
                f"{n_layers}: stated by the release, or counted from a folder's W_enc_{{i}} "
                "files; is a layer file missing, or the release or the file wrong?)"
            )
        tensors: dict[str, Any] = {
            "W_enc": transposed(w_enc),
            "b_enc": enc[f"b_enc_{i}"],
            "W_dec": w_dec,
            "b_dec": enc[f"b_dec_{i}"],
        }
        if f"threshold_{i}" in enc:
            tensors["threshold"] = enc[f"threshold_{i}"]
        hooks_in, hooks_out = self._hooks(entry, raw, n_layers)
        config = {
            "kind": "clt",
            "layer": i,
            "n_layers": n_layers,
            "architecture": "jumprelu" if "threshold" in tensors else "relu",
            "d_in": int(d_in),
            "d_sae": int(d_sae),
            "d_out": int(w_dec.shape[2]),
            "hook_names": hooks_in,
            "hook_names_out": hooks_out,
        }
        return config, uniform_dtype(config, tensors)


def parse_hf_uri(uri: str, where: str) -> tuple[str, str, str | None]:
    """``hf://OWNER/REPO[@REV]/PATH[?revision=REV]`` → (repo_id, path, revision)."""
    parsed = urlparse(uri)
    parts = parsed.path.lstrip("/").split("/", 1)
    if parsed.scheme != "hf" or not parsed.netloc or len(parts) != 2 or not parts[1]:
        raise CanonicalFileError(f"{where}: {uri!r} is not an hf://OWNER/REPO/PATH reference")
    name, path = parts
    name, _, at_rev = name.partition("@")
    revision = at_rev or (parse_qs(parsed.query).get("revision") or [None])[0]
    return f"{parsed.netloc}/{name}", path, revision


class CircuitTracerSetFormat(_CircuitTracerFormat):
    name = "circuit_tracer_set"
    kind = "transcoder_set"
    model_kind = "transcoder_set"
    summary = "circuit-tracer transcoder sets (config.yaml, layer_{i}.safetensors or hf:// list)"

    def _count(self, listing: Sequence[str], folder: str, raw: Mapping[str, Any]) -> int:
        listed = raw.get("transcoders")
        if isinstance(listed, list):
            return len(listed)
        found = layer_indices(listing, folder, _SET_LAYER)
        return found[-1] + 1 if found else 0

    def n_layers(self, release: Release, entry: SAEEntry, small_files: Mapping[str, Path]) -> int:
        listed = self._config(entry, small_files).get("transcoders")
        if listed is None:
            return super().n_layers(release, entry, small_files)
        where = _join(entry.path, "config.yaml")
        if not isinstance(listed, list) or not listed:
            raise CanonicalFileError(f"{where}: transcoders must be a non-empty list")
        if entry.n_layers is not None and entry.n_layers != len(listed):
            raise CanonicalFileError(
                f"{where} lists {len(listed)} transcoders, but the release says "
                f"n_layers={entry.n_layers}"
            )
        return len(listed)

    def _layer_path(
        self, release: Release, entry: SAEEntry, layer: int, small: Mapping[str, Path]
    ) -> str:
        listed = self._config(entry, small).get("transcoders")
        if listed is None:
            return _join(entry.path, f"layer_{layer}.safetensors")
        where = _join(entry.path, "config.yaml")
        uri = listed[layer]
        if not isinstance(uri, str) or not uri.startswith("hf://"):
            raise CanonicalFileError(
                f"{where}: transcoders[{layer}] is {uri!r}, a path outside the repository "
                f"(only hf://{release.repo_id}/... references are read)"
            )
        repo_id, path, revision = parse_hf_uri(uri, f"{where}: transcoders[{layer}]")
        parts = path.split("/")
        if path.startswith("/") or ".." in parts or "\\" in path:
            raise CanonicalFileError(
                f"{where}: transcoders[{layer}] ({uri}) names a path leaving the repository"
            )
        if release.repo_id is None:  # a local copy of a repository: its files are here
            return _join(entry.path, path)
        if repo_id != release.repo_id:
            raise CanonicalFileError(
                f"{where}: transcoders[{layer}] ({uri}) names a file outside the repository "
                f"{release.repo_id}; saereg reads a release's files from its own repository"
            )
        if revision not in (None, release.revision) and (release.revision, revision) != (
            None,
            "main",
        ):
            raise CanonicalFileError(
                f"{where}: transcoders[{layer}] pins revision {revision!r}; saereg reads all "
                "of a release's files at the release's revision (pin it in the release)"
            )
        return path

    def layer_files(
        self, release: Release, entry: SAEEntry, layer: int, small_files: Mapping[str, Path]
    ) -> list[RemoteFile]:
        return [RemoteFile(self._layer_path(release, entry, layer, small_files), weights=True)]

    def convert_layer(
        self,
        release: Release,
        entry: SAEEntry,
        layer: int,
        n_layers: int,
        local_files: Mapping[str, Path],
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        raw = self._config(entry, local_files)
        name = self._layer_path(release, entry, layer, local_files)
        arrays = safetensors_arrays(local_files[name])
        require(arrays, ("W_enc", "W_dec", "b_enc", "b_dec"), name)
        _only(arrays, _SET_TENSORS, name)
        w_enc, w_dec = arrays["W_enc"], arrays["W_dec"]
        if len(w_enc.shape) != 2 or len(w_dec.shape) != 2 or w_enc.shape[0] != w_dec.shape[0]:
            raise CanonicalFileError(
                f"{name}: W_enc {list(w_enc.shape)} and W_dec {list(w_dec.shape)} should be "
                "[d_transcoder, d_model] each"
            )
        tensors: dict[str, Any] = {
            "W_enc": transposed(w_enc),
            "b_enc": arrays["b_enc"],
            "W_dec": w_dec,
            "b_dec": arrays["b_dec"],
        }
        if "activation_function.threshold" in arrays:
            tensors["threshold"] = arrays["activation_function.threshold"]
        if "W_skip" in arrays:
            tensors["W_skip"] = arrays["W_skip"]
        hooks_in, hooks_out = self._hooks(entry, raw, n_layers)
        config = {
            "kind": "transcoder_set",
            "layer": layer,
            "n_layers": n_layers,
            "architecture": "jumprelu" if "threshold" in tensors else "relu",
            "d_in": int(w_enc.shape[1]),
            "d_sae": int(w_enc.shape[0]),
            "d_out": int(w_dec.shape[1]),
            "hook_names": hooks_in,
            "hook_names_out": hooks_out,
        }
        return config, uniform_dtype(config, tensors)


def _only(arrays: Mapping[str, Any], allowed: Sequence[str] | frozenset[str], where: str) -> None:
    """circuit-tracer loads with a strict load_state_dict: other tensors mean other math."""
    unknown = sorted(set(arrays) - set(allowed))
    if unknown:
        raise CanonicalFileError(
            f"{where} holds tensor(s) {', '.join(unknown)} that circuit-tracer's layout does "
            f"not have (expected: {', '.join(sorted(allowed))})"
        )


@hookimpl
def saereg_formats() -> list[MultiLayerFormat]:
    return [CircuitTracerCLTFormat(), CircuitTracerSetFormat()]
