"""One image per service, built for real from its Dockerfile with buildah (vfs storage, chroot
isolation) on a local Debian base (scripts/base-image.sh), from the wheels just built and an
offline wheelhouse of their dependencies; pushed to a local registry; each entrypoint
smoke-tested with ``buildah run``: ``--help``, the storage initializer fetching a model from the
local S3 server, the server answering a v2 infer on the example model (the huggingface image,
built when MOORAGE_IMAGES names it, an OpenAI completion). Sizes are checked
against the targets (server < 450 MB, storage initializer < 200 MB) and printed (README
"Images"). ../shared/TEST-INFRA.md "Building images"."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from moorage.storage.testing import SeaweedS3, free_port

from .conftest import ROOT

# builds inside the first test's setup: minutes on 2 cores, more for the huggingface image
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1800)]

BASE = "localhost/moorage-base:bookworm-py311"
STORE = ["--storage-driver", "vfs"]
MB = 1000 * 1000
#: image → (Dockerfile's package, what pip installs into it, entrypoint's --help says, size limit)
IMAGES = {
    "server": (
        "server",
        ["moorage-server[sklearn,lightgbm]", "xgboost-cpu", "moorage-storage[s3]"],
        "usage: moorage-server",
        450 * MB,
    ),
    "storage-initializer": (
        "storage", ["moorage-storage[s3,gcs,azure,hf,oci]"], "Usage: moorage-storage", 200 * MB
    ),
    "controller": ("controller", ["moorage-controller[operator]"], "usage: moorage", None),
    "cache": ("cache", ["moorage-cache[operator]"], "usage: moorage-cache", None),
    # the server Dockerfile's `huggingface` target: torch's CPU build makes it over 1 GB
    "huggingface": (
        "server",
        [
            "moorage-server[huggingface]",
            "torch==2.13.0",
            "moorage-storage[s3,gcs,azure,hf,oci]",
        ],
        "usage: moorage-server",
        None,
    ),
}  # fmt: skip
#: Dockerfile targets of images that are not their Dockerfile's default (last) stage
TARGETS = {"huggingface": "huggingface"}
#: What each image's native libraries are loaded by (they are stripped of debug info).
IMPORTS = {
    # and the storage providers of --model_config_file (TrainedModels)
    "server": "import numpy, scipy, sklearn, xgboost, lightgbm, grpc, uvloop, orjson, boto3,"
    " moorage.storage.providers.s3",
    # no numpy: moorage-core needs it only for its inference protocol (the `protocol` extra)
    "storage-initializer": "import sys, zstandard, cryptography.hazmat.bindings._rust, boto3,"
    " google.cloud.storage, azure.storage.blob, azure.storage.fileshare, azure.identity,"
    " huggingface_hub, hf_xet, yaml, pydantic_core, moorage.storage.providers.s3,"
    " moorage.storage.providers.gcs, moorage.storage.providers.azure, moorage.storage.providers.hf,"
    " moorage.storage.providers.oci, moorage.storage.providers.http;"
    " assert 'numpy' not in sys.modules, 'numpy imported';"
    " boto3.session.Session().get_available_services() == ['s3', 'signin', 'sso', 'sso-oidc',"
    " 'sts'] or sys.exit(f'botocore models: {boto3.session.Session().get_available_services()}')",
    # no numpy in these either (nothing in them holds tensors)
    "controller": "import importlib.util as u, kopf, aiohttp, yaml,"
    " moorage.controller.operator.handlers; assert not u.find_spec('numpy'), 'numpy installed'",
    "cache": "import importlib.util as u, kopf, httpx, zstandard, boto3, moorage.cache.agent;"
    " assert not u.find_spec('numpy'), 'numpy installed'",
    "huggingface": "import torch, transformers, tokenizers, safetensors, numpy, boto3,"
    " google.cloud.storage, azure.storage.blob, huggingface_hub, zstandard,"
    " moorage.server.runtimes.huggingface",
}
PROBE = "command -v gcc cc pip pip3; ls /root/.cache /wheels /src 2>/dev/null; id -u"
#: Built unless MOORAGE_IMAGES names others ("server,storage-initializer"). The huggingface
#: image (1.2 GB, over 3 minutes to build on 2 cores) only when named: MOORAGE_IMAGES=huggingface
DEFAULT = ["server", "storage-initializer", "controller", "cache"]
SELECTED = [n for n in os.environ.get("MOORAGE_IMAGES", ",".join(DEFAULT)).split(",") if n]
if unknown := set(SELECTED) - set(IMAGES):
    raise ValueError(f"MOORAGE_IMAGES names {', '.join(sorted(unknown))}: not one of {[*IMAGES]}")


def _buildah(
    *args: str, timeout: float = 900, check: bool = True
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        ["buildah", *STORE, *args], capture_output=True, text=True, timeout=timeout
    )
    if check:
        assert done.returncode == 0, (
            f"buildah {' '.join(args)}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
    return done


@pytest.fixture(scope="session")
def base_image() -> str:
    missing = [t for t in ("buildah", "podman", "debootstrap") if shutil.which(t) is None]
    if missing or os.geteuid() != 0:
        pytest.skip(
            f"image builds need root and {', '.join(missing) or 'buildah'} (scripts/system-deps.sh)"
        )
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "base-image.sh"), BASE],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return BASE


@pytest.fixture(scope="session")
def context(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A build context with dist/: our wheels and every dependency's, so that the builds need
    no index (pip inside the build runs with --no-index)."""
    ctx = tmp_path_factory.mktemp("image-context")
    wheels = ctx / "dist"
    wheels.mkdir()
    for wheel in dist.glob("*.whl"):
        shutil.copy2(wheel, wheels)
    wanted = [req for name in SELECTED for req in IMAGES[name][1]]
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "-q",
            "--disable-pip-version-check",
            "--only-binary=:all:",
            "-d",
            str(wheels),
            "--find-links",
            str(wheels),
            *wanted,
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return ctx


@pytest.fixture(scope="session")
def images(base_image: str, context: Path) -> Iterator[dict[str, dict]]:
    """Build every selected image; name → {tag, size, seconds}. Removed at the end."""
    built: dict[str, dict] = {}
    try:
        for name in SELECTED:
            package = IMAGES[name][0]
            tag = f"localhost/moorage/{name}:test-{os.getpid()}"  # runs side by side
            start = time.monotonic()
            target = ["--target", TARGETS[name]] if name in TARGETS else []
            _buildah(
                "bud",
                "--isolation",
                "chroot",
                "--layers=false",
                "-q",
                *target,
                "-f",
                str(ROOT / "packages" / package / "Dockerfile"),
                "--build-arg",
                f"BASE_IMAGE={base_image}",
                "--build-arg",
                "PIP_OPTIONS=--no-index",
                "--build-arg",
                "VERSION=0.1.0",
                "-t",
                tag,
                str(context),
            )
            seconds = time.monotonic() - start
            info = json.loads(_buildah("inspect", "--type", "image", tag).stdout)
            size = _size(tag)
            built[name] = {"tag": tag, "size": size, "seconds": seconds, "info": info}
            print(f"\nimage {name}: {size / MB:.0f} MB, built in {seconds:.0f} s")
        yield built
    finally:
        for entry in built.values():
            _buildah("rmi", "-f", entry["tag"], check=False)


def _size(tag: str) -> int:
    """The image's uncompressed size in bytes (what `buildah images` rounds to MB)."""
    done = subprocess.run(["podman", *STORE, "image", "inspect", "--format", "{{.Size}}", tag],
                          capture_output=True, text=True, check=True, timeout=60)  # fmt: skip
    return int(done.stdout.strip())


@pytest.mark.parametrize("name", SELECTED)
def test_image(images: dict[str, dict], name: str, oci_registry_server) -> None:
    entry = images[name]
    config = entry["info"]["OCIv1"]["config"]
    labels = config.get("Labels") or {}
    assert labels["org.opencontainers.image.version"] == "0.1.0"
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert labels["org.opencontainers.image.source"].startswith("https://")
    assert config["User"] == "1000:1000"
    container = _buildah("from", "-q", entry["tag"]).stdout.strip()
    try:
        help_ = _buildah(
            "run",
            "--isolation",
            "chroot",
            container,
            "--",
            *config["Entrypoint"],
            "--help",
            timeout=120,
        )
        assert IMAGES[name][2] in help_.stdout, help_.stdout
        # every native library still loads after the build stage stripped debug info
        native = _buildah(
            "run", "--isolation", "chroot", container, "--", "python3", "-c", IMPORTS[name],
            timeout=120, check=False,
        )  # fmt: skip
        assert native.returncode == 0, native.stderr[-2000:]
        # no compilers, no pip, no caches, no source tree in the final image
        probe = _buildah(
            "run", "--isolation", "chroot", container, "--", "sh", "-c", PROBE, timeout=120
        )
        assert probe.stdout.split() == ["1000"], probe.stdout
    finally:
        _buildah("rm", container, check=False)
    pushed = _buildah(
        "push",
        "--tls-verify=false",
        entry["tag"],
        f"docker://{oci_registry_server.host}/moorage/{name}:0.1.0",
        timeout=600,
    )
    assert pushed.returncode == 0
    with urllib.request.urlopen(
        f"{oci_registry_server.url}/v2/moorage/{name}/tags/list", timeout=30
    ) as r:
        assert "0.1.0" in json.load(r)["tags"]
    # what a pull transfers: the compressed layers of the pushed manifest
    request = urllib.request.Request(
        f"{oci_registry_server.url}/v2/moorage/{name}/manifests/0.1.0",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json, "
                 "application/vnd.docker.distribution.manifest.v2+json"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=30) as r:
        manifest = json.load(r)
    compressed = sum(layer["size"] for layer in manifest["layers"]) + manifest["config"]["size"]
    print(f"\nimage {name}: {entry['size'] / MB:.0f} MB, {compressed / MB:.0f} MB compressed")
    limit = IMAGES[name][3]
    if limit is not None:
        # The targets hold for the uncompressed size (what a node's disk keeps, the Python base
        # included), and so for the compressed one a pull transfers.
        assert entry["size"] < limit, (
            f"{name}: {entry['size'] / MB:.0f} MB uncompressed (target {limit / MB:.0f})"
        )


def _initializer(
    images: dict[str, dict], s3: SeaweedS3, volume: str, *args: str
) -> subprocess.CompletedProcess[str]:
    """``moorage-storage ARGS`` in the storage-initializer image, the S3 server's credentials in
    its environment and ``volume`` (``host:container``) mounted."""
    container = _buildah("from", "-q", images["storage-initializer"]["tag"]).stdout.strip()
    env = [f"--env={k}={v}" for k, v in s3.env().items()]
    try:
        return _buildah(
            "run", "--isolation", "chroot", *env, "--volume", volume, container,
            "--", "moorage-storage", *args, timeout=300, check=False,
        )  # fmt: skip
    finally:
        _buildah("rm", container, check=False)


@pytest.fixture
def s3_model(
    images: dict[str, dict], seaweedfs_server: SeaweedS3, tmp_path_factory: pytest.TempPathFactory
) -> bytes:
    if "storage-initializer" not in images:
        pytest.skip("storage-initializer image not selected")
    built = _example_model(tmp_path_factory.mktemp("iris"))
    model = (built / "model.joblib").read_bytes()
    seaweedfs_server.create_bucket("images")
    seaweedfs_server.put("images", "iris/model.joblib", model)
    return model


def _example_model(out: Path) -> Path:
    """The example model, built here: it is not shipped (examples/sklearn-iris/train.py)."""
    train = ROOT / "examples" / "sklearn-iris" / "train.py"
    subprocess.run([sys.executable, str(train), str(out)], check=True)
    return out


def _writable_dir(path: Path) -> Path:
    path.mkdir()
    path.chmod(0o777)  # the image's user (1000) writes there, as into a pod's emptyDir
    return path


def test_storage_initializer_fetches_from_s3(
    images: dict[str, dict], seaweedfs_server: SeaweedS3, s3_model: bytes, tmp_path: Path
) -> None:
    """``<src_uri> <dest_path>`` against the local S3 server; then a bad URI: non-zero, one
    clear line, no traceback."""
    work = _writable_dir(tmp_path / "work")
    done = _initializer(
        images, seaweedfs_server, f"{work}:/mnt/work", "s3://images/iris", "/mnt/work/models"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert (work / "models" / "model.joblib").read_bytes() == s3_model
    bad = _initializer(
        images, seaweedfs_server, f"{work}:/mnt/work", "s3://no-such-bucket/x", "/mnt/work/y"
    )
    assert bad.returncode != 0
    assert "no-such-bucket" in bad.stderr and "Traceback" not in bad.stderr, bad.stderr


def test_storage_initializer_into_a_pod_volume(
    images: dict[str, dict], seaweedfs_server: SeaweedS3, s3_model: bytes, tmp_path: Path
) -> None:
    """KServe's layout exactly: the emptyDir mounted at /mnt/models, ``<src_uri> /mnt/models``."""
    models = _writable_dir(tmp_path / "models")
    done = _initializer(
        images, seaweedfs_server, f"{models}:/mnt/models", "s3://images/iris", "/mnt/models"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert (models / "model.joblib").read_bytes() == s3_model


@contextlib.contextmanager
def _serving(tag: str, models: Path, name: str) -> Iterator[str]:
    """``moorage-server`` of image ``tag`` serving ``models`` (mounted read-only at /mnt/models)
    as ``name``; its base URL once the model is ready (chroot isolation shares the host's
    network: the test talks to it on 127.0.0.1)."""
    port, grpc_port = free_port(), free_port()
    container = _buildah("from", "-q", tag).stdout.strip()
    process = subprocess.Popen(
        [
            "buildah", *STORE, "run", "--isolation", "chroot",
            "--volume", f"{models}:/mnt/models:ro", container, "--",
            "moorage-server", f"--model_name={name}", "--model_dir=/mnt/models",
            "--host=127.0.0.1", f"--http_port={port}", f"--grpc_port={grpc_port}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        while True:
            assert process.poll() is None, process.stdout.read() if process.stdout else ""
            try:
                with urllib.request.urlopen(f"{base}/v2/models/{name}/ready", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the server image did not get ready in 180 s"
            time.sleep(0.5)
        yield base
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, 15)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait()
        _buildah("rm", container, check=False)


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as r:
        return json.load(r)


def _readable(models: Path) -> Path:
    for made in models.rglob("*"):
        made.chmod(0o755 if made.is_dir() else 0o644)  # readable by the image's user
    return models


def test_server_answers_v2_infer(images: dict[str, dict], tmp_path: Path) -> None:
    """The server image serves examples/sklearn-iris from /mnt/models."""
    if "server" not in images:
        pytest.skip("server image not selected")
    models = _readable(_example_model(_writable_dir(tmp_path / "models")))
    with _serving(images["server"]["tag"], models, "sklearn-iris") as base:
        tensor = {"name": "input-0", "shape": [2, 4], "datatype": "FP32",
                  "data": [6.8, 2.8, 4.8, 1.4, 6.0, 3.4, 4.5, 1.6]}  # fmt: skip
        answer = _post(f"{base}/v2/models/sklearn-iris/infer", {"inputs": [tensor]})
    assert answer["outputs"][0]["data"] == [1, 1]


def test_huggingface_server_completes(images: dict[str, dict], tmp_path: Path) -> None:
    """The huggingface image serves the tiny Llama the server's tests build (transformers on
    torch's CPU build): an OpenAI completion, greedy, repeatable, within the tokens asked."""
    if "huggingface" not in images:
        pytest.skip("huggingface image not selected (MOORAGE_IMAGES=huggingface)")
    pytest.importorskip("transformers", reason="the tiny model is built with transformers")
    sys.path.insert(0, str(ROOT / "packages" / "server" / "tests"))
    try:
        from hf_models import make_tiny_llm
    finally:
        sys.path.pop(0)
    models = _readable(make_tiny_llm(_writable_dir(tmp_path / "models")))
    with _serving(images["huggingface"]["tag"], models, "tiny") as base:
        body = {"model": "tiny", "prompt": "Hello world", "max_tokens": 8, "temperature": 0}
        first = _post(f"{base}/openai/v1/completions", body)
        again = _post(f"{base}/openai/v1/completions", body)
    assert first["choices"][0]["text"] == again["choices"][0]["text"]
    assert first["choices"][0]["text"] and 0 < first["usage"]["completion_tokens"] <= 8, first


@pytest.mark.parametrize(
    ("model_dir", "error"),
    [
        ("/mnt/models/missing", "model directory /mnt/models/missing does not exist"),
        ("foo://bucket/model", "Cannot recognize storage type for foo://bucket/model"),
    ],
    ids=["missing-path", "bad-uri"],
)
def test_server_refuses_a_missing_model(
    images: dict[str, dict], model_dir: str, error: str
) -> None:
    """A model directory that is not there, a URI of no known scheme: non-zero exit and one
    error logged, no traceback."""
    if "server" not in images:
        pytest.skip("server image not selected")
    container = _buildah("from", "-q", images["server"]["tag"]).stdout.strip()
    try:
        done = _buildah(
            "run", "--isolation", "chroot", container, "--", "moorage-server",
            "--model_name=m", f"--model_dir={model_dir}", f"--http_port={free_port()}",
            timeout=120, check=False,
        )  # fmt: skip
    finally:
        _buildah("rm", container, check=False)
    assert done.returncode != 0
    output = done.stdout + done.stderr
    assert error in output and "Traceback" not in output, output
    assert len([line for line in output.splitlines() if " ERROR " in line]) == 1, output
