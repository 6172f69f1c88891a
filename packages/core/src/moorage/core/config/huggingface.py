"""``HuggingFaceSettings``: the flags of the ``huggingface`` runtime, KServe's names and meaning.

KServe's huggingface server adds its flags to the model server's parser and parses them with
``parse_known_args``; moorage-server keeps the flags it does not know in
:attr:`~moorage.core.config.server.ServerSettings.extra_args`, and the runtime reads its own
from there with :meth:`HuggingFaceSettings.from_args`. KServe declares the boolean ones
``store_true`` (``--trust_remote_code`` alone turns it on), which pydantic-settings' CLI does not
parse, hence argparse here; ``--trust_remote_code=true`` is accepted as well. Flags this class does
not know stay in :attr:`HuggingFaceSettings.engine_args` (vLLM engine arguments).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["DTYPES", "HuggingFaceSettings"]

Backend = Literal["auto", "huggingface", "vllm"]
DType = Literal["auto", "float16", "float32", "bfloat16", "float", "half"]
DTYPES: tuple[str, ...] = ("auto", "float16", "float32", "bfloat16", "float", "half")

_TRUE = {"1", "true", "yes", "on", "y", "t"}
_FALSE = {"0", "false", "no", "off", "n", "f"}


def _flag(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


class HuggingFaceSettings(BaseModel):
    """The huggingface runtime's settings (KServe ``huggingfaceserver`` flags, plus moorage's
    batching bounds)."""

    model_config = ConfigDict(protected_namespaces=(), frozen=True)

    model_id: str | None = Field(None, description="Hugging Face Hub id; wins over model_dir.")
    model_revision: str | None = Field(None, description="Revision of model_id.")
    tokenizer_revision: str | None = Field(None, description="Revision of the tokenizer.")
    task: str | None = Field(None, description="Task; inferred from the model's config if unset.")
    backend: Backend = Field("auto", description="auto, huggingface (transformers) or vllm.")
    trust_remote_code: bool = Field(False, description="Run the model repository's own code.")
    max_model_len: int | None = Field(
        None, ge=1, description="Context length (KServe's --max_length / --max_model_len)."
    )
    dtype: DType = Field("auto", description="Weights dtype; auto: float32 on CPU.")
    disable_lower_case: bool = Field(False, description="Tokenizer: do not lower-case.")
    disable_special_tokens: bool = Field(False, description="Tokenizer: no special tokens.")
    return_token_type_ids: bool = Field(False, description="Tokenizer: token_type_ids too.")
    return_probabilities: bool = Field(
        False, description="Classification: probabilities instead of the predicted class."
    )
    tensor_input_names: list[str] | None = Field(
        None, description="v2: the tokenizer outputs to send as the request's tensors."
    )
    max_batch_size: int = Field(
        16, ge=1, description="Generation: sequences decoded together at most."
    )
    max_waiting_requests: int = Field(
        256,
        ge=0,
        description="Generation and embeddings: requests waiting for a batch; more are "
        "refused (503; 429 on the OpenAI routes).",
    )
    embedding_batch_size: int = Field(32, ge=1, description="Texts encoded together at most.")
    engine_args: list[str] = Field(
        default_factory=list, description="Flags not known here (vLLM engine arguments)."
    )

    @property
    def dtype_name(self) -> str:
        """torch dtype name; ``auto`` is float32 (the transformers backend runs on CPU)."""
        aliases = {"auto": "float32", "float": "float32", "half": "float16"}
        return aliases.get(self.dtype, self.dtype)

    @classmethod
    def from_args(cls, args: Sequence[str]) -> HuggingFaceSettings:
        """The settings in ``args`` (the server's unknown flags); others go to ``engine_args``."""
        parser = argparse.ArgumentParser(add_help=False, exit_on_error=False, allow_abbrev=False)
        for name in ("model_id", "model_revision", "tokenizer_revision", "task"):
            parser.add_argument(f"--{name}", default=None)
        parser.add_argument("--backend", default="auto")
        parser.add_argument("--dtype", default="auto")
        parser.add_argument("--max_length", "--max_model_len", dest="max_model_len", type=int)
        for name in (
            "trust_remote_code", "disable_lower_case", "disable_special_tokens",
            "return_token_type_ids", "return_probabilities",
        ):  # fmt: skip
            parser.add_argument(f"--{name}", nargs="?", const=True, default=False, type=_flag)
        parser.add_argument("--tensor_input_names", default=None)
        parser.add_argument("--max_batch_size", type=int, default=16)
        parser.add_argument("--max_waiting_requests", type=int, default=256)
        parser.add_argument("--embedding_batch_size", type=int, default=32)
        try:
            known, rest = parser.parse_known_args(list(args))
        except (argparse.ArgumentError, argparse.ArgumentTypeError) as exc:
            raise ValueError(f"huggingface runtime: {exc}") from None
        values = vars(known)
        names = values.pop("tensor_input_names")
        if names:
            values["tensor_input_names"] = [n.strip() for n in names.split(",") if n.strip()]
        return cls(**values, engine_args=rest)
