"""`compress trials` filtering, sorting and formats on plain trial records (moved from tests/test_report.py as it
was; the command on a finished study stays there)."""

from __future__ import annotations

import json

import pytest

from compress.search.query import QueryError, filter_trials, format_trials


RECS = [
    {"number": 0, "state": "complete", "baseline": True, "feasible": True, "metric": "accuracy", "value": 0.82,
     "params": 17e6, "latency_ms": 0.9, "size_mb": 69.0, "precision": "fp32", "metrics": {"accuracy": 0.82},
     "params_searched": {"num_layers": 3}, "spec": {"num_layers": 3, "heads": 12, "intermediate_size": 1536}},
    {"number": 1, "state": "complete", "feasible": True, "metric": "accuracy", "value": 0.86, "params": 14e6,
     "latency_ms": 0.7, "size_mb": 60.0, "precision": "int8", "metrics": {"accuracy": 0.86},
     "params_searched": {"num_layers": 4}, "spec": {"num_layers": 4}},
    {"number": 2, "state": "stopped", "feasible": False, "metric": "accuracy", "value": 0.70, "params": 13e6,
     "latency_ms": 0.3, "size_mb": 55.0, "metrics": {"accuracy": 0.70}, "params_searched": {"num_layers": 1}},
    {"number": 3, "state": "failed", "metric": "accuracy", "value": None, "params": None, "latency_ms": None,
     "params_searched": {"num_layers": 2}},
]


def test_where_and_sort():
    got = filter_trials(RECS, "accuracy > 0.8 and params < 15e6")
    assert [r["number"] for r in got] == [1]
    got = filter_trials(RECS, "num_layers >= 2 or state == 'stopped'", sort="latency_ms")
    assert [r["number"] for r in got] == [2, 1, 0, 3]  # a trial without latency sorts last
    assert [r["number"] for r in filter_trials(RECS, "not feasible")] == [2]
    assert [r["number"] for r in filter_trials(RECS, sort="accuracy", descending=True)][:2] == [1, 0]
    assert [r["number"] for r in filter_trials(RECS, "0.8 < accuracy < 0.85")] == [0]


@pytest.mark.parametrize("where,message", [
    ("accuracy >", "not a valid expression"),
    ("acuracy > 0.8", "unknown name 'acuracy'"),
    ("__import__('os')", "is not allowed"),
    ("accuracy > 'high'", "cannot compare"),
])
def test_where_errors_name_the_problem(where, message):
    with pytest.raises(QueryError, match=message):
        filter_trials(RECS, where)


def test_formats():
    table = format_trials(filter_trials(RECS, "feasible"), "table")
    assert "accuracy" in table.splitlines()[0] and "0 (baseline)" in table and table.endswith("2 trials")
    csv_text = format_trials(RECS[:2], "csv")
    assert csv_text.splitlines()[1].startswith("0 (baseline),complete,True,0.8200,17000000")
    assert json.loads(format_trials(RECS[:1], "json"))[0]["number"] == 0
