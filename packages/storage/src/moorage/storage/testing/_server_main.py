"""The test HTTP server process: a Hugging Face Hub stand-in and a static file server.

Run as ``python -m moorage.storage.testing._server_main ROOT PORT``. Everything it serves and
how it misbehaves is read from ``ROOT`` on every request, so a test changes content or injects
faults by writing files, without restarting it:

* ``ROOT/hub/<org>/<repo>/repo.json`` — ``{"private": bool, "refs": {"main": "<sha>"}}``;
  ``ROOT/hub/<org>/<repo>/commits/<sha>/<files>`` — the tree at each commit.
* ``ROOT/static/<path>`` — files for plain ``GET /static/<path>``.
* ``ROOT/config.json`` — ``{"tokens": [..], "require_headers": {..}, "content_types": {path: type},
  "corrupt": [path], "cut_after": {path: nbytes}, "no_ranges": bool, "status": {path: code}}``.
* ``ROOT/requests.jsonl`` — one line per request served: method, path, status, bytes sent.

Hub endpoints (what ``huggingface_hub`` calls): ``GET /api/models/<org>/<repo>``,
``GET /api/models/<org>/<repo>/revision/<rev>``, ``GET /api/models/<org>/<repo>/tree/<rev>``,
``HEAD|GET /<org>/<repo>/resolve/<rev>/<path>`` (``X-Repo-Commit``, ``ETag``,
``X-Linked-Etag``/``X-Linked-Size`` for LFS files, ``Range``). A missing repository answers 404
with ``X-Error-Code: RepoNotFound``, a private one 401 with the same code unless
``Authorization: Bearer <token>`` carries a listed token.
"""

from __future__ import annotations

import hashlib
import json
import mimetypes
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

LFS_THRESHOLD = 1024 * 1024
_CHUNK = 1024 * 1024
_lock = threading.Lock()


def git_blob_id(data_path: Path) -> str:
    h = hashlib.sha1(usedforsecurity=False)
    h.update(b"blob %d\0" % data_path.stat().st_size)
    with open(data_path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_of(data_path: Path) -> str:
    h = hashlib.sha256()
    with open(data_path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "moorage-test-server"
    root: Path

    def log_message(self, format: str, *args: Any) -> None:
        return

    # -- plumbing -------------------------------------------------------------------------------
    def _config(self) -> dict[str, Any]:
        try:
            data = json.loads((self.root / "config.json").read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _record(self, status: int, sent: int) -> None:
        line = json.dumps(
            {"method": self.command, "path": self.path, "status": status, "bytes": sent}
        )
        with _lock, open(self.root / "requests.jsonl", "a") as fh:
            fh.write(line + "\n")

    def _json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        self._record(status, len(data))

    def _error(self, status: int, code: str, message: str) -> None:
        self._json(status, {"error": message}, {"X-Error-Code": code, "X-Error-Message": message})

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_GET(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        query = parse_qs(parts.query)
        config = self._config()
        try:
            if path.startswith("/static/"):
                self._static(path[len("/static/") :], config)
            elif path.startswith("/api/models/"):
                self._api(path[len("/api/models/") :], query, config)
            elif "/resolve/" in path:
                self._resolve(path.lstrip("/"), config)
            else:
                self._error(404, "EntryNotFound", "not found")
        except (BrokenPipeError, ConnectionResetError):
            pass

    # -- static files ---------------------------------------------------------------------------
    def _static(self, rel: str, config: dict[str, Any]) -> None:
        for name, value in (config.get("require_headers") or {}).items():
            if self.headers.get(name) != value:
                self._error(401, "Unauthorized", "missing or wrong header")
                return
        status = (config.get("status") or {}).get(rel)
        if status:
            self._error(int(status), "Configured", "configured status")
            return
        target = (self.root / "static" / rel).resolve()
        if (
            not str(target).startswith(str((self.root / "static").resolve()))
            or not target.is_file()
        ):
            self._error(404, "EntryNotFound", "no such file")
            return
        ctype = (config.get("content_types") or {}).get(rel)
        if ctype is None:
            guessed, encoding = mimetypes.guess_type(rel)
            if guessed in ("application/zip", "application/x-tar"):
                ctype = "application/gzip" if encoding == "gzip" else guessed
            else:
                ctype = "application/octet-stream"
        self._send_file(target, rel, ctype, {"ETag": f'"{target.stat().st_mtime_ns}"'}, config)

    # -- hub ------------------------------------------------------------------------------------
    def _repo(self, org: str, name: str) -> tuple[Path, dict[str, Any]] | None:
        repo_dir = self.root / "hub" / org / name
        try:
            meta = json.loads((repo_dir / "repo.json").read_text())
        except (OSError, ValueError):
            return None
        return repo_dir, meta

    def _authorised(self, meta: dict[str, Any], config: dict[str, Any]) -> bool:
        if not meta.get("private"):
            return True
        auth = self.headers.get("Authorization", "")
        tokens = set(config.get("tokens") or []) | set(meta.get("tokens") or [])
        return auth.startswith("Bearer ") and auth[len("Bearer ") :] in tokens

    def _open_repo(
        self, org: str, name: str, rev: str, config: dict[str, Any]
    ) -> tuple[Path, str, dict[str, Any]] | None:
        found = self._repo(org, name)
        if found is None:
            self._error(404, "RepoNotFound", "Repository not found")
            return None
        repo_dir, meta = found
        if not self._authorised(meta, config):
            self._error(401, "RepoNotFound", "Invalid username or password.")
            return None
        refs = meta.get("refs") or {}
        commit = refs.get(rev, rev)
        if not (repo_dir / "commits" / commit).is_dir():
            self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
            return None
        return repo_dir / "commits" / commit, commit, meta

    def _facts(self, tree: Path) -> dict[str, Any]:
        try:
            facts = json.loads(tree.with_suffix(".meta.json").read_text())
        except (OSError, ValueError):
            return {}
        return facts if isinstance(facts, dict) else {}

    def _fact(self, tree: Path, path: Path) -> dict[str, Any]:
        rel = path.relative_to(tree).as_posix()
        known = self._facts(tree).get(rel)
        size = path.stat().st_size
        if isinstance(known, dict) and known.get("size") == size:
            return known
        fact: dict[str, Any] = {"size": size, "oid": git_blob_id(path)}
        if size >= LFS_THRESHOLD:
            fact["sha256"] = sha256_of(path)
        return fact

    def _entries(self, tree: Path, sub: str, recursive: bool) -> list[dict[str, Any]]:
        base = tree / sub if sub else tree
        entries: list[dict[str, Any]] = []
        walker = sorted(base.rglob("*")) if recursive else sorted(base.iterdir())
        for path in walker:
            rel = path.relative_to(tree).as_posix()
            if path.is_dir():
                entries.append({"type": "directory", "path": rel, "oid": "0" * 40})
                continue
            fact = self._fact(tree, path)
            entry: dict[str, Any] = {
                "type": "file",
                "path": rel,
                "size": fact["size"],
                "oid": fact["oid"],
            }
            if fact.get("sha256"):
                entry["lfs"] = {"oid": fact["sha256"], "size": fact["size"], "pointerSize": 134}
            entries.append(entry)
        return entries

    def _api(self, rest: str, query: dict[str, list[str]], config: dict[str, Any]) -> None:
        segments = rest.strip("/").split("/")
        if len(segments) < 2:
            self._error(404, "RepoNotFound", "Repository not found")
            return
        org, name, tail = segments[0], segments[1], segments[2:]
        if tail and tail[0] == "tree" and len(tail) >= 2:
            opened = self._open_repo(org, name, tail[1], config)
            if opened is None:
                return
            tree, _, _ = opened
            recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
            self._json(200, self._entries(tree, "/".join(tail[2:]), recursive))
            return
        rev = tail[1] if len(tail) >= 2 and tail[0] == "revision" else "main"
        opened = self._open_repo(org, name, rev, config)
        if opened is None:
            return
        tree, commit, meta = opened
        siblings = []
        for entry in self._entries(tree, "", True):
            if entry["type"] != "file":
                continue
            sibling: dict[str, Any] = {
                "rfilename": entry["path"],
                "size": entry["size"],
                "blobId": entry["oid"],
            }
            if "lfs" in entry:
                sibling["lfs"] = {
                    "sha256": entry["lfs"]["oid"],
                    "size": entry["size"],
                    "pointerSize": 134,
                }
            siblings.append(sibling)
        self._json(
            200,
            {
                "_id": commit[:24],
                "id": f"{org}/{name}",
                "modelId": f"{org}/{name}",
                "sha": commit,
                "private": bool(meta.get("private")),
                "disabled": False,
                "gated": False,
                "downloads": 0,
                "likes": 0,
                "tags": [],
                "siblings": siblings,
                "lastModified": "2024-01-01T00:00:00.000Z",
                "createdAt": "2024-01-01T00:00:00.000Z",
            },
        )

    def _resolve(self, rest: str, config: dict[str, Any]) -> None:
        head, _, tail = rest.partition("/resolve/")
        org, _, name = head.partition("/")
        rev, _, rel = tail.partition("/")
        opened = self._open_repo(org, name, rev, config)
        if opened is None:
            return
        tree, commit, _ = opened
        target = tree / rel
        if not target.is_file():
            self._error(404, "EntryNotFound", f"{rel} does not exist")
            return
        fact = self._fact(tree, target)
        headers = {"X-Repo-Commit": commit}
        if fact.get("sha256"):
            digest = fact["sha256"]
            headers.update(
                {
                    "ETag": f'"{digest}"',
                    "X-Linked-Etag": f'"{digest}"',
                    "X-Linked-Size": str(fact["size"]),
                }
            )
        else:
            headers["ETag"] = f'"{fact["oid"]}"'
        self._send_file(target, f"{org}/{name}/{rel}", "application/octet-stream", headers, config)

    # -- bytes ----------------------------------------------------------------------------------
    def _send_file(
        self, target: Path, key: str, ctype: str, headers: dict[str, str], config: dict[str, Any]
    ) -> None:
        size = target.stat().st_size
        start, end = 0, size
        status = 200
        header = self.headers.get("Range")
        if header and header.startswith("bytes=") and not config.get("no_ranges"):
            first, _, last = header[len("bytes=") :].partition("-")
            if first == "" and last:
                start = max(0, size - int(last))
            else:
                start = int(first)
                end = min(size, int(last) + 1) if last else size
            if start >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                self._record(416, 0)
                return
            status = 206
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(end - start))
        self.send_header("Accept-Ranges", "none" if config.get("no_ranges") else "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command == "HEAD":
            self._record(status, 0)
            return
        cut = (config.get("cut_after") or {}).get(key)
        corrupt = key in (config.get("corrupt") or [])
        sent = 0
        with open(target, "rb") as fh:
            fh.seek(start)
            remaining = end - start
            while remaining > 0:
                chunk = fh.read(min(_CHUNK, remaining))
                if not chunk:
                    break
                if corrupt and sent == 0:
                    chunk = bytes([chunk[0] ^ 0xFF]) + chunk[1:]
                if cut is not None and start + sent + len(chunk) > cut:
                    keep = max(0, cut - start - sent)
                    self.wfile.write(chunk[:keep])
                    sent += keep
                    self.wfile.flush()
                    self._record(status, sent)
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                self.wfile.write(chunk)
                sent += len(chunk)
                remaining -= len(chunk)
        self._record(status, sent)


def main(argv: list[str]) -> int:
    root = Path(argv[0])
    port = int(argv[1])
    root.mkdir(parents=True, exist_ok=True)
    handler = type("Handler", (_Handler,), {"root": root})
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    (root / "ready").write_text(str(os.getpid()))
    server.serve_forever(poll_interval=0.2)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
