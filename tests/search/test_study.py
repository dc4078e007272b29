"""The search: space validation, constraints, frontier, failures, early stopping, resume after kill -9, workers.

Studies run on a tiny random teacher; storage is SQLite, and PostgreSQL when COMPRESS_TEST_POSTGRES_URL
is set (.ci/run installs and starts a server and sets it).
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml
from optuna.trial import TrialState

from compress.config import from_mapping
from compress.distill.jobs import finetune_teacher
from compress.search.space import SearchSpace, SearchSpaceError
from compress.search import (
    MEASURES, filter_trials, format_trials, frontier, metric_names, objective_directions, open_study, parse_constraint,
    run_worker, search_constraints, study_summary, trial_record,
)
from tests.conftest import CONFIRM_QUICK, ROOT, job_config, tiny_config, write_sentiment_tsv

SPACE = {
    "num_layers": {"type": "int", "low": 1, "high": 2},
    "heads": {"type": "categorical", "choices": [2, 4]},
    "learning_rate": {"type": "logfloat", "low": 1e-4, "high": 1e-3},
}


def _search_raw(tmp_path: Path, tiny_base: str, **search) -> dict:
    train = write_sentiment_tsv(tmp_path / "train.tsv", 48, seed=1)
    dev = write_sentiment_tsv(tmp_path / "dev.tsv", 24, seed=2)
    raw = job_config(tmp_path, {"type": "classification"}, str(train), str(dev), tiny_base)
    raw["distill"]["train"] = {"max_steps": 4, "batch_size": 8, "eval_every": 2}
    raw["student"] = {}
    raw["search"] = {
        "n_trials": 4, "sampler": "random", "seed": 0, "space": SPACE,
        "objectives": ["metric", "params", "latency_ms"],
        "latency": {"batch_size": 1, "seq_len": 16, "threads": 1, "warmup": 1, "repeats": 3,
                    "rounds": 3, "calls_per_round": 2, "wait_s": 0},
        "confirm": CONFIRM_QUICK,
        "heartbeat_interval": 1, "grace_period": 4, **search,
    }
    return raw


@pytest.fixture(scope="module")
def tiny_teacher(tmp_path_factory, tiny_base) -> str:
    """A tiny teacher fine-tuned once for this module (a folder with a trained classification head)."""
    tmp = tmp_path_factory.mktemp("teacher")
    cfg = from_mapping(_search_raw(tmp, tiny_base))
    return str(finetune_teacher(cfg, progress=False))


@pytest.fixture()
def trained(tmp_path, tiny_teacher):
    """A search config over the already fine-tuned tiny teacher, with its own run directory."""
    return _search_raw(tmp_path, tiny_teacher)


# ------------------------------------------------------------------ space and constraints


def test_space_refuses_invalid_students_before_the_study(tmp_path, tiny_base):
    raw = _search_raw(tmp_path, tiny_base, space={"num_layers": {"type": "int", "low": 1, "high": 9}})
    with pytest.raises(SearchSpaceError, match=r"invalid student at \{'num_layers': 9\}.*exceeds the teacher's 4 layers"):
        SearchSpace.from_config(from_mapping(raw), tiny_config())
    raw = _search_raw(tmp_path, tiny_base, space={"heads": {"type": "categorical", "choices": [2, 8]}})
    with pytest.raises(SearchSpaceError, match=r"heads=8 exceeds the teacher's 4 heads"):
        SearchSpace.from_config(from_mapping(raw), tiny_config())
    raw = _search_raw(tmp_path, tiny_base, space={"depth": {"type": "int", "low": 1, "high": 2}})
    with pytest.raises(SearchSpaceError, match="'search.space.depth' is not a searchable parameter"):
        SearchSpace.from_config(from_mapping(raw), tiny_config())
    raw = _search_raw(tmp_path, tiny_base, space={"num_layers": {"type": "float", "low": 1, "high": 2}})
    with pytest.raises(SearchSpaceError, match="num_layers is a whole number"):
        SearchSpace.from_config(from_mapping(raw), tiny_config())


def test_space_maps_values_to_settings(tmp_path, tiny_base):
    raw = _search_raw(tmp_path, tiny_base, space={**SPACE, "alpha_ce": {"type": "float", "low": 0.2, "high": 0.9}})
    space = SearchSpace.from_config(from_mapping(raw), tiny_config())
    spec, distill = space.settings({"num_layers": 2, "heads": 2, "learning_rate": 3e-4, "alpha_ce": 0.7})
    assert (spec.num_layers, spec.heads) == (2, 2)
    assert distill.alpha_ce == 0.7 and distill.alpha_task == pytest.approx(0.3)
    assert distill.train.learning_rate == 3e-4 and distill.train.max_steps == 4
    base = space.baseline_values()
    assert base["num_layers"] == 2 and base["heads"] == 4  # half of 4 layers, all heads
    assert space.params["num_layers"].grid("num_layers") == [1, 2]
    with pytest.raises(SearchSpaceError, match="search.space.learning_rate: the grid sampler needs a finite list"):
        space.grid()


@pytest.mark.parametrize("text, measured, feasible", [
    ("accuracy >= 0.8", 0.85, True), ("accuracy >= 0.8", 0.75, False), ("latency_ms <= 4", 3.9, True),
    ("latency_ms < 4", 4.0, False), ("params <= 1e6", 2e6, False),
])
def test_constraints_follow_optuna_convention(text, measured, feasible):
    c = parse_constraint(text, {"accuracy"} | {"params", "latency_ms", "size_mb"})
    assert (c.violation(measured) <= 0) is feasible


def test_constraint_on_unknown_measure_is_refused():
    with pytest.raises(Exception, match="names 'acc'; measured names are"):
        parse_constraint("acc >= 0.5", {"accuracy", "params"})


# ------------------------------------------------------------------ in-process studies


def test_journal_storage_runs_a_study(trained, tmp_path):
    cfg = from_mapping({**trained, "search": {**trained["search"], "n_trials": 2,
                                              "storage": f"journal:{tmp_path / 'journal.log'}"}})
    run_worker(cfg, progress=False)
    assert len(open_study(cfg, create=False).get_trials(states=(TrialState.COMPLETE,))) == 2
    assert (tmp_path / "journal.log").stat().st_size > 0


def test_study_runs_records_and_writes_outputs(trained, tmp_path):
    raw = {**trained, "search": {**trained["search"], "constraints": ["accuracy >= 0.0"]}}
    cfg = from_mapping(raw)
    run_worker(cfg, progress=False)
    study = open_study(cfg, create=False)
    done = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(done) == 4
    base = [t for t in done if t.user_attrs.get("baseline")]
    assert len(base) == 1 and base[0].number == 0 and base[0].params["num_layers"] == 2
    t = done[1]
    for key in ("metrics", "measures", "timings", "latency_method", "onnx", "spec", "dir", "constraints"):
        assert key in t.user_attrs, key
    assert set(t.user_attrs["timings"]) >= {"distill_s", "evaluate_s", "export_s", "measure_s", "total_s"}
    assert t.user_attrs["latency_method"]["runtime"] == "onnxruntime"
    trial_dir = Path(t.user_attrs["dir"])
    assert (trial_dir / "onnx" / "model.onnx").is_file() and (trial_dir / "model" / "curves.jsonl").is_file()
    doc = json.loads((cfg.run_dir / "frontier.json").read_text())
    assert doc["frontier"] and doc["baseline"]["number"] == 0 and doc["teacher"]["latency_ms"] > 0
    # no test split: no held-out figures, no "splits" entry, nothing scored (tests/search/test_heldout.py has the rest)
    assert not cfg.data.has_test and "splits" not in doc
    assert all("test" not in r for r in (doc["teacher"], doc["baseline"], *doc["frontier"]))
    assert not list(cfg.run_dir.rglob("test.json"))
    assert len((cfg.run_dir / "trials.csv").read_text().splitlines()) == 5
    summary = study_summary(cfg)
    assert summary["completed"] == 4 and summary["feasible"] == 4
    run_worker(cfg, progress=False)  # already complete: resuming runs nothing more
    assert len(open_study(cfg, create=False).get_trials()) == 4


def test_infeasible_trials_never_enter_the_frontier(trained):
    raw = {**trained, "search": {**trained["search"], "constraints": ["accuracy >= 0.0", "params <= 1"],
                                 "n_trials": 3, "warn_infeasible_after": 2}}
    cfg = from_mapping(raw)
    run_worker(cfg, progress=False)
    study = open_study(cfg, create=False)
    assert all(not t.user_attrs["feasible"] for t in study.get_trials(states=(TrialState.COMPLETE,)))
    assert frontier(study) == []
    assert json.loads((cfg.run_dir / "frontier.json").read_text())["frontier"] == []
    assert any("all infeasible" in w for w in study_summary(cfg)["warnings"])


def test_diverging_trial_is_recorded_failed_and_the_study_goes_on(trained, monkeypatch):
    import compress.search.study as pipeline  # run_trial's distill_student
    from compress.distill.loop import TrainingDiverged

    real = pipeline.distill_student
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise TrainingDiverged(3, {"loss": float("nan")})
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "distill_student", flaky)
    cfg = from_mapping({**trained, "search": {**trained["search"], "n_trials": 3}})
    run_worker(cfg, progress=False)
    study = open_study(cfg, create=False)
    failed = study.get_trials(states=(TrialState.FAIL,))
    assert len(failed) == 1 and failed[0].user_attrs["state"] == "diverged"
    assert "training diverged at step 3" in failed[0].user_attrs["reason"]
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 3


def test_early_stopping_records_hopeless_trials_as_infeasible(trained):
    raw = {**trained, "search": {**trained["search"], "n_trials": 2, "constraints": ["accuracy >= 1.5"],
                                 "early_stopping": {"min_fraction": 0.4, "margin": 0.1}}}
    raw["distill"] = {**raw["distill"], "train": {"max_steps": 6, "batch_size": 8, "eval_every": 2}}
    cfg = from_mapping(raw)
    run_worker(cfg, progress=False)
    trials = open_study(cfg, create=False).get_trials(states=(TrialState.COMPLETE,))
    assert all(t.user_attrs["state"] == "stopped" for t in trials)
    assert all(t.user_attrs["steps"] == 4 and t.user_attrs["total_steps"] == 6 for t in trials)
    assert "more than 0.1 below the threshold accuracy >= 1.5" in trials[0].user_attrs["reason"]
    assert study_summary(cfg)["early_stopping_saved_seconds"] >= 0


# ------------------------------------------------------------------ kill -9, resume, workers


def _storages():
    urls = [None]
    pg = os.environ.get("COMPRESS_TEST_POSTGRES_URL")
    urls.append(pg if pg else pytest.param("postgres", marks=pytest.mark.skip(
        reason="COMPRESS_TEST_POSTGRES_URL not set (.ci/run starts PostgreSQL and sets it)")))
    return urls


def _write_config(trained: dict, tmp_path: Path, storage: str | None, n_trials: int) -> tuple[Path, dict]:
    raw = json.loads(json.dumps(trained))
    raw["search"].update(n_trials=n_trials, study_name=f"s-{uuid.uuid4().hex[:8]}")
    raw["distill"]["train"] = {"max_steps": 8, "batch_size": 8, "eval_every": 4}
    if storage:
        raw["search"]["storage"] = storage
    path = tmp_path / f"search-{raw['search']['study_name']}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path, raw


def _search_proc(config: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "compress", "search", str(config), *extra], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)


def _wait_for(cond, timeout: float, what: str, proc: subprocess.Popen | None = None):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the search exited ({proc.returncode}) before {what}: {proc.stdout.read().decode()[-3000:]}")
        value = cond()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _running_after_first(cfg):
    """A running trial of the study once at least one trial has completed, else None."""
    try:
        study = open_study(cfg, create=False)
    except Exception:  # noqa: BLE001 - the study may not exist yet
        return None
    if not study.get_trials(states=(TrialState.COMPLETE,)):
        return None
    running = [t for t in study.get_trials(states=(TrialState.RUNNING,)) if "worker" in t.user_attrs]
    return running[0] if running else None


def _check_exactly_once(study: optuna.Study, target: int) -> None:
    trials = study.get_trials()
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == target, [(t.number, t.state.name, t.user_attrs.get("state")) for t in trials]
    lost = [t for t in trials if t.state == TrialState.FAIL and t.user_attrs.get("state") == "lost"]
    retries = [t for t in trials if t.user_attrs.get("retry_of") is not None]
    assert sorted(t.user_attrs["retry_of"] for t in retries) == sorted(t.number for t in lost)  # each lost trial re-run once
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert len({t.number for t in complete}) == target


@pytest.mark.parametrize("storage", _storages(), ids=["sqlite", "postgresql"])
def test_kill_9_then_resume_completes_exactly_the_target(trained, tmp_path, storage):
    config, raw = _write_config(trained, tmp_path, storage, n_trials=4)
    cfg = from_mapping(raw)
    proc = _search_proc(config)

    try:
        # Kill at a random moment inside a trial that is not the first.
        _wait_for(lambda: _running_after_first(cfg), 300, "a trial running after the first finished", proc)
        time.sleep(random.Random(0).uniform(0.0, 0.5))
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    study = open_study(cfg, create=False)
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) < 4
    killed_mid_trial = bool(study.get_trials(states=(TrialState.RUNNING,)))  # left behind, still "running"
    res = subprocess.run([sys.executable, "-m", "compress", "search", str(config)], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    if killed_mid_trial:
        assert "lost its worker" in res.stderr  # detected by its missing heartbeat and re-run
    _check_exactly_once(open_study(cfg, create=False), 4)


@pytest.mark.parametrize("storage", _storages(), ids=["sqlite", "postgresql"])
def test_two_workers_one_killed_mid_trial(trained, tmp_path, storage):
    config, raw = _write_config(trained, tmp_path, storage, n_trials=4)
    cfg = from_mapping(raw)
    proc = _search_proc(config, "--workers", "2")
    try:
        trial = _wait_for(lambda: _running_after_first(cfg), 300, "a worker mid-trial", proc)
        worker = trial.user_attrs["worker"]
        os.kill(int(worker.split(":")[1]), signal.SIGKILL)
        out, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    # The parent reports the killed worker; the surviving one finished the study, the lost trial re-run.
    assert proc.returncode != 0 and b"worker exit codes" in out
    _check_exactly_once(open_study(cfg, create=False), 4)


# ------------------------------------------------------------------ latency paired with the teacher (issue 14)


def test_latency_ratio_is_a_measure_for_objectives_and_constraints(tmp_path, tiny_base):
    c = parse_constraint("latency_ratio <= 0.5", {"accuracy"} | set(MEASURES))
    assert (c.name, c.op, c.value) == ("latency_ratio", "<=", 0.5)
    assert c.violation(0.4) < 0 < c.violation(0.6)
    raw = _search_raw(tmp_path, tiny_base, objectives=["metric", "latency_ratio"], constraints=["latency_ratio <= 0.5"])
    cfg = from_mapping(raw)
    assert objective_directions(cfg) == [("accuracy", "maximize"), ("latency_ratio", "minimize")]
    assert [str(c) for c in search_constraints(cfg, metric_names(cfg))] == ["latency_ratio <= 0.5"]


def test_every_trial_is_timed_against_the_teacher(trained):
    raw = {**trained, "search": {**trained["search"], "n_trials": 2, "objectives": ["metric", "latency_ratio"],
                                 "constraints": ["latency_ratio <= 1000"]}}
    cfg = from_mapping(raw)
    run_worker(cfg, progress=False)
    study = open_study(cfg, create=False)
    done = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(done) == 2
    reference = cfg.run_dir / "teacher_onnx" / "model.onnx"
    for t in done:
        lat = t.user_attrs["latency_method"]
        ratio = t.user_attrs["measures"]["latency_ratio"]
        # one paired call gave both figures: the trial's median and the ratio to the teacher timed in its rounds
        assert lat["reference"]["model"] == str(reference) and lat["rounds"] == 3 and lat["calls_per_round"] == 2
        assert t.user_attrs["measures"]["latency_ms"] == lat["median_ms"] == lat["candidate"]["median_ms"]
        assert ratio == lat["ratio"]["median"] and t.values[1] == ratio
        per_round = [c / r for c, r in zip(lat["candidate"]["round_medians_ms"], lat["reference"]["round_medians_ms"])]
        assert lat["ratio"]["per_round"] == pytest.approx(per_round)
        assert ratio == pytest.approx(float(np.median(per_round)))
        lo, hi = t.user_attrs["latency_ratio_ci95"]
        assert [lo, hi] == lat["ratio"]["ci95"] and lo <= ratio <= hi
        lo_ms, hi_ms = t.user_attrs["latency_ci95_ms"]
        assert [lo_ms, hi_ms] == lat["ci95_ms"] and lo_ms <= lat["median_ms"] <= hi_ms
        assert {"retries", "contended", "spread", "order", "lock_wait_s"} <= set(lat) and lat["lock_wait_s"] >= 0
        assert t.user_attrs["constraints"] == [pytest.approx(ratio - 1000)]  # the constraint applied to the ratio
        saved = json.loads((Path(t.user_attrs["dir"]) / "trial.json").read_text())
        assert saved["latency_method"]["ratio"]["median"] == ratio and saved["latency_ratio_ci95"] == [lo, hi]
    assert (cfg.run_dir / ".locks").is_dir()  # the measurement took the machine's lock
    doc = json.loads((cfg.run_dir / "frontier.json").read_text())
    assert doc["objectives"] == {"accuracy": "maximize", "latency_ratio": "minimize"}
    assert doc["teacher"]["latency_ratio"] == 1.0
    for rec in (doc["baseline"], *doc["frontier"]):
        assert rec["latency_ratio"] > 0 and len(rec["latency_ratio_ci95"]) == 2 and len(rec["latency_ci95_ms"]) == 2
    rows = list(csv.DictReader(io.StringIO((cfg.run_dir / "trials.csv").read_text())))
    assert all(float(r["latency_ratio"]) > 0 for r in rows)
    recs = [trial_record(t, ["accuracy", "latency_ratio"]) for t in done]
    assert filter_trials(recs, where="latency_ratio > 0", sort="latency_ratio")[0]["latency_ratio"] == \
        min(r["latency_ratio"] for r in recs)
    assert "latency_ratio" in format_trials(recs).splitlines()[0]
