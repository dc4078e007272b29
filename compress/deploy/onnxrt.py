"""ONNX Runtime sessions configured one way everywhere: latency protocol, evaluation and the server (no torch)."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort

__all__ = ["GRAPH_OPTIMIZATION", "PROVIDERS", "CorePlan", "available_cores", "check_provider", "core_plan",
           "onnx_session", "pinned_thread"]

GRAPH_OPTIMIZATION = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


def available_cores(cgroup_root: str = "/sys/fs/cgroup") -> int:
    """The cores this process may use: its CPU affinity, lowered by a cgroup v2 CPU quota (a container's limit)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = (Path(cgroup_root) / "cpu.max").read_text().split()[:2]
        if quota != "max" and int(period) > 0:
            cores = min(cores, max(1, int(quota) // int(period)))
    except (OSError, ValueError):  # no cgroup v2 file, or one this does not understand: the affinity stands
        pass
    return cores


@dataclass(frozen=True)
class CorePlan:
    """Where a pinned measurement runs: the calling thread on `main_cpu`, ONNX Runtime's pool threads one per
    `pool_cpus` entry (a session with `threads` intra-op threads has threads - 1 pool threads; the caller is the
    other one)."""

    main_cpu: int
    pool_cpus: tuple[int, ...]

    def describe(self) -> dict[str, object]:
        return {"pinned": True, "main_cpu": self.main_cpu, "pool_cpus": list(self.pool_cpus)}


def core_plan(threads: int, allowed: Sequence[int] | None = None) -> CorePlan | None:
    """One core per thread, from the cores this process may use (lowest first); None where the operating system
    cannot pin threads (no sched_setaffinity) or fewer cores are allowed than there are threads."""
    if threads < 1:
        raise ValueError(f"threads={threads}: need at least 1")
    if allowed is None:
        if not hasattr(os, "sched_getaffinity"):
            return None
        allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < threads:
        return None
    return CorePlan(main_cpu=allowed[0], pool_cpus=tuple(allowed[1:threads]))


@contextmanager
def pinned_thread(cpu: int | None) -> Iterator[None]:
    """The calling thread on one core for the duration, its former cores restored after (a no-op for None).

    On Linux pid 0 names the calling thread, so threads the process already runs (torch's pools, a server's
    workers) keep their cores; a thread started inside the block would inherit the pin.
    """
    if cpu is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


PROVIDERS = {"cpu": ["CPUExecutionProvider"], "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"]}


def check_provider(provider: str, where: str = "search.latency.provider") -> list[str]:
    """The execution providers for `provider` (cpu | cuda), refused with what is installed when unavailable."""
    if provider not in PROVIDERS:
        raise ValueError(f"{where}: {provider!r} is not a provider; use cpu or cuda")
    available = ort.get_available_providers()
    if PROVIDERS[provider][0] not in available:
        raise ValueError(f"{where}: {provider} needs ONNX Runtime's {PROVIDERS[provider][0]}, which the installed "
                         f"onnxruntime {ort.__version__} does not offer (it has {', '.join(available)}); install "
                         "onnxruntime-gpu in place of onnxruntime on a machine with a CUDA GPU, or measure on cpu")
    return PROVIDERS[provider]


def onnx_session(onnx_path: str | Path, threads: int = 2, graph_optimization: str = "all",
                 pool_cpus: Sequence[int] | None = None, provider: str = "cpu",
                 spinning: bool = True) -> ort.InferenceSession:
    """A session with `threads` intra-op threads, one operator at a time (BERT's graph is a chain), on the CPU or,
    with provider "cuda" (onnxruntime-gpu), on a GPU.

    `pool_cpus` pins the session's threads - 1 pool threads, one core each (0-based ids, as os.sched_* use);
    ONNX Runtime never pins the calling thread, which `pinned_thread` does. `spinning=False` stops the intra-op
    threads from busy-waiting for the next operator (they sleep instead): slower back to back, but a server's
    event loop then gets the cores between calls.
    """
    providers = check_provider(provider)
    if graph_optimization not in GRAPH_OPTIMIZATION:
        raise ValueError(f"graph_optimization={graph_optimization!r}: use one of {', '.join(GRAPH_OPTIMIZATION)}")
    if threads < 1:
        raise ValueError(f"threads={threads}: need at least 1")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = GRAPH_OPTIMIZATION[graph_optimization]
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if pool_cpus is not None:
        if len(pool_cpus) != threads - 1:
            raise ValueError(f"pool_cpus={list(pool_cpus)}: a session with {threads} threads has {threads - 1} pool "
                             "threads to pin, one core each")
        if pool_cpus:
            # ONNX Runtime numbers logical processors from 1; ";" separates the threads.
            options.add_session_config_entry("session.intra_op_thread_affinities",
                                             ";".join(str(c + 1) for c in pool_cpus))
    return ort.InferenceSession(str(onnx_path), options, providers=providers)
