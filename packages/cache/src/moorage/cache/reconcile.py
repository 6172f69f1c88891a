"""The cache controller's reconcile as a pure function: the cluster's state in, a plan out.

:func:`plan` takes every object the controller looks at (:class:`ClusterState`: the
LocalModelCaches, LocalModelNodeGroups, Nodes, LocalModelNodes, InferenceServices and the PVs/PVCs
it labelled) and returns a :class:`Plan`, what the cluster should look like:

* the ``spec.localModels`` of every LocalModelNode (one per node, named after it): a cache is
  listed on every Ready node of its group (the nodes that the group's PersistentVolume spec's
  ``nodeAffinity.required`` selects), and stays listed on a node that stops being Ready (a node
  that flaps does not lose its copy); a node that left the group or no longer exists loses it;
* the PV ``<cache>-<group>-<namespace>`` and PVC ``<cache>-<group>`` in each namespace whose
  InferenceServices use the cache (the group's PV and PVC specs, pre-bound to each other, with the
  label ``internal.serving.kserve.io/localmodel: <cache>`` and an owner reference to the cache),
  and the deletion of labelled ones no longer wanted;
* each cache's ``status``: ``nodeStatus`` per node of its group (``NodeNotReady`` for a node that
  is not Ready, else the agent's state, ``NodeDownloadPending`` until it reports),
  ``copies`` (total, available = downloaded, failed = download error),
  ``inferenceServices`` (those using it, sorted), and a moorage extension: ``conditions``
  (``Ready``, and ``DeletionBlocked`` while a cache being deleted is still used);
* which caches being deleted are clean (no LocalModelNode lists or reports them, no labelled
  volume left) so that their finalizer can go.

An InferenceService uses a cache when ``localModel.enabled`` is true, it lacks the annotation
``serving.kserve.io/disable-localmodel`` (any value, as KServe and core's defaulting read it), and
either its label ``internal.serving.kserve.io/localmodel`` names the cache (core's defaulting sets
it) or the cache's ``sourceModelUri`` is a prefix of its predictor's storage URI (the first such
cache by name, as KServe's webhook picks: :func:`moorage.core.resources.matching_cache`, the rule
core's defaulting uses too).

A second cache with the ``sourceModelUri`` of an older one is refused (KServe's webhook refuses it
at admission): it is placed on no node and its ``Ready`` condition says why. A cache being deleted
while InferenceServices use it keeps everything (KServe refuses the deletion at admission; here the
finalizer holds it) until they are gone.

Not decided here: when to read the cluster and how to write (see :mod:`moorage.cache.controller`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from moorage.cache._names import CACHE_LABEL, DISABLE_ANNOTATION, pv_name, pvc_name
from moorage.core.resources import matching_cache

__all__ = [
    "ClusterState",
    "Plan",
    "admission_problem",
    "cache_for_isvc",
    "group_nodes",
    "merge_patch",
    "node_ready",
    "node_selected",
    "plan",
    "storage_uri",
]

Obj = Mapping[str, Any]

_NODE_STATUS = {
    "ModelDownloadPending": "NodeDownloadPending",
    "ModelDownloading": "NodeDownloading",
    "ModelDownloaded": "NodeDownloaded",
    "ModelDownloadError": "NodeDownloadError",
}


@dataclass
class ClusterState:
    """What the controller observed. Objects are as the API server returns them (dicts)."""

    caches: Sequence[Obj] = field(default_factory=list)
    groups: Sequence[Obj] = field(default_factory=list)
    nodes: Sequence[Obj] = field(default_factory=list)
    local_model_nodes: Sequence[Obj] = field(default_factory=list)
    inference_services: Sequence[Obj] = field(default_factory=list)
    #: PVs and PVCs labelled ``internal.serving.kserve.io/localmodel``.
    volumes: Sequence[Obj] = field(default_factory=list)
    claims: Sequence[Obj] = field(default_factory=list)
    enabled: bool = True


@dataclass
class Plan:
    """What the cluster should look like (see the module docstring)."""

    #: node name -> the ``spec.localModels`` its LocalModelNode should have, for every node whose
    #: LocalModelNode is missing or differs.
    node_models: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    #: LocalModelNodes of nodes that no longer exist.
    delete_nodes: list[str] = field(default_factory=list)
    #: PVs and PVCs to create (missing ones only).
    create: list[dict[str, Any]] = field(default_factory=list)
    #: ``(kind, namespace, name)`` of labelled PVs/PVCs to delete (namespace "" for PVs).
    delete: list[tuple[str, str, str]] = field(default_factory=list)
    #: cache name -> its status, for every cache.
    status: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: caches being deleted whose clean-up is complete (their finalizer may go).
    finalizable: list[str] = field(default_factory=list)
    #: cache name -> why it is refused (a duplicate source URI).
    refused: dict[str, str] = field(default_factory=dict)
    #: ``(namespace, name)`` of an InferenceService -> the cache it uses.
    uses: dict[tuple[str, str], str] = field(default_factory=dict)


# -- nodes ----------------------------------------------------------------------------------------
def node_ready(node: Obj) -> bool:
    """Whether the Node's ``Ready`` condition is ``True``."""
    for condition in (node.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return condition.get("status") == "True"
    return False


def _requirement(values: Mapping[str, str], req: Obj) -> bool:
    key, op = req.get("key", ""), req.get("operator", "")
    wanted = list(req.get("values") or [])
    present = key in values
    value = values.get(key)
    if op == "In":
        return present and value in wanted
    if op == "NotIn":
        return not present or value not in wanted
    if op == "Exists":
        return present
    if op == "DoesNotExist":
        return not present
    if op in ("Gt", "Lt") and present and len(wanted) == 1:
        try:
            have, limit = int(str(value)), int(wanted[0])
        except ValueError:
            return False
        return have > limit if op == "Gt" else have < limit
    return False


def node_selected(node: Obj, selector: Obj | None) -> bool:
    """Whether a ``NodeSelector`` (terms ORed, requirements ANDed) selects the node.

    No selector, or one without terms, selects nothing (KServe: a group without node affinity
    has no nodes). ``matchFields`` knows ``metadata.name``, the one field Kubernetes supports.
    """
    terms = (selector or {}).get("nodeSelectorTerms") or []
    meta = node.get("metadata") or {}
    labels = dict(meta.get("labels") or {})
    fields = {"metadata.name": str(meta.get("name", ""))}
    for term in terms:
        exprs = list(term.get("matchExpressions") or [])
        field_exprs = list(term.get("matchFields") or [])
        if not exprs and not field_exprs:
            continue  # an empty term selects nothing
        if all(_requirement(labels, r) for r in exprs) and all(
            _requirement(fields, r) for r in field_exprs
        ):
            return True
    return False


def group_nodes(group: Obj, nodes: Iterable[Obj]) -> list[Obj]:
    """The nodes of a LocalModelNodeGroup (its PV spec's required node affinity), by name."""
    pv_spec = (group.get("spec") or {}).get("persistentVolumeSpec") or {}
    selector = (pv_spec.get("nodeAffinity") or {}).get("required")
    chosen = [n for n in nodes if node_selected(n, selector)]
    return sorted(chosen, key=_name)


# -- InferenceServices ----------------------------------------------------------------------------
def storage_uri(isvc: Obj) -> str | None:
    """The predictor's storage URI (``model``, a framework key, or the predictor itself)."""
    predictor = (isvc.get("spec") or {}).get("predictor") or {}
    model = predictor.get("model")
    if isinstance(model, Mapping) and model.get("storageUri"):
        return str(model["storageUri"])
    for key, value in predictor.items():
        if key != "model" and isinstance(value, Mapping) and value.get("storageUri"):
            return str(value["storageUri"])
    uri = predictor.get("storageUri")
    return str(uri) if uri else None


def cache_for_isvc(isvc: Obj, caches: Iterable[Obj], *, enabled: bool = True) -> str | None:
    """The name of the cache an InferenceService uses, if any (see the module docstring)."""
    if not enabled:
        return None
    meta = isvc.get("metadata") or {}
    if DISABLE_ANNOTATION in (meta.get("annotations") or {}):
        return None
    by_name = {_name(c): c for c in caches}
    labelled = (meta.get("labels") or {}).get(CACHE_LABEL)
    if labelled:
        return labelled if labelled in by_name else None
    uri = storage_uri(isvc)
    if not uri:
        return None
    sources = {
        n: str((c.get("spec") or {}).get("sourceModelUri") or "") for n, c in by_name.items()
    }
    return matching_cache(uri, sources)


# -- the plan -------------------------------------------------------------------------------------
def _name(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("name", ""))


def _deleting(obj: Obj) -> bool:
    return bool((obj.get("metadata") or {}).get("deletionTimestamp"))


def _age_key(obj: Obj) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return (str(meta.get("creationTimestamp") or ""), _name(obj))


def _refusals(caches: list[Obj]) -> dict[str, str]:
    """Caches whose source URI an older cache already has."""
    owner: dict[str, str] = {}
    refused: dict[str, str] = {}
    for cache in sorted(caches, key=_age_key):
        uri = str((cache.get("spec") or {}).get("sourceModelUri", ""))
        if uri in owner:
            refused[_name(cache)] = f"LocalModelCache {owner[uri]} has the same StorageURI {uri}"
        else:
            owner[uri] = _name(cache)
    return refused


def _group_of(cache: Obj) -> str | None:
    groups = (cache.get("spec") or {}).get("nodeGroups") or []
    return str(groups[0]) if groups else None


def _model_status(lmn: Obj | None) -> dict[str, str]:
    return dict(((lmn or {}).get("status") or {}).get("modelStatus") or {})


def _model_message(lmn: Obj | None, model: str) -> str:
    details = ((lmn or {}).get("status") or {}).get("modelDetails") or {}
    entry = details.get(model) or {}
    return str(entry.get("message") or "")


def _listed(lmn: Obj | None) -> list[str]:
    return [
        str(m.get("modelName")) for m in ((lmn or {}).get("spec") or {}).get("localModels") or []
    ]


def _volume_objects(cache: Obj, group: Obj, namespace: str) -> list[dict[str, Any]]:
    name, group_name = _name(cache), _name(group)
    spec = group.get("spec") or {}
    claim, volume = pvc_name(name, group_name), pv_name(name, group_name, namespace)
    labels = {CACHE_LABEL: name}
    owner = _owner(cache)
    pv_spec = dict(spec.get("persistentVolumeSpec") or {})
    pv_spec["claimRef"] = {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                           "namespace": namespace, "name": claim}  # fmt: skip
    pvc_spec = dict(spec.get("persistentVolumeClaimSpec") or {})
    pvc_spec["volumeName"] = volume
    pv_meta: dict[str, Any] = {"name": volume, "labels": labels}
    pvc_meta: dict[str, Any] = {"name": claim, "namespace": namespace, "labels": dict(labels)}
    if owner is not None:
        pv_meta["ownerReferences"] = [owner]
        pvc_meta["ownerReferences"] = [dict(owner)]
    return [
        {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": pv_meta, "spec": pv_spec},
        {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": pvc_meta,
         "spec": pvc_spec},
    ]  # fmt: skip


def _owner(cache: Obj) -> dict[str, Any] | None:
    uid = (cache.get("metadata") or {}).get("uid")
    if not uid:
        return None
    return {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "LocalModelCache",
        "name": _name(cache),
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _key(obj: Obj) -> tuple[str, str, str]:
    meta = obj.get("metadata") or {}
    return (str(obj.get("kind", "")), str(meta.get("namespace") or ""), str(meta.get("name")))


def _conditions(
    status: dict[str, Any],
    *,
    refused: str | None,
    blocked: str | None,
    errors: list[str],
    missing_group: str | None = None,
) -> list[dict[str, str]]:
    copies = status["copies"]
    if refused is not None:
        ready = ("False", "DuplicateSourceModelUri", refused)
    elif missing_group is not None:
        ready = ("False", "NoNodes", f"LocalModelNodeGroup {missing_group} not found")
    elif copies["total"] == 0:
        ready = ("False", "NoNodes", "no node of the node group is selected by its node affinity")
    elif errors:
        ready = ("False", "DownloadError", "; ".join(errors))
    elif copies["available"] < copies["total"]:
        done, total = copies["available"], copies["total"]
        ready = ("False", "Downloading", f"{done} of {total} nodes have the model")
    else:
        ready = ("True", "Downloaded", f"all {copies['total']} nodes have the model")
    conditions = [dict(zip(("status", "reason", "message"), ready, strict=True), type="Ready")]
    if blocked is not None:
        conditions.append(
            {"type": "DeletionBlocked", "status": "True", "reason": "InUse", "message": blocked}
        )
    return conditions


def plan(state: ClusterState) -> Plan:
    """The desired state for everything the cache controller owns (see the module docstring)."""
    result = Plan()
    caches = sorted(state.caches, key=_name)
    groups = {_name(g): g for g in state.groups}
    lmns = {_name(n): n for n in state.local_model_nodes}
    node_names = {_name(n) for n in state.nodes}
    result.refused = _refusals(caches)
    eligible = [c for c in caches if _name(c) not in result.refused]

    # Which InferenceServices use which cache.
    users: dict[str, list[tuple[str, str]]] = {_name(c): [] for c in caches}
    for isvc in state.inference_services:
        used = cache_for_isvc(isvc, eligible, enabled=state.enabled)
        if used is not None:
            meta = isvc.get("metadata") or {}
            key = (str(meta.get("namespace") or "default"), str(meta.get("name", "")))
            result.uses[key] = used
            users[used].append(key)

    # A cache being deleted retires once nothing uses it; until then it stays in service.
    retiring = {_name(c) for c in caches if _deleting(c) and not users[_name(c)]}
    active = [c for c in eligible if _name(c) not in retiring]

    # LocalModelNode specs.
    wanted: dict[str, list[dict[str, str]]] = {name: [] for name in lmns if name in node_names}
    members: dict[str, list[Obj]] = {}
    for cache in active:
        group = groups.get(_group_of(cache) or "")
        members[_name(cache)] = group_nodes(group, state.nodes) if group is not None else []
        for node in members[_name(cache)]:
            node_name = _name(node)
            if node_ready(node) or _name(cache) in _listed(lmns.get(node_name)):
                wanted.setdefault(node_name, []).append(
                    {
                        "sourceModelUri": str(cache["spec"]["sourceModelUri"]),
                        "modelName": _name(cache),
                    }
                )
    for node_name, models in sorted(wanted.items()):
        current = ((lmns.get(node_name) or {}).get("spec") or {}).get("localModels")
        if node_name not in lmns or list(current or []) != models:
            result.node_models[node_name] = models
    result.delete_nodes = sorted(name for name in lmns if name not in node_names)

    # PVs and PVCs.
    desired: dict[tuple[str, str, str], dict[str, Any]] = {}
    for cache in active:
        group = groups.get(_group_of(cache) or "")
        if group is None:
            continue
        for namespace in sorted({ns for ns, _ in users[_name(cache)]}):
            for obj in _volume_objects(cache, group, namespace):
                desired[_key(obj)] = obj
    existing = {_key(o): o for o in [*state.volumes, *state.claims]}
    result.create = [obj for key, obj in desired.items() if key not in existing]
    result.delete = sorted(key for key in existing if key not in desired)

    # Status, and which retiring caches are clean.
    for cache in caches:
        name = _name(cache)
        node_status: dict[str, str] = {}
        errors: list[str] = []
        for node in members.get(name, []):
            node_name = _name(node)
            lmn = lmns.get(node_name)
            if not node_ready(node):
                node_status[node_name] = "NodeNotReady"
                continue
            reported = _model_status(lmn).get(name)
            node_status[node_name] = _NODE_STATUS.get(reported or "", "NodeDownloadPending")
            if reported == "ModelDownloadError":
                errors.append(f"{node_name}: {_model_message(lmn, name) or 'download failed'}")
        values = list(node_status.values())
        status: dict[str, Any] = {
            "nodeStatus": node_status,
            "copies": {
                "total": len(values),
                "available": values.count("NodeDownloaded"),
                "failed": values.count("NodeDownloadError"),
            },
            "inferenceServices": [
                {"namespace": ns, "name": isvc} for ns, isvc in sorted(users[name])
            ],
        }
        blocked = None
        if _deleting(cache) and users[name]:
            names = ", ".join(f"{ns}/{isvc}" for ns, isvc in sorted(users[name]))
            blocked = f"LocalModelCache {name} is being used by InferenceService {names}"
        group_name = _group_of(cache) or ""
        status["conditions"] = _conditions(
            status,
            refused=result.refused.get(name),
            blocked=blocked,
            errors=errors,
            missing_group=None if group_name in groups else group_name,
        )
        result.status[name] = status
        if name in retiring or (_deleting(cache) and name in result.refused):
            result.status[name]["nodeStatus"] = {}
            if _clean(name, lmns, state):
                result.finalizable.append(name)
    return result


def _clean(name: str, lmns: Mapping[str, Obj], state: ClusterState) -> bool:
    """Whether nothing of a retiring cache is left: listed (as observed, not as planned: the
    agents have not seen the plan yet), reported on a Ready node, or a labelled volume."""
    ready = {_name(n) for n in state.nodes if node_ready(n)}
    for node_name, lmn in lmns.items():
        if name in _listed(lmn):
            return False
        if node_name in ready and name in _model_status(lmn):
            return False
    for obj in [*state.volumes, *state.claims]:
        if ((obj.get("metadata") or {}).get("labels") or {}).get(CACHE_LABEL) == name:
            return False
    return True


def merge_patch(current: Any, desired: Any) -> Any:
    """The JSON merge patch (RFC 7386) taking ``current`` to ``desired``; ``{}`` when equal.

    Keys missing from ``desired`` become ``None`` (deleted); lists are replaced whole.
    """
    if not isinstance(current, Mapping) or not isinstance(desired, Mapping):
        return desired
    patch: dict[str, Any] = {}
    for key, value in desired.items():
        if key not in current:
            patch[key] = value
        elif isinstance(value, Mapping) and isinstance(current[key], Mapping):
            sub = merge_patch(current[key], value)
            if sub:
                patch[key] = sub
        elif current[key] != value:
            patch[key] = value
    for key in current:
        if key not in desired:
            patch[key] = None
    return patch


def admission_problem(
    operation: str,
    cache: Obj,
    caches: Iterable[Obj],
    inference_services: Iterable[Obj],
    *,
    enabled: bool = True,
) -> str | None:
    """Why the API server should refuse this operation on a LocalModelCache (KServe's validating
    webhook and messages), or ``None``.

    CREATE/UPDATE: another cache has the same ``sourceModelUri``. DELETE: InferenceServices use it.
    """
    name = _name(cache)
    if operation in ("CREATE", "UPDATE"):
        uri = (cache.get("spec") or {}).get("sourceModelUri")
        for other in sorted(caches, key=_name):
            if _name(other) != name and (other.get("spec") or {}).get("sourceModelUri") == uri:
                return f"LocalModelCache {_name(other)} has the same StorageURI {uri}"
        return None
    if operation == "DELETE":
        others = [c for c in caches if _name(c) != name and not _deleting(c)]
        users = sorted(
            f"{(i.get('metadata') or {}).get('namespace', 'default')}/{_name(i)}"
            for i in inference_services
            if cache_for_isvc(i, [cache, *others], enabled=enabled) == name
        )
        if users:
            return f"LocalModelCache {name} is being used by InferenceService {', '.join(users)}"
    return None
