"""The training loop, top to bottom: knowledge distillation of a student, or plain fine-tuning of a teacher.

Loss = alpha_ce · T² · KL(teacher ‖ student) + alpha_task · hard loss + alpha_hidden · hidden MSE; AdamW with
linear warm-up and decay, gradient clipping, an evaluation every `eval_every` steps written to curves.jsonl.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..config import DistillConfig, TrainConfig
from ..data.features import MODEL_INPUTS, TaskData
from ..deploy.measure_lock import training_step
from ..model.inference import evaluate_model
from .losses import hard_loss, hidden_mse, qa_soft_kl, regression_soft, soft_kl

__all__ = ["StopTraining", "TrainResult", "TrainingDiverged", "set_seed", "train"]


class StopTraining(Exception):
    """Raised by an `on_eval` callback to end a run early (e.g. hopeless under a threshold); not an error."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the run stops and the caller records why."""

    def __init__(self, step: int, terms: dict[str, float]) -> None:
        self.step, self.terms = step, terms
        shown = ", ".join(f"{k}={v:.4g}" for k, v in terms.items())
        super().__init__(
            f"training diverged at step {step}: loss is not finite ({shown}); "
            "lower the learning rate, raise warmup_steps, or check the teacher's outputs"
        )


@dataclass
class TrainResult:
    """What a run produced: final metrics on the full eval split, the curve, and time spent."""

    metrics: dict[str, Any]
    predictions: list[Any]
    curve: list[dict[str, Any]] = field(default_factory=list)
    steps: int = 0
    total_steps: int = 0  # planned steps; more than `steps` when the run was stopped early
    stopped: str | None = None  # why the run stopped early, if it did
    train_seconds: float = 0.0
    eval_seconds: float = 0.0


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "LayerNorm" in name else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _loss_terms(task_type: str, kd: DistillConfig | None, teacher_outputs: dict[str, np.ndarray] | None,
                teacher_model: nn.Module | None, layer_map: list[int] | None):
    """The active loss terms, built once: (name, weight, fn(student_out, batch, rows, teacher_hidden))."""
    if kd is None:  # plain fine-tuning
        return [("task", 1.0, lambda out, b, rows, th: hard_loss(task_type, out, b))]
    terms = []
    if kd.alpha_ce > 0:
        if teacher_outputs is None:
            raise ValueError("alpha_ce > 0 needs the teacher's outputs on the training split")
        T = kd.temperature

        def soft(out, b, rows, th):
            if task_type == "qa":
                width = out.start_logits.size(1)
                ts = torch.from_numpy(teacher_outputs["start_logits"][rows, :width])
                te = torch.from_numpy(teacher_outputs["end_logits"][rows, :width])
                return qa_soft_kl(out.start_logits, out.end_logits, ts, te, T, b["attention_mask"])
            t = torch.from_numpy(teacher_outputs["logits"][rows])
            return regression_soft(out.logits, t) if task_type == "regression" else soft_kl(out.logits, t, T)

        terms.append(("ce", kd.alpha_ce, soft))
    if kd.alpha_task > 0:
        terms.append(("task", kd.alpha_task, lambda out, b, rows, th: hard_loss(task_type, out, b)))
    if kd.alpha_hidden > 0:
        if teacher_model is None or layer_map is None:
            raise ValueError("alpha_hidden > 0 needs the teacher model and a layer map")
        terms.append(("hidden", kd.alpha_hidden,
                      lambda out, b, rows, th: hidden_mse(out.hidden_states, th, layer_map, b["attention_mask"])))
    return terms


def train(
    model: nn.Module,
    data: TaskData,
    cfg: TrainConfig,
    kd: DistillConfig | None = None,
    teacher_outputs: dict[str, np.ndarray] | None = None,
    teacher_model: nn.Module | None = None,
    layer_map: list[int] | None = None,
    curves_path: Path | None = None,
    on_eval: Callable[[int, int, dict[str, Any]], None] | None = None,
    desc: str = "train",
    progress: bool = True,
    lock_dir: Path | None = None,
) -> TrainResult:
    """Train `model` in place on data.train, evaluating on data.eval.

    With `kd` None this is fine-tuning on gold labels. `on_eval(step, total_steps, metrics)` is called after
    each evaluation; raising StopTraining ends the run there (its metrics become the result), any other
    exception propagates. The curve written so far is kept either way.

    `lock_dir` (compress.deploy.measure_lock.lock_dir_for(run_dir); None, the default, takes no lock): each
    optimisation step holds the measurement lock shared, so no latency is measured on this machine while a step
    runs, and the step waits while a measurement runs (the search passes it; plain `compress distill` does not).
    """
    task_type = data.task.type
    set_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    n = len(data.train)
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    total = cfg.max_steps or max(1, math.ceil(cfg.epochs * steps_per_epoch))
    terms = _loss_terms(task_type, kd, teacher_outputs, teacher_model, layer_map)
    needs_hidden = any(name == "hidden" for name, _, _ in terms)

    optimizer = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=cfg.learning_rate)
    warmup = min(cfg.warmup_steps, total)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / (warmup + 1) if s < warmup else max(0.0, (total - s) / max(1, total - warmup))
    )
    eval_split = data.eval.subset(cfg.eval_limit) if cfg.eval_limit else data.eval
    if curves_path is not None:
        curves_path.parent.mkdir(parents=True, exist_ok=True)
        curves_path.write_text("")
    result = TrainResult(metrics={}, predictions=[])
    sums: dict[str, float] = {}
    count = 0
    order, pos = rng.permutation(n), 0
    t_train = t_eval = 0.0
    t0 = time.perf_counter()
    model.train()
    if teacher_model is not None:
        teacher_model.eval()
    bar = tqdm(range(1, total + 1), desc=desc, unit="step", disable=not progress, dynamic_ncols=True)
    for step in bar:
        if pos + cfg.batch_size > n and pos > 0:  # new epoch: reshuffle
            order, pos = rng.permutation(n), 0
        rows = np.sort(order[pos : pos + cfg.batch_size])
        pos += cfg.batch_size
        batch = data.train.batch(rows)
        inputs = {k: batch[k] for k in MODEL_INPUTS}
        with training_step(lock_dir):  # forward, backward and update: the CPU-heavy part a measurement must not see
            out = model(**inputs, output_hidden_states=needs_hidden)
            t_hidden = None
            if needs_hidden:
                with torch.no_grad():
                    t_hidden = teacher_model(**inputs, output_hidden_states=True).hidden_states
            values = {name: fn(out, batch, rows, t_hidden) for name, _, fn in terms}
            loss = sum(w * values[name] for name, w, _ in terms)
            if not torch.isfinite(loss):
                raise TrainingDiverged(step, {"loss": loss.item(), **{k: v.item() for k, v in values.items()}})
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            optimizer.step()
            schedule.step()
        sums["loss"] = sums.get("loss", 0.0) + loss.item()
        for k, v in values.items():
            sums[f"loss_{k}"] = sums.get(f"loss_{k}", 0.0) + v.item()
        count += 1
        bar.set_postfix(loss=f"{sums['loss'] / count:.4f}", refresh=False)

        last = step == total
        if last or (cfg.eval_every and step % cfg.eval_every == 0):
            t_train += time.perf_counter() - t0
            t1 = time.perf_counter()
            split = data.eval if last else eval_split
            metrics, preds = evaluate_model(model, data, split, cfg.eval_batch_size)
            model.train()
            t_eval += time.perf_counter() - t1
            point = {
                "step": step, "epoch": round(step / steps_per_epoch, 4), "lr": schedule.get_last_lr()[0],
                **{k: v / count for k, v in sums.items()}, "eval_rows": len(split.examples),
                **{k: v for k, v in metrics.items() if isinstance(v, (int, float))},
                "train_seconds": round(t_train, 2), "eval_seconds": round(t_eval, 2),
            }
            result.curve.append(point)
            if curves_path is not None:
                with open(curves_path, "a") as fh:
                    fh.write(json.dumps(point) + "\n")
            sums, count = {}, 0
            if last:
                result.metrics, result.predictions = metrics, preds
            if on_eval is not None:
                try:
                    on_eval(step, total, metrics)
                except StopTraining as stop:
                    result.metrics, result.predictions = metrics, preds
                    result.stopped = str(stop)
                    result.steps = step
                    break
            t0 = time.perf_counter()
    else:
        result.steps = total
    bar.close()
    result.total_steps, result.train_seconds, result.eval_seconds = total, t_train, t_eval
    return result
