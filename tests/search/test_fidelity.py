"""Multi-fidelity search: rungs of training rows, promotion by constrained non-dominated sorting, resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.distributions import IntDistribution
from optuna.trial import TrialState, create_trial

from compress.config import ConfigError, from_mapping
from compress.search import frontier, open_study, run_worker
from compress.search.fidelity import (
    crowding_distance, duplicate_of, nondominated_fronts, promotable, promote_next, rank_trials, rung_indices,
    rung_rows,
)
from compress.search.study import reap_stale_trials
from tests.conftest import write_sentiment_tsv
from tests.search.test_study import _search_raw, tiny_teacher  # noqa: F401 - the module fixture

DIRS = ["maximize", "minimize"]  # metric up, params down


def _trial(number: int, values, rung: int = 0, violation: float = 0.0, state: str = "complete", **attrs):
    t = create_trial(values=list(values), params={"x": number}, distributions={"x": IntDistribution(0, 1000)},
                     user_attrs={"rung": rung, "constraints": [violation], "state": state, **attrs})
    t.number = number
    return t


def test_fronts_and_crowding_follow_nsga2():
    pts = [[0.9, 10], [0.8, 5], [0.7, 20], [0.85, 7], [0.6, 30]]
    assert nondominated_fronts(pts, DIRS) == [[0, 1, 3], [2], [4]]
    d = crowding_distance([[0.9, 10], [0.85, 7], [0.8, 5]])
    assert d[0] == d[2] == float("inf") and 0 < d[1] < float("inf")


def test_ranking_puts_feasible_fronts_first_and_infeasible_by_violation():
    trials = [_trial(0, [0.9, 10]), _trial(1, [0.99, 1], violation=0.5), _trial(2, [0.8, 5]),
              _trial(3, [0.7, 20]), _trial(4, [0.95, 2], violation=0.1), _trial(5, [0.85, 7])]
    ranked = [t.number for t in rank_trials(trials, DIRS)]
    # Front {0, 2, 5}: the two ends (infinite crowding) before the middle; then 3; then the infeasible, least
    # violation first, however good their objectives look.
    assert ranked[:2] == [0, 2] and ranked[2] == 5 and ranked[3] == 3 and ranked[4:] == [4, 1]


def test_the_best_third_of_a_rung_is_promoted_once_highest_rung_first():
    trials = [_trial(i, [0.5 + i / 100, 100 - i]) for i in range(6)]  # each better on both than the one before
    trials.append(_trial(6, [0.99, 1], state="stopped"))  # stopped early: never promoted
    got = promotable(trials, DIRS, n_rungs=3, reduction=3)
    assert [(t.number, r) for t, r in got] == [(5, 1), (4, 1)]
    # Trial 5 already has its promotion (whatever its state): only trial 4 is left.
    trials.append(_trial(7, [0.6, 90], rung=1, promoted_from=5))
    assert [(t.number, r) for t, r in promotable(trials, DIRS, 3, 3)] == [(4, 1)]
    # Rung 1 needs 3 completed trials before one of them goes to rung 2; then it comes first.
    trials += [_trial(8, [0.7, 50], rung=1, promoted_from=4), _trial(9, [0.65, 60], rung=1, promoted_from=3)]
    got = promotable(trials, DIRS, 3, 3)
    assert (got[0][0].number, got[0][1]) == (8, 2)


def test_relaxed_lower_rungs_leave_the_metric_bound_out_of_the_ranking_and_keep_the_others():
    from compress.search.fidelity import metric_constraint_indices
    from compress.search.objectives import Constraint

    cons = [Constraint("accuracy", ">=", 0.8), Constraint("latency_ms", "<=", 5.0)]
    skip = metric_constraint_indices(cons, {"accuracy", "f1"})
    assert skip == frozenset({0})

    def t(n, acc, params, lat_ms):
        tr = _trial(n, [acc, params])
        tr.user_attrs["constraints"] = [c.violation(v) for c, v in zip(cons, (acc, lat_ms))]
        return tr

    # Trial 0: small and fast, under the accuracy bound at this rung (as a 1-layer student is on few rows);
    # trial 3 is as small but over the latency bound, which no training budget changes.
    trials = [t(0, 0.74, 1, 1.0), t(1, 0.85, 8, 3.0), t(2, 0.83, 9, 3.0), t(3, 0.76, 1, 9.0), t(4, 0.82, 7, 2.5),
              t(5, 0.81, 6, 2.0)]
    hard = [x.number for x in rank_trials(trials, DIRS)]
    relaxed = [x.number for x in rank_trials(trials, DIRS, skip)]
    assert hard[-2:] == [0, 3]  # hard: both infeasible, after every feasible trial
    assert relaxed[0] in (0, 1) and relaxed.index(0) < relaxed.index(2) and relaxed[-1] == 3
    got_hard = [x.number for x, _ in promotable(trials, DIRS, 2, 3)]
    got_relaxed = [x.number for x, _ in promotable(trials, DIRS, 2, 3, skip)]
    assert 0 not in got_hard and 0 in got_relaxed and 3 not in got_relaxed


def test_rungs_are_nested_and_capped():
    a, b = rung_indices(100, 10, 0), rung_indices(100, 40, 0)
    assert set(a) <= set(b) and len(b) == 40 and np.array_equal(a, np.sort(a))
    assert rung_rows(1000, [100, 500, 5000]) == [100, 500, 1000]
    with pytest.raises(ValueError, match=r"rows\[1\] = 2000: the training split has only 1,000 rows"):
        rung_rows(1000, [100, 2000, 5000])


def test_bad_fidelity_config_names_the_key(tmp_path, tiny_base):
    for fid, msg in (({"enabled": True, "rows": [100]}, "at least two rungs"),
                     ({"enabled": True, "rows": [100, 50]}, "strictly increasing"),
                     ({"enabled": True, "rows": [10, 20], "reduction": 1}, "reduction"),
                     ({"enabled": True, "rows": [10, 20], "lower_rung_metric": "soft"}, "lower_rung_metric")):
        raw = _search_raw(tmp_path, tiny_base, fidelity=fid)
        with pytest.raises(ConfigError, match=msg):
            from_mapping(raw)


def test_duplicate_promotions_are_detected():
    study = optuna.create_study(directions=DIRS)
    study.add_trial(_trial(0, [0.9, 10]))
    study.add_trial(_trial(1, [0.8, 5]))
    study.add_trial(_trial(2, [0.7, 20]))
    first = promote_next(study, 2, 3)
    assert first.number == 0
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert len(waiting) == 1 and waiting[0].user_attrs == {"rung": 1, "promoted_from": 0}
    assert promote_next(study, 2, 3) is None  # one promotion per parent
    study.enqueue_trial({"x": 0}, user_attrs={"rung": 1, "promoted_from": 0})  # a second worker's copy
    copies = sorted(t.number for t in study.get_trials(states=(TrialState.WAITING,)))
    assert duplicate_of(study, copies[1], 0) == copies[0] and duplicate_of(study, copies[0], 0) is None


def _fid_raw(tmp_path, teacher, **extra):
    # 48 training rows: rungs of 16 and 32, so the top rung is two thirds of them and promotion has more to give
    raw = _search_raw(tmp_path, teacher, n_trials=4, fidelity={"enabled": True, "rows": [16, 32], "reduction": 2},
                      **extra)
    raw["distill"]["train"] = {"epochs": 1, "batch_size": 8, "eval_every": 0}
    return raw


@pytest.fixture(scope="module")
def mf_study(tmp_path_factory, tiny_teacher):  # noqa: F811
    """One multi-fidelity study for this module's end-to-end tests (it takes ~20 s)."""
    tmp = tmp_path_factory.mktemp("mf")
    raw = _fid_raw(tmp, tiny_teacher)
    # a held-out test split: the promoted files must be scored on it too, not only the search's
    raw["data"]["test"] = {"path": str(write_sentiment_tsv(tmp / "test.tsv", 16, seed=3)), "format": "tsv"}
    cfg = from_mapping(raw)
    run_worker(cfg, progress=False)
    return raw, cfg


def test_a_multi_fidelity_study_promotes_and_reports_the_top_rung(mf_study, capsys):
    raw, cfg = mf_study
    study = open_study(cfg, create=False)
    done = study.get_trials(states=(TrialState.COMPLETE,))
    by_rung = {r: [t for t in done if t.user_attrs["rung"] == r] for r in (0, 1)}
    base = [t for t in done if t.user_attrs.get("baseline")]
    # The baseline runs at the top rung directly; the 3 sampler trials at rung 0, the best of them promoted.
    assert len(base) == 1 and base[0].user_attrs["rung"] == 1 and base[0].user_attrs["train_rows"] == 32
    assert len(by_rung[0]) == 3 and all(t.user_attrs["train_rows"] == 16 for t in by_rung[0])
    # Asynchronous: the best 1 of the first 2 goes on, and the best 1 of all 3 if that is another one.
    promoted = [t for t in by_rung[1] if not t.user_attrs.get("baseline")]
    parents = {t.number: t for t in by_rung[0]}
    assert 1 <= len(promoted) <= 2
    for t in promoted:
        assert t.params == parents[t.user_attrs["promoted_from"]].params
    assert len({t.user_attrs["promoted_from"] for t in promoted}) == len(promoted)
    # rows seen: steps × batch size (16 rows -> 2 steps of 8; 32 -> 4). A promotion goes on from its parent's
    # model on the 16 rows rung 1 adds (warm start); the baseline, at rung 1 from the teacher, trains all 32.
    assert {t.user_attrs["rows_seen"] for t in by_rung[0]} == {16}
    assert base[0].user_attrs["rows_seen"] == 32 and base[0].user_attrs["warm_start"] is None
    for t in promoted:
        warm = t.user_attrs["warm_start"]
        assert warm["used"] and warm["from_trial"] == t.user_attrs["promoted_from"] and warm["rows_new"] == 16
        assert t.user_attrs["rows_seen"] == 16 and t.user_attrs["rows_seen_total"] == 32
        assert t.user_attrs["train_rows"] == 32  # what the model has been trained on, over its chain
        metrics = json.loads((Path(t.user_attrs["dir"]) / "model" / "metrics.json").read_text())
        assert metrics["init_from"] == warm["model"] == str(Path(parents[warm["from_trial"]].user_attrs["dir"]) / "model")
    assert {t.user_attrs["rung"] for t in frontier(study)} == {1}
    doc = json.loads((cfg.run_dir / "frontier.json").read_text())
    assert doc["fidelity"]["rows"] == [16, 32] and doc["fidelity"]["trials_by_rung"][0]["complete"] == 3
    assert all(p["rung"] == 1 for p in doc["frontier"])
    assert doc["compute"]["rows_seen"] == 3 * 16 + 32 + len(promoted) * 16
    assert doc["fidelity"]["warm_start"] is True and doc["fidelity"]["lower_rung_metric"] == "relaxed"  # the default
    assert doc["fidelity"]["trials_by_rung"][1]["warm_started"] == len(promoted)
    from compress.cli import main

    assert main(["status", str(cfg.run_dir)]) == 0
    out = capsys.readouterr().out
    assert f"4/4 done (+{len(promoted)} promoted to a higher rung)" in out
    assert "rung 0 (16 rows): 3 done" in out and "compute: " in out
    assert f"{len(promoted)} continued from the rung below" in out
    # The rungs cannot change under the study.
    changed = json.loads(json.dumps(raw))
    changed["search"]["fidelity"]["rows"] = [16, 40]
    with pytest.raises(Exception, match="rungs cannot change"):
        run_worker(from_mapping(changed), progress=False)
    hard = json.loads(json.dumps(raw))  # nor the promotion rule
    hard["search"]["fidelity"]["lower_rung_metric"] = "hard"
    with pytest.raises(Exception, match="rungs cannot change"):
        run_worker(from_mapping(hard), progress=False)


def test_a_killed_rung_is_run_again_at_its_rung(tmp_path, tiny_teacher):  # noqa: F811
    cfg = from_mapping(_fid_raw(tmp_path, tiny_teacher))
    study = open_study(cfg)
    # A promotion whose worker died: running, its heartbeat long silent.
    study.enqueue_trial({"num_layers": 1, "heads": 2, "learning_rate": 3e-4},
                        user_attrs={"rung": 1, "promoted_from": 7})
    t = study.ask()
    study._storage.set_trial_user_attr(t._trial_id, "heartbeat", 0.0)
    assert reap_stale_trials(study, grace=1.0) == [t.number]
    retry = study.get_trials(states=(TrialState.WAITING,))
    assert len(retry) == 1 and retry[0].user_attrs["rung"] == 1 and retry[0].user_attrs["promoted_from"] == 7
    assert retry[0].user_attrs["retry_of"] == t.number


def test_promotion_retrains_the_frontier_on_all_rows_and_resumes(mf_study, capsys):
    from compress.cli import main
    from compress.search import write_outputs
    from compress.search.promote import promote_frontier

    _, cfg = mf_study
    study = open_study(cfg, create=False)
    front = frontier(study)
    search_front = sorted(t.number for t in front)
    assert main(["promote", str(cfg.run_dir), "--top", "2"]) == 0
    out = capsys.readouterr().out
    doc = json.loads((cfg.run_dir / "promoted.json").read_text())
    assert f"promoted {len(doc['points'])} frontier points to all 48 training rows" in out
    # The held-out split scores the promoted files (cached beside them), not only the search's.
    for p in doc["points"]:
        assert f"held-out test: trial {p['trial']} promoted accuracy" in out
        test = json.loads((Path(p["dir"]) / "test.json").read_text())
        assert Path(test["onnx"]).resolve() == Path(p["onnx"]).resolve() and test["rows"] == 16
    assert doc["train_rows"] == 48 and len(doc["points"]) == min(2, len(front))
    for p in doc["points"]:
        assert p["train_rows"] == 48 and p["rows_seen"] == 48 and p["low_budget"]["train_rows"] == 32
        assert p["latency_ci95_ms"][0] <= p["latency_ms"] <= p["latency_ci95_ms"][1]
        assert Path(p["onnx"]).is_file() and p["value"] is not None
    assert set(doc["frontier"]) <= {p["trial"] for p in doc["points"]} and doc["frontier"]
    assert json.loads((cfg.run_dir / "promoted.json").read_text())["frontier"] == doc["frontier"]
    write_outputs(cfg, open_study(cfg, create=False))
    fdoc = json.loads((cfg.run_dir / "frontier.json").read_text())
    assert fdoc["promotion"]["frontier"] == doc["frontier"]
    # The reported frontier is the promoted models (what a user ships), the search's own beside it.
    assert sorted(r["number"] for r in fdoc["frontier"]) == doc["frontier"]
    assert all(r["promoted"] and r["train_rows"] == 48 and "/promoted/" in r["dir"] for r in fdoc["frontier"])
    assert fdoc["frontier_search"] and all(r["train_rows"] == 32 for r in fdoc["frontier_search"])
    for r in fdoc["frontier"]:  # the promoted file's held-out figure, not the search file's
        test = json.loads((Path(r["dir"]) / "test.json").read_text())
        assert r["test"]["accuracy"] == test["metrics"]["accuracy"] and r["test"]["method"] == test["method"]
    # `compress status` shows the promoted frontier, and the search's beside it.
    assert main(["status", str(cfg.run_dir)]) == 0
    out = capsys.readouterr().out
    assert f"training rows; the frontier below is theirs (search's own: {search_front})" in out
    lines = [ln.split() for ln in out.splitlines() if ln.strip().split(" ")[0].isdigit()]
    assert sorted(int(ln[0]) for ln in lines) == doc["frontier"] and all("promoted" in ln for ln in lines)
    from compress.deploy.package import resolve_trial

    picked = resolve_trial(cfg, scenario="knee")
    assert "/promoted/" in picked["dir"] and Path(picked["dir"], "onnx", "model.onnx").is_file()
    # By number too: a promoted trial is its retrained model (what the frontier shows), not the search's.
    for p in doc["points"]:
        by_number = resolve_trial(cfg, trial=p["trial"])
        assert by_number["dir"] == p["dir"] and by_number["onnx"] == p["onnx"] and by_number["promoted"]
        assert by_number["train_rows"] == 48 and by_number["value"] == p["value"]
    others = [t.number for t in study.get_trials() if t.number not in {q["trial"] for q in doc["points"]}
              and t.user_attrs.get("dir") and Path(t.user_attrs["dir"], "onnx", "model.onnx").is_file()]
    if others:
        assert "/promoted/" not in resolve_trial(cfg, trial=others[0])["dir"]
    # A rerun (after a kill, say) reuses every point already trained: only the timing is done again.
    done = {p["trial"]: (Path(p["dir"]) / "result.json").stat().st_mtime_ns for p in doc["points"]}
    again = promote_frontier(cfg, top=2, progress=False)
    assert {p["trial"]: (Path(p["dir"]) / "result.json").stat().st_mtime_ns for p in again["points"]} == done
    with pytest.raises(Exception, match="--top 0"):
        promote_frontier(cfg, top=0, progress=False)
    # The report shows both budgets side by side.
    from compress.report import build_report

    _, md = build_report(cfg)
    text = md.read_text()
    assert "## Training budget and promotion" in text and "rows (promoted)" in text and "16 rows (" in text
    from compress.report.collect import collect
    from compress.report.figures import _kind

    recs = collect(cfg)["recs"]
    assert {_kind(r) for r in recs if r.get("rung") == 0} == {"lower rung"}
    assert "lower rung" not in {_kind(r) for r in recs if r.get("rung") == 1}


def test_a_warm_start_trains_only_the_rows_its_rung_adds():
    import types

    from compress.search.fidelity import warm_start_context

    class Split:
        def __init__(self, idx):
            self.idx = np.asarray(idx)

        def __len__(self):
            return len(self.idx)

        def take(self, rows, tag):
            return Split(self.idx[rows])

    import dataclasses

    @dataclasses.dataclass
    class Data:
        train: Split

    @dataclasses.dataclass
    class Ctx:
        data: Data
        outputs: dict

    n = 100
    ctx = Ctx(Data(Split(np.arange(n))), {"logits": np.arange(n) * 10})
    cfg = types.SimpleNamespace(search=types.SimpleNamespace(fidelity=types.SimpleNamespace(rows=(10, 30, 100), seed=4)))
    for lo, hi in ((0, 1), (1, 2), (0, 2)):
        sub, k = warm_start_context(ctx, cfg, hi, lo)
        rows = (10, 30, 100)
        new = set(rung_indices(n, rows[hi], 4)) - set(rung_indices(n, rows[lo], 4))
        assert k == len(new) == rows[hi] - rows[lo] and set(sub.data.train.idx) == new
        assert list(sub.outputs["logits"]) == [i * 10 for i in sub.data.train.idx]  # the teacher's, row for row
    with pytest.raises(ValueError, match="lower rung to a higher one"):
        warm_start_context(ctx, cfg, 1, 1)


def test_a_warm_start_goes_on_from_the_parents_weights(mf_study, tmp_path):
    """The student a promotion trains is its parent's saved model (not one built from the teacher); when it cannot
    be (folder gone, vocabulary pruned, switched off), it starts cold and says why."""
    import dataclasses

    import torch

    from compress.distill.jobs import distill_student, load_context
    from compress.model.student import StudentSpec
    from compress.search.fidelity import warm_start_source

    raw, cfg = mf_study
    study = open_study(cfg, create=False)
    child = next(t for t in study.get_trials(states=(TrialState.COMPLETE,))
                 if (t.user_attrs.get("warm_start") or {}).get("used"))
    parent_dir = Path(child.user_attrs["warm_start"]["model"])
    ctx = load_context(cfg, progress=False)
    spec = StudentSpec.from_json(child.user_attrs["spec"])
    # A learning rate of ~0: the weights it saves are the ones it started from.
    still = dataclasses.replace(cfg.distill, train=dataclasses.replace(cfg.distill.train, learning_rate=1e-12))
    m = distill_student(ctx, spec, tmp_path / "warm", distill=still, progress=False, init_from=parent_dir)
    cold = distill_student(ctx, spec, tmp_path / "cold", distill=still, progress=False)
    assert m["init_from"] == str(parent_dir) and cold["init_from"] is None and m["params"] == cold["params"]
    from safetensors.torch import load_file

    warm_w, parent_w, cold_w = (load_file(d / "model.safetensors")
                                for d in (tmp_path / "warm", parent_dir, tmp_path / "cold"))
    assert all(torch.allclose(warm_w[k], parent_w[k], atol=1e-6) for k in parent_w)
    assert not all(torch.allclose(cold_w[k], parent_w[k], atol=1e-6) for k in parent_w)
    # When it cannot go on from the parent, it says why.
    attrs = {"promoted_from": child.user_attrs["promoted_from"]}
    assert warm_start_source(study, attrs, spec, cfg)["used"]
    assert warm_start_source(study, {}, spec, cfg) == {"used": False, "why": None}
    assert "not a completed trial" in warm_start_source(study, {"promoted_from": 999}, spec, cfg)["why"]
    pruned = dataclasses.replace(spec, vocab_pruning=True)
    assert "vocabulary was pruned" in warm_start_source(study, attrs, pruned, cfg)["why"]
    off = json.loads(json.dumps(raw))
    off["search"]["fidelity"]["warm_start"] = False
    assert "warm_start is off" in warm_start_source(study, attrs, spec, from_mapping(off))["why"]
    parent = next(t for t in study.get_trials() if t.number == attrs["promoted_from"])
    moved = Path(parent.user_attrs["dir"]) / "model"
    moved.rename(moved.with_name("model-moved"))
    try:
        assert "model is not at" in warm_start_source(study, attrs, spec, cfg)["why"]
    finally:
        moved.with_name("model-moved").rename(moved)


def test_validate_compares_the_rungs_with_the_training_rows(tmp_path, tiny_base):
    from compress.validate import validate

    raw = _search_raw(tmp_path, tiny_base, fidelity={"enabled": True, "rows": [30, 60, 100]})
    report = validate(from_mapping(raw), "search", lengths=False)
    assert any("search.fidelity.rows[1] = 60: the training split has only 48 rows" in e for e in report.errors)
    raw = _search_raw(tmp_path, tiny_base, fidelity={"enabled": True, "rows": [16, 32, 100]})  # last: all rows
    assert not [e for e in validate(from_mapping(raw), "search", lengths=False).errors if "fidelity" in e]


def _mf_trial(number: int, acc: float, params: float, rung: int = 0, state: str = "complete", **attrs):
    """A finished trial as a study stores it: values, user attributes, and its constraint as Optuna records it."""
    from optuna.study._constrained_optimization import _CONSTRAINTS_KEY

    t = create_trial(values=[acc, params], params={"x": number}, distributions={"x": IntDistribution(0, 1000)},
                     user_attrs={"rung": rung, "state": state, **attrs},
                     system_attrs={f"{_CONSTRAINTS_KEY}:accuracy >= 0.8": max(0.8 - acc, 0.0) if state != "stopped"
                                   else max(0.8 - acc, 1e-9),
                                   f"{_CONSTRAINTS_KEY}:latency_ms <= 5.0": 0.0})
    t.number = number
    return t


def test_the_sampler_sees_each_configuration_once_at_its_highest_rung():
    from compress.search.rung_sampler import sampler_view

    trials = [_mf_trial(0, 0.74, 1), _mf_trial(1, 0.85, 8), _mf_trial(2, 0.70, 2, state="stopped"),
              _mf_trial(3, 0.78, 1, rung=1, promoted_from=0), _mf_trial(4, 0.81, 1, rung=2, promoted_from=3),
              _mf_trial(5, 0.86, 8, rung=1, promoted_from=1)]
    # a promotion still running hides nothing; a duplicate that never trained is not shown at all
    running = create_trial(state=TrialState.RUNNING, params={"x": 1}, distributions={"x": IntDistribution(0, 1000)},
                           user_attrs={"rung": 2, "promoted_from": 5})
    running.number = 6
    dup = create_trial(state=TrialState.PRUNED, params={"x": 1}, distributions={"x": IntDistribution(0, 1000)},
                       user_attrs={"rung": 1, "promoted_from": 1, "state": "duplicate"})
    dup.number = 7
    trials += [running, dup]
    hard = sampler_view(trials, top_rung=2)
    assert [t.number for t in hard] == [2, 4, 5, 6]  # chain 0→3→4 as 4; chain 1→5 as 5 (6 is still running)
    assert hard[1].values == [0.81, 1]
    assert [t.constraints["accuracy >= 0.8"] > 0 for t in hard[:3]] == [True, False, False]

    relaxed = sampler_view(trials + [_mf_trial(8, 0.75, 1, rung=1, promoted_from=9)], top_rung=2,
                           relaxed_constraints={"accuracy >= 0.8"})
    by = {t.number: t for t in relaxed}
    # below the top rung a completed trial's metric bound is shown as met, the other bound as it was; a trial
    # stopped early stays infeasible, and so does a top-rung trial (none here is under the bound at rung 2)
    assert by[8].constraints == {"accuracy >= 0.8": 0.0, "latency_ms <= 5.0": 0.0}
    assert by[2].constraints["accuracy >= 0.8"] > 0
    # the stored trial is not changed
    assert next(t for t in trials if t.number == 0).constraints["accuracy >= 0.8"] > 0
    top_low = _mf_trial(10, 0.79, 1, rung=2)
    assert sampler_view([top_low], 2, {"accuracy >= 0.8"})[0].constraints["accuracy >= 0.8"] > 0


def test_the_rung_sampler_drives_tpe_on_the_view_and_is_chosen_with_fidelity(tmp_path, tiny_base):
    from compress.search.rung_sampler import RungSampler
    from compress.search.storage import make_sampler

    study = optuna.create_study(directions=["maximize", "minimize"],
                                sampler=RungSampler(optuna.samplers.TPESampler(seed=0, n_startup_trials=3), 2,
                                                    ["accuracy >= 0.8"]))
    for i in range(6):
        study.add_trial(_mf_trial(i, 0.7 + i / 50, 10 - i))
    for i, parent in enumerate((5, 4)):
        study.add_trial(_mf_trial(6 + i, 0.85, 5 - i, rung=1, promoted_from=parent))
    view = RungSampler(optuna.samplers.TPESampler(), 2)._view(study)
    assert [t.number for t in view.get_trials(states=(TrialState.COMPLETE,))] == [0, 1, 2, 3, 6, 7]
    assert len(view.trials) == 6 and view.directions == study.directions
    trial = study.ask({"x": IntDistribution(0, 1000)})  # past the random start: TPE samples from the view
    assert 0 <= trial.params["x"] <= 1000

    raw = {"name": "s", "task": {"type": "classification", "text_columns": ["sentence"], "label_column": "label"},
           "teacher": {"model": str(tiny_base)}, "data": {"train": str(tmp_path / "t.tsv"), "eval": str(tmp_path / "e.tsv")},
           "search": {"n_trials": 6, "constraints": ["accuracy >= 0.8", "latency_ms <= 5"]}}
    plain = from_mapping(raw)
    assert isinstance(make_sampler(plain, None), optuna.samplers.TPESampler)
    raw["search"]["fidelity"] = {"enabled": True, "rows": [10, 20, 40], "lower_rung_metric": "relaxed"}
    mf = from_mapping(raw)
    s = make_sampler(mf, None)
    assert isinstance(s, RungSampler) and s.top_rung == 2 and s.relaxed_constraints == {"accuracy >= 0.8"}
    raw["search"]["sampler"] = "random"
    assert isinstance(make_sampler(from_mapping(raw), None), optuna.samplers.RandomSampler)


def test_an_unset_lower_rung_rule_is_relaxed_for_a_new_study_and_the_studys_own_on_resume(tmp_path, tiny_base):
    from compress.search.fidelity import lower_rung_rule
    from compress.search.rung_sampler import RungSampler

    assert lower_rung_rule(None, None) == "relaxed"
    assert lower_rung_rule(None, {"rows": [10, 20]}) == "hard"  # a study from before the setting
    assert lower_rung_rule(None, {"lower_rung_metric": "hard"}) == "hard"
    assert lower_rung_rule("hard", None) == "hard" and lower_rung_rule("relaxed", {"lower_rung_metric": "hard"}) == "relaxed"
    raw = {"name": "s", "task": {"type": "classification", "text_columns": ["sentence"], "label_column": "label"},
           "teacher": {"model": str(tiny_base)}, "data": {"train": str(tmp_path / "t.tsv"), "eval": str(tmp_path / "e.tsv")},
           "output_dir": str(tmp_path),
           "search": {"n_trials": 6, "constraints": ["accuracy >= 0.8"], "fidelity": {"enabled": True, "rows": [10, 20]}}}
    cfg = from_mapping(raw)
    fresh = open_study(cfg, space=object())  # the space is only read by the grid sampler
    assert isinstance(fresh.sampler, RungSampler) and fresh.sampler.relaxed_constraints == {"accuracy >= 0.8"}
    fresh.set_user_attr("fidelity", {"rows": [10, 20], "lower_rung_metric": "hard"})
    again = open_study(cfg, space=object())
    assert again.sampler.relaxed_constraints == frozenset()  # it keeps the rule it was run with
