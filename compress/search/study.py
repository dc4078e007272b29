"""The Optuna study: one trial builds, distills, evaluates, exports and measures a student; measured
latency and size feed back as objectives, thresholds as constraints. Resumable, with parallel workers.

Early stopping rule (Optuna does not prune multi-objective studies, so it is built here): at an evaluation
after at least `min_fraction` of a trial's steps, for each threshold on the task metric `metric >= t`
(or `>`), the trial is hopeless when `metric < t - margin` (margin: `early_stopping.margin`, default 10% of
|t|). It stops there, is still exported and measured (its size and latency inform the sampler), and is
recorded as infeasible with the reason.

Killed workers: every running trial writes a heartbeat (a timestamp user attribute) every
`heartbeat_interval` seconds. Any worker that finds a running trial silent for `grace_period` marks it
failed and enqueues a copy with the same parameters, exactly once (the state change succeeds for one
worker only). Only completed trials count towards `n_trials`.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import socket
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from ..artifacts import atomic_write, write_json
from ..config import JobConfig, to_dict
from ..distill.loop import StopTraining, TrainingDiverged
from .space import SearchSpace

log = logging.getLogger(__name__)

__all__ = [
    "Constraint", "SearchError", "baseline_trial", "frontier", "open_study", "parse_constraint", "run_search",
    "run_worker", "study_summary", "trial_record", "write_outputs",
]

MEASURES = ("params", "latency_ms", "size_mb")  # minimised; the task metric is maximised


class SearchError(RuntimeError):
    """The study cannot go on (storage unreachable, too many failed trials); the message says why."""


# ----------------------------------------------------------------------------------------------
# Objectives and constraints


@dataclass(frozen=True)
class Constraint:
    """`name op value`; Optuna's convention: the trial is feasible when every constraint value is <= 0."""

    name: str
    op: str
    value: float

    def violation(self, measured: float) -> float:
        """How far `measured` is outside the bound (> 0), or inside it (<= 0)."""
        v = self.value - measured if self.op in (">=", ">") else measured - self.value
        if v == 0 and self.op in (">", "<"):
            return 1e-12  # a strict bound is not met on the bound itself
        return v

    def __str__(self) -> str:
        return f"{self.name} {self.op} {self.value:g}"


_CONSTRAINT = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(>=|<=|>|<)\s*([-+0-9.eE]+)\s*$")


def parse_constraint(text: str, allowed: set[str]) -> Constraint:
    m = _CONSTRAINT.match(text)
    if not m:
        raise SearchError(f"search.constraints: {text!r} is not of the form 'NAME >= VALUE' (or <=, >, <)")
    name, op, value = m.group(1), m.group(2), float(m.group(3))
    if name not in allowed:
        raise SearchError(f"search.constraints: {text!r} names {name!r}; measured names are {sorted(allowed)}")
    return Constraint(name, op, value)


def _objectives(cfg: JobConfig) -> list[tuple[str, str]]:
    """(name, direction) per objective; 'metric' stands for the task's primary metric."""
    metric = cfg.task.primary_metric
    out = []
    for name in cfg.search.objectives:
        name = metric if name == "metric" else name
        if name in MEASURES:
            out.append((name, "minimize"))
        elif name == metric:
            out.append((name, "maximize"))
        else:
            raise SearchError(
                f"search.objectives: {name!r} is not an objective; choose from metric ({metric}), "
                f"{', '.join(MEASURES)}"
            )
    if len({n for n, _ in out}) != len(out):
        raise SearchError(f"search.objectives lists an objective twice: {list(cfg.search.objectives)}")
    return out


def _constraints(cfg: JobConfig, metric_names: set[str]) -> list[Constraint]:
    return [parse_constraint(c, metric_names | set(MEASURES)) for c in cfg.search.constraints]


def _metric_names(cfg: JobConfig) -> set[str]:
    return {
        "classification": {"accuracy", "f1", "mcc"}, "pair_classification": {"accuracy", "f1", "mcc"},
        "regression": {"pearson", "spearman", "mse"},
        "qa": {"exact", "f1", "HasAns_exact", "HasAns_f1", "NoAns_exact", "NoAns_f1", "best_exact", "best_f1",
               "no_answer_rate"},
    }[cfg.task.type]


# ----------------------------------------------------------------------------------------------
# Storage and study


def storage_url(cfg: JobConfig) -> str:
    return cfg.search.storage or f"sqlite:///{(cfg.run_dir / 'study.db').resolve()}"


def _storage(cfg: JobConfig) -> optuna.storages.BaseStorage:
    url = storage_url(cfg)
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend

        path = Path(url[len("journal:"):])
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        # NOTE: several worker processes write one SQLite file; wait for the lock instead of failing.
        return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})
    try:
        return optuna.storages.RDBStorage(url)
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy raises many kinds; all mean "cannot use it"
        raise SearchError(f"cannot open the study storage {url!r}: {exc}. Check search.storage "
                          "(an SQLAlchemy URL such as postgresql://user@host/db, or journal:PATH)") from None


def _sampler(cfg: JobConfig, space: SearchSpace) -> optuna.samplers.BaseSampler:
    s, seed = cfg.search.sampler, cfg.search.seed
    if s == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True,
                                          n_startup_trials=min(10, max(2, cfg.search.n_trials // 3)))
    if s == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, min(50, cfg.search.n_trials // 3)))
    if s == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=min(10, max(2, cfg.search.n_trials // 3)))
    if s == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.GridSampler(space.grid(), seed=seed)


def open_study(cfg: JobConfig, space: SearchSpace | None = None, create: bool = True) -> optuna.Study:
    """Create or load the job's study (same name and storage resumes it)."""
    directions = [d for _, d in _objectives(cfg)]
    name = cfg.search.study_name or cfg.name
    storage = _storage(cfg)
    sampler = _sampler(cfg, space) if space is not None else None
    if not create:
        try:
            return optuna.load_study(study_name=name, storage=storage, sampler=sampler)
        except KeyError:
            raise SearchError(f"no study {name!r} in {storage_url(cfg)}; run `compress search CONFIG` first") from None
    study = optuna.create_study(study_name=name, storage=storage, sampler=sampler, directions=directions,
                                load_if_exists=True)
    if list(study.directions) != [optuna.study.StudyDirection[d.upper()] for d in directions]:
        raise SearchError(f"study {name!r} in {storage_url(cfg)} was created with other objectives; "
                          "use a new study_name or the original objectives")
    study.set_user_attr("objectives", [n for n, _ in _objectives(cfg)])
    return study


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
        attrs = {k: v for k, v in t.user_attrs.items() if k in ("baseline",)}
        study.enqueue_trial(t.params, user_attrs={**attrs, "retry_of": t.number})
        log.warning("trial %d lost its worker; enqueued a re-run with the same parameters", t.number)
        reaped.append(t.number)
    return reaped


# ----------------------------------------------------------------------------------------------
# One trial


def _early_stopper(cfg: JobConfig, constraints: list[Constraint]):
    es = cfg.search.early_stopping
    metric_limits = [c for c in constraints if c.op in (">=", ">") and c.name in _metric_names(cfg)]
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


def _measure_teacher(ctx, cfg: JobConfig) -> dict[str, Any]:
    """Teacher's latency and size with the trials' protocol, measured once per run."""
    from ..deploy.export import export_onnx

    path = cfg.run_dir / "cache" / "teacher-measures.json"
    if path.exists():
        return json.loads(path.read_text())
    out = cfg.run_dir / "teacher_onnx"
    exported = export_onnx(ctx.teacher_dir, out, cfg.task.type, sample=_sample(ctx), atol=cfg.search.export_atol)
    lat = latency(exported.path, ctx.data.eval, cfg)
    rec = {"params": ctx.teacher_metrics.get("params"), "latency_ms": lat["median_ms"],
           "latency_p90_ms": lat["p90_ms"], "size_mb": exported.size_bytes / 1e6, "latency_method": lat,
           "metric": ctx.teacher_metrics.get(cfg.task.primary_metric), "metrics": ctx.teacher_metrics}
    write_json(path, rec)
    return rec


def _sample(ctx) -> dict[str, np.ndarray]:
    b = ctx.data.eval.batch(np.arange(min(8, len(ctx.data.eval))), labels=False)
    return {k: v.numpy() for k, v in b.items()}


def latency(onnx_path: Path, eval_split, cfg: JobConfig) -> dict[str, Any]:
    """The search's latency protocol (search.latency) on one ONNX file; eval_split gives the real lengths."""
    from ..deploy.measure import eval_length_batches, onnx_latency

    lc = cfg.search.latency
    inputs = None
    if lc.seq_len == "eval":
        inputs = eval_length_batches(eval_split, lc.batch_size, limit=max(lc.repeats, 16), seed=0)
    return onnx_latency(onnx_path, batch_size=lc.batch_size, seq_len=None if inputs else lc.seq_len,
                        threads=lc.threads, warmup=lc.warmup, repeats=lc.repeats, inputs=inputs)


def run_trial(trial: optuna.Trial, ctx, space: SearchSpace, cfg: JobConfig, objectives, constraints,
              workers: int = 1) -> list[float]:
    """Build, distill, evaluate, export (validated), measure; everything lands on the trial and its folder."""
    from ..deploy.export import export_onnx
    from ..distill.jobs import distill_student

    t_start = time.perf_counter()
    values = space.suggest(trial)
    spec, distill = space.settings(values)
    trial_dir = cfg.run_dir / "trials" / str(trial.number)
    trial.set_user_attr("dir", str(trial_dir))
    trial.set_user_attr("spec", spec.to_json())
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    trial.set_user_attr("state", "running")
    if cfg.finetune == "agora":  # Θ supplies learning rate, weight decay, warm-up and seed; no early stopping
        from ..distill.agora import run_agora

        run_agora(ctx, spec, trial_dir / "model", distill=distill, progress=False)
        m = json.loads((trial_dir / "model" / "metrics.json").read_text())
        m["train_seconds"], m["eval_seconds"] = m["wall_seconds"], 0.0  # every θ and iteration, evaluation included
    else:
        m = distill_student(ctx, spec, trial_dir / "model", distill=distill, progress=False,
                            on_eval=_early_stopper(cfg, constraints))
    t_distilled = time.perf_counter()

    t0 = time.perf_counter()
    exported = export_onnx(trial_dir / "model", trial_dir / "onnx", cfg.task.type, sample=_sample(ctx),
                           atol=cfg.search.export_atol)
    t_export = time.perf_counter() - t0
    precision = space.precision(values)
    deployed, size_bytes, metrics = exported.path, exported.size_bytes, m["metrics"]
    metric_source = "PyTorch on the full eval split; the fp32 ONNX file matches it within search.export_atol"
    t_variant = 0.0
    if precision != "fp32":
        from ..model.inference import evaluate_onnx
        from ..deploy.variants import make_variant, variant_dir

        t0 = time.perf_counter()
        variant = make_variant(trial_dir / "onnx", variant_dir(trial_dir, precision), precision,
                               cfg.search.export_atol)
        metrics, _ = evaluate_onnx(variant.path, ctx.data, threads=cfg.search.latency.threads)
        deployed, size_bytes = variant.path, variant.size_bytes
        metric_source = f"ONNX Runtime on the {precision} variant ({variant.path}), full eval split"
        trial.set_user_attr("variant", variant.to_json())
        t_variant = time.perf_counter() - t0
    t0 = time.perf_counter()
    lat = latency(deployed, ctx.data.eval, cfg)
    lat["concurrent_workers"] = workers
    t_measure = time.perf_counter() - t0

    metric_name = cfg.task.primary_metric
    measured = {**{k: v for k, v in metrics.items() if isinstance(v, (int, float))},
                "params": m["params"], "latency_ms": lat["median_ms"], "latency_p90_ms": lat["p90_ms"],
                "size_mb": size_bytes / 1e6}
    violations = [c.violation(measured[c.name]) for c in constraints]
    stopped = m.get("stopped")
    if stopped:  # infeasible by rule: a positive violation even when no metric threshold is configured
        violations = [max(v, 1e-9) for v in violations] or [1.0]
    feasible = all(v <= 0 for v in violations)
    names = [str(c) for c in constraints] or ["early_stopped"]
    for name, v in zip(names, violations):
        trial.set_constraint(name, float(v))  # samplers learn the infeasible region from these
    timings = {"distill_s": m["train_seconds"], "evaluate_s": m["eval_seconds"],
               "export_s": round(t_export, 2), "variant_s": round(t_variant, 2), "measure_s": round(t_measure, 2),
               "build_and_io_s": round(t_distilled - t_start - m["train_seconds"] - m["eval_seconds"], 2),
               "total_s": round(time.perf_counter() - t_start, 2)}
    record = {
        "state": "stopped" if stopped else "complete", "feasible": feasible, "reason": stopped or "",
        "metric": metric_name, "metrics": metrics, "measures": {k: measured[k] for k in MEASURES},
        "metric_source": metric_source, "precision": precision,
        "pytorch_metrics": m["metrics"],
        "latency_p90_ms": lat["p90_ms"], "latency_method": lat, "onnx": str(deployed), "onnx_fp32": str(exported.path),
        "onnx_max_abs_diff": exported.max_abs_diff, "timings": timings, "distill": to_dict(distill),
        "steps": m["steps"], "total_steps": m.get("total_steps", m["steps"]),
        "constraints": violations, "constraint_names": names,
    }
    for k, v in record.items():
        trial.set_user_attr(k, v)
    (trial_dir / "trial.json").write_text(json.dumps({"number": trial.number, "params": trial.params, **record},
                                                     indent=2, default=str))
    return [measured[name] for name, _ in objectives]


# ----------------------------------------------------------------------------------------------
# Workers


def _counts(study: optuna.Study) -> dict[str, int]:
    c = {"complete": 0, "running": 0, "waiting": 0, "failed": 0, "pruned": 0}
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.COMPLETE:
            c["complete"] += 1
        elif t.state == TrialState.RUNNING:
            c["running"] += 1
        elif t.state == TrialState.WAITING:
            c["waiting"] += 1
        elif t.state == TrialState.FAIL and t.user_attrs.get("state") != "lost":
            c["failed"] += 1
        elif t.state == TrialState.PRUNED:
            c["pruned"] += 1
    return c


def _enqueue_baseline(study: optuna.Study, space: SearchSpace) -> None:
    if any(t.user_attrs.get("baseline") for t in study.get_trials(deepcopy=False)):
        return
    study.enqueue_trial(space.baseline_values(), user_attrs={"baseline": True})


def prepare_search(cfg: JobConfig, progress: bool = True):
    """Everything trials share, made once: teacher outputs and importance, the study, the baseline, the
    teacher's measurements. Done before workers start, so they find it all cached instead of racing."""
    from ..distill.jobs import load_context

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    ctx = load_context(cfg, progress=progress)
    space = SearchSpace.from_config(cfg, ctx.teacher.config)
    _objectives(cfg), _constraints(cfg, _metric_names(cfg))  # refuse bad objectives/constraints up front
    study = open_study(cfg, space)
    if cfg.search.baseline:
        _enqueue_baseline(study, space)
    teacher = _measure_teacher(ctx, cfg)
    study.set_user_attr("teacher", {k: teacher[k] for k in ("metric", "params", "latency_ms", "size_mb")})
    return ctx, space, study


def run_worker(cfg: JobConfig, workers: int = 1, progress: bool = True, heldout: bool | None = None) -> None:
    """Run trials until the study holds `n_trials` completed ones; safe to run on several machines at once.

    Then, when the job has a test split, score the teacher, the baseline and the frontier on it (see
    compress.search.heldout) and write frontier.json again with those figures. `heldout` defaults to on for a lone
    worker and off for the workers `run_search` starts (it scores once, after all of them).
    """
    ctx, space, study = prepare_search(cfg, progress)
    objectives = _objectives(cfg)
    constraints = _constraints(cfg, _metric_names(cfg))
    target = cfg.search.n_trials
    max_failed = cfg.search.max_failed_trials or target
    poll = min(cfg.search.heartbeat_interval, 5.0)

    def objective(trial: optuna.Trial) -> list[float]:
        # Budget check against other workers: only the `target` lowest-numbered live trials may run.
        live = sorted(t.number for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING)))
        if trial.number in live and live.index(trial.number) >= target:
            trial.set_user_attr("state", "surplus")
            trial.set_user_attr("reason", "the study already had enough trials when this one started")
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
        c = _counts(study)
        if c["complete"] >= target:
            break
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
    if (workers <= 1 if heldout is None else heldout) and cfg.data.has_test:
        _heldout(cfg, study, ctx.data)


def _heldout(cfg: JobConfig, study: optuna.Study, data=None) -> None:
    """The held-out test figures, once the search is over; frontier.json is written again to carry them."""
    from .heldout import evaluate_heldout

    res = evaluate_heldout(cfg, study, data)
    write_outputs(cfg, study)
    metric = cfg.task.primary_metric
    named = ([("teacher", res["teacher"])] if res.get("teacher") else []) + \
        [(f"trial {n}", r) for n, r in sorted(res.get("trials", {}).items())]
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
    threads = max(1, (cfg.threads or os.cpu_count() or 1) // workers)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    procs = [subprocess.Popen([sys.executable, "-m", "compress", "search", config_path, "--worker",
                               "--threads", str(threads), "--workers-hint", str(workers)], env=env)
             for _ in range(workers)]
    codes = [p.wait() for p in procs]
    if any(codes):
        raise SearchError(f"worker exit codes {codes}; the study keeps every finished trial: run the same "
                          "command again to resume")
    study = open_study(cfg, create=False)
    write_outputs(cfg, study)
    if cfg.data.has_test:  # once, after every worker: the frontier is final now
        _heldout(cfg, study)


# ----------------------------------------------------------------------------------------------
# Outputs: frontier.json and trials.csv


def trial_record(t: FrozenTrial, objectives: list[str]) -> dict[str, Any]:
    ua = t.user_attrs
    state = ua.get("state") or t.state.name.lower()
    if t.state == TrialState.RUNNING:
        state = "running"
    elif t.state == TrialState.WAITING:
        state = "waiting"
    meas = ua.get("measures", {})
    metric = ua.get("metric")
    return {
        "number": t.number, "state": state, "baseline": bool(ua.get("baseline")), "feasible": ua.get("feasible"),
        "metric": metric, "value": ua.get("metrics", {}).get(metric) if metric else None,
        **{k: meas.get(k) for k in MEASURES}, "latency_p90_ms": ua.get("latency_p90_ms"),
        "objectives": dict(zip(objectives, t.values)) if t.values else None,
        "reason": ua.get("reason", ""), "retry_of": ua.get("retry_of"), "params_searched": t.params,
        "spec": ua.get("spec"), "distill": ua.get("distill"), "timings": ua.get("timings"),
        "steps": ua.get("steps"), "total_steps": ua.get("total_steps"), "dir": ua.get("dir"), "onnx": ua.get("onnx"),
        "precision": ua.get("precision", "fp32"),
        "metrics": ua.get("metrics"), "latency_method": ua.get("latency_method"),
        "started": t.datetime_start.isoformat() if t.datetime_start else None,
        "finished": t.datetime_complete.isoformat() if t.datetime_complete else None,
    }


def _dominates(a: list[float], b: list[float], directions: list[str]) -> bool:
    better = False
    for x, y, d in zip(a, b, directions):
        if d == "maximize":
            x, y = -x, -y
        if x > y:
            return False
        if x < y:
            better = True
    return better


def frontier(study: optuna.Study) -> list[FrozenTrial]:
    """Feasible, completed, non-dominated trials (infeasible and stopped trials never enter)."""
    directions = [d.name.lower() for d in study.directions]
    ok = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
          if t.user_attrs.get("feasible") and t.user_attrs.get("state") == "complete"]
    return [t for t in ok if not any(_dominates(o.values, t.values, directions) for o in ok if o is not t)]


def baseline_trial(study: optuna.Study) -> FrozenTrial | None:
    """The study's completed baseline trial (the first, should a retry have made two), or None."""
    return next((t for t in study.get_trials(deepcopy=False)
                 if t.user_attrs.get("baseline") and t.state == TrialState.COMPLETE), None)


def _test_figures(cfg: JobConfig) -> tuple[dict[str, Any] | None, Any]:
    """With a test split: the "splits", "split_method" and "held_out" entries of frontier.json (from split.json)
    and a reader of cached held-out results (compress.search.heldout; nothing is computed here). (None, None) without."""
    if not cfg.data.has_test:
        return None, None
    from .heldout import CACHE_NAME, heldout_block, read_heldout

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


def write_outputs(cfg: JobConfig, study: optuna.Study) -> tuple[Path, Path]:
    """frontier.json (feasible Pareto set, baseline and teacher) and trials.csv (every trial).

    With a test split, frontier.json also holds "splits" (rows per split) and, for the teacher, the baseline and
    each frontier point already scored by compress.search.heldout, a "test" entry beside the eval metrics.
    """
    objectives = study.user_attrs.get("objectives") or [n for n, _ in _objectives(cfg)]
    directions = [d.name.lower() for d in study.directions]
    trials = study.get_trials(deepcopy=False)
    front = frontier(study)
    baseline = baseline_trial(study)
    splits, read_test = _test_figures(cfg)

    def record(t: FrozenTrial) -> dict[str, Any]:
        rec = trial_record(t, objectives)
        if read_test is not None and (test := read_test(rec.get("onnx"), rec.get("dir"))):
            rec["test"] = test
        return rec

    points = []
    for t in sorted(front, key=lambda t: t.values[0], reverse=directions[0] == "maximize"):
        rec = record(t)
        if baseline is not None and t.number != baseline.number:
            rec["dominates_baseline"] = _dominates(t.values, baseline.values, directions)
        points.append(rec)
    teacher = study.user_attrs.get("teacher")
    if teacher is not None and read_test is not None:
        folder = cfg.run_dir / "teacher_onnx"
        if test := read_test(folder / "model.onnx", folder):
            teacher = {**teacher, "test": test}
    doc = {
        "study": study.study_name, "storage": storage_url(cfg), "objectives": dict(zip(objectives, directions)),
        "constraints": list(cfg.search.constraints), "teacher": teacher,
        "baseline": record(baseline) if baseline else None,
        "frontier": points, "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if splits is not None:
        doc.update(splits)
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    fpath, cpath = cfg.run_dir / "frontier.json", cfg.run_dir / "trials.csv"
    write_json(fpath, doc)
    cols = ["number", "state", "baseline", "feasible", "metric", "value", *MEASURES, "latency_p90_ms", "precision",
            "distill_s", "evaluate_s", "export_s", "variant_s", "measure_s", "total_s", "steps", "total_steps",
            "reason", "params_searched", "dir"]

    def write_csv(tmp: Path) -> None:
        with open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
            w.writeheader()
            for t in trials:
                rec = trial_record(t, objectives)
                rec.update(rec.get("timings") or {})
                rec["params_searched"] = json.dumps(rec["params_searched"])
                w.writerow(rec)

    atomic_write(cpath, write_csv)
    return fpath, cpath


# ----------------------------------------------------------------------------------------------
# Status


def study_summary(cfg: JobConfig, study: optuna.Study | None = None) -> dict[str, Any]:
    """What `compress status` shows: counts by state, feasibility, frontier, time left, warnings. Pass `study`
    when it is already open."""
    study = study if study is not None else open_study(cfg, create=False)
    objectives = study.user_attrs.get("objectives") or [n for n, _ in _objectives(cfg)]
    trials = study.get_trials(deepcopy=False)
    recs = [trial_record(t, objectives) for t in trials]
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
    return {
        "study": study.study_name, "storage": storage_url(cfg), "target": cfg.search.n_trials,
        "by_state": by_state, "completed": len(done), "feasible": len(feasible),
        "frontier": [trial_record(t, objectives) for t in frontier(study)],
        "eta_seconds": eta, "early_stopping_saved_seconds": round(saved, 1),
        "teacher": study.user_attrs.get("teacher"), "warnings": warnings,
    }

