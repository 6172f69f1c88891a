"""The ``huggingface`` runtime: a model directory (or ``--model_id``) -> the model for its task
and backend, as KServe's huggingfaceserver chooses them."""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from moorage.core.config.server import ServerSettings
from moorage.core.errors import InvalidInput, ServerError
from moorage.server.model import Model
from moorage.server.runtimes.huggingface._task import (
    GENERATIVE,
    MLTask,
    check_task,
    infer_task,
    parse_task,
)

__all__ = ["HuggingFaceRuntime", "build_huggingface_model", "huggingface_runtime"]

logger = logging.getLogger(__name__)

if TYPE_CHECKING:  # a pydantic model: imported when a model is created, not at server start
    from moorage.core.config.huggingface import HuggingFaceSettings


class MissingHuggingFace(ServerError):
    code = "missing_extra"


def _vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def _config(source: str, settings: HuggingFaceSettings) -> Any:
    try:
        import transformers
    except ImportError:
        raise MissingHuggingFace(
            "the huggingface runtime needs transformers and torch: "
            "pip install torch==2.13.0 'moorage-server[huggingface]'"
        ) from None
    try:
        return transformers.AutoConfig.from_pretrained(
            source, revision=settings.model_revision, trust_remote_code=settings.trust_remote_code
        )
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"cannot read the model config of {source}: {exc}") from exc


def build_huggingface_model(name: str, source: str | Path, settings: HuggingFaceSettings) -> Model:
    """The unloaded model for ``source``: vLLM when asked for (or, with ``--backend auto``,
    when vLLM is installed and the task generates), else transformers."""
    source = str(source)
    if settings.backend == "vllm" and not _vllm_available():
        raise MissingHuggingFace(
            "Backend is set to 'vllm' but vLLM is not available: pip install 'moorage-server[vllm]'"
        )
    config = _config(source, settings)
    task = parse_task(settings.task) if settings.task else _implied_task(config, source)
    check_task(task, config)
    use_vllm = settings.backend == "vllm" or (
        settings.backend == "auto" and task in GENERATIVE and _vllm_available()
    )
    if use_vllm:
        if task not in GENERATIVE:
            raise InvalidInput(f"the vllm backend serves text generation, not {task.value}")
        from moorage.server.runtimes.huggingface._vllm import VLLMModel

        logger.info("model %s: task %s on the vllm backend", name, task.value)
        return VLLMModel(name, source, settings)
    logger.info("model %s: task %s on the transformers backend", name, task.value)
    if task in GENERATIVE:
        from moorage.server.runtimes.huggingface._generative import HuggingFaceGenerativeModel

        return HuggingFaceGenerativeModel(name, source, settings, task)
    from moorage.server.runtimes.huggingface._encoder import HuggingFaceEncoderModel

    return HuggingFaceEncoderModel(name, source, settings, task)


def _implied_task(config: Any, source: str) -> MLTask:
    """KServe's inference from the architecture; moorage also reads a sentence-transformers
    directory (``modules.json``) holding a bare encoder as ``text_embedding``."""
    try:
        return infer_task(config)
    except InvalidInput:
        if (Path(source) / "modules.json").is_file():
            return MLTask.text_embedding
        raise


@dataclass(frozen=True)
class HuggingFaceRuntime:
    """``modelFormat: huggingface``: a directory with a transformers ``config.json``."""

    name: str = "huggingface"

    def detect(self, model_dir: Path) -> bool:
        config = model_dir / "config.json"
        if not config.is_file():
            return False
        try:
            doc = orjson.loads(config.read_bytes()[: 1 << 20])
        except (OSError, orjson.JSONDecodeError):
            return False
        return isinstance(doc, dict) and ("model_type" in doc or "architectures" in doc)

    def create(self, name: str, model_dir: Path, settings: ServerSettings) -> Model:
        from moorage.core.config.huggingface import HuggingFaceSettings

        try:
            hf = HuggingFaceSettings.from_args(settings.extra_args)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
        return build_huggingface_model(name, hf.model_id or model_dir, hf)


huggingface_runtime = HuggingFaceRuntime()
