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


def test_the_search_compute_a_user_sees_leaves_out_lock_waits_as_the_benchmark_does(bench):
    from compress.search.results import compute_spent

    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    study.add_trial(_t(0, 0.90, 10.0, 0.5, 400))
    study.add_trial(_t(1, 0.90, 10.0, 0.5, 400, lock_wait_s=4.0))
    c = compute_spent(study)
    assert (c["rows_seen"], c["trial_seconds"], c["lock_wait_seconds"]) == (800, 16.0, 4.0)
    assert bench.compute_curve(study, teacher_params=20.0, top_only=False)[-1]["seconds"] == c["trial_seconds"]


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


def test_results_of_an_unfinished_run_say_what_is_not_measured_yet(bench):
    goals = {"teacher_accuracy": {"value": 0.8945, "goal": 0.90, "met": False},
             "hv_ratio_at_third_compute": {"value": None, "goal": 1.0, "met": False},
             "promoted_share": {"value": None, "goal": 1.0, "met": False}}
    payload = {"goals": goals, "status": "still to run: the ff study (0 of its trials completed).",
               "teacher": {"accuracy": 0.8945, "train_rows": 67349, "epochs": 3.0, "train_hours": 0.63,
                           "device": "cpu", "curve": [{"step": 500, "accuracy": 0.82}]},
               "studies": {"mf": {"title": bench.TITLES["mf"], "trials": 17, "promotions": 6, "target": 30,
                                  "rows_seen": 68064, "seconds": 3456.0, "hv_final": 0.0104}},
               "promotion": None}
    md = bench.summary_md(payload)
    assert "**Not finished:** still to run: the ff study" in md
    assert "| hv_ratio_at_third_compute | not measured yet | 1.0 | no |" in md
    assert "| teacher_accuracy | 0.8945 | 0.9 | no |" in md
    assert "17 of 30 trials completed and 6 promotions" in md and "Full-fidelity" not in md
    assert "0.8200 at step 500" in md
