"""Typed job configuration: YAML in, frozen and validated objects out.

The only place defaults live. `load_config(path)` is the entry point; every error names the key,
the bad value and what is allowed.
"""

from __future__ import annotations

import codecs
import dataclasses
import difflib
import hashlib
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

__all__ = [
    "ConfigError",
    "DataConfig",
    "DistillConfig",
    "EarlyStopConfig",
    "LatencyConfig",
    "SearchConfig",
    "JobConfig",
    "SourceConfig",
    "SplitConfig",
    "TaskConfig",
    "TeacherConfig",
    "TrainConfig",
    "build",
    "config_hash",
    "load_config",
    "to_dict",
]

TaskType = Literal["classification", "pair_classification", "regression", "qa"]
SourceFormat = Literal["auto", "tsv", "csv", "jsonl", "json", "parquet", "squad", "hf"]


class ConfigError(ValueError):
    """A config value that cannot be used; the message names the key, the value and the fix."""


def _fail(key: str, value: Any, allowed: str) -> ConfigError:
    return ConfigError(f"config key '{key}': got {value!r}; {allowed}")


@dataclass(frozen=True)
class SourceConfig:
    """One file or data set that feeds a split. Several sources are concatenated in order."""

    path: str  # local file or folder, or a Hugging Face hub name when format is hf
    format: SourceFormat = "auto"  # auto picks from the extension; hf for `datasets`
    split: str | None = None  # hf only: which split to read (load_from_disk folders may hold several)
    name: str | None = None  # hf only: the data set configuration name (e.g. "sst2" of "glue")
    limit: int | None = None  # keep this many rows (after sampling); None keeps all
    sample_seed: int | None = None  # with limit: draw a seeded random subset instead of the first rows
    articles: tuple[str, ...] | str | None = None  # squad only: titles, or a "start:stop" slice of articles
    # None reads UTF-8, with or without a byte-order mark (Excel's "CSV UTF-8" writes one), or UTF-16 when the
    # file starts with a UTF-16 byte-order mark; anything else (latin-1, cp1252, ...) must be named here
    encoding: str | None = None
    header: bool = True  # tsv/csv: the first row names the columns; false: name them in `columns`
    delimiter: str | None = None  # tsv/csv: the field separator when it is not the format's (e.g. ";")
    columns: tuple[str, ...] | None = None  # with header: false, the name of each column in file order

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit <= 0:
            raise _fail("limit", self.limit, "must be a positive number of rows, or null for all")
        if isinstance(self.articles, str):
            _parse_slice(self.articles)
        if self.encoding is not None:
            try:
                codecs.lookup(self.encoding)
            except LookupError:
                raise _fail("encoding", self.encoding, "is not an encoding Python knows; use e.g. utf-8, "
                            "latin-1, cp1252 or utf-16") from None
        if self.delimiter is not None and len(self.delimiter) != 1:
            raise _fail("delimiter", self.delimiter, "must be one character, e.g. ';' or '|' (a tab is '\\t')")
        if not self.header and not self.columns:
            raise _fail("columns", self.columns, "a file without a header (header: false) needs the column "
                        "names in file order, e.g. columns: [label, title, text]")
        if self.header and self.columns:
            raise _fail("columns", list(self.columns), "names the columns of a file without a header row; "
                        "with header: true the first row names them (remove columns, or set header: false)")
        if self.columns and (len(set(self.columns)) != len(self.columns) or not all(c.strip() for c in self.columns)):
            raise _fail("columns", list(self.columns), "column names must be unique and not empty")

    def article_slice(self) -> slice | None:
        return _parse_slice(self.articles) if isinstance(self.articles, str) else None


def _parse_slice(text: str) -> slice:
    parts = text.split(":")
    try:
        if len(parts) != 2:
            raise ValueError
        start, stop = (int(p) if p.strip() else None for p in parts)
    except ValueError:
        raise _fail("articles", text, "use a list of article titles or a 'start:stop' slice such as '0:12'") from None
    return slice(start, stop)


@dataclass(frozen=True)
class TaskConfig:
    """What the model predicts and where the data's columns are."""

    type: TaskType
    # the text of each example: for a single-text task one column, or several joined into one text with
    # text_separator between them (e.g. [title, text]); for pair_classification exactly two columns
    text_columns: tuple[str, ...] = ("sentence",)
    text_separator: str = " "  # between the parts of a joined text; the tokenizer sees them as one sentence
    label_column: str = "label"
    labels: tuple[str, ...] | None = None  # label names in id order; stored as id2label. None: integer labels
    version_2: bool | None = None  # qa: None detects SQuAD 2.0 from the data; true/false must agree with it
    metric: str | None = None  # the metric the search maximises; None: accuracy, pearson or f1 by task

    def __post_init__(self) -> None:
        if self.type == "pair_classification" and len(self.text_columns) != 2:
            raise _fail("task.text_columns", list(self.text_columns),
                        "a pair_classification task reads 2 text columns (the first and the second text)")
        if self.type in ("classification", "regression") and not self.text_columns:
            raise _fail("task.text_columns", [], "name at least one text column")
        if len(set(self.text_columns)) != len(self.text_columns):
            raise _fail("task.text_columns", list(self.text_columns), "a column is named twice")
        if self.labels is not None and len(set(self.labels)) != len(self.labels):
            raise _fail("task.labels", list(self.labels), "label names must be unique")
        if self.labels is not None and self.type in ("regression", "qa"):
            raise _fail("task.labels", list(self.labels), f"a {self.type} task has no label list; remove it")
        allowed = {
            "classification": ("accuracy", "f1", "mcc"),
            "pair_classification": ("accuracy", "f1", "mcc"),
            "regression": ("pearson", "spearman"),
            "qa": ("f1", "exact", "best_f1", "best_exact"),
        }[self.type]
        if self.metric is not None and self.metric not in allowed:
            raise _fail("task.metric", self.metric, f"a {self.type} task allows {', '.join(allowed)}")

    @property
    def primary_metric(self) -> str:
        return self.metric or {"regression": "pearson", "qa": "f1"}.get(self.type, "accuracy")


def _check_part(key: str, value: int | float | None) -> None:
    if value is None:
        return
    if isinstance(value, float):
        if not (math.isfinite(value) and 0 < value < 1):
            raise _fail(key, value, "a fraction of the training rows must be between 0 and 1 (e.g. 0.1)")
    elif value < 1:
        raise _fail(key, value, "a number of rows must be at least 1 (or give a fraction such as 0.1)")


@dataclass(frozen=True)
class SplitConfig:
    """Carves eval and test from the training sources when they are not given (compress/data/split.py).

    A fraction (0.1) or a row count (500). Classification is stratified by label; QA is split by article,
    never by question. The split is deterministic for a seed and recorded in the run folder (split.json).
    """

    eval: int | float | None = None  # rows (or share of the training rows) that become the eval split
    test: int | float | None = None  # rows (or share) held out as the test split, never seen by the search
    seed: int = 0  # same seed and data, same split
    stratify: bool = True  # classification: every label keeps its share in each part

    def __post_init__(self) -> None:
        _check_part("data.split.eval", self.eval)
        _check_part("data.split.test", self.test)
        if self.eval is None and self.test is None:
            raise _fail("data.split", {}, "give eval:, test: or both (a fraction such as 0.1, or a row count)")
        fractions = [v for v in (self.eval, self.test) if isinstance(v, float)]
        if sum(fractions) >= 1:
            raise _fail("data.split", {"eval": self.eval, "test": self.test},
                        "eval and test together must leave rows to train on (fractions sum below 1)")


@dataclass(frozen=True)
class DataConfig:
    """Where the splits come from and how text becomes tokens."""

    train: tuple[SourceConfig, ...]
    eval: tuple[SourceConfig, ...] = ()  # () when data.split carves it from train
    # held out: never used by the search, early stopping, thresholds or Agora; the teacher, the baseline and
    # the frontier are scored on it at the end of a study. () with no data.split.test: no test split
    test: tuple[SourceConfig, ...] = ()
    split: SplitConfig | None = None  # carve eval and/or test from train
    max_seq_length: int = 128  # tokens per input; longer QA contexts are split into windows
    doc_stride: int = 128  # qa: tokens of overlap between consecutive windows of one context
    max_answer_length: int = 30  # qa: longest answer span, in tokens, considered when decoding
    n_best: int = 20  # qa: start and end candidates per window considered when decoding
    on_bad_row: Literal["error", "skip"] = "error"  # skip drops bad rows with a warning and a count
    cache_dir: str = ".cache/compress"  # featurised splits, keyed on everything that changes them

    def __post_init__(self) -> None:
        if not self.train:
            raise _fail("data.train", [], "give at least one source")
        carve_eval = self.split is not None and self.split.eval is not None
        carve_test = self.split is not None and self.split.test is not None
        if not self.eval and not carve_eval:
            raise _fail("data.eval", [], "give at least one source, or carve one from train with "
                        "data.split: {eval: 0.1}")
        if self.eval and carve_eval:
            raise _fail("data.split.eval", self.split.eval, "data.eval already gives the eval split; remove "
                        "one of the two")
        if self.test and carve_test:
            raise _fail("data.split.test", self.split.test, "data.test already gives the test split; remove "
                        "one of the two")
        if not 8 <= self.max_seq_length <= 4096:
            raise _fail("data.max_seq_length", self.max_seq_length, "must be between 8 and 4096")
        if not 0 < self.doc_stride:
            raise _fail("data.doc_stride", self.doc_stride, "must be positive")
        if self.max_answer_length <= 0 or self.n_best <= 0:
            raise _fail("data.max_answer_length/n_best", (self.max_answer_length, self.n_best), "must be positive")

    @property
    def has_test(self) -> bool:
        return bool(self.test) or (self.split is not None and self.split.test is not None)


@dataclass(frozen=True)
class TrainConfig:
    """One optimisation run: used for fine-tuning the teacher and for distilling a student."""

    epochs: float = 1.0  # passes over the training rows; ignored when max_steps is set
    max_steps: int | None = None  # exact number of optimiser steps; overrides epochs
    batch_size: int = 32
    eval_batch_size: int = 64
    learning_rate: float = 1e-4  # for a small encoder; BERT-base teachers usually want 2e-5 to 5e-5
    weight_decay: float = 0.01  # AdamW; never applied to biases and LayerNorm weights
    warmup_steps: int = 0  # linear warm-up from 0, then linear decay to 0 at the last step
    max_grad_norm: float = 1.0  # gradient clipping; 0 turns it off
    eval_every: int = 200  # steps between evaluations (one line each in curves.jsonl); 0: only at the end
    eval_limit: int | None = None  # evaluate intermediate points on this many eval rows; the final one uses all
    seed: int = 42  # same seed, same data order, same initialisation, same result

    def __post_init__(self) -> None:
        for key in ("epochs", "learning_rate", "weight_decay", "max_grad_norm"):
            if not math.isfinite(getattr(self, key)):
                raise _fail(key, getattr(self, key), "must be a finite number")
        if self.epochs <= 0:
            raise _fail("epochs", self.epochs, "must be > 0")
        if self.max_steps is not None and self.max_steps <= 0:
            raise _fail("max_steps", self.max_steps, "must be a positive number of steps, or null")
        for key in ("batch_size", "eval_batch_size"):
            if getattr(self, key) <= 0:
                raise _fail(key, getattr(self, key), "must be positive")
        if not 0 < self.learning_rate < 1:
            raise _fail("learning_rate", self.learning_rate, "must be in (0, 1); typical values are 1e-5 to 5e-4")
        if self.weight_decay < 0 or self.warmup_steps < 0 or self.max_grad_norm < 0 or self.eval_every < 0:
            raise _fail("weight_decay/warmup_steps/max_grad_norm/eval_every",
                        (self.weight_decay, self.warmup_steps, self.max_grad_norm, self.eval_every),
                        "must not be negative")


@dataclass(frozen=True)
class TeacherConfig:
    """The model to compress. A checkpoint without a task head is fine-tuned by `compress teacher`."""

    model: str  # local folder, Hugging Face hub id (from the local cache), or pkg:<module> for a packaged model
    train: TrainConfig = field(default_factory=TrainConfig)  # fine-tuning the head
    importance_batches: int = 8  # batches of training data used to measure head and neuron importance


@dataclass(frozen=True)
class DistillConfig:
    """Loss weights and optimisation of a student: alpha_ce·T²·KL + alpha_task·hard + alpha_hidden·MSE."""

    alpha_ce: float = 0.8  # weight of the soft-target KL to the teacher (MSE to it for regression)
    alpha_task: float = 0.2  # weight of the hard-label loss
    alpha_hidden: float = 0.0  # weight of the hidden-state MSE; > 0 runs the teacher alongside the student
    temperature: float = 2.0  # softens both distributions; the KL term is scaled by T² to keep its gradient size
    layer_map: tuple[int, ...] | None = None  # teacher layer for each student layer; None: the copied layers
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        for key in ("alpha_ce", "alpha_task", "alpha_hidden", "temperature"):
            if not math.isfinite(getattr(self, key)):
                raise _fail(f"distill.{key}", getattr(self, key), "must be a finite number")
        for key in ("alpha_ce", "alpha_task", "alpha_hidden"):
            if getattr(self, key) < 0:
                raise _fail(f"distill.{key}", getattr(self, key), "loss weights must not be negative")
        if self.alpha_ce + self.alpha_task + self.alpha_hidden == 0:
            raise _fail("distill.alpha_*", 0, "at least one loss weight must be positive")
        if self.temperature <= 0:
            raise _fail("distill.temperature", self.temperature, "must be > 0")
        if self.layer_map is not None and (not self.layer_map or min(self.layer_map) < 0):
            raise _fail("distill.layer_map", list(self.layer_map),
                        "give one teacher layer (0 = the first) for each student layer")


@dataclass(frozen=True)
class LatencyConfig:
    """How latency is measured with ONNX Runtime on the exported file, for every trial."""

    batch_size: int = 1  # requests served one at a time, the usual online case
    seq_len: int | Literal["eval"] = 128  # fixed length, or "eval": batches of the eval set at their own lengths
    threads: int = 2  # intra-op threads; fixed so trials compare
    warmup: int = 10  # calls discarded before timing
    repeats: int = 50  # timed calls; median and p90 are reported

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.threads < 1 or self.repeats < 1 or self.warmup < 0:
            raise _fail("search.latency", (self.batch_size, self.threads, self.warmup, self.repeats),
                        "batch_size, threads and repeats must be positive and warmup not negative")
        if isinstance(self.seq_len, int) and not 1 <= self.seq_len <= 4096:
            raise _fail("search.latency.seq_len", self.seq_len, "must be between 1 and 4096, or 'eval'")


@dataclass(frozen=True)
class EarlyStopConfig:
    """Stops a trial whose metric is hopelessly below a threshold (see compress/study.py for the rule)."""

    enabled: bool = True
    min_fraction: float = 0.3  # no trial is judged before this share of its training steps
    margin: float | None = None  # how far below the threshold is hopeless, in metric units; None: 10% of it

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_fraction <= 1.0:
            raise _fail("search.early_stopping.min_fraction", self.min_fraction, "must be in [0, 1]")
        if self.margin is not None and not (math.isfinite(self.margin) and self.margin >= 0):
            raise _fail("search.early_stopping.margin", self.margin, "must be a finite number >= 0, or null")


@dataclass(frozen=True)
class SearchConfig:
    """The multi-objective study: what is searched, what is optimised, what must hold, where it is stored."""

    n_trials: int = 30  # completed trials to reach, the baseline included; a resumed study runs only the rest
    sampler: Literal["tpe", "nsga2", "gp", "random", "grid"] = "tpe"
    seed: int = 0  # seeds the sampler: same seed, same suggestions
    objectives: tuple[str, ...] = ("metric", "params", "latency_ms")  # metric (max); params, latency_ms, size_mb (min)
    constraints: tuple[str, ...] = ()  # e.g. "accuracy >= 0.8", "latency_ms <= 4"; infeasible trials never enter the frontier
    space: dict[str, Any] = field(default_factory=dict)  # parameter -> {type, low, high, step, choices}
    storage: str | None = None  # None: sqlite file in the run directory; any SQLAlchemy URL; or journal:PATH
    study_name: str | None = None  # None: the job's name
    baseline: bool = True  # run the DistilBERT-style baseline first and mark it
    latency: LatencyConfig = field(default_factory=LatencyConfig)
    early_stopping: EarlyStopConfig = field(default_factory=EarlyStopConfig)
    export_atol: float = 1e-3  # largest |ONNX - PyTorch| output difference accepted; more fails the trial
    precision: Literal["fp32", "optimized", "int8"] = "fp32"  # the variant trials deploy and measure, unless searched
    heartbeat_interval: float = 10.0  # seconds between a running trial's heartbeats
    grace_period: float = 60.0  # a running trial silent this long is taken as dead and re-run
    max_failed_trials: int | None = None  # stop the study after this many failed trials; None: n_trials
    warn_infeasible_after: int = 5  # status warns when the first K completed trials are all infeasible

    def __post_init__(self) -> None:
        if self.n_trials < 1:
            raise _fail("search.n_trials", self.n_trials, "must be at least 1")
        if not self.objectives:
            raise _fail("search.objectives", [], "name at least one objective")
        if self.grace_period <= self.heartbeat_interval:
            raise _fail("search.grace_period", self.grace_period,
                        f"must be longer than heartbeat_interval ({self.heartbeat_interval})")


@dataclass(frozen=True)
class ThetaConfig:
    """One Agora hyperparameter set θ."""

    learning_rate: float = 1e-4
    weight_decay: float = 0.01
    warmup_proportion: float = 0.1  # share of the run's steps spent warming up
    seed: int = 0

    def __post_init__(self) -> None:
        if not (self.learning_rate > 0 and self.weight_decay >= 0 and 0 <= self.warmup_proportion < 1):
            raise _fail("agora.thetas[]", (self.learning_rate, self.weight_decay, self.warmup_proportion),
                        "need learning_rate > 0, weight_decay >= 0 and 0 <= warmup_proportion < 1")


def _default_thetas() -> tuple[ThetaConfig, ...]:
    return (ThetaConfig(1e-4, 0.01, 0.1, 0), ThetaConfig(3e-4, 0.01, 0.1, 0), ThetaConfig(1e-4, 0.0, 0.0, 1),
            ThetaConfig(3e-4, 0.0, 0.1, 1))


@dataclass(frozen=True)
class AgoraConfig:
    """Agora fine-tuning (compress/agora.py): Θ, ν, the stopping rule and the budget."""

    thetas: tuple[ThetaConfig, ...] = field(default_factory=_default_thetas)
    keep: float = 0.5  # share of Θ kept after each iteration (at least one set)
    epsilon: float = 1.0  # stop when the student is within this many points of the teacher on validation
    max_iterations: int = 4
    max_train_rows: int | None = None  # stop growing the training set beyond this
    max_seconds: float | None = None  # stop starting iterations after this much wall time
    per_error: int = 2  # new examples made from each example the student gets wrong
    transforms: tuple[str, ...] = ("delete", "swap", "neighbour")
    neighbours: int = 10  # nearest words in the teacher's embedding space a substitution picks from
    replay: int = 0  # extra passes of ν over the same errors in each iteration (more new examples)
    mistakes_from: Literal["validation", "train"] = "validation"  # where the errors are taken from
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.thetas:
            raise _fail("agora.thetas", [], "give at least one hyperparameter set")
        if not 0 < self.keep <= 1:
            raise _fail("agora.keep", self.keep, "must be in (0, 1]")
        if self.epsilon < 0 or self.max_iterations < 1 or self.per_error < 1 or self.replay < 0:
            raise _fail("agora.epsilon/max_iterations/per_error/replay",
                        (self.epsilon, self.max_iterations, self.per_error, self.replay),
                        "need epsilon >= 0, max_iterations >= 1, per_error >= 1, replay >= 0")


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
            raise _fail("fptas.calibration_alphas", list(self.calibration_alphas), "give positive numbers")
        for key in ("depths", "heads", "hidden_sizes", "intermediate_sizes"):
            values = getattr(self, key)
            if not values or any(v < 1 for v in values):
                raise _fail(f"fptas.{key}", list(values), "give a non-empty list of positive whole numbers")
        if self.steps < 1 or self.eval_rows < 1 or self.top_k < 0:
            raise _fail("fptas.steps/eval_rows/top_k", (self.steps, self.eval_rows, self.top_k),
                        "steps and eval_rows must be >= 1, top_k >= 0")
        if not (math.isfinite(self.alpha) and self.alpha > 0):
            raise _fail("fptas.alpha", self.alpha, "must be a positive number")


@dataclass(frozen=True)
class ReportConfig:
    """What `compress report` shows beyond the study itself."""

    within_points: float = 1.0  # scenario "fastest within X points of the teacher's metric"
    curves_of: tuple[int, ...] = ()  # trials whose training curves to plot; () plots the scenario picks
    mostly_correct_f1: float = 0.5  # QA error analysis: F1 at or above this (but not exact) is "mostly correct"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.within_points) and self.within_points >= 0):
            raise _fail("report.within_points", self.within_points, "must be a finite number >= 0 (metric points)")
        if not 0.0 < self.mostly_correct_f1 < 1.0:
            raise _fail("report.mostly_correct_f1", self.mostly_correct_f1, "must be between 0 and 1")


@dataclass(frozen=True)
class JobConfig:
    """One job: a teacher, a task and its data, and how to distill students from it."""

    name: str  # the run directory is <output_dir>/<name>
    task: TaskConfig
    data: DataConfig
    teacher: TeacherConfig
    distill: DistillConfig = field(default_factory=DistillConfig)
    student: dict[str, Any] = field(default_factory=dict)  # default StudentSpec fields for `compress distill`
    search: SearchConfig = field(default_factory=SearchConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    fptas: FptasConfig = field(default_factory=FptasConfig)
    agora: AgoraConfig = field(default_factory=AgoraConfig)
    finetune: Literal["distill", "agora"] = "distill"  # how a student (and each search trial) is trained
    output_dir: str = "runs"
    threads: int | None = None  # torch CPU threads; None uses every core
    config_path: str | None = None  # where the YAML came from; relative data paths may be relative to it

    def __post_init__(self) -> None:
        if not self.name or any(c in self.name for c in "/\\ "):
            raise _fail("name", self.name, "use a plain folder name without spaces or slashes")
        if self.threads is not None and self.threads < 1:
            raise _fail("threads", self.threads, "must be a positive number of CPU threads, or null for every core")

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name


# ----------------------------------------------------------------------------------------------
# Building typed objects from plain mappings


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " or ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return "a mapping"
    if tp is type(None):
        return "null"
    if tp is bool:
        return "true or false"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return getattr(tp, "__name__", str(tp))


def _convert(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, key)
            except ConfigError as exc:
                errors.append(exc)
        others = [a for a in args if a is not type(None)]
        if len(others) == 1 and dataclasses.is_dataclass(others[0]) and isinstance(value, dict):
            raise errors[0]  # an optional section: its own message names the inner key and the fix
        raise _fail(key, value, f"expected {_type_name(tp)}")
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise _fail(key, value, f"allowed: {_type_name(tp)}")
        return value
    if origin is tuple:
        (item_tp, *_rest) = typing.get_args(tp)
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise _fail(key, value, f"expected {_type_name(tp)}")
        return tuple(_convert(item_tp, v, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise _fail(key, value, "expected a mapping")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        return build(tp, value, key)
    if tp is bool:
        if not isinstance(value, bool):
            raise _fail(key, value, "expected true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise _fail(key, value, "expected a whole number")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            if isinstance(value, str):  # YAML 1.1 reads 1e-4 as a string
                try:
                    return float(value)
                except ValueError:
                    pass
            raise _fail(key, value, "expected a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise _fail(key, value, "expected text")
        return value
    raise TypeError(f"unsupported config type {tp!r} at {key}")


def build(cls: type, mapping: Any, prefix: str = "") -> Any:
    """Build dataclass `cls` from a plain mapping, rejecting unknown keys and wrong types by name."""
    where = prefix or "the config"
    if not isinstance(mapping, dict):
        raise _fail(prefix or "<top level>", mapping, f"{where} must be a mapping of keys to values")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs: dict[str, Any] = {}
    for key, value in mapping.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise ConfigError(f"config key '{full}' is not known; {hint}allowed keys: {', '.join(fields)}")
        kwargs[key] = _convert(hints[key], value, full)
    missing = [
        name for name, f in fields.items()
        if name not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"config key '{prefix + '.' if prefix else ''}{missing[0]}' is required but missing")
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        msg = str(exc)
        if prefix and msg.startswith("config key '") and not msg.startswith(f"config key '{prefix}"):
            msg = msg.replace("config key '", f"config key '{prefix}.", 1)
        raise ConfigError(msg) from None


def _sources(value: Any, key: str) -> list[dict[str, Any]]:
    """A split may be one source, a list of sources, or a bare path string."""
    items = value if isinstance(value, list) else [value]
    out = []
    for item in items:
        if isinstance(item, str):
            item = {"path": item}
        if not isinstance(item, dict):
            raise _fail(key, item, "a source is a path or a mapping with at least 'path'")
        out.append(item)
    return out


class _DuplicateKey(Exception):
    def __init__(self, key: Any, first_line: int, second_line: int) -> None:
        super().__init__(key)
        self.key, self.first_line, self.second_line = key, first_line, second_line


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key written twice in one mapping (plain YAML silently keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *anchor` merges are YAML's own way of reusing a section
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise _DuplicateKey(key, seen[key], line)
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _StrictLoader.construct_mapping)


def load_config(path: str | Path) -> JobConfig:
    """Read and validate a YAML job config."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist; pass the path to a YAML job config")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {str(path)!r} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at "
                          f"offset {exc.start}); save it as UTF-8") from None
    try:
        raw = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except _DuplicateKey as dup:
        raise ConfigError(
            f"{path}: key {dup.key!r} is written twice in one section (line {dup.first_line} and line "
            f"{dup.second_line}); YAML would silently keep only the second. Merge the two into one"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        tabs = " (YAML indents with spaces, never tabs)" if "'\\t'" in problem else ""
        raise ConfigError(f"config file {str(path)!r} is not valid YAML{at}: {problem}{tabs}; fix it there") from None
    return from_mapping(raw, config_path=str(path))


def from_mapping(raw: Any, config_path: str | None = None) -> JobConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"the config must be a mapping of keys to values, got {type(raw).__name__}")
    raw = dict(raw)
    if isinstance(raw.get("data"), dict):
        data = dict(raw["data"])
        for split in ("train", "eval", "test"):
            if split in data:
                data[split] = _sources(data[split], f"data.{split}")
        raw["data"] = data
    task = raw.get("task")
    if isinstance(task, dict) and isinstance(task.get("labels"), list):
        # YAML reads `labels: [0, 1]` as numbers; a label is a name, compared with the data's text
        raw["task"] = {**task, "labels": [str(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v
                                          for v in task["labels"]]}
    if config_path is not None:
        raw["config_path"] = config_path
    return build(JobConfig, raw)


def to_dict(obj: Any) -> Any:
    """Plain, JSON-ready form of a config object (tuples become lists)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def write_json(path: Path, obj: Any) -> None:
    """Write `obj` as indented JSON through a temporary file, so a reader (or a killed writer) never leaves or
    sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    tmp.replace(path)


def config_hash(obj: Any) -> str:
    """Short content hash of a config, stable across runs; identifies what produced an artifact."""
    plain = to_dict(obj)
    if isinstance(plain, dict):
        plain.pop("config_path", None)  # where the file lies does not change what it asks for
    blob = json.dumps(plain, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]
