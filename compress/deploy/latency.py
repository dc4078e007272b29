"""Latency with error bars: a candidate and a reference model timed in alternating rounds, with bootstrap intervals.

`measure_paired(candidate, reference, inputs, LatencySettings(...))` on ONNX files; capacity.py measures
throughput and peak memory, search/intervals.py compares figures that carry intervals.
From a shell: `python -m compress.deploy.latency CANDIDATE.onnx [REFERENCE.onnx]` prints the result as JSON.

Rounds, not calls, are the independent units: calls within a round share one machine state (frequency,
caches, a neighbour's load), so the intervals resample whole rounds. Timing the reference in the same
rounds as the candidate gives a ratio that survives a machine that is slower today than yesterday.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from ..env import environment
from .onnxrt import GRAPH_OPTIMIZATION, CorePlan, core_plan, onnx_session, pinned_thread

__all__ = ["Feed", "LatencySettings", "bootstrap_median_ci", "check_model", "input_batches", "interleaved_rounds",
           "measure_interleaved", "measure_paired", "paired_rounds", "round_spread", "session_feeds", "session_method"]

Feed = dict[str, np.ndarray]
Call = Callable[[int], object]  # runs call i of a round (i indexes the round's batches)


@dataclass(frozen=True)
class LatencySettings:
    """How a paired latency measurement is run; every field is recorded beside the result."""

    batch_size: int = 1  # rows per call for a fixed shape (ignored when real batches are passed)
    seq_len: int = 128  # tokens per row for a fixed shape (ignored when real batches are passed)
    threads: int = 2  # intra-op threads, the same for both models so they compare
    warmup: int = 10  # calls of each model discarded before each attempt's first round
    rounds: int = 10  # independent units of the bootstrap: more rounds, narrower intervals
    calls_per_round: int = 10  # timed calls of each model per round, over the same batches every round
    drift_tolerance: float = 0.10  # largest coefficient of variation of the reference's round medians
    max_retries: int = 2  # further attempts when the reference drifts; the steadiest attempt is kept
    wait_s: float = 5.0  # pause before a retry, to let a passing load go by
    resamples: int = 1000  # bootstrap resamples of the rounds
    seed: int = 0  # bootstrap resampling and the fixed-shape token ids
    graph_optimization: str = "all"  # ONNX Runtime graph optimisation level, as in compress.onnxrt
    # untimed pause before a block that follows another model's: ONNX Runtime's intra-op threads spin for a while
    # after a session's last call, and a block started meanwhile shares the cores with them (see interleaved_rounds)
    settle_s: float = 0.05
    # the calling thread and each of ONNX Runtime's pool threads on a core of its own for the measurement (where the
    # OS allows and there are enough cores): unpinned, one process in ten on 2 cores timed a model ~12% slower
    # against the teacher than the others did, as the threads of both models' sessions wandered between the cores
    pin_threads: bool = True
    provider: str = "cpu"  # cpu, or cuda (onnxruntime-gpu): where the deployed model will run

    def __post_init__(self) -> None:
        positive = {"batch_size": self.batch_size, "seq_len": self.seq_len, "threads": self.threads,
                    "calls_per_round": self.calls_per_round, "resamples": self.resamples}
        for name, value in positive.items():
            if value < 1:
                raise ValueError(f"{name}={value}: must be at least 1")
        if self.rounds < 3:
            # A spread (and an interval) from two rounds says nothing about a third.
            raise ValueError(f"rounds={self.rounds}: need at least 3 rounds to judge drift and bootstrap an interval")
        for name, value in {"warmup": self.warmup, "max_retries": self.max_retries}.items():
            if value < 0:
                raise ValueError(f"{name}={value}: must not be negative")
        if not self.drift_tolerance > 0:
            raise ValueError(f"drift_tolerance={self.drift_tolerance}: must be positive (0.10 allows 10% spread)")
        if not self.wait_s >= 0:
            raise ValueError(f"wait_s={self.wait_s}: must not be negative")
        if not self.settle_s >= 0:
            raise ValueError(f"settle_s={self.settle_s}: must not be negative")
        if self.graph_optimization not in GRAPH_OPTIMIZATION:
            raise ValueError(f"graph_optimization={self.graph_optimization!r}: use one of "
                             f"{', '.join(GRAPH_OPTIMIZATION)}")


# ----------------------------------------------------------------------------------------------
# The maths: pure functions


def bootstrap_median_ci(per_round: np.ndarray | Sequence[float], resamples: int = 1000, seed: int = 0,
                        level: float = 0.95) -> tuple[float, float]:
    """Percentile-bootstrap interval of the median, resampling ROUNDS (rows) with replacement.

    `per_round` is (rounds, calls): each resample draws `rounds` rows and takes the median of all their
    calls, so calls that shared a round stay together. A 1-D array is one value per round (e.g. the
    per-round ratios). The same seed gives the same interval.
    """
    x = np.asarray(per_round, dtype=float)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 1:
        raise ValueError(f"per_round has shape {x.shape}: need (rounds >= 2, calls >= 1)")
    if resamples < 1 or not 0 < level < 1:
        raise ValueError(f"resamples={resamples}, level={level}: need resamples >= 1 and 0 < level < 1")
    rng = np.random.default_rng(seed)
    n = x.shape[0]
    medians = np.empty(resamples)
    # Chunks bound the memory of (chunk, rounds, calls) to a few MB on long measurements.
    chunk = max(1, 2_000_000 // x.size)
    for start in range(0, resamples, chunk):
        stop = min(resamples, start + chunk)
        rows = rng.integers(0, n, size=(stop - start, n))
        medians[start:stop] = np.median(x[rows].reshape(stop - start, -1), axis=1)
    tail = (1.0 - level) / 2.0
    lo, hi = np.quantile(medians, [tail, 1.0 - tail])
    return float(lo), float(hi)


def round_spread(round_medians: np.ndarray | Sequence[float]) -> float:
    """Coefficient of variation (sample standard deviation / mean) of per-round medians: the drift rule.

    A steady machine repeats the same round within a few per cent; a neighbour's load or a clock change
    in the middle of a measurement shows as a larger spread, whether it is a trend or a burst.
    """
    x = np.asarray(round_medians, dtype=float)
    if x.ndim != 1 or len(x) < 2:
        raise ValueError(f"round_medians has shape {x.shape}: need at least 2 rounds")
    mean = float(x.mean())
    if not mean > 0:
        raise ValueError(f"round medians average {mean}: times must be positive")
    return float(x.std(ddof=1) / mean)


# ----------------------------------------------------------------------------------------------
# The protocol on any two callables


def _time_block(call: Call, n: int, timer: Callable[[], float]) -> list[float]:
    out = []
    for i in range(n):
        t0 = timer()
        call(i)
        out.append(timer() - t0)
    return out


def _summary(times_s: np.ndarray, resamples: int, seed: int) -> dict[str, Any]:
    """Pooled median/p90/mean/min/max, the median's bootstrap interval over rounds, and each round's median."""
    # NOTE: imported here, not at the top: the peak-memory child imports this module and must not pull torch.
    from .measure import latency_summary

    ms = times_s * 1000.0
    return {**latency_summary(list(times_s.ravel())),
            "ci95_ms": list(bootstrap_median_ci(ms, resamples, seed)),
            "round_medians_ms": [float(v) for v in np.median(ms, axis=1)]}


def interleaved_rounds(calls: dict[str, Call], settings: LatencySettings, reference: str | None = None, *,
                       timer: Callable[[], float] = time.perf_counter,
                       sleep: Callable[[float], object] = time.sleep,
                       settle: Callable[[float], object] = time.sleep) -> dict[str, Any]:
    """The protocol on any number of callables: warm-up of each, then `rounds` rounds of `calls_per_round` calls
    of every model, one model's block after another.

    Round r starts at model r (mod n) of `calls` and goes round, so each model takes each place in the order
    equally often and none always inherits another's caches; for two models that is "the first one first in
    even rounds, the second first in odd rounds". Before a block that follows another model's block, the protocol
    pauses `settle_s` (untimed): ONNX Runtime's intra-op threads keep spinning for a while after a session's last
    call, and a block started meanwhile competes with them for the cores. Measured on 2 cores with five SST-2
    models: without the pause the baseline's ratio to the teacher came out 0.72 against 0.47-0.53 for each model
    timed alone; with 50 ms it came out 0.50. Drift rule: when the coefficient of variation of the
    `reference`'s round medians (the first model's, without a reference) exceeds `drift_tolerance`, wait
    `wait_s` and measure again, at most `max_retries` times, keeping the attempt with the lowest spread;
    `contended` is true when no attempt came within the tolerance. With a reference, every other model's
    "ratio" is its round median over the reference's round median in the same round, with the median of those
    ratios and its bootstrap interval. `timer` and `sleep` are injectable.
    """
    s = settings
    if not calls:
        raise ValueError("no models to time")
    if reference is not None and reference not in calls:
        raise ValueError(f"reference {reference!r} is not one of the models {list(calls)}")
    names = list(calls)
    judged_name = reference if reference is not None else names[0]
    attempts: list[tuple[float, dict[str, np.ndarray]]] = []  # (spread, times of each model)
    for attempt in range(s.max_retries + 1):
        if attempt:
            sleep(s.wait_s)
        for call in calls.values():
            for i in range(s.warmup):
                call(i % s.calls_per_round)
        times: dict[str, list[list[float]]] = {name: [] for name in names}
        previous = None
        for r in range(s.rounds):
            k = r % len(names)
            for name in names[k:] + names[:k]:
                if previous is not None and previous != name and s.settle_s > 0:
                    settle(s.settle_s)
                times[name].append(_time_block(calls[name], s.calls_per_round, timer))
                previous = name
        arrays = {name: np.asarray(t) for name, t in times.items()}  # (rounds, calls_per_round), seconds
        # The reference does the same work every attempt, so its spread is the machine's, not a candidate's.
        attempts.append((round_spread(np.median(arrays[judged_name], axis=1)), arrays))
        if attempts[-1][0] <= s.drift_tolerance:
            break
    kept = min(range(len(attempts)), key=lambda i: attempts[i][0])
    spread, arrays = attempts[kept]
    result: dict[str, Any] = {
        "models": {name: _summary(arrays[name], s.resamples, s.seed) for name in names},
        "rounds": s.rounds, "calls_per_round": s.calls_per_round,
        "order": (f"alternating: {names[0]} first in even rounds, {names[-1]} first in odd rounds" if len(names) == 2
                  else f"rotating: round r starts with model r mod {len(names)} of {names}")
                 + (f"; {s.settle_s * 1000:g} ms untimed pause before a block that follows another model's"
                    if s.settle_s > 0 and len(names) > 1 else ""),
        "spread": spread, "spreads": [a[0] for a in attempts], "kept_attempt": kept,
        "retries": len(attempts) - 1, "contended": bool(spread > s.drift_tolerance),
        "spread_rule": (f"coefficient of variation of the {'reference' if reference is not None else 'first model'}"
                        f" ({judged_name})'s round medians, tolerance {s.drift_tolerance}"),
    }
    if reference is not None:
        ref_rounds = np.median(arrays[reference], axis=1)
        result["ratios"] = {}
        for name in names:
            if name == reference:
                continue
            ratios = np.median(arrays[name], axis=1) / ref_rounds
            result["ratios"][name] = {"median": float(np.median(ratios)),
                                      "ci95": list(bootstrap_median_ci(ratios, s.resamples, s.seed)),
                                      "per_round": [float(v) for v in ratios],
                                      "definition": f"{name}'s round median / {reference}'s round median, per round"}
    return result


def paired_rounds(candidate: Call, reference: Call | None, settings: LatencySettings, *,
                  timer: Callable[[], float] = time.perf_counter,
                  sleep: Callable[[float], object] = time.sleep,
                  settle: Callable[[float], object] = time.sleep) -> dict[str, Any]:
    """The protocol on two callables (see `interleaved_rounds`): the candidate, timed against a reference.

    Round r runs the candidate's block first when r is even and the reference's first when r is odd. The
    drift rule judges the reference's round medians (the candidate's, without a reference).
    """
    calls = {"candidate": candidate} | ({"reference": reference} if reference is not None else {})
    res = interleaved_rounds(calls, settings, "reference" if reference is not None else None,
                             timer=timer, sleep=sleep, settle=settle)
    models = res.pop("models")
    cand = models["candidate"]
    result: dict[str, Any] = {"median_ms": cand["median_ms"], "p90_ms": cand["p90_ms"], "ci95_ms": cand["ci95_ms"],
                              "candidate": cand, **res}
    result["spread_rule"] = ("coefficient of variation of the " + ("reference's" if reference is not None else
                             "candidate's") + f" round medians, tolerance {settings.drift_tolerance}")
    if reference is not None:
        result["reference"] = models["reference"]
        ratio = result.pop("ratios")["candidate"]
        result["ratio"] = {**ratio, "definition": "candidate round median / reference round median, per round"}
    return result


# ----------------------------------------------------------------------------------------------
# On ONNX files


def _vocab_size(onnx_path: Path) -> int:
    """The model's vocabulary from the config.json exported beside it; BERT's when there is none."""
    config = onnx_path.parent / "config.json"
    if config.is_file():
        return int(json.loads(config.read_text()).get("vocab_size", 30522))
    return 30522


def _within_vocabulary(batches: list[Feed], vocab_size: int) -> list[Feed]:
    """The batches with every id a model's vocabulary lacks set to 0.

    NOTE: real eval batches carry the teacher tokenizer's ids, which a model with a pruned vocabulary
    (compress.model.vocab) does not have. The embedding lookup costs the same whichever row it reads, so the
    timing is unchanged; the lengths, which set the cost, stay those of the eval set.
    """
    out = []
    for b in batches:
        ids = b.get("input_ids")
        if ids is not None and ids.size and int(ids.max()) >= vocab_size:
            b = {**b, "input_ids": np.where(ids < vocab_size, ids, 0)}
        out.append(b)
    return out


def input_batches(path: Path, inputs: list[Feed] | None, batch_size: int, seq_len: int,
             seed: int) -> tuple[list[Feed], dict[str, Any]]:
    """The batches to time (int64, contiguous) and how they are described in the method."""
    if inputs is None:
        rng = np.random.default_rng(seed)
        high = min(_vocab_size(path), 29000)
        # BERT's first 1000 ids are special and unused tokens; ordinary words lie above them.
        low = 1000 if high > 1000 else 0
        ids = rng.integers(low, high, (batch_size, seq_len), dtype=np.int64)
        batch = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
        return [batch], {"batch_size": batch_size, "seq_len": seq_len}
    if not inputs:
        raise ValueError("inputs is an empty list; pass at least one batch (or None for a fixed shape)")
    batches = [{k: np.ascontiguousarray(v, dtype=np.int64) for k, v in b.items()} for b in inputs]
    widths = [next(iter(b.values())).shape[1] for b in batches]
    rows = sorted({next(iter(b.values())).shape[0] for b in batches})
    # Batches of unequal size (a short last batch) are recorded as the sizes seen.
    return batches, {"batch_size": rows[0] if len(rows) == 1 else rows, "seq_len": "eval-lengths",
                     "mean_seq_len": float(np.mean(widths)), "max_seq_len": int(max(widths)),
                     "batches": len(batches)}


def check_model(path: str | Path, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{what} {str(path)!r} does not exist; export one with compress.export.export_onnx")
    return path


def session_feeds(session: ort.InferenceSession, batches: list[Feed], n: int, what: str) -> list[Feed]:
    """The first `n` calls' feeds (cycling over the batches), with only the inputs this model takes."""
    names = [i.name for i in session.get_inputs()]
    for i, b in enumerate(batches):
        missing = [k for k in names if k not in b]
        if missing:
            raise ValueError(f"inputs[{i}] lacks {missing}; the {what} takes {names}")
    return [{k: batches[i % len(batches)][k] for k in names} for i in range(n)]


def session_method(session: ort.InferenceSession, threads: int, graph_optimization: str) -> dict[str, Any]:
    machine = environment()
    # torch's thread count says nothing about an ONNX Runtime figure; `threads` below is the one used.
    machine.pop("torch_threads", None)
    return {"runtime": "onnxruntime", "onnxruntime": ort.__version__, "provider": session.get_providers()[0],
            "threads": threads, "inter_op_threads": 1, "execution_mode": "sequential",
            "graph_optimization": graph_optimization, **machine}


def plan_for(s: LatencySettings) -> CorePlan | None:
    """The cores a measurement with these settings pins its threads to; None when it runs unpinned (or on a GPU)."""
    return core_plan(s.threads) if s.pin_threads and s.provider == "cpu" else None


def pinning_method(s: LatencySettings, plan: CorePlan | None) -> dict[str, Any]:
    """How the threads were placed, for the method record."""
    if plan is not None:
        return plan.describe()
    reason = ("pin_threads is off" if not s.pin_threads else
              f"this process may use fewer than {s.threads} cores, or the OS cannot pin threads")
    return {"pinned": False, "reason": reason}


def _sessions(paths: dict[str, Path], inputs: list[Feed] | None, s: LatencySettings,
              plan: CorePlan | None = None) -> tuple[dict[str, Call], dict[str, ort.InferenceSession], dict[str, Any]]:
    """One session per model (same threads and graph optimisation) and a call per model over the same batches.

    Fixed-shape ids are drawn below the smallest vocabulary among the models, so every model can take them.
    With a `plan`, every session's pool threads are pinned to the same cores.
    """
    smallest = min(paths.values(), key=_vocab_size)
    batches, shape = input_batches(smallest, inputs, s.batch_size, s.seq_len, s.seed)
    calls: dict[str, Call] = {}
    sessions: dict[str, ort.InferenceSession] = {}
    for name, path in paths.items():
        session = onnx_session(path, s.threads, s.graph_optimization, None if plan is None else plan.pool_cpus,
                               s.provider)
        feeds = session_feeds(session, _within_vocabulary(batches, _vocab_size(path)), s.calls_per_round, name)
        calls[name] = lambda i, session=session, feeds=feeds: session.run(None, feeds[i])
        sessions[name] = session
    if inputs is not None:
        shape["batches"] = min(len(batches), s.calls_per_round)
    return calls, sessions, shape


def _method(session: ort.InferenceSession, s: LatencySettings, load_before: list[float],
            start: float, plan: CorePlan | None) -> dict[str, Any]:
    return {**session_method(session, s.threads, s.graph_optimization), "warmup": s.warmup,
            "thread_pinning": pinning_method(s, plan),
            "repeats": s.rounds * s.calls_per_round, "resamples": s.resamples, "seed": s.seed,
            "max_retries": s.max_retries, "wait_s": s.wait_s, "settings": asdict(s), "load_before": load_before,
            "load_after": list(os.getloadavg()), "elapsed_s": time.perf_counter() - start}


def measure_paired(candidate: str | Path, reference: str | Path | None = None, inputs: list[Feed] | None = None,
                   settings: LatencySettings = LatencySettings(), *,
                   timer: Callable[[], float] = time.perf_counter,
                   sleep: Callable[[float], object] = time.sleep) -> dict[str, Any]:
    """Latency of `candidate` (and its ratio to `reference`) on ONNX Runtime CPU, with bootstrap 95% intervals.

    Both sessions are made here with the same thread settings, and each round times the candidate's and
    the reference's calls over the same batches (see `paired_rounds` for the order and the drift rule).
    Batches: a fixed shape batch_size × seq_len of random ids, or `inputs` (e.g. eval_length_batches);
    every round cycles over the same first `calls_per_round` of them, so rounds repeat the same work.

    Returns the candidate's `median_ms`, `p90_ms` and `ci95_ms` at the top (the keys onnx_latency gave),
    `candidate` and `reference` summaries, `ratio` (absent without a reference), retries and `contended`,
    and the method: runtime, threads, batches, rounds, machine, load average before and after, time taken.
    """
    start = time.perf_counter()
    load_before = list(os.getloadavg())
    s = settings
    paths = {"candidate": check_model(candidate, "candidate model")}
    if reference is not None:
        paths["reference"] = check_model(reference, "reference model")
    plan = plan_for(s)
    calls, sessions, shape = _sessions(paths, inputs, s, plan)
    with pinned_thread(None if plan is None else plan.main_cpu):
        result = paired_rounds(calls["candidate"], calls.get("reference"), s, timer=timer, sleep=sleep)
    result["candidate"]["model"] = str(paths["candidate"])
    if reference is not None:
        result["reference"]["model"] = str(paths["reference"])
    return {**result, **_method(sessions["candidate"], s, load_before, start, plan), **shape,
            "model": paths["candidate"].name,
            "reference_model": None if reference is None else str(paths["reference"])}


def measure_interleaved(models: dict[str, str | Path], reference: str | None = None,
                        inputs: list[Feed] | None = None, settings: LatencySettings = LatencySettings(), *,
                        timer: Callable[[], float] = time.perf_counter,
                        sleep: Callable[[float], object] = time.sleep) -> dict[str, Any]:
    """Several ONNX files timed together, interleaved round by round (see `interleaved_rounds`), in one process.

    `models` maps a name (e.g. "teacher", "trial 3") to an ONNX file; `reference` names the one every other
    model's ratio is taken against and whose rounds the drift rule judges. Every session is made before the
    first round, with the same threads, and runs the same batches. Returns "models" (per name: median_ms,
    p90_ms, ci95_ms, round_medians_ms and the file), "ratios" (per non-reference name: median and ci95),
    retries, contended, and the method as in `measure_paired`.
    """
    start = time.perf_counter()
    load_before = list(os.getloadavg())
    if not models:
        raise ValueError("measure_interleaved: no models given")
    paths = {name: check_model(path, f"model {name!r}") for name, path in models.items()}
    plan = plan_for(settings)
    calls, sessions, shape = _sessions(paths, inputs, settings, plan)
    with pinned_thread(None if plan is None else plan.main_cpu):
        result = interleaved_rounds(calls, settings, reference, timer=timer, sleep=sleep)
    for name, summary in result["models"].items():
        summary["model"] = str(paths[name])
    first = next(iter(sessions.values()))
    return {**result, **_method(first, settings, load_before, start, plan), **shape, "reference": reference}


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: python -m compress.deploy.latency CANDIDATE.onnx [REFERENCE.onnx]")
    print(json.dumps(measure_paired(sys.argv[1], sys.argv[2] if len(sys.argv) == 3 else None), indent=2))
