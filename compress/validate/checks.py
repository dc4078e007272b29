"""Check a job before any work: the config, every split, the teacher, the student, distill.layer_map and the search.

`compress validate job.yaml [--json]` lists every error and warning in seconds, without training, featurising or
running the teacher; `preflight(cfg, command)` runs the same checks first in `teacher`, `distill`, `agora`, `fptas`
and `search`, so a mistake is reported before minutes of featurisation and teacher inference.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..config import ConfigError, FptasConfig, JobConfig, SearchConfig, load_config

log = logging.getLogger(__name__)

__all__ = ["COMMANDS", "MAX_TOKENIZED_ROWS", "Report", "ValidationError", "format_report", "preflight", "validate",
           "validate_file"]

COMMANDS = ("validate", "teacher", "distill", "agora", "fptas", "search")
MAX_TOKENIZED_ROWS = 20_000  # token lengths come from at most this many rows per split: a seeded sample beyond it
SAMPLE_SEED = 0  # same data, same sample, same percentiles
IMBALANCE = 0.10  # warn when the rarest training label has fewer rows than this share of the most common one
TRUNCATION_WARN = 0.05  # warn when more than this share of a split is longer than data.max_seq_length
SPLITS = ("train", "eval", "test")


class ValidationError(ValueError):
    """The job cannot run as configured. Holds every error the checks found; the CLI prints it and exits 2."""

    def __init__(self, errors: list[str], warnings: list[str] | None = None) -> None:
        self.errors = list(errors)
        self.warnings = list(warnings or [])
        if len(self.errors) == 1:
            message = self.errors[0]
        else:
            message = (f"{len(self.errors)} problems stop this job (nothing was run):\n"
                       + "\n".join(f"  - {e}" for e in self.errors))
        super().__init__(message)


@dataclass
class Report:
    """What the checks found. `to_json()` is the `--json` output; `notes` appear in the human output only."""

    splits: dict[str, dict[str, Any]] = field(default_factory=dict)
    teacher: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"splits": self.splits, "teacher": self.teacher, "errors": self.errors, "warnings": self.warnings}


@dataclass
class _Teacher:
    """The teacher as far as the checks need it: read from its files, never loaded as a model."""

    path: str
    config: Any  # transformers PretrainedConfig
    tokenizer: Any | None
    head: tuple[bool, int | None] | None  # (has a head for the task, its outputs); None: weight names unreadable


# ----------------------------------------------------------------------------------------------
# Entry points


def validate_file(path: str | Path, command: str = "validate") -> tuple[Report, JobConfig | None]:
    """Load the config at `path` and validate it; a config that does not load is the one error reported."""
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        return Report(errors=[str(exc)]), None
    return validate(cfg, command), cfg


def preflight(cfg: JobConfig, command: str, student: str | None = None) -> Report:
    """The checks `compress validate` runs, before `command` does any work (token lengths are skipped: they cost
    a tokenizer pass). Raises ValidationError listing every error; with none, logs every warning."""
    report = validate(cfg, command, student=student, lengths=False)
    if report.errors:  # the errors alone: they are what stops the job (validate lists the warnings too)
        raise ValidationError(report.errors, report.warnings)
    for warning in report.warnings:
        log.warning("%s", warning)
    return report


def validate(cfg: JobConfig, command: str = "validate", student: str | None = None,
             lengths: bool = True) -> Report:
    """Check what `command` needs: the data, the teacher, the student (config student: section, or the spec file
    `student`), distill.layer_map, and for `search` (or validate with a search: section) the search space,
    objectives and constraints. `lengths` adds token-length statistics and, for QA, answers lost to truncation."""
    if command not in COMMANDS:
        raise ValueError(f"validate: command {command!r} is not one of {', '.join(COMMANDS)}")
    report = Report()
    teacher = _check_teacher(cfg, command, report)  # None: unusable (the errors say why); checks needing it skip
    num_labels = _check_data(cfg, command, report, teacher.tokenizer if teacher else None, lengths)
    if teacher is not None:
        _check_head(cfg, command, report, teacher, num_labels)
    strict = command != "teacher"  # `compress teacher` uses neither the student nor distill: a heads-up only
    found: list[str] = []
    spec = None
    if command in ("validate", "teacher", "distill", "agora") and teacher is not None:
        spec = _check_student(cfg, student, teacher, found)
    space = None
    search = command == "search" or (command == "validate" and cfg.search != SearchConfig())
    if search:
        space = _check_search(cfg, teacher, report)
    fptas_depths = None
    if command == "fptas" or (command == "validate" and cfg.fptas != FptasConfig()):
        fptas_depths = _check_fptas(cfg, teacher, report, constraints=not search)
    _check_layer_map(cfg, command, teacher, spec, space, fptas_depths, found)
    if command == "agora" or (cfg.finetune == "agora" and command in ("validate", "search")):
        _check_agora(cfg, command, space, found)
    if strict:
        report.errors.extend(found)
    else:
        report.warnings.extend(f"{p} (`compress teacher` does not use it; `compress distill` will refuse it)"
                               for p in found)
    return report


# ----------------------------------------------------------------------------------------------
# The teacher: config, tokenizer and weight names, read from its files


def _check_teacher(cfg: JobConfig, command: str, report: Report) -> _Teacher | None:
    from transformers import AutoConfig

    from ..model.teacher import TeacherError, load_tokenizer, resolve_model

    run_teacher = cfg.run_dir / "teacher"
    # NOTE: as pipeline.teacher_path: a teacher fine-tuned in this run is the one every later command uses;
    # `compress teacher` itself starts again from teacher.model.
    use_run = command != "teacher" and (run_teacher / "config.json").is_file()
    report.teacher["model"] = cfg.teacher.model
    try:
        path = str(run_teacher) if use_run else resolve_model(cfg.teacher.model, cfg.config_path)
    except TeacherError as exc:
        report.errors.append(str(exc))
        return None
    report.teacher.update(path=path, source="run" if use_run else "teacher.model")
    if use_run:
        report.notes.append(f"teacher: {run_teacher} holds this run's fine-tuned teacher; later commands use it "
                            f"(teacher.model {cfg.teacher.model!r} is only its starting point)")
    tokenizer = None
    try:
        tokenizer = load_tokenizer(path)
    except TeacherError as exc:
        report.errors.append(str(exc))
    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as exc:
        report.errors.append(f"cannot load a model config from {path!r} ({_first_line(exc)}); offline, give a "
                             "local save_pretrained folder whose config.json names its model_type")
        return None
    report.teacher["model_type"] = config.model_type
    if config.model_type != "bert":
        report.errors.append(f"teacher {path!r} is a {config.model_type!r} model; this version compresses "
                             "BERT-family encoders with model_type 'bert': point teacher.model at one")
        return None
    for key in ("num_hidden_layers", "num_attention_heads", "hidden_size", "intermediate_size",
                "max_position_embeddings", "vocab_size"):
        report.teacher[key] = getattr(config, key)
    if tokenizer is not None:
        report.teacher["tokenizer_size"] = len(tokenizer)
        if len(tokenizer) > config.vocab_size:  # the check teacher.check_tokenizer makes on a loaded model
            report.errors.append(
                f"the tokenizer of {path} has {len(tokenizer)} tokens but the model's embeddings hold "
                f"{config.vocab_size} (config.json vocab_size): they do not belong together. Save the model and "
                "its own tokenizer in one folder")
    if cfg.data.max_seq_length > config.max_position_embeddings:
        report.errors.append(
            f"config key 'data.max_seq_length': got {cfg.data.max_seq_length}; the teacher {path} has "
            f"{config.max_position_embeddings} positions (max_position_embeddings): use "
            f"{config.max_position_embeddings} or less")
    if getattr(config, "pruned_heads", None):
        report.errors.append(f"the teacher {path} already has pruned heads ({config.pruned_heads}); students are "
                             "built from an unpruned teacher: point teacher.model at one")
    head = None
    try:
        head = _head_weights(path, cfg.task.type)
    except ValueError as exc:
        report.errors.append(str(exc))
    if head is None:
        report.notes.append(f"teacher: the weight names of {path} could not be read without loading the model; "
                            "its head is checked when the command loads it")
    return _Teacher(path, config, tokenizer, head)


def _checkpoint_folder(path: str) -> Path | None:
    """The folder holding a teacher's files: the folder itself, or a hub id's snapshot in the local cache."""
    folder = Path(path)
    if folder.is_dir():
        return folder
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(path, "config.json")
    return Path(found).parent if isinstance(found, str) else None


def _head_weights(path: str, task_type: str) -> tuple[bool, int | None] | None:
    """Whether the checkpoint holds a head for the task (`classifier.*`, or `qa_outputs.*` for QA) and how many
    outputs it has, from the weight names in the file headers (no model is built). None: names unreadable."""
    folder = _checkpoint_folder(path)
    if folder is None:
        return None
    prefix = "qa_outputs." if task_type == "qa" else "classifier."  # as teacher.HEAD_KEYS
    weight = f"{prefix}weight"

    def from_names(names: list[str], shape_of) -> tuple[bool, int | None]:
        has = any(n.startswith(prefix) for n in names)
        return has, (int(shape_of(weight)[0]) if weight in names else None)

    single = folder / "model.safetensors"
    if single.is_file():
        names = _safetensors_names(single)
        return from_names(names, lambda name: _safetensors_shape(single, name))
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = folder / index_name
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            except (OSError, ValueError, KeyError, TypeError):
                return None  # resolve_model has refused a broken index already; leave the rest to loading
            shard_of = {str(k): folder / str(v) for k, v in weight_map.items()}
            shape = (_safetensors_shape if index_name.startswith("model.") else _torch_shape)
            return from_names(list(shard_of), lambda name: shape(shard_of[name], name))
    pickled = folder / "pytorch_model.bin"
    if pickled.is_file():
        try:
            state = _torch_state(pickled)
        except Exception:  # noqa: BLE001 - an unreadable pickle: the model load reports it with its own words
            return None
        return from_names(list(state), lambda name: tuple(state[name].shape))
    return None


def _safetensors_names(file: Path) -> list[str]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(file), framework="np") as fh:
            return list(fh.keys())
    except (SafetensorError, OSError) as exc:
        raise ValueError(f"cannot read the weights in {file} ({_first_line(exc)}); the file is damaged or "
                         "incomplete: save the model again with model.save_pretrained(folder)") from None


def _safetensors_shape(file: Path, name: str) -> tuple[int, ...]:
    from safetensors import safe_open

    with safe_open(str(file), framework="np") as fh:
        return tuple(fh.get_slice(name).get_shape())


def _torch_state(file: Path) -> dict[str, Any]:
    import torch

    # mmap: the tensors stay on disk; only the names and shapes are looked at
    return torch.load(str(file), map_location="cpu", weights_only=True, mmap=True)


def _torch_shape(file: Path, name: str) -> tuple[int, ...]:
    return tuple(_torch_state(file)[name].shape)


def _check_head(cfg: JobConfig, command: str, report: Report, teacher: _Teacher, num_labels: int | None) -> None:
    kind = cfg.task.type
    if teacher.head is None:
        report.teacher["head"] = "unknown"  # the weight names could not be read (a note says so)
        return
    has, outputs = teacher.head
    report.teacher["head"] = ("qa" if kind == "qa" else "classification") if has else None
    report.teacher["head_outputs"] = outputs
    path = teacher.path
    if has:
        expected = 2 if kind == "qa" else num_labels
        if expected is not None and outputs is not None and outputs != expected:
            what = {"qa": "start and end", "regression": "one score"}.get(kind, f"{expected} labels")
            report.errors.append(
                f"teacher {path!r} has a {kind} head with {outputs} outputs but the task needs {expected} ({what}); "
                "fine-tune a teacher for this task (point teacher.model at its base encoder and run `compress "
                "teacher CONFIG`) or fix task.labels")
        return
    if command == "teacher":
        report.notes.append(f"teacher: {path} has no {kind} head yet; this command fine-tunes one")
    elif command == "validate":
        report.warnings.append(
            f"teacher {path!r} has no trained {kind} head: `compress teacher CONFIG` will fine-tune one into "
            f"{cfg.run_dir / 'teacher'}, which distill, search, agora and fptas then use")
    else:
        report.errors.append(
            f"teacher {path!r} has no trained {kind} head; run `compress teacher CONFIG` to fine-tune one "
            f"(into {cfg.run_dir / 'teacher'}), or point teacher.model at a fine-tuned checkpoint")


# ----------------------------------------------------------------------------------------------
# The data: every split, as the loaders and data.split make it


class _SkipCapture(logging.Handler):
    """Collects the loaders' "skipped N bad rows" warnings (and keeps them off the console while it listens)."""

    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self.skips: list[tuple[int, str]] = []  # (rows skipped, first bad row's message)
        self._logger = logging.getLogger("compress.data.loaders")
        self._propagate = True

    def emit(self, record: logging.LogRecord) -> None:
        if str(record.msg).startswith("skipped %d bad rows") and len(record.args or ()) >= 2:
            self.skips.append((int(record.args[0]), str(record.args[1])))
        else:
            logging.getLogger(record.name).parent.handle(record)  # anything else goes on as usual

    def __enter__(self) -> "_SkipCapture":
        self._propagate = self._logger.propagate
        self._logger.addHandler(self)
        self._logger.propagate = False
        return self

    def __exit__(self, *exc: Any) -> None:
        self._logger.removeHandler(self)
        self._logger.propagate = self._propagate


def _source_names(cfg: JobConfig, split: str) -> list[str]:
    from ..data.loaders import resolve_source_path

    return [resolve_source_path(s.path, cfg.config_path).name or s.path for s in getattr(cfg.data, split)]


def _check_data(cfg: JobConfig, command: str, report: Report, tokenizer: Any, lengths: bool) -> int | None:
    """Per split: rows, bad rows skipped, labels (or values, or questions), token lengths, duplicates across
    splits. Returns the outputs a classifier head needs (1 for regression; None for QA, or unreadable data)."""
    from ..data import DataError
    from ..data.features import load_split_examples

    capture = _SkipCapture()
    try:
        with capture:
            splits = load_split_examples(cfg)
    except DataError as exc:
        report.errors.append(str(exc))
        return None
    except OSError as exc:
        report.errors.append(f"data: {exc}; check the paths under data:")
        return None
    task = cfg.task
    for name in SPLITS:
        entry: dict[str, Any] = {"rows": len(splits[name])}
        if getattr(cfg.data, name):
            entry["sources"] = _source_names(cfg, name)
        elif name != "train" and cfg.data.split is not None and getattr(cfg.data.split, name) is not None:
            entry["carved_from"] = "train"
        report.splits[name] = entry
    _attribute_skips(cfg, command, report, capture.skips)
    num_labels = None
    if task.type == "qa":
        _qa_summary(cfg, command, report, splits)
    elif task.type == "regression":
        _regression_summary(report, splits)
        num_labels = 1  # one score
    else:
        num_labels = _label_summary(cfg, report, splits)
    _duplicates(task.type, report, splits)
    windows_ok = True
    if task.type == "qa" and tokenizer is not None:
        windows_ok = _qa_window_room(cfg, report, splits, tokenizer)
    if lengths and tokenizer is not None:
        _token_lengths(cfg, report, splits, tokenizer, answers=windows_ok)
    return num_labels


def _attribute_skips(cfg: JobConfig, command: str, report: Report, skips: list[tuple[int, str]]) -> None:
    """Each "skipped N bad rows" warning belongs to the split whose source its first bad row names."""
    for name in SPLITS:
        if getattr(cfg.data, name):
            report.splits[name]["skipped_bad_rows"] = 0
    taken: set[str] = set()
    for count, first in skips:
        where = first.split(":", 1)[0].split("[", 1)[0]
        owner = next((n for n in SPLITS if n not in taken and where in _source_names(cfg, n)),
                     next((n for n in SPLITS if n not in taken and getattr(cfg.data, n)), "train"))
        taken.add(owner)
        report.splits[owner]["skipped_bad_rows"] = count
        if command == "validate":  # the loaders log it again when a command reads the data
            report.warnings.append(f"data.{owner}: skipped {count} bad rows (data.on_bad_row: skip); first: {first}")


def _label_summary(cfg: JobConfig, report: Report, splits: dict[str, list]) -> int:
    task = cfg.task
    train = splits["train"]
    counts = {n: Counter(int(ex.label) for ex in splits[n]) for n in SPLITS}
    seen = counts["train"]
    # the number of outputs the head gets, as prepare_task_data decides it
    num_labels = len(task.labels) if task.labels else max(seen) + 1
    names = list(task.labels) if task.labels else [str(i) for i in range(num_labels)]

    def name_of(i: int) -> str:
        return names[i] if i < len(names) else str(i)

    for n in SPLITS:
        ids = sorted(set(range(num_labels)) | set(counts[n])) if n == "train" else sorted(counts[n])
        report.splits[n]["labels"] = {name_of(i): counts[n].get(i, 0) for i in ids}
    if num_labels < 2:
        report.errors.append(f"the training set has only label {name_of(0)!r} ({len(train)} rows); a classifier "
                             "needs two or more labels: check data.train and task.label_column")
        return num_labels
    for n in ("eval", "test"):
        unseen = sorted(i for i in counts[n] if i not in seen)
        if unseen:
            rows = [ex for ex in splits[n] if int(ex.label) in set(unseen)]
            report.errors.append(
                f"data.{n}: {len(rows)} rows have labels that never occur in the training set "
                f"({', '.join(repr(name_of(i)) for i in unseen)}; first at {rows[0].row}): the model cannot learn "
                f"them. Add training rows with these labels, or remove them from the {n} data")
    absent = [i for i in range(num_labels) if i not in seen]
    if absent and not task.labels:
        present = sorted(seen)
        report.warnings.append(
            f"label id{'s' if len(absent) > 1 else ''} {', '.join(map(str, absent))} never "
            f"occur{'' if len(absent) > 1 else 's'} in the training set (ids seen: {', '.join(map(str, present))}): a {num_labels}-class head would be trained with "
            f"outputs no row teaches. Name the labels in task.labels (e.g. labels: "
            f"{json.dumps([str(i) for i in present])}, which numbers them from 0) or renumber them from 0")
    elif absent:
        in_any = {i for n in SPLITS for i in counts[n]}
        nowhere = [names[i] for i in absent if i not in in_any]
        if nowhere:
            report.warnings.append(f"task.labels lists {', '.join(map(repr, nowhere))}, which no split holds: the "
                                   "head gets outputs no row teaches. Remove them from task.labels, or check the data")
    if len(seen) >= 2:
        (top, n_top), (rare, n_rare) = seen.most_common()[0], seen.most_common()[-1]
        if n_rare < IMBALANCE * n_top:
            report.warnings.append(
                f"data.train: label {name_of(rare)!r} has {n_rare} rows, {n_rare / n_top:.1%} of the most common "
                f"label {name_of(top)!r} ({n_top}): a student may learn never to predict it. Add rows of the rare "
                "label, or judge models by task.metric: f1 or mcc rather than accuracy")
    return num_labels


def _regression_summary(report: Report, splits: dict[str, list]) -> None:
    for n in SPLITS:
        values = np.asarray([float(ex.label) for ex in splits[n]], dtype=np.float64)
        if not len(values):
            continue
        report.splits[n].update(label_mean=round(float(values.mean()), 6), label_std=round(float(values.std()), 6),
                                label_min=float(values.min()), label_max=float(values.max()))
        if len(values) > 1 and values.std() == 0:
            report.warnings.append(f"data.{n}: every label is {values[0]:g}; Pearson and Spearman are undefined "
                                   "on constant labels: check task.label_column")


def _qa_summary(cfg: JobConfig, command: str, report: Report, splits: dict[str, list]) -> None:
    from ..data.qa import detect_version_2

    for n in SPLITS:
        ex = splits[n]
        if not ex:
            continue
        impossible = sum(e.is_impossible for e in ex)
        report.splits[n].update(questions=len(ex), articles=len({e.title for e in ex}), unanswerable=impossible,
                                unanswerable_share=round(impossible / len(ex), 4))
    everything = [e for n in SPLITS for e in splits[n]]
    v2 = detect_version_2(everything)
    task = cfg.task
    if task.version_2 is not None and task.version_2 != v2:
        n_imp = sum(e.is_impossible for e in everything)
        report.errors.append(
            f"task.version_2 is {task.version_2} but the data {'has' if v2 else 'has no'} unanswerable questions "
            f"({n_imp} of {len(everything)}): it is SQuAD {'2.0' if v2 else '1.1'}. Set task.version_2: "
            f"{str(v2).lower()} (or remove the key to detect it), or point the config at the data you meant")
    if v2 and not detect_version_2(splits["train"]) and command == "validate":  # featurising logs it too
        report.warnings.append("the eval set has unanswerable questions but the training set has none: the model "
                               "will not learn to say 'no answer'")


def _text_key(task_type: str, ex: Any) -> Any:
    return ex.context if task_type == "qa" else ex.texts


def _where(task_type: str, ex: Any) -> str:
    return f"question {ex.qid} ({ex.title})" if task_type == "qa" else ex.row


def _duplicates(task_type: str, report: Report, splits: dict[str, list]) -> None:
    """Exact duplicate texts between splits (QA: the same context paragraph), counted in the later split."""
    what = "context paragraphs" if task_type == "qa" else "texts"
    for earlier, later in (("train", "eval"), ("train", "test"), ("eval", "test")):
        if not splits[earlier] or not splits[later]:
            continue
        first_of: dict[Any, Any] = {}
        for ex in splits[earlier]:
            first_of.setdefault(_text_key(task_type, ex), ex)
        dups = [ex for ex in splits[later] if _text_key(task_type, ex) in first_of]
        if not dups:
            continue
        twin = first_of[_text_key(task_type, dups[0])]
        text = " | ".join(_text_key(task_type, dups[0])) if task_type != "qa" else dups[0].context
        shown = text if len(text) <= 80 else text[:77] + "..."
        report.splits[later].setdefault("duplicates", {})[earlier] = {
            "rows": len(dups), "example": {"text": shown, later: _where(task_type, dups[0]),
                                           earlier: _where(task_type, twin)}}
        report.warnings.append(
            f"data.{later}: {len(dups)} of {len(splits[later])} rows have {what} that also occur in {earlier} "
            f"(e.g. {shown!r} at {_where(task_type, dups[0])} and {_where(task_type, twin)}): the {later} score "
            f"overstates how the model does on new text. Remove them from one split"
            + ("" if task_type == "qa" else ", or carve the splits with data.split"))


def _sample(n: int) -> np.ndarray:
    """Indices of at most MAX_TOKENIZED_ROWS rows of a split of n: all of them, or a seeded sample (in order)."""
    if n <= MAX_TOKENIZED_ROWS:
        return np.arange(n)
    return np.sort(np.random.default_rng(SAMPLE_SEED).choice(n, size=MAX_TOKENIZED_ROWS, replace=False))


def _token_ids(tokenizer: Any, first: list[str], second: list[str] | None = None,
               special: bool = True) -> list[list[int]]:
    # verbose=False: lengths past the model's maximum are what is being measured, not a mistake to log
    return tokenizer(first, second, add_special_tokens=special, truncation=False, verbose=False,
                     return_attention_mask=False, return_token_type_ids=False)["input_ids"]


def _token_lengths(cfg: JobConfig, report: Report, splits: dict[str, list], tokenizer: Any,
                   answers: bool = True) -> None:
    """Token-length percentiles against data.max_seq_length; for QA also the answers no window holds whole
    (`answers`: the windows can be made at all)."""
    max_len = cfg.data.max_seq_length
    for n in SPLITS:
        examples = splits[n]
        if not examples:
            continue
        idx = _sample(len(examples))
        rows = [examples[i] for i in idx]
        if cfg.task.type == "qa":
            lengths = _qa_lengths(tokenizer, rows)
        else:
            pair = len(rows[0].texts) == 2
            ids = _token_ids(tokenizer, [r.texts[0] for r in rows], [r.texts[1] for r in rows] if pair else None)
            lengths = np.asarray([len(x) for x in ids])
        over = float((lengths > max_len).mean())
        stats = {"rows_tokenized": len(rows), "sampled": len(rows) < len(examples), "seed": SAMPLE_SEED,
                 **{f"p{q}": int(np.percentile(lengths, q)) for q in (50, 90, 99)}, "max": int(lengths.max()),
                 "max_seq_length": max_len, "over_max_share": round(over, 4)}
        report.splits[n]["token_lengths"] = stats
        of = f" (of a seeded sample of {len(rows):,} rows)" if stats["sampled"] else ""
        if cfg.task.type == "qa" and answers:
            lost, answerable = _answers_lost(cfg, tokenizer, rows, lengths)
            report.splits[n]["answers_lost"] = lost
            if lost:
                report.warnings.append(
                    f"data.{n}: {lost} of {answerable} answers{of} lie in no window of data.max_seq_length={max_len} "
                    f"tokens with data.doc_stride={cfg.data.doc_stride} whole; those questions train and score as "
                    "if unanswerable. Raise max_seq_length, or raise doc_stride for more overlap between windows")
        elif over > TRUNCATION_WARN:
            cap = int(report.teacher.get("max_position_embeddings") or 4096)
            report.warnings.append(
                f"data.{n}: {over:.0%} of rows{of} are longer than data.max_seq_length={max_len} tokens and get "
                f"truncated (p90 {stats['p90']}, p99 {stats['p99']}, max {stats['max']}); raise "
                f"data.max_seq_length to about {min(stats['p99'], cap)}, or accept losing their ends")


def _qa_lengths(tokenizer: Any, rows: list[Any]) -> np.ndarray:
    """Tokens of [CLS] question [SEP] context [SEP], untruncated (each distinct context tokenised once)."""
    contexts = list(dict.fromkeys(r.context for r in rows))
    ctx_len = dict(zip(contexts, (len(x) for x in _token_ids(tokenizer, contexts, special=False))))
    q_len = [len(x) for x in _token_ids(tokenizer, [r.question.lstrip() for r in rows], special=False)]
    return np.asarray([q + ctx_len[r.context] + 3 for q, r in zip(q_len, rows)])


def _qa_window_room(cfg: JobConfig, report: Report, splits: dict[str, list], tokenizer: Any) -> bool:
    """featurize_qa's own check, made before featurising: a window must have room for more than doc_stride context
    tokens beside the longest question of each split. False (and an error) when it has not."""
    max_len, stride = cfg.data.max_seq_length, cfg.data.doc_stride
    for n in SPLITS:
        if not splits[n]:
            continue
        longest = max(len(x) for x in _token_ids(tokenizer, [e.question for e in splits[n]], special=False))
        room = max_len - longest - 3  # [CLS] question [SEP] context [SEP]
        if room <= stride:
            report.errors.append(
                f"config key 'data.doc_stride': got {stride}; it must be smaller than the context room of a window "
                f"({room} tokens = data.max_seq_length {max_len} - the longest {n} question {longest} - 3): lower "
                "doc_stride or raise max_seq_length")
            return False
    return True


def _answers_lost(cfg: JobConfig, tokenizer: Any, rows: list[Any], lengths: np.ndarray) -> tuple[int, int]:
    """(answers no window holds whole, answerable questions), with the windows featurize_qa makes: the first answer
    must lie inside one window's context tokens, or the question trains as unanswerable."""
    max_len, stride = cfg.data.max_seq_length, cfg.data.doc_stride
    answerable = [r for r in rows if r.answers]
    # a question whose whole input fits one window holds its answer; only the longer ones need their windows
    long = [r for r, n in zip(rows, lengths) if r.answers and n > max_len]
    if not long:
        return 0, len(answerable)
    try:
        enc = tokenizer([r.question.lstrip() for r in long], [r.context for r in long], truncation="only_second",
                        max_length=max_len, stride=stride, return_overflowing_tokens=True,
                        return_offsets_mapping=True, verbose=False)
    except Exception:  # noqa: BLE001 - a tokenizer that cannot make these windows: leave it to featurisation
        return 0, len(answerable)
    held = set()
    for i, e in enumerate(enc["overflow_to_sample_mapping"]):
        if e in held:
            continue
        seq = enc.sequence_ids(i)
        if 1 not in seq:
            continue
        first, last = seq.index(1), len(seq) - 1 - seq[::-1].index(1)
        text, start = long[e].answers[0]
        offsets = enc["offset_mapping"][i]
        if offsets[first][0] <= start and offsets[last][1] >= start + len(text):
            held.add(e)
    return len(long) - len(held), len(answerable)


# ----------------------------------------------------------------------------------------------
# Student, distill.layer_map, search, fptas and agora: against the teacher's config


def _spec_problems(spec: Any, t: Any) -> list[str]:
    """What build_student would refuse about `spec` for a teacher of config `t`, without building anything."""
    from ..model.student import teacher_layers

    problems = []
    try:
        teacher_layers(spec, t.num_hidden_layers)
    except ValueError as exc:
        problems.append(str(exc))
    heads = spec.heads_per_layer(t.num_attention_heads)
    if max(heads) > t.num_attention_heads:
        problems.append(f"StudentSpec.heads={spec.heads!r} exceeds the teacher's {t.num_attention_heads} heads "
                        "per layer")
    if spec.intermediate_size is not None and spec.intermediate_size > t.intermediate_size:
        problems.append(f"StudentSpec.intermediate_size={spec.intermediate_size} exceeds the teacher's "
                        f"{t.intermediate_size}; a student keeps a subset of the teacher's FFN neurons")
    if spec.hidden_size is not None:
        if spec.hidden_size > t.hidden_size:
            problems.append(f"StudentSpec.hidden_size={spec.hidden_size} exceeds the teacher's {t.hidden_size}")
        elif spec.hidden_size % (heads[0] if spec.heads else t.num_attention_heads):
            problems.append(f"StudentSpec.hidden_size={spec.hidden_size} is not divisible by "
                            f"{heads[0] if spec.heads else t.num_attention_heads} heads")
    return problems


def _check_student(cfg: JobConfig, student: str | None, teacher: _Teacher, found: list[str]) -> Any:
    """The StudentSpec `compress distill` would build (from --student or the student: section), or None."""
    from ..model.student import StudentSpec, configured_spec_fields

    t = teacher.config
    where = f"--student {student}" if student else "config key 'student'"
    try:
        if student:
            spec = StudentSpec.load(student)
        else:
            spec = StudentSpec.from_json(configured_spec_fields(cfg.student, t.num_hidden_layers))
    except (TypeError, ValueError) as exc:
        found.append(f"{where}: {exc}")
        return None
    shape = (f"{t.num_hidden_layers} layers, {t.num_attention_heads} heads, hidden {t.hidden_size}, "
             f"FFN {t.intermediate_size}")
    for problem in _spec_problems(spec, t):
        found.append(f"{where}: {problem} (the teacher {teacher.path} has {shape}); make the student smaller "
                     "than its teacher")
    return spec


def _layer_counts(space: Any) -> set[int] | None:
    """Every num_layers a search space can give, or None when num_layers is not searched."""
    p = space.params.get("num_layers")
    if p is None:
        return None
    if p.type == "categorical":
        return {int(c) for c in p.choices}
    return set(range(int(p.low), int(p.high) + 1, int(p.step or 1)))


def _check_layer_map(cfg: JobConfig, command: str, teacher: _Teacher | None, spec: Any, space: Any,
                     fptas_depths: set[int] | None, found: list[str]) -> None:
    layer_map = cfg.distill.layer_map
    if layer_map is None:
        return
    shown = list(layer_map)
    searched_hidden = "alpha_hidden" in cfg.search.space
    if cfg.distill.alpha_hidden == 0 and not searched_hidden:
        found.append(f"config key 'distill.layer_map' ({shown}): layer_map is used only by the hidden-state loss; "
                     "set distill.alpha_hidden > 0 or remove it")
    if teacher is None:
        return
    n = teacher.config.num_hidden_layers
    bad = [i for i in layer_map if i >= n]
    if bad:
        found.append(f"config key 'distill.layer_map': got {shown}; teacher layer{'s' if len(bad) > 1 else ''} "
                     f"{', '.join(map(str, bad))} do{'' if len(bad) > 1 else 'es'} not exist: the teacher "
                     f"{teacher.path} has {n} layers, numbered 0..{n - 1}")
    counts: set[int] = set()
    source = ""
    if command == "search" or (command == "validate" and space is not None):
        searched = _layer_counts(space) if space is not None else None
        if searched is not None:
            counts, source = searched, "search.space.num_layers gives students of"
        elif space is not None:
            counts, source = {space.settings({})[0].num_layers}, "the searched students have"
    elif command == "fptas" and fptas_depths:
        counts, source = fptas_depths, "fptas.depths distils candidates of"
    elif spec is not None:
        counts, source = {spec.num_layers}, "the student (student.num_layers, or --student) has"
    wrong = sorted(c for c in counts if c != len(layer_map))
    if wrong:
        layers = ", ".join(map(str, sorted(counts)))
        found.append(f"config key 'distill.layer_map' has {len(layer_map)} entries ({shown}) but {source} {layers} "
                     "layers; give one teacher layer per student layer, or remove layer_map (each student layer is "
                     "then compared with the teacher layer it was copied from)")


def _check_search(cfg: JobConfig, teacher: _Teacher | None, report: Report) -> Any:
    """The search space against the teacher, the objectives and each constraint; the space, or None."""
    from ..search.space import SearchSpace
    from ..search.study import SearchError, _objectives

    space = None
    if teacher is not None:
        try:
            space = SearchSpace.from_config(cfg, teacher.config)
        except (ConfigError, ValueError, TypeError) as exc:
            report.errors.append(str(exc))
    try:
        _objectives(cfg)
    except SearchError as exc:
        report.errors.append(str(exc))
    _check_constraints(cfg, report)
    seq = cfg.search.latency.seq_len
    positions = teacher.config.max_position_embeddings if teacher is not None else seq
    if isinstance(seq, int) and seq > positions:
        report.errors.append(f"config key 'search.latency.seq_len': got {seq}; the teacher has {positions} positions "
                             f"(max_position_embeddings): use {positions} or less, or 'eval'")
    return space


def _check_constraints(cfg: JobConfig, report: Report) -> None:
    """Each of search.constraints on its own, so every bad one is listed (study._constraints stops at the first)."""
    import dataclasses

    from ..search.study import SearchError, _constraints, _metric_names

    names = _metric_names(cfg)
    for text in cfg.search.constraints:
        one = dataclasses.replace(cfg, search=dataclasses.replace(cfg.search, constraints=(text,)))
        try:
            _constraints(one, names)
        except SearchError as exc:
            report.errors.append(str(exc))


def _check_fptas(cfg: JobConfig, teacher: _Teacher | None, report: Report, constraints: bool) -> set[int] | None:
    """The candidate grid the teacher can supply (and, with `constraints`, search.constraints, which fptas checks
    the distilled top k against); the depths of the candidates that may be distilled, or None."""
    from ..search.fptas import candidate_grid

    if constraints:
        _check_constraints(cfg, report)
    if teacher is None:
        return None
    try:
        grid = candidate_grid(cfg.fptas, teacher.config)
    except ValueError as exc:
        report.errors.append(f"config key 'fptas': {exc}")
        return None
    fc = cfg.fptas
    return {c.depth for c in grid} if (fc.top_k > 0 or fc.calibrate) else None


def _check_agora(cfg: JobConfig, command: str, space: Any, found: list[str]) -> None:
    """Agora trains students on soft targets and labels only: the hidden-state loss has no teacher pass there."""
    alpha = cfg.distill.alpha_hidden
    searched = space.params.get("alpha_hidden") if space is not None else None
    high = max(searched.corners()) if searched is not None else None
    why = "Agora trains students without the hidden-state loss (it runs no teacher forward pass per step)"
    if (command == "agora" or searched is None) and alpha > 0:
        where = "`compress agora`" if command == "agora" else "finetune: agora"
        found.append(f"config key 'distill.alpha_hidden': got {alpha:g}; {why}: set it to 0 for {where}")
    elif searched is not None and high and high > 0 and command != "agora":
        found.append(f"config key 'search.space.alpha_hidden' reaches {high:g} with finetune: agora; {why}: remove "
                     "alpha_hidden from search.space, or set finetune: distill")


# ----------------------------------------------------------------------------------------------
# Human output


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= 240 else text[:237] + "..."


def _split_summary(task_type: str, entry: dict[str, Any]) -> str:
    if task_type == "qa":
        if "questions" not in entry:
            return ""
        lost = entry.get("answers_lost")
        return (f"{entry['articles']} articles, {entry['unanswerable_share']:.0%} unanswerable"
                + (f", {lost} answers lost" if lost is not None else ""))
    if task_type == "regression":
        return f"mean {entry['label_mean']:.3g} sd {entry['label_std']:.3g}" if "label_mean" in entry else ""
    text = " · ".join(f"{k} {v}" for k, v in entry.get("labels", {}).items())
    return text if len(text) <= 34 else text[:31] + "..."


def format_report(report: Report, cfg: JobConfig | None) -> str:
    """The compact summary `compress validate` prints."""
    lines: list[str] = []
    if cfg is not None and report.splits:
        d = cfg.data
        lines.append(f"data: {cfg.task.type}, max_seq_length {d.max_seq_length}"
                     + (f", doc_stride {d.doc_stride}" if cfg.task.type == "qa" else "")
                     + f", on_bad_row {d.on_bad_row}")
        what = {"qa": "articles / answers", "regression": "labels"}.get(cfg.task.type, "labels")
        summaries = {n: _split_summary(cfg.task.type, report.splits.get(n, {})) for n in SPLITS}
        width = max(len(what), *(len(v) for v in summaries.values())) + 2
        lines.append(f"  {'split':<6}{'rows':>8}{'bad':>6}  {what:<{width}}{'tokens p50/p90/p99/max':>22}{'> max':>8}")
        sampled = []
        for name in SPLITS:
            e = report.splits.get(name, {})
            if not e.get("rows"):
                lines.append(f"  {name:<6}{'-':>8}")
                continue
            tl = e.get("token_lengths")
            tokens = f"{tl['p50']}/{tl['p90']}/{tl['p99']}/{tl['max']}" if tl else "-"
            over = f"{tl['over_max_share']:.1%}" if tl else "-"
            if tl and tl["sampled"]:
                sampled.append(f"{name} {tl['rows_tokenized']:,} of {e['rows']:,}")
            bad = e.get("skipped_bad_rows", "-")
            lines.append(f"  {name:<6}{e['rows']:>8}{bad:>6}  {summaries[name]:<{width}}{tokens:>22}{over:>8}")
        if any("token_lengths" in report.splits.get(n, {}) for n in SPLITS):
            how = (f"a seeded sample (seed {SAMPLE_SEED}) of at most {MAX_TOKENIZED_ROWS:,} rows per split: "
                   + ", ".join(sampled)) if sampled else "every row"
            lines.append(f"  token lengths: the teacher's tokenizer, {how}; '> max' is the share longer than "
                         "max_seq_length" + (" (read in several windows)" if cfg.task.type == "qa" else " (truncated)"))
    t = report.teacher
    if "path" in t:
        head = t.get("head")
        if head == "unknown" or "head" not in t:
            head_text = "head not read (checked when the model loads)"
        elif head:
            head_text = f"{head} head" + (f" with {t['head_outputs']} outputs" if t.get("head_outputs") else "")
        else:
            head_text = "no head for the task"
        shape = (f"{t['num_hidden_layers']} layers, {t['num_attention_heads']} heads, hidden {t['hidden_size']}, "
                 f"FFN {t['intermediate_size']}, {t['max_position_embeddings']} positions, vocab {t['vocab_size']}"
                 if "num_hidden_layers" in t else t.get("model_type", "?"))
        lines.append(f"teacher: {t['path']} ({'this run' if t['source'] == 'run' else 'teacher.model'}): {shape}; "
                     f"{head_text}")
    lines += [f"note: {n}" for n in report.notes]
    lines += [f"warning: {w}" for w in report.warnings]
    lines += [f"error: {e}" for e in report.errors]
    n_e, n_w = len(report.errors), len(report.warnings)
    counts = f"{n_e} error{'s' if n_e != 1 else ''}, {n_w} warning{'s' if n_w != 1 else ''}"
    lines.append(f"not ready: {counts}; fix the errors first" if n_e else f"ready: {counts}")
    return "\n".join(lines)
