"""The search:, fptas: and report: sections of a job config: typed, frozen, one comment per default."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from .errors import invalid

__all__ = ["CalibrationConfig", "ConfirmConfig", "EarlyStopConfig", "FptasConfig", "LatencyConfig", "ReportConfig",
           "SearchConfig"]

@dataclass(frozen=True)
class LatencyConfig:
    """How latency is measured with ONNX Runtime on the exported file, for every trial.

    A search trial is timed paired with the teacher's ONNX file (compress.deploy.latency.measure_paired):
    `rounds` rounds of `calls_per_round` calls of each model, so a measurement makes rounds × calls_per_round
    timed calls of the trial's model (and as many of the teacher's). `repeats` is the call count of the
    single-model protocol (compress.deploy.measure.onnx_latency) that re-measuring variants, `compress package`
    and `compress fptas` still use; the paired protocol does not read it.
    """

    batch_size: int = 1  # requests served one at a time, the usual online case
    seq_len: int | Literal["eval"] = 128  # fixed length, or "eval": batches of the eval set at their own lengths
    threads: int = 2  # intra-op threads; fixed so trials compare
    warmup: int = 10  # calls discarded before timing (of each model, before each paired attempt)
    repeats: int = 50  # timed calls of the single-model protocol (variants, package, fptas); median and p90
    rounds: int = 10  # paired rounds: the bootstrap's independent units (at least 3)
    calls_per_round: int = 5  # timed calls of each model per round; with seq_len "eval", the batches cycled over
    drift_tolerance: float = 0.10  # largest spread (CV) of the teacher's round medians before a retry
    max_retries: int = 2  # further paired attempts when the teacher's rounds drift; the steadiest is kept
    wait_s: float = 5.0  # seconds to wait before a retry, to let a passing load go by
    settle_s: float = 0.05  # untimed pause before a model's block that follows another's (ONNX Runtime threads spin)
    pin_threads: bool = True  # each measuring thread on a core of its own (where the OS allows and cores suffice)
    provider: Literal["cpu", "cuda"] = "cpu"  # ONNX Runtime's execution provider; cuda needs onnxruntime-gpu
    # measured only when `throughput` or `peak_memory_mb` is an objective or constraint:
    throughput_batch_size: int = 8  # rows per call for the throughput objective (inputs/s, back-to-back calls)
    throughput_seconds: float = 3.0  # seconds of back-to-back calls per throughput measurement (5 rounds)

    def __post_init__(self) -> None:
        if self.throughput_batch_size < 1:
            raise invalid("search.latency.throughput_batch_size", self.throughput_batch_size, "must be at least 1")
        if not (math.isfinite(self.throughput_seconds) and self.throughput_seconds > 0):
            raise invalid("search.latency.throughput_seconds", self.throughput_seconds,
                          "must be a positive number of seconds")
        if self.batch_size < 1 or self.threads < 1 or self.repeats < 1 or self.warmup < 0:
            raise invalid("search.latency", (self.batch_size, self.threads, self.warmup, self.repeats),
                        "batch_size, threads and repeats must be positive and warmup not negative")
        if isinstance(self.seq_len, int) and not 1 <= self.seq_len <= 4096:
            raise invalid("search.latency.seq_len", self.seq_len, "must be between 1 and 4096, or 'eval'")
        if self.rounds < 3:
            raise invalid("search.latency.rounds", self.rounds,
                        "must be at least 3 (the spread and the interval need several rounds)")
        if self.calls_per_round < 1:
            raise invalid("search.latency.calls_per_round", self.calls_per_round, "must be at least 1")
        if not (math.isfinite(self.drift_tolerance) and self.drift_tolerance > 0):
            raise invalid("search.latency.drift_tolerance", self.drift_tolerance,
                        "must be a positive number (0.10 allows a 10% spread)")
        if self.max_retries < 0:
            raise invalid("search.latency.max_retries", self.max_retries, "must be 0 or more")
        if not (math.isfinite(self.settle_s) and 0 <= self.settle_s <= 5):
            raise invalid("search.latency.settle_s", self.settle_s, "must be between 0 and 5 seconds")
        if not (math.isfinite(self.wait_s) and self.wait_s >= 0):
            raise invalid("search.latency.wait_s", self.wait_s, "must be a finite number of seconds >= 0")


@dataclass(frozen=True)
class EarlyStopConfig:
    """Stops a trial whose metric is hopelessly below a threshold (see compress/search/study.py for the rule)."""

    enabled: bool = True
    min_fraction: float = 0.3  # no trial is judged before this share of its training steps
    margin: float | None = None  # how far below the threshold is hopeless, in metric units; None: 10% of it

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_fraction <= 1.0:
            raise invalid("search.early_stopping.min_fraction", self.min_fraction, "must be in [0, 1]")
        if self.margin is not None and not (math.isfinite(self.margin) and self.margin >= 0):
            raise invalid("search.early_stopping.margin", self.margin, "must be a finite number >= 0, or null")


@dataclass(frozen=True)
class ConfirmConfig:
    """The confirmation pass (compress.search.confirm): at the end of a study, and on demand with
    `compress confirm RUN`, the frontier, the trials within the noise of it, the baseline and the teacher are
    timed again together, interleaved round by round, and the frontier is recomputed from those figures."""

    enabled: bool = True  # run it when the study's trials are done
    rounds: int = 20  # interleaved rounds of every model (more than a trial's, so intervals narrow)
    calls_per_round: int = 10  # timed calls of each model per round
    max_models: int = 16  # most trials re-measured: the frontier first, then the nearest to it (teacher not counted)

    def __post_init__(self) -> None:
        if self.rounds < 3:
            raise invalid("search.confirm.rounds", self.rounds, "must be at least 3")
        if self.calls_per_round < 1:
            raise invalid("search.confirm.calls_per_round", self.calls_per_round, "must be at least 1")
        if self.max_models < 1:
            raise invalid("search.confirm.max_models", self.max_models, "must be at least 1")


@dataclass(frozen=True)
class FidelityConfig:
    """Multi-fidelity search (compress/search/fidelity.py): trials start on rows[0] training rows and the best
    1/reduction of each rung (constrained non-dominated sorting) go on to the next, up to rows[-1]."""

    enabled: bool = False
    rows: tuple[int, ...] = ()  # training rows of each rung, increasing; the last may exceed the split (= all rows)
    reduction: int = 3  # η: the best ⌊n/η⌋ of a rung's n completed trials are promoted
    seed: int = 0  # the permutation whose first rows[r] rows are rung r's (nested rungs)
    promote_top: int = 0  # after the search, retrain the best K frontier points on all rows (compress promote); 0: no
    # a promotion continues its parent's saved model on the rows its rung adds (each row still gets the trial's
    # epochs), instead of training from the teacher on all of the rung's rows; cold when it cannot (fidelity.py)
    warm_start: bool = True
    # how a rung below the top judges constraints on the task metric (accuracy >= 0.80) when ranking for promotion:
    # hard, as every other constraint; relaxed, not at all (a lower rung's metric underestimates the top rung's by
    # an amount that differs by architecture), leaving them to early stopping and to the top rung (fidelity.py).
    # Unset: relaxed for a new study, and a study resumed keeps the rule it was run with
    lower_rung_metric: Literal["hard", "relaxed"] | None = None

    def __post_init__(self) -> None:
        if self.promote_top < 0:
            raise invalid("search.fidelity.promote_top", self.promote_top, "must be 0 (off) or a number of points")
        if self.reduction < 2:
            raise invalid("search.fidelity.reduction", self.reduction, "must be at least 2 (3 keeps the best third)")
        if self.enabled:
            rows = list(self.rows)
            if len(rows) < 2:
                raise invalid("search.fidelity.rows", rows, "give at least two rungs of training rows, e.g. "
                                                            "[1500, 6000, 12000]")
            if any(r < 1 for r in rows) or any(b <= a for a, b in zip(rows, rows[1:])):
                raise invalid("search.fidelity.rows", rows, "must be positive and strictly increasing")


@dataclass(frozen=True)
class CalibrationConfig:
    """Static int8 (precision int8-static): the training rows its activation ranges are read from
    (compress.deploy.variants.calibration_feeds). Eval rows are never used: the metric is measured on them."""

    method: Literal["minmax", "entropy", "percentile"] = "minmax"  # minmax: the ranges seen (ONNX Runtime's default)
    rows: int = 256  # training rows run through the model (QA: windows); all of them when the split is smaller
    batch_size: int = 16  # rows per calibration call; one batch's activations are held in memory at a time
    seed: int = 0  # draws the rows, so every trial of a study calibrates on the same rows

    def __post_init__(self) -> None:
        if self.rows < 1:
            raise invalid("search.calibration.rows", self.rows, "must be at least 1 (256 is usually enough)")
        if self.batch_size < 1:
            raise invalid("search.calibration.batch_size", self.batch_size, "must be at least 1")


@dataclass(frozen=True)
class SearchConfig:
    """The multi-objective study: what is searched, what is optimised, what must hold, where it is stored."""

    n_trials: int = 30  # completed trials to reach, the baseline included; a resumed study runs only the rest
    sampler: Literal["tpe", "nsga2", "gp", "random", "grid"] = "tpe"
    seed: int = 0  # seeds the sampler: same seed, same suggestions
    # metric and throughput (inputs/s) are maximised; params, latency_ms, latency_ratio, size_mb, peak_memory_mb minimised
    objectives: tuple[str, ...] = ("metric", "params", "latency_ms")
    # e.g. "accuracy >= 0.8", "latency_ms <= 4", "latency_ratio <= 0.5", "peak_memory_mb <= 300", "throughput >= 200";
    # infeasible trials never enter the frontier
    constraints: tuple[str, ...] = ()
    space: dict[str, Any] = field(default_factory=dict)  # parameter -> {type, low, high, step, choices}
    storage: str | None = None  # None: sqlite file in the run directory; any SQLAlchemy URL; or journal:PATH
    study_name: str | None = None  # None: the job's name
    baseline: bool = True  # run the DistilBERT-style baseline first and mark it
    latency: LatencyConfig = field(default_factory=LatencyConfig)
    confirm: ConfirmConfig = field(default_factory=ConfirmConfig)
    early_stopping: EarlyStopConfig = field(default_factory=EarlyStopConfig)
    fidelity: FidelityConfig = field(default_factory=FidelityConfig)
    export_atol: float = 1e-3  # largest |ONNX - PyTorch| output difference accepted; more fails the trial
    # the variant trials deploy and measure, unless searched; int8 is int8-dynamic (its name before int8-static)
    precision: Literal["fp32", "optimized", "int8-dynamic", "int8-static", "int8"] = "fp32"
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)  # int8-static's training rows
    heartbeat_interval: float = 10.0  # seconds between a running trial's heartbeats
    grace_period: float = 60.0  # a running trial silent this long is taken as dead and re-run
    max_failed_trials: int | None = None  # stop the study after this many failed trials; None: n_trials
    warn_infeasible_after: int = 5  # status warns when the first K completed trials are all infeasible

    def __post_init__(self) -> None:
        if self.n_trials < 1:
            raise invalid("search.n_trials", self.n_trials, "must be at least 1")
        if not self.objectives:
            raise invalid("search.objectives", [], "name at least one objective")
        if self.grace_period <= self.heartbeat_interval:
            raise invalid("search.grace_period", self.grace_period,
                        f"must be longer than heartbeat_interval ({self.heartbeat_interval})")


@dataclass(frozen=True)
class FptasConfig:
    """`compress fptas`: the candidate grid, how long each trains on the surrogate error, how many go on."""

    depths: tuple[int, ...] = (2, 3, 4)
    heads: tuple[int, ...] = (4, 8)
    hidden_sizes: tuple[int, ...] = (256, 384)  # each must be divisible by each head count it is paired with
    intermediate_sizes: tuple[int, ...] = (768, 1536)
    steps: int = 150  # optimiser steps per candidate on the surrogate error (KL to the maximum point, T = 1)
    eval_rows: int = 500  # held-out eval rows the surrogate error is measured on
    alpha: float = 1.0  # W-coefficient: how strongly relative error counts against size and speed
    top_k: int = 1  # best candidates handed to full distillation
    # calibrate: distill every candidate fully (costly), fit how the surrogate error maps to the real error and
    # report, for each of calibration_alphas, which candidate W puts first and what it really scores
    calibrate: bool = False
    calibration_alphas: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0)

    def __post_init__(self) -> None:
        if not self.calibration_alphas or any(not (math.isfinite(a) and a > 0) for a in self.calibration_alphas):
            raise invalid("fptas.calibration_alphas", list(self.calibration_alphas), "give positive numbers")
        for key in ("depths", "heads", "hidden_sizes", "intermediate_sizes"):
            values = getattr(self, key)
            if not values or any(v < 1 for v in values):
                raise invalid(f"fptas.{key}", list(values), "give a non-empty list of positive whole numbers")
        if self.steps < 1 or self.eval_rows < 1 or self.top_k < 0:
            raise invalid("fptas.steps/eval_rows/top_k", (self.steps, self.eval_rows, self.top_k),
                        "steps and eval_rows must be >= 1, top_k >= 0")
        if not (math.isfinite(self.alpha) and self.alpha > 0):
            raise invalid("fptas.alpha", self.alpha, "must be a positive number")


@dataclass(frozen=True)
class ReportConfig:
    """What `compress report` shows beyond the study itself."""

    within_points: float = 1.0  # scenario "fastest within X points of the teacher's metric"
    curves_of: tuple[int, ...] = ()  # trials whose training curves to plot; () plots the scenario picks
    mostly_correct_f1: float = 0.5  # QA error analysis: F1 at or above this (but not exact) is "mostly correct"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.within_points) and self.within_points >= 0):
            raise invalid("report.within_points", self.within_points, "must be a finite number >= 0 (metric points)")
        if not 0.0 < self.mostly_correct_f1 < 1.0:
            raise invalid("report.mostly_correct_f1", self.mostly_correct_f1, "must be between 0 and 1")
