"""Turning ``--model_dir`` (a directory or a storage URI) into loaded models."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from moorage.core.config.server import ServerSettings
from moorage.core.errors import InvalidInput, ServerError, StorageNotFound
from moorage.server.model import Model
from moorage.server.repository import ModelLoader
from moorage.server.runtimes import detect_runtime, get_runtime

__all__ = ["build_listed_model", "build_models", "repository_loader", "resolve_model_dir"]

logger = logging.getLogger(__name__)


def resolve_model_dir(model_dir: str) -> Path:
    """``model_dir`` itself, or where its storage URI was downloaded to."""
    if "://" not in model_dir:
        return Path(model_dir)
    try:
        from moorage.storage import download
    except ImportError:
        raise ServerError(
            f"--model_dir {model_dir} is a storage URI, which needs moorage-storage: "
            "pip install moorage-storage"
        ) from None
    dest = tempfile.mkdtemp(prefix="moorage-model-")
    logger.info("downloading %s to %s", model_dir, dest)
    result = download(model_dir, dest)
    return Path(result) if result else Path(dest)


def build_model(name: str, model_dir: Path, settings: ServerSettings) -> Model:
    """An unloaded model for ``model_dir`` (``--model_format`` or detected)."""
    if settings.model_format:
        runtime = get_runtime(settings.model_format)
    elif any(a.split("=", 1)[0] == "--model_id" for a in settings.extra_args):
        runtime = get_runtime("huggingface")  # KServe's huggingfaceserver: a Hub id, no files
    else:
        runtime = detect_runtime(model_dir)
    return _prepare_openai(runtime.create(name, model_dir, settings))


def build_listed_model(
    name: str, model_dir: Path, framework: str, settings: ServerSettings
) -> Model:
    """An unloaded model of a model-config file's entry: the runtime called ``framework`` (a
    TrainedModel's ``spec.model.framework``), else the one its files show."""
    try:
        runtime = get_runtime(framework) if framework else detect_runtime(model_dir)
    except InvalidInput:
        runtime = detect_runtime(model_dir)
    return _prepare_openai(runtime.create(name, model_dir, settings))


def _prepare_openai(model: Model) -> Model:
    """``model``; for one that generates or embeds text (an OpenAI route's model), the OpenAI
    request schemas (pydantic) are imported now rather than by its first request. Judged on
    the class: an unloaded model's properties may not answer yet."""
    kind = type(model)
    if callable(getattr(kind, "generate", None)) or callable(getattr(kind, "embed", None)):
        import moorage.server.openai._schema  # noqa: F401
    return model


def build_models(settings: ServerSettings) -> list[Model]:
    """The loaded models ``settings`` asks for.

    ``model_dir`` holding a model gives one model called ``model_name``. Holding no model file
    but subdirectories that do (KServe's multi-model layout), it gives one model per
    subdirectory, named after it.
    """
    model_dir = resolve_model_dir(settings.model_dir)
    try:
        model = build_model(settings.model_name, model_dir, settings)
    except StorageNotFound:
        subdirs = sorted(p for p in model_dir.iterdir() if p.is_dir()) if model_dir.is_dir() else []
        models = []
        for sub in subdirs:
            try:
                models.append(build_model(sub.name, sub, settings))
            except StorageNotFound:
                continue
        if not models:
            raise
        logger.info("serving %d models from the repository %s", len(models), model_dir)
    else:
        models = [model]
    for m in models:
        m.load()
    return models


def repository_loader(settings: ServerSettings) -> ModelLoader:
    """The repository's loader: model ``name`` from ``<models_dir>/<name>``."""

    def load(name: str, models_dir: str) -> Model | None:
        path = resolve_model_dir(models_dir) / name
        if not path.is_dir():
            return None
        return build_model(name, path, settings)

    return load
