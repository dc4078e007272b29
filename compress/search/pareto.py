"""Reading trials back: one plain record per trial, Pareto dominance, the frontier (feasible, non-dominated
trials) and the baseline."""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from .objectives import MEASURES

__all__ = ["baseline_trial", "dominates", "frontier", "trial_record"]


def trial_record(t: FrozenTrial, objectives: list[str]) -> dict[str, Any]:
    """One trial as a plain record: state, metric and measures, objectives, reason, spec, timings, paths."""
    ua = t.user_attrs
    state = ua.get("state") or t.state.name.lower()
    if t.state == TrialState.RUNNING:
        state = "running"
    elif t.state == TrialState.WAITING:
        state = "waiting"
    meas = ua.get("measures", {})
    metric = ua.get("metric")
    return {
        "number": t.number, "state": state, "baseline": bool(ua.get("baseline")), "feasible": ua.get("feasible"),
        "metric": metric, "value": ua.get("metrics", {}).get(metric) if metric else None,
        **{k: meas.get(k) for k in MEASURES}, "latency_p90_ms": ua.get("latency_p90_ms"),
        "latency_ci95_ms": ua.get("latency_ci95_ms"), "latency_ratio_ci95": ua.get("latency_ratio_ci95"),
        "objectives": dict(zip(objectives, t.values)) if t.values else None,
        "reason": ua.get("reason", ""), "retry_of": ua.get("retry_of"), "params_searched": t.params,
        "spec": ua.get("spec"), "distill": ua.get("distill"), "timings": ua.get("timings"),
        "steps": ua.get("steps"), "total_steps": ua.get("total_steps"), "dir": ua.get("dir"), "onnx": ua.get("onnx"),
        "precision": ua.get("precision", "fp32"),
        "metrics": ua.get("metrics"), "latency_method": ua.get("latency_method"),
        "started": t.datetime_start.isoformat() if t.datetime_start else None,
        "finished": t.datetime_complete.isoformat() if t.datetime_complete else None,
    }


def dominates(a: list[float], b: list[float], directions: list[str]) -> bool:
    """Whether `a` is at least as good as `b` on every objective and better on one."""
    better = False
    for x, y, d in zip(a, b, directions):
        if d == "maximize":
            x, y = -x, -y
        if x > y:
            return False
        if x < y:
            better = True
    return better


def frontier(study: optuna.Study) -> list[FrozenTrial]:
    """Feasible, completed, non-dominated trials (infeasible and stopped trials never enter)."""
    directions = [d.name.lower() for d in study.directions]
    ok = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
          if t.user_attrs.get("feasible") and t.user_attrs.get("state") == "complete"]
    return [t for t in ok if not any(dominates(o.values, t.values, directions) for o in ok if o is not t)]


def baseline_trial(study: optuna.Study) -> FrozenTrial | None:
    """The study's completed baseline trial (the first, should a retry have made two), or None."""
    return next((t for t in study.get_trials(deepcopy=False)
                 if t.user_attrs.get("baseline") and t.state == TrialState.COMPLETE), None)

