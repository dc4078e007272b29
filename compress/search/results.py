"""What a study leaves for people: frontier.json (the feasible Pareto set, baseline and teacher, with held-out
test figures when there are any), trials.csv (every trial), and the summary `compress status` prints."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from ..artifacts import atomic_write, write_json
from ..config import JobConfig
from .intervals import dominates_with_intervals
from .pareto import baseline_trial, confirmation, frontier, frontier_ties, record_values, study_records
from .heldout import CACHE_NAME, heldout_block, read_heldout
from .objectives import MEASURES, objective_directions
from .storage import open_study, storage_url

__all__ = ["compute_spent", "frontier_document", "promoted_record", "study_summary", "teacher_record", "trial_seconds",
           "write_outputs"]


def _test_figures(cfg: JobConfig) -> tuple[dict[str, Any] | None, Any]:
    """With a test split: the "splits", "split_method" and "held_out" entries of frontier.json (from split.json)
    and a reader of cached held-out results (compress.search.heldout; nothing is computed here). (None, None) without."""
    if not cfg.data.has_test:
        return None, None
    try:
        recorded = json.loads((cfg.run_dir / "split.json").read_text())
    except (OSError, ValueError):
        recorded = {}
    parts = recorded.get("splits") or {}
    splits = {"splits": {name: parts[name] for name in ("eval", "test") if name in parts},
              "split_method": recorded.get("method"),
              "held_out": "the search trained on train and selected on eval (objectives, constraints, early "
                          "stopping, SQuAD 2.0 no-answer thresholds); test was never seen by it and is scored only "
                          "once the search is over, on each model's deployed ONNX file"}
    test_ids = (parts.get("test") or {}).get("ids_sha256")

    def read(onnx_path: Any, folder: Any) -> dict[str, Any] | None:
        if not onnx_path or not folder:
            return None
        rec = read_heldout(Path(folder) / CACHE_NAME, onnx_path, test_ids)
        return heldout_block(rec) if rec else None

    return splits, read


def _confirmation_block(conf: dict[str, Any]) -> dict[str, Any]:
    """What frontier.json says about the last confirmation pass (RUN/confirmation.json has every round)."""
    keep = ("at", "rounds", "calls_per_round", "models", "reference", "retries", "spread", "contended", "before",
            "after", "changed", "ties", "method")
    return {**{k: conf.get(k) for k in keep},
            "rule": "the frontier, the trials within its noise, the baseline and the teacher timed again together, "
                    "interleaved round by round in one process, the teacher the reference of every ratio; the "
                    "frontier and the picks recomputed from those figures (compress.search.confirm)"}


def teacher_record(study: optuna.Study) -> dict[str, Any] | None:
    """The teacher's figures as the study recorded them, the confirmation pass's in place of its latency when
    there is one ("latency_source" says which)."""
    teacher = study.user_attrs.get("teacher")
    if teacher is None:
        return None
    teacher = {**teacher, "latency_source": "single"}
    conf = confirmation(study)
    if conf and conf.get("teacher"):
        teacher = {**teacher, "latency_in_study": {"latency_ms": teacher.get("latency_ms")},
                   **{k: v for k, v in conf["teacher"].items() if k != "contended"}, "latency_source": "confirmed"}
    return teacher


def frontier_document(cfg: JobConfig, study: optuna.Study) -> dict[str, Any]:
    """frontier.json's content: the feasible Pareto set (confirmed figures where a confirmation pass measured them),
    the baseline, the teacher, the ties, and, with a test split, what is already scored on it."""
    objectives = study.user_attrs.get("objectives") or [n for n, _ in objective_directions(cfg)]
    directions = [d.name.lower() for d in study.directions]
    conf = confirmation(study)
    recs = {r["number"]: r for r in study_records(study, objectives)}
    front = frontier(study)
    baseline = baseline_trial(study)
    splits, read_test = _test_figures(cfg)
    ties = frontier_ties(study)

    def record(t: FrozenTrial) -> dict[str, Any]:
        rec = dict(recs[t.number])
        if read_test is not None and (test := read_test(rec.get("onnx"), rec.get("dir"))):
            rec["test"] = test
        return rec

    points = []
    base_values = record_values(recs[baseline.number], objectives, baseline.values) if baseline else None
    for t in sorted(front, key=lambda t: t.values[0], reverse=directions[0] == "maximize"):
        rec = record(t)
        if baseline is not None and t.number != baseline.number:
            rec["dominates_baseline"] = dominates_with_intervals(
                record_values(rec, objectives, t.values), base_values, directions)
        rec["tied_with"] = sorted({b if a == t.number else a for a, b in ties if t.number in (a, b)})
        points.append(rec)
    teacher = teacher_record(study)
    if teacher is not None and read_test is not None:
        folder = cfg.run_dir / "teacher_onnx"
        if test := read_test(folder / "model.onnx", folder):
            teacher = {**teacher, "test": test}
    doc = {
        "study": study.study_name, "storage": storage_url(cfg), "objectives": dict(zip(objectives, directions)),
        "constraints": list(cfg.search.constraints), "teacher": teacher,
        "baseline": record(baseline) if baseline else None,
        "frontier": points, "ties": ties,
        "dominance": "a trial is dominated only by one at least as good on every objective and better, with "
                     "intervals apart, on one (latency figures carry their bootstrap 95% intervals; metrics and "
                     "sizes are exact); points whose intervals overlap on every objective they differ in are ties",
        "confirmation": _confirmation_block(conf) if conf else None,
        "compute": compute_spent(study),
        "promotion": study.user_attrs.get("promotion"),
        "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if (promoted := promoted_frontier(study, recs, objectives)) is not None:
        # What a user would ship is the promoted model: the reported frontier (scenario picks, `compress package
        # --pick`, the report) is the promoted one; the search-budget frontier stays beside it.
        promo = study.user_attrs["promotion"]
        doc["frontier_search"], doc["frontier"] = doc["frontier"], promoted
        for rec in doc["frontier"]:  # the held-out figure of the promoted file, never the search's file's
            rec.pop("test", None)
            if read_test is not None and (test := read_test(rec.get("onnx"), rec.get("dir"))):
                rec["test"] = test
        doc["reported_frontier"] = (f"promoted: the search's frontier retrained on all {promo['train_rows']:,} "
                                    "training rows, timed with the teacher (frontier_search: the search's own)")
    if fid := study.user_attrs.get("fidelity"):
        doc["fidelity"] = {**fid, "rule": "asynchronous successive halving: the best floor(n/reduction) completed "
                                          "trials of a rung go on to the next, ranked by constrained non-dominated "
                                          "sorting (feasible first; fronts; crowding distance; infeasible by total "
                                          "violation; with lower_rung_metric relaxed, the task-metric constraints "
                                          "are judged at the top rung only); the frontier is the top rung's",
                           "trials_by_rung": _by_rung(recs.values(), len(fid["rows"]))}
    if splits is not None:
        doc.update(splits)
    return doc


def promoted_frontier(study: optuna.Study, recs: dict[int, dict[str, Any]],
                      objectives: list[str]) -> list[dict[str, Any]] | None:
    """After `compress promote`: the promoted frontier's points as trial records (`recs` by trial number) with
    the promoted models' figures and files; None when the study was not promoted."""
    promo = study.user_attrs.get("promotion")
    if not promo or not promo.get("points"):
        return None
    return [promoted_record(recs[p["trial"]], p, objectives) for p in promo["points"] if p["trial"] in promo["frontier"]]


def promoted_record(rec: dict[str, Any], p: dict[str, Any], objectives: list[str]) -> dict[str, Any]:
    """A trial's record with its promoted model's figures and files (dir, onnx) in place of the search's."""
    out = {**rec, "value": p["value"], "metrics": p.get("metrics") or rec.get("metrics"), "params": p["params"],
           "size_mb": p["size_mb"], "latency_ms": p["latency_ms"], "latency_ci95_ms": p["latency_ci95_ms"],
           "latency_ratio": p["latency_ratio"], "latency_ratio_ci95": p["latency_ratio_ci95"], "onnx": p["onnx"],
           "dir": p.get("dir", rec.get("dir")), "train_rows": p["train_rows"], "rows_seen": p.get("rows_seen"),
           "latency_source": "promoted", "promoted": True, "low_budget": p.get("low_budget"),
           "dominates_baseline": None, "tied_with": []}
    metric = rec.get("metric")
    if rec.get("objectives"):
        out["objectives"] = {k: (p["value"] if k in (metric, "metric") else out.get(k, v))
                             for k, v in rec["objectives"].items()}
    return out


def _lock_wait_s(t: FrozenTrial) -> float:
    """Seconds the trial's latency measurement waited for another job's measurement lock."""
    return float((t.user_attrs.get("latency_method") or {}).get("lock_wait_s") or 0)


def trial_seconds(t: FrozenTrial) -> float:
    """A trial's own wall time, build to measurement, less the time its latency measurement waited for another
    job's measurement lock (that wait is the other job's work, not this trial's compute)."""
    return max(float((t.user_attrs.get("timings") or {}).get("total_s") or 0) - _lock_wait_s(t), 0.0)


def compute_spent(study: optuna.Study) -> dict[str, Any]:
    """Training compute of the finished trials: rows the optimiser saw (training-row passes) and wall seconds."""
    rows = secs = waited = 0.0
    unrecorded = 0  # trials from before rows_seen was recorded (an older run)
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if t.user_attrs.get("rows_seen") is None:
            unrecorded += 1
        rows += float(t.user_attrs.get("rows_seen") or 0)
        secs += trial_seconds(t)
        waited += _lock_wait_s(t)
    return {"rows_seen": int(rows), "trial_seconds": round(secs, 1), "lock_wait_seconds": round(waited, 1),
            "trials_without_rows_seen": unrecorded,
            "unit": "rows seen by the optimiser over all completed trials (steps x batch size); seconds of each "
                    "trial from build to measurement less its wait for the measurement lock, summed over trials"}


def _by_rung(recs, n_rungs: int) -> list[dict[str, Any]]:
    out = []
    for r in range(n_rungs):
        at = [x for x in recs if (x.get("rung") or 0) == r and x["state"] == "complete"]
        out.append({"rung": r, "complete": len(at), "feasible": sum(bool(x["feasible"]) for x in at),
                    "warm_started": sum(bool((x.get("warm_start") or {}).get("used")) for x in at)})
    return out


def write_outputs(cfg: JobConfig, study: optuna.Study) -> tuple[Path, Path]:
    """frontier.json (frontier_document) and trials.csv (every trial, confirmed figures where there are some)."""
    objectives = study.user_attrs.get("objectives") or [n for n, _ in objective_directions(cfg)]
    doc = frontier_document(cfg, study)
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    fpath, cpath = cfg.run_dir / "frontier.json", cfg.run_dir / "trials.csv"
    write_json(fpath, doc)
    cols = ["number", "state", "baseline", "feasible", "metric", "value", *MEASURES, "latency_ci95_ms",
            "latency_ratio_ci95", "latency_source", "latency_p90_ms", "precision", "rung", "promoted_from",
            "train_rows", "rows_seen", "rows_seen_total", "warm_from", "vocab_size", "unk_token_share", "unk_row_share",
            "distill_s", "evaluate_s", "export_s", "variant_s", "measure_s", "total_s", "steps", "total_steps",
            "reason", "params_searched", "dir"]

    def write_csv(tmp: Path) -> None:
        with open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
            w.writeheader()
            for rec in study_records(study, objectives):
                rec.update(rec.get("timings") or {})
                if rec.get("vocab_prune"):  # a pruned vocabulary: its size and what it turns into [UNK] on eval
                    v = rec["vocab_prune"]
                    rec.update(vocab_size=v["vocab_size"], unk_token_share=v["eval"]["unk_token_share"],
                               unk_row_share=v["eval"]["unk_row_share"])
                for k in ("latency_ci95_ms", "latency_ratio_ci95"):
                    rec[k] = json.dumps(rec[k]) if rec.get(k) else ""
                rec["params_searched"] = json.dumps(rec["params_searched"])
                if (rec.get("warm_start") or {}).get("used"):  # the trial whose model it went on from
                    rec["warm_from"] = rec["warm_start"]["from_trial"]
                w.writerow(rec)

    atomic_write(cpath, write_csv)
    return fpath, cpath


# ----------------------------------------------------------------------------------------------
# Status


def study_summary(cfg: JobConfig, study: optuna.Study | None = None) -> dict[str, Any]:
    """What `compress status` shows: counts by state, feasibility, frontier, time left, warnings. Pass `study`
    when it is already open."""
    study = study if study is not None else open_study(cfg, create=False)
    objectives = study.user_attrs.get("objectives") or [n for n, _ in objective_directions(cfg)]
    recs = study_records(study, objectives)
    front = {t.number for t in frontier(study)}
    by_state: dict[str, int] = {}
    for r in recs:
        by_state[r["state"]] = by_state.get(r["state"], 0) + 1
    done = [r for r in recs if r["state"] in ("complete", "stopped")]
    feasible = [r for r in done if r["feasible"]]
    warnings = []
    k = cfg.search.warn_infeasible_after
    first = sorted(done, key=lambda r: r["number"])[:k]
    if len(first) >= k and not any(r["feasible"] for r in first):
        warnings.append(f"the first {k} completed trials are all infeasible ({', '.join(cfg.search.constraints)}): "
                        "the thresholds may be out of reach; loosen them or widen the space")
    if cfg.task.type == "qa":
        for r in done:
            rate = (r["metrics"] or {}).get("no_answer_rate")
            if rate is not None and (rate > 0.95 or rate < 0.05):
                warnings.append(f"trial {r['number']} predicts {'no answer' if rate > 0.95 else 'an answer'} for "
                                f"{max(rate, 1 - rate):.0%} of questions: degenerate on SQuAD 2.0")
    durations = [r["timings"]["total_s"] for r in done if r.get("timings")]
    remaining = max(0, cfg.search.n_trials - by_state.get("complete", 0) - by_state.get("stopped", 0))
    running = by_state.get("running", 0)
    eta = (float(np.mean(durations)) * remaining / max(1, running or 1)) if durations else None
    saved = 0.0
    for r in done:
        if r["state"] == "stopped" and r.get("steps") and r.get("total_steps") and r.get("timings"):
            per_step = r["timings"]["distill_s"] / max(1, r["steps"])
            saved += per_step * (r["total_steps"] - r["steps"])
    out = {
        "study": study.study_name, "storage": storage_url(cfg), "target": cfg.search.n_trials,
        "by_state": by_state, "completed": len(done), "feasible": len(feasible),
        # multi-fidelity: promotions are extra trials, beyond n_trials
        "promotions": sum(1 for r in done if r.get("promoted_from") is not None),
        "frontier": [r for r in recs if r["number"] in front],
        "promotion": None,
        "ties": frontier_ties(study),
        "confirmation": _confirmation_block(conf) if (conf := confirmation(study)) else None,
        "eta_seconds": eta, "early_stopping_saved_seconds": round(saved, 1),
        "teacher": teacher_record(study), "warnings": warnings, "compute": compute_spent(study),
        "fidelity": ({**fid, "trials_by_rung": _by_rung(recs, len(fid["rows"]))}
                     if (fid := study.user_attrs.get("fidelity")) else None),
    }
    if (promoted := promoted_frontier(study, {r["number"]: r for r in recs}, objectives)) is not None:
        # as frontier.json: the promoted models are what a user would ship; the search's frontier stays beside
        promo = study.user_attrs["promotion"]
        out["frontier_search"], out["frontier"] = out["frontier"], promoted
        out["promotion"] = {k: promo.get(k) for k in ("at", "train_rows", "frontier", "candidates")}
    return out

