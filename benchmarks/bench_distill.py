"""SST-2: fine-tune the MiniLM-L6 teacher, then distill 1-, 2- and 3-layer students from its weights and at random.

Run `make bench-distill` (about an hour on 2 cores). Finished pieces are kept in runs/bench-sst2 and reused;
pass --fresh to redo them. Writes benchmarks/results/distill-sst2.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import teacher_and_context, write_results  # noqa: E402

from compress.config import load_config, to_dict  # noqa: E402
from compress.deploy.measure import torch_latency  # noqa: E402
from compress.distill.jobs import distill_student  # noqa: E402
from compress.model.student import StudentSpec  # noqa: E402

CONFIG = Path(__file__).resolve().parent / "configs" / "sst2.yaml"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--config", default=str(CONFIG))
    ap.add_argument("--fresh", action="store_true", help="retrain the teacher and every student")
    ap.add_argument("--layers", default="1,2,3")
    args = ap.parse_args()
    cfg = load_config(args.config)
    tm, ctx = teacher_and_context(cfg, args.fresh)
    rows = []
    teacher_lat = {b: torch_latency(ctx.teacher, batch_size=b, seq_len=64) for b in (1, 32)}
    teacher_row = {"model": "teacher (MiniLM-L6, fine-tuned)", "layers": ctx.teacher.config.num_hidden_layers,
                   "init": "pretrained", "params": tm["params"], "accuracy": tm["metrics"]["accuracy"],
                   "train_seconds": tm["train_seconds"], "latency_b1": teacher_lat[1], "latency_b32": teacher_lat[32]}
    for layers in [int(x) for x in args.layers.split(",")]:
        for init in ("teacher", "random"):
            spec = StudentSpec(num_layers=layers, init=init)
            out = cfg.run_dir / "students" / spec.tag()
            if (out / "metrics.json").exists():
                m = json.loads((out / "metrics.json").read_text())
            else:
                m = distill_student(ctx, spec, out)
            from transformers import AutoModelForSequenceClassification

            model = AutoModelForSequenceClassification.from_pretrained(out)
            lat = {b: torch_latency(model, batch_size=b, seq_len=64) for b in (1, 32)}
            acc = m["metrics"]["accuracy"]
            rows.append({"model": spec.tag(), "layers": layers, "init": init, "params": m["params"],
                         "accuracy": acc, "share_of_teacher": acc / teacher_row["accuracy"],
                         "train_seconds": m["train_seconds"], "teacher_layers": m["teacher_layers"],
                         "latency_b1": lat[1], "latency_b32": lat[32]})
            print(f"{spec.tag()}: accuracy {acc:.4f} ({acc / teacher_row['accuracy']:.1%} of teacher)", flush=True)

    lines = [
        "# Distillation on SST-2 (MiniLM-L6 teacher)", "",
        f"Teacher: `{cfg.teacher.model}` fine-tuned on {tm['train_rows']:,} SST-2 training rows (seeded sample), "
        f"{tm['steps']} steps; settings {json.dumps(tm['train_config'])}. Students: alpha_ce {cfg.distill.alpha_ce}, "
        f"alpha_task {cfg.distill.alpha_task}, T {cfg.distill.temperature}, same rows, "
        f"{json.dumps(to_dict(cfg.distill.train))}. Accuracy on the full GLUE SST-2 dev set (872 rows).", "",
        "Latency: PyTorch eager, random token ids of fixed shape, 2 threads, 10 warm-up and 50 timed calls; "
        "median (p90) in ms.", "",
        "| model | init | layers | parameters | dev accuracy | % of teacher | latency b=1, s=64 | latency b=32, s=64 | train time |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in [teacher_row] + rows:
        share = f"{r['share_of_teacher']:.1%}" if "share_of_teacher" in r else "100%"
        lines.append(
            f"| {r['model']} | {r['init']} | {r['layers']} | {r['params']:,} | {r['accuracy']:.4f} | {share} | "
            f"{r['latency_b1']['median_ms']:.2f} ({r['latency_b1']['p90_ms']:.2f}) | "
            f"{r['latency_b32']['median_ms']:.1f} ({r['latency_b32']['p90_ms']:.1f}) | {r['train_seconds']:.0f} s |"
        )
    j, md = write_results("distill-sst2", {"config": to_dict(cfg), "teacher": teacher_row, "students": rows},
                          "\n".join(lines))
    print(md.read_text())


if __name__ == "__main__":
    main()
