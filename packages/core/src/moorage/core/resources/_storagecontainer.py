"""ClusterStorageContainer (serving.kserve.io/v1alpha1): storage initializer overrides per URI."""

from __future__ import annotations

import re
from typing import Annotated, ClassVar, Literal

from pydantic import Field

from moorage.core._generated import k8s
from moorage.core.resources._meta import (
    GROUP,
    KubeModel,
    Resource,
)

__all__ = [
    "ClusterStorageContainer",
    "StorageContainerSpec",
    "SupportedUriFormat",
]

_V1ALPHA1 = f"{GROUP}/v1alpha1"


class SupportedUriFormat(KubeModel):
    prefix: str | None = None
    regex: str | None = None

    def matches(self, uri: str) -> bool:
        if self.prefix and uri.startswith(self.prefix):
            return True
        return bool(self.regex and re.match(self.regex, uri))


class StorageContainerSpec(KubeModel):
    container: k8s.Container
    supported_uri_formats: list[SupportedUriFormat]
    workload_type: Literal["initContainer", "localModelDownloadJob"] | None = None


class ClusterStorageContainer(Resource):
    """Overrides the storage initializer container for the URIs it lists."""

    API_VERSION: ClassVar[str] = _V1ALPHA1
    KIND: ClassVar[str] = "ClusterStorageContainer"
    PLURAL: ClassVar[str] = "clusterstoragecontainers"
    SCOPE: ClassVar[Literal["Namespaced", "Cluster"]] = "Cluster"
    HAS_STATUS: ClassVar[bool] = False

    api_version: Annotated[Literal["serving.kserve.io/v1alpha1"], Field(alias="apiVersion")] = (
        "serving.kserve.io/v1alpha1"
    )
    kind: Literal["ClusterStorageContainer"] = "ClusterStorageContainer"
    spec: StorageContainerSpec
    disabled: bool | None = None

    def supports(self, uri: str, *, workload: str = "initContainer") -> bool:
        """Whether this (enabled) container handles ``uri`` for that workload type."""
        if self.disabled:
            return False
        if (self.spec.workload_type or "initContainer") != workload:
            return False
        return any(f.matches(uri) for f in self.spec.supported_uri_formats)
