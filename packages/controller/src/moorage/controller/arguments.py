"""Build a component's main container: the runtime's container, the InferenceService's overrides
and the metadata placeholders, as KServe v0.14's controller does.

* :func:`merge_containers` is ``MergeRuntimeContainers``: the InferenceService's container fields
  are strategic-merged over the runtime's ``kserve-container`` (``env`` by name, ``ports`` by
  ``containerPort``, ``volumeMounts`` by ``mountPath``, ``volumeDevices`` by ``devicePath``,
  objects field by field, other lists replaced), except ``args``, which are concatenated:
  runtime args first.
* :func:`replace_placeholders` is ``ReplacePlaceholders``: every string of the container is a Go
  template over the InferenceService's ``metadata``. Supported: ``{{.Name}}``, ``{{.Namespace}}``,
  ``{{.GenerateName}}``, ``{{.UID}}``, ``{{.Labels.key}}``, ``{{.Annotations.key}}`` and
  ``{{index .Labels "key"}}`` / ``{{index .Annotations "key"}}``; a missing key renders empty (as
  ``html/template`` does). Anything else is a :class:`ValidationError` naming the field.
* :func:`predictor_container` and :func:`transformer_container` put these together for the
  predictor (with ``runtimeVersion`` as the image tag) and for a custom transformer (with
  ``--model_name``, ``--predictor_host`` and ``--http_port`` appended unless given, and
  ``--workers`` from ``containerConcurrency``).

Containers are plain camelCase dicts here (the JSON the API server holds); callers validate them
into ``k8s.Container`` where they need the type.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from moorage.controller.runtime_selection import PredictorModel, SelectedRuntime, predictor_model
from moorage.core.errors import ValidationError
from moorage.core.resources import InferenceService, ObjectMeta

__all__ = [
    "DEFAULT_HTTP_PORT",
    "MAIN_CONTAINER",
    "MODEL_MOUNT_PATH",
    "TRANSFORMER_CONTAINER",
    "has_arg",
    "merge_containers",
    "predictor_container",
    "predictor_service_name",
    "replace_placeholders",
    "transformer_container",
    "transformer_service_name",
]

MAIN_CONTAINER = "kserve-container"
TRANSFORMER_CONTAINER = "transformer-container"
MODEL_MOUNT_PATH = "/mnt/models"
DEFAULT_HTTP_PORT = 8080

#: Patch merge keys of corev1.Container's lists (strategic merge patch); other lists are atomic.
_MERGE_KEYS = {
    "env": "name",
    "ports": "containerPort",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
}

#: Fields of a predictor implementation that are not corev1.Container fields.
_MODEL_ONLY_FIELDS = {
    "modelFormat",
    "runtime",
    "storageUri",
    "runtimeVersion",
    "protocolVersion",
    "storage",
}

_PLACEHOLDER = re.compile(r"\{\{-?\s*(.*?)\s*-?\}\}")
_FIELD = re.compile(r"^\.(\w+)(?:\.([\w.\-/]+))?$")
_INDEX = re.compile(r'^index\s+\.(Labels|Annotations)\s+"([^"]*)"$')
_TAG = re.compile(r":[\w.\-]*$")


def predictor_service_name(isvc_name: str) -> str:
    """``<isvc>-predictor`` (constants.PredictorServiceName)."""
    return f"{isvc_name}-predictor"


def transformer_service_name(isvc_name: str) -> str:
    """``<isvc>-transformer`` (constants.TransformerServiceName)."""
    return f"{isvc_name}-transformer"


def explainer_service_name(isvc_name: str) -> str:
    """``<isvc>-explainer`` (constants.ExplainerServiceName)."""
    return f"{isvc_name}-explainer"


def has_arg(args: list[str], flag: str) -> bool:
    """Whether ``flag`` is among ``args``, as ``--flag value`` or ``--flag=value``."""
    return any(a == flag or a.startswith(flag + "=") for a in args)


def _merge_list(base: list[Any], patch: list[Any], key: str) -> list[Any]:
    merged = [dict(item) if isinstance(item, dict) else item for item in base]
    index = {item.get(key): i for i, item in enumerate(merged) if isinstance(item, dict)}
    for item in patch:
        if isinstance(item, dict) and item.get(key) in index:
            i = index[item[key]]
            merged[i] = _merge_objects(merged[i], item)
        else:
            merged.append(item)
    return merged


def _merge_objects(base: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for name, value in patch.items():
        current = out.get(name)
        if name in _MERGE_KEYS and isinstance(current, list) and isinstance(value, list):
            out[name] = _merge_list(current, value, _MERGE_KEYS[name])
        elif isinstance(current, Mapping) and isinstance(value, Mapping):
            out[name] = _merge_objects(current, value)
        else:
            out[name] = value
    return out


def merge_containers(runtime: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The runtime container with the InferenceService's container fields merged over it."""
    merged = _merge_objects(runtime, {k: v for k, v in overrides.items() if k != "args"})
    if not merged.get("name"):
        merged["name"] = runtime.get("name")
    args = [*runtime.get("args", []), *overrides.get("args", [])]
    if args:
        merged["args"] = args
    return merged


def _render(template: str, meta: ObjectMeta, field: str) -> str:
    def value(match: re.Match[str]) -> str:
        expr = match.group(1)
        index = _INDEX.match(expr)
        if index:
            table = (meta.labels if index.group(1) == "Labels" else meta.annotations) or {}
            return table.get(index.group(2), "")
        found = _FIELD.match(expr)
        if found:
            name, key = found.groups()
            if name in ("Labels", "Annotations") and key:
                table = (meta.labels if name == "Labels" else meta.annotations) or {}
                return table.get(key, "")
            scalars = {
                "Name": meta.name,
                "Namespace": meta.namespace,
                "GenerateName": meta.generate_name,
                "UID": meta.uid,
            }
            if key is None and name in scalars:
                return scalars[name] or ""
        raise ValidationError(
            f"unsupported placeholder {match.group(0)!r}: use {{{{.Name}}}}, {{{{.Namespace}}}}, "
            "{{.Labels.<key>}} or {{.Annotations.<key>}}",
            field=field,
        )

    return _PLACEHOLDER.sub(value, template)


def _walk(node: Any, meta: ObjectMeta, field: str) -> Any:
    if isinstance(node, str):
        return _render(node, meta, field) if "{{" in node else node
    if isinstance(node, list):
        return [_walk(item, meta, f"{field}[{i}]") for i, item in enumerate(node)]
    if isinstance(node, Mapping):
        return {k: _walk(v, meta, f"{field}.{k}" if field else k) for k, v in node.items()}
    return node


def replace_placeholders(
    container: Mapping[str, Any], meta: ObjectMeta, *, field: str = ""
) -> dict[str, Any]:
    """Every string of ``container`` rendered as a template over ``meta``."""
    rendered = _walk(container, meta, field)
    assert isinstance(rendered, dict)
    return rendered


def _container_overrides(model: PredictorModel) -> dict[str, Any]:
    data = model.spec.model_dump(by_alias=True, exclude_none=True, mode="json")
    return {k: v for k, v in data.items() if k not in _MODEL_ONLY_FIELDS}


def _with_image_tag(image: str, version: str) -> str:
    """``UpdateImageTag`` for ``runtimeVersion``: replace or append the image's tag."""
    last = image.rsplit("/", 1)[-1]
    if _TAG.search(last):
        return _TAG.sub(f":{version}", image)
    return f"{image}:{version}"


#: Runtimes whose images have a ``-gpu`` variant KServe switches to when a GPU is requested.
GPU_TAGGED_RUNTIMES = frozenset({"kserve-torchserve", "kserve-tensorflow-serving"})
GPU_RESOURCE = "nvidia.com/gpu"


def _wants_gpu(container: Mapping[str, Any]) -> bool:
    resources = container.get("resources") or {}
    return any(GPU_RESOURCE in (resources.get(k) or {}) for k in ("limits", "requests"))


def _gpu_tag(image: str) -> str:
    """``UpdateImageTag``'s GPU rule: ``:<tag>`` becomes ``:<tag>-gpu`` (once)."""
    last = image.rsplit("/", 1)[-1]
    if ":" not in last or last.endswith("-gpu"):
        return image
    return f"{image}-gpu"


def predictor_container(isvc: InferenceService, runtime: SelectedRuntime) -> dict[str, Any]:
    """The predictor's ``kserve-container``: runtime container + overrides + placeholders."""
    model = predictor_model(isvc)
    if model is None:
        raise ValidationError("the predictor has no model", field="spec.predictor")
    base = runtime.spec.container(MAIN_CONTAINER)
    if base is None:
        raise ValidationError(
            f"failed to find {MAIN_CONTAINER} in ServingRuntime containers "
            f"({runtime.kind} {runtime.name} has: "
            f"{', '.join(c.name for c in runtime.spec.containers) or 'none'})",
            field="spec.containers",
            runtime=runtime.name,
        )
    merged = merge_containers(
        base.model_dump(by_alias=True, exclude_none=True, mode="json"),
        _container_overrides(model),
    )
    if model.spec.runtime_version and merged.get("image"):
        merged["image"] = _with_image_tag(merged["image"], model.spec.runtime_version)
    if runtime.name in GPU_TAGGED_RUNTIMES and merged.get("image") and _wants_gpu(merged):
        merged["image"] = _gpu_tag(merged["image"])
    return replace_placeholders(merged, isvc.metadata, field=model.field)


_EXPLAINER_ONLY_FIELDS = {"storageUri", "runtimeVersion", "config", "storage", "type"}


def explainer_container(isvc: InferenceService, *, image: str, version: str) -> dict[str, Any]:
    """The explainer's ``kserve-container``: for ``art``, KServe's ART explainer image
    (``image:<runtimeVersion or version>``) with ``--model_name``, ``--http_port 8080``,
    ``--predictor_host <isvc>-predictor.<namespace>``, ``--adversary_type`` and each ``config``
    entry as ``--<key> <value>`` (keys sorted), then the spec's own args; custom containers as
    given."""
    explainer = isvc.spec.explainer
    if explainer is None:
        raise ValidationError("no explainer", field="spec.explainer")
    namespace = isvc.namespace or "default"
    if explainer.art is None:
        if not explainer.containers:
            raise ValidationError("an explainer needs art or containers", field="spec.explainer")
        first = explainer.containers[0].model_dump(by_alias=True, exclude_none=True, mode="json")
        return replace_placeholders(first, isvc.metadata, field="spec.explainer.containers[0]")
    art = explainer.art
    dumped = art.model_dump(by_alias=True, exclude_none=True, mode="json")
    container = {k: v for k, v in dumped.items() if k not in _EXPLAINER_ONLY_FIELDS}
    args = [
        "--model_name",
        isvc.name,
        "--http_port",
        str(DEFAULT_HTTP_PORT),
        "--predictor_host",
        f"{predictor_service_name(isvc.name)}.{namespace}",
        "--adversary_type",
        art.type,
    ]
    for key in sorted(art.config or {}):
        args += [f"--{key}", (art.config or {})[key]]
    container["name"] = container.get("name") or MAIN_CONTAINER
    container["image"] = container.get("image") or f"{image}:{art.runtime_version or version}"
    container["args"] = [*args, *container.get("args", [])]
    return replace_placeholders(container, isvc.metadata, field="spec.explainer.art")


def transformer_container(isvc: InferenceService) -> dict[str, Any]:
    """The transformer's first container with KServe's predictor wiring arguments appended."""
    transformer = isvc.spec.transformer
    if transformer is None or not transformer.containers:
        raise ValidationError("a transformer needs containers", field="spec.transformer.containers")
    container = transformer.containers[0].model_dump(by_alias=True, exclude_none=True, mode="json")
    args: list[str] = list(container.get("args", []))
    namespace = isvc.namespace or "default"
    if not has_arg(args, "--model_name"):
        args += ["--model_name", isvc.name]
    if not has_arg(args, "--predictor_host"):
        args += ["--predictor_host", f"{predictor_service_name(isvc.name)}.{namespace}"]
    if not has_arg(args, "--http_port"):
        args += ["--http_port", str(DEFAULT_HTTP_PORT)]
    if transformer.container_concurrency is not None and not has_arg(args, "--workers"):
        args += ["--workers", str(transformer.container_concurrency)]
    container["args"] = args
    return replace_placeholders(container, isvc.metadata, field="spec.transformer.containers[0]")
