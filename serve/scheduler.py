"""Fair batching across requests: the scheduler between the service's endpoints and the model (one per worker).

BentoML's adaptive batcher dispatches whole requests in arrival order, so one request of 256 long texts is one
model call of seconds and every request behind it waits (head-of-line blocking). This scheduler splits requests
into units instead and builds each model call from the units of all waiting requests:

- **Units.** A request becomes one unit per input the model reads: a text (or pair), or one window of a QA
  context. Each unit carries its token length.
- **Fewest inputs left first.** The head of each call is the waiting request with the fewest units not yet run
  (ties: the one that arrived first). A new one-text request is therefore the next call's head, whatever else is
  queued: it waits for at most the call in flight. Among big requests the one closest to done goes first, so
  they finish one after another instead of all late together; requests of one input each are served in arrival
  order (ranking them by their token counts instead would starve long texts under steady load). A big request
  behind a steady stream of small ones that fills the model waits, up to the deadline below.
- **Length buckets.** A call takes units of the head unit's length bucket only (powers of two: up to 8, 16, 32,
  ... tokens), from the waiting requests in the order above, so a short text is not padded to the longest input
  in the queue, and batching keeps its gain.
- **Bounded calls.** A call holds at most `max_batch` units, `max_tokens` padded tokens (rows x the longest row),
  and as many padded tokens as the model runs in `max_call_s` by a line fitted to the earlier calls' seconds
  against their padded tokens (`CallCost`; at least one unit): a time slice, so the wait behind a call in flight is bounded whatever was sent, on
  any model and machine.
- **Deadline.** A request not finished within `max_wait_s` of arriving fails with `Overloaded` (the service
  answers 503 with Retry-After) and its remaining units are dropped; so does one whose client went away.

With `cross_request=False` a call holds units of one request only (the service's COMPRESS_BATCHING=0).
Model calls run one at a time on a thread of their own (ONNX Runtime's intra-op threads do the parallel work), so
the event loop stays free to accept and answer requests.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

__all__ = ["CallCost", "FairBatcher", "Overloaded", "bucket_of"]


class Overloaded(RuntimeError):
    """A request that could not be served within the scheduler's deadline."""


def bucket_of(length: int) -> int:
    """The length bucket of a unit: the smallest power of two, at least 8, that holds it."""
    b = 8
    while b < length:
        b *= 2
    return b


@dataclass(eq=False)
class _Request:
    seq: int
    lengths: list[int]
    arrived: float
    future: asyncio.Future
    pending: dict[int, deque[int]] = field(default_factory=dict)  # bucket -> unit indices not yet taken
    results: list[Any] = field(default_factory=list)
    left: int = 0  # units not yet answered
    left_to_take: int = 0  # units not yet taken into a call

    def first_bucket(self) -> int:
        return min(b for b, q in self.pending.items() if q)

    def has_pending(self) -> bool:
        return any(self.pending.values())


class CallCost:
    """A model call's seconds against its padded tokens: a least-squares line, fixed + per_token x tokens, over
    the recent calls (older ones fade by `decay` per call). Until sizes vary enough to fit a slope, all the time
    is put on the tokens (the conservative side: calls come out smaller, never longer than the slice)."""

    def __init__(self, decay: float = 0.95) -> None:
        self.decay = decay
        self.n = self.x = self.y = self.xx = self.xy = 0.0

    def add(self, tokens: int, seconds: float) -> None:
        d = self.decay
        self.n, self.x, self.y = d * self.n + 1, d * self.x + tokens, d * self.y + seconds
        self.xx, self.xy = d * self.xx + tokens * tokens, d * self.xy + tokens * seconds

    def line(self) -> tuple[float, float] | None:
        """(fixed seconds, seconds per token), or None before the first call."""
        if self.n == 0:
            return None
        mx, my = self.x / self.n, self.y / self.n
        var = self.xx / self.n - mx * mx
        if var > 0.01 * mx * mx:  # sizes spread by more than a tenth of their mean
            slope = (self.xy / self.n - mx * my) / var
            if slope > 0:
                return max(0.0, my - slope * mx), slope
        return 0.0, my / mx

    def tokens_within(self, seconds: float) -> int | None:
        """The padded tokens a call can hold and end within `seconds` (None before the first call)."""
        fit = self.line()
        if fit is None:
            return None
        fixed, per_token = fit
        return max(1, int((seconds - fixed) / per_token)) if per_token > 0 else None


class FairBatcher:
    """Fair, length-bucketed batching of units from concurrent requests into model calls.

    `run_batch(payloads)` runs one model call on a list of unit payloads (what the caller passed to `submit`) and
    returns one output per payload, in order; it runs on the scheduler's own thread.
    """

    def __init__(self, run_batch: Callable[[list[Any]], Sequence[Any]], *, max_batch: int = 32,
                 max_tokens: int = 4096, max_call_s: float | None = 0.02, max_wait_s: float = 10.0,
                 cross_request: bool = True,
                 on_batch: Callable[[int, int, int, float], None] | None = None) -> None:
        if max_batch < 1 or max_tokens < 1:
            raise ValueError(f"max_batch={max_batch} and max_tokens={max_tokens} must both be at least 1")
        self.run_batch = run_batch
        self.max_batch = max_batch
        self.max_tokens = max_tokens
        self.max_call_s = max_call_s
        self.cost = CallCost()  # seconds per call against its padded tokens, fitted on the calls so far
        self.max_wait_s = max_wait_s
        self.cross_request = cross_request
        self.on_batch = on_batch  # (units, real tokens, padded tokens, seconds) after each call: metrics
        self._waiting: dict[int, _Request] = {}  # requests with units not yet taken, in arrival order
        self._seq = itertools.count()
        self._payloads: dict[int, Sequence[Any]] = {}
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="compress-model")

    # ------------------------------------------------------------------ the caller's side

    async def submit(self, payloads: Sequence[Any], lengths: Sequence[int]) -> list[Any]:
        """Queue one request's units; return their outputs in order once all have run."""
        if len(payloads) != len(lengths):
            raise ValueError(f"{len(payloads)} payloads but {len(lengths)} lengths")
        if not payloads:
            return []
        loop = asyncio.get_running_loop()
        self._start(loop)
        req = _Request(next(self._seq), [max(1, int(n)) for n in lengths], time.monotonic(), loop.create_future())
        req.results = [None] * len(payloads)
        req.left = len(payloads)
        req.left_to_take = len(payloads)
        for i in sorted(range(len(payloads)), key=lambda i: req.lengths[i]):
            req.pending.setdefault(bucket_of(req.lengths[i]), deque()).append(i)
        self._payloads[req.seq] = payloads
        self._waiting[req.seq] = req
        self._wake.set()
        try:
            return await asyncio.wait_for(asyncio.shield(req.future), self.max_wait_s)
        except asyncio.TimeoutError:
            raise Overloaded(f"not served within {self.max_wait_s:g} s: the model is busy; retry later") from None
        finally:  # answered, failed, timed out or cancelled (the client went away): drop what is left of it
            self._waiting.pop(req.seq, None)
            self._payloads.pop(req.seq, None)
            if not req.future.done():
                req.future.cancel()

    @property
    def queued_units(self) -> int:
        return sum(len(q) for r in self._waiting.values() for q in r.pending.values())

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------ the scheduler's side

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._wake = asyncio.Event()
            self._task = loop.create_task(self._loop())

    def take(self) -> list[tuple[_Request, int]]:
        """The next call's units: (request, unit index) pairs. Removes them from the queue."""
        if not self._waiting:
            return []
        order = sorted(self._waiting.values(), key=lambda r: (r.left_to_take, r.seq))  # fewest inputs left, oldest
        head = order[0]
        budget = self.max_tokens
        if self.max_call_s is not None and (fits := self.cost.tokens_within(self.max_call_s)) is not None:
            budget = min(budget, fits)
        bucket = head.first_bucket()
        if not self.cross_request:
            order = [head]
        batch: list[tuple[_Request, int]] = []
        width = 0
        for r in order:  # in priority order, as many of each request's units of the bucket as fit
            q = r.pending.get(bucket)
            while q and len(batch) < self.max_batch:
                w = max(width, r.lengths[q[0]])
                if batch and (len(batch) + 1) * w > budget:
                    break
                batch.append((r, q.popleft()))
                width = w
            if len(batch) >= self.max_batch:
                break
        for r, _ in batch:
            r.left_to_take -= 1
        for r in {id(r): r for r, _ in batch}.values():
            if not r.has_pending():
                self._waiting.pop(r.seq, None)
        return batch

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = self.take()
            if not batch:
                self._wake.clear()
                await self._wake.wait()
                continue
            payloads = [self._payloads[r.seq][i] for r, i in batch]
            t0 = time.perf_counter()
            try:
                outputs = await loop.run_in_executor(self._executor, self.run_batch, payloads)
                if len(outputs) != len(batch):
                    raise RuntimeError(f"the model call returned {len(outputs)} outputs for {len(batch)} inputs")
            except Exception as exc:  # a server fault: fail the requests in this call, keep serving the rest
                for r in {id(r): r for r, _ in batch}.values():
                    self._waiting.pop(r.seq, None)
                    if not r.future.done():
                        r.future.set_exception(exc)
                continue
            seconds = time.perf_counter() - t0
            padded = max(r.lengths[i] for r, i in batch) * len(batch)
            self.cost.add(padded, seconds)
            if self.on_batch is not None:
                self.on_batch(len(batch), sum(r.lengths[i] for r, i in batch), padded, seconds)
            for (r, i), out in zip(batch, outputs):
                if r.future.done():  # timed out or cancelled meanwhile
                    continue
                r.results[i] = out
                r.left -= 1
                if r.left == 0:
                    r.future.set_result(r.results)
