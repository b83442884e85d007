"""Shared fixtures. Tests never touch the network or `../shared/`."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from saereg.formats import reset_registry

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


@dataclass
class HubEnv:
    """A fake hub plus isolated caches and a release directory, wired through env vars."""

    hub: Any
    root: Path
    releases: Path
    hf_cache: Path
    cache: Path

    def add_release(self, name: str, text: str) -> Path:
        return write(self.releases / f"{name}.yaml", text)

    def count(self) -> int:
        return len(self.hub.requests)


@pytest.fixture
def hubenv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from .fakehub import FakeHub

    hub = FakeHub()
    env = HubEnv(hub, tmp_path, tmp_path / "releases", tmp_path / "hf", tmp_path / "saereg")
    env.releases.mkdir()
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_HUB_CACHE", str(env.hf_cache))
    monkeypatch.setenv("SAEREG_CACHE", str(env.cache))
    monkeypatch.setenv("SAEREG_RELEASES", str(env.releases))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv(
        "SAEREG_URL_MIRRORS", f"https://openaipublic.blob.core.windows.net/={hub.url}/static/"
    )
    for var in ("HF_HUB_OFFLINE", "SAEREG_OFFLINE", "HF_HOME", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    yield env
    hub.close()
