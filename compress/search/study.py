"""The Optuna study: one trial builds, distills, evaluates, exports and measures a student; measured
latency and size feed back as objectives, thresholds as constraints. Resumable, with parallel workers.

Early stopping rule (Optuna does not prune multi-objective studies, so it is built here): at an evaluation
after at least `min_fraction` of a trial's steps, for each threshold on the task metric `metric >= t`
(or `>`), the trial is hopeless when `metric < t - margin` (margin: `early_stopping.margin`, default 10% of
|t|). It stops there, is still exported and measured (its size and latency inform the sampler), and is
recorded as infeasible with the reason.

Latency: each trial's deployed ONNX file is timed paired with the teacher's (objectives.paired_latency: rounds
alternating the two models, bootstrap intervals, the candidate/teacher ratio), under the machine's measurement
lock (compress.deploy.measure_lock, RUN/.locks/<host>/): training steps of every worker on this machine pause
while it runs, and the measurement waits for the steps already running. latency_method records the whole result
and the wait (lock_wait_s).

Killed workers: every running trial writes a heartbeat (a timestamp user attribute) every
`heartbeat_interval` seconds. Any worker that finds a running trial silent for `grace_period` marks it
failed and enqueues a copy with the same parameters, exactly once (the state change succeeds for one
worker only). Only completed trials count towards `n_trials`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import traceback
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..config import JobConfig, to_dict
from ..deploy.export import export_onnx
from ..deploy.measure_lock import lock_dir_for, measuring
from ..deploy.variants import calibration_feeds, canonical_precision, make_variant, variant_dir
from ..distill.agora import run_agora
from ..distill.jobs import distill_student, load_context
from ..distill.loop import StopTraining, TrainingDiverged
from ..distill.vocab import data_for_model, prune_student_vocabulary
from ..model.inference import evaluate_onnx
from ..model.vocab import check_prunable
from .confirm import confirm_candidates, confirm_study, needs_confirmation
from .heldout import evaluate_heldout
from .intervals import with_interval
from .objectives import (
    MEASURES, Constraint, SearchError, capacity_measures, export_sample, measure_teacher, metric_names,
    objective_directions, paired_latency, search_constraints, wanted_capacity,
)
from .fidelity import (duplicate_of, lower_rung_rule, metric_constraint_indices, promote_next, rung_context, rung_rows,
                       warm_start_context, warm_start_source)
from .placement import plan_workers
from .results import write_outputs
from .space import SearchSpace
from .storage import open_study

log = logging.getLogger(__name__)

__all__ = ["prepare_search", "reap_stale_trials", "run_search", "run_trial", "run_worker"]


# ----------------------------------------------------------------------------------------------
# Heartbeats and dead workers


class _Heartbeat:
    """Writes a timestamp on the running trial every `interval` seconds, from a daemon thread."""

    def __init__(self, study: optuna.Study, trial_id: int, interval: float) -> None:
        self.study, self.trial_id, self.interval = study, trial_id, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.study._storage.set_trial_user_attr(self.trial_id, "heartbeat", time.time())
            except Exception:  # noqa: BLE001 - the trial may have just finished; a missed beat is harmless
                pass

    def __enter__(self) -> "_Heartbeat":
        self.study._storage.set_trial_user_attr(self.trial_id, "heartbeat", time.time())
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def reap_stale_trials(study: optuna.Study, grace: float) -> list[int]:
    """Fail running trials whose heartbeat is older than `grace` and enqueue one retry of each."""
    reaped = []
    now = time.time()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        beat = t.user_attrs.get("heartbeat")
        if beat is None:
            started = t.datetime_start.timestamp() if t.datetime_start else now
            beat = started
        if now - beat <= grace:
            continue
        try:
            # The reason goes on first: a finished trial cannot be changed. Only the worker whose state
            # change succeeds enqueues the re-run, so a lost trial is re-run exactly once.
            study._storage.set_trial_user_attr(
                t._trial_id, "reason", f"worker stopped heartbeating for {now - beat:.0f} s (killed?); re-run as a new trial")
            study._storage.set_trial_user_attr(t._trial_id, "state", "lost")
            study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        except Exception:  # noqa: BLE001 - another worker reaped it first (or it just finished)
            continue
        attrs = {k: v for k, v in t.user_attrs.items() if k in ("baseline", "rung", "promoted_from")}
        study.enqueue_trial(t.params, user_attrs={**attrs, "retry_of": t.number})
        log.warning("trial %d lost its worker; enqueued a re-run with the same parameters", t.number)
        reaped.append(t.number)
    return reaped


# ----------------------------------------------------------------------------------------------
# One trial


def _early_stopper(cfg: JobConfig, constraints: list[Constraint]):
    es = cfg.search.early_stopping
    metric_limits = [c for c in constraints if c.op in (">=", ">") and c.name in metric_names(cfg)]
    if not es.enabled or not metric_limits:
        return None

    def on_eval(step: int, total: int, metrics: dict[str, Any]) -> None:
        if step >= total or step < es.min_fraction * total:
            return
        for c in metric_limits:
            value = metrics.get(c.name)
            if value is None:
                continue
            margin = es.margin if es.margin is not None else 0.1 * abs(c.value)
            if value < c.value - margin:
                raise StopTraining(
                    f"stopped at step {step} of {total}: {c.name} = {value:.4g} is more than {margin:.4g} below "
                    f"the threshold {c} (rule: after {es.min_fraction:.0%} of the steps, metric < threshold - margin)"
                )

    return on_eval


def train_student(ctx, cfg: JobConfig, spec, distill, out, progress: bool, on_eval=None,
                  lock_dir=None, init_from=None) -> dict[str, Any]:
    """Distil one student into `out` (or fine-tune it with Agora when the job says so; Θ then supplies learning rate,
    weight decay, warm-up and seed, and there is no early stopping); its metrics.json content.

    With spec.vocab_pruning the saved student's vocabulary is then pruned (compress.distill.vocab): metrics and params
    are the pruned model's, and "vocab_prune" says what was kept and what it changes on the eval split.
    `init_from`: a saved student to continue (a multi-fidelity warm start; distillation only)."""
    if cfg.finetune == "agora":
        run_agora(ctx, spec, out, distill=distill, progress=progress, lock_dir=lock_dir)
        m = json.loads((out / "metrics.json").read_text())
        m["train_seconds"], m["eval_seconds"] = m["wall_seconds"], 0.0  # every θ and iteration, evaluation included
    else:
        m = distill_student(ctx, spec, out, distill=distill, progress=progress, on_eval=on_eval, lock_dir=lock_dir,
                            init_from=init_from)
    if spec.vocab_pruning:  # the tokens of what it trained on: with distillation, the augmented rows too
        augment = None if cfg.finetune == "agora" else (distill or cfg.distill).augment
        pruned = prune_student_vocabulary(ctx, out, cfg.vocab_prune, augment)
        m.update({k: pruned[k] for k in ("value", "metrics", "params", "vocab_prune")})
    return m


def deploy_model(ctx, cfg: JobConfig, trial_dir, precision: str, pytorch_metrics: dict[str, Any]) -> dict[str, Any]:
    """Export trial_dir/model to ONNX (checked against PyTorch), make the `precision` variant and score it: what
    is deployed and its metrics (PyTorch's for fp32, which the export matches within search.export_atol).

    A pruned vocabulary reads the eval split as its own tokenizer gives it ("eval_split", for timing it too) and
    the training rows in its own ids (static int8 calibrates on them)."""
    t0 = time.perf_counter()
    ctx = dataclasses.replace(ctx, data=data_for_model(cfg, ctx.data, trial_dir / "model", ctx.tokenizer))
    exported = export_onnx(trial_dir / "model", trial_dir / "onnx", cfg.task.type, sample=export_sample(ctx),
                           atol=cfg.search.export_atol)
    out: dict[str, Any] = {"exported": exported, "deployed": exported.path, "size_bytes": exported.size_bytes,
                           "eval_split": ctx.data.eval,
                           "metrics": pytorch_metrics, "variant": None, "export_s": round(time.perf_counter() - t0, 2),
                           "variant_s": 0.0, "metric_source": "PyTorch on the full eval split; the fp32 ONNX file "
                                                              "matches it within search.export_atol"}
    if precision != "fp32":
        t0 = time.perf_counter()
        cal = cfg.search.calibration  # int8-static: this trial's training rows (a rung's, with fidelity)
        calibration = calibration_feeds(ctx.data.train, cal.rows, cal.batch_size, cal.method, cal.seed) \
            if canonical_precision(precision) == "int8-static" else None
        variant = make_variant(trial_dir / "onnx", variant_dir(trial_dir, precision), precision,
                               cfg.search.export_atol, calibration)
        out["metrics"], _ = evaluate_onnx(variant.path, ctx.data, threads=cfg.search.latency.threads)
        out.update(deployed=variant.path, size_bytes=variant.size_bytes, variant=variant,
                   metric_source=f"ONNX Runtime on the {precision} variant ({variant.path}), full eval split",
                   variant_s=round(time.perf_counter() - t0, 2))
    return out


def run_trial(trial: optuna.Trial, ctx, space: SearchSpace, cfg: JobConfig, objectives, constraints,
              workers: int = 1) -> list[float]:
    """Build, distill, evaluate, export (validated), measure; everything lands on the trial and its folder."""
    t_start = time.perf_counter()
    lock_dir = lock_dir_for(cfg.run_dir)
    values = space.suggest(trial)
    spec, distill = space.settings(values)
    trial_dir = cfg.run_dir / "trials" / str(trial.number)
    full_ctx, warm = ctx, {"used": False, "why": None}
    if cfg.search.fidelity.enabled:  # this trial's rung: its share of the training rows (nested across rungs)
        ctx, rung, _ = rung_context(ctx, cfg, trial.user_attrs.get("rung", 0))
        trial.set_user_attr("rung", rung)  # train_rows goes with the record below
        warm = warm_start_source(trial.study, trial.user_attrs, spec, cfg)
        if warm["why"]:
            log.info("trial %d starts cold: %s", trial.number, warm["why"])
    train_ctx = ctx
    if warm["used"]:  # a promotion goes on from its parent's model, on the rows its rung adds
        train_ctx, warm["rows_new"] = warm_start_context(full_ctx, cfg, rung, warm["parent_rung"])
    trial.set_user_attr("dir", str(trial_dir))
    trial.set_user_attr("spec", spec.to_json())
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    trial.set_user_attr("state", "running")
    m = train_student(train_ctx, cfg, spec, distill, trial_dir / "model", progress=False,
                      on_eval=_early_stopper(cfg, constraints), lock_dir=lock_dir,
                      init_from=warm.get("model") if warm["used"] else None)
    t_distilled = time.perf_counter()

    precision = space.precision(values)
    dep = deploy_model(ctx, cfg, trial_dir, precision, m["metrics"])
    exported, deployed, size_bytes, metrics = dep["exported"], dep["deployed"], dep["size_bytes"], dep["metrics"]
    metric_source, t_export, t_variant = dep["metric_source"], dep["export_s"], dep["variant_s"]
    if dep["variant"] is not None:
        trial.set_user_attr("variant", dep["variant"].to_json())
    t0 = time.perf_counter()
    with measuring(lock_dir) as hold:  # no training step of any worker on this machine runs meanwhile
        lat = paired_latency(deployed, dep["eval_split"], cfg)
        capacity = capacity_measures(deployed, dep["eval_split"], cfg, wanted_capacity(cfg))
    lat["lock_wait_s"] = round(hold.waited_s, 3)
    lat["concurrent_workers"] = workers
    t_measure = time.perf_counter() - t0

    metric_name = cfg.task.primary_metric
    measured = {**{k: v for k, v in metrics.items() if isinstance(v, (int, float))},
                "params": m["params"], "latency_ms": lat["median_ms"], "latency_p90_ms": lat["p90_ms"],
                "size_mb": size_bytes / 1e6, "latency_ratio": lat["ratio"]["median"],
                "throughput": capacity.get("throughput"), "peak_memory_mb": capacity.get("peak_memory_mb")}
    violations = [c.violation(measured[c.name]) for c in constraints]
    stopped = m.get("stopped")
    if stopped:  # infeasible by rule: a positive violation even when no metric threshold is configured
        violations = [max(v, 1e-9) for v in violations] or [1.0]
    feasible = all(v <= 0 for v in violations)
    names = [str(c) for c in constraints] or ["early_stopped"]
    for name, v in zip(names, violations):
        trial.set_constraint(name, float(v))  # samplers learn the infeasible region from these
    vocab_s = (m.get("vocab_prune") or {}).get("seconds", 0.0)
    rows_seen = m.get("rows_seen", m["steps"] * distill.train.batch_size)
    timings = {"distill_s": m["train_seconds"], "evaluate_s": m["eval_seconds"],
               "export_s": t_export, "variant_s": t_variant, "measure_s": round(t_measure, 2),
               "vocab_prune_s": vocab_s,
               "build_and_io_s": round(t_distilled - t_start - m["train_seconds"] - m["eval_seconds"] - vocab_s, 2),
               "total_s": round(time.perf_counter() - t_start, 2)}
    record = {
        "state": "stopped" if stopped else "complete", "feasible": feasible, "reason": stopped or "",
        "metric": metric_name, "metrics": metrics, "measures": {k: measured[k] for k in MEASURES},
        "metric_source": metric_source, "precision": precision,
        "pytorch_metrics": m["metrics"],
        "latency_p90_ms": lat["p90_ms"], "latency_ci95_ms": lat["ci95_ms"],
        "latency_ratio_ci95": lat["ratio"]["ci95"], "latency_method": lat,
        **{k: capacity[k] for k in ("throughput_ci95", "throughput_method", "peak_memory_method") if k in capacity}, "onnx": str(deployed), "onnx_fp32": str(exported.path),
        "onnx_max_abs_diff": exported.max_abs_diff, "timings": timings, "distill": to_dict(distill),
        "steps": m["steps"], "total_steps": m.get("total_steps", m["steps"]),
        "train_rows": len(ctx.data.train),
        # compute, in training-row passes: rows the optimiser saw (steps × batch size; Agora: every θ's run)
        "rows_seen": rows_seen,
        # with a warm start, the parent chain's rows too: what the model has been trained on in all
        "rows_seen_total": rows_seen + ((warm.get("parent_rows_seen_total") or 0) if warm["used"] else 0),
        "warm_start": warm if warm["why"] or warm["used"] else None,
        "constraints": violations, "constraint_names": names,
        # what was kept and the eval tokens and rows it turns into [UNK] (or splits otherwise); None: full vocabulary
        "vocab_prune": m.get("vocab_prune"),
    }
    for k, v in record.items():
        trial.set_user_attr(k, v)
    (trial_dir / "trial.json").write_text(json.dumps({"number": trial.number, "params": trial.params, **record},
                                                     indent=2, default=str))
    return [measured[name] for name, _ in objectives]


# ----------------------------------------------------------------------------------------------
# Workers


def _counts_towards_target(t: FrozenTrial, fid: dict | None) -> bool:
    """Whether a trial is one of the study's n_trials: every trial, or with rungs the sampler's (rung 0) and the
    baseline."""
    return not fid or t.user_attrs.get("promoted_from") is None


def _counts(study: optuna.Study, fid: dict | None = None) -> dict[str, int]:
    """Trials by state; `complete`, `running` and `waiting` count the trials towards n_trials (with rungs, not the
    promotions), `running_all` every running trial."""
    c = {"complete": 0, "running": 0, "waiting": 0, "failed": 0, "pruned": 0, "running_all": 0}
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.RUNNING:
            c["running_all"] += 1
        if t.state == TrialState.WAITING:
            c["waiting"] += 1  # promotions included: they run before new trials
            continue
        if not _counts_towards_target(t, fid) and t.state in (TrialState.COMPLETE, TrialState.RUNNING):
            continue
        if t.state == TrialState.COMPLETE:
            c["complete"] += 1
        elif t.state == TrialState.RUNNING:
            c["running"] += 1
        elif t.state == TrialState.FAIL and t.user_attrs.get("state") != "lost":
            c["failed"] += 1
        elif t.state == TrialState.PRUNED:
            c["pruned"] += 1
    return c


def _enqueue_baseline(study: optuna.Study, space: SearchSpace, rung: int | None = None) -> None:
    """The baseline, first; with rungs at the top rung directly (it is the reference of the reported frontier)."""
    if any(t.user_attrs.get("baseline") for t in study.get_trials(deepcopy=False)):
        return
    study.enqueue_trial(space.baseline_values(), user_attrs={"baseline": True,
                                                             **({"rung": rung} if rung is not None else {})})


def prepare_search(cfg: JobConfig, progress: bool = True):
    """Everything trials share, made once: teacher outputs and importance, the study, the baseline, the
    teacher's measurements. Done before workers start, so they find it all cached instead of racing."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    ctx = load_context(cfg, progress=progress)
    space = SearchSpace.from_config(cfg, ctx.teacher.config)
    vocab = space.params.get("vocab_pruning")
    if (vocab and True in vocab.choices) or space.fixed_values().get("vocab_pruning"):
        check_prunable(ctx.tokenizer)  # before any trial trains: a tokenizer this tool cannot rewrite
    objective_directions(cfg), search_constraints(cfg, metric_names(cfg))  # refuse bad objectives/constraints up front
    study = open_study(cfg, space)
    fc = cfg.search.fidelity
    if fc.enabled:
        known = study.user_attrs.get("fidelity")
        fid = {"rows": rung_rows(len(ctx.data.train), fc.rows), "reduction": fc.reduction, "seed": fc.seed,
               "unit": "training rows (QA: windows)", "warm_start": fc.warm_start,
               "lower_rung_metric": lower_rung_rule(fc.lower_rung_metric, known)}
        # studies from before these settings: they started cold and judged every constraint at every rung
        if known and {"warm_start": False, "lower_rung_metric": "hard", **known} != fid:
            raise SearchError(f"this study was run with search.fidelity {known}, the config now gives {fid}; "
                              "rungs cannot change under a running study: restore them or use a new name:")
        study.set_user_attr("fidelity", fid)
    elif study.user_attrs.get("fidelity"):
        raise SearchError("this study was run with search.fidelity on and the config now turns it off; restore "
                          "search.fidelity or use a new name:")
    if cfg.search.baseline:
        _enqueue_baseline(study, space, len(fc.rows) - 1 if fc.enabled else None)
    teacher = measure_teacher(ctx, cfg)
    study.set_user_attr("teacher", {**{k: teacher[k] for k in ("metric", "params", "latency_ms", "size_mb")},
                                    **{k: teacher[k] for k in ("throughput", "peak_memory_mb") if k in teacher},
                                    "latency_ratio": 1.0})  # the reference of every trial's ratio
    return ctx, space, study


def run_worker(cfg: JobConfig, workers: int = 1, progress: bool = True, heldout: bool | None = None) -> None:
    """Run trials until the study holds `n_trials` completed ones; safe to run on several machines at once.

    Then, when the job has a test split, score the teacher, the baseline and the frontier on it (see
    compress.search.heldout) and write frontier.json again with those figures. `heldout` defaults to on for a lone
    worker and off for the workers `run_search` starts (it scores once, after all of them).
    """
    ctx, space, study = prepare_search(cfg, progress)
    fid = study.user_attrs.get("fidelity")
    objectives = objective_directions(cfg)
    constraints = search_constraints(cfg, metric_names(cfg))
    skip = (metric_constraint_indices(constraints, metric_names(cfg))  # not judged below the top rung
            if fid and fid.get("lower_rung_metric") == "relaxed" else frozenset())
    target = cfg.search.n_trials
    max_failed = cfg.search.max_failed_trials or target
    poll = min(cfg.search.heartbeat_interval, 5.0)

    def objective(trial: optuna.Trial) -> list[float]:
        # Budget check against other workers: only the `target` lowest-numbered live trials may run (with rungs:
        # of the sampler's trials; promotions are extra).
        live = sorted(t.number for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
                      if _counts_towards_target(t, fid))
        if trial.number in live and live.index(trial.number) >= target:
            trial.set_user_attr("state", "surplus")
            trial.set_user_attr("reason", "the study already had enough trials when this one started")
            raise optuna.TrialPruned()
        if fid and (twin := duplicate_of(study, trial.number, trial.user_attrs.get("promoted_from"))) is not None:
            trial.set_user_attr("state", "duplicate")
            trial.set_user_attr("reason", f"trial {twin} already promotes trial {trial.user_attrs['promoted_from']}")
            raise optuna.TrialPruned()
        with _Heartbeat(study, trial._trial_id, cfg.search.heartbeat_interval):
            try:
                return run_trial(trial, ctx, space, cfg, objectives, constraints, workers)
            except TrainingDiverged as exc:
                trial.set_user_attr("state", "diverged")
                trial.set_user_attr("reason", str(exc))
                raise
            except Exception as exc:
                trial.set_user_attr("state", "failed")
                trial.set_user_attr("reason", f"{type(exc).__name__}: {exc}")
                trial.set_user_attr("traceback", traceback.format_exc(limit=8))
                raise

    while True:
        reap_stale_trials(study, cfg.search.grace_period)
        c = _counts(study, fid)
        if fid and c["waiting"] == 0 and promote_next(study, len(fid["rows"]), fid["reduction"], skip) is not None:
            c = _counts(study, fid)  # a promotion is waiting now: it runs before any new trial
        if c["complete"] >= target and (not fid or (c["waiting"] == 0 and c["running_all"] == 0)):
            break
        if fid and c["complete"] >= target and c["waiting"] == 0:
            time.sleep(poll)  # promotions of other workers' trials may follow when they finish
            continue
        if c["failed"] >= max_failed:
            raise SearchError(f"{c['failed']} trials failed (search.max_failed_trials={max_failed}); see "
                              f"`compress status {cfg.run_dir}` for their reasons")
        if c["complete"] + c["running"] >= target and c["waiting"] == 0:
            time.sleep(poll)  # the rest is running elsewhere: wait for it to finish (or be found dead)
            continue
        study.optimize(objective, n_trials=1, catch=(Exception,), gc_after_trial=True)
        last = study.get_trials(deepcopy=False)[-1]
        _log_trial(last, c["complete"] + (1 if last.state == TrialState.COMPLETE else 0), target)
        write_outputs(cfg, study)
    write_outputs(cfg, study)
    last = workers <= 1 if heldout is None else heldout  # this process finishes the study
    if last and needs_confirmation(cfg, study):
        confirm_and_report(cfg, study, ctx.data)
    if last:
        _promote(cfg, study)
    if last and cfg.data.has_test:
        heldout_and_report(cfg, study, ctx.data)


def _promote(cfg: JobConfig, study: optuna.Study) -> None:
    """search.fidelity.promote_top: the best K frontier points retrained on all rows (compress.search.promote), once
    per study; nothing when it is 0."""
    if not cfg.search.fidelity.promote_top or study.user_attrs.get("promotion"):
        return
    from .promote import promote_frontier  # NOTE: here: promote imports this module's deploy_model

    doc = promote_frontier(cfg, cfg.search.fidelity.promote_top, progress=False)
    write_outputs(cfg, study)
    print(f"promoted {len(doc['points'])} frontier points to all {doc['train_rows']:,} training rows; promoted "
          f"frontier {doc['frontier']} (RUN/promoted.json)", flush=True)


def confirm_and_report(cfg: JobConfig, study: optuna.Study, data=None) -> dict[str, Any]:
    """The confirmation pass (compress.search.confirm), frontier.json written again from it, and what it found."""
    print(f"confirming the frontier: {len(confirm_candidates(cfg, study))} trials and the teacher timed again "
          f"together, {cfg.search.confirm.rounds} interleaved rounds ...", flush=True)
    doc = confirm_study(cfg, study, data)
    write_outputs(cfg, study)
    for n, rec in sorted(doc["trials"].items(), key=lambda kv: int(kv[0])):
        was = rec["in_study"]
        print(f"  trial {n}: {with_interval(rec['latency_ms'], rec['latency_ci95_ms'])} ms (in study "
              f"{(was.get('latency_ms') or float('nan')):.2f}), ratio to teacher "
              f"{with_interval(rec['latency_ratio'], rec['latency_ratio_ci95'], '.3f')}", flush=True)
    b, a = doc["before"], doc["after"]
    print(f"frontier {b['frontier']} -> {a['frontier']} after confirmation"
          + (f"; ties {doc['ties']}" if doc["ties"] else "")
          + (f"; the teacher's rounds never settled (spread {doc['spread']:.2f}): the machine was busy"
             if doc["contended"] else ""), flush=True)
    moved = {k: (b["picks"][k], a["picks"][k]) for k in a["picks"] if b["picks"].get(k) != a["picks"][k]}
    if moved:
        print("scenario picks changed: " + ", ".join(f"{k} trial {x} -> {y}" for k, (x, y) in moved.items()),
              flush=True)
    return doc


def heldout_and_report(cfg: JobConfig, study: optuna.Study, data=None) -> None:
    """The held-out test figures, once the search is over; frontier.json is written again to carry them."""
    res = evaluate_heldout(cfg, study, data)
    write_outputs(cfg, study)
    metric = cfg.task.primary_metric
    named = ([("teacher", res["teacher"])] if res.get("teacher") else []) + \
        [(f"trial {n}", r) for n, r in sorted(res.get("trials", {}).items())] + \
        [(f"trial {n} promoted", r) for n, r in sorted(res.get("promoted", {}).items())]
    for who, rec in named:
        print(f"held-out test: {who} {metric} {rec['metrics'].get(metric, float('nan')):.4f} ({rec['method']})",
              flush=True)


def _log_trial(t: FrozenTrial, done: int, target: int) -> None:
    state = t.user_attrs.get("state", t.state.name.lower())
    if t.state == TrialState.COMPLETE:
        meas = t.user_attrs.get("measures", {})
        metric = t.user_attrs.get("metric")
        print(f"trial {t.number} [{done}/{target}] {state}{' (baseline)' if t.user_attrs.get('baseline') else ''}: "
              f"{metric} {t.user_attrs['metrics'].get(metric, float('nan')):.4f}, {meas.get('params', 0):,} params, "
              f"{meas.get('latency_ms', float('nan')):.2f} ms, feasible={t.user_attrs.get('feasible')}", flush=True)
    else:
        print(f"trial {t.number} [{done}/{target}] {state}: {t.user_attrs.get('reason', '')}", flush=True)


def run_search(cfg: JobConfig, config_path: str, workers: int = 1) -> None:
    """Run the study with `workers` processes on this machine (each a `compress search --worker`)."""
    if workers <= 1:
        run_worker(cfg)
        return
    prepare_search(cfg)  # caches, study and baseline exist before the workers start
    slots = plan_workers(cfg.distill.train.device, workers, cfg.threads)
    for slot in slots:
        print(slot.describe(), flush=True)
    procs = [subprocess.Popen([sys.executable, "-m", "compress", "search", config_path, "--worker",
                               "--threads", str(slot.threads), "--workers-hint", str(workers)],
                              env={**os.environ, **slot.env})
             for slot in slots]
    codes = [p.wait() for p in procs]
    if any(codes):
        raise SearchError(f"worker exit codes {codes}; the study keeps every finished trial: run the same "
                          "command again to resume")
    study = open_study(cfg, create=False)
    write_outputs(cfg, study)
    if needs_confirmation(cfg, study):  # once, after every worker: no training shares the cores any more
        confirm_and_report(cfg, study)
    _promote(cfg, study)
    if cfg.data.has_test:  # once, after every worker: the frontier is final now
        heldout_and_report(cfg, study)

