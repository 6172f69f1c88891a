"""Encoder tasks with transformers: sequence_classification, token_classification, fill_mask
and text_embedding (KServe's ``HuggingfaceEncoderModel`` outputs).

Over OIP v1 ``{"instances": ["text", ...]}`` -> ``{"predictions": [...]}``; v2 a BYTES input
(``text_input`` or the first) -> output ``output-0``. Per text:

- sequence_classification: the predicted class index (``--return_probabilities``: the class
  probabilities);
- token_classification: the predicted label index of every token;
- fill_mask: the predicted token for each mask token (one string, or a list for several);
- text_embedding: the mean-pooled, L2-normalised embedding.

Embeddings also serve the OpenAI ``embeddings`` route (:class:`~moorage.server.llm.TextEmbedder`):
concurrent requests are encoded together, up to ``--embedding_batch_size`` texts a batch, with a
bounded waiting queue (:class:`~moorage.core.errors.Overloaded` past it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from moorage.core.config.huggingface import HuggingFaceSettings
from moorage.core.errors import InvalidInput, ModelNotReady, Overloaded
from moorage.core.protocol import InferRequest, InferResponse, InferTensor
from moorage.server.llm import Embeddings
from moorage.server.model import Model
from moorage.server.runtimes.huggingface._task import MLTask
from moorage.server.runtimes.huggingface._text import load_pretrained, request_texts

__all__ = ["HuggingFaceEncoderModel"]

logger = logging.getLogger(__name__)

_AUTO_CLASSES = {
    MLTask.sequence_classification: "AutoModelForSequenceClassification",
    MLTask.token_classification: "AutoModelForTokenClassification",
    MLTask.fill_mask: "AutoModelForMaskedLM",
    MLTask.text_embedding: "AutoModel",
}


class HuggingFaceEncoderModel(Model):
    """An encoder-task model on the transformers backend."""

    platform = "huggingface"

    def __init__(
        self, name: str, source: str | Path, settings: HuggingFaceSettings, task: MLTask
    ) -> None:
        super().__init__(name)
        self.source = str(source)
        self.settings = settings
        self.task = task
        self.tokenizer: Any = None
        self.model: Any = None
        self._pending: list[tuple[list[str], asyncio.Future[Embeddings]]] = []
        self._drain: asyncio.Task[None] | None = None

    def load(self) -> bool:
        import transformers

        auto = getattr(transformers, _AUTO_CLASSES[self.task])
        self.tokenizer, self.model = load_pretrained(auto, self.source, self.settings)
        self.model.eval()
        self.ready = True
        return True

    # ------------------------------------------------------------------ encoding
    def _encode(self, texts: list[str]) -> tuple[Any, Any]:
        """``(model outputs, tokenizer inputs)`` for ``texts`` as one padded batch."""
        import torch

        s = self.settings
        inputs = self.tokenizer(
            texts,
            padding=True,
            truncation=True,
            max_length=s.max_model_len,
            add_special_tokens=not s.disable_special_tokens,
            return_token_type_ids=True if s.return_token_type_ids else None,
            return_tensors="pt",
        )
        with torch.inference_mode():
            outputs = self.model(**inputs)
        return outputs, inputs

    def embed_blocking(self, texts: list[str]) -> Embeddings:
        vectors, counts = self._embed_rows(texts)
        return Embeddings(vectors, sum(counts))

    def _embed_rows(self, texts: list[str]) -> tuple[list[list[float]], list[int]]:
        """One embedding and one token count per text."""
        import torch

        outputs, inputs = self._encode(texts)
        mask = inputs["attention_mask"].unsqueeze(-1).to(outputs.last_hidden_state.dtype)
        summed = (outputs.last_hidden_state * mask).sum(dim=1)
        pooled = summed / mask.sum(dim=1).clamp(min=1e-9)
        vectors = torch.nn.functional.normalize(pooled, p=2, dim=1)
        counts = inputs["attention_mask"].sum(dim=1).tolist()
        return vectors.float().tolist(), counts

    def _predict_blocking(self, texts: list[str]) -> list[Any]:
        if self.task is MLTask.text_embedding:
            return self.embed_blocking(texts).vectors
        import torch

        outputs, inputs = self._encode(texts)
        logits = outputs.logits
        if self.task is MLTask.sequence_classification:
            if self.settings.return_probabilities:
                return torch.softmax(logits, dim=-1).tolist()
            return logits.argmax(dim=-1).tolist()
        if self.task is MLTask.token_classification:
            predictions = logits.argmax(dim=-1)
            mask = inputs["attention_mask"].bool()
            return [predictions[i][mask[i]].tolist() for i in range(len(texts))]
        # fill_mask
        mask_id = self.tokenizer.mask_token_id
        if mask_id is None:
            raise InvalidInput(f"model '{self.name}' has no mask token")
        results: list[Any] = []
        for i in range(len(texts)):
            positions = (inputs["input_ids"][i] == mask_id).nonzero().flatten().tolist()
            if not positions:
                raise InvalidInput(f"text {i} has no {self.tokenizer.mask_token} token to fill")
            words = [self.tokenizer.decode(logits[i, p].argmax(dim=-1)) for p in positions]
            results.append(words[0] if len(words) == 1 else words)
        return results

    def get_input_types(self) -> list[dict[str, Any]]:
        return [{"name": "text_input", "datatype": "BYTES", "shape": [-1]}]

    def get_output_types(self) -> list[dict[str, Any]]:
        if self.task in (MLTask.fill_mask, MLTask.token_classification):
            return [{"name": "output-0", "datatype": "BYTES", "shape": [-1]}]
        if self.task is MLTask.sequence_classification and not self.settings.return_probabilities:
            return [{"name": "output-0", "datatype": "INT64", "shape": [-1]}]
        return [{"name": "output-0", "datatype": "FP32", "shape": [-1, -1]}]

    async def predict(
        self, payload: Any, headers: dict[str, str] | None = None, response_headers: Any = None
    ) -> Any:
        texts, _ = request_texts(payload, self.settings)
        if not texts:
            raise InvalidInput("no texts in the request")
        if self.task is MLTask.text_embedding:
            predictions: list[Any] = (await self.embed(texts)).vectors
        else:
            predictions = await asyncio.to_thread(self._predict_blocking, texts)
        if isinstance(payload, InferRequest):
            if self.task is MLTask.fill_mask or self.task is MLTask.token_classification:
                data = np.array([str(p) if not isinstance(p, str) else p for p in predictions],
                                dtype=object)  # fmt: skip
                tensor = InferTensor.from_numpy("output-0", data, datatype="BYTES")
            else:
                array = np.asarray(predictions)
                if array.dtype.kind == "f":
                    array = array.astype(np.float32)
                tensor = InferTensor.from_numpy("output-0", array)
            return InferResponse(self.name, [tensor], id=payload.id)
        return {"predictions": predictions}

    # ------------------------------------------------------------------ TextEmbedder
    async def embed(self, texts: Sequence[str]) -> Embeddings:
        """Embed ``texts``, encoded together with the other requests waiting now."""
        if not self.ready:
            raise ModelNotReady(f"Model with name {self.name} is not ready.", model=self.name)
        if self.task is not MLTask.text_embedding:
            raise InvalidInput(
                f"model '{self.name}' does its task {self.task.value}, not text_embedding"
            )
        if len(self._pending) >= max(1, self.settings.max_waiting_requests):
            raise Overloaded(
                f"model '{self.name}' has {len(self._pending)} embedding requests waiting; "
                "retry later",
                model=self.name,
            )
        future: asyncio.Future[Embeddings] = asyncio.get_running_loop().create_future()
        self._pending.append((list(texts), future))
        if self._drain is None or self._drain.done():
            self._drain = asyncio.create_task(self._drain_pending())
        return await future

    async def _drain_pending(self) -> None:
        limit = self.settings.embedding_batch_size
        while self._pending:
            batch: list[tuple[list[str], asyncio.Future[Embeddings]]] = []
            count = 0
            while self._pending and (not batch or count + len(self._pending[0][0]) <= limit):
                item = self._pending.pop(0)
                if item[1].done():  # its caller went away
                    continue
                batch.append(item)
                count += len(item[0])
            if not batch:
                continue
            texts = [t for item in batch for t in item[0]]
            try:
                vectors, counts = await asyncio.to_thread(self._embed_rows, texts)
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            start = 0
            for item_texts, future in batch:
                end = start + len(item_texts)
                if not future.done():
                    future.set_result(Embeddings(vectors[start:end], sum(counts[start:end])))
                start = end
