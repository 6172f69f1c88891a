"""Shared building blocks of the serving.kserve.io resources.

Unknown fields
--------------
The models behave like an API server holding the CRDs of ``charts/moorage/crds`` and answering
``kubectl apply`` (whose default since Kubernetes 1.27 is ``--validate=strict``):

* ``spec`` types and ``metadata`` are :class:`KubeModel` (``extra="forbid"``): an unknown field
  is an error naming its path (``unknown field "spec.predictor.foo"``), as strict server-side
  field validation reports it. KServe's CRDs keep no free-form object inside a spec, so
  neither do we.
* ``status`` types are :class:`StatusModel` (``extra="ignore"``): a controller writes status
  without strict validation, and the API server *prunes* what the schema does not declare.
  Parsing a status with a field we do not know therefore drops it, exactly as the server would.
* Maps of strings (labels, ``storage.parameters``, ``art.config``) take any keys.

Round trips: every optional field defaults to ``None``, so
``model_dump(by_alias=True, exclude_none=True)`` of a parsed document equals the document.
Defaults are only ever added by :func:`moorage.core.resources.default`.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from moorage.core._generated import k8s

__all__ = [
    "GROUP",
    "Addressable",
    "Condition",
    "Int32",
    "Int64",
    "KubeModel",
    "ObjectMeta",
    "PrinterColumn",
    "ProtocolVersion",
    "Quantity",
    "Resource",
    "StatusModel",
]

GROUP = "serving.kserve.io"

ObjectMeta = k8s.ObjectMeta
Quantity = k8s.Quantity

#: Integers of KServe's Go types, with the format its CRDs give them (controller-gen writes
#: ``format: int32`` for ``int32`` fields and ``int64`` for ``int64`` ones; Go's ``int`` has none,
#: so ``minReplicas`` and the like stay plain ``int`` here too).
Int32 = Annotated[int, Field(json_schema_extra={"format": "int32"})]
Int64 = Annotated[int, Field(json_schema_extra={"format": "int64"})]

#: Inference protocol versions a model or runtime speaks (constants.InferenceServiceProtocol).
ProtocolVersion = Literal["v1", "v2", "grpc-v1", "grpc-v2"]


class KubeModel(BaseModel):
    """Base of spec types: camelCase on the wire, snake_case in Python, unknown fields rejected.

    Validators are built on first use (``defer_build``), so importing the resources is cheap.
    """

    model_config = ConfigDict(
        defer_build=True,
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        protected_namespaces=(),
    )


class StatusModel(KubeModel):
    """Base of status types: unknown fields are pruned (dropped), as the API server does."""

    model_config = ConfigDict(extra="ignore")


class Condition(StatusModel):
    """A knative-style condition (knative.dev/pkg/apis.Condition)."""

    type: str
    status: Literal["True", "False", "Unknown"]
    severity: str | None = None
    last_transition_time: str | None = None
    reason: str | None = None
    message: str | None = None


class Addressable(StatusModel):
    """knative duck type Addressable: where the component can be reached."""

    url: str | None = None
    name: str | None = None
    ca_certs: Annotated[str | None, Field(alias="CACerts")] = None
    audience: str | None = None


class PrinterColumn(BaseModel):
    """One ``additionalPrinterColumns`` entry of a CRD."""

    name: str
    type: str
    json_path: str
    priority: int = 0
    description: str | None = None


class Resource(KubeModel):
    """A serving.kserve.io custom resource: apiVersion, kind, metadata, and (per kind) spec/status.

    Class variables describe the CRD (names, scope, printer columns); ``crds.py`` reads them.
    """

    API_VERSION: ClassVar[str]
    KIND: ClassVar[str]
    PLURAL: ClassVar[str]
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ()
    SCOPE: ClassVar[Literal["Namespaced", "Cluster"]] = "Namespaced"
    PRINTER_COLUMNS: ClassVar[tuple[PrinterColumn, ...]] = ()
    HAS_STATUS: ClassVar[bool] = True

    api_version: str
    kind: str
    metadata: ObjectMeta = Field(default_factory=lambda: ObjectMeta())

    @property
    def name(self) -> str:
        return self.metadata.name or ""

    @property
    def namespace(self) -> str | None:
        return self.metadata.namespace

    def to_dict(self) -> dict[str, Any]:
        """The resource as the API server would return it (camelCase, no unset fields)."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


def age_column() -> PrinterColumn:
    return PrinterColumn(name="Age", type="date", json_path=".metadata.creationTimestamp")


def ready_column() -> PrinterColumn:
    return PrinterColumn(
        name="Ready", type="string", json_path=".status.conditions[?(@.type=='Ready')].status"
    )
