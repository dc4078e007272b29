"""Run a model over a featurised split and score its outputs with the task's metrics.

`predict_logits` works on any PyTorch model; `score_outputs` takes plain arrays, so ONNX Runtime
outputs are scored by exactly the same code.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..data.features import Split, TaskData
from ..data.qa import decode_qa
from ..deploy.onnxrt import onnx_session  # re-exported: sessions for evaluation and serving are made one way
from .metrics import SquadGold, classification_metrics, regression_metrics, squad_evaluate

__all__ = ["evaluate_model", "evaluate_onnx", "onnx_session", "output_names", "predict_logits", "predict_onnx",
           "score_outputs"]


def output_names(task_type: str) -> tuple[str, ...]:
    """The model outputs a task reads, in order (also the ONNX output names)."""
    return ("start_logits", "end_logits") if task_type == "qa" else ("logits",)


def _predict(run, split: Split, batch_size: int, task_type: str, progress: bool, desc: str) -> dict[str, np.ndarray]:
    """Outputs of `run(batch) -> {name: array}` for every row of the split, in the split's order.

    Batches are built from rows of similar length (sorted by length, longest first, so a batch too large for the
    device fails at once) and trimmed to their longest row: a batch pads little, where rows taken in order pad to
    the longest of a mixed bunch (QA windows of 100 to 384 tokens: about half the work). The outputs go back to
    their rows' places; QA logits are padded back to the split's full length."""
    names = output_names(task_type)
    n = len(split)
    full_len = split.arrays["input_ids"].shape[1]
    order = np.argsort(-split.lengths(), kind="stable")
    out: dict[str, np.ndarray] = {}
    starts = range(0, n, batch_size)
    if progress:
        starts = tqdm(starts, desc=desc, unit="batch", leave=False)
    for start in starts:
        rows = order[start:start + batch_size]
        got = run(split.batch(rows, labels=False))
        for k in names:
            v = np.asarray(got[k], dtype=np.float32)
            if task_type == "qa" and v.shape[1] < full_len:  # undo dynamic padding
                v = np.pad(v, ((0, 0), (0, full_len - v.shape[1])), constant_values=-1e4)
            if k not in out:
                out[k] = np.empty((n, *v.shape[1:]), dtype=np.float32)
            out[k][rows] = v
    return {k: out.get(k, np.empty((0,), dtype=np.float32)) for k in names}


@torch.no_grad()
def predict_logits(model: nn.Module, split: Split, batch_size: int = 64, task_type: str = "classification",
                   progress: bool = False) -> dict[str, np.ndarray]:
    """Model outputs for every row of the split, in order. QA logits are padded back to full length."""
    was_training = model.training
    model.eval()
    names = output_names(task_type)
    device = next(model.parameters()).device  # the batches go where the model is (a GPU during training)

    def run(batch):
        res = model(**{k: v.to(device, non_blocking=True) for k, v in batch.items()})
        return {k: getattr(res, k).float().cpu().numpy() for k in names}

    try:
        return _predict(run, split, batch_size, task_type, progress, f"predict {split.name}")
    finally:
        model.train(was_training)


def score_outputs(data: TaskData, split: Split, outputs: dict[str, np.ndarray],
                  na_threshold: float = 0.0) -> tuple[dict[str, Any], list[Any]]:
    """Task metrics and per-example predictions from raw outputs.

    QA (SQuAD 2.0): the model answers "no answer" when null_odds > na_threshold; `exact`/`f1` are at that
    threshold and `best_*` at the threshold that maximises them on this split, as the official script does.
    """
    task_type = data.task.type
    if task_type == "qa":
        preds = decode_qa(split.examples, split.arrays, outputs["start_logits"], outputs["end_logits"],
                          n_best=data.n_best, max_answer_length=data.max_answer_length)
        gold = [SquadGold(ex.qid, tuple(t for t, _ in ex.answers), ex.title) for ex in split.examples]
        texts = {p.qid: p.text for p in preds}
        if data.version_2:
            odds = {p.qid: p.null_odds for p in preds}
            metrics = dict(squad_evaluate(gold, texts, odds, na_prob_thresh=na_threshold))
            metrics["na_threshold"] = na_threshold
            metrics["no_answer_rate"] = float(np.mean([p.null_odds > na_threshold for p in preds]))
        else:
            metrics = dict(squad_evaluate(gold, texts))
        return metrics, preds
    logits = outputs["logits"]
    labels = split.arrays["labels"]
    if task_type == "regression":
        values = logits.reshape(-1)
        metrics = regression_metrics(values, labels)
        return metrics, values.tolist()
    pred = logits.argmax(axis=-1)
    metrics = classification_metrics(pred, labels, data.num_labels)
    return metrics, pred.tolist()


def evaluate_model(model: nn.Module, data: TaskData, split: Split | None = None, batch_size: int = 64,
                   na_threshold: float = 0.0, progress: bool = False) -> tuple[dict[str, Any], list[Any]]:
    """Predict and score in one call (the eval split by default)."""
    split = split or data.eval
    outputs = predict_logits(model, split, batch_size, data.task.type, progress=progress)
    return score_outputs(data, split, outputs, na_threshold)


# ----------------------------------------------------------------------------------------------
# ONNX Runtime: the deployed artifact, scored by the same code


def predict_onnx(session, split: Split, task_type: str = "classification", batch_size: int = 64,
                 progress: bool = False) -> dict[str, np.ndarray]:
    """ONNX Runtime outputs for every row of the split, in order; the twin of predict_logits."""
    if not hasattr(session, "run"):
        session = onnx_session(session)
    names = output_names(task_type)
    have = [o.name for o in session.get_outputs()]
    if any(k not in have for k in names):
        raise ValueError(f"the ONNX model has outputs {have} but task type {task_type!r} reads {list(names)}; "
                         "evaluate it with the task it was exported for")
    feeds = [i.name for i in session.get_inputs()]

    def run(batch):
        return dict(zip(have, session.run(None, {k: batch[k].numpy().astype(np.int64) for k in feeds})))

    return _predict(run, split, batch_size, task_type, progress, f"predict {split.name} (onnx)")


def evaluate_onnx(onnx_path, data: TaskData, split: Split | None = None, batch_size: int = 64, threads: int = 2,
                  na_threshold: float = 0.0, progress: bool = False) -> tuple[dict[str, Any], list[Any]]:
    """Score an exported (or optimised, or quantised) ONNX file on the eval split with the task's metrics."""
    split = split or data.eval
    outputs = predict_onnx(onnx_session(onnx_path, threads), split, data.task.type, batch_size, progress)
    return score_outputs(data, split, outputs, na_threshold)
