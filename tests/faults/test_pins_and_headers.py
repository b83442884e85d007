"""Pins that check bytes (not the name the hub gave them) and publisher safetensors headers
checked at least as strictly as the `safetensors` library checks them, before any tensor
is mapped in place."""

from __future__ import annotations

import hashlib
import json
import struct
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load as st_load

import saereg
from saereg.base.errors import CacheWarning, SaeregError
from saereg.store import pins

from ..publishers import release_yaml, saelens_folder
from .probe import Score

REPO = "test-org/pins"
HOOK = {"hook_name": "blocks.3.hook_resid_pre", "hook_layer": 3, "d_sae": 16}


def _entries(hubenv) -> list[Path]:
    root = hubenv.cache / "canonical"
    return sorted(p for p in root.rglob("*.safetensors")) if root.exists() else []


def _blob(hubenv, repo_path: str) -> Path:
    [snapshot] = (hubenv.hf_cache / f"models--{REPO.replace('/', '--')}" / "snapshots").iterdir()
    return (snapshot / repo_path).resolve()


def _load(ref: str) -> tuple[dict[str, torch.Tensor] | None, str]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CacheWarning)
            sae = saereg.load_sae(ref, quiet=True)
    except SaeregError as exc:
        return None, str(exc)
    return {"W_enc": sae.W_enc.detach(), "b_dec": sae.b_dec.detach()}, ""


@pytest.mark.parametrize("in_place", ["1", "0"])
def test_a_pin_checks_the_bytes_not_the_blob_name(hubenv, monkeypatch, in_place) -> None:
    score = Score("pins")
    monkeypatch.setenv("SAEREG_IN_PLACE", in_place)
    files, tensors = saelens_folder("p")
    hubenv.hub.add_commit(REPO, files)
    pin = hashlib.sha256(files["p/sae_weights.safetensors"]).hexdigest()
    saes = [{"id": "p", "path": "p", **HOOK, "sha256": {"sae_weights.safetensors": pin}}]
    hubenv.add_release("pinned", release_yaml("pinned", "saelens", saes, repo_id=REPO))
    score.cli("first fetch", "fetch", "pinned/p", "--quiet", codes=(0,))
    blob = _blob(hubenv, "p/sae_weights.safetensors")
    score.check("the blob is named by its sha256", blob.name == pin, str(blob))

    hashed: list[Path] = []
    real_hash = pins.hash_file
    monkeypatch.setattr(pins, "hash_file", lambda p: hashed.append(p) or real_hash(p))
    pins.forget()  # a new process: the memo comes from the cache directory
    got, why = _load("pinned/p")
    score.check("an unchanged pinned file loads", got is not None, why)
    score.check("a later load does not hash the unchanged file again", not hashed, str(hashed))

    # Other bytes under the same name (what a hub or mirror serving other bytes leaves).
    evil = {k: v * 0 + 7 for k, v in tensors.items()}
    from safetensors.torch import save as st_save

    blob.chmod(0o644)
    blob.write_bytes(st_save(evil))
    for entry in _entries(hubenv):
        entry.unlink()
    result = score.cli("changed bytes, entry removed", "fetch", "pinned/p", "--quiet", codes=(1,))
    score.check("says the pin does not match", "pins" in result.err, result.err)
    got, why = _load("pinned/p")
    if got is not None:
        score.count("corrupt or wrong cache entries served")
    score.check("load_sae refuses the changed bytes", got is None and "pins" in why, why)
    score.check("nothing cached from them", not _entries(hubenv), str(_entries(hubenv)))

    # An entry made from the right bytes, then the blob changed under it.
    blob.write_bytes(files["p/sae_weights.safetensors"])
    score.cli("restored", "fetch", "pinned/p", "--quiet", codes=(0,))
    blob.write_bytes(st_save(evil))
    got, why = _load("pinned/p")
    served_evil = got is not None and torch.equal(got["W_enc"], evil["W_enc"])
    if served_evil:
        score.count("corrupt or wrong cache entries served")
    score.check("an entry over changed pinned bytes is not served", not served_evil, why)
    if got is not None:  # re-downloaded from the (honest) hub, then served
        score.check("what is served is the pinned SAE", torch.equal(got["W_enc"], tensors["W_enc"]))
    score.done()


def _header_of(data: bytes) -> tuple[dict, bytes]:
    n = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8 : 8 + n]), data[8 + n :]


def _assemble(header_text: str, body: bytes) -> bytes:
    raw = header_text.encode()
    return struct.pack("<Q", len(raw)) + raw + body


def _hostile_files(weights: bytes) -> dict[str, bytes]:
    header, body = _header_of(weights)
    names = sorted(
        (k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"]
    )

    def changed(edit) -> bytes:
        h = json.loads(json.dumps(header))
        edit(h)
        return _assemble(json.dumps(h), body)

    def overlap(h: dict) -> None:  # W_dec reads the bytes of W_enc (same size)
        h["W_dec"]["data_offsets"] = list(h["W_enc"]["data_offsets"])

    def size(h: dict) -> None:
        h["W_enc"]["shape"] = [h["W_enc"]["shape"][0] - 1, h["W_enc"]["shape"][1]]

    def negative(h: dict) -> None:
        start, end = h[names[0]]["data_offsets"]
        h[names[0]]["data_offsets"] = [start - 64, end]

    def half(h: dict) -> None:  # an f16 header over f32 bytes
        for k in names:
            h[k]["dtype"] = "F16"

    first = json.dumps({k: header[k] for k in names})
    dup = first[:-1] + ', "W_enc": ' + json.dumps(header[names[-1]]) + "}"
    meta = dict(header)
    meta["__metadata__"] = {"format": 1}
    return {
        "overlapping ranges": changed(overlap),
        "size disagrees with shape × dtype": changed(size),
        "negative offset": changed(negative),
        "f16 header over f32 bytes": changed(half),
        "duplicated JSON key": _assemble(dup, body),
        "non-string metadata": _assemble(json.dumps(meta), body),
    }


@pytest.mark.parametrize("in_place", ["1", "0"])
def test_hostile_safetensors_headers_are_refused(hubenv, monkeypatch, in_place) -> None:
    score = Score("hostile safetensors headers")
    monkeypatch.setenv("SAEREG_IN_PLACE", in_place)
    files, _ = saelens_folder("x")
    cases = _hostile_files(files["x/sae_weights.safetensors"])
    upload, saes = {}, []
    for i, (what, data) in enumerate(cases.items()):
        if what != "duplicated JSON key":  # the library keeps the last of duplicate keys
            try:
                st_load(data)
                refused = False
            except Exception:
                refused = True
            score.check(f"{what}: the safetensors library refuses it too", refused)
        folder = f"h{i}"
        upload[f"{folder}/cfg.json"] = files["x/cfg.json"]
        upload[f"{folder}/sae_weights.safetensors"] = data
        saes.append({"id": folder, "path": folder, **HOOK})
    hubenv.hub.add_commit(REPO, upload)
    hubenv.add_release("hostile", release_yaml("hostile", "saelens", saes, repo_id=REPO))
    for i, what in enumerate(cases):
        result = score.cli(what, "fetch", f"hostile/h{i}", "--quiet", codes=(1,))
        score.check(f"{what}: names the file", "sae_weights.safetensors" in result.err, result.err)
        got, why = _load(f"hostile/h{i}")
        if got is not None:
            score.count("corrupt or wrong cache entries served")
        score.check(f"{what}: load_sae refuses it", got is None, why)
    cached = _entries(hubenv)
    score.check("nothing cached", not cached, str(cached))
    score.done()


def test_a_pinned_plain_url_file_is_checked_by_its_bytes(hubenv) -> None:
    """Plain-URL downloads record the sha256 computed when they were downloaded; a pin
    checks the bytes on disk now, not that record."""
    from ..publishers import oai_pt

    score = Score("pins")
    base = "https://openaipublic.blob.core.windows.net/sparse-autoencoder/pins/"
    data, _ = oai_pt()
    evil, _ = oai_pt()
    hubenv.hub.static["/static/sparse-autoencoder/pins/v5/0.pt"] = data
    pin = hashlib.sha256(data).hexdigest()
    saes = [
        {
            "id": "blocks.0.hook_resid_post",
            "path": "v5/0.pt",
            "hook_name": "blocks.0.hook_resid_post",
            "hook_layer": 0,
            "sha256": {"0.pt": pin},
        }
    ]
    defaults = {"normalize_activations": "layer_norm", "context_size": 64}
    hubenv.add_release("oaipin", release_yaml("oaipin", "oai", saes, base_url=base,
                                              defaults=defaults))  # fmt: skip
    ref = "oaipin/blocks.0.hook_resid_post"
    score.cli("first fetch", "fetch", ref, "--quiet", codes=(0,))
    [download] = [p for p in (hubenv.cache / "downloads").rglob("0.pt")]
    download.write_bytes(evil)  # meta.json still records the downloaded bytes' sha256
    for entry in _entries(hubenv):
        entry.unlink()
    result = score.cli("changed download, entry removed", "fetch", ref, "--quiet", codes=(1,))
    score.check("says the pin does not match", "pins" in result.err, result.err)
    score.check("nothing cached from it", not _entries(hubenv), str(_entries(hubenv)))
    score.done()
