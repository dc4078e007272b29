"""A lock that keeps latency measurements and training steps of the workers on one machine apart.

Training pauses while a measurement runs: every optimisation step holds the lock shared, a latency
measurement holds it exclusively, so a measurement waits for the steps already running to finish and
each worker then blocks before its next step until the measurement is done. A measurement gets in even
while several workers' steps overlap without a gap, because it first closes a gate that new steps pass.

    with training_step(lock_dir): loss.backward(); optimizer.step()
    with measuring(lock_dir) as hold: result = measure_paired(...)   # hold.waited_s: time spent waiting

Locks are `fcntl.flock` files in lock_dir (see `lock_dir_for`: RUN/.locks/<host>/, or $COMPRESS_LOCK_DIR/<host>/);
lock_dir None is a no-op.
"""

from __future__ import annotations

import fcntl
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Hold", "lock_dir_for", "measuring", "training_step"]

MAIN = "measure.lock"  # shared by training steps, exclusive for a measurement
LOCK_ENV = "COMPRESS_LOCK_DIR"  # one lock folder for every job on the machine (see lock_dir_for)
GATE = "gate.lock"  # exclusive for a measurement from before it waits; steps pass through it shared

_held = threading.local()  # this thread's training-step depth, to catch nesting that would deadlock


@dataclass
class Hold:
    """What a hold cost: `waited_s` before it was granted, `held_s` once it is released."""

    kind: str  # "training" or "measuring"
    waited_s: float = 0.0
    held_s: float = 0.0


def lock_dir_for(run_dir: str | Path) -> Path:
    """RUN/.locks/<host>/: one lock per machine, so workers on other machines sharing the run folder do not wait.

    With COMPRESS_LOCK_DIR set, $COMPRESS_LOCK_DIR/<host>/ instead: every job given the same folder shares one
    lock, so a teacher fine-tuning or a study in another run folder on this machine pauses too while a latency is
    measured (without it, jobs of different run folders do not see each other)."""
    shared = os.environ.get(LOCK_ENV, "").strip()
    return (Path(shared).expanduser() if shared else Path(run_dir) / ".locks") / socket.gethostname()


def _open(lock_dir: Path, name: str) -> int:
    lock_dir.mkdir(parents=True, exist_ok=True)
    return os.open(lock_dir / name, os.O_RDWR | os.O_CREAT, 0o666)


@contextmanager
def training_step(lock_dir: str | Path | None) -> Iterator[Hold]:
    """Hold the lock shared around one optimisation step; blocks while a measurement runs or waits to run.

    A nested training_step in the same thread is free (the outer one already holds the lock).
    """
    hold = Hold("training")
    if lock_dir is None or getattr(_held, "depth", 0):
        yield hold
        return
    t0 = time.perf_counter()
    gate = _open(Path(lock_dir), GATE)
    try:
        # Passing the gate (and leaving it at once) is what lets a waiting measurement stop new steps.
        fcntl.flock(gate, fcntl.LOCK_SH)
        fcntl.flock(gate, fcntl.LOCK_UN)
    finally:
        os.close(gate)
    main = _open(Path(lock_dir), MAIN)
    try:
        fcntl.flock(main, fcntl.LOCK_SH)
        hold.waited_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        _held.depth = 1
        try:
            yield hold
        finally:
            _held.depth = 0
            hold.held_s = time.perf_counter() - t1
    finally:
        os.close(main)  # closing the descriptor releases its flock


@contextmanager
def measuring(lock_dir: str | Path | None) -> Iterator[Hold]:
    """Hold the lock exclusively for a measurement: close the gate, then wait for running steps to finish.

    Raises RuntimeError inside a training_step of the same thread, which would wait for itself forever.
    """
    if getattr(_held, "depth", 0):
        raise RuntimeError("measuring() inside training_step() of the same thread would deadlock; "
                           "measure after the step")
    hold = Hold("measuring")
    if lock_dir is None:
        yield hold
        return
    t0 = time.perf_counter()
    gate = _open(Path(lock_dir), GATE)
    try:
        fcntl.flock(gate, fcntl.LOCK_EX)  # one measurement at a time; new steps now block at the gate
        main = _open(Path(lock_dir), MAIN)
        try:
            fcntl.flock(main, fcntl.LOCK_EX)  # the steps already inside finish
            hold.waited_s = time.perf_counter() - t0
            t1 = time.perf_counter()
            try:
                yield hold
            finally:
                hold.held_s = time.perf_counter() - t1
        finally:
            os.close(main)
    finally:
        os.close(gate)
