"""Continuous batching for a transformers causal LM on CPU.

One thread owns the model and runs the loop::

    admit waiting requests (up to max_batch_size running): prefill each, merge its KV cache
    one decoding step for every running sequence: model(last tokens, past_key_values)
    sample each row with its own parameters; stream its text; drop the finished and cancelled

Requests join and leave between steps: a new request is prefilled alone (its prompt through the
model once), then its cache rows are appended to the running batch's. Rows of different lengths
are left-padded in the cache and masked out by the attention mask; each row's position ids are
its own. A finished or cancelled row is removed from the cache by index, and columns that every
remaining row pads are trimmed, so the batch's cache stays as short as its longest sequence.
Models whose cache is not transformers' plain ``DynamicCache`` (sliding windows, hybrid
caches) are served one sequence at a time by the same loop.

The waiting queue is bounded: :meth:`ContinuousBatcher.submit` raises
:class:`~moorage.core.errors.Overloaded` instead of queueing without bound.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.nn import functional

from moorage.core.errors import Overloaded
from moorage.server.llm import FinishReason, GenerationChunk, SamplingParams, notify

__all__ = ["ContinuousBatcher", "SequenceStream"]

logger = logging.getLogger(__name__)

_REPLACEMENT = "\ufffd"  # an incomplete UTF-8 sequence at the end of decoded text


@dataclass(eq=False)
class _Sequence:
    prompt_ids: list[int]
    params: SamplingParams
    max_tokens: int
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[GenerationChunk | BaseException]
    submitted: float = field(default_factory=time.perf_counter)
    generated: list[int] = field(default_factory=list)
    text_ids: list[int] = field(default_factory=list)  # generated, less a final EOS
    sent: int = 0  # characters of text streamed so far
    pos: int = 0  # tokens of this sequence in the cache
    last_token: int = 0
    last_time: float = 0.0
    generator: torch.Generator | None = None
    cancelled: bool = False
    done: bool = False

    def put(self, item: GenerationChunk | BaseException) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # the request's loop is closed: nobody listens any more
            self.cancelled = True


class ContinuousBatcher:
    """Runs generation requests of one model in a shared decoding loop (see the module doc)."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        name: str,
        max_batch_size: int,
        max_waiting: int,
        max_model_len: int,
        eos_token_ids: Sequence[int],
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.max_batch_size = max_batch_size
        self.max_waiting = max_waiting
        self.max_model_len = max_model_len
        self.eos_token_ids = frozenset(eos_token_ids)
        self._waiting: collections.deque[_Sequence] = collections.deque()
        self._rows: list[_Sequence] = []
        self._active = 0  # rows plus sequences being admitted (what counts against the batch)
        self._cache: Any = None
        self._mask: torch.Tensor | None = None
        self._cond = threading.Condition()
        self._stopped = False
        self._mergeable: bool | None = None
        self._thread: threading.Thread | None = None
        # transformers 5 renamed the forward's past_key_values to cache.
        params = inspect.signature(model.forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name=f"moorage-llm-{self.name}", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    @property
    def alive(self) -> bool:
        """Whether the loop's thread runs (``False`` before :meth:`start`)."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def running(self) -> int:
        return len(self._rows)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    # ------------------------------------------------------------------ requests
    def submit(
        self, prompt_ids: list[int], params: SamplingParams, max_tokens: int
    ) -> SequenceStream:
        """Queue one sequence now (:class:`Overloaded` if the queue is full) and return the
        stream of its chunks; closing the stream cancels the sequence."""
        loop = asyncio.get_running_loop()
        seq = _Sequence(list(prompt_ids), params, max_tokens, loop, asyncio.Queue())
        if params.seed is not None:
            seq.generator = torch.Generator().manual_seed(params.seed)
        with self._cond:
            if self._stopped:
                raise Overloaded(f"model '{self.name}' is stopping", model=self.name)
            room = self.max_waiting + max(0, self.max_batch_size - self._active)
            if len(self._waiting) >= room:
                raise Overloaded(
                    f"model '{self.name}' has {len(self._waiting)} generation requests waiting "
                    f"(limit {self.max_waiting}); retry later",
                    model=self.name,
                )
            self._waiting.append(seq)
            self._cond.notify()
        return SequenceStream(self, seq)

    def _cancel(self, seq: _Sequence) -> None:
        if not seq.done:
            seq.cancelled = True
            with self._cond:
                self._cond.notify()

    # ------------------------------------------------------------------ the loop
    def _run(self) -> None:
        torch.set_grad_enabled(False)
        while True:
            with self._cond:
                while not self._stopped and not self._waiting and not self._rows:
                    self._cond.wait()
                if self._stopped:
                    break
                admitted = self._admit()
            try:
                with torch.inference_mode():
                    for seq in admitted:
                        self._prefill(seq)
                    self._drop_finished()
                    if self._rows:
                        self._decode_step()
                        self._drop_finished()
            except Exception as exc:  # the model failed: fail every sequence it was running
                logger.exception("generation step of model %s failed", self.name)
                for seq in [*self._rows, *admitted]:
                    if not seq.done:
                        seq.done = True
                        seq.put(exc)
                self._rows, self._cache, self._mask = [], None, None
            self._active = len(self._rows)
            notify("queue", self.name, len(self._rows), len(self._waiting))
        for seq in [*self._rows, *self._waiting]:
            seq.done = True
            seq.put(Overloaded(f"model '{self.name}' stopped", model=self.name))

    def _admit(self) -> list[_Sequence]:
        limit = self.max_batch_size if self._mergeable else 1
        admitted: list[_Sequence] = []
        while self._waiting and len(self._rows) + len(admitted) < limit:
            seq = self._waiting.popleft()
            if not seq.cancelled:
                admitted.append(seq)
        self._active = len(self._rows) + len(admitted)
        return admitted

    def _prefill(self, seq: _Sequence) -> None:
        if seq.cancelled:
            seq.done = True
            return
        ids = torch.tensor([seq.prompt_ids], dtype=torch.long)
        mask = torch.ones_like(ids)
        out = self.model(input_ids=ids, attention_mask=mask, use_cache=True)
        seq.pos = len(seq.prompt_ids)
        self._merge(_cache_of(out), mask)
        self._rows.append(seq)
        self._advance(seq, out.logits[0, -1])

    def _decode_step(self) -> None:
        assert self._mask is not None
        rows = self._rows
        input_ids = torch.tensor([[s.last_token] for s in rows], dtype=torch.long)
        positions = torch.tensor([[s.pos] for s in rows], dtype=torch.long)
        self._mask = torch.cat([self._mask, torch.ones((len(rows), 1), dtype=torch.long)], dim=1)
        out = self.model(
            input_ids=input_ids,
            attention_mask=self._mask,
            position_ids=positions,
            use_cache=True,
            **{self._cache_arg: self._cache},
        )
        self._cache = _cache_of(out)
        logits = out.logits[:, -1, :]
        for i, seq in enumerate(rows):
            seq.pos += 1
            if not seq.cancelled:
                self._advance(seq, logits[i])

    # ------------------------------------------------------------------ the KV cache
    def _layers(self, cache: Any) -> list[Any] | None:
        layers = getattr(cache, "layers", None)
        if not layers:
            return None
        for layer in layers:
            if type(layer).__name__ != "DynamicLayer" or getattr(layer, "keys", None) is None:
                return None
        return list(layers)

    def _merge(self, cache: Any, mask: torch.Tensor) -> None:
        if self._cache is None or self._mask is None:
            self._cache, self._mask = cache, mask
            if self._mergeable is None:
                self._mergeable = self._layers(cache) is not None
                if not self._mergeable:
                    logger.info("model %s: cache cannot be merged; one sequence at a time",
                                self.name)  # fmt: skip
            return
        old_layers, new_layers = self._layers(self._cache), self._layers(cache)
        if old_layers is None or new_layers is None:  # pragma: no cover - guarded by _admit
            raise RuntimeError("cannot merge these KV caches")
        length = max(self._mask.shape[1], mask.shape[1])
        pad_old, pad_new = length - self._mask.shape[1], length - mask.shape[1]
        for old, new in zip(old_layers, new_layers, strict=True):
            old.keys = torch.cat([_pad_seq(old.keys, pad_old), _pad_seq(new.keys, pad_new)])
            old.values = torch.cat([_pad_seq(old.values, pad_old), _pad_seq(new.values, pad_new)])
        pad = functional.pad
        self._mask = torch.cat([pad(self._mask, (pad_old, 0)), pad(mask, (pad_new, 0))])

    def _drop_finished(self) -> None:
        keep = [i for i, s in enumerate(self._rows) if not (s.done or s.cancelled)]
        for seq in self._rows:
            if seq.cancelled and not seq.done:
                seq.done = True
                notify("finished", self.name, len(seq.prompt_ids), len(seq.generated))
        if len(keep) == len(self._rows):
            return
        self._rows = [self._rows[i] for i in keep]
        if not keep or self._mask is None:
            self._cache, self._mask = None, None
            return
        index = torch.tensor(keep, dtype=torch.long)
        mask = self._mask.index_select(0, index)
        used = mask.any(dim=0).nonzero()
        start = int(used[0]) if len(used) else 0
        layers = self._layers(self._cache) or []
        for layer in layers:
            layer.keys = layer.keys.index_select(0, index)[..., start:, :]
            layer.values = layer.values.index_select(0, index)[..., start:, :]
        self._mask = mask[:, start:]

    # ------------------------------------------------------------------ tokens and text
    def _advance(self, seq: _Sequence, logits: torch.Tensor) -> None:
        token = _sample(logits, seq.params, seq.generator)
        now = time.perf_counter()
        if not seq.generated:
            notify("first_token", self.name, now - seq.submitted)
        else:
            notify("next_token", self.name, now - seq.last_time)
        seq.last_time = now
        seq.generated.append(token)
        seq.last_token = token
        finish: FinishReason | None = None
        if token in self.eos_token_ids and not seq.params.ignore_eos:
            finish = "stop"
        else:
            seq.text_ids.append(token)
        text = self.tokenizer.decode(seq.text_ids, skip_special_tokens=True)
        stops = seq.params.stop
        if stops:
            cut = _find_stop(text, stops, max(0, seq.sent - max(map(len, stops))))
            if cut is not None:
                text, finish = text[:cut], "stop"
        if finish is None and (
            len(seq.generated) >= seq.max_tokens or seq.pos + 1 >= self.max_model_len
        ):
            finish = "length"
        if finish is not None:
            chunk_text = text[seq.sent :]
            seq.done = True
            notify("finished", self.name, len(seq.prompt_ids), len(seq.generated))
        else:
            safe = len(text) - 1 if text.endswith(_REPLACEMENT) else len(text)
            if stops:  # hold back what may be the start of a stop string
                safe = min(safe, len(text) - max(map(len, stops)) + 1)
            safe = max(safe, seq.sent)
            chunk_text = text[seq.sent : safe]
            seq.sent = safe
            if not chunk_text:
                return
        seq.put(GenerationChunk(chunk_text, len(seq.prompt_ids), len(seq.generated), finish))


class SequenceStream:
    """The chunks of one queued sequence (an async iterator); :meth:`aclose` cancels it."""

    def __init__(self, batcher: ContinuousBatcher, seq: _Sequence) -> None:
        self._batcher = batcher
        self._seq = seq
        self._finished = False

    def __aiter__(self) -> SequenceStream:
        return self

    async def __anext__(self) -> GenerationChunk:
        if self._finished:
            raise StopAsyncIteration
        try:
            item = await self._seq.queue.get()
        except BaseException:
            self._batcher._cancel(self._seq)
            raise
        if isinstance(item, BaseException):
            self._finished = True
            raise item
        if item.finish_reason is not None:
            self._finished = True
        return item

    async def aclose(self) -> None:
        self._finished = True
        self._batcher._cancel(self._seq)


def _cache_of(output: Any) -> Any:
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


def _pad_seq(tensor: torch.Tensor, count: int) -> torch.Tensor:
    """``tensor`` ``[batch, heads, seq, dim]`` with ``count`` zero positions on the left."""
    return functional.pad(tensor, (0, 0, count, 0)) if count else tensor


def _find_stop(text: str, stops: Sequence[str], start: int) -> int | None:
    found = [i for i in (text.find(s, start) for s in stops if s) if i >= 0]
    return min(found) if found else None


def _sample(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None) -> int:
    if params.temperature <= 1e-5:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits.float() / params.temperature, dim=-1)
    if params.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        outside = torch.cumsum(sorted_probs, dim=-1) - sorted_probs > params.top_p
        sorted_probs = sorted_probs.masked_fill(outside, 0.0)
        choice = torch.multinomial(sorted_probs, 1, generator=generator)
        return int(order[choice])
    return int(torch.multinomial(probs, 1, generator=generator))
