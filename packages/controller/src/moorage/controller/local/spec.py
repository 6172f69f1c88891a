"""What to start: one process of a locally served InferenceService (plain data, JSON-able)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["LOOPBACK", "ProcessSpec"]

LOOPBACK = "127.0.0.1"


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

    @property
    def rest_url(self) -> str:
        return f"http://{LOOPBACK}:{self.http_port}"

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
