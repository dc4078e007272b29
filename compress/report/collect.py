"""What happened, read from the study and the run folder: the trials, frontier.json (written afresh, held-out test
figures scored when missing), the provenance of the report, the scenario picks, parameter importance and
preferences, training curves, and the QA error analysis of the chosen model.

QA error categories (per question, at the model's serving no-answer threshold, see compress.deploy.variants):
- correct: exact match with a gold answer, or no answer where the question has none;
- mostly correct: answered, not exact, best F1 against the gold answers >= report.mostly_correct_f1 (0.5);
- mostly wrong: answered, F1 below that;
- label has answer: the question has an answer but the model said no answer;
- label has no answer: the question has none but the model answered.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.importance import FanovaImportanceEvaluator, get_param_importances
from optuna.trial import TrialState

from ..artifacts import config_hash
from ..config import JobConfig
from ..data.squad import load_qa_examples
from ..data.qa import QAPrediction
from ..deploy.variants import serving_threshold
from ..env import environment
from ..model.metrics import compute_exact, compute_f1, points
from ..search.pareto import study_records
from ..search.heldout import evaluate_heldout
from ..search.results import study_summary, write_outputs
from ..search.scenarios import SCENARIOS, ScenarioError, pick
from ..search.storage import open_study

__all__ = ["QA_CATEGORIES", "collect", "completed", "importances", "preferred_values", "provenance", "qa_analysis",
           "qa_error_table", "read_curves", "scenario_rows", "test_value"]

QA_CATEGORIES = ("correct", "mostly correct", "mostly wrong", "label has answer", "label has no answer")


def collect(cfg: JobConfig) -> dict[str, Any]:
    """The study and its trial records (each marked on_frontier or not), frontier.json as written now, the status
    summary, the study's first start and last finish, and why held-out figures are missing, if they are."""
    study = open_study(cfg, create=False)
    heldout_error = None
    if cfg.data.has_test:
        try:  # cached per file: only frontier points that are new since the last time are scored
            evaluate_heldout(cfg, study)
        except Exception as exc:  # noqa: BLE001 - the rest of the report still helps; say why test figures are missing
            heldout_error = f"{type(exc).__name__}: {exc}"
    fpath, _ = write_outputs(cfg, study)
    doc = json.loads(fpath.read_text())
    objectives = study.user_attrs.get("objectives") or list(doc.get("objectives") or [])
    trials = study.get_trials(deepcopy=False)
    recs = study_records(study, objectives)
    # The plots draw the search's trials with the search's figures: their frontier is the search's own (after a
    # promotion doc["frontier"] is the promoted models, shown in their own table).
    front = {r["number"] for r in doc.get("frontier_search", doc["frontier"])}
    top = len(doc["fidelity"]["rows"]) - 1 if doc.get("fidelity") else None
    for r in recs:
        r["on_frontier"] = r["number"] in front
        # multi-fidelity: a lower rung's trial trained on fewer rows, not comparable with the top rung's
        r["lower_rung"] = top is not None and (r.get("rung") or 0) < top
    starts = [t.datetime_start for t in trials if t.datetime_start]
    ends = [t.datetime_complete for t in trials if t.datetime_complete]
    return {"study": study, "doc": doc, "objectives": objectives, "recs": recs, "summary": study_summary(cfg, study),
            "heldout_error": heldout_error, "started": min(starts).isoformat(timespec="seconds") if starts else None,
            "ended": max(ends).isoformat(timespec="seconds") if ends else None}


def test_value(r: dict[str, Any] | None, metric: str | None) -> float | None:
    """The held-out test figure of a frontier.json record (teacher, baseline or point), None when absent."""
    return ((r or {}).get("test") or {}).get(metric) if metric else None


def completed(recs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records of trials that finished (complete, or stopped early) with a metric value."""
    return [r for r in recs if r["state"] in ("complete", "stopped") and r.get("value") is not None]


def provenance(cfg: JobConfig, data: dict[str, Any]) -> dict[str, Any]:
    """How the report was made: the run, the study, the machine, the libraries, the latency protocol, the trials."""
    env = environment()
    doc = data["doc"]
    by_state = data["summary"]["by_state"]
    lc = cfg.search.latency
    # Runs made before the paired protocol (issue 14) were timed one model at a time; say which protocol was used.
    paired = any("ratio" in (r.get("latency_method") or {}) for r in data["recs"])
    return {
        "run": cfg.name, "study": data["summary"]["study"], "storage": data["summary"]["storage"],
        "config hash": config_hash(cfg), "CPU": env["cpu"], "cores": env["cores"],
        "threads (training)": cfg.threads or env["torch_threads"],
        "latency protocol": f"ONNX Runtime, batch {lc.batch_size}, seq {lc.seq_len}, {lc.threads} threads, " + (
            f"{lc.warmup} warm-up, then {lc.rounds} rounds × {lc.calls_per_round} calls of the trial and the teacher "
            "alternately; median, bootstrap 95% interval, ratio to the teacher" if paired else
            f"{lc.warmup} warm-up + {lc.repeats} timed calls, median"),
        "confirmation": _confirmation_text(doc.get("confirmation")),
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


def _load(v: list[float] | None) -> str:
    return "/".join(f"{x:.2f}" for x in v) if v else "-"


def _confirmation_text(conf: dict[str, Any] | None) -> str:
    if not conf:
        return ("none yet: every latency is the trial's single in-study measurement (`compress confirm RUN` times "
                "the frontier again, together)")
    m = conf.get("method") or {}
    return (f"{conf['at']}: {len(conf.get('models') or [])} models (the frontier, the trials within its noise, the "
            f"baseline, the teacher) timed together, {conf['rounds']} interleaved rounds × {conf['calls_per_round']} "
            f"calls, {conf.get('retries', 0)} retries, load average {_load(m.get('load_before'))} before, "
            f"{_load(m.get('load_after'))} after"
            + ("; the teacher's rounds never settled (busy machine)" if conf.get("contended") else "")
            + f"; frontier {conf['before']['frontier']} -> {conf['after']['frontier']}"
            + (f"; ties {conf['ties']}" if conf.get("ties") else ""))


# ----------------------------------------------------------------------------------------------
# Scenarios


def scenario_rows(doc: dict[str, Any], within: float) -> list[dict[str, Any]]:
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
               "latency_ms": r["latency_ms"], "latency_ci95_ms": r.get("latency_ci95_ms"),
               "latency_source": r.get("latency_source"), "size_mb": r.get("size_mb"), "spec": r.get("spec"),
               "precision": r.get("precision"), "test_value": test_value(r, r.get("metric"))}
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
    out: dict[str, dict[str, float]] = {}
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.values]
    if len(done) < 3:
        return out
    for i, name in enumerate(objectives):
        try:
            imp = get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=0),
                                        target=lambda t, i=i: t.values[i])
        except (RuntimeError, ValueError, ZeroDivisionError) as exc:
            # the package's logger, so the line reads "INFO compress.report: ..." as it always has
            optuna.logging.get_logger(__package__).info("no importance for %s: %s", name, exc)
            continue
        out[name] = {k: float(v) for k, v in imp.items()}
    return out


def preferred_values(recs: list[dict[str, Any]], doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Per searched parameter: what the frontier chose next to what all completed trials tried."""
    done = completed(recs)
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
# Training curves and the QA error analysis


def read_curves(rec: dict[str, Any]) -> list[dict[str, Any]]:
    path = Path(rec["dir"]) / "model" / "curves.jsonl" if rec.get("dir") else None
    if path is None or not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def qa_error_table(examples, preds: dict[str, dict[str, Any]], threshold: float | None,
                   mostly_correct_f1: float = 0.5) -> dict[str, dict[str, int]]:
    """Counts per article title and category (QA_CATEGORIES); `preds` as in predictions.json."""
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


def qa_analysis(cfg: JobConfig, rec: dict[str, Any]) -> dict[str, Any] | None:
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

