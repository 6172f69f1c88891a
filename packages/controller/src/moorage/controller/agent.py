"""A component's ``logger`` and ``batcher``, rendered as KServe v0.14's webhook would, or better
where the server is moorage's.

* moorage-server logs and batches in-process: a component whose ``kserve-container`` runs
  moorage-server gets the logger as server flags (``--logger_url``, ``--logger_mode``, ...) and
  the batcher as ``--enable_batcher=true --max_batchsize=N --max_latency=MS`` (and
  ``--batcher_timeout=S`` when the spec sets ``timeout``; size and latency default from the
  ``batcher`` config, as KServe's do), and no sidecar: one hop less per request.
* Other servers get KServe's ``agent`` sidecar: image ``agent.image``, port 9081
  (``agent-port``), the logger flags (``--log-url``, ``--source-uri``, ``--log-mode``,
  ``--inference-service``, ``--namespace``, ``--endpoint``, ``--component``,
  ``--metadata-headers``) and/or the batcher flags (``--enable-batcher``, ``--max-batchsize``,
  ``--max-latency``, defaults from the ``batcher`` config), ``--component-port`` the model
  container's port, the model container's readiness probe in ``SERVING_READINESS_PROBE``; the
  component's Service then targets 9081.

Either way the logger's TLS settings (``logger.caBundle``/``caCertFile``/``tlsSkipVerify``)
apply: the CA bundle ConfigMap is mounted (optional) as ``agent-ca-bundle`` at
``/etc/tls/logger`` in the container that sends, and the pod carries KServe's internal
``logger``/``batcher`` annotations.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from moorage.core.config.configmap import InferenceServiceConfig
from moorage.core.resources import Batcher, LoggerSpec

__all__ = [
    "AGENT_CONTAINER",
    "AGENT_PORT",
    "Sidecar",
    "apply_logger_and_batcher",
    "apply_model_config",
    "batcher_flags",
]

AGENT_CONTAINER = "agent"
AGENT_PORT = 9081
CA_VOLUME = "agent-ca-bundle"
CA_MOUNT = "/etc/tls/logger"
_INTERNAL = "internal.serving.kserve.io"
_SERVER_COMMANDS = {"moorage-server"}
MODEL_DIR = "/mnt/models"
MODEL_CONFIG_DIR = "/mnt/configs"
MODEL_CONFIG_KEY = "models.json"
MODEL_CONFIG_VOLUME = "model-config"
MODEL_DIR_VOLUME = "model-dir"


@dataclass
class Sidecar:
    """What :func:`apply_logger_and_batcher` did: pod annotations, and the port the component's
    Service must target (the agent's, or None to keep the model container's)."""

    annotations: dict[str, str] = field(default_factory=dict)
    service_port: int | None = None


def runs_moorage_server(container: Mapping[str, Any]) -> bool:
    """Whether a model container runs moorage-server (which logs in-process)."""
    command = [*container.get("command", []), *container.get("args", [])][:1]
    if command and os.path.basename(str(command[0])) in _SERVER_COMMANDS:
        return True
    image = str(container.get("image") or "")
    return not container.get("command") and "moorage" in image and "server" in image


def _port(container: Mapping[str, Any]) -> int:
    ports = container.get("ports") or []
    return int(ports[0]["containerPort"]) if ports else 8080


def _tls(config: InferenceServiceConfig, *, agent: bool) -> list[str]:
    """The logger's TLS flags, in the agent's spelling or moorage-server's."""
    logger = config.logger
    ca_flag, skip_flag = (
        ("--logger-ca-cert-file", "--logger-tls-skip-verify")
        if agent
        else ("--logger_ca_cert_file", "--logger_tls_skip_verify")
    )
    args: list[str] = []
    if logger.ca_bundle:
        args.append(f"{ca_flag}={logger.ca_cert_file or 'service-ca.crt'}")
    args.append(f"{skip_flag}={str(logger.tls_skip_verify).lower()}")
    return args


def _mount_ca(
    pod: dict[str, Any], container: dict[str, Any], config: InferenceServiceConfig
) -> None:
    bundle = config.logger.ca_bundle
    if not bundle:
        return
    volume = {"name": CA_VOLUME, "configMap": {"name": bundle, "optional": True}}
    if all(v.get("name") != CA_VOLUME for v in pod.get("volumes", [])):
        pod["volumes"] = [*pod.get("volumes", []), volume]
    mount = {"name": CA_VOLUME, "mountPath": CA_MOUNT, "readOnly": True}
    container["volumeMounts"] = [*container.get("volumeMounts", []), mount]


def _annotations(
    logger: LoggerSpec | None, batcher: Batcher | None, sink: str, config: InferenceServiceConfig
) -> dict[str, str]:
    out: dict[str, str] = {}
    if logger is not None:
        out[f"{_INTERNAL}/logger"] = "true"
        out[f"{_INTERNAL}/logger-sink-url"] = sink
        out[f"{_INTERNAL}/logger-mode"] = logger.mode or "all"
        if logger.metadata_headers:
            out[f"{_INTERNAL}/logger-metadata-headers"] = ",".join(logger.metadata_headers)
    if batcher is not None:
        out[f"{_INTERNAL}/batcher"] = "true"
        out[f"{_INTERNAL}/batcher-max-batchsize"] = str(
            batcher.max_batch_size or config.batcher.max_batch_size
        )
        out[f"{_INTERNAL}/batcher-max-latency"] = str(
            batcher.max_latency or config.batcher.max_latency
        )
    return out


def batcher_flags(batcher: Batcher, config: InferenceServiceConfig) -> list[str]:
    """moorage-server's flags for a component's ``batcher`` (defaults from ``config.batcher``)."""
    flags = [
        "--enable_batcher=true",
        f"--max_batchsize={batcher.max_batch_size or config.batcher.max_batch_size}",
        f"--max_latency={batcher.max_latency or config.batcher.max_latency}",
    ]
    if batcher.timeout:
        flags.append(f"--batcher_timeout={batcher.timeout}")
    return flags


def apply_logger_and_batcher(
    pod: dict[str, Any],
    main: dict[str, Any],
    *,
    logger: LoggerSpec | None,
    batcher: Batcher | None,
    isvc_name: str,
    namespace: str,
    component: str,
    config: InferenceServiceConfig,
) -> Sidecar:
    """Render ``logger``/``batcher`` into ``pod`` (see the module docstring); ``main`` is the
    component's model container, inside ``pod``."""
    if logger is None and batcher is None:
        return Sidecar()
    sink = (logger.url if logger is not None else None) or config.logger.default_url
    annotations = _annotations(logger, batcher, sink, config)
    mode = (logger.mode if logger is not None else None) or "all"
    headers = ",".join(logger.metadata_headers or []) if logger is not None else ""
    if runs_moorage_server(main):
        flags: list[str] = []
        if logger is not None:
            flags += [
                f"--logger_url={sink}",
                f"--logger_mode={mode}",
                f"--logger_inference_service={isvc_name}",
                f"--logger_namespace={namespace}",
                f"--logger_component={component}",
                *([f"--logger_metadata_headers={headers}"] if headers else []),
                *_tls(config, agent=False),
            ]
            _mount_ca(pod, main, config)
        if batcher is not None:
            flags += batcher_flags(batcher, config)
        main["args"] = [*main.get("args", []), *flags]
        return Sidecar(annotations=annotations)
    args: list[str] = []
    if logger is not None:
        args += [
            "--enable-logger",
            "--log-url", sink,
            "--source-uri", f"{isvc_name}-{component}",
            "--log-mode", mode,
            "--inference-service", isvc_name,
            "--namespace", namespace,
            "--endpoint", "",
            "--component", component,
        ]  # fmt: skip
        if headers:
            args += ["--metadata-headers", headers]
        args += _tls(config, agent=True)
    if batcher is not None:
        args += [
            "--enable-batcher",
            "--max-batchsize", annotations[f"{_INTERNAL}/batcher-max-batchsize"],
            "--max-latency", annotations[f"{_INTERNAL}/batcher-max-latency"],
        ]  # fmt: skip
    sizes = config.batcher if batcher is not None else config.logger
    agent = _agent_container(main, args, sizes, config)
    if logger is not None:
        _mount_ca(pod, agent, config)
    pod["containers"] = [*pod["containers"], agent]
    annotations[f"{_INTERNAL}/agent"] = "true"
    return Sidecar(annotations=annotations, service_port=AGENT_PORT)


def _agent_container(
    main: Mapping[str, Any], args: list[str], sizes: Any, config: InferenceServiceConfig
) -> dict[str, Any]:
    """KServe's ``agent`` container with ``args`` (``--component-port`` is added)."""
    args = [*args, "--component-port", str(_port(main))]
    return {
        "name": AGENT_CONTAINER,
        "image": config.agent.image,
        "args": args,
        "ports": [{"name": "agent-port", "containerPort": AGENT_PORT, "protocol": "TCP"}],
        "env": [
            {
                "name": "SERVING_READINESS_PROBE",
                "value": json.dumps(main.get("readinessProbe") or {}, separators=(",", ":")),
            }
        ],
        "resources": {
            "requests": {"cpu": sizes.cpu_request, "memory": sizes.memory_request},
            "limits": {"cpu": sizes.cpu_limit, "memory": sizes.memory_limit},
        },
        "readinessProbe": {
            "httpGet": {
                "path": "/",
                "port": AGENT_PORT,
                "httpHeaders": [{"name": "K-Network-Probe", "value": "queue"}],
            },
            "timeoutSeconds": 1,
            "periodSeconds": 10,
            "successThreshold": 1,
            "failureThreshold": 3,
        },
        "imagePullPolicy": "IfNotPresent",
        "terminationMessagePolicy": "File",
    }


def apply_model_config(
    pod: dict[str, Any],
    main: dict[str, Any],
    *,
    configmap: str,
    config: InferenceServiceConfig,
) -> dict[str, str]:
    """Serve the TrainedModels of a multi-model predictor; returns pod annotations.

    The ``model-dir`` emptyDir is mounted at ``/mnt/models`` in the model container. moorage-server
    reads the model config itself: the ``configmap`` (``modelconfig-<isvc>-0``) is mounted at
    ``/mnt/configs`` in it and it gets ``--model_config_file=/mnt/configs/models.json``. Other
    servers get KServe's puller: the ``agent`` container (the one the logger/batcher added, or a
    new one) with ``--enable-puller --config-dir /mnt/configs --model-dir /mnt/models`` first,
    both volumes mounted in it, and KServe's internal ``agent``/``configVolumeName``/
    ``configMountPath``/``modelDir`` annotations.
    """
    config_volume = {"name": MODEL_CONFIG_VOLUME, "configMap": {"name": configmap}}
    dir_volume = {"name": MODEL_DIR_VOLUME, "emptyDir": {}}
    for volume in (dir_volume, config_volume):
        if all(v.get("name") != volume["name"] for v in pod.get("volumes", [])):
            pod["volumes"] = [*pod.get("volumes", []), volume]
    dir_mount = {"name": MODEL_DIR_VOLUME, "mountPath": MODEL_DIR}
    config_mount = {"name": MODEL_CONFIG_VOLUME, "mountPath": MODEL_CONFIG_DIR}
    main["volumeMounts"] = [
        *(m for m in main.get("volumeMounts", []) if m.get("mountPath") != MODEL_DIR),
        dir_mount,
    ]
    if runs_moorage_server(main):
        main["volumeMounts"] = [*main["volumeMounts"], {**config_mount, "readOnly": True}]
        flag = f"--model_config_file={MODEL_CONFIG_DIR}/{MODEL_CONFIG_KEY}"
        main["args"] = [*main.get("args", []), flag]
        return {}
    puller = ["--enable-puller", "--config-dir", MODEL_CONFIG_DIR, "--model-dir", MODEL_DIR]
    agent = next((c for c in pod["containers"] if c.get("name") == AGENT_CONTAINER), None)
    if agent is None:
        agent = _agent_container(main, puller, config.agent, config)
        pod["containers"] = [*pod["containers"], agent]
    else:
        agent["args"] = [*puller, *agent.get("args", [])]
    agent["volumeMounts"] = [*agent.get("volumeMounts", []), dir_mount, config_mount]
    return {
        f"{_INTERNAL}/agent": "true",
        f"{_INTERNAL}/configVolumeName": configmap,
        f"{_INTERNAL}/configMountPath": MODEL_CONFIG_DIR,
        f"{_INTERNAL}/modelDir": MODEL_DIR,
    }
