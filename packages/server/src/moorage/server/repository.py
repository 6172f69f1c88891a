"""``ModelRepository``: the models one server serves, with load and unload."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from moorage.core.errors import ModelNotFound, ModelNotReady
from moorage.server import _heap
from moorage.server.model import BoundModel, Model, SyncMode

__all__ = ["ModelLoader", "ModelRepository"]

logger = logging.getLogger(__name__)

#: Builds (but need not load) the model called ``name`` from the repository's directory; ``None``
#: when there is nothing of that name to load.
ModelLoader = Callable[[str, str], "Model | Awaitable[Model | None] | None"]


class ModelRepository:
    """Name -> model, as KServe's ``ModelRepository(models_dir="/mnt/models")``.

    ``loader`` serves ``POST /v2/repository/models/{name}/load`` for models not registered yet:
    it receives ``(name, models_dir)`` and returns a :class:`Model` (loaded here) or ``None``.
    Subclasses may override :meth:`load_model` instead, as in KServe.
    """

    def __init__(
        self,
        models_dir: str = "/mnt/models",
        *,
        sync_mode: SyncMode = "auto",
        loader: ModelLoader | None = None,
    ) -> None:
        self.models_dir = models_dir
        self.sync_mode: SyncMode = sync_mode
        self._loader = loader
        self._bound: dict[str, BoundModel] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    # ------------------------------------------------------------------ lookups
    def update(self, model: Model) -> None:
        """Register ``model`` (replacing one of the same name)."""
        previous = self._bound.get(model.name)
        replaced = previous is not None and previous.model is not model
        del previous  # (collectable once replaced)
        self._bound[model.name] = BoundModel(model, sync_mode=self.sync_mode)
        if replaced:
            _heap.release()
        else:
            _heap.keep()

    def get_model(self, name: str) -> Model | None:
        bound = self._bound.get(name)
        return bound.model if bound is not None else None

    def get_models(self) -> dict[str, Model]:
        return {name: bound.model for name, bound in self._bound.items()}

    def bound_models(self) -> list[BoundModel]:
        return list(self._bound.values())

    def bound(self, name: str) -> BoundModel:
        """The registered model ``name`` or :class:`ModelNotFound` (the hot-path lookup)."""
        try:
            return self._bound[name]
        except KeyError:
            raise ModelNotFound(f"Model with name {name} does not exist.", model=name) from None

    def ready_bound(self, name: str) -> BoundModel:
        """Like :meth:`bound`, and :class:`ModelNotReady` unless the model is ready."""
        bound = self.bound(name)
        if not bound.model.ready:
            raise ModelNotReady(f"Model with name {name} is not ready.", model=name)
        return bound

    async def is_model_ready(self, name: str) -> bool:
        model = self.bound(name).model
        return bool(await model.healthy())

    # ------------------------------------------------------------------ load/unload
    async def load(self, name: str) -> bool:
        """Load ``name``: (re)load a registered model, or build one with the loader."""
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            bound = self._bound.get(name)
            if bound is not None:
                if bound.model.ready:
                    return True
                model = bound.model
            else:
                built = await self.load_model(name)
                if built is None:
                    raise ModelNotFound(
                        f"Model with name {name} does not exist in {self.models_dir}.", model=name
                    )
                model = built
            if not model.ready:
                await _call_load(model)
            if not model.ready:
                raise ModelNotReady(f"Model with name {name} is not ready.", model=name)
            model.start()
            self.update(model)
            logger.info("loaded model %s", name, extra={"model": name})
            return True

    async def load_model(self, name: str) -> Model | None:
        """Build the model ``name`` from ``models_dir`` (``None``: nothing to load)."""
        if self._loader is None:
            return None
        built = self._loader(name, self.models_dir)
        if inspect.isawaitable(built):
            built = await built
        return built

    async def unload(self, name: str) -> None:
        """Stop and forget ``name`` (:class:`ModelNotFound` if unknown)."""
        bound = self._bound.pop(name, None)
        if bound is None:
            raise ModelNotFound(f"Model with name {name} does not exist.", model=name)
        bound.model.stop()
        del bound
        _heap.release()
        logger.info("unloaded model %s", name, extra={"model": name})

    def stop_all(self) -> None:
        for bound in self._bound.values():
            try:
                bound.model.stop()
            except Exception:
                logger.exception("stopping model %s failed", bound.name)


async def _call_load(model: Model) -> Any:
    if inspect.iscoroutinefunction(model.load):
        return await model.load()
    return await asyncio.to_thread(model.load)
