"""Configuration of the REST client (KServe's ``RESTConfig``, with its transport bug fixed)."""

from __future__ import annotations

import os
import ssl
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import httpx

from moorage.core.errors import InvalidInput

__all__ = ["USE_CLIENT_DEFAULT", "RESTConfig"]

#: "Use the timeout the client was configured with" (httpx's sentinel, as KServe uses it).
USE_CLIENT_DEFAULT: Any = httpx.USE_CLIENT_DEFAULT

CertTypes = str | os.PathLike[str] | tuple[str, str] | tuple[str, str, str]
VerifyTypes = ssl.SSLContext | str | os.PathLike[str] | bool

_PROTOCOLS = ("v1", "v2")


@dataclass
class RESTConfig:
    """Settings of :class:`~moorage.client.InferenceRESTClient`.

    The fields and defaults are KServe 0.14's: ``protocol`` ("v1" or "v2", or any enum whose
    ``value`` is one of them), ``retries`` (connection attempts retried by the transport),
    ``http2``, ``timeout`` (seconds or an ``httpx.Timeout``), ``cert`` (client certificate: a PEM
    file holding both, or ``(certfile, keyfile[, password])``), ``verify`` (``True``, ``False``, a
    CA bundle path or an ``ssl.SSLContext``), ``auth`` (any httpx auth) and ``verbose`` (log every
    request and response at INFO).

    Moorage additions: ``headers`` sent with every request (per-call headers win), and
    ``http1`` — set it to ``False`` together with ``http2=True`` to speak HTTP/2 without TLS
    (prior knowledge, "h2c"); over ``https`` HTTP/2 is negotiated with ALPN.

    Unlike KServe, the transport built from ``retries``, ``http2``, ``cert`` and ``verify`` is
    really used. A ``transport`` you pass is used as it is: those four then belong to it.
    """

    transport: httpx.AsyncBaseTransport | None = None
    protocol: str | Enum = "v1"
    retries: int = 3
    http2: bool = False
    timeout: float | httpx.Timeout | None = 60
    cert: CertTypes | None = None
    verify: VerifyTypes = True
    auth: httpx.Auth | tuple[str, str] | None = None
    verbose: bool = False
    headers: Mapping[str, str] | None = None
    http1: bool = True
    limits: httpx.Limits = field(default_factory=lambda: httpx.Limits(max_keepalive_connections=64))

    def __post_init__(self) -> None:
        protocol = self.protocol.value if isinstance(self.protocol, Enum) else self.protocol
        if protocol not in _PROTOCOLS:
            raise InvalidInput(f"unsupported protocol {protocol!r}; expected 'v1' or 'v2'")
        self.protocol = protocol
        if not self.http1 and not self.http2:
            raise InvalidInput("http1=False needs http2=True: no HTTP version is left")

    @property
    def protocol_version(self) -> str:
        """``"v1"`` or ``"v2"``."""
        return str(self.protocol)

    @property
    def fast_path(self) -> bool:
        """Whether the client may use its own HTTP/1.1 pool (see ``moorage.client._http11``).

        Only for what httpx's default transport would do over plain HTTP/1.1: no transport of
        your own, no HTTP/2, no auth flow, and no proxy in the environment.
        """
        return (
            self.transport is None
            and not self.http2
            and self.http1
            and self.auth is None
            and not _environment_proxies()
        )

    def build_transport(self, *, context: ssl.SSLContext | None = None) -> httpx.AsyncBaseTransport:
        """The transport the client uses: the given one, or one built from these settings."""
        if self.transport is not None:
            return self.transport
        return httpx.AsyncHTTPTransport(
            verify=context if context is not None else ssl_context(self.verify, self.cert),
            http1=self.http1,
            http2=self.http2,
            retries=self.retries,
            limits=self.limits,
        )


def _environment_proxies() -> bool:
    # httpx (trust_env) routes through HTTP(S)_PROXY / ALL_PROXY: leave those calls to it.
    proxies = urllib.request.getproxies()
    return any(proxies.get(scheme) for scheme in ("http", "https", "all"))


def ssl_context(verify: VerifyTypes, cert: CertTypes | None = None) -> ssl.SSLContext:
    """An SSL context from httpx-style ``verify`` and ``cert`` arguments."""
    ctx: ssl.SSLContext
    if isinstance(verify, ssl.SSLContext):
        ctx = verify
    elif verify is True:
        ctx = httpx.create_ssl_context(verify=True)
    elif verify is False:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        path = os.fspath(verify)
        try:
            if os.path.isdir(path):
                ctx = ssl.create_default_context(capath=path)
            else:
                ctx = ssl.create_default_context(cafile=path)
        except (OSError, ssl.SSLError) as exc:
            raise InvalidInput(f"cannot load CA certificates from {path!r}: {exc}") from exc
    if cert is not None:
        _load_cert(ctx, cert)
    return ctx


def _load_cert(ctx: ssl.SSLContext, cert: Any) -> None:
    try:
        if isinstance(cert, tuple):
            ctx.load_cert_chain(*cert)
        else:
            ctx.load_cert_chain(os.fspath(cert))
    except (OSError, ssl.SSLError) as exc:
        raise InvalidInput(f"cannot load client certificate {cert!r}: {exc}") from exc
