"""Real data end to end with the real MiniLM weights: a few hundred SST-2 rows, a few SQuAD 2.0 paragraphs."""

from __future__ import annotations

import json

import numpy as np

from compress.config import from_mapping
from compress.data import prepare_task_data
from compress.model.inference import score_outputs
from compress.distill.jobs import distill_student, finetune_teacher, load_context
from compress.model.student import StudentSpec
from tests.conftest import shared


def test_sst2_rows_end_to_end_with_minilm(tmp_path, minilm_path):
    raw = {
        "name": "sst2", "output_dir": str(tmp_path / "runs"), "threads": 2,
        "task": {"type": "classification", "labels": ["negative", "positive"]},
        "data": {"train": {"path": str(shared("glue", "SST-2", "train.tsv")), "limit": 320, "sample_seed": 0},
                 "eval": {"path": str(shared("glue", "SST-2", "dev.tsv")), "limit": 200},
                 "max_seq_length": 48, "cache_dir": str(tmp_path / "cache")},
        "teacher": {"model": minilm_path, "train": {"epochs": 2, "batch_size": 16, "learning_rate": 3e-4, "eval_every": 0}},
        "distill": {"train": {"epochs": 1, "batch_size": 16, "learning_rate": 1e-4, "eval_every": 10}},
    }
    cfg = from_mapping(raw)
    teacher_dir = finetune_teacher(cfg, progress=False)
    tm = json.loads((teacher_dir / "metrics.json").read_text())
    assert tm["train_rows"] == 320 and tm["eval_rows"] == 200
    assert tm["value"] > 0.6  # 40 steps of fine-tuning already beat the 50% majority rate
    ctx = load_context(cfg, progress=False)
    m = distill_student(ctx, StudentSpec(num_layers=3), tmp_path / "student", progress=False)
    assert m["params"] < tm["params"]
    assert m["teacher_layers"] == [1, 3, 5]
    assert m["value"] > 0.55
    labels = json.loads((tmp_path / "student" / "config.json").read_text())["id2label"]
    assert labels == {"0": "negative", "1": "positive"}


def _squad2_config(tmp_path, minilm_path, **data):
    path = str(shared("squad2", "dev-v2.0-half.json"))
    return from_mapping({
        "name": "squad", "output_dir": str(tmp_path / "runs"), "threads": 2,
        "task": {"type": "qa"},
        "data": {"train": {"path": path, "articles": ["Normans"], "limit": 48},
                 "eval": {"path": path, "articles": ["Normans"], "limit": 24},
                 "max_seq_length": 192, "doc_stride": 64, "cache_dir": str(tmp_path / "cache"), **data},
        "teacher": {"model": minilm_path,
                    "train": {"max_steps": 6, "batch_size": 8, "learning_rate": 1e-4, "eval_every": 3}},
        "distill": {"train": {"max_steps": 4, "batch_size": 8, "learning_rate": 1e-4, "eval_every": 2}},
    })


def test_squad2_oracle_logits_score_100(tmp_path, tokenizer, minilm_path):
    """Featurise real paragraphs, put the logits on the gold spans, decode: every answer is recovered."""
    cfg = _squad2_config(tmp_path, minilm_path, max_seq_length=128, doc_stride=48)
    data = prepare_task_data(cfg, tokenizer)
    split = data.eval
    assert data.version_2 and len(split) > len(split.examples)  # several windows for long contexts
    feats = split.arrays  # eval windows carry gold start/end token positions too (CLS when absent)
    n, length = feats["input_ids"].shape
    start = np.full((n, length), -10.0, dtype=np.float32)
    end = np.full((n, length), -10.0, dtype=np.float32)
    rows = np.arange(n)
    start[rows, feats["start_positions"]] = 10.0
    end[rows, feats["end_positions"]] = 10.0
    has_span = feats["start_positions"] > 0
    start[has_span, 0] = end[has_span, 0] = -10.0  # a window holding the answer votes against "no answer"
    metrics, preds = score_outputs(data, split, {"start_logits": start, "end_logits": end})
    assert metrics["exact"] == 100.0 and metrics["f1"] == 100.0
    assert metrics["NoAns_total"] > 0 and metrics["HasAns_total"] > 0
    by_qid = {p.qid: p for p in preds}
    for ex in split.examples:  # character offsets point back into the context
        p = by_qid[ex.qid]
        if ex.answers:
            assert ex.context[p.start:p.end] == p.text


def test_squad2_paragraphs_train_and_evaluate(tmp_path, minilm_path):
    cfg = _squad2_config(tmp_path, minilm_path)
    teacher_dir = finetune_teacher(cfg, progress=False)
    tm = json.loads((teacher_dir / "metrics.json").read_text())
    assert tm["version_2"] is True
    for key in ("exact", "f1", "HasAns_exact", "NoAns_exact", "best_f1", "best_f1_thresh", "no_answer_rate"):
        assert key in tm["metrics"], key
    assert tm["metrics"]["total"] == 24
    ctx = load_context(cfg, progress=False)
    m = distill_student(ctx, StudentSpec(num_layers=2), tmp_path / "student", progress=False)
    curve = [json.loads(x) for x in (tmp_path / "student" / "curves.jsonl").read_text().splitlines()]
    assert [p["step"] for p in curve] == [2, 4]
    assert {"HasAns_exact", "HasAns_f1", "NoAns_exact", "NoAns_f1"} <= set(curve[0])
    preds = json.loads((tmp_path / "student" / "predictions.json").read_text())
    assert len(preds) == 24 and all("null_odds" in p for p in preds.values())
    assert 0 <= m["metrics"]["exact"] <= 100
