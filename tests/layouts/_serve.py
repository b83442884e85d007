"""Serve one LayoutCase from the fake hub and compare it with its reference (shared by
the catalogue-wide test and the per-format test files)."""

from __future__ import annotations

import re
from typing import Any

import yaml

from ._case import LayoutCase

#: The mirror prefix the hubenv fixture maps to the fake hub's /static/ files.
PLAIN_PREFIX = "https://openaipublic.blob.core.windows.net/"


def release_name(case: LayoutCase) -> str:
    return "layout-" + re.sub(r"[^a-z0-9]+", "-", f"{case.format}-{case.name}".lower())


def serve(hubenv: Any, case: LayoutCase) -> str:
    """Put the case's files on the fake hub and a release around it; return the ref."""
    name = release_name(case)
    doc: dict[str, Any] = {
        "schema": 1,
        "name": name,
        "format": case.format,
        "publisher": "Test",
        "model": "test-model",
        "revision": None,
        **case.release,
    }
    if case.plain_url:
        base = doc["base_url"]
        assert base.startswith(PLAIN_PREFIX), "plain-URL cases live under the mirrored host"
        for path, body in case.files.items():
            hubenv.hub.static[f"/static/{base[len(PLAIN_PREFIX) :]}{path}"] = body
    else:
        doc["repo_id"] = case.repo_id
        hubenv.hub.add_commit(case.repo_id, case.files)
    doc["saes"] = [case.sae]
    hubenv.add_release(name, yaml.safe_dump(doc, sort_keys=False))
    return f"{name}/{case.sae['id']}"


def close(a: Any, b: Any, atol: float) -> None:
    import torch

    torch.testing.assert_close(a.float(), b.float(), atol=atol, rtol=1e-3)


def compare(sae: Any, case: LayoutCase, seed: int = 5) -> None:
    """encode, decode(encode(x)) and forward against the case's reference; its checks."""
    import torch

    x = torch.randn(*case.input_shape, generator=torch.Generator().manual_seed(seed))
    ref = case.reference(x)
    f = sae.encode(x)
    close(f, ref.encode, case.atol)
    close(sae.decode(f), ref.decode, case.atol)
    close(sae(x), ref.forward, case.atol)
    if case.check is not None:
        case.check(sae)
