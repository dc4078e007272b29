"""What a trial is scored on: the objectives and their directions, the constraints (thresholds) and the latency
protocol, and the teacher measured with that same protocol as the reference point.

`metric` in search.objectives stands for the task's primary metric (maximised), and so is throughput (inputs/s at
search.latency.throughput_batch_size); params, latency_ms, latency_ratio, size_mb and peak_memory_mb (resident memory
an inference session adds, measured in a fresh process) are minimised. throughput and peak_memory_mb are measured only
when an objective or a constraint names them. latency_ratio is the trial's latency over the teacher's, both timed in the same paired
measurement (compress.deploy.latency.measure_paired): the median of the per-round ratios, which travels from one
machine to another better than milliseconds do. A constraint `NAME op VALUE` holds when its violation is zero or
less (Optuna's convention).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..artifacts import write_json
from ..config import JobConfig
from ..deploy.export import export_onnx
from ..deploy.capacity import peak_memory_mb, throughput
from ..deploy.latency import LatencySettings, measure_paired
from ..deploy.measure import eval_length_batches, onnx_latency

__all__ = ["MAXIMIZED", "MEASURES", "OPTIONAL", "Constraint", "SearchError", "export_sample", "latency", "latency_settings", "measure_teacher",
           "metric_names", "objective_directions", "paired_latency", "parse_constraint", "search_constraints",
           "teacher_reference", "capacity_measures", "wanted_capacity"]

# What every trial records besides its metrics. latency_ratio: the trial's latency over the teacher's, timed together.
MEASURES = ("params", "latency_ms", "size_mb", "latency_ratio", "throughput", "peak_memory_mb")
MAXIMIZED = frozenset({"throughput"})  # the other measures are minimised; the task metric is maximised
OPTIONAL = frozenset({"throughput", "peak_memory_mb"})  # measured only when an objective or constraint names them


class SearchError(RuntimeError):
    """The study cannot go on (storage unreachable, too many failed trials); the message says why."""


# ----------------------------------------------------------------------------------------------
# Objectives and constraints


@dataclass(frozen=True)
class Constraint:
    """`name op value`; Optuna's convention: the trial is feasible when every constraint value is <= 0."""

    name: str
    op: str
    value: float

    def violation(self, measured: float) -> float:
        """How far `measured` is outside the bound (> 0), or inside it (<= 0)."""
        v = self.value - measured if self.op in (">=", ">") else measured - self.value
        if v == 0 and self.op in (">", "<"):
            return 1e-12  # a strict bound is not met on the bound itself
        return v

    def __str__(self) -> str:
        return f"{self.name} {self.op} {self.value:g}"


_CONSTRAINT = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(>=|<=|>|<)\s*([-+0-9.eE]+)\s*$")


def parse_constraint(text: str, allowed: set[str]) -> Constraint:
    """`NAME op VALUE` (op one of >=, <=, >, <) with NAME one of `allowed`; SearchError saying why otherwise."""
    m = _CONSTRAINT.match(text)
    if not m:
        raise SearchError(f"search.constraints: {text!r} is not of the form 'NAME >= VALUE' (or <=, >, <)")
    name, op, value = m.group(1), m.group(2), float(m.group(3))
    if name not in allowed:
        raise SearchError(f"search.constraints: {text!r} names {name!r}; measured names are {sorted(allowed)}")
    return Constraint(name, op, value)


def objective_directions(cfg: JobConfig) -> list[tuple[str, str]]:
    """(name, direction) per objective; 'metric' stands for the task's primary metric."""
    metric = cfg.task.primary_metric
    out = []
    for name in cfg.search.objectives:
        name = metric if name == "metric" else name
        if name in MEASURES:
            out.append((name, "maximize" if name in MAXIMIZED else "minimize"))
        elif name == metric:
            out.append((name, "maximize"))
        else:
            raise SearchError(
                f"search.objectives: {name!r} is not an objective; choose from metric ({metric}), "
                f"{', '.join(MEASURES)}"
            )
    if len({n for n, _ in out}) != len(out):
        raise SearchError(f"search.objectives lists an objective twice: {list(cfg.search.objectives)}")
    return out


def search_constraints(cfg: JobConfig, names: set[str]) -> list[Constraint]:
    """search.constraints, parsed; each names one of `names` (the task's metrics) or a measure."""
    return [parse_constraint(c, names | set(MEASURES)) for c in cfg.search.constraints]


def metric_names(cfg: JobConfig) -> set[str]:
    """The metrics a trial of this task records, which constraints may name."""
    return {
        "classification": {"accuracy", "f1", "mcc"}, "pair_classification": {"accuracy", "f1", "mcc"},
        "regression": {"pearson", "spearman", "mse"},
        "qa": {"exact", "f1", "HasAns_exact", "HasAns_f1", "NoAns_exact", "NoAns_f1", "best_exact", "best_f1",
               "no_answer_rate"},
    }[cfg.task.type]


# ----------------------------------------------------------------------------------------------
# Measured with the search's protocol


def latency(onnx_path: Path, eval_split, cfg: JobConfig) -> dict[str, Any]:
    """The single-model protocol (search.latency: warmup, then `repeats` calls; median and p90) on one ONNX file.

    Used where one model is timed alone: the teacher's reference figure (measure_teacher), re-measuring
    variants (compress.deploy.variants via `compress export`/`compress package`) and `compress fptas`. Search
    trials use `paired_latency`, which times each trial against the teacher. eval_split gives the real lengths.
    """
    lc = cfg.search.latency
    inputs = None
    if lc.seq_len == "eval":
        inputs = eval_length_batches(eval_split, lc.batch_size, limit=max(lc.repeats, 16), seed=0)
    return onnx_latency(onnx_path, batch_size=lc.batch_size, seq_len=None if inputs else lc.seq_len,
                        threads=lc.threads, warmup=lc.warmup, repeats=lc.repeats, inputs=inputs, provider=lc.provider)


def latency_settings(cfg: JobConfig) -> LatencySettings:
    """search.latency as the paired protocol's settings (`repeats` does not enter: rounds × calls_per_round does)."""
    lc = cfg.search.latency
    return LatencySettings(batch_size=lc.batch_size, seq_len=lc.seq_len if isinstance(lc.seq_len, int) else 128,
                           threads=lc.threads, warmup=lc.warmup, rounds=lc.rounds,
                           calls_per_round=lc.calls_per_round, drift_tolerance=lc.drift_tolerance,
                           max_retries=lc.max_retries, wait_s=lc.wait_s, settle_s=lc.settle_s,
                           pin_threads=lc.pin_threads, provider=lc.provider)


def teacher_reference(cfg: JobConfig) -> Path:
    """The teacher's ONNX file every trial is timed against: RUN/teacher_onnx/model.onnx (made by measure_teacher)."""
    return cfg.run_dir / "teacher_onnx" / "model.onnx"


def paired_latency(onnx_path: Path, eval_split, cfg: JobConfig, reference: Path | None = None) -> dict[str, Any]:
    """A search trial's latency: `onnx_path` timed in alternating rounds with the teacher's ONNX file.

    Both models run the same batches: the fixed shape batch_size × seq_len, or with seq_len "eval" the first
    `calls_per_round` eval-length batches. Returns measure_paired's dict: median_ms, p90_ms and ci95_ms (the
    median's bootstrap interval) of the trial's model, the teacher's summary under "reference", "ratio"
    (median of the per-round candidate/teacher ratios, with its ci95), rounds, retries, contended and the method.
    """
    lc = cfg.search.latency
    reference = teacher_reference(cfg) if reference is None else reference
    if not Path(reference).is_file():
        raise SearchError(f"the teacher's ONNX file {str(reference)!r}, the latency reference, is missing; "
                          "it is exported when the search starts (compress search) — run it again")
    inputs = None
    if lc.seq_len == "eval":
        inputs = eval_length_batches(eval_split, lc.batch_size, limit=lc.calls_per_round, seed=0)
    return measure_paired(onnx_path, reference, inputs, latency_settings(cfg))


def wanted_capacity(cfg: JobConfig) -> set[str]:
    """Which of the optional measures (throughput, peak_memory_mb) the objectives or constraints name."""
    named = set(cfg.search.objectives) | {m.group(1) for c in cfg.search.constraints if (m := _CONSTRAINT.match(c))}
    return named & OPTIONAL


def capacity_measures(onnx_path: Path, eval_split, cfg: JobConfig, wanted: set[str]) -> dict[str, Any]:
    """throughput (inputs/s of back-to-back calls at search.latency.throughput_batch_size, median over 5 rounds with
    its bootstrap interval) and/or peak_memory_mb (what an inference session adds to a fresh process's peak resident
    memory at the latency shape), on the eval set's own lengths with seq_len "eval". {} when neither is wanted."""
    lc = cfg.search.latency
    out: dict[str, Any] = {}
    if "throughput" in wanted:
        inputs = None
        if lc.seq_len == "eval":
            inputs = eval_length_batches(eval_split, lc.throughput_batch_size, limit=16, seed=0)
        tp = throughput(onnx_path, inputs, batch_size=lc.throughput_batch_size,
                        seq_len=lc.seq_len if isinstance(lc.seq_len, int) else 128, threads=lc.threads,
                        seconds=lc.throughput_seconds, rounds=5, warmup=lc.warmup, pin_threads=lc.pin_threads)
        out["throughput"], out["throughput_ci95"], out["throughput_method"] = tp["inputs_per_s"], tp["ci95"], tp
    if "peak_memory_mb" in wanted:
        inputs = None
        if lc.seq_len == "eval":
            inputs = eval_length_batches(eval_split, lc.batch_size, limit=16, seed=0)
        mem = peak_memory_mb(onnx_path, inputs, threads=lc.threads, batch_size=lc.batch_size,
                             seq_len=lc.seq_len if isinstance(lc.seq_len, int) else 128)
        out["peak_memory_mb"], out["peak_memory_method"] = mem["peak_memory_mb"], mem
    return out


def measure_teacher(ctx, cfg: JobConfig) -> dict[str, Any]:
    """Teacher's latency and size with the single-model protocol, measured once per run (latency_ratio 1.0).

    Its ONNX file (teacher_reference) is also the reference every trial is timed against; it is exported again
    when missing, even if the measures are cached.
    """
    path = cfg.run_dir / "cache" / "teacher-measures.json"
    out = cfg.run_dir / "teacher_onnx"
    cached = json.loads(path.read_text()) if path.exists() else None
    wanted = wanted_capacity(cfg)
    if cached is not None and teacher_reference(cfg).is_file() and wanted <= set(cached):
        return {**cached, "latency_ratio": cached.get("latency_ratio", 1.0)}
    exported = export_onnx(ctx.teacher_dir, out, cfg.task.type, sample=export_sample(ctx), atol=cfg.search.export_atol)
    if cached is not None and wanted <= set(cached):
        return {**cached, "latency_ratio": cached.get("latency_ratio", 1.0)}
    lat = latency(exported.path, ctx.data.eval, cfg)
    rec = {"params": ctx.teacher_metrics.get("params"), "latency_ms": lat["median_ms"],
           "latency_p90_ms": lat["p90_ms"], "latency_ratio": 1.0, "size_mb": exported.size_bytes / 1e6,
           "latency_method": lat, "metric": ctx.teacher_metrics.get(cfg.task.primary_metric),
           "metrics": ctx.teacher_metrics}
    rec.update(capacity_measures(exported.path, ctx.data.eval, cfg, wanted))
    write_json(path, rec)
    return rec


def export_sample(ctx) -> dict[str, np.ndarray]:
    """Up to 8 real eval rows: every export is checked against PyTorch on them (and on other shapes)."""
    b = ctx.data.eval.batch(np.arange(min(8, len(ctx.data.eval))), labels=False)
    return {k: v.numpy() for k, v in b.items()}

