"""Both storage paths: in-place entries (publisher tensors mapped from the HF cache) and
self-contained canonical files; what happens when the publisher's files change or vanish."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save as st_save

import saereg
from saereg.loading import fetch_canonical
from saereg.sae.module import SAE
from saereg.store.canonical import read_config
from saereg.store.fetch import FetchError
from saereg.store.in_place import SourceFileError
from saereg.store.tensors import read_header

from .publishers import (
    gemma_scope_npz,
    jumprelu_reference,
    llama_scope_folder,
    llama_scope_reference,
    release_yaml,
    saelens_folder,
    saelens_reference,
)

REPO = "test-org/saelens-saes"
HOOK = {"hook_name": "blocks.3.hook_resid_pre", "hook_layer": 3}
X = torch.randn(3, 8, generator=torch.Generator().manual_seed(2))


def publish_saelens(hubenv, files: dict, name: str = "st", folder: str = "sae", **sae) -> str:
    commit = hubenv.hub.add_commit(REPO, files)
    entry = {"id": folder, "path": folder, **HOOK, **sae}
    hubenv.add_release(name, release_yaml(name, "saelens", [entry], repo_id=REPO))
    return f"{name}/{folder}", commit


def blob_of(hubenv, data: bytes) -> Path:
    return next(hubenv.hf_cache.rglob(f"blobs/{hashlib.sha256(data).hexdigest()}"))


def saelens_matches(sae: SAE, t: dict, x: torch.Tensor = X) -> None:
    f_ref, y_ref = saelens_reference(t, x, "standard")
    torch.testing.assert_close(sae.encode(x).double(), f_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(sae(x).double(), y_ref, atol=1e-5, rtol=1e-5)


def test_safetensors_sae_is_read_in_place(hubenv) -> None:
    files, t = saelens_folder("sae", d_sae=64)
    ref, commit = publish_saelens(hubenv, files)
    path = fetch_canonical(ref, quiet=True)
    cfg = read_config(path, full_schema=True)
    header, _ = read_header(path)
    assert header == {}  # every tensor is the publisher's: the entry holds only its config
    weights = files["sae/sae_weights.safetensors"]
    assert path.stat().st_size < 4096 < len(weights)
    assert cfg.storage["kind"] == "in_place"
    record = cfg.storage["files"]["sae/sae_weights.safetensors"]
    assert (
        record["sha256"]
        == hashlib.sha256(weights).hexdigest()
        == cfg.source["files"]["sae/sae_weights.safetensors"]
    )
    assert (record["repo_id"], record["revision"], record["size"]) == (REPO, commit, len(weights))
    assert set(cfg.storage["tensors"]) == {"W_enc", "W_dec", "b_enc", "b_dec"}

    sae = saereg.load_sae(ref)
    saelens_matches(sae, t)
    for name, value in t.items():
        assert torch.equal(getattr(sae, name), value)
    # copy-on-write: changing the module never changes the publisher's file
    sae.W_enc.data.mul_(0)
    assert blob_of(hubenv, weights).read_bytes() == weights
    assert torch.equal(saereg.load_sae(ref).W_enc, t["W_enc"])


def test_both_storage_paths_give_the_same_module_save_and_export(
    hubenv, monkeypatch, tmp_path
) -> None:
    files, t = saelens_folder("sae")
    ref, _ = publish_saelens(hubenv, files)
    mapped = saereg.load_sae(ref)
    monkeypatch.setenv("SAEREG_IN_PLACE", "0")
    copied_path = fetch_canonical(ref, force=True, quiet=True)
    assert read_config(copied_path).storage is None
    assert set(read_header(copied_path)[0]) == set(t)
    copied = saereg.load_sae(ref)
    for name, _ in copied.named_parameters():
        assert torch.equal(getattr(copied, name), getattr(mapped, name))
    assert copied.cfg == mapped.cfg
    # save() writes a self-contained canonical file either way
    a, b = mapped.save(tmp_path / "a.safetensors"), copied.save(tmp_path / "b.safetensors")
    assert a.read_bytes() == b.read_bytes()
    assert read_config(a).storage is None
    saelens_matches(SAE.load(a), t)


def test_export_of_an_in_place_entry(hubenv, tmp_path) -> None:
    from saereg.cli import main

    files, t = saelens_folder("sae")
    ref, _ = publish_saelens(hubenv, files)
    out = tmp_path / "exported"
    assert main(["export", ref, "--out", str(out), "--quiet"]) == 0
    from safetensors.torch import load_file

    exported = load_file(out / "sae_weights.safetensors")
    assert set(exported) == set(t)
    for name, value in t.items():
        assert torch.equal(exported[name], value)


def test_inspect_names_the_publisher_file(hubenv, capsys) -> None:
    from saereg.cli import main

    files, _ = saelens_folder("sae")
    ref, _ = publish_saelens(hubenv, files)
    path = fetch_canonical(ref, quiet=True)
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "W_enc" in out and "in place: sae/sae_weights.safetensors W_enc" in out


def test_llama_scope_transposed_and_cast_in_place(hubenv) -> None:
    folder = "Llama3_1-8B-Base-L5R-8x"
    files, raw = llama_scope_folder(folder)
    hubenv.hub.add_commit("fnlp/ls", files)
    sae_entry = {"id": "l5r", "path": folder, "hook_name": "blocks.5.hook_resid_post"}
    hubenv.add_release(
        "ls",
        release_yaml(
            "ls",
            "llama_scope",
            [sae_entry],
            repo_id="fnlp/ls",
            defaults={"normalize_activations": "expected_average_only_in"},
        ),
    )
    path = fetch_canonical("ls/l5r", quiet=True)
    cfg = read_config(path)
    assert set(read_header(path)[0]) == {"threshold"}  # the only tensor that is not a view
    ops = {n: r["ops"] for n, r in cfg.storage["tensors"].items()}
    assert ops["W_enc"] == [["transpose"], ["cast", "float32"]]
    assert ops["b_enc"] == [["cast", "float32"]]
    sae = saereg.load_sae("ls/l5r")
    assert sae.dtype == torch.float32
    x = torch.randn(4, 16, generator=torch.Generator().manual_seed(5)) * 3
    f_ref, y_ref = llama_scope_reference(raw, x, raw["s"])
    torch.testing.assert_close(sae.encode(x).double(), f_ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(sae(x).double(), y_ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(sae.decode(sae.encode(x)), sae(x))
    torch.testing.assert_close(sae.decode(sae.encode(x).clone()), sae(x))  # constant scale
    # asked for the publisher's dtype: read straight from the mapped bf16 bytes, same values
    bf = saereg.load_sae("ls/l5r", dtype="bfloat16")
    assert bf.W_enc.dtype == torch.bfloat16
    assert torch.equal(bf.W_enc, raw["tensors"]["encoder.weight"].T)
    assert torch.equal(bf.W_enc.float(), sae.W_enc)
    # export folds the input scale back into the weights, as before
    from saereg.store.canonical import export_saelens
    from saereg.store.in_place import read_tensors

    out = export_saelens(cfg, read_tensors(path, cfg, "cpu"), path.parent / "export")
    from safetensors.torch import load_file

    exported = load_file(out[1])
    s = raw["s"]
    torch.testing.assert_close(exported["W_enc"], sae.W_enc * s)
    torch.testing.assert_close(exported["b_dec"], sae.b_dec / s)


def _gemma(hubenv, npz: bytes, name: str = "gs") -> str:
    path = "layer_3/width_16k/average_l0_5"
    hubenv.hub.add_commit("google/gemma-scope-2b-pt-res", {f"{path}/params.npz": npz})
    hubenv.add_release(
        name,
        release_yaml(
            name,
            "gemma_scope",
            [{"id": path, "path": path}],
            repo_id="google/gemma-scope-2b-pt-res",
        ),
    )
    return f"{name}/{path}"


def _check_gemma(sae: SAE, p: dict) -> None:
    x = np.random.default_rng(0).normal(size=(4, 8)).astype(np.float32)
    acts, recon = jumprelu_reference(p, x)
    np.testing.assert_allclose(sae(torch.from_numpy(x)).double().numpy(), recon, atol=1e-5)
    np.testing.assert_allclose(sae.encode(torch.from_numpy(x)).double().numpy(), acts, atol=1e-5)


def test_uncompressed_npz_members_are_mapped_when_aligned(hubenv) -> None:
    """An .npz member's data may start at any byte of the archive; only members whose
    data is aligned to the dtype can be mapped, the others are written to the entry."""
    npz, p = gemma_scope_npz(d_in=8, d_sae=16)
    ref = _gemma(hubenv, npz)
    path = fetch_canonical(ref, quiet=True)
    refs = read_config(path).storage["tensors"]
    assert refs and set(refs) | set(read_header(path)[0]) == set(p)
    assert all(r["offset"] % 4 == 0 for r in refs.values())
    _check_gemma(saereg.load_sae(ref), p)


def test_compressed_npz_is_converted(hubenv) -> None:
    _, p = gemma_scope_npz(d_in=8, d_sae=16)

    buf = io.BytesIO()
    np.savez_compressed(buf, **p)
    ref = _gemma(hubenv, buf.getvalue(), name="gsz")
    path = fetch_canonical(ref, quiet=True)
    assert read_config(path).storage is None and set(read_header(path)[0]) == set(p)
    _check_gemma(saereg.load_sae(ref), p)


def test_converted_copy_streams_publisher_ranges(hubenv, monkeypatch) -> None:
    """With in-place storage off, untransformed tensors are copied file to file."""
    import os

    calls = []
    real = os.copy_file_range

    def spy(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(os, "copy_file_range", spy)
    monkeypatch.setenv("SAEREG_IN_PLACE", "0")
    npz, p = gemma_scope_npz(d_in=8, d_sae=16)
    path = fetch_canonical(_gemma(hubenv, npz), quiet=True)
    assert len(calls) >= len(p)
    assert read_config(path).storage is None
    _check_gemma(SAE.load(path), p)


def test_new_upstream_revision_while_an_in_place_entry_exists(hubenv) -> None:
    files1, t1 = saelens_folder("sae")
    ref, commit1 = publish_saelens(hubenv, files1)
    v1 = fetch_canonical(ref, quiet=True)
    files2, t2 = saelens_folder("sae")  # new weights, same paths
    commit2 = hubenv.hub.add_commit(REPO, files2)
    v2 = fetch_canonical(ref, revision="main", force=True, quiet=True)
    assert v1 != v2 and read_config(v2).source["revision"] == commit2
    saelens_matches(SAE.load(v2), t2)
    # the old entry still reads the old blob: the HF cache keeps both, named by sha256
    saelens_matches(SAE.load(v1), t1)
    saelens_matches(saereg.load_sae(ref, revision=commit1), t1)
    saelens_matches(saereg.load_sae(ref, revision=commit2), t2)


def test_publisher_blob_deleted_from_the_hf_cache(hubenv, monkeypatch) -> None:
    files, t = saelens_folder("sae")
    ref, _ = publish_saelens(hubenv, files)
    path = fetch_canonical(ref, quiet=True)
    blob = blob_of(hubenv, files["sae/sae_weights.safetensors"])
    blob.unlink()
    # reading the entry directly: a clear error, never wrong tensors
    with pytest.raises(SourceFileError, match=r"no longer in the Hugging Face cache.*--force"):
        SAE.load(path)
    # offline: load_sae says what to do
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FetchError, match="not in the Hugging Face cache"):
        saereg.load_sae(ref)
    # online: downloaded again, transparently
    monkeypatch.delenv("HF_HUB_OFFLINE")
    saelens_matches(saereg.load_sae(ref), t)
    assert blob.is_file()


def test_truncated_publisher_blob_is_not_read(hubenv) -> None:
    files, _ = saelens_folder("sae")
    ref, _ = publish_saelens(hubenv, files)
    path = fetch_canonical(ref, quiet=True)
    blob = blob_of(hubenv, files["sae/sae_weights.safetensors"])
    blob.write_bytes(blob.read_bytes()[:-8])
    with pytest.raises(SourceFileError, match="bytes in the HF cache, expected"):
        SAE.load(path)


def test_lfs_files_are_not_hashed_again(hubenv, monkeypatch) -> None:
    import saereg.store.fetch

    hashed = []
    real = saereg.store.fetch.sha256_of

    def spy(path):
        hashed.append(Path(path).name)
        return real(path)

    monkeypatch.setattr(saereg.store.fetch, "sha256_of", spy)
    files, _ = saelens_folder("sae")
    ref, _ = publish_saelens(hubenv, files)
    cfg = read_config(fetch_canonical(ref, quiet=True))
    assert hashed == []  # the fake hub serves every file as LFS: all named by sha256
    assert cfg.source["files"]["sae/cfg.json"] == hashlib.sha256(files["sae/cfg.json"]).hexdigest()


def test_mixed_dtypes_are_cast_on_load(hubenv) -> None:
    files, t = saelens_folder("sae")
    stored = {**t, "b_dec": t["b_dec"].to(torch.float16)}
    files["sae/sae_weights.safetensors"] = st_save(stored)
    ref, _ = publish_saelens(hubenv, files)
    sae = saereg.load_sae(ref)
    assert sae.dtype == torch.float32 and sae.b_dec.dtype == torch.float32
    assert torch.equal(sae.b_dec, stored["b_dec"].float())
    assert torch.equal(sae.W_dec, t["W_dec"])


def test_npz_origin_points_at_the_array_bytes(tmp_path) -> None:
    from saereg.plugins._tensors import npz_arrays

    arrays = {"a": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.ones(5, np.float64)}
    path = tmp_path / "x.npz"
    np.savez(path, **arrays)
    lazy = npz_arrays(path)
    raw = path.read_bytes()
    for name, arr in arrays.items():
        o = lazy[name].origin
        assert o is not None and o.shape == arr.shape
        assert raw[o.offset : o.offset + arr.nbytes] == arr.tobytes()
    with zipfile.ZipFile(path) as zf:
        assert all(i.compress_type == zipfile.ZIP_STORED for i in zf.infolist())


TAMPERED = [
    ("offset", 10**9),  # beyond the publisher file
    ("file", "elsewhere.safetensors"),  # names no recorded file
    ("ops", [["slice", 0, 0, 999]]),  # out of range
    ("ops", [["cast", "os.system"]]),
    ("dtype", "int64"),
]


def test_tampered_storage_block_is_an_error_not_a_crash(hubenv, tmp_path) -> None:
    import json

    from safetensors.torch import save_file

    from saereg.store.sae_config import METADATA_KEY
    from saereg.store.tensors import CanonicalFileError

    files, _ = saelens_folder("sae")
    ref, _ = publish_saelens(hubenv, files)
    path = fetch_canonical(ref, quiet=True)
    _, metadata = read_header(path)
    for field, value in TAMPERED:
        cfg = json.loads(metadata[METADATA_KEY])
        cfg["storage"]["tensors"]["W_enc"][field] = value
        bad = tmp_path / "bad.safetensors"
        save_file({}, bad, metadata={**metadata, METADATA_KEY: json.dumps(cfg)})
        with pytest.raises(CanonicalFileError):
            SAE.load(bad)


def test_files_of_one_sae_come_from_one_commit(hubenv) -> None:
    """cfg.json cached at the old commit (by load_config), the branch moved upstream, the
    weights not cached yet: every file comes from the commit the first one resolved to."""
    from saereg.loading import load_config

    files1, _ = saelens_folder("sae")
    ref, _ = publish_saelens(hubenv, files1)
    load_config(ref)  # caches cfg.json only
    files2, t2 = saelens_folder("sae", d_sae=32)
    commit2 = hubenv.hub.add_commit(REPO, files2)
    sae = saereg.load_sae(ref)  # online: the branch is asked where it points now
    assert read_config(fetch_canonical(ref, quiet=True)).source["revision"] == commit2
    saelens_matches(sae, t2)


def test_only_consistent_origins_are_referenced(tmp_path, monkeypatch) -> None:
    """A plugin's LazyArray whose origin does not describe it exactly is written, not mapped."""
    from saereg.store.in_place import plan_in_place
    from saereg.store.tensors import LazyArray, Origin

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    blob = tmp_path / "models--a--b" / "blobs" / ("0" * 64)
    blob.parent.mkdir(parents=True)
    blob.write_bytes(bytes(64))
    good = Origin(blob, "w", 8, (2, 3), "float32")

    def lazy(shape, dtype, origin):
        return LazyArray(shape, dtype, lambda: None, origin)

    tensors = {
        "ok": lazy((3, 2), "float32", good.then("transpose")),
        "wrong_shape": lazy((2, 3), "float32", good.then("transpose")),
        "wrong_dtype": lazy((2, 3), "float16", good),
        "misaligned": lazy((2, 3), "float32", Origin(blob, "w", 6, (2, 3), "float32")),
        "bad_op": lazy((2, 3), "float32", good.then("negate")),
    }
    storage, keep = plan_in_place(
        tensors, {"w.safetensors": blob}, {"w.safetensors": "0" * 64}, "a/b", "c" * 40
    )
    assert set(storage["tensors"]) == {"ok"} and set(keep) == set(tensors) - {"ok"}


def test_branch_moving_between_two_downloads(hubenv, monkeypatch) -> None:
    """The branch moves upstream after cfg.json was downloaded: the weights still come
    from cfg.json's commit (one commit per SAE, never a mix)."""
    import saereg.store.fetch

    files1, t1 = saelens_folder("sae")
    ref, commit1 = publish_saelens(hubenv, files1)
    files2, _ = saelens_folder("sae", d_sae=32)
    real = saereg.store.fetch.hf_download

    def racing(*args, **kwargs):
        out = real(*args, **kwargs)
        if not racing.moved:
            racing.moved = True
            hubenv.hub.add_commit(REPO, files2)
        return out

    racing.moved = False
    monkeypatch.setattr(saereg.store.fetch, "hf_download", racing)
    sae = saereg.load_sae(ref)
    assert (
        read_config(fetch_canonical(ref, revision=commit1, quiet=True)).source["revision"]
        == commit1
    )
    saelens_matches(sae, t1)
