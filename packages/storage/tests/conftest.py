"""Shared fixtures: the real-server fixtures of moorage.storage.testing (session-scoped)."""

from __future__ import annotations

from moorage.storage.testing.pytest_plugin import (  # noqa: F401 - fixtures
    azurite_server,
    fake_gcs_server,
    hf_hub_server,
    http_file_server,
    oci_registry_server,
    seaweedfs_server,
)
