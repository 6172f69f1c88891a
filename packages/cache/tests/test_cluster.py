"""The controller and agents as real processes against the Kubernetes API stand-in, with the
real S3 server (SeaweedFS) as the source: several agents play several nodes."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from moorage.cache._kube import CACHES, GROUPS, ISVCS, LOCAL_MODEL_NODES, NODES, PVCS, PVS

from .conftest import Cluster
from .objects import cache, group, isvc, node

pytestmark = pytest.mark.integration


def _upload(s3: Any, prefix: str, files: dict[str, bytes]) -> str:
    for name, data in files.items():
        s3.put("cache-models", f"{prefix}/{name}", data)
    return f"s3://cache-models/{prefix}"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _tree(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): _sha(p.read_bytes())
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.startswith(".moorage")
    }


async def _cache_status(c: Cluster, name: str) -> dict[str, Any]:
    obj = await c.kube.get(CACHES, name)
    return dict((obj or {}).get("status") or {})


async def _setup(c: Cluster, nodes: list[str], *, limit: str = "1Gi") -> None:
    await c.enable()
    await c.create(GROUPS, group(limit=limit))
    for n in nodes:
        await c.create(NODES, node(n))


@pytest.mark.slow
async def test_cache_reaches_every_node_then_deletion_cleans_up(
    cluster: Cluster, s3_model: Any, tmp_path: Path
) -> None:
    files = {"model.joblib": os.urandom(3 << 20), "config/settings.json": b'{"a": 1}'}
    uri = _upload(s3_model, "iris-every-node", files)
    nodes = ["node-a", "node-b", "node-c"]
    await _setup(cluster, nodes)
    roots = {n: tmp_path / n for n in nodes}
    cluster.controller()
    for n in nodes:
        cluster.agent(n, roots[n], env=s3_model.env())
    await cluster.create(CACHES, cache("iris", uri, size="10Mi"))

    async def downloaded() -> Any:
        status = await _cache_status(cluster, "iris")
        done = status.get("copies", {}).get("available") == 3
        return status if done else None

    status = await cluster.wait_for(downloaded, what="NodeDownloaded on 3 nodes")
    assert status["nodeStatus"] == {n: "NodeDownloaded" for n in nodes}
    assert status["copies"] == {"available": 3, "total": 3, "failed": 0}
    for n in nodes:
        assert _tree(roots[n] / "models" / "iris") == {k: _sha(v) for k, v in files.items()}
        lmn = await cluster.kube.get(LOCAL_MODEL_NODES, n)
        assert lmn["status"]["modelStatus"] == {"iris": "ModelDownloaded"}
        details = lmn["status"]["modelDetails"]["iris"]
        assert details["bytesDownloaded"] == details["bytesTotal"] == sum(map(len, files.values()))

    # An InferenceService using the cache: PV/PVC in its namespace, listed in the status.
    await cluster.create(ISVCS, isvc("iris", uri + "/", namespace="kserve-test"))

    async def volumes() -> Any:
        pvc = await cluster.kube.get(PVCS, "iris-workers", namespace="kserve-test")
        pv = await cluster.kube.get(PVS, "iris-workers-kserve-test")
        return (pv, pvc) if pv and pvc else None

    pv, pvc = await cluster.wait_for(volumes, what="PV and PVC")
    assert pvc["spec"]["volumeName"] == "iris-workers-kserve-test"
    assert pv["spec"]["local"] == {"path": "/models"}

    async def listed() -> bool:
        status = await _cache_status(cluster, "iris")
        return status.get("inferenceServices") == [{"namespace": "kserve-test", "name": "iris"}]

    await cluster.wait_for(listed, what="the InferenceService in the cache's status")

    # In use: deleting the cache is held until the InferenceService goes.
    await cluster.kube.delete(CACHES, "iris")

    async def blocked() -> Any:
        status = await _cache_status(cluster, "iris")
        return any(c["type"] == "DeletionBlocked" for c in status.get("conditions", []))

    await cluster.wait_for(blocked, what="DeletionBlocked")
    assert (roots["node-a"] / "models" / "iris").exists()
    await cluster.kube.delete(ISVCS, "iris", namespace="kserve-test")

    async def gone() -> bool:
        return await cluster.kube.get(CACHES, "iris") is None

    await cluster.wait_for(gone, what="the cache deleted")
    for n in nodes:
        assert not (roots[n] / "models" / "iris").exists()
        lmn = await cluster.kube.get(LOCAL_MODEL_NODES, n)
        assert lmn["spec"]["localModels"] == []
        assert not (lmn.get("status") or {}).get("modelStatus")
    assert await cluster.kube.get(PVS, "iris-workers-kserve-test") is None
    assert await cluster.kube.get(PVCS, "iris-workers", namespace="kserve-test") is None


@pytest.fixture(scope="session")
def big_model(s3_model: Any) -> tuple[str, bytes]:
    """A 64 MiB single-object model (its ETag is its MD5, so the manifest carries a hash)."""
    data = os.urandom(64 << 20)
    s3_model.put("cache-models", "big/model.bin", data)
    return "s3://cache-models/big", data


#: One 1 MiB part at a time: a download takes long enough to be interrupted half-way.
SLOW = {
    "MOORAGE_STORAGE_CONCURRENCY": "1",
    "MOORAGE_STORAGE_PART_SIZE": str(1 << 20),
    "MOORAGE_STORAGE_MULTIPART_THRESHOLD": str(1 << 20),
}


@pytest.mark.slow
async def test_agent_killed_mid_download_resumes_and_verifies(
    cluster: Cluster, s3_model: Any, big_model: tuple[str, bytes], tmp_path: Path
) -> None:
    from moorage.cache import _disk

    uri, data = big_model
    await _setup(cluster, ["node-a"])
    root = tmp_path / "node-a"
    env = {**s3_model.env(), **SLOW}
    cluster.controller()
    agent = cluster.agent("node-a", root, env=env)
    await cluster.create(CACHES, cache("big", uri, size="64Mi"))

    async def partly() -> bool:
        return 4 << 20 < _disk.model_bytes(root, "big") < len(data) // 2

    await cluster.wait_for(partly, what="part of the model on disk")
    agent.kill()
    cluster.processes["agent-node-a-killed"] = cluster.processes.pop("agent-node-a")
    staged = _disk.model_bytes(root, "big")
    assert not (root / "models" / "big").exists()  # nothing that looks complete
    assert staged > 0

    cluster.agent("node-a", root, env=env)

    async def downloaded() -> Any:
        lmn = await cluster.kube.get(LOCAL_MODEL_NODES, "node-a")
        states = ((lmn or {}).get("status") or {}).get("modelStatus") or {}
        return lmn if states.get("big") == "ModelDownloaded" else None

    lmn = await cluster.wait_for(downloaded, timeout=60, what="ModelDownloaded after restart")
    details = lmn["status"]["modelDetails"]["big"]
    assert details["bytesTotal"] == len(data)
    assert details["bytesFetched"] < len(data)  # resumed, not started over
    assert (root / "models" / "big" / "model.bin").read_bytes() == data

    # A damaged file found at start-up (same size, other bytes) is fetched again.
    cluster.processes.pop("agent-node-a").stop()
    target = root / "models" / "big" / "model.bin"
    with target.open("r+b") as f:
        f.seek(1000)
        f.write(b"\0" * 16)
    cluster.agent("node-a", root, env=s3_model.env())

    async def repaired() -> Any:
        lmn = await downloaded()
        if lmn is None:
            return None
        # before the restart it had resumed (fetched less than the total); now all is fetched
        return (
            lmn if lmn["status"]["modelDetails"]["big"].get("bytesFetched") == len(data) else None
        )

    await cluster.wait_for(repaired, timeout=60, what="the damaged model fetched again")
    assert target.read_bytes() == data
    assert "found damaged on disk (model.bin does not match its MD5)" in cluster.logs()

    async def cache_downloaded() -> bool:
        status = await _cache_status(cluster, "big")
        return status.get("nodeStatus") == {"node-a": "NodeDownloaded"}

    await cluster.wait_for(cache_downloaded, what="the cache's status")


async def test_storage_limit_and_model_size_are_errors_not_full_disks(
    cluster: Cluster, s3_model: Any, tmp_path: Path
) -> None:
    from moorage.cache import _disk

    uri = _upload(s3_model, "three-mib", {"weights.bin": os.urandom(3 << 20)})
    await _setup(cluster, ["node-a", "node-b"], limit="4Mi")
    roots = {n: tmp_path / n for n in ("node-a", "node-b")}
    cluster.controller()
    for n, root in roots.items():
        cluster.agent(n, root, env=s3_model.env())
    # modelSize over the group's limit: refused before a byte is fetched
    await cluster.create(CACHES, cache("too-big", uri, size="5Mi"))
    # modelSize within the limit, but the source is bigger than modelSize says
    await cluster.create(CACHES, cache("lying", uri + "/", size="1Mi"))

    async def failed(name: str) -> Any:
        status = await _cache_status(cluster, name)
        return status if status.get("copies", {}).get("failed") == 2 else None

    too_big = await cluster.wait_for(lambda: failed("too-big"), what="too-big failed")
    lying = await cluster.wait_for(lambda: failed("lying"), what="lying failed")
    assert too_big["nodeStatus"] == {"node-a": "NodeDownloadError", "node-b": "NodeDownloadError"}
    assert "storageLimit is 4.0 MiB" in too_big["conditions"][0]["message"]
    assert "bigger than its modelSize 1.0 MiB" in lying["conditions"][0]["message"]
    lmn = await cluster.kube.get(LOCAL_MODEL_NODES, "node-a")
    assert lmn["status"]["modelStatus"] == {
        "lying": "ModelDownloadError",
        "too-big": "ModelDownloadError",
    }
    for root in roots.values():  # nothing staged is left behind
        assert _disk.present(root) == set()


async def test_missing_source_and_duplicate_uri(
    cluster: Cluster, s3_model: Any, tmp_path: Path
) -> None:
    await _setup(cluster, ["node-a"])
    cluster.controller()
    cluster.agent("node-a", tmp_path / "node-a", env=s3_model.env())
    missing = "s3://cache-models/no-such-model"
    await cluster.create(CACHES, cache("missing", missing, created="2026-01-01T00:00:00Z"))
    await cluster.create(CACHES, cache("again", missing, created="2026-01-02T00:00:00Z"))

    async def settled() -> Any:
        first, second = (
            await _cache_status(cluster, "missing"),
            await _cache_status(cluster, "again"),
        )
        ok = first.get("copies", {}).get("failed") == 1 and second.get("conditions")
        return (first, second) if ok else None

    first, second = await cluster.wait_for(settled, what="error and refusal")
    assert first["conditions"][0]["reason"] == "DownloadError"
    assert "node-a:" in first["conditions"][0]["message"]
    assert second["nodeStatus"] == {}
    assert second["conditions"][0]["reason"] == "DuplicateSourceModelUri"
    lmn = await cluster.kube.get(LOCAL_MODEL_NODES, "node-a")
    assert [m["modelName"] for m in lmn["spec"]["localModels"]] == ["missing"]
    assert lmn["status"]["modelDetails"]["missing"]["attempts"] == 1  # not worth a retry


async def test_hub_source_and_retries_after_server_errors(
    cluster: Cluster, hf_hub_server: Any, http_file_server: Any, tmp_path: Path
) -> None:
    weights = os.urandom(2 << 20)
    hf_hub_server.add_repo("org/tiny", {"config.json": b"{}", "model.safetensors": weights})
    flaky = os.urandom(1 << 20)
    url = http_file_server.add_file("flaky-cache/model.bin", flaky)
    http_file_server.configure(status={"flaky-cache/model.bin": 503})
    await _setup(cluster, ["node-a"])
    root = tmp_path / "node-a"
    env = {
        **hf_hub_server.env(),
        "MOORAGE_STORAGE_RETRIES": "0",  # the agent's retries, not the library's, are tested
        "MOORAGE_CACHE_DOWNLOAD_ATTEMPTS": "20",
        "MOORAGE_CACHE_RETRY_INITIAL_SECONDS": "0.3",
        "MOORAGE_CACHE_RETRY_MAX_SECONDS": "0.5",
    }
    cluster.controller()
    cluster.agent("node-a", root, env=env)
    await cluster.create(CACHES, cache("tiny", "hf://org/tiny", size="10Mi"))
    await cluster.create(CACHES, cache("flaky", url, size="10Mi"))

    async def details(name: str) -> dict[str, Any]:
        lmn = await cluster.kube.get(LOCAL_MODEL_NODES, "node-a")
        return dict((((lmn or {}).get("status") or {}).get("modelDetails") or {}).get(name) or {})

    async def retrying() -> Any:
        d = await details("flaky")
        return d if "trying again in" in d.get("message", "") else None

    retried = await cluster.wait_for(retrying, what="a retry after 503")
    assert "503" in retried["message"] or "Service Unavailable" in retried["message"]
    http_file_server.reset_faults()

    async def all_downloaded() -> Any:
        status = await _cache_status(cluster, "flaky")
        hub = await _cache_status(cluster, "tiny")
        ok = status.get("copies", {}).get("available") == hub.get("copies", {}).get("available")
        return ok and status.get("copies", {}).get("available") == 1

    await cluster.wait_for(all_downloaded, what="both models downloaded")
    assert (await details("flaky"))["attempts"] >= 2
    assert (root / "models" / "flaky" / "model.bin").read_bytes() == flaky
    assert (root / "models" / "tiny" / "model.safetensors").read_bytes() == weights


@pytest.mark.slow
async def test_downloads_stay_within_the_concurrency_bound(
    cluster: Cluster, s3_model: Any, big_model: tuple[str, bytes], tmp_path: Path
) -> None:
    uri, data = big_model
    await _setup(cluster, ["node-a"])
    root = tmp_path / "node-a"
    env = {**s3_model.env(), **SLOW, "MOORAGE_CACHE_MAX_CONCURRENT_DOWNLOADS": "1"}
    cluster.controller()
    cluster.agent("node-a", root, env=env)
    await cluster.create(CACHES, cache("whole", uri, size="64Mi"))
    await cluster.create(CACHES, cache("single", uri + "/model.bin", size="64Mi"))
    most = 0

    async def both_done() -> bool:
        nonlocal most
        lmn = await cluster.kube.get(LOCAL_MODEL_NODES, "node-a")
        states = list((((lmn or {}).get("status") or {}).get("modelStatus") or {}).values())
        most = max(most, states.count("ModelDownloading"))
        return states == ["ModelDownloaded", "ModelDownloaded"]

    await cluster.wait_for(both_done, timeout=60, what="both models downloaded")
    assert most == 1
    assert (root / "models" / "whole" / "model.bin").read_bytes() == data
    assert (root / "models" / "single" / "model.bin").read_bytes() == data


@pytest.mark.slow
async def test_model_removed_from_disk_behind_the_agents_back_comes_back(
    cluster: Cluster, s3_model: Any, tmp_path: Path
) -> None:
    import shutil

    files = {"model.joblib": os.urandom(256 << 10)}
    uri = _upload(s3_model, "vanishing", files)
    await _setup(cluster, ["node-a"])
    root = tmp_path / "node-a"
    cluster.controller()
    cluster.agent("node-a", root, env=s3_model.env())
    await cluster.create(CACHES, cache("vanishing", uri, size="1Mi"))
    target = root / "models" / "vanishing" / "model.joblib"

    async def on_disk() -> bool:
        status = await _cache_status(cluster, "vanishing")
        return status.get("copies", {}).get("available") == 1 and target.exists()

    await cluster.wait_for(on_disk, what="downloaded")
    shutil.rmtree(root / "models" / "vanishing")
    await cluster.wait_for(on_disk, what="fetched again at the next resync")
    assert target.read_bytes() == files["model.joblib"]
    assert "found damaged on disk (missing)" in cluster.logs()


async def test_admission_webhook_refuses_duplicates_and_deleting_a_cache_in_use(
    cluster: Cluster,
) -> None:
    import httpx

    from moorage.storage.testing import free_port

    await _setup(cluster, ["node-a"])
    port = free_port()
    cluster.start("controller", "controller", "--webhook-port", str(port),
                  "--webhook-insecure", "true")  # fmt: skip
    uri = "s3://cache-models/webhooked"
    await cluster.create(CACHES, cache("first", uri))
    await cluster.create(ISVCS, isvc("user", uri, namespace="kserve-test"))

    def review(operation: str, obj: dict[str, Any]) -> dict[str, Any]:
        key = "oldObject" if operation == "DELETE" else "object"
        return {
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "u-1", "operation": operation, "userInfo": {"username": "alice"},
                "kind": {"group": "serving.kserve.io", "version": "v1alpha1",
                         "kind": "LocalModelCache"},
                "resource": {"group": "serving.kserve.io", "version": "v1alpha1",
                             "resource": "localmodelcaches"},
                "name": obj["metadata"]["name"], key: obj,
            },
        }  # fmt: skip

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:

        async def answer(operation: str, obj: dict[str, Any]) -> Any:
            try:
                r = await http.post("/localmodelcache", json=review(operation, obj))
            except httpx.TransportError:
                return None
            return r.json()["response"] if r.status_code == 200 else None

        refused = await cluster.wait_for(
            lambda: answer("CREATE", cache("second", uri)), what="the webhook answering"
        )
        assert refused["allowed"] is False
        assert (
            refused["status"]["message"] == f"LocalModelCache first has the same StorageURI {uri}"
        )
        allowed = await answer("CREATE", cache("third", uri + "-other"))
        assert allowed["allowed"] is True
        in_use = await answer("DELETE", cache("first", uri))
        assert in_use["allowed"] is False
        assert in_use["status"]["message"] == (
            "LocalModelCache first is being used by InferenceService kserve-test/user"
        )


async def test_unauthorised_source_is_an_error_on_that_node_only(
    cluster: Cluster, s3_model: Any, tmp_path: Path
) -> None:
    uri = _upload(s3_model, "guarded", {"model.joblib": os.urandom(64 << 10)})
    await _setup(cluster, ["node-a", "node-b"])
    cluster.controller()
    cluster.agent("node-a", tmp_path / "node-a", env=s3_model.env())
    cluster.agent("node-b", tmp_path / "node-b",
                  env=s3_model.env(AWS_SECRET_ACCESS_KEY="wrong-secret"))  # fmt: skip
    await cluster.create(CACHES, cache("guarded", uri, size="1Mi"))

    async def settled() -> Any:
        status = await _cache_status(cluster, "guarded")
        copies = status.get("copies", {})
        return status if (copies.get("available"), copies.get("failed")) == (1, 1) else None

    status = await cluster.wait_for(settled, what="one copy and one failure")
    assert status["nodeStatus"] == {"node-a": "NodeDownloaded", "node-b": "NodeDownloadError"}
    message = status["conditions"][0]["message"]
    assert message.startswith("node-b: s3://cache-models/guarded: access denied")
    assert "wrong-secret" not in message
    lmn = await cluster.kube.get(LOCAL_MODEL_NODES, "node-b")
    assert lmn["status"]["modelDetails"]["guarded"]["attempts"] == 1  # refused: no retry
    assert "wrong-secret" not in cluster.logs()
