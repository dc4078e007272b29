"""Variant benchmark on SST-2: each deployable variant's latency and metric.

The teacher and frontier students of the SST-2 search (runs/search-sst2-tpe, `make bench-search`): latency in
PyTorch eager, ONNX fp32, ONNX Runtime optimised and dynamic int8, at batch 1 and 8, sequence 128, 2 threads
(10 warm-up, 50 timed calls, median and p90), each with its own accuracy on the full SST-2 dev set.

Run `make bench-variants`. Writes benchmarks/results/serve-sst2.{json,md}. (The HTTP load test that used to be
here is `make bench-serve`, benchmarks/bench_serve.py, which writes serve.{json,md}.)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
os.environ.setdefault("BENTOML_HOME", str(ROOT / "runs" / "bench-serve" / "bentoml"))
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")

from common import write_results  # noqa: E402

from compress.config import load_run_config  # noqa: E402

RUN = ROOT / "runs" / "search-sst2-tpe"


def _pick_students(doc: dict, count: int) -> list[dict]:
    """The scenario picks (knee, retain-size, retain-metric, fastest within 1 point), then the rest by metric."""
    from compress.search.scenarios import SCENARIOS, ScenarioError, pick

    chosen: dict[int, dict] = {}
    for scenario in SCENARIOS:
        try:
            r = pick(doc, scenario)
        except ScenarioError:
            continue
        chosen.setdefault(r["number"], {**r, "scenario": scenario})
    for r in doc["frontier"]:
        chosen.setdefault(r["number"], r)
    return list(chosen.values())[:count]


def variant_table(cfg, students: list[dict], batches=(1, 8), seq_len: int = 128) -> list[dict]:
    from transformers import AutoModelForSequenceClassification

    from compress.data import prepare_task_data
    from compress.deploy.measure import onnx_latency, torch_latency
    from compress.search import latency
    from compress.model.teacher import load_tokenizer
    from compress.deploy.variants import measure_variants

    rows = []
    teacher_dir = RUN / "teacher_onnx"
    models = [{"name": "teacher", "trial_dir": RUN / "teacher-variants", "fp32": teacher_dir,
               "torch": cfg.teacher.model, "params": None}]
    for s in students:
        models.append({"name": f"trial {s['number']}" + (f" ({s['scenario']})" if s.get("scenario") else ""),
                       "trial_dir": Path(s["dir"]), "fp32": Path(s["dir"]) / "onnx", "torch": Path(s["dir"]) / "model",
                       "params": s["params"], "spec": s.get("spec")})
    data = prepare_task_data(cfg, load_tokenizer(str(teacher_dir)))
    for m in models:
        trial_dir = m["trial_dir"]
        if m["name"] == "teacher":  # the teacher's export lives in teacher_onnx; variants beside it
            trial_dir.mkdir(parents=True, exist_ok=True)
            link = trial_dir / "onnx"
            if not link.exists():
                link.symlink_to(teacher_dir.resolve())
        variants = measure_variants(trial_dir, data, lambda p: latency(p, data.eval, cfg), threads=2)
        torch_model = AutoModelForSequenceClassification.from_pretrained(m["torch"]).eval()
        params = m["params"] or sum(p.numel() for p in torch_model.parameters())
        from compress.model.inference import evaluate_model

        torch_metric = evaluate_model(torch_model, data)[0]["accuracy"]
        row = {"model": m["name"], "params": params, "spec": m.get("spec"), "runtimes": []}
        row["runtimes"].append({"runtime": "pytorch eager", "accuracy": torch_metric, "size_mb": None, **{
            f"b{b}": torch_latency(torch_model, batch_size=b, seq_len=seq_len, threads=2) for b in batches}})
        for v in variants:
            path = Path(v["dir"]) / "model.onnx"
            row["runtimes"].append({"runtime": f"onnx {v['precision']}", "accuracy": v["metrics"]["accuracy"],
                                    "size_mb": v["size_mb"], **{
                f"b{b}": onnx_latency(path, batch_size=b, seq_len=seq_len, threads=2) for b in batches}})
        del torch_model
        rows.append(row)
        print(f"{m['name']}: " + ", ".join(f"{r['runtime']} {r['accuracy']:.4f} b1 {r['b1']['median_ms']:.2f} ms"
                                          for r in row["runtimes"]), flush=True)
    return rows


def _summary(variants: list[dict]) -> str:
    lines = ["# Serving on SST-2: variants and the HTTP service", "",
             "Latency: fixed shape, batch 1 and 8 at sequence 128, 2 threads, 10 warm-up and 50 timed calls, "
             "median (p90 in the JSON). PyTorch eager uses torch's intra-op threads; ONNX Runtime one session per "
             "file with 2 intra-op threads and graph optimisation `all`. Accuracy: each runtime's own predictions "
             "on all 872 SST-2 dev rows (max length 64).", "",
             "| model | params | runtime | accuracy | size MB | b1 ms | b8 ms |", "|---|---|---|---|---|---|---|"]
    for row in variants:
        for r in row["runtimes"]:
            size = f"{r['size_mb']:.1f}" if r["size_mb"] else "-"
            lines.append(f"| {row['model']} | {row['params']:,} | {r['runtime']} | {r['accuracy']:.4f} | {size} | "
                         f"{r['b1']['median_ms']:.2f} | {r['b8']['median_ms']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--students", type=int, default=3, help="frontier students to measure besides the teacher")
    args = ap.parse_args()
    if not (RUN / "frontier.json").is_file():
        raise SystemExit(f"{RUN} has no frontier.json; run `make bench-search` first")
    cfg = load_run_config(RUN)
    doc = json.loads((RUN / "frontier.json").read_text())
    students = _pick_students(doc, args.students)
    variants = variant_table(cfg, students)
    write_results("serve-sst2", {"variants": variants, "students": students}, _summary(variants))


if __name__ == "__main__":
    main()
