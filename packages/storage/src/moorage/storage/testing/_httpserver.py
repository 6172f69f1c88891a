"""Controller for the test HTTP server process (hub stand-in + static files + fault injection)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import sys
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moorage.storage.testing._process import ServerProcess, free_port, wait_until
from moorage.storage.testing._server_main import LFS_THRESHOLD, git_blob_id, sha256_of

__all__ = ["HubStandIn", "TestHTTPServer", "hf_hub", "http_server"]


@dataclass
class TestHTTPServer:
    """A running ``_server_main`` process: static files under ``/static/`` and a hub stand-in."""

    __test__ = False  # not a pytest test class

    root: Path
    port: int
    process: ServerProcess

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- content --------------------------------------------------------------------------------
    def add_file(self, path: str, data: bytes | Path) -> str:
        """Serve ``data`` at ``/static/<path>``; returns its URL."""
        target = self.root / "static" / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, Path):
            shutil.copyfile(data, target)
        else:
            target.write_bytes(data)
        return f"{self.url}/static/{path}"

    # -- behaviour ------------------------------------------------------------------------------
    def configure(self, **config: Any) -> None:
        """Replace keys of ``config.json`` (see ``_server_main``); ``None`` removes a key."""
        path = self.root / "config.json"
        try:
            current = json.loads(path.read_text())
        except (OSError, ValueError):
            current = {}
        for key, value in config.items():
            if value is None:
                current.pop(key, None)
            else:
                current[key] = value
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(current))
        tmp.replace(path)

    def reset_faults(self) -> None:
        for key in ("corrupt", "cut_after", "no_ranges", "status", "require_headers"):
            self.configure(**{key: None})

    def requests(self) -> list[dict[str, Any]]:
        try:
            lines = (self.root / "requests.jsonl").read_text().splitlines()
        except OSError:
            return []
        return [json.loads(line) for line in lines if line.strip()]

    def clear_requests(self) -> None:
        (self.root / "requests.jsonl").unlink(missing_ok=True)

    def bytes_sent(self) -> int:
        return sum(int(r.get("bytes", 0)) for r in self.requests() if r["method"] == "GET")

    def kill(self) -> None:
        self.process.kill()

    def restart(self) -> None:
        self.process.stop()
        (self.root / "ready").unlink(missing_ok=True)
        self.process.start()
        _wait(self)


class HubStandIn(TestHTTPServer):
    """The same server seen as a Hugging Face Hub: ``endpoint`` is what ``HF_ENDPOINT`` takes."""

    @property
    def endpoint(self) -> str:
        return self.url

    def env(self, token: str | None = None) -> dict[str, str]:
        env = {"HF_ENDPOINT": self.endpoint}
        if token:
            env["HF_TOKEN"] = token
        return env

    def add_repo(
        self,
        repo_id: str,
        files: Mapping[str, bytes | Path],
        *,
        revision: str = "main",
        private: bool = False,
        tokens: tuple[str, ...] = (),
    ) -> str:
        """Create (or add a commit to) a model repository; returns the 40-hex commit id.

        ``revision`` names a branch or tag that will point at the new commit. Files of 1 MiB or
        more are listed as LFS files (with a SHA-256), smaller ones by git blob id.
        """
        org, _, name = repo_id.partition("/")
        repo_dir = self.root / "hub" / org / name
        digest = hashlib.sha1(usedforsecurity=False)
        for path in sorted(files):
            digest.update(path.encode() + b"\0")
            data = files[path]
            if isinstance(data, Path):
                with open(data, "rb") as fh:
                    for chunk in iter(lambda: fh.read(1 << 20), b""):
                        digest.update(chunk)
            else:
                digest.update(data)
        commit = digest.hexdigest()
        tree = repo_dir / "commits" / commit
        facts: dict[str, Any] = {}
        for path, data in files.items():
            target = tree / path
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(data, Path):
                shutil.copyfile(data, target)
            else:
                target.write_bytes(data)
            fact: dict[str, Any] = {"size": target.stat().st_size, "oid": git_blob_id(target)}
            if fact["size"] >= LFS_THRESHOLD:
                fact["sha256"] = sha256_of(target)
            facts[path] = fact
        tree.with_suffix(".meta.json").write_text(json.dumps(facts))
        meta_path = repo_dir / "repo.json"
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            meta = {"refs": {}}
        meta["private"] = private
        meta["tokens"] = sorted(set(meta.get("tokens", [])) | set(tokens))
        meta["refs"][revision] = commit
        meta_path.write_text(json.dumps(meta))
        return commit


def _wait(server: TestHTTPServer) -> None:
    def ready() -> bool:
        if not server.process.alive():
            raise RuntimeError(f"test server exited:\n{server.process.log_tail()}")
        return (server.root / "ready").exists()

    wait_until(ready, timeout=30, what="test HTTP server")


@contextlib.contextmanager
def _serve(cls: type[TestHTTPServer], root: Path | None) -> Iterator[Any]:
    with contextlib.ExitStack() as stack:
        if root is None:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="moorage-http-")))
        root.mkdir(parents=True, exist_ok=True)
        port = free_port()
        argv = [sys.executable, "-m", "moorage.storage.testing._server_main", str(root), str(port)]
        process = ServerProcess(argv, log=root / "server.log").start()
        stack.callback(process.stop)
        server = cls(root=root, port=port, process=process)
        _wait(server)
        yield server


def http_server(root: Path | None = None) -> contextlib.AbstractContextManager[TestHTTPServer]:
    """Start the test HTTP server (static files, fault injection) on a free port."""
    return _serve(TestHTTPServer, root)


def hf_hub(root: Path | None = None) -> contextlib.AbstractContextManager[HubStandIn]:
    """Start a Hugging Face Hub stand-in on a free port."""
    return _serve(HubStandIn, root)
