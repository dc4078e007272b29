"""The jobs behind the commands: fine-tune a teacher, distill one student; each writes a folder a person can read.

A student folder holds the `save_pretrained` model and tokenizer, spec.json, metrics.json, curves.jsonl
and predictions.json.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from torch import nn

from ..artifacts import config_hash, write_json
from ..config import DistillConfig, JobConfig, to_dict
from ..data.features import TaskData, prepare_task_data
from ..deploy.measure_lock import lock_dir_for
from ..env import environment
from ..model.inference import evaluate_model
from ..model.student import StudentSpec, build_student, model_param_count, param_count, teacher_layers
from ..model.teacher import (
    cached_importance, check_tokenizer, load_teacher, load_tokenizer, model_fingerprint, resolve_model,
    teacher_outputs,
)
from .augment import augmented_training
from .devices import resolve_device
from .loop import TrainResult, set_seed, train

log = logging.getLogger(__name__)

__all__ = ["Context", "distill_student", "finetune_teacher", "load_context", "save_run", "teacher_path"]


def teacher_path(cfg: JobConfig) -> str:
    """The teacher a job distills from: the one fine-tuned in this run if any, else teacher.model."""
    local = cfg.run_dir / "teacher"
    if (local / "config.json").is_file():
        return str(local)
    return resolve_model(cfg.teacher.model, cfg.config_path)


def _setup(cfg: JobConfig) -> None:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    (cfg.run_dir / "config.json").write_text(json.dumps(to_dict(cfg), indent=2))


def _head(task_type: str) -> str:
    return "qa" if task_type == "qa" else "classification"


def _save_predictions(path: Path, data: TaskData, preds: list[Any]) -> None:
    if data.task.type == "qa":
        obj = {p.qid: {"text": p.text, "start": p.start, "end": p.end, "score": p.score, "null_odds": p.null_odds}
               for p in preds}
    else:
        obj = [{"row": ex.row, "prediction": p, "label": ex.label} for ex, p in zip(data.eval.examples, preds)]
    write_json(path, obj)


def save_run(out: Path, model: nn.Module, tokenizer, data: TaskData, result: TrainResult, extra: dict[str, Any]) -> None:
    """A trained model's folder: the model (safetensors) and tokenizer, predictions.json, and metrics.json (the
    result, `extra`, where it trained, and the machine and library versions). Under `accelerate launch` only the
    main process writes it; the others wait until it is there."""
    state = PartialState()
    if not state.is_main_process:
        state.wait_for_everyone()
        return
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)  # safetensors
    tokenizer.save_pretrained(out)
    _save_predictions(out / "predictions.json", data, result.predictions)
    metrics = {
        "task": data.task.type, "metric": data.task.primary_metric,
        "value": result.metrics.get(data.task.primary_metric), **extra,
        "metrics": result.metrics, "steps": result.steps, "total_steps": result.total_steps,
        "stopped": result.stopped,
        "train_seconds": round(result.train_seconds, 2), "eval_seconds": round(result.eval_seconds, 2),
        "training_device": result.device, "resumed_from_step": result.resumed_from,
        "environment": environment(),
    }
    write_json(out / "metrics.json", metrics)
    state.wait_for_everyone()


def finetune_teacher(cfg: JobConfig, force: bool = False, progress: bool = True) -> Path:
    """Fine-tune a task head on teacher.model and save it as the run's teacher (run_dir/teacher)."""
    _setup(cfg)
    base = resolve_model(cfg.teacher.model, cfg.config_path)
    tokenizer = load_tokenizer(base)
    data = prepare_task_data(cfg, tokenizer)
    # The new head is drawn from torch's RNG: seed it, so the same seed gives the same teacher in any process
    # (and every process of `accelerate launch` starts from the same head).
    set_seed(cfg.teacher.train.seed)
    model, has_head = load_teacher(base, data, require_head=False)
    check_tokenizer(tokenizer, model, base)
    out = cfg.run_dir / "teacher"
    if has_head and not force:
        log.warning("teacher %s already has a trained %s head; not fine-tuning it (use --force to train it further)",
                    base, data.task.type)
        return Path(base)
    if data.task.type != "qa":
        model.config.id2label = data.id2label
        model.config.label2id = {v: k for k, v in data.id2label.items()}
    # Its steps hold the machine's measurement lock, as a search's do: a latency measured meanwhile by a study
    # sharing the lock (same run folder, or COMPRESS_LOCK_DIR) does not see the teacher training.
    result = train(model, data, cfg.teacher.train, curves_path=out / "curves.jsonl", desc="teacher", progress=progress,
                   checkpoint_dir=cfg.run_dir / "checkpoints" / "teacher", lock_dir=lock_dir_for(cfg.run_dir))
    extra = {
        "base_model": base, "params": param_count(model.config, _head(data.task.type), data.num_labels),
        "train_rows": len(data.train.examples), "train_features": len(data.train),
        "eval_rows": len(data.eval.examples), "version_2": data.version_2,
        "train_config": to_dict(cfg.teacher.train), "config_hash": config_hash(cfg),
    }
    save_run(out, model, tokenizer, data, result, extra)
    return out


@dataclass
class Context:
    """Everything students of one job share: tokenizer, data, teacher, its outputs and importance."""

    cfg: JobConfig
    tokenizer: Any
    data: TaskData
    teacher: nn.Module
    teacher_dir: str
    teacher_metrics: dict[str, Any]
    outputs: dict[str, Any]  # teacher logits on the training split
    importance: Any
    fingerprint: str = ""  # the teacher's model_fingerprint (names cached teacher outputs)

    @property
    def cache_dir(self) -> Path:
        return self.cfg.run_dir / "cache"


def load_context(cfg: JobConfig, progress: bool = True) -> Context:
    """Load the teacher and data once; teacher outputs and importance come from the run's cache."""
    _setup(cfg)
    path = teacher_path(cfg)
    tokenizer = load_tokenizer(path)
    data = prepare_task_data(cfg, tokenizer)
    teacher, _ = load_teacher(path, data, require_head=True)
    check_tokenizer(tokenizer, teacher, path)
    teacher.eval()
    cache = cfg.run_dir / "cache"
    fingerprint = model_fingerprint(teacher)  # hashes every weight: once per load
    # Under `accelerate launch` the main process computes the outputs (on the distillation's device) and caches
    # them; the other processes then read the cache instead of computing them again.
    with PartialState().main_process_first():
        outputs = teacher_outputs(teacher, fingerprint, data, data.train, cache,
                                  device=resolve_device(cfg.distill.train.device, "distill.train.device"))
    importance = cached_importance(teacher, fingerprint, data, cache, cfg.teacher.importance_batches)
    metrics_file = cache / f"teacher-eval-{fingerprint}-{data.eval.key}.json"
    if metrics_file.exists():
        teacher_metrics = json.loads(metrics_file.read_text())
    else:
        teacher_metrics, _ = evaluate_model(teacher, data, progress=progress)
        teacher_metrics["params"] = param_count(teacher.config, _head(data.task.type), data.num_labels)
        write_json(metrics_file, teacher_metrics)
    return Context(cfg, tokenizer, data, teacher, path, teacher_metrics, outputs, importance, fingerprint)


def _load_student(model_dir: Path, task_type: str) -> nn.Module:
    """A saved student (its safetensors and config) to train further."""
    from transformers import AutoModelForQuestionAnswering, AutoModelForSequenceClassification

    cls = AutoModelForQuestionAnswering if task_type == "qa" else AutoModelForSequenceClassification
    return cls.from_pretrained(model_dir)


def distill_student(ctx: Context, spec: StudentSpec, out: Path, distill: DistillConfig | None = None,
                    progress: bool = True, on_eval=None, lock_dir: Path | None = None,
                    init_from: Path | None = None) -> dict[str, Any]:
    """Build, distill and evaluate one student; save it to `out` and return its metrics.json content.

    `lock_dir`: each training step holds the measurement lock there (see compress.distill.loop.train); None: no lock.
    `init_from`: a saved student of the same spec to go on training (a multi-fidelity warm start) instead of one
    built from the teacher's weights.

    `distill` overrides the job's distill: section (a search trial's settings). Raises TrainingDiverged when
    the loss stops being finite (the curve so far stays in `out`).
    """
    cfg, data = ctx.cfg, ctx.data
    kd = distill or cfg.distill
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "spec.json", spec.to_json())
    student = build_student(ctx.teacher, spec, ctx.importance) if init_from is None \
        else _load_student(Path(init_from), data.task.type)
    head = _head(data.task.type)
    params = param_count(student.config, head, data.num_labels)
    built = model_param_count(student)
    if params != built:  # the formula is what the search optimises: it must describe the real model
        raise RuntimeError(f"parameter formula gives {params:,} but the built student has {built:,}")
    layers = teacher_layers(spec, ctx.teacher.config.num_hidden_layers)
    layer_map = list(kd.layer_map) if kd.layer_map else layers
    if len(layer_map) != spec.num_layers:
        raise ValueError(f"distill.layer_map has {len(layer_map)} entries for a {spec.num_layers}-layer student")
    t0 = time.perf_counter()
    data, outputs, augment = augmented_training(ctx, kd.augment, progress=progress)  # as it was when off
    if augment["enabled"]:
        log.info("distill %s: %d training rows + %d teacher-labelled augmented rows", spec.tag(),
                 augment["train_rows"], augment["rows"])
    result = train(
        student, data, kd.train, kd=kd, teacher_outputs=outputs,
        teacher_model=ctx.teacher if kd.uses_teacher_internals else None, layer_map=layer_map,
        curves_path=out / "curves.jsonl", on_eval=on_eval, desc=f"distill {spec.tag()}", progress=progress,
        lock_dir=lock_dir, checkpoint_dir=out / "checkpoint",
    )
    extra = {
        "spec": spec.to_json(), "params": params, "teacher_layers": layers,
        "teacher": {"path": ctx.teacher_dir, "metric": ctx.teacher_metrics.get(data.task.primary_metric),
                    "params": ctx.teacher_metrics.get("params")},
        "distill_config": to_dict(kd), "config_hash": config_hash(cfg), "augment": augment,
        "wall_seconds": round(time.perf_counter() - t0, 2), "version_2": data.version_2,
        "init_from": str(init_from) if init_from is not None else None,
    }
    save_run(out, student, ctx.tokenizer, data, result, extra)
    return json.loads((out / "metrics.json").read_text())
