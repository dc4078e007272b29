"""The model behind the service, without the server: load a packaged folder, check inputs, run batches.

A packaged folder (what `compress package` stores in the BentoML model store) holds model.onnx, config.json,
the tokenizer files and compress.json (task, labels, lengths, the no-answer threshold, measured figures).
Only ONNX, JSON and the tokenizer's text files are read; nothing is unpickled.

Classification and QA reuse the exact featurisation and decoding of offline evaluation
(`compress.data.qa.featurize_qa`/`decode_qa`), so a served answer equals the evaluated prediction.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from transformers import AutoTokenizer

from compress.data.loaders import QAExample
from compress.data.qa import decode_qa, featurize_qa
from compress.data.truncate import tokenize_truncated
from compress.deploy.onnxrt import onnx_session

__all__ = ["InputError", "ModelRuntime", "QAJob", "load_runtime"]

META_FILE = "compress.json"


class InputError(ValueError):
    """A request input that cannot be served; `field` names where it is, the message what to send instead."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass
class ModelRuntime:
    meta: dict[str, Any]
    tokenizer: Any
    session: Any
    path: Path

    @property
    def task(self) -> str:
        return self.meta["task"]["type"]

    @property
    def is_qa(self) -> bool:
        return self.task == "qa"

    @property
    def is_pair(self) -> bool:
        return self.task == "pair_classification" or len(self.meta["task"].get("text_columns") or []) == 2

    # ------------------------------------------------------------------ input checks (before batching)

    def check_text(self, field: str, value: Any) -> Any:
        """One /classify input: a string, or [first, second] for a sentence-pair model."""
        if self.is_qa:
            raise InputError(field, "this model answers questions; POST {question, context} items to /answer")
        if self.is_pair:
            if not (isinstance(value, (list, tuple)) and len(value) == 2):
                raise InputError(field, f"this model classifies sentence pairs; send [first, second], got "
                                        f"{_describe(value)}")
            return [_non_empty(f"{field}[{i}]", v) for i, v in enumerate(value)]
        if isinstance(value, (list, tuple)):
            raise InputError(field, "this model classifies single texts; send a string, not a list")
        return _non_empty(field, value)

    def check_question(self, field: str, question: Any, context: Any) -> tuple[str, str]:
        """One /answer input: a non-empty question short enough to leave room for the context."""
        if not self.is_qa:
            raise InputError(field, f"this model does {self.task}; POST {{\"texts\": [...]}} to /classify")
        q = _non_empty(f"{field}.question", question)
        c = _non_empty(f"{field}.context", context)
        limit = self.max_question_tokens
        n = len(self.tokenizer(q.lstrip(), add_special_tokens=False)["input_ids"])
        if n > limit:
            raise InputError(f"{field}.question", f"the question is {n} tokens; this model reads at most {limit} "
                                                  "(max_seq_length - doc_stride - 4); shorten it")
        return q, c

    @property
    def max_question_tokens(self) -> int:
        d = self.meta["data"]
        return int(d["max_seq_length"]) - int(d["doc_stride"]) - 4

    # ------------------------------------------------------------------ inference

    def _run(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds = {i.name: np.ascontiguousarray(arrays[i.name], dtype=np.int64) for i in self.session.get_inputs()}
        names = [o.name for o in self.session.get_outputs()]
        return dict(zip(names, self.session.run(None, feeds)))

    # Serving works on units (one text or pair, or one QA window, unpadded): `encode_*` makes them, `run_units` runs
    # any mix of them in one padded model call (the scheduler's batches, serve/scheduler.py), `*_outputs` turns one
    # request's unit outputs into its answers. `classify` and `answer` do all three for one list of inputs.

    def encode_texts(self, inputs: list[Any]) -> list[dict[str, np.ndarray]]:
        """One unpadded unit per checked /classify input (truncated to the model's max_seq_length)."""
        max_len = int(self.meta["data"]["max_seq_length"])
        if self.is_pair:
            enc = self.tokenizer([x[0] for x in inputs], [x[1] for x in inputs], truncation=True, max_length=max_len)
        else:
            enc = tokenize_truncated(self.tokenizer, inputs, max_len)  # long texts: only what the model reads
        keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc]
        return [{k: np.asarray(enc[k][i], dtype=np.int64) for k in keys} for i in range(len(inputs))]

    def pad(self, units: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        """Units as one batch of model inputs, padded to the longest of them."""
        width = max(len(u["input_ids"]) for u in units)
        pad_id = self.tokenizer.pad_token_id or 0
        arrays = {}
        for k in units[0]:
            fill = pad_id if k == "input_ids" else 0
            arrays[k] = np.stack([np.pad(u[k], (0, width - len(u[k])), constant_values=fill) for u in units])
        if "attention_mask" not in arrays:
            arrays["attention_mask"] = (np.arange(width)[None, :] < np.array([len(u["input_ids"]) for u in units])[
                :, None]).astype(np.int64)
        if "token_type_ids" not in arrays:
            arrays["token_type_ids"] = np.zeros_like(arrays["input_ids"])
        return arrays

    def run_units(self, units: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        """One model call on units padded to the longest of them; each unit's outputs, trimmed to its length."""
        out = self._run(self.pad(units))
        if self.is_qa:
            return [{"start_logits": out["start_logits"][j, :len(u["input_ids"])],
                     "end_logits": out["end_logits"][j, :len(u["input_ids"])]} for j, u in enumerate(units)]
        return [{"logits": out["logits"][j]} for j in range(len(units))]

    def classify_outputs(self, rows: list[dict[str, np.ndarray]]) -> list[dict[str, Any]]:
        """Labels and scores (softmax) from each input's logits; a regression model gives its value."""
        logits = np.stack([r["logits"] for r in rows]).astype(np.float64)
        if self.task == "regression":
            return [{"value": float(v)} for v in logits.reshape(-1)]
        labels = self.meta["labels"]
        z = logits - logits.max(axis=1, keepdims=True)
        probs = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
        out = []
        for p in probs:
            k = int(p.argmax())
            out.append({"label": labels[k], "label_id": k, "score": float(p[k]),
                        "scores": {labels[j]: float(p[j]) for j in range(len(labels))}})
        return out

    def classify(self, inputs: list[Any]) -> list[dict[str, Any]]:
        """Labels and scores per checked input, in one model call."""
        if not inputs:
            return []
        return self.classify_outputs(self.run_units(self.encode_texts(inputs)))

    def encode_questions(self, items: list[tuple[str, str]]) -> "QAJob":
        """The sliding windows of each (question, context), as offline evaluation makes them, one unit each."""
        d = self.meta["data"]
        examples = [QAExample(str(i), "", c, q, (), False) for i, (q, c) in enumerate(items)]
        feats = featurize_qa(examples, self.tokenizer, int(d["max_seq_length"]), int(d["doc_stride"]))
        lengths = feats["attention_mask"].sum(axis=1)
        units = [{k: feats[k][j, :lengths[j]] for k in ("input_ids", "attention_mask", "token_type_ids")}
                 for j in range(len(lengths))]
        return QAJob(examples, feats, units)

    def answer_outputs(self, job: "QAJob", rows: list[dict[str, np.ndarray]]) -> list[dict[str, Any]]:
        """The best span of each question over its windows' logits, or no answer above the threshold."""
        d = self.meta["data"]
        full = job.features["input_ids"].shape[1]
        starts = np.full((len(rows), full), -1e4, dtype=np.float32)  # padding is never a span (offsets -1)
        ends = np.full((len(rows), full), -1e4, dtype=np.float32)
        for j, r in enumerate(rows):
            starts[j, :len(r["start_logits"])] = r["start_logits"]
            ends[j, :len(r["end_logits"])] = r["end_logits"]
        preds = decode_qa(job.examples, job.features, starts, ends, n_best=int(d["n_best"]),
                          max_answer_length=int(d["max_answer_length"]))
        threshold = self.meta.get("na_threshold")
        results = []
        for p in preds:
            no_answer = threshold is not None and p.null_odds > threshold
            text = p.answer(threshold)
            results.append({
                "answer": text, "start": None if no_answer or p.start < 0 else p.start,
                "end": None if no_answer or p.end < 0 else p.end, "no_answer": bool(no_answer or not text),
                "score": _finite(p.score), "null_odds": _finite(p.null_odds), "threshold": threshold,
            })
        return results

    def answer(self, items: list[tuple[str, str]]) -> list[dict[str, Any]]:
        """The answers of (question, context) pairs, all windows in one model call."""
        if not items:
            return []
        job = self.encode_questions(items)
        return self.answer_outputs(job, self.run_units(job.units))


@dataclass
class QAJob:
    """One /answer request's windows: the examples, their features (offsets, example index) and unpadded units."""

    examples: list[QAExample]
    features: dict[str, np.ndarray]
    units: list[dict[str, np.ndarray]]


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _describe(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return f"a list of {len(value)}"
    return type(value).__name__ if not isinstance(value, str) else "a string"


def _non_empty(field: str, value: Any) -> str:
    if not isinstance(value, str):
        raise InputError(field, f"expected a string, got {_describe(value)}")
    if not value.strip():
        raise InputError(field, "is empty; send non-empty text")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone UTF-16 surrogate (\ud800) that JSON let through
        raise InputError(field, f"holds {value[exc.start]!r} at position {exc.start}, a lone UTF-16 surrogate, which "
                                "is not text; send valid Unicode") from None
    return value


def load_runtime(path: str | Path, threads: int = 2, spinning: bool = True) -> ModelRuntime:
    """Load a packaged folder: compress.json, the tokenizer (JSON/text files) and model.onnx."""
    path = Path(path)
    meta_file = path / META_FILE
    if not meta_file.is_file():
        raise FileNotFoundError(f"{path} has no {META_FILE}; package a model with `compress package RUN --trial N`")
    meta = json.loads(meta_file.read_text())
    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    if not tokenizer.is_fast:
        raise ValueError(f"the tokenizer in {path} is not a fast tokenizer; QA offsets need one")
    session = onnx_session(path / "model.onnx", threads, spinning=spinning)
    return ModelRuntime(meta, tokenizer, session, path)
