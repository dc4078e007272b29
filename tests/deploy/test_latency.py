"""Paired latency protocol, bootstrap intervals, drift retries, interval dominance and the measurement lock.

Models are MatMul chains built with onnx.helper (a small one and one about 50x the work), so the test
needs no export; `python -m pytest -q tests/test_latency_protocol.py` runs in well under a minute.
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from compress.deploy.capacity import peak_memory_mb, throughput
from compress.deploy.latency import LatencySettings, bootstrap_median_ci, measure_paired, paired_rounds, round_spread
from compress.deploy.measure_lock import lock_dir_for, measuring, training_step
from tests.conftest import CHAIN_VOCAB as VOCAB, chain_model
from compress.search.intervals import Estimate, dominates_with_intervals, intervals_overlap, tied_with_intervals



@pytest.fixture(scope="module")
def models(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("latency")
    return chain_model(root / "small", 64, 2), chain_model(root / "big", 256, 6)


# ------------------------------------------------------------------ (a) the protocol on real sessions


def test_small_model_stays_faster_than_big_one_under_background_load(models):
    small, big = models
    # A busy neighbour: one core spinning for the whole measurement, as another worker's training would.
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.2)
        settings = LatencySettings(seq_len=64, threads=2, warmup=3, rounds=8, calls_per_round=5,
                                   max_retries=1, wait_s=0.1)
        result = measure_paired(small, big, settings=settings)
    finally:
        spinner.kill()
        spinner.wait()
    cand, ref, ratio = result["candidate"], result["reference"], result["ratio"]
    assert cand["median_ms"] < ref["median_ms"]
    assert ratio["ci95"][0] <= ratio["median"] <= ratio["ci95"][1] < 1.0
    assert len(ratio["per_round"]) == len(cand["round_medians_ms"]) == len(ref["round_medians_ms"]) == 8
    for summary in (cand, ref):
        lo, hi = summary["ci95_ms"]
        assert 0 < lo <= summary["median_ms"] <= hi and summary["median_ms"] <= summary["p90_ms"]
    # The keys onnx_latency gave are the candidate's.
    assert (result["median_ms"], result["p90_ms"]) == (cand["median_ms"], cand["p90_ms"])
    assert cand["model"] == str(small) and ref["model"] == str(big)
    assert result["retries"] in (0, 1) and isinstance(result["contended"], bool)
    assert len(result["spreads"]) == result["retries"] + 1
    # The method, beside the figure.
    assert result["runtime"] == "onnxruntime" and result["onnxruntime"] == __import__("onnxruntime").__version__
    assert (result["threads"], result["batch_size"], result["seq_len"], result["warmup"]) == (2, 1, 64, 3)
    assert (result["rounds"], result["calls_per_round"], result["repeats"]) == (8, 5, 40)
    assert len(result["load_before"]) == len(result["load_after"]) == 3
    assert result["cpu"] and result["cores"] >= 1 and result["versions"]["onnxruntime"]
    assert result["elapsed_s"] > 0 and result["settings"]["drift_tolerance"] == 0.10


def test_candidate_alone_on_eval_length_batches(models):
    small, _ = models
    rng = np.random.default_rng(0)
    batches = [{"input_ids": rng.integers(1000, VOCAB, (2, n)), "attention_mask": np.ones((2, n), np.int64)}
               for n in (5, 17, 9, 30, 12)]
    result = measure_paired(small, None, batches, LatencySettings(threads=1, warmup=2, rounds=4, calls_per_round=3,
                                                                wait_s=0.0))
    assert "ratio" not in result and "reference" not in result and result["reference_model"] is None
    assert "candidate's" in result["spread_rule"]
    assert (result["seq_len"], result["batch_size"], result["batches"]) == ("eval-lengths", 2, 3)
    assert result["max_seq_len"] == 30 and result["median_ms"] > 0


def test_bad_settings_and_inputs_name_the_value(models, tmp_path):
    with pytest.raises(ValueError, match="rounds=2"):
        LatencySettings(rounds=2)
    with pytest.raises(ValueError, match="drift_tolerance=0"):
        LatencySettings(drift_tolerance=0)
    with pytest.raises(ValueError, match="calls_per_round=0"):
        LatencySettings(calls_per_round=0)
    with pytest.raises(ValueError, match="graph_optimization='most'"):
        LatencySettings(graph_optimization="most")
    with pytest.raises(ValueError, match="missing.onnx"):
        measure_paired(tmp_path / "missing.onnx")
    with pytest.raises(ValueError, match=r"inputs\[0\] lacks \['input_ids'\]"):
        measure_paired(models[0], inputs=[{"attention_mask": np.ones((1, 4), np.int64)}])


# ------------------------------------------------------------------ (b) the bootstrap


def test_bootstrap_interval_contains_the_median_is_seeded_and_narrows_with_rounds():
    rng = np.random.default_rng(1)
    few, many = rng.normal(10, 1, (6, 10)), rng.normal(10, 1, (120, 10))
    for x in (few, many):
        lo, hi = bootstrap_median_ci(x)
        assert lo <= float(np.median(x)) <= hi
    assert bootstrap_median_ci(few, seed=3) == bootstrap_median_ci(few, seed=3)
    assert bootstrap_median_ci(few, seed=3) != bootstrap_median_ci(few, seed=4)
    width = lambda ci: ci[1] - ci[0]  # noqa: E731
    assert width(bootstrap_median_ci(many)) < width(bootstrap_median_ci(few)) / 2
    # Rounds, not calls, are resampled: a round-level shift in half the rounds widens the interval.
    shifted = few + np.where(np.arange(6) % 2, 3.0, 0.0)[:, None]
    assert width(bootstrap_median_ci(shifted)) > width(bootstrap_median_ci(few))
    with pytest.raises(ValueError, match=r"shape \(1, 3\)"):
        bootstrap_median_ci(np.ones((1, 3)))


def test_round_spread_is_the_coefficient_of_variation():
    assert round_spread([2.0, 2.0, 2.0]) == 0.0
    assert round_spread([1.0, 2.0, 3.0]) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="at least 2 rounds"):
        round_spread([1.0])


# ------------------------------------------------------------------ (c) drift and retries, on a fake clock


class FakeMachine:
    """A clock that advances only when a model 'runs': the candidate takes 1 ms, the reference what `ref_ms` says."""

    def __init__(self, drifting_attempts: int):
        self.now, self.attempt, self.ref_calls = 0.0, 0, 0
        self.drifting_attempts = drifting_attempts
        self.slept: list[float] = []
        self.log: list[str] = []

    def timer(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.attempt += 1

    def candidate(self, i: int) -> None:
        self.now += 0.001
        self.log.append("c")

    def reference(self, i: int) -> None:
        # A neighbour's load building up: each call slower than the last, until the machine settles.
        ms = 2.0 + 0.2 * self.ref_calls if self.attempt < self.drifting_attempts else 2.0
        self.ref_calls += 1
        self.now += ms / 1000
        self.log.append("r")


SETTINGS = LatencySettings(warmup=2, rounds=6, calls_per_round=4, drift_tolerance=0.05, max_retries=2, wait_s=7.0)


def test_drift_on_the_first_attempt_is_retried_and_recorded():
    m = FakeMachine(drifting_attempts=1)
    result = paired_rounds(m.candidate, m.reference, SETTINGS, timer=m.timer, sleep=m.sleep)
    assert result["retries"] == 1 and m.slept == [7.0]
    assert result["spreads"][0] > 0.05 and result["spreads"][1] == 0.0
    assert result["kept_attempt"] == 1 and result["spread"] == 0.0 and result["contended"] is False
    assert result["ratio"]["median"] == pytest.approx(0.5) and result["ratio"]["ci95"] == pytest.approx([0.5, 0.5])
    assert result["median_ms"] == pytest.approx(1.0) and result["reference"]["median_ms"] == pytest.approx(2.0)
    # Warm-up of each, then the first model of each round alternates.
    timed = "".join(m.log[-(2 * 6 * 4):])
    assert m.log[-(2 * 6 * 4) - 4:-(2 * 6 * 4)] == ["c", "c", "r", "r"]
    assert [timed[k * 8: k * 8 + 8] for k in range(2)] == ["ccccrrrr", "rrrrcccc"]


def test_a_run_that_never_settles_is_flagged_contended():
    m = FakeMachine(drifting_attempts=99)
    result = paired_rounds(m.candidate, m.reference, SETTINGS, timer=m.timer, sleep=m.sleep)
    assert result["retries"] == 2 and m.slept == [7.0, 7.0] and result["contended"] is True
    assert all(s > 0.05 for s in result["spreads"])
    assert result["spread"] == min(result["spreads"]) == result["spreads"][result["kept_attempt"]]


def test_without_a_reference_the_candidate_is_judged_and_steady_runs_are_not_retried():
    m = FakeMachine(drifting_attempts=0)
    result = paired_rounds(m.candidate, None, SETTINGS, timer=m.timer, sleep=m.sleep)
    assert result["retries"] == 0 and m.slept == [] and result["contended"] is False
    assert "ratio" not in result and set(m.log) == {"c"}


# ------------------------------------------------------------------ (d) the measurement lock


def _trainer(lock_dir: str, log: str, stop, hold_s: float) -> None:
    with open(log, "a") as fh:
        while not stop.is_set():
            with training_step(lock_dir):
                t0 = time.monotonic()
                time.sleep(hold_s)
                t1 = time.monotonic()
            fh.write(f"{t0} {t1}\n")
            fh.flush()


def test_measurements_never_overlap_training_steps_and_are_not_starved(tmp_path):
    lock_dir = str(lock_dir_for(tmp_path))
    logs = [tmp_path / f"trainer{i}.log" for i in range(2)]
    ctx = mp.get_context("spawn")
    # Two trainers with no gap between steps keep the shared lock held without a break: without the gate
    # a measurement would wait for ever. They run until told to stop: a spawned process imports this module
    # afresh, which takes well over 20 s on a loaded CI machine, so no clock starts before they are up.
    stop = ctx.Event()
    trainers = [ctx.Process(target=_trainer, args=(lock_dir, str(log), stop, 0.03)) for log in logs]
    for p in trainers:
        p.start()
    try:
        deadline = time.monotonic() + 300
        while not all(log.exists() and log.read_text().count("\n") >= 2 for log in logs):
            assert time.monotonic() < deadline, "trainers did not start"
            time.sleep(0.02)
        measured, waits = [], []
        for _ in range(4):
            with measuring(lock_dir) as hold:
                t0 = time.monotonic()
                time.sleep(0.1)
                measured.append((t0, time.monotonic()))
            waits.append(hold.waited_s)
            assert hold.kind == "measuring" and hold.held_s >= 0.1
            time.sleep(0.1)
        before = [log.read_text().count("\n") for log in logs]
        time.sleep(0.2)
        assert all(log.read_text().count("\n") > n for log, n in zip(logs, before)), "training did not resume"
    finally:
        stop.set()
        for p in trainers:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
                p.join()
    steps = [tuple(map(float, line.split())) for log in logs for line in log.read_text().splitlines()]
    assert max(waits) < 1.0, f"a measurement waited {max(waits):.2f} s behind 30 ms steps"
    for m0, m1 in measured:
        clash = [(t0, t1) for t0, t1 in steps if t0 < m1 and m0 < t1]
        assert not clash, f"measurement {m0:.3f}-{m1:.3f} overlapped training steps {clash}"
    # Steps of the two trainers do overlap: the training hold is shared.
    a, b = ([tuple(map(float, line.split())) for line in log.read_text().splitlines()] for log in logs)
    assert any(s0 < t1 and t0 < s1 for s0, s1 in a for t0, t1 in b)


def test_lock_is_a_no_op_without_a_folder_and_refuses_to_deadlock(tmp_path):
    with training_step(None) as step, measuring(None) as hold:
        assert step.waited_s == hold.waited_s == 0.0
    with training_step(tmp_path / "locks"):
        with training_step(tmp_path / "locks"):  # nested: free, not a second hold
            pass
        with pytest.raises(RuntimeError, match="deadlock"):
            with measuring(tmp_path / "locks"):
                pass
    with measuring(tmp_path / "locks") as hold:  # released: the measurement gets in at once
        assert hold.waited_s < 1.0
    assert lock_dir_for(tmp_path).parent == tmp_path / ".locks"


def test_a_measurement_held_back_by_a_stopped_job_names_it(tmp_path, monkeypatch, caplog):
    """A job stopped (Ctrl-Z, kill -STOP) inside a training step keeps the shared lock: the waiting measurement
    says which process holds it and that it is stopped, then goes on once it is resumed and releases it."""
    import signal
    import threading

    from compress.deploy import measure_lock

    lock_dir = lock_dir_for(tmp_path)
    lock_dir.mkdir(parents=True)
    code = ("import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
            "fcntl.flock(fd, fcntl.LOCK_SH); print('held', flush=True); time.sleep(1.0)")
    child = subprocess.Popen([sys.executable, "-c", code, str(lock_dir / measure_lock.MAIN)], stdout=subprocess.PIPE,
                             text=True)
    try:
        assert child.stdout.readline().strip() == "held"
        os.kill(child.pid, signal.SIGSTOP)
        monkeypatch.setattr(measure_lock, "WAIT_WARN_S", 0.2)
        done = threading.Event()

        def measure():
            with measuring(lock_dir):
                done.set()

        with caplog.at_level("WARNING", logger="compress.deploy.measure_lock"):
            t = threading.Thread(target=measure)
            t.start()
            deadline = time.monotonic() + 30
            while "measurement lock" not in caplog.text:
                assert time.monotonic() < deadline, "no warning about the held lock"
                time.sleep(0.05)
            assert not done.is_set()
            assert f"pid {child.pid}" in caplog.text and "STOPPED" in caplog.text
            assert f"kill -CONT {child.pid}" in caplog.text
            os.kill(child.pid, signal.SIGCONT)
            t.join(timeout=30)
        assert done.is_set()
    finally:
        os.kill(child.pid, signal.SIGCONT)
        child.kill()
        child.wait()


# ------------------------------------------------------------------ (e) dominance with intervals


MIN_MAX = ("minimize", "maximize")  # latency (ms), metric


def test_overlapping_intervals_are_a_tie_and_separated_ones_dominate():
    fast, slow = Estimate(1.0, 0.9, 1.1), Estimate(2.0, 1.8, 2.2)
    noisy_fast = Estimate(1.05, 0.95, 1.2)
    # Apart on latency, equal metric: a clear win.
    assert dominates_with_intervals([fast, 80.0], [slow, 80.0], MIN_MAX)
    assert not dominates_with_intervals([slow, 80.0], [fast, 80.0], MIN_MAX)
    assert not tied_with_intervals([fast, 80.0], [slow, 80.0], MIN_MAX)
    # A lead inside the noise: a tie, and no dominance either way.
    assert tied_with_intervals([fast, 80.0], [noisy_fast, 80.0], MIN_MAX)
    assert not dominates_with_intervals([fast, 80.0], [noisy_fast, 80.0], MIN_MAX)
    assert not dominates_with_intervals([noisy_fast, 80.0], [fast, 80.0], MIN_MAX)
    # Exact values that differ are apart: a better metric and a tied latency at least as good dominates.
    assert dominates_with_intervals([fast, 80.5], [noisy_fast, 80.0], MIN_MAX)
    # ...but not when its latency, though tied, is worse.
    assert not dominates_with_intervals([noisy_fast, 80.5], [fast, 80.0], MIN_MAX)
    assert not tied_with_intervals([noisy_fast, 80.5], [fast, 80.0], MIN_MAX)
    # Plain tuples work as estimates; identical points are a tie and neither dominates.
    assert tied_with_intervals([(1.0, 0.9, 1.1), 80.0], [(1.0, 0.9, 1.1), 80.0], MIN_MAX)
    assert not dominates_with_intervals([(1.0, 0.9, 1.1), 80.0], [(1.0, 0.9, 1.1), 80.0], MIN_MAX)


def test_intervals_overlap_and_bad_arguments():
    assert intervals_overlap((0, 1), (1, 2)) and intervals_overlap((0, 3), (1, 2))
    assert not intervals_overlap((0, 1), (1.01, 2))
    with pytest.raises(ValueError, match=r"\(2, 1\)"):
        intervals_overlap((2, 1), (0, 1))
    with pytest.raises(ValueError, match="directions\\[0\\]='fastest'"):
        dominates_with_intervals([1.0], [2.0], ["fastest"])
    with pytest.raises(ValueError, match="a has 2 values, b 1"):
        dominates_with_intervals([1.0, 2.0], [1.0], MIN_MAX)
    with pytest.raises(ValueError, match=r"a\[0\]=\(1.0, 1.2, 1.1\)"):
        tied_with_intervals([(1.0, 1.2, 1.1)], [1.0], ["minimize"])


# ------------------------------------------------------------------ (f) throughput and memory


def test_peak_memory_and_throughput(models):
    small, big = models
    small_mem = peak_memory_mb(small, threads=1, seq_len=32)
    big_mem = peak_memory_mb(big, threads=1, seq_len=32)
    for mem in (small_mem, big_mem):
        assert mem["peak_memory_mb"] > 0 and mem["baseline_rss_mb"] > 0
        assert mem["peak_rss_mb"] == pytest.approx(mem["baseline_rss_mb"] + mem["peak_memory_mb"])
        assert mem["threads"] == 1 and mem["seq_len"] == 32 and "peak RSS" in mem["measure"]
    # The big model's embedding alone is 20 MB (20000 x 256 float32) against 5 MB.
    assert big_mem["peak_memory_mb"] > small_mem["peak_memory_mb"] + 10

    result = throughput(small, batch_size=4, seq_len=32, threads=1, seconds=0.6, rounds=3)
    assert result["inputs_per_s"] > 0 and len(result["round_inputs_per_s"]) == 3
    assert result["ci95"][0] <= result["inputs_per_s"] <= result["ci95"][1]
    assert (result["batch_size"], result["seq_len"], result["threads"]) == (4, 32, 1)


# ------------------------------------------------------------------ (g) thread pinning


def test_core_plan_gives_each_thread_a_core_or_none():
    from compress.deploy.onnxrt import CorePlan, core_plan

    assert core_plan(2, [4, 5, 7]) == CorePlan(main_cpu=4, pool_cpus=(5,))
    assert core_plan(3, [4, 5, 7]) == CorePlan(main_cpu=4, pool_cpus=(5, 7))
    assert core_plan(1, [3]) == CorePlan(main_cpu=3, pool_cpus=())
    # Fewer cores than threads: pinning two threads to one core would serialise them, so it runs unpinned.
    assert core_plan(2, [0]) is None
    with pytest.raises(ValueError, match="threads=0"):
        core_plan(0, [0, 1])


def test_pool_cpus_must_match_the_pool(models):
    from compress.deploy.onnxrt import onnx_session

    with pytest.raises(ValueError, match=r"pool_cpus=\[0, 1\]: a session with 2 threads has 1 pool"):
        onnx_session(models[0], 2, pool_cpus=[0, 1])


def _thread_cpus() -> dict[int, str]:
    out = {}
    for status in Path("/proc/self/task").glob("*/status"):
        fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
        out[int(status.parent.name)] = fields["Cpus_allowed_list"].strip()
    return out


@pytest.mark.skipif(not Path("/proc/self/task").is_dir() or not hasattr(os, "sched_setaffinity")
                    or len(os.sched_getaffinity(0)) < 2, reason="needs Linux and 2 usable cores")
def test_pinned_measurement_puts_each_thread_on_its_core_and_restores_the_caller(models):
    from compress.deploy.onnxrt import core_plan, onnx_session, pinned_thread

    before_caller = os.sched_getaffinity(0)
    plan = core_plan(2)
    # The session's pool thread is pinned by ONNX Runtime to the plan's second core (its ids start at 1).
    before = set(_thread_cpus())
    session = onnx_session(models[0], 2, pool_cpus=plan.pool_cpus)
    # The pool thread pins itself once it first runs: on a loaded machine that can be after the session is built.
    deadline = time.monotonic() + 10
    while True:
        new_threads = {tid: cpus for tid, cpus in _thread_cpus().items() if tid not in before}
        if str(plan.pool_cpus[0]) in new_threads.values() or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    assert str(plan.pool_cpus[0]) in new_threads.values(), new_threads
    with pinned_thread(plan.main_cpu):
        seen_inside = os.sched_getaffinity(0)
        session.run(None, {"input_ids": np.ones((1, 8), np.int64)})
    assert seen_inside == {plan.main_cpu}
    assert os.sched_getaffinity(0) == before_caller
    # A failure inside still restores the caller's cores.
    with pytest.raises(RuntimeError):
        with pinned_thread(plan.main_cpu):
            raise RuntimeError("boom")
    assert os.sched_getaffinity(0) == before_caller

    settings = LatencySettings(seq_len=16, threads=2, warmup=1, rounds=3, calls_per_round=2, wait_s=0.0)
    result = measure_paired(models[0], models[1], settings=settings)
    assert result["thread_pinning"] == {"pinned": True, "main_cpu": plan.main_cpu, "pool_cpus": list(plan.pool_cpus)}
    unpinned = measure_paired(models[0], None, settings=dataclasses.replace(settings, pin_threads=False))
    assert unpinned["thread_pinning"] == {"pinned": False, "reason": "pin_threads is off"}
    assert os.sched_getaffinity(0) == before_caller
    tp = throughput(models[0], batch_size=2, seq_len=16, threads=2, seconds=0.3, rounds=3)
    assert tp["thread_pinning"]["pinned"] is True and os.sched_getaffinity(0) == before_caller


def test_one_thread_is_pinned_without_a_pool(models):
    settings = LatencySettings(seq_len=16, threads=1, warmup=1, rounds=3, calls_per_round=2, wait_s=0.0)
    result = measure_paired(models[0], None, settings=settings)
    pin = result["thread_pinning"]
    if hasattr(os, "sched_setaffinity"):
        assert pin["pinned"] is True and pin["pool_cpus"] == []
    else:
        assert pin["pinned"] is False


def test_a_gpu_provider_without_onnxruntime_gpu_says_what_to_install(models):
    import onnxruntime as ort

    from compress.deploy.onnxrt import check_provider, onnx_session

    assert check_provider("cpu") == ["CPUExecutionProvider"]
    with pytest.raises(ValueError, match="'tpu' is not a provider"):
        check_provider("tpu")
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu is installed here")
    with pytest.raises(ValueError, match="search.latency.provider: cuda needs .*CUDAExecutionProvider.*onnxruntime-gpu"):
        onnx_session(models[0], 1, provider="cuda")
