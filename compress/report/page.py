"""`compress report RUN`: one page for choosing a frontier model, written as report.html (self-contained,
interactive Plotly plots, opens offline) and report.md (the same tables, static PNG plots in report_files/).

Works at any time, also while the study runs: it reads the study as it is. Sections: how it was made (machine,
versions, config hash, times, trial counts); Pareto plots (metric against parameters and against latency:
frontier highlighted, baseline and teacher marked, thresholds drawn, infeasible and stopped trials faded);
the scenario table; parameter importance per objective (fANOVA); parallel coordinates of all trials and of the
frontier points at or above the baseline's metric; the values the frontier prefers; training curves of the
chosen trials; and for QA, an error analysis of the chosen model by article.

With a held-out test split (data.test or data.split.test), the scenario, frontier and reference tables show the eval
metric (what the search selected on) and the test metric (never seen by the search; compress.search.heldout scores
what is missing when the report is built) in separate, labelled columns. The QA error categories are defined in
compress/report/collect.py, the figures in compress/report/figures.py.
"""

from __future__ import annotations

import html
import math
import time
from pathlib import Path
from typing import Any

from ..artifacts import write_text
from ..config import JobConfig
from ..search.intervals import with_interval
from .collect import (
    QA_CATEGORIES, collect, importances, preferred_values, provenance, qa_analysis, scenario_rows,
    test_value,
)
from .figures import Figure, report_figures

__all__ = ["build_report", "heldout_note"]


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


def _vocab_text(r: dict[str, Any]) -> str:
    """' V<kept tokens> (<share>% eval tokens [UNK])' for a pruned vocabulary (compress.model.vocab), else ''."""
    v = r.get("vocab_prune")
    if not v:
        return ""
    return f" V{v['vocab_size']:,} ({100 * v['eval']['unk_token_share']:.2f}% eval tokens [UNK])"


def _latency(r: dict[str, Any] | None) -> str:
    """`median [low, high]` ms with the interval when there is one."""
    r = r or {}
    return with_interval(r.get("latency_ms"), r.get("latency_ci95_ms"))


def _ratio(r: dict[str, Any] | None) -> str:
    r = r or {}
    return with_interval(r.get("latency_ratio"), r.get("latency_ratio_ci95"), ".3f")


def _source(r: dict[str, Any] | None) -> str:
    return {"confirmed": "confirmed", "single": "single"}.get((r or {}).get("latency_source"), "-")


def build_tables(data: dict[str, Any], cfg: JobConfig, scen: list[dict[str, Any]], prefs: list[dict[str, Any]],
            qa: dict[str, Any] | None, provenance: dict[str, Any]) -> dict[str, tuple[list[str], list[list[str]]]]:
    metric = cfg.task.primary_metric
    # With a test split the metric becomes two labelled columns: what the search selected on, and held-out test.
    held = cfg.data.has_test
    metric_cols = [f"eval {metric} (used for selection)", f"test {metric} (held out)"] if held else [metric]

    def values(eval_value: Any, r: dict[str, Any] | None) -> list[str]:
        return [_fmt(eval_value), _fmt(test_value(r, metric))] if held else [_fmt(eval_value)]

    t: dict[str, tuple[list[str], list[list[str]]]] = {}
    t["provenance"] = (["what", "value"], [[k, str(v)] for k, v in provenance.items()])
    rows = []
    for s in scen:
        if "error" in s:
            rows.append([s["scenario"], "-", s["error"], *([""] * (6 + len(metric_cols)))])
            continue
        rows.append([s["scenario"], str(s["trial"]), *values(s["value"], {"test": {metric: s.get("test_value")}}),
                     _signed(s.get("d_points"), "+.2f", " pt"),
                     f"{s['params']:,}", _signed(s.get("d_params_pct"), "+.1f", "%"), _latency(s), _source(s),
                     _signed(s.get("d_latency_ms_pct"), "+.1f", "%"), f"{_spec_text(s.get('spec'))} {s.get('precision') or ''}"])
    t["scenarios"] = (["scenario", "trial", *metric_cols, "vs baseline", "params", "vs baseline",
                       "latency ms [95% CI]", "latency figure", "vs baseline", "student"], rows)
    doc = data["doc"]
    front = []
    for r in doc["frontier"]:
        front.append([str(r["number"]), *values(r["value"], r), f"{r['params']:,}", _latency(r), _ratio(r),
                      _source(r), _fmt(r.get("size_mb"), ".1f"), _spec_text(r.get("spec")) + _vocab_text(r),
                      str(r.get("precision") or "fp32"), "yes" if r.get("dominates_baseline") else "",
                      ", ".join(str(n) for n in r.get("tied_with") or [])])
    t["frontier"] = (["trial", *metric_cols, "params", "latency ms [95% CI]", "ratio to teacher [95% CI]",
                      "latency figure", "size MB", "student", "precision", "dominates baseline", "tied with"], front)
    refs = []
    base, teacher = doc.get("baseline"), doc.get("teacher") or {}
    if teacher:
        refs.append(["teacher", *values(teacher.get("metric"), teacher), f"{teacher.get('params') or 0:,}",
                     _latency(teacher), _ratio(teacher), _source(teacher), _fmt(teacher.get("size_mb"), ".1f")])
    if base:
        refs.append([f"baseline (trial {base['number']})", *values(base.get("value"), base),
                     f"{base.get('params') or 0:,}", _latency(base), _ratio(base), _source(base),
                     _fmt(base.get("size_mb"), ".1f")])
    t["references"] = (["model", *metric_cols, "params", "latency ms [95% CI]", "ratio to teacher [95% CI]",
                        "latency figure", "size MB"], refs)
    promo = doc.get("promotion")
    if promo:
        rows = []
        for pt in promo["points"]:
            low = pt.get("low_budget") or {}
            rows.append([str(pt["trial"]), f"{pt['train_rows']:,}", _fmt(pt.get("value")),
                         f"{low.get('train_rows') or 0:,}", _fmt(low.get("value")), f"{pt['params']:,}",
                         _latency(pt), _ratio(pt), _latency(low), "yes" if pt["trial"] in promo["frontier"] else ""])
        t["promoted"] = (["trial", "rows (promoted)", metric, "rows (search)", f"{metric} (search)", "params",
                          "latency ms [95% CI]", "ratio to teacher [95% CI]", "latency ms (search)",
                          "promoted frontier"], rows)
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


def latency_note(doc: dict[str, Any]) -> str:
    """How to read the latency columns and error bars: the interval, confirmed or single, the ties."""
    conf = doc.get("confirmation")
    text = ("Latency: median with its bootstrap 95% interval over measurement rounds (error bars in the plots); the "
            "ratio is to the teacher, timed in the same rounds. ")
    if conf:
        text += (f"'confirmed': timed again at the end of the study ({conf['at']}), together with the teacher, the "
                 f"baseline and the other frontier candidates, {conf['rounds']} interleaved rounds; the frontier and "
                 f"the scenarios above use those figures (frontier before: {conf['before']['frontier']}, after: "
                 f"{conf['after']['frontier']}). 'single': the trial's own measurement during the study. ")
    else:
        text += "Every figure is the trial's single in-study measurement; `compress confirm RUN` re-times them together. "
    ties = doc.get("ties") or []
    if ties:
        text += ("Ties (intervals overlap on every objective they differ in, so neither is shown as better): "
                 + ", ".join(f"trials {a} and {b}" for a, b in ties) + ".")
    return text.strip()


def fidelity_note(doc: dict[str, Any]) -> str | None:
    """What a multi-fidelity study and a promotion did, in one paragraph (None for a plain study)."""
    fid, promo = doc.get("fidelity"), doc.get("promotion")
    parts = []
    if fid:
        rungs = ", ".join(f"{rows:,} rows ({r['complete']} trials)" for r, rows in zip(fid["trials_by_rung"], fid["rows"]))
        warm = sum(r.get("warm_started") or 0 for r in fid["trials_by_rung"])
        parts.append(f"Multi-fidelity search: rungs of {rungs}; the best 1/{fid['reduction']} of each rung went on to "
                     "the next (constrained non-dominated sorting); the frontier above is the top rung's."
                     + (f" {warm} promotions went on from their parent's model, trained on the rows their rung "
                        "added (warm start)." if warm else ""))
    if promo:
        parts.append(f"Promoted: {len(promo['points'])} frontier points retrained on all {promo['train_rows']:,} "
                     f"training rows and timed with the teacher ({promo['at']}); promoted frontier: trials "
                     f"{', '.join(str(n) for n in promo['frontier'])}. The table below shows both budgets' figures.")
    c = doc.get("compute")
    if c and (fid or promo):
        waited = c.get("lock_wait_seconds") or 0
        parts.append(f"Compute of the search: {c['rows_seen']:,} training rows seen, {c['trial_seconds'] / 60:.1f} "
                     "trial-minutes" + (f" (not counting {waited / 60:.1f} minutes waiting for other jobs' latency "
                                        "measurements)" if waited else "") + ".")
    return " ".join(parts) or None


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
    t0 = time.time()
    out = Path(out_dir) if out_dir else cfg.run_dir
    files = out / "report_files"
    files.mkdir(parents=True, exist_ok=True)
    data = collect(cfg)
    recs, doc = data["recs"], data["doc"]
    prov = provenance(cfg, data)
    scen = scenario_rows(doc, cfg.report.within_points)
    prefs = preferred_values(recs, doc)
    imp = importances(data["study"], data["objectives"])
    # Trials to show curves for: the configured ones, else the scenario picks.
    chosen = list(cfg.report.curves_of) or list(dict.fromkeys(s["trial"] for s in scen if "trial" in s))
    by_number = {r["number"]: r for r in recs}
    qa = None
    if cfg.task.type == "qa" and chosen and chosen[0] in by_number:
        try:
            qa = qa_analysis(cfg, by_number[chosen[0]])
        except Exception as exc:  # noqa: BLE001 - the rest of the report still helps; say why this part is missing
            qa = {"error": f"{type(exc).__name__}: {exc}"}
    page_tables = build_tables(data, cfg, scen, prefs, qa if qa and "error" not in qa else None, prov)
    figs = report_figures(data, cfg, imp, chosen, qa)
    for fig in figs:
        fig.png(files / f"{fig.name}.png")
    knee = next((s for s in scen if s.get("key") == "knee" and "trial" in s), None)
    note = heldout_note(cfg, data)
    html_path, md_path = out / "report.html", out / "report.md"
    write_text(html_path, html_page(cfg, data, page_tables, figs, knee, qa, note, t0))
    write_text(md_path, markdown_page(cfg, data, page_tables, figs, knee, qa, note))
    return html_path, md_path


def html_page(cfg: JobConfig, data: dict[str, Any], page_tables: dict[str, tuple[list[str], list[list[str]]]],
              figs: list[Figure], knee: dict[str, Any] | None, qa: dict[str, Any] | None, note: str | None,
              t0: float) -> str:
    """report.html: self-contained (Plotly's script inlined), so it opens offline."""
    doc = data["doc"]
    # NOTE: plotly is imported here, not at the top: it is heavy, and only this page needs its script.
    from plotly.offline import get_plotlyjs

    def plots(section: str) -> str:
        return "".join(
            f'<div class="plot" data-name="{fig.name}">'
            + fig.plotly().to_html(full_html=False, include_plotlyjs=False, div_id=f"plot-{fig.name}",
                                   config={"displaylogo": False, "responsive": True}) + "</div>"
            for fig in figs if fig.section == section)

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
                   + _html_table(*page_tables["qa"]) + plots("qa"))
    css = ("body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}"
           "table{border-collapse:collapse;margin:0.5em 0 1.5em;font-size:14px}td,th{border:1px solid #ccc;"
           "padding:4px 8px;text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}"
           ".plot{margin:1em 0}code{background:#f3f3f3;padding:1px 4px}")
    return f"""<!DOCTYPE html>
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
{_html_table(*page_tables['scenarios'])}
<h2>Pareto frontier</h2>
<p>Red: feasible non-dominated trials (over all objectives; the staircase shows the frontier of each pair of axes).
Blue: other feasible trials. Grey crosses: infeasible. Yellow triangles: stopped early. Pale rings (multi-fidelity
studies): trials of a lower rung, trained on fewer rows. Dashed lines:
thresholds.</p>
{plots('pareto')}
<p>{html.escape(latency_note(doc))}</p>
{_html_table(*page_tables['frontier'])}
{_html_table(*page_tables['references'])}
{f'<h2>Training budget and promotion</h2><p>{html.escape(fnote)}</p>' if (fnote := fidelity_note(doc)) else ''}
{_html_table(*page_tables['promoted']) if 'promoted' in page_tables else ''}
<h2>What matters</h2>
{plots('importance') or '<p>Parameter importance needs at least 3 completed trials.</p>'}
{_html_table(*page_tables['preferences'])}
{plots('parallel')}
<h2>Training curves</h2>
{plots('curves') or '<p>No training curves found for the chosen trials.</p>'}
{qa_html}
<h2>How this report was made</h2>
{_html_table(*page_tables['provenance'])}
<p>Written in {time.time() - t0:.1f} s. Every figure comes from the study storage and the trial folders.</p>
</body></html>
"""


def markdown_page(cfg: JobConfig, data: dict[str, Any], page_tables: dict[str, tuple[list[str], list[list[str]]]],
                  figs: list[Figure], knee: dict[str, Any] | None, qa: dict[str, Any] | None, note: str | None) -> str:
    """report.md: the same tables, with the PNG plots from report_files/."""
    doc = data["doc"]
    def images(section: str) -> str:
        return "\n\n".join(f"![{fig.name}](report_files/{fig.name}.png)" for fig in figs if fig.section == section)

    md = [f"# Choosing a student: {cfg.name}", "",
          f"{data['summary']['completed']} of {data['summary']['target']} trials done, {data['summary']['feasible']} "
          f"feasible, {len(doc['frontier'])} on the frontier." + (f" Suggested start: trial {knee['trial']} (knee)."
                                                                    if knee else ""), "",
          "## Scenarios", "", "Differences are to the baseline: the metric in points, size and latency in percent.", "",
          *([note, ""] if note else []), _md_table(*page_tables["scenarios"]), "", "## Pareto frontier", "",
          images("pareto"), "", latency_note(doc), "",
          _md_table(*page_tables["frontier"]), "", _md_table(*page_tables["references"]), "",
          *(["## Training budget and promotion", "", fnote, ""] if (fnote := fidelity_note(doc)) else []),
          *([_md_table(*page_tables["promoted"]), ""] if "promoted" in page_tables else []), "## What matters", "",
          images("importance"), "", _md_table(*page_tables["preferences"]), "", images("parallel"), "",
          "## Training curves", "", images("curves") or "No training curves found.", ""]
    if qa and "table" in qa:
        md += [f"## QA error analysis (trial {qa['trial']}, no-answer threshold {_fmt(qa['threshold'], '.3f')})", "",
               f"Rule: correct = exact match (or no answer where there is none); mostly correct = answered, not exact, "
               f"best F1 >= {cfg.report.mostly_correct_f1:g}; mostly wrong = answered with lower F1; label has answer "
               "= said no answer to an answerable question; label has no answer = answered an unanswerable one.", "",
               _md_table(*page_tables["qa"]), "", images("qa"), ""]
    md += ["## How this report was made", "", _md_table(*page_tables["provenance"]), ""]
    return "\n".join(md)
