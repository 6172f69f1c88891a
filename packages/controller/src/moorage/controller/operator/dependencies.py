"""Which InferenceServices an object's change concerns: a pure dependency index.

Each InferenceService depends on a set of :class:`Dep` keys, computed from its spec by
:func:`dependencies_of`: the runtimes it may select (any ServingRuntime of its namespace and
any ClusterServingRuntime when auto-selecting; the one named otherwise), the
``inferenceservice-config`` ConfigMap, its components' ServiceAccounts and the Secrets they list
(known only once the ServiceAccount is seen), the storage Secret an annotation names, the
``storage-config`` Secret, and the LocalModelCaches. A ``None`` name is a wildcard: the key
``Dep("ServingRuntime", "ns", None)`` matches a change to any ServingRuntime in ``ns``.

:class:`DependencyIndex` keeps the reverse mapping: when a watched object changes, the operator
asks :meth:`DependencyIndex.dependents` which InferenceServices to render again.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

__all__ = ["Dep", "DependencyIndex", "IsvcKey", "dependencies_of"]

IsvcKey = tuple[str, str]  # (namespace, name)

_FRAMEWORKS = (
    "sklearn", "xgboost", "tensorflow", "pytorch", "triton", "onnx", "huggingface", "pmml",
    "lightgbm", "paddle",
)  # fmt: skip
_STORAGE_SECRET_ANNOTATION = "serving.kserve.io/storageSecretName"
_STORAGE_SPEC_SECRET = "storage-config"


class Dep(NamedTuple):
    """An input of a rendering: kind, namespace (None: cluster-scoped), name (None: any)."""

    kind: str
    namespace: str | None
    name: str | None


def _model(predictor: Mapping[str, Any]) -> Mapping[str, Any] | None:
    if isinstance(predictor.get("model"), Mapping):
        return predictor["model"]
    for framework in _FRAMEWORKS:
        if isinstance(predictor.get(framework), Mapping):
            return predictor[framework]
    return None


def dependencies_of(
    body: Mapping[str, Any],
    *,
    config_namespace: str,
    service_accounts: Mapping[IsvcKey, Mapping[str, Any]] | None = None,
) -> frozenset[Dep]:
    """The inputs of the InferenceService ``body``'s rendering (see the module docstring).

    ``service_accounts`` maps (namespace, name) to the ServiceAccounts known so far, to follow
    them to their Secrets.
    """
    meta = body.get("metadata") or {}
    namespace = meta.get("namespace") or "default"
    spec = body.get("spec") or {}
    deps = {
        Dep("ConfigMap", config_namespace, "inferenceservice-config"),
        Dep("LocalModelCache", None, None),
        Dep("Secret", namespace, _STORAGE_SPEC_SECRET),
    }
    predictor = spec.get("predictor") or {}
    model = _model(predictor)
    if model is not None:
        runtime = model.get("runtime")
        deps.add(Dep("ServingRuntime", namespace, runtime or None))
        deps.add(Dep("ClusterServingRuntime", None, runtime or None))
    chosen = (meta.get("annotations") or {}).get(_STORAGE_SECRET_ANNOTATION)
    if chosen:
        deps.add(Dep("Secret", namespace, chosen))
    for component in ("predictor", "transformer", "explainer"):
        part = spec.get(component)
        if not isinstance(part, Mapping):
            continue
        account = part.get("serviceAccountName") or "default"
        deps.add(Dep("ServiceAccount", namespace, account))
        found = (service_accounts or {}).get((namespace, account))
        for ref in (found or {}).get("secrets") or ():
            if isinstance(ref, Mapping) and ref.get("name"):
                deps.add(Dep("Secret", namespace, ref["name"]))
    return frozenset(deps)


class DependencyIndex:
    """InferenceService → its :class:`Dep` keys, and back."""

    def __init__(self) -> None:
        self._deps: dict[IsvcKey, frozenset[Dep]] = {}
        self._reverse: dict[Dep, set[IsvcKey]] = defaultdict(set)

    def __len__(self) -> int:
        return len(self._deps)

    def update(self, key: IsvcKey, deps: Iterable[Dep]) -> None:
        """Record (or replace) what ``key`` depends on."""
        self.remove(key)
        frozen = frozenset(deps)
        self._deps[key] = frozen
        for dep in frozen:
            self._reverse[dep].add(key)

    def remove(self, key: IsvcKey) -> None:
        for dep in self._deps.pop(key, frozenset()):
            users = self._reverse.get(dep)
            if users is not None:
                users.discard(key)
                if not users:
                    del self._reverse[dep]

    def deps(self, key: IsvcKey) -> frozenset[Dep]:
        return self._deps.get(key, frozenset())

    def dependents(self, kind: str, namespace: str | None, name: str) -> set[IsvcKey]:
        """The InferenceServices that depend on the object ``kind`` ``namespace/name``."""
        found: set[IsvcKey] = set()
        for dep in (Dep(kind, namespace, name), Dep(kind, namespace, None)):
            found |= self._reverse.get(dep, set())
        return found
