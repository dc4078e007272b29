"""ONNX export of tiny random teachers and head-pruned students: faithful outputs, dynamic axes, loadable folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from compress.deploy.export import ExportMismatch, export_onnx, validate_onnx
from compress.model.student import Importance, StudentSpec, build_student
from tests.conftest import tiny_config

OUTPUTS = {"classification": ("logits",), "pair_classification": ("logits",), "regression": ("logits",),
           "qa": ("start_logits", "end_logits")}


def _save(model, tokenizer, path: Path) -> Path:
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _tiny(task_type: str):
    from transformers import BertForQuestionAnswering, BertForSequenceClassification

    torch.manual_seed(0)
    if task_type == "qa":
        return BertForQuestionAnswering(tiny_config())
    return BertForSequenceClassification(tiny_config(num_labels=1 if task_type == "regression" else 3))


@pytest.fixture(scope="module")
def saved(tmp_path_factory, tokenizer):
    """task type -> folder of a tiny random model with the tokenizer (built once per module)."""
    root = tmp_path_factory.mktemp("tiny-models")
    return {t: _save(_tiny(t), tokenizer, root / t) for t in ("classification", "regression", "qa")}


@pytest.fixture(scope="module")
def pruned_student(tmp_path_factory, tokenizer) -> Path:
    """A student keeping 1, 2 and 4 of 4 heads in its three layers and 16 of 64 FFN neurons."""
    teacher = _tiny("classification")
    rng = np.random.default_rng(0)
    importance = Importance(heads=rng.random((4, 4)), neurons=rng.random((4, 64)))
    spec = StudentSpec(num_layers=3, heads=(1, 2, 4), head_pruning="random", intermediate_size=16)
    student = build_student(teacher, spec, importance)
    return _save(student, tokenizer, tmp_path_factory.mktemp("student") / "student")


def _texts(tokenizer, task_type: str) -> dict[str, np.ndarray]:
    """Real tokenised rows of unequal length (right padding), as a server would send them."""
    first = ["a good movie", "the film was long, slow and in the end rather boring to watch"]
    pairs = task_type in ("qa", "pair_classification")
    second = ["was it good?", "what did the reviewer think of it?"] if pairs else None
    enc = tokenizer(first, second, padding=True, return_tensors="np")
    return {k: enc[k].astype(np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")}


def _torch_outputs(model_dir: Path, task_type: str, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    from transformers import AutoModelForQuestionAnswering, AutoModelForSequenceClassification

    cls = AutoModelForQuestionAnswering if task_type == "qa" else AutoModelForSequenceClassification
    model = cls.from_pretrained(model_dir).eval()
    with torch.no_grad():
        out = model(**{k: torch.from_numpy(v) for k, v in batch.items()})
    return {k: getattr(out, k).numpy() for k in OUTPUTS[task_type]}


def _ort_model_outputs(onnx_dir: Path, task_type: str, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    from optimum.onnxruntime import ORTModelForQuestionAnswering, ORTModelForSequenceClassification

    cls = ORTModelForQuestionAnswering if task_type == "qa" else ORTModelForSequenceClassification
    model = cls.from_pretrained(onnx_dir)
    out = model(**{k: torch.from_numpy(v) for k, v in batch.items()})
    return {k: np.asarray(getattr(out, k)) for k in OUTPUTS[task_type]}


def _check_result(result, out_dir: Path, task_type: str, exporter: str) -> None:
    assert result.path == out_dir / "model.onnx" and result.path.is_file()
    assert result.exporter == exporter
    assert result.size_bytes == result.path.stat().st_size  # tiny models keep their weights inside the file
    assert set(result.max_abs_diff) == set(OUTPUTS[task_type])
    assert all(0.0 <= d <= 1e-4 for d in result.max_abs_diff.values())
    assert result.opset >= 14 and result.seconds > 0
    proto = onnx.load(str(result.path))
    assert [i.name for i in proto.graph.input] == ["input_ids", "attention_mask", "token_type_ids"]
    for i in proto.graph.input:
        assert i.type.tensor_type.elem_type == onnx.TensorProto.INT64
        assert all(d.dim_param for d in i.type.tensor_type.shape.dim), f"{i.name} has a fixed axis"
    assert [o.name for o in proto.graph.output] == list(OUTPUTS[task_type])


@pytest.mark.parametrize("task_type", ["classification", "pair_classification", "regression", "qa"])
def test_export_validates_and_loads_with_optimum(saved, tokenizer, tmp_path, task_type):
    model_dir = saved["classification" if task_type == "pair_classification" else task_type]
    sample = _texts(tokenizer, task_type)
    result = export_onnx(model_dir, tmp_path / "onnx", task_type, sample=sample)
    _check_result(result, tmp_path / "onnx", task_type, "optimum")
    assert (tmp_path / "onnx" / "tokenizer.json").is_file() and (tmp_path / "onnx" / "config.json").is_file()

    want = _torch_outputs(model_dir, task_type, sample)
    got = _ort_model_outputs(tmp_path / "onnx", task_type, sample)
    for name in OUTPUTS[task_type]:
        assert got[name].shape == want[name].shape
        np.testing.assert_allclose(got[name], want[name], rtol=0, atol=1e-4)


@pytest.mark.parametrize("exporter", ["optimum", "torch.onnx"])
def test_student_with_unequal_heads_per_layer_exports(pruned_student, tokenizer, tmp_path, exporter):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(pruned_student)
    kept = [4 - len(config.pruned_heads.get(i, ())) for i in range(config.num_hidden_layers)]
    assert kept == [1, 2, 4] and config.intermediate_size == 16  # the shapes this test is about

    result = export_onnx(pruned_student, tmp_path / "onnx", "classification", exporter=exporter)
    _check_result(result, tmp_path / "onnx", "classification", exporter)

    # Lengths the export never saw, through the folder as Optimum loads it.
    batch = _texts(tokenizer, "classification")
    got = _ort_model_outputs(tmp_path / "onnx", "classification", batch)["logits"]
    want = _torch_outputs(pruned_student, "classification", batch)["logits"]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)


def test_torch_onnx_exporter_handles_qa(saved, tmp_path):
    result = export_onnx(saved["qa"], tmp_path / "onnx", "qa", exporter="torch.onnx", opset=17)
    _check_result(result, tmp_path / "onnx", "qa", "torch.onnx")
    assert result.opset == 17
    assert (tmp_path / "onnx" / "vocab.txt").is_file()


def test_changed_weights_raise_export_mismatch(saved, tokenizer, tmp_path):
    from transformers import AutoModelForSequenceClassification

    model_dir = saved["classification"]
    result = export_onnx(model_dir, tmp_path / "onnx", "classification")
    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    sample = _texts(tokenizer, "classification")
    assert validate_onnx(model, result.path, sample)["logits"] <= 1e-4  # untouched: still faithful

    with torch.no_grad():
        model.classifier.bias[1] += 0.01  # the ONNX file keeps the old weights
    with pytest.raises(ExportMismatch, match=r"output 'logits' by 0\.01 .*atol=0\.0001"):
        validate_onnx(model, result.path, sample, atol=1e-4)
    # A tolerance wider than the change accepts it: the check compares against atol, not against zero.
    assert validate_onnx(model, result.path, sample, atol=0.02)["logits"] == pytest.approx(0.01, abs=1e-4)
    assert issubclass(ExportMismatch, ValueError)


def test_validation_needs_the_model_task_outputs(saved, tmp_path):
    from transformers import AutoModelForQuestionAnswering

    result = export_onnx(saved["classification"], tmp_path / "onnx", "classification")
    qa = AutoModelForQuestionAnswering.from_pretrained(saved["qa"])
    with pytest.raises(ExportMismatch, match=r"\['start_logits', 'end_logits'\] missing"):
        validate_onnx(qa, result.path)


def test_fixed_axes_are_caught(saved, tmp_path):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(saved["classification"]).eval()
    ids = torch.full((2, 16), 1000)
    path = tmp_path / "fixed.onnx"
    torch.onnx.export(model, (ids, torch.ones_like(ids), torch.zeros_like(ids)), str(path), dynamo=False,
                      input_names=["input_ids", "attention_mask", "token_type_ids"], output_names=["logits"])
    with pytest.raises(ExportMismatch, match=r"fixed shape .*'input_ids': \[2, 16\]"):
        validate_onnx(model, path)


@pytest.mark.parametrize("task_type, model, message", [
    ("sentiment", "classification", "task_type='sentiment': use one of"),
    ("qa", "classification", "needs a \\*ForQuestionAnswering model"),
    ("classification", "qa", "needs a \\*ForSequenceClassification model"),
    ("regression", "classification", "num_labels=3"),
])
def test_bad_task_type_is_refused_before_export(saved, tmp_path, task_type, model, message):
    with pytest.raises(ValueError, match=message):
        export_onnx(saved[model], tmp_path / "onnx", task_type)
    assert not (tmp_path / "onnx" / "model.onnx").exists()


def test_sample_longer_than_the_model_takes_is_refused(saved, tmp_path):
    ids = np.full((1, 200), 1000, dtype=np.int64)  # tiny_config takes 128 positions
    with pytest.raises(ValueError, match="200 tokens per row .* at most 128"):
        export_onnx(saved["classification"], tmp_path / "onnx", "classification",
                    sample={"input_ids": ids, "attention_mask": np.ones_like(ids)})
