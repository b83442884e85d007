"""What needs real processes: crashes of the C YAML loader, --debug, kills during
conversion (no corrupt entry, leftovers removed), and concurrent cold loaders."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from saereg.store.integrity import verify_canonical
from saereg.store.tempfiles import create_locked, remove_stale

from ..conftest import run_saereg
from ..publishers import release_yaml, saelens_folder
from .probe import Score, run_cli

HOOK = {"hook_name": "blocks.3.hook_resid_pre", "hook_layer": 3, "d_sae": 16}
REPO = "test-org/procs"


def _check_process(score: Score, what: str, result, codes=(1,), one_line=True) -> None:
    problems = []
    if result.returncode < 0:
        problems.append(f"killed by signal {-result.returncode}")
    if "Traceback" in result.stderr:
        score.count("tracebacks")
        problems.append("traceback")
    if result.returncode not in codes:
        problems.append(f"exit {result.returncode}")
    lines = [ln for ln in result.stderr.splitlines() if ln.strip() and ": warning: " not in ln]
    if one_line and result.returncode and len(lines) != 1:
        problems.append(f"{len(lines)} error lines")
    score.check(what, not problems, f"{problems} {result.stderr[-300:]!r}")


def test_real_processes_deep_nesting_and_debug(tmp_path) -> None:
    score = Score("processes")
    releases = tmp_path / "releases"
    releases.mkdir()
    deep = releases / "deep.yaml"
    deep.write_text("a: " + "[" * 100_000 + "]" * 100_000 + "\n", encoding="utf-8")
    env = {"SAEREG_RELEASES": str(releases), "SAEREG_OFFLINE": "1"}
    for argv in (["resolve", "deep/x"], ["list", "--release", "deep"], ["validate", str(deep)]):
        # list: the invalid file is left out (a warning says so), so --release deep names
        # no release: exit 2 with close matches, never an empty answer.
        codes = (2,) if argv[0] == "list" else (1,)
        result = run_saereg(*argv, env=env)
        _check_process(score, f"100,000-deep YAML: {argv[0]}", result, codes, argv[0] != "validate")
    failing = ["resolve", "deep/x"]
    for what, extra_env, args in (
        ("--debug", {}, ["--debug", *failing]),
        ("--debug after the command", {}, [*failing, "--debug"]),
        ("SAEREG_DEBUG=1", {"SAEREG_DEBUG": "1"}, failing),
    ):
        result = run_saereg(*args, env={**env, **extra_env})
        score.check(f"{what} shows the traceback", "Traceback" in result.stderr, result.stderr)
        score.check(f"{what} keeps the exit code", result.returncode == 1)
    score.done()


def test_every_format_offline_and_uncached_fails_in_one_line(monkeypatch, tmp_path) -> None:
    """Each format, catalogue-only ones included, ends in one line when it cannot load."""
    score = Score("every format, offline")
    monkeypatch.setenv("SAEREG_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
    from saereg.formats import get_registry

    for name in sorted(get_registry().formats):
        listed = json.loads(run_cli("list", "--format", name, "--json").out or "[]")
        for row in listed[:2]:
            score.cli(f"{name}: fetch", "fetch", f"{row['release']}/{row['id']}", codes=(1,))
    score.done()


CHILD = """
import os, sys, time
import saereg.store.canonical as c
ready, point, ref = sys.argv[1:4]
def pause(*args, **kwargs):
    open(ready, "w").close()
    time.sleep(120)
if point == "tensors":  # the first tensor, whether copied by the kernel or written
    c._copy_origin = pause
elif point == "seal":
    c._seal = pause
elif point == "rename":  # the canonical file's rename, not the catalogue cache's
    real_replace = os.replace
    def replace(src, dst):
        if str(dst).endswith(".safetensors"):
            pause()
        return real_replace(src, dst)
    os.replace = replace
from saereg.loading import fetch_canonical
fetch_canonical(ref, quiet=True)
"""


def _spawn(code: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 90.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.05)
    return False


def _publish(hubenv, name: str, folder: str):
    files, tensors = saelens_folder(folder)
    hubenv.hub.add_commit(REPO, files)
    hubenv.add_release(
        name, release_yaml(name, "saelens", [{"id": folder, "path": folder, **HOOK}], repo_id=REPO)
    )
    return f"{name}/{folder}", tensors


def test_kills_during_conversion_leave_nothing_wrong(hubenv, tmp_path) -> None:
    score = Score("kill during conversion")
    points = ("tensors", "seal", "rename")
    refs = {point: _publish(hubenv, f"killed-{point}", "k")[0] for point in points}
    children = {}
    for point in points:  # the writers run side by side, each killed at its point
        ready = tmp_path / f"ready-{point}"
        # self-contained files for the first two, an in-place entry for the last
        env = {"SAEREG_IN_PLACE": "1" if point == "rename" else "0"}
        children[point] = (ready, _spawn(CHILD, str(ready), point, refs[point], env=env))
    for point, (ready, proc) in children.items():
        reached = _wait_for(ready, proc)
        score.check(f"{point}: the writer reached the point", reached)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    for point in points:
        canonical = hubenv.cache / "canonical" / f"killed-{point}"
        entries = list(canonical.glob("*.safetensors"))
        score.check(f"{point}: no cache entry after the kill", not entries, str(entries))
        leftovers = list(canonical.glob(".*.tmp"))
        score.check(f"{point}: the killed writer left its temp file", bool(leftovers))
        past = time.time() - 60  # as if the kill happened a minute ago
        for p in leftovers:
            os.utime(p, (past, past))
        score.cli(f"{point}: the next load recovers", "fetch", refs[point], "--quiet", codes=(0,))
        [entry] = list(canonical.glob("*.safetensors"))
        score.check(f"{point}: the entry verifies", verify_canonical(entry, deep=True) is not None)
        remaining = list(canonical.glob(".*.tmp"))
        score.count("leftover temp files", len(remaining))
        score.check(f"{point}: leftovers removed", not remaining, str(remaining))
    # A live writer's temporary file is never removed, however old.
    canonical = hubenv.cache / "canonical" / "killed-tensors"
    fd, tmp = create_locked(canonical / "live.safetensors")
    os.utime(tmp, (time.time() - 3600,) * 2)
    remove_stale(canonical)
    score.check("a live writer's temp file stays", tmp.exists())
    os.close(fd)
    remove_stale(canonical)
    score.check("and goes once its writer is gone", not tmp.exists())
    score.done()


LOADER = """
import hashlib, sys, time
start = sys.argv[1]
while not __import__("os").path.exists(start):
    time.sleep(0.01)
from safetensors.numpy import load_file
from saereg.loading import fetch_canonical
path = fetch_canonical(sys.argv[2], quiet=True)  # the load path, without building a module
print(hashlib.sha256(load_file(str(path))["W_enc"].tobytes()).hexdigest(), "torch" in sys.modules)
"""


def test_concurrent_cold_loaders_agree(hubenv, tmp_path) -> None:
    score = Score("concurrent loaders")
    ref, tensors = _publish(hubenv, "together", "t")
    expected = hashlib.sha256(tensors["W_enc"].numpy().tobytes()).hexdigest()
    start = tmp_path / "start"
    # Self-contained files (every tensor written, the racy part), read without torch.
    procs = [_spawn(LOADER, str(start), ref, env={"SAEREG_IN_PLACE": "0"}) for _ in range(4)]
    time.sleep(0.5)
    start.touch()
    for i, proc in enumerate(procs):
        out, err = proc.communicate(timeout=120)
        score.check(f"loader {i} succeeded", proc.returncode == 0, err[-300:])
        if not score.check(f"loader {i} got the right tensors", out.split()[:1] == [expected], out):
            score.count("corrupt or wrong cache entries served")
    gets = [p for m, p in hubenv.hub.requests if m == "GET" and "sae_weights" in p]
    score.check("the weights were downloaded once", len(gets) == 1, str(gets))
    canonical = hubenv.cache / "canonical" / "together"
    remaining = list(canonical.glob(".*.tmp"))
    score.count("leftover temp files", len(remaining))
    score.check("no temp files left", not remaining, str(remaining))
    score.done()
