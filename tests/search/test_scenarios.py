"""Scenario picks on a frontier: retain size, retain metric, fastest within X points, knee."""

from __future__ import annotations

import pytest

from compress.model.metrics import points
from compress.search.scenarios import ScenarioError, pick


def _rec(n, value, params, latency, metric="accuracy"):
    return {"number": n, "metric": metric, "value": value, "params": params, "latency_ms": latency, "size_mb": params / 4e6}


DOC = {
    "objectives": {"metric": "maximize", "params": "minimize", "latency_ms": "minimize"},
    "teacher": {"metric": 0.90, "params": 22_000_000, "latency_ms": 3.0},
    "baseline": _rec(0, 0.85, 17_000_000, 1.0),
    "frontier": [
        _rec(1, 0.80, 13_000_000, 0.3),
        _rec(2, 0.85, 15_000_000, 0.6),
        _rec(3, 0.88, 16_500_000, 0.9),
        _rec(4, 0.895, 21_000_000, 2.5),
        _rec(5, 0.891, 20_000_000, 2.0),
    ],
}


def test_retain_size_is_the_best_metric_no_larger_than_the_baseline():
    assert pick(DOC, "retain-size")["number"] == 3


def test_retain_metric_is_the_smallest_at_the_baseline_metric():
    assert pick(DOC, "retain-metric")["number"] == 2


def test_fastest_within_points_of_the_teacher():
    assert pick(DOC, "fastest", within=1.0)["number"] == 5  # 89.1 and 89.5 qualify; 5 is faster
    assert pick(DOC, "fastest", within=2.5)["number"] == 3
    with pytest.raises(ScenarioError, match="within 0.1 points of the teacher's accuracy"):
        pick(DOC, "fastest", within=0.1)


def test_knee_balances_the_objectives():
    # Scaled to [0, 1] over the frontier, trial 3 is closest to the ideal (best metric, smallest, fastest).
    assert pick(DOC, "knee")["number"] == 3


def test_points_scale():
    assert points("accuracy", 0.871) == pytest.approx(87.1)
    assert points("exact", 61.2) == pytest.approx(61.2)


def test_errors_name_what_is_missing():
    with pytest.raises(ScenarioError, match="frontier is empty"):
        pick({"frontier": []}, "knee")
    with pytest.raises(ScenarioError, match="no completed baseline"):
        pick({**DOC, "baseline": None}, "retain-size")
    small = {**DOC, "baseline": _rec(0, 0.95, 10_000_000, 0.1)}
    with pytest.raises(ScenarioError, match="at most the baseline's 10,000,000 parameters"):
        pick(small, "retain-size")
    with pytest.raises(ScenarioError, match="reaches the baseline's accuracy 0.95"):
        pick(small, "retain-metric")
    with pytest.raises(ScenarioError, match="'best' is not known"):
        pick(DOC, "best")
