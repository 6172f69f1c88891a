"""http(s):// against a real HTTP server: headers, content types, archives, ranges."""

from __future__ import annotations

import io
import os
import tarfile
import zipfile
from pathlib import Path

import pytest

from moorage.core.errors import StorageAuthError, StorageError, StorageNotFound, UnsafeArchive
from moorage.storage import download, read_manifest
from moorage.storage.testing import TestHTTPServer

pytestmark = pytest.mark.integration


@pytest.fixture
def http(http_file_server: TestHTTPServer) -> TestHTTPServer:
    http_file_server.reset_faults()
    http_file_server.configure(content_types=None)
    return http_file_server


def tar_gz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_plain_file(http: TestHTTPServer, tmp_path: Path) -> None:
    url = http.add_file("plain/model.joblib", b"j" * 1000)
    out = download(url, tmp_path / "m")
    assert (out / "model.joblib").read_bytes() == b"j" * 1000


def test_large_file_in_parallel_parts(http: TestHTTPServer, tmp_path: Path) -> None:
    data = os.urandom(5 * 1024 * 1024)
    url = http.add_file("big/weights.bin", data)
    http.clear_requests()
    out = download(
        url,
        tmp_path / "m",
        env={
            "MOORAGE_STORAGE_PART_SIZE": str(1 << 20),
            "MOORAGE_STORAGE_MULTIPART_THRESHOLD": str(2 << 20),
        },
    )
    assert (out / "weights.bin").read_bytes() == data
    ranged = [r for r in http.requests() if r["status"] == 206 and r["bytes"] > 1]
    assert len(ranged) == 5


def test_tar_gz_and_zip_are_unpacked(http: TestHTTPServer, tmp_path: Path) -> None:
    url = http.add_file("arch/model.tar.gz", tar_gz({"m/w.bin": b"w", "m/c.json": b"{}"}))
    out = download(url, tmp_path / "t")
    assert (out / "m" / "w.bin").read_bytes() == b"w"
    assert not (out / "model.tar.gz").exists()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("z/model.txt", "zip")
    url = http.add_file("arch/model.zip", buf.getvalue())
    out = download(url, tmp_path / "z")
    assert (out / "z" / "model.txt").read_text() == "zip"


def test_content_type_rules(http: TestHTTPServer, tmp_path: Path) -> None:
    url = http.add_file("ct/model.zip", b"PK")
    http.configure(content_types={"ct/model.zip": "text/html"})
    with pytest.raises(StorageError, match="did not respond with any of following 'Content-Type'"):
        download(url, tmp_path / "a")
    url = http.add_file("ct/model.bin", b"x")
    http.configure(content_types={"ct/model.bin": "text/html"})
    with pytest.raises(StorageError, match="application/octet-stream"):
        download(url, tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_host_headers(http: TestHTTPServer, tmp_path: Path) -> None:
    url = http.add_file("auth/model.bin", b"private")
    http.configure(require_headers={"Authorization": "Bearer hdr-secret-123"})
    with pytest.raises(StorageAuthError, match="returned a 401 response code"):
        download(url, tmp_path / "a")
    env = {"127.0.0.1-headers": '{"Authorization": "Bearer hdr-secret-123"}'}
    out = download(url, tmp_path / "b", env=env)
    assert (out / "model.bin").read_bytes() == b"private"


def test_404_and_server_without_ranges(http: TestHTTPServer, tmp_path: Path) -> None:
    with pytest.raises(StorageNotFound, match="returned a 404 response code"):
        download(f"{http.url}/static/nope/model.bin", tmp_path / "a")
    data = os.urandom(3 * 1024 * 1024)
    url = http.add_file("noranges/w.bin", data)
    http.configure(no_ranges=True)
    out = download(url, tmp_path / "b", env={"MOORAGE_STORAGE_MULTIPART_THRESHOLD": str(1 << 20)})
    assert (out / "w.bin").read_bytes() == data
    assert read_manifest(out) is not None


def test_malicious_archive_refused(http: TestHTTPServer, tmp_path: Path) -> None:
    url = http.add_file("evil/model.tar.gz", tar_gz({"../../escape.txt": b"x"}))
    with pytest.raises(UnsafeArchive, match="escapes"):
        download(url, tmp_path / "m")
    assert not (tmp_path / "m").exists()
    assert not (tmp_path / "escape.txt").exists()
