"""The per-download context providers and the engine share."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from moorage.core.config.storage import StorageSettings
from moorage.storage._http import HttpClient
from moorage.storage._redact import register_secret

__all__ = ["Context"]


@dataclass
class Context:
    """Settings plus the shared HTTP client and cancellation flag of one download."""

    settings: StorageSettings
    uri: str
    http: HttpClient = field(init=False)
    stop: threading.Event = field(default_factory=threading.Event)
    _clients: list[HttpClient] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        s = self.settings
        for secret in (
            s.aws_secret_access_key,
            s.aws_session_token,
            s.azure_client_secret,
            s.azure_storage_access_key,
            s.azure_storage_sas_token,
            s.hf_token,
        ):
            if secret is not None:
                register_secret(secret.get_secret_value())
        for headers in s.http_headers.values():
            for value in headers.values():
                register_secret(value)
        self.http = self.make_http()

    def make_http(self, *, verify: bool | str = True) -> HttpClient:
        """A new HTTP client closed with this context (a provider needing other TLS settings)."""
        client = HttpClient(
            verify=verify,
            connect_timeout=self.settings.connect_timeout_s,
            read_timeout=self.settings.read_timeout_s,
            default_headers=self.settings.http_headers,
        )
        self._clients.append(client)
        return client

    def close(self) -> None:
        for client in self._clients:
            client.close()
