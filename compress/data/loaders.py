"""Read a task's examples from GLUE TSV, CSV, JSON Lines, SQuAD JSON or Hugging Face `datasets`.

Each reader returns plain examples; every bad row is reported with its file, line and what to fix.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from ..config import SourceConfig, TaskConfig

log = logging.getLogger(__name__)

__all__ = [
    "DataError",
    "QAExample",
    "TextExample",
    "file_fingerprint",
    "load_qa_examples",
    "load_text_examples",
    "resolve_source_path",
]


class DataError(ValueError):
    """Input data that cannot be used; the message names the file, the row and what to do."""


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


def resolve_source_path(path: str, config_path: str | None) -> Path:
    """A relative path is looked up from the working directory, then from the config file's folder."""
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists() or config_path is None:
        return p
    beside = Path(config_path).resolve().parent / p
    return beside if beside.exists() else p


def file_fingerprint(path: Path) -> str:
    """Content hash of a file or of every file in a folder: part of every feature cache key."""
    h = hashlib.sha256()
    files = sorted(q for q in path.rglob("*") if q.is_file()) if path.is_dir() else [path]
    for f in files:
        h.update(str(f.relative_to(path) if path.is_dir() else f.name).encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def _format_of(source: SourceConfig, path: Path) -> str:
    if source.format != "auto":
        return source.format
    suffix = path.suffix.lower()
    if path.is_dir():
        return "hf"
    fmt = {".tsv": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".json": "squad"}.get(suffix)
    if fmt is None:
        raise DataError(
            f"cannot tell the format of {str(path)!r} from its extension {suffix!r}; "
            "set format: tsv, csv, jsonl, squad or hf on this source"
        )
    return fmt


def _require_exists(path: Path, fmt: str) -> None:
    if fmt == "hf" and not path.exists():
        return  # a hub name: `datasets` resolves it
    if not path.exists():
        raise DataError(f"data file {str(path)!r} does not exist; check data.train/data.eval paths in the config")
    if path.is_file() and path.stat().st_size == 0:
        raise DataError(f"data file {str(path)!r} is empty; it needs a header row and at least one example")


# ----------------------------------------------------------------------------------------------
# Tabular rows (TSV, CSV, JSONL, datasets)


def _read_delimited(path: Path, delimiter: str, quoting: int) -> Iterator[tuple[str, dict[str, Any] | DataError]]:
    """Rows as (where, mapping); a malformed row is yielded as a DataError so on_bad_row can skip it."""
    name = path.name
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh, delimiter=delimiter, quoting=quoting)
        header = next(reader, None)
        if not header:
            raise DataError(f"data file {str(path)!r} is empty; it needs a header row and at least one example")
        start = reader.line_num + 1
        for values in reader:
            where = f"{name}:{start}"  # the line the record starts on (a quoted CSV field may span lines)
            start = reader.line_num + 1
            if not values:
                continue
            if len(values) != len(header):
                yield where, DataError(
                    f"{where}: has {len(values)} fields, the header has {len(header)} "
                    f"({', '.join(header)}); a stray {'tab' if delimiter == chr(9) else 'delimiter or quote'} "
                    "in the text? Fix the row or set data.on_bad_row: skip"
                )
                continue
            yield where, dict(zip(header, values))


def _read_jsonl(path: Path) -> Iterator[tuple[str, dict[str, Any] | DataError]]:
    with open(path, encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            where = f"{path.name}:{line_no}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                yield where, DataError(
                    f"{where}: is not valid JSON ({exc.msg} at column {exc.colno}); "
                    "each line of a JSON Lines file must be one JSON object"
                )
                continue
            if not isinstance(row, dict):
                yield where, DataError(f"{where}: is a JSON {type(row).__name__}, expected an object")
                continue
            yield where, row


def _hf_dataset(source: SourceConfig, path: Path) -> Any:
    import datasets  # heavy import: only when asked for

    if path.is_dir():
        ds = datasets.load_from_disk(str(path))
    else:
        try:
            ds = datasets.load_dataset(source.path, source.name, split=source.split)
        except Exception as exc:  # noqa: BLE001 - datasets raises many kinds; all mean "not available"
            raise DataError(
                f"could not load the Hugging Face data set {source.path!r} (name={source.name!r}, "
                f"split={source.split!r}): {exc}. Offline, save it first with `datasets.load_dataset(...)"
                ".save_to_disk(FOLDER)` and point path at FOLDER"
            ) from None
    if isinstance(ds, datasets.DatasetDict):
        if source.split is None or source.split not in ds:
            raise DataError(
                f"{source.path!r} holds splits {sorted(ds)}; set split: to one of them on this source"
            )
        ds = ds[source.split]
    return ds


def _read_hf(source: SourceConfig, path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    ds = _hf_dataset(source, path)
    label = Path(source.path).name or source.path
    for i, row in enumerate(ds):
        yield f"{label}[{i}]", row


def _rows(source: SourceConfig, path: Path, fmt: str) -> Iterator[tuple[str, dict[str, Any]]]:
    if fmt == "tsv":
        # NOTE: GLUE TSV files are not quoted: a '"' inside a sentence is text, not a quote.
        return _read_delimited(path, "\t", csv.QUOTE_NONE)
    if fmt == "csv":
        return _read_delimited(path, ",", csv.QUOTE_MINIMAL)
    if fmt == "jsonl":
        return _read_jsonl(path)
    if fmt == "hf":
        return _read_hf(source, path)
    raise DataError(f"format {fmt!r} holds QA data; a {fmt} source cannot feed a classification task")


def _subsample(items: list, source: SourceConfig) -> list:
    if source.limit is None or source.limit >= len(items):
        return items
    if source.sample_seed is None:
        return items[: source.limit]
    rng = random.Random(source.sample_seed)
    keep = sorted(rng.sample(range(len(items)), source.limit))
    return [items[i] for i in keep]


class _LabelMap:
    """Maps raw labels to ids: names from task.labels, or integer ids when no names are given."""

    def __init__(self, task: TaskConfig) -> None:
        self.task = task
        self.names = list(task.labels) if task.labels else None

    def __call__(self, raw: Any, where: str) -> int | float:
        if self.task.type == "regression":
            try:
                value = float(raw)
            except (TypeError, ValueError):
                raise DataError(f"{where}: label {raw!r} is not a number; a regression label is one float") from None
            if value != value or value in (float("inf"), float("-inf")):
                raise DataError(f"{where}: label {raw!r} is not a finite number")
            return value
        text = str(raw).strip()
        if self.names is not None:
            if text in self.names:
                return self.names.index(text)
            if text.lstrip("-").isdigit() and 0 <= int(text) < len(self.names):
                return int(text)  # integer ids with names given in the config
            raise DataError(
                f"{where}: label {text!r} is not one of task.labels {self.names}; "
                "add it to task.labels or fix the row"
            )
        if isinstance(raw, bool) or not text.lstrip("-").isdigit():
            raise DataError(
                f"{where}: label {text!r} is not an integer id; list the label names in id order in "
                f"task.labels (for example labels: [{text}, ...]) so they are stored as id2label"
            )
        value = int(text)
        if value < 0:
            raise DataError(f"{where}: label {value} is negative; integer labels are ids 0, 1, ...")
        return value


def load_text_examples(
    sources: tuple[SourceConfig, ...], task: TaskConfig, config_path: str | None = None,
    on_bad_row: str = "error",
) -> list[TextExample]:
    """Read every source of a split into examples, validating columns and labels row by row."""
    if task.type == "qa":
        raise DataError("a qa task reads SQuAD data; use load_qa_examples")
    label_of = _LabelMap(task)
    examples: list[TextExample] = []
    skipped: list[str] = []
    for source in sources:
        path = resolve_source_path(source.path, config_path)
        fmt = _format_of(source, path)
        _require_exists(path, fmt)
        loaded: list[TextExample] = []
        checked_columns = False
        for where, row in _rows(source, path, fmt):
            if isinstance(row, DataError):
                if on_bad_row == "skip":
                    skipped.append(str(row))
                    continue
                raise row
            if not checked_columns:
                needed = [*task.text_columns, task.label_column]
                missing = [c for c in needed if c not in row]
                if missing:
                    raise DataError(
                        f"{where}: column {missing[0]!r} not found (columns: {', '.join(map(str, row))}); "
                        "set task.text_columns / task.label_column to the data's column names"
                    )
                checked_columns = True
            try:
                texts = []
                for col in task.text_columns:
                    value = row.get(col)
                    if not isinstance(value, str) or not value.strip():
                        raise DataError(f"{where}: column {col!r} is empty or not text ({value!r})")
                    texts.append(value)
                label = label_of(row.get(task.label_column), where)
            except DataError as exc:
                if on_bad_row == "skip":
                    skipped.append(str(exc))
                    continue
                raise
            loaded.append(TextExample(tuple(texts), label, where))
        if not loaded and not skipped:
            raise DataError(f"data file {str(path)!r} has a header but no examples")
        examples.extend(_subsample(loaded, source))
    if skipped:
        log.warning("skipped %d bad rows (data.on_bad_row: skip); first: %s", len(skipped), skipped[0])
    if not examples:
        raise DataError(f"no usable examples in {[s.path for s in sources]}; every row was bad: {skipped[:1]}")
    return examples


# ----------------------------------------------------------------------------------------------
# Extractive QA (SQuAD JSON or datasets with the squad columns)


def _squad_articles(path: Path) -> list[dict[str, Any]]:
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{path.name}: is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); "
            "a SQuAD file is one JSON object with a 'data' list"
        ) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
        raise DataError(f"{path.name}: has no 'data' list of articles; is it a SQuAD JSON file?")
    return doc["data"]


def _select_articles(articles: list[dict[str, Any]], source: SourceConfig, name: str) -> list[dict[str, Any]]:
    if source.articles is None:
        return articles
    sl = source.article_slice()
    if sl is not None:
        chosen = articles[sl]
    else:
        titles = [a.get("title", "") for a in articles]
        unknown = [t for t in source.articles if t not in titles]
        if unknown:
            raise DataError(f"{name}: article {unknown[0]!r} not found; titles are {titles}")
        chosen = [a for a in articles if a.get("title", "") in source.articles]
    if not chosen:
        raise DataError(f"{name}: articles={source.articles!r} selects no article of {len(articles)}")
    return chosen


def _qa_from_squad(articles: list[dict[str, Any]], name: str) -> Iterator[QAExample]:
    for a_i, article in enumerate(articles):
        title = article.get("title", f"article-{a_i}")
        for p_i, para in enumerate(article.get("paragraphs", [])):
            context = para.get("context")
            if not isinstance(context, str) or not context.strip():
                raise DataError(f"{name}: article {title!r} paragraph {p_i} has no context text")
            for qa in para.get("qas", []):
                yield _qa_example(qa, title, context, f"{name}: article {title!r} paragraph {p_i}")


def _qa_example(qa: dict[str, Any], title: str, context: str, where: str) -> QAExample:
    qid = qa.get("id")
    question = qa.get("question")
    if not qid or not isinstance(question, str) or not question.strip():
        raise DataError(f"{where}: a question has no 'id' or no 'question' text ({qa!r:.120})")
    answers = []
    for ans in qa.get("answers", []) or []:
        text, start = ans.get("text"), ans.get("answer_start")
        if not isinstance(text, str) or not isinstance(start, int):
            raise DataError(f"{where} question {qid}: answer {ans!r} needs 'text' and an integer 'answer_start'")
        if context[start : start + len(text)] != text:
            raise DataError(
                f"{where} question {qid}: answer {text!r} is not found at answer_start={start} of the context "
                f"(the context there reads {context[start:start + len(text)]!r})"
            )
        answers.append((text, start))
    impossible = bool(qa.get("is_impossible", False))
    if impossible and answers:
        answers = []  # SQuAD 2.0 stores plausible (wrong) answers separately; gold is "no answer"
    if not impossible and not answers:
        raise DataError(
            f"{where} question {qid}: has no answers and is not marked is_impossible; "
            "mark unanswerable questions with is_impossible: true (SQuAD 2.0)"
        )
    return QAExample(str(qid), title, context, question, tuple(answers), impossible)


def _qa_from_hf(source: SourceConfig, path: Path) -> Iterator[QAExample]:
    ds = _hf_dataset(source, path)
    needed = {"id", "context", "question", "answers"}
    missing = needed - set(ds.column_names)
    if missing:
        raise DataError(
            f"{source.path}: columns {sorted(missing)} not found (columns: {ds.column_names}); "
            "a QA data set needs the SQuAD columns id, title, context, question, answers"
        )
    for i, row in enumerate(ds):
        ans = row["answers"]
        qa = {
            "id": row["id"], "question": row["question"],
            "answers": [{"text": t, "answer_start": s} for t, s in zip(ans["text"], ans["answer_start"])],
            "is_impossible": len(ans["text"]) == 0,
        }
        yield _qa_example(qa, row.get("title", ""), row["context"], f"{source.path}[{i}]")


def load_qa_examples(sources: tuple[SourceConfig, ...], config_path: str | None = None) -> list[QAExample]:
    """Read every SQuAD source of a split; `limit` counts questions, `articles` selects articles."""
    examples: list[QAExample] = []
    for source in sources:
        path = resolve_source_path(source.path, config_path)
        fmt = _format_of(source, path)
        _require_exists(path, fmt)
        if fmt == "squad":
            items = list(_qa_from_squad(_select_articles(_squad_articles(path), source, path.name), path.name))
        elif fmt == "hf":
            items = list(_qa_from_hf(source, path))
        else:
            raise DataError(f"{path.name}: format {fmt!r} cannot hold QA data; use squad JSON or a hf data set")
        if not items:
            raise DataError(f"{path.name}: holds no questions")
        examples.extend(_subsample(items, source))
    seen: set[str] = set()
    for ex in examples:
        if ex.qid in seen:
            raise DataError(f"question id {ex.qid!r} appears twice in one split; ids must be unique")
        seen.add(ex.qid)
    return examples
