"""Every split, as the loaders and data.split make it: rows, bad rows skipped, labels (or values, or questions),
duplicates across splits, and (with compress/validate/lengths.py) token lengths against data.max_seq_length."""

from __future__ import annotations

import json
import logging
from collections import Counter
from typing import Any

import numpy as np

from ..config import JobConfig
from ..data.features import load_split_examples
from ..data.loaders import DataError, resolve_source_path
from ..data.qa import detect_version_2
from .findings import SPLITS, Report
from .lengths import qa_window_room, token_lengths

__all__ = ["check_data"]

IMBALANCE = 0.10  # warn when the rarest training label has fewer rows than this share of the most common one


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
    return [resolve_source_path(s.path, cfg.config_path).name or s.path for s in getattr(cfg.data, split)]


def check_data(cfg: JobConfig, command: str, report: Report, tokenizer: Any, lengths: bool) -> int | None:
    """Per split: rows, bad rows skipped, labels (or values, or questions), token lengths, duplicates across
    splits. Returns the outputs a classifier head needs (1 for regression; None for QA, or unreadable data)."""
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
        windows_ok = qa_window_room(cfg, report, splits, tokenizer)
    if lengths and tokenizer is not None:
        token_lengths(cfg, report, splits, tokenizer, answers=windows_ok)
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

