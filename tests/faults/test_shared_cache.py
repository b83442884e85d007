"""The cache as labs run it: damaged headers rebuilt, offline loads that need nothing but
saereg's cache, files readable by colleagues, one cache shared by users and nodes."""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import types
import warnings
from pathlib import Path

import pytest
import torch

import saereg
from saereg.base.errors import CacheWarning, SaeregError
from saereg.store import revisions, tempfiles

from ..publishers import release_yaml, saelens_folder
from .probe import Score

REPO = "test-org/shared"
HOOK = {"hook_name": "blocks.3.hook_resid_pre", "hook_layer": 3, "d_sae": 16}
NOBODY = 65534


def _publish(hubenv, name: str = "shared", folders=("a", "b")) -> dict[str, dict]:
    files, tensors = {}, {}
    for folder in folders:
        f, t = saelens_folder(folder)
        files.update(f)
        tensors[folder] = t
    hubenv.hub.add_commit(REPO, files)
    saes = [{"id": f, "path": f, **HOOK} for f in folders]
    hubenv.add_release(name, release_yaml(name, "saelens", saes, repo_id=REPO))
    return tensors


def _entries(root: Path) -> list[Path]:
    found = (root / "canonical").rglob("*.safetensors") if (root / "canonical").exists() else []
    return sorted(found)


def _served(ref: str, expected: dict, **kw) -> tuple[bool, str]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CacheWarning)
            sae = saereg.load_sae(ref, quiet=True, **kw)
    except SaeregError as exc:
        return False, str(exc)
    return torch.equal(sae.W_enc.detach(), expected["W_enc"]), ""


def test_an_inconsistent_canonical_header_is_rebuilt(hubenv, monkeypatch) -> None:
    score = Score("damaged cache header")
    monkeypatch.setenv("SAEREG_IN_PLACE", "0")
    tensors = _publish(hubenv, folders=("a",))
    score.cli("first fetch", "fetch", "shared/a", "--quiet", codes=(0,))
    [path] = _entries(hubenv.cache)
    pristine = path.read_bytes()
    n = struct.unpack("<Q", pristine[:8])[0]
    header = pristine[8 : 8 + n].decode()
    cases = {
        "offsets shifted": header.replace('"data_offsets":[0,', '"data_offsets":[4,', 1),
        "shape disagrees with offsets": re.sub(
            r'"shape":\[8,16\]', '"shape":[8,15]', header, count=1
        ),
        "ranges overlap": re.sub(r'"data_offsets":\[(\d+),', '"data_offsets":[0,', header, count=2),
    }
    for what, text in cases.items():
        damaged = pristine[:8] + text.encode().ljust(n)[:n] + pristine[8 + n :]
        score.check(f"{what}: the header really changed", damaged != pristine)
        for verify in ([], ["--verify"]):
            path.write_bytes(damaged)
            label = f"{what}{' (--verify)' if verify else ''}"
            result = score.cli(label, "fetch", "shared/a", "--quiet", *verify, codes=(0,))
            score.check(f"{label}: said it rebuilds", "rebuilding" in result.err, result.err)
            score.check(f"{label}: rebuilt", path.read_bytes() == pristine)
            path.write_bytes(damaged)
            ok, why = _served("shared/a", tensors["a"])
            if not ok:
                score.count("corrupt or wrong cache entries served")
            score.check(f"{label}: load_sae serves the right SAE", ok, why)
    score.done()


def test_offline_the_canonical_cache_is_self_sufficient(hubenv, monkeypatch) -> None:
    score = Score("offline cache")
    tensors = _publish(hubenv)
    monkeypatch.setenv("SAEREG_IN_PLACE", "0")
    score.cli("self-contained fetch", "fetch", "shared/a", "--quiet", codes=(0,))
    monkeypatch.setenv("SAEREG_IN_PLACE", "1")
    score.cli("in-place fetch", "fetch", "shared/b", "--quiet", codes=(0,))
    [entry_a] = [p for p in _entries(hubenv.cache) if p.name.startswith("a@")]
    commit = entry_a.name.removesuffix(".safetensors").split("@")[1]
    shutil.rmtree(hubenv.hf_cache)
    monkeypatch.setenv("SAEREG_OFFLINE", "1")
    revisions._TOLD.clear()
    before = len(hubenv.hub.requests)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            loads = [saereg.load_sae("shared/a", quiet=True).W_enc.detach() for _ in range(2)]
            ok, why = all(torch.equal(w, tensors["a"]["W_enc"]) for w in loads), ""
        except SaeregError as exc:
            ok, why = False, str(exc)
    score.check("a self-contained entry loads offline without the HF cache", ok, why)
    said = [str(w.message) for w in caught if "offline" in str(w.message)]
    score.check("says which revision, once", len(said) == 1 and commit[:12] in said[0], str(said))
    revisions._TOLD.clear()
    result = score.cli("fetch offline", "fetch", "shared/a", codes=(0,))
    score.check("fetch prints the entry", result.out.strip() == str(entry_a), result.out)
    score.check("fetch says the revision", commit[:12] in result.err, result.err)
    result = score.cli("an in-place entry offline, HF cache gone", "fetch", "shared/b", codes=(1,))
    score.check("says the files are not cached", "cache" in result.err, result.err)
    for form in (commit[:12], commit[:7], commit):
        result = score.cli(
            f"--revision {form[:12]}…", "fetch", "shared/a", "--revision", form, codes=(0,)
        )
        score.check(f"--revision {len(form)} chars finds the entry", str(entry_a) in result.out)
    score.cli("--revision matching nothing", "fetch", "shared/a", "--revision", "f" * 12)
    score.cli("cache verify, short revision", "cache", "verify", "shared/a", codes=(0,))
    score.check("no network request offline", len(hubenv.hub.requests) == before)
    result = score.cli(
        "cache rm, short revision", "cache", "rm", "shared/a", "--revision", commit[:12], codes=(0,)
    )
    score.check("cache rm --revision SHORT removes it", not entry_a.exists(), result.err)
    score.done()


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_written_files_honour_the_umask(hubenv, tmp_path) -> None:
    score = Score("file modes")
    _publish(hubenv, folders=("a",))
    for umask, want in ((0o022, 0o644), (0o002, 0o664), (0o077, 0o600)):
        old = os.umask(umask)
        try:
            shutil.rmtree(hubenv.cache, ignore_errors=True)
            score.cli(f"fetch, umask {umask:03o}", "fetch", "shared/a", "--quiet", codes=(0,))
            out = tmp_path / f"export-{umask:o}"
            score.cli(
                f"export, umask {umask:03o}",
                "export",
                "shared/a",
                "--format",
                "saelens",
                "--out",
                str(out),
                "--quiet",
                codes=(0,),
            )
            saved = saereg.load_sae("shared/a", quiet=True).save(tmp_path / f"s{umask:o}.st")
            written = [*_entries(hubenv.cache), *out.iterdir(), saved]
            index = [p for p in (hubenv.cache / "index").rglob("*") if p.is_file()]
            for path in [*written, *index]:
                score.check(
                    f"umask {umask:03o}: {path.name} is {want:o}",
                    _mode(path) == want,
                    f"{_mode(path):o}",
                )
        finally:
            os.umask(old)
    score.done()


def test_locks_that_do_not_work_fall_back_safely(hubenv, monkeypatch) -> None:
    score = Score("shared cache")
    tensors = _publish(hubenv, folders=("a",))

    def no_locks(fd: int, op: int) -> None:
        raise OSError(37, "No locks available")

    with monkeypatch.context() as m:
        fake = types.SimpleNamespace(flock=no_locks, LOCK_EX=2, LOCK_NB=4)
        m.setattr(tempfiles, "fcntl", fake)  # saereg's writers only (the hub client locks too)
        ok, why = _served("shared/a", tensors["a"])
    score.check("flock failing (ENOLCK): the entry is still written and served", ok, why)
    folder = _entries(hubenv.cache)[0].parent
    young, old = folder / ".x.safetensors.young.tmp", folder / ".x.safetensors.old.tmp"
    for path, age in ((young, 3600), (old, 3 * 86400)):
        path.write_bytes(b"partial")
        os.utime(path, (time.time() - age, time.time() - age))
    monkeypatch.setattr(tempfiles, "fs_type", lambda p: "nfs4")
    tempfiles.remove_stale(folder)
    score.check("on NFS an hour-old unlocked temp file is kept", young.exists())
    score.check("on NFS a three-day-old temp file goes", not old.exists())
    monkeypatch.setattr(tempfiles, "fs_type", lambda p: "ext4")
    tempfiles.remove_stale(folder)
    score.check("on a local disk an unlocked temp file goes", not young.exists())
    score.check("the mount table names this file system", tempfiles.fs_type(folder) != "")
    score.done()


def test_a_directory_where_a_cache_file_should_be(hubenv, tmp_path) -> None:
    score = Score("shared cache")
    _publish(hubenv, folders=("a",))
    score.cli("fetch", "fetch", "shared/a", "--quiet", codes=(0,))
    [entry] = _entries(hubenv.cache)
    entry.unlink()
    entry.mkdir()
    result = score.cli("a directory at the entry's path", "fetch", "shared/a", "--quiet")
    score.check("says it is a directory", "is a directory" in result.err, result.err)
    score.check("no talk of disk space", "disk space" not in result.err, result.err)
    out = tmp_path / "exp"
    (out / "cfg.json").mkdir(parents=True)
    entry.rmdir()
    result = score.cli(
        "export over a directory", "export", "shared/a", "--format", "saelens", "--out", str(out)
    )
    score.check("export says it is a directory", "is a directory" in result.err, result.err)
    score.done()


def _as_nobody(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run saereg as another user who may read everything (the interpreter lives under
    /root here) but write nothing that is not theirs: uid 65534 with only the capability
    to read and search."""
    setpriv = shutil.which("setpriv")
    assert setpriv, "setpriv (util-linux) is needed for the second-uid test"
    return subprocess.run(
        [
            setpriv,
            f"--reuid={NOBODY}",
            f"--regid={NOBODY}",
            "--clear-groups",
            "--inh-caps=+dac_read_search",
            "--ambient-caps=+dac_read_search",
            sys.executable,
            *args,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()
    }


def test_a_second_user_reads_a_shared_cache_without_writing(hubenv, monkeypatch) -> None:
    score = Score("shared cache")
    if os.geteuid() != 0:
        pytest.fail("the second-uid test switches users: run the suite as root", pytrace=False)
    tensors = _publish(hubenv)
    shared = Path(tempfile.mkdtemp(prefix="saereg-shared-"))
    try:
        shared.chmod(0o755)
        cache = shared / "cache"
        monkeypatch.setenv("SAEREG_CACHE", str(cache))
        monkeypatch.setenv("SAEREG_IN_PLACE", "0")
        score.cli("writer: self-contained", "fetch", "shared/a", "--quiet", codes=(0,))
        monkeypatch.setenv("SAEREG_IN_PLACE", "1")
        score.cli("writer: in place", "fetch", "shared/b", "--quiet", codes=(0,))
        folder = _entries(cache)[0].parent
        stale = folder / ".a@x.safetensors.dead.tmp"
        stale.write_bytes(b"partial")
        os.utime(stale, (time.time() - 3600, time.time() - 3600))
        before = _snapshot(cache)
        requests = len(hubenv.hub.requests)
        env = {**os.environ, "SAEREG_CACHE": str(cache), "HOME": str(shared)}
        code = (
            "import json, sys, saereg\n"
            "out = {}\n"
            "for ref in sys.argv[1:]:\n"
            "    sae = saereg.load_sae(ref, quiet=True)\n"
            "    out[ref] = sae.W_enc.detach().flatten()[:8].tolist()\n"
            "print(json.dumps(out))\n"
        )
        result = _as_nobody(["-c", code, "shared/a", "shared/b"], env)
        score.check("reader: loads both entries", result.returncode == 0, result.stderr[-600:])
        score.check("reader: nothing on stderr", not result.stderr.strip(), result.stderr[-600:])
        if result.returncode == 0:
            got = json.loads(result.stdout)
            for ref, folder_name in (("shared/a", "a"), ("shared/b", "b")):
                want = tensors[folder_name]["W_enc"].flatten()[:8]
                score.check(f"reader: {ref} right", torch.allclose(torch.tensor(got[ref]), want))
        for args in (["fetch", "shared/a", "--quiet"], ["cache", "ls"], ["resolve", "shared/b"]):
            result = _as_nobody(["-m", "saereg.cli", *args], env)
            score.check(f"reader: saereg {args[0]} exits 0", result.returncode == 0, result.stderr)
            score.check(
                f"reader: saereg {args[0]} is quiet", not result.stderr.strip(), result.stderr
            )
        score.check("reader: wrote nothing", _snapshot(cache) == before)
        score.check("reader: no request to the hub", len(hubenv.hub.requests) == requests)
        score.check("reader: left the stale temp file to its owner", stale.exists())
        files = [Path(p) for p in before]
        private = [str(p) for p in files if _mode(p) & 0o044 != 0o044]
        score.check(
            "every cache file is readable by colleagues (umask 022)", not private, str(private)
        )
    finally:
        shutil.rmtree(shared, ignore_errors=True)
    score.done()
