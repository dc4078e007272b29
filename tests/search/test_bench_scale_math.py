"""bench-scale's hypervolume and compute-curve arithmetic on made-up trials (the benchmark itself runs for hours)."""

from __future__ import annotations

from datetime import datetime, timedelta

import optuna
import pytest
from optuna.distributions import IntDistribution
from optuna.trial import create_trial

from tests.conftest import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("bench_scale")


def _t(n, acc, params, ratio, rows, rung=None, feasible=True, lock_wait_s=0.0):
    t0 = datetime(2026, 1, 1)
    ua = {"feasible": feasible, "state": "complete", "metrics": {"accuracy": acc},
          "measures": {"params": params, "latency_ratio": ratio}, "rows_seen": rows, "timings": {"total_s": 10.0},
          "latency_method": {"lock_wait_s": lock_wait_s}}
    if rung is not None:
        ua["rung"] = rung
    t = create_trial(values=[acc, params, ratio], params={"x": n}, distributions={"x": IntDistribution(0, 99)},
                     user_attrs=ua)
    t.datetime_start, t.datetime_complete = t0 + timedelta(minutes=n), t0 + timedelta(minutes=n, seconds=30)
    return t


def test_hypervolume_of_a_box_and_of_points_beyond_the_reference(bench):
    # accuracy 0.9 (0.1 above the 0.80 reference), half the teacher's parameters, ratio 0.5: 0.1 * 0.5 * 0.5
    assert bench.hypervolume([[-0.9, 0.5, 0.5]]) == pytest.approx(0.025)
    assert bench.hypervolume([[-0.9, 0.5, 0.5], [-0.85, 0.6, 0.6]]) == pytest.approx(0.025)  # dominated: adds nothing
    assert bench.hypervolume([[-0.7, 0.5, 0.5]]) == 0.0  # below the accuracy reference
    assert bench.hypervolume([]) == 0.0


def test_compute_curve_counts_rows_and_only_the_top_rung(bench):
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    study.set_user_attr("fidelity", {"rows": [100, 400], "reduction": 2})
    study.add_trial(_t(0, 0.95, 10.0, 0.5, 100, rung=0))  # good, but a low rung: not comparable
    study.add_trial(_t(1, 0.90, 10.0, 0.5, 400, rung=1))
    study.add_trial(_t(2, 0.99, 1.0, 0.1, 400, rung=1, feasible=False, lock_wait_s=4.0))  # infeasible: not in hv
    curve = bench.compute_curve(study, teacher_params=20.0, top_only=True)
    assert [p["rows_seen"] for p in curve] == [100, 500, 900]
    assert [p["seconds"] for p in curve] == [10.0, 20.0, 26.0]  # waiting for another job's lock is not compute
    assert curve[0]["hv"] == 0.0 and curve[1]["hv"] == pytest.approx(0.1 * 0.5 * 0.5)
    assert curve[2]["hv"] == curve[1]["hv"]
    assert bench.hv_at(curve, 499) == 0.0 and bench.hv_at(curve, 500) == curve[1]["hv"]
