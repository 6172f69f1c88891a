"""The vLLM backend: vLLM's async engine behind :class:`~moorage.server.llm.TextGenerator`.

Needs the ``vllm`` extra; without it :meth:`VLLMModel.load` fails naming the extra. Engine
arguments not known to moorage (``--tensor-parallel-size``, ``--gpu-memory-utilization``, ...)
are passed through from the command line. The engine's own health check drives readiness: a
dead engine turns the model (and ``/v2/health/ready``) unready and is logged.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

from moorage.core.config.huggingface import HuggingFaceSettings
from moorage.core.errors import InvalidInput, ModelNotReady, ServerError
from moorage.server.llm import GenerationChunk, SamplingParams
from moorage.server.model import Model

__all__ = ["VLLMModel", "check_shm", "engine_arguments"]

logger = logging.getLogger(__name__)

#: Shared memory a tensor-parallel vLLM needs at least (NCCL buffers between workers).
MIN_SHM_BYTES_PER_WORKER = 1 << 30


def engine_arguments(source: str, settings: HuggingFaceSettings) -> list[str]:
    """vLLM's CLI arguments for ``settings``: the model, KServe's flags that vLLM shares, then
    the pass-through engine arguments."""
    args = ["--model", source, "--dtype", settings.dtype]
    if settings.model_revision:
        args += ["--revision", settings.model_revision]
    if settings.tokenizer_revision:
        args += ["--tokenizer-revision", settings.tokenizer_revision]
    if settings.max_model_len:
        args += ["--max-model-len", str(settings.max_model_len)]
    if settings.trust_remote_code:
        args.append("--trust-remote-code")
    return [*args, *settings.engine_args]


def check_shm(tensor_parallel_size: int, path: str = "/dev/shm") -> None:
    """:class:`ServerError` when ``path`` is too small for ``tensor_parallel_size`` workers."""
    if tensor_parallel_size <= 1:
        return
    try:
        stat = os.statvfs(path)
    except OSError:
        return
    size = stat.f_frsize * stat.f_blocks
    need = MIN_SHM_BYTES_PER_WORKER * tensor_parallel_size
    if size < need:
        raise ServerError(
            f"{path} holds {size >> 20} MiB; tensor parallel size {tensor_parallel_size} needs "
            f"at least {need >> 20} MiB (mount an emptyDir with medium: Memory there)"
        )


class VLLMModel(Model):
    """A generative model served by vLLM's async engine."""

    platform = "vllm"

    def __init__(self, name: str, source: str, settings: HuggingFaceSettings) -> None:
        super().__init__(name)
        self.source = source
        self.settings = settings
        self.engine: Any = None
        self.tokenizer: Any = None
        self._context = 0

    def load(self) -> bool:
        try:
            from vllm.engine.arg_utils import AsyncEngineArgs
            from vllm.engine.async_llm_engine import AsyncLLMEngine
            from vllm.utils import FlexibleArgumentParser
        except ImportError:
            raise ServerError(
                "the vllm backend needs vLLM: pip install 'moorage-server[vllm]'"
            ) from None
        parser = AsyncEngineArgs.add_cli_args(FlexibleArgumentParser())
        args = parser.parse_args(engine_arguments(self.source, self.settings))
        engine_args = AsyncEngineArgs.from_cli_args(args)
        check_shm(int(getattr(engine_args, "tensor_parallel_size", 1) or 1))
        self.engine = AsyncLLMEngine.from_engine_args(engine_args)
        self.ready = True
        return True

    async def healthy(self) -> bool:
        if self.engine is None or not self.ready:
            return False
        try:
            await self.engine.check_health()
        except Exception as exc:
            logger.error("model %s: the vLLM engine is dead: %s", self.name, exc)
            self.ready = False
            return False
        return True

    def stop(self) -> None:
        self.ready = False
        shutdown = getattr(self.engine, "shutdown", None)
        if callable(shutdown):
            shutdown()

    # ------------------------------------------------------------------ TextGenerator
    async def _ensure_tokenizer(self) -> Any:
        if self.tokenizer is None:
            self.tokenizer = await self.engine.get_tokenizer()
            config = await self.engine.get_model_config()
            self._context = int(config.max_model_len)
        return self.tokenizer

    @property
    def max_model_len(self) -> int:
        return self._context or (self.settings.max_model_len or 2048)

    def tokenize(self, text: str, *, add_special_tokens: bool = True) -> list[int]:
        if self.tokenizer is None:
            raise ModelNotReady(f"Model with name {self.name} is not ready.", model=self.name)
        ids: list[int] = self.tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"]
        return ids

    def apply_chat_template(self, messages: Sequence[dict[str, Any]]) -> str:
        if self.tokenizer is None or not getattr(self.tokenizer, "chat_template", None):
            raise InvalidInput(f"model '{self.name}' has no chat template in its tokenizer")
        prompt: str = self.tokenizer.apply_chat_template(
            list(messages), tokenize=False, add_generation_prompt=True
        )
        return prompt

    async def generate(
        self, prompt: str | list[int], params: SamplingParams
    ) -> AsyncIterator[GenerationChunk]:
        from vllm import SamplingParams as VSamplingParams

        await self._ensure_tokenizer()
        request_id = uuid.uuid4().hex
        inputs: Any = {"prompt_token_ids": prompt} if isinstance(prompt, list) else prompt
        sampling = VSamplingParams(
            max_tokens=params.max_tokens,
            temperature=params.temperature,
            top_p=params.top_p,
            seed=params.seed,
            stop=list(params.stop) or None,
            ignore_eos=params.ignore_eos,
            output_kind=None,
        )
        sent = 0
        finished = False
        try:
            async for output in self.engine.generate(inputs, sampling, request_id):
                completion = output.outputs[0]
                text = completion.text
                finished = output.finished
                yield GenerationChunk(
                    text[sent:],
                    len(output.prompt_token_ids or ()),
                    len(completion.token_ids),
                    completion.finish_reason if finished else None,
                )
                sent = len(text)
        finally:
            if not finished:
                await self.engine.abort(request_id)
