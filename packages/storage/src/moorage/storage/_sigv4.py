"""AWS Signature Version 4 for S3, query-string form (pre-signed URLs), in the standard library.

The S3 provider signs every request it sends (listings, part-size probes, object GETs) as a
pre-signed URL: the signature travels in the query string, so one code path serves every
operation and the transfer engine's plain HTTP client carries the bytes. Signing a URL costs a
few HMACs (the day's signing key is cached), against a botocore import and client set-up of
several hundred milliseconds, which is most of a small model's download.

What is signed, as AWS documents it: the method, the URI-encoded path (S3 does not encode it
twice), the sorted query string including the ``X-Amz-*`` parameters, the ``host`` header and
``UNSIGNED-PAYLOAD``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import quote

__all__ = ["Credentials", "SigV4Signer", "uri_encode"]

_ALGORITHM = "AWS4-HMAC-SHA256"
_SERVICE = "s3"
_UNRESERVED = re.compile(r"[A-Za-z0-9._~-]*").fullmatch
_UNRESERVED_OR_SLASH = re.compile(r"[A-Za-z0-9._~/-]*").fullmatch


@dataclass(frozen=True)
class Credentials:
    """An access key, its secret and, for temporary credentials, the session token."""

    access_key: str
    secret_key: str
    token: str | None = None

    def __repr__(self) -> str:  # never show the secret
        return f"Credentials(access_key={self.access_key!r}, secret_key='***')"


def uri_encode(value: str, *, keep_slash: bool = False) -> str:
    """Percent-encode everything but ``A-Za-z0-9-._~`` (and ``/`` when ``keep_slash``)."""
    if (_UNRESERVED_OR_SLASH if keep_slash else _UNRESERVED)(value):
        return value  # the common case, without quote()'s per-character work
    return quote(value, safe="/-_.~" if keep_slash else "-_.~")


class SigV4Signer:
    """Pre-signs S3 URLs for one region with credentials from ``credentials()``.

    ``credentials`` is called for every URL, so credentials that refresh themselves (a web
    identity token, an instance profile) are always current.
    """

    def __init__(self, credentials: Callable[[], Credentials], region: str) -> None:
        self._credentials = credentials
        self.region = region
        self._keys: dict[tuple[str, str], bytes] = {}
        self._lock = threading.Lock()

    def _signing_key(self, secret: str, day: str) -> bytes:
        cache_key = (secret, day)
        key = self._keys.get(cache_key)
        if key is None:
            key = _hmac(("AWS4" + secret).encode(), day)
            for part in (self.region, _SERVICE, "aws4_request"):
                key = _hmac(key, part)
            with self._lock:
                self._keys = {cache_key: key}  # one day, one secret: keep only the latest
        return key

    def presign(
        self,
        method: str,
        scheme: str,
        host: str,
        path: str,
        query: Mapping[str, str] | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        expires: int = 3600,
        now: float | None = None,
    ) -> str:
        """The pre-signed URL of ``method scheme://host/path?query``.

        ``host`` is the Host header as sent (with ``:port`` when it is not the scheme's
        default); ``path`` is the decoded path (``/bucket/key``), encoded here. ``headers``:
        other headers the request will carry that are signed too (S3 refuses ``x-amz-*``
        headers a pre-signed URL does not sign); the request must send them as given.
        """
        signed = {"host": host}
        for name, value in (headers or {}).items():
            signed[name.lower()] = " ".join(value.split())
        names = sorted(signed)
        signed_headers = ";".join(names)
        creds = self._credentials()
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
        day = stamp[:8]
        scope = f"{day}/{self.region}/{_SERVICE}/aws4_request"
        params = dict(query or {})
        params.update(
            {
                "X-Amz-Algorithm": _ALGORITHM,
                "X-Amz-Credential": f"{creds.access_key}/{scope}",
                "X-Amz-Date": stamp,
                "X-Amz-Expires": str(expires),
                "X-Amz-SignedHeaders": signed_headers,
            }
        )
        if creds.token:
            params["X-Amz-Security-Token"] = creds.token
        canonical_query = "&".join(
            f"{uri_encode(k)}={uri_encode(v)}" for k, v in sorted(params.items())
        )
        canonical_path = uri_encode(path, keep_slash=True)
        canonical_headers = "".join(f"{name}:{signed[name]}\n" for name in names)
        canonical = "\n".join(
            (
                method,
                canonical_path,
                canonical_query,
                canonical_headers,
                signed_headers,
                "UNSIGNED-PAYLOAD",
            )
        )
        to_sign = "\n".join(
            (_ALGORITHM, stamp, scope, hashlib.sha256(canonical.encode()).hexdigest())
        )
        signature = hmac.new(
            self._signing_key(creds.secret_key, day), to_sign.encode(), hashlib.sha256
        ).hexdigest()
        return f"{scheme}://{host}{canonical_path}?{canonical_query}&X-Amz-Signature={signature}"


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()
