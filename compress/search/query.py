"""`compress trials RUN --where EXPR --sort KEY`: a filtered, sorted table of trials.

The --where expression is Python-like but evaluated by a small interpreter (never eval): comparisons
(`< <= > >= == !=`, chained), `and`, `or`, `not`, `+ - * /`, numbers and quoted strings, and names:
number, state, baseline, feasible, precision, value (the task metric), params, latency_ms, latency_p90_ms,
latency_ratio (over the teacher, timed together), size_mb, throughput, peak_memory_mb, latency_source ('confirmed'
or 'single'), every metric by name (accuracy, exact, f1, ...), and
every searched parameter (num_layers, heads, ...).
A trial that lacks a value a comparison needs does not match.
"""

from __future__ import annotations

import ast
import csv
import io
import json
import operator
from typing import Any

__all__ = ["QueryError", "filter_trials", "format_trials", "trial_row"]

_CMP = {ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge,
        ast.Eq: operator.eq, ast.NotEq: operator.ne}
_BIN = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}
COLUMNS = ["number", "state", "feasible", "value", "params", "latency_ms", "latency_ratio", "latency_source",
           "size_mb", "precision", "spec"]


class QueryError(ValueError):
    """A --where or --sort that cannot be evaluated; the message names the bad part."""


class _Missing(Exception):
    pass


def trial_row(rec: dict[str, Any]) -> dict[str, Any]:
    """The flat names a --where expression can use, for one trial record (study.trial_record)."""
    row = {k: rec.get(k) for k in ("number", "state", "baseline", "feasible", "value", "params", "latency_ms",
                                   "latency_p90_ms", "latency_ratio", "size_mb", "precision", "throughput",
                                   "peak_memory_mb", "latency_source")}
    for k, v in (rec.get("metrics") or {}).items():
        if isinstance(v, (int, float)) and k not in row:
            row[k] = v
    for k, v in (rec.get("params_searched") or {}).items():
        row.setdefault(k, v)
    if rec.get("metric"):
        row.setdefault(rec["metric"], rec.get("value"))
    return row


def _compile(expr: str) -> ast.Expression:
    try:
        return ast.parse(expr, mode="eval")
    except SyntaxError as exc:
        raise QueryError(f"--where {expr!r} is not a valid expression ({exc.msg} at column {exc.offset}); "
                         "write e.g. 'accuracy > 0.85 and params < 15e6'") from None


def _eval(node: ast.AST, row: dict[str, Any], names: set[str], expr: str) -> Any:
    if isinstance(node, ast.Expression):
        return _eval(node.body, row, names, expr)
    if isinstance(node, ast.BoolOp):
        values = (_truth(v, row, names, expr) for v in node.values)
        return all(values) if isinstance(node.op, ast.And) else any(values)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        return not _eval(node.operand, row, names, expr)  # a missing value makes `not x` false too
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_eval(node.operand, row, names, expr)
    if isinstance(node, ast.Compare):
        left = _eval(node.left, row, names, expr)
        for op, right_node in zip(node.ops, node.comparators):
            if type(op) not in _CMP:
                raise QueryError(f"--where {expr!r}: operator {type(op).__name__} is not supported; use < <= > >= == !=")
            right = _eval(right_node, row, names, expr)
            try:
                if not _CMP[type(op)](left, right):
                    return False
            except TypeError:
                raise QueryError(f"--where {expr!r}: cannot compare {left!r} with {right!r}") from None
            left = right
        return True
    if isinstance(node, ast.BinOp) and type(node.op) in _BIN:
        return _BIN[type(node.op)](_eval(node.left, row, names, expr), _eval(node.right, row, names, expr))
    if isinstance(node, ast.Name):
        if node.id in ("True", "False"):
            return node.id == "True"
        if node.id not in names:
            raise QueryError(f"--where {expr!r}: unknown name {node.id!r}; known: {', '.join(sorted(names))}")
        value = row.get(node.id)
        if value is None:
            raise _Missing(node.id)
        return value
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str, bool)):
        return node.value
    raise QueryError(f"--where {expr!r}: {ast.unparse(node)!r} is not allowed; use names, numbers, comparisons, "
                     "and/or/not and + - * /")


def _truth(node: ast.AST, row: dict[str, Any], names: set[str], expr: str) -> bool:
    try:
        return bool(_eval(node, row, names, expr))
    except _Missing:
        return False


def filter_trials(recs: list[dict[str, Any]], where: str | None = None, sort: str | None = None,
                  descending: bool = False) -> list[dict[str, Any]]:
    """Records whose row satisfies `where`, sorted by `sort` (missing values last)."""
    rows = [(r, trial_row(r)) for r in recs]
    names = set().union(*(row.keys() for _, row in rows)) if rows else set(COLUMNS)
    if where:
        tree = _compile(where)
        rows = [(r, row) for r, row in rows if _truth(tree, row, names, where)]
    if sort:
        if sort not in names:
            raise QueryError(f"--sort {sort!r} is not a trial field; known: {', '.join(sorted(names))}")
        present = [(r, row) for r, row in rows if row.get(sort) is not None]
        absent = [(r, row) for r, row in rows if row.get(sort) is None]
        present.sort(key=lambda x: x[1][sort], reverse=descending)
        rows = present + absent
    return [r for r, _ in rows]


def _spec(rec: dict[str, Any]) -> str:
    s = rec.get("spec") or {}
    return f"L{s.get('num_layers')} H{s.get('heads')} F{s.get('intermediate_size')}" if s else ""


def format_trials(recs: list[dict[str, Any]], fmt: str = "table") -> str:
    """table (aligned text), csv or json."""
    if fmt == "json":
        return json.dumps(recs, indent=2, default=str)
    metric = next((r["metric"] for r in recs if r.get("metric")), "value")
    header = ["trial", "state", "feasible", metric, "params", "latency_ms", "latency_ci95_ms", "latency_ratio",
              "figures", "size_mb", "precision", "spec"]
    lines = []
    for r in recs:
        ci = r.get("latency_ci95_ms")
        lines.append([str(r["number"]) + (" (baseline)" if r.get("baseline") else ""), str(r.get("state")),
                      str(r.get("feasible")), _num(r.get("value"), ".4f"), _num(r.get("params"), ","),
                      _num(r.get("latency_ms"), ".3f"), f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "-",
                      _num(r.get("latency_ratio"), ".3f"), str(r.get("latency_source") or "-"),
                      _num(r.get("size_mb"), ".2f"), str(r.get("precision") or ""), _spec(r)])
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(header)
        w.writerows([[c.replace(",", "") if i == 4 else c for i, c in enumerate(line)] for line in lines])
        return buf.getvalue()
    if fmt != "table":
        raise QueryError(f"--format {fmt!r}: use table, csv or json")
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(header)]
    out = ["  ".join(h.rjust(w) for h, w in zip(header, widths))]
    out += ["  ".join(c.rjust(w) for c, w in zip(line, widths)) for line in lines]
    out.append(f"{len(recs)} trial{'s' if len(recs) != 1 else ''}")
    return "\n".join(out)


def _num(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)
