"""Where the workers of `compress search --workers N` run: one GPU each, or a share of the CPU cores each.

`worker_slots(N, device, cores, gpus)` is a pure function (tested without a GPU); `plan_workers(cfg, N)` reads
the machine. On a GPU machine worker i sees only GPU i (CUDA_VISIBLE_DEVICES), round robin when there are more
workers than GPUs; on the CPU the cores are split so that N workers' torch threads never exceed the cores.
Latency is never measured on the training device: it is ONNX Runtime on the CPU, under the measurement lock.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from ..deploy.onnxrt import available_cores

__all__ = ["WorkerSlot", "available_cores", "plan_workers", "worker_slots"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerSlot:
    index: int
    device: str  # "cuda:<id as the machine numbers it>" or "cpu"
    threads: int  # torch intra-op threads of the worker (batches, CPU-side work, or all of the training on CPU)
    env: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        return f"worker {self.index}: {self.device}, {self.threads} thread{'s' if self.threads != 1 else ''}"


def worker_slots(workers: int, device: str, cores: int, gpus: list[str]) -> list[WorkerSlot]:
    """`device` is resolved ("cuda" or "cpu"; "mps" has one device, shared); `gpus` the visible GPU ids."""
    if workers < 1:
        raise ValueError(f"--workers {workers}: need at least 1 worker")
    threads = max(1, cores // workers)
    env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    if device == "cuda":
        if not gpus:
            raise ValueError("device cuda, but no GPU is visible (CUDA_VISIBLE_DEVICES is empty)")
        return [WorkerSlot(i, f"cuda:{gpus[i % len(gpus)]}", threads,
                           {**env, "CUDA_VISIBLE_DEVICES": gpus[i % len(gpus)]}) for i in range(workers)]
    return [WorkerSlot(i, device, threads, env) for i in range(workers)]


def plan_workers(device: str, workers: int, threads: int | None = None) -> list[WorkerSlot]:
    """The slots for this machine; `threads` (the job's) bounds the cores split between the workers."""
    import torch

    from ..distill.devices import resolve_device

    resolved = resolve_device(device, "distill.train.device")
    usable = available_cores()
    cores = min(threads, usable) if threads else usable
    gpus: list[str] = []
    if resolved == "cuda":
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        gpus = ([g.strip() for g in visible.split(",") if g.strip()] if visible is not None
                else [str(i) for i in range(torch.cuda.device_count())])
    slots = worker_slots(workers, resolved, cores, gpus)
    if resolved == "cuda" and workers > len(gpus):
        log.warning("%d workers on %d GPUs: some GPUs train two or more trials at once (round robin)",
                    workers, len(gpus))
    if resolved != "cuda" and workers > cores:
        log.warning("%d workers on %d cores: each gets 1 thread and they share cores; fewer workers would be faster",
                    workers, cores)
    return slots
