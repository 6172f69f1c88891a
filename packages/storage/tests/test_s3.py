"""s3:// against SeaweedFS with real authentication."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from moorage.core.config.storage import StorageSettings
from moorage.core.errors import IntegrityError, StorageAuthError, StorageNotFound
from moorage.storage import download, last_download_stats, read_manifest
from moorage.storage.providers.s3 import target_path
from moorage.storage.testing import SeaweedS3

from ._loopback import serving

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def bucket(seaweedfs_server: SeaweedS3) -> str:
    s3 = seaweedfs_server
    s3.create_bucket("models")
    s3.put("models", "iris/model.joblib", b"joblib" * 100)
    s3.put("models", "iris/sub/config.json", b"{}")
    s3.put("models", "iris/", b"")  # a folder marker, skipped
    s3.put("models", "single/model.bin", b"single")
    s3.put("models", "single/model.bin.extra", b"other")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        info = tarfile.TarInfo("model/weights.bin")
        info.size = 4
        tf.addfile(info, io.BytesIO(b"tar!"))
    s3.put("models", "archive/model.tar.gz", buf.getvalue())
    return "models"


def settings_for(s3: SeaweedS3, **extra: str) -> StorageSettings:
    return StorageSettings.from_environ(
        s3.env(**extra), part_size=1 << 20, multipart_threshold=2 << 20, verify_multipart_etag=True
    )


@pytest.mark.parametrize(
    ("prefix", "key", "expected"),
    [
        ("models/iris", "models/iris", "iris"),
        ("models/iris", "models/iris/a/b", "a/b"),
        ("models/iris/", "models/iris/a", "a"),
        ("models/model", "models/model.bin", "model.bin"),
        ("", "x/y", "x/y"),
    ],
)
def test_target_path(prefix: str, key: str, expected: str) -> None:
    assert target_path(prefix, key) == expected


def test_prefix_download(seaweedfs_server: SeaweedS3, bucket: str, tmp_path: Path) -> None:
    out = download(f"s3://{bucket}/iris", tmp_path / "m", settings=settings_for(seaweedfs_server))
    assert (out / "model.joblib").read_bytes() == b"joblib" * 100
    assert (out / "sub" / "config.json").read_bytes() == b"{}"
    manifest = read_manifest(out)
    assert manifest is not None
    files = {f["path"]: f for f in manifest["files"]}
    # boto3 stores a CRC32 with each upload (as AWS SDKs do): that is what was checked
    assert files["model.joblib"]["crc32"] == crc32_of(b"joblib" * 100)
    assert "md5" not in files["model.joblib"]


def crc32_of(data: bytes) -> str:
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


def test_object_without_a_stored_checksum_is_checked_by_its_md5(
    seaweedfs_server: SeaweedS3, bucket: str, tmp_path: Path
) -> None:
    import boto3
    from botocore.config import Config

    env = seaweedfs_server.env()
    bare = boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_DEFAULT_REGION"],
        config=Config(request_checksum_calculation="when_required"),
    )
    bare.put_object(Bucket=bucket, Key="nocrc/model.bin", Body=b"no checksum stored")
    stored = bare.head_object(Bucket=bucket, Key="nocrc/model.bin", ChecksumMode="ENABLED")
    if "ChecksumCRC32" in stored:
        pytest.skip("this SeaweedFS computes a CRC32 itself")
    out = download(f"s3://{bucket}/nocrc", tmp_path / "m", settings=settings_for(seaweedfs_server))
    manifest = read_manifest(out)
    assert manifest is not None
    (entry,) = manifest["files"]
    assert entry["md5"] == hashlib.md5(b"no checksum stored").hexdigest()
    assert "crc32" not in entry


def test_bytes_that_do_not_match_the_stored_crc32_are_refused(
    seaweedfs_server: SeaweedS3, bucket: str, tmp_path: Path
) -> None:
    """A proxy in front of SeaweedFS flips a byte of the object's body (its headers, the CRC32
    included, pass unchanged): the download fails verification twice and leaves nothing."""
    data = os.urandom(256 * 1024)
    seaweedfs_server.put(bucket, "flipped/model.bin", data)
    with _corrupting_proxy(seaweedfs_server.env()["AWS_ENDPOINT_URL"], "/flipped/") as endpoint:
        settings = settings_for(seaweedfs_server, AWS_ENDPOINT_URL=endpoint)
        with pytest.raises(IntegrityError, match="CRC32"):
            download(f"s3://{bucket}/flipped", tmp_path / "m", settings=settings)
    assert not (tmp_path / "m").exists()


@contextlib.contextmanager
def _corrupting_proxy(upstream: str, corrupt: str) -> Iterator[str]:
    """A forwarding HTTP proxy (Host header kept, so signatures hold) that flips one byte of
    the body of GETs whose path contains ``corrupt``."""
    import http.client
    import http.server
    from urllib.parse import urlsplit

    target = urlsplit(upstream)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            conn = http.client.HTTPConnection(
                target.hostname or "127.0.0.1", target.port, timeout=30
            )
            conn.putrequest("GET", self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in self.headers.items():
                conn.putheader(name, value)
            conn.endheaders()
            reply = conn.getresponse()
            body = bytearray(reply.read())
            if corrupt in self.path and "list-type" not in self.path and len(body) > 10:
                body[10] ^= 0xFF
            self.send_response(reply.status)
            for name, value in reply.getheaders():
                if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            conn.close()

        def log_message(self, *args: object) -> None:
            pass

    with serving(http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)) as address:
        yield f"http://{address}"


def test_exact_key_only(seaweedfs_server: SeaweedS3, bucket: str, tmp_path: Path) -> None:
    out = download(
        f"s3://{bucket}/single/model.bin", tmp_path / "m", settings=settings_for(seaweedfs_server)
    )
    assert sorted(p.name for p in out.iterdir()) == [".moorage-download.json", "model.bin"]


def test_single_archive_is_unpacked(
    seaweedfs_server: SeaweedS3, bucket: str, tmp_path: Path
) -> None:
    out = download(
        f"s3://{bucket}/archive", tmp_path / "m", settings=settings_for(seaweedfs_server)
    )
    assert (out / "model" / "weights.bin").read_bytes() == b"tar!"
    assert not (out / "model.tar.gz").exists()


def test_multipart_object_parallel_and_verified(
    seaweedfs_server: SeaweedS3, bucket: str, tmp_path: Path
) -> None:
    data = os.urandom(9 * 1024 * 1024 + 123)
    src = tmp_path / "big.bin"
    src.write_bytes(data)
    seaweedfs_server.upload_file(bucket, "big/weights.bin", src, part_size=5 * 1024 * 1024)
    out = download(f"s3://{bucket}/big", tmp_path / "m", settings=settings_for(seaweedfs_server))
    assert (
        hashlib.sha256((out / "weights.bin").read_bytes()).digest() == hashlib.sha256(data).digest()
    )
    manifest = read_manifest(out)
    assert manifest is not None and manifest["files"][0]["etag"].endswith("-2")
    download(f"s3://{bucket}/big", tmp_path / "m", settings=settings_for(seaweedfs_server))
    assert last_download_stats().skipped


def test_storage_spec_json(seaweedfs_server: SeaweedS3, bucket: str, tmp_path: Path) -> None:
    s3 = seaweedfs_server
    spec = json.dumps(
        {
            "type": "s3",
            "endpoint_url": s3.endpoint,
            "access_key_id": s3.access_key,
            "secret_access_key": s3.secret_key,
            "region": "us-east-1",
        }
    )
    out = download(f"s3://{bucket}/iris", tmp_path / "m", env={"STORAGE_CONFIG": spec})
    assert (out / "model.joblib").exists()


def test_s3_endpoint_and_use_https(
    seaweedfs_server: SeaweedS3, bucket: str, tmp_path: Path
) -> None:
    s3 = seaweedfs_server
    env = {
        "S3_ENDPOINT": s3.endpoint.removeprefix("http://"),
        "S3_USE_HTTPS": "0",
        "AWS_ACCESS_KEY_ID": s3.access_key,
        "AWS_SECRET_ACCESS_KEY": s3.secret_key,
    }
    out = download(f"s3://{bucket}/iris", tmp_path / "m", env=env)
    assert (out / "model.joblib").exists()


def test_wrong_keys_refused_without_leaking(
    seaweedfs_server: SeaweedS3, bucket: str, tmp_path: Path
) -> None:
    env = seaweedfs_server.env(AWS_SECRET_ACCESS_KEY="wrong-secret-value")
    with pytest.raises(StorageAuthError) as info:
        download(f"s3://{bucket}/iris", tmp_path / "m", env=env)
    assert "wrong-secret-value" not in str(info.value)
    assert f"s3://{bucket}/iris" in str(info.value)
    assert not (tmp_path / "m").exists()


def test_anonymous_is_refused_by_private_bucket(
    seaweedfs_server: SeaweedS3, bucket: str, tmp_path: Path
) -> None:
    env = {"AWS_ENDPOINT_URL": seaweedfs_server.endpoint, "awsAnonymousCredential": "true"}
    with pytest.raises(StorageAuthError):
        download(f"s3://{bucket}/iris", tmp_path / "m", env=env)


def test_empty_prefix_and_missing_bucket(
    seaweedfs_server: SeaweedS3, bucket: str, tmp_path: Path
) -> None:
    settings = settings_for(seaweedfs_server)
    with pytest.raises(StorageNotFound, match="No model found in s3://models/nothing-here"):
        download(f"s3://{bucket}/nothing-here", tmp_path / "m", settings=settings)
    with pytest.raises(StorageNotFound, match="does not exist"):
        download("s3://no-such-bucket/x", tmp_path / "m", settings=settings)


def test_odd_keys_and_pagination(
    seaweedfs_server: SeaweedS3, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keys needing URL encoding round-trip, and a listing spread over pages is read whole."""
    from moorage.storage.providers import s3 as s3_provider

    names = ["a b.bin", "plus+sign.bin", "ünï/cödé.bin", "q?x=1&y.bin", "pct%41.bin"]
    for i, name in enumerate(names):
        seaweedfs_server.put(bucket, f"odd/{name}", f"{i}".encode() * 10)
    monkeypatch.setattr(s3_provider, "_PAGE_KEYS", 2)
    out = download(f"s3://{bucket}/odd", tmp_path / "m", settings=settings_for(seaweedfs_server))
    for i, name in enumerate(names):
        assert (out / name).read_bytes() == f"{i}".encode() * 10


def test_static_keys_need_no_aws_sdk(
    seaweedfs_server: SeaweedS3, bucket: str, tmp_path: Path
) -> None:
    """With keys in the environment the initializer neither imports boto3 nor botocore."""
    code = (
        "import sys; from moorage.storage.__main__ import main; rc = main(sys.argv[1:]); "
        "assert rc == 0, rc; "
        "assert not {'boto3', 'botocore'} & set(sys.modules), sorted(sys.modules)"
    )
    result = _run_initializer(seaweedfs_server, code, f"s3://{bucket}/iris", tmp_path / "m")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "m" / "model.joblib").exists()


def test_credential_chain_without_keys(
    seaweedfs_server: SeaweedS3, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No keys given: botocore's chain (here a shared credentials file) signs the requests;
    an empty chain is an auth error that says what to set."""
    s3 = seaweedfs_server
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    shared = tmp_path / "credentials"
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(shared))
    env = {"AWS_ENDPOINT_URL": s3.endpoint, "MOORAGE_STORAGE_PROGRESS": "off"}
    with pytest.raises(StorageAuthError, match="no S3 credentials found"):
        download(f"s3://{bucket}/iris", tmp_path / "m", env=env)
    shared.write_text(
        f"[default]\naws_access_key_id = {s3.access_key}\naws_secret_access_key = {s3.secret_key}\n"
    )
    out = download(f"s3://{bucket}/iris", tmp_path / "m", env=env)
    assert (out / "model.joblib").read_bytes() == b"joblib" * 100


def test_many_objects_within_a_small_descriptor_limit(
    seaweedfs_server: SeaweedS3, bucket: str, tmp_path: Path
) -> None:
    """A partial file is open only while it is being fetched: 150 objects fit in 64 fds."""
    client = seaweedfs_server.client()
    for i in range(150):
        client.put_object(Bucket=bucket, Key=f"many/f{i:03d}.bin", Body=b"%d" % i)
    code = (
        "import resource, sys; resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64)); "
        "from moorage.storage.__main__ import main; sys.exit(main(sys.argv[1:]))"
    )
    result = _run_initializer(seaweedfs_server, code, f"s3://{bucket}/many", tmp_path / "m")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "m" / "f149.bin").read_bytes() == b"149"


def _run_initializer(
    s3: SeaweedS3, code: str, uri: str, dest: Path
) -> subprocess.CompletedProcess[str]:
    """``python -c code uri dest`` (code that runs the initializer's ``main``) against ``s3``."""
    return subprocess.run(
        [sys.executable, "-c", code, uri, str(dest)],
        env={**os.environ, **s3.env(MOORAGE_STORAGE_PROGRESS="off")},
        capture_output=True,
        text=True,
        check=False,
    )
