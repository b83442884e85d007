"""`saereg export --format sparsify`: any TopK SAE saereg loads, written in EleutherAI
sparsify's layout, gives the same latents and outputs in sparsify.

Two checks for each exported folder: `sparsify.SparseCoder.load_from_disk` itself
(eai-sparsify is in the `test` extra; its dependencies install without touching torch),
and the math written here from sparsify 1.3.3's `sparse_coder.py` / `fused_encoder.py`
(so the layout is checked even where sparsify is not installed).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

import saereg

from .layouts._case import LayoutCase
from .layouts.saelens import CASES as SAELENS
from .layouts.sparsify import CASES as SPARSIFY


def _write(files: dict[str, bytes], root: Path) -> Path:
    for path, body in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(body)
    return root


def _saelens_variant(root: Path, **cfg_changes: Any) -> Path:
    """The SAELens TopK case with its cfg.json changed (no LayerNorm, other options)."""
    case = SAELENS[3]  # topk-layer-norm
    folder = _write(case.files, root) / case.sae["path"]
    cfg = json.loads((folder / "cfg.json").read_text())
    cfg.update({"normalize_activations": "none", **cfg_changes})
    (folder / "cfg.json").write_text(json.dumps(cfg))
    return folder


def _reference(folder: Path, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(dense latents, output) by sparsify's math, from the exported files alone."""
    cfg = json.loads((folder / "cfg.json").read_text())
    w = {n: t.double() for n, t in load_file(folder / "sae.safetensors").items()}
    assert set(w) == {"encoder.weight", "encoder.bias", "W_dec", "b_dec"} | (
        {"W_skip"} if cfg["skip_connection"] else set()
    )
    assert cfg["activation"] == "topk" and w["encoder.weight"].shape == (
        cfg["num_latents"],
        cfg["d_in"],
    )
    h = x if cfg["transcode"] else x - w["b_dec"]
    pre = torch.relu(h @ w["encoder.weight"].T + w["encoder.bias"])
    values, indices = pre.topk(cfg["k"], dim=-1)
    dense = torch.zeros_like(pre).scatter(-1, indices, values)
    out = dense @ w["W_dec"] + w["b_dec"]
    if cfg["skip_connection"]:
        out = out + x @ w["W_skip"].T
    return dense, out


def _export(source: Path | str, out: Path, *extra: str) -> Path:
    from saereg.cli.app import main

    assert main(["export", str(source), "--format", "sparsify", "--out", str(out), *extra]) == 0
    (folder,) = [p.parent for p in out.glob("*/cfg.json")]
    return folder


SOURCES = [
    *[(f"sparsify-{c.name}", c, {}) for c in SPARSIFY],
    ("saelens-no-b_dec-subtraction", None, {"apply_b_dec_to_input": False}),
    ("saelens-dataset-norm", None, {"normalize_activations": "expected_average_only_in"}),
]


@pytest.mark.parametrize(("name", "case", "changes"), SOURCES, ids=[s[0] for s in SOURCES])
def test_exported_folder_matches_in_sparsify(
    tmp_path: Path, name: str, case: LayoutCase | None, changes: dict[str, Any]
) -> None:
    extra: list[str] = []
    if case is not None:
        source = _write(case.files, tmp_path / "src") / case.sae["path"]
    else:
        source = _saelens_variant(tmp_path / "src", **changes)
        if "normalize_activations" in changes:
            extra = ["--norm-scaling-factor", "0.37"]
    sae = saereg.load_sae(
        source, dtype="float64", **({"norm_scaling_factor": 0.37} if extra else {})
    )
    folder = _export(source, tmp_path / "out", *extra)
    x = torch.randn(6, sae.cfg.d_in, generator=torch.Generator().manual_seed(1)).double()
    dense, out = _reference(folder, x)
    tol = {"atol": 1e-4, "rtol": 1e-4} if sae.cfg.dtype == "bfloat16" else {}
    want_f = sae.encode(x)
    torch.testing.assert_close(dense, want_f, **tol)
    torch.testing.assert_close(out, sae(x), **tol)

    sparsify = pytest.importorskip("sparsify", reason="eai-sparsify (the test extra)")
    coder = sparsify.SparseCoder.load_from_disk(folder).double()
    enc = coder.encode(x)
    got = torch.zeros_like(want_f).scatter(-1, enc.top_indices, enc.top_acts)
    torch.testing.assert_close(got, want_f, **tol)
    torch.testing.assert_close(coder(x).sae_out, sae(x), **tol)


def test_layouts_sparsify_cannot_run_are_refused(tmp_path: Path, capsys: Any) -> None:
    from saereg.cli.app import main

    for case, why in ((SAELENS[0], "only TopK"), (SAELENS[3], "no layer_norm")):
        source = _write(case.files, tmp_path / case.name) / case.sae["path"]
        code = main(["export", str(source), "--format", "sparsify", "--out", str(tmp_path / "o")])
        err = capsys.readouterr().err
        assert code == 1 and why in err and err.count("\n") == 1, err
