"""`compress validate` and the preflight checks of the other commands: config, data, teacher, student, layer_map and
search problems are listed in seconds, without training, featurising or running the teacher.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from compress.config import from_mapping
from compress.validate import ValidationError, preflight, validate
from tests.conftest import ROOT, job_config, tiny_config, write_squad


def write_reviews(path: Path, n: int, start: int = 0, labels=("0", "1"), weights=None) -> Path:
    """Distinct, balanced review lines (each text occurs once), so a clean job has no warnings."""
    words = {0: ["bad", "awful", "dull"], 1: ["good", "great", "superb"]}
    lines = ["sentence\tlabel"]
    for i in range(start, start + n):
        y = i % len(labels) if weights is None else weights[i - start]
        lines.append(f"review {i} says the film was {words[y % 2][i % 3]}\t{labels[y]}")
    path.write_text("\n".join(lines) + "\n")
    return path


def save_teacher(path: Path, tokenizer, head: str = "classification", num_labels: int = 2) -> str:
    """A tiny random BERT saved with the MiniLM tokenizer: with a classification or QA head, or none."""
    from transformers import BertForQuestionAnswering, BertForSequenceClassification, BertModel

    torch.manual_seed(0)
    cls = {"classification": BertForSequenceClassification, "qa": BertForQuestionAnswering, "none": BertModel}[head]
    cls(tiny_config(num_labels=num_labels)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def headed(tmp_path_factory, tokenizer) -> str:
    return save_teacher(tmp_path_factory.mktemp("headed"), tokenizer)


def clean_raw(tmp_path: Path, teacher: str, **sections) -> dict:
    train = write_reviews(tmp_path / "train.tsv", 40)
    dev = write_reviews(tmp_path / "dev.tsv", 12, start=1000)
    return job_config(tmp_path, {"type": "classification"}, str(train), str(dev), teacher, **sections)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "compress", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def write_yaml(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def only(items: list[str], *parts: str) -> str:
    """The one item that contains every part."""
    hits = [i for i in items if all(p in i for p in parts)]
    assert len(hits) == 1, (parts, items)
    return hits[0]


# ------------------------------------------------------------------ the command line


def test_clean_job_validates_with_exit_0_and_the_json_shape(tmp_path, headed):
    path = write_yaml(tmp_path, clean_raw(tmp_path, headed))
    res = run_cli("validate", str(path), "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    out = json.loads(res.stdout)
    assert list(out) == ["splits", "teacher", "errors", "warnings"]
    assert out["errors"] == [] and out["warnings"] == []
    assert list(out["splits"]) == ["train", "eval", "test"]
    train, dev = out["splits"]["train"], out["splits"]["eval"]
    assert (train["rows"], dev["rows"], out["splits"]["test"]["rows"]) == (40, 12, 0)
    assert train["labels"] == {"0": 20, "1": 20} and dev["labels"] == {"0": 6, "1": 6}
    lengths = train["token_lengths"]
    assert lengths["rows_tokenized"] == 40 and lengths["sampled"] is False and lengths["max_seq_length"] == 32
    assert lengths["p50"] <= lengths["p90"] <= lengths["p99"] <= lengths["max"] and lengths["over_max_share"] == 0
    t = out["teacher"]
    assert (t["path"], t["head"], t["head_outputs"], t["num_hidden_layers"]) == (headed, "classification", 2, 4)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "cache").exists()  # validate writes nothing

    res = run_cli("validate", str(path))
    assert res.returncode == 0 and "ready: 0 errors, 0 warnings" in res.stdout, res.stdout + res.stderr
    assert re.search(r"\n  train +40 +0  0 20 · 1 20 ", res.stdout) and f"teacher: {headed} " in res.stdout


def test_validate_exits_2_and_lists_every_error(tmp_path, headed):
    raw = clean_raw(tmp_path, headed)
    raw["distill"]["layer_map"] = [1, 7]
    raw["search"] = {"space": {"heads": {"type": "categorical", "choices": [2, 8]}},
                     "constraints": ["acc >= 0.8", "latency_ms < 4"]}
    res = run_cli("validate", str(write_yaml(tmp_path, raw)), "--json")
    assert res.returncode == 2, res.stdout + res.stderr
    errors = json.loads(res.stdout)["errors"]
    assert len(errors) == 4, errors  # the space, the constraint, layer_map unused, layer 7 out of range
    only(errors, "heads=8 exceeds the teacher's 4 heads")
    only(errors, "'acc >= 0.8'", "accuracy")
    only(errors, "distill.layer_map", "used only by the hidden-state and attention losses", "alpha_hidden")
    only(errors, "distill.layer_map", "7", "4 layers")
    res = run_cli("validate", str(write_yaml(tmp_path, raw)))
    assert res.returncode == 2 and "not ready: 4 errors" in res.stdout and "Traceback" not in res.stderr


def test_config_error_is_the_one_error(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("name: x\nname: y\n")
    res = run_cli("validate", str(path), "--json")
    assert res.returncode == 2
    out = json.loads(res.stdout)
    assert out["splits"] == {} and out["teacher"] == {} and out["warnings"] == []
    assert len(out["errors"]) == 1 and "key 'name' is written twice" in out["errors"][0]


def test_distill_with_a_bad_layer_map_fails_in_seconds_before_featurising(tmp_path, headed):
    raw = clean_raw(tmp_path, headed)
    raw["distill"].update(alpha_hidden=0.5, layer_map=[0, 9])
    path = write_yaml(tmp_path, raw)
    t0 = time.perf_counter()
    res = run_cli("distill", str(path))
    seconds = time.perf_counter() - t0
    assert res.returncode == 2, res.stdout + res.stderr
    assert res.stderr.startswith("error: config key 'distill.layer_map': got [0, 9]") and "4 layers" in res.stderr
    assert "Traceback" not in res.stderr
    assert seconds < 60, seconds  # imports and a tokenizer; before this check existed it trained first
    assert not list((tmp_path / "cache").glob("features-*.safetensors"))
    assert not (tmp_path / "runs").exists()


# ------------------------------------------------------------------ layer_map, student and search


def test_layer_map_against_the_teacher_and_the_student(tmp_path, headed):
    raw = clean_raw(tmp_path, headed)
    raw["distill"].update(alpha_hidden=0.5, layer_map=[1, 3, 5])
    errors = validate(from_mapping(raw), "distill", lengths=False).errors
    only(errors, "config key 'distill.layer_map': got [1, 3, 5]", "layer 5 does not exist", "4 layers, numbered 0..3")
    only(errors, "distill.layer_map' has 3 entries", "has 2 layers")  # student: num_layers 2
    raw["distill"]["layer_map"] = [1, 3]
    assert validate(from_mapping(raw), "distill", lengths=False).errors == []


def test_layer_map_with_alpha_hidden_zero_unless_alpha_hidden_is_searched(tmp_path, headed):
    raw = clean_raw(tmp_path, headed)
    raw["distill"]["layer_map"] = [1, 3]
    errors = validate(from_mapping(raw), "distill", lengths=False).errors
    assert errors == ["config key 'distill.layer_map' ([1, 3]): layer_map is used only by the hidden-state and "
                      "attention losses; set distill.alpha_hidden or distill.alpha_attention > 0, or remove it"]
    raw["distill"]["alpha_attention"] = 0.5  # the attention loss follows the layer map too
    assert validate(from_mapping(raw), "distill", lengths=False).errors == []
    raw["distill"]["alpha_attention"] = 0.0
    raw["search"] = {"space": {"alpha_hidden": {"type": "float", "low": 0.0, "high": 1.0}}}
    assert validate(from_mapping(raw), "search", lengths=False).errors == []
    # a fixed layer map cannot fit a searched depth
    raw["search"]["space"]["num_layers"] = {"type": "int", "low": 1, "high": 3}
    errors = validate(from_mapping(raw), "search", lengths=False).errors
    only(errors, "distill.layer_map' has 2 entries", "search.space.num_layers", "1, 2, 3")


def test_search_section_errors_become_listed_errors(tmp_path, headed):
    raw = clean_raw(tmp_path, headed, student={})
    raw["search"] = {"space": {"num_layers": {"type": "int", "low": 1, "high": 9}, "depth": {"type": "int"}},
                     "objectives": ["metric", "flops"], "constraints": ["accuracy >= 0.8", "speed <= 3", "bogus"],
                     "latency": {"seq_len": 512}}
    errors = validate(from_mapping(raw), "search", lengths=False).errors
    only(errors, "'search.space.depth' is not a searchable parameter")
    only(errors, "search.objectives", "'flops'")
    only(errors, "'speed <= 3'")
    only(errors, "'bogus'", "not of the form")
    only(errors, "search.latency.seq_len", "128 positions")
    # the search section is checked for `search` (and validate), not for distill
    assert validate(from_mapping(raw), "distill", lengths=False).errors == []


def test_student_larger_than_the_teacher(tmp_path, headed):
    raw = clean_raw(tmp_path, headed, student={"num_layers": 6, "heads": 8})
    errors = validate(from_mapping(raw), "distill", lengths=False).errors
    only(errors, "config key 'student'", "num_layers=6 exceeds the teacher's 4 layers")
    only(errors, "config key 'student'", "heads=8 exceeds the teacher's 4 heads")
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"num_layers": 1, "intermediate_size": 999}))
    errors = validate(from_mapping(raw), "distill", student=str(spec), lengths=False).errors
    assert len(errors) == 1 and f"--student {spec}" in errors[0] and "intermediate_size=999" in errors[0]
    # `compress teacher` does not build the student: a warning there, not a reason to stop
    report = validate(from_mapping(raw), "teacher", lengths=False)
    assert report.errors == [] and any("num_layers=6" in w for w in report.warnings)


def test_agora_refuses_the_hidden_state_loss(tmp_path, headed):
    raw = clean_raw(tmp_path, headed)
    raw["distill"]["alpha_hidden"] = 0.5
    only(validate(from_mapping(raw), "agora", lengths=False).errors, "distill.alpha_hidden", "Agora")
    raw["distill"].update(alpha_hidden=0.0, alpha_relations=0.5)
    only(validate(from_mapping(raw), "agora", lengths=False).errors, "distill.alpha_relations", "Agora")
    assert validate(from_mapping(raw), "distill", lengths=False).errors == []


# ------------------------------------------------------------------ the teacher


def test_teacher_without_head_warns_for_validate_and_stops_distill(tmp_path, tiny_base, tokenizer):
    cfg = from_mapping(clean_raw(tmp_path, tiny_base))
    report = validate(cfg, lengths=False)
    assert report.errors == [] and report.teacher["head"] is None
    only(report.warnings, "no trained classification head", "`compress teacher CONFIG` will fine-tune one")
    assert validate(cfg, "teacher", lengths=False).errors == []  # expected: it fine-tunes one
    with pytest.raises(ValidationError, match=r"has no trained classification head; run `compress teacher CONFIG`"):
        preflight(cfg, "distill")
    # a run that fine-tuned its teacher already: that one is checked and used
    save_teacher(cfg.run_dir / "teacher", tokenizer)
    report = preflight(cfg, "distill")
    assert report.teacher["source"] == "run" and report.teacher["head"] == "classification"


def test_head_with_other_number_of_labels_is_an_error(tmp_path, tokenizer):
    teacher = save_teacher(tmp_path / "three", tokenizer, num_labels=3)
    report = validate(from_mapping(clean_raw(tmp_path, teacher)), lengths=False)
    only(report.errors, "classification head with 3 outputs but the task needs 2")


@pytest.mark.parametrize("save", ["sharded", "bin"])
def test_head_is_read_from_sharded_and_pickled_checkpoints(tmp_path, tokenizer, save):
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    model = BertForSequenceClassification(tiny_config(num_labels=3))
    folder = tmp_path / save
    if save == "sharded":
        model.save_pretrained(folder, max_shard_size="2MB")
        assert (folder / "model.safetensors.index.json").is_file()
    else:
        model.save_pretrained(folder, safe_serialization=False)
        assert (folder / "pytorch_model.bin").is_file()
    tokenizer.save_pretrained(folder)
    report = validate(from_mapping(clean_raw(tmp_path, str(folder))), lengths=False)
    assert (report.teacher["head"], report.teacher["head_outputs"]) == ("classification", 3)
    only(report.errors, "head with 3 outputs but the task needs 2")


def test_missing_teacher_is_an_error_and_data_is_still_summarised(tmp_path):
    report = validate(from_mapping(clean_raw(tmp_path, str(tmp_path / "nowhere"))))
    only(report.errors, "teacher.model", "nowhere", "does not exist")
    assert report.splits["train"]["rows"] == 40 and "token_lengths" not in report.splits["train"]


# ------------------------------------------------------------------ the data


def test_duplicates_between_splits_warn(tmp_path, headed):
    raw = clean_raw(tmp_path, headed)
    lines = (tmp_path / "train.tsv").read_text().splitlines()
    (tmp_path / "dev.tsv").write_text("\n".join([lines[0], *lines[1:4], *lines[-2:]]) + "\n")
    test = tmp_path / "test.tsv"
    test.write_text("\n".join([lines[0], lines[1]]) + "\n")
    raw["data"]["test"] = str(test)
    report = validate(from_mapping(raw))
    assert report.errors == []
    dup = report.splits["eval"]["duplicates"]["train"]
    assert dup["rows"] == 5 and dup["example"] == {"text": "review 0 says the film was bad", "eval": "dev.tsv:2",
                                                   "train": "train.tsv:2"}
    assert set(report.splits["test"]["duplicates"]) == {"train", "eval"}
    only(report.warnings, "data.eval: 5 of 5 rows", "also occur in train")
    only(report.warnings, "data.test: 1 of 1 rows", "also occur in train")
    only(report.warnings, "data.test: 1 of 1 rows", "also occur in eval")


def test_heavy_truncation_warns(tmp_path, headed):
    raw = clean_raw(tmp_path, headed)
    raw["data"]["max_seq_length"] = 8
    report = validate(from_mapping(raw))
    assert report.splits["train"]["token_lengths"]["over_max_share"] == 1.0
    warning = only(report.warnings, "data.train: 100% of rows are longer than data.max_seq_length=8")
    assert "raise data.max_seq_length to about" in warning


def test_token_lengths_of_a_large_split_come_from_a_seeded_sample(tmp_path, headed, monkeypatch):
    import compress.validate.lengths as v

    monkeypatch.setattr(v, "MAX_TOKENIZED_ROWS", 10)
    cfg = from_mapping(clean_raw(tmp_path, headed))
    a, b = validate(cfg).splits["train"]["token_lengths"], validate(cfg).splits["train"]["token_lengths"]
    assert a == b and a["sampled"] is True and a["rows_tokenized"] == 10 and a["seed"] == 0


def test_labels_eval_unseen_absent_ids_and_imbalance(tmp_path, headed):
    train = write_reviews(tmp_path / "train.tsv", 40, labels=("0", "1", "2", "3"), weights=[1] * 20 + [2] * 19 + [3])
    dev = write_reviews(tmp_path / "dev.tsv", 4, start=100, labels=("0", "1", "2", "3"), weights=[0, 1, 2, 3])
    raw = job_config(tmp_path, {"type": "classification"}, str(train), str(dev), headed)
    report = validate(from_mapping(raw), lengths=False)
    assert report.splits["train"]["labels"] == {"0": 0, "1": 20, "2": 19, "3": 1}
    only(report.errors, "data.eval: 1 rows have labels that never occur in the training set ('0'; first at dev.tsv:2)")
    warning = only(report.warnings, "label id 0 never occurs")
    assert "a 4-class head" in warning and 'labels: ["1", "2", "3"]' in warning
    only(report.warnings, "label '3' has 1 rows", "5.0%")
    only(report.errors, "head with 2 outputs but the task needs 4")


def test_skipped_bad_rows_are_counted_per_split(tmp_path, headed):
    raw = clean_raw(tmp_path, headed)
    dev = tmp_path / "dev.tsv"
    dev.write_text(dev.read_text() + "a row\twith\tthree fields\n")
    raw["data"]["on_bad_row"] = "skip"
    report = validate(from_mapping(raw), lengths=False)
    assert report.splits["eval"]["skipped_bad_rows"] == 1 and report.splits["train"]["skipped_bad_rows"] == 0
    only(report.warnings, "data.eval: skipped 1 bad rows", "dev.tsv:14")
    raw["data"]["on_bad_row"] = "error"
    report = validate(from_mapping(raw), lengths=False)
    only(report.errors, "dev.tsv:14: has 3 fields")
    assert report.splits == {} and report.teacher["head"] == "classification"


def test_split_carving_is_applied(tmp_path, headed):
    raw = clean_raw(tmp_path, headed)
    raw["data"].pop("eval")
    raw["data"]["split"] = {"eval": 10, "test": 0.25}
    report = validate(from_mapping(raw), lengths=False)
    assert [report.splits[n]["rows"] for n in ("train", "eval", "test")] == [20, 10, 10]
    assert report.splits["eval"]["carved_from"] == "train" and report.errors == [] and report.warnings == []


# ------------------------------------------------------------------ SQuAD


def _long_answer_squad(path: Path) -> Path:
    """One article: a short answer, a 40-word answer no 32-token window can hold, and an unanswerable question."""
    filler = " ".join(f"word{i}" for i in range(40))
    ctx = f"Rollo led the raiders. {filler}. The end came in 911."
    qas = [{"id": "a", "question": "Who led them?", "answers": [{"text": "Rollo", "answer_start": 0}]},
           {"id": "b", "question": "What was listed?", "answers": [{"text": filler, "answer_start": ctx.index(filler)}]},
           {"id": "c", "question": "When did it end?", "answers": [{"text": "911", "answer_start": ctx.index("911")}]},
           {"id": "d", "question": "Who won?", "answers": [], "is_impossible": True}]
    path.write_text(json.dumps({"data": [{"title": "Rollo", "paragraphs": [{"context": ctx, "qas": qas}]}]}))
    return path


def test_squad_answers_lost_to_truncation_match_featurisation(tmp_path, tokenizer):
    from compress.data import featurize_qa
    from compress.data.features import load_split_examples

    teacher = save_teacher(tmp_path / "qa-teacher", tokenizer, head="qa")
    data = _long_answer_squad(tmp_path / "train.json")
    raw = job_config(tmp_path, {"type": "qa"}, str(data), str(write_squad(tmp_path / "dev.json")), teacher)
    raw["data"].update(max_seq_length=32, doc_stride=8)
    cfg = from_mapping(raw)
    report = validate(cfg)
    train = report.splits["train"]
    assert (train["questions"], train["articles"], train["unanswerable"], train["unanswerable_share"]) == (4, 1, 1, 0.25)
    assert report.teacher["head"] == "qa" and report.errors == []

    examples = load_split_examples(cfg)["train"]
    feats = featurize_qa(examples, tokenizer, 32, 8)
    held = {int(e) for e, s in zip(feats["example_index"], feats["start_positions"]) if s > 0}
    lost = sum(1 for i, ex in enumerate(examples) if ex.answers and i not in held)
    assert train["answers_lost"] == lost == 1
    only(report.warnings, "data.train: 1 of 3 answers lie in no window of data.max_seq_length=32")

    raw["data"]["doc_stride"] = 64
    report = validate(from_mapping(raw), "distill")
    only(report.errors, "config key 'data.doc_stride': got 64", "lower doc_stride or raise max_seq_length")
    assert "answers_lost" not in report.splits["train"]


def test_squad_version_mismatch_is_an_error(tmp_path, tokenizer):
    teacher = save_teacher(tmp_path / "qa-teacher", tokenizer, head="qa")
    data = str(write_squad(tmp_path / "train.json", version_2=True))
    raw = job_config(tmp_path, {"type": "qa", "version_2": False}, data, data, teacher)
    raw["data"].update(max_seq_length=64, doc_stride=16)
    report = validate(from_mapping(raw), lengths=False)
    only(report.errors, "task.version_2 is False", "SQuAD 2.0")


def test_json_is_plain_and_serialisable(tmp_path, headed):
    report = validate(from_mapping(clean_raw(tmp_path, headed)))
    text = json.dumps(report.to_json())
    assert json.loads(text) == report.to_json()
    assert isinstance(report.splits["train"]["token_lengths"]["p50"], int)
    assert not any(isinstance(v, np.generic) for v in report.splits["train"]["token_lengths"].values())
