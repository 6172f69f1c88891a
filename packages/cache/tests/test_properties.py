"""Properties of the pure functions over generated inputs (hypothesis)."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from moorage.cache.reconcile import ClusterState, merge_patch, plan

from .objects import cache, group, isvc, lmn, node

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=20,
)
_objects = st.dictionaries(st.text(max_size=4), _json, max_size=5)


def _apply(target: Any, patch: Any) -> Any:
    """RFC 7386 merge patch."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _apply(result.get(key), value)
    return result


def _no_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _no_nulls(v) for k, v in value.items() if v is not None}
    return value


@given(_objects, _objects)
def test_merge_patch_takes_current_to_desired(current: dict[str, Any], desired: Any) -> None:
    # merge patches cannot express null values inside objects: desired has none
    desired = _no_nulls(desired)
    assert _apply(current, merge_patch(current, desired)) == desired
    assert merge_patch(desired, desired) == {}


_names = st.sampled_from(["a", "b", "c", "d"])
_states = st.sampled_from(
    ["ModelDownloadPending", "ModelDownloading", "ModelDownloaded", "ModelDownloadError"]
)


@st.composite
def _clusters(draw: st.DrawFn) -> ClusterState:
    nodes = [
        node(n, ready=draw(st.booleans()), labels={})
        if draw(st.booleans())
        else {"metadata": {"name": n, "labels": {}}, "status": node(n)["status"]}
        for n in sorted(draw(st.sets(_names, max_size=4)))
    ]
    caches = [
        cache(f"m{i}", draw(st.sampled_from(["s3://x/1", "s3://x/2", "s3://y/3"])),
              created=f"2026-01-0{i + 1}T00:00:00Z", deleting=draw(st.booleans()))
        for i in range(draw(st.integers(0, 3)))
    ]  # fmt: skip
    uris = [c["spec"]["sourceModelUri"] for c in caches]
    lmns = []
    for n in sorted(draw(st.sets(_names, max_size=4))):
        listed = (
            draw(
                st.lists(
                    st.sampled_from(caches), max_size=2, unique_by=lambda c: c["metadata"]["name"]
                )
            )
            if caches
            else []
        )
        models = [(c["metadata"]["name"], c["spec"]["sourceModelUri"]) for c in listed]
        status = {m: draw(_states) for m, _ in models}
        lmns.append(lmn(n, models, status))
    isvcs = (
        [isvc(f"s{i}", draw(st.sampled_from(uris))) for i in range(draw(st.integers(0, 2)))]
        if uris
        else []
    )
    return ClusterState(
        caches=caches,
        groups=[group()],
        nodes=nodes,
        local_model_nodes=lmns,
        inference_services=isvcs,
    )


@settings(max_examples=200, deadline=None)
@given(_clusters())
def test_plan_converges_and_counts_what_it_reports(state: ClusterState) -> None:
    result = plan(state)
    members = {
        n["metadata"]["name"] for n in state.nodes if n["metadata"]["labels"]
    }  # the group selects labelled nodes
    for node_name, models in result.node_models.items():
        assert node_name in {n["metadata"]["name"] for n in state.nodes}
        for m in models:
            assert node_name in members
            assert m["modelName"] not in result.refused
    for status in result.status.values():
        values = list(status["nodeStatus"].values())
        assert set(status["nodeStatus"]) <= members
        assert status["copies"] == {
            "total": len(values),
            "available": values.count("NodeDownloaded"),
            "failed": values.count("NodeDownloadError"),
        }
    # Applying the LocalModelNode specs and planning again changes nothing more.
    lmns = {o["metadata"]["name"]: copy.deepcopy(o) for o in state.local_model_nodes}
    for name, models in result.node_models.items():
        lmns.setdefault(name, lmn(name, []))["spec"]["localModels"] = models
    for name in result.delete_nodes:
        lmns.pop(name)
    again = plan(
        ClusterState(
            caches=state.caches,
            groups=state.groups,
            nodes=state.nodes,
            local_model_nodes=list(lmns.values()),
            inference_services=state.inference_services,
            volumes=[o for o in result.create if o["kind"] == "PersistentVolume"],
            claims=[o for o in result.create if o["kind"] == "PersistentVolumeClaim"],
        )
    )
    assert again.node_models == {}
    assert again.delete_nodes == []
    assert again.create == []
