"""SST-2 search: a TPE study of 30+ trials, then random, grid and GP with the same budget; hypervolume per trial.

Run `make bench-search` (several hours on 2 cores; each study resumes where it stopped). Writes
benchmarks/results/search-sst2.{json,md} and search-sst2-hypervolume.png.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, write_results  # noqa: E402

from compress.config import load_config  # noqa: E402
from compress.search import frontier, open_study, run_worker, study_records, study_summary, write_outputs  # noqa: E402

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "configs" / "search-sst2.yaml"


def _ensure_teacher(cfg) -> None:
    if Path(cfg.teacher.model, "config.json").is_file():
        return
    from compress.distill.jobs import finetune_teacher

    finetune_teacher(load_config(HERE / "configs" / "sst2.yaml"), force=True)


def remeasure_latency(cfg, study) -> tuple[dict[int, float], float]:
    """Median latency of every measured trial's deployed ONNX file and of the teacher's, measured again now, one
    after another on a quiet machine with the study's protocol: the studies ran while other work shared the
    2 cores at times, and this puts every sampler on the same footing."""
    from optuna.trial import TrialState

    from compress.data import prepare_task_data
    from compress.search import latency
    from compress.model.teacher import load_tokenizer

    data = prepare_task_data(cfg, load_tokenizer(str(cfg.run_dir / "teacher_onnx")))

    def median_of_three(path: Path) -> float:  # the protocol three times over, the middle median
        return float(np.median([latency(path, data.eval, cfg)["median_ms"] for _ in range(3)]))

    out = {}
    for t in study.get_trials(deepcopy=False):
        path = t.user_attrs.get("onnx")
        if t.state == TrialState.COMPLETE and path and Path(path).is_file():
            out[t.number] = median_of_three(Path(path))
    return out, median_of_three(cfg.run_dir / "teacher_onnx" / "model.onnx")


def hypervolume_history(study, teacher: dict, floor: float, latencies: dict[int, float] | None = None) -> list[float]:
    """Hypervolume of the feasible set after each trial, in normalised units.

    Objectives become losses in [0, 1]-ish: (1 - accuracy) / (1 - floor), params / teacher params,
    latency / teacher latency; reference point (1, 1, 1): the floor accuracy at the teacher's size and speed.
    """
    from optuna._hypervolume import compute_hypervolume
    from optuna.trial import TrialState

    ref = np.ones(3)
    points, history = [], []
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        if t.state == TrialState.COMPLETE and t.user_attrs.get("feasible") and t.user_attrs.get("state") == "complete":
            acc, params, lat = t.values
            if latencies is not None:
                lat = latencies[t.number]
            p = np.array([(1 - acc) / (1 - floor), params / teacher["params"], lat / teacher["latency_ms"]])
            if np.all(p < ref):
                points.append(p)
        if t.state in (TrialState.COMPLETE, TrialState.FAIL):
            history.append(float(compute_hypervolume(np.array(points), ref)) if points else 0.0)
    return history


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--config", default=str(CONFIG))
    ap.add_argument("--samplers", default="tpe,random,grid,gp")
    ap.add_argument("--trials", type=int, default=None, help="override n_trials for every sampler")
    args = ap.parse_args()
    base = load_config(args.config)
    _ensure_teacher(base)
    floor = float(base.search.constraints[0].split(">=")[1]) if base.search.constraints else 0.5
    results = {}
    quiet_teachers: list[float] = []
    for sampler in args.samplers.split(","):
        search = dataclasses.replace(base.search, sampler=sampler, n_trials=args.trials or base.search.n_trials)
        cfg = dataclasses.replace(base, name=f"{base.name}-{sampler}", search=search)
        run_worker(cfg)
        study = open_study(cfg, create=False)
        write_outputs(cfg, study)
        summary = study_summary(cfg)
        teacher = study.user_attrs["teacher"]
        objectives = study.user_attrs["objectives"]
        recs = study_records(study, objectives)  # confirmed figures where the study's confirmation pass measured them
        base_rec = next(r for r in recs if r["baseline"] and r["state"] in ("complete", "stopped"))
        front_numbers = {t.number for t in frontier(study)}
        front = [r for r in recs if r["number"] in front_numbers]
        done = [r for r in recs if r["timings"]]
        mean_t = {k: float(np.mean([r["timings"][k] for r in done])) for k in ("distill_s", "evaluate_s", "export_s", "measure_s", "total_s")}
        quiet, teacher_quiet = remeasure_latency(cfg, study)
        quiet_teachers.append(teacher_quiet)
        results[sampler] = {
            "frontier": front, "baseline": base_rec, "teacher": teacher, "summary": summary,
            "dominating_baseline": sum(1 for r in json.loads((cfg.run_dir / "frontier.json").read_text())["frontier"]
                                       if r.get("dominates_baseline")),
            "hypervolume_in_study": hypervolume_history(study, teacher, floor),
            "study": study, "quiet": quiet,
            "latency_remeasured_ms": quiet, "teacher_latency_remeasured_ms": teacher_quiet,
            "mean_timings": mean_t, "trials": len(recs),
        }
    # One reference for every sampler: the teachers' re-measured latencies are the same file measured again.
    teacher_ref = float(np.median(quiet_teachers))
    for r in results.values():
        study, quiet = r.pop("study"), r.pop("quiet")
        r["hypervolume"] = hypervolume_history(study, {**r["teacher"], "latency_ms": teacher_ref}, floor, quiet)
        r["teacher_latency_reference_ms"] = teacher_ref
    _plot(results)
    write_results("search-sst2", {"results": results}, _summary(results, base))


def _plot(results: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for sampler, r in results.items():
        ax.plot(range(1, len(r["hypervolume"]) + 1), r["hypervolume"], label=sampler, marker=".")
    ax.set_xlabel("trial")
    ax.set_ylabel("hypervolume (normalised, feasible trials)")
    ax.set_title("SST-2 search: hypervolume after each trial")
    ax.legend()
    fig.tight_layout()
    RESULTS.mkdir(parents=True, exist_ok=True)
    fig.savefig(RESULTS / "search-sst2-hypervolume.png", dpi=120)


def _summary(results: dict, cfg) -> str:
    lines = ["# Search on SST-2 (MiniLM-L6 teacher)", "",
             f"Objectives {list(cfg.search.objectives)}, constraints {list(cfg.search.constraints)}, "
             f"{cfg.search.n_trials} trials per sampler; latency with ONNX Runtime on the exported file, batch 1, "
             "the eval set's own token lengths, 2 threads, 10 warm-up and 50 timed calls (median).", ""]
    for sampler, r in results.items():
        t, b = r["teacher"], r["baseline"]
        lines += [f"## {sampler}", "",
                  f"Teacher: accuracy {t['metric']:.4f}, {t['params']:,} params, {t['latency_ms']:.2f} ms. "
                  f"Baseline (trial {b['number']}): accuracy {b['value']:.4f}, {b['params']:,} params, "
                  f"{b['latency_ms']:.2f} ms. Frontier points dominating the baseline: {r['dominating_baseline']}. "
                  f"Early stopping saved {r['summary']['early_stopping_saved_seconds'] / 60:.1f} min.", "",
                  "| trial | accuracy | params | latency ms | layers | heads | FFN |", "|---|---|---|---|---|---|---|"]
        for p in r["frontier"]:
            s = p["spec"] or {}
            lines.append(f"| {p['number']} | {p['value']:.4f} | {p['params']:,} | {p['latency_ms']:.2f} | "
                         f"{s.get('num_layers')} | {s.get('heads')} | {s.get('intermediate_size')} |")
        mt = r["mean_timings"]
        lines += ["", f"Mean wall time per trial: distill {mt['distill_s']:.1f} s, evaluate {mt['evaluate_s']:.1f} s, "
                      f"export {mt['export_s']:.1f} s, measure {mt['measure_s']:.1f} s (total {mt['total_s']:.1f} s).", ""]
    lines += ["## Hypervolume after each trial", "",
              "Feasible completed trials only, objectives scaled to losses: (1 - accuracy) / (1 - threshold), "
              "params / teacher params, latency / teacher latency; reference point (1, 1, 1). Latency here is every "
              "trial's deployed ONNX file measured again after all studies, one after another on a quiet machine "
              "with the study's protocol, three times over (the middle median), normalised by one teacher latency for all samplers "
              "(the median of the teacher's re-measurements) (the in-study figures, which the samplers saw, are in the JSON as "
              "`hypervolume_in_study`; other work shared the cores during parts of the studies).", "",
              "| trial | " + " | ".join(results) + " |", "|---|" + "---|" * len(results)]
    n = max(len(r["hypervolume"]) for r in results.values())
    for i in range(n):
        row = [f"{r['hypervolume'][i]:.4f}" if i < len(r["hypervolume"]) else "" for r in results.values()]
        lines.append(f"| {i + 1} | " + " | ".join(row) + " |")
    lines += ["", "![hypervolume](search-sst2-hypervolume.png)"]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
