"""A Hugging Face Hub stand-in on 127.0.0.1, serving tiny fixtures.

It implements what huggingface_hub's download code uses — ``HEAD``/``GET``
``/{repo}/resolve/{revision}/{path}`` with ``X-Repo-Commit``, ``ETag``, sizes and byte
ranges, and the hub's ``X-Error-Code`` errors — plus the model-info and tree listing APIs,
and plain static files (``/static/...``) standing in for other hosts. The real
huggingface_hub and requests code runs against it; every request is recorded.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlparse


class FakeHub:
    def __init__(self) -> None:
        self.commits: dict[str, dict[str, dict[str, bytes]]] = {}  # repo → commit → files
        self.refs: dict[str, dict[str, str]] = {}  # repo → branch → commit
        self.static: dict[str, bytes] = {}
        self.requests: list[tuple[str, str]] = []
        self.fail_after: dict[str, int] = {}  # static path → bytes to send before dropping
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_HEAD(self) -> None:
                hub._handle(self, head=True)

            def do_GET(self) -> None:
                hub._handle(self, head=False)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        # A short poll interval: shutdown() waits for it, once per test.
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # ------------------------------------------------------------------ content

    def add_commit(self, repo_id: str, files: dict[str, bytes], branch: str = "main") -> str:
        """Add a commit holding `files` (on top of the branch's current files)."""
        base = dict(
            self.commits.get(repo_id, {}).get(self.refs.get(repo_id, {}).get(branch, ""), {})
        )
        base.update(files)
        digest = hashlib.sha1(repo_id.encode())
        for path in sorted(base):
            digest.update(path.encode() + hashlib.sha256(base[path]).digest())
        commit = digest.hexdigest()
        self.commits.setdefault(repo_id, {})[commit] = base
        self.refs.setdefault(repo_id, {})[branch] = commit
        return commit

    def hub_requests(self) -> list[tuple[str, str]]:
        return [r for r in self.requests if not r[1].startswith("/static/")]

    # ------------------------------------------------------------------ HTTP

    def _handle(self, req: BaseHTTPRequestHandler, head: bool) -> None:
        path = unquote(urlparse(req.path).path)
        self.requests.append((req.command, req.path))
        if path.startswith("/static/"):
            body = self.static.get(path)
            if body is None:
                return self._send(req, 404, b"not found", head)
            etag = hashlib.sha256(body).hexdigest()[:20]
            return self._send_file(req, body, {"ETag": f'"{etag}"'}, head, path)
        api = re.match(r"^/api/models/([^/]+/[^/]+)/(revision|tree)/([^/]+)(?:/(.*))?$", path)
        if api:
            return self._api(req, api.group(1), api.group(2), unquote(api.group(3)), head)
        m = re.match(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$", path)
        if not m:
            return self._send(req, 404, b"unknown endpoint", head)
        repo, revision, file_path = m.group(1), m.group(2), m.group(3)
        commit = self._commit(repo, revision)
        if repo not in self.commits:
            return self._error(req, 401, "RepoNotFound", "Repository not found", head)
        if commit is None:
            return self._error(req, 404, "RevisionNotFound", "Invalid rev id", head)
        body = self.commits[repo][commit].get(file_path)
        if body is None:
            return self._error(
                req, 404, "EntryNotFound", "Entry not found", head, {"X-Repo-Commit": commit}
            )
        etag = hashlib.sha256(body).hexdigest()
        headers = {
            "X-Repo-Commit": commit,
            "ETag": f'"{etag}"',
            "X-Linked-Etag": f'"{etag}"',
            "X-Linked-Size": str(len(body)),
        }
        return self._send_file(req, body, headers, head, path)

    def _commit(self, repo: str, revision: str) -> str | None:
        if revision in self.commits.get(repo, {}):
            return revision
        return self.refs.get(repo, {}).get(revision)

    def _api(
        self, req: BaseHTTPRequestHandler, repo: str, kind: str, revision: str, head: bool
    ) -> None:
        if repo not in self.commits:
            return self._error(req, 401, "RepoNotFound", "Repository not found", head)
        commit = self._commit(repo, revision)
        if commit is None:
            return self._error(req, 404, "RevisionNotFound", "Invalid rev id", head)
        files = self.commits[repo][commit]
        if kind == "revision":
            payload: Any = {
                "id": repo,
                "modelId": repo,
                "sha": commit,
                "private": False,
                "siblings": [{"rfilename": p} for p in sorted(files)],
            }
        else:
            payload = [
                {"type": "file", "path": p, "size": len(b), "oid": hashlib.sha1(b).hexdigest()}
                for p, b in sorted(files.items())
            ]
        body = json.dumps(payload).encode()
        return self._send(
            req, 200, body, head, {"Content-Type": "application/json", "X-Repo-Commit": commit}
        )

    def _error(
        self,
        req: BaseHTTPRequestHandler,
        status: int,
        code: str,
        message: str,
        head: bool,
        extra: dict[str, str] | None = None,
    ) -> None:
        body = json.dumps({"error": message}).encode()
        self._send(
            req,
            status,
            body,
            head,
            {
                "X-Error-Code": code,
                "X-Error-Message": message,
                "Content-Type": "application/json",
                **(extra or {}),
            },
        )

    def _send_file(
        self,
        req: BaseHTTPRequestHandler,
        body: bytes,
        headers: dict[str, str],
        head: bool,
        path: str,
    ) -> None:
        headers = {**headers, "Accept-Ranges": "bytes"}
        rng = req.headers.get("Range")
        if rng:
            m = re.match(r"bytes=(\d+)-(\d*)$", rng)
            if m:
                start = int(m.group(1))
                end = int(m.group(2)) if m.group(2) else len(body) - 1
                if start >= len(body):
                    return self._send(
                        req, 416, b"", head, {"Content-Range": f"bytes */{len(body)}"}
                    )
                end = min(end, len(body) - 1)
                part = body[start : end + 1]
                headers["Content-Range"] = f"bytes {start}-{end}/{len(body)}"
                return self._send(req, 206, part, head, headers)
        limit = self.fail_after.pop(path, None)
        if limit is not None and not head:  # simulate a dropped connection mid-download
            req.send_response(200)
            for k, v in headers.items():
                req.send_header(k, v)
            req.send_header("Content-Length", str(len(body)))
            req.end_headers()
            req.wfile.write(body[:limit])
            req.wfile.flush()
            req.close_connection = True
            return None
        return self._send(req, 200, body, head, headers)

    @staticmethod
    def _send(
        req: BaseHTTPRequestHandler,
        status: int,
        body: bytes,
        head: bool,
        headers: dict[str, str] | None = None,
    ) -> None:
        req.send_response(status)
        for k, v in (headers or {}).items():
            req.send_header(k, v)
        req.send_header("Content-Length", str(len(body)))
        req.end_headers()
        if not head:
            req.wfile.write(body)
