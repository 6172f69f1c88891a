"""The local backend of ``moorage run``: the InferenceService as processes on this machine.

``plan`` (pure) turns a workload into command lines, ``models`` fetches the model into the
cache, ``process`` supervises one server, ``runner`` puts it together, ``plans`` remembers a
successful plan for the next run, ``banner`` prints where to send requests. The model server is
started as ``python -m moorage.server`` and never imported.

Names are imported on first use: the warm path of ``moorage run`` must not import the resource
models (``plan`` needs them; ``runner``, ``process`` and ``plans`` do not).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from moorage.controller.local.banner import Banner, fetch_metadata, sample_inputs
    from moorage.controller.local.errors import (
        LocalRunError,
        PortInUse,
        ServerCrashed,
        ServerStartTimeout,
        UnsupportedLocally,
    )
    from moorage.controller.local.models import FetchedModel, cache_dir_for, fetch_model
    from moorage.controller.local.plan import plan_processes, set_flag
    from moorage.controller.local.plans import load_plan, plan_key, save_plan
    from moorage.controller.local.ports import check_ports_free, free_port, port_is_free
    from moorage.controller.local.process import ManagedProcess
    from moorage.controller.local.runner import (
        Prepared,
        RunOptions,
        prepare,
        replay,
        run_local,
        serve,
    )
    from moorage.controller.local.spec import ProcessSpec

_EXPORTS = {
    "Banner": "banner",
    "fetch_metadata": "banner",
    "sample_inputs": "banner",
    "LocalRunError": "errors",
    "PortInUse": "errors",
    "ServerCrashed": "errors",
    "ServerStartTimeout": "errors",
    "UnsupportedLocally": "errors",
    "FetchedModel": "models",
    "cache_dir_for": "models",
    "fetch_model": "models",
    "plan_processes": "plan",
    "set_flag": "plan",
    "load_plan": "plans",
    "plan_key": "plans",
    "save_plan": "plans",
    "check_ports_free": "ports",
    "free_port": "ports",
    "port_is_free": "ports",
    "ManagedProcess": "process",
    "Prepared": "runner",
    "RunOptions": "runner",
    "prepare": "runner",
    "replay": "runner",
    "run_local": "runner",
    "serve": "runner",
    "ProcessSpec": "spec",
}

__all__ = [
    "Banner",
    "FetchedModel",
    "LocalRunError",
    "ManagedProcess",
    "PortInUse",
    "Prepared",
    "ProcessSpec",
    "RunOptions",
    "ServerCrashed",
    "ServerStartTimeout",
    "UnsupportedLocally",
    "cache_dir_for",
    "check_ports_free",
    "fetch_metadata",
    "fetch_model",
    "free_port",
    "load_plan",
    "plan_key",
    "plan_processes",
    "port_is_free",
    "prepare",
    "replay",
    "run_local",
    "sample_inputs",
    "save_plan",
    "serve",
    "set_flag",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
