"""Tests for compress.model.metrics: hand-worked metric values, scipy/sklearn agreement, and
key-for-key equality of squad_evaluate with the official SQuAD 2.0 script (tests/reference)."""
from __future__ import annotations

import json
import math
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats

from compress.model.metrics import (
    SquadGold,
    accuracy,
    classification_metrics,
    compute_exact,
    compute_f1,
    f1_binary,
    f1_macro,
    matthews_corrcoef,
    normalize_answer,
    pearson,
    regression_metrics,
    spearman,
    squad_evaluate,
    squad_gold_from_json,
)

REFERENCE_SCRIPT = Path(__file__).resolve().parents[1] / "reference" / "evaluate_v2.py"
SQUAD2_DEV_HALF = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "squad2" / "dev-v2.0-half.json"


# --------------------------------------------------------------------------- #
# Classification / regression
# --------------------------------------------------------------------------- #

BIN_PREDS = [1, 1, 0, 1, 0, 0]
BIN_LABELS = [1, 0, 0, 1, 1, 0]  # TP=2 (idx 0,3), FP=1 (idx 1), FN=1 (idx 4), TN=2 (idx 2,5)
MC_PREDS = [0, 1, 2, 2, 1, 0]
MC_LABELS = [0, 1, 1, 2, 2, 0]


def test_accuracy() -> None:
    assert accuracy(BIN_PREDS, BIN_LABELS) == pytest.approx(4 / 6)
    assert accuracy(np.array([2, 2]), np.array([2, 2])) == 1.0


def test_f1_binary_by_hand() -> None:
    # F1 = 2TP / (2TP + FP + FN) = 4 / 6
    assert f1_binary(BIN_PREDS, BIN_LABELS) == pytest.approx(2 / 3)
    # class 0 as positive: TP=2 (idx 2,5), FP=1 (idx 4), FN=1 (idx 1) -> 4/6
    assert f1_binary(BIN_PREDS, BIN_LABELS, positive=0) == pytest.approx(2 / 3)
    # the positive class never occurs -> 0.0 (sklearn's zero_division default)
    assert f1_binary([0, 0], [0, 0]) == 0.0


def test_f1_macro_by_hand() -> None:
    # class 0: TP=2 FP=0 FN=0 -> 1; class 1: TP=1 (idx 1) FP=1 (idx 4) FN=1 (idx 2) -> 0.5;
    # class 2: TP=1 (idx 3) FP=1 (idx 2) FN=1 (idx 4) -> 0.5; mean = 2/3
    assert f1_macro(MC_PREDS, MC_LABELS) == pytest.approx(2 / 3)


@pytest.mark.parametrize(
    ("preds", "labels", "expected"),
    [
        # binary: (TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = (4-1)/sqrt(81) = 1/3
        (BIN_PREDS, BIN_LABELS, 1 / 3),
        # multi-class: C = [[2,0,0],[0,1,1],[0,1,1]], t = p = [2,2,2], c = 4, s = 6:
        # (c*s - t.p) / sqrt((s^2 - p.p)(s^2 - t.t)) = (24 - 12) / sqrt(24 * 24) = 0.5
        (MC_PREDS, MC_LABELS, 0.5),
        ([0, 1, 2], [0, 1, 2], 1.0),
        ([1, 0], [0, 1], -1.0),
        ([1, 1, 1, 1], [0, 1, 0, 1], 0.0),  # constant predictions: undefined -> 0.0
        ([0, 0], [0, 0], 0.0),
    ],
)
def test_matthews_corrcoef_by_hand(preds: list[int], labels: list[int], expected: float) -> None:
    assert matthews_corrcoef(preds, labels) == pytest.approx(expected, abs=1e-12)


def test_pearson_spearman_by_hand() -> None:
    # dx = [-1.5,-.5,.5,1.5], dy = [-3,-1,0,4]: r = 11 / sqrt(5 * 26)
    assert pearson([1, 2, 3, 4], [2, 4, 5, 9]) == pytest.approx(11 / math.sqrt(130), abs=1e-12)
    # ties: ranks x = [1, 2.5, 2.5, 4], y = [1, 3, 2, 4]: r = 4.5 / sqrt(4.5 * 5) = 3 / sqrt(10)
    assert spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(3 / math.sqrt(10), abs=1e-12)
    assert spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(stats.spearmanr([1, 2, 2, 3], [1, 3, 2, 4])[0])


@pytest.mark.parametrize("fn", [pearson, spearman])
def test_correlation_constant_input_is_zero(fn: Any) -> None:
    assert fn([3.0, 3.0, 3.0], [1.0, 2.0, 3.0]) == 0.0
    assert fn([1.0, 2.0, 3.0], [7, 7, 7]) == 0.0
    assert fn([5.0], [2.0]) == 0.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_correlations_match_scipy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 6, size=40).astype(float)  # small range -> many ties
    y = x + rng.normal(0, 2, size=40).round(1)
    assert pearson(x, y) == pytest.approx(stats.pearsonr(x, y)[0], abs=1e-12)
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y)[0], abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_classification_matches_sklearn(seed: int) -> None:
    skm = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, size=50)
    preds = np.where(rng.random(50) < 0.6, labels, rng.integers(0, 3, size=50))
    assert f1_macro(preds, labels) == pytest.approx(skm.f1_score(labels, preds, average="macro"), abs=1e-12)
    assert matthews_corrcoef(preds, labels) == pytest.approx(skm.matthews_corrcoef(labels, preds), abs=1e-12)
    b_labels, b_preds = labels % 2, preds % 2
    assert f1_binary(b_preds, b_labels) == pytest.approx(skm.f1_score(b_labels, b_preds), abs=1e-12)


def test_classification_metrics_picks_f1_by_num_labels() -> None:
    binary = classification_metrics(BIN_PREDS, BIN_LABELS, num_labels=2)
    assert binary == pytest.approx({"accuracy": 4 / 6, "f1": 2 / 3, "mcc": 1 / 3})
    multi = classification_metrics(MC_PREDS, MC_LABELS, num_labels=3)
    assert multi == pytest.approx({"accuracy": 4 / 6, "f1": 2 / 3, "mcc": 0.5})


def test_regression_metrics() -> None:
    out = regression_metrics([1.0, 2.0, 3.0, 4.0], [2.0, 4.0, 5.0, 9.0])
    # squared errors 1, 4, 4, 25 -> mse 8.5; ranks identical -> spearman 1
    assert out == pytest.approx({"pearson": 11 / math.sqrt(130), "spearman": 1.0, "mse": 8.5})


@pytest.mark.parametrize("fn", [accuracy, f1_binary, f1_macro, matthews_corrcoef, pearson, spearman,
                                regression_metrics])
def test_length_mismatch_and_empty_raise(fn: Any) -> None:
    with pytest.raises(ValueError, match=r"length 3 .* length 2"):
        fn([1, 0, 1], [1, 0])
    with pytest.raises(ValueError, match="empty"):
        fn([], [])


def test_classification_metrics_rejects_bad_labels() -> None:
    with pytest.raises(ValueError, match="length 2 .* length 1"):
        classification_metrics([0, 1], [1], num_labels=2)
    with pytest.raises(ValueError, match=r"labels contains 2, outside 0\.\.1"):
        classification_metrics([0, 1], [0, 2], num_labels=2)
    with pytest.raises(ValueError, match="num_labels=1"):
        classification_metrics([0], [0], num_labels=1)


# --------------------------------------------------------------------------- #
# SQuAD: hand-worked
# --------------------------------------------------------------------------- #

@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  The  Eiffel Tower!! ", "eiffel tower"),
        ("An apple, a day", "apple day"),
        ("THEORY of the anthem", "theory of anthem"),  # articles only as whole words
        ("U.S.A.", "usa"),
        ("the", ""),
        ("café — naïve", "café — naïve"),  # non-ASCII punctuation is kept, as officially
    ],
)
def test_normalize_answer(raw: str, expected: str) -> None:
    assert normalize_answer(raw) == expected


def test_compute_exact_and_f1() -> None:
    assert compute_exact("The Cat", "cat.") == 1
    assert compute_exact("cat", "cats") == 0
    # pred [in, paris, france] vs gold [paris, france]: P = 2/3, R = 1 -> F1 = 0.8
    assert compute_f1("Paris, France", "in Paris France") == pytest.approx(0.8)
    assert compute_f1("", "") == 1.0
    assert compute_f1("", "something") == 0.0
    assert compute_f1("red car", "blue bike") == 0.0


HAND_GOLD = [
    SquadGold("q1", ("The Eiffel Tower",)),
    SquadGold("q2", ("Paris", "Paris, France", "the city of Paris")),
    SquadGold("q3", ()),
    SquadGold("q4", ()),
    SquadGold("q5", ("1889",)),
    SquadGold("q6", ("the", "Gustave Eiffel")),
]
HAND_PREDS = {
    "q1": "  EIFFEL   tower. ",  # normalises to "eiffel tower" = gold -> exact 1, f1 1
    # vs "Paris": P=1/3 R=1 F1=0.5; vs "Paris, France": P=2/3 R=1 F1=0.8;
    # vs "the city of Paris": P=1/3 R=1/3 F1=1/3 -> exact 0, f1 max 0.8
    "q2": "in Paris France",
    "q3": "",  # unanswerable, abstained -> 1, 1
    "q4": "Napoleon",  # unanswerable, answered -> 0, 0
    "q5": "",  # answerable, abstained -> 0, 0
    # gold "the" normalises to "" and is dropped; vs "Gustave Eiffel": P=1 R=1/2 -> F1 2/3
    "q6": "Eiffel",
    "not-in-gold": "ignored",
}
HAND_NA_PROBS = {"q1": 0.1, "q2": 0.3, "q3": 0.9, "q4": 0.8, "q5": 0.6, "q6": 0.2, "not-in-gold": 0.0}


def test_squad_evaluate_by_hand() -> None:
    out = squad_evaluate(HAND_GOLD, HAND_PREDS)
    # exact: [1,0,1,0,0,0]; f1: [1, .8, 1, 0, 0, 2/3] (sum 3.4667)
    # HasAns = q1,q2,q5,q6: exact [1,0,0,0], f1 [1,.8,0,2/3]; NoAns = q3,q4: [1,0] for both
    assert out == pytest.approx({
        "exact": 100 * 2 / 6, "f1": 100 * (1 + 0.8 + 1 + 2 / 3) / 6, "total": 6,
        "HasAns_exact": 25.0, "HasAns_f1": 100 * (1 + 0.8 + 2 / 3) / 4, "HasAns_total": 4,
        "NoAns_exact": 50.0, "NoAns_f1": 50.0, "NoAns_total": 2,
    }, abs=1e-9)
    assert list(out) == ["exact", "f1", "total", "HasAns_exact", "HasAns_f1", "HasAns_total",
                         "NoAns_exact", "NoAns_f1", "NoAns_total"]


def test_squad_evaluate_by_hand_with_na_probs() -> None:
    out = squad_evaluate(HAND_GOLD, HAND_PREDS, HAND_NA_PROBS, na_prob_thresh=0.5)
    # na_prob > 0.5 for q3, q4, q5 -> scored as abstentions: q3 -> 1, q4 -> 1 (now right), q5 -> 0.
    # exact [1,0,1,1,0,0] = 3/6; f1 [1,.8,1,1,0,2/3]
    # best thresh: order q1 .1, q6 .2, q2 .3, q5 .6, q4 .8, q3 .9; start = #NoAns = 2.
    #   exact: +1 (q1) -> 3 @ .1, then +0, +0, +0, -1 (q4 answered), 0 -> best 3/6 @ 0.1
    #   f1:    +1 -> 3 @ .1, +2/3 -> 3.667 @ .2, +.8 -> 4.467 @ .3, +0, -1, 0 -> best 4.467/6 @ 0.3
    assert out == pytest.approx({
        "exact": 50.0, "f1": 100 * (1 + 0.8 + 1 + 1 + 2 / 3) / 6, "total": 6,
        "HasAns_exact": 25.0, "HasAns_f1": 100 * (1 + 0.8 + 2 / 3) / 4, "HasAns_total": 4,
        "NoAns_exact": 100.0, "NoAns_f1": 100.0, "NoAns_total": 2,
        "best_exact": 50.0, "best_exact_thresh": 0.1,
        "best_f1": 100 * (1 + 2 / 3 + 0.8 + 2) / 6, "best_f1_thresh": 0.3,
    }, abs=1e-9)


def test_squad_evaluate_only_answerable_has_no_noans_keys() -> None:
    out = squad_evaluate([SquadGold("a", ("x",)), SquadGold("b", ("y z",))], {"a": "x", "b": "y"})
    assert out == pytest.approx({"exact": 50.0, "f1": 100 * (1 + 2 / 3) / 2, "total": 2,
                                 "HasAns_exact": 50.0, "HasAns_f1": 100 * (1 + 2 / 3) / 2,
                                 "HasAns_total": 2})


def test_squad_evaluate_errors() -> None:
    gold = [SquadGold(f"q{i}", ("a b",)) for i in range(7)]
    with pytest.raises(ValueError, match=r"7 gold questions have no prediction, e.g. \['q0', .*'q4'\]"):
        squad_evaluate(gold, {})
    with pytest.raises(ValueError, match="no na_prob"):
        squad_evaluate(gold, {g.qid: "" for g in gold}, na_probs={"q0": 0.5})
    with pytest.raises(ValueError, match=r"duplicate qids \['q0'\]"):
        squad_evaluate(gold + [gold[0]], {g.qid: "" for g in gold})
    with pytest.raises(ValueError, match="empty"):
        squad_evaluate([], {})


def test_squad_gold_from_json() -> None:
    data = {"data": [
        {"title": "T1", "paragraphs": [{"context": "c", "qas": [
            {"id": "a", "question": "?", "answers": [{"text": "x", "answer_start": 0},
                                                     {"text": "y", "answer_start": 0}]},
            {"id": "b", "question": "?", "answers": [], "is_impossible": True,
             "plausible_answers": [{"text": "z", "answer_start": 0}]},
            {"id": "c", "question": "?", "answers": [{"text": "w", "answer_start": 0}],
             "is_impossible": False},
        ]}]},
    ]}
    assert squad_gold_from_json(data) == [
        SquadGold("a", ("x", "y"), "T1"), SquadGold("b", (), "T1"), SquadGold("c", ("w",), "T1")]
    with pytest.raises(ValueError, match="no 'data'"):
        squad_gold_from_json({"version": "v2.0"})


# --------------------------------------------------------------------------- #
# SQuAD: equality with the official script
# --------------------------------------------------------------------------- #

def _synthetic_squad() -> dict[str, Any]:
    """A small SQuAD 2.0 file with three articles, incl. a 1.1-style one and awkward answers."""
    def qa(qid: str, answers: list[str], impossible: bool | None = None) -> dict[str, Any]:
        entry: dict[str, Any] = {"id": qid, "question": f"question {qid}?",
                                 "answers": [{"text": t, "answer_start": 0} for t in answers]}
        if impossible is not None:
            entry["is_impossible"] = impossible
        return entry

    return {"version": "v2.0", "data": [
        {"title": "Normans", "paragraphs": [
            {"context": "The Normans were the people who in the 10th and 11th centuries gave their name "
                        "to Normandy, a region in France.",
             "qas": [qa("n1", ["France", "in France", "a region in France"], False),
                     qa("n2", ["10th and 11th centuries", "the 10th and 11th centuries"], False),
                     qa("n3", [], True), qa("n4", [], True),
                     qa("n5", ["Normandy"], False)]}]},
        {"title": "Café_culture", "paragraphs": [
            {"context": "A café — the naïve kind — serves an espresso, U.S.-style.",
             "qas": [qa("c1", ["café"], False), qa("c2", ["The", "an espresso"], False),
                     qa("c3", ["U.S.-style"], False), qa("c4", [], True),
                     qa("c5", ["the"], False)]}]},  # every gold answer normalises to ""
        {"title": "Legacy_v1", "paragraphs": [  # SQuAD 1.1 style: no is_impossible
            {"context": "Denver Broncos defeated the Carolina Panthers 24 to 10.",
             "qas": [qa("v1", ["Denver Broncos", "Broncos"]), qa("v2", ["24 to 10", "24-10"])]}]},
    ]}


def _make_predictions(dataset: dict[str, Any], seed: int) -> tuple[dict[str, str], dict[str, float]]:
    """Deterministic mix of exact, reformatted, partial, empty and wrong answers plus rounded na_probs."""
    rng = random.Random(seed)
    preds: dict[str, str] = {}
    na_probs: dict[str, float] = {}
    for article in dataset["data"]:
        for para in article["paragraphs"]:
            words = para["context"].split()
            for q in para["qas"]:
                golds = [a["text"] for a in q["answers"]]
                span = " ".join(words[(s := rng.randrange(len(words))): s + rng.randint(1, 4)])
                kind = rng.randrange(6)
                if kind == 0 and golds:
                    preds[q["id"]] = rng.choice(golds)
                elif kind == 1 and golds:
                    preds[q["id"]] = f"  The {rng.choice(golds).upper()}!! "
                elif kind == 2 and golds:
                    toks = rng.choice(golds).split()
                    preds[q["id"]] = " ".join(toks[: max(1, len(toks) // 2)] + [rng.choice(words)])
                elif kind == 3:
                    preds[q["id"]] = ""
                else:
                    preds[q["id"]] = span
                na_probs[q["id"]] = round(rng.random(), 1)  # coarse -> many ties
    preds["extra-qid"], na_probs["extra-qid"] = "ignored", 0.05
    return preds, na_probs


def _official(tmp_path: Path, dataset: dict[str, Any], preds: dict[str, str],
              na_probs: dict[str, float] | None, thresh: float | None) -> dict[str, Any]:
    """Run tests/reference/evaluate_v2.py on the given inputs and return its JSON output."""
    data_f, pred_f, na_f, out_f = (tmp_path / n for n in ("data.json", "preds.json", "na.json", "out.json"))
    data_f.write_text(json.dumps(dataset))
    pred_f.write_text(json.dumps(preds))
    cmd = [sys.executable, str(REFERENCE_SCRIPT), str(data_f), str(pred_f), "--out-file", str(out_f)]
    if na_probs is not None:
        na_f.write_text(json.dumps(na_probs))
        cmd += ["--na-prob-file", str(na_f)]
    if thresh is not None:
        cmd += ["--na-prob-thresh", str(thresh)]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out_f.read_text())


def _assert_same(ours: dict[str, Any], official: dict[str, Any]) -> None:
    assert list(ours) == list(official)
    for key, value in official.items():
        assert ours[key] == pytest.approx(value, rel=1e-9, abs=1e-9), key


def _load_real() -> dict[str, Any]:
    if not SQUAD2_DEV_HALF.is_file():
        pytest.skip(f"real SQuAD 2.0 data not found at {SQUAD2_DEV_HALF}; synthetic cases still run")
    return json.loads(SQUAD2_DEV_HALF.read_text())


@pytest.mark.parametrize("source", ["synthetic", "real"])
@pytest.mark.parametrize(("use_na", "thresh"), [(False, None), (True, 0.4), (True, None)])
@pytest.mark.parametrize("seed", [0, 1])
def test_squad_matches_official(tmp_path: Path, source: str, use_na: bool, thresh: float | None,
                                seed: int) -> None:
    dataset = _synthetic_squad() if source == "synthetic" else _load_real()
    preds, na_probs = _make_predictions(dataset, seed)
    official = _official(tmp_path, dataset, preds, na_probs if use_na else None, thresh)
    ours = squad_evaluate(squad_gold_from_json(dataset), preds, na_probs if use_na else None,
                          na_prob_thresh=1.0 if thresh is None else thresh)
    _assert_same(ours, official)


def test_squad_hand_case_matches_official(tmp_path: Path) -> None:
    dataset = {"data": [{"title": "hand", "paragraphs": [{"context": "", "qas": [
        {"id": g.qid, "question": "?", "is_impossible": not g.answers,
         "answers": [{"text": t, "answer_start": 0} for t in g.answers]} for g in HAND_GOLD]}]}]}
    official = _official(tmp_path, dataset, HAND_PREDS, HAND_NA_PROBS, 0.5)
    _assert_same(squad_evaluate(HAND_GOLD, HAND_PREDS, HAND_NA_PROBS, 0.5), official)
