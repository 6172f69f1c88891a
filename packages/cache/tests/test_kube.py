"""The small API client's configuration, and the command line's refusals."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest

from moorage.cache._kube import CACHES, PVCS, KubeConfig
from moorage.cache._names import safe_uri


def _write(path: Path, user: str, cluster_extra: str = "") -> Path:
    path.write_text(f"""apiVersion: v1
kind: Config
current-context: c
contexts: [{{name: c, context: {{cluster: k, user: u, namespace: team}}}}]
clusters: [{{name: k, cluster: {{server: "https://10.0.0.1:6443/", {cluster_extra}}}}}]
users: [{{name: u, user: {user}}}]
""")
    return path


def test_token_file_and_ca_paths_are_relative_to_the_kubeconfig(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("s3cret\n")
    cfg = KubeConfig.from_file(
        _write(tmp_path / "kc", "{tokenFile: token}", "certificate-authority: ca.crt")
    )
    assert (cfg.server, cfg.token, cfg.namespace) == ("https://10.0.0.1:6443", "s3cret", "team")
    assert cfg.ca_file == str(tmp_path / "ca.crt")
    assert "s3cret" not in repr(cfg)


def test_a_kubeconfig_list_reads_the_first_file_that_exists(tmp_path: Path) -> None:
    path = _write(tmp_path / "kc", "{token: t}")
    cfg = KubeConfig.load(f"{tmp_path / 'missing'}{os.pathsep}{path}")
    assert cfg.token == "t"


def test_inline_certificates_and_refused_plugins(tmp_path: Path) -> None:
    data = base64.b64encode(b"PEM").decode()
    user = f"{{client-certificate-data: {data}, client-key-data: {data}}}"
    cfg = KubeConfig.from_file(_write(tmp_path / "kc", user))
    assert cfg.cert_data == cfg.key_data == b"PEM"
    with pytest.raises(ValueError, match="exec/auth-provider users are not supported"):
        KubeConfig.from_file(_write(tmp_path / "kc2", "{exec: {command: aws}}"))
    with pytest.raises(ValueError, match="cannot read kubeconfig"):
        KubeConfig.from_file(tmp_path / "missing")


def test_paths() -> None:
    assert CACHES.path(name="x", sub="status") == (
        "/apis/serving.kserve.io/v1alpha1/localmodelcaches/x/status"
    )
    assert PVCS.path(namespace="ns", name="p") == "/api/v1/namespaces/ns/persistentvolumeclaims/p"
    assert PVCS.path() == "/api/v1/persistentvolumeclaims"


def test_safe_uri_hides_credentials() -> None:
    assert safe_uri("https://u:p@host/m.bin?sig=abc") == "https://host/m.bin?<redacted>"
    assert safe_uri("s3://bucket/model") == "s3://bucket/model"


def test_agent_without_a_node_name_exits_2(tmp_path: Path) -> None:
    kubeconfig = _write(tmp_path / "kc", "{token: t}")
    env = {k: v for k, v in os.environ.items() if k != "NODE_NAME"}
    done = subprocess.run(
        [sys.executable, "-m", "moorage.cache", "agent", "--kubeconfig", str(kubeconfig)],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert "the agent needs --node-name or $NODE_NAME" in done.stderr


def test_json_log_lines_carry_the_extra_fields() -> None:
    import json
    import logging

    from moorage.cache.__main__ import _JSONFormatter

    record = logging.makeLogRecord(
        {"name": "moorage.cache.agent", "levelname": "INFO", "levelno": 20,
         "msg": "%s: downloaded", "args": ("m",), "model": "m", "bytes": 12}
    )  # fmt: skip
    line = json.loads(_JSONFormatter().format(record))
    assert line["message"] == "m: downloaded"
    assert (line["model"], line["bytes"], line["level"]) == ("m", 12, "INFO")
