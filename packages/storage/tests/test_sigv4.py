"""SigV4 pre-signing against AWS's published example (no server needed)."""

from __future__ import annotations

import calendar
from pathlib import Path

import pytest

from moorage.storage._sigv4 import Credentials, SigV4Signer, uri_encode

from ._loopback import serving

# The example of AWS's "Authenticating Requests: Using Query Parameters" page for S3.
ACCESS_KEY = "AKIAIOSFODNN7EXAMPLE"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


def test_published_example() -> None:
    signer = SigV4Signer(lambda: Credentials(ACCESS_KEY, SECRET_KEY), "us-east-1")
    url = signer.presign(
        "GET",
        "https",
        "examplebucket.s3.amazonaws.com",
        "/test.txt",
        expires=86400,
        now=calendar.timegm((2013, 5, 24, 0, 0, 0)),
    )
    assert url == (
        "https://examplebucket.s3.amazonaws.com/test.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256"
        "&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request"
        "&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host"
        "&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
    )


def test_session_token_is_signed_and_secret_never_shown() -> None:
    creds = Credentials(ACCESS_KEY, SECRET_KEY, token="session/token+value")
    url = SigV4Signer(lambda: creds, "eu-west-1").presign("HEAD", "http", "h:9000", "/b/k")
    assert "X-Amz-Security-Token=session%2Ftoken%2Bvalue" in url
    assert SECRET_KEY not in url and SECRET_KEY not in repr(creds)


def test_uri_encode() -> None:
    assert uri_encode("a b+c/d~e", keep_slash=True) == "a%20b%2Bc/d~e"
    assert uri_encode("a/b=c") == "a%2Fb%3Dc"
    assert uri_encode("é") == "%C3%A9"


@pytest.mark.parametrize(
    ("env", "bucket", "expected"),
    [
        ({}, "models", ("https", "models.s3.eu-west-1.amazonaws.com", "")),
        ({}, "my.dotted.bucket", ("https", "s3.eu-west-1.amazonaws.com", "/my.dotted.bucket")),
        (
            {"S3_USE_ACCELERATE": "true"},
            "models",
            ("https", "models.s3-accelerate.amazonaws.com", ""),
        ),
        ({"AWS_ENDPOINT_URL": "http://minio:9000"}, "models", ("http", "minio:9000", "/models")),
        ({"AWS_ENDPOINT_URL": "https://Proxy:443/s3/"}, "m", ("https", "proxy", "/s3/m")),
        ({"S3_ENDPOINT": "minio:9000", "S3_USE_HTTPS": "0"}, "m", ("http", "minio:9000", "/m")),
        (
            {"AWS_ENDPOINT_URL": "http://minio:9000", "S3_USER_VIRTUAL_BUCKET": "true"},
            "models",
            ("http", "models.minio:9000", ""),
        ),
    ],
)
def test_s3_addressing(env: dict[str, str], bucket: str, expected: tuple[str, str, str]) -> None:
    """Where each bucket's requests go: virtual host on AWS, path style to an endpoint."""
    from moorage.core.config.storage import StorageSettings
    from moorage.storage._context import Context
    from moorage.storage.providers.s3 import _bucket

    ctx = Context(settings=StorageSettings.from_environ(env), uri=f"s3://{bucket}/x")
    try:
        address = _bucket(ctx, bucket, "eu-west-1", None)
    finally:
        ctx.close()
    assert (address.scheme, address.host, address.base) == expected
    assert address.url("GET", "a b/c").startswith(
        f"{expected[0]}://{expected[1]}{expected[2]}/a%20b/c"
    )


def test_bucket_in_another_region_is_signed_again(tmp_path: Path) -> None:
    """AWS answers a request signed for the wrong region with 400 naming the bucket's region
    (header and body): the listing and every GET are signed again for it, once."""
    import http.server
    from urllib.parse import parse_qs, urlsplit

    from moorage.storage import download

    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            query = parse_qs(parts.query)
            region = query.get("X-Amz-Credential", ["////"])[0].split("/")[2]
            seen.append(region)
            if region != "eu-west-1":
                body = (
                    b"<Error><Code>AuthorizationHeaderMalformed</Code>"
                    b"<Region>eu-west-1</Region></Error>"
                )
                self.send_response(400)
                self.send_header("x-amz-bucket-region", "eu-west-1")
            elif "list-type" in query:
                body = (
                    b'<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
                    b"<IsTruncated>false</IsTruncated><Contents><Key>m/model.bin</Key>"
                    b'<ETag>"x"</ETag><Size>5</Size></Contents></ListBucketResult>'
                )
                self.send_response(200)
            else:
                body = b"bytes"
                self.send_response(206 if "Range" in self.headers else 200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    with serving(http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)) as address:
        env = {
            "AWS_ENDPOINT_URL": f"http://{address}",
            "AWS_ACCESS_KEY_ID": "AKID",
            "AWS_SECRET_ACCESS_KEY": "secret-key-value",
            "MOORAGE_STORAGE_PROGRESS": "off",
        }
        out = download("s3://bucket/m", tmp_path / "d", env=env)
    assert (out / "model.bin").read_bytes() == b"bytes"
    assert seen == ["us-east-1", "eu-west-1", "eu-west-1"]


def test_extra_headers_are_signed() -> None:
    signer = SigV4Signer(lambda: Credentials(ACCESS_KEY, SECRET_KEY), "us-east-1")
    when = calendar.timegm((2013, 5, 24, 0, 0, 0))

    def url(headers: dict[str, str] | None) -> str:
        return signer.presign("GET", "https", "h", "/b/k", headers=headers, now=when)

    enabled = url({"X-Amz-Checksum-Mode": "ENABLED"})
    assert "X-Amz-SignedHeaders=host%3Bx-amz-checksum-mode" in enabled
    assert enabled != url({"x-amz-checksum-mode": "DISABLED"})  # the value is signed
    assert "X-Amz-SignedHeaders=host&" in url(None)
