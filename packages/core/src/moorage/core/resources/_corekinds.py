"""Kubernetes core objects that travel beside KServe's resources in one YAML file.

KServe's samples put a ServiceAccount and its Secret (storage credentials), a ConfigMap
(``inferenceservice-config``, a CA bundle) or a PersistentVolumeClaim next to the
InferenceService that uses them, and ``kubectl apply -f`` takes the whole file. moorage reads
them for the same reason the controller does: credentials and config for rendering. They are
checked as the API server would check the fields moorage reads (unknown fields are refused,
values have their types); kinds whose content moorage does not use (Namespace, Service, Pod,
PersistentVolume[Claim]) are checked for ``metadata.name`` and their spec's shape where core has
the model.

These classes are not custom resources: they are not in :data:`KINDS` and have no CRD.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import ConfigDict, Field

from moorage.core._generated import k8s
from moorage.core.resources._meta import Resource

__all__ = [
    "CORE_KINDS",
    "ConfigMap",
    "CoreObject",
    "Namespace",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "Pod",
    "Secret",
    "Service",
    "ServiceAccount",
]


class CoreObject(Resource):
    """Base of the Kubernetes core (``v1``) kinds moorage accepts beside its resources."""

    API_VERSION: ClassVar[str] = "v1"
    HAS_STATUS: ClassVar[bool] = False

    api_version: Annotated[Literal["v1"], Field(alias="apiVersion")] = "v1"


class ConfigMap(CoreObject):
    KIND: ClassVar[str] = "ConfigMap"
    PLURAL: ClassVar[str] = "configmaps"

    kind: Literal["ConfigMap"] = "ConfigMap"
    data: dict[str, str] | None = None
    binary_data: dict[str, str] | None = None
    immutable: bool | None = None


class Secret(CoreObject):
    KIND: ClassVar[str] = "Secret"
    PLURAL: ClassVar[str] = "secrets"

    kind: Literal["Secret"] = "Secret"
    type: str | None = None
    data: dict[str, str] | None = None
    string_data: dict[str, str] | None = None
    immutable: bool | None = None

    def value(self, key: str) -> str | None:
        """The decoded value of ``key`` (``stringData`` wins over base64 ``data``, as the API
        server merges them), or None."""
        import base64
        import binascii

        if self.string_data and key in self.string_data:
            return self.string_data[key]
        raw = (self.data or {}).get(key)
        if raw is None:
            return None
        try:
            return base64.b64decode(raw, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None

    def keys(self) -> set[str]:
        return set(self.data or {}) | set(self.string_data or {})


class ServiceAccount(CoreObject):
    KIND: ClassVar[str] = "ServiceAccount"
    PLURAL: ClassVar[str] = "serviceaccounts"

    kind: Literal["ServiceAccount"] = "ServiceAccount"
    secrets: list[k8s.ObjectReference] | None = None
    image_pull_secrets: list[k8s.LocalObjectReference] | None = None
    automount_service_account_token: bool | None = None


class _Opaque(CoreObject):
    """A core kind whose spec/status moorage does not read: both kept as given."""

    model_config = ConfigDict(extra="forbid")

    spec: dict[str, Any] | None = None
    status: dict[str, Any] | None = None


class Namespace(_Opaque):
    KIND: ClassVar[str] = "Namespace"
    PLURAL: ClassVar[str] = "namespaces"

    kind: Literal["Namespace"] = "Namespace"


class Service(_Opaque):
    KIND: ClassVar[str] = "Service"
    PLURAL: ClassVar[str] = "services"

    kind: Literal["Service"] = "Service"


class PersistentVolumeClaim(CoreObject):
    KIND: ClassVar[str] = "PersistentVolumeClaim"
    PLURAL: ClassVar[str] = "persistentvolumeclaims"

    kind: Literal["PersistentVolumeClaim"] = "PersistentVolumeClaim"
    spec: k8s.PersistentVolumeClaimSpec | None = None
    status: dict[str, Any] | None = None


class PersistentVolume(CoreObject):
    KIND: ClassVar[str] = "PersistentVolume"
    PLURAL: ClassVar[str] = "persistentvolumes"

    kind: Literal["PersistentVolume"] = "PersistentVolume"
    spec: k8s.PersistentVolumeSpec | None = None
    status: dict[str, Any] | None = None


class Pod(CoreObject):
    KIND: ClassVar[str] = "Pod"
    PLURAL: ClassVar[str] = "pods"

    kind: Literal["Pod"] = "Pod"
    spec: k8s.PodSpec | None = None
    status: dict[str, Any] | None = None


#: (apiVersion, kind) -> class, for the core kinds accepted beside KServe's resources.
CORE_KINDS: dict[tuple[str, str], type[Resource]] = {
    (c.API_VERSION, c.KIND): c
    for c in (
        ConfigMap,
        Secret,
        ServiceAccount,
        Namespace,
        Service,
        PersistentVolumeClaim,
        PersistentVolume,
        Pod,
    )
}
