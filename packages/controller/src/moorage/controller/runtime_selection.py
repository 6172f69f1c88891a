"""Pick the (Cluster)ServingRuntime that serves a predictor, as KServe v0.14's controller does.

The rules (``predictor_model.go`` ``GetSupportingRuntimes`` and ``components/predictor.go``):

* The model is ``predictor.model``; a framework shorthand (``predictor.sklearn``, ...) is the same
  model with ``modelFormat.name`` set to the framework. Its protocol is ``protocolVersion`` or
  ``v1``; its format label is ``mt:<name>`` or ``mt:<name>:<version>``.
* **Explicit** ``model.runtime``: the ServingRuntime of that name in the InferenceService's
  namespace, else the ClusterServingRuntime of that name. It must not be disabled, must speak the
  protocol when one is given, and must list the format among its ``supportedModelFormats``
  (``autoSelect`` does not matter here).
* **Automatic**: every runtime that is not disabled, is single-model, has a ``workerSpec`` exactly
  when the predictor has one, speaks the protocol (an empty ``protocolVersions`` speaks all) and
  lists the format with ``autoSelect: true``. Namespace ServingRuntimes come first, then
  ClusterServingRuntimes. Within each group runtimes are ordered by their lowest protocol
  (v1 < v2 < grpc-v1 < grpc-v2 < none), then newest ``creationTimestamp``, then name, and then
  stably by the format's ``priority``, highest first, runtimes without one last. The first wins.

Everything here is pure: runtimes are passed in, nothing is listed from an API server.
Failures raise :class:`moorage.core.errors.ValidationError` with the field path of the model
spec and ``details["reason"]`` set to KServe's ``modelStatus.lastFailureInfo.reason``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from moorage.core.errors import ValidationError
from moorage.core.resources import (
    ClusterServingRuntime,
    InferenceService,
    ModelFormat,
    ModelSpec,
    PredictorExtensionSpec,
    ServingRuntime,
    ServingRuntimeSpec,
)

__all__ = [
    "AnyRuntime",
    "PredictorModel",
    "SelectedRuntime",
    "predictor_model",
    "select_runtime",
    "supporting_runtimes",
    "supports",
]

AnyRuntime = ServingRuntime | ClusterServingRuntime

#: KServe's protocol enum order (constants.GetProtocolVersionInt); a runtime without
#: ``protocolVersions`` ranks after all of them.
_PROTOCOL_RANK = {"v1": 0, "v2": 1, "grpc-v1": 2, "grpc-v2": 3}
_UNKNOWN_RANK = len(_PROTOCOL_RANK)

#: Framework shorthand fields of PredictorSpec, in KServe's order.
FRAMEWORK_FIELDS = (
    "sklearn",
    "xgboost",
    "tensorflow",
    "pytorch",
    "triton",
    "onnx",
    "huggingface",
    "pmml",
    "lightgbm",
    "paddle",
)


@dataclass(frozen=True)
class PredictorModel:
    """The model a predictor serves, whichever way the YAML spelled it.

    ``spec`` is the implementation (``predictor.model`` or the shorthand); ``field`` is its path
    (``spec.predictor.model``) for error messages.
    """

    model_format: ModelFormat
    spec: PredictorExtensionSpec
    field: str
    runtime: str | None = None

    @property
    def protocol(self) -> str:
        """The protocol the model is served with: ``protocolVersion`` or ``v1``."""
        return self.spec.protocol_version or "v1"

    @property
    def format_label(self) -> str:
        fmt = self.model_format
        return f"mt:{fmt.name}:{fmt.version}" if fmt.version else f"mt:{fmt.name}"

    def describe(self) -> str:
        """``sklearn`` or ``sklearn (version 1)``, for messages."""
        fmt = self.model_format
        return f"{fmt.name} (version {fmt.version})" if fmt.version else fmt.name


@dataclass(frozen=True)
class SelectedRuntime:
    """The runtime chosen for a predictor, and whether it was named or auto-selected."""

    name: str
    kind: Literal["ServingRuntime", "ClusterServingRuntime"]
    spec: ServingRuntimeSpec
    explicit: bool

    @classmethod
    def of(cls, runtime: AnyRuntime, *, explicit: bool) -> SelectedRuntime:
        return cls(name=runtime.name, kind=runtime.kind, spec=runtime.spec, explicit=explicit)


def predictor_model(isvc: InferenceService) -> PredictorModel | None:
    """The predictor's model, or None when the predictor is custom containers."""
    predictor = isvc.spec.predictor
    if predictor.model is not None:
        model: ModelSpec = predictor.model
        return PredictorModel(
            model_format=model.model_format,
            spec=model,
            field="spec.predictor.model",
            runtime=model.runtime,
        )
    for name in FRAMEWORK_FIELDS:
        spec = getattr(predictor, name, None)
        if spec is not None:
            return PredictorModel(
                model_format=ModelFormat(name=name), spec=spec, field=f"spec.predictor.{name}"
            )
    return None


def _label_set(spec: ServingRuntimeSpec, *, explicit: bool) -> set[str]:
    labels: set[str] = set()
    for fmt in spec.supported_model_formats or ():
        if explicit or fmt.auto_select:
            labels.add(f"mt:{fmt.name}")
            if fmt.version:
                labels.add(f"mt:{fmt.name}:{fmt.version}")
    return labels


def _supports_format(spec: ServingRuntimeSpec, model: PredictorModel, *, explicit: bool) -> bool:
    return model.format_label in _label_set(spec, explicit=explicit)


def _supports_protocol(spec: ServingRuntimeSpec, protocol: str) -> bool:
    return not spec.protocol_versions or protocol in spec.protocol_versions


def supports(spec: ServingRuntimeSpec, model: PredictorModel) -> bool:
    """Whether a runtime could serve ``model`` when named explicitly (format and protocol)."""
    return _supports_format(spec, model, explicit=True) and _supports_protocol(spec, model.protocol)


def _protocol_rank(spec: ServingRuntimeSpec) -> int:
    ranks = [_PROTOCOL_RANK.get(p, _UNKNOWN_RANK) for p in spec.protocol_versions or ()]
    return min(ranks, default=_UNKNOWN_RANK)


def _priority(spec: ServingRuntimeSpec, format_name: str) -> int | None:
    for fmt in spec.supported_model_formats or ():
        if fmt.name == format_name:
            return fmt.priority
    return None


def _ordered(runtimes: Iterable[AnyRuntime], format_name: str) -> list[AnyRuntime]:
    # Newest first: sort by name ascending, then stably by timestamp descending (RFC 3339
    # strings of one form sort chronologically; a missing timestamp sorts as the oldest).
    by_name = sorted(runtimes, key=lambda r: r.name)
    by_time = sorted(by_name, key=lambda r: str(r.metadata.creation_timestamp or ""), reverse=True)
    by_protocol = sorted(by_time, key=lambda r: _protocol_rank(r.spec))
    # Python's sort is stable, as KServe relies on: equal priorities keep the order above.
    return sorted(
        by_protocol,
        key=lambda r: (
            _priority(r.spec, format_name) is None,
            -(_priority(r.spec, format_name) or 0),
        ),
    )


def _is_candidate(runtime: AnyRuntime, model: PredictorModel, *, multi_node: bool) -> bool:
    spec = runtime.spec
    return (
        not spec.disabled
        and not spec.multi_model
        and (spec.worker_spec is not None) == multi_node
        and _supports_format(spec, model, explicit=False)
        and _supports_protocol(spec, model.protocol)
    )


def supporting_runtimes(
    model: PredictorModel,
    runtimes: Sequence[AnyRuntime],
    *,
    namespace: str | None = None,
    multi_node: bool = False,
) -> list[AnyRuntime]:
    """Every runtime that could serve the model automatically, best first (KServe's order)."""
    namespaced = [
        r
        for r in runtimes
        if isinstance(r, ServingRuntime)
        and _same_namespace(r, namespace)
        and _is_candidate(r, model, multi_node=multi_node)
    ]
    cluster = [
        r
        for r in runtimes
        if isinstance(r, ClusterServingRuntime) and _is_candidate(r, model, multi_node=multi_node)
    ]
    name = model.model_format.name
    return _ordered(namespaced, name) + _ordered(cluster, name)


def _same_namespace(runtime: ServingRuntime, namespace: str | None) -> bool:
    # A ServingRuntime read from a file without a namespace lives wherever it is applied.
    return runtime.namespace in (None, namespace) or namespace is None


def _explicit(
    model: PredictorModel, runtimes: Sequence[AnyRuntime], namespace: str | None
) -> SelectedRuntime:
    name = model.runtime or ""
    found: AnyRuntime | None = next(
        (
            r
            for r in runtimes
            if isinstance(r, ServingRuntime) and r.name == name and _same_namespace(r, namespace)
        ),
        None,
    ) or next(
        (r for r in runtimes if isinstance(r, ClusterServingRuntime) and r.name == name), None
    )
    field = f"{model.field}.runtime"
    if found is None:
        known = sorted({r.name for r in runtimes})
        raise ValidationError(
            f"No ServingRuntimes or ClusterServingRuntimes with the name: {name}"
            + (f" (known runtimes: {', '.join(known)})" if known else ""),
            field=field,
            reason="RuntimeNotRecognized",
        )
    if found.spec.disabled:
        raise ValidationError(
            f"specified runtime {name} is disabled", field=field, reason="RuntimeDisabled"
        )
    if model.spec.protocol_version is not None and not _supports_protocol(
        found.spec, model.protocol
    ):
        raise ValidationError(
            f"specified runtime {name} does not support specified protocol version "
            f"{model.protocol} (it supports {', '.join(found.spec.protocol_versions or [])})",
            field=field,
            reason="NoSupportingRuntime",
        )
    if not _supports_format(found.spec, model, explicit=True):
        raise ValidationError(
            f"specified runtime {name} does not support specified framework/version "
            f"{model.describe()}",
            field=field,
            reason="NoSupportingRuntime",
        )
    return SelectedRuntime.of(found, explicit=True)


def select_runtime(
    isvc: InferenceService,
    runtimes: Sequence[AnyRuntime],
) -> SelectedRuntime:
    """The runtime for the InferenceService's predictor.

    ``runtimes`` holds every candidate: ServingRuntimes (of any namespace; only those in the
    InferenceService's namespace, or without one, count) and ClusterServingRuntimes.
    Raises :class:`ValidationError` when the predictor has no model (custom containers need no
    runtime) or nothing matches; the message names the format, protocol and what was considered.
    """
    model = predictor_model(isvc)
    if model is None:
        raise ValidationError(
            "the predictor runs custom containers; it has no model to select a runtime for",
            field="spec.predictor",
            reason="InvalidPredictorSpec",
        )
    namespace = isvc.namespace
    if model.runtime:
        return _explicit(model, runtimes, namespace)
    multi_node = isvc.spec.predictor.worker_spec is not None
    found = supporting_runtimes(model, runtimes, namespace=namespace, multi_node=multi_node)
    if found:
        return SelectedRuntime.of(found[0], explicit=False)
    raise ValidationError(
        _nothing_matches(model, runtimes),
        field=f"{model.field}.modelFormat",
        reason="NoSupportingRuntime",
    )


def _nothing_matches(model: PredictorModel, runtimes: Sequence[AnyRuntime]) -> str:
    message = (
        f"no runtime found to support predictor with model type: {model.describe()} "
        f"and protocol {model.protocol}"
    )
    same_format = [r for r in runtimes if _supports_format(r.spec, model, explicit=True)]
    if not same_format:
        formats = sorted({f.name for r in runtimes for f in r.spec.supported_model_formats or ()})
        if formats:
            message += f"; the runtimes given serve: {', '.join(formats)}"
        return message
    notes = []
    for runtime in same_format:
        spec = runtime.spec
        if spec.disabled:
            why = "is disabled"
        elif not _supports_format(spec, model, explicit=False):
            why = "does not auto-select it (set model.runtime to use it)"
        elif not _supports_protocol(spec, model.protocol):
            why = f"speaks {', '.join(spec.protocol_versions or [])}"
        elif spec.multi_model:
            why = "is a multi-model runtime"
        else:
            why = "needs a workerSpec" if spec.worker_spec else "does not take a workerSpec"
        notes.append(f"{runtime.kind} {runtime.name} {why}")
    return message + "; " + "; ".join(notes)
