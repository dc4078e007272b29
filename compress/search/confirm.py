"""The confirmation pass: the frontier's figures measured again, all together, before anyone quotes them.

A trial's in-study latency is one paired measurement, taken while the study went on. At the end of a study (and
on demand, `compress confirm RUN`) the frontier, the trials within the noise of it (compress.search.pareto
.near_frontier), feasible trials left out only by a latency constraint their interval straddles, the baseline and
the teacher are loaded into one process and timed interleaved, round after round (compress.deploy.latency
.measure_interleaved, search.confirm.rounds × calls_per_round calls of each, the teacher as the reference of every
ratio and of the drift rule), under the machine's measurement lock. Their confirmed figures then replace the
in-study ones wherever the study is read (frontier, feasibility, frontier.json, status, report, scenario picks,
`compress package --pick`); two frontier points whose intervals overlap on every objective they differ in are
reported as ties. What the pass changed (frontier and picks before and after) is recorded beside it.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from ..artifacts import write_json
from ..config import JobConfig
from ..deploy.latency import LatencySettings, bootstrap_median_ci, measure_interleaved
from ..deploy.measure import eval_length_batches
from ..deploy.measure_lock import lock_dir_for, measuring
from .heldout import heldout_data
from .objectives import (
    Constraint, latency_settings, metric_names, search_constraints, teacher_reference, wanted_capacity,
)
from .pareto import INTERVALS, baseline_trial, confirmation, frontier, frontier_ties, near_frontier, on_top_rung

__all__ = ["confirm_candidates", "confirm_study", "needs_confirmation"]

log = logging.getLogger(__name__)

CONFIRMED_MEASURES = frozenset(INTERVALS)  # the measures a confirmation pass re-times


def _complete(study: optuna.Study) -> list[FrozenTrial]:
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.user_attrs.get("state") == "complete"]


def _optimistic_feasible(t: FrozenTrial, constraints: list[Constraint]) -> bool:
    """Infeasible only by latency constraints that the good end of the trial's interval would meet."""
    ua = t.user_attrs
    violations = ua.get("constraints") or []
    if not violations or len(violations) != len(constraints):
        return False
    for c, v in zip(constraints, violations):
        if v <= 0:
            continue
        ci = ua.get(INTERVALS.get(c.name, ""), None)
        if c.name not in CONFIRMED_MEASURES or not ci:
            return False
        best = ci[0] if c.name != "throughput" else ci[1]
        if c.violation(best) > 0:
            return False
    return True


def confirm_candidates(cfg: JobConfig, study: optuna.Study) -> list[FrozenTrial]:
    """What a pass re-measures, in order: the frontier, the rest of the trials within its noise, feasible-by-noise
    trials, then the baseline; at most search.confirm.max_models of them (the baseline always among them), and
    only trials whose deployed ONNX file is still there."""
    constraints = search_constraints(cfg, metric_names(cfg))
    front = frontier(study)
    near = [t for t in near_frontier(study) if t not in front]
    top = on_top_rung(study)
    edge = [t for t in _complete(study) if not t.user_attrs.get("feasible") and top(t)
            and _optimistic_feasible(t, constraints)]
    out: list[FrozenTrial] = []
    for t in front + near + edge:
        onnx = t.user_attrs.get("onnx")
        if all(o.number != t.number for o in out) and onnx and Path(onnx).is_file():
            out.append(t)
    out = out[: cfg.search.confirm.max_models]
    base = baseline_trial(study)
    if base is not None and base.user_attrs.get("onnx") and Path(base.user_attrs["onnx"]).is_file() and \
            all(o.number != base.number for o in out):
        out = out[: max(0, cfg.search.confirm.max_models - 1)] + [base]
    return out


def needs_confirmation(cfg: JobConfig, study: optuna.Study) -> bool:
    """Whether the last pass is missing or older than the study's last completed trial."""
    if not cfg.search.confirm.enabled:
        return False
    last = confirmation(study)
    done = sorted(t.number for t in _complete(study))
    return bool(done) and (last is None or last.get("complete_trials") != done)


def _picks(cfg: JobConfig, study: optuna.Study) -> dict[str, int | None]:
    """The trial each scenario picks from the frontier as frontier.json would show it now."""
    # NOTE: imported here: results imports this module for the document it writes.
    from .results import frontier_document
    from .scenarios import SCENARIOS, ScenarioError, pick

    doc = frontier_document(cfg, study)
    out: dict[str, int | None] = {}
    for scenario in SCENARIOS:
        try:
            out[scenario] = pick(doc, scenario, cfg.report.within_points)["number"]
        except ScenarioError:
            out[scenario] = None
    return out


def _throughput_rounds(models: dict[str, Path], cfg: JobConfig, eval_split, settings: LatencySettings) -> dict:
    """Throughput of every model, interleaved like the latency: rows per call over each round's median call time."""
    lc = cfg.search.latency
    inputs = None
    if lc.seq_len == "eval":
        inputs = eval_length_batches(eval_split, lc.throughput_batch_size, limit=settings.calls_per_round, seed=0)
    s = dataclasses.replace(settings, batch_size=lc.throughput_batch_size)
    res = measure_interleaved(models, None, inputs, s)
    rows = float(np.mean([next(iter(b.values())).shape[0] for b in inputs])) if inputs else lc.throughput_batch_size
    out = {}
    for name, summary in res["models"].items():
        per_round = [rows / (m / 1000.0) for m in summary["round_medians_ms"]]
        out[name] = {"throughput": float(np.median(per_round)),
                     "throughput_ci95": list(bootstrap_median_ci(per_round, s.resamples, s.seed))}
    return out


def confirm_protocol(cfg: JobConfig, eval_split) -> tuple[LatencySettings, list | None]:
    """The settings and batches of a timing with the teacher: search.latency with search.confirm's rounds and calls;
    the eval set's own lengths (`eval_split`) with seq_len "eval", else the fixed shape (no batches)."""
    lc, cc = cfg.search.latency, cfg.search.confirm
    settings = dataclasses.replace(latency_settings(cfg), rounds=cc.rounds, calls_per_round=cc.calls_per_round)
    inputs = None
    if lc.seq_len == "eval":
        inputs = eval_length_batches(eval_split, lc.batch_size, limit=cc.calls_per_round, seed=0)
    return settings, inputs


def _measure(cfg: JobConfig, study: optuna.Study, candidates: list[FrozenTrial], inputs, eval_split,
             settings: LatencySettings) -> tuple[dict[str, Any], dict[str, Any]]:
    """One interleaved measurement of the teacher and `candidates`; (record without before/after, raw result)."""
    models = {"teacher": teacher_reference(cfg)} | {f"trial {t.number}": Path(t.user_attrs["onnx"]) for t in candidates}
    with measuring(lock_dir_for(cfg.run_dir)) as hold:
        res = measure_interleaved(models, "teacher", inputs, settings)
        capacity = _throughput_rounds(models, cfg, eval_split, settings) \
            if "throughput" in wanted_capacity(cfg) else {}
    constraints = search_constraints(cfg, metric_names(cfg))
    common = {"at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "rounds": settings.rounds,
              "calls_per_round": settings.calls_per_round, "contended": res["contended"]}
    trials: dict[str, dict[str, Any]] = {}
    for t in candidates:
        name = f"trial {t.number}"
        m, ratio = res["models"][name], res["ratios"][name]
        rec = {"latency_ms": m["median_ms"], "latency_ci95_ms": m["ci95_ms"], "latency_p90_ms": m["p90_ms"],
               "latency_ratio": ratio["median"], "latency_ratio_ci95": ratio["ci95"], **capacity.get(name, {}),
               "onnx": str(models[name]), **common}
        measured = {**{k: v for k, v in (t.user_attrs.get("metrics") or {}).items() if isinstance(v, (int, float))},
                    **(t.user_attrs.get("measures") or {}), **{k: rec[k] for k in CONFIRMED_MEASURES if k in rec}}
        violations = [c.violation(measured[c.name]) if measured.get(c.name) is not None else 1.0
                      for c in constraints]
        rec["constraints"] = violations
        # Stopped trials never reach here (only completed ones are candidates); the rest is the constraints.
        rec["feasible"] = all(v <= 0 for v in violations)
        rec["in_study"] = {k: (t.user_attrs.get("measures") or {}).get(k) for k in CONFIRMED_MEASURES} | {
            "latency_ci95_ms": t.user_attrs.get("latency_ci95_ms"),
            "latency_ratio_ci95": t.user_attrs.get("latency_ratio_ci95"), "feasible": t.user_attrs.get("feasible")}
        trials[str(t.number)] = rec
    tm = res["models"]["teacher"]
    teacher = {"latency_ms": tm["median_ms"], "latency_ci95_ms": tm["ci95_ms"], "latency_p90_ms": tm["p90_ms"],
               "latency_ratio": 1.0, **capacity.get("teacher", {}), **common}
    method = {k: v for k, v in res.items() if k not in ("models", "ratios")}
    method["lock_wait_s"] = round(hold.waited_s, 3)
    doc: dict[str, Any] = {
        **common, "trials": trials, "teacher": teacher, "models": list(models), "reference": "teacher",
        "complete_trials": sorted(t.number for t in _complete(study)), "retries": res["retries"],
        "spread": res["spread"],
        "method": {k: method[k] for k in ("runtime", "onnxruntime", "provider", "threads", "graph_optimization",
                                          "order", "spread_rule", "cpu", "cores", "versions", "load_before",
                                          "load_after", "elapsed_s", "lock_wait_s", "seq_len", "mean_seq_len",
                                          "batch_size", "warmup", "retries", "spreads") if k in method},
    }
    return doc, res


MAX_PASSES = 3  # measurements per confirmation when the first one brings new trials near the frontier


def confirm_study(cfg: JobConfig, study: optuna.Study, data=None) -> dict[str, Any]:
    """Run the confirmation pass on `study` and record it (study user attribute "confirmation", RUN/confirmation.json
    with every round). Returns the record: per trial and for the teacher the confirmed figures, the frontier and the
    scenario picks before and after, the ties, and the method.

    When the confirmed figures bring trials near the frontier that were not measured (a frontier point was
    measured too fast in the study and hid them), they join and the whole set is timed again together, at most
    MAX_PASSES times; search.confirm.max_models bounds the set.
    """
    started = time.perf_counter()
    candidates = confirm_candidates(cfg, study)
    reference = teacher_reference(cfg)
    if not reference.is_file():
        raise FileNotFoundError(f"the teacher's ONNX file {reference} is missing; it is the reference of every "
                                "confirmed ratio (run `compress search` again to export it)")
    if not candidates:
        raise ValueError(f"study {study.study_name!r} has no completed trial with an ONNX file to confirm")
    lc, cc = cfg.search.latency, cfg.search.confirm
    if data is None and lc.seq_len == "eval":  # a fixed shape needs no data
        data = heldout_data(cfg, study)
    settings, inputs = confirm_protocol(cfg, data.eval if data is not None else None)
    before = {"frontier": sorted(t.number for t in frontier(study)), "picks": _picks(cfg, study)}
    previous = confirmation(study)
    try:
        for passes in range(1, MAX_PASSES + 1):
            doc, res = _measure(cfg, study, candidates, inputs, data.eval if data is not None else None, settings)
            study.set_user_attr("confirmation", doc)
            measured = {t.number for t in candidates}
            nearer = [t for t in confirm_candidates(cfg, study) if t.number not in measured]
            if not nearer or len(candidates) >= cc.max_models:
                break
            base = [t for t in candidates if t.user_attrs.get("baseline")]
            rest = [t for t in candidates if not t.user_attrs.get("baseline")]
            candidates = (nearer + rest)[: cc.max_models - len(base)] + base
    except BaseException:
        # A pass that did not finish leaves the study as it was (a killed or interrupted run can be re-run).
        study.set_user_attr("confirmation", previous)
        raise
    after = {"frontier": sorted(t.number for t in frontier(study)), "picks": _picks(cfg, study)}
    doc.update(before=before, after=after, ties=frontier_ties(study), passes=passes,
               elapsed_s=round(time.perf_counter() - started, 2))
    doc["changed"] = before != after
    study.set_user_attr("confirmation", doc)
    write_json(cfg.run_dir / "confirmation.json", {**doc, "measurement": res})
    log.info("confirmation: %d models, %d rounds, %d passes; frontier %s -> %s", len(doc["models"]),
             settings.rounds, passes, before["frontier"], after["frontier"])
    return doc
