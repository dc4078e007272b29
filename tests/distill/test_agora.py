"""Agora on tiny models: ν keeps labels and answer spans valid, Θ pruning, the stopping rule, balance, and the
procedure end to end (FPTAS, once tested here too: tests/search/test_fptas.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from compress.distill.agora import balance, prune_thetas, stop_reason, wrong_examples
from compress.data.augment import Nu
from compress.config import from_mapping
from compress.data import QAExample, TextExample, load_qa_examples
from compress.distill.jobs import finetune_teacher, load_context
from tests.conftest import CONFIRM_QUICK, job_config, write_pairs_jsonl, write_sentiment_tsv, write_squad


@pytest.fixture(scope="module")
def nu(tokenizer):
    emb = np.random.default_rng(0).normal(size=(tokenizer.vocab_size, 16)).astype(np.float32)
    vocab = tokenizer.get_vocab()
    emb[vocab["great"]] = emb[vocab["good"]] * 1.01  # the nearest word to "good" is "great"
    return Nu(tokenizer, emb, neighbours=3)


def test_neighbours_come_from_the_teacher_embeddings(nu):
    assert nu.nearest("good")[0] == "great"
    assert "good" not in nu.nearest("good")
    assert nu.nearest("qwzx") == []


def test_nu_changes_one_side_of_a_pair_and_keeps_the_label(nu):
    rng = np.random.default_rng(1)
    ex = TextExample(("a cat sat on the mat today", "the animal was sitting quietly"), 1, "train.jsonl:3")
    for _ in range(50):
        new = nu.example(ex, rng)
        assert new is not None and new.label == 1 and new.row.endswith("+nu")
        changed = [a != b for a, b in zip(ex.texts, new.texts)]
        assert sum(changed) == 1, new.texts


def test_nu_keeps_qa_answer_spans_exact(nu, tmp_path):
    examples = load_qa_examples(from_mapping(job_config(tmp_path, {"type": "qa"}, str(write_squad(tmp_path / "s.json")),
                                                        str(write_squad(tmp_path / "s.json")), "x")).data.train)
    rng = np.random.default_rng(2)
    made = 0
    for _ in range(40):
        for ex in examples:
            new = nu.example(ex, rng)
            if new is None:
                continue
            made += 1
            assert new.is_impossible == ex.is_impossible and new.qid != ex.qid
            assert [t for t, _ in new.answers] == [t for t, _ in ex.answers][: len(new.answers)]
            for text, start in new.answers:
                assert new.context[start:start + len(text)] == text
            assert new.context != ex.context or new.question != ex.question
    assert made > 100


def test_theta_pruning_keeps_the_best_share():
    scores = {0: 0.80, 1: 0.90, 2: 0.85, 3: 0.90}
    assert prune_thetas(scores, 0.5) == [1, 3]
    assert prune_thetas(scores, 0.1) == [1]
    assert prune_thetas(scores, 1.0) == [1, 3, 2, 0]
    assert prune_thetas({5: 0.1}, 0.5) == [5]


def test_stopping_rule():
    assert "within epsilon" in stop_reason(86.5, 87.0, 1.0, 1, 5, 100, None, 1, None)
    assert stop_reason(80.0, 87.0, 1.0, 1, 5, 100, None, 1, None) is None
    assert "3 iterations" in stop_reason(80.0, 87.0, 1.0, 3, 3, 100, None, 1, None)
    assert "training rows" in stop_reason(80.0, 87.0, 1.0, 1, 5, 500, 400, 1, None)
    assert "max_seconds" in stop_reason(80.0, 87.0, 1.0, 1, 5, 100, None, 61, 60)


def test_balance_caps_every_label_at_the_rarest():
    rng = np.random.default_rng(0)
    ex = list(range(10))
    keys = [0, 0, 0, 0, 0, 0, 1, 1, 1, 2]
    out = balance(ex, keys, rng)
    assert sorted(keys[i] for i in out) == [0, 1, 2]


def test_wrong_examples_by_task():
    from compress.data import QAPrediction

    ex = [TextExample(("a",), 1, "r1"), TextExample(("b",), 0, "r2")]
    assert wrong_examples("classification", ex, [1, 1]) == [ex[1]]
    reg = [TextExample(("a",), 2.2, "r1"), TextExample(("b",), 3.9, "r2")]
    assert wrong_examples("regression", reg, [2.4, 3.2]) == [reg[1]]  # 3.2 rounds to 3, gold 3.9 to 4
    qa = [QAExample("q1", "T", "Rollo led", "who", (("Rollo", 0),), False), QAExample("q2", "T", "x", "y", (), True)]
    preds = [QAPrediction("q1", "Rollo", 0, 5, 3.0, -1.0), QAPrediction("q2", "x", 0, 1, 2.0, -0.5)]
    assert wrong_examples("qa", qa, preds) == [qa[1]]  # answered an unanswerable question


# ------------------------------------------------------------------ end to end on a tiny teacher


def _raw(tmp: Path, teacher: str, kind: str = "classification") -> dict:
    if kind == "pair":
        raw = job_config(tmp, {"type": "pair_classification", "text_columns": ["premise", "hypothesis"],
                               "labels": ["different", "same"]},
                         str(write_pairs_jsonl(tmp / "tr.jsonl", 40, 1)), str(write_pairs_jsonl(tmp / "dev.jsonl", 20, 2)),
                         teacher)
    elif kind == "qa":
        raw = job_config(tmp, {"type": "qa"}, str(write_squad(tmp / "tr.json")), str(write_squad(tmp / "dev.json")),
                         teacher)
        raw["data"].update(max_seq_length=32, doc_stride=8)
    else:
        raw = job_config(tmp, {"type": "classification"}, str(write_sentiment_tsv(tmp / "tr.tsv", 40, 1)),
                         str(write_sentiment_tsv(tmp / "dev.tsv", 24, 2)), teacher)
    raw["distill"]["train"] = {"max_steps": 3, "batch_size": 8, "eval_every": 0}
    raw["student"] = {"num_layers": 1, "heads": 2, "intermediate_size": 32}
    raw["agora"] = {"thetas": [{"learning_rate": 1e-3, "seed": 0}, {"learning_rate": 1e-4, "seed": 1},
                               {"learning_rate": 3e-3, "seed": 2}],
                    "max_iterations": 2, "epsilon": 0.0, "per_error": 1, "keep": 0.5}
    return raw


@pytest.mark.parametrize("kind", ["classification", "pair", "qa"])
def test_agora_end_to_end(kind, tmp_path, tiny_base):
    from compress.distill.agora import run_agora
    from compress.model.student import StudentSpec

    teacher = str(finetune_teacher(from_mapping(_raw(tmp_path, tiny_base, kind)), progress=False))
    cfg = from_mapping(_raw(tmp_path, teacher, kind))
    ctx = load_context(cfg, progress=False)
    metric = cfg.task.primary_metric
    ctx.teacher_metrics = {**ctx.teacher_metrics, metric: 100.0 if kind == "qa" else 1.0}  # a gap 3 steps cannot close
    res = run_agora(ctx, StudentSpec(num_layers=1, heads=2, intermediate_size=32), tmp_path / "agora", progress=False)
    assert len(res.table) == 2 and "2 iterations" in res.stopped
    first, second = res.table
    assert len(first["thetas_tried"]) == 3 and len(first["thetas_kept"]) == 2  # ceil(0.5 * 3)
    assert len(second["thetas_tried"]) == 2 and len(second["thetas_kept"]) == 1
    assert second["train_rows"] == first["train_rows"] + first["new_rows"]
    assert first["errors"] > 0 and first["new_rows"] > 0
    saved = json.loads((tmp_path / "agora" / "agora.json").read_text())
    assert saved["theta"] == json.loads(json.dumps(res.theta.__dict__))
    m = json.loads((tmp_path / "agora" / "metrics.json").read_text())
    assert m["finetune"] == "agora" and (tmp_path / "agora" / "model.safetensors").is_file()


def test_agora_inside_a_search_trial(tmp_path, tiny_base):
    from compress.search import open_study, run_worker

    teacher = str(finetune_teacher(from_mapping(_raw(tmp_path, tiny_base)), progress=False))
    raw = _raw(tmp_path, teacher)
    raw["finetune"] = "agora"
    raw["agora"]["max_iterations"] = 1
    raw["search"] = {"n_trials": 1, "sampler": "random", "space": {"num_layers": {"type": "int", "low": 1, "high": 2}},
                     "latency": {"batch_size": 1, "seq_len": 16, "threads": 1, "warmup": 1, "repeats": 3,
                                 "rounds": 3, "calls_per_round": 2, "wait_s": 0},
                     "confirm": CONFIRM_QUICK}
    cfg = from_mapping(raw)
    run_worker(cfg, progress=False)
    [t] = open_study(cfg, create=False).get_trials()
    assert t.user_attrs["state"] == "complete"
    assert json.loads((Path(t.user_attrs["dir"]) / "model" / "metrics.json").read_text())["finetune"] == "agora"
