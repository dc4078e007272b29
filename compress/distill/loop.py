"""The training loop, top to bottom: knowledge distillation of a student, or plain fine-tuning of a teacher.

Loss = alpha_ce · T² · KL(teacher ‖ student) + alpha_task · hard loss, plus the losses on the teacher's internals
(hidden states, attention maps, self-attention relations: compress.distill.losses) when their weights are set;
AdamW with linear warm-up and decay, gradient clipping, an evaluation every `eval_every` steps written to
curves.jsonl.
It runs through Hugging Face Accelerate (compress/distill/devices.py): on the configured device and precision,
and data-parallel under `accelerate launch`. The rows of every step are a pure function of the seed and the
step (`step_rows`), which is what lets a checkpointed run resume exactly where it stopped.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
import os
import random
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm.auto import tqdm

from ..config import DistillConfig, TrainConfig
from ..data.features import MODEL_INPUTS, Split, TaskData
from ..deploy.measure_lock import training_step
from ..model.inference import evaluate_model
from .devices import accelerator_for, device_report
from .losses import QKV, attention_mse, hard_loss, hidden_mse, qa_soft_kl, regression_soft, relations_loss, soft_kl

__all__ = ["StepBatches", "StopTraining", "TrainResult", "TrainingDiverged", "set_seed", "step_rows", "train"]

log = logging.getLogger(__name__)


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
    device: dict[str, Any] = field(default_factory=dict)  # where it ran (devices.device_report)
    resumed_from: int | None = None  # the checkpoint step it resumed from, if it did


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Full batches per pass over n rows (the last partial batch is dropped; at least one step)."""
    return max(1, n // batch_size)


def step_rows(n: int, batch_size: int, seed: int, first: int, last: int,
              lengths: np.ndarray | None = None) -> Iterator[np.ndarray]:
    """The sorted row indices of steps first..last (1-based): one permutation of the n rows per epoch, drawn in
    order from numpy's default_rng(seed), full batches only. The same for every process, device and resume.

    `lengths` (each row's real token count; `train.group_by_length`): each epoch's order is instead Hugging Face's
    length-grouped one (transformers' get_length_grouped_indices, as the Trainer's group_by_length: a random
    permutation cut into mega-batches of 50 batches, each sorted by length), drawn from a torch generator seeded by
    (seed, epoch), so batches hold rows of similar length and dynamic padding pads little. Still a pure function of
    its arguments, so a resumed run gets the same batches."""
    per_epoch = steps_per_epoch(n, batch_size)
    rng = np.random.default_rng(seed)

    def order_of(epoch: int) -> np.ndarray:
        if lengths is None:
            return rng.permutation(n)
        from transformers.trainer_pt_utils import get_length_grouped_indices

        gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + epoch)
        return np.asarray(get_length_grouped_indices(lengths.tolist(), batch_size, generator=gen), dtype=np.int64)

    epoch, order = 0, order_of(0)
    for step in range(1, last + 1):
        e = (step - 1) // per_epoch
        while epoch < e:
            epoch += 1
            order = order_of(epoch)
        if step >= first:
            pos = (step - 1 - e * per_epoch) * batch_size
            yield np.sort(order[pos:pos + batch_size])


class StepBatches(Sampler):
    """A batch sampler over `step_rows`: one batch of row indices per optimisation step from `first` to `last`."""

    def __init__(self, n: int, batch_size: int, seed: int, first: int, last: int,
                 lengths: np.ndarray | None = None) -> None:
        self.n, self.batch_size, self.seed, self.first, self.last = n, batch_size, seed, first, last
        self.lengths = lengths

    def __iter__(self) -> Iterator[list[int]]:
        for rows in step_rows(self.n, self.batch_size, self.seed, self.first, self.last, self.lengths):
            yield rows.tolist()

    def __len__(self) -> int:
        return max(0, self.last - self.first + 1)


class _Rows(Dataset):
    """Row i is just i: the collate function builds the padded batch from the split (dynamic padding)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


@dataclass
class _Collate:
    split: Split

    def __call__(self, rows: list[int]) -> dict[str, Any]:
        idx = np.asarray(rows, dtype=np.int64)
        # The rows go along (as a tensor, so Accelerate splits them with the batch across processes).
        return {"rows": torch.from_numpy(idx), **self.split.batch(idx)}


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "LayerNorm" in name else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _loss_terms(task_type: str, kd: DistillConfig | None, teacher_outputs: dict[str, np.ndarray] | None,
                teacher_model: nn.Module | None, layer_map: list[int] | None, device: torch.device | None = None,
                projection: nn.Module | None = None, relation_heads: int | None = None):
    """The active loss terms, built once: (name, weight, fn(student_out, batch, rows, internals)); `internals`
    holds the teacher's forward output and both models' captured query/key/value (None without such a loss)."""
    if kd is None:  # plain fine-tuning
        return [("task", 1.0, lambda out, b, rows, inner: hard_loss(task_type, out, b))]
    terms = []
    if kd.alpha_ce > 0:
        if teacher_outputs is None:
            raise ValueError("alpha_ce > 0 needs the teacher's outputs on the training split")
        T = kd.temperature

        def soft(out, b, rows, inner):
            if task_type == "qa":
                width = out.start_logits.size(1)
                ts = torch.from_numpy(teacher_outputs["start_logits"][rows, :width]).to(device)
                te = torch.from_numpy(teacher_outputs["end_logits"][rows, :width]).to(device)
                return qa_soft_kl(out.start_logits, out.end_logits, ts, te, T, b["attention_mask"])
            t = torch.from_numpy(teacher_outputs["logits"][rows]).to(device)
            return regression_soft(out.logits, t) if task_type == "regression" else soft_kl(out.logits, t, T)

        terms.append(("ce", kd.alpha_ce, soft))
    if kd.alpha_task > 0:
        terms.append(("task", kd.alpha_task, lambda out, b, rows, inner: hard_loss(task_type, out, b)))
    if kd.alpha_hidden > 0:
        terms.append(("hidden", kd.alpha_hidden, lambda out, b, rows, inner: hidden_mse(
            out.hidden_states, inner["teacher"].hidden_states, layer_map, b["attention_mask"], projection)))
    if kd.alpha_attention > 0:
        terms.append(("attention", kd.alpha_attention, lambda out, b, rows, inner: attention_mse(
            out.attentions, inner["teacher"].attentions, layer_map, b["attention_mask"])))
    if kd.alpha_relations > 0:
        terms.append(("relations", kd.alpha_relations, lambda out, b, rows, inner: relations_loss(
            inner["student_qkv"], inner["teacher_qkv"], relation_heads, b["attention_mask"])))
    return terms


def _encoder_layers(model: nn.Module):
    """The transformer layers of a BERT-family model with a task head (model.bert.encoder.layer and kin)."""
    base = getattr(model, "base_model", model)
    try:
        return base.encoder.layer
    except AttributeError:
        raise ValueError(f"{type(model).__name__} has no encoder.layer list: attention relations need a "
                         "BERT-family encoder") from None


class _QKVCapture:
    """Forward hooks on one layer's query, key and value projections: their outputs of the latest forward."""

    def __init__(self, layer: nn.Module) -> None:
        attn = layer.attention.self
        self.width = attn.query.out_features  # the layer's query/key/value width (heads kept × head size)
        self.values: dict[str, torch.Tensor] = {}
        self.handles = [getattr(attn, k).register_forward_hook(self._hook(k)) for k in QKV]

    def _hook(self, key: str):
        def hook(module, args, output):
            self.values[key] = output
        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def relation_heads_for(kd: DistillConfig, student_width: int, teacher_width: int, teacher_heads: int) -> int:
    """distill.relation_heads, or by default the largest count up to the teacher's heads that divides both the
    student's and the teacher's query widths (MiniLM-v2 splits each side into the same number of relation heads)."""
    if kd.relation_heads is not None:
        for name, w in (("student's", student_width), ("teacher's", teacher_width)):
            if w % kd.relation_heads:
                raise ValueError(f"distill.relation_heads={kd.relation_heads} does not divide the {name} query width "
                                 f"{w}; use a divisor of both {student_width} and {teacher_width}, or leave it out")
        return kd.relation_heads
    g = math.gcd(student_width, teacher_width)
    return max(h for h in range(1, teacher_heads + 1) if g % h == 0)


CHECKPOINT_FORMAT = 1


def _fingerprint(model: nn.Module, data: TaskData, cfg: TrainConfig, kd: DistillConfig | None,
                 projection: nn.Module | None = None) -> str:
    """What a checkpoint must match to be resumed: the model's shape, the data and every optimisation setting."""
    shapes = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    if projection is not None:
        shapes += [(f"projection.{k}", tuple(v.shape)) for k, v in projection.state_dict().items()]
    # Where it runs and how batches are assembled do not change the optimisation: a run started on the CPU may go
    # on on a GPU, or with loader workers.
    settings = {k: v for k, v in asdict(cfg).items() if k not in ("device", "dataloader_workers", "checkpoint_every")}
    if not settings["group_by_length"]:  # added later: checkpoints made before it (random order) still resume
        del settings["group_by_length"]
    blob = json.dumps({"format": CHECKPOINT_FORMAT, "shapes": shapes, "train_key": data.train.key,
                       "rows": len(data.train), "train": settings,
                       "kd": None if kd is None else asdict(kd)}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _read_checkpoint(folder: Path | None, fingerprint: str) -> dict[str, Any] | None:
    """The progress record of a checkpoint this run can resume, or None (with the reason logged)."""
    if folder is None or not (folder / "progress.json").is_file():
        return None
    try:
        progress = json.loads((folder / "progress.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        log.warning("checkpoint %s is unreadable (%s); training starts from step 0", folder, exc)
        return None
    if progress.get("fingerprint") != fingerprint:
        log.warning("checkpoint %s was made by another configuration, model or data set (fingerprint %s, this run "
                    "%s); training starts from step 0 and replaces it", folder, progress.get("fingerprint"),
                    fingerprint)
        return None
    return progress


def _save_checkpoint(accelerator, folder: Path, progress: dict[str, Any]) -> None:
    """Model, optimiser, schedule and RNG states (accelerator.save_state) and the loop's own progress, written
    beside the previous checkpoint and swapped in only when complete, so a kill mid-write loses nothing."""
    tmp = folder.with_name(folder.name + ".tmp")
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / "progress.json").write_text(json.dumps(progress))
        old = folder.with_name(folder.name + ".old")
        if folder.exists():
            os.replace(folder, old)
        os.replace(tmp, folder)
        if old.exists():
            shutil.rmtree(old)
    accelerator.wait_for_everyone()


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
    checkpoint_dir: Path | None = None,
) -> TrainResult:
    """Train `model` in place on data.train, evaluating on data.eval; the model is on the CPU again at the end.

    With `kd` None this is fine-tuning on gold labels. `on_eval(step, total_steps, metrics)` is called after
    each evaluation; raising StopTraining ends the run there (its metrics become the result), any other
    exception propagates. The curve written so far is kept either way.

    `lock_dir` (compress.deploy.measure_lock.lock_dir_for(run_dir); None, the default, takes no lock): each
    optimisation step holds the measurement lock shared, so no latency is measured on this machine while a step
    runs, and the step waits while a measurement runs (the search passes it; plain `compress distill` does not).

    `checkpoint_dir` with `cfg.checkpoint_every` > 0: a checkpoint every that many steps; a run that finds a
    checkpoint of the same model, data and settings there resumes from it (curve, schedule, optimiser, RNG) and
    gives the result the uninterrupted run would have. The checkpoint is removed when the run completes.

    Under `accelerate launch` every process runs this with the same arguments: each step's batch is split
    between the processes, every process evaluates (so `on_eval` decides the same everywhere), and only the main
    process writes the curve and checkpoints' progress.
    """
    task_type = data.task.type
    set_seed(cfg.seed)
    accelerator = accelerator_for(cfg)
    device = accelerator.device
    n = len(data.train)
    spe = math.ceil(n / cfg.batch_size)  # the curve's epoch unit (a last partial batch counts)
    total = cfg.max_steps or max(1, math.ceil(cfg.epochs * spe))
    if cfg.batch_size % accelerator.num_processes:
        raise ValueError(f"batch_size={cfg.batch_size} does not split between {accelerator.num_processes} processes; "
                         f"use a multiple of {accelerator.num_processes}")
    internals = kd is not None and kd.uses_teacher_internals
    if internals and (teacher_model is None or layer_map is None):
        raise ValueError("alpha_hidden, alpha_attention or alpha_relations > 0 needs the teacher model and a layer map")
    projection, relation_heads, captures = None, None, []
    if internals and kd.alpha_hidden > 0 and model.config.hidden_size != teacher_model.config.hidden_size:
        # TinyBERT's W_h: the student's hidden states mapped to the teacher's width, learnt with the student
        # (not part of the saved model)
        projection = nn.Linear(model.config.hidden_size, teacher_model.config.hidden_size, bias=False)
    if internals and kd.alpha_relations > 0:
        layers_t = _encoder_layers(teacher_model)
        if not -len(layers_t) <= kd.relation_layer < len(layers_t):
            raise ValueError(f"distill.relation_layer={kd.relation_layer}: the teacher has {len(layers_t)} layers "
                             f"(0 to {len(layers_t) - 1}, or -1 for the last)")
        captures = [_QKVCapture(_encoder_layers(model)[-1]), _QKVCapture(layers_t[kd.relation_layer])]
        relation_heads = relation_heads_for(kd, captures[0].width, captures[1].width,
                                            teacher_model.config.num_attention_heads)
    terms = _loss_terms(task_type, kd, teacher_outputs, teacher_model, layer_map, device, projection, relation_heads)
    names = {name for name, _, _ in terms}
    want_hidden, want_attn = "hidden" in names, "attention" in names
    write = accelerator.is_main_process

    fingerprint = (_fingerprint(model, data, cfg, kd, projection)
                   if checkpoint_dir is not None and cfg.checkpoint_every else "")
    resume = _read_checkpoint(checkpoint_dir, fingerprint) if fingerprint else None
    start = resume["step"] + 1 if resume else 1

    groups = _param_groups(model, cfg.weight_decay)
    if projection is not None:
        groups[0]["params"] = groups[0]["params"] + list(projection.parameters())
    optimizer = torch.optim.AdamW(groups, lr=cfg.learning_rate)
    warmup = min(cfg.warmup_steps, total)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / (warmup + 1) if s < warmup else max(0.0, (total - s) / max(1, total - warmup))
    )
    lengths = data.train.lengths() if cfg.group_by_length else None
    loader = DataLoader(_Rows(n), batch_sampler=StepBatches(n, cfg.batch_size, cfg.seed, start, total, lengths),
                        collate_fn=_Collate(data.train), num_workers=cfg.dataloader_workers,
                        pin_memory=device.type == "cuda", persistent_workers=False)
    if projection is not None:
        model, projection, optimizer, loader, schedule = accelerator.prepare(model, projection, optimizer, loader,
                                                                             schedule)
    else:
        model, optimizer, loader, schedule = accelerator.prepare(model, optimizer, loader, schedule)
    if teacher_model is not None:
        teacher_model.to(device)
    eval_split = data.eval.subset(cfg.eval_limit) if cfg.eval_limit else data.eval
    result = TrainResult(metrics={}, predictions=[], device=device_report(accelerator))
    sums: dict[str, float] = {}
    count = 0
    t_train = t_eval = 0.0
    # Starting the loader draws its base seed from torch's RNG; keep that draw out of the dropout stream, so the
    # run matches the loop before Accelerate and a resumed run matches an uninterrupted one.
    rng_before = torch.get_rng_state()
    batches = iter(loader)
    first = next(batches, None)
    torch.set_rng_state(rng_before)
    if resume:
        accelerator.load_state(str(checkpoint_dir))
        result.curve = resume["curve"]
        sums, count = resume["sums"], resume["count"]
        t_train, t_eval = resume["train_seconds"], resume["eval_seconds"]
        result.resumed_from = resume["step"]
        log.info("%s: resumed from the checkpoint at step %d of %d (%s)", desc, resume["step"], total, checkpoint_dir)
    if curves_path is not None and write:
        curves_path.parent.mkdir(parents=True, exist_ok=True)
        curves_path.write_text("".join(json.dumps(p) + "\n" for p in result.curve))
    t0 = time.perf_counter()
    model.train()
    if teacher_model is not None:
        teacher_model.eval()
    bar = tqdm(total=total, initial=start - 1, desc=desc, unit="step", disable=not (progress and write),
               dynamic_ncols=True)
    try:
        for step, batch in zip(range(start, total + 1), itertools.chain([first] if first is not None else [], batches)):
            rows = batch.pop("rows").cpu().numpy()
            inputs = {k: batch[k] for k in MODEL_INPUTS if k in batch}
            with training_step(lock_dir):  # forward, backward and update: the CPU-heavy part a measurement must not see
                out = model(**inputs, output_hidden_states=want_hidden, output_attentions=want_attn)
                inner = None
                if internals:
                    inner = {"student_qkv": dict(captures[0].values) if captures else None}
                    with torch.no_grad(), accelerator.autocast():
                        inner["teacher"] = teacher_model(**inputs, output_hidden_states=want_hidden,
                                                         output_attentions=want_attn)
                    inner["teacher_qkv"] = dict(captures[1].values) if captures else None
                values = {name: fn(out, batch, rows, inner) for name, _, fn in terms}
                loss = sum(w * values[name] for name, w, _ in terms)
                if not torch.isfinite(loss):
                    raise TrainingDiverged(step, {"loss": loss.item(), **{k: v.item() for k, v in values.items()}})
                optimizer.zero_grad(set_to_none=True)
                accelerator.backward(loss)
                if cfg.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                optimizer.step()
                schedule.step()
            logged = {"loss": loss.detach(), **{f"loss_{k}": v.detach() for k, v in values.items()}}
            if accelerator.num_processes > 1:  # each process saw its share of the batch: log the whole batch's mean
                logged = {k: accelerator.reduce(v, "mean") for k, v in logged.items()}
            for k, v in logged.items():
                sums[k] = sums.get(k, 0.0) + v.item()
            count += 1
            bar.update(1)
            bar.set_postfix(loss=f"{sums['loss'] / count:.4f}", refresh=False)

            last = step == total
            if last or (cfg.eval_every and step % cfg.eval_every == 0):
                t_train += time.perf_counter() - t0
                t1 = time.perf_counter()
                split = data.eval if last else eval_split
                metrics, preds = evaluate_model(accelerator.unwrap_model(model), data, split, cfg.eval_batch_size)
                model.train()
                t_eval += time.perf_counter() - t1
                point = {
                    "step": step, "epoch": round(step / spe, 4), "lr": schedule.get_last_lr()[0],
                    **{k: v / count for k, v in sums.items()}, "eval_rows": len(split.examples),
                    **{k: v for k, v in metrics.items() if isinstance(v, (int, float))},
                    "train_seconds": round(t_train, 2), "eval_seconds": round(t_eval, 2),
                }
                result.curve.append(point)
                if curves_path is not None and write:
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
            if fingerprint and step % cfg.checkpoint_every == 0 and not last:
                elapsed = time.perf_counter() - t0
                _save_checkpoint(accelerator, checkpoint_dir, {
                    "fingerprint": fingerprint, "step": step, "total": total, "curve": result.curve,
                    "sums": sums, "count": count, "train_seconds": t_train + elapsed, "eval_seconds": t_eval})
                t0 = time.perf_counter() - elapsed
        else:
            result.steps = total
    finally:
        bar.close()
        # The caller gets its model back as it gave it: on the CPU, without Accelerate's wrappers (mixed
        # precision patches forward), ready to save, export to ONNX or time.
        accelerator.unwrap_model(model, keep_fp32_wrapper=False).to("cpu")
        for capture in captures:
            capture.remove()
        if teacher_model is not None:
            teacher_model.to("cpu")
        if device.type != "cpu":  # give the GPU memory back for the next run (a gc pass; not worth it on the CPU)
            accelerator.free_memory()
    if fingerprint and checkpoint_dir is not None and write and result.steps:
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
    result.total_steps, result.train_seconds, result.eval_seconds = total, t_train, t_eval
    return result
