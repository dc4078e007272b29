"""bench-students: stronger students on SST-2 (losses on the teacher's internals, augmentation, vocabulary pruning,
static int8), every latency measured side by side in one run with the teacher as reference.

The teacher is bench-scale's (MiniLM-L6 fine-tuned on all 67,349 training rows) when it has finished, else
bench-distill's (runs/bench-sst2/teacher); the results say which. Students train on all SST-2 training rows
(`--train-rows N` for a seeded sample of N, e.g. 12,000, bench-scale's top rung, as the first runs of this
benchmark did: bench-scale's promotion showed what that cost, its students gained 2.3-3.2 points of accuracy from
12,000 rows to all of them). Every recipe sees the same number of training rows, `--passes` (default 2) times the
training rows: P epochs of them, or 1 epoch with P-1 augmented rows per row, so the ablation compares losses and
data, not training length. State for each budget lives in its own folder (.cache/bench-students/ for 12,000 rows,
.cache/bench-students-<rows>/ otherwise), so runs of different budgets never mix.

Stages (each resumable: a student that finished is not trained again, one that was killed resumes from its
checkpoint; state under .cache/bench-students/):

1. train: the ablation student L3 (3 of the teacher's 6 layers, full width) with logit KD only, + attention
   relations (MiniLM-v2, teacher's last layer), + augmentation; and the other architectures with the full recipe.
2. variants: every student exported to ONNX (fp32), int8-dynamic and int8-static (calibrated on training rows),
   each also with a pruned vocabulary; the accuracy of every file measured on the dev set (872 rows).
3. measure: the teacher and every file timed together, interleaved round by round (ONNX Runtime, batch 1, the dev
   set's own lengths, 2 threads), the teacher the reference of every ratio.

Goals: speedup_at_99 (>= 3.0: the fastest file at >= 99% of the teacher's accuracy), speedup_at_97 (>= 6.0),
params_share_at_99 (<= 0.50: the smallest such file's parameters over the teacher's), each with the student and
precision that achieved it.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import write_results  # noqa: E402

from compress.config import from_mapping  # noqa: E402

CONFIG = ROOT / "benchmarks" / "configs" / "scale-sst2.yaml"  # the task and data of bench-scale
OUT = ROOT / ".cache" / "bench-students-all"  # set by configure() from --train-rows
SCALE_TEACHER = ROOT / ".cache" / "bench-scale" / "scale-sst2" / "teacher"
DISTILL_TEACHER = ROOT / "runs" / "bench-sst2" / "teacher"
STAGES = ("train", "variants", "measure")
TRAIN_ROWS: int | None = None  # None: every training row
PASSES = 2
LEVELS = (0.99, 0.98, 0.97, 0.95)
PRECISIONS = ("fp32", "int8-dynamic", "int8-static")

KD = {"alpha_ce": 0.8, "alpha_task": 0.2, "temperature": 2.0}


def recipes(passes: int) -> dict[str, dict[str, Any]]:
    """distill settings over KD; epochs (or augmented rows per row) so that every recipe sees `passes` times the
    training rows."""
    return {
        "kd": {"distill": KD, "epochs": passes},
        "kd+relations": {"distill": {**KD, "alpha_relations": 1.0}, "epochs": passes},
        "kd+relations+augment": {"distill": {**KD, "alpha_relations": 1.0, "augment": {"factor": float(passes - 1)}},
                                 "epochs": 1},
    }


RECIPES = recipes(PASSES)
FULL = "kd+relations+augment"
ABLATION_SPEC = {"num_layers": 3}
STUDENTS = {  # name -> (spec, recipe); the ablation student's three runs first
    "L3-kd": (ABLATION_SPEC, "kd"),
    "L3-kd+rel": (ABLATION_SPEC, "kd+relations"),
    "L3": (ABLATION_SPEC, FULL),
    "L4": ({"num_layers": 4}, FULL),
    "L2": ({"num_layers": 2}, FULL),
    "L3-H6-F768": ({"num_layers": 3, "heads": 6, "intermediate_size": 768}, FULL),
    "L2-H6-F768": ({"num_layers": 2, "heads": 6, "intermediate_size": 768}, FULL),
    # as many weights per layer as L2-H6-F768 has in two layers' worth of three: depth for the 97% level
    "L3-H4-F512": ({"num_layers": 3, "heads": 4, "intermediate_size": 512}, FULL),
}


def configure(train_rows: int | None, passes: int) -> None:
    """The budget of this run: its training rows (None: all), passes per recipe, and its state folder."""
    global TRAIN_ROWS, PASSES, RECIPES, OUT
    if passes < 2:
        raise SystemExit(f"bench-students: --passes {passes}: give at least 2 (the augmented recipe adds passes-1 "
                         "rows per row)")
    TRAIN_ROWS, PASSES, RECIPES = train_rows, passes, recipes(passes)
    if train_rows == 12000 and passes == 3:
        OUT = ROOT / ".cache" / "bench-students"  # the first runs' folder
    else:
        OUT = ROOT / ".cache" / f"bench-students-{train_rows or 'all'}{'' if passes == 2 else f'-x{passes}'}"


def teacher_folder() -> tuple[Path, str]:
    if (SCALE_TEACHER / "metrics.json").is_file():
        return SCALE_TEACHER, "bench-scale's teacher: MiniLM-L6 fine-tuned on all 67,349 SST-2 training rows"
    if (DISTILL_TEACHER / "metrics.json").is_file():
        return DISTILL_TEACHER, ("bench-distill's teacher (bench-scale's has not finished): MiniLM-L6 fine-tuned on "
                                 "24,000 SST-2 rows for one epoch")
    raise SystemExit("no SST-2 teacher yet: run `make bench-scale` (its first stage) or `make bench-distill` first")


def job_mapping(teacher: Path) -> dict:
    raw = yaml.safe_load(CONFIG.read_text())
    raw["name"] = "students-sst2"
    raw["output_dir"] = str(OUT)
    for part in ("train", "eval"):
        raw["data"][part]["path"] = str((ROOT / raw["data"][part]["path"]).resolve())
    if TRAIN_ROWS is not None:
        raw["data"]["train"].update(limit=TRAIN_ROWS, sample_seed=0)
    raw["teacher"] = {"model": str(teacher)}
    raw["distill"]["train"].update(eval_every=0, checkpoint_every=200)
    raw["search"] = {"latency": {"batch_size": 1, "seq_len": "eval", "threads": 2},
                     "confirm": {"rounds": 20, "calls_per_round": 8}}
    return raw


def distill_for(cfg, recipe: str):
    from compress.config import DistillConfig, build

    r = RECIPES[recipe]
    base = dataclasses.asdict(cfg.distill.train) | {"epochs": r["epochs"]}
    return build(DistillConfig, {**copy.deepcopy(r["distill"]), "train": base}, "distill")


def stage_train(cfg, ctx) -> dict[str, Any]:
    from compress.model.student import StudentSpec
    from compress.search.study import train_student

    out = {}
    for name, (spec_raw, recipe) in STUDENTS.items():
        folder = OUT / "students" / name
        done = folder / "model" / "metrics.json"
        if not done.is_file():
            print(f"training {name} ({recipe}) ...", flush=True)
            spec = StudentSpec.from_json(spec_raw)
            train_student(ctx, cfg, spec, distill_for(cfg, recipe), folder / "model", progress=True)
        out[name] = json.loads(done.read_text())
    return out


def _pruned_copy(ctx, cfg, src: Path, dst: Path, recipe: str) -> None:
    """A copy of a trained student with its vocabulary pruned (the tokens of what it trained on)."""
    from compress.distill.vocab import prune_student_vocabulary

    if (dst / "model" / "vocab_prune.json").is_file():
        return
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src / "model", dst / "model", ignore=shutil.ignore_patterns("checkpoint"))
    prune_student_vocabulary(ctx, dst / "model", cfg.vocab_prune, distill_for(cfg, recipe).augment)


def stage_variants(cfg, ctx, trained: dict[str, Any]) -> list[dict[str, Any]]:
    """Every student, with and without a pruned vocabulary, in every precision: its file, accuracy and params."""
    from compress.search.study import deploy_model

    rows = []
    for name, (_, recipe) in STUDENTS.items():
        src = OUT / "students" / name
        pruned = OUT / "students" / f"{name}+vocab"
        _pruned_copy(ctx, cfg, src, pruned, recipe)
        for folder, vocab in ((src, False), (pruned, True)):
            m = json.loads((folder / "model" / "metrics.json").read_text())
            for precision in PRECISIONS:
                record = folder / f"deployed-{precision}.json"
                if not record.is_file():
                    dep = deploy_model(ctx, cfg, folder, precision, m["metrics"])
                    record.write_text(json.dumps({
                        "onnx": str(dep["deployed"]), "metrics": {k: v for k, v in dep["metrics"].items()
                                                                  if isinstance(v, (int, float))},
                        "metric_source": dep["metric_source"], "size_mb": dep["size_bytes"] / 1e6}))
                d = json.loads(record.read_text())
                rows.append({"student": name, "recipe": recipe, "vocab_pruned": vocab, "precision": precision,
                             "params": m["params"], "accuracy": d["metrics"]["accuracy"], "onnx": d["onnx"],
                             "size_mb": d["size_mb"], "metric_source": d["metric_source"],
                             "spec": m.get("spec"), "vocab_prune": m.get("vocab_prune"),
                             "augment": m.get("augment")})
    return rows


def stage_measure(cfg, ctx, rows: list[dict[str, Any]]) -> dict[str, Any]:
    from compress.deploy.latency import measure_interleaved
    from compress.deploy.measure_lock import lock_dir_for, measuring
    from compress.search.confirm import confirm_protocol
    from compress.search.objectives import measure_teacher, teacher_reference

    path = OUT / "measure.json"
    if path.is_file() and json.loads(path.read_text()).get("models") == sorted(r["onnx"] for r in rows):
        return json.loads(path.read_text())
    measure_teacher(ctx, cfg)  # the teacher's ONNX file, the reference
    settings, inputs = confirm_protocol(cfg, ctx.data.eval)
    models = {"teacher": teacher_reference(cfg)} | {r["onnx"]: Path(r["onnx"]) for r in rows}
    print(f"timing {len(models)} models together, {settings.rounds} interleaved rounds ...", flush=True)
    t0 = time.perf_counter()
    with measuring(lock_dir_for(cfg.run_dir)):
        res = measure_interleaved(models, "teacher", inputs, settings)
    doc = {"models": sorted(r["onnx"] for r in rows), "seconds": round(time.perf_counter() - t0, 1),
           "result": res}
    path.write_text(json.dumps(doc, default=str))
    return doc


def best_at_levels(rows: list[dict[str, Any]], teacher_acc: float, teacher_params: int,
                   levels=LEVELS) -> dict[str, dict[str, Any] | None]:
    """Per accuracy level (share of the teacher's accuracy): the fastest file at or above it (largest speed-up, the
    teacher's latency over its own), and the smallest one by parameters."""
    out = {}
    for level in levels:
        ok = [r for r in rows if r["accuracy"] >= level * teacher_acc]
        fastest = max(ok, key=lambda r: r["speedup"], default=None)
        smallest = min(ok, key=lambda r: r["params"], default=None)
        out[f"{level:.2f}"] = None if fastest is None else {
            "fastest": fastest, "smallest": smallest, "params_share": smallest["params"] / teacher_params}
    return out


def goals_from(best: dict[str, Any]) -> dict[str, Any]:
    def pick(level: str, key: str, goal: float, better: str) -> dict[str, Any]:
        b = best.get(level)
        if b is None:
            return {"value": None, "goal": goal, "met": False, "achieved_by": None}
        r = b["fastest"] if key == "speedup" else b["smallest"]
        value = r["speedup"] if key == "speedup" else b["params_share"]
        met = value >= goal if better == "higher" else value <= goal
        return {"value": value, "goal": goal, "met": met,
                "achieved_by": {k: r[k] for k in ("student", "recipe", "precision", "vocab_pruned", "accuracy",
                                                  "params", "speedup", "speedup_ci95")}}

    return {"speedup_at_99": pick("0.99", "speedup", 3.0, "higher"),
            "speedup_at_97": pick("0.97", "speedup", 6.0, "higher"),
            "params_share_at_99": pick("0.99", "params", 0.50, "lower")}


def summary_md(p: dict[str, Any]) -> str:
    t = p["teacher"]
    lines = ["# bench-students: stronger students on SST-2", "",
             f"Teacher: {t['source']}; dev accuracy {t['accuracy']:.4f}, {t['params']:,} parameters, "
             f"{t['latency_ms']:.2f} ms [{t['latency_ci95_ms'][0]:.2f}, {t['latency_ci95_ms'][1]:.2f}] per call.",
             "", f"Students trained on {p['train_rows']:,} SST-2 training rows"
             f"{' (all of them)' if p.get('all_rows') else ' (a seeded sample)'}, {p['rows_per_recipe']:,} rows seen "
             f"per recipe ({p['passes']} passes: {p['passes']} epochs, or 1 epoch with {p['passes'] - 1} augmented "
             f"rows per row); {sum(v or 0 for v in p['train_seconds'].values()) / 3600:.2f} h of training on "
             f"{p['machine_note']}. Latency: {p['method']}.", "", "## Goals", "", "| goal | value | target | met | achieved by |",
             "|---|---|---|---|---|"]
    for k, g in p["goals"].items():
        a = g["achieved_by"]
        who = (f"{a['student']} ({a['precision']}{', pruned vocabulary' if a['vocab_pruned'] else ''}): accuracy "
               f"{a['accuracy']:.4f}, {a['speedup']:.2f}x") if a else "none reaches the level"
        value = "-" if g["value"] is None else f"{g['value']:.3f}"
        lines.append(f"| {k} | {value} | {g['goal']} | {'yes' if g['met'] else 'no'} | {who} |")
    lines += ["", "## Best student at each accuracy level", "",
              "| level (share of teacher) | fastest | accuracy | speed-up [95% CI] | smallest | params share |",
              "|---|---|---|---|---|---|"]
    for level, b in p["best"].items():
        if b is None:
            lines.append(f"| {level} | none | | | | |")
            continue
        f, s = b["fastest"], b["smallest"]
        lines.append(f"| {level} | {_name(f)} | {f['accuracy']:.4f} | {f['speedup']:.2f} "
                     f"[{f['speedup_ci95'][0]:.2f}, {f['speedup_ci95'][1]:.2f}] | {_name(s)} | {b['params_share']:.3f} |")
    lines += ["", "## Ablation: L3 (3 of 6 layers, full width)", "",
              "| step | accuracy | share of teacher | speed-up [95% CI] | params |", "|---|---|---|---|---|"]
    for step in p["ablation"]:
        r = step["row"]
        lines.append(f"| {step['step']} | {r['accuracy']:.4f} | {r['accuracy'] / t['accuracy']:.3f} | "
                     f"{r['speedup']:.2f} [{r['speedup_ci95'][0]:.2f}, {r['speedup_ci95'][1]:.2f}] | {r['params']:,} |")
    lines += ["", "## Every file", "", "| student | recipe | vocabulary | precision | accuracy | speed-up | params | MB |",
              "|---|---|---|---|---|---|---|---|"]
    for r in sorted(p["rows"], key=lambda r: -r["speedup"]):
        lines.append(f"| {r['student']} | {r['recipe']} | {'pruned' if r['vocab_pruned'] else 'full'} | "
                     f"{r['precision']} | {r['accuracy']:.4f} | {r['speedup']:.2f} | {r['params']:,} | "
                     f"{r['size_mb']:.1f} |")
    return "\n".join(lines)


def _name(r: dict[str, Any]) -> str:
    return f"{r['student']} {r['precision']}{' +vocab' if r['vocab_pruned'] else ''}"


def ablation(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    def row(student, vocab, precision):
        return next(r for r in rows if r["student"] == student and r["vocab_pruned"] == vocab
                    and r["precision"] == precision)

    return [{"step": "logit KD only", "row": row("L3-kd", False, "fp32")},
            {"step": "+ attention relations", "row": row("L3-kd+rel", False, "fp32")},
            {"step": "+ augmentation", "row": row("L3", False, "fp32")},
            {"step": "+ vocabulary pruning", "row": row("L3", True, "fp32")},
            {"step": "+ static int8", "row": row("L3", True, "int8-static")}]


def torch_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--stage", choices=STAGES, default=STAGES[-1], help="run the stages up to this one")
    ap.add_argument("--train-rows", type=int, default=None,
                    help="train on a seeded sample of this many rows (default: all; the first runs used 12000)")
    ap.add_argument("--passes", type=int, default=None,
                    help="training rows seen per recipe, in passes over them (default 2; 3 with --train-rows 12000, "
                         "as the first runs)")
    args = ap.parse_args()
    configure(args.train_rows, args.passes or (3 if args.train_rows == 12000 else 2))
    upto = STAGES.index(args.stage)
    teacher, source = teacher_folder()
    OUT.mkdir(parents=True, exist_ok=True)
    cfg = from_mapping(job_mapping(teacher), config_path=str(CONFIG))
    from compress.distill.jobs import load_context

    ctx = load_context(cfg)
    trained = stage_train(cfg, ctx)
    if upto < 1:
        return
    rows = stage_variants(cfg, ctx, trained)
    if upto < 2:
        return
    measured = stage_measure(cfg, ctx, rows)
    res = measured["result"]
    for r in rows:
        ratio = res["ratios"][r["onnx"]]
        r["latency_ms"] = res["models"][r["onnx"]]["median_ms"]
        r["speedup"] = 1.0 / ratio["median"]
        r["speedup_ci95"] = [1.0 / ratio["ci95"][1], 1.0 / ratio["ci95"][0]]
    tm = ctx.teacher_metrics
    t_acc, t_params = float(tm["accuracy"]), int(tm["params"])
    best = best_at_levels(rows, t_acc, t_params)
    tl = res["models"]["teacher"]
    payload = {
        "goals": goals_from(best), "best": best, "ablation": ablation(rows), "rows": rows,
        "teacher": {"source": source, "folder": str(teacher), "accuracy": t_acc, "params": t_params,
                    "latency_ms": tl["median_ms"], "latency_ci95_ms": tl["ci95_ms"]},
        "method": (f"ONNX Runtime, batch 1, the dev set's own lengths, {cfg.search.latency.threads} threads; "
                   f"{res['rounds']} interleaved rounds of {res['calls_per_round']} calls, all {len(rows) + 1} "
                   f"files in one process; speed-up = the teacher's latency over the file's (median of per-round "
                   f"ratios, bootstrap 95% interval); {'the teacher never settled (busy machine)' if res['contended'] else 'the rounds settled'}"),
        "measure_seconds": measured["seconds"], "train_rows": len(ctx.data.train.examples),
        "all_rows": TRAIN_ROWS is None, "passes": PASSES, "rows_per_recipe": PASSES * len(ctx.data.train.examples),
        "train_seconds": {k: v.get("train_seconds") for k, v in trained.items()},
        "machine_note": "cpu" if not torch_cuda() else "cuda",
        "recipes": RECIPES, "students": {k: {"spec": v[0], "recipe": v[1]} for k, v in STUDENTS.items()},
    }
    write_results("students-sst2", payload, summary_md(payload))
    print(json.dumps(payload["goals"], indent=2, default=str))


if __name__ == "__main__":
    main()
