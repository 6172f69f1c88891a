"""The local backend of ``moorage run``: the InferenceService as processes on this machine.

``plan`` (pure) turns a workload into command lines, ``models`` fetches the model into the
cache, ``process`` supervises one server, ``runner`` puts it together, ``banner`` prints where
to send requests. The model server is started as ``python -m moorage.server`` and never imported.
"""

from moorage.controller.local.banner import Banner, fetch_metadata, sample_inputs
from moorage.controller.local.errors import (
    LocalRunError,
    PortInUse,
    ServerCrashed,
    ServerStartTimeout,
    UnsupportedLocally,
)
from moorage.controller.local.models import FetchedModel, cache_dir_for, fetch_model
from moorage.controller.local.plan import ProcessSpec, plan_processes, set_flag
from moorage.controller.local.ports import check_ports_free, free_port, port_is_free
from moorage.controller.local.process import ManagedProcess
from moorage.controller.local.runner import RunOptions, run_local

__all__ = [
    "Banner",
    "FetchedModel",
    "LocalRunError",
    "ManagedProcess",
    "PortInUse",
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
    "plan_processes",
    "port_is_free",
    "run_local",
    "sample_inputs",
    "set_flag",
]
