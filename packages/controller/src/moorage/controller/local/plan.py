"""Turn a workload into the processes that serve it on this machine. Pure: nothing is started.

The predictor runs the runtime's ``kserve-container`` command line as the controller renders it
(:func:`moorage.controller.arguments.predictor_container`), adapted to a laptop:

* ``moorage-server`` (the command of moorage's runtimes) becomes ``<this python> -m
  moorage.server``, so the server comes from the same environment as ``moorage``; other commands
  run from ``PATH`` as given (``python``/``python3`` mean this interpreter);
* ``/mnt/models`` in args and env values becomes the local model directory;
* a predictor ``batcher`` becomes moorage-server's batcher flags, as on a cluster
  (:func:`moorage.controller.agent.batcher_flags`);
* ``--http_port`` / ``--grpc_port`` are set (replaced or appended) to the chosen ports, and
  ``--host`` to the address to bind (127.0.0.1 unless ``moorage run --host`` says otherwise)
  where the command is moorage-server or a transformer (KServe's parser ignores flags it does
  not know; the server's own default, KServe's 0.0.0.0, is for clusters);
* env entries with literal values are passed; ``valueFrom`` entries (Secrets, ConfigMaps, the
  downward API) cannot be resolved off-cluster and are skipped with a warning.

With a transformer, the transformer gets the public ports and ``--predictor_host
127.0.0.1:<predictor port>``, and the predictor listens on private ports of 127.0.0.1 whatever
``--host`` is. Working directory of
every process is the directory of the InferenceService's YAML, so relative paths in commands work.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from moorage.controller.agent import batcher_flags
from moorage.controller.arguments import (
    MODEL_MOUNT_PATH,
    predictor_container,
    transformer_container,
)
from moorage.controller.local.errors import UnsupportedLocally
from moorage.controller.local.ports import free_port
from moorage.controller.local.spec import LOOPBACK, ProcessSpec
from moorage.controller.runtime_selection import (
    AnyRuntime,
    PredictorModel,
    predictor_model,
    supports,
)
from moorage.controller.workload import Workload

__all__ = ["LOOPBACK", "ProcessSpec", "plan_processes", "set_flag"]

_SERVER_COMMANDS = {"moorage-server"}
_PYTHON_COMMANDS = {"python", "python3", f"python{sys.version_info[0]}.{sys.version_info[1]}"}
_MOUNT = re.compile(r"(^|=)" + re.escape(MODEL_MOUNT_PATH) + r"(?=/|$)")


def set_flag(args: list[str], flag: str, value: str) -> list[str]:
    """``args`` with ``flag`` set to ``value``: replaced where given (both forms), else added."""
    out: list[str] = []
    found = False
    skip = False
    for i, arg in enumerate(args):
        if skip:
            skip = False
            continue
        if arg == flag:
            found = True
            out += [flag, value]
            skip = i + 1 < len(args)
        elif arg.startswith(flag + "="):
            found = True
            out.append(f"{flag}={value}")
        else:
            out.append(arg)
    return out if found else [*out, f"{flag}={value}"]


def _flag_value(args: list[str], flag: str) -> str | None:
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def _mount(value: str, model_dir: Path | None) -> str:
    if model_dir is None:
        return value
    return _MOUNT.sub(lambda m: m.group(1) + str(model_dir), value)


def _command(container: Mapping[str, Any], *, what: str, python: str) -> list[str]:
    command = [*container.get("command", []), *container.get("args", [])]
    args_only = not container.get("command")
    image = container.get("image") or "(no image)"
    if args_only and not (command and command[0] in _SERVER_COMMANDS):
        if "moorage" in image and "server" in image:
            command = ["moorage-server", *command]
        else:
            raise UnsupportedLocally(
                f"the {what} container runs image {image} without a command; moorage run starts "
                "processes, not images. Give the container a `command:` that runs on this "
                "machine (e.g. [python, transformer.py]) or use a moorage runtime",
                image=image,
            )
    head = command[0]
    if os.path.basename(head) in _SERVER_COMMANDS:
        return [python, "-m", "moorage.server", *command[1:]]
    if head in _PYTHON_COMMANDS:
        return [python, *command[1:]]
    return command


def _is_moorage(container: Mapping[str, Any]) -> bool:
    """Whether a runtime container runs moorage-server (which ``moorage run`` starts itself)."""
    command = [*container.get("command", []), *container.get("args", [])][:1]
    image = str(container.get("image") or "")
    return bool(command and os.path.basename(command[0]) in _SERVER_COMMANDS) or (
        "moorage" in image and "server" in image
    )


def _local_alternatives(model: PredictorModel, runtimes: list[AnyRuntime]) -> list[str]:
    """Names of the runtimes given that moorage-server runs and that serve ``model``."""
    names: list[str] = []
    for runtime in runtimes:
        container = runtime.spec.container()
        if (
            container is not None
            and _is_moorage(container.model_dump(by_alias=True, exclude_none=True))
            and not runtime.spec.disabled
            and supports(runtime.spec, model)
            and runtime.name not in names
        ):
            names.append(runtime.name)
    return names


def _not_local(
    workload: Workload, container: Mapping[str, Any], missing: str | None
) -> UnsupportedLocally:
    """The one-line refusal for a runtime whose server is an image: which runtime, which image,
    what to do instead."""
    runtime = workload.runtime
    assert runtime is not None
    image = container.get("image") or "(no image)"
    model = predictor_model(workload.isvc)
    assert model is not None
    alternatives = _local_alternatives(model, workload.runtimes)
    if alternatives:
        todo = (
            f"to serve it here, pin a runtime moorage-server runs ({model.field}.runtime: "
            f"{alternatives[0]}); or deploy it to a cluster (moorage render -f ... | kubectl "
            "apply -f -)"
        )
    else:
        todo = (
            f"moorage-server does not serve {model.describe()} with protocol {model.protocol}: "
            "deploy it to a cluster (moorage render -f ... | kubectl apply -f -)"
        )
    why = f"its command {missing!r} is not found on this machine" if missing else "no command"
    return UnsupportedLocally(
        f"runtime {runtime.name} runs image {image}, which moorage run cannot start ({why}; "
        f"moorage run starts processes, this server needs a container engine); {todo}",
        runtime=runtime.name,
        image=image,
    )


def _check_runnable(argv: list[str], *, cwd: Path, what: str, python: str) -> None:
    head = argv[0]
    if head == python:
        return
    if os.sep in head:
        path = Path(head) if Path(head).is_absolute() else cwd / head
        if path.exists():
            return
    elif shutil.which(head):
        return
    raise UnsupportedLocally(
        f"the {what} command {head!r} is not found on this machine (PATH, or relative to {cwd})",
        command=head,
    )


def _env(
    container: Mapping[str, Any], model_dir: Path | None, what: str
) -> tuple[dict[str, str], list[str]]:
    env: dict[str, str] = {}
    warnings: list[str] = []
    for entry in container.get("env", []):
        if "value" in entry:
            env[entry["name"]] = _mount(str(entry["value"]), model_dir)
        elif "valueFrom" in entry:
            warnings.append(
                f"{what}: env {entry['name']} comes from the cluster (valueFrom); not set locally"
            )
        else:
            env[entry["name"]] = ""
    if container.get("envFrom"):
        warnings.append(f"{what}: envFrom (Secrets/ConfigMaps) is not available locally")
    return env, warnings


def plan_processes(
    workload: Workload,
    *,
    model_dir: Path | None,
    http_port: int,
    grpc_port: int,
    host: str = LOOPBACK,
    python: str = sys.executable,
    pick_port: Callable[[], int] = free_port,
) -> list[ProcessSpec]:
    """The processes that serve ``workload``, in start order (predictor first)."""
    isvc = workload.isvc
    cwd = workload.base_dir
    has_transformer = isvc.spec.transformer is not None
    if workload.runtime is None:
        raise UnsupportedLocally(
            "the predictor runs custom containers (images); moorage run serves predictors that "
            "use a ServingRuntime: set spec.predictor.model",
        )
    container = predictor_container(isvc, workload.runtime)
    try:
        command = _command(container, what="predictor", python=python)
        if not _is_moorage(container):
            _check_runnable(command, cwd=cwd, what="predictor", python=python)
    except UnsupportedLocally as exc:
        raise _not_local(workload, container, exc.details.get("command")) from None
    argv = [_mount(a, model_dir) for a in command]
    p_http = pick_port() if has_transformer else http_port
    p_grpc = pick_port() if has_transformer else grpc_port
    argv = set_flag(argv, "--http_port", str(p_http))
    argv = set_flag(argv, "--grpc_port", str(p_grpc))
    p_host = LOOPBACK if has_transformer else host
    if argv[:3] == [python, "-m", "moorage.server"]:
        argv = set_flag(argv, "--host", p_host)
        if model_dir is not None and _flag_value(argv, "--model_dir") is None:
            # KServe's huggingfaceserver args give no --model_dir (its default is /mnt/models).
            argv = set_flag(argv, "--model_dir", str(model_dir))
        if isvc.spec.predictor.batcher is not None:
            argv = [*argv, *batcher_flags(isvc.spec.predictor.batcher, workload.config)]
    _check_runnable(argv, cwd=cwd, what="predictor", python=python)
    env, warnings = _env(container, model_dir, "predictor")
    model_name = _flag_value(argv, "--model_name") or isvc.name
    specs = [
        ProcessSpec(
            component="predictor",
            argv=argv,
            env=env,
            cwd=cwd,
            http_port=p_http,
            grpc_port=p_grpc,
            model_name=model_name,
            warnings=warnings,
            host=p_host,
        )
    ]
    if has_transformer:
        t_container = transformer_container(isvc)
        t_argv = _command(t_container, what="transformer", python=python)
        t_argv = set_flag(t_argv, "--predictor_host", f"{LOOPBACK}:{p_http}")
        t_argv = set_flag(t_argv, "--http_port", str(http_port))
        t_argv = set_flag(t_argv, "--grpc_port", str(grpc_port))
        t_argv = set_flag(t_argv, "--host", host)
        _check_runnable(t_argv, cwd=cwd, what="transformer", python=python)
        t_env, t_warnings = _env(t_container, None, "transformer")
        specs.append(
            ProcessSpec(
                component="transformer",
                argv=t_argv,
                env=t_env,
                cwd=cwd,
                http_port=http_port,
                grpc_port=grpc_port,
                model_name=_flag_value(t_argv, "--model_name") or isvc.name,
                warnings=t_warnings,
                host=host,
            )
        )
    return specs
