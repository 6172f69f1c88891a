"""oci:// bearer-token challenge and Basic credentials, against a small registry stand-in."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from moorage.core.errors import StorageAuthError
from moorage.storage import download

BLOB = b"model bytes"
BLOB_DIGEST = "sha256:" + hashlib.sha256(BLOB).hexdigest()
MANIFEST = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/vnd.test",
        "config": {
            "mediaType": "application/vnd.oci.empty.v1+json",
            "digest": "sha256:x",
            "size": 2,
        },
        "layers": [
            {
                "mediaType": "application/octet-stream",
                "digest": BLOB_DIGEST,
                "size": len(BLOB),
                "annotations": {"org.opencontainers.image.title": "model.bin"},
            }
        ],
    }
).encode()
USER, PASSWORD, TOKEN = "alice", "pa55word-xyz", "tok-0123456789"


class _Registry(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        return

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        port = self.server.server_address[1]
        if self.path.startswith("/token"):
            basic = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
            if self.headers.get("Authorization") != basic or "scope=repository" not in self.path:
                self._send(401, b"{}", {})
                return
            self._send(200, json.dumps({"token": TOKEN}).encode(), {})
            return
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            challenge = (
                f'Bearer realm="http://127.0.0.1:{port}/token",service="test",'
                'scope="repository:models/private:pull"'
            )
            self._send(401, b"{}", {"WWW-Authenticate": challenge})
            return
        if self.path.endswith("/manifests/v1"):
            self._send(
                200, MANIFEST, {"Content-Type": "application/vnd.oci.image.manifest.v1+json"}
            )
        elif self.path.endswith(f"/blobs/{BLOB_DIGEST}"):
            self._send(200, BLOB, {"Content-Type": "application/octet-stream"})
        else:
            self._send(404, b"{}", {})


@pytest.fixture(scope="module")
def registry() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Registry)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_bearer_challenge_with_basic_credentials(registry: str, tmp_path: Path) -> None:
    auth = tmp_path / "auth.json"
    encoded = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    auth.write_text(json.dumps({"auths": {registry: {"auth": encoded}}}))
    out = download(
        f"oci://{registry}/models/private:v1", tmp_path / "m", env={"REGISTRY_AUTH_FILE": str(auth)}
    )
    assert (out / "model.bin").read_bytes() == BLOB


def test_no_credentials_is_an_auth_error(registry: str, tmp_path: Path) -> None:
    with pytest.raises(StorageAuthError) as info:
        download(f"oci://{registry}/models/private:v1", tmp_path / "m", env={})
    assert PASSWORD not in str(info.value) and TOKEN not in str(info.value)
    assert not (tmp_path / "m").exists()
