"""Shared builders for the controller's unit tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from moorage.core.resources import InferenceService, Resource, load_resources


def _isvc(spec_predictor: dict[str, Any], *, name: str = "iris", **extra: Any) -> InferenceService:
    doc: dict[str, Any] = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": name, **extra.pop("metadata", {})},
        "spec": {"predictor": spec_predictor, **extra},
    }
    [resource] = load_resources(yaml.safe_dump(doc))
    assert isinstance(resource, InferenceService)
    return resource


def _runtime(
    name: str,
    formats: list[dict[str, Any]],
    *,
    kind: str = "ClusterServingRuntime",
    protocols: list[str] | None = None,
    args: list[str] | None = None,
    metadata: dict[str, Any] | None = None,
    **spec: Any,
) -> Resource:
    body: dict[str, Any] = {
        "supportedModelFormats": formats,
        "containers": [
            {
                "name": "kserve-container",
                "image": f"example/{name}:1.0",
                "command": ["moorage-server"],
                "args": args
                if args is not None
                else ["--model_name={{.Name}}", "--model_dir=/mnt/models"],
            }
        ],
        **spec,
    }
    if protocols is not None:
        body["protocolVersions"] = protocols
    doc = {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": name, **(metadata or {})},
        "spec": body,
    }
    [resource] = load_resources(yaml.safe_dump(doc))
    return resource


@pytest.fixture
def write(tmp_path: Path):
    """Write a YAML text (or documents) into tmp_path and return the path."""

    def _write(name: str, content: str | list[dict[str, Any]]) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        text = content if isinstance(content, str) else yaml.safe_dump_all(content)
        path.write_text(text)
        return path

    return _write


@pytest.fixture
def make_isvc():
    """``make_isvc(predictor_dict, name=..., transformer=..., metadata=...)``."""
    return _isvc


@pytest.fixture
def make_runtime():
    """``make_runtime(name, formats, kind=..., protocols=..., args=..., **spec)``."""
    return _runtime
