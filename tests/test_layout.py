"""Repository layout rules from DESIGN.md and STYLE.md."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ["core", "server", "storage", "client", "controller", "cache"]


def test_no_namespace_init_anywhere() -> None:
    offenders = [p.relative_to(ROOT) for p in ROOT.glob("packages/*/src/moorage/__init__.py")]
    assert offenders == [], f"PEP 420 namespace broken by {offenders}"


@pytest.mark.parametrize("name", PACKAGES)
def test_package_shape(name: str) -> None:
    pkg = ROOT / "packages" / name
    for required in ("pyproject.toml", "README.md", "CHANGELOG.md"):
        assert (pkg / required).is_file(), f"packages/{name}/{required} missing"
    src = pkg / "src" / "moorage" / name
    assert (src / "__init__.py").is_file()
    assert (src / "py.typed").is_file()
    meta = tomllib.loads((pkg / "pyproject.toml").read_text())
    assert meta["project"]["name"] == f"moorage-{name}"
    assert meta["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"] == ["src/moorage"]


@pytest.mark.parametrize("name", PACKAGES)
def test_packages_import_as_one_namespace(name: str) -> None:
    import importlib

    module = importlib.import_module(f"moorage.{name}")
    assert module.__version__
