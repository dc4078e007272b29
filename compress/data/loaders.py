"""Read a task's examples from GLUE TSV, CSV, JSON Lines, SQuAD JSON or Hugging Face `datasets`.

Each reader returns plain examples; every bad row is reported with its file, line and what to fix.
"""

from __future__ import annotations

import codecs
import csv
import difflib
import gzip
import hashlib
import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import yaml

from ..config import SourceConfig, TaskConfig

log = logging.getLogger(__name__)

__all__ = [
    "DataError",
    "QAExample",
    "TextExample",
    "file_encoding",
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


_SPREADSHEETS = (".xlsx", ".xls", ".xlsm", ".ods", ".numbers")


def _format_of(source: SourceConfig, path: Path, qa: bool = False) -> str:
    """The format of a source: `format:`, else its extension (under a .gz). A .json file is SQuAD for a QA task
    and a list of records otherwise."""
    if source.format != "auto":
        return source.format
    if path.is_dir():
        return "hf"
    suffix = _inner_suffix(path)
    if suffix in _SPREADSHEETS:
        raise DataError(f"{path.name} is a spreadsheet; save it as CSV (in Excel: Save As, 'CSV UTF-8') and point "
                        "path at the .csv file")
    fmt = {".tsv": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet",
           ".json": "squad" if qa else "json"}.get(suffix)
    if fmt is None:
        raise DataError(
            f"cannot tell the format of {str(path)!r} from its extension {suffix!r}; "
            "set format: tsv, csv, jsonl, json, parquet, squad or hf on this source"
        )
    return fmt


def _inner_suffix(path: Path) -> str:
    """The extension that names the format: 'train.tsv.gz' -> '.tsv'."""
    suffixes = [x.lower() for x in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    return suffixes[-1] if suffixes else ""


def _open_binary(path: Path):
    """A file's bytes, decompressed when it ends in .gz."""
    return gzip.open(path, "rb") if path.suffix.lower() == ".gz" else open(path, "rb")


def _open_text(path: Path, encoding: str, newline: str | None = None):
    if path.suffix.lower() == ".gz":
        return gzip.open(path, "rt", encoding=encoding, newline=newline)
    return open(path, encoding=encoding, newline=newline)


def _require_exists(path: Path, fmt: str) -> None:
    if fmt == "hf" and not path.exists():
        return  # a hub name: `datasets` resolves it
    if not path.exists():
        raise DataError(f"data file {str(path)!r} does not exist; check data.train/data.eval paths in the config")
    if path.is_file() and path.stat().st_size == 0:
        raise DataError(f"data file {str(path)!r} is empty; it needs a header row and at least one example")


# ----------------------------------------------------------------------------------------------
# Text encodings


def file_encoding(path: Path, source: SourceConfig) -> str:
    """The codec a source is read with: `encoding:` when set; else UTF-16/32 when the file starts with their
    byte-order mark, and UTF-8 otherwise (utf-8-sig: a UTF-8 byte-order mark, as Excel writes, is dropped)."""
    if source.encoding:
        return source.encoding
    with _open_binary(path) as fh:
        try:
            head = fh.read(4)
        except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError
            raise DataError(f"{path.name} cannot be read as {'gzip' if path.suffix == '.gz' else 'a file'} "
                            f"({exc}); check the file") from None
    if head.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        return "utf-32"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    return "utf-8-sig"


def _undecodable(path: Path, encoding: str, exc: UnicodeDecodeError) -> DataError:
    """Where the first byte that `encoding` cannot decode is: line and byte offset, found by a second pass."""
    line_no, offset, bad = None, None, b""
    decoder = codecs.getincrementaldecoder(encoding)()
    pos = 0
    with _open_binary(path) as fh:
        for line_no, raw in enumerate(fh, start=1):
            try:
                decoder.decode(raw)
            except UnicodeDecodeError as err:
                offset = pos + err.start
                bad = raw[err.start:err.end]
                break
            pos += len(raw)
    where = f"{path.name}:{line_no}" if offset is not None else path.name
    at = f"byte offset {offset}" if offset is not None else f"position {exc.start}"
    shown = (bad or exc.object[exc.start:exc.end])[:4].hex(" ")
    name = "UTF-8" if encoding.replace("_", "-").lower() in ("utf-8", "utf-8-sig", "utf8") else encoding
    return DataError(
        f"{where}: byte 0x{shown} at {at} is not valid {name} text; the file is in another encoding. Set it on "
        f"this source, e.g. {{path: {path.name}, encoding: cp1252}} (Windows/Excel) or encoding: latin-1, or "
        "save the file as UTF-8"
    )


def _decoding(path: Path, encoding: str, rows: Iterator) -> Iterator:
    """`rows`, with a decoding error turned into a DataError naming the file, line and byte offset, and a file
    that ends too soon or that csv cannot parse into one naming the file and what to do."""
    where = path.name
    try:
        for where, row in rows:
            yield where, row
    except UnicodeDecodeError as exc:
        raise _undecodable(path, encoding, exc) from None
    except (EOFError, gzip.BadGzipFile) as exc:
        raise DataError(f"{path.name}: the compressed file is cut short or damaged after {where} ({exc}); "
                        "copy or download it again") from None
    except csv.Error as exc:
        raise DataError(f"{path.name}: cannot be read as {'CSV' if path.suffix != '.tsv' else 'TSV'} after {where} "
                        f"({exc}); check the file around that line") from None


# ----------------------------------------------------------------------------------------------
# Tabular rows (TSV, CSV, JSONL, datasets)


# NOTE: csv refuses fields over 128 KiB by default; a long document is data, not an error (truncation to
# max_seq_length happens when it is featurised). 64 MiB still stops a file with a runaway quote.
csv.field_size_limit(64 << 20)


def _read_delimited(path: Path, delimiter: str, quoting: int, source: SourceConfig,
                    encoding: str) -> Iterator[tuple[str, dict[str, Any] | DataError]]:
    """Rows as (where, mapping); a malformed row is yielded as a DataError so on_bad_row can skip it.

    newline="" lets csv handle CRLF and LF line ends (and newlines inside quoted CSV fields) alike.
    """
    name = path.name
    sep = "tab" if delimiter == "\t" else "delimiter or quote"
    with _open_text(path, encoding, newline="") as fh:
        reader = csv.reader(fh, delimiter=delimiter, quoting=quoting)
        if source.header:
            header = next(reader, None)
            if not header:
                raise DataError(f"data file {str(path)!r} is empty; it needs a header row and at least one example")
            what = f"the header has {len(header)}"
        else:
            header = list(source.columns or ())
            what = f"columns: names {len(header)}"
        start = reader.line_num + 1
        for values in reader:
            where = f"{name}:{start}"  # the line the record starts on (a quoted CSV field may span lines)
            start = reader.line_num + 1
            if not values:
                continue
            if len(values) != len(header):
                yield where, DataError(
                    f"{where}: has {len(values)} fields, {what} ({', '.join(header)}); a stray {sep} in the "
                    f"text{'' if source.header else ', or a columns: list that does not match the file'}? "
                    "Fix the row or set data.on_bad_row: skip"
                )
                continue
            yield where, dict(zip(header, values))


def _read_jsonl(path: Path, encoding: str) -> Iterator[tuple[str, dict[str, Any] | DataError]]:
    with _open_text(path, encoding) as fh:
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


def _read_json_records(path: Path, encoding: str) -> Iterator[tuple[str, dict[str, Any] | DataError]]:
    """A JSON array of objects (pandas' to_json(orient="records")); a file that holds one object per line is
    JSON Lines whatever its extension, and is read as such."""
    with _open_text(path, encoding) as fh:
        text = fh.read()
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data" and text.lstrip().startswith("{"):
            yield from _read_jsonl(path, encoding)
            return
        raise DataError(f"{path.name}:{exc.lineno}: is not valid JSON ({exc.msg} at column {exc.colno})") from None
    if isinstance(doc, dict) and isinstance(doc.get("data"), list) and doc["data"] \
            and isinstance(doc["data"][0], dict) and "paragraphs" in doc["data"][0]:
        raise DataError(f"{path.name}: format 'squad' holds QA data; a squad source cannot feed a classification "
                        "task (set task.type: qa, or give a file of labelled texts)")
    if isinstance(doc, dict) and len(doc) == 1 and isinstance(next(iter(doc.values())), list):
        doc = next(iter(doc.values()))  # {"data": [...]}: one named list of records
    if not isinstance(doc, list):
        raise DataError(f"{path.name}: holds a JSON {type(doc).__name__}; a json source is a list of objects, one per "
                        "example (or JSON Lines: one object per line)")
    for i, row in enumerate(doc):
        where = f"{path.name}[{i}]"
        if not isinstance(row, dict):
            yield where, DataError(f"{where}: is a JSON {type(row).__name__}, expected an object")
            continue
        yield where, row


def _read_parquet(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    import pyarrow.parquet as pq  # installed with `datasets`; only needed for parquet files

    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises ArrowInvalid and friends for any bad file
        raise DataError(f"{path.name} is not a readable Parquet file ({exc}); check the file") from None
    i = 0
    for batch in pf.iter_batches(batch_size=4096):
        for row in batch.to_pylist():
            yield f"{path.name} row {i + 1}", row
            i += 1


def _hf_dataset(source: SourceConfig, path: Path) -> Any:
    import datasets  # heavy import: only when asked for

    if path.is_dir():
        if not any((path / f).is_file() for f in ("dataset_info.json", "state.json", "dataset_dict.json")):
            files = sorted(p.name for p in path.iterdir())[:8]
            raise DataError(
                f"{str(path)!r} is a folder but not a data set saved by `datasets` (no dataset_info.json, "
                f"state.json or dataset_dict.json; it holds {files}); point path at a data file (tsv, csv, "
                "jsonl, SQuAD json) or at a folder written by Dataset.save_to_disk"
            )
        try:
            ds = datasets.load_from_disk(str(path))
        except (FileNotFoundError, ValueError, OSError) as exc:
            raise DataError(f"{str(path)!r} could not be read as a `datasets` folder ({exc}); write it again "
                            "with Dataset.save_to_disk") from None
    else:
        try:
            ds = datasets.load_dataset(source.path, source.name, split=source.split)
        except Exception as exc:  # noqa: BLE001 - datasets raises many kinds; all mean "not available"
            reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            raise DataError(
                f"{source.path!r} is not a local file or folder, and the Hugging Face data set of that name "
                f"(name={source.name!r}, split={source.split!r}) is not in the local cache ({reason}). This tool "
                "runs offline: check the path, or on a machine with network save the data set with "
                "`datasets.load_dataset(...).save_to_disk(FOLDER)` and point path at FOLDER"
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
    if (not source.header or source.delimiter) and fmt not in ("tsv", "csv"):
        raise DataError(f"{source.path}: header, columns and delimiter apply to tsv and csv files, not to {fmt}")
    if fmt in ("tsv", "csv", "jsonl", "json"):
        encoding = file_encoding(path, source)
        if fmt == "jsonl":
            rows = _read_jsonl(path, encoding)
        elif fmt == "json":
            rows = _read_json_records(path, encoding)
        else:
            # NOTE: GLUE TSV files are not quoted: a '"' inside a sentence is text, not a quote.
            delimiter, quoting = ("\t", csv.QUOTE_NONE) if fmt == "tsv" else (",", csv.QUOTE_MINIMAL)
            rows = _read_delimited(path, source.delimiter or delimiter, quoting, source, encoding)
        return _decoding(path, encoding, rows)
    if fmt == "parquet":
        return _read_parquet(path)
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
    on_bad_row: str = "error",
) -> list[TextExample]:
    """Read every source of a split into examples, validating columns and labels row by row."""
    if task.type == "qa":
        raise DataError("a qa task reads SQuAD data; use load_qa_examples")
    label_of = _LabelMap(task)
    needed = [*task.text_columns, task.label_column]
    examples: list[TextExample] = []
    skipped: list[str] = []
    for source in sources:
        path = resolve_source_path(source.path, config_path)
        fmt = _format_of(source, path)
        _require_exists(path, fmt)
        loaded: list[TextExample] = []
        first = True
        for where, row in _rows(source, path, fmt):
            if isinstance(row, DataError):
                if on_bad_row == "skip":
                    skipped.append(str(row))
                    continue
                raise row
            try:
                missing = [c for c in needed if c not in row]
                if missing:
                    # a column missing from the first row is missing from the file: no row could be used
                    if first:
                        raise _missing_column(where, missing[0], row, first=True)
                    raise _missing_column(where, missing[0], row, first=False)
                first = False
                texts = _row_texts(row, task, where)
                label = label_of(row.get(task.label_column), where)
            except DataError as exc:
                if on_bad_row == "skip" and not first:
                    skipped.append(str(exc))
                    continue
                raise
            loaded.append(TextExample(texts, label, where))
        if not loaded and not skipped:
            raise DataError(f"data file {str(path)!r} has {'a header but ' if source.header else ''}no examples")
        examples.extend(_subsample(loaded, source))
    if skipped:
        log.warning("skipped %d bad rows (data.on_bad_row: skip); first: %s", len(skipped), skipped[0])
    if not examples:
        raise DataError(f"no usable examples in {[s.path for s in sources]}; every row was bad: {skipped[:1]}")
    return examples


# ----------------------------------------------------------------------------------------------
# Extractive QA (SQuAD JSON or datasets with the squad columns)


def _squad_articles(path: Path, source: SourceConfig) -> list[dict[str, Any]]:
    encoding = file_encoding(path, source)
    try:
        with open(path, encoding=encoding) as fh:
            doc = json.load(fh)
    except UnicodeDecodeError as exc:
        raise _undecodable(path, encoding, exc) from None
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
        fmt = _format_of(source, path, qa=True)
        _require_exists(path, fmt)
        if fmt == "squad":
            items = list(_qa_from_squad(_select_articles(_squad_articles(path, source), source, path.name), path.name))
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
