"""The report's figures. Each figure is one function that gathers what it shows and returns a `Figure` with its two
renderers: an interactive Plotly figure for report.html and a PNG (matplotlib) for report.md.

`report_figures(...)` lists the figures of a report in page order.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..config import JobConfig
from ..search.objectives import metric_names, search_constraints
from ..search.intervals import with_interval
from ..search.pareto import INTERVALS
from .collect import QA_CATEGORIES, completed, read_curves

__all__ = ["COLORS", "MEASURE_LABEL", "Figure", "curves", "importance", "parallel", "pareto", "qa_errors",
           "report_figures"]

COLORS = {"frontier": "#d62728", "feasible": "#1f77b4", "infeasible": "#7f7f7f", "stopped": "#bcbd22",
          "baseline": "#2ca02c", "teacher": "#9467bd", "lower rung": "#aec7e8"}
MEASURE_LABEL = {"params": "parameters", "latency_ms": "latency (ms)", "size_mb": "ONNX size (MB)",
                 "latency_ratio": "latency / teacher's (timed together)", "throughput": "throughput (inputs/s)",
                 "peak_memory_mb": "peak memory of a session (MB)"}


@dataclass(frozen=True)
class Figure:
    """One figure, drawn twice from the same data."""

    section: str  # the part of the page it belongs to: pareto, importance, parallel, curves or qa
    name: str  # report_files/<name>.png, and the id of its interactive plot
    plotly: Callable[[], Any]  # -> a plotly.graph_objects.Figure for report.html
    png: Callable[[Path], None]  # writes the PNG for report.md


# NOTE: plotly and matplotlib are imported when a figure is drawn, not at the top: both are heavy, and only
# `compress report` draws.
def _go():
    import plotly.graph_objects as go

    return go


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)


# ----------------------------------------------------------------------------------------------
# Pareto: the metric against one measure


def _kind(r: dict[str, Any]) -> str:
    if r.get("lower_rung"):
        return "lower rung"
    if r["state"] == "stopped":
        return "stopped"
    if not r.get("feasible"):
        return "infeasible"
    return "frontier" if r.get("on_frontier") else "feasible"


def _interval(r: dict[str, Any], measure: str) -> tuple[float, float] | None:
    """(low, high) of a record's figure for `measure` when it carries an interval (latency, ratio, throughput)."""
    ci = r.get(INTERVALS[measure]) if measure in INTERVALS else None
    return (float(ci[0]), float(ci[1])) if ci and r.get(measure) is not None else None


def _error_x(pts: list[dict[str, Any]], measure: str) -> dict[str, Any] | None:
    """Plotly's error_x for the points' intervals on `measure` (None when none has one)."""
    cis = [_interval(r, measure) for r in pts]
    if not any(cis):
        return None
    return dict(type="data", symmetric=False, thickness=1.2, width=3,
                array=[(c[1] - r[measure]) if c else 0 for r, c in zip(pts, cis)],
                arrayminus=[(r[measure] - c[0]) if c else 0 for r, c in zip(pts, cis)])


def _latency_text(r: dict[str, Any]) -> str:
    ci = r.get("latency_ci95_ms")
    source = {"confirmed": "confirmed", "single": "single measurement"}.get(r.get("latency_source"), "")
    return f"{with_interval(r.get('latency_ms') or float('nan'), ci)} ms" + (f" ({source})" if source else "")


def _hover(r: dict[str, Any]) -> str:
    s = r.get("spec") or {}
    return (f"trial {r['number']}{' (baseline)' if r.get('baseline') else ''}<br>{r.get('metric')} {r['value']:.4f}"
            f"<br>{r.get('params') or 0:,} params<br>{_latency_text(r)}"
            f"<br>L{s.get('num_layers')} H{s.get('heads')} F{s.get('intermediate_size')} {r.get('precision') or ''}"
            + (f"<br>{html.escape(r['reason'][:120])}" if r.get("reason") else ""))


def _bars(ax, pts: list[dict[str, Any]], measure: str, color: str, alpha: float) -> None:
    """Matplotlib horizontal error bars: each point's 95% interval on `measure`, where it has one."""
    with_ci = [(r, c) for r in pts if (c := _interval(r, measure))]
    if with_ci:
        ax.errorbar([r[measure] for r, _ in with_ci], [r["value"] for r, _ in with_ci],
                    xerr=[[r[measure] - c[0] for r, c in with_ci], [c[1] - r[measure] for r, c in with_ci]],
                    fmt="none", ecolor=color, alpha=alpha, elinewidth=1, capsize=2)


def pareto(data: dict[str, Any], cfg: JobConfig, measure: str) -> Figure:
    """Completed trials by kind (frontier, feasible, infeasible, stopped), the baseline, the teacher and the
    thresholds, with the metric against `measure`."""
    recs = [r for r in completed(data["recs"]) if r.get(measure) is not None]
    metric = next((r["metric"] for r in recs), cfg.task.primary_metric)
    base = data["doc"].get("baseline")
    teacher = data["doc"].get("teacher") or {}
    lines = [(c.name, float(c.value), str(c)) for c in search_constraints(cfg, metric_names(cfg))]
    label = MEASURE_LABEL.get(measure, measure)
    title = f"{metric} against {label}"

    def plotly():
        go = _go()
        fig = go.Figure()
        styles = {"lower rung": dict(symbol="circle-open", opacity=0.5),
                  "stopped": dict(symbol="triangle-down", opacity=0.35), "infeasible": dict(symbol="x", opacity=0.35),
                  "feasible": dict(symbol="circle", opacity=0.8),
                  "frontier": dict(symbol="circle", opacity=1.0, size=12)}
        for kind, st in styles.items():
            pts = [r for r in recs if _kind(r) == kind]
            if not pts:
                continue
            # A black ring marks a confirmed figure; error bars are the latency's 95% interval.
            ring = dict(width=[2 if r.get("latency_source") == "confirmed" else 0 for r in pts], color="black")
            fig.add_trace(go.Scatter(x=[r[measure] for r in pts], y=[r["value"] for r in pts], mode="markers",
                                     name=kind, marker=dict(color=COLORS[kind], size=st.pop("size", 9), line=ring, **st),
                                     error_x=_error_x(pts, measure), text=[_hover(r) for r in pts],
                                     hoverinfo="text"))
        front = sorted([r for r in recs if _kind(r) == "frontier"], key=lambda r: r[measure])
        if len(front) > 1:
            best, line = -math.inf, []
            for r in front:  # the staircase of points not beaten on this pair of axes
                if r["value"] > best:
                    best = r["value"]
                    line.append(r)
            fig.add_trace(go.Scatter(x=[r[measure] for r in line], y=[r["value"] for r in line], mode="lines",
                                     line=dict(color=COLORS["frontier"], shape="hv", width=1),
                                     name="frontier (this pair)", hoverinfo="skip"))
        if base and base.get(measure) is not None:
            fig.add_trace(go.Scatter(x=[base[measure]], y=[base["value"]], mode="markers", name="baseline",
                                     marker=dict(symbol="star", size=16, color=COLORS["baseline"]),
                                     error_x=_error_x([base], measure), text=[_hover(base)], hoverinfo="text"))
        if teacher.get(measure) is not None and teacher.get("metric") is not None:
            fig.add_trace(go.Scatter(x=[teacher[measure]], y=[teacher["metric"]], mode="markers", name="teacher",
                                     marker=dict(symbol="diamond", size=14, color=COLORS["teacher"]),
                                     error_x=_error_x([teacher], measure),
                                     text=[f"teacher<br>{metric} {teacher['metric']:.4f}<br>" + (
                                         _latency_text(teacher) if measure == "latency_ms"
                                         else f"{teacher[measure]:,.4g}")],
                                     hoverinfo="text"))
        for name, value, text in lines:
            if name == measure:
                fig.add_vline(x=value, line_dash="dash", line_color="#444", annotation_text=text)
            elif name == metric or name == "value":
                fig.add_hline(y=value, line_dash="dash", line_color="#444", annotation_text=text)
        xaxis = label + ("  (bars: 95% interval; black ring: confirmed figure)" if measure in INTERVALS else "")
        fig.update_layout(title=title, xaxis_title=xaxis, yaxis_title=metric, height=460,
                          margin=dict(l=60, r=20, t=50, b=50), legend=dict(orientation="h", y=-0.18))
        return fig

    def png(path: Path) -> None:
        plt = _pyplot()
        fig, ax = plt.subplots(figsize=(7, 4.2))
        for kind, (marker, alpha) in {"lower rung": ("o", 0.25), "stopped": ("v", 0.35), "infeasible": ("x", 0.35),
                                      "feasible": ("o", 0.8), "frontier": ("o", 1.0)}.items():
            pts = [r for r in recs if _kind(r) == kind]
            if pts:
                _bars(ax, pts, measure, COLORS[kind], alpha)
                ax.scatter([r[measure] for r in pts], [r["value"] for r in pts], marker=marker, alpha=alpha,
                           color=COLORS[kind], label=kind, s=60 if kind == "frontier" else 30,
                           edgecolors=["black" if r.get("latency_source") == "confirmed" else "none" for r in pts]
                           if marker != "x" else None)
        if base and base.get(measure) is not None:
            _bars(ax, [base], measure, COLORS["baseline"], 1.0)
            ax.scatter([base[measure]], [base["value"]], marker="*", s=220, color=COLORS["baseline"], label="baseline")
        if teacher.get(measure) is not None and teacher.get("metric") is not None:
            _bars(ax, [{**teacher, "value": teacher["metric"]}], measure, COLORS["teacher"], 1.0)
            ax.scatter([teacher[measure]], [teacher["metric"]], marker="D", s=90, color=COLORS["teacher"],
                       label="teacher")
        for name, value, text in lines:
            if name == measure:
                ax.axvline(value, ls="--", color="#444", lw=1)
            elif name == metric:
                ax.axhline(value, ls="--", color="#444", lw=1)
                ax.annotate(text, (ax.get_xlim()[0], value), fontsize=8, va="bottom")
        ax.set_xlabel(label + ("  (bars: 95% interval; black ring: confirmed figure)" if measure in INTERVALS else ""))
        ax.set_ylabel(metric)
        ax.set_title(title)
        ax.legend(fontsize=8, ncol=3)
        _save(fig, path)

    return Figure("pareto", f"pareto-{measure}", plotly, png)


# ----------------------------------------------------------------------------------------------
# Parallel coordinates of searched parameters and objectives


def _parcoords_dims(recs: list[dict[str, Any]], objectives: list[str]) -> list[dict[str, Any]]:
    names = sorted({k for r in recs for k in (r.get("params_searched") or {})})
    dims = []
    for name in names:
        vals = [(r.get("params_searched") or {}).get(name) for r in recs]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals if v is not None):
            dims.append({"label": name, "values": [float(v) if v is not None else float("nan") for v in vals]})
        else:
            cats = sorted({str(v) for v in vals})
            dims.append({"label": name, "values": [cats.index(str(v)) for v in vals],
                         "tickvals": list(range(len(cats))), "ticktext": cats})
    for key, label in (("value", recs[0]["metric"] if recs else "metric"), ("params", "parameters"),
                       ("latency_ms", "latency ms"), ("size_mb", "size MB"), ("latency_ratio", "latency ratio"),
                       ("throughput", "inputs/s"), ("peak_memory_mb", "peak MB")):
        if key == "value" or key in objectives:
            dims.append({"label": label, "values": [r.get(key) if r.get(key) is not None else float("nan")
                                                    for r in recs]})
    return dims


def parallel(recs: list[dict[str, Any]], objectives: list[str], title: str, name: str) -> Figure:
    """One line per trial through its searched parameters and objectives, coloured by its metric."""
    dims = _parcoords_dims(recs, objectives)
    metric_values = [r["value"] for r in recs]

    def plotly():
        go = _go()
        fig = go.Figure(go.Parcoords(line=dict(color=metric_values, colorscale="Viridis", showscale=True),
                                     dimensions=dims))
        fig.update_layout(title=dict(text=title, y=0.98), height=460, margin=dict(l=60, r=60, t=110, b=30))
        return fig

    def png(path: Path) -> None:
        plt = _pyplot()
        fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(dims)), 4))
        scaled = []
        for d in dims:
            v = np.asarray(d["values"], dtype=float)
            lo, hi = np.nanmin(v), np.nanmax(v)
            scaled.append((v - lo) / (hi - lo) if hi > lo else np.full_like(v, 0.5))
        scaled = np.asarray(scaled)
        metric = np.asarray(metric_values, dtype=float)
        cmap = plt.get_cmap("viridis")
        span = (metric.max() - metric.min()) or 1.0
        for j in range(scaled.shape[1]):
            ax.plot(range(len(dims)), scaled[:, j], color=cmap((metric[j] - metric.min()) / span), alpha=0.7, lw=1)
        ax.set_xticks(range(len(dims)), [d["label"] for d in dims], rotation=30, fontsize=8)
        ax.set_yticks([])
        ax.set_title(title + " (each axis scaled to its range; colour = metric)")
        _save(fig, path)

    return Figure("parallel", name, plotly, png)


# ----------------------------------------------------------------------------------------------
# Parameter importance


def importance(imp: dict[str, dict[str, float]]) -> Figure:
    """fANOVA importance of each searched parameter, grouped by objective."""
    params = sorted({p for v in imp.values() for p in v})
    title = "Parameter importance per objective (fANOVA)"

    def plotly():
        go = _go()
        fig = go.Figure([go.Bar(name=obj, x=params, y=[v.get(p, 0.0) for p in params]) for obj, v in imp.items()])
        fig.update_layout(barmode="group", title=title, yaxis_title="importance", height=380,
                          margin=dict(l=60, r=20, t=50, b=80))
        return fig

    def png(path: Path) -> None:
        plt = _pyplot()
        fig, ax = plt.subplots(figsize=(7, 3.6))
        width = 0.8 / max(1, len(imp))
        for i, (obj, v) in enumerate(imp.items()):
            ax.bar(np.arange(len(params)) + i * width, [v.get(p, 0.0) for p in params], width, label=obj)
        ax.set_xticks(np.arange(len(params)) + width * (len(imp) - 1) / 2, params, rotation=30, fontsize=8)
        ax.set_ylabel("importance")
        ax.set_title(title)
        ax.legend(fontsize=8)
        _save(fig, path)

    return Figure("importance", "importance", plotly, png)


# ----------------------------------------------------------------------------------------------
# Training curves


def curves(rec: dict[str, Any], curve: list[dict[str, Any]], metric: str) -> Figure:
    """A trial's evaluations (left) and training loss terms (right) by step, from its curves.jsonl."""
    metrics = [k for k in (metric, "HasAns_exact", "NoAns_exact") if any(k in p for p in curve)]
    losses = [k for k in ("loss", "loss_ce", "loss_task", "loss_hidden") if any(k in p for p in curve)]
    steps = [p["step"] for p in curve]

    def plotly():
        go = _go()
        from plotly.subplots import make_subplots  # NOTE: lazy, as in _go()

        fig = make_subplots(rows=1, cols=2, subplot_titles=("evaluation", "training loss terms"))
        for k in metrics:
            fig.add_trace(go.Scatter(x=steps, y=[p.get(k) for p in curve], mode="lines+markers", name=k), row=1,
                          col=1)
        for k in losses:
            fig.add_trace(go.Scatter(x=steps, y=[p.get(k) for p in curve], mode="lines", name=k), row=1, col=2)
        fig.update_xaxes(title_text="step")
        fig.update_layout(title=f"Training curves of trial {rec['number']} (evaluations before the last use the "
                                "eval_limit subset)", height=340, margin=dict(l=60, r=20, t=70, b=40))
        return fig

    def png(path: Path) -> None:
        plt = _pyplot()
        fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.2))
        for k in metrics:
            a.plot(steps, [p.get(k, np.nan) for p in curve], marker=".", label=k)
        for k in losses:
            b.plot(steps, [p.get(k, np.nan) for p in curve], label=k)
        a.set_title("evaluation")
        b.set_title("training loss terms")
        for ax in (a, b):
            ax.set_xlabel("step")
            ax.legend(fontsize=7)
        fig.suptitle(f"trial {rec['number']}")
        _save(fig, path)

    return Figure("curves", f"curves-{rec['number']}", plotly, png)


# ----------------------------------------------------------------------------------------------
# QA errors by article


def qa_errors(qa: dict[str, Any]) -> Figure:
    """The chosen QA model's questions per article, stacked by error category."""
    titles = sorted(qa["table"])
    title = f"QA errors of trial {qa['trial']} by article"

    def plotly():
        go = _go()
        fig = go.Figure([go.Bar(name=c, x=titles, y=[qa["table"][t][c] for t in titles]) for c in QA_CATEGORIES])
        fig.update_layout(barmode="stack", title=title, yaxis_title="questions", height=420,
                          margin=dict(l=60, r=20, t=50, b=120))
        return fig

    def png(path: Path) -> None:
        plt = _pyplot()
        fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(titles)), 4))
        bottom = np.zeros(len(titles))
        for c in QA_CATEGORIES:
            v = np.asarray([qa["table"][t][c] for t in titles], dtype=float)
            ax.bar(titles, v, bottom=bottom, label=c)
            bottom += v
        ax.set_ylabel("questions")
        ax.set_title(title)
        ax.tick_params(axis="x", rotation=45, labelsize=7)
        ax.legend(fontsize=7)
        _save(fig, path)

    return Figure("qa", "qa-errors", plotly, png)


# ----------------------------------------------------------------------------------------------
# The report's figures, in page order


def report_figures(data: dict[str, Any], cfg: JobConfig, imp: dict[str, dict[str, float]], chosen: list[int],
                   qa: dict[str, Any] | None) -> list[Figure]:
    """Pareto plots (one per measure with values), importance (given 3+ trials), parallel coordinates of all
    completed trials and of the frontier points at or above the baseline's metric, the curves of the `chosen`
    trials, and the QA errors of the chosen model."""
    recs, doc, objectives = data["recs"], data["doc"], data["objectives"]
    done = completed(recs)
    extra = [m for m in ("latency_ratio", "throughput", "peak_memory_mb") if m in objectives]
    out = [pareto(data, cfg, measure) for measure in ("params", "latency_ms", *extra)
           if any(r.get(measure) is not None for r in done)]
    if imp:
        out.append(importance(imp))
    if len(done) >= 2:
        out.append(parallel(done, objectives, "All completed trials", "parallel-all"))
    base = doc.get("baseline")
    good = [r for r in done if r.get("on_frontier") and (not base or r["value"] >= base["value"])]
    if len(good) >= 2:
        out.append(parallel(good, objectives, "Frontier points at or above the baseline's metric",
                            "parallel-frontier"))
    by_number = {r["number"]: r for r in recs}
    for n in chosen:
        if n in by_number and (curve := read_curves(by_number[n])):
            out.append(curves(by_number[n], curve, cfg.task.primary_metric))
    if qa and "table" in qa and qa["table"]:
        out.append(qa_errors(qa))
    return out
