"""CacheSettings (core) as the cache's commands parse it, and quantities."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from moorage.cache._quantity import format_bytes, parse_bytes
from moorage.core.config.cache import CacheSettings


def test_agent_flags_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NODE_NAME", "node-a")
    monkeypatch.setenv("POD_NAMESPACE", "moorage")
    monkeypatch.setenv("MOORAGE_CACHE_MAX_CONCURRENT_DOWNLOADS", "5")
    s = CacheSettings.from_cli(["agent", "--root", "/data", "--kubeconfig", "/k"])
    assert (s.command, s.node_name, s.root, s.kubeconfig) == (
        "agent",
        "node-a",
        Path("/data"),
        "/k",
    )
    assert (s.pod_namespace, s.max_concurrent_downloads) == ("moorage", 5)
    s = CacheSettings.from_cli(["agent", "--node-name", "node-b"])
    assert s.node_name == "node-b"


def test_controller_defaults_and_refusals(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POD_NAMESPACE", raising=False)
    s = CacheSettings.from_cli(["controller"])
    assert (s.command, s.pod_namespace, s.resync_seconds) == ("controller", "kserve", None)
    with pytest.raises(ValidationError, match="agent only"):
        CacheSettings.from_cli(["controller", "--root", "/x"])
    with pytest.raises(ValidationError, match="needs --webhook-cert and --webhook-key"):
        CacheSettings.from_cli(["controller", "--webhook-port", "9443"])
    s = CacheSettings.from_cli(
        ["controller", "--webhook-port", "9443", "--webhook-insecure", "true"]
    )
    assert s.webhook_port == 9443
    with pytest.raises(ValidationError, match="'controller' or 'agent'"):
        CacheSettings.from_cli(["proxy"])


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1Gi", 2**30), ("1.7T", 1_700_000_000_000), ("500M", 500_000_000), ("1.5Ki", 1536),
     ("100", 100), ("1500m", 2), (10, 10)],
)  # fmt: skip
def test_quantities(text: str | int, expected: int) -> None:
    assert parse_bytes(text) == expected


def test_bad_quantity_and_format() -> None:
    with pytest.raises(ValueError, match="not a quantity"):
        parse_bytes("ten gigs")
    assert format_bytes(3 * 2**30 // 2) == "1.5 GiB"
    assert format_bytes(12) == "12 B"
