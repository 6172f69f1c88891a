"""Faults: a server killed or a connection cut mid-download, corrupted bytes, tampered partials.

Each case checks that the destination never appears half-populated and that a rerun resumes
(fetches less than everything) and ends verified.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from moorage.core.errors import IntegrityError, StorageError
from moorage.storage import download, last_download_stats
from moorage.storage.testing import HubStandIn, hf_hub

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SIZE = 8 * 1024 * 1024
PART = 1024 * 1024
DATA = os.urandom(SIZE)
KNOBS = {
    "MOORAGE_STORAGE_PART_SIZE": str(PART),
    "MOORAGE_STORAGE_MULTIPART_THRESHOLD": str(PART),
    "MOORAGE_STORAGE_CONCURRENCY": "2",
    "MOORAGE_STORAGE_RETRIES": "0",
    "MOORAGE_STORAGE_PROGRESS": "off",
}


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubStandIn]:
    with hf_hub(tmp_path_factory.mktemp("fault-hub")) as server:
        server.add_repo("faults/model", {"weights.bin": DATA, "config.json": b"{}"})
        yield server


@pytest.fixture
def env(hub: HubStandIn) -> dict[str, str]:
    hub.reset_faults()
    hub.clear_requests()
    return {**hub.env(), **KNOBS}


def staging_of(dest: Path) -> list[Path]:
    return list(dest.parent.glob(f".{dest.name}.moorage-*"))


def test_connection_cut_then_resume(hub: HubStandIn, env: dict[str, str], tmp_path: Path) -> None:
    dest = tmp_path / "m"
    hub.configure(cut_after={"faults/model/weights.bin": 5 * PART + 100})
    with pytest.raises(StorageError, match="hf://faults/model"):
        download("hf://faults/model", dest, env=env)
    assert not dest.exists(), "a failed download must not leave a destination"
    assert staging_of(dest), "the partial state is kept for a resume"
    hub.reset_faults()
    hub.clear_requests()
    download("hf://faults/model", dest, env=env)
    assert last_download_stats().fetched_bytes < SIZE
    assert (
        hashlib.sha256((dest / "weights.bin").read_bytes()).digest()
        == hashlib.sha256(DATA).digest()
    )
    assert not staging_of(dest)


def test_server_killed_then_resume(hub: HubStandIn, env: dict[str, str], tmp_path: Path) -> None:
    dest = tmp_path / "m"
    slow = {**env, "MOORAGE_STORAGE_CONCURRENCY": "1"}
    errors: list[BaseException] = []

    def run() -> None:
        try:
            download("hf://faults/model", dest, env=slow)
        except BaseException as exc:
            errors.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        parts = [p for s in staging_of(dest) for p in (s / ".moorage-partial").glob("*.json")]
        if parts:
            break
        time.sleep(0.01)
    hub.kill()
    worker.join(timeout=60)
    hub.restart()
    if not errors:
        pytest.skip("the download finished before the server was killed")
    assert isinstance(errors[0], StorageError)
    assert not dest.exists()
    download("hf://faults/model", dest, env=env)
    assert last_download_stats().fetched_bytes < SIZE
    assert (dest / "weights.bin").read_bytes() == DATA


def test_corrupted_bytes_detected(hub: HubStandIn, env: dict[str, str], tmp_path: Path) -> None:
    dest = tmp_path / "m"
    hub.configure(corrupt=["faults/model/weights.bin"])
    with pytest.raises(IntegrityError, match="SHA-256"):
        download("hf://faults/model", dest, env=env)
    assert not dest.exists()


def test_tampered_partial_is_refetched(
    hub: HubStandIn, env: dict[str, str], tmp_path: Path
) -> None:
    dest = tmp_path / "m"
    hub.configure(cut_after={"faults/model/weights.bin": 4 * PART})
    with pytest.raises(StorageError):
        download("hf://faults/model", dest, env=env)
    part_files = [p for s in staging_of(dest) for p in (s / ".moorage-partial").glob("*.part")]
    assert part_files
    with open(part_files[0], "r+b") as fh:  # flip a byte inside an already-finished part
        fh.seek(10)
        byte = fh.read(1)
        fh.seek(10)
        fh.write(bytes([byte[0] ^ 0xFF]))
    hub.reset_faults()
    download("hf://faults/model", dest, env=env)
    assert (dest / "weights.bin").read_bytes() == DATA


def test_retries_ride_over_a_cut(hub: HubStandIn, env: dict[str, str], tmp_path: Path) -> None:
    hub.configure(cut_after={"faults/model/weights.bin": 3 * PART + 5})
    retrying = {**env, "MOORAGE_STORAGE_RETRIES": "2", "MOORAGE_STORAGE_RETRY_BACKOFF_S": "0"}
    # the cut is permanent for that range, so retries cannot succeed: the error is clear
    with pytest.raises(StorageError, match=r"broke|ended early|failed"):
        download("hf://faults/model", tmp_path / "m", env=retrying)
    hub.reset_faults()
    out = download("hf://faults/model", tmp_path / "m", env=retrying)
    assert (out / "weights.bin").read_bytes() == DATA
