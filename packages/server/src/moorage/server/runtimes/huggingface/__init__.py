"""The ``huggingface`` runtime (KServe's huggingfaceserver): transformers on CPU with
continuous batching, or vLLM (extra ``vllm``).

Tasks: text_generation and text2text_generation (OpenAI completions and chat, and OIP),
text_embedding (OpenAI embeddings, and OIP), sequence_classification, token_classification and
fill_mask (OIP). Flags: :class:`~moorage.core.config.huggingface.HuggingFaceSettings`. Needs
the ``huggingface`` extra (transformers, tokenizers, ``torch==2.13.0``); this package imports
none of them until a model is created.
"""

from moorage.server.runtimes.huggingface._runtime import (
    HuggingFaceRuntime,
    build_huggingface_model,
    huggingface_runtime,
)
from moorage.server.runtimes.huggingface._task import (
    SUPPORTED_TASKS,
    MLTask,
    infer_task,
    parse_task,
)

__all__ = [
    "SUPPORTED_TASKS",
    "HuggingFaceRuntime",
    "MLTask",
    "build_huggingface_model",
    "huggingface_runtime",
    "infer_task",
    "parse_task",
]
