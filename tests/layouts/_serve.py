"""Serve one LayoutCase from the fake hub and load it (for the per-format test files)."""

from __future__ import annotations

import re
from typing import Any

import yaml

from ._case import LayoutCase


def release_name(case: LayoutCase) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", f"{case.format}-{case.name}").lower()


def serve(hubenv: Any, case: LayoutCase) -> str:
    """Publish the case's files and a release file around it; return its reference."""
    name = release_name(case)
    hubenv.hub.add_commit(case.repo_id, case.files)
    doc: dict[str, Any] = {
        "schema": 1,
        "name": name,
        "format": case.format,
        "publisher": "Test",
        "model": "test-model",
        **case.release,
        "repo_id": case.repo_id,
        "revision": None,
        "saes": [case.sae],
    }
    hubenv.add_release(name, yaml.safe_dump(doc, sort_keys=False))
    return f"{name}/{case.sae['id']}"
