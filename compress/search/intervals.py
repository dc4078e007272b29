"""Dominance and ties between points whose figures carry intervals (a latency median and its bootstrap interval).

A point dominates another only when it is at least as good on every objective and better, with intervals
that do not overlap, on at least one; two points whose intervals overlap on every objective they differ in
are a tie, not one dominating the other.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NamedTuple

__all__ = ["Estimate", "Value", "dominates_with_intervals", "intervals_overlap", "tied_with_intervals",
           "with_interval"]


class Estimate(NamedTuple):
    """A figure with its interval, e.g. a latency median and its bootstrap 95% interval."""

    value: float
    low: float
    high: float


Direction = Literal["minimize", "maximize"]
Value = float | Estimate | tuple[float, float, float]


def _interval(v: Value, where: str) -> tuple[float, float, float]:
    """(value, low, high); a plain number is exact: its interval is the point itself."""
    if isinstance(v, tuple):
        if len(v) != 3:
            raise ValueError(f"{where}={v!r}: an estimate is (value, low, high)")
        value, low, high = (float(t) for t in v)
    else:
        value = low = high = float(v)
    if not low <= high:
        raise ValueError(f"{where}={v!r}: its interval has low > high")
    return value, low, high


def intervals_overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Whether two closed intervals (low, high) share at least one point."""
    if not a[0] <= a[1] or not b[0] <= b[1]:
        raise ValueError(f"intervals {a} and {b}: each must be (low, high) with low <= high")
    return a[0] <= b[1] and b[0] <= a[1]


def _compare(a: Sequence[Value], b: Sequence[Value], directions: Sequence[str]) -> list[tuple[float, bool]]:
    """Per objective: a's lead over b in the good direction, and whether their intervals overlap."""
    if not len(a) == len(b) == len(directions):
        raise ValueError(f"a has {len(a)} values, b {len(b)}, directions {len(directions)}: need one per objective")
    out = []
    for i, d in enumerate(directions):
        if d not in ("minimize", "maximize"):
            raise ValueError(f"directions[{i}]={d!r}: use 'minimize' or 'maximize'")
        va, la, ha = _interval(a[i], f"a[{i}]")
        vb, lb, hb = _interval(b[i], f"b[{i}]")
        sign = 1.0 if d == "maximize" else -1.0
        out.append((sign * (va - vb), intervals_overlap((la, ha), (lb, hb))))
    return out


def dominates_with_intervals(a: Sequence[Value], b: Sequence[Value], directions: Sequence[str]) -> bool:
    """Whether `a` dominates `b` when figures carry intervals (Estimate or (value, low, high); numbers are exact).

    The rule: a dominates b when on every objective a's value is at least as good as b's, and on at
    least one objective a's value is better AND the two intervals do not overlap. A lead inside the
    noise never decides; exact values (e.g. parameter counts) that differ never overlap.
    """
    better_apart = False
    for gain, overlap in _compare(a, b, directions):
        if gain < 0:
            return False
        better_apart |= gain > 0 and not overlap
    return better_apart


def tied_with_intervals(a: Sequence[Value], b: Sequence[Value], directions: Sequence[str]) -> bool:
    """Whether `a` and `b` are a tie: on every objective where their values differ, their intervals overlap.

    A tie is reported as such rather than as a win for whichever measured lower this time.
    """
    return all(gain == 0 or overlap for gain, overlap in _compare(a, b, directions))


def with_interval(value: float | None, ci: Sequence[float] | None, spec: str = ".2f") -> str:
    """`value [low, high]` in `spec`, the value alone when there is no interval, "-" when there is no value:
    how every table and line of this project prints a figure with its error bar."""
    if value is None:
        return "-"
    return f"{value:{spec}} [{ci[0]:{spec}}, {ci[1]:{spec}}]" if ci else format(value, spec)

