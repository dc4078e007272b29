"""Open a data source: where its file is, which format and encoding it has (gzip, byte-order marks), and the
raw rows of each file format (TSV, CSV, JSON Lines, JSON records, Parquet, Hugging Face `datasets`).

Rows come as (where, mapping); a malformed row comes as a DataError naming the file and line, so
data.on_bad_row can skip it. loaders.py turns rows into examples; squad.py reads SQuAD JSON.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import hashlib
import json
import random
from pathlib import Path
from typing import Any, Iterator

from ..config import SourceConfig

__all__ = [
    "DataError",
    "decoding",
    "file_encoding",
    "file_fingerprint",
    "hf_dataset",
    "open_binary",
    "open_text",
    "require_exists",
    "resolve_source_path",
    "source_format",
    "source_rows",
    "subsample",
    "undecodable_error",
]


class DataError(ValueError):
    """Input data that cannot be used; the message names the file, the row and what to do."""


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


def source_format(source: SourceConfig, path: Path, qa: bool = False) -> str:
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


def open_binary(path: Path):
    """A file's bytes, decompressed when it ends in .gz."""
    return gzip.open(path, "rb") if path.suffix.lower() == ".gz" else open(path, "rb")


def open_text(path: Path, encoding: str, newline: str | None = None):
    if path.suffix.lower() == ".gz":
        return gzip.open(path, "rt", encoding=encoding, newline=newline)
    return open(path, encoding=encoding, newline=newline)


def require_exists(path: Path, fmt: str) -> None:
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
    with open_binary(path) as fh:
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


def undecodable_error(path: Path, encoding: str, exc: UnicodeDecodeError) -> DataError:
    """Where the first byte that `encoding` cannot decode is: line and byte offset, found by a second pass."""
    line_no, offset, bad = None, None, b""
    decoder = codecs.getincrementaldecoder(encoding)()
    pos = 0
    with open_binary(path) as fh:
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


def decoding(path: Path, encoding: str, rows: Iterator) -> Iterator:
    """`rows`, with a decoding error turned into a DataError naming the file, line and byte offset, and a file
    that ends too soon or that csv cannot parse into one naming the file and what to do."""
    where = path.name
    try:
        for where, row in rows:
            yield where, row
    except UnicodeDecodeError as exc:
        raise undecodable_error(path, encoding, exc) from None
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
    with open_text(path, encoding, newline="") as fh:
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
    with open_text(path, encoding) as fh:
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
    with open_text(path, encoding) as fh:
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


def hf_dataset(source: SourceConfig, path: Path) -> Any:
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
    ds = hf_dataset(source, path)
    label = Path(source.path).name or source.path
    for i, row in enumerate(ds):
        yield f"{label}[{i}]", row


def source_rows(source: SourceConfig, path: Path, fmt: str) -> Iterator[tuple[str, dict[str, Any]]]:
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
        return decoding(path, encoding, rows)
    if fmt == "parquet":
        return _read_parquet(path)
    if fmt == "hf":
        return _read_hf(source, path)
    raise DataError(f"format {fmt!r} holds QA data; a {fmt} source cannot feed a classification task")


def subsample(items: list, source: SourceConfig) -> list:
    if source.limit is None or source.limit >= len(items):
        return items
    if source.sample_seed is None:
        return items[: source.limit]
    rng = random.Random(source.sample_seed)
    keep = sorted(rng.sample(range(len(items)), source.limit))
    return [items[i] for i in keep]
