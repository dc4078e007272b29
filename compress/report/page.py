"""`compress report RUN`: one page for choosing a frontier model, written as report.html (self-contained,
interactive Plotly plots, opens offline) and report.md (the same tables, static PNG plots in report_files/).

Works at any time, also while the study runs: it reads the study as it is. Sections: how it was made (machine,
versions, config hash, times, trial counts); Pareto plots (metric against parameters and against latency:
frontier highlighted, baseline and teacher marked, thresholds drawn, infeasible and stopped trials faded);
the scenario table; parameter importance per objective (fANOVA); parallel coordinates of all trials and of the
frontier points at or above the baseline's metric; the values the frontier prefers; training curves of the
chosen trials; and for QA, an error analysis of the chosen model by article.

With a held-out test split (data.test or data.split.test), the scenario, frontier and reference tables show the eval
metric (what the search selected on) and the test metric (never seen by the search; compress.search.heldout scores what is
missing when the report is built) in separate, labelled columns.

QA error categories (per question, at the model's serving no-answer threshold, see compress.deploy.variants):
- correct: exact match with a gold answer, or no answer where the question has none;
- mostly correct: answered, not exact, best F1 against the gold answers >= report.mostly_correct_f1 (0.5);
- mostly wrong: answered, F1 below that;
- label has answer: the question has an answer but the model said no answer;
- label has no answer: the question has none but the model answered.
"""

from __future__ import annotations

import html
import json
import math
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from optuna.trial import TrialState

from ..artifacts import config_hash, write_text
from ..config import JobConfig

__all__ = ["QA_CATEGORIES", "build_report", "heldout_note", "importances", "preferred_values", "qa_error_table",
           "scenario_rows"]

QA_CATEGORIES = ("correct", "mostly correct", "mostly wrong", "label has answer", "label has no answer")
COLORS = {"frontier": "#d62728", "feasible": "#1f77b4", "infeasible": "#7f7f7f", "stopped": "#bcbd22",
          "baseline": "#2ca02c", "teacher": "#9467bd"}
MEASURE_LABEL = {"params": "parameters", "latency_ms": "latency (ms)", "size_mb": "ONNX size (MB)"}


# ----------------------------------------------------------------------------------------------
# Data


def _collect(cfg: JobConfig) -> dict[str, Any]:
    from ..search.study import open_study, study_summary, trial_record, write_outputs

    study = open_study(cfg, create=False)
    heldout_error = None
    if cfg.data.has_test:
        from ..search.heldout import evaluate_heldout

        try:  # cached per file: only frontier points that are new since the last time are scored
            evaluate_heldout(cfg, study)
        except Exception as exc:  # noqa: BLE001 - the rest of the report still helps; say why test figures are missing
            heldout_error = f"{type(exc).__name__}: {exc}"
    fpath, _ = write_outputs(cfg, study)
    doc = json.loads(fpath.read_text())
    objectives = study.user_attrs.get("objectives") or list(doc.get("objectives") or [])
    trials = study.get_trials(deepcopy=False)
    recs = [trial_record(t, objectives) for t in trials]
    front = {r["number"] for r in doc["frontier"]}
    for r in recs:
        r["on_frontier"] = r["number"] in front
    starts = [t.datetime_start for t in trials if t.datetime_start]
    ends = [t.datetime_complete for t in trials if t.datetime_complete]
    return {"study": study, "doc": doc, "objectives": objectives, "recs": recs, "summary": study_summary(cfg, study),
            "heldout_error": heldout_error, "started": min(starts).isoformat(timespec="seconds") if starts else None,
            "ended": max(ends).isoformat(timespec="seconds") if ends else None}


def _test_value(r: dict[str, Any] | None, metric: str | None) -> float | None:
    """The held-out test figure of a frontier.json record (teacher, baseline or point), None when absent."""
    return ((r or {}).get("test") or {}).get(metric) if metric else None


def _kind(r: dict[str, Any]) -> str:
    if r["state"] == "stopped":
        return "stopped"
    if not r.get("feasible"):
        return "infeasible"
    return "frontier" if r.get("on_frontier") else "feasible"


def _done(recs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in recs if r["state"] in ("complete", "stopped") and r.get("value") is not None]


def _constraint_lines(cfg: JobConfig) -> list[tuple[str, float, str]]:
    from ..search.study import _constraints, _metric_names

    return [(c.name, float(c.value), str(c)) for c in _constraints(cfg, _metric_names(cfg))]


# ----------------------------------------------------------------------------------------------
# Scenarios


def scenario_rows(doc: dict[str, Any], within: float) -> list[dict[str, Any]]:
    from ..search.scenarios import SCENARIOS, ScenarioError, pick, points

    base = doc.get("baseline")
    labels = {"retain-size": "retain size, maximise the metric", "retain-metric": "minimise size, retain the metric",
              "fastest": f"fastest within {within:g} points of the teacher", "knee": "knee of the frontier"}
    rows = []
    for s in SCENARIOS:
        try:
            r = pick(doc, s, within)
        except ScenarioError as exc:
            rows.append({"scenario": labels[s], "key": s, "error": str(exc)})
            continue
        row = {"scenario": labels[s], "key": s, "trial": r["number"], "value": r["value"], "params": r["params"],
               "latency_ms": r["latency_ms"], "size_mb": r.get("size_mb"), "spec": r.get("spec"),
               "precision": r.get("precision"), "test_value": _test_value(r, r.get("metric"))}
        if base and base.get("value") is not None:
            row["d_points"] = points(r["metric"], r["value"]) - points(r["metric"], base["value"])
            row["d_value_pct"] = 100.0 * (r["value"] - base["value"]) / abs(base["value"]) if base["value"] else None
            for k in ("params", "latency_ms", "size_mb"):
                if base.get(k) and r.get(k) is not None:
                    row[f"d_{k}_pct"] = 100.0 * (r[k] - base[k]) / base[k]
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------------------------
# Parameter importance and preferences


def importances(study, objectives: list[str]) -> dict[str, dict[str, float]]:
    """fANOVA importance of each searched parameter for each objective, over completed trials."""
    import optuna
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances

    out: dict[str, dict[str, float]] = {}
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.values]
    if len(done) < 3:
        return out
    for i, name in enumerate(objectives):
        try:
            imp = get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=0),
                                        target=lambda t, i=i: t.values[i])
        except (RuntimeError, ValueError, ZeroDivisionError) as exc:
            optuna.logging.get_logger(__name__).info("no importance for %s: %s", name, exc)
            continue
        out[name] = {k: float(v) for k, v in imp.items()}
    return out


def preferred_values(recs: list[dict[str, Any]], doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Per searched parameter: what the frontier chose next to what all completed trials tried."""
    done = _done(recs)
    front = [r for r in done if r.get("on_frontier")]
    names = sorted({k for r in done for k in (r.get("params_searched") or {})})
    rows = []
    for name in names:
        all_v = [r["params_searched"][name] for r in done if name in (r.get("params_searched") or {})]
        fr_v = [r["params_searched"][name] for r in front if name in (r.get("params_searched") or {})]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in all_v)
        distinct = len(set(all_v))
        if numeric and distinct > 6:
            def span(v):
                return f"median {np.median(v):.3g} (range {min(v):.3g}-{max(v):.3g})" if v else "-"
            rows.append({"parameter": name, "frontier": span(fr_v), "all": span(all_v)})
        else:
            def counts(v):
                c = Counter(v)
                key = (lambda x: x[0]) if numeric else (lambda x: str(x[0]))
                return ", ".join(f"{k:g}: {n}" if isinstance(k, float) else f"{k}: {n}"
                                 for k, n in sorted(c.items(), key=key)) or "-"
            rows.append({"parameter": name, "frontier": counts(fr_v), "all": counts(all_v)})
    return rows


# ----------------------------------------------------------------------------------------------
# QA error analysis


def qa_error_table(examples, preds: dict[str, dict[str, Any]], threshold: float | None,
                   mostly_correct_f1: float = 0.5) -> dict[str, dict[str, int]]:
    """Counts per article title and category (QA_CATEGORIES); `preds` as in predictions.json."""
    from ..model.metrics import compute_exact, compute_f1

    table: dict[str, dict[str, int]] = {}
    for ex in examples:
        p = preds.get(ex.qid)
        if p is None:
            continue
        abstain = (threshold is not None and p["null_odds"] > threshold) or not p["text"]
        gold = [t for t, _ in ex.answers]
        if not gold:
            cat = "correct" if abstain else "label has no answer"
        elif abstain:
            cat = "label has answer"
        elif max(compute_exact(g, p["text"]) for g in gold):
            cat = "correct"
        elif max(compute_f1(g, p["text"]) for g in gold) >= mostly_correct_f1:
            cat = "mostly correct"
        else:
            cat = "mostly wrong"
        row = table.setdefault(ex.title or "(untitled)", {c: 0 for c in QA_CATEGORIES})
        row[cat] += 1
    return table


def _qa_analysis(cfg: JobConfig, rec: dict[str, Any]) -> dict[str, Any] | None:
    from ..data import load_qa_examples
    from ..data.qa import QAPrediction
    from ..deploy.variants import serving_threshold

    pred_file = Path(rec["dir"]) / "model" / "predictions.json"
    if not pred_file.is_file():
        return None
    preds = json.loads(pred_file.read_text())
    metrics = rec.get("metrics") or {}
    threshold = None
    if "best_exact_thresh" in metrics:
        objs = [QAPrediction(q, p["text"], p["start"], p["end"], p["score"], p["null_odds"]) for q, p in preds.items()]
        threshold = serving_threshold(metrics, objs)
    examples = load_qa_examples(cfg.data.eval, cfg.config_path)
    table = qa_error_table(examples, preds, threshold, cfg.report.mostly_correct_f1)
    return {"trial": rec["number"], "threshold": threshold, "table": table}


# ----------------------------------------------------------------------------------------------
# Figures (Plotly for the page, matplotlib for report.md)


def _hover(r: dict[str, Any]) -> str:
    s = r.get("spec") or {}
    return (f"trial {r['number']}{' (baseline)' if r.get('baseline') else ''}<br>{r.get('metric')} {r['value']:.4f}"
            f"<br>{r.get('params') or 0:,} params<br>{(r.get('latency_ms') or float('nan')):.2f} ms"
            f"<br>L{s.get('num_layers')} H{s.get('heads')} F{s.get('intermediate_size')} {r.get('precision') or ''}"
            + (f"<br>{html.escape(r['reason'][:120])}" if r.get("reason") else ""))


def pareto_plotly(data: dict[str, Any], cfg: JobConfig, measure: str):
    import plotly.graph_objects as go

    recs = [r for r in _done(data["recs"]) if r.get(measure) is not None]
    metric = next((r["metric"] for r in recs), cfg.task.primary_metric)
    fig = go.Figure()
    styles = {"stopped": dict(symbol="triangle-down", opacity=0.35), "infeasible": dict(symbol="x", opacity=0.35),
              "feasible": dict(symbol="circle", opacity=0.8), "frontier": dict(symbol="circle", opacity=1.0, size=12)}
    for kind, st in styles.items():
        pts = [r for r in recs if _kind(r) == kind]
        if not pts:
            continue
        fig.add_trace(go.Scatter(x=[r[measure] for r in pts], y=[r["value"] for r in pts], mode="markers", name=kind,
                                 marker=dict(color=COLORS[kind], size=st.pop("size", 9), **st),
                                 text=[_hover(r) for r in pts], hoverinfo="text"))
    front = sorted([r for r in recs if _kind(r) == "frontier"], key=lambda r: r[measure])
    if len(front) > 1:
        best, line = -math.inf, []
        for r in front:  # the staircase of points not beaten on this pair of axes
            if r["value"] > best:
                best = r["value"]
                line.append(r)
        fig.add_trace(go.Scatter(x=[r[measure] for r in line], y=[r["value"] for r in line], mode="lines",
                                 line=dict(color=COLORS["frontier"], shape="hv", width=1), name="frontier (this pair)",
                                 hoverinfo="skip"))
    base = data["doc"].get("baseline")
    if base and base.get(measure) is not None:
        fig.add_trace(go.Scatter(x=[base[measure]], y=[base["value"]], mode="markers", name="baseline",
                                 marker=dict(symbol="star", size=16, color=COLORS["baseline"]),
                                 text=[_hover(base)], hoverinfo="text"))
    teacher = data["doc"].get("teacher") or {}
    if teacher.get(measure) is not None and teacher.get("metric") is not None:
        fig.add_trace(go.Scatter(x=[teacher[measure]], y=[teacher["metric"]], mode="markers", name="teacher",
                                 marker=dict(symbol="diamond", size=14, color=COLORS["teacher"]),
                                 text=[f"teacher<br>{metric} {teacher['metric']:.4f}<br>{teacher[measure]:,.4g}"],
                                 hoverinfo="text"))
    for name, value, text in _constraint_lines(cfg):
        if name == measure:
            fig.add_vline(x=value, line_dash="dash", line_color="#444", annotation_text=text)
        elif name == metric or name == "value":
            fig.add_hline(y=value, line_dash="dash", line_color="#444", annotation_text=text)
    fig.update_layout(title=f"{metric} against {MEASURE_LABEL.get(measure, measure)}",
                      xaxis_title=MEASURE_LABEL.get(measure, measure), yaxis_title=metric, height=460,
                      margin=dict(l=60, r=20, t=50, b=50), legend=dict(orientation="h", y=-0.18))
    return fig


def pareto_png(data: dict[str, Any], cfg: JobConfig, measure: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = [r for r in _done(data["recs"]) if r.get(measure) is not None]
    metric = next((r["metric"] for r in recs), cfg.task.primary_metric)
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for kind, (marker, alpha) in {"stopped": ("v", 0.35), "infeasible": ("x", 0.35), "feasible": ("o", 0.8),
                                  "frontier": ("o", 1.0)}.items():
        pts = [r for r in recs if _kind(r) == kind]
        if pts:
            ax.scatter([r[measure] for r in pts], [r["value"] for r in pts], marker=marker, alpha=alpha,
                       color=COLORS[kind], label=kind, s=60 if kind == "frontier" else 30)
    base = data["doc"].get("baseline")
    if base and base.get(measure) is not None:
        ax.scatter([base[measure]], [base["value"]], marker="*", s=220, color=COLORS["baseline"], label="baseline")
    teacher = data["doc"].get("teacher") or {}
    if teacher.get(measure) is not None and teacher.get("metric") is not None:
        ax.scatter([teacher[measure]], [teacher["metric"]], marker="D", s=90, color=COLORS["teacher"], label="teacher")
    for name, value, text in _constraint_lines(cfg):
        if name == measure:
            ax.axvline(value, ls="--", color="#444", lw=1)
        elif name == metric:
            ax.axhline(value, ls="--", color="#444", lw=1)
            ax.annotate(text, (ax.get_xlim()[0], value), fontsize=8, va="bottom")
    ax.set_xlabel(MEASURE_LABEL.get(measure, measure))
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} against {MEASURE_LABEL.get(measure, measure)}")
    ax.legend(fontsize=8, ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
                       ("latency_ms", "latency ms"), ("size_mb", "size MB")):
        if key == "value" or key in objectives:
            dims.append({"label": label, "values": [r.get(key) if r.get(key) is not None else float("nan")
                                                    for r in recs]})
    return dims


def parcoords_plotly(recs: list[dict[str, Any]], objectives: list[str], title: str):
    import plotly.graph_objects as go

    dims = _parcoords_dims(recs, objectives)
    fig = go.Figure(go.Parcoords(line=dict(color=[r["value"] for r in recs], colorscale="Viridis", showscale=True),
                                 dimensions=dims))
    fig.update_layout(title=dict(text=title, y=0.98), height=460, margin=dict(l=60, r=60, t=110, b=30))
    return fig


def parcoords_png(recs: list[dict[str, Any]], objectives: list[str], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dims = _parcoords_dims(recs, objectives)
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(dims)), 4))
    scaled = []
    for d in dims:
        v = np.asarray(d["values"], dtype=float)
        lo, hi = np.nanmin(v), np.nanmax(v)
        scaled.append((v - lo) / (hi - lo) if hi > lo else np.full_like(v, 0.5))
    scaled = np.asarray(scaled)
    metric = np.asarray([r["value"] for r in recs], dtype=float)
    cmap = plt.get_cmap("viridis")
    span = (metric.max() - metric.min()) or 1.0
    for j in range(scaled.shape[1]):
        ax.plot(range(len(dims)), scaled[:, j], color=cmap((metric[j] - metric.min()) / span), alpha=0.7, lw=1)
    ax.set_xticks(range(len(dims)), [d["label"] for d in dims], rotation=30, fontsize=8)
    ax.set_yticks([])
    ax.set_title(title + " (each axis scaled to its range; colour = metric)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def importance_plotly(imp: dict[str, dict[str, float]]):
    import plotly.graph_objects as go

    params = sorted({p for v in imp.values() for p in v})
    fig = go.Figure([go.Bar(name=obj, x=params, y=[v.get(p, 0.0) for p in params]) for obj, v in imp.items()])
    fig.update_layout(barmode="group", title="Parameter importance per objective (fANOVA)", yaxis_title="importance",
                      height=380, margin=dict(l=60, r=20, t=50, b=80))
    return fig


def importance_png(imp: dict[str, dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    params = sorted({p for v in imp.values() for p in v})
    fig, ax = plt.subplots(figsize=(7, 3.6))
    width = 0.8 / max(1, len(imp))
    for i, (obj, v) in enumerate(imp.items()):
        ax.bar(np.arange(len(params)) + i * width, [v.get(p, 0.0) for p in params], width, label=obj)
    ax.set_xticks(np.arange(len(params)) + width * (len(imp) - 1) / 2, params, rotation=30, fontsize=8)
    ax.set_ylabel("importance")
    ax.set_title("Parameter importance per objective (fANOVA)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _curves(rec: dict[str, Any]) -> list[dict[str, Any]]:
    path = Path(rec["dir"]) / "model" / "curves.jsonl" if rec.get("dir") else None
    if path is None or not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _curve_keys(curve: list[dict[str, Any]], metric: str) -> tuple[list[str], list[str]]:
    metrics = [k for k in (metric, "HasAns_exact", "NoAns_exact") if any(k in p for p in curve)]
    losses = [k for k in ("loss", "loss_ce", "loss_task", "loss_hidden") if any(k in p for p in curve)]
    return metrics, losses


def curves_plotly(rec: dict[str, Any], curve: list[dict[str, Any]], metric: str):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    metrics, losses = _curve_keys(curve, metric)
    fig = make_subplots(rows=1, cols=2, subplot_titles=("evaluation", "training loss terms"))
    steps = [p["step"] for p in curve]
    for k in metrics:
        fig.add_trace(go.Scatter(x=steps, y=[p.get(k) for p in curve], mode="lines+markers", name=k), row=1, col=1)
    for k in losses:
        fig.add_trace(go.Scatter(x=steps, y=[p.get(k) for p in curve], mode="lines", name=k), row=1, col=2)
    fig.update_xaxes(title_text="step")
    fig.update_layout(title=f"Training curves of trial {rec['number']} (evaluations before the last use the "
                            "eval_limit subset)", height=340, margin=dict(l=60, r=20, t=70, b=40))
    return fig


def curves_png(rec: dict[str, Any], curve: list[dict[str, Any]], metric: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics, losses = _curve_keys(curve, metric)
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.2))
    steps = [p["step"] for p in curve]
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
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def qa_plotly(qa: dict[str, Any]):
    import plotly.graph_objects as go

    titles = sorted(qa["table"])
    fig = go.Figure([go.Bar(name=c, x=titles, y=[qa["table"][t][c] for t in titles]) for c in QA_CATEGORIES])
    fig.update_layout(barmode="stack", title=f"QA errors of trial {qa['trial']} by article", yaxis_title="questions",
                      height=420, margin=dict(l=60, r=20, t=50, b=120))
    return fig


def qa_png(qa: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    titles = sorted(qa["table"])
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(titles)), 4))
    bottom = np.zeros(len(titles))
    for c in QA_CATEGORIES:
        v = np.asarray([qa["table"][t][c] for t in titles], dtype=float)
        ax.bar(titles, v, bottom=bottom, label=c)
        bottom += v
    ax.set_ylabel("questions")
    ax.set_title(f"QA errors of trial {qa['trial']} by article")
    ax.tick_params(axis="x", rotation=45, labelsize=7)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------
# Writing


def _fmt(v: Any, spec: str = ".4f") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return format(v, spec)


def _signed(v: Any, spec: str = "+.2f", unit: str = "") -> str:
    return "-" if v is None else format(v, spec) + unit


def _spec_text(s: dict[str, Any] | None) -> str:
    if not s:
        return "-"
    return f"L{s.get('num_layers')} H{s.get('heads')} F{s.get('intermediate_size')}"


def _tables(data: dict[str, Any], cfg: JobConfig, scen: list[dict[str, Any]], prefs: list[dict[str, Any]],
            qa: dict[str, Any] | None, provenance: dict[str, Any]) -> dict[str, tuple[list[str], list[list[str]]]]:
    metric = cfg.task.primary_metric
    # With a test split the metric becomes two labelled columns: what the search selected on, and held-out test.
    held = cfg.data.has_test
    metric_cols = [f"eval {metric} (used for selection)", f"test {metric} (held out)"] if held else [metric]

    def values(eval_value: Any, r: dict[str, Any] | None) -> list[str]:
        return [_fmt(eval_value), _fmt(_test_value(r, metric))] if held else [_fmt(eval_value)]

    t: dict[str, tuple[list[str], list[list[str]]]] = {}
    t["provenance"] = (["what", "value"], [[k, str(v)] for k, v in provenance.items()])
    rows = []
    for s in scen:
        if "error" in s:
            rows.append([s["scenario"], "-", s["error"], *([""] * (5 + len(metric_cols)))])
            continue
        rows.append([s["scenario"], str(s["trial"]), *values(s["value"], {"test": {metric: s.get("test_value")}}),
                     _signed(s.get("d_points"), "+.2f", " pt"),
                     f"{s['params']:,}", _signed(s.get("d_params_pct"), "+.1f", "%"), _fmt(s["latency_ms"], ".2f"),
                     _signed(s.get("d_latency_ms_pct"), "+.1f", "%"), f"{_spec_text(s.get('spec'))} {s.get('precision') or ''}"])
    t["scenarios"] = (["scenario", "trial", *metric_cols, "vs baseline", "params", "vs baseline", "latency ms",
                       "vs baseline", "student"], rows)
    doc = data["doc"]
    front = []
    for r in doc["frontier"]:
        front.append([str(r["number"]), *values(r["value"], r), f"{r['params']:,}", _fmt(r["latency_ms"], ".2f"),
                      _fmt(r.get("size_mb"), ".1f"), _spec_text(r.get("spec")), str(r.get("precision") or "fp32"),
                      "yes" if r.get("dominates_baseline") else ""])
    t["frontier"] = (["trial", *metric_cols, "params", "latency ms", "size MB", "student", "precision",
                      "dominates baseline"], front)
    refs = []
    base, teacher = doc.get("baseline"), doc.get("teacher") or {}
    if teacher:
        refs.append(["teacher", *values(teacher.get("metric"), teacher), f"{teacher.get('params') or 0:,}",
                     _fmt(teacher.get("latency_ms"), ".2f"), _fmt(teacher.get("size_mb"), ".1f")])
    if base:
        refs.append([f"baseline (trial {base['number']})", *values(base.get("value"), base),
                     f"{base.get('params') or 0:,}", _fmt(base.get("latency_ms"), ".2f"),
                     _fmt(base.get("size_mb"), ".1f")])
    t["references"] = (["model", *metric_cols, "params", "latency ms", "size MB"], refs)
    t["preferences"] = (["parameter", "frontier", "all completed trials"],
                        [[p["parameter"], p["frontier"], p["all"]] for p in prefs])
    if qa:
        titles = sorted(qa["table"])
        rows = [[t_, *(str(qa["table"][t_][c]) for c in QA_CATEGORIES)] for t_ in titles]
        totals = [sum(qa["table"][t_][c] for t_ in titles) for c in QA_CATEGORIES]
        rows.append(["all", *(str(x) for x in totals)])
        t["qa"] = (["article", *QA_CATEGORIES], rows)
    return t


def heldout_note(cfg: JobConfig, data: dict[str, Any]) -> str | None:
    """The sentence that says which split chose the models and which one they never saw; None without a test split."""
    if not cfg.data.has_test:
        return None
    if data.get("heldout_error"):
        return f"Held-out test figures are missing: {data['heldout_error']}."
    doc = data["doc"]
    splits = doc.get("splits") or {}

    def rows(name: str) -> str:
        n = (splits.get(name) or {}).get("rows")
        return f" ({n} rows)" if n is not None else ""

    recs = [doc.get("teacher"), doc.get("baseline"), *doc["frontier"]]
    squad2 = any("oracle_threshold_on_test" in ((r or {}).get("test") or {}) for r in recs)
    return (f"The search selected these students on the eval split{rows('eval')}, whose figures are the eval "
            f"columns; the test split{rows('test')} was never seen by it (not by training, early stopping, the "
            "objectives, the constraints or any threshold), and the test columns score each model's deployed ONNX "
            f"file on it with ONNX Runtime once the search was over"
            + (", at the SQuAD 2.0 no-answer threshold chosen on eval" if squad2 else "") + ".")


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    esc = [[c.replace("|", "\\|") for c in r] for r in rows]
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                     + ["| " + " | ".join(r) + " |" for r in esc])


def build_report(cfg: JobConfig, out_dir: str | Path | None = None) -> tuple[Path, Path]:
    """Write report.html and report.md (PNG plots in report_files/) for the run; returns both paths."""
    from plotly.offline import get_plotlyjs

    from ..env import environment

    t0 = time.time()
    out = Path(out_dir) if out_dir else cfg.run_dir
    files = out / "report_files"
    files.mkdir(parents=True, exist_ok=True)
    data = _collect(cfg)
    recs, doc, objectives = data["recs"], data["doc"], data["objectives"]
    metric = cfg.task.primary_metric
    env = environment()
    by_state = data["summary"]["by_state"]
    lc = cfg.search.latency
    provenance = {
        "run": cfg.name, "study": data["summary"]["study"], "storage": data["summary"]["storage"],
        "config hash": config_hash(cfg), "CPU": env["cpu"], "cores": env["cores"],
        "threads (training)": cfg.threads or env["torch_threads"],
        "latency protocol": f"ONNX Runtime, batch {lc.batch_size}, seq {lc.seq_len}, {lc.threads} threads, "
                            f"{lc.warmup} warm-up + {lc.repeats} timed calls, median",
        "libraries": ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v),
        "python": env["python"], "study started": data["started"], "last trial finished": data["ended"],
        "trials by state": ", ".join(f"{k} {v}" for k, v in sorted(by_state.items())),
        "objectives": ", ".join(f"{k} ({v})" for k, v in (doc.get("objectives") or {}).items()),
        "constraints": ", ".join(cfg.search.constraints) or "none",
        **({"splits": ", ".join(f"{k} {v.get('rows')} rows" for k, v in (doc.get("splits") or {}).items())
           + f" ({doc.get('split_method') or 'see split.json'}); test held out from the search"}
           if doc.get("splits") else {}),
        "report written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    scen = scenario_rows(doc, cfg.report.within_points)
    prefs = preferred_values(recs, doc)
    imp = importances(data["study"], objectives)
    # Trials to show curves for: the configured ones, else the scenario picks.
    chosen = list(cfg.report.curves_of) or list(dict.fromkeys(s["trial"] for s in scen if "trial" in s))
    by_number = {r["number"]: r for r in recs}
    qa = None
    if cfg.task.type == "qa" and chosen and chosen[0] in by_number:
        try:
            qa = _qa_analysis(cfg, by_number[chosen[0]])
        except Exception as exc:  # noqa: BLE001 - the rest of the report still helps; say why this part is missing
            qa = {"error": f"{type(exc).__name__}: {exc}"}
    tables = _tables(data, cfg, scen, prefs, qa if qa and "error" not in qa else None, provenance)

    figs: list[tuple[str, Any, str]] = []  # (section, plotly figure, png name)
    done = _done(recs)
    for measure in ("params", "latency_ms"):
        if any(r.get(measure) is not None for r in done):
            figs.append(("pareto", pareto_plotly(data, cfg, measure), f"pareto-{measure}.png"))
            pareto_png(data, cfg, measure, files / f"pareto-{measure}.png")
    if imp:
        figs.append(("importance", importance_plotly(imp), "importance.png"))
        importance_png(imp, files / "importance.png")
    if len(done) >= 2:
        figs.append(("parallel", parcoords_plotly(done, objectives, "All completed trials"), "parallel-all.png"))
        parcoords_png(done, objectives, "All completed trials", files / "parallel-all.png")
    base = doc.get("baseline")
    good = [r for r in done if r.get("on_frontier") and (not base or r["value"] >= base["value"])]
    if len(good) >= 2:
        title = "Frontier points at or above the baseline's metric"
        figs.append(("parallel", parcoords_plotly(good, objectives, title), "parallel-frontier.png"))
        parcoords_png(good, objectives, title, files / "parallel-frontier.png")
    for n in chosen:
        if n in by_number and (curve := _curves(by_number[n])):
            figs.append(("curves", curves_plotly(by_number[n], curve, metric), f"curves-{n}.png"))
            curves_png(by_number[n], curve, metric, files / f"curves-{n}.png")
    if qa and "table" in qa and qa["table"]:
        figs.append(("qa", qa_plotly(qa), "qa-errors.png"))
        qa_png(qa, files / "qa-errors.png")

    # ---------------------------------------------------------------- report.html
    def plots(section: str) -> str:
        return "".join(
            f'<div class="plot" data-name="{png[:-4]}">'
            + fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"plot-{png[:-4]}",
                          config={"displaylogo": False, "responsive": True}) + "</div>"
            for sec, fig, png in figs if sec == section)

    knee = next((s for s in scen if s.get("key") == "knee" and "trial" in s), None)
    pick_line = (f"Suggested start: trial {knee['trial']} (knee). Package it with "
                 f"<code>compress package {cfg.run_dir} --trial {knee['trial']}</code>.") if knee else ""
    qa_html = ""
    if qa and "error" in qa:
        qa_html = f"<h2>QA error analysis</h2><p>Not available: {html.escape(qa['error'])}</p>"
    elif qa and "table" in qa:
        qa_html = (f"<h2>QA error analysis (trial {qa['trial']}, no-answer threshold {_fmt(qa['threshold'], '.3f')})"
                   f"</h2><p>Rule: <em>correct</em> = exact match (or no answer where there is none); <em>mostly "
                   f"correct</em> = answered, not exact, best F1 &ge; {cfg.report.mostly_correct_f1:g}; <em>mostly "
                   "wrong</em> = answered with lower F1; <em>label has answer</em> = the model said no answer to an "
                   "answerable question; <em>label has no answer</em> = the model answered an unanswerable one.</p>"
                   + _html_table(*tables["qa"]) + plots("qa"))
    css = ("body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}"
           "table{border-collapse:collapse;margin:0.5em 0 1.5em;font-size:14px}td,th{border:1px solid #ccc;"
           "padding:4px 8px;text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}"
           ".plot{margin:1em 0}code{background:#f3f3f3;padding:1px 4px}")
    note = heldout_note(cfg, data)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>compress report: {html.escape(cfg.name)}</title>
<style>{css}</style>
<script type="text/javascript">{get_plotlyjs()}</script></head>
<body>
<h1>Choosing a student: {html.escape(cfg.name)}</h1>
<p>{data['summary']['completed']} of {data['summary']['target']} trials done, {data['summary']['feasible']} feasible,
{len(doc['frontier'])} on the frontier. {pick_line}</p>
<h2>Scenarios</h2>
<p>Differences are to the baseline (DistilBERT-style: half the teacher's layers, every other one, default
distillation): the metric in points, size and latency in percent.</p>
{f'<p class="heldout">{html.escape(note)}</p>' if note else ''}
{_html_table(*tables['scenarios'])}
<h2>Pareto frontier</h2>
<p>Red: feasible non-dominated trials (over all objectives; the staircase shows the frontier of each pair of axes).
Blue: other feasible trials. Grey crosses: infeasible. Yellow triangles: stopped early. Dashed lines:
thresholds.</p>
{plots('pareto')}
{_html_table(*tables['frontier'])}
{_html_table(*tables['references'])}
<h2>What matters</h2>
{plots('importance') or '<p>Parameter importance needs at least 3 completed trials.</p>'}
{_html_table(*tables['preferences'])}
{plots('parallel')}
<h2>Training curves</h2>
{plots('curves') or '<p>No training curves found for the chosen trials.</p>'}
{qa_html}
<h2>How this report was made</h2>
{_html_table(*tables['provenance'])}
<p>Written in {time.time() - t0:.1f} s. Every figure comes from the study storage and the trial folders.</p>
</body></html>
"""
    html_path = out / "report.html"
    write_text(html_path, page)

    # ---------------------------------------------------------------- report.md
    def images(section: str) -> str:
        return "\n\n".join(f"![{png[:-4]}](report_files/{png})" for sec, _, png in figs if sec == section)

    md = [f"# Choosing a student: {cfg.name}", "",
          f"{data['summary']['completed']} of {data['summary']['target']} trials done, {data['summary']['feasible']} "
          f"feasible, {len(doc['frontier'])} on the frontier." + (f" Suggested start: trial {knee['trial']} (knee)."
                                                                    if knee else ""), "",
          "## Scenarios", "", "Differences are to the baseline: the metric in points, size and latency in percent.", "",
          *([note, ""] if note else []), _md_table(*tables["scenarios"]), "", "## Pareto frontier", "",
          images("pareto"), "",
          _md_table(*tables["frontier"]), "", _md_table(*tables["references"]), "", "## What matters", "",
          images("importance"), "", _md_table(*tables["preferences"]), "", images("parallel"), "",
          "## Training curves", "", images("curves") or "No training curves found.", ""]
    if qa and "table" in qa:
        md += [f"## QA error analysis (trial {qa['trial']}, no-answer threshold {_fmt(qa['threshold'], '.3f')})", "",
               f"Rule: correct = exact match (or no answer where there is none); mostly correct = answered, not exact, "
               f"best F1 >= {cfg.report.mostly_correct_f1:g}; mostly wrong = answered with lower F1; label has answer "
               "= said no answer to an answerable question; label has no answer = answered an unanswerable one.", "",
               _md_table(*tables["qa"]), "", images("qa"), ""]
    md += ["## How this report was made", "", _md_table(*tables["provenance"]), ""]
    md_path = out / "report.md"
    write_text(md_path, "\n".join(md))
    return html_path, md_path

