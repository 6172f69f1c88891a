"""A small async Kubernetes API client: the handful of calls the cache needs, over httpx.

:class:`KubeConfig` reads a kubeconfig file (the current context's server, CA, token or token
file, client certificate and key, inline or as files) or the in-cluster service account.
Exec and auth-provider plugins are not supported: give the controller and the agent a service
account (in a cluster) or a token/certificate kubeconfig. :class:`Kube` gets, lists, watches,
creates, merge-patches (also ``/status``) and deletes objects by :class:`Kind`.

Tokens and keys never reach a log line or an exception message.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import ssl
import tempfile
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

__all__ = [
    "CACHES",
    "CONFIGMAPS",
    "GROUPS",
    "ISVCS",
    "LOCAL_MODEL_NODES",
    "NODES",
    "PVCS",
    "PVS",
    "Kind",
    "Kube",
    "KubeConfig",
    "KubeError",
]

logger = logging.getLogger(__name__)

_SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


@dataclass(frozen=True)
class Kind:
    """An API resource: group (``""`` for core), version, plural, scope."""

    group: str
    version: str
    plural: str
    namespaced: bool

    def path(self, *, namespace: str | None = None, name: str | None = None, sub: str = "") -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name:
            base += f"/{name}"
        if sub:
            base += f"/{sub}"
        return base


CACHES = Kind("serving.kserve.io", "v1alpha1", "localmodelcaches", False)
GROUPS = Kind("serving.kserve.io", "v1alpha1", "localmodelnodegroups", False)
LOCAL_MODEL_NODES = Kind("serving.kserve.io", "v1alpha1", "localmodelnodes", False)
ISVCS = Kind("serving.kserve.io", "v1beta1", "inferenceservices", True)
NODES = Kind("", "v1", "nodes", False)
PVS = Kind("", "v1", "persistentvolumes", False)
PVCS = Kind("", "v1", "persistentvolumeclaims", True)
CONFIGMAPS = Kind("", "v1", "configmaps", True)


class KubeError(Exception):
    """An API call that failed: the HTTP status and the server's message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"Kubernetes API: {status} {message}")
        self.status = status
        self.message = message


@dataclass
class KubeConfig:
    """Where the API server is and how to authenticate (see the module docstring)."""

    server: str
    token: str | None = field(default=None, repr=False)
    ca_file: str | None = None
    ca_data: bytes | None = field(default=None, repr=False)
    insecure: bool = False
    cert_data: bytes | None = field(default=None, repr=False)
    key_data: bytes | None = field(default=None, repr=False)
    cert_file: str | None = None
    key_file: str | None = None
    namespace: str = "default"

    @classmethod
    def load(
        cls,
        kubeconfig: str | None,
        *,
        service_host: str | None = None,
        service_port: str | None = None,
    ) -> KubeConfig:
        """From the kubeconfig file, else in-cluster (``service_host``: the
        ``KUBERNETES_SERVICE_HOST`` a pod gets), else ``~/.kube/config``."""
        if kubeconfig:
            # KUBECONFIG may list several files; the first that exists is read (not merged).
            paths = [Path(p) for p in kubeconfig.split(os.pathsep) if p]
            chosen = next((p for p in paths if p.exists()), paths[0] if paths else Path())
            return cls.from_file(chosen)
        if service_host and (_SA_DIR / "token").exists():
            return cls.in_cluster(service_host, service_port or "443")
        return cls.from_file(Path.home() / ".kube" / "config")

    @classmethod
    def in_cluster(cls, host: str, port: str) -> KubeConfig:
        host = f"[{host}]" if ":" in host else host
        return cls(
            server=f"https://{host}:{port}",
            token=(_SA_DIR / "token").read_text().strip(),
            ca_file=str(_SA_DIR / "ca.crt"),
            namespace=(_SA_DIR / "namespace").read_text().strip()
            if (_SA_DIR / "namespace").exists()
            else "default",
        )

    @classmethod
    def from_file(cls, path: Path) -> KubeConfig:
        try:
            doc = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ValueError(f"cannot read kubeconfig {path}: {exc}") from None
        base = path.parent

        def named(section: str, name: str | None) -> dict[str, Any]:
            for entry in doc.get(section) or []:
                if entry.get("name") == name:
                    return dict(entry.get(section[:-1]) or {})
            raise ValueError(f"kubeconfig {path}: no {section[:-1]} named {name!r}")

        context = named("contexts", doc.get("current-context"))
        cluster = named("clusters", context.get("cluster"))
        user = named("users", context.get("user")) if context.get("user") else {}
        if "exec" in user or "auth-provider" in user:
            raise ValueError(f"kubeconfig {path}: exec/auth-provider users are not supported")

        def rel(value: str | None) -> str | None:
            return str(base / value) if value else None

        token = user.get("token")
        if not token and user.get("tokenFile"):
            token = Path(str(rel(user["tokenFile"]))).read_text().strip()
        return cls(
            server=str(cluster["server"]).rstrip("/"),
            token=token,
            ca_file=rel(cluster.get("certificate-authority")),
            ca_data=_b64(cluster.get("certificate-authority-data")),
            insecure=bool(cluster.get("insecure-skip-tls-verify")),
            cert_data=_b64(user.get("client-certificate-data")),
            key_data=_b64(user.get("client-key-data")),
            cert_file=rel(user.get("client-certificate")),
            key_file=rel(user.get("client-key")),
            namespace=str(context.get("namespace") or "default"),
        )

    def ssl_context(self) -> ssl.SSLContext | bool:
        if not self.server.startswith("https"):
            return False
        if self.insecure:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        elif self.ca_data:
            ctx = ssl.create_default_context(cadata=self.ca_data.decode())
        elif self.ca_file:
            ctx = ssl.create_default_context(cafile=self.ca_file)
        else:
            ctx = ssl.create_default_context()
        cert, key = self.cert_file, self.key_file
        if self.cert_data and self.key_data:
            cert, key = _private_files(self.cert_data, self.key_data)
        if cert and key:
            ctx.load_cert_chain(cert, key)
        return ctx


def _b64(value: str | None) -> bytes | None:
    return base64.b64decode(value) if value else None


def _private_files(cert: bytes, key: bytes) -> tuple[str, str]:
    folder = tempfile.mkdtemp(prefix="moorage-cache-")
    paths = []
    for name, data in (("client.crt", cert), ("client.key", key)):
        target = os.path.join(folder, name)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        paths.append(target)
    return paths[0], paths[1]


class Kube:
    """The API calls the cache makes. An async context manager owning one connection pool."""

    def __init__(self, config: KubeConfig, *, timeout: float = 30.0) -> None:
        self.config = config
        headers = {"Accept": "application/json"}
        if config.token:
            headers["Authorization"] = f"Bearer {config.token}"
        self._http = httpx.AsyncClient(
            base_url=config.server,
            headers=headers,
            verify=config.ssl_context(),
            timeout=httpx.Timeout(timeout, connect=10.0),
        )

    async def __aenter__(self) -> Kube:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        content_type: str = "application/json",
        params: Mapping[str, str] | None = None,
    ) -> Any:
        content = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": content_type} if content is not None else None
        try:
            response = await self._http.request(
                method, path, content=content, headers=headers, params=params
            )
        except httpx.HTTPError as exc:
            raise KubeError(0, f"{method} {path}: {type(exc).__name__}: {exc}") from None
        if response.status_code >= 400:
            try:
                message = str(response.json().get("message") or response.text)
            except ValueError:
                message = response.text
            raise KubeError(response.status_code, f"{method} {path}: {message[:500]}")
        return response.json() if response.content else None

    # -- reads ----------------------------------------------------------------------------------
    async def get(self, kind: Kind, name: str, *, namespace: str | None = None) -> Any:
        """The object, or ``None`` when it does not exist."""
        try:
            return await self._call("GET", kind.path(namespace=namespace, name=name))
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    async def list(
        self, kind: Kind, *, namespace: str | None = None, label_selector: str | None = None
    ) -> tuple[list[dict[str, Any]], str]:
        """Every object (of a namespace, or of all) and the list's resourceVersion."""
        params = {"labelSelector": label_selector} if label_selector else None
        data = await self._call("GET", kind.path(namespace=namespace), params=params)
        items = list((data or {}).get("items") or [])
        if label_selector:  # a stand-in API server may ignore the selector
            items = [i for i in items if _selected(i, label_selector)]
        rv = str(((data or {}).get("metadata") or {}).get("resourceVersion") or "")
        return items, rv

    async def watch(
        self,
        kind: Kind,
        *,
        resource_version: str = "",
        timeout_s: int = 60,
        field_selector: str | None = None,
    ) -> AsyncGenerator[tuple[str, dict[str, Any]], None]:
        """``(type, object)`` events until the server ends the watch (``timeout_s``)."""
        params = {"watch": "true", "timeoutSeconds": str(timeout_s)}
        if resource_version:
            params["resourceVersion"] = resource_version
        if field_selector:
            params["fieldSelector"] = field_selector
        timeout = httpx.Timeout(timeout_s + 15.0, connect=10.0)
        try:
            async with self._http.stream(
                "GET", kind.path(), params=params, timeout=timeout
            ) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise KubeError(response.status_code, f"watch {kind.plural}")
                async for line in response.aiter_lines():
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    if event.get("type") == "ERROR":
                        raise KubeError(410, str((event.get("object") or {}).get("message")))
                    yield str(event.get("type")), dict(event.get("object") or {})
        except httpx.HTTPError as exc:
            raise KubeError(0, f"watch {kind.plural}: {type(exc).__name__}") from None

    # -- writes ---------------------------------------------------------------------------------
    async def create(self, kind: Kind, obj: Mapping[str, Any]) -> Any:
        namespace = (obj.get("metadata") or {}).get("namespace")
        return await self._call("POST", kind.path(namespace=namespace), body=obj)

    async def patch(
        self,
        kind: Kind,
        name: str,
        patch: Mapping[str, Any],
        *,
        namespace: str | None = None,
        status: bool = False,
    ) -> Any:
        """A JSON merge patch of the object (of its ``status`` subresource with ``status``)."""
        path = kind.path(namespace=namespace, name=name, sub="status" if status else "")
        return await self._call(
            "PATCH", path, body=patch, content_type="application/merge-patch+json"
        )

    async def delete(self, kind: Kind, name: str, *, namespace: str | None = None) -> bool:
        """Delete; ``False`` when it was already gone."""
        try:
            await self._call("DELETE", kind.path(namespace=namespace, name=name))
        except KubeError as exc:
            if exc.status == 404:
                return False
            raise
        return True


def _selected(obj: Mapping[str, Any], selector: str) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    for term in selector.split(","):
        key, sep, value = term.partition("=")
        if sep:
            if labels.get(key.strip()) != value.strip():
                return False
        elif key.strip() not in labels:
            return False
    return True
