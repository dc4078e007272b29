"""data.split: eval and test carved from one labelled file, deterministically, disjoint, stratified by label (QA by
article), recorded in the run folder's split.json, and refused when it changes under a run with trials."""

from __future__ import annotations

import json
import random
from collections import Counter

import pytest

from compress.config import ConfigError, SplitConfig, from_mapping
from compress.data.features import load_split_examples, prepare_task_data
from compress.data.loaders import DataError, TextExample
from compress.data.split import carve_splits, ids_hash

from tests.conftest import job_config, shared


def one_file(tmp_path, n=200, seed=0):
    rng = random.Random(seed)
    lines = ["sentence\tlabel"]
    for i in range(n):
        y = 0 if i % 4 == 0 else 1  # 25% / 75%: stratification has something to keep
        lines.append(f"row {i} {'bad' if y == 0 else 'good'} {rng.random():.6f}\t{y}")
    path = tmp_path / "all.tsv"
    path.write_text("\n".join(lines) + "\n")
    return path


def cfg_for(tmp_path, split, **data):
    path = one_file(tmp_path)
    raw = job_config(tmp_path, {"type": "classification"}, str(path), None, "t")
    del raw["data"]["eval"]
    raw["data"]["split"] = split
    raw["data"].update(data)
    return from_mapping(raw)


def test_one_file_split_three_ways(tmp_path):
    cfg = cfg_for(tmp_path, {"eval": 0.1, "test": 0.15, "seed": 3})
    parts = load_split_examples(cfg)
    sizes = {k: len(v) for k, v in parts.items()}
    assert sizes == {"train": 150, "eval": 20, "test": 30}
    ids = {k: {ex.row for ex in v} for k, v in parts.items()}
    assert not ids["train"] & ids["eval"] and not ids["train"] & ids["test"] and not ids["eval"] & ids["test"]
    assert len(ids["train"] | ids["eval"] | ids["test"]) == 200
    for name, rows in parts.items():  # each part keeps the 25/75 label share
        share = Counter(ex.label for ex in rows)[0] / len(rows)
        assert share == pytest.approx(0.25, abs=1 / len(rows)), name  # within one row of rounding
    again = load_split_examples(cfg)
    assert {k: ids_hash(v) for k, v in again.items()} == {k: ids_hash(v) for k, v in parts.items()}
    other = load_split_examples(cfg_for(tmp_path, {"eval": 0.1, "test": 0.15, "seed": 4}))
    assert ids_hash(other["eval"]) != ids_hash(parts["eval"])


def test_counts_instead_of_fractions_and_the_record(tmp_path, tokenizer):
    cfg = cfg_for(tmp_path, {"eval": 17, "test": 9})
    data = prepare_task_data(cfg, tokenizer)
    assert (len(data.train.examples), len(data.eval.examples), len(data.test.examples)) == (174, 17, 9)
    rec = json.loads((cfg.run_dir / "split.json").read_text())
    assert "stratified by label (seed 0" in rec["method"]
    assert rec["splits"]["eval"]["rows"] == 17 and rec["splits"]["test"]["rows"] == 9
    assert rec["splits"]["test"]["ids_sha256"] == ids_hash(data.test.examples)
    assert sum(rec["splits"]["train"]["labels"].values()) == 174
    assert len({data.train.key, data.eval.key, data.test.key}) == 3  # three cached feature sets


def test_split_carves_only_what_is_missing(tmp_path):
    """A given eval file stays; only the test split is carved from train."""
    path = one_file(tmp_path)
    eval_file = tmp_path / "dev.tsv"
    eval_file.write_text("sentence\tlabel\nfine\t1\nawful\t0\n")
    raw = job_config(tmp_path, {"type": "classification"}, str(path), str(eval_file), "t")
    raw["data"]["split"] = {"test": 20}
    parts = load_split_examples(from_mapping(raw))
    assert len(parts["eval"]) == 2 and len(parts["test"]) == 20 and len(parts["train"]) == 180


def test_regression_is_not_stratified_but_seeded():
    rows = [TextExample((f"t{i}",), i / 10, f"f:{i}") for i in range(50)]
    a = carve_splits(rows, SplitConfig(eval=10, seed=1), "regression")
    b = carve_splits(rows, SplitConfig(eval=10, seed=1), "regression")
    assert [e.row for e in a["eval"]] == [e.row for e in b["eval"]] and len(a["train"]) == 40


def test_squad_is_split_by_article_never_by_question(tmp_path):
    path = shared("squad2", "dev-v2.0-half.json")
    raw = job_config(tmp_path, {"type": "qa"}, {"path": str(path)}, None, "t")
    del raw["data"]["eval"]
    raw["data"]["split"] = {"eval": 0.25, "test": 0.1, "seed": 0}
    parts = load_split_examples(from_mapping(raw))
    titles = {k: {ex.title for ex in v} for k, v in parts.items()}
    assert not titles["train"] & titles["eval"] and not titles["train"] & titles["test"]
    assert not titles["eval"] & titles["test"]
    assert len(titles["train"]) + len(titles["eval"]) + len(titles["test"]) == 16
    n = sum(len(v) for v in parts.values())
    assert n == 6078
    assert len(parts["eval"]) >= 0.25 * n and len(parts["test"]) >= 0.1 * n  # whole articles, at least the share


def test_one_article_cannot_be_split(tmp_path):
    from tests.conftest import write_squad

    path = write_squad(tmp_path / "one.json")
    raw = job_config(tmp_path, {"type": "qa"}, str(path), None, "t")
    del raw["data"]["eval"]
    raw["data"]["split"] = {"eval": 0.5}
    with pytest.raises(DataError, match="has 1 article.*never split by\\s+question"):
        load_split_examples(from_mapping(raw))


@pytest.mark.parametrize("split, data, why", [
    ({"eval": 0.6, "test": 0.5}, {}, "fractions sum below 1"),
    ({"eval": 1.5}, {}, "between 0 and 1"),
    ({"eval": 0}, {}, "at least 1"),
    ({}, {}, "give eval:, test: or both"),
    ({"eval": 0.1}, {"eval": "dev.tsv"}, "data.eval already gives the eval split"),
    ({"test": 0.1}, {"test": "test.tsv", "eval": "dev.tsv"}, "data.test already gives the test split"),
])
def test_bad_split_settings_are_refused(tmp_path, split, data, why):
    raw = job_config(tmp_path, {"type": "classification"}, "a.tsv", None, "t")
    del raw["data"]["eval"]
    raw["data"]["split"] = split
    raw["data"].update(data)
    with pytest.raises(ConfigError, match=why):
        from_mapping(raw)


def test_split_larger_than_the_data_is_refused(tmp_path):
    with pytest.raises(DataError, match="asks for 150 eval and 60 test rows of 200 training rows"):
        load_split_examples(cfg_for(tmp_path, {"eval": 150, "test": 60}))


def test_changed_split_under_a_run_with_trials_is_refused(tmp_path, tokenizer):
    cfg = cfg_for(tmp_path, {"eval": 0.1, "seed": 0})
    prepare_task_data(cfg, tokenizer)
    prepare_task_data(cfg, tokenizer)  # same split: fine
    (cfg.run_dir / "trials").mkdir()
    changed = cfg_for(tmp_path, {"eval": 0.1, "seed": 1})
    with pytest.raises(DataError, match="the eval, train splits of run .* changed since .*split.json was written"):
        prepare_task_data(changed, tokenizer)
