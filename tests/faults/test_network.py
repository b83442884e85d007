"""An unreachable or silent endpoint fails fast, naming the host, the file and the
offline switches; a host that is down does not stop files already cached from loading."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from ..publishers import release_yaml, saelens_folder
from .probe import SECONDS, Score

HOOK = {"hook_name": "blocks.3.hook_resid_pre", "hook_layer": 3, "d_sae": 16}
OAI_BASE = "https://openaipublic.blob.core.windows.net/sparse-autoencoder/net/"
#: The issue's bound for the default settings.
LIMIT_S = 10.0


@contextmanager
def refusing_port() -> Iterator[int]:
    """A port on 127.0.0.1 where nothing listens (connections are refused)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    yield port


@contextmanager
def silent_server(lifetime_s: float = 30.0) -> Iterator[int]:
    """A server that accepts connections and never answers; it stops by itself."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    server.settimeout(0.1)
    stop = threading.Event()
    held: list[socket.socket] = []
    deadline = time.monotonic() + lifetime_s

    def serve() -> None:
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join(2)
        for conn in held:
            conn.close()
        server.close()


def _fails_fast(score: Score, what: str, argv: list[str], host: str, file_hint: str) -> None:
    start = time.monotonic()
    result = score.cli(what, *argv, codes=(1,))
    elapsed = time.monotonic() - start
    SECONDS[what] = elapsed
    score.check(f"{what}: within {LIMIT_S:g} s", elapsed <= LIMIT_S, f"{elapsed:.1f} s")
    for needle in (host, file_hint, "SAEREG_OFFLINE=1", "HF_HUB_OFFLINE=1"):
        score.check(f"{what}: names {needle}", needle in result.err, result.err[:400])


def test_unreachable_and_silent_endpoints_fail_fast(hubenv, monkeypatch) -> None:
    score = Score("network")
    monkeypatch.delenv("SAEREG_TIMEOUT", raising=False)
    hubenv.add_release("net", release_yaml("net", "saelens", [{"id": "x", "path": "x", **HOOK}],
                                           repo_id="test-org/net"))  # fmt: skip
    saes = [{"id": "u", "path": "u.pt", "hook_name": "blocks.1.hook_resid_post", "hook_layer": 1}]
    hubenv.add_release("neturl", release_yaml("neturl", "oai", saes, base_url=OAI_BASE,
                       defaults={"normalize_activations": "layer_norm"}))  # fmt: skip
    with refusing_port() as port:
        host = f"127.0.0.1:{port}"
        monkeypatch.setenv("HF_ENDPOINT", f"http://{host}")
        _fails_fast(score, "hub, connection refused", ["fetch", "net/x"], host, "test-org/net/x/")
        monkeypatch.setenv("SAEREG_URL_MIRRORS", f"{OAI_BASE}=http://{host}/")
        _fails_fast(score, "URL, connection refused", ["fetch", "neturl/u"], host, "u.pt")
    with silent_server() as port:
        host = f"127.0.0.1:{port}"
        monkeypatch.setenv("HF_ENDPOINT", f"http://{host}")
        _fails_fast(score, "hub, silent (default timeout)", ["fetch", "net/x"], host, "net/x/")
    with silent_server() as port:
        host = f"127.0.0.1:{port}"
        monkeypatch.setenv("SAEREG_URL_MIRRORS", f"{OAI_BASE}=http://{host}/")
        monkeypatch.setenv("SAEREG_TIMEOUT", "1")
        _fails_fast(score, "URL, silent (SAEREG_TIMEOUT=1)", ["fetch", "neturl/u"], host, "u.pt")
    score.done()


def test_a_host_that_is_down_does_not_block_cached_files(hubenv, monkeypatch) -> None:
    score = Score("network")
    files, _ = saelens_folder("c")
    hubenv.hub.add_commit("test-org/cached", files)
    saes = [{"id": "c", "path": "c", **HOOK}]
    hubenv.add_release("cached", release_yaml("cached", "saelens", saes, repo_id="test-org/cached"))
    score.cli("online fetch", "fetch", "cached/c", "--quiet", codes=(0,))
    import shutil

    shutil.rmtree(hubenv.cache / "canonical")  # conversion must run again
    with refusing_port() as port:
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
        start = time.monotonic()
        score.cli("host down, files cached", "fetch", "cached/c", "--quiet", codes=(0,))
        score.check("and fast", time.monotonic() - start < LIMIT_S)
    shutil.rmtree(hubenv.cache / "canonical")
    monkeypatch.setenv("SAEREG_TIMEOUT", "1")
    with silent_server() as port:
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
        start = time.monotonic()
        score.cli("host silent, files cached", "fetch", "cached/c", "--quiet", codes=(0,))
        elapsed = time.monotonic() - start
        SECONDS["host silent, files cached (SAEREG_TIMEOUT=1)"] = elapsed
        score.check("one timeout for all the SAE's files", elapsed < 2.5, f"{elapsed:.1f} s")
    score.done()
