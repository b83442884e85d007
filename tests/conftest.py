"""Shared fixtures. Tests never touch the network or `../shared/`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from saereg.plugin_manager import reset_registry

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session", autouse=True)
def _session_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """One saereg cache for the session, so the catalogue index is built once."""
    os.environ["SAEREG_CACHE"] = str(tmp_path_factory.mktemp("saereg-cache"))
    os.environ.pop("SAEREG_DISABLE_PLUGINS", None)


@pytest.fixture(autouse=True)
def _fresh_plugins():
    reset_registry()
    yield
    reset_registry()


def run_saereg(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None):
    """Run the real `saereg` command in a subprocess (exit codes, stdout, stderr)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "saereg.cli", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd or REPO,
        timeout=120,
    )


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path
