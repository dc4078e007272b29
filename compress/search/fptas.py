"""Optimal subarchitecture extraction, after de Wynter (2020, arXiv:2010.08512) as used for Bort
(de Wynter and Perry, 2020, arXiv:2010.10499): rank candidate architectures by a W-coefficient that trades
parameter size p, inference time i and a surrogate error e against the maximum point (here, the teacher).

Procedure (`run_fptas`):
1. Enumerate the grid of (depth, heads, hidden, intermediate) from the config's `fptas:` section, keeping
   hidden divisible by heads and every size within the teacher's.
2. Build each candidate from the teacher's weights (layers spread evenly; narrower hidden sizes keep the
   teacher's strongest hidden units, see compress.model.student) and train it for a fixed number of steps on the
   surrogate error: the KL divergence between its output distribution (task logits; start and end for QA) and
   the maximum point's, temperature 1 (the same gradient as their cross-entropy).
3. Measure e: the cross-entropy H(teacher, candidate) on held-out eval rows; p: the analytic parameter count
   (equal to the built model's); i: ONNX Runtime latency of the exported candidate with the search's protocol.
4. Rank by the W-coefficient and hand the top k to full distillation.
5. Optionally (`fptas.calibrate`, `compress fptas --calibrate`) distill every candidate fully and check the
   ranking against what the candidates really score (`calibrate`): how well the surrogate error predicts the
   distilled metric, the exponent k of real relative error ~ (surrogate relative error)^k, and for each alpha of
   `fptas.calibration_alphas` the candidate W puts first, its real metric, whether it meets `search.constraints`
   and whether it lies on the distilled candidates' frontier. Writes calibration.{md,png} beside the ranking.

Each candidate's surrogate result and full distillation are stored in its folder with a hash of their inputs, so
a rerun after an interruption (or with another alpha) reuses them instead of training again.

The W-coefficient implemented here (`w_coefficient`, a pure function that can be replaced):

    W = (p_max / p) * (i_max / i) / (e / e_max) ** alpha

where p_max, i_max are the teacher's parameters and inference time and e_max = H(teacher, teacher), the
teacher's own entropy on the same rows (the lowest cross-entropy any model can reach against it), so
e / e_max >= 1 measures how far a candidate is from the maximum point. Larger W is better: W grows as a
candidate gets smaller, faster, or closer to the teacher.

NOTE: the paper's exact definition of the W-coefficient could not be checked here (no access to the paper
offline); this is our own scalarisation with the properties the papers describe (relative to the maximum
point; rewards small p and i, penalises error). Every output of `compress fptas` says so. alpha sets the
exchange rate: with alpha = 1, halving the parameters and halving the latency (4x) outweighs a relative error
up to 4x larger. Surrogate errors after a short training run are compressed versions of the real ones (on SST-2,
see benchmarks/results/fptas-sst2.md), so alpha = 1 on the surrogate weighs real error less than 1:1; run the
calibration to see which alpha picks what on your task.
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

from ..artifacts import config_hash, write_json

__all__ = ["W_DEFINITION", "Candidate", "calibrate", "candidate_grid", "real_relative_error", "run_fptas",
           "spearman", "surrogate_error", "w_coefficient"]

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
        from ..model.student import StudentSpec

        # hidden_size set: BERT semantics, the heads split the width evenly (see compress.model.student)
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

    from ..distill.loop import train
    from ..deploy.export import export_onnx
    from ..model.inference import predict_logits
    from ..distill.jobs import distill_student, load_context
    from ..model.student import build_student, param_count
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
            exported = export_onnx(folder / "model", folder / "onnx", cfg.task.type, sample=_sample(ctx),
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
    from ..model.student import StudentSpec

    from .study import _constraints, _metric_names

    constraints = _constraints(cfg, _metric_names(cfg))  # search.constraints: checked on the distilled candidates
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
                                   sample=_sample(ctx), atol=cfg.search.export_atol)
            lat = latency(exported.path, data.eval, cfg)
            done = {"candidate": r["candidate"], "metric": m["metric"], "value": m["value"], "params": m["params"],
                    "latency_ms": lat["median_ms"], "size_mb": exported.size_bytes / 1e6,
                    "train_seconds": m["train_seconds"], "dir": str(Path(r["dir"]) / "distilled"),
                    "onnx": str(exported.path), "latency_method": lat}
            _store(Path(r["dir"]) / "distilled.json", key, done)
        missed = _misses(constraints, {done["metric"]: done["value"], "params": done["params"],
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


def spearman(x, y) -> float:
    """Spearman's rank correlation (ties get their average rank); nan when either side is constant."""
    def ranks(v):
        v = np.asarray(v, dtype=float)
        order = np.argsort(v, kind="mergesort")
        r = np.empty(len(v))
        r[order] = np.arange(1, len(v) + 1)
        for value in np.unique(v):  # average the ranks of ties
            tie = v == value
            r[tie] = r[tie].mean()
        return r

    a, b = ranks(x), ranks(y)
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def real_relative_error(value: float, teacher_value: float, metric: str, higher_is_better: bool = True) -> float:
    """The distilled candidate's error relative to the teacher's, the real counterpart of e / e_max: points short
    of perfect over the teacher's points short of perfect (a lower-is-better metric such as mse: value/teacher)."""
    from .scenarios import points

    if not higher_is_better:
        return float(value) / max(float(teacher_value), 1e-12)
    return (100.0 - points(metric, value)) / max(100.0 - points(metric, teacher_value), 1e-6)


def _nondominated(items: list[dict[str, Any]]) -> set[str]:
    """Names of the candidates no other one beats on (metric up, params down, latency down) at once."""
    from .study import _dominates

    def values(it):
        return [it["value"], it["params"], it["latency_ms"]]

    directions = ["maximize", "minimize", "minimize"]
    return {a["candidate"] for a in items
            if not any(_dominates(values(b), values(a), directions) for b in items if b is not a)}


def _misses(constraints, measured: dict[str, float]) -> list[str]:
    """The constraints (search.constraints) a measured candidate fails; those naming nothing measured are skipped."""
    return [str(cn) for cn in constraints if cn.name in measured and cn.violation(measured[cn.name]) > 0]


def calibrate(result: dict[str, Any], teacher_value: float, metric: str, alphas, constraints=(),
              higher_is_better: bool = True) -> dict[str, Any]:
    """How well the surrogate error stands in for the real one, and what each alpha would pick.

    Needs every ranked candidate distilled fully (`result["distilled"]` covering `result["ranking"]`). Returns:
    - the fit log r = k log s + c of the real relative error r (`real_relative_error`) on the surrogate relative
      error s = e / e_max, with R^2, and Spearman's rho of s against r. Since r ~ C s^k, W with exponent alpha on
      s ranks like W with exponent alpha / k on the real error: `alpha_for_real_1to1` = k is the alpha at which one
      unit of log real error trades evenly against one unit of log size and of log speed;
    - per alpha: the candidate W puts first, its distilled metric, parameters and latency, whether it meets the
      constraints (objects with .name and .violation(measured)) and lies on the distilled candidates' frontier,
      the candidate a perfect surrogate would put first, and Spearman's rho between the two rankings;
    - `alpha_meeting_constraints`: the smallest alpha of the grid whose first candidate meets every constraint
      and is on the frontier (None when no alpha does, or there are no constraints).
    """
    mp = result["maximum_point"]
    dist = {d["candidate"]: d for d in result["distilled"]}
    rows = [r for r in result["ranking"] if r["candidate"] in dist]
    if len(rows) < 3:
        raise ValueError(f"calibration needs at least 3 fully distilled candidates; got {len(rows)} "
                         "(run with fptas.calibrate: true, which distills them all)")
    items = []
    for r in rows:
        d = dist[r["candidate"]]
        items.append({"candidate": r["candidate"], "params": r["params"], "inference_ms": r["inference_ms"],
                      "surrogate_error": r["surrogate_error"], "s": r["relative_error"],
                      "r": real_relative_error(d["value"], teacher_value, metric, higher_is_better),
                      "value": d["value"], "latency_ms": d["latency_ms"]})
    s = np.log([it["s"] for it in items])
    r = np.log([max(it["r"], 1e-6) for it in items])
    k, c = np.polyfit(s, r, 1)
    fit = k * s + c
    ss_tot = float(((r - r.mean()) ** 2).sum())
    r2 = 1.0 - float(((r - fit) ** 2).sum()) / ss_tot if ss_tot > 0 else float("nan")
    front = _nondominated(items)
    per_alpha = []
    for a in alphas:
        w_s = [w_coefficient(it["params"], it["inference_ms"], it["surrogate_error"], mp["params"],
                             mp["inference_ms"], mp["surrogate_error"], a) for it in items]
        w_r = [(mp["params"] / it["params"]) * (mp["inference_ms"] / it["inference_ms"]) / max(it["r"], 1e-6) ** a
               for it in items]
        top = items[int(np.argmax(w_s))]
        ideal = items[int(np.argmax(w_r))]
        meets = not _misses(constraints, {metric: top["value"], "params": top["params"],
                                          "latency_ms": top["latency_ms"]})
        per_alpha.append({"alpha": a, "top": top["candidate"], "value": top["value"], "params": top["params"],
                          "latency_ms": top["latency_ms"], "meets_constraints": meets,
                          "on_frontier": top["candidate"] in front, "ideal_top": ideal["candidate"],
                          "ideal_value": ideal["value"], "spearman_w": spearman(w_s, w_r)})
    ok = [p["alpha"] for p in per_alpha if p["meets_constraints"] and p["on_frontier"]]
    return {"candidates": items, "k": float(k), "c": float(c), "r2": r2, "alpha_for_real_1to1": float(k),
            "spearman_error": spearman([it["s"] for it in items], [it["r"] for it in items]),
            "spearman_error_metric": spearman([it["surrogate_error"] for it in items], [it["value"] for it in items]),
            "frontier": sorted(front), "per_alpha": per_alpha, "constraints": [str(cn) for cn in constraints],
            "alpha_meeting_constraints": (min(ok) if ok and constraints else None), "metric": metric,
            "teacher_value": teacher_value}


def calibration_markdown(cal: dict[str, Any]) -> str:
    m = cal["metric"]
    lines = ["# FPTAS calibration", "",
             f"Every candidate distilled fully; teacher {m} {cal['teacher_value']:.4f}. Surrogate relative error "
             "s = e / e_max; real relative error r = (100 - points) / (100 - teacher points).", "",
             f"- Spearman's rho, s against r: {cal['spearman_error']:.3f}; surrogate error against distilled {m}: "
             f"{cal['spearman_error_metric']:.3f}.",
             f"- Fit log r = k log s + c: k = {cal['k']:.3f}, c = {cal['c']:.3f}, R^2 = {cal['r2']:.3f}. So alpha = "
             f"{cal['alpha_for_real_1to1']:.2f} on the surrogate trades real relative error 1:1 with relative size and "
             "speed.",
             f"- Smallest alpha whose first candidate meets {cal['constraints'] or 'the constraints (none set)'} and is "
             f"on the distilled frontier: {cal['alpha_meeting_constraints']}.", "",
             f"| alpha | W's first | {m} | parameters | latency ms | meets constraints | on frontier | "
             f"a perfect surrogate's first ({m}) | rho(W, W with real error) |", "|---|---|---|---|---|---|---|---|---|"]
    for p in cal["per_alpha"]:
        lines.append(f"| {p['alpha']:g} | {p['top']} | {p['value']:.4f} | {p['params']:,} | {p['latency_ms']:.3f} | "
                     f"{'yes' if p['meets_constraints'] else 'no'} | {'yes' if p['on_frontier'] else 'no'} | "
                     f"{p['ideal_top']} ({p['ideal_value']:.4f}) | {p['spearman_w']:.3f} |")
    lines += ["", f"| candidate | surrogate error | s | distilled {m} | r | parameters | latency ms | on frontier |",
              "|---|---|---|---|---|---|---|---|"]
    for it in sorted(cal["candidates"], key=lambda it: -it["value"]):
        lines.append(f"| {it['candidate']} | {it['surrogate_error']:.4f} | {it['s']:.3f} | {it['value']:.4f} | "
                     f"{it['r']:.3f} | {it['params']:,} | {it['latency_ms']:.3f} | "
                     f"{'yes' if it['candidate'] in cal['frontier'] else ''} |")
    return "\n".join(lines) + "\n"


def calibration_png(cal: dict[str, Any], path: Path) -> None:
    """Left: distilled metric against the surrogate relative error. Right: what W's first candidate scores per alpha."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = cal["metric"]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
    xs = [it["s"] for it in cal["candidates"]]
    ys = [it["value"] for it in cal["candidates"]]
    sizes = [20 + 60 * it["params"] / max(i["params"] for i in cal["candidates"]) for it in cal["candidates"]]
    colors = ["tab:red" if it["candidate"] in cal["frontier"] else "tab:blue" for it in cal["candidates"]]
    a1.scatter(xs, ys, s=sizes, c=colors, alpha=0.8)
    for it in cal["candidates"]:
        a1.annotate(it["candidate"], (it["s"], it["value"]), fontsize=6, alpha=0.7)
    a1.axhline(cal["teacher_value"], ls="--", c="purple", lw=1, label="teacher")
    a1.set_xlabel("surrogate relative error e / e_max")
    a1.set_ylabel(f"distilled {m}")
    a1.set_title(f"rho = {cal['spearman_error_metric']:.2f} (red: frontier; size: parameters)", fontsize=9)
    a1.legend(fontsize=8)
    al = [p["alpha"] for p in cal["per_alpha"]]
    a2.plot(al, [p["value"] for p in cal["per_alpha"]], "o-", label="W's first candidate")
    a2.plot(al, [p["ideal_value"] for p in cal["per_alpha"]], "s--", alpha=0.6, label="a perfect surrogate's first")
    a2.axhline(cal["teacher_value"], ls="--", c="purple", lw=1)
    a2.set_xscale("log")
    a2.set_xticks(al, [f"{a:g}" for a in al])
    a2.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    a2.set_xlabel("alpha")
    a2.set_ylabel(f"distilled {m}")
    a2.set_title("the first-ranked candidate, fully distilled", fontsize=9)
    a2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
        cons = ", ".join(result.get("constraints") or []) or "none set"
        lines += ["", f"Distilled fully (constraints: {cons}):", "",
                  f"| candidate | rank | {metric} | parameters | latency ms | constraints |", "|---|---|---|---|---|---|"]
        for d in sorted(result["distilled"], key=lambda d: d["rank"]):
            lines.append(f"| {d['candidate']} | {d['rank']} | {d['value']:.4f} | {d['params']:,} | "
                         f"{d['latency_ms']:.3f} | {'misses ' + ', '.join(d['misses']) if d.get('misses') else 'met'} |")
        first = min(result["distilled"], key=lambda d: d["rank"])
        if first.get("misses") and first["rank"] == 1:
            lines += ["", f"The first candidate misses {', '.join(first['misses'])} once distilled: alpha "
                      f"{result['alpha']:g} weighs size and speed over error for this task. Raise fptas.alpha, or run "
                      "with --calibrate to see which alpha puts a candidate that meets the constraints first."]
    return "\n".join(lines) + "\n"
