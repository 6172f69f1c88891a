"""Multi-model serving without KServe's puller: watch the model-config file, load what it lists.

KServe's TrainedModel controller keeps a ConfigMap ``modelconfig-<isvc>-0`` whose key
``models.json`` lists the InferenceService's models::

    [{"modelName": "m1", "modelSpec": {"storageUri": "s3://b/m1", "framework": "sklearn",
      "memory": "1Gi"}}, ...]

and mounts it at ``/mnt/configs`` into the predictor pod, where its ``agent`` sidecar (the
"puller") downloads each model and calls the server's v2 repository load/unload.
moorage-server does that itself with ``--model_config_file /mnt/configs/models.json``
(:class:`ModelConfigWatcher`):

* the file is checked every ``--model_config_poll_seconds`` (its inode, size and mtime: the
  kubelet updates a ConfigMap volume by swapping a symlink, so the inode changes); a file that
  is missing or not valid JSON changes nothing and is logged;
* a model added (or whose entry changed) is downloaded with :mod:`moorage.storage` into
  ``<model_dir>/<modelName>``, built by its ``framework``'s runtime (detected from the files when
  no runtime has that name) and loaded, at most ``--model_config_concurrency`` at a time;
* a model that fails (download, runtime, load) stays registered as a :class:`FailedModel`: its
  v2 ready answers false, its metadata and the repository index carry the error, the other
  models serve, and the server's own readiness ignores it (one bad entry does not take the pod
  out of its Service); the next change of its entry tries again;
* a model dropped from the file is unloaded and its directory deleted.

Downloads and deletions of one model hold a lock file (``<model_dir>/.<name>.lock``), so the
``--workers`` processes of one server, each running its own watcher, download a model once.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import inspect
import logging
import os
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from moorage.server.model import Model
from moorage.server.repository import ModelRepository

__all__ = [
    "FailedModel",
    "ModelBuilder",
    "ModelConfigWatcher",
    "ModelEntry",
    "parse_model_config",
]

logger = logging.getLogger(__name__)

#: Builds (does not load) model ``name`` of ``framework`` from the directory it was downloaded to.
ModelBuilder = Callable[[str, Path, str], Model]
#: Fetches ``uri`` into the directory ``dest`` (:func:`moorage.storage.download`'s signature).
Downloader = Callable[[str, Path], Any]

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class ModelEntry:
    """One ``models.json`` entry: ``modelName`` and its ``modelSpec``."""

    name: str
    storage_uri: str
    framework: str = ""
    memory: str = ""


def parse_model_config(raw: bytes) -> dict[str, ModelEntry]:
    """The entries of a ``models.json`` document by name (``ValueError`` when malformed)."""
    try:
        data = orjson.loads(raw) if raw.strip() else []
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON: {exc}") from None
    if not isinstance(data, list):
        raise ValueError("expected a JSON list of {modelName, modelSpec}")
    entries: dict[str, ModelEntry] = {}
    for i, item in enumerate(data):
        spec = item.get("modelSpec") if isinstance(item, dict) else None
        name = item.get("modelName") if isinstance(item, dict) else None
        if not isinstance(name, str) or not name or not isinstance(spec, dict):
            raise ValueError(f"entry {i}: expected modelName (a string) and modelSpec (an object)")
        uri = spec.get("storageUri")
        if not isinstance(uri, str) or not uri:
            raise ValueError(f"entry {i} ({name}): modelSpec.storageUri is missing")
        entries[name] = ModelEntry(
            name=name,
            storage_uri=uri,
            framework=str(spec.get("framework") or ""),
            memory=str(spec.get("memory") or ""),
        )
    return entries


class FailedModel(Model):
    """A listed model that could not be loaded: never ready, ``load_error`` says why."""

    def __init__(self, name: str, *, storage_uri: str, error: str) -> None:
        super().__init__(name)
        self.storage_uri = storage_uri
        self.load_error = error

    def load(self) -> bool:
        return False


def _signature(path: Path) -> tuple[int, int, int, int] | None:
    try:
        st = path.stat()  # follows the ConfigMap volume's ..data symlink
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


class ModelConfigWatcher:
    """Keeps ``repository`` serving what the model-config file ``path`` lists (see the module
    docstring).

    ``register`` adds a loaded model to the server (``ModelServer.register_model``); ``build``
    makes a model from its directory; ``download`` defaults to :func:`moorage.storage.download`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        repository: ModelRepository,
        *,
        model_dir: str | os.PathLike[str],
        build: ModelBuilder,
        register: Callable[[Model], None],
        download: Downloader | None = None,
        poll_seconds: float = 1.0,
        concurrency: int = 4,
    ) -> None:
        self.path = Path(path)
        self.repository = repository
        self.model_dir = Path(model_dir)
        self._build = build
        self._register = register
        self._download = download
        self._poll = poll_seconds
        self._slots = asyncio.Semaphore(concurrency)
        self._signature: tuple[int, int, int, int] | None = None
        self._entries: dict[str, ModelEntry] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._reported_missing = False

    # ------------------------------------------------------------------ the file
    async def run(self) -> None:
        """Check the file every ``poll_seconds`` until cancelled."""
        while True:
            try:
                await self.check()
            except Exception:  # never let the watcher die: the next tick tries again
                logger.exception("reading the model config %s failed", self.path)
            await asyncio.sleep(self._poll)

    async def check(self) -> bool:
        """Apply the file if it changed since the last check; whether it did."""
        signature = _signature(self.path)
        if signature is None:
            if not self._reported_missing:
                logger.warning("model config %s does not exist (yet)", self.path)
                self._reported_missing = True
            return False
        self._reported_missing = False
        if signature == self._signature:
            return False
        self._signature = signature
        raw = await asyncio.to_thread(self.path.read_bytes)
        try:
            wanted = parse_model_config(raw)
        except ValueError as exc:
            logger.error("ignoring the model config %s: %s", self.path, exc)
            return False
        await self.apply(wanted)
        return True

    async def apply(self, wanted: dict[str, ModelEntry]) -> None:
        """Unload what ``wanted`` lacks, (re)load what it adds or changes (in the background)."""
        for name in [n for n in self._entries if n not in wanted]:
            await self._remove(name)
            logger.info("model %s removed from the model config", name, extra={"model": name})
        for name, entry in wanted.items():
            if self._entries.get(name) == entry:
                continue
            if name in self._entries:
                await self._remove(name)
            self._entries[name] = entry
            self._tasks[name] = asyncio.create_task(self._load(entry), name=f"load {name}")

    async def wait(self) -> None:
        """Until every load started so far has finished (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks.values()), return_exceptions=True)

    async def aclose(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self._tasks.clear()

    # ------------------------------------------------------------------ one model
    def _directory(self, name: str) -> Path:
        return self.model_dir / name

    @contextlib.contextmanager
    def _locked(self, name: str) -> Iterator[None]:
        self.model_dir.mkdir(parents=True, exist_ok=True)
        with open(self.model_dir / f".{name}.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _fetch_and_build(self, entry: ModelEntry) -> Model:
        """In a thread: download ``entry`` (under its lock) and build its model."""
        dest = self._directory(entry.name)
        with self._locked(entry.name):
            if self._download is not None:
                self._download(entry.storage_uri, dest)
            else:
                from moorage.storage import download

                download(entry.storage_uri, dest)
        return self._build(entry.name, dest, entry.framework)

    async def _load(self, entry: ModelEntry) -> None:
        name = entry.name
        try:
            async with self._slots:
                if not _SAFE_NAME.match(name):
                    raise ValueError(f"{name!r} cannot name a directory of {self.model_dir}")
                logger.info(
                    "loading model %s from %s", name, entry.storage_uri, extra={"model": name}
                )
                model = await asyncio.to_thread(self._fetch_and_build, entry)
                if inspect.iscoroutinefunction(model.load):
                    await model.load()
                else:
                    await asyncio.to_thread(model.load)
                if not model.ready:
                    raise RuntimeError("the model's load() left it not ready")
            if self._entries.get(name) != entry:  # replaced or removed meanwhile
                model.stop()
                return
            self._register(model)
            model.start()
            logger.info("loaded model %s", name, extra={"model": name})
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            logger.error(
                "model %s from %s failed to load: %s", name, entry.storage_uri, message,
                extra={"model": name},
            )  # fmt: skip
            if self._entries.get(name) == entry:
                failed = FailedModel(name, storage_uri=entry.storage_uri, error=message)
                self.repository.update(failed)
        finally:
            if self._tasks.get(name) is asyncio.current_task():
                del self._tasks[name]

    async def _remove(self, name: str) -> None:
        self._entries.pop(name, None)
        task = self._tasks.pop(name, None)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if self.repository.get_model(name) is not None:
            await self.repository.unload(name)
        if _SAFE_NAME.match(name):
            await asyncio.to_thread(self._delete, name)

    def _delete(self, name: str) -> None:
        # The lock file stays: unlinking it would let another process lock a new one meanwhile.
        with self._locked(name):
            shutil.rmtree(self._directory(name), ignore_errors=True)
