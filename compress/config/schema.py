"""The typed, frozen job config: the task, its data, the teacher, distillation and the job itself.

The only place defaults live, each with a comment saying why; the search:, fptas: and report: sections are in
compress/config/search.py. compress/config/load.py builds these objects from YAML.
"""

from __future__ import annotations

import codecs
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .errors import invalid
from .search import FptasConfig, ReportConfig, SearchConfig

__all__ = [
    "AgoraConfig",
    "AugmentConfig",
    "NegativesConfig",
    "DataConfig",
    "DistillConfig",
    "JobConfig",
    "SourceConfig",
    "SplitConfig",
    "TaskConfig",
    "TeacherConfig",
    "ThetaConfig",
    "TrainConfig",
    "VocabPruneConfig",
]

TaskType = Literal["classification", "pair_classification", "regression", "qa"]
SourceFormat = Literal["auto", "tsv", "csv", "jsonl", "json", "parquet", "squad", "hf"]


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
            raise invalid("limit", self.limit, "must be a positive number of rows, or null for all")
        if isinstance(self.articles, str):
            _parse_slice(self.articles)
        if self.encoding is not None:
            try:
                codecs.lookup(self.encoding)
            except LookupError:
                raise invalid("encoding", self.encoding, "is not an encoding Python knows; use e.g. utf-8, "
                            "latin-1, cp1252 or utf-16") from None
        if self.delimiter is not None and len(self.delimiter) != 1:
            raise invalid("delimiter", self.delimiter, "must be one character, e.g. ';' or '|' (a tab is '\\t')")
        if not self.header and not self.columns:
            raise invalid("columns", self.columns, "a file without a header (header: false) needs the column "
                        "names in file order, e.g. columns: [label, title, text]")
        if self.header and self.columns:
            raise invalid("columns", list(self.columns), "names the columns of a file without a header row; "
                        "with header: true the first row names them (remove columns, or set header: false)")
        if self.columns and (len(set(self.columns)) != len(self.columns) or not all(c.strip() for c in self.columns)):
            raise invalid("columns", list(self.columns), "column names must be unique and not empty")

    def article_slice(self) -> slice | None:
        return _parse_slice(self.articles) if isinstance(self.articles, str) else None


def _parse_slice(text: str) -> slice:
    parts = text.split(":")
    try:
        if len(parts) != 2:
            raise ValueError
        start, stop = (int(p) if p.strip() else None for p in parts)
    except ValueError:
        raise invalid("articles", text, "use a list of article titles or a 'start:stop' slice such as '0:12'") from None
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
            raise invalid("task.text_columns", list(self.text_columns),
                        "a pair_classification task reads 2 text columns (the first and the second text)")
        if self.type in ("classification", "regression") and not self.text_columns:
            raise invalid("task.text_columns", [], "name at least one text column")
        if len(set(self.text_columns)) != len(self.text_columns):
            raise invalid("task.text_columns", list(self.text_columns), "a column is named twice")
        if self.labels is not None and len(set(self.labels)) != len(self.labels):
            raise invalid("task.labels", list(self.labels), "label names must be unique")
        if self.labels is not None and self.type in ("regression", "qa"):
            raise invalid("task.labels", list(self.labels), f"a {self.type} task has no label list; remove it")
        allowed = {
            "classification": ("accuracy", "f1", "mcc"),
            "pair_classification": ("accuracy", "f1", "mcc"),
            "regression": ("pearson", "spearman"),
            "qa": ("f1", "exact", "best_f1", "best_exact"),
        }[self.type]
        if self.metric is not None and self.metric not in allowed:
            raise invalid("task.metric", self.metric, f"a {self.type} task allows {', '.join(allowed)}")

    @property
    def primary_metric(self) -> str:
        return self.metric or {"regression": "pearson", "qa": "f1"}.get(self.type, "accuracy")


def _check_part(key: str, value: int | float | None) -> None:
    if value is None:
        return
    if isinstance(value, float):
        if not (math.isfinite(value) and 0 < value < 1):
            raise invalid(key, value, "a fraction of the training rows must be between 0 and 1 (e.g. 0.1)")
    elif value < 1:
        raise invalid(key, value, "a number of rows must be at least 1 (or give a fraction such as 0.1)")


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
            raise invalid("data.split", {}, "give eval:, test: or both (a fraction such as 0.1, or a row count)")
        fractions = [v for v in (self.eval, self.test) if isinstance(v, float)]
        if sum(fractions) >= 1:
            raise invalid("data.split", {"eval": self.eval, "test": self.test},
                        "eval and test together must leave rows to train on (fractions sum below 1)")


@dataclass(frozen=True)
class NegativesConfig:
    """Generated unanswerable training questions for SQuAD 2.0-style QA (compress.data.negatives): a question
    paired with another paragraph that holds none of its answers, marked unanswerable. Training split only."""

    ratio: float = 0.0  # unanswerable copies per answerable training question (0: off; 0.5: one for every other)
    same_article: bool = True  # prefer a paragraph of the question's own article (harder negatives), else any
    seed: int = 0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.ratio) and 0 <= self.ratio <= 1):
            raise invalid("data.negatives.ratio", self.ratio, "give the share of answerable training questions "
                          "that get an unanswerable copy, between 0 (off) and 1")


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
    negatives: NegativesConfig = field(default_factory=NegativesConfig)  # qa: generated unanswerable questions

    def __post_init__(self) -> None:
        if not self.train:
            raise invalid("data.train", [], "give at least one source")
        carve_eval = self.split is not None and self.split.eval is not None
        carve_test = self.split is not None and self.split.test is not None
        if not self.eval and not carve_eval:
            raise invalid("data.eval", [], "give at least one source, or carve one from train with "
                        "data.split: {eval: 0.1}")
        if self.eval and carve_eval:
            raise invalid("data.split.eval", self.split.eval, "data.eval already gives the eval split; remove "
                        "one of the two")
        if self.test and carve_test:
            raise invalid("data.split.test", self.split.test, "data.test already gives the test split; remove "
                        "one of the two")
        if not 8 <= self.max_seq_length <= 4096:
            raise invalid("data.max_seq_length", self.max_seq_length, "must be between 8 and 4096")
        if not 0 < self.doc_stride:
            raise invalid("data.doc_stride", self.doc_stride, "must be positive")
        if self.max_answer_length <= 0 or self.n_best <= 0:
            raise invalid("data.max_answer_length/n_best", (self.max_answer_length, self.n_best), "must be positive")

    @property
    def has_test(self) -> bool:
        return bool(self.test) or (self.split is not None and self.split.test is not None)


@dataclass(frozen=True)
class TrainConfig:
    """One optimisation run: used for fine-tuning the teacher and for distilling a student."""

    # passes over the training rows; ignored when max_steps is set. 3 is Hugging Face Trainer's default too: on a
    # sentence-pair set of 3,668 rows, 1 epoch (115 steps) left the 3-layer student at 0.635 against the
    # teacher's 0.806, 3 epochs at 0.740 (README, "Small data sets")
    epochs: float = 3.0
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
    # Where the optimisation runs, through Hugging Face Accelerate: auto takes a CUDA GPU, else Apple's MPS, else the
    # CPU; under `accelerate launch` each process takes its own device and `batch_size` stays the global batch.
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"  # fp16 needs a GPU; bf16 runs on recent GPUs and CPUs
    dataloader_workers: int = 0  # processes assembling batches (0: in the training process)
    # Batches of rows of similar length (Hugging Face's group_by_length): less padding, so faster when lengths vary
    # (QA windows, long texts); changes the order of the rows, so the result differs from the random order's.
    group_by_length: bool = False
    checkpoint_every: int = 0  # steps between resumable checkpoints (model, optimiser, schedule, RNG); 0: none

    def __post_init__(self) -> None:
        if self.dataloader_workers < 0:
            raise invalid("dataloader_workers", self.dataloader_workers, "must be 0 (batches built in the training "
                          "process) or a positive number of worker processes")
        if self.checkpoint_every < 0:
            raise invalid("checkpoint_every", self.checkpoint_every, "must be 0 (no checkpoints) or a number of steps")
        for key in ("epochs", "learning_rate", "weight_decay", "max_grad_norm"):
            if not math.isfinite(getattr(self, key)):
                raise invalid(key, getattr(self, key), "must be a finite number")
        if self.epochs <= 0:
            raise invalid("epochs", self.epochs, "must be > 0")
        if self.max_steps is not None and self.max_steps <= 0:
            raise invalid("max_steps", self.max_steps, "must be a positive number of steps, or null")
        for key in ("batch_size", "eval_batch_size"):
            if getattr(self, key) <= 0:
                raise invalid(key, getattr(self, key), "must be positive")
        if not 0 < self.learning_rate < 1:
            raise invalid("learning_rate", self.learning_rate, "must be in (0, 1); typical values are 1e-5 to 5e-4")
        if self.weight_decay < 0 or self.warmup_steps < 0 or self.max_grad_norm < 0 or self.eval_every < 0:
            raise invalid("weight_decay/warmup_steps/max_grad_norm/eval_every",
                        (self.weight_decay, self.warmup_steps, self.max_grad_norm, self.eval_every),
                        "must not be negative")


@dataclass(frozen=True)
class TeacherConfig:
    """The model to compress. A checkpoint without a task head is fine-tuned by `compress teacher`."""

    model: str  # local folder, Hugging Face hub id (from the local cache), or pkg:<module> for a packaged model
    train: TrainConfig = field(default_factory=TrainConfig)  # fine-tuning the head
    importance_batches: int = 8  # batches of training data used to measure head and neuron importance


TRANSFORMS = ("delete", "swap", "neighbour")  # ν's transformations (compress.data.augment), for Agora and augment


@dataclass(frozen=True)
class AugmentConfig:
    """Teacher-labelled augmentation of the distillation set (compress.distill.augment)."""

    factor: float = 0.0  # new rows per training row made by the transforms (0: off); 4 makes the set 5x larger
    transforms: tuple[str, ...] = TRANSFORMS  # word deletion, swap, embedding-neighbour substitution
    neighbours: int = 10  # candidates per word for the neighbour substitution (the teacher's input embeddings)
    # in-domain text without labels (files with the task's text columns; the label column is not read), labelled
    # by the teacher like the transformed rows; not for QA
    unlabelled: tuple[SourceConfig, ...] = ()
    seed: int = 0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.factor) and self.factor >= 0):
            raise invalid("distill.augment.factor", self.factor, "give the new rows per training row, >= 0 (0: off)")
        bad = [t for t in self.transforms if t not in TRANSFORMS]
        if bad or (self.factor > 0 and not self.transforms):
            raise invalid("distill.augment.transforms", list(self.transforms),
                          f"use some of {', '.join(TRANSFORMS)}")
        if self.neighbours < 1:
            raise invalid("distill.augment.neighbours", self.neighbours, "must be at least 1")

    @property
    def enabled(self) -> bool:
        return self.factor > 0 or bool(self.unlabelled)


@dataclass(frozen=True)
class DistillConfig:
    """Loss weights and optimisation of a student (compress.distill.losses): alpha_ce·T²·KL + alpha_task·hard
    + alpha_hidden·hidden MSE + alpha_attention·attention MSE + alpha_relations·self-attention relation KL."""

    alpha_ce: float = 0.8  # weight of the soft-target KL to the teacher (MSE to it for regression)
    alpha_task: float = 0.2  # weight of the hard-label loss
    # The three losses on the teacher's internals run the teacher alongside the student (> 0 costs a teacher
    # forward pass per step).
    alpha_hidden: float = 0.0  # TinyBERT hidden-state MSE per mapped layer (a learned projection if widths differ)
    alpha_attention: float = 0.0  # TinyBERT attention-probability MSE per mapped layer
    alpha_relations: float = 0.0  # MiniLM-v2 query/key/value relation KL: teacher layer -> student's last layer
    relation_heads: int | None = None  # relation heads (must divide both widths); None: the teacher's head count
    relation_layer: int = -1  # the teacher layer whose relations are transferred (0 = first, -1 = last)
    temperature: float = 2.0  # softens both distributions; the KL term is scaled by T² to keep its gradient size
    layer_map: tuple[int, ...] | None = None  # teacher layer for each student layer; None: the copied layers
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # teacher-labelled extra training rows
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        weights = ("alpha_ce", "alpha_task", "alpha_hidden", "alpha_attention", "alpha_relations")
        for key in (*weights, "temperature"):
            if not math.isfinite(getattr(self, key)):
                raise invalid(f"distill.{key}", getattr(self, key), "must be a finite number")
        for key in weights:
            if getattr(self, key) < 0:
                raise invalid(f"distill.{key}", getattr(self, key), "loss weights must not be negative")
        if sum(getattr(self, key) for key in weights) == 0:
            raise invalid("distill.alpha_*", 0, "at least one loss weight must be positive")
        if self.relation_heads is not None and self.relation_heads < 1:
            raise invalid("distill.relation_heads", self.relation_heads, "give a number of relation heads >= 1, "
                          "or leave it out for the teacher's head count")
        if self.temperature <= 0:
            raise invalid("distill.temperature", self.temperature, "must be > 0")
        if self.layer_map is not None and (not self.layer_map or min(self.layer_map) < 0):
            raise invalid("distill.layer_map", list(self.layer_map),
                        "give one teacher layer (0 = the first) for each student layer")

    @property
    def uses_teacher_internals(self) -> bool:
        """Whether a loss reads the teacher's hidden states, attention maps or relations (a teacher forward pass
        per step; the cached logits are not enough)."""
        return self.alpha_hidden > 0 or self.alpha_attention > 0 or self.alpha_relations > 0


@dataclass(frozen=True)
class ThetaConfig:
    """One Agora hyperparameter set θ."""

    learning_rate: float = 1e-4
    weight_decay: float = 0.01
    warmup_proportion: float = 0.1  # share of the run's steps spent warming up
    seed: int = 0

    def __post_init__(self) -> None:
        if not (self.learning_rate > 0 and self.weight_decay >= 0 and 0 <= self.warmup_proportion < 1):
            raise invalid("agora.thetas[]", (self.learning_rate, self.weight_decay, self.warmup_proportion),
                        "need learning_rate > 0, weight_decay >= 0 and 0 <= warmup_proportion < 1")


def _default_thetas() -> tuple[ThetaConfig, ...]:
    return (ThetaConfig(1e-4, 0.01, 0.1, 0), ThetaConfig(3e-4, 0.01, 0.1, 0), ThetaConfig(1e-4, 0.0, 0.0, 1),
            ThetaConfig(3e-4, 0.0, 0.1, 1))


@dataclass(frozen=True)
class AgoraConfig:
    """Agora fine-tuning (compress/distill/agora.py): Θ, ν, the stopping rule and the budget."""

    thetas: tuple[ThetaConfig, ...] = field(default_factory=_default_thetas)
    keep: float = 0.5  # share of Θ kept after each iteration (at least one set)
    epsilon: float = 1.0  # stop when the student is within this many points of the teacher on validation
    max_iterations: int = 4
    max_train_rows: int | None = None  # stop growing the training set beyond this
    max_seconds: float | None = None  # stop starting iterations after this much wall time
    per_error: int = 2  # new examples made from each example the student gets wrong
    transforms: tuple[str, ...] = TRANSFORMS
    neighbours: int = 10  # nearest words in the teacher's embedding space a substitution picks from
    replay: int = 0  # extra passes of ν over the same errors in each iteration (more new examples)
    mistakes_from: Literal["validation", "train"] = "validation"  # where the errors are taken from
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.thetas:
            raise invalid("agora.thetas", [], "give at least one hyperparameter set")
        if not 0 < self.keep <= 1:
            raise invalid("agora.keep", self.keep, "must be in (0, 1]")
        if self.epsilon < 0 or self.max_iterations < 1 or self.per_error < 1 or self.replay < 0:
            raise invalid("agora.epsilon/max_iterations/per_error/replay",
                        (self.epsilon, self.max_iterations, self.per_error, self.replay),
                        "need epsilon >= 0, max_iterations >= 1, per_error >= 1, replay >= 0")


@dataclass(frozen=True)
class VocabPruneConfig:
    """How a student with `vocab_pruning` on (student: section, or searched) prunes its vocabulary after training
    (compress/model/vocab.py): special tokens and the training data's tokens are always kept."""

    min_count: int = 1  # a training token is kept when it occurs this often; 1 keeps all (training text unchanged)
    # also keep c and ##c for every character the kept tokens are spelt with: an unseen word spelt with them splits
    # into those pieces instead of becoming [UNK] (a few hundred rows at most)
    keep_chars: bool = True
    extra_top_n: int = 0  # also keep the first N other words of the teacher's vocabulary (BERT's: the commonest)

    def __post_init__(self) -> None:
        if self.min_count < 1:
            raise invalid("vocab_prune.min_count", self.min_count, "must be at least 1 (1 keeps every token of the "
                          "training data)")
        if self.extra_top_n < 0:
            raise invalid("vocab_prune.extra_top_n", self.extra_top_n, "must be 0 or a number of extra tokens to keep")


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
    vocab_prune: VocabPruneConfig = field(default_factory=VocabPruneConfig)  # for students with vocab_pruning on
    finetune: Literal["distill", "agora"] = "distill"  # how a student (and each search trial) is trained
    output_dir: str = "runs"
    threads: int | None = None  # torch CPU threads; None uses every core
    config_path: str | None = None  # where the YAML came from; relative data paths may be relative to it

    def __post_init__(self) -> None:
        if not self.name or any(c in self.name for c in "/\\ "):
            raise invalid("name", self.name, "use a plain folder name without spaces or slashes")
        if self.threads is not None and self.threads < 1:
            raise invalid("threads", self.threads, "must be a positive number of CPU threads, or null for every core")
        if self.data.negatives.ratio > 0 and self.task.type != "qa":
            raise invalid("data.negatives.ratio", self.data.negatives.ratio, "generated unanswerable questions are "
                          f"for extractive QA; this task is {self.task.type}: remove data.negatives")
        if self.distill.augment.unlabelled and self.task.type == "qa":
            raise invalid("distill.augment.unlabelled", [s.path for s in self.distill.augment.unlabelled],
                          "QA needs questions with their contexts; unlabelled text is for classification and "
                          "regression: remove it, or use distill.augment.factor")

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name
