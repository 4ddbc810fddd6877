"""The generation engine: continuous batching of concurrent requests over the model's KV cache.

One background thread owns the model. Between decode steps it admits waiting requests into free
slots of a `model.kvcache.SlotKVCache` (prefilling each prompt into its slot), then runs one decode
step for every running request at once, each row at its own position. Running rows are kept packed
in slots 0..b-1 (a finished row is replaced by the last one), so a decode step reads the cache as a
plain slice without gathering. Tokens are picked by `model.sampling.sample_next`, the sampler
`model.generate` uses too. A request that cannot be sampled or prefilled fails alone; only a
failing decode step (a bug, out of memory) fails the rows that were in it.

Requests talk to the loop through a `sink` callable that receives `StreamEvent`s; the HTTP layer
passes one that hops onto its event loop, the blocking helpers pass a `queue.Queue.put`.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch

from auroragpt.log import get_logger
from auroragpt.model.kvcache import SlotKVCache
from auroragpt.model.sampling import sample_next
from auroragpt.model.sampling_params import SamplingParams
from auroragpt.serve.events import StreamEvent

log = get_logger(__name__)

# Text the detokenizer yields for an incomplete UTF-8 sequence; held back until the next token.
_REPLACEMENT = "\ufffd"


@dataclass
class Completion:
    """The whole answer of a blocking `Engine.generate` call."""

    text: str
    token_ids: list[int]
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    ttft_s: float
    latency_s: float


@dataclass
class _Request:
    prompt_ids: list[int]
    params: SamplingParams
    sink: Callable[[StreamEvent], None]
    submitted_at: float
    generator: torch.Generator | None = None
    generated: list[int] = field(default_factory=list)
    emitted_chars: int = 0
    position: int = 0  # position of the next token to feed (= tokens already in the cache)
    cancelled: bool = False  # set by the submitter
    done: bool = False  # set by the engine; the row is released at the end of the step


class RequestHandle:
    """Lets the submitter cancel a request (e.g. the HTTP client went away)."""

    def __init__(self, request: _Request) -> None:
        self._request = request

    def cancel(self) -> None:
        self._request.cancelled = True

    @property
    def completion_tokens(self) -> int:
        """Tokens generated so far (a cancelled request stops growing)."""
        return len(self._request.generated)


def _emit(request: _Request, event: StreamEvent) -> None:
    """Hand an event to its request; a broken sink cancels only that request."""
    try:
        request.sink(event)
    except Exception:
        log.warning("dropping a request whose consumer failed", exc_info=True)
        request.cancelled = True


def _fail(request: _Request, message: str) -> None:
    """End one request with an error event."""
    _emit(request, StreamEvent("", [], True, "error", len(request.prompt_ids), len(request.generated), message))


class Engine:
    """Continuous-batching generator over a `GPT` model and a text tokenizer.

    `max_batch` rows decode together; `max_seq_len` bounds prompt + completion (and the cache);
    prompts are prefilled `prefill_chunk` tokens at a time, which bounds the logits held at once.
    """

    def __init__(self, model: torch.nn.Module, tokenizer, *, max_batch: int = 8, max_seq_len: int | None = None,
                 prefill_chunk: int = 512) -> None:
        cfg = model.cfg
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_batch = max_batch
        self.prefill_chunk = prefill_chunk
        self.max_seq_len = min(max_seq_len or cfg.max_seq_len, cfg.max_seq_len)
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        self._cache = SlotKVCache(model, max_batch, self.max_seq_len)
        self._eod = getattr(tokenizer, "eod_id", None)
        self._waiting: deque[_Request] = deque()
        self._running: list[_Request] = []  # row i of the cache belongs to _running[i]
        self._wake = threading.Condition()
        self._stopped = False
        self._thread: threading.Thread | None = None
        self.steps = 0
        self.tokens_generated = 0  # by every request, finished, cancelled or failed

    # ---- submitter side -------------------------------------------------------------------

    @property
    def queue_depth(self) -> int:
        return len(self._waiting)

    @property
    def num_running(self) -> int:
        return len(self._running)

    def start(self) -> "Engine":
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="auroragpt-engine", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        with self._wake:
            self._stopped = True
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def check_fits(self, prompt_tokens: int, max_tokens: int) -> None:
        """Raise ValueError when a request cannot fit in the context window."""
        if prompt_tokens < 1:
            raise ValueError("the prompt is empty")
        if prompt_tokens + max_tokens > self.max_seq_len:
            raise ValueError(
                f"prompt ({prompt_tokens} tokens) + max_tokens ({max_tokens}) exceeds the context "
                f"window of {self.max_seq_len} tokens; shorten the prompt or lower max_tokens"
            )

    def submit(self, prompt_ids: list[int], params: SamplingParams, sink: Callable[[StreamEvent], None]) -> RequestHandle:
        """Queue a request; events go to `sink` from the engine thread."""
        params.validate()
        self.check_fits(len(prompt_ids), params.max_tokens)
        generator = None
        if params.temperature > 0:
            generator = torch.Generator()
            generator.manual_seed(params.seed if params.seed is not None else int.from_bytes(os.urandom(8), "little") >> 1)
        request = _Request(list(prompt_ids), params, sink, time.perf_counter(), generator)
        with self._wake:
            if self._stopped:
                raise RuntimeError("the engine is stopped")
            self._waiting.append(request)
            self._wake.notify()
        self.start()
        return RequestHandle(request)

    def stream(self, prompt_ids: list[int], params: SamplingParams, timeout_s: float = 600.0) -> Iterator[StreamEvent]:
        """Blocking iterator over one request's events."""
        events: queue.Queue[StreamEvent] = queue.Queue()
        handle = self.submit(prompt_ids, params, events.put)
        try:
            while True:
                event = events.get(timeout=timeout_s)
                yield event
                if event.finished:
                    return
        finally:
            handle.cancel()

    def generate(self, prompt_ids: list[int], params: SamplingParams, timeout_s: float = 600.0) -> Completion:
        """Blocking: the whole completion with its timings."""
        start = time.perf_counter()
        first = None
        text, ids = [], []
        for event in self.stream(prompt_ids, params, timeout_s):
            if first is None and event.token_ids:
                first = time.perf_counter() - start
            text.append(event.text)
            ids.extend(event.token_ids)
            if event.finished:
                if event.error:
                    raise RuntimeError(event.error)
                return Completion("".join(text), ids, event.finish_reason or "stop", event.prompt_tokens,
                                  event.completion_tokens, first or 0.0, time.perf_counter() - start)
        raise RuntimeError("the engine stopped before the request finished")

    # ---- engine thread --------------------------------------------------------------------

    def _loop(self) -> None:
        torch.set_grad_enabled(False)
        while True:
            with self._wake:
                while not self._stopped and not self._waiting and not self._running:
                    self._wake.wait()
                if self._stopped:
                    break
            try:
                with torch.inference_mode():
                    self._admit()
                    if self._running:
                        self._decode_step()
            except Exception as err:  # a bug or out-of-memory: fail the rows of this step, keep serving
                log.exception("engine step failed")
                self._fail(f"{type(err).__name__}: {err}", waiting_too=False)
        self._fail("the server is shutting down", waiting_too=True)

    def _fail(self, message: str, waiting_too: bool) -> None:
        with self._wake:
            victims = self._running + (list(self._waiting) if waiting_too else [])
            self._running = []
            if waiting_too:
                self._waiting = deque()
        for request in victims:
            _fail(request, message)

    def _admit(self) -> None:
        while len(self._running) < self.max_batch:
            with self._wake:
                if not self._waiting:
                    break
                request = self._waiting.popleft()
            if request.cancelled:
                continue
            slot = len(self._running)
            try:
                logits = self._cache.prefill(self.model, slot, request.prompt_ids, self.prefill_chunk)
            except Exception as err:  # this prompt alone: the slot is still free
                log.exception("prefill failed")
                _fail(request, f"{type(err).__name__}: {err}")
                continue
            request.position = len(request.prompt_ids)
            self._running.append(request)
            self._accept(slot, logits)
        self._drop_finished()

    def _decode_step(self) -> None:
        running = self._running
        tokens = torch.tensor([[r.generated[-1]] for r in running], device=self.device)
        positions = torch.tensor([r.position for r in running], device=self.device)
        last = self._cache.decode(self.model, tokens[:, 0], positions)
        self.steps += 1
        greedy = last.argmax(dim=-1).tolist()  # one call for every row; sampled rows redo their own
        for row, request in enumerate(running):
            request.position += 1
            self._accept(row, last[row], greedy[row])
        self._drop_finished()

    def _accept(self, row: int, logits: torch.Tensor, greedy: int | None = None) -> None:
        """Sample a token for `row`, stream the text it completes, and mark the row if done."""
        request = self._running[row]
        if request.cancelled:
            request.done = True
            return
        if greedy is not None and request.params.temperature == 0:
            token = greedy
        else:
            p = request.params
            try:
                token = int(sample_next(logits, p.temperature, p.top_p, p.top_k, request.generator)[0])
            except Exception as err:  # this request alone; the others in the step go on
                log.warning("sampling failed for one request: %s", err)
                _fail(request, f"{type(err).__name__}: {err}")
                request.done = True
                return
        reason = None
        if self._eod is not None and token == self._eod and not request.params.ignore_eos:
            reason = "stop"
        else:
            request.generated.append(token)
            self.tokens_generated += 1
        text = self.tokenizer.decode(request.generated)
        for stop in request.params.stop:
            found = text.find(stop, max(0, request.emitted_chars - len(stop) + 1))
            if found >= 0:
                text, reason = text[:found], "stop"
        if reason is None and len(request.generated) >= request.params.max_tokens:
            reason = "length"
        if reason is None and request.position >= self.max_seq_len:
            reason = "length"
        safe = len(text)
        if reason is None:
            hold = max((len(s) - 1 for s in request.params.stop), default=0)
            safe = len(text) - hold
            while safe > 0 and text[safe - 1] == _REPLACEMENT:
                safe -= 1
        new_text = text[request.emitted_chars: safe] if safe > request.emitted_chars else ""
        request.emitted_chars = max(request.emitted_chars, safe)
        new_ids = [] if (reason == "stop" and token == self._eod) else [token]
        _emit(request, StreamEvent(new_text, new_ids, reason is not None, reason,
                                   len(request.prompt_ids), len(request.generated)))
        if reason is not None:
            request.done = True

    def _drop_finished(self) -> None:
        """Release finished rows, moving the last running row into each hole to keep rows packed."""
        row = len(self._running) - 1
        while row >= 0:
            if self._running[row].done:
                last = len(self._running) - 1
                if row != last:
                    self._cache.move(last, row, self._running[last].position)
                    self._running[row] = self._running[last]
                self._running.pop()
            row -= 1
