"""A lock that keeps latency measurements and training steps of the workers on one machine apart.

Training pauses while a measurement runs: every optimisation step holds the lock shared, a latency
measurement holds it exclusively, so a measurement waits for the steps already running to finish and
each worker then blocks before its next step until the measurement is done. A measurement gets in even
while several workers' steps overlap without a gap, because it first closes a gate that new steps pass.

    with training_step(lock_dir): loss.backward(); optimizer.step()
    with measuring(lock_dir) as hold: result = measure_paired(...)   # hold.waited_s: time spent waiting

Locks are `fcntl.flock` files in lock_dir (see `lock_dir_for`: RUN/.locks/<host>/, or $COMPRESS_LOCK_DIR/<host>/);
lock_dir None is a no-op. A measurement that has waited WAIT_WARN_S for the lock logs a warning naming the processes
that hold it (from /proc/locks) and whether they are stopped: a job suspended in the middle of a training step
(Ctrl-Z, kill -STOP) would otherwise hold every measurement of the machine back without a word.
"""

from __future__ import annotations

import fcntl
import logging
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

WAIT_WARN_S = 60.0  # a measurement waiting this long for the lock says who holds it (then every WAIT_REPEAT_S)
WAIT_REPEAT_S = 300.0

_held = threading.local()  # this thread's training-step depth, to catch nesting that would deadlock
log = logging.getLogger(__name__)


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


def holders(path: Path) -> list[str]:
    """The processes holding a flock on `path`, as 'pid N (command line), state', read from /proc/locks (Linux);
    [] where it cannot be read."""
    try:
        st = os.stat(path)
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        parts = line.split()
        if "->" in parts or "FLOCK" not in parts:  # '->' marks a process waiting for the lock, not holding it
            continue
        i = parts.index("FLOCK")
        try:
            pid, (major, minor, inode) = int(parts[i + 3]), parts[i + 4].split(":")
            same = (int(inode) == st.st_ino and int(major, 16) == os.major(st.st_dev)
                    and int(minor, 16) == os.minor(st.st_dev))
        except (IndexError, ValueError):
            continue
        if not same or pid == os.getpid():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            cmd, state = "?", "?"
        what = {"T": "STOPPED (resume it: kill -CONT %d)" % pid, "t": "stopped by a debugger", "D": "in disk wait",
                "Z": "a zombie"}.get(state, "running")
        out.append(f"pid {pid} ({cmd[:120]}), {what}")
    return out


def _lock_waiting(fd: int, path: Path, mode: int) -> None:
    """flock(fd, mode), warning after WAIT_WARN_S (and every WAIT_REPEAT_S) with the processes that hold it."""
    try:
        fcntl.flock(fd, mode | fcntl.LOCK_NB)
        return
    except BlockingIOError:
        pass
    t0 = time.monotonic()
    warn_at, delay = t0 + WAIT_WARN_S, 0.001
    while True:
        time.sleep(delay)
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            delay = min(2 * delay, 0.05)
        if time.monotonic() >= warn_at:
            held = holders(path) or ["unknown (no /proc/locks on this system)"]
            log.warning("a latency measurement has waited %.0f s for the measurement lock %s, held by: %s. Every job "
                        "given this lock folder waits for it; a job stopped in the middle of a training step holds it "
                        "until it is resumed or ended.", time.monotonic() - t0, path, "; ".join(held))
            warn_at = time.monotonic() + WAIT_REPEAT_S


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
        # one measurement at a time; new steps now block at the gate
        _lock_waiting(gate, Path(lock_dir) / GATE, fcntl.LOCK_EX)
        main = _open(Path(lock_dir), MAIN)
        try:
            # the steps already inside finish
            _lock_waiting(main, Path(lock_dir) / MAIN, fcntl.LOCK_EX)
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
