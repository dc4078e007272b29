"""Turn a job's data sources into model-ready arrays, cached on disk under a key of everything that shapes them.

`prepare_task_data(cfg, tokenizer)` is the entry point; `Split.batch(indices)` gives padded torch batches.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.numpy import load_file, save_file

from ..config import JobConfig, SourceConfig, TaskConfig, to_dict
from .loaders import (
    DataError, TextExample, file_fingerprint, load_qa_examples, load_text_examples,
    resolve_source_path,
)
from .qa import detect_version_2, featurize_qa

log = logging.getLogger(__name__)

__all__ = ["Split", "TaskData", "prepare_task_data", "save_atomic", "tokenizer_fingerprint"]

# Arrays a model takes as input; everything else in a split (labels, offsets) stays beside them.
MODEL_INPUTS = ("input_ids", "token_type_ids", "attention_mask")


@dataclass
class Split:
    """One featurised split: arrays with one row per model input, and the examples they came from."""

    name: str
    arrays: dict[str, np.ndarray]
    examples: list[Any]  # TextExample or QAExample, in source order
    key: str  # cache key of the arrays: identifies exactly these features

    def __len__(self) -> int:
        return len(self.arrays["input_ids"])

    def batch(self, indices: np.ndarray | list[int], labels: bool = True) -> dict[str, torch.Tensor]:
        """Rows `indices` as tensors, trimmed to the longest real input in the batch (dynamic padding)."""
        idx = np.asarray(indices)
        mask = self.arrays["attention_mask"][idx]
        width = int(mask.sum(axis=1).max())  # right padding: the first `width` positions hold every token
        out = {k: torch.from_numpy(np.ascontiguousarray(self.arrays[k][idx, :width])) for k in MODEL_INPUTS}
        if labels:
            for k in ("labels", "start_positions", "end_positions"):
                if k in self.arrays:
                    out[k] = torch.from_numpy(self.arrays[k][idx])
        return out

    def subset(self, n: int) -> "Split":
        """The first `n` examples and their features (for quick intermediate evaluations)."""
        if n >= len(self.examples):
            return self
        if "example_index" in self.arrays:
            keep = self.arrays["example_index"] < n
            arrays = {k: v[keep] for k, v in self.arrays.items()}
        else:
            arrays = {k: v[:n] for k, v in self.arrays.items()}
        return Split(self.name, arrays, self.examples[:n], f"{self.key}-first{n}")


@dataclass
class TaskData:
    """Both splits of a task, with what a model head needs to know about the labels."""

    task: TaskConfig
    train: Split
    eval: Split
    num_labels: int  # 1 for regression; 2 (start, end) is implied for QA and this is 2 there
    id2label: dict[int, str] = field(default_factory=dict)
    version_2: bool = False  # qa: the data has unanswerable questions
    n_best: int = 20  # qa decoding: candidates per window
    max_answer_length: int = 30  # qa decoding: longest span in tokens


def tokenizer_fingerprint(tokenizer) -> str:
    """Hash of the tokenizer's full definition (vocabulary, normaliser, special tokens)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise DataError(
            f"tokenizer {type(tokenizer).__name__} is not a fast tokenizer; offsets and caching need one "
            "(save the model with a tokenizer.json, or load it with use_fast=True)"
        )
    definition = json.loads(backend.to_str())
    # NOTE: the backend also stores the truncation/padding of its last call; they do not change tokens.
    definition.pop("truncation", None)
    definition.pop("padding", None)
    return hashlib.sha256(json.dumps(definition, sort_keys=True).encode()).hexdigest()[:16]


def _source_key(source: SourceConfig, config_path: str | None) -> dict[str, Any]:
    path = resolve_source_path(source.path, config_path)
    content = file_fingerprint(path) if path.exists() else f"hub:{source.path}"
    return {**to_dict(source), "path": path.name, "content": content}


def _cache_key(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def save_atomic(arrays: dict[str, np.ndarray], path: Path) -> None:
    """Write arrays as safetensors via a temporary file: parallel workers never read half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(tmp))
    tmp.replace(path)


def _cached(cache_dir: Path, key: str, build) -> dict[str, np.ndarray]:
    path = cache_dir / f"features-{key}.safetensors"
    if path.exists():
        try:
            return load_file(str(path))
        except Exception as exc:  # noqa: BLE001 - a torn or foreign file: rebuild it
            log.warning("feature cache %s is unreadable (%s); rebuilding it", path, exc)
    arrays = build()
    save_atomic(arrays, path)
    return arrays


def _encode_texts(examples: list[TextExample], tokenizer, max_len: int, regression: bool) -> dict[str, np.ndarray]:
    first = [ex.texts[0] for ex in examples]
    second = [ex.texts[1] for ex in examples] if len(examples[0].texts) == 2 else None
    enc = tokenizer(first, second, truncation=True, max_length=max_len, padding="max_length")
    labels = np.asarray([ex.label for ex in examples], dtype=np.float32 if regression else np.int64)
    return {
        "input_ids": np.asarray(enc["input_ids"], dtype=np.int64),
        "token_type_ids": np.asarray(enc["token_type_ids"], dtype=np.int64),
        "attention_mask": np.asarray(enc["attention_mask"], dtype=np.int64),
        "labels": labels,
    }


def prepare_task_data(cfg: JobConfig, tokenizer) -> TaskData:
    """Load, validate and featurise both splits of the job's task (from the cache when possible)."""
    task, data = cfg.task, cfg.data
    fp = tokenizer_fingerprint(tokenizer)
    cache_dir = Path(data.cache_dir)
    base = {"tokenizer": fp, "task": to_dict(task), "max_seq_length": data.max_seq_length}

    if task.type == "qa":
        train_ex = load_qa_examples(data.train, cfg.config_path)
        eval_ex = load_qa_examples(data.eval, cfg.config_path)
        v2 = detect_version_2(train_ex) or detect_version_2(eval_ex)
        if task.version_2 is not None and task.version_2 != v2:
            n_imp = sum(ex.is_impossible for ex in train_ex + eval_ex)
            raise DataError(
                f"task.version_2 is {task.version_2} but the data {'has' if v2 else 'has no'} unanswerable "
                f"questions ({n_imp} of {len(train_ex) + len(eval_ex)}): it is SQuAD {'2.0' if v2 else '1.1'}. "
                f"Set task.version_2: {str(v2).lower()} (or remove the key to detect it), or point the config "
                "at the data you meant"
            )
        if v2 and not detect_version_2(train_ex):
            log.warning("the eval set has unanswerable questions but the training set has none: the model "
                        "will not learn to say 'no answer'")
        splits = {}
        for name, examples, sources in (("train", train_ex, data.train), ("eval", eval_ex, data.eval)):
            key = _cache_key({**base, "kind": "qa", "doc_stride": data.doc_stride, "version_2": v2,
                              "sources": [_source_key(s, cfg.config_path) for s in sources]})
            arrays = _cached(cache_dir, key, lambda ex=examples: featurize_qa(
                ex, tokenizer, data.max_seq_length, data.doc_stride))
            splits[name] = Split(name, arrays, examples, key)
        return TaskData(task, splits["train"], splits["eval"], num_labels=2, version_2=v2,
                        n_best=data.n_best, max_answer_length=data.max_answer_length)

    train_ex = load_text_examples(data.train, task, cfg.config_path, data.on_bad_row)
    eval_ex = load_text_examples(data.eval, task, cfg.config_path, data.on_bad_row)
    regression = task.type == "regression"
    if regression:
        num_labels, id2label = 1, {0: "score"}
    elif task.labels:
        num_labels, id2label = len(task.labels), dict(enumerate(task.labels))
    else:
        num_labels = max(int(ex.label) for ex in train_ex) + 1
        id2label = {i: str(i) for i in range(num_labels)}
    if not regression:
        if num_labels < 2:
            raise DataError(f"the training set has only label 0 ({len(train_ex)} rows); a classifier needs two or more")
        for ex in eval_ex:
            if int(ex.label) >= num_labels:
                raise DataError(
                    f"{ex.row}: label {ex.label} never occurs in the training set (ids 0..{num_labels - 1}); "
                    "list every label in task.labels"
                )
    splits = {}
    for name, examples, sources in (("train", train_ex, data.train), ("eval", eval_ex, data.eval)):
        key = _cache_key({**base, "kind": "text", "num_labels": num_labels,
                          "on_bad_row": data.on_bad_row,
                          "sources": [_source_key(s, cfg.config_path) for s in sources]})
        arrays = _cached(cache_dir, key, lambda ex=examples: _encode_texts(
            ex, tokenizer, data.max_seq_length, regression))
        splits[name] = Split(name, arrays, examples, key)
    return TaskData(task, splits["train"], splits["eval"], num_labels=num_labels, id2label=id2label)
