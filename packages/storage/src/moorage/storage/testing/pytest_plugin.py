"""Session-scoped pytest fixtures over :mod:`moorage.storage.testing` (skip when unavailable).

Enable with ``pytest_plugins = ["moorage.storage.testing.pytest_plugin"]`` in a conftest.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from moorage.storage.testing import (
    Azurite,
    ComponentUnavailable,
    FakeGCS,
    HubStandIn,
    Registry,
    SeaweedS3,
    TestHTTPServer,
    azurite,
    fake_gcs,
    hf_hub,
    http_server,
    oci_registry,
    seaweedfs,
)


def _serve(
    factory: Callable[[Path], contextlib.AbstractContextManager[Any]], root: Path
) -> Iterator[Any]:
    try:
        manager = factory(root)
        server = manager.__enter__()
    except ComponentUnavailable as exc:
        pytest.skip(str(exc))
    try:
        yield server
    finally:
        manager.__exit__(None, None, None)


@pytest.fixture(scope="session")
def seaweedfs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    yield from _serve(seaweedfs, tmp_path_factory.mktemp("seaweedfs"))


@pytest.fixture(scope="session")
def oci_registry_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    yield from _serve(oci_registry, tmp_path_factory.mktemp("registry"))


@pytest.fixture(scope="session")
def hf_hub_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubStandIn]:
    yield from _serve(hf_hub, tmp_path_factory.mktemp("hub"))


@pytest.fixture(scope="session")
def http_file_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestHTTPServer]:
    yield from _serve(http_server, tmp_path_factory.mktemp("http"))


@pytest.fixture(scope="session")
def azurite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    yield from _serve(azurite, tmp_path_factory.mktemp("azurite"))


@pytest.fixture(scope="session")
def fake_gcs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeGCS]:
    yield from _serve(fake_gcs, tmp_path_factory.mktemp("gcs"))
