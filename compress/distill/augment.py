"""Teacher-labelled augmentation of the distillation set (TinyBERT's idea, with this project's transformations).

`distill.augment.factor` new rows per training row are made by ν (compress.data.augment: word deletion, word
swap, substitution by a nearest neighbour in the teacher's input embeddings; for QA the context changes only
outside the answer, which stays exact), and rows of in-domain text without labels (`distill.augment.unlabelled`)
are added as they are. The teacher labels every new row: its soft outputs are the distillation targets, and the
hard label is its prediction (argmax; its value for regression; QA keeps the exact answer span), since a
transformed sentence may no longer carry the original's label ("not good" with "not" deleted).

Rows are drawn from the training rows in a seeded order (each row in turn, then again, until the count is met);
a new row whose text equals a training row or another new row is dropped. The rows and the teacher's outputs on
them are cached in the run's cache folder, keyed by the teacher, the training split and the settings, so every
trial with the same settings reuses them. `augmented_training` returns the training data with the new rows
appended, the teacher outputs on all rows, and a record of what was made.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file

from ..config import AugmentConfig, to_dict
from ..data.augment import Nu
from ..data.features import Split, TaskData, encode_texts, save_atomic
from ..data.files import file_fingerprint, resolve_source_path
from ..data.loaders import QAExample, TextExample, load_text_examples
from ..data.qa import featurize_qa
from ..model.inference import predict_logits
from .devices import placed, resolve_device

__all__ = ["augmented_training", "concat_splits", "encode_split"]

log = logging.getLogger(__name__)

FORMAT = 1  # bump when the way rows are made changes: cached rows are then made again
ATTEMPTS = 4  # tries per requested row before giving up on the count (ν does not apply to every row)


def encode_split(ctx, name: str, examples: list[Any]) -> Split:
    """Examples featurised as the job's training split is (QA windows; padded token arrays otherwise)."""
    cfg = ctx.cfg
    if cfg.task.type == "qa":
        arrays = featurize_qa(examples, ctx.tokenizer, cfg.data.max_seq_length, cfg.data.doc_stride)
    else:
        arrays = encode_texts(examples, ctx.tokenizer, cfg.data.max_seq_length, cfg.task.type == "regression")
    return Split(name, arrays, examples, f"{name}-{len(examples)}")


def concat_splits(base: Split, new: Split) -> Split:
    """`new`'s rows after `base`'s (QA windows keep pointing at their own question)."""
    arrays = {}
    for k, v in base.arrays.items():
        w = new.arrays[k]
        if k == "example_index":
            w = w + len(base.examples)
        arrays[k] = np.concatenate([v, w])
    return Split(base.name, arrays, base.examples + new.examples, f"{base.key}+{new.key}")


def _text_of(ex: Any) -> Any:
    return (ex.question, ex.context) if isinstance(ex, QAExample) else tuple(ex.texts)


def _cache_key(ctx, aug: AugmentConfig) -> str:
    sources = []
    for s in aug.unlabelled:
        path = resolve_source_path(s.path, ctx.cfg.config_path)
        sources.append({**to_dict(s), "sha": file_fingerprint(path) if path.exists() else None})
    blob = json.dumps({"format": FORMAT, "teacher": ctx.fingerprint, "train": ctx.data.train.key,
                       "rows": len(ctx.data.train.examples), "max_len": ctx.cfg.data.max_seq_length,
                       "augment": {k: v for k, v in to_dict(aug).items() if k != "unlabelled"},
                       "unlabelled": sources}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _make_rows(ctx, aug: AugmentConfig) -> tuple[list[Any], dict[str, Any]]:
    """The new rows (unlabelled: teacher labels come later) and counts of how they were made."""
    train = ctx.data.train.examples
    want = int(round(aug.factor * len(train)))
    seen = {_text_of(ex) for ex in train}
    made: list[Any] = []
    duplicates = attempts = 0
    if want:
        rng = np.random.default_rng(aug.seed)
        emb = ctx.teacher.get_input_embeddings().weight.detach().cpu().numpy()
        nu = Nu(ctx.tokenizer, emb, tuple(aug.transforms), aug.neighbours)
        order = rng.permutation(len(train))
        while len(made) < want and attempts < ATTEMPTS * want:
            ex = train[int(order[attempts % len(order)])]
            attempts += 1
            new = nu.example(ex, rng)
            if new is None:
                continue
            key = _text_of(new)
            if key in seen:
                duplicates += 1
                continue
            seen.add(key)
            made.append(dataclasses.replace(new, row=f"{ex.row}+aug{len(made)}") if isinstance(new, TextExample)
                        else new)
    transformed = len(made)
    unlabelled = 0
    if aug.unlabelled:
        for ex in load_text_examples(aug.unlabelled, ctx.cfg.task, ctx.cfg.config_path, ctx.cfg.data.on_bad_row,
                                     labelled=False):
            if _text_of(ex) in seen:
                duplicates += 1
                continue
            seen.add(_text_of(ex))
            made.append(ex)
            unlabelled += 1
    return made, {"requested": want, "transformed": transformed, "unlabelled": unlabelled,
                  "duplicates_dropped": duplicates, "attempts": attempts}


def _with_placeholder_labels(ctx, rows: list[Any]) -> list[Any]:
    if ctx.cfg.task.type == "qa":
        return rows
    zero = 0.0 if ctx.cfg.task.type == "regression" else 0
    return [ex if ex.label is not None else dataclasses.replace(ex, label=zero) for ex in rows]


def _teacher_labelled(ctx, rows: list[Any], outputs: dict[str, np.ndarray]) -> list[Any]:
    """Rows with the teacher's hard labels (argmax, or its value for regression); QA rows keep their spans."""
    task = ctx.cfg.task.type
    if task == "qa":
        return rows
    logits = outputs["logits"]
    if task == "regression":
        return [dataclasses.replace(ex, label=float(v)) for ex, v in zip(rows, logits.reshape(-1))]
    return [dataclasses.replace(ex, label=int(v)) for ex, v in zip(rows, logits.argmax(axis=-1))]


def _save(path: Path, rows: list[Any], outputs: dict[str, np.ndarray], record: dict[str, Any]) -> None:
    save_atomic({k: np.asarray(v, dtype=np.float32) for k, v in outputs.items()}, path.with_suffix(".safetensors"))
    doc = {"record": record, "rows": [dataclasses.asdict(ex) for ex in rows]}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc))
    tmp.replace(path)


def _load(path: Path, qa: bool) -> tuple[list[Any], dict[str, np.ndarray], dict[str, Any]] | None:
    arrays = path.with_suffix(".safetensors")
    if not (path.is_file() and arrays.is_file()):
        return None
    try:
        doc = json.loads(path.read_text())
        outputs = load_file(str(arrays))
    except (OSError, ValueError) as exc:
        log.warning("augmented rows in %s are unreadable (%s); making them again", path, exc)
        return None
    if qa:
        rows = [QAExample(**{**r, "answers": tuple(tuple(a) for a in r["answers"])}) for r in doc["rows"]]
    else:
        rows = [TextExample(tuple(r["texts"]), r["label"], r["row"]) for r in doc["rows"]]
    return rows, outputs, doc["record"]


def augmented_training(ctx, aug: AugmentConfig, progress: bool = False
                       ) -> tuple[TaskData, dict[str, np.ndarray], dict[str, Any]]:
    """(the job's data with the augmented rows after the training rows, the teacher outputs on every training
    row, a record of what was made); the context's own data unchanged when augmentation is off."""
    data = ctx.data
    if not aug.enabled:
        return data, ctx.outputs, {"enabled": False}
    if aug.unlabelled and ctx.cfg.task.type == "qa":
        raise ValueError("distill.augment.unlabelled: QA needs questions with their contexts; unlabelled text is "
                         "for classification and regression. Remove it, or use distill.augment.factor")
    t0 = time.perf_counter()
    path = ctx.cache_dir / f"augment-{_cache_key(ctx, aug)}.json"
    cached = _load(path, ctx.cfg.task.type == "qa")
    if cached is not None:
        rows, new_out, record = cached
        record = {**record, "cached": True}
    else:
        rows, counts = _make_rows(ctx, aug)
        if not rows:
            raise ValueError(f"distill.augment made no new rows from {len(data.train.examples)} training rows "
                             f"(transforms {list(aug.transforms)} apply to none of them, and no unlabelled text); "
                             "try other transforms or add distill.augment.unlabelled")
        probe = encode_split(ctx, "augment", _with_placeholder_labels(ctx, rows))
        device = resolve_device(ctx.cfg.distill.train.device, "distill.train.device")
        with placed(ctx.teacher, device):
            new_out = predict_logits(ctx.teacher, probe, task_type=ctx.cfg.task.type, progress=progress)
        rows = _teacher_labelled(ctx, rows, new_out)
        record = {**counts, "rows": len(rows), "factor": aug.factor, "transforms": list(aug.transforms),
                  "label_source": "the teacher: its soft outputs are the targets, its prediction the hard label"
                                  + (" (QA: the exact answer span is kept)" if ctx.cfg.task.type == "qa" else ""),
                  "cache": str(path), "seconds": round(time.perf_counter() - t0, 2)}
        _save(path, rows, new_out, record)
        record = {**record, "cached": False}
    split = encode_split(ctx, "augment", rows)
    if len(split) != len(next(iter(new_out.values()))):
        raise RuntimeError(f"augmented rows in {path} have {len(split)} features but "
                           f"{len(next(iter(new_out.values())))} teacher outputs; delete the file to remake them")
    train = concat_splits(data.train, split)
    outputs = {k: np.concatenate([np.asarray(ctx.outputs[k]), np.asarray(new_out[k])]) for k in ctx.outputs}
    out = dataclasses.replace(data, train=train)
    return out, outputs, {**record, "enabled": True, "train_rows": len(data.train.examples),
                          "train_rows_augmented": len(train.examples)}
