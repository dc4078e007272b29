"""Full-data promotion: the frontier found on a training budget, retrained on every training row and measured again.

`promote_frontier(cfg, top)` (`compress promote RUN --top K`, and at the end of a search with
`search.fidelity.promote_top`) takes the frontier's points (best first by the first objective, at most K),
distills each again from the same teacher with the trial's own architecture and settings on the whole
training split for the configured epochs, exports and checks it, makes its searched precision, scores it on
the eval split, and then times all of them and the teacher together, interleaved, under the measurement lock
(the confirmation pass's protocol). Each is checkpointed as it trains and its result is written when it is
done (RUN/promoted/<trial>/), so a rerun after a kill resumes the one it was training and skips the finished
ones. The promoted frontier (dominance with intervals among the promoted points) and every point's
low-budget figures beside its promoted ones go to RUN/promoted.json, the study's user attribute `promotion`,
frontier.json and the report.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import optuna

from ..artifacts import write_json
from ..config import JobConfig
from ..deploy.latency import measure_interleaved
from ..deploy.measure_lock import lock_dir_for, measuring
from ..distill.jobs import load_context
from .intervals import dominates_with_intervals
from .confirm import confirm_protocol
from .objectives import SearchError, objective_directions, teacher_reference
from .pareto import frontier, record_values, study_records
from .space import SearchSpace
from .storage import open_study

__all__ = ["promote_frontier", "promotion_candidates"]


def promotion_candidates(cfg: JobConfig, study: optuna.Study, top: int | None) -> list[optuna.trial.FrozenTrial]:
    """The frontier's points, best first by the first objective; the first `top` of them (all with None)."""
    directions = [d.name.lower() for d in study.directions]
    front = sorted(frontier(study), key=lambda t: t.values[0], reverse=directions[0] == "maximize")
    if top is not None:
        if top < 1:
            raise SearchError(f"--top {top}: promote at least one frontier point")
        front = front[:top]
    return front


def _train_one(ctx, cfg: JobConfig, space: SearchSpace, t, folder: Path, progress: bool) -> dict[str, Any]:
    """Retrain, export and score one frontier point on all training rows; resumable (result.json when done)."""
    from .study import deploy_model, train_student  # NOTE: here: study imports this module at the end of a search

    done = folder / "result.json"
    if done.is_file():
        return json.loads(done.read_text())
    spec, distill = space.settings(t.params)
    if not distill.train.checkpoint_every:  # a full-data run is long: checkpoint it (the results do not change)
        distill = dataclasses.replace(distill, train=dataclasses.replace(distill.train, checkpoint_every=200))
    t0 = time.perf_counter()
    m = train_student(ctx, cfg, spec, distill, folder / "model", progress=progress)  # as the trial was trained
    precision = t.user_attrs.get("precision", "fp32")
    dep = deploy_model(ctx, cfg, folder, precision, m["metrics"])
    metric = cfg.task.primary_metric
    rec = {"trial": t.number, "dir": str(folder), "onnx": str(dep["deployed"]), "precision": precision,
           "metrics": {k: v for k, v in dep["metrics"].items() if isinstance(v, (int, float))},
           "value": dep["metrics"].get(metric), "metric_source": dep["metric_source"],
           "params": m["params"], "size_mb": dep["size_bytes"] / 1e6, "train_rows": len(ctx.data.train),
           "steps": m["steps"], "rows_seen": m["steps"] * distill.train.batch_size,
           "epochs": distill.train.epochs if distill.train.max_steps is None else None,
           "train_seconds": m["train_seconds"], "wall_seconds": round(time.perf_counter() - t0, 1)}
    write_json(done, rec)
    return rec


def _promoted_front(points: list[dict[str, Any]], objectives: list[str], directions: list[str]) -> list[int]:
    """Dominance with intervals among the promoted points (pareto.record_values gives each figure its interval)."""
    vals = {p["trial"]: record_values(p, objectives, [p[name] for name in objectives]) for p in points}
    return sorted(n for n, v in vals.items() if not any(dominates_with_intervals(w, v, directions)
                                                        for o, w in vals.items() if o != n))


def promote_frontier(cfg: JobConfig, top: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Retrain the frontier (or its best `top` points) on all training rows and measure it again; see the module."""
    study = open_study(cfg, create=False)
    cands = promotion_candidates(cfg, study, top)
    if not cands:
        raise SearchError(f"the study in {cfg.run_dir} has no frontier yet: nothing to promote")
    ctx = load_context(cfg, progress=progress)
    space = SearchSpace.from_config(cfg, ctx.teacher.config)
    objectives = study.user_attrs.get("objectives") or [n for n, _ in objective_directions(cfg)]
    directions = [d.name.lower() for d in study.directions]
    recs = {r["number"]: r for r in study_records(study, objectives)}
    root = cfg.run_dir / "promoted"
    trained = []
    for i, t in enumerate(cands):
        print(f"promoting trial {t.number} ({i + 1}/{len(cands)}): training on all {len(ctx.data.train):,} rows "
              f"(it had {recs[t.number].get('train_rows') or len(ctx.data.train):,})", flush=True)
        trained.append(_train_one(ctx, cfg, space, t, root / str(t.number), progress))

    # Timed together with the teacher, as the confirmation pass does.
    settings, inputs = confirm_protocol(cfg, ctx.data.eval)
    models = {"teacher": teacher_reference(cfg)} | {f"trial {p['trial']}": Path(p["onnx"]) for p in trained}
    with measuring(lock_dir_for(cfg.run_dir)) as hold:
        res = measure_interleaved(models, "teacher", inputs, settings)
    points = []
    for p in trained:
        name = f"trial {p['trial']}"
        lat, ratio = res["models"][name], res["ratios"][name]
        low = recs[p["trial"]]
        point = {**p, "latency_ms": lat["median_ms"], "latency_ci95_ms": lat["ci95_ms"],
                 "latency_ratio": ratio["median"], "latency_ratio_ci95": ratio["ci95"],
                 "low_budget": {k: low.get(k) for k in ("value", "params", "latency_ms", "latency_ci95_ms",
                                                        "latency_ratio", "latency_ratio_ci95", "size_mb",
                                                        "train_rows", "rung", "latency_source")}}
        point["metric"] = point["value"]
        for name in objectives:  # e.g. throughput: not measured again here, the trial's own figure stays
            if name in point["metrics"] and name not in point:
                point[name] = point["metrics"][name]  # the task metric by its name (accuracy, f1, ...)
            elif name not in point:
                point[name] = low.get(name)
                point.setdefault("from_low_budget", []).append(name)
        points.append(point)
    front = _promoted_front(points, objectives, directions)
    doc = {"at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "train_rows": len(ctx.data.train), "points": points,
           "frontier": front, "candidates": [t.number for t in cands],
           "teacher": {"latency_ms": res["models"]["teacher"]["median_ms"],
                       "latency_ci95_ms": res["models"]["teacher"]["ci95_ms"]},
           "method": {k: res[k] for k in ("rounds", "calls_per_round", "order", "spread", "retries", "contended")}
           | {"lock_wait_s": round(hold.waited_s, 3), "thread_pinning": res.get("thread_pinning")},
           "rule": "each frontier point distilled again with its own architecture and settings on every training "
                   "row, exported, scored on the eval split and timed with the teacher, interleaved; the promoted "
                   "frontier is dominance with intervals among the promoted points"}
    write_json(cfg.run_dir / "promoted.json", doc)
    study.set_user_attr("promotion", {k: doc[k] for k in ("at", "train_rows", "frontier", "candidates")}
                        | {"points": [{k: p[k] for k in ("trial", "value", "metrics", "params", "latency_ms",
                                                         "latency_ci95_ms", "latency_ratio", "latency_ratio_ci95",
                                                         "size_mb", "onnx", "dir", "train_rows", "rows_seen",
                                                         "low_budget")} for p in points]})
    return doc
