"""The other figures users deploy under: throughput (inputs/s at a batch size) and peak resident memory of an
inference session, measured in a fresh process so nothing else this process loaded is counted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from .latency import (
    Feed, LatencySettings, bootstrap_median_ci, check_model, input_batches, pinning_method, plan_for, session_feeds,
    session_method,
)
from .onnxrt import GRAPH_OPTIMIZATION, onnx_session, pinned_thread

__all__ = ["peak_memory_child", "peak_memory_mb", "throughput"]


def throughput(path: str | Path, inputs: list[Feed] | None = None, *, batch_size: int = 8, seq_len: int = 128,
               threads: int = 2, seconds: float = 5.0, rounds: int = 5, warmup: int = 5,
               graph_optimization: str = "all", resamples: int = 1000, seed: int = 0,
               pin_threads: bool = True) -> dict[str, Any]:
    """Rows per second of back-to-back calls at a configured batch size, over `rounds` rounds of seconds/rounds.

    `inputs_per_s` is the median over rounds, with its bootstrap 95% interval (rounds resampled) and
    each round's figure; `inputs` replaces the fixed batch_size × seq_len shape as in measure_paired.
    Threads are pinned as in the latency protocol (LatencySettings.pin_threads).
    """
    start = time.perf_counter()
    if not seconds > 0 or rounds < 3 or warmup < 0:
        raise ValueError(f"seconds={seconds}, rounds={rounds}, warmup={warmup}: need seconds > 0, rounds >= 3 "
                         "and warmup >= 0")
    settings = LatencySettings(batch_size=batch_size, seq_len=seq_len, threads=threads, rounds=rounds,
                               warmup=warmup, resamples=resamples, seed=seed, graph_optimization=graph_optimization,
                               pin_threads=pin_threads)
    onnx_path = check_model(path, "model")
    load_before = list(os.getloadavg())
    batches, shape = input_batches(onnx_path, inputs, settings.batch_size, settings.seq_len, seed)
    plan = plan_for(settings)
    session = onnx_session(onnx_path, threads, graph_optimization, None if plan is None else plan.pool_cpus)
    feeds = session_feeds(session, batches, len(batches), "model")
    rows = [next(iter(f.values())).shape[0] for f in feeds]
    per_round = []
    with pinned_thread(None if plan is None else plan.main_cpu):
        for i in range(warmup):
            session.run(None, feeds[i % len(feeds)])
        for _ in range(rounds):
            done, calls, t0 = 0, 0, time.perf_counter()
            # At least one call per round, however short the round.
            while calls == 0 or time.perf_counter() - t0 < seconds / rounds:
                session.run(None, feeds[calls % len(feeds)])
                done += rows[calls % len(feeds)]
                calls += 1
            per_round.append(done / (time.perf_counter() - t0))
    return {"inputs_per_s": float(np.median(per_round)),
            "ci95": list(bootstrap_median_ci(per_round, resamples, seed)),
            "min_per_s": float(min(per_round)), "max_per_s": float(max(per_round)),
            "round_inputs_per_s": [float(v) for v in per_round],
            **session_method(session, threads, graph_optimization), "thread_pinning": pinning_method(settings, plan),
            **shape, "model": str(onnx_path),
            "warmup": warmup, "rounds": rounds, "seconds": seconds, "load_before": load_before,
            "load_after": list(os.getloadavg()), "elapsed_s": time.perf_counter() - start}


def _peak_rss_bytes() -> tuple[int, str]:
    """This process's peak resident memory in bytes, and where it was read."""
    # NOTE: on Linux ru_maxrss carries the parent's peak across fork and exec (a child of a 1 GB pytest
    # starts at 1 GB), so the peak of this address space, VmHWM, is read instead where /proc has it.
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024, "VmHWM"
    except OSError:
        pass
    import resource

    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # ru_maxrss is in KiB on Linux and in bytes on macOS.
    return (maxrss if sys.platform == "darwin" else maxrss * 1024), "ru_maxrss"


def peak_memory_child(argv: list[str]) -> None:
    """In a fresh interpreter: baseline peak RSS, then load the session, run every batch, peak RSS again."""
    model, threads, graph_optimization, npz = argv[0], int(argv[1]), argv[2], argv[3]
    with np.load(npz) as data:
        batches: dict[int, Feed] = {}
        for key in data.files:
            i, name = key.split("__", 1)
            batches.setdefault(int(i), {})[name] = data[key]
    baseline, source = _peak_rss_bytes()
    session = onnx_session(model, threads, graph_optimization)
    takes = [i.name for i in session.get_inputs()]
    for i in sorted(batches):
        session.run(None, {k: batches[i][k] for k in takes})
    peak, _ = _peak_rss_bytes()
    print(json.dumps({"baseline_bytes": baseline, "peak_bytes": peak, "source": source}))


def peak_memory_mb(path: str | Path, inputs: list[Feed] | None = None, *, threads: int = 2, batch_size: int = 1,
                   seq_len: int = 128, graph_optimization: str = "all", seed: int = 0,
                   timeout_s: float = 300.0) -> dict[str, Any]:
    """Resident memory an inference session adds, in MB (10^6 bytes), measured in a fresh child process.

    The child imports numpy and onnxruntime, reads its peak RSS (the baseline), loads the session, runs
    every batch once and reads its peak RSS again; `peak_memory_mb` is the difference, and both numbers
    are recorded. A fresh process, because this one's peak already holds whatever ran before. The peak
    is VmHWM from /proc where there is one, else getrusage's ru_maxrss (recorded under `measure`).
    """
    start = time.perf_counter()
    onnx_path = check_model(path, "model")
    if threads < 1 or graph_optimization not in GRAPH_OPTIMIZATION:
        raise ValueError(f"threads={threads}, graph_optimization={graph_optimization!r}: need threads >= 1 and "
                         f"one of {', '.join(GRAPH_OPTIMIZATION)}")
    if batch_size < 1 or seq_len < 1:
        raise ValueError(f"batch_size={batch_size}, seq_len={seq_len}: both must be at least 1")
    batches, shape = input_batches(onnx_path, inputs, batch_size, seq_len, seed)
    package_root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)}
    with tempfile.TemporaryDirectory() as tmp:
        npz = Path(tmp) / "inputs.npz"
        np.savez(npz, **{f"{i}__{k}": v for i, b in enumerate(batches) for k, v in b.items()})
        code = "import sys; from compress.deploy.capacity import peak_memory_child; peak_memory_child(sys.argv[1:])"
        proc = subprocess.run([sys.executable, "-c", code, str(onnx_path), str(threads), graph_optimization,
                               str(npz)], capture_output=True, text=True, env=env, timeout=timeout_s)
    if proc.returncode != 0:
        raise RuntimeError(f"the peak-memory child for {onnx_path} failed ({proc.returncode}): "
                           f"{proc.stderr.strip()[-2000:]}")
    child = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"peak_memory_mb": (child["peak_bytes"] - child["baseline_bytes"]) / 1e6,
            "baseline_rss_mb": child["baseline_bytes"] / 1e6, "peak_rss_mb": child["peak_bytes"] / 1e6,
            "measure": f"peak RSS ({child['source']}) of a fresh process after loading the session and "
                       "running the batches, minus its peak RSS after importing numpy and onnxruntime",
            "runtime": "onnxruntime", "onnxruntime": ort.__version__, "threads": threads,
            "graph_optimization": graph_optimization, **shape, "model": str(onnx_path),
            "elapsed_s": time.perf_counter() - start}
