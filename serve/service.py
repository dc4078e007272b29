"""The HTTP service for a packaged student: `bentoml serve serve.service:Compress` (or the built bento).

Endpoints (JSON):
- POST /classify  {"texts": ["a review", ...]}, or for a sentence-pair model {"texts": [["premise", "hypothesis"]]}
                  -> [{"label", "label_id", "score", "scores": {label: probability}}] (regression: [{"value"}])
- POST /answer    {"items": [{"question": "...", "context": "..."}]}
                  -> [{"answer", "start", "end", "no_answer", "score", "null_odds", "threshold"}]; start/end are
                     character offsets in the context; contexts longer than the model reads are covered by
                     sliding windows; "no_answer" when null_odds is above the threshold learnt on the eval set
- GET /healthz, /livez, /readyz, /metrics (Prometheus)

Both endpoints batch adaptively across requests (BentoML's dispatcher). Every client error is JSON,
{"error": "<field>: <what is wrong and what to send>", "field": "<field>" or null} (400 adds pydantic's "detail"
list): 400 bad input, 404/405 unknown route or method, 413 body over the limit, 415 a body that is not
`application/json` in UTF-8, 503 overloaded (with Retry-After). One log line per rejected request, no traceback.

Settings (environment variables, read at start):
  COMPRESS_MODEL            BentoML model tag to serve (default compress-model:latest, what `compress package` stores)
  COMPRESS_BATCHING         1 (default) or 0: adaptive batching on or off
  COMPRESS_MAX_BATCH_SIZE   most inputs per model call when batching (default 32)
  COMPRESS_MAX_LATENCY_MS   the dispatcher's latency budget per request; requests it cannot fit get 503 (default 10000)
  COMPRESS_MAX_ITEMS        most inputs in one request (default 256)
  COMPRESS_MAX_BODY_BYTES   largest request body (default 1048576); more gets 413
  COMPRESS_THREADS          ONNX Runtime intra-op threads (default 2)
  COMPRESS_MAX_QUEUE        API requests in progress per worker; more get 503 with Retry-After at once (default 64)
  COMPRESS_READY_BELOW      /readyz answers 503 while this many are in progress (default 3/4 of the queue)
  COMPRESS_HOST             address to bind (default 127.0.0.1; `bentoml serve --host` overrides)
"""

from __future__ import annotations

import os
import time
from typing import Annotated, Any

import bentoml
from bentoml.exceptions import BentoMLException
from pydantic import AfterValidator, BaseModel, Field

from serve.middleware import BodyLimitAndErrors, quiet_client_errors
from serve.runtime import InputError, ModelRuntime, load_runtime
from serve.schema import (
    Answer, ClassifyResult, RegressionResult, Text, is_pair, max_question_chars, question_type, served_meta,
    truthful_openapi,
)


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, str(default))
    try:
        value = int(raw)
    except ValueError:
        raise RuntimeError(f"{name}={raw!r} is not a whole number; unset it or give e.g. {default}") from None
    if value < 1:
        raise RuntimeError(f"{name}={value}: must be at least 1")
    return value


MODEL_TAG = os.environ.get("COMPRESS_MODEL", "compress-model:latest")
BATCHING = os.environ.get("COMPRESS_BATCHING", "1").lower() not in ("0", "false", "no", "off")
MAX_BATCH_SIZE = _env_int("COMPRESS_MAX_BATCH_SIZE", 32)
MAX_LATENCY_MS = _env_int("COMPRESS_MAX_LATENCY_MS", 10000)
MAX_ITEMS = _env_int("COMPRESS_MAX_ITEMS", 256)
MAX_BODY_BYTES = _env_int("COMPRESS_MAX_BODY_BYTES", 1 << 20)
THREADS = _env_int("COMPRESS_THREADS", 2)
MAX_QUEUE = _env_int("COMPRESS_MAX_QUEUE", 64)  # API requests in progress per worker before new ones get 503
READY_BELOW = _env_int("COMPRESS_READY_BELOW", max(1, 3 * MAX_QUEUE // 4))  # /readyz 503 from this many on
HOST = os.environ.get("COMPRESS_HOST", "127.0.0.1")


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

MODEL_INFO = bentoml.metrics.Gauge(
    name="compress_model_info",
    documentation="The served model (value 1): name, run, trial, parameters, metric and precision",
    labelnames=["model", "run", "trial", "task", "params", "metric", "metric_value", "precision", "latency_ms"],
)
INFERENCE_SECONDS = bentoml.metrics.Histogram(
    name="compress_inference_seconds",
    documentation="Model time per batch (tokenise, ONNX Runtime, decode)",
    labelnames=["endpoint"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
BATCH_ITEMS = bentoml.metrics.Histogram(
    name="compress_batch_items",
    documentation="Inputs per model call (texts or questions; requests are batched together)",
    labelnames=["endpoint"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)


@bentoml.service(name="compress", http={"host": HOST}, traffic={"timeout": 120}, workers=1)
class Compress:
    model = bentoml.models.BentoModel(MODEL_TAG)

    def __init__(self) -> None:
        stored = self.model
        self.runtime: ModelRuntime = load_runtime(stored.path, threads=THREADS)
        meta = self.runtime.meta
        MODEL_INFO.labels(
            model=str(stored.tag), run=str(meta.get("run")), trial=str(meta.get("trial")), task=self.runtime.task,
            params=str(meta.get("params")), metric=str(meta.get("metric")),
            metric_value=f"{meta.get('metric_value', float('nan')):.6g}", precision=str(meta.get("precision")),
            latency_ms=f"{meta.get('latency_ms', float('nan')):.4g}",
        ).set(1)

    def __is_ready__(self) -> bool:
        return getattr(self, "runtime", None) is not None

    # NOTE: only the endpoint the packaged model serves is defined (both when it cannot be read at import), so
    # the OpenAPI document lists what the server answers and a request to the other one is a clear 404.
    if SERVES["/classify"]:
        @bentoml.api(route="/classify", batchable=BATCHING, max_batch_size=MAX_BATCH_SIZE,
                     max_latency_ms=MAX_LATENCY_MS)
        def classify(self, texts: Texts) -> list[ClassifyOutput]:
            t0 = time.perf_counter()
            out = self.runtime.classify(texts)
            INFERENCE_SECONDS.labels(endpoint="/classify").observe(time.perf_counter() - t0)
            BATCH_ITEMS.labels(endpoint="/classify").observe(len(texts))
            return out

    if SERVES["/answer"]:
        @bentoml.api(route="/answer", batchable=BATCHING, max_batch_size=MAX_BATCH_SIZE,
                     max_latency_ms=MAX_LATENCY_MS)
        def answer(self, items: Items) -> list[Answer]:
            t0 = time.perf_counter()
            out = self.runtime.answer([(it.question, it.context) for it in items])
            INFERENCE_SECONDS.labels(endpoint="/answer").observe(time.perf_counter() - t0)
            BATCH_ITEMS.labels(endpoint="/answer").observe(len(items))
            return out


quiet_client_errors()  # one line per rejected request (the middleware's), no traceback for a client's mistake
API_PATHS = tuple(path for path, on in SERVES.items() if on)
Compress.add_asgi_middleware(BodyLimitAndErrors, max_body_bytes=MAX_BODY_BYTES, api_paths=API_PATHS,
                             openapi=lambda doc: truthful_openapi(doc, API_PATHS), max_inflight=MAX_QUEUE,
                             ready_below=READY_BELOW)
