"""Reading trials back: one plain record per trial, Pareto dominance, the frontier (feasible, non-dominated
trials) and the baseline.

Latency figures carry their bootstrap intervals (latency_ms, latency_ratio and throughput), and the frontier is
decided with them (compress.search.intervals): a trial is dominated only by one at least as good on every
objective and better, with intervals apart, on one; a lead inside the noise never decides. Metrics and sizes are
exact. After a confirmation pass (compress.search.confirm) the figures it measured replace the trial's own in every
record ("latency_source": "confirmed", the in-study figures kept under "latency_in_study"), in the frontier and in
feasibility; a trial it did not measure keeps its single in-study measurement ("latency_source": "single").
"""

from __future__ import annotations

from itertools import combinations
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from .intervals import Estimate, Value, dominates_with_intervals, tied_with_intervals
from .objectives import MEASURES

__all__ = ["INTERVALS", "CONFIRMED_KEYS", "baseline_trial", "confirmation", "dominates", "frontier", "frontier_ties", "near_frontier",
           "record_values", "study_records", "trial_record"]

INTERVALS = {"latency_ms": "latency_ci95_ms", "latency_ratio": "latency_ratio_ci95", "throughput": "throughput_ci95"}
# what a confirmation pass measures again and puts in place of the trial's own figures
CONFIRMED_KEYS = ("latency_ms", "latency_ci95_ms", "latency_p90_ms", "latency_ratio", "latency_ratio_ci95",
                  "throughput", "throughput_ci95")


def confirmation(study: optuna.Study) -> dict[str, Any] | None:
    """The study's last confirmation pass (see compress.search.confirm), or None."""
    return study.user_attrs.get("confirmation")


def _confirmed_trials(study: optuna.Study) -> dict[str, dict[str, Any]]:
    return (confirmation(study) or {}).get("trials") or {}


def trial_record(t: FrozenTrial, objectives: list[str], confirmed: dict[str, Any] | None = None) -> dict[str, Any]:
    """One trial as a plain record: state, metric and measures, objectives, reason, spec, timings, paths.

    `confirmed`: this trial's entry of a confirmation pass; its figures replace the in-study ones (which stay
    under "latency_in_study"), and its feasibility, judged on them, replaces the trial's.
    """
    ua = t.user_attrs
    state = ua.get("state") or t.state.name.lower()
    if t.state == TrialState.RUNNING:
        state = "running"
    elif t.state == TrialState.WAITING:
        state = "waiting"
    meas = ua.get("measures", {})
    metric = ua.get("metric")
    rec = {
        "number": t.number, "state": state, "baseline": bool(ua.get("baseline")), "feasible": ua.get("feasible"),
        "metric": metric, "value": ua.get("metrics", {}).get(metric) if metric else None,
        **{k: meas.get(k) for k in MEASURES}, "latency_p90_ms": ua.get("latency_p90_ms"),
        "latency_ci95_ms": ua.get("latency_ci95_ms"), "latency_ratio_ci95": ua.get("latency_ratio_ci95"),
        "throughput_ci95": ua.get("throughput_ci95"),
        "objectives": dict(zip(objectives, t.values)) if t.values else None,
        "reason": ua.get("reason", ""), "retry_of": ua.get("retry_of"), "params_searched": t.params,
        "spec": ua.get("spec"), "distill": ua.get("distill"), "timings": ua.get("timings"),
        "steps": ua.get("steps"), "total_steps": ua.get("total_steps"), "dir": ua.get("dir"), "onnx": ua.get("onnx"),
        "precision": ua.get("precision", "fp32"),
        # multi-fidelity: the rung (training-row budget) it ran at and the trial it was promoted from
        "rung": ua.get("rung"), "promoted_from": ua.get("promoted_from"), "train_rows": ua.get("train_rows"),
        "rows_seen": ua.get("rows_seen"),
        # warm-started promotions: rows_seen is what this trial trained, rows_seen_total its parent chain's too
        "rows_seen_total": ua.get("rows_seen_total", ua.get("rows_seen")), "warm_start": ua.get("warm_start"),
        "vocab_prune": ua.get("vocab_prune"),  # None: the teacher's whole vocabulary
        "metrics": ua.get("metrics"), "latency_method": ua.get("latency_method"),
        "started": t.datetime_start.isoformat() if t.datetime_start else None,
        "finished": t.datetime_complete.isoformat() if t.datetime_complete else None,
    }
    rec["latency_source"] = None if rec["latency_ms"] is None else "single"
    if confirmed:
        rec["latency_in_study"] = {k: rec.get(k) for k in CONFIRMED_KEYS}
        rec.update({k: confirmed[k] for k in CONFIRMED_KEYS if confirmed.get(k) is not None})
        rec["feasible"] = confirmed.get("feasible", rec["feasible"])
        rec["latency_source"] = "confirmed"
        rec["confirmation"] = {k: confirmed.get(k) for k in ("at", "rounds", "calls_per_round", "contended")}
        if rec["objectives"]:
            rec["objectives"] = {k: (rec[k] if k in INTERVALS and rec.get(k) is not None else v)
                                 for k, v in rec["objectives"].items()}
    return rec


def study_records(study: optuna.Study, objectives: list[str] | None = None) -> list[dict[str, Any]]:
    """trial_record of every trial, with the study's confirmed figures where a confirmation pass measured them."""
    objectives = objectives if objectives is not None else (study.user_attrs.get("objectives") or [])
    confirmed = _confirmed_trials(study)
    return [trial_record(t, objectives, confirmed.get(str(t.number))) for t in study.get_trials(deepcopy=False)]


def record_values(rec: dict[str, Any], objectives: list[str], values: list[float] | None = None) -> list[Value]:
    """The record's objective values in order, each latency figure as an Estimate (value, low, high) when its
    interval is known; metrics and sizes are exact numbers. `values`: the trial's own (Optuna) values, used for
    objectives the record does not name."""
    out: list[Value] = []
    for i, name in enumerate(objectives):
        v = (rec.get("objectives") or {}).get(name)
        if v is None and values is not None:
            v = values[i]
        ci = rec.get(INTERVALS[name]) if name in INTERVALS else None
        if ci and len(ci) == 2 and ci[0] <= v <= ci[1]:
            out.append(Estimate(float(v), float(ci[0]), float(ci[1])))
        else:
            out.append(float(v))
    return out


def dominates(a: list[float], b: list[float], directions: list[str]) -> bool:
    """Whether `a` is at least as good as `b` on every objective and better on one (exact figures)."""
    better = False
    for x, y, d in zip(a, b, directions):
        if d == "maximize":
            x, y = -x, -y
        if x > y:
            return False
        if x < y:
            better = True
    return better


def on_top_rung(study: optuna.Study):
    """A test for trials comparable with each other: every trial, or in a multi-fidelity study those of the top
    rung (trained on the most rows); lower rungs never enter the frontier."""
    fid = study.user_attrs.get("fidelity")
    if not fid:
        return lambda t: True
    top = len(fid["rows"]) - 1
    return lambda t: int(t.user_attrs.get("rung", 0)) == top


def _points(study: optuna.Study) -> tuple[list[tuple[FrozenTrial, list[Value]]], list[str]]:
    """(trial, objective values with intervals) of every feasible completed trial, confirmed figures applied."""
    directions = [d.name.lower() for d in study.directions]
    objectives = study.user_attrs.get("objectives") or [f"objective {i}" for i in range(len(directions))]
    confirmed = _confirmed_trials(study)
    top = on_top_rung(study)
    out = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        rec = trial_record(t, objectives, confirmed.get(str(t.number)))
        if rec["feasible"] and t.user_attrs.get("state") == "complete" and top(t):
            out.append((t, record_values(rec, objectives, t.values)))
    return out, directions


def frontier(study: optuna.Study) -> list[FrozenTrial]:
    """Feasible, completed trials that no other one dominates with its intervals apart (infeasible and stopped
    trials never enter); with a confirmation pass, on its figures."""
    pts, directions = _points(study)
    return [t for t, v in pts if not any(dominates_with_intervals(w, v, directions) for o, w in pts if o is not t)]


def frontier_ties(study: optuna.Study) -> list[list[int]]:
    """Pairs of frontier trials whose intervals overlap on every objective they differ in: reported as ties."""
    directions = [d.name.lower() for d in study.directions]
    objectives = study.user_attrs.get("objectives") or []
    recs = {r["number"]: r for r in study_records(study, objectives)}
    front = sorted(t.number for t in frontier(study))
    values = {n: record_values(recs[n], objectives) for n in front}
    return [[a, b] for a, b in combinations(front, 2) if tied_with_intervals(values[a], values[b], directions)]


def _bound(v: Value, direction: str, best: bool) -> float:
    if not isinstance(v, tuple):
        return float(v)
    _, low, high = v
    good_low = direction == "minimize"
    return (low if good_low else high) if best else (high if good_low else low)


def near_frontier(study: optuna.Study) -> list[FrozenTrial]:
    """The frontier and the trials within the noise of it: every feasible completed trial that no other one would
    dominate with the other's figures at the bad end of their intervals and its own at the good end."""
    pts, directions = _points(study)

    def beaten(v: list[Value]) -> bool:
        best = [_bound(x, d, True) for x, d in zip(v, directions)]
        return any(dominates([_bound(x, d, False) for x, d in zip(w, directions)], best, directions)
                   for _, w in pts if w is not v)

    return [t for t, v in pts if not beaten(v)]


def baseline_trial(study: optuna.Study) -> FrozenTrial | None:
    """The study's completed baseline trial (the first, should a retry have made two), or None."""
    return next((t for t in study.get_trials(deepcopy=False)
                 if t.user_attrs.get("baseline") and t.state == TrialState.COMPLETE), None)
