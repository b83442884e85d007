"""SAELens-native folders: cfg.json + sae_weights.safetensors (pre-6.0 and 6.x configs)."""

from __future__ import annotations

from typing import Any

from ..publishers import saelens_folder, saelens_reference
from ._case import LayoutCase
from ._util import same


def _case(name: str, arch: str, normalize: str = "none", k: int | None = None, **kw: Any):
    folder = f"blocks.3.hook_resid_pre/{name}"
    files, t = saelens_folder(folder, d_in=8, d_sae=24, arch=arch, normalize=normalize, k=k, **kw)
    return LayoutCase(
        format="saelens",
        name=name,
        files=files,
        sae={
            "id": name,
            "path": folder,
            "hook_name": "blocks.3.hook_resid_pre",
            "hook_layer": 3,
            "normalize_activations": normalize,
        },
        input_shape=(5, 8),
        reference=lambda x: same(*saelens_reference(t, x, arch, normalize, k)),
        repo_id="test-org/saelens",
    )


CASES = [
    _case("standard", "standard"),
    _case("gated-v6", "gated", v6=True),
    _case("jumprelu-v6", "jumprelu", v6=True),
    _case("topk-layer-norm", "topk", normalize="layer_norm", k=5),
    _case("constant-norm-rescale", "standard", normalize="constant_norm_rescale"),
]
