"""Corrupt and hostile publisher files, a tampered cache, pins, and paths that leave
their base: one-line failures, nothing wrong ever cached or served, no code run."""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import struct
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save as st_save

import saereg
from saereg.base.errors import CacheWarning, SaeregError
from saereg.store.canonical import canonical_cache_path
from saereg.store.digest import DIGEST_KEY, tensor_digest
from saereg.store.integrity import verify_canonical

from ..publishers import gemma_scope_npz, oai_pt, release_yaml, saelens_folder
from .probe import Score

REPO = "test-org/faults"
HOOK = {"hook_name": "blocks.3.hook_resid_pre", "hook_layer": 3}
OAI_BASE = "https://openaipublic.blob.core.windows.net/sparse-autoencoder/faults/"


def _canonical_files(hubenv) -> list[Path]:
    return sorted((hubenv.cache / "canonical").rglob("*")) if hubenv.cache.exists() else []


def _temp_files(hubenv) -> list[Path]:
    return [p for p in _canonical_files(hubenv) if p.name.endswith(".tmp")]


def _saelens_cases() -> dict[str, dict[str, bytes]]:
    files, _ = saelens_folder("x")
    cfg, weights = files["x/cfg.json"], files["x/sae_weights.safetensors"]
    n = struct.unpack("<Q", weights[:8])[0]
    many = {f"extra_{i}": torch.zeros(1) for i in range(10_000)}
    good = {k: v for k, v in saelens_folder("x")[1].items()}
    return {
        "cfg not JSON": {"cfg.json": b"{not json", "sae_weights.safetensors": weights},
        "cfg a list": {"cfg.json": b"[]", "sae_weights.safetensors": weights},
        "cfg d_in text": {
            "cfg.json": json.dumps({**json.loads(cfg), "d_in": "x"}).encode(),
            "sae_weights.safetensors": weights,
        },
        "cfg d_in wrong": {
            "cfg.json": json.dumps({**json.loads(cfg), "d_in": 9}).encode(),
            "sae_weights.safetensors": weights,
        },
        "weights truncated": {"cfg.json": cfg, "sae_weights.safetensors": weights[:-40]},
        "weights header length": {
            "cfg.json": cfg,
            "sae_weights.safetensors": struct.pack("<Q", 1 << 60) + weights[8:],
        },
        "weights header garbage": {
            "cfg.json": cfg,
            "sae_weights.safetensors": weights[:8] + b"\xff" * n + weights[8 + n :],
        },
        "weights empty": {"cfg.json": cfg, "sae_weights.safetensors": b""},
        "weights wrong shape": {
            "cfg.json": cfg,
            "sae_weights.safetensors": st_save({**good, "W_enc": torch.zeros(3, 3)}),
        },
        "weights 10000 extra tensors": {
            "cfg.json": cfg,
            "sae_weights.safetensors": st_save({**good, **many}),
        },
        "weights integer dtype": {
            "cfg.json": cfg,
            "sae_weights.safetensors": st_save({k: v.to(torch.int32) for k, v in good.items()}),
        },
        "weights missing": {"cfg.json": cfg},
    }


def _npz_cases() -> dict[str, bytes]:
    npz, arrays = gemma_scope_npz(d_in=8, d_sae=16)
    members = zipfile.ZipFile(io.BytesIO(npz))
    names = members.namelist()

    def rezip(change) -> bytes:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as out:
            for name in names:
                data = change(name, members.read(name))
                if data is not None:
                    out.writestr(name, data)
        return buf.getvalue()

    obj = io.BytesIO()
    np.savez(obj, **{**arrays, "W_enc": np.array([object()] * 4, dtype=object)})
    return {
        "npz bad magic": rezip(lambda n, d: b"XXXXXX" + d[6:] if n == "W_enc.npy" else d),
        "npz truncated member": rezip(lambda n, d: d[: len(d) // 2] if n == "W_dec.npy" else d),
        "npz missing member": rezip(lambda n, d: None if n == "b_enc.npy" else d),
        "npz object array": obj.getvalue(),
        "npz not a zip": b"PK\x03\x04" + b"\x00" * 100,
        "npz truncated zip": npz[: len(npz) // 2],
    }


class _Marker:
    """A pickle that would create a file when unpickled with full pickle."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def _pt_cases(marker: Path) -> dict[str, bytes]:
    data, state = oai_pt()

    def saved(obj) -> bytes:
        buf = io.BytesIO()
        torch.save(obj, buf)
        return buf.getvalue()

    return {
        "pt value a string": saved({**state, "encoder.weight": "nope"}),
        "pt value a list": saved({**state, "pre_bias": [1, 2, 3]}),
        "pt not a dict": saved([1, 2, 3]),
        "pt missing key": saved({k: v for k, v in state.items() if k != "latent_bias"}),
        "pt k text": saved({**state, "activation_state_dict": {"k": "four"}}),
        "pt code": saved({**state, "evil": _Marker(marker)}),
        "pt raw pickle code": pickle.dumps(_Marker(marker)),
        "pt truncated": data[: len(data) // 2],
        "pt empty": b"",
    }


def test_corrupt_publisher_files_fail_in_one_line_and_cache_nothing(hubenv, tmp_path) -> None:
    score = Score("corrupt publisher files")
    marker = tmp_path / "CODE-RAN"
    refs: dict[str, tuple[str, str]] = {}
    files: dict[str, bytes] = {}
    saes = []
    for i, (what, case) in enumerate(_saelens_cases().items()):
        folder = f"s{i}"
        files.update({f"{folder}/{name}": data for name, data in case.items()})
        saes.append({"id": folder, "path": folder, **HOOK, "d_sae": 16})
        refs[what] = (f"sl/{folder}", "cfg.json|sae_weights.safetensors")
    hubenv.hub.add_commit(REPO, files)
    hubenv.add_release("sl", release_yaml("sl", "saelens", saes, repo_id=REPO))
    npz_files, npz_saes = {}, []
    for i, (what, data) in enumerate(_npz_cases().items()):
        path = f"layer_3/width_16k/average_l0_{i}"
        npz_files[f"{path}/params.npz"] = data
        npz_saes.append({"id": path, "path": path})
        refs[what] = (f"gs/{path}", "params.npz")
    hubenv.hub.add_commit("google/gemma-scope-2b-pt-res", npz_files)
    hubenv.add_release(
        "gs", release_yaml("gs", "gemma_scope", npz_saes, repo_id="google/gemma-scope-2b-pt-res")
    )
    oai_saes = []
    for i, (what, data) in enumerate(_pt_cases(marker).items()):
        path = f"resid_post_mlp_v5_32k/autoencoders/{i}.pt"
        hubenv.hub.static[f"/static/sparse-autoencoder/faults/{path}"] = data
        oai_saes.append(
            {
                "id": f"blocks.{i}.hook_resid_post",
                "path": path,
                "hook_name": f"blocks.{i}.hook_resid_post",
                "hook_layer": i,
            }
        )
        refs[what] = (f"oai/blocks.{i}.hook_resid_post", f"{i}.pt")
    hubenv.add_release(
        "oai",
        release_yaml(
            "oai",
            "oai",
            oai_saes,
            base_url=OAI_BASE,
            defaults={"normalize_activations": "layer_norm", "context_size": 64},
        ),
    )
    for what, (ref, file_hint) in refs.items():
        result = score.cli(what, "fetch", ref, "--quiet", codes=(1,))
        named = any(hint in result.err for hint in file_hint.split("|"))
        score.check(f"{what}: names the file", named, result.err[:300])
        score.check(f"{what}: bounded", len(result.err) < 3000, str(len(result.err)))
    cached = [p for p in _canonical_files(hubenv) if p.is_file()]
    if cached:
        score.count("corrupt or wrong cache entries served", len(cached))
    score.check("nothing cached", not cached, str(cached[:3]))
    if marker.exists():
        score.count("code executed")
    score.check("no pickle ran code", not marker.exists())
    score.done()


def _publish_good(hubenv, name: str = "good", folders=("a", "b")):
    files, tensors = {}, {}
    for folder in folders:
        f, t = saelens_folder(folder)
        files.update(f)
        tensors[folder] = t
    hubenv.hub.add_commit(REPO, files)
    saes = [{"id": f, "path": f, **HOOK, "d_sae": 16} for f in folders]
    hubenv.add_release(name, release_yaml(name, "saelens", saes, repo_id=REPO))
    return tensors, files


def _served_right(score: Score, what: str, ref: str, expected: dict, **kw) -> None:
    try:
        with warnings.catch_warnings():  # "rebuilding it": what the CLI probes check
            warnings.simplefilter("ignore", CacheWarning)
            sae = saereg.load_sae(ref, quiet=True, **kw)
        ok = torch.equal(sae.W_enc.detach(), expected["W_enc"]) and torch.equal(
            sae.b_dec.detach(), expected["b_dec"]
        )
    except SaeregError as exc:
        ok = False
        expected = {"error": str(exc)}
    if not score.check(f"{what}: the right tensors are served", ok, str(expected)[:200]):
        score.count("corrupt or wrong cache entries served")


def _tamperings(path: Path, other: Path) -> dict[str, bytes]:
    data = path.read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    header = data[8 : 8 + n]
    flipped = bytearray(data)
    flipped[-3] ^= 0xFF
    config_at = header.index(b"d_in")
    damaged_cfg = bytearray(data)
    damaged_cfg[8 + config_at : 8 + config_at + 4] = b"\x00\x01\x02\x03"
    digest_at = header.index(DIGEST_KEY.encode()) + len(DIGEST_KEY) + 10
    bad_digest = bytearray(data)
    bad_digest[8 + digest_at] = ord("f") if data[8 + digest_at] != ord("f") else ord("e")
    no_digest = header.replace(DIGEST_KEY.encode(), b"saereg_tensor_other_")
    return {
        "flipped tensor bytes": bytes(flipped),
        "another SAE copied over": other.read_bytes(),
        "damaged embedded config": bytes(damaged_cfg),
        "truncated": data[: len(data) - 20],
        "header length garbage": struct.pack("<Q", 1 << 40) + data[8:],
        "empty": b"",
        "digest altered": bytes(bad_digest),
        "digest removed": data[:8] + no_digest + data[8 + n :],
    }


def test_a_tampered_cache_is_never_served(hubenv) -> None:
    score = Score("tampered cache")
    tensors, _ = _publish_good(hubenv)
    for folder in ("a", "b"):
        _served_right(score, f"cold {folder}", f"good/{folder}", tensors[folder])
    [path_a] = [p for p in _canonical_files(hubenv) if p.name.startswith("a@")]
    [path_b] = [p for p in _canonical_files(hubenv) if p.name.startswith("b@")]
    score.check("digest verifies after writing", verify_canonical(path_a, deep=True) is not None)
    pristine = path_a.read_bytes()
    for what, data in _tamperings(path_a, path_b).items():
        for verify in (False, True):
            path_a.write_bytes(data)
            mode = "verify" if verify else "plain"
            # Without --verify only the header is checked (the digest needs a full read).
            must_rebuild = verify or what not in (
                "flipped tensor bytes",
                "digest altered",
                "digest removed",
            )
            result = score.cli(
                f"{what} ({mode})",
                "fetch",
                "good/a",
                "--quiet",
                *(["--verify"] if verify else []),
                codes=(0,),
            )
            rebuilt = path_a.read_bytes() == pristine
            if must_rebuild:
                score.check(f"{what} ({mode}): rebuilt", rebuilt)
                score.check(f"{what} ({mode}): said so", "rebuilding" in result.err, result.err)
                _served_right(score, f"{what} ({mode})", "good/a", tensors["a"])
            path_a.write_bytes(pristine)
    # Rebuilding needs no network: the publisher files are in the HF cache.
    path_a.write_bytes(path_b.read_bytes())
    before = len(hubenv.hub.requests)
    _served_right(score, "rebuilt offline", "good/a", tensors["a"])
    score.check("rebuilt from cached publisher files", True)
    downloads = [p for m, p in hubenv.hub.requests[before:] if m == "GET"]
    score.check("no download to rebuild", not downloads, str(downloads))
    leftovers = _temp_files(hubenv)
    score.count("leftover temp files", len(leftovers))
    score.check("no temp files left", not leftovers, str(leftovers))
    score.check("digest is of the tensor bytes", tensor_digest(path_a).startswith("sha256:"))
    score.done()


def test_pins_use_the_schema_key_form(hubenv) -> None:
    score = Score("pins")
    _, files = _publish_good(hubenv, "pinned", folders=("p",))
    good = hashlib.sha256(files["p/cfg.json"]).hexdigest()
    cases = {
        "relative key, wrong": ({"cfg.json": "0" * 64}, 1),
        "full path key, wrong": ({"p/cfg.json": "0" * 64}, 1),
        "key naming no file": ({"nothing.json": good}, 1),
        "relative key, right": ({"cfg.json": good}, 0),
        "full path key, right": ({"p/cfg.json": good}, 0),
    }
    for i, (what, (pins, code)) in enumerate(cases.items()):
        name = f"pin{i}"
        saes = [{"id": "p", "path": "p", **HOOK, "d_sae": 16, "sha256": pins}]
        hubenv.add_release(name, release_yaml(name, "saelens", saes, repo_id=REPO))
        score.cli(what, "fetch", f"{name}/p", "--quiet", codes=(code,))
        cached = [p for p in _canonical_files(hubenv) if p.parent.name == name and p.is_file()]
        score.check(f"{what}: cached only when right", bool(cached) == (code == 0), str(cached))
    # A pin changed after the SAE was cached: the cached file is not served any more.
    saes = [{"id": "p", "path": "p", **HOOK, "d_sae": 16, "sha256": {"cfg.json": "1" * 64}}]
    hubenv.add_release("pin3", release_yaml("pin3", "saelens", saes, repo_id=REPO))
    score.cli("pin changed after caching", "fetch", "pin3/p", "--quiet", codes=(1,))
    score.done()


def test_paths_never_leave_the_base_url(hubenv) -> None:
    score = Score("paths outside the base")
    hubenv.hub.static["/static/secret.pt"] = b"secret"
    paths = [
        "../../../secret.pt",
        "../../secret.pt",
        "a/../../../secret.pt",
        "%2e%2e/%2e%2e/secret.pt",
        "%2E%2E/%2E%2E/%2E%2E/secret.pt",
        "/secret.pt",
        "//evil.example/secret.pt",
        "http://evil.example/secret.pt",
        "..%2f..%2f..%2fsecret.pt",
        "a\\..\\..\\secret.pt",
    ]
    for i, path in enumerate(paths):
        name = f"esc{i}"
        saes = [{"id": "x", "path": path, "hook_name": "blocks.1.hook_resid_post", "hook_layer": 1}]
        hubenv.add_release(
            name,
            release_yaml(
                name,
                "oai",
                saes,
                base_url=OAI_BASE,
                defaults={"normalize_activations": "layer_norm"},
            ),
        )
        score.cli(f"fetch {path!r}", "fetch", f"{name}/x", "--quiet", codes=(1,))
        score.cli(f"resolve {path!r}", "resolve", f"{name}/x", codes=(1,))
    outside = [
        p
        for _, p in hubenv.hub.requests
        if p != "/" and not p.startswith("/static/sparse-autoencoder/faults/")
    ]
    score.count("requests outside a release's base", len(outside))
    score.check("no request outside the base", not outside, str(outside))
    # A release named '..' never writes outside the cache directory.
    outside_cache = canonical_cache_path("..", "x", "rev")
    score.check(
        "'..' stays inside canonical/",
        outside_cache.parent.parent == hubenv.cache / "canonical",
        str(outside_cache),
    )
    score.done()


def test_bad_load_arguments_fail_before_any_download(hubenv, tmp_path, monkeypatch) -> None:
    score = Score("arguments")
    _publish_good(hubenv, "args", folders=("g",))
    before = len(hubenv.hub.requests)
    for dtype in ("int7", "int8", "Tensor", "torch.int64", object(), 3, torch.int8, "float8"):
        try:
            saereg.load_sae("args/g", dtype=dtype, quiet=True)
            ok, detail = False, "accepted"
        except SaeregError as exc:
            ok, detail = "dtype" in str(exc), str(exc)
        score.check(f"dtype={dtype!r}", ok, detail)
    for device in ("cuda", "cuda:7", "mps", "gpu", "cpu:x", 3.5, "xpu"):
        try:
            saereg.load_sae("args/g", device=device, quiet=True)
            ok, detail = device == "xpu" and False, "accepted"
        except SaeregError as exc:
            ok, detail = True, str(exc)
        score.check(f"device={device!r}", ok, detail)
    score.check("nothing downloaded", len(hubenv.hub.requests) == before)
    sae = saereg.load_sae("args/g", dtype="bf16", quiet=True)
    score.check("a good dtype alias still works", sae.W_enc.dtype == torch.bfloat16)
    [path] = [p for p in _canonical_files(hubenv) if p.suffix == ".safetensors"]
    for kwargs in ({"dtype": "int7"}, {"dtype": torch.int64}, {"device": "cuda:3"}):
        try:
            saereg.SAE.load(path, **kwargs)
            ok, detail = False, "accepted"
        except SaeregError as exc:
            ok, detail = True, str(exc)
        score.check(f"SAE.load({kwargs})", ok, detail)
    result = score.cli("fetch --verify of a sound file", "fetch", "args/g", "--verify", codes=(0,))
    score.check("fetch --verify of a sound file says nothing", not result.err.strip(), result.err)
    a_file = tmp_path / "file"
    a_file.write_text("x", encoding="utf-8")
    for what, out in {
        "export --out a file": str(a_file),
        "export --out under a file": str(a_file / "sub"),
        "export --out in /proc": "/proc/saereg-cannot",
    }.items():
        score.cli(what, "export", "args/g", "--out", out, "--quiet")
    score.cli(
        "SAEREG_CACHE is a file", "fetch", "args/g", "--quiet", env={"SAEREG_CACHE": str(a_file)}
    )
    monkeypatch.setenv("SAEREG_CACHE", str(a_file / "under"))
    try:
        saereg.load_sae("args/g", quiet=True)
        ok, detail = False, "accepted"
    except SaeregError as exc:  # in the API too: an error saereg describes, not an OSError
        ok, detail = "SAEREG_CACHE" in str(exc), str(exc)
    score.check("API: SAEREG_CACHE under a file", ok, detail)
    score.done()


def test_a_tampered_publisher_file_under_an_in_place_entry(hubenv, monkeypatch) -> None:
    score = Score("tampered cache")
    tensors, _ = _publish_good(hubenv, "inplace", folders=("i",))
    score.cli("in-place fetch", "fetch", "inplace/i", "--quiet", codes=(0,))
    [entry] = [p for p in _canonical_files(hubenv) if p.suffix == ".safetensors"]
    from saereg.store.canonical import read_config

    storage = read_config(entry).storage
    score.check("the entry reads the publisher file in place", bool(storage), str(storage)[:200])
    if not storage:
        score.done()
        return
    blob = next(iter(storage["files"].values()))["blob"]
    blob_file = hubenv.hf_cache / blob
    pristine = blob_file.read_bytes()

    def tamper() -> None:
        data = bytearray(pristine)
        data[-5] ^= 0xFF
        blob_file.chmod(0o644)
        blob_file.write_bytes(bytes(data))

    tamper()
    result = score.cli("--verify, online", "fetch", "inplace/i", "--quiet", "--verify", codes=(0,))
    score.check("--verify said it rebuilt", "rebuilding" in result.err, result.err)
    score.check("the publisher file was downloaded again", blob_file.read_bytes() == pristine)
    _served_right(score, "after re-download", "inplace/i", tensors["i"])
    tamper()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    score.cli("--verify, offline", "fetch", "inplace/i", "--quiet", "--verify", codes=(1,))
    try:
        saereg.load_sae("inplace/i", quiet=True, verify=True)
        served = True
    except SaeregError:
        served = False
    if served:
        score.count("corrupt or wrong cache entries served")
    score.check("verify=True never serves the damaged file offline", not served)
    score.done()
