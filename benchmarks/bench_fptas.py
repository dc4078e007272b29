"""FPTAS on SST-2 with the MiniLM teacher as the maximum point: the ranked table over a grid of candidate
architectures, and the top candidate distilled fully, placed next to the SST-2 search's frontier.

Uses the search benchmark's config (same 3,000 training rows, dev set, latency protocol) so the distilled
candidate compares with the frontier of runs/search-sst2-tpe. Full distillation uses the distillation settings of
the search's knee (trial 25: alpha_ce 0.6, temperature 2, learning rate 3e-4), so the comparison is about the
architecture FPTAS picks. With --calibrate (the default of `make bench-fptas`) every candidate of the grid is
distilled fully, and the table shows what each alpha of the W-coefficient would put first (compress.search.fptas.calibrate).
Writes benchmarks/results/<name>.{json,md} and, when calibrating, <name>-calibration.png.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from common import write_results  # noqa: E402

from compress.config import FptasConfig, load_config  # noqa: E402
from compress.search import calibration_markdown, ranking_markdown, run_fptas  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--top-k", type=int, default=1)
    ap.add_argument("--alpha", type=float, default=1.0)
    ap.add_argument("--calibrate", action="store_true", help="distill every candidate; report what each alpha picks")
    ap.add_argument("--depths", default="2,3,4,5")
    ap.add_argument("--heads", default="4,8")
    ap.add_argument("--hidden", default="256,384")
    ap.add_argument("--ffn", default="384,1536")
    ap.add_argument("--name", default="fptas-sst2")
    args = ap.parse_args()
    ints = lambda text: tuple(int(x) for x in text.split(","))  # noqa: E731
    base = load_config(HERE / "configs" / "search-sst2.yaml")
    if not Path(base.teacher.model, "config.json").is_file():
        raise SystemExit(f"{base.teacher.model} is missing; run `make bench-distill` first")
    grid = FptasConfig(depths=ints(args.depths), heads=ints(args.heads), hidden_sizes=ints(args.hidden),
                       intermediate_sizes=ints(args.ffn), steps=args.steps, eval_rows=400, alpha=args.alpha,
                       top_k=args.top_k, calibrate=args.calibrate)
    kd = dataclasses.replace(base.distill, alpha_ce=0.6, alpha_task=0.4, temperature=2.0,
                             train=dataclasses.replace(base.distill.train, learning_rate=3e-4))
    cfg = dataclasses.replace(base, name="fptas-sst2", fptas=grid, distill=kd)
    res = run_fptas(cfg)
    metric = cfg.task.primary_metric
    search_front = ROOT / "runs" / "search-sst2-tpe" / "frontier.json"
    doc = json.loads(search_front.read_text()) if search_front.is_file() else None
    lines = [ranking_markdown(res, metric)]
    if doc:
        lines += ["## Next to the search's frontier (runs/search-sst2-tpe, same data and latency protocol)", "",
                  f"| model | {metric} | parameters | latency ms |", "|---|---|---|---|"]
        t = doc["teacher"]
        lines.append(f"| teacher | {t['metric']:.4f} | {t['params']:,} | {t['latency_ms']:.2f} |")
        b = doc["baseline"]
        lines.append(f"| search baseline (trial {b['number']}) | {b['value']:.4f} | {b['params']:,} | {b['latency_ms']:.2f} |")
        for p in doc["frontier"]:
            lines.append(f"| search frontier trial {p['number']} | {p['value']:.4f} | {p['params']:,} | {p['latency_ms']:.2f} |")
        for d in [d for d in res["distilled"] if d["rank"] <= max(args.top_k, 1)]:
            lines.append(f"| **FPTAS rank {d['rank']} at alpha {res['alpha']:g}: {d['candidate']}** | {d['value']:.4f} | "
                         f"{d['params']:,} | {d['latency_ms']:.2f} |")
        cal = res.get("calibration") or {}
        if cal.get("alpha_meeting_constraints") is not None:
            a = cal["alpha_meeting_constraints"]
            pick = next(p for p in cal["per_alpha"] if p["alpha"] == a)
            lines.append(f"| **FPTAS rank 1 at alpha {a:g} (smallest alpha meeting the constraints): {pick['top']}** | "
                         f"{pick['value']:.4f} | {pick['params']:,} | {pick['latency_ms']:.2f} |")
    if "calibration" in res:
        import shutil

        shutil.copy(cfg.run_dir / "fptas" / "calibration.png", HERE / "results" / f"{args.name}-calibration.png")
        lines += ["", calibration_markdown(res["calibration"]).replace("# FPTAS calibration", "## Calibration"),
                  f"![calibration]({args.name}-calibration.png)"]
    write_results(args.name, {"fptas": res, "search_frontier": doc}, "\n".join(lines))


if __name__ == "__main__":
    main()
