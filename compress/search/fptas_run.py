"""`compress fptas`: rank the candidate grid by the W-coefficient (compress/search/fptas.py) and distill the top k
fully, or every candidate with --calibrate. Writes RUN/fptas/ (ranking.json, ranking.md, and with --calibrate
calibration.md and calibration.png).

Each candidate's surrogate result and full distillation are stored in its folder with a hash of their inputs, so
a rerun after an interruption (or with another alpha) reuses them instead of training again.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..artifacts import config_hash, write_json
from ..deploy.export import export_onnx
from ..distill.jobs import distill_student, load_context
from ..distill.loop import train
from ..model.inference import predict_logits
from ..model.student import StudentSpec, build_student, param_count
from .fptas import W_DEFINITION, candidate_grid, surrogate_error, w_coefficient
from .fptas_calibration import calibrate, misses
from .fptas_output import calibration_markdown, calibration_png, ranking_markdown
from .objectives import export_sample, latency, measure_teacher, metric_names, search_constraints

__all__ = ["run_fptas"]


def run_fptas(cfg, progress: bool = True) -> dict[str, Any]:
    """Rank the grid by W; distill the top k fully. Writes RUN/fptas/ranking.json and ranking.md."""
    fc = cfg.fptas
    ctx = load_context(cfg, progress=progress)
    data = ctx.data
    head = "qa" if cfg.task.type == "qa" else "classification"
    teacher_measures = measure_teacher(ctx, cfg)
    p_max, i_max = float(teacher_measures["params"]), float(teacher_measures["latency_ms"])
    held = data.eval.subset(min(fc.eval_rows, len(data.eval)))
    t_logits = predict_logits(ctx.teacher, held, task_type=cfg.task.type)
    e_max = surrogate_error(t_logits, t_logits)
    kd = dataclasses.replace(cfg.distill, alpha_ce=1.0, alpha_task=0.0, alpha_hidden=0.0, alpha_attention=0.0,
                             alpha_relations=0.0, temperature=1.0,
                             train=dataclasses.replace(cfg.distill.train, max_steps=fc.steps, eval_every=0))
    out_dir = cfg.run_dir / "fptas"
    out_dir.mkdir(parents=True, exist_ok=True)
    cands = candidate_grid(fc, ctx.teacher.config)
    rows = []
    it = cands
    if progress:
        it = tqdm(cands, desc="fptas candidates", unit="candidate")
    for c in it:
        t0 = time.perf_counter()
        spec = c.spec(ctx.teacher.config)
        folder = out_dir / c.name()
        key = config_hash({"data": cfg.data, "teacher": str(ctx.teacher_dir), "kd": kd, "eval_rows": len(held),
                           "latency": cfg.search.latency, "spec": spec.to_json()})
        row = _cached(folder / "candidate.json", key)  # a rerun after an interruption keeps finished candidates
        if row is None:
            model = build_student(ctx.teacher, spec, ctx.importance)
            p = param_count(model.config, head, data.num_labels)
            built = sum(x.numel() for x in model.parameters())
            if p != built:
                raise RuntimeError(f"candidate {c.name()}: formula {p:,} != built {built:,}")
            torch.manual_seed(kd.train.seed)
            train(model, data, kd.train, kd=kd, teacher_outputs=ctx.outputs, progress=False)
            e = surrogate_error(t_logits, predict_logits(model, held, task_type=cfg.task.type))
            model.save_pretrained(folder / "model")
            ctx.tokenizer.save_pretrained(folder / "model")
            exported = export_onnx(folder / "model", folder / "onnx", cfg.task.type, sample=export_sample(ctx),
                                   atol=cfg.search.export_atol)
            lat = latency(exported.path, data.eval, cfg)
            row = {"candidate": c.name(), "depth": c.depth, "heads": c.heads, "hidden": c.hidden,
                   "intermediate": c.intermediate, "params": p, "inference_ms": lat["median_ms"],
                   "surrogate_error": e, "spec": spec.to_json(), "dir": str(folder),
                   "seconds": round(time.perf_counter() - t0, 1), "latency_method": lat}
            _store(folder / "candidate.json", key, row)
        row["relative_error"] = row["surrogate_error"] / e_max
        row["W"] = w_coefficient(row["params"], row["inference_ms"], row["surrogate_error"], p_max, i_max, e_max,
                                 fc.alpha)
        rows.append(row)
    rows.sort(key=lambda r: -r["W"])
    for rank, r in enumerate(rows, 1):
        r["rank"] = rank
    result = {"definition": W_DEFINITION, "maximum_point": {"params": p_max, "inference_ms": i_max,
                                                            "surrogate_error": e_max},
              "steps": fc.steps, "eval_rows": len(held), "alpha": fc.alpha, "ranking": rows, "distilled": []}
    constraints = search_constraints(cfg, metric_names(cfg))  # search.constraints: checked on the distilled candidates
    to_distill = rows if fc.calibrate else rows[: fc.top_k]
    if progress and fc.calibrate:
        print(f"fptas: calibrating, so all {len(rows)} candidates are distilled fully", flush=True)
    for r in to_distill:
        spec = StudentSpec.from_json(r["spec"])
        key = config_hash({"data": cfg.data, "teacher": str(ctx.teacher_dir), "distill": cfg.distill,
                           "latency": cfg.search.latency, "spec": r["spec"]})
        done = _cached(Path(r["dir"]) / "distilled.json", key)
        if done is None:
            m = distill_student(ctx, spec, Path(r["dir"]) / "distilled", progress=progress)
            exported = export_onnx(Path(r["dir"]) / "distilled", Path(r["dir"]) / "distilled-onnx", cfg.task.type,
                                   sample=export_sample(ctx), atol=cfg.search.export_atol)
            lat = latency(exported.path, data.eval, cfg)
            done = {"candidate": r["candidate"], "metric": m["metric"], "value": m["value"], "params": m["params"],
                    "latency_ms": lat["median_ms"], "size_mb": exported.size_bytes / 1e6,
                    "train_seconds": m["train_seconds"], "dir": str(Path(r["dir"]) / "distilled"),
                    "onnx": str(exported.path), "latency_method": lat}
            _store(Path(r["dir"]) / "distilled.json", key, done)
        missed = misses(constraints, {done["metric"]: done["value"], "params": done["params"],
                                       "latency_ms": done["latency_ms"]})
        result["distilled"].append({**done, "rank": r["rank"], "misses": missed})
    result["constraints"] = [str(cn) for cn in constraints]
    if fc.calibrate:
        cal = calibrate(result, float(ctx.teacher_metrics[cfg.task.primary_metric]), cfg.task.primary_metric,
                        fc.calibration_alphas, constraints)
        result["calibration"] = cal
        (out_dir / "calibration.md").write_text(calibration_markdown(cal) + "\n![calibration](calibration.png)\n")
        calibration_png(cal, out_dir / "calibration.png")
    (out_dir / "ranking.json").write_text(json.dumps(result, indent=2, default=str))
    (out_dir / "ranking.md").write_text(ranking_markdown(result, cfg.task.primary_metric))
    return result


def _cached(path: Path, key: str) -> dict[str, Any] | None:
    """The record stored at `path` when it was made with the same inputs (`key`), else None."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc.get("record") if doc.get("key") == key else None


def _store(path: Path, key: str, record: dict[str, Any]) -> None:
    write_json(path, {"key": key, "record": record})

