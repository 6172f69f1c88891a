"""The controller's pure reconcile: cluster state in, plan out (no API server)."""

from __future__ import annotations

import pytest

from moorage.cache.reconcile import (
    ClusterState,
    admission_problem,
    cache_for_isvc,
    group_nodes,
    node_selected,
    plan,
    storage_uri,
)

from .objects import cache, group, isvc, lmn, node

URI = "s3://models/llama"


def _state(**kw: object) -> ClusterState:
    base: dict[str, object] = {
        "caches": [cache("llama", URI)],
        "groups": [group()],
        "nodes": [node("a"), node("b")],
    }
    base.update(kw)
    return ClusterState(**base)  # type: ignore[arg-type]


# -- node selection -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("op", "values", "labels", "expected"),
    [
        ("In", ["x"], {"k": "x"}, True),
        ("In", ["x"], {"k": "y"}, False),
        ("NotIn", ["x"], {"k": "y"}, True),
        ("NotIn", ["x"], {}, True),
        ("Exists", [], {"k": ""}, True),
        ("DoesNotExist", [], {"k": ""}, False),
        ("Gt", ["3"], {"k": "4"}, True),
        ("Lt", ["3"], {"k": "4"}, False),
        ("Gt", ["3"], {"k": "four"}, False),
    ],
)
def test_node_selector_operators(
    op: str, values: list[str], labels: dict[str, str], expected: bool
) -> None:
    selector = {"nodeSelectorTerms": [{"matchExpressions": [
        {"key": "k", "operator": op, "values": values}]}]}  # fmt: skip
    n = {"metadata": {"name": "n", "labels": labels}}
    assert node_selected(n, selector) is expected


def test_terms_are_ored_and_empty_selects_nothing() -> None:
    n = {"metadata": {"name": "n1", "labels": {"a": "1"}}}
    by_field = {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}
    other = {"matchExpressions": [{"key": "a", "operator": "In", "values": ["2"]}]}
    assert node_selected(n, {"nodeSelectorTerms": [other, by_field]})
    assert not node_selected(n, {"nodeSelectorTerms": [other]})
    assert not node_selected(n, {"nodeSelectorTerms": [{}]})
    assert not node_selected(n, None)


def test_group_nodes_follow_the_pv_node_affinity() -> None:
    nodes = [node("b"), node("a"), {"metadata": {"name": "c", "labels": {}}}]
    assert [n["metadata"]["name"] for n in group_nodes(group(), nodes)] == ["a", "b"]
    no_affinity = group()
    del no_affinity["spec"]["persistentVolumeSpec"]["nodeAffinity"]
    assert group_nodes(no_affinity, nodes) == []


# -- InferenceServices ----------------------------------------------------------------------------
def test_storage_uri_from_model_or_framework() -> None:
    assert storage_uri(isvc("x", "s3://b/m")) == "s3://b/m"
    legacy = {"spec": {"predictor": {"sklearn": {"storageUri": "gs://b/m"}}}}
    assert storage_uri(legacy) == "gs://b/m"
    assert storage_uri({"spec": {"predictor": {"containers": []}}}) is None


def test_cache_for_isvc_prefix_label_and_opt_out() -> None:
    caches = [cache("b-cache", URI), cache("a-cache", "s3://models/")]
    # the first cache by name whose URI is a prefix wins (KServe's webhook lists by name)
    assert cache_for_isvc(isvc("x", URI + "/v1"), caches) == "a-cache"
    assert cache_for_isvc(isvc("x", "s3://other/m"), caches) is None
    labelled = isvc(
        "x", "s3://other/m", labels={"internal.serving.kserve.io/localmodel": "b-cache"}
    )
    assert cache_for_isvc(labelled, caches) == "b-cache"
    opted_out = isvc("x", URI, annotations={"serving.kserve.io/disable-localmodel": "true"})
    assert cache_for_isvc(opted_out, caches) is None
    # KServe (and core's defaulting) look at the annotation's presence, not its value
    opted_out = isvc("x", URI, annotations={"serving.kserve.io/disable-localmodel": "false"})
    assert cache_for_isvc(opted_out, caches) is None
    assert cache_for_isvc(isvc("x", URI), caches, enabled=False) is None


# -- LocalModelNodes ------------------------------------------------------------------------------
def test_model_listed_on_every_ready_node_of_the_group() -> None:
    result = plan(_state(nodes=[node("a"), node("b"), node("c", ready=False)]))
    entry = [{"sourceModelUri": URI, "modelName": "llama"}]
    assert result.node_models == {"a": entry, "b": entry}
    status = result.status["llama"]
    assert status["nodeStatus"] == {
        "a": "NodeDownloadPending",
        "b": "NodeDownloadPending",
        "c": "NodeNotReady",
    }
    assert status["copies"] == {"total": 3, "available": 0, "failed": 0}


def test_unchanged_nodes_are_not_rewritten_and_flapping_nodes_keep_the_model() -> None:
    entry = ("llama", URI)
    state = _state(
        nodes=[node("a"), node("b", ready=False)],
        local_model_nodes=[lmn("a", [entry]), lmn("b", [entry], {"llama": "ModelDownloaded"})],
    )
    result = plan(state)
    assert result.node_models == {}
    assert result.status["llama"]["nodeStatus"] == {"a": "NodeDownloadPending", "b": "NodeNotReady"}


def test_node_leaving_the_group_or_the_cluster_loses_the_model() -> None:
    entry = ("llama", URI)
    outsider = {"metadata": {"name": "b", "labels": {}}, "status": node("b")["status"]}
    state = _state(
        nodes=[node("a"), outsider],
        local_model_nodes=[lmn("a", [entry]), lmn("b", [entry]), lmn("gone", [entry])],
    )
    result = plan(state)
    assert result.node_models == {"b": []}
    assert result.delete_nodes == ["gone"]


def test_status_maps_agent_states_and_counts_copies() -> None:
    entry = ("llama", URI)
    nodes = [node("a"), node("b"), node("c"), node("d")]
    lmns = [
        lmn("a", [entry], {"llama": "ModelDownloaded"}),
        lmn("b", [entry], {"llama": "ModelDownloading"}),
        lmn("c", [entry], {"llama": "ModelDownloadError"}, {"llama": "bucket not found"}),
        lmn("d", [entry], {}),
    ]
    status = plan(_state(nodes=nodes, local_model_nodes=lmns)).status["llama"]
    assert status["nodeStatus"] == {
        "a": "NodeDownloaded",
        "b": "NodeDownloading",
        "c": "NodeDownloadError",
        "d": "NodeDownloadPending",
    }
    assert status["copies"] == {"total": 4, "available": 1, "failed": 1}
    ready = status["conditions"][0]
    assert (ready["type"], ready["status"], ready["reason"]) == ("Ready", "False", "DownloadError")
    assert "c: bucket not found" in ready["message"]


def test_all_downloaded_is_ready() -> None:
    entry = ("llama", URI)
    lmns = [lmn(n, [entry], {"llama": "ModelDownloaded"}) for n in ("a", "b")]
    status = plan(_state(local_model_nodes=lmns)).status["llama"]
    assert status["copies"] == {"total": 2, "available": 2, "failed": 0}
    assert status["conditions"][0]["status"] == "True"


def test_missing_group_means_no_nodes() -> None:
    status = plan(_state(groups=[])).status["llama"]
    assert status["nodeStatus"] == {}
    assert status["conditions"][0]["reason"] == "NoNodes"
    assert status["conditions"][0]["message"] == "LocalModelNodeGroup workers not found"
    status = plan(_state(nodes=[{"metadata": {"name": "x", "labels": {}}}])).status["llama"]
    assert status["conditions"][0]["message"].startswith("no node of the node group")


# -- duplicates -----------------------------------------------------------------------------------
def test_second_cache_with_the_same_uri_is_refused() -> None:
    older = cache("first", URI, created="2026-01-01T00:00:00Z")
    newer = cache("second", URI, created="2026-01-02T00:00:00Z")
    result = plan(_state(caches=[newer, older]))
    assert result.refused == {"second": f"LocalModelCache first has the same StorageURI {URI}"}
    assert [m["modelName"] for m in result.node_models["a"]] == ["first"]
    refused = result.status["second"]
    assert refused["nodeStatus"] == {}
    assert refused["conditions"][0]["reason"] == "DuplicateSourceModelUri"


# -- PVs and PVCs ---------------------------------------------------------------------------------
def test_pv_and_pvc_in_each_namespace_that_uses_the_cache() -> None:
    state = _state(
        caches=[cache("llama", URI, uid="u-1")],
        inference_services=[
            isvc("x", URI, namespace="team-a"),
            isvc("y", URI + "/sub", namespace="team-a"),
            isvc("z", URI, namespace="team-b"),
            isvc("other", "s3://elsewhere/m", namespace="team-c"),
        ],
    )
    result = plan(state)
    names = sorted((o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"])
                   for o in result.create)  # fmt: skip
    assert names == [
        ("PersistentVolume", "", "llama-workers-team-a"),
        ("PersistentVolume", "", "llama-workers-team-b"),
        ("PersistentVolumeClaim", "team-a", "llama-workers"),
        ("PersistentVolumeClaim", "team-b", "llama-workers"),
    ]
    pv = next(o for o in result.create if o["metadata"]["name"] == "llama-workers-team-a")
    pvc = next(o for o in result.create if o["kind"] == "PersistentVolumeClaim")
    assert pv["spec"]["local"] == {"path": "/models"}
    assert pv["spec"]["claimRef"]["name"] == "llama-workers"
    assert pv["metadata"]["labels"] == {"internal.serving.kserve.io/localmodel": "llama"}
    assert pv["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    assert pvc["spec"]["volumeName"].startswith("llama-workers-team-")
    assert result.status["llama"]["inferenceServices"] == [
        {"namespace": "team-a", "name": "x"},
        {"namespace": "team-a", "name": "y"},
        {"namespace": "team-b", "name": "z"},
    ]
    assert result.uses[("team-b", "z")] == "llama"


def test_existing_volumes_kept_and_unused_ones_deleted() -> None:
    state = _state(inference_services=[isvc("x", URI, namespace="team-a")])
    first = plan(state)
    pv = next(o for o in first.create if o["kind"] == "PersistentVolume")
    pvc = next(o for o in first.create if o["kind"] == "PersistentVolumeClaim")
    kept = plan(_state(inference_services=state.inference_services, volumes=[pv], claims=[pvc]))
    assert kept.create == [] and kept.delete == []
    unused = plan(_state(volumes=[pv], claims=[pvc]))
    assert unused.delete == [
        ("PersistentVolume", "", "llama-workers-team-a"),
        ("PersistentVolumeClaim", "team-a", "llama-workers"),
    ]


# -- deletion -------------------------------------------------------------------------------------
def test_cache_in_use_is_not_deleted() -> None:
    state = _state(
        caches=[cache("llama", URI, deleting=True)],
        inference_services=[isvc("x", URI, namespace="team-a")],
    )
    result = plan(state)
    assert "llama" not in result.finalizable
    assert "a" in result.node_models  # still placed
    blocked = result.status["llama"]["conditions"][1]
    assert blocked["type"] == "DeletionBlocked"
    assert "being used by InferenceService team-a/x" in blocked["message"]


def test_deleted_cache_is_removed_from_nodes_then_finalizable() -> None:
    entry = ("llama", URI)
    deleting = [cache("llama", URI, deleting=True)]
    listed = plan(_state(caches=deleting, local_model_nodes=[lmn("a", [entry]), lmn("b", [])]))
    assert listed.node_models == {"a": []}
    assert listed.finalizable == []
    # unlisted, but the agent still reports it (files not yet removed)
    reported = plan(
        _state(caches=deleting, local_model_nodes=[lmn("a", [], {"llama": "ModelDownloaded"})])
    )
    assert reported.finalizable == []
    # a node that is not Ready cannot confirm: it does not hold the deletion up
    stale = plan(
        _state(
            caches=deleting,
            nodes=[node("a", ready=False)],
            local_model_nodes=[lmn("a", [], {"llama": "ModelDownloaded"})],
        )
    )
    assert stale.finalizable == ["llama"]
    done = plan(_state(caches=deleting, local_model_nodes=[lmn("a", [], {})]))
    assert done.finalizable == ["llama"]


def test_deleted_cache_waits_for_its_volumes() -> None:
    pv = {"kind": "PersistentVolume", "metadata": {"name": "llama-workers-ns",
          "labels": {"internal.serving.kserve.io/localmodel": "llama"}}}  # fmt: skip
    result = plan(_state(caches=[cache("llama", URI, deleting=True)], volumes=[pv]))
    assert result.delete == [("PersistentVolume", "", "llama-workers-ns")]
    assert result.finalizable == []


def test_disabled_cache_uses_no_isvcs() -> None:
    result = plan(_state(inference_services=[isvc("x", URI)], enabled=False))
    assert result.create == [] and result.uses == {}


# -- admission ------------------------------------------------------------------------------------
def test_admission_refuses_duplicates_and_deleting_a_cache_in_use() -> None:
    first = cache("first", URI)
    second = cache("second", URI)
    other = cache("other", "s3://models/other")
    assert admission_problem("CREATE", second, [first, other], []) == (
        f"LocalModelCache first has the same StorageURI {URI}"
    )
    assert admission_problem("UPDATE", first, [first, other], []) is None
    assert admission_problem("CREATE", other, [first], []) is None
    users = [isvc("x", URI + "/v2", namespace="team-a"), isvc("y", "s3://elsewhere/m")]
    assert admission_problem("DELETE", first, [first, other], users) == (
        "LocalModelCache first is being used by InferenceService team-a/x"
    )
    assert admission_problem("DELETE", other, [first, other], users) is None
    assert admission_problem("DELETE", first, [first], users, enabled=False) is None
