"""Matryoshka SAEs saved by SAELens: JumpReLU folders whose latent prefixes nest."""

from __future__ import annotations

from typing import Any

from ..publishers import saelens_folder, saelens_reference
from ._case import LayoutCase
from ._util import same

WIDTHS = [6, 12, 24]
HOOK = "blocks.5.hook_resid_post"
folder = f"standard/{HOOK}"
files, t = saelens_folder(
    folder,
    d_in=8,
    d_sae=24,
    arch="jumprelu",
    v6=True,
    hook=HOOK,
    extra_cfg={
        "metadata": {
            "sae_lens_version": "6.5.0",
            "hook_name": HOOK,
            "context_size": 1024,
            "training_architecture_details": {"matryoshka_widths": WIDTHS[:-1]},
        }
    },
)


def _check(sae: Any) -> None:
    assert sae.cfg.nested_widths == tuple(WIDTHS)
    assert sae.truncated(12).cfg.d_sae == 12


CASES = [
    LayoutCase(
        format="matryoshka",
        name="batchtopk-jumprelu",
        files=files,
        sae={"id": HOOK, "path": folder, "hook_name": HOOK, "hook_layer": 5},
        input_shape=(4, 8),
        reference=lambda x: same(*saelens_reference(t, x, "jumprelu")),
        repo_id="chanind/gemma-2-2b-batch-topk-matryoshka-saes-w-32k-l0-40",
        check=_check,
    )
]
