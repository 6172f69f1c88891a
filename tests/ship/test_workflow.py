"""The CI workflow (.github/workflows/ci.yml) read as data: the matrix is tox.ini's env list,
every package with a Dockerfile has its images published for its tag (each a stage of that
Dockerfile, together exactly the chart's images), the chart is packaged and pushed for a
``chart-v`` tag, nothing is pushed from a fork; and the release job's tag check, run here with
bash, accepts the versions in the tree and refuses others. No network."""

from __future__ import annotations

import configparser
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import PACKAGES, ROOT
from .test_dockerfiles import parse

WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"


@pytest.fixture(scope="module")
def workflow() -> dict[str, Any]:
    return yaml.safe_load(WORKFLOW.read_text())


def _tag_step(workflow: dict[str, Any]) -> dict[str, Any]:
    return next(s for s in workflow["jobs"]["release"]["steps"] if s.get("id") == "tag")


def _images(workflow: dict[str, Any]) -> list[dict[str, str]]:
    return json.loads(_tag_step(workflow)["env"]["IMAGES"])


def test_matrix_is_tox_env_list(workflow: dict[str, Any]) -> None:
    tox = configparser.ConfigParser()
    tox.read(ROOT / "tox.ini")
    env_list = [e.strip() for e in tox["tox"]["env_list"].split(",")]
    matrix = workflow["jobs"]["tox"]["strategy"]["matrix"]
    assert matrix["python"] == ["3.11", "3.12", "3.13"]
    # images run as their own job (root, one Python)
    assert matrix["env"] == [e for e in env_list if e != "images"]
    assert "tox -e images" in json.dumps(workflow["jobs"]["images"]["steps"])


def test_every_image_published(workflow: dict[str, Any]) -> None:
    images = _images(workflow)
    with_dockerfile = {p for p in PACKAGES if (ROOT / "packages" / p / "Dockerfile").is_file()}
    assert {i["package"] for i in images} == with_dockerfile
    for entry in images:
        stages = {s.name for s in parse(ROOT / "packages" / entry["package"] / "Dockerfile")}
        assert entry["target"] == "" or entry["target"] in stages, entry
    assert {(i["image"], i["suffix"]) for i in images} >= {("huggingfaceserver", "-vllm")}
    # exactly the images the chart installs (the vllm variant is a tag of huggingfaceserver)
    values = yaml.safe_load((ROOT / "charts" / "moorage" / "values.yaml").read_text())
    chart = {ref.removeprefix("moorage/") for ref in values["global"]["images"].values()}
    assert {i["image"] for i in images} == chart
    job = workflow["jobs"]["publish-images"]
    assert job["needs"] == "release"
    assert job["strategy"]["matrix"]["include"] == "${{ fromJSON(needs.release.outputs.images) }}"
    build = json.dumps(job["steps"])
    assert "$REGISTRY/moorage/${{ matrix.image }}:$VERSION${{ matrix.suffix }}" in build
    assert "buildah push" in build and "--target" in build


def test_pypi_and_chart_published(workflow: dict[str, Any]) -> None:
    jobs = workflow["jobs"]
    release = jobs["release"]
    assert "!github.event.repository.fork" in release["if"]
    assert "startsWith(github.ref, 'refs/tags/')" in release["if"]
    assert set(release["needs"]) == {"tox", "images"}
    assert jobs["pypi"]["needs"] == "release"
    assert any("pypa/gh-action-pypi-publish" in s.get("uses", "") for s in jobs["pypi"]["steps"])
    chart = jobs["publish-chart"]
    assert chart["needs"] == "release" and "'chart'" in chart["if"]
    run = "\n".join(s.get("run", "") for s in chart["steps"])
    assert "helm package charts/moorage" in run
    assert 'helm push "out/moorage-${{ needs.release.outputs.version }}.tgz"' in run
    assert '"oci://$REGISTRY/charts"' in run
    for job in (jobs["publish-images"], chart):
        assert "secrets.REGISTRY_TOKEN" in json.dumps(job["env"])  # no secret: skipped


def _run_tag_check(workflow: dict[str, Any], tag: str, tmp_path: Path) -> tuple[int, dict]:
    if shutil.which("jq") is None:
        pytest.skip("jq is not installed")
    step = _tag_step(workflow)
    output = tmp_path / f"output-{tag}"
    output.write_text("")
    env = {**os.environ, **step["env"], "GITHUB_REF_NAME": tag, "GITHUB_OUTPUT": str(output)}
    done = subprocess.run(
        ["bash", "-e", "-c", step["run"]], cwd=ROOT, env=env, capture_output=True, timeout=30
    )
    lines = output.read_text().splitlines()
    return done.returncode, dict(line.split("=", 1) for line in lines)


def _version(package: str) -> str:
    text = (ROOT / "packages" / package / "src" / "moorage" / package / "_version.py").read_text()
    found = re.search(r'__version__ = "([^"]+)"', text)
    assert found
    return found.group(1)


def test_tag_check(workflow: dict[str, Any], tmp_path: Path) -> None:
    version = _version("server")
    rc, out = _run_tag_check(workflow, f"server-v{version}", tmp_path)
    assert rc == 0 and out["name"] == "server" and out["version"] == version
    assert [(i["image"], i["target"]) for i in json.loads(out["images"])] == [
        ("server", "server"), ("huggingfaceserver", "huggingface"), ("huggingfaceserver", "vllm")
    ]  # fmt: skip
    rc, out = _run_tag_check(workflow, f"core-v{_version('core')}", tmp_path)
    assert rc == 0 and json.loads(out["images"]) == []
    chart = yaml.safe_load((ROOT / "charts" / "moorage" / "Chart.yaml").read_text())["version"]
    rc, out = _run_tag_check(workflow, f"chart-v{chart}", tmp_path)
    assert rc == 0 and out["name"] == "chart" and json.loads(out["images"]) == []
    # a tag that does not match the tree publishes nothing
    assert _run_tag_check(workflow, "server-v9.9.9", tmp_path)[0] != 0
    assert _run_tag_check(workflow, "chart-v9.9.9", tmp_path)[0] != 0
