"""Optimal subarchitecture extraction, after de Wynter (2020, arXiv:2010.08512) as used for Bort
(de Wynter and Perry, 2020, arXiv:2010.10499): rank candidate architectures by a W-coefficient that trades
parameter size p, inference time i and a surrogate error e against the maximum point (here, the teacher).

Procedure (`run_fptas`):
1. Enumerate the grid of (depth, heads, hidden, intermediate) from the config's `fptas:` section, keeping
   hidden divisible by heads and every size within the teacher's.
2. Build each candidate from the teacher's weights (layers spread evenly; narrower hidden sizes keep the
   teacher's strongest hidden units, see compress.student) and train it for a fixed number of steps on the
   surrogate error: the KL divergence between its output distribution (task logits; start and end for QA) and
   the maximum point's, temperature 1 (the same gradient as their cross-entropy).
3. Measure e: the cross-entropy H(teacher, candidate) on held-out eval rows; p: the analytic parameter count
   (equal to the built model's); i: ONNX Runtime latency of the exported candidate with the search's protocol.
4. Rank by the W-coefficient and hand the top k to full distillation.

The W-coefficient implemented here (`w_coefficient`, a pure function that can be replaced):

    W = (p_max / p) * (i_max / i) / (e / e_max) ** alpha

where p_max, i_max are the teacher's parameters and inference time and e_max = H(teacher, teacher), the
teacher's own entropy on the same rows (the lowest cross-entropy any model can reach against it), so
e / e_max >= 1 measures how far a candidate is from the maximum point. Larger W is better: W grows as a
candidate gets smaller, faster, or closer to the teacher.

NOTE: the paper's exact definition of the W-coefficient could not be checked here (no access to the paper
offline); this is our own scalarisation with the properties the papers describe (relative to the maximum
point; rewards small p and i, penalises error). Every output of `compress fptas` says so.
"""

from __future__ import annotations

import itertools
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["W_DEFINITION", "Candidate", "candidate_grid", "run_fptas", "surrogate_error", "w_coefficient"]

W_DEFINITION = ("W = (p_max / p) * (i_max / i) / (e / e_max) ** alpha; e = H(teacher, candidate) on held-out rows, "
                "e_max = H(teacher, teacher). Our definition: the paper's exact formula could not be checked offline.")


def w_coefficient(p: float, i: float, e: float, p_max: float, i_max: float, e_max: float, alpha: float = 1.0) -> float:
    """Larger is better: smaller p, faster i and lower surrogate error e, each relative to the maximum point."""
    if min(p, i, e, p_max, i_max, e_max) <= 0 or not all(map(math.isfinite, (p, i, e, p_max, i_max, e_max))):
        raise ValueError(f"w_coefficient needs positive finite values; got p={p}, i={i}, e={e}, p_max={p_max}, "
                         f"i_max={i_max}, e_max={e_max}")
    return (p_max / p) * (i_max / i) / (e / e_max) ** alpha


def surrogate_error(teacher_logits: dict[str, np.ndarray], student_logits: dict[str, np.ndarray]) -> float:
    """Mean cross-entropy H(softmax(teacher), softmax(student)) over rows, averaged over the outputs (start and
    end for QA). Padding positions carry -1e4 logits on both sides and so no probability."""
    total = []
    for name, t in teacher_logits.items():
        s = student_logits[name].astype(np.float64)
        t = t.astype(np.float64)
        if t.ndim == 1 or t.shape[-1] == 1:  # regression: squared error against the teacher's value
            total.append(float(np.mean((s.reshape(-1) - t.reshape(-1)) ** 2)) + 1e-12)
            continue
        pt = np.exp(t - t.max(axis=-1, keepdims=True))
        pt /= pt.sum(axis=-1, keepdims=True)
        log_ps = s - s.max(axis=-1, keepdims=True)
        log_ps -= np.log(np.exp(log_ps).sum(axis=-1, keepdims=True))
        total.append(float(-(pt * log_ps).sum(axis=-1).mean()))
    return float(np.mean(total))


@dataclass(frozen=True)
class Candidate:
    depth: int
    heads: int
    hidden: int
    intermediate: int

    def spec(self, teacher_config):
        from .student import StudentSpec

        # hidden_size set: BERT semantics, the heads split the width evenly (see compress.student)
        return StudentSpec(num_layers=self.depth, heads=self.heads, intermediate_size=self.intermediate,
                           hidden_size=self.hidden)

    def name(self) -> str:
        return f"L{self.depth}-A{self.heads}-H{self.hidden}-I{self.intermediate}"


def candidate_grid(fc, teacher_config) -> list[Candidate]:
    """Every (depth, heads, hidden, intermediate) of the grid that the teacher can supply."""
    t = teacher_config
    out = []
    for d, a, h, i in itertools.product(fc.depths, fc.heads, fc.hidden_sizes, fc.intermediate_sizes):
        if h % a or d > t.num_hidden_layers or h > t.hidden_size or i > t.intermediate_size or a > t.num_attention_heads:
            continue
        out.append(Candidate(d, a, h, i))
    if not out:
        raise ValueError(f"the fptas grid {fc} has no candidate the teacher can supply (depth <= "
                         f"{t.num_hidden_layers}, heads <= {t.num_attention_heads}, hidden <= {t.hidden_size} and "
                         f"divisible by heads, intermediate <= {t.intermediate_size})")
    return out


def run_fptas(cfg, progress: bool = True) -> dict[str, Any]:
    """Rank the grid by W; distill the top k fully. Writes RUN/fptas/ranking.json and ranking.md."""
    import dataclasses

    import torch

    from .distill import train
    from .export import export_onnx
    from .inference import predict_logits
    from .pipeline import distill_student, load_context
    from .student import build_student, param_count
    from .study import _measure_teacher, _sample, latency

    fc = cfg.fptas
    ctx = load_context(cfg, progress=progress)
    data = ctx.data
    head = "qa" if cfg.task.type == "qa" else "classification"
    teacher_measures = _measure_teacher(ctx, cfg)
    p_max, i_max = float(teacher_measures["params"]), float(teacher_measures["latency_ms"])
    held = data.eval.subset(min(fc.eval_rows, len(data.eval)))
    t_logits = predict_logits(ctx.teacher, held, task_type=cfg.task.type)
    e_max = surrogate_error(t_logits, t_logits)
    kd = dataclasses.replace(cfg.distill, alpha_ce=1.0, alpha_task=0.0, alpha_hidden=0.0, temperature=1.0,
                             train=dataclasses.replace(cfg.distill.train, max_steps=fc.steps, eval_every=0))
    out_dir = cfg.run_dir / "fptas"
    out_dir.mkdir(parents=True, exist_ok=True)
    cands = candidate_grid(fc, ctx.teacher.config)
    rows = []
    it = cands
    if progress:
        from tqdm.auto import tqdm
        it = tqdm(cands, desc="fptas candidates", unit="candidate")
    for c in it:
        t0 = time.perf_counter()
        spec = c.spec(ctx.teacher.config)
        model = build_student(ctx.teacher, spec, ctx.importance)
        p = param_count(model.config, head, data.num_labels)
        built = sum(x.numel() for x in model.parameters())
        if p != built:
            raise RuntimeError(f"candidate {c.name()}: formula {p:,} != built {built:,}")
        torch.manual_seed(kd.train.seed)
        train(model, data, kd.train, kd=kd, teacher_outputs=ctx.outputs, progress=False)
        e = surrogate_error(t_logits, predict_logits(model, held, task_type=cfg.task.type))
        folder = out_dir / c.name()
        model.save_pretrained(folder / "model")
        ctx.tokenizer.save_pretrained(folder / "model")
        exported = export_onnx(folder / "model", folder / "onnx", cfg.task.type, sample=_sample(ctx),
                               atol=cfg.search.export_atol)
        lat = latency(exported.path, data.eval, cfg)
        i = lat["median_ms"]
        rows.append({"candidate": c.name(), "depth": c.depth, "heads": c.heads, "hidden": c.hidden,
                     "intermediate": c.intermediate, "params": p, "inference_ms": i, "surrogate_error": e,
                     "relative_error": e / e_max, "W": w_coefficient(p, i, e, p_max, i_max, e_max, fc.alpha),
                     "spec": spec.to_json(), "dir": str(folder), "seconds": round(time.perf_counter() - t0, 1),
                     "latency_method": lat})
    rows.sort(key=lambda r: -r["W"])
    for rank, r in enumerate(rows, 1):
        r["rank"] = rank
    result = {"definition": W_DEFINITION, "maximum_point": {"params": p_max, "inference_ms": i_max,
                                                            "surrogate_error": e_max},
              "steps": fc.steps, "eval_rows": len(held), "alpha": fc.alpha, "ranking": rows, "distilled": []}
    for r in rows[: fc.top_k]:
        from .student import StudentSpec

        spec = StudentSpec.from_json(r["spec"])
        m = distill_student(ctx, spec, Path(r["dir"]) / "distilled", progress=progress)
        exported = export_onnx(Path(r["dir"]) / "distilled", Path(r["dir"]) / "distilled-onnx", cfg.task.type,
                               sample=_sample(ctx), atol=cfg.search.export_atol)
        lat = latency(exported.path, data.eval, cfg)
        result["distilled"].append({"candidate": r["candidate"], "rank": r["rank"], "metric": m["metric"],
                                    "value": m["value"], "params": m["params"], "latency_ms": lat["median_ms"],
                                    "size_mb": exported.size_bytes / 1e6, "train_seconds": m["train_seconds"],
                                    "dir": str(Path(r["dir"]) / "distilled")})
    (out_dir / "ranking.json").write_text(json.dumps(result, indent=2, default=str))
    (out_dir / "ranking.md").write_text(ranking_markdown(result, cfg.task.primary_metric))
    return result


def ranking_markdown(result: dict[str, Any], metric: str) -> str:
    mp = result["maximum_point"]
    lines = ["# FPTAS ranking", "", f"W-coefficient: {result['definition']}", "",
             f"Maximum point (teacher): {mp['params']:,.0f} parameters, {mp['inference_ms']:.2f} ms, "
             f"surrogate error {mp['surrogate_error']:.4f}. Each candidate trained {result['steps']} steps on the "
             f"surrogate error; error measured on {result['eval_rows']} held-out rows.", "",
             "| rank | W | parameters | inference ms | error | rel. error | architecture (depth, heads, hidden, FFN) |",
             "|---|---|---|---|---|---|---|"]
    for r in result["ranking"]:
        lines.append(f"| {r['rank']} | {r['W']:.3f} | {r['params']:,} | {r['inference_ms']:.3f} | "
                     f"{r['surrogate_error']:.4f} | {r['relative_error']:.3f} | "
                     f"{r['depth']}, {r['heads']}, {r['hidden']}, {r['intermediate']} |")
    if result["distilled"]:
        lines += ["", "Distilled fully:", "", f"| candidate | rank | {metric} | parameters | latency ms |",
                  "|---|---|---|---|---|"]
        for d in result["distilled"]:
            lines.append(f"| {d['candidate']} | {d['rank']} | {d['value']:.4f} | {d['params']:,} | "
                         f"{d['latency_ms']:.3f} |")
    return "\n".join(lines) + "\n"
