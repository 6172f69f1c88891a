"""The node agent: keeps the models its LocalModelNode lists on this node's disk.

One agent runs per node (a DaemonSet; ``NODE_NAME`` from the downward API). It watches the
LocalModelNode named after its node and, for each listed model, downloads ``sourceModelUri``
with :mod:`moorage.storage` into ``<root>/models/<modelName>``, reporting in the LocalModelNode's
status ``modelStatus[<name>]`` (KServe's ``ModelDownloadPending → ModelDownloading →
ModelDownloaded | ModelDownloadError``) and the moorage extension ``modelDetails[<name>]``
(message, bytes downloaded and total, attempts). What it does, in order:

* at start-up, finds its node group (the LocalModelNodeGroup whose PV node affinity selects its
  Node): the ``storageLimit`` and, unless ``--root`` is given, the model root (the PV spec's
  ``local`` or ``hostPath`` path); then verifies every listed model already on disk
  (:func:`moorage.cache._disk.verify`: manifest, sizes, and hashes with ``verify=hash``): an intact
  one is ``ModelDownloaded`` at once, a damaged one is fetched again;
* downloads at most ``max_concurrent_downloads`` models at once, each in a child process
  (:mod:`moorage.cache._fetch`) that can be stopped at any time; an interrupted download
  (stopped, or the agent killed) resumes from the parts already on disk;
* refuses a model that does not fit before fetching a byte: its ``modelSize`` (from its
  LocalModelCache) plus what the other models take must stay within the group's
  ``storageLimit``; stops one whose source turns out bigger than ``modelSize`` or than the limit
  or the free disk; each is a ``ModelDownloadError`` whose message gives the figures;
* retries failures that may pass (network, server errors, integrity) with exponential backoff
  and jitter (:mod:`moorage.core.retry`); a source that does not exist or refuses the
  credentials fails at once; a failed model is tried again after ``retry_failed_after_seconds``
  or when its LocalModelNode entry changes;
* removes the files of models no longer listed (and their status entries, last);
* never removes anything while its LocalModelNode does not exist.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from moorage.cache import _disk
from moorage.cache._kube import CACHES, GROUPS, LOCAL_MODEL_NODES, NODES, Kube, KubeError
from moorage.cache._names import safe_uri
from moorage.cache._quantity import format_bytes, parse_bytes
from moorage.cache.nodeplan import ModelRecord, decide, space_problem, status_patch
from moorage.cache.reconcile import node_selected
from moorage.core.config.cache import CacheSettings
from moorage.core.retry import Backoff, retry_async

__all__ = ["Agent"]

logger = logging.getLogger(__name__)

#: Error codes of :mod:`moorage.core.errors` that another try will not fix.
_PERMANENT = {
    "storage_not_found",
    "storage_auth_error",
    "invalid_storage_uri",
    "unsupported_scheme",
    "unsafe_archive",
}
_DEFAULT_ROOT = Path("/mnt/models")


class _Retryable(Exception):
    pass


class _Permanent(Exception):
    pass


class _TooBig(_Permanent):
    """The model does not fit (its modelSize, the group's storageLimit, the disk): what was
    staged for it is removed, so that a refused model takes no space."""


class Agent:
    """The agent of one node. ``await agent.run()`` until cancelled."""

    def __init__(
        self,
        kube: Kube,
        settings: CacheSettings,
        *,
        node_name: str,
        root: Path | None = None,
        resync_seconds: float = 60.0,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.kube = kube
        self.settings = settings
        self.node_name = node_name
        self.root = root
        self.resync_seconds = resync_seconds
        #: environment of the download processes (credentials under KServe's names).
        self.env = dict(env) if env is not None else None
        self.limit: int | None = None
        self.records: dict[str, ModelRecord] = {}
        self.listed: dict[str, str] | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._written: dict[str, dict[str, Any]] = {}
        self._dirty = asyncio.Event()
        self._slots = asyncio.Semaphore(settings.max_concurrent_downloads)
        self._reserved: dict[str, int] = {}
        self._log = logging.LoggerAdapter(logger, {"node": node_name})

    # -- lifecycle ------------------------------------------------------------------------------
    async def run(self) -> None:
        writer = asyncio.create_task(self._status_writer(), name="status-writer")
        try:
            await self._find_group()
            await self._watch()
        finally:
            for task in list(self._tasks.values()):
                task.cancel()
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer

    async def _find_group(self) -> None:
        """The node group selecting this node: the storage limit and (the first time) the
        default root. Read again at every resync, so a changed storageLimit applies."""
        node = await self.kube.get(NODES, self.node_name)
        groups, _ = await self.kube.list(GROUPS)
        mine = None
        if node is not None:
            for group in sorted(groups, key=lambda g: g["metadata"]["name"]):
                pv = (group.get("spec") or {}).get("persistentVolumeSpec") or {}
                if node_selected(node, (pv.get("nodeAffinity") or {}).get("required")):
                    mine = group
                    break
        if mine is None:
            if self.limit is not None or self.root is None:
                self._log.warning("no LocalModelNodeGroup selects node %s", self.node_name)
            self.limit = None
        else:
            spec = mine.get("spec") or {}
            try:
                self.limit = parse_bytes(str(spec.get("storageLimit")))
            except ValueError:
                self.limit = None
            pv = spec.get("persistentVolumeSpec") or {}
            path = (pv.get("local") or {}).get("path") or (pv.get("hostPath") or {}).get("path")
            if self.root is None and path:
                self.root = Path(path)
        if self.root is None:
            self.root = _DEFAULT_ROOT
        (self.root / _disk.MODELS_DIR).mkdir(parents=True, exist_ok=True)

    async def _watch(self) -> None:
        """Read the LocalModelNode, then follow its watch events; every ``resync_seconds`` read
        it again (and the node group). Only the wait for the next event is timed, never the work
        an event causes (a cancelled stop or removal would leave a download behind)."""
        failures = 0
        loop = asyncio.get_running_loop()
        while True:
            try:
                lmn = await self.kube.get(LOCAL_MODEL_NODES, self.node_name)
                rv = str(((lmn or {}).get("metadata") or {}).get("resourceVersion") or "")
                await self._observe(lmn, resync=True)
                failures = 0
                deadline = loop.time() + self.resync_seconds
                events = self.kube.watch(
                    LOCAL_MODEL_NODES,
                    resource_version=rv,
                    timeout_s=int(self.resync_seconds) + 1,
                    field_selector=f"metadata.name={self.node_name}",
                )
                try:
                    while (remaining := deadline - loop.time()) > 0:
                        try:
                            kind, obj = await asyncio.wait_for(anext(events), remaining)
                        except (TimeoutError, StopAsyncIteration):
                            break
                        if (obj.get("metadata") or {}).get("name") == self.node_name:
                            await self._observe(None if kind == "DELETED" else obj)
                finally:
                    await events.aclose()
                await self._find_group()
            except KubeError as exc:
                failures += 1
                wait = Backoff(initial=0.5, maximum=30.0).delay(min(failures, 10))
                self._log.warning("API error (%s); again in %.1fs", exc, wait)
                await asyncio.sleep(wait)

    # -- decisions ------------------------------------------------------------------------------
    async def _observe(self, lmn: Mapping[str, Any] | None, *, resync: bool = False) -> None:
        """Act on the LocalModelNode as read; ``resync``: a periodic full read, when downloaded
        models are also checked on disk (not on every event: each status write is one)."""
        if lmn is None:
            return  # never remove anything without a LocalModelNode saying so
        models = ((lmn.get("spec") or {}).get("localModels")) or []
        listed = {str(m["modelName"]): str(m["sourceModelUri"]) for m in models}
        first = self.listed is None
        self.listed = listed
        if first:
            self._written = {
                name: {"state": state}
                for name, state in ((lmn.get("status") or {}).get("modelStatus") or {}).items()
            }
            await self._startup_verify(listed)
        elif resync:
            await self._recheck_downloaded()
        await self._apply()

    async def _startup_verify(self, listed: Mapping[str, str]) -> None:
        """Models already on disk: intact ones are done, damaged ones are fetched again."""
        assert self.root is not None
        deep = self.settings.verify == "hash"
        for name, uri in sorted(listed.items()):
            path = _disk.model_dir(self.root, name)
            if not path.exists():
                continue
            problem = await asyncio.to_thread(_disk.verify, path, uri, deep=deep)
            record = ModelRecord(name=name, uri=uri)
            if problem is None:
                record.state = "ModelDownloaded"
                record.total = record.done = _disk.manifest_total(path)
                record.message = "verified on disk at start-up"
                self._log.info("%s: verified on disk", name, extra={"model": name})
            else:
                record.force = True
                record.message = f"found damaged on disk ({problem}); fetching again"
                self._log.warning("%s: %s", name, record.message, extra={"model": name})
            self.records[name] = record
        self._dirty.set()

    async def _recheck_downloaded(self) -> None:
        """A cheap check (files and sizes) that downloaded models are still whole."""
        assert self.root is not None
        for record in list(self.records.values()):
            if record.state != "ModelDownloaded" or record.name in self._tasks:
                continue
            path = _disk.model_dir(self.root, record.name)
            problem = await asyncio.to_thread(_disk.verify, path, record.uri, deep=False)
            if problem is not None:
                record.state = "ModelDownloadPending"
                record.force = path.exists()
                record.message = f"found damaged on disk ({problem}); fetching again"
                self._log.warning("%s: %s", record.name, record.message)
                self._dirty.set()

    async def _apply(self) -> None:
        assert self.root is not None and self.listed is not None
        actions = decide(
            self.listed,
            self.records,
            set(self._tasks),
            _disk.present(self.root),
            now=time.monotonic(),
            retry_failed_after=self.settings.retry_failed_after_seconds,
        )
        for name in actions.stop:
            task = self._tasks.pop(name, None)
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        for name in actions.remove:
            self._log.info("%s: no longer listed; removing its files", name)
            await asyncio.to_thread(_disk.remove, self.root, name)
            self.records.pop(name, None)
            self._reserved.pop(name, None)
            self._dirty.set()
        for name in actions.start:
            uri = self.listed[name]
            record = self.records.get(name)
            if record is None or record.uri != uri:
                record = self.records[name] = ModelRecord(name=name, uri=uri)
            record.state = "ModelDownloadPending"
            record.failed_at = None
            self._dirty.set()
            self._tasks[name] = asyncio.create_task(self._download(record), name=f"fetch-{name}")

    # -- one model ------------------------------------------------------------------------------
    async def _model_size(self, name: str) -> int | None:
        try:
            cache = await self.kube.get(CACHES, name)
        except KubeError:
            return None
        size = ((cache or {}).get("spec") or {}).get("modelSize")
        try:
            return parse_bytes(size) if size is not None else None
        except ValueError:
            return None

    def _used_by_others(self, name: str) -> int:
        assert self.root is not None
        used = 0
        for other in self.records:
            if other == name:
                continue
            on_disk = _disk.model_bytes(self.root, other)
            used += max(on_disk, self._reserved.get(other, 0))
        return used

    async def _download(self, record: ModelRecord) -> None:
        name = record.name
        try:
            async with self._slots:
                await self._download_in_slot(record)
        except asyncio.CancelledError:
            raise
        except (_Permanent, _Retryable) as exc:
            record.state = "ModelDownloadError"
            record.message = str(exc)
            record.failed_at = time.monotonic()
            self._log.error("%s: %s", name, record.message, extra={"model": name})
            if isinstance(exc, _TooBig) and self.root is not None:
                await asyncio.to_thread(_disk.remove, self.root, name)
                record.done = 0
        except Exception as exc:
            record.state = "ModelDownloadError"
            record.message = f"{type(exc).__name__}: {exc}"
            record.failed_at = time.monotonic()
            self._log.exception("%s: download failed", name, extra={"model": name})
        finally:
            self._reserved.pop(name, None)
            if self._tasks.get(name) is asyncio.current_task():
                del self._tasks[name]
            self._dirty.set()

    async def _download_in_slot(self, record: ModelRecord) -> None:
        assert self.root is not None
        name = record.name
        size = await self._model_size(name)
        need = size or 0
        problem = space_problem(
            need=need, limit=self.limit, used_by_others=self._used_by_others(name)
        )
        if problem is not None:
            raise _TooBig(problem)
        self._reserved[name] = need
        record.state = "ModelDownloading"
        record.message = "downloading"
        record.attempts = 0
        self._dirty.set()
        self._log.info("%s: downloading %s", name, safe_uri(record.uri), extra={"model": name})

        def on_retry(attempt: int, exc: BaseException, wait: float) -> None:
            record.message = f"try {attempt} failed ({exc}); trying again in {wait:.1f}s"
            self._log.warning("%s: %s", name, record.message, extra={"model": name})
            self._dirty.set()

        policy = Backoff(
            attempts=self.settings.download_attempts,
            initial=self.settings.retry_initial_seconds,
            maximum=self.settings.retry_max_seconds,
        )
        await retry_async(
            lambda: self._fetch_once(record, size),
            policy,
            retry_on=_Retryable,
            on_retry=on_retry,
        )
        path = _disk.model_dir(self.root, name)
        problem = await asyncio.to_thread(_disk.verify, path, record.uri, deep=False)
        if problem is not None:
            raise _Retryable(f"the download finished but the model {problem}")
        record.total = record.done = _disk.manifest_total(path)
        record.state = "ModelDownloaded"
        record.message = "downloaded"
        record.force = False
        self._log.info(
            "%s: downloaded (%s, %s over the network)",
            name,
            format_bytes(record.total),
            format_bytes(record.fetched or 0),
            extra={"model": name, "bytes": record.total, "fetched": record.fetched},
        )

    async def _fetch_once(self, record: ModelRecord, size: int | None) -> None:
        assert self.root is not None
        record.attempts += 1
        argv = [sys.executable, "-m", "moorage.cache._fetch"]
        if record.force:
            argv.append("--force")
        argv += [record.uri, str(_disk.model_dir(self.root, record.name))]
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=self.env,
            limit=1 << 20,
        )
        outcome: dict[str, Any] = {}
        try:
            assert proc.stdout is not None
            async for line in proc.stdout:
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if event.get("event") == "progress":
                    self._progress(record, int(event["done"]), int(event["total"]), size)
                else:
                    outcome = event
            await proc.wait()
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if outcome.get("event") == "done":
            record.fetched = int(outcome.get("fetched") or 0)
            return
        code = str(outcome.get("code") or "internal")
        message = str(outcome.get("message") or f"download process exited {proc.returncode}")
        if code in _PERMANENT:
            raise _Permanent(message)
        raise _Retryable(message)

    def _progress(self, record: ModelRecord, done: int, total: int, size: int | None) -> None:
        assert self.root is not None
        record.done, record.total = done, total
        self._dirty.set()
        if size is not None and total > size:
            raise _TooBig(
                f"the model is {format_bytes(total)}, bigger than its modelSize "
                f"{format_bytes(size)}"
            )
        if total > self._reserved.get(record.name, 0):
            self._reserved[record.name] = total
            free = shutil.disk_usage(self.root).free
            problem = space_problem(
                need=total,
                limit=self.limit,
                used_by_others=self._used_by_others(record.name),
                free=free + _disk.model_bytes(self.root, record.name),
            )
            if problem is not None:
                raise _TooBig(problem)

    # -- status ---------------------------------------------------------------------------------
    async def _status_writer(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            # What this patch says, taken before the write: records change while it is in flight.
            snapshot = {
                name: {"state": r.state, "details": r.details()} for name, r in self.records.items()
            }
            patch = status_patch(self.records, self._written)
            if patch is not None and self.listed is not None:
                try:
                    await self.kube.patch(LOCAL_MODEL_NODES, self.node_name, patch, status=True)
                except KubeError as exc:
                    self._log.warning("status not written (%s); trying again", exc)
                    self._dirty.set()
                except Exception:
                    self._log.exception("status not written; trying again")
                    self._dirty.set()
                else:
                    self._written = snapshot
            await asyncio.sleep(self.settings.status_interval_seconds)
