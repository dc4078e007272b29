"""FPTAS on SST-2 with the MiniLM teacher as the maximum point: the ranked table over a grid of candidate
architectures, and the top candidate distilled fully, placed next to the SST-2 search's frontier.

Uses the search benchmark's config (same 3,000 training rows, dev set, latency protocol) so the distilled
candidate compares with the frontier of runs/search-sst2-tpe. Run `make bench-fptas`.
Writes benchmarks/results/fptas-sst2.{json,md}.
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
from compress.fptas import ranking_markdown, run_fptas  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--top-k", type=int, default=1)
    args = ap.parse_args()
    base = load_config(HERE / "configs" / "search-sst2.yaml")
    if not Path(base.teacher.model, "config.json").is_file():
        raise SystemExit(f"{base.teacher.model} is missing; run `make bench-distill` first")
    grid = FptasConfig(depths=(2, 3, 4), heads=(4, 8), hidden_sizes=(256, 384), intermediate_sizes=(1536,),
                       steps=args.steps, eval_rows=400, alpha=1.0, top_k=args.top_k)
    cfg = dataclasses.replace(base, name="fptas-sst2", fptas=grid)
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
        for d in res["distilled"]:
            lines.append(f"| **FPTAS rank {d['rank']}: {d['candidate']}** | {d['value']:.4f} | {d['params']:,} | "
                         f"{d['latency_ms']:.2f} |")
    write_results("fptas-sst2", {"fptas": res, "search_frontier": doc}, "\n".join(lines))


if __name__ == "__main__":
    main()
