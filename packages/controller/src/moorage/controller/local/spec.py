"""What to start: one process of a locally served InferenceService (plain data, JSON-able)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["LOOPBACK", "ProcessSpec", "connect_host"]

LOOPBACK = "127.0.0.1"
_WILDCARDS = {"0.0.0.0": LOOPBACK, "::": "::1", "": LOOPBACK}


def connect_host(host: str) -> str:
    """The address to reach a server bound to ``host`` from this machine (URL form: IPv6 in
    brackets). A wildcard bind is reached over loopback."""
    address = _WILDCARDS.get(host, host)
    return f"[{address}]" if ":" in address else address


@dataclass(frozen=True)
class ProcessSpec:
    """One process to start: its command line, extra environment and where it listens."""

    component: str
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    http_port: int
    grpc_port: int | None
    model_name: str
    warnings: list[str] = field(default_factory=list)
    #: the address the process binds (its ``--host``)
    host: str = LOOPBACK

    @property
    def rest_url(self) -> str:
        return f"http://{connect_host(self.host)}:{self.http_port}"

    @property
    def grpc_address(self) -> str | None:
        return f"{connect_host(self.host)}:{self.grpc_port}" if self.grpc_port else None

    @property
    def ready_url(self) -> str:
        return f"{self.rest_url}/v2/health/ready"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["cwd"] = str(self.cwd)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ProcessSpec:
        return cls(**{**data, "cwd": Path(data["cwd"])})
