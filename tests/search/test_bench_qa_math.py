"""bench-qa's pieces that decide what it reports: the recipe's article split, the search job derived from it, the
learning curve and its closing rate, the chosen student and the goals (the benchmark itself runs for many hours)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from compress.config import from_mapping
from tests.conftest import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("bench_qa")


def _articles(sources):
    out = []
    for s in sources:
        if "dev-v2.0-half" in s["path"]:
            a, b = (int(x) for x in s["articles"].split(":"))
            out.append(set(range(a, b)))
    return out


def test_the_recipe_splits_the_squad2_half_by_article_and_loads(bench):
    raw = bench.base_mapping()
    [train], [ev], [test] = (_articles(raw["data"][k]) for k in ("train", "eval", "test"))
    assert train and ev and test and not (train & ev) and not (train & test) and not (ev & test)
    assert train | ev | test == set(range(16))
    squad1 = raw["data"]["train"][0]
    assert "train-v1.1" in squad1["path"] and "limit" not in squad1  # all of SQuAD 1.1 for the teacher
    cfg = from_mapping(raw, config_path=str(bench.CONFIG))
    assert cfg.data.negatives.ratio == 0.5 and cfg.data.max_seq_length == 384 and cfg.data.doc_stride == 128
    assert cfg.teacher.train.checkpoint_every > 0 and cfg.teacher.train.group_by_length


def test_the_search_job_trains_on_a_sample_keeps_eval_and_test_and_constrains_on_the_teacher(bench):
    raw = bench.base_mapping()
    job = bench.study_mapping(raw, teacher_best_f1=70.0, questions=5000)
    assert job["data"]["train"][0]["limit"] == 5000 and job["data"]["train"][0]["sample_seed"] == 0
    assert job["data"]["eval"] == raw["data"]["eval"] and job["data"]["test"] == raw["data"]["test"]
    assert job["search"]["constraints"] == ["best_f1 >= 63.00"]
    assert job["teacher"]["model"].endswith("qa-squad2/teacher") and job["task"]["metric"] == "best_f1"
    assert job["search"]["n_trials"] >= 12 and job["search"]["latency"]["seq_len"] == 384
    assert job["search"]["latency"]["batch_size"] == 1
    assert raw["data"]["train"][0].get("limit") is None  # the recipe itself is not changed
    cfg = from_mapping(job, config_path=str(bench.CONFIG))
    assert cfg.search.fidelity.enabled and cfg.task.primary_metric == "best_f1"


def test_learning_curve_counts_questions_and_the_closing_rate_is_the_recent_slope(bench):
    raw_curve = [{"step": s, "epoch": s / 100, "loss": 3 - s / 100, "f1": 40 + s / 10, "best_f1": b,
                  "HasAns_f1": 50.0, "NoAns_exact": 60.0} for s, b in ((100, 40.0), (200, 50.0), (300, 55.0),
                                                                         (400, 57.0))]
    pts = bench.learning_curve(raw_curve, batch_size=32, windows_per_question=1.6)
    assert [p["questions_seen"] for p in pts] == [2000, 4000, 6000, 8000]
    assert pts[-1]["windows_seen"] == 12800
    r = bench.closing_rate(pts)
    # the last three points: 50 -> 55 -> 57 over 4,000 -> 8,000 questions: least squares 3.5 points per 2,000
    assert r["latest"] == 57.0 and r["over_points"] == 3 and r["per_10k_questions"] == pytest.approx(17.5)
    assert bench.closing_rate(pts[:1]) is None


def _rows():
    base = {"params": 1, "latency_ms": 1.0, "test_exact": 60.0, "eval_best_f1": 60.0, "promoted": True,
            "train_rows": 100, "spec": {}, "precision": "fp32", "test_HasAns_f1": 60.0, "speedup": None}
    return [
        {**base, "trial": 1, "latency_ratio": 0.30, "latency_ratio_ci95": [0.28, 0.32], "test_f1": 60.0,
         "f1_share": 0.80, "test_HasAns_exact": 50.0, "test_NoAns_exact": 70.0},
        {**base, "trial": 2, "latency_ratio": 0.45, "latency_ratio_ci95": [0.40, 0.55], "test_f1": 70.0,
         "f1_share": 0.93, "test_HasAns_exact": 60.0, "test_NoAns_exact": 75.0},  # not surely 2x: interval to 0.55
        {**base, "trial": 3, "latency_ratio": 0.48, "latency_ratio_ci95": [0.46, 0.50], "test_f1": 66.0,
         "f1_share": 0.88, "test_HasAns_exact": 58.0, "test_NoAns_exact": 80.0},
    ]


def test_the_chosen_student_is_the_most_accurate_surely_2x_faster_one_and_the_goals_follow(bench):
    rows = _rows()
    chosen = bench.choose_student(rows, {"frontier": []})
    assert chosen["trial"] == 3
    teacher = {"metrics": {"f1": 75.0, "HasAns_f1": 72.0, "HasAns_exact": 66.0, "NoAns_exact": 78.0}}
    g = bench.compute_goals(teacher, rows, chosen)
    assert g["teacher_f1"] == {"value": 75.0, "goal": 65.0, "met": True}
    assert g["teacher_hasans_f1"]["met"] and g["teacher_hasans_f1"]["value"] == 72.0
    assert g["student_f1_share_at_2x"] == {"value": 0.88, "goal": 0.95, "met": False}
    assert g["student_hasans_noans_balance"] == {"value": 8.0, "goal": 10.0, "met": True}  # |58-66|, |80-78|
    json.dumps(g)
    # Before anything is scored: every goal is there, unmet, with no value.
    empty = bench.compute_goals(None, [], None)
    assert set(empty) == set(bench.GOALS) and all(v["value"] is None and not v["met"] for v in empty.values())


def test_the_served_sample_spreads_over_articles_and_keeps_every_window_of_its_questions(bench, tmp_path, tokenizer):
    from compress.data.features import prepare_task_data
    from compress.model.inference import score_outputs
    from tests.conftest import job_config

    arts = []
    for a in range(4):
        ctx = " ".join(f"Sentence {i} of article {a} tells that the answer is item{a}x{i}." for i in range(12))
        qas = [{"id": f"a{a}q{i}", "question": f"What does sentence {i} of article {a} tell?",
                "answers": [{"text": f"item{a}x{i}", "answer_start": ctx.index(f"item{a}x{i}.")}]} for i in range(5)]
        arts.append({"title": f"T{a}", "paragraphs": [{"context": ctx, "qas": qas}]})
    path = tmp_path / "sq.json"
    path.write_text(json.dumps({"version": "1.1", "data": arts}))
    raw = job_config(tmp_path, {"type": "qa"}, {"path": str(path)}, {"path": str(path)}, "unused")
    raw["data"].update({"max_seq_length": 64, "doc_stride": 16})
    cfg = from_mapping(raw)
    data = prepare_task_data(cfg, tokenizer)
    split = data.eval
    assert len(split) > len(split.examples)  # contexts in several windows
    sub = bench.sample_questions(split, 6, seed=0)
    assert len(sub.examples) == 6 and len({ex.title for ex in sub.examples}) > 1
    qids = [ex.qid for ex in split.examples]
    assert [qids.index(ex.qid) for ex in sub.examples] == sorted(qids.index(ex.qid) for ex in sub.examples)
    for j, ex in enumerate(sub.examples):  # every window of a chosen question, renumbered to its new place
        i = qids.index(ex.qid)
        assert (sub.arrays["example_index"] == j).sum() == (split.arrays["example_index"] == i).sum()
    # The sample decodes as the whole split does: the same answer for each chosen question.
    rng = np.random.default_rng(1)
    outs = {k: rng.normal(size=split.arrays["input_ids"].shape).astype(np.float32)
            for k in ("start_logits", "end_logits")}
    _, whole = score_outputs(data, split, outs)
    keep = np.isin(split.arrays["example_index"], [qids.index(ex.qid) for ex in sub.examples])
    _, part = score_outputs(data, sub, {k: v[keep] for k, v in outs.items()})
    by_qid = {p.qid: p for p in whole}
    assert [(p.qid, p.text, p.start) for p in part] == [(p.qid, by_qid[p.qid].text, by_qid[p.qid].start) for p in part]
