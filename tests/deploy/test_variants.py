"""ONNX variants: attention fusion on head-pruned layers, int8, loading with Optimum and a transformers pipeline,
metrics re-measured per variant, and precision as a search dimension."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from compress.config import from_mapping
from compress.deploy.export import export_onnx
from compress.search.space import SearchSpace, SearchSpaceError
from compress.model.student import Importance, StudentSpec, build_student
from compress.deploy.variants import VariantError, make_variant, measure_variants
from tests.conftest import CONFIRM_QUICK, job_config, tiny_config, write_sentiment_tsv, write_squad


def _ops(path: Path) -> Counter:
    return Counter(n.op_type for n in onnx.load(str(path)).graph.node)


@pytest.fixture(scope="module")
def pruned(tmp_path_factory, tokenizer):
    """fp32 ONNX folders of a classifier keeping 1, 2 and 4 of 4 heads in its layers, and of a tiny QA model."""
    from transformers import BertForQuestionAnswering, BertForSequenceClassification

    root = tmp_path_factory.mktemp("variants")
    torch.manual_seed(0)
    teacher = BertForSequenceClassification(tiny_config(num_labels=2))
    rng = np.random.default_rng(0)
    importance = Importance(heads=rng.random((4, 4)), neurons=rng.random((4, 64)))
    student = build_student(teacher, StudentSpec(num_layers=3, heads=(1, 2, 4), head_pruning="random",
                                                 intermediate_size=16), importance)
    student.save_pretrained(root / "cls")
    tokenizer.save_pretrained(root / "cls")
    export_onnx(root / "cls", root / "cls-onnx", "classification")
    qa = BertForQuestionAnswering(tiny_config())
    qa.save_pretrained(root / "qa")
    tokenizer.save_pretrained(root / "qa")
    export_onnx(root / "qa", root / "qa-onnx", "qa")
    return root


def test_attention_fuses_in_every_layer_with_unequal_head_counts(pruned):
    v = make_variant(pruned / "cls-onnx", pruned / "cls-optimized", "optimized")
    ops = _ops(v.path)
    assert ops["Attention"] == 3  # one per layer, with 1, 2 and 4 heads
    assert sorted(a.i for n in onnx.load(str(v.path)).graph.node if n.op_type == "Attention"
                  for a in n.attribute if a.name == "num_heads") == [1, 2, 4]
    assert v.method["attention_layers_fused"] == "3/3"
    assert max(v.max_abs_diff.values()) < 1e-4
    assert v.size_bytes > 0 and (v.dir / "config.json").is_file() and (v.dir / "tokenizer.json").is_file()


def test_int8_quantises_the_fused_graph(pruned):
    fp32 = (pruned / "cls-onnx" / "model.onnx").stat().st_size
    v = make_variant(pruned / "cls-onnx", pruned / "cls-int8", "int8")
    ops = _ops(v.path)
    assert ops["QAttention"] == 3 and ops["MatMulInteger"] > 0
    assert v.size_bytes < fp32
    assert np.isfinite(list(v.max_abs_diff.values())).all()


def test_bad_precision_and_missing_export_are_refused(pruned, tmp_path):
    with pytest.raises(VariantError, match="precision='fp16': use one of fp32, optimized, int8"):
        make_variant(pruned / "cls-onnx", tmp_path / "x", "fp16")
    with pytest.raises(VariantError, match="has no model.onnx"):
        make_variant(tmp_path, tmp_path / "y", "int8")


@pytest.mark.parametrize("precision", ["fp32", "optimized", "int8"])
def test_variants_load_with_optimum_and_run_in_a_pipeline(pruned, precision, tokenizer):
    from optimum.onnxruntime import ORTModelForQuestionAnswering, ORTModelForSequenceClassification
    from transformers import pipeline

    from compress.model.inference import onnx_session

    cls_dir = make_variant(pruned / "cls-onnx", pruned / f"p-cls-{precision}", precision).dir
    model = ORTModelForSequenceClassification.from_pretrained(cls_dir)
    clf = pipeline("text-classification", model=model, tokenizer=tokenizer)
    texts = ["a good movie", "the film was long and slow"]
    got = clf(texts)
    enc = tokenizer(texts, padding=True, return_tensors="np")
    logits = onnx_session(cls_dir / "model.onnx").run(None, {k: enc[k].astype(np.int64) for k in
                                                            ("input_ids", "attention_mask", "token_type_ids")})[0]
    assert [g["label"] for g in got] == [model.config.id2label[int(i)] for i in logits.argmax(1)]

    qa_dir = make_variant(pruned / "qa-onnx", pruned / f"p-qa-{precision}", precision).dir
    qa = pipeline("question-answering", model=ORTModelForQuestionAnswering.from_pretrained(qa_dir), tokenizer=tokenizer)
    ans = qa(question="Who led the raiders?", context="The raiders were led by Rollo in the tenth century.")
    assert isinstance(ans["answer"], str) and 0 <= ans["start"] <= ans["end"]


# ------------------------------------------------------------------ metrics per variant and the search dimension


def _run_cfg(tmp_path: Path, teacher: str, kind: str = "classification", **search):
    if kind == "qa":
        raw = job_config(tmp_path, {"type": "qa"}, str(write_squad(tmp_path / "tr.json")),
                         str(write_squad(tmp_path / "dev.json")), teacher)
        raw["data"].update(max_seq_length=32, doc_stride=8)
    else:
        raw = job_config(tmp_path, {"type": "classification"}, str(write_sentiment_tsv(tmp_path / "tr.tsv", 48, 1)),
                         str(write_sentiment_tsv(tmp_path / "dev.tsv", 24, 2)), teacher)
    raw["distill"]["train"] = {"max_steps": 4, "batch_size": 8, "eval_every": 2}
    raw["student"] = {}
    raw["search"] = {"n_trials": 2, "sampler": "random", "seed": 0,
                     "latency": {"batch_size": 1, "seq_len": 16, "threads": 1, "warmup": 1, "repeats": 3,
                                 "rounds": 3, "calls_per_round": 2, "wait_s": 0},
                     "confirm": CONFIRM_QUICK, **search}
    return from_mapping(raw)


def test_precision_must_be_categorical_from_the_known_variants(tmp_path, tiny_base):
    cfg = _run_cfg(tmp_path, tiny_base, space={"precision": {"type": "categorical", "choices": ["fp32", "int4"]}})
    with pytest.raises(SearchSpaceError, match=r"search.space.precision': got \['int4'\]"):
        SearchSpace.from_config(cfg, tiny_config())


def test_precision_searched_deploys_and_measures_the_variant(tmp_path, tiny_base):
    from compress.data import prepare_task_data
    from compress.distill.jobs import finetune_teacher
    from compress.search import latency, open_study, run_worker
    from compress.model.teacher import load_tokenizer

    teacher = str(finetune_teacher(_run_cfg(tmp_path, tiny_base), progress=False))
    cfg = _run_cfg(tmp_path, teacher, space={"num_layers": {"type": "int", "low": 1, "high": 2},
                                             "precision": {"type": "categorical", "choices": ["fp32", "int8"]}})
    run_worker(cfg, progress=False)
    trials = [t for t in open_study(cfg, create=False).get_trials() if t.user_attrs.get("state") == "complete"]
    assert len(trials) == 2
    baseline = next(t for t in trials if t.user_attrs.get("baseline"))
    assert baseline.params["precision"] == "fp32" and baseline.user_attrs["precision"] == "fp32"
    for t in trials:
        p = t.user_attrs["precision"]
        assert t.params["precision"] == p
        assert t.user_attrs["onnx"].endswith("onnx/model.onnx" if p == "fp32" else f"onnx-{p}/model.onnx")
        assert "timings" in t.user_attrs and "variant_s" in t.user_attrs["timings"]

    # Every variant of one trial re-measured: metric from its own file, matching an independent computation.
    trial_dir = Path(trials[0].user_attrs["dir"])
    data = prepare_task_data(cfg, load_tokenizer(str(trial_dir / "onnx")))
    rows = measure_variants(trial_dir, data, lambda p: latency(p, data.eval, cfg), threads=1)
    assert [r["precision"] for r in rows] == ["fp32", "optimized", "int8-dynamic", "int8-static"]
    saved = json.loads((trial_dir / "variants.json").read_text())["variants"]
    assert [r["precision"] for r in saved] == ["fp32", "optimized", "int8-dynamic", "int8-static"]
    assert rows[3]["method"]["calibration"]["rows"] == len(data.train)  # by default the training split, not eval
    labels = data.eval.arrays["labels"]
    for r in rows:
        from compress.model.inference import onnx_session

        s = onnx_session(Path(r["dir"]) / "model.onnx", 1)
        width = int(data.eval.arrays["attention_mask"].sum(1).max())  # one batch, trimmed as evaluation does
        arrays = {k: data.eval.arrays[k][:, :width] for k in ("input_ids", "attention_mask", "token_type_ids")}
        pred = s.run(None, arrays)[0].argmax(1)
        assert r["metrics"]["accuracy"] == pytest.approx(float((pred == labels).mean()))
        assert r["latency_method"]["runtime"] == "onnxruntime" and r["latency_ms"] > 0
    assert rows[2]["size_mb"] < rows[0]["size_mb"] and rows[3]["size_mb"] < rows[0]["size_mb"]


def test_qa_variant_records_the_no_answer_threshold(tmp_path, tiny_base):
    from compress.data import prepare_task_data
    from compress.distill.jobs import finetune_teacher
    from compress.search import latency, open_study, run_worker
    from compress.model.teacher import load_tokenizer

    teacher = str(finetune_teacher(_run_cfg(tmp_path, tiny_base, "qa"), progress=False))
    cfg = _run_cfg(tmp_path, teacher, "qa", n_trials=1, space={"num_layers": {"type": "int", "low": 1, "high": 2}})
    run_worker(cfg, progress=False)
    trial = open_study(cfg, create=False).get_trials()[0]
    trial_dir = Path(trial.user_attrs["dir"])
    data = prepare_task_data(cfg, load_tokenizer(str(trial_dir / "onnx")))
    [row] = measure_variants(trial_dir, data, lambda p: latency(p, data.eval, cfg), ["int8"], threads=1)
    m = row["metrics"]
    # At the threshold the server will use, exact is the best exact the official search found (also when that
    # best is "abstain on every question", which the official script reports as threshold 0.0).
    assert m["exact"] == pytest.approx(m["best_exact"])
    assert isinstance(m["na_threshold"], float)


def test_serving_threshold_abstains_on_all_when_that_is_best():
    from compress.data import QAPrediction
    from compress.deploy.variants import serving_threshold

    preds = [QAPrediction("a", "x", 0, 1, 1.0, -0.5), QAPrediction("b", "y", 0, 1, 1.0, 0.7)]
    metrics = {"best_exact": 50.0, "best_exact_thresh": 0.0, "NoAns_total": 1, "total": 2}
    assert serving_threshold(metrics, preds) == pytest.approx(-1.5)  # below every null_odds: abstain on all
    assert serving_threshold({**metrics, "best_exact_thresh": 0.7}, preds) == 0.7
