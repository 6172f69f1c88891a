"""`pip install packages/core` in a fresh venv pulls no web, RPC or Kubernetes framework (nor
numpy, which only its `protocol` extra brings)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "fastapi", "starlette", "uvicorn", "httpx", "aiohttp", "grpcio", "protobuf", "kopf",
    "kubernetes", "lightkube", "boto3", "requests",
}  # fmt: skip


@pytest.mark.integration
@pytest.mark.slow
def test_core_installs_without_frameworks(tmp_path: Path) -> None:
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    if uv is None:
        pytest.skip("uv is not installed (scripts/bootstrap.sh installs it)")
    venv = tmp_path / "venv"
    subprocess.run([uv, "venv", "-q", "--python", sys.executable, str(venv)], check=True)
    python = venv / "bin" / "python"
    core = ROOT / "packages" / "core"
    subprocess.run([uv, "pip", "install", "-q", "--python", str(python), str(core)], check=True)
    # Without extras: resources, errors and settings import; the inference protocol names the
    # extra that brings numpy.
    bare = subprocess.run(
        [
            str(python),
            "-c",
            "import moorage.core.errors, moorage.core.resources, moorage.core.config.storage\n"
            "try:\n    import moorage.core.protocol\nexcept ImportError as exc:\n    print(exc)",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "pip install 'moorage-core[protocol]'" in bare.stdout, bare.stdout + bare.stderr
    subprocess.run(
        [uv, "pip", "install", "-q", "--python", str(python), f"{core}[protocol]"], check=True
    )
    listed = subprocess.run(
        [uv, "pip", "freeze", "--python", str(python)], capture_output=True, text=True, check=True
    ).stdout
    installed = {line.split("==")[0].split(" @ ")[0].lower() for line in listed.splitlines()}
    assert "moorage-core" in installed
    assert installed & FORBIDDEN == set(), f"core pulled in {sorted(installed & FORBIDDEN)}"
    probe = subprocess.run(
        [str(python), "-c", "import moorage.core.protocol.rest, moorage.core.errors; print('ok')"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert probe.stdout.strip() == "ok"
