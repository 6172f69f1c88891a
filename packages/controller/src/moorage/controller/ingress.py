"""The Ingress KServe v0.14's RawDeployment reconciler creates for an InferenceService.

One ``networking.k8s.io/v1`` Ingress named after the InferenceService, class
``ingress.ingressClassName``, with a rule per host, each routing ``/`` to a component's Service:
the transformer's (or the explainer's) own host, the predictor's, and the InferenceService's
top-level host, which goes to the transformer when there is one, else to the predictor. Hosts
come from ``ingress.domainTemplate`` (``{{ .Name }}-{{ .Namespace }}.{{ .IngressDomain }}``).
None when ``ingress.disableIngressCreation`` is set or the InferenceService is labelled
``networking.kserve.io/visibility: cluster-local``.
"""

from __future__ import annotations

import re
from typing import Any

from moorage.controller.arguments import (
    explainer_service_name,
    predictor_service_name,
    transformer_service_name,
)
from moorage.core.config.configmap import InferenceServiceConfig
from moorage.core.resources import InferenceService

__all__ = ["VISIBILITY_LABEL", "ingress_for"]

ISVC_LABEL = "serving.kserve.io/inferenceservice"
SERVICE_PORT = 80
VISIBILITY_LABEL = "networking.kserve.io/visibility"
_TEMPLATE_FIELD = re.compile(r"\{\{\s*\.(\w+)(?:\.([\w.\-/]+))?\s*\}\}")


def _domain(template: str, name: str, isvc: InferenceService, namespace: str, domain: str) -> str:
    """``ingress.domainTemplate`` rendered for one name (KServe's GenerateDomainName)."""
    meta = isvc.metadata
    values: dict[str, Any] = {
        "Name": name,
        "Namespace": namespace,
        "IngressDomain": domain,
        "Labels": meta.labels or {},
        "Annotations": meta.annotations or {},
    }

    def value(match: re.Match[str]) -> str:
        field, key = match.group(1), match.group(2)
        found = values.get(field, "")
        return str(found.get(key, "") if key and isinstance(found, dict) else found)

    return _TEMPLATE_FIELD.sub(value, template)


def _rule(host: str, service: str, port: int) -> dict[str, Any]:
    backend = {"service": {"name": service, "port": {"number": port}}}
    path = {"path": "/", "pathType": "Prefix", "backend": backend}
    return {"host": host, "http": {"paths": [path]}}


def ingress_for(
    isvc: InferenceService,
    namespace: str,
    config: InferenceServiceConfig,
    *,
    service_port: int = SERVICE_PORT,
) -> dict[str, Any] | None:
    """KServe's RawDeployment Ingress: a host per component and the InferenceService's own host,
    which goes to the transformer when there is one (else the predictor). None when ingress
    creation is disabled or the InferenceService is cluster-local."""
    ingress = config.ingress
    if ingress.disable_ingress_creation:
        return None
    if (isvc.metadata.labels or {}).get(VISIBILITY_LABEL) == "cluster-local":
        return None
    predictor = predictor_service_name(isvc.name)
    template, domain = ingress.domain_template, ingress.ingress_domain
    rules = []
    front = predictor

    def rule(name: str, service: str) -> None:
        rules.append(_rule(_domain(template, name, isvc, namespace, domain), service, service_port))

    if isvc.spec.transformer is not None:
        front = transformer_service_name(isvc.name)
        rule(front, front)
    elif isvc.spec.explainer is not None:
        explainer = explainer_service_name(isvc.name)
        rule(explainer, explainer)
    rule(predictor, predictor)
    rule(isvc.name, front)
    meta: dict[str, Any] = {
        "name": isvc.name,
        "namespace": namespace,
        "labels": {ISVC_LABEL: isvc.name},
    }
    annotations = {
        k: v
        for k, v in (isvc.metadata.annotations or {}).items()
        if not k.startswith("kubectl.kubernetes.io")
    }
    if annotations:
        meta["annotations"] = annotations
    spec: dict[str, Any] = {"rules": rules}
    if ingress.ingress_class_name:
        spec["ingressClassName"] = ingress.ingress_class_name
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": meta, "spec": spec}
