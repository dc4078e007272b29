"""How well the FPTAS surrogate error stands in for the real one, and what each alpha of the W-coefficient would
put first, once every candidate has been distilled fully (`compress fptas --calibrate`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..model.metrics import points
from .fptas import w_coefficient
from .pareto import dominates

__all__ = ["calibrate", "misses", "nondominated", "real_relative_error", "spearman"]


def spearman(x, y) -> float:
    """Spearman's rank correlation (ties get their average rank); nan when either side is constant."""
    def ranks(v):
        v = np.asarray(v, dtype=float)
        order = np.argsort(v, kind="mergesort")
        r = np.empty(len(v))
        r[order] = np.arange(1, len(v) + 1)
        for value in np.unique(v):  # average the ranks of ties
            tie = v == value
            r[tie] = r[tie].mean()
        return r

    a, b = ranks(x), ranks(y)
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def real_relative_error(value: float, teacher_value: float, metric: str, higher_is_better: bool = True) -> float:
    """The distilled candidate's error relative to the teacher's, the real counterpart of e / e_max: points short
    of perfect over the teacher's points short of perfect (a lower-is-better metric such as mse: value/teacher)."""
    if not higher_is_better:
        return float(value) / max(float(teacher_value), 1e-12)
    return (100.0 - points(metric, value)) / max(100.0 - points(metric, teacher_value), 1e-6)


def nondominated(items: list[dict[str, Any]]) -> set[str]:
    """Names of the candidates no other one beats on (metric up, params down, latency down) at once."""
    def values(it):
        return [it["value"], it["params"], it["latency_ms"]]

    directions = ["maximize", "minimize", "minimize"]
    return {a["candidate"] for a in items
            if not any(dominates(values(b), values(a), directions) for b in items if b is not a)}


def misses(constraints, measured: dict[str, float]) -> list[str]:
    """The constraints (search.constraints) a measured candidate fails; those naming nothing measured are skipped."""
    return [str(cn) for cn in constraints if cn.name in measured and cn.violation(measured[cn.name]) > 0]


def calibrate(result: dict[str, Any], teacher_value: float, metric: str, alphas, constraints=(),
              higher_is_better: bool = True) -> dict[str, Any]:
    """How well the surrogate error stands in for the real one, and what each alpha would pick.

    Needs every ranked candidate distilled fully (`result["distilled"]` covering `result["ranking"]`). Returns:
    - the fit log r = k log s + c of the real relative error r (`real_relative_error`) on the surrogate relative
      error s = e / e_max, with R^2, and Spearman's rho of s against r. Since r ~ C s^k, W with exponent alpha on
      s ranks like W with exponent alpha / k on the real error: `alpha_for_real_1to1` = k is the alpha at which one
      unit of log real error trades evenly against one unit of log size and of log speed;
    - per alpha: the candidate W puts first, its distilled metric, parameters and latency, whether it meets the
      constraints (objects with .name and .violation(measured)) and lies on the distilled candidates' frontier,
      the candidate a perfect surrogate would put first, and Spearman's rho between the two rankings;
    - `alpha_meeting_constraints`: the smallest alpha of the grid whose first candidate meets every constraint
      and is on the frontier (None when no alpha does, or there are no constraints).
    """
    mp = result["maximum_point"]
    dist = {d["candidate"]: d for d in result["distilled"]}
    rows = [r for r in result["ranking"] if r["candidate"] in dist]
    if len(rows) < 3:
        raise ValueError(f"calibration needs at least 3 fully distilled candidates; got {len(rows)} "
                         "(run with fptas.calibrate: true, which distills them all)")
    items = []
    for r in rows:
        d = dist[r["candidate"]]
        items.append({"candidate": r["candidate"], "params": r["params"], "inference_ms": r["inference_ms"],
                      "surrogate_error": r["surrogate_error"], "s": r["relative_error"],
                      "r": real_relative_error(d["value"], teacher_value, metric, higher_is_better),
                      "value": d["value"], "latency_ms": d["latency_ms"]})
    s = np.log([it["s"] for it in items])
    r = np.log([max(it["r"], 1e-6) for it in items])
    k, c = np.polyfit(s, r, 1)
    fit = k * s + c
    ss_tot = float(((r - r.mean()) ** 2).sum())
    r2 = 1.0 - float(((r - fit) ** 2).sum()) / ss_tot if ss_tot > 0 else float("nan")
    front = nondominated(items)
    per_alpha = []
    for a in alphas:
        w_s = [w_coefficient(it["params"], it["inference_ms"], it["surrogate_error"], mp["params"],
                             mp["inference_ms"], mp["surrogate_error"], a) for it in items]
        w_r = [(mp["params"] / it["params"]) * (mp["inference_ms"] / it["inference_ms"]) / max(it["r"], 1e-6) ** a
               for it in items]
        top = items[int(np.argmax(w_s))]
        ideal = items[int(np.argmax(w_r))]
        meets = not misses(constraints, {metric: top["value"], "params": top["params"],
                                          "latency_ms": top["latency_ms"]})
        per_alpha.append({"alpha": a, "top": top["candidate"], "value": top["value"], "params": top["params"],
                          "latency_ms": top["latency_ms"], "meets_constraints": meets,
                          "on_frontier": top["candidate"] in front, "ideal_top": ideal["candidate"],
                          "ideal_value": ideal["value"], "spearman_w": spearman(w_s, w_r)})
    ok = [p["alpha"] for p in per_alpha if p["meets_constraints"] and p["on_frontier"]]
    return {"candidates": items, "k": float(k), "c": float(c), "r2": r2, "alpha_for_real_1to1": float(k),
            "spearman_error": spearman([it["s"] for it in items], [it["r"] for it in items]),
            "spearman_error_metric": spearman([it["surrogate_error"] for it in items], [it["value"] for it in items]),
            "frontier": sorted(front), "per_alpha": per_alpha, "constraints": [str(cn) for cn in constraints],
            "alpha_meeting_constraints": (min(ok) if ok and constraints else None), "metric": metric,
            "teacher_value": teacher_value}

