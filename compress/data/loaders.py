"""Turn a task's rows into examples: columns, joined texts and labels checked row by row (SQuAD JSON: squad.py).

files.py opens the sources (formats, encodings, compression) and yields their rows; every bad row is reported
with its file, line and what to fix.
"""

from __future__ import annotations

import difflib
import logging
from dataclasses import dataclass
from typing import Any

import yaml

from ..config import SourceConfig, TaskConfig
from .files import (
    DataError, file_encoding, file_fingerprint, hf_dataset, require_exists, resolve_source_path, source_format,
    source_rows, subsample, undecodable_error,
)

log = logging.getLogger(__name__)

__all__ = [
    "DataError",
    "QAExample",
    "TextExample",
    "file_encoding",
    "file_fingerprint",
    "hf_dataset",
    "load_text_examples",
    "require_exists",
    "resolve_source_path",
    "source_format",
    "subsample",
    "undecodable_error",
]


@dataclass(frozen=True)
class TextExample:
    """One classification or regression row: one or two texts and a label id (or float)."""

    texts: tuple[str, ...]
    label: int | float | None
    row: str  # where it came from, for error messages: "train.tsv:17"


@dataclass(frozen=True)
class QAExample:
    """One extractive QA question. No answers means unanswerable (SQuAD 2.0)."""

    qid: str
    title: str
    context: str
    question: str
    answers: tuple[tuple[str, int], ...]  # (text, character start in context)
    is_impossible: bool


def _integral(text: str) -> int | None:
    """An integer id written as an integer ("1") or as an integral float ("1.0", as pandas writes a column that
    had a missing value); None for anything else."""
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        value = float(text)
    except ValueError:
        return None
    return int(value) if value.is_integer() else None


class _LabelMap:
    """Maps raw labels to ids: names from task.labels, or integer ids when no names are given."""

    def __init__(self, task: TaskConfig) -> None:
        self.task = task
        self.names = list(task.labels) if task.labels else None

    def __call__(self, raw: Any, where: str) -> int | float:
        column = self.task.label_column
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            raise DataError(f"{where}: the label (column {column!r}) is empty; fix the row or set "
                            "data.on_bad_row: skip")
        if self.task.type == "regression":
            try:
                value = float(raw)
            except (TypeError, ValueError):
                raise DataError(f"{where}: label {raw!r} is not a number; a regression label is one float") from None
            if value != value or value in (float("inf"), float("-inf")):
                raise DataError(f"{where}: label {raw!r} is not a finite number")
            return value
        if isinstance(raw, (list, dict)):
            raise DataError(f"{where}: label {raw!r} is a JSON {type(raw).__name__}; a label is one name or id")
        text = str(raw).strip()
        number = None if isinstance(raw, bool) else _integral(text)
        if self.names is not None:
            if text in self.names:
                return self.names.index(text)
            if number is not None and 0 <= number < len(self.names):
                return number  # integer ids with names given in the config
            raise DataError(
                f"{where}: label {text!r} is not one of task.labels {self.names}; "
                "add it to task.labels or fix the row"
            )
        if number is None:
            hint = ("a fractional value: for scores use task.type: regression; " if _is_float(text) else "")
            raise DataError(
                f"{where}: label {text!r} is not an integer id; {hint}list the label names in id order in "
                f"task.labels (for example labels: [{_yaml_scalar(text)}, ...]) so they are stored as id2label"
            )
        if number < 0:
            raise DataError(f"{where}: label {number} is negative; integer labels are ids 0, 1, ... Name the values "
                            f"in task.labels (for example labels: ['{number}', ...], in the order you want as ids) "
                            "or, for a score, use task.type: regression")
        return number


def _yaml_scalar(text: str) -> str:
    """`text` as it would be written inside a YAML flow list (quoted only when YAML needs it)."""
    return yaml.safe_dump([text], default_flow_style=True, width=1 << 16).strip()[1:-1]


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _missing_column(where: str, column: str, row: dict[str, Any], first: bool) -> DataError:
    names = [str(c) for c in row]
    close = difflib.get_close_matches(column, names, n=1, cutoff=0.6)
    hint = ""
    split_by = next((d for d in (";", "|", "\t", ",") for n in names if d in n and column in n.split(d)), None)
    if any("\x00" in n for n in names):
        hint = (" (the header holds NUL bytes: the file is UTF-16 without a byte-order mark; set encoding: "
                "utf-16-le on this source)")
    elif split_by == "\t":
        hint = " (the header is separated by tabs: set format: tsv on this source)"
    elif split_by is not None:
        hint = f" (the header looks separated by '{split_by}': set delimiter: '{split_by}' on this source)"
    elif close and close[0].strip().lower() == column.strip().lower():
        hint = f" ({close[0]!r} differs only in spaces or case)"
    elif close:
        hint = f" (did you mean {close[0]!r}?)"
    if first:
        return DataError(
            f"{where}: column {column!r} not found{hint}; the columns are {names}. Set task.text_columns / "
            "task.label_column to the data's column names, or for a file without a header row set header: false "
            "and columns: [...] on the source"
        )
    return DataError(f"{where}: has no {column!r}{hint} (this row has {names}); fix the row or set "
                     "data.on_bad_row: skip")


def _row_texts(row: dict[str, Any], task: TaskConfig, where: str) -> tuple[str, ...]:
    """The example's texts: two for a pair task; else the text columns joined by task.text_separator
    (empty parts left out; the row is bad only when every part is empty)."""
    values = []
    for col in task.text_columns:
        value = row.get(col)
        if value is not None and not isinstance(value, str):
            raise DataError(f"{where}: column {col!r} is not text ({value!r})")
        if value and "\x00" in value:
            raise DataError(f"{where}: column {col!r} holds a NUL byte: the file is probably UTF-16 without a "
                            "byte-order mark (set encoding: utf-16-le on the source) or not a text file")
        values.append(value or "")
    if task.type == "pair_classification":
        for col, value in zip(task.text_columns, values):
            if not value.strip():
                raise DataError(f"{where}: column {col!r} is empty")
        return tuple(values)
    parts = [v for v in values if v.strip()]
    if not parts:
        cols = " and ".join(repr(c) for c in task.text_columns)
        raise DataError(f"{where}: column{'s' if len(task.text_columns) > 1 else ''} {cols} "
                        f"{'are' if len(task.text_columns) > 1 else 'is'} empty")
    return (task.text_separator.join(parts),)


def load_text_examples(
    sources: tuple[SourceConfig, ...], task: TaskConfig, config_path: str | None = None,
    on_bad_row: str = "error", labelled: bool = True,
) -> list[TextExample]:
    """Read every source of a split into examples, validating columns and labels row by row. With `labelled`
    False (unlabelled text for augmentation) the label column is not read and every label is None."""
    if task.type == "qa":
        raise DataError("a qa task reads SQuAD data; use load_qa_examples")
    label_of = _LabelMap(task)
    needed = [*task.text_columns, task.label_column] if labelled else list(task.text_columns)
    examples: list[TextExample] = []
    skipped: list[str] = []
    for source in sources:
        path = resolve_source_path(source.path, config_path)
        fmt = source_format(source, path)
        require_exists(path, fmt)
        loaded: list[TextExample] = []
        first = True
        for where, row in source_rows(source, path, fmt):
            if isinstance(row, DataError):
                if on_bad_row == "skip":
                    skipped.append(str(row))
                    continue
                raise row
            try:
                missing = [c for c in needed if c not in row]
                if missing:
                    # a column missing from the first row is missing from the file: no row could be used
                    raise _missing_column(where, missing[0], row, first=first)
                first = False
                texts = _row_texts(row, task, where)
                label = label_of(row.get(task.label_column), where) if labelled else None
            except DataError as exc:
                if on_bad_row == "skip" and not first:
                    skipped.append(str(exc))
                    continue
                raise
            loaded.append(TextExample(texts, label, where))
        if not loaded and not skipped:
            raise DataError(f"data file {str(path)!r} has {'a header but ' if source.header else ''}no examples")
        examples.extend(subsample(loaded, source))
    if skipped:
        log.warning("skipped %d bad rows (data.on_bad_row: skip); first: %s", len(skipped), skipped[0])
    if not examples:
        raise DataError(f"no usable examples in {[s.path for s in sources]}; every row was bad: {skipped[:1]}")
    return examples
