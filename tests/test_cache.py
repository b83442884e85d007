"""`saereg cache ls|verify|prune|rm` over a cache holding both kinds of entries."""

from __future__ import annotations

import hashlib
import io
import json
import os
import time

import numpy as np
import pytest

from saereg.cli import main
from saereg.loading import fetch_canonical

from .publishers import gemma_scope_npz, release_yaml, saelens_folder

REPO = "test-org/saelens-saes"
GS_REPO = "google/gemma-scope-2b-pt-res"
GS_PATH = "layer_3/width_16k/average_l0_5"


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["cache", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def two(hubenv):
    """An in-place entry (SAELens safetensors) and a converted one (compressed npz)."""
    files, _ = saelens_folder("sae", d_sae=32)
    commit = hubenv.hub.add_commit(REPO, files)
    hubenv.add_release(
        "st", release_yaml("st", "saelens", [{"id": "sae", "path": "sae"}], repo_id=REPO)
    )
    _, arrays = gemma_scope_npz(d_in=8, d_sae=16)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    hubenv.hub.add_commit(GS_REPO, {f"{GS_PATH}/params.npz": buf.getvalue()})
    hubenv.add_release(
        "gs",
        release_yaml("gs", "gemma_scope", [{"id": GS_PATH, "path": GS_PATH}], repo_id=GS_REPO),
    )
    st = fetch_canonical("st/sae", quiet=True)
    gs = fetch_canonical(f"gs/{GS_PATH}", quiet=True)
    weights = files["sae/sae_weights.safetensors"]
    blob = next(hubenv.hf_cache.rglob(f"blobs/{hashlib.sha256(weights).hexdigest()}"))
    return {"st": st, "gs": gs, "commit": commit, "weights": weights, "blob": blob}


def test_ls_lists_entries_sizes_revisions_and_hf_share(two, capsys) -> None:
    code, out, _ = cli(capsys, "ls")
    assert code == 0
    assert "st/sae" in out and f"gs/{GS_PATH}" in out
    assert two["commit"][:12] in out
    assert "in_place" in out and "file" in out
    assert "2 entries" in out and "1 in place" in out
    code, out, _ = cli(capsys, "ls", "--json")
    data = json.loads(out)
    by_ref = {e["ref"]: e for e in data["entries"]}
    assert by_ref["st/sae"]["storage"] == "in_place"
    assert by_ref["st/sae"]["publisher_bytes"] == len(two["weights"])
    assert by_ref["st/sae"]["size"] == two["st"].stat().st_size
    assert by_ref[f"gs/{GS_PATH}"]["storage"] == "file"
    assert data["hf_cache_bytes"] == len(two["weights"]) and data["downloads_bytes"] == 0


def test_loading_records_last_use(two, capsys) -> None:
    old = time.time() - 10 * 86400
    os.utime(two["st"], (old, old))
    code, out, _ = cli(capsys, "ls")  # reading entries is no use
    assert code == 0 and "10d ago" in out
    fetch_canonical("st/sae", quiet=True)  # a cache hit
    assert two["st"].stat().st_mtime > old + 86400


def test_verify_checks_publisher_files_by_sha256(two, capsys) -> None:
    code, out, _ = cli(capsys, "verify")
    assert code == 0 and out.count(": ok") == 2
    data = bytearray(two["blob"].read_bytes())
    data[-1] ^= 0xFF  # same size, different bytes: only a hash can tell
    two["blob"].write_bytes(bytes(data))
    code, out, err = cli(capsys, "verify", "st/sae")
    assert code == 1 and "sha256" in out and "saereg cache rm" in err
    two["blob"].unlink()
    code, out, _ = cli(capsys, "verify")
    assert code == 1 and "gone from the HF cache" in out and f"gs/{GS_PATH}" in out


def test_prune_older_than(two, capsys) -> None:
    old = time.time() - 40 * 86400
    os.utime(two["gs"], (old, old))
    code, out, _ = cli(capsys, "prune", "--older-than", "30d", "--dry-run")
    assert code == 0 and "would remove" in out and two["gs"].exists()
    code, out, _ = cli(capsys, "prune", "--older-than", "30")
    assert code == 0 and not two["gs"].exists() and two["st"].exists()
    assert main(["cache", "prune", "--older-than", "soon"]) == 2


def test_prune_unused_keeps_the_newest_revision_of_catalogued_saes(two, hubenv, capsys) -> None:
    files, _ = saelens_folder("sae", d_sae=32)
    hubenv.hub.add_commit(REPO, files)
    newer = fetch_canonical("st/sae", revision="main", force=True, quiet=True)
    assert newer != two["st"]
    old = time.time() - 3600
    os.utime(two["st"], (old, old))
    gone = hubenv.cache / "canonical" / "gone-release" / "x@0123.safetensors"
    gone.parent.mkdir()
    gone.write_bytes(two["gs"].read_bytes())  # an SAE the catalogue no longer lists
    junk = two["gs"].with_name("junk@0123.safetensors")
    junk.write_bytes(b"not a safetensors file")
    code, out, _ = cli(capsys, "prune", "--unused")
    assert code == 0
    assert newer.exists() and two["gs"].exists()
    assert not two["st"].exists() and not gone.exists() and not junk.exists()
    assert "stay in the Hugging Face cache" in out
    assert two["blob"].is_file()  # the hub's cache is never touched


def test_prune_all_and_rm(two, capsys) -> None:
    code, out, err = cli(capsys, "rm", "st/sae")
    assert code == 0 and not two["st"].exists() and two["gs"].exists()
    assert two["blob"].is_file()
    code, _, err = cli(capsys, "rm", "st/sae")
    assert code == 1 and "no cached entry" in err
    code, out, _ = cli(capsys, "prune", "--all")
    assert code == 0 and not two["gs"].exists()
    code, out, _ = cli(capsys, "ls")
    assert out.startswith("0 entries")


def test_verify_checks_an_entrys_own_tensor_bytes(two, capsys) -> None:
    data = bytearray(two["gs"].read_bytes())
    data[-1] ^= 0xFF  # a flipped byte in the entry file's own tensors
    two["gs"].write_bytes(bytes(data))
    code, out, _ = cli(capsys, "verify")
    assert code == 1 and "tensor bytes changed" in out and out.count(": ok") == 1
