"""SQuAD 2.0: fine-tune a MiniLM-L6 teacher (SQuAD 1.1 sample + 12 articles of 2.0), distill a 3-layer student.

Run `make bench-squad` (over an hour on 2 cores). Finished pieces are kept in runs/bench-squad2 and reused;
pass --fresh to redo them. Writes benchmarks/results/distill-squad2.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import teacher_and_context, write_results  # noqa: E402

from compress.config import load_config, to_dict  # noqa: E402
from compress.distill.jobs import distill_student  # noqa: E402
from compress.model.student import StudentSpec  # noqa: E402

CONFIG = Path(__file__).resolve().parent / "configs" / "squad2.yaml"
KEYS = ("exact", "f1", "HasAns_exact", "HasAns_f1", "NoAns_exact", "NoAns_f1", "best_exact", "best_f1",
        "best_f1_thresh", "no_answer_rate")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--config", default=str(CONFIG))
    ap.add_argument("--fresh", action="store_true")
    args = ap.parse_args()
    cfg = load_config(args.config)
    tm, ctx = teacher_and_context(cfg, args.fresh)
    spec = StudentSpec.from_json(dict(cfg.student))
    out = cfg.run_dir / "students" / spec.tag()
    sm = json.loads((out / "metrics.json").read_text()) if (out / "metrics.json").exists() else distill_student(ctx, spec, out)

    rows = [
        {"model": "teacher (MiniLM-L6, fine-tuned)", "params": tm["params"], "train_seconds": tm["train_seconds"],
         "steps": tm["steps"], **{k: tm["metrics"][k] for k in KEYS}},
        {"model": f"student {spec.tag()}", "params": sm["params"], "train_seconds": sm["train_seconds"],
         "steps": sm["steps"], **{k: sm["metrics"][k] for k in KEYS}},
    ]
    lines = [
        "# SQuAD 2.0: teacher and 3-layer student", "",
        f"Training: {tm['train_rows']:,} questions ({tm['train_features']:,} windows of {cfg.data.max_seq_length} "
        f"tokens, stride {cfg.data.doc_stride}): a seeded sample of SQuAD 1.1 train plus articles 0-11 of the "
        f"SQuAD 2.0 dev half. Evaluation: articles 12-15 (Imperialism, Warsaw, French_and_Indian_War, Force), "
        f"{tm['eval_rows']:,} questions, scored exactly as the official SQuAD 2.0 script; exact/F1 at the default "
        "no-answer threshold 0, best_* at the threshold that maximises them on this set.", "",
        f"Teacher settings {json.dumps(tm['train_config'])}; student alpha_ce {cfg.distill.alpha_ce}, alpha_task "
        f"{cfg.distill.alpha_task}, T {cfg.distill.temperature}, {json.dumps(to_dict(cfg.distill.train))}.", "",
        "| model | parameters | exact | F1 | HasAns_exact | NoAns_exact | best_exact | best_F1 (threshold) | no-answer rate | train time |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['params']:,} | {r['exact']:.2f} | {r['f1']:.2f} | {r['HasAns_exact']:.2f} | "
            f"{r['NoAns_exact']:.2f} | {r['best_exact']:.2f} | {r['best_f1']:.2f} ({r['best_f1_thresh']:.2f}) | "
            f"{r['no_answer_rate']:.1%} | {r['train_seconds']:.0f} s |"
        )
    j, md = write_results("distill-squad2", {"config": to_dict(cfg), "rows": rows}, "\n".join(lines))
    print(md.read_text())


if __name__ == "__main__":
    main()
