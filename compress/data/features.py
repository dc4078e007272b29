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

from ..artifacts import atomic_write, write_json
from ..config import JobConfig, SourceConfig, TaskConfig, to_dict
from .loaders import DataError, TextExample, file_fingerprint, load_text_examples, resolve_source_path
from .negatives import NEGATIVE_SUFFIX, generate_negatives, negatives_record
from .qa import detect_version_2, featurize_qa
from .split import carve_splits, ids_hash, split_record
from .squad import load_qa_examples
from .truncate import tokenize_truncated

log = logging.getLogger(__name__)

__all__ = ["MODEL_INPUTS", "Split", "TaskData", "encode_texts", "load_split_examples", "prepare_task_data",
           "save_atomic", "tokenizer_fingerprint"]

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

    def lengths(self) -> np.ndarray:
        """Each row's real token count (rows are right-padded: the ones of its attention mask)."""
        return self.arrays["attention_mask"].sum(axis=1)

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

    def take(self, rows: np.ndarray, tag: str) -> "Split":
        """Feature rows `rows` (e.g. a multi-fidelity rung's training rows) and their examples; QA windows keep
        the whole example list, so their example_index still points at their questions. `tag` names the
        selection in the cache key."""
        idx = np.asarray(rows)
        examples = self.examples if "example_index" in self.arrays else [self.examples[i] for i in idx]
        return Split(self.name, {k: v[idx] for k, v in self.arrays.items()}, examples, f"{self.key}-{tag}")

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
    """The splits of a task, with what a model head needs to know about the labels."""

    task: TaskConfig
    train: Split
    eval: Split
    num_labels: int  # 1 for regression; 2 (start, end) is implied for QA and this is 2 there
    id2label: dict[int, str] = field(default_factory=dict)
    version_2: bool = False  # qa: the data has unanswerable questions
    n_best: int = 20  # qa decoding: candidates per window
    max_answer_length: int = 30  # qa decoding: longest span in tokens
    # held out (data.test or data.split.test): never used by training, the search, early stopping, thresholds
    # or Agora; only scored at the end of a study. None when the job has no test split
    test: Split | None = None


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
    atomic_write(path, lambda tmp: save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(tmp)))


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


def encode_texts(examples: list[TextExample], tokenizer, max_len: int, regression: bool) -> dict[str, np.ndarray]:
    """Text examples as padded token arrays of max_len with their labels (float for regression)."""
    first = [ex.texts[0] for ex in examples]
    second = [ex.texts[1] for ex in examples] if len(examples[0].texts) == 2 else None
    if second is None:  # long texts: only the prefix the model reads is tokenised (same ids, compress.data.truncate)
        enc = tokenize_truncated(tokenizer, first, max_len, padding="max_length")
    else:
        enc = tokenizer(first, second, truncation=True, max_length=max_len, padding="max_length")
    labels = np.asarray([ex.label for ex in examples], dtype=np.float32 if regression else np.int64)
    return {
        "input_ids": np.asarray(enc["input_ids"], dtype=np.int64),
        "token_type_ids": np.asarray(enc["token_type_ids"], dtype=np.int64),
        "attention_mask": np.asarray(enc["attention_mask"], dtype=np.int64),
        "labels": labels,
    }


def load_split_examples(cfg: JobConfig) -> dict[str, list]:
    """The examples of every split, in source order: train, eval and test (test [] when there is none),
    after carving eval/test from train when data.split asks for it."""
    task, data = cfg.task, cfg.data

    def load(sources: tuple[SourceConfig, ...]) -> list:
        if not sources:
            return []
        if task.type == "qa":
            return load_qa_examples(sources, cfg.config_path)
        return load_text_examples(sources, task, cfg.config_path, data.on_bad_row)

    splits = {"train": load(data.train), "eval": load(data.eval), "test": load(data.test)}
    if data.split is not None:
        carved = carve_splits(splits["train"], data.split, task.type)
        splits["train"] = carved["train"]
        for part in ("eval", "test"):
            if getattr(data.split, part) is not None:
                splits[part] = carved[part]
    if task.type == "qa" and data.negatives.ratio > 0:  # after carving: eval and test never lend a paragraph
        splits["train"] = splits["train"] + generate_negatives(splits["train"], data.negatives)
    return splits


def _record_split(cfg: JobConfig, splits: dict[str, list]) -> None:
    """Keep split.json in the run folder; a run whose data or split changed under it is refused, so every
    worker and every rerun of one study trains and scores on the same rows."""
    rec = split_record(splits, cfg.data.split, cfg.task.type, cfg.task.labels)
    if cfg.task.type == "qa" and cfg.data.negatives.ratio > 0:  # how many unanswerable copies were generated
        made = [ex for ex in splits["train"] if ex.qid.endswith(NEGATIVE_SUFFIX)]
        rec["negatives"] = negatives_record([ex for ex in splits["train"] if not ex.qid.endswith(NEGATIVE_SUFFIX)],
                                            made, cfg.data.negatives)
    path = cfg.run_dir / "split.json"
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError):
            old = None
        if old and old.get("splits") != rec["splits"]:
            changed = sorted(k for k in set(old["splits"]) | set(rec["splits"])
                             if old["splits"].get(k) != rec["splits"].get(k))
            if not (cfg.run_dir / "trials").is_dir():  # nothing was scored on the old rows yet
                log.warning("the %s split(s) differ from %s (data or data.split changed); recording the new ones",
                            ", ".join(changed), path)
                write_json(path, rec)
                return
            raise DataError(
                f"the {', '.join(changed)} split{'s' if len(changed) > 1 else ''} of run {cfg.run_dir} changed "
                f"since {path} was written (the data files, limit, or data.split settings differ): trials already "
                "in this run were trained and scored on other rows. Use a new `name:` for the new data, or delete "
                f"{path} (and the run's trials) to start this run again"
            )
    write_json(path, rec)


def prepare_task_data(cfg: JobConfig, tokenizer) -> TaskData:
    """Load, validate and featurise the splits of the job's task (from the cache when possible); writes the
    run folder's split.json, or refuses to go on when the splits differ from the ones it records."""
    task, data = cfg.task, cfg.data
    fp = tokenizer_fingerprint(tokenizer)
    cache_dir = Path(data.cache_dir)
    base = {"tokenizer": fp, "task": to_dict(task), "max_seq_length": data.max_seq_length}
    splits = load_split_examples(cfg)
    _record_split(cfg, splits)
    names = [n for n in ("train", "eval", "test") if splits[n]]
    sources = {"train": data.train, "eval": data.eval or data.train, "test": data.test or data.train}

    def key_parts(name: str) -> dict[str, Any]:
        # the row ids pin carved splits (and limits) exactly; the sources' content hashes pin the text
        return {"sources": [_source_key(s, cfg.config_path) for s in sources[name]],
                "rows": ids_hash(splits[name]), "split": name}

    if task.type == "qa":
        everything = [ex for n in names for ex in splits[n]]
        v2 = any(detect_version_2(splits[n]) for n in names)
        if task.version_2 is not None and task.version_2 != v2:
            n_imp = sum(ex.is_impossible for ex in everything)
            raise DataError(
                f"task.version_2 is {task.version_2} but the data {'has' if v2 else 'has no'} unanswerable "
                f"questions ({n_imp} of {len(everything)}): it is SQuAD {'2.0' if v2 else '1.1'}. "
                f"Set task.version_2: {str(v2).lower()} (or remove the key to detect it), or point the config "
                "at the data you meant"
            )
        if v2 and not detect_version_2(splits["train"]):
            log.warning("the eval set has unanswerable questions but the training set has none: the model "
                        "will not learn to say 'no answer'")
        built = {}
        for name in names:
            key = _cache_key({**base, "kind": "qa", "doc_stride": data.doc_stride, "version_2": v2,
                              **key_parts(name)})
            arrays = _cached(cache_dir, key, lambda ex=splits[name]: featurize_qa(
                ex, tokenizer, data.max_seq_length, data.doc_stride))
            built[name] = Split(name, arrays, splits[name], key)
        return TaskData(task, built["train"], built["eval"], num_labels=2, version_2=v2,
                        n_best=data.n_best, max_answer_length=data.max_answer_length, test=built.get("test"))

    train_ex = splits["train"]
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
        for name in names[1:]:
            for ex in splits[name]:
                if int(ex.label) >= num_labels:
                    raise DataError(
                        f"{ex.row}: label {ex.label} never occurs in the training set (ids 0..{num_labels - 1}); "
                        "list every label in task.labels"
                    )
    built = {}
    for name in names:
        key = _cache_key({**base, "kind": "text", "num_labels": num_labels, "on_bad_row": data.on_bad_row,
                          **key_parts(name)})
        arrays = _cached(cache_dir, key, lambda ex=splits[name]: encode_texts(
            ex, tokenizer, data.max_seq_length, regression))
        built[name] = Split(name, arrays, splits[name], key)
    return TaskData(task, built["train"], built["eval"], num_labels=num_labels, id2label=id2label,
                    test=built.get("test"))
