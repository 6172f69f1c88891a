"""The node agent's decisions as pure functions: what to start, stop and remove, whether a model
fits, and the status patch to write.

The agent (:mod:`moorage.cache.agent`) keeps one :class:`ModelRecord` per model its
LocalModelNode lists and calls :func:`decide` whenever the list, a download or the clock changes.
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from dataclasses import dataclass, field
from typing import Any, Literal

from moorage.cache._quantity import format_bytes

__all__ = ["Actions", "ModelRecord", "decide", "space_problem", "status_patch"]

ModelState = Literal[
    "ModelDownloadPending", "ModelDownloading", "ModelDownloaded", "ModelDownloadError"
]


@dataclass
class ModelRecord:
    """What the agent knows of one listed model; written to the LocalModelNode's status."""

    name: str
    uri: str
    state: ModelState = "ModelDownloadPending"
    message: str = ""
    done: int = 0
    total: int = 0
    attempts: int = 0
    #: bytes the last download moved over the network (less than ``total`` when it resumed).
    fetched: int | None = None
    #: when it last failed (agent's monotonic clock), for the retry of failed models.
    failed_at: float | None = None
    #: fetch again even if a complete download is on disk (it failed verification).
    force: bool = False

    def details(self) -> dict[str, Any]:
        """The moorage extension ``status.modelDetails[<name>]``."""
        data: dict[str, Any] = {
            "message": self.message,
            "bytesDownloaded": self.done,
            "bytesTotal": self.total,
            "attempts": self.attempts,
        }
        if self.fetched is not None:
            data["bytesFetched"] = self.fetched
        return data


@dataclass
class Actions:
    """What the agent does next."""

    #: downloads to start (the model is listed and neither running, done nor waiting to retry).
    start: list[str] = field(default_factory=list)
    #: running downloads to stop (the model is no longer listed, or its URI changed).
    stop: list[str] = field(default_factory=list)
    #: models whose files and records go (no longer listed, or listed with another URI).
    remove: list[str] = field(default_factory=list)


def decide(
    listed: Mapping[str, str],
    records: Mapping[str, ModelRecord],
    running: Set[str],
    on_disk: Set[str],
    *,
    now: float,
    retry_failed_after: float,
) -> Actions:
    """``listed``: model name -> source URI from the LocalModelNode's spec."""
    actions = Actions()
    for name in sorted(set(records) | set(on_disk) | set(running)):
        record = records.get(name)
        if name not in listed or (record is not None and record.uri != listed[name]):
            if name in running:
                actions.stop.append(name)
            actions.remove.append(name)
    for name, uri in sorted(listed.items()):
        record = records.get(name)
        changed = record is not None and record.uri != uri
        if name in running and not changed:
            continue
        if record is None or changed or _due(record, now, retry_failed_after):
            actions.start.append(name)
    return actions


def _due(record: ModelRecord, now: float, retry_failed_after: float) -> bool:
    """Whether a listed model that is not running should start: never started, or failed long
    enough ago."""
    if record.state == "ModelDownloadPending":
        return True
    if record.state != "ModelDownloadError":
        return False
    return record.failed_at is None or now - record.failed_at >= retry_failed_after


def space_problem(
    *, need: int, limit: int | None, used_by_others: int, free: int | None = None
) -> str | None:
    """Why ``need`` more bytes do not fit (the node group's ``storageLimit``, the disk), if so."""
    if limit is not None and used_by_others + need > limit:
        return (
            f"the model needs {format_bytes(need)} but the node group's storageLimit is "
            f"{format_bytes(limit)} and other models use {format_bytes(used_by_others)}"
        )
    if free is not None and need > free:
        return (
            f"the model needs {format_bytes(need)} more but the disk has {format_bytes(free)} free"
        )
    return None


def status_patch(
    records: Mapping[str, ModelRecord], written: Mapping[str, Mapping[str, Any]]
) -> dict[str, Any] | None:
    """A merge patch taking the status from ``written`` (what the last patch wrote, by model:
    ``{"state": ..., "details": ...}``) to ``records``; ``None`` when nothing changed."""
    states: dict[str, Any] = {}
    details: dict[str, Any] = {}
    for name, record in records.items():
        before = written.get(name) or {}
        if before.get("state") != record.state:
            states[name] = record.state
        if before.get("details") != record.details():
            details[name] = record.details()
    for name in written:
        if name not in records:
            states[name] = None
            details[name] = None
    if not states and not details:
        return None
    status: dict[str, Any] = {}
    if states:
        status["modelStatus"] = states
    if details:
        status["modelDetails"] = details
    return {"status": status}
