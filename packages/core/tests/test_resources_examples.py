"""Every example under examples/ parses, validates and round-trips; every invalid one fails
with the field path and message its ``# expect:`` header names."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from moorage.core.config.configmap import InferenceServiceConfig
from moorage.core.errors import ValidationError
from moorage.core.resources import builtin_runtimes, load_resources, validate
from moorage.core.resources._loader import _Loader

ROOT = Path(__file__).resolve().parents[3]
VALID = sorted((ROOT / "examples/resources").glob("*.yaml")) + sorted(
    (ROOT / "charts/moorage/runtimes").glob("*.yaml")
)
INVALID = sorted((ROOT / "examples/invalid").glob("*.yaml"))


def _documents(path: Path) -> list[dict]:
    return [d for d in yaml.load_all(path.read_text(), Loader=_Loader) if d is not None]


def test_enough_examples() -> None:
    assert len(VALID) >= 25
    assert len(INVALID) >= 20


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.name)
def test_valid_example(path: Path) -> None:
    documents = _documents(path)
    if documents[0].get("kind") == "ConfigMap":
        config = InferenceServiceConfig.from_configmap(documents[0])
        assert config == InferenceServiceConfig.default()
        return
    resources = load_resources(path)
    assert len(resources) == len(documents)
    for resource, document in zip(resources, documents, strict=True):
        assert resource.model_dump(by_alias=True, exclude_none=True) == document
        assert resource.to_dict() == document
        assert validate(resource) == [], [str(e) for e in validate(resource)]


def _expectation(path: Path) -> tuple[str, str]:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: "), f"{path.name} lacks an '# expect:' header"
    field, _, message = first.removeprefix("# expect: ").partition(": ")
    return field, message


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_invalid_example(path: Path) -> None:
    field, message = _expectation(path)
    try:
        resources = load_resources(path)
    except ValidationError as exc:
        errors = exc.details.get("errors") or [exc]
    else:
        errors = [e for r in resources for e in validate(r)]
    assert errors, f"{path.name} was accepted"
    matching = [e for e in errors if e.field == field and message in e.reason]
    assert matching, [str(e) for e in errors]


def test_builtin_runtimes_are_fresh_copies() -> None:
    first = builtin_runtimes()[0]
    first.spec.disabled = True
    assert builtin_runtimes()[0].spec.disabled is None
