"""The admission webhooks served by the operator (kopf's webhook server, our certificate).

With ``moorage operator --webhooks``, kopf serves a mutating and a validating webhook for each of
:data:`~moorage.controller.operator.admission.WEBHOOK_KINDS` (CREATE and UPDATE) over HTTPS on
``--webhook-port`` and keeps the ``moorage.serving.kserve.io`` webhook configurations (mutating,
validating) pointing at ``https://<--webhook-host>:<port>`` with its CA bundle. The certificate is
self-signed, made at each start for the host (a restart rotates it, and kopf patches the new CA
into the configurations). The answers come from :mod:`~moorage.controller.operator.admission`.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import kopf

from moorage.controller.operator.admission import GROUP, WEBHOOK_KINDS, defaults, refusals
from moorage.controller.operator.controller import Controller

__all__ = ["CONFIGURATION_NAME", "register_webhooks", "self_signed", "webhook_server"]

CONFIGURATION_NAME = "moorage.serving.kserve.io"


def self_signed(hostnames: Sequence[str], *, days: int = 365) -> tuple[bytes, bytes]:
    """A self-signed CA certificate for ``hostnames`` and its key, both PEM."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostnames[0])])
    sans: list[x509.GeneralName] = []
    for host in hostnames:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def webhook_server(*, host: str, port: int, directory: Path) -> kopf.WebhookServer:
    """kopf's HTTPS server with a fresh self-signed certificate for ``host``."""
    cert, key = self_signed([host, "localhost", "127.0.0.1"])
    certfile, pkeyfile = directory / "tls.crt", directory / "tls.key"
    certfile.write_bytes(cert)
    pkeyfile.write_bytes(key)
    pkeyfile.chmod(0o600)
    return kopf.WebhookServer(
        addr="0.0.0.0", port=port, host=host, certfile=certfile, pkeyfile=pkeyfile, cadata=cert
    )


def register_webhooks(registry: kopf.OperatorRegistry, controller: Controller) -> None:
    """A mutating and a validating handler per kind (see the module docstring)."""
    snap = controller.snapshot

    def mutate(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
        found = defaults(
            {k: body[k] for k in body},
            config=controller.config(),
            local_model_caches=list(snap.local_model_caches.values()),
        )
        for key, value in found.items():
            patch[key] = value

    def validator(kind: str) -> Any:
        async def check(body: kopf.Body, old: kopf.Body | None = None, **_: Any) -> None:
            existing: list[Any] = []
            if kind == "LocalModelCache":
                existing = list(snap.local_model_caches.values())
            elif kind == "ClusterServingRuntime":
                existing = list(snap.cluster_runtimes.values())
            elif kind == "ServingRuntime":
                namespace = (body.get("metadata") or {}).get("namespace") or "default"
                existing = list(snap.runtimes.get(namespace, {}).values())
            parents = None
            if kind == "TrainedModel":
                namespace = (body.get("metadata") or {}).get("namespace") or "default"
                existing = list(snap.trained_models.get(namespace, {}).values())
                parents = {n: isvc for (ns, n), isvc in snap.isvcs.items() if ns == namespace}
            problems = refusals(
                {k: body[k] for k in body},
                old={k: old[k] for k in old} if old else None,
                existing=existing,
                inference_services=parents,
                config=controller.config(),
            )
            if problems:
                raise kopf.AdmissionError("; ".join(problems), code=422)

        return check

    async def mutator(body: kopf.Body, patch: kopf.Patch, **kwargs: Any) -> None:
        mutate(body, patch, **kwargs)

    for kind in WEBHOOK_KINDS:
        kopf.on.mutate(
            GROUP, kind.version, kind.plural,
            registry=registry, id=f"default-{kind.plural}", operations=["CREATE", "UPDATE"],
        )(mutator)  # fmt: skip
        kopf.on.validate(
            GROUP, kind.version, kind.plural,
            registry=registry, id=f"validate-{kind.plural}", operations=["CREATE", "UPDATE"],
        )(validator(kind.kind))  # fmt: skip
