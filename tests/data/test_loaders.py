"""Tests for compress.data: every loader on good data (real GLUE / SQuAD files and small generated ones),
the exact user-facing message for each kind of bad input, feature cache keys, and QA windowing.

Real data is read from ../shared/data through `shared(...)` (the test skips when it is absent); every
other file is written into tmp_path by the test itself.
"""

from __future__ import annotations

import collections
import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest

from compress.config import SourceConfig, TaskConfig, from_mapping
from compress.data import features
from compress.data.features import prepare_task_data, tokenizer_fingerprint
from compress.data import DataError, load_qa_examples, load_text_examples
from compress.data.qa import featurize_qa

from tests.conftest import (
    job_config,
    shared,
    write_pairs_jsonl,
    write_regression_csv,
    write_sentiment_tsv,
    write_squad,
)

SQUAD2_TITLES = [
    "Normans", "Computational_complexity_theory", "Huguenot", "Steam_engine", "1973_oil_crisis",
    "European_Union_law", "Packet_switching", "Harvard_University", "Yuan_dynasty", "Immune_system",
    "Scottish_Parliament", "Islamism", "Imperialism", "Warsaw", "French_and_Indian_War", "Force",
]


# --------------------------------------------------------------------------- helpers


def src(path, **kw) -> tuple[SourceConfig, ...]:
    return (SourceConfig(str(path), **kw),)


def classification(**kw) -> TaskConfig:
    return TaskConfig(type="classification", **kw)


def write_lines(path: Path, *lines: str) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def squad_doc(*qas: dict, context: str = "Rollo led the Norse raiders to Normandy in France.") -> dict:
    return {"version": "v2.0", "data": [{"title": "Normans", "paragraphs": [{"context": context, "qas": list(qas)}]}]}


def qa_item(qid: str, question: str, answer: str | None, context: str, **extra) -> dict:
    answers = [] if answer is None else [{"text": answer, "answer_start": context.index(answer)}]
    return {"id": qid, "question": question, "answers": answers, **extra}


def msg(*parts: str) -> str:
    """A regex that matches the literal parts in this order, anything in between."""
    return ".*".join(re.escape(p) for p in parts)


def make_cfg(tmp_path: Path, task: dict, train, eval_, **data):
    raw = job_config(tmp_path, task, train, eval_, teacher="unused-teacher")
    raw["data"].update(data)
    return from_mapping(raw)


def prepare(cfg, tokenizer):
    """prepare_task_data; the fingerprint ignores the tokenizer's call state (test_prepare_twice_hits_cache_without_help)."""
    return prepare_task_data(cfg, tokenizer)


# --------------------------------------------------------------------------- good data: GLUE TSV


def test_glue_tsv_real_sst2_dev():
    path = shared("glue", "SST-2", "dev.tsv")
    examples = load_text_examples(src(path), classification())
    assert len(examples) == 872
    assert collections.Counter(ex.label for ex in examples) == {1: 444, 0: 428}
    assert all(len(ex.texts) == 1 and ex.texts[0].strip() for ex in examples)
    assert examples[0].row == "dev.tsv:2"  # line 1 is the header
    assert examples[-1].row == "dev.tsv:873"


@pytest.mark.parametrize("labels", [("not_entailment", "entailment"), ("entailment", "not_entailment")])
def test_glue_tsv_real_rte_dev_pairs(labels):
    path = shared("glue", "RTE", "dev.tsv")
    task = TaskConfig(type="pair_classification", text_columns=("sentence1", "sentence2"), labels=labels)
    examples = load_text_examples(src(path), task)
    assert len(examples) == 277
    counts = collections.Counter(labels[ex.label] for ex in examples)
    assert counts == {"entailment": 146, "not_entailment": 131}
    # Each id must agree with the raw label of the same line.
    raw = path.read_text(encoding="utf-8").splitlines()
    for ex in examples[:20]:
        line = int(ex.row.rsplit(":", 1)[1])
        assert labels[ex.label] == raw[line - 1].split("\t")[-1]
    assert all(len(ex.texts) == 2 for ex in examples)
    # RTE holds unbalanced double quotes; an unquoted reader keeps them as text and loses no row.
    assert any('"' in t for ex in examples for t in ex.texts)


def test_tsv_double_quote_is_text(tmp_path):
    path = write_lines(
        tmp_path / "quotes.tsv",
        "sentence\tlabel",
        '"an opening quote that never closes\t1',
        'she said "hi" twice\t0',
        '"fully quoted"\t1',
        'ends with a quote"\t0',
    )
    examples = load_text_examples(src(path), classification())
    assert [ex.texts[0] for ex in examples] == [
        '"an opening quote that never closes', 'she said "hi" twice', '"fully quoted"', 'ends with a quote"',
    ]
    assert [ex.label for ex in examples] == [1, 0, 1, 0]


def test_tsv_generated_with_quotes(tmp_path):
    path = write_sentiment_tsv(tmp_path / "train.tsv", 30, seed=0)
    examples = load_text_examples(src(path), classification())
    assert len(examples) == 30
    assert all('"really"' in ex.texts[0] for ex in examples)
    assert {ex.label for ex in examples} <= {0, 1}


# --------------------------------------------------------------------------- good data: CSV, JSON Lines


def test_csv_regression_float_labels(tmp_path):
    path = write_regression_csv(tmp_path / "scores.csv", 25, seed=1)
    task = TaskConfig(type="regression", text_columns=("text",), label_column="score")
    examples = load_text_examples(src(path), task)
    expected = [float(line.rsplit(",", 1)[1]) for line in path.read_text().splitlines()[1:]]
    assert [ex.label for ex in examples] == expected
    assert all(isinstance(ex.label, float) for ex in examples)
    assert {ex.label for ex in examples} <= {0.0, 0.25, 0.5, 0.75, 1.0}


def test_csv_quoted_field_with_comma(tmp_path):
    path = write_lines(tmp_path / "q.csv", "text,score", '"good, really good",0.75', 'plain,0.5')
    task = TaskConfig(type="regression", text_columns=("text",), label_column="score")
    examples = load_text_examples(src(path), task)
    assert [(ex.texts[0], ex.label) for ex in examples] == [("good, really good", 0.75), ("plain", 0.5)]


def test_jsonl_pair_classification_string_labels(tmp_path):
    path = write_pairs_jsonl(tmp_path / "pairs.jsonl", 20, seed=2)
    task = TaskConfig(type="pair_classification", text_columns=("premise", "hypothesis"),
                      labels=("different", "same"))
    examples = load_text_examples(src(path), task)
    raw = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(examples) == 20
    for ex, row in zip(examples, raw):
        assert ex.texts == (row["premise"], row["hypothesis"])
        assert ex.label == ["different", "same"].index(row["label"])
    assert examples[4].row == "pairs.jsonl:5"


# --------------------------------------------------------------------------- good data: SQuAD JSON


def test_squad2_real_half_dev():
    examples = load_qa_examples(src(shared("squad2", "dev-v2.0-half.json")))
    assert len(examples) == 6078
    assert sum(ex.is_impossible for ex in examples) == 3168
    assert all(ex.answers == () for ex in examples if ex.is_impossible)
    for ex in examples:
        for text, start in ex.answers:
            assert ex.context[start:start + len(text)] == text
    assert [t for t in dict.fromkeys(ex.title for ex in examples)] == SQUAD2_TITLES


def test_squad_articles_slice_selects_first_articles():
    examples = load_qa_examples(src(shared("squad2", "dev-v2.0-half.json"), articles="0:12"))
    assert list(dict.fromkeys(ex.title for ex in examples)) == SQUAD2_TITLES[:12]
    rest = load_qa_examples(src(shared("squad2", "dev-v2.0-half.json"), articles="12:"))
    assert list(dict.fromkeys(ex.title for ex in rest)) == SQUAD2_TITLES[12:]
    assert len(examples) + len(rest) == 6078


def test_squad_articles_by_title():
    examples = load_qa_examples(src(shared("squad2", "dev-v2.0-half.json"), articles=("Force", "Normans")))
    # Titles select articles; the file's order is kept.
    assert list(dict.fromkeys(ex.title for ex in examples)) == ["Normans", "Force"]


def test_squad_limit_and_sample_seed():
    path = shared("squad2", "dev-v2.0-half.json")
    first = load_qa_examples(src(path, limit=40))
    everything = load_qa_examples(src(path))
    assert [ex.qid for ex in first] == [ex.qid for ex in everything[:40]]

    def ids(seed):
        return [ex.qid for ex in load_qa_examples(src(path, limit=40, sample_seed=seed))]

    a, a_again, b = ids(1), ids(1), ids(2)
    assert len(a) == 40 and len(set(a)) == 40
    assert a == a_again
    assert a != b
    assert a != [ex.qid for ex in first]
    order = {ex.qid: i for i, ex in enumerate(everything)}
    assert [order[q] for q in a] == sorted(order[q] for q in a)  # a sample keeps the file's order


def test_squad_generated_v1_and_v2(tmp_path):
    v1 = load_qa_examples(src(write_squad(tmp_path / "v1.json", version_2=False)))
    v2 = load_qa_examples(src(write_squad(tmp_path / "v2.json", version_2=True)))
    assert [ex.qid for ex in v1] == ["q1", "q2", "q3"]
    assert not any(ex.is_impossible for ex in v1)
    assert [ex.is_impossible for ex in v2] == [False, False, False, True]
    assert v2[3].answers == ()  # plausible answers are not gold answers
    assert v1[0].answers == (("Rollo", v1[0].context.index("Rollo")),)


# --------------------------------------------------------------------------- good data: Hugging Face datasets


@pytest.fixture(scope="module")
def hf_text_dir(tmp_path_factory) -> Path:
    import datasets

    path = tmp_path_factory.mktemp("hf") / "sentiment"
    datasets.Dataset.from_dict({
        "sentence": ["a fine film", "a dull film", "great fun", "a bore"],
        "label": [1, 0, 1, 0],
    }).save_to_disk(str(path))
    return path


@pytest.mark.parametrize("fmt", ["hf", "auto"])
def test_hf_load_from_disk_text(hf_text_dir, fmt):
    examples = load_text_examples(src(hf_text_dir, format=fmt), classification())
    assert [(ex.texts[0], ex.label) for ex in examples] == [
        ("a fine film", 1), ("a dull film", 0), ("great fun", 1), ("a bore", 0),
    ]
    assert examples[2].row == "sentiment[2]"


def test_hf_load_from_disk_qa(tmp_path):
    import datasets

    ctx = "Rollo led the Norse raiders to Normandy in France."
    datasets.Dataset.from_dict({
        "id": ["a1", "a2", "a3"],
        "title": ["Normans"] * 3,
        "context": [ctx] * 3,
        "question": ["Who led the raiders?", "Where is Normandy?", "Who led the Saxons?"],
        "answers": [
            {"text": ["Rollo"], "answer_start": [0]},
            {"text": ["France", "in France"], "answer_start": [ctx.index("France"), ctx.index("in France")]},
            {"text": [], "answer_start": []},
        ],
    }).save_to_disk(str(tmp_path / "squad_hf"))
    for fmt in ("hf", "auto"):
        examples = load_qa_examples(src(tmp_path / "squad_hf", format=fmt))
        assert [ex.qid for ex in examples] == ["a1", "a2", "a3"]
        assert examples[0].answers == (("Rollo", 0),)
        assert examples[1].answers == (("France", ctx.index("France")), ("in France", ctx.index("in France")))
        assert [ex.is_impossible for ex in examples] == [False, False, True]
        assert examples[0].title == "Normans" and examples[0].context == ctx


def test_hf_dataset_dict_needs_split(tmp_path, hf_text_dir):
    import datasets

    ds = datasets.load_from_disk(str(hf_text_dir))
    datasets.DatasetDict({"train": ds, "validation": ds.select([0, 1])}).save_to_disk(str(tmp_path / "dd"))
    path = tmp_path / "dd"
    with pytest.raises(DataError, match=msg("holds splits ['train', 'validation']", "set split:")):
        load_text_examples(src(path), classification())
    with pytest.raises(DataError, match=msg("holds splits ['train', 'validation']", "set split:")):
        load_text_examples(src(path, split="test"), classification())
    assert len(load_text_examples(src(path, split="validation"), classification())) == 2
    assert len(load_text_examples(src(path, split="train", format="hf"), classification())) == 4


def test_hf_qa_missing_squad_columns(hf_text_dir):
    with pytest.raises(DataError, match=msg("columns ['answers', 'context', 'id', 'question'] not found",
                                            "columns: ['sentence', 'label']", "id, title, context, question, answers")):
        load_qa_examples(src(hf_text_dir))


# --------------------------------------------------------------------------- bad input: columns and labels


def test_missing_text_column(tmp_path):
    path = write_lines(tmp_path / "reviews.tsv", "text\tlabel", "a good film\t1")
    with pytest.raises(DataError, match=msg("reviews.tsv:2", "column 'sentence' not found",
                                            "the columns are ['text', 'label']", "task.text_columns")):
        load_text_examples(src(path), classification())


def test_missing_label_column(tmp_path):
    path = write_lines(tmp_path / "reviews.tsv", "sentence\tsentiment", "a good film\t1")
    with pytest.raises(DataError, match=msg("reviews.tsv:2", "column 'label' not found",
                                            "the columns are ['sentence', 'sentiment']", "task.label_column")):
        load_text_examples(src(path), classification())


def test_unknown_string_label(tmp_path):
    path = write_jsonl(tmp_path / "pairs.jsonl", [
        {"premise": "a", "hypothesis": "b", "label": "same"},
        {"premise": "a", "hypothesis": "c", "label": "maybe"},
    ])
    task = TaskConfig(type="pair_classification", text_columns=("premise", "hypothesis"),
                      labels=("different", "same"))
    with pytest.raises(DataError, match=msg("pairs.jsonl:2", "label 'maybe'", "task.labels ['different', 'same']",
                                            "add it to task.labels")):
        load_text_examples(src(path), task)


def test_string_label_without_label_list(tmp_path):
    path = write_lines(tmp_path / "rte.tsv", "sentence1\tsentence2\tlabel", "a cat\ta dog\tentailment")
    task = TaskConfig(type="pair_classification", text_columns=("sentence1", "sentence2"))
    with pytest.raises(DataError, match=msg("rte.tsv:2", "label 'entailment' is not an integer id",
                                            "list the label names in id order in task.labels",
                                            "labels: [entailment, ...]")):
        load_text_examples(src(path), task)


def test_regression_label_not_a_number(tmp_path):
    path = write_lines(tmp_path / "s.csv", "text,score", "good,0.5", "bad,high")
    task = TaskConfig(type="regression", text_columns=("text",), label_column="score")
    with pytest.raises(DataError, match=msg("s.csv:3", "label 'high' is not a number")):
        load_text_examples(src(path), task)


def test_eval_label_never_seen_in_training(tmp_path, tokenizer):
    train = write_lines(tmp_path / "train.tsv", "sentence\tlabel", "good\t1", "bad\t0", "fine\t1")
    dev = write_lines(tmp_path / "dev.tsv", "sentence\tlabel", "good\t1", "meh\t2")
    cfg = make_cfg(tmp_path, {"type": "classification"}, str(train), str(dev))
    with pytest.raises(DataError, match=msg("dev.tsv:3", "label 2 never occurs in the training set",
                                            "ids 0..1", "list every label in task.labels")):
        prepare(cfg, tokenizer)


# --------------------------------------------------------------------------- bad input: files and rows


@pytest.mark.parametrize("name", ["empty.tsv", "empty.csv", "empty.jsonl"])
def test_empty_file(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"")
    with pytest.raises(DataError, match=msg(f"data file '{path}' is empty", "needs a header row")):
        load_text_examples(src(path), classification())


def test_empty_squad_file(tmp_path):
    path = tmp_path / "empty.json"
    path.write_bytes(b"")
    with pytest.raises(DataError, match=msg(f"data file '{path}' is empty")):
        load_qa_examples(src(path))


@pytest.mark.parametrize("name, header", [("h.tsv", "sentence\tlabel"), ("h.csv", "sentence,label")])
def test_header_only_file(tmp_path, name, header):
    path = write_lines(tmp_path / name, header)
    with pytest.raises(DataError, match=msg(f"data file '{path}' has a header but no examples")):
        load_text_examples(src(path), classification())


@pytest.mark.parametrize("row, n_fields", [("a stray\ttab\t1", 3), ("no label at all", 1)])
def test_tsv_wrong_number_of_fields(tmp_path, row, n_fields):
    path = write_lines(tmp_path / "train.tsv", "sentence\tlabel", "fine\t1", row, "also fine\t0")
    with pytest.raises(DataError, match=msg(f"train.tsv:3: has {n_fields} fields, the header has 2 (sentence, label)",
                                            "stray tab", "data.on_bad_row: skip")):
        load_text_examples(src(path), classification())


def test_tsv_blank_lines_keep_line_numbers(tmp_path):
    path = write_lines(tmp_path / "train.tsv", "sentence\tlabel", "fine\t1", "", "bad\tx")
    with pytest.raises(DataError, match=msg("train.tsv:4", "label 'x'")):
        load_text_examples(src(path), classification())


def test_csv_line_numbers_after_multiline_field(tmp_path):
    path = write_lines(tmp_path / "m.csv", "text,score", '"two\nlines",0.5', "extra,0.5,1")
    task = TaskConfig(type="regression", text_columns=("text",), label_column="score")
    with pytest.raises(DataError, match=msg("m.csv:4: has 3 fields")):  # the bad row is on line 4
        load_text_examples(src(path), task)


@pytest.mark.parametrize("line, why", [
    ('{"sentence": "b", "label": 0', "is not valid JSON"),
    ("{sentence: b}", "is not valid JSON"),
    ('["b", 0]', "is a JSON list, expected an object"),
])
def test_malformed_jsonl(tmp_path, line, why):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"sentence": "a", "label": 1}\n' + line + '\n{"sentence": "c", "label": 0}\n')
    with pytest.raises(DataError, match=msg(f"bad.jsonl:2: {why}")):
        load_text_examples(src(path), classification())


def test_nonexistent_file(tmp_path):
    path = tmp_path / "nowhere" / "train.tsv"
    with pytest.raises(DataError, match=msg(f"data file '{path}' does not exist", "data.train/data.eval")):
        load_text_examples(src(path), classification())
    with pytest.raises(DataError, match=msg(f"data file '{tmp_path / 'dev.json'}' does not exist")):
        load_qa_examples(src(tmp_path / "dev.json"))


def test_unknown_extension_with_format_auto(tmp_path):
    path = write_lines(tmp_path / "train.txt", "sentence\tlabel", "good\t1")
    with pytest.raises(DataError, match=msg(f"cannot tell the format of '{path}' from its extension '.txt'",
                                            "set format: tsv, csv, jsonl, json, parquet, squad or hf")):
        load_text_examples(src(path), classification())
    # The suggested fix works.
    assert [ex.label for ex in load_text_examples(src(path, format="tsv"), classification())] == [1]


def test_format_that_cannot_feed_the_task(tmp_path):
    squad = write_squad(tmp_path / "train.json")
    with pytest.raises(DataError, match=msg("format 'squad' holds QA data", "cannot feed a classification task")):
        load_text_examples(src(squad), classification())
    tsv = write_sentiment_tsv(tmp_path / "train.tsv", 3, seed=0)
    with pytest.raises(DataError, match=msg("train.tsv: format 'tsv' cannot hold QA data", "squad JSON")):
        load_qa_examples(src(tsv))


def test_on_bad_row_skip_drops_bad_rows(tmp_path, caplog):
    path = write_lines(tmp_path / "train.tsv", "sentence\tlabel", "good\t1", "odd\tx", " \t0", "bad\t0", "fine\t1")
    with pytest.raises(DataError, match=msg("train.tsv:3", "label 'x'")):
        load_text_examples(src(path), classification())
    with caplog.at_level(logging.WARNING, logger="compress.data.loaders"):
        examples = load_text_examples(src(path), classification(), on_bad_row="skip")
    assert [(ex.texts[0], ex.label, ex.row) for ex in examples] == [
        ("good", 1, "train.tsv:2"), ("bad", 0, "train.tsv:5"), ("fine", 1, "train.tsv:6"),
    ]
    assert re.search(msg("skipped 2 bad rows (data.on_bad_row: skip)", "train.tsv:3", "label 'x'"), caplog.text)


def test_on_bad_row_skip_through_prepare(tmp_path, tokenizer):
    train = write_lines(tmp_path / "train.tsv", "sentence\tlabel", "good\t1", "odd\tx", "bad\t0")
    dev = write_lines(tmp_path / "dev.tsv", "sentence\tlabel", "good\t1", "bad\t0")
    cfg = make_cfg(tmp_path, {"type": "classification"}, str(train), str(dev), on_bad_row="skip")
    data = prepare(cfg, tokenizer)
    assert len(data.train) == 2 and data.train.arrays["labels"].tolist() == [1, 0]


@pytest.mark.parametrize("name, body", [
    ("t.tsv", "sentence\tlabel\ngood\t1\nstray\ttab\t0\nfine\t1\n"),
    ("t.jsonl", '{"sentence": "good", "label": 1}\n{not json\n{"sentence": "fine", "label": 1}\n'),
])
def test_on_bad_row_skip_drops_malformed_rows(tmp_path, name, body):
    path = tmp_path / name
    path.write_text(body)
    examples = load_text_examples(src(path), classification(), on_bad_row="skip")
    assert [ex.texts[0] for ex in examples] == ["good", "fine"]


# --------------------------------------------------------------------------- bad input: SQuAD


def test_malformed_squad_json(tmp_path):
    path = tmp_path / "dev.json"
    path.write_text('{"data": [{"title": "Normans",\n "paragraphs": [}]}')
    with pytest.raises(DataError, match=msg("dev.json: is not valid JSON", "at line 2, column",
                                            "one JSON object with a 'data' list")):
        load_qa_examples(src(path))


@pytest.mark.parametrize("doc", [{"version": "v2.0"}, {"data": {"title": "x"}}, [1, 2]])
def test_squad_without_data_list(tmp_path, doc):
    path = tmp_path / "dev.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(DataError, match=msg("dev.json: has no 'data' list of articles", "SQuAD JSON file")):
        load_qa_examples(src(path))


def test_squad_answer_start_mismatch(tmp_path):
    ctx = "Rollo led the Norse raiders to Normandy in France."
    path = tmp_path / "dev.json"
    path.write_text(json.dumps(squad_doc(
        qa_item("q1", "Who led them?", "Rollo", ctx),
        {"id": "q2", "question": "Where?", "answers": [{"text": "France", "answer_start": ctx.index("France") - 3}]},
        context=ctx,
    )))
    start = ctx.index("France") - 3
    with pytest.raises(DataError, match=msg("dev.json: article 'Normans' paragraph 0 question q2",
                                            f"answer 'France' is not found at answer_start={start}",
                                            "the context there reads 'in Fra'")):
        load_qa_examples(src(path))


def test_squad_question_without_answers_or_is_impossible(tmp_path):
    ctx = "Rollo led the Norse raiders to Normandy in France."
    path = tmp_path / "dev.json"
    path.write_text(json.dumps(squad_doc(qa_item("q1", "Who?", "Rollo", ctx), qa_item("q2", "Why?", None, ctx),
                                         context=ctx)))
    with pytest.raises(DataError, match=msg("dev.json: article 'Normans' paragraph 0 question q2",
                                            "has no answers and is not marked is_impossible",
                                            "is_impossible: true")):
        load_qa_examples(src(path))


def test_squad_unknown_article_title(tmp_path):
    path = write_squad(tmp_path / "dev.json")
    with pytest.raises(DataError, match=msg("dev.json: article 'Vikings' not found", "titles are ['Normans']")):
        load_qa_examples(src(path, articles=("Vikings",)))


def test_duplicate_question_ids_in_one_file(tmp_path):
    ctx = "Rollo led the Norse raiders to Normandy in France."
    path = tmp_path / "dev.json"
    path.write_text(json.dumps(squad_doc(qa_item("q1", "Who?", "Rollo", ctx), qa_item("q1", "Where?", "France", ctx),
                                         context=ctx)))
    with pytest.raises(DataError, match=msg("question id 'q1' appears twice in one split", "ids must be unique")):
        load_qa_examples(src(path))


def test_duplicate_question_ids_across_sources(tmp_path):
    path = write_squad(tmp_path / "dev.json")
    source = SourceConfig(str(path))
    with pytest.raises(DataError, match=msg("question id 'q1' appears twice in one split")):
        load_qa_examples((source, source))


# --------------------------------------------------------------------------- SQuAD 1.1 / 2.0 through prepare_task_data

QA_DATA = {"max_seq_length": 64, "doc_stride": 16}


def test_version_2_false_on_squad2_data(tmp_path, tokenizer):
    train = write_squad(tmp_path / "train.json", version_2=True)
    dev = write_squad(tmp_path / "dev.json", version_2=True)
    cfg = make_cfg(tmp_path, {"type": "qa", "version_2": False}, str(train), str(dev), **QA_DATA)
    with pytest.raises(DataError, match=msg("task.version_2 is False but the data has unanswerable questions",
                                            "(2 of 8)", "it is SQuAD 2.0", "Set task.version_2: true")):
        prepare(cfg, tokenizer)


def test_version_2_false_with_real_squad2_eval(tmp_path, tokenizer):
    train = write_squad(tmp_path / "train.json", version_2=False)
    dev = {"path": str(shared("squad2", "dev-v2.0-half.json")), "articles": ["Normans"]}
    cfg = make_cfg(tmp_path, {"type": "qa", "version_2": False}, str(train), dev, **QA_DATA)
    with pytest.raises(DataError, match=msg("it is SQuAD 2.0", "Set task.version_2: true")):
        prepare(cfg, tokenizer)


def test_version_2_true_on_squad1_data(tmp_path, tokenizer):
    train = write_squad(tmp_path / "train.json", version_2=False)
    dev = write_squad(tmp_path / "dev.json", version_2=False)
    cfg = make_cfg(tmp_path, {"type": "qa", "version_2": True}, str(train), str(dev), **QA_DATA)
    with pytest.raises(DataError, match=msg("task.version_2 is True but the data has no unanswerable questions",
                                            "(0 of 6)", "it is SQuAD 1.1", "Set task.version_2: false")):
        prepare(cfg, tokenizer)


@pytest.mark.parametrize("train_v2, eval_v2, expected", [(False, False, False), (True, True, True), (False, True, True)])
def test_version_2_detected_when_omitted(tmp_path, tokenizer, train_v2, eval_v2, expected):
    train = write_squad(tmp_path / "train.json", version_2=train_v2)
    dev = write_squad(tmp_path / "dev.json", version_2=eval_v2)
    cfg = make_cfg(tmp_path, {"type": "qa"}, str(train), str(dev), **QA_DATA)
    data = prepare(cfg, tokenizer)
    assert data.version_2 is expected
    assert len(data.eval.examples) == (4 if eval_v2 else 3)


# --------------------------------------------------------------------------- feature cache keys


@pytest.fixture
def text_job(tmp_path):
    train = write_sentiment_tsv(tmp_path / "train.tsv", 24, seed=0)
    dev = write_sentiment_tsv(tmp_path / "dev.tsv", 8, seed=1)
    return lambda **data: make_cfg(tmp_path, {"type": "classification"}, str(train), str(dev), **data)


@pytest.fixture
def qa_job(tmp_path):
    train = write_squad(tmp_path / "train.json", version_2=True)
    dev = write_squad(tmp_path / "dev.json", version_2=True)
    return lambda **data: make_cfg(tmp_path, {"type": "qa"}, str(train), str(dev), **{**QA_DATA, **data})


def cache_files(cfg) -> list[str]:
    return sorted(p.name for p in Path(cfg.data.cache_dir).iterdir())


@pytest.mark.parametrize("job", ["text_job", "qa_job"])
def test_prepare_twice_hits_cache(request, tokenizer, monkeypatch, job):
    cfg = request.getfixturevalue(job)()
    first = prepare(cfg, tokenizer)
    files = cache_files(cfg)
    assert len(files) == 2 and all(f.endswith(".safetensors") for f in files)

    def no_rebuild(*args, **kwargs):
        raise AssertionError("features were rebuilt instead of read from the cache")

    monkeypatch.setattr(features, "encode_texts", no_rebuild)
    monkeypatch.setattr(features, "featurize_qa", no_rebuild)
    second = prepare(cfg, tokenizer)
    assert cache_files(cfg) == files
    for a, b in ((first.train, second.train), (first.eval, second.eval)):
        assert a.key == b.key
        assert a.arrays.keys() == b.arrays.keys()
        for k in a.arrays:
            np.testing.assert_array_equal(a.arrays[k], b.arrays[k])


def test_prepare_twice_hits_cache_without_help(text_job, tokenizer):
    cfg = text_job()
    tokenizer("a plain call, as any user code makes")  # no truncation, no padding: what a fresh call leaves behind
    first = prepare_task_data(cfg, tokenizer)
    files = cache_files(cfg)
    second = prepare_task_data(cfg, tokenizer)
    assert cache_files(cfg) == files
    assert (first.train.key, first.eval.key) == (second.train.key, second.eval.key)


def test_tokenizer_fingerprint_ignores_call_history(tokenizer):
    tokenizer("reset")
    before = tokenizer_fingerprint(tokenizer)
    tokenizer(["a b"], ["c"], truncation=True, max_length=32, padding="max_length")
    assert tokenizer_fingerprint(tokenizer) == before


def keys(data) -> tuple[str, str]:
    return data.train.key, data.eval.key


def test_text_key_changes_with_max_seq_length(text_job, tokenizer):
    base = keys(prepare(text_job(), tokenizer))
    assert keys(prepare(text_job(), tokenizer)) == base  # control: same config, same keys
    longer = prepare(text_job(max_seq_length=48), tokenizer)
    assert longer.train.key != base[0] and longer.eval.key != base[1]
    assert longer.train.arrays["input_ids"].shape[1] == 48


def test_qa_key_changes_with_doc_stride_and_max_seq_length(qa_job, tokenizer):
    base = keys(prepare(qa_job(), tokenizer))
    assert keys(prepare(qa_job(), tokenizer)) == base
    stride = keys(prepare(qa_job(doc_stride=24), tokenizer))
    length = keys(prepare(qa_job(max_seq_length=80), tokenizer))
    assert len({base[0], stride[0], length[0]}) == 3
    assert len({base[1], stride[1], length[1]}) == 3


def test_key_changes_with_file_content(tmp_path, text_job, tokenizer):
    base = keys(prepare(text_job(), tokenizer))
    write_sentiment_tsv(tmp_path / "train.tsv", 24, seed=7)  # same name, same size class, other rows
    changed = keys(prepare(text_job(), tokenizer))
    assert changed[0] != base[0]
    assert changed[1] == base[1]  # the eval file did not change


def test_key_changes_with_tokenizer_fingerprint(text_job, tokenizer, monkeypatch):
    base = keys(prepare(text_job(), tokenizer))
    monkeypatch.setattr(features, "tokenizer_fingerprint", lambda tok: "another-tokenizer")
    other = keys(prepare(text_job(), tokenizer))
    assert other[0] != base[0] and other[1] != base[1]


def test_fingerprint_differs_for_do_lower_case(minilm_path, tokenizer):
    from transformers import AutoTokenizer

    cased = AutoTokenizer.from_pretrained(minilm_path, do_lower_case=False)
    # Same plain call on both, so their backend truncation/padding state is the same (cleared).
    assert tokenizer("Hello")["input_ids"] != cased("Hello")["input_ids"]
    assert tokenizer_fingerprint(cased) != tokenizer_fingerprint(tokenizer)


# --------------------------------------------------------------------------- QA featurisation on real SQuAD 2.0


@pytest.fixture(scope="module")
def first_two_paragraphs():
    examples = load_qa_examples(src(shared("squad2", "dev-v2.0-half.json"), articles=("Normans",)))
    contexts = list(dict.fromkeys(ex.context for ex in examples))[:2]
    chosen = [ex for ex in examples if ex.context in contexts]
    assert any(ex.is_impossible for ex in chosen) and any(not ex.is_impossible for ex in chosen)
    return chosen


@pytest.mark.parametrize("max_seq_length, doc_stride", [(384, 128), (96, 32)])
def test_qa_windows_point_at_gold_answers(first_two_paragraphs, tokenizer, max_seq_length, doc_stride):
    examples = first_two_paragraphs
    f = featurize_qa(examples, tokenizer, max_seq_length, doc_stride)
    n = len(f["input_ids"])
    assert f["input_ids"].shape == (n, max_seq_length) and f["offsets"].shape == (n, max_seq_length, 2)
    assert (f["input_ids"][:, 0] == tokenizer.cls_token_id).all()
    assert sorted(set(f["example_index"].tolist())) == list(range(len(examples)))

    for i in range(n):
        ex = examples[f["example_index"][i]]
        s, e = int(f["start_positions"][i]), int(f["end_positions"][i])
        if ex.is_impossible:
            assert s == e == 0, f"unanswerable {ex.qid} points at tokens {s}..{e}"
            continue
        ctx = np.flatnonzero(f["offsets"][i, :, 0] >= 0)
        a_text, a_start = ex.answers[0]
        inside = f["offsets"][i, ctx[0], 0] <= a_start and f["offsets"][i, ctx[-1], 1] >= a_start + len(a_text)
        if not inside:
            assert s == e == 0, f"{ex.qid}: answer outside window {i} but it points at {s}..{e}"
            continue
        assert 0 < s <= e
        span = ex.context[f["offsets"][i, s, 0]:f["offsets"][i, e, 1]]
        assert span.lower().strip() == a_text.lower().strip(), (ex.qid, span, a_text)

    # Every answerable question is found in at least one window.
    found = {int(f["example_index"][i]) for i in range(n) if f["start_positions"][i] != 0}
    assert found == {j for j, ex in enumerate(examples) if not ex.is_impossible}

    windows = collections.Counter(f["example_index"].tolist())
    if max_seq_length == 96:
        assert max(windows.values()) > 1
        # Some windows of answerable questions do not hold the answer: those point at CLS.
        answerable_windows = [i for i in range(n) if not examples[f["example_index"][i]].is_impossible]
        assert any(f["start_positions"][i] == 0 for i in answerable_windows)
    else:
        assert set(windows.values()) == {1}
