"""Temporal SAEs (canrager/temporalSAEs): ``{path}/conf.yaml`` +
``{path}/latest_ckpt.safetensors``, paths ``{model}/layer_{L}/temporal``."""

from __future__ import annotations

import re
from typing import Any

from saereg.catalog import Release, SAEEntry
from saereg.hookspecs import Format, hookimpl

_PATH = re.compile(r"/layer_(\d+)/temporal$")


class TemporalFormat(Format):
    name = "temporal"
    summary = "Temporal SAEs (conf.yaml + latest_ckpt.safetensors)"

    def describe(self, release: Release, entry: SAEEntry) -> dict[str, Any]:
        match = _PATH.search(entry.path)
        if not match:
            raise ValueError(f"path {entry.path!r} does not end in /layer_{{L}}/temporal")
        layer = int(match.group(1))
        return {
            "hook_name": f"blocks.{layer}.hook_resid_post",
            "hook_layer": layer,
            "architecture": "temporal",
            "normalize_activations": "constant_scalar_rescale",
        }


@hookimpl
def saereg_formats() -> list[Format]:
    return [TemporalFormat()]
