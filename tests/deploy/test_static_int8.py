"""Static int8 (QDQ, calibrated on training rows) beside dynamic int8: the file it writes, what it records, where its
rows come from, its metric measured on the eval set, the int8 alias, and the refusals."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from compress.config import ConfigError, from_mapping
from compress.deploy.export import export_onnx
from compress.deploy.variants import (
    CALIBRATION_METHODS, VariantError, calibration_feeds, canonical_precision, make_variant, measure_variants,
    variant_dir,
)
from tests.conftest import job_config, tiny_config, write_regression_csv, write_squad

TRAIN_ROWS, EVAL_ROWS = 64, 24


def _ops(path: Path) -> Counter:
    return Counter(n.op_type for n in onnx.load(str(path)).graph.node)


def _run(path: Path, arrays: dict[str, np.ndarray]) -> list[np.ndarray]:
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return s.run(None, {i.name: arrays[i.name].astype(np.int64) for i in s.get_inputs()})


def _no_latency(path) -> dict[str, Any]:
    return {"median_ms": 1.0, "p90_ms": 1.0, "runtime": "stub"}


def _config(root: Path, teacher: str, **search):
    raw = job_config(root, {"type": "regression", "text_columns": ["text"], "label_column": "score"},
                     str(write_regression_csv(root / "train.csv", TRAIN_ROWS, 1)),
                     str(write_regression_csv(root / "dev.csv", EVAL_ROWS, 2)), teacher)
    raw["search"] = search
    return from_mapping(raw)


@pytest.fixture(scope="module")
def regression(tmp_path_factory, tokenizer, tiny_base):
    """A tiny regression model exported to trial/onnx, and its task data (64 training rows, 24 eval rows).

    Regression, so that the metric (mse) moves with any change in the outputs: a metric copied from fp32 would show.
    The head is scaled up so that the outputs are not all near zero.
    """
    from transformers import BertForSequenceClassification

    from compress.data import prepare_task_data

    root = tmp_path_factory.mktemp("static-int8")
    torch.manual_seed(0)
    model = BertForSequenceClassification(tiny_config(num_labels=1, problem_type="regression"))
    with torch.no_grad():
        model.classifier.weight.mul_(50.0)
    model.save_pretrained(root / "model")
    tokenizer.save_pretrained(root / "model")
    export_onnx(root / "model", root / "trial" / "onnx", "regression")
    cfg = _config(root, tiny_base)
    data = prepare_task_data(cfg, tokenizer)
    assert (len(data.train), len(data.eval)) == (TRAIN_ROWS, EVAL_ROWS)
    return root, cfg, data


def test_static_int8_writes_qdq_nodes_and_records_how_it_was_made(regression):
    root, _, data = regression
    fp32 = root / "trial" / "onnx" / "model.onnx"
    v = make_variant(fp32.parent, root / "static", "int8-static",
                     calibration=calibration_feeds(data.train, rows=40, batch_size=16))
    ops = _ops(v.path)
    assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] > 0
    assert "MatMulInteger" not in ops and "QAttention" not in ops  # QDQ, not dynamic int8's operators
    assert v.precision == "int8-static" and v.size_bytes < fp32.stat().st_size
    m = v.method
    assert m["tool"] == "onnxruntime.quantization.quantize_static" and m["format"] == "QDQ"
    assert m["source"] == "the fp32 export" and m["per_channel"] is True
    assert (m["activation_type"], m["weight_type"]) == ("uint8", "int8")
    assert m["calibration"]["method"] == "minmax"
    assert (m["calibration"]["rows"], m["calibration"]["batches"]) == (40, 3)
    assert m["kept_float"]["activation_by_activation_matmuls"] == 2 * 4  # QK^T and probs·V in each of 4 layers
    assert m["kept_float"]["layernorm_readers_other_than_matmul"] > 0  # the residual adds read float tensors
    assert m["onnxruntime"] == ort.__version__
    # per channel: a weight's scale has one value per output column
    scales = {t.name: t for t in onnx.load(str(v.path)).graph.initializer if t.name.endswith("_scale")}
    assert any(len(t.dims) == 1 and t.dims[0] == 64 for t in scales.values())  # the 64-wide intermediate dense
    # close to fp32, and the difference recorded: eval rows through both files
    arrays = {k: data.eval.arrays[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    ref, got = _run(fp32, arrays)[0], _run(v.path, arrays)[0]
    assert not np.array_equal(ref, got)  # quantised for real
    assert np.abs(got - ref).max() <= 0.1 * np.abs(ref).max()
    # recorded on the same random validation batches as the other variants (ids and segments this calibration never
    # saw, so larger than on the eval rows)
    assert set(v.max_abs_diff) == {"logits"} and 0 < v.max_abs_diff["logits"] < np.inf


def test_calibration_reads_training_rows_only(regression):
    _, _, data = regression
    cal = calibration_feeds(data.train, rows=1000, batch_size=16)
    assert cal.rows == TRAIN_ROWS and len(cal.batches) == 4  # every training row, and no more
    assert cal.source.startswith("train split: 64 of 64 rows")
    for b in cal.batches:  # trimmed as training batches are: the longest row fills the width
        assert b["input_ids"].dtype == np.int64 and b["attention_mask"].sum(1).max() == b["input_ids"].shape[1]
    # a sample, the same for the same seed
    few = calibration_feeds(data.train, rows=8, batch_size=8, seed=3)
    again = calibration_feeds(data.train, rows=8, batch_size=8, seed=3)
    assert few.rows == 8 and np.array_equal(few.batches[0]["input_ids"], again.batches[0]["input_ids"])


def test_static_int8_metric_is_measured_on_its_own_file(regression):
    root, _, data = regression
    trial = root / "trial"
    rows = measure_variants(trial, data, _no_latency, ["fp32", "int8-static"], threads=1)
    fp32, static = rows
    assert [r["precision"] for r in rows] == ["fp32", "int8-static"]
    assert static["dir"] == str(trial / "onnx-int8-static")
    assert static["method"]["calibration"]["rows"] == TRAIN_ROWS  # the default (256) caps at the training split
    # independently: the static file's predictions on the eval rows, scored as the task scores them
    arrays = {k: data.eval.arrays[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    labels = data.eval.arrays["labels"].astype(np.float64)
    pred_static = _run(trial / "onnx-int8-static" / "model.onnx", arrays)[0].reshape(-1)
    pred_fp32 = _run(trial / "onnx" / "model.onnx", arrays)[0].reshape(-1)
    mse_static = float(np.mean((pred_static - labels) ** 2))
    mse_fp32 = float(np.mean((pred_fp32 - labels) ** 2))
    assert static["metrics"]["mse"] == pytest.approx(mse_static, rel=1e-5)
    assert fp32["metrics"]["mse"] == pytest.approx(mse_fp32, rel=1e-5)
    # the outputs differ, so a metric copied from fp32 would fail the line above
    assert abs(mse_static - mse_fp32) > 1e-4 * mse_fp32
    saved = json.loads((trial / "variants.json").read_text())["variants"]
    assert [r["precision"] for r in saved] == ["fp32", "int8-static"]


@pytest.mark.parametrize("method", CALIBRATION_METHODS)
def test_each_calibration_method_runs(regression, method):
    root, _, data = regression
    v = make_variant(root / "trial" / "onnx", root / f"static-{method}", "int8-static",
                     calibration=calibration_feeds(data.train, rows=32, batch_size=8, method=method))
    assert v.method["calibration"]["method"] == method and v.method["calibration"]["rows"] == 32
    assert np.isfinite(v.max_abs_diff["logits"])
    assert _ops(v.path)["QuantizeLinear"] > 0


def test_int8_is_int8_dynamic_and_keeps_its_folder(regression, tmp_path):
    root, _, data = regression
    trial = root / "trial"
    assert canonical_precision("int8") == "int8-dynamic"
    assert variant_dir(trial, "int8") == variant_dir(trial, "int8-dynamic") == trial / "onnx-int8"
    v = make_variant(trial / "onnx", variant_dir(trial, "int8"), "int8")  # no calibration needed
    assert v.precision == "int8-dynamic" and _ops(v.path)["MatMulInteger"] > 0
    assert v.method["tool"] == "onnxruntime.quantization.quantize_dynamic"
    # a variants.json written when the name was "int8": its row is replaced, not doubled
    (trial / "variants.json").write_text(json.dumps({"variants": [{"precision": "int8", "dir": "old"}]}))
    [row] = measure_variants(trial, data, _no_latency, ["int8"], threads=1)
    assert row["precision"] == "int8-dynamic" and row["dir"] == str(trial / "onnx-int8")
    saved = json.loads((trial / "variants.json").read_text())["variants"]
    assert [(r["precision"], r["dir"]) for r in saved] == [("int8-dynamic", str(trial / "onnx-int8"))]


def test_int8_static_without_calibration_is_refused(regression):
    root, _, _ = regression
    with pytest.raises(VariantError, match=r"precision='int8-static' needs calibration data: pass "
                                           r"calibration=calibration_feeds\(data.train"):
        make_variant(root / "trial" / "onnx", root / "refused", "int8-static")
    with pytest.raises(VariantError, match="precision='int4': use one of fp32, optimized, int8-dynamic, int8-static"):
        make_variant(root / "trial" / "onnx", root / "refused", "int4")


def test_calibration_rows_outside_the_vocabulary_are_refused(regression):
    root, _, data = regression
    cal = calibration_feeds(data.train, rows=8, batch_size=8)
    big = dataclasses.replace(cal, batches=({**cal.batches[0], "input_ids": cal.batches[0]["input_ids"] + 40000},))
    with pytest.raises(VariantError, match="outside the model's vocabulary"):
        make_variant(root / "trial" / "onnx", root / "refused-vocab", "int8-static", calibration=big)


def test_deploy_model_calibrates_on_the_trials_training_rows(regression):
    """The search's path: deploy_model exports, makes int8-static from ctx.data.train, scores it on the eval set."""
    from compress.search.study import deploy_model

    @dataclasses.dataclass
    class Ctx:  # deploy_model reads ctx.data and ctx.tokenizer (what the data was tokenized with) only
        data: Any
        tokenizer: Any = None

    root, _, data = regression
    cfg = _config(root, str(root / "model"), precision="int8-static", calibration={"rows": 48, "batch_size": 16})
    trial = root / "search-trial"
    (trial / "model").mkdir(parents=True)
    for f in (root / "model").iterdir():
        (trial / "model" / f.name).write_bytes(f.read_bytes())
    dep = deploy_model(Ctx(data), cfg, trial, "int8-static", {"mse": -1.0})
    assert dep["deployed"] == trial / "onnx-int8-static" / "model.onnx"
    assert dep["variant"].method["calibration"]["rows"] == 48
    assert dep["metrics"]["mse"] != -1.0 and "int8-static" in dep["metric_source"]


def test_qa_model_quantises_statically(tmp_path, tokenizer):
    from transformers import BertForQuestionAnswering

    from compress.data import prepare_task_data

    torch.manual_seed(0)
    BertForQuestionAnswering(tiny_config()).save_pretrained(tmp_path / "qa")
    tokenizer.save_pretrained(tmp_path / "qa")
    export_onnx(tmp_path / "qa", tmp_path / "qa-onnx", "qa")
    raw = job_config(tmp_path, {"type": "qa"}, str(write_squad(tmp_path / "tr.json")),
                     str(write_squad(tmp_path / "dev.json")), str(tmp_path / "qa"))
    raw["data"].update(max_seq_length=32, doc_stride=8)
    data = prepare_task_data(from_mapping(raw), tokenizer)
    v = make_variant(tmp_path / "qa-onnx", tmp_path / "qa-static", "int8-static",
                     calibration=calibration_feeds(data.train, batch_size=4))
    assert v.method["calibration"]["rows"] == len(data.train)  # QA: windows
    assert set(v.max_abs_diff) == {"start_logits", "end_logits"}


def test_config_and_search_space_take_the_new_names(regression, tiny_base):
    from compress.cli import build_parser
    from compress.search.space import SearchSpace, SearchSpaceError

    root, _, _ = regression
    cfg = _config(root, tiny_base, precision="int8", calibration={"method": "percentile", "rows": 64})
    assert cfg.search.precision == "int8" and cfg.search.calibration.method == "percentile"
    with pytest.raises(ConfigError, match=r"search.calibration.rows': got 0; must be at least 1"):
        _config(root, tiny_base, calibration={"rows": 0})
    with pytest.raises(ConfigError, match=r"search.calibration.method': got 'kl'; allowed: 'minmax' or 'entropy'"):
        _config(root, tiny_base, calibration={"method": "kl"})
    with pytest.raises(ConfigError, match=r"search.precision': got 'int4'"):
        _config(root, tiny_base, precision="int4")
    choices = ["fp32", "optimized", "int8", "int8-dynamic", "int8-static"]
    space = SearchSpace.from_config(_config(root, tiny_base, space={"precision": {"type": "categorical",
                                                                                  "choices": choices}}),
                                    tiny_config())
    assert space.params["precision"].choices == tuple(choices)
    with pytest.raises(SearchSpaceError, match=r"got \['int8-qdq'\]"):
        SearchSpace.from_config(_config(root, tiny_base, space={"precision": {"type": "categorical",
                                                                              "choices": ["int8-qdq"]}}),
                                tiny_config())
    args = build_parser().parse_args(["package", "runs/x", "--trial", "0", "--precision", "int8-static"])
    assert args.precision == "int8-static"
    assert "int8-static" in build_parser().parse_args(["export", "runs/x", "--trial", "0"]).precision.split(",")
