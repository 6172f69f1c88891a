"""KServe's ML tasks: the names, which are served, and the task a model config implies."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from moorage.core.errors import InvalidInput

__all__ = ["GENERATIVE", "SUPPORTED_TASKS", "MLTask", "check_task", "infer_task", "parse_task"]


class MLTask(StrEnum):
    table_question_answering = "table_question_answering"
    question_answering = "question_answering"
    token_classification = "token_classification"
    sequence_classification = "sequence_classification"
    fill_mask = "fill_mask"
    text_generation = "text_generation"
    text2text_generation = "text2text_generation"
    multiple_choice = "multiple_choice"
    text_embedding = "text_embedding"


SUPPORTED_TASKS = (
    MLTask.sequence_classification,
    MLTask.token_classification,
    MLTask.fill_mask,
    MLTask.text_generation,
    MLTask.text2text_generation,
    MLTask.text_embedding,
)
GENERATIVE = (MLTask.text_generation, MLTask.text2text_generation)

#: Architecture-name suffix -> task, in KServe's order (Tapas before ForQuestionAnswering).
_SUFFIXES = (
    ("TapasForQuestionAnswering", MLTask.table_question_answering),
    ("ForQuestionAnswering", MLTask.question_answering),
    ("ForTokenClassification", MLTask.token_classification),
    ("ForSequenceClassification", MLTask.sequence_classification),
    ("ForMultipleChoice", MLTask.multiple_choice),
    ("ForMaskedLM", MLTask.fill_mask),
    ("ForCausalLM", MLTask.text_generation),
    ("ForConditionalGeneration", MLTask.text2text_generation),
    ("MTModel", MLTask.text2text_generation),
    ("EncoderDecoderModel", MLTask.text2text_generation),
)


def _supported() -> str:
    return ", ".join(t.value for t in SUPPORTED_TASKS)


def parse_task(name: str) -> MLTask:
    """``--task`` (case-insensitive, ``-`` or ``_``) or :class:`InvalidInput`."""
    key = name.strip().lower().replace("-", "_")
    try:
        task = MLTask(key)
    except ValueError:
        raise InvalidInput(
            f"Unsupported task: {name}. Currently supported tasks are: {_supported()}"
        ) from None
    if task not in SUPPORTED_TASKS:
        raise InvalidInput(
            f"Task {task.value} is not supported. Currently supported tasks are: {_supported()}"
        )
    return task


def infer_task(config: Any) -> MLTask:
    """The task of a transformers config, from ``architectures[0]``'s suffix (KServe's rule;
    ``text_embedding`` only when asked for with ``--task``)."""
    architectures = getattr(config, "architectures", None) or []
    arch = architectures[0] if architectures else None
    if arch is not None:
        for suffix, task in _SUFFIXES:
            if arch.endswith(suffix):
                if task not in SUPPORTED_TASKS:
                    raise InvalidInput(
                        f"Task {task.value} (inferred from {arch}) is not supported. "
                        f"Currently supported tasks are: {_supported()}"
                    )
                return task
    raise InvalidInput(
        f"Task couldn't be inferred from {arch}. Please manually set `task` option "
        f"(--task, one of {_supported()})."
    )


def check_task(task: MLTask, config: Any) -> None:
    """:class:`InvalidInput` when the model cannot do ``task`` (a causal LM asked to classify,
    an encoder asked to generate): the architecture must have the matching head."""
    architectures = getattr(config, "architectures", None) or []
    arch = architectures[0] if architectures else ""
    if task is MLTask.text_embedding or not arch:
        return
    try:
        natural = infer_task(config)
    except InvalidInput:
        return  # a bare base model (BertModel): the task's head is built by AutoModelFor...
    generative = natural in GENERATIVE
    if (task in GENERATIVE) != generative or (
        task is MLTask.text_generation and natural is MLTask.text2text_generation
    ):
        raise InvalidInput(
            f"the model's architecture {arch} cannot do task {task.value} "
            f"(its task is {natural.value})"
        )
