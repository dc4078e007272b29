"""Task metrics for compressed BERT models: GLUE-style classification/regression scores
and SQuAD 1.1/2.0 exact-match/F1 computed exactly as the official SQuAD 2.0 script."""

from __future__ import annotations

import collections
import re
import string
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from scipy.stats import rankdata

__all__ = [
    "PERCENT_METRICS", "SquadGold", "accuracy", "classification_metrics", "compute_exact", "compute_f1", "f1_binary",
    "f1_macro", "matthews_corrcoef", "normalize_answer", "pearson", "points", "regression_metrics", "spearman",
    "squad_evaluate", "squad_gold_from_json",
]

ArrayLike = Sequence[float] | Sequence[int] | np.ndarray
# SQuAD's figures are percentages already; every other metric lies in [0, 1] (or is a correlation)
PERCENT_METRICS = {"exact", "f1", "best_exact", "best_f1", "HasAns_exact", "HasAns_f1", "NoAns_exact", "NoAns_f1"}


def points(metric: str, value: float) -> float:
    """A metric value in points: x100 for metrics in [0, 1], as is for SQuAD's percentages."""
    return float(value) if metric in PERCENT_METRICS else 100.0 * float(value)


# --------------------------------------------------------------------------- #
# Classification / regression
# --------------------------------------------------------------------------- #

def _pair(a: ArrayLike, b: ArrayLike, names: tuple[str, str]) -> tuple[np.ndarray, np.ndarray]:
    """Return `a`, `b` as 1-D arrays, raising ValueError unless they are non-empty and equal in length."""
    x, y = np.asarray(a), np.asarray(b)
    if x.ndim != 1 or y.ndim != 1:
        raise ValueError(f"{names[0]} and {names[1]} must be 1-D; got shapes {x.shape} and {y.shape}; "
                         "flatten them or take argmax over the class axis first")
    if len(x) != len(y):
        raise ValueError(f"{names[0]} has length {len(x)} but {names[1]} has length {len(y)}; "
                         "pass one value per example in both")
    if len(x) == 0:
        raise ValueError(f"{names[0]} and {names[1]} are empty (length 0); pass at least one example")
    return x, y


def accuracy(preds: ArrayLike, labels: ArrayLike) -> float:
    """Fraction of examples whose predicted label equals the gold label."""
    p, y = _pair(preds, labels, ("preds", "labels"))
    return float(np.mean(p == y))


def _f1_for_class(p: np.ndarray, y: np.ndarray, cls: Any) -> float:
    """F1 = 2TP / (2TP + FP + FN) treating `cls` as the positive class; 0.0 when it never occurs."""
    tp = int(np.sum((p == cls) & (y == cls)))
    fp = int(np.sum((p == cls) & (y != cls)))
    fn = int(np.sum((p != cls) & (y == cls)))
    denom = 2 * tp + fp + fn
    return 2.0 * tp / denom if denom else 0.0


def f1_binary(preds: ArrayLike, labels: ArrayLike, positive: int = 1) -> float:
    """F1 of the `positive` class (harmonic mean of its precision and recall), as GLUE MRPC/QQP report."""
    p, y = _pair(preds, labels, ("preds", "labels"))
    return _f1_for_class(p, y, positive)


def f1_macro(preds: ArrayLike, labels: ArrayLike) -> float:
    """Unweighted mean of per-class F1 over every class seen in preds or labels."""
    p, y = _pair(preds, labels, ("preds", "labels"))
    classes = np.union1d(p, y)
    return float(np.mean([_f1_for_class(p, y, c) for c in classes]))


def matthews_corrcoef(preds: ArrayLike, labels: ArrayLike) -> float:
    """Matthews correlation (multi-class R_K statistic, GLUE CoLA); 0.0 when undefined."""
    p, y = _pair(preds, labels, ("preds", "labels"))
    classes, inv = np.unique(np.concatenate([y, p]), return_inverse=True)
    yi, pi = inv[: len(y)], inv[len(y):]
    conf = np.zeros((len(classes), len(classes)), dtype=np.float64)
    np.add.at(conf, (yi, pi), 1.0)
    t_sum, p_sum = conf.sum(axis=1), conf.sum(axis=0)
    n, correct = conf.sum(), np.trace(conf)
    cov_yp = correct * n - np.dot(t_sum, p_sum)
    cov_pp = n * n - np.dot(p_sum, p_sum)
    cov_yy = n * n - np.dot(t_sum, t_sum)
    if cov_pp * cov_yy == 0:
        return 0.0
    return float(cov_yp / np.sqrt(cov_yy * cov_pp))


def pearson(x: ArrayLike, y: ArrayLike) -> float:
    """Pearson linear correlation of x and y; 0.0 if either is constant (undefined)."""
    a, b = _pair(x, y, ("x", "y"))
    a = a.astype(np.float64) - np.mean(a, dtype=np.float64)
    b = b.astype(np.float64) - np.mean(b, dtype=np.float64)
    denom = np.sqrt(np.dot(a, a) * np.dot(b, b))
    if denom == 0 or not np.isfinite(denom):
        return 0.0
    return float(np.clip(np.dot(a, b) / denom, -1.0, 1.0))


def spearman(x: ArrayLike, y: ArrayLike) -> float:
    """Spearman rank correlation (Pearson on average ranks, ties share their mean rank); 0.0 if constant."""
    a, b = _pair(x, y, ("x", "y"))
    return pearson(rankdata(a, method="average"), rankdata(b, method="average"))


def classification_metrics(preds: ArrayLike, labels: ArrayLike, num_labels: int) -> dict[str, float]:
    """Accuracy, F1 (binary F1 of class 1 when num_labels == 2, else macro F1) and MCC."""
    if num_labels < 2:
        raise ValueError(f"num_labels={num_labels} but classification needs at least 2 classes; "
                         "use regression_metrics for a single output")
    p, y = _pair(preds, labels, ("preds", "labels"))
    for name, arr in (("preds", p), ("labels", y)):
        bad = arr[(arr < 0) | (arr >= num_labels)]
        if bad.size:
            raise ValueError(f"{name} contains {bad[0].item()!r}, outside 0..{num_labels - 1} for "
                             f"num_labels={num_labels}; map labels to class indices first")
    f1 = f1_binary(p, y, positive=1) if num_labels == 2 else f1_macro(p, y)
    return {"accuracy": accuracy(p, y), "f1": f1, "mcc": matthews_corrcoef(p, y)}


def regression_metrics(preds: ArrayLike, labels: ArrayLike) -> dict[str, float]:
    """Pearson and Spearman correlation and mean squared error (GLUE STS-B)."""
    p, y = _pair(preds, labels, ("preds", "labels"))
    diff = p.astype(np.float64) - y.astype(np.float64)
    return {"pearson": pearson(p, y), "spearman": spearman(p, y), "mse": float(np.mean(diff * diff))}


# --------------------------------------------------------------------------- #
# SQuAD (mirrors the official evaluate-v2.0.py, see tests/reference/evaluate_v2.py)
# --------------------------------------------------------------------------- #

@dataclass(frozen=True)
class SquadGold:
    """One question's gold answers: `answers` are raw answer texts, empty for an unanswerable question."""

    qid: str
    answers: tuple[str, ...]
    title: str = ""


_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCT = frozenset(string.punctuation)


def normalize_answer(s: str) -> str:
    """Lower-case, strip ASCII punctuation, drop the articles a/an/the and collapse whitespace."""
    text = "".join(ch for ch in s.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def _tokens(s: str) -> list[str]:
    """Whitespace tokens of the normalised answer (empty for an empty answer)."""
    return normalize_answer(s).split() if s else []


def compute_exact(a_gold: str, a_pred: str) -> int:
    """1 if the normalised prediction equals the normalised gold answer, else 0."""
    return int(normalize_answer(a_gold) == normalize_answer(a_pred))


def compute_f1(a_gold: str, a_pred: str) -> float:
    """Token-overlap F1 of prediction vs gold; if either is empty, 1 when both are empty else 0."""
    gold_toks, pred_toks = _tokens(a_gold), _tokens(a_pred)
    if not gold_toks or not pred_toks:
        return float(gold_toks == pred_toks)
    num_same = sum((collections.Counter(gold_toks) & collections.Counter(pred_toks)).values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(pred_toks)
    recall = num_same / len(gold_toks)
    return 2 * precision * recall / (precision + recall)


def squad_gold_from_json(dataset_json: dict[str, Any]) -> list[SquadGold]:
    """Gold answers from an official SQuAD 1.1/2.0 JSON; `is_impossible` questions get no answers."""
    if "data" not in dataset_json:
        raise ValueError(f"dataset_json has keys {sorted(dataset_json)[:5]} but no 'data'; "
                         "pass the whole parsed SQuAD file, e.g. json.load(open('dev-v2.0.json'))")
    gold = []
    for article in dataset_json["data"]:
        title = article.get("title", "")
        for para in article["paragraphs"]:
            for qa in para["qas"]:
                texts = () if qa.get("is_impossible", False) else tuple(a["text"] for a in qa["answers"])
                gold.append(SquadGold(qid=qa["id"], answers=texts, title=title))
    return gold


def _best_thresh(preds: dict[str, str], scores: dict[str, float], na_probs: dict[str, float],
                 has_ans: dict[str, bool]) -> tuple[float, float]:
    """Best score (percent) and na-prob threshold when abstaining above it (official find_best_thresh)."""
    cur = best = float(sum(1 for v in has_ans.values() if not v))
    best_thresh = 0.0
    for qid in sorted(na_probs, key=lambda k: na_probs[k]):  # stable, like the official script
        if qid not in scores:
            continue
        cur += scores[qid] if has_ans[qid] else (-1 if preds[qid] else 0)
        if cur > best:
            best, best_thresh = cur, na_probs[qid]
    return 100.0 * best / len(scores), best_thresh


def squad_evaluate(gold: list[SquadGold], preds: dict[str, str],
                   na_probs: dict[str, float] | None = None,
                   na_prob_thresh: float = 1.0) -> dict[str, float | int]:
    """SQuAD scores as the official v2.0 script's JSON output (percentages 0-100).

    `preds` maps qid -> answer text ("" means no answer); qids not in `gold` are ignored.
    `na_probs` maps qid -> P(no answer); a question whose probability exceeds `na_prob_thresh`
    is scored as abstained. With `na_probs`, best_exact/best_f1 and their thresholds are added.
    """
    if not gold:
        raise ValueError("gold is empty (0 questions); pass at least one SquadGold")
    dups = [q for q, n in collections.Counter(g.qid for g in gold).items() if n > 1]
    if dups:
        raise ValueError(f"gold has duplicate qids {dups[:5]}; each question must appear once")
    missing = [g.qid for g in gold if g.qid not in preds]
    if missing:
        raise ValueError(f"{len(missing)} gold questions have no prediction, e.g. {missing[:5]}; "
                         "predict \"\" for questions the model abstains on")
    if na_probs is not None:
        missing = [g.qid for g in gold if g.qid not in na_probs]
        if missing:
            raise ValueError(f"{len(missing)} gold questions have no na_prob, e.g. {missing[:5]}; "
                             "give every question a no-answer probability or pass na_probs=None")
    probs = na_probs if na_probs is not None else {k: 0.0 for k in preds}

    has_ans = {g.qid: bool(g.answers) for g in gold}
    exact_raw: dict[str, float] = {}
    f1_raw: dict[str, float] = {}
    for g in gold:
        answers = [a for a in g.answers if normalize_answer(a)] or [""]
        pred = preds[g.qid]
        exact_raw[g.qid] = max(compute_exact(a, pred) for a in answers)
        f1_raw[g.qid] = max(compute_f1(a, pred) for a in answers)

    def thresholded(raw: dict[str, float]) -> dict[str, float]:
        return {q: float(not has_ans[q]) if probs[q] > na_prob_thresh else s for q, s in raw.items()}

    exact, f1 = thresholded(exact_raw), thresholded(f1_raw)
    out: dict[str, float | int] = {}
    groups = [("", list(has_ans)), ("HasAns_", [q for q, v in has_ans.items() if v]),
              ("NoAns_", [q for q, v in has_ans.items() if not v])]
    for prefix, qids in groups:
        if qids:
            out[prefix + "exact"] = 100.0 * sum(exact[q] for q in qids) / len(qids)
            out[prefix + "f1"] = 100.0 * sum(f1[q] for q in qids) / len(qids)
            out[prefix + "total"] = len(qids)
    if na_probs is not None:
        gold_probs = {q: na_probs[q] for q in na_probs if q in has_ans}
        out["best_exact"], out["best_exact_thresh"] = _best_thresh(preds, exact_raw, gold_probs, has_ans)
        out["best_f1"], out["best_f1_thresh"] = _best_thresh(preds, f1_raw, gold_probs, has_ans)
    return out
