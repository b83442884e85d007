"""The wheel carries the catalogue and the schemas: a plain (non-editable) install works."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from pathlib import Path

from .conftest import REPO


def test_wheel_installs_with_catalogue_and_schemas(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(REPO),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(dist),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    wheel = next(dist.glob("saereg-*.whl"))
    env_dir = tmp_path / "venv"
    # System site-packages provide the dependencies (no network); saereg itself comes only
    # from the wheel, which the venv's own site-packages put first on sys.path.
    venv.EnvBuilder(with_pip=False, system_site_packages=True).create(env_dir)
    python = env_dir / "bin" / "python"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--no-deps",
            "-q",
            str(wheel),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    env = {**os.environ, "SAEREG_CACHE": str(tmp_path / "cache")}
    env.pop("PYTHONPATH", None)
    where = subprocess.run(
        [
            str(python),
            "-c",
            "import saereg, saereg.catalogue.release_dirs as c; print(saereg.__file__); "
            "print(c.builtin_release_dir()); print(c.builtin_schema_dir())",
        ],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
    ).stdout.splitlines()
    assert all(str(env_dir) in line for line in where), where
    assert where[1].endswith("site-packages/saereg/releases")
    saereg_cli = env_dir / "bin" / "saereg"
    resolved = subprocess.run(
        [str(saereg_cli), "resolve", "gpt2-small-res-jb/blocks.8.hook_resid_pre"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    assert resolved.returncode == 0, resolved.stderr
    assert "neuronpedia         gpt2-small/8-res-jb" in resolved.stdout
    assert "d_in                768" in resolved.stdout  # the models table ships too
    # The compiled index ships too: the first `list` after installing parses no release file.
    fresh = {**env, "SAEREG_CACHE": str(tmp_path / "fresh-cache")}
    listed = subprocess.run(
        [str(saereg_cli), "list", "--json"], capture_output=True, text=True, cwd=tmp_path, env=fresh
    )
    assert listed.returncode == 0, listed.stderr
    shipped = (REPO / "releases" / "compiled" / "index.json").read_bytes().split(b"\n", 1)[0]
    n_saes = sum(r["n_saes"] for r in json.loads(shipped)["releases"].values())
    assert len(json.loads(listed.stdout)) == n_saes > 10_000
    assert not list((tmp_path / "fresh-cache").rglob("catalog-v*.json"))
    assert not list((tmp_path / "fresh-cache").rglob("releases/*.json"))  # none parsed
    validated = subprocess.run(
        [str(saereg_cli), "validate", "--no-hints"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    assert validated.returncode == 0, validated.stdout[-2000:]
    assert "OK: 199 release files, 0 errors" in validated.stdout
    plugins = subprocess.run(
        [str(saereg_cli), "plugins"], capture_output=True, text=True, cwd=tmp_path, env=env
    )
    assert "gemma_scope" in plugins.stdout and "built-in" in plugins.stdout
    # The catalogue page's HTML, CSS and JavaScript ship as package data.
    docs = subprocess.run(
        [str(saereg_cli), "docs", "--out", str(tmp_path / "docs")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    assert docs.returncode == 0, docs.stderr
    assert (tmp_path / "docs" / "catalogue.html").read_text() == (
        REPO / "docs" / "catalogue.html"
    ).read_text()
