"""The HTTP service for a packaged student: `bentoml serve serve.service:Compress` (or the built bento).

Endpoints (JSON):
- POST /classify  {"texts": ["a review", ...]}, or for a sentence-pair model {"texts": [["premise", "hypothesis"]]}
                  -> [{"label", "label_id", "score", "scores": {label: probability}}] (regression: [{"value"}])
- POST /answer    {"items": [{"question": "...", "context": "..."}]}
                  -> [{"answer", "start", "end", "no_answer", "score", "null_odds", "threshold"}]; start/end are
                     character offsets in the context; contexts longer than the model reads are covered by
                     sliding windows; "no_answer" when null_odds is above the threshold learnt on the eval set
- GET /healthz, /livez, /readyz, /metrics (Prometheus)

Both endpoints batch across requests with the fair scheduler of serve/scheduler.py (not BentoML's dispatcher,
which runs whole requests in arrival order, so one big request blocks every small one behind it): each request is
split into units (a text, or one window of a QA context; windows of different requests share calls), every model
call starts from the waiting request with the fewest inputs left (then the oldest) and takes units of its length
bucket, and a call is bounded in inputs, padded tokens and time. A one-text request therefore waits for at most
the call in flight, whatever else is queued. Every client error is JSON,
{"error": "<field>: <what is wrong and what to send>", "field": "<field>" or null} (400 adds pydantic's "detail"
list): 400 bad input, 404/405 unknown route or method, 413 body over the limit, 415 a body that is not
`application/json` in UTF-8, 503 overloaded (with Retry-After). One log line per rejected request, no traceback.

Settings (environment variables, read at start):
  COMPRESS_MODEL            BentoML model tag to serve (default compress-model:latest, what `compress package` stores)
  COMPRESS_WORKERS          worker processes, each with its own model and scheduler (default: the cores this
                            process may use, BentoML's "cpu_count"; on 2 cores, 2 workers x 1 thread served 5-29%
                            more requests at concurrency 32 than 1 worker x 2 threads in every run of
                            benchmarks/results/serve.md; each worker holds its own copy of the model in memory)
  COMPRESS_THREADS          ONNX Runtime intra-op threads per worker (default: the cores / COMPRESS_WORKERS, so 1;
                            given alone, the workers default to the cores / COMPRESS_THREADS);
                            threads x workers above the cores this process may use is refused at start
  COMPRESS_BATCHING         1 (default) or 0: batching across requests on or off (off: a call holds one request's)
  COMPRESS_MAX_BATCH_SIZE   most inputs (texts or QA windows) per model call (default 32)
  COMPRESS_MAX_BATCH_TOKENS most padded tokens (inputs x the longest) per model call (default 4096)
  COMPRESS_MAX_CALL_MS      a model call's time slice: it holds as many tokens as the model runs in this long, by a
                            line fitted to the earlier calls (default 20): about the most a small request waits
  COMPRESS_ORT_SPIN         0 (default) or 1: ONNX Runtime's threads busy-wait between operators (about 0.45 ms
                            less per call at batch 1 here, but they then take the cores from the event loop)
  COMPRESS_MAX_LATENCY_MS   a request not answered this long after it arrived gets 503 with Retry-After (default 10000)
  COMPRESS_MAX_ITEMS        most inputs in one request (default 256)
  COMPRESS_MAX_BODY_BYTES   largest request body (default 1048576); more gets 413
  COMPRESS_MAX_QUEUE        API requests in progress per worker; more get 503 with Retry-After at once (default 64)
  COMPRESS_READY_BELOW      /readyz answers 503 while this many are in progress (default 3/4 of the queue)
  COMPRESS_HOST             address to bind (default 127.0.0.1; `bentoml serve --host` overrides)
"""

from __future__ import annotations

import asyncio
import gc
import os
from concurrent.futures import ThreadPoolExecutor

# One request's tokenising may not take every core from the model calls (HF tokenizers' Rust threads): measured
# under heavy load, a one-text request's p99 went 174 -> 113 ms with it off.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _tokenizers_without_torch() -> None:
    """The service runs the model in ONNX Runtime and needs only transformers' tokenizers, but transformers imports
    torch whenever it is installed: this module's process took 505 MB resident with it and 118 MB without, in every
    worker and in BentoML's arbiter. USE_TORCH=0 while transformers is first imported keeps torch out (a USE_TORCH
    the user set wins); both variables are restored afterwards, so nothing this process starts inherits them."""
    import sys

    if "transformers" in sys.modules:
        return
    saved = {k: os.environ.get(k) for k in ("USE_TORCH", "TRANSFORMERS_NO_ADVISORY_WARNINGS")}
    os.environ.setdefault("USE_TORCH", "0")
    os.environ["TRANSFORMERS_NO_ADVISORY_WARNINGS"] = "1"  # its "None of PyTorch ... found": meant here
    try:
        import transformers  # noqa: F401
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


_tokenizers_without_torch()
from typing import Annotated, Any  # noqa: E402

import bentoml
from bentoml.exceptions import BentoMLException, ServiceUnavailable
from bentoml.validators import ContentType
from pydantic import AfterValidator, BaseModel, Field

from compress.deploy.onnxrt import available_cores
from serve.middleware import BodyLimitAndErrors, quiet_client_errors
from serve.runtime import InputError, ModelRuntime, load_runtime
from serve.scheduler import FairBatcher, Overloaded
from serve.schema import (
    Answer, ClassifyResult, RegressionResult, Text, is_pair, max_question_chars, question_type, served_meta,
    truthful_openapi,
)


def _refuse(message: str):
    """A setting the service cannot start with: the message and exit status 1, no traceback (it is not a fault)."""
    raise SystemExit(f"compress service: {message}")


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, str(default))
    try:
        value = int(raw)
    except ValueError:
        _refuse(f"{name}={raw!r} is not a whole number; unset it or give e.g. {default}")
    if value < 1:
        _refuse(f"{name}={value}: must be at least 1")
    return value


MODEL_TAG = os.environ.get("COMPRESS_MODEL", "compress-model:latest")
BATCHING = os.environ.get("COMPRESS_BATCHING", "1").lower() not in ("0", "false", "no", "off")
MAX_BATCH_SIZE = _env_int("COMPRESS_MAX_BATCH_SIZE", 32)
MAX_BATCH_TOKENS = _env_int("COMPRESS_MAX_BATCH_TOKENS", 4096)
MAX_CALL_MS = _env_int("COMPRESS_MAX_CALL_MS", 20)
SPIN = os.environ.get("COMPRESS_ORT_SPIN", "0").lower() in ("1", "true", "yes", "on")
MAX_LATENCY_MS = _env_int("COMPRESS_MAX_LATENCY_MS", 10000)
MAX_ITEMS = _env_int("COMPRESS_MAX_ITEMS", 256)
MAX_BODY_BYTES = _env_int("COMPRESS_MAX_BODY_BYTES", 1 << 20)
CORES = available_cores()
_THREADS_SET = _env_int("COMPRESS_THREADS", 1) if "COMPRESS_THREADS" in os.environ else None
WORKERS = _env_int("COMPRESS_WORKERS", CORES if _THREADS_SET is None else max(1, CORES // _THREADS_SET))
THREADS = _THREADS_SET or max(1, CORES // WORKERS)  # given alone, the threads decide the workers' default
if THREADS * WORKERS > CORES:
    _fit = min(WORKERS, CORES)
    _refuse(f"COMPRESS_THREADS={THREADS} x COMPRESS_WORKERS={WORKERS} = {THREADS * WORKERS} threads is more than the "
            f"{CORES} cores this process may use, and they would slow each other down; lower one, e.g. "
            f"COMPRESS_WORKERS={_fit} COMPRESS_THREADS={max(1, CORES // _fit)}")
MAX_QUEUE = _env_int("COMPRESS_MAX_QUEUE", 64)  # API requests in progress per worker before new ones get 503
READY_BELOW = _env_int("COMPRESS_READY_BELOW", max(1, 3 * MAX_QUEUE // 4))  # /readyz 503 from this many on
HOST = os.environ.get("COMPRESS_HOST", "127.0.0.1")
FULL_GC_AFTER = 100  # collections of the middle generation before a full one is considered (Python's default: 10)


def _runtime() -> ModelRuntime:
    """The model runtime of the running service (kept on the service, `self.runtime`).

    NOTE: inputs are checked by the request's types, before adaptive batching merges requests: a bad input then
    fails its own request with a 400 naming its field (texts[1], items[0].question), and never the requests it
    would have been batched with (a check inside the batched API method would fail them all, and count indices
    across the merged batch). The types see no `self`, so they ask BentoML for the service instance.
    """
    try:
        runtime = getattr(bentoml.get_current_service(), "runtime", None)
    except BentoMLException:  # the service is not instantiated yet
        runtime = None
    if runtime is None:
        raise ValueError("the model is still loading; retry when /readyz answers 200")
    return runtime


def _check_texts(texts: list[Any]) -> list[Any]:
    rt = _runtime()
    try:
        return [rt.check_text(f"texts[{i}]", t) for i, t in enumerate(texts)]
    except InputError as exc:
        raise ValueError(str(exc)) from None


META = served_meta(MODEL_TAG)  # the packaged model's compress.json: what the endpoints declare (serve/schema.py)
TASK = None if META is None else META["task"]["type"]
SERVES = {"/classify": TASK != "qa", "/answer": TASK in ("qa", None)}  # unknown model: both, as before
PAIR = is_pair(META)
Question = question_type(max_question_chars(META))


class QAItem(BaseModel):
    question: Question
    context: Text


def _check_items(items: list[QAItem]) -> list[QAItem]:
    rt = _runtime()
    try:
        for i, it in enumerate(items):
            rt.check_question(f"items[{i}]", it.question, it.context)
    except InputError as exc:
        raise ValueError(str(exc)) from None
    return items


# Each input as the model reads it: one non-blank text, or [first, second] for a sentence-pair model.
TextInput = Annotated[list[Text], Field(min_length=2, max_length=2)] if PAIR else (Text if META is not None else Any)
Texts = Annotated[list[TextInput], Field(min_length=1, max_length=MAX_ITEMS), AfterValidator(_check_texts)]
Items = Annotated[list[QAItem], Field(min_length=1, max_length=MAX_ITEMS), AfterValidator(_check_items)]
ClassifyOutput = RegressionResult if TASK == "regression" else ClassifyResult
# NOTE: a declared content type spares BentoML working it out from the output's JSON schema on every response
# (pydantic's model_json_schema, about 1 ms a request: a quarter of the server's own time per request).
JSON = ContentType("application/json")

MODEL_INFO = bentoml.metrics.Gauge(
    name="compress_model_info",
    documentation="The served model (value 1): name, run, trial, parameters, metric and precision",
    labelnames=["model", "run", "trial", "task", "params", "metric", "metric_value", "precision", "latency_ms"],
)
INFERENCE_SECONDS = bentoml.metrics.Histogram(
    name="compress_inference_seconds",
    documentation="Model time per call (ONNX Runtime on a padded batch of inputs)",
    labelnames=["endpoint"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
BATCH_ITEMS = bentoml.metrics.Histogram(
    name="compress_batch_items",
    documentation="Inputs per model call (texts or QA windows, from one or more requests)",
    labelnames=["endpoint"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
BATCH_FILL = bentoml.metrics.Histogram(
    name="compress_batch_token_fill",
    documentation="Real tokens over padded tokens per model call (1 = no padding)",
    labelnames=["endpoint"],
    buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0),
)


def _overloaded(exc: Overloaded) -> ServiceUnavailable:
    return ServiceUnavailable(f"overloaded: {exc}")


@bentoml.service(name="compress", http={"host": HOST}, traffic={"timeout": 120}, workers=WORKERS)
class Compress:
    model = bentoml.models.BentoModel(MODEL_TAG)

    def __init__(self) -> None:
        stored = self.model
        self.runtime: ModelRuntime = load_runtime(stored.path, threads=THREADS, spinning=SPIN)
        meta = self.runtime.meta
        MODEL_INFO.labels(
            model=str(stored.tag), run=str(meta.get("run")), trial=str(meta.get("trial")), task=self.runtime.task,
            params=str(meta.get("params")), metric=str(meta.get("metric")),
            metric_value=f"{meta.get('metric_value', float('nan')):.6g}", precision=str(meta.get("precision")),
            latency_ms=f"{meta.get('latency_ms', float('nan')):.4g}",
        ).set(1)
        endpoint = "/answer" if self.runtime.is_qa else "/classify"

        def observe(units: int, real: int, padded: int, seconds: float) -> None:
            INFERENCE_SECONDS.labels(endpoint=endpoint).observe(seconds)
            BATCH_ITEMS.labels(endpoint=endpoint).observe(units)
            BATCH_FILL.labels(endpoint=endpoint).observe(real / padded)

        # NOTE: the imports and the model leave some million objects that a full garbage collection walks every
        # time: 0.4 s stalls at random requests (measured). Frozen, they are left out of every collection.
        gc.collect()
        gc.freeze()
        # NOTE: a full collection walks every object made since (a big request's units wait in the queue for
        # seconds, so they reach the oldest generation): under bench-serve's heavy load after its other runs, 18
        # full collections in 100 s, up to 577 ms each, and a one-text request's p99 was 126-183 ms. Considered
        # after 100 collections of the middle generation instead of 10: 2 of them and a p99 of 50 ms. Cycles are
        # still collected, later (memory over 10 minutes is benchmarked).
        young, middle, _ = gc.get_threshold()
        gc.set_threshold(young, middle, FULL_GC_AFTER)
        self._tokenizing = ThreadPoolExecutor(1, thread_name_prefix="compress-tokenize")
        self.batcher = FairBatcher(self.runtime.run_units, max_batch=MAX_BATCH_SIZE, max_tokens=MAX_BATCH_TOKENS,
                                   max_call_s=MAX_CALL_MS / 1000, max_wait_s=MAX_LATENCY_MS / 1000,
                                   cross_request=BATCHING, on_batch=observe)

    def __is_ready__(self) -> bool:
        return getattr(self, "runtime", None) is not None

    async def _encode(self, fn, inputs, size: int):
        """Tokenise on the event loop when small (cheaper than a thread hop), on the service's one tokenising thread
        when large: big requests then queue for it instead of each taking a core from the model calls (with
        asyncio's default pool, a profile of bench-serve's heavy load found five tokenising at once)."""
        if size < 4000:
            return fn(inputs)
        return await asyncio.get_running_loop().run_in_executor(self._tokenizing, fn, inputs)

    # NOTE: only the endpoint the packaged model serves is defined (both when it cannot be read at import), so
    # the OpenAPI document lists what the server answers and a request to the other one is a clear 404.
    if SERVES["/classify"]:
        @bentoml.api(route="/classify")
        async def classify(self, texts: Texts) -> Annotated[list[ClassifyOutput], JSON]:
            size = sum(len(t) if isinstance(t, str) else sum(map(len, t)) for t in texts)
            units = await self._encode(self.runtime.encode_texts, texts, size)
            try:
                rows = await self.batcher.submit(units, [len(u["input_ids"]) for u in units])
            except Overloaded as exc:
                raise _overloaded(exc) from None
            return self.runtime.classify_outputs(rows)

    if SERVES["/answer"]:
        @bentoml.api(route="/answer")
        async def answer(self, items: Items) -> Annotated[list[Answer], JSON]:
            pairs = [(it.question, it.context) for it in items]
            job = await self._encode(self.runtime.encode_questions, pairs, sum(len(q) + len(c) for q, c in pairs))
            try:
                rows = await self.batcher.submit(job.units, [len(u["input_ids"]) for u in job.units])
            except Overloaded as exc:
                raise _overloaded(exc) from None
            return await asyncio.to_thread(self.runtime.answer_outputs, job, rows)  # decoding is Python: off the loop


quiet_client_errors()  # one line per rejected request (the middleware's), no traceback for a client's mistake
API_PATHS = tuple(path for path, on in SERVES.items() if on)
Compress.add_asgi_middleware(BodyLimitAndErrors, max_body_bytes=MAX_BODY_BYTES, api_paths=API_PATHS,
                             openapi=lambda doc: truthful_openapi(doc, API_PATHS), max_inflight=MAX_QUEUE,
                             ready_below=READY_BELOW)
