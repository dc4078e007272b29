"""Picking one model from a frontier: the scenarios a person asks about, as plain functions of frontier.json.

- `retain-size`: the best metric among frontier points no larger (parameters) than the baseline.
- `retain-metric`: the smallest frontier point whose metric is at least the baseline's.
- `fastest`: the fastest frontier point within `within` points of the teacher's metric (a point is 1/100 of
  a metric in [0, 1], such as accuracy; SQuAD exact and F1 are already in points).
- `knee`: the frontier point closest (Euclidean) to the ideal point after scaling each objective to [0, 1]
  over the frontier: the best balance when no objective is held fixed.

Each returns the chosen frontier record, or raises ScenarioError saying why none qualifies.
"""

from __future__ import annotations

import math
from typing import Any

from ..model.metrics import points

__all__ = ["SCENARIOS", "ScenarioError", "pick"]

SCENARIOS = ("retain-size", "retain-metric", "fastest", "knee")


class ScenarioError(ValueError):
    """No frontier point meets the scenario; the message says what it asked for and what the frontier holds."""


def _need(doc: dict[str, Any], key: str, scenario: str) -> dict[str, Any]:
    rec = doc.get(key)
    if not rec or rec.get("value" if key == "baseline" else "metric") is None:
        raise ScenarioError(f"scenario {scenario!r} compares with the {key}, but the study has no completed {key}; "
                            "pick a trial with --trial N")
    return rec


def pick(doc: dict[str, Any], scenario: str, within: float = 1.0) -> dict[str, Any]:
    """The frontier record that answers `scenario` (see the module docstring) in a frontier.json document."""
    front = [r for r in doc.get("frontier", []) if r.get("value") is not None]
    if scenario not in SCENARIOS:
        raise ScenarioError(f"scenario {scenario!r} is not known; use one of {', '.join(SCENARIOS)}")
    if not front:
        raise ScenarioError("the frontier is empty: no trial is complete and feasible yet; see `compress status`")
    metric = front[0]["metric"]
    if scenario == "retain-size":
        base = _need(doc, "baseline", scenario)
        ok = [r for r in front if r["params"] <= base["params"]]
        if not ok:
            raise ScenarioError(f"no frontier point has at most the baseline's {base['params']:,} parameters "
                                f"(smallest: {min(r['params'] for r in front):,})")
        return max(ok, key=lambda r: (r["value"], -r["params"]))
    if scenario == "retain-metric":
        base = _need(doc, "baseline", scenario)
        ok = [r for r in front if r["value"] >= base["value"]]
        if not ok:
            raise ScenarioError(f"no frontier point reaches the baseline's {metric} {base['value']:.4g} "
                                f"(best: {max(r['value'] for r in front):.4g})")
        return min(ok, key=lambda r: (r["params"], -r["value"]))
    if scenario == "fastest":
        teacher = _need(doc, "teacher", scenario)
        floor = points(metric, teacher["metric"]) - within
        ok = [r for r in front if points(metric, r["value"]) >= floor - 1e-9]
        if not ok:
            best = max(points(metric, r["value"]) for r in front)
            raise ScenarioError(f"no frontier point is within {within:g} points of the teacher's {metric} "
                                f"({points(metric, teacher['metric']):.2f}; best on the frontier {best:.2f}); "
                                "raise --within")
        return min(ok, key=lambda r: (r["latency_ms"], -r["value"]))
    # knee
    keys = [k for k in ("value", "params", "latency_ms", "size_mb") if all(r.get(k) is not None for r in front)]
    objectives = doc.get("objectives") or {}
    used = [k for k in keys if k == "value" or k in objectives] or keys

    def scaled(r: dict[str, Any], k: str) -> float:
        lo, hi = min(x[k] for x in front), max(x[k] for x in front)
        if hi == lo:
            return 0.0
        s = (r[k] - lo) / (hi - lo)
        return 1.0 - s if k == "value" else s  # 0 is ideal for every objective

    return min(front, key=lambda r: (math.sqrt(sum(scaled(r, k) ** 2 for k in used)), r["number"]))
