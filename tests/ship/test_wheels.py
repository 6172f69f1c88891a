"""Every package's wheel and sdist, as users get them: built from the tree, then each wheel
installed alone in a fresh venv with only its declared dependencies (the internal ones from the
wheels just built), its console scripts run with ``--help`` and every public module imported.

Catches what editable installs hide: a stray ``moorage/__init__.py`` (the PEP 420 namespace
breaks), a module left out of the wheel, a dependency used but not declared, an entry point
naming a function that does not exist. The huggingface/vllm extras are left out (torch is only
ever installed with pip, ../shared/STYLE.md §11), and so are the test extras.
"""

from __future__ import annotations

import email.parser
import json
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from .conftest import PACKAGES, ROOT, uv_binary

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: The extras each package ships with in its images and docs (no torch, no test tools).
EXTRAS = {
    "core": ["grpc"],
    "storage": ["s3", "gcs", "azure", "hf", "oci"],
    "server": ["sklearn", "xgboost", "lightgbm"],
    "client": [],
    "controller": ["operator", "local"],
    "cache": ["operator"],
}
#: Top-level modules whose absence is an extra this test does not install.
NOT_INSTALLED = {"torch", "transformers", "tokenizers", "safetensors", "vllm", "pytest", "kmock",
                 "hypothesis", "openai", "_pytest"}  # fmt: skip

#: Run inside the fresh venv: import every public module of moorage.<name>, print what failed.
PROBE = r"""
import importlib, json, pathlib, sys
import moorage
name = sys.argv[1]
roots = list(moorage.__path__)
base = pathlib.Path(roots[0]) / name
found = {}
for path in sorted(base.rglob("*.py")):
    rel = path.relative_to(base.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    if parts[-1] == "__main__" or any(p.startswith("_") for p in parts):
        continue
    module = "moorage." + ".".join(parts)
    try:
        importlib.import_module(module)
        found[module] = None
    except ModuleNotFoundError as exc:
        found[module] = {"missing": exc.name, "error": f"{type(exc).__name__}: {exc}"}
    except Exception as exc:  # noqa: BLE001 - reported to the test
        found[module] = {"missing": None, "error": f"{type(exc).__name__}: {exc}"}
print(json.dumps({"namespace": [str(p) for p in roots],
                  "has_init": getattr(moorage, "__file__", None), "modules": found}))
"""


def _project(name: str) -> dict:
    return tomllib.loads((ROOT / "packages" / name / "pyproject.toml").read_text())["project"]


def _version(name: str) -> str:
    text = (ROOT / "packages" / name / "src" / "moorage" / name / "_version.py").read_text()
    scope: dict[str, str] = {}
    exec(text, scope)
    return scope["__version__"]


def _wheel(dist: Path, name: str) -> Path:
    return dist / f"moorage_{name}-{_version(name)}-py3-none-any.whl"


@pytest.mark.parametrize("name", PACKAGES)
def test_wheel_and_sdist_contents(dist: Path, name: str) -> None:
    """Metadata as pyproject declares it; only moorage/<name>/ in the wheel, no namespace
    __init__; the sdist carries the sources, README, changelog and pyproject."""
    project, version = _project(name), _version(name)
    wheel = _wheel(dist, name)
    assert wheel.is_file(), sorted(p.name for p in dist.iterdir())
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        info = f"moorage_{name}-{version}.dist-info"
        meta = email.parser.Parser().parsestr(zf.read(f"{info}/METADATA").decode())
        entry_points = (
            zf.read(f"{info}/entry_points.txt").decode()
            if f"{info}/entry_points.txt" in names
            else ""
        )
    code = [n for n in names if not n.startswith(info)]
    assert "moorage/__init__.py" not in code, "the wheel breaks the moorage namespace"
    assert all(n.startswith(f"moorage/{name}/") for n in code), [
        n for n in code if not n.startswith(f"moorage/{name}/")
    ]
    assert f"moorage/{name}/py.typed" in code
    assert not [n for n in code if "__pycache__" in n or n.endswith(".pyc")]
    assert meta["Name"] == f"moorage-{name}" and meta["Version"] == version
    assert meta["Requires-Python"] == project["requires-python"]
    assert meta.get("License-Expression") == project["license"]
    assert meta["Summary"] == project["description"]
    assert set(meta.get_all("Provides-Extra") or []) == set(
        project.get("optional-dependencies", {})
    )
    for script, target in project.get("scripts", {}).items():
        assert f"{script} = {target}" in entry_points
    sdist = dist / f"moorage_{name}-{version}.tar.gz"
    with tarfile.open(sdist) as tf:
        members = {m.split("/", 1)[1] for m in tf.getnames() if "/" in m}
    assert {"pyproject.toml", "README.md", "CHANGELOG.md", "PKG-INFO"} <= members
    assert f"src/moorage/{name}/__init__.py" in members and "src/moorage/__init__.py" not in members


def _venv(tmp_path: Path, dist: Path, requirement: str) -> Path:
    uv = uv_binary()
    venv = tmp_path / "venv"
    subprocess.run([uv, "venv", "-q", "--python", sys.executable, str(venv)], check=True)
    python = venv / "bin" / "python"
    # Our packages come from the wheels just built, never from an index (--no-sources: the
    # workspace's own paths are not consulted).
    done = subprocess.run(
        [uv, "pip", "install", "-q", "--python", str(python), "--find-links", str(dist),
         "--no-sources", requirement],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, f"uv pip install {requirement}: {done.stderr[-3000:]}"
    return python


def _probe(python: Path, name: str) -> dict:
    done = subprocess.run(
        [str(python), "-c", PROBE, name], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


def _scripts_help(python: Path, name: str) -> None:
    for script in _project(name).get("scripts", {}):
        done = subprocess.run(
            [str(python.parent / script), "--help"], capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0 and "usage" in done.stdout.lower(), (
            f"{script} --help exited {done.returncode}: {done.stdout[-1000:]} {done.stderr[-2000:]}"
        )


@pytest.mark.parametrize("name", PACKAGES)
def test_wheel_alone(tmp_path: Path, dist: Path, name: str) -> None:
    """Only the wheel and its required dependencies: the console scripts answer ``--help``, the
    package imports, and a module that cannot import lacks a third-party module or says which
    extra to install, never lacks one of ours."""
    wheel = _wheel(dist, name)
    python = _venv(tmp_path, dist, str(wheel))
    _scripts_help(python, name)
    found = _probe(python, name)
    assert found["has_init"] is None, f"moorage is a regular package here: {found['has_init']}"
    assert found["modules"][f"moorage.{name}"] is None, found["modules"][f"moorage.{name}"]
    broken = {
        module: problem["error"]
        for module, problem in found["modules"].items()
        if problem and not _names_an_extra(problem)
    }
    assert not broken, broken


def _names_an_extra(problem: dict) -> bool:
    """A module that needs an optional dependency: a third-party module is missing, or our error
    says which extra to install."""
    if "pip install" in problem["error"] and "[" in problem["error"]:
        return True
    return problem["missing"] is not None and not problem["missing"].startswith("moorage")


@pytest.mark.parametrize("name", PACKAGES)
def test_wheel_with_extras(tmp_path: Path, dist: Path, name: str) -> None:
    """The wheel with the extras it ships with: every public module imports, except those that
    need an extra left out here (torch, vllm, the test tools)."""
    extras = EXTRAS[name]
    requirement = f"moorage-{name}[{','.join(extras)}]" if extras else f"moorage-{name}"
    python = _venv(tmp_path, dist, f"{requirement} @ {_wheel(dist, name).as_uri()}")
    _scripts_help(python, name)
    found = _probe(python, name)
    broken = {
        module: problem["error"]
        for module, problem in found["modules"].items()
        if problem and (problem["missing"] or "").split(".")[0] not in NOT_INSTALLED
    }
    assert not broken, broken


#: A command of the bare wheel asked for what an extra provides, and the extra its error names
#: (``{tmp}``: the test's directory; the server finds a model's format by its files).
WITHOUT_EXTRAS = [
    pytest.param("storage", ["moorage-storage", "s3://bucket/model", "{tmp}/out"],
                 "moorage-storage[s3]", id="storage-s3"),
    pytest.param("storage", ["moorage-storage", "gs://bucket/model", "{tmp}/out"],
                 "moorage-storage[gcs]", id="storage-gcs"),
    pytest.param("storage", ["moorage-storage", "https://acct.blob.core.windows.net/c/m",
                             "{tmp}/out"], "moorage-storage[azure]", id="storage-azure"),
    pytest.param("storage", ["moorage-storage", "hf://org/model", "{tmp}/out"],
                 "moorage-storage[hf]", id="storage-hf"),
    pytest.param("server", ["moorage-server", "--model_name=m", "--model_dir={tmp}/sklearn"],
                 "moorage-server[sklearn]", id="server-sklearn"),
    pytest.param("server", ["moorage-server", "--model_name=m", "--model_dir={tmp}/huggingface"],
                 "moorage-server[huggingface]", id="server-huggingface"),
    pytest.param("controller", ["moorage", "operator"], "moorage-controller[operator]",
                 id="controller-operator"),
    pytest.param("cache", ["moorage-cache", "controller", "--kubeconfig={tmp}/kubeconfig"],
                 "moorage-cache[operator]", id="cache-controller"),
]  # fmt: skip
KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "http://127.0.0.1:9"}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
users: [{name: u, user: {}}]
current-context: c
"""


@pytest.fixture(scope="module")
def bare_venv(tmp_path_factory: pytest.TempPathFactory, dist: Path) -> Callable[[str], Path]:
    """name → the python of a venv with that package's wheel alone (no extras), made once."""
    made: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in made:
            made[name] = _venv(
                tmp_path_factory.mktemp(f"bare-{name}"), dist, str(_wheel(dist, name))
            )
        return made[name]

    return get


@pytest.mark.parametrize(("name", "argv", "extra"), WITHOUT_EXTRAS)
def test_command_without_its_extra(
    bare_venv: Callable[[str], Path], tmp_path: Path, name: str, argv: list[str], extra: str
) -> None:
    """The issue's "Bad input": a non-zero exit and, last, an error line naming the extra to
    install; no traceback."""
    (tmp_path / "sklearn").mkdir()
    (tmp_path / "sklearn" / "model.joblib").write_bytes(b"never read: the runtime is missing")
    (tmp_path / "huggingface").mkdir()
    (tmp_path / "huggingface" / "config.json").write_text('{"model_type": "llama"}')
    (tmp_path / "kubeconfig").write_text(KUBECONFIG)
    python = bare_venv(name)
    command = [str(python.parent / argv[0]), *(a.format(tmp=tmp_path) for a in argv[1:])]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    output = (done.stdout + done.stderr).strip()
    assert done.returncode != 0, output
    assert "Traceback" not in output, output
    assert extra in output.splitlines()[-1], output
