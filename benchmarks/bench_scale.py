"""bench-scale: SST-2 at full size. A teacher on all 67,349 training rows, a multi-fidelity and a full-fidelity study
of the same space and sampler, and the multi-fidelity frontier promoted to all rows.

Stages, each resumable (a session lasts 3 hours; run it again and it goes on where it stopped), state under
.cache/bench-scale/ (the configs' output_dir):

1. teacher: `compress teacher` on benchmarks/configs/scale-sst2.yaml, 3 epochs, a checkpoint every 300 steps.
2. mf: a 30-trial multi-fidelity study (rungs of 1,500 / 4,000 / 12,000 training rows, the best third promoted).
3. ff: the same space, sampler and seed with every trial on 12,000 rows (the top rung's budget), 30 trials.
4. promote: the multi-fidelity frontier retrained on all training rows (compress promote).

Compute is counted in training rows seen (steps × batch size) and wall seconds of the trials. Goals:
teacher_accuracy (>= 0.90), hv_ratio_at_third_compute (hypervolume of the multi-fidelity study when it had spent one
third of the full-fidelity study's compute over the full-fidelity study's final hypervolume; >= 1.0),
promoted_share (share of the reported frontier trained on all rows; 1.0). `--stage NAME` runs up to that stage.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import write_results  # noqa: E402

from compress.config import from_mapping  # noqa: E402

CONFIG = ROOT / "benchmarks" / "configs" / "scale-sst2.yaml"
STAGES = ("teacher", "mf", "ff", "promote")
TOP_ROWS = 12000
SPACE = {
    "num_layers": {"type": "int", "low": 1, "high": 6},
    "heads": {"type": "categorical", "choices": [4, 8, 12]},
    "intermediate_size": {"type": "categorical", "choices": [384, 768, 1536]},
    "alpha_ce": {"type": "float", "low": 0.2, "high": 1.0, "step": 0.4},
    "learning_rate": {"type": "categorical", "choices": [5.0e-5, 1.0e-4, 3.0e-4]},
}
SEARCH = {"n_trials": 30, "sampler": "tpe", "seed": 0, "objectives": ["metric", "params", "latency_ratio"],
          "constraints": ["accuracy >= 0.80"], "early_stopping": {"min_fraction": 0.3, "margin": 0.05},
          "latency": {"batch_size": 1, "seq_len": "eval", "threads": 2}, "space": SPACE}
HV_REFERENCE = {"accuracy": 0.80, "params_share": 1.0, "latency_ratio": 1.0}  # the worst corner counted


def base_mapping() -> dict:
    raw = yaml.safe_load(CONFIG.read_text())
    raw["output_dir"] = str(ROOT / raw["output_dir"])
    for part in ("train", "eval"):
        raw["data"][part]["path"] = str((ROOT / raw["data"][part]["path"]).resolve())
    return raw


def teacher_dir(raw: dict) -> Path:
    return Path(raw["output_dir"]) / raw["name"] / "teacher"


def study_mapping(raw: dict, kind: str) -> dict:
    out = copy.deepcopy(raw)
    out["name"] = f"{raw['name']}-{kind}"
    out["teacher"] = {"model": str(teacher_dir(raw))}
    out["search"] = copy.deepcopy(SEARCH)
    if kind == "mf":
        out["search"]["fidelity"] = {"enabled": True, "rows": [1500, 4000, TOP_ROWS], "reduction": 3, "seed": 0}
    else:  # every trial at the top rung's budget: the same number of rows, drawn by the data loader's sampling
        out["data"]["train"]["limit"] = TOP_ROWS
        out["data"]["train"]["sample_seed"] = 0
    return out


def stage_teacher(raw: dict) -> dict:
    from compress.distill.jobs import finetune_teacher

    metrics = teacher_dir(raw) / "metrics.json"
    if not metrics.exists():
        finetune_teacher(from_mapping(raw, config_path=str(CONFIG)), force=True)
    return json.loads(metrics.read_text())


def stage_study(raw: dict, kind: str):
    from compress.search import open_study, run_worker

    cfg = from_mapping(study_mapping(raw, kind), config_path=str(CONFIG))
    run_worker(cfg)
    return cfg, open_study(cfg, create=False)


def _values(t, teacher_params: float) -> list[float] | None:
    """A feasible completed trial as minimisation losses (-accuracy, params share, latency ratio), else None."""
    ua = t.user_attrs
    if not ua.get("feasible") or ua.get("state") != "complete":
        return None
    m = ua["measures"]
    return [-ua["metrics"]["accuracy"], m["params"] / teacher_params, m["latency_ratio"]]


def hypervolume(points: list[list[float]]) -> float:
    """Dominated hypervolume of the points up to HV_REFERENCE (points beyond it on any axis add nothing)."""
    import numpy as np
    from optuna._hypervolume import compute_hypervolume

    ref = np.array([-HV_REFERENCE["accuracy"], HV_REFERENCE["params_share"], HV_REFERENCE["latency_ratio"]])
    inside = [p for p in points if all(a < b for a, b in zip(p, ref))]
    return float(compute_hypervolume(np.array(inside), ref)) if inside else 0.0


def compute_curve(study, teacher_params: float, top_only: bool) -> list[dict]:
    """Trials in order of completion: cumulative rows seen and the hypervolume of the comparable trials so far."""
    from optuna.trial import TrialState

    from compress.search.pareto import on_top_rung

    top = on_top_rung(study) if top_only else (lambda t: True)
    done = sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.datetime_complete)
    rows = secs = 0.0
    pts: list[list[float]] = []
    out = []
    for t in done:
        rows += float(t.user_attrs.get("rows_seen") or 0)
        # a trial's own wall time: the time its measurement waited for another job's lock is not its compute
        secs += float((t.user_attrs.get("timings") or {}).get("total_s") or 0) - float(
            (t.user_attrs.get("latency_method") or {}).get("lock_wait_s") or 0)
        v = _values(t, teacher_params)
        if v is not None and top(t):
            pts.append(v)
        out.append({"trial": t.number, "rung": t.user_attrs.get("rung"), "rows_seen": rows, "seconds": secs,
                    "hv": hypervolume(pts)})
    return out


def hv_at(curve: list[dict], rows: float) -> float:
    """The hypervolume once `rows` training rows had been spent (the last point at or below it)."""
    hv = 0.0
    for p in curve:
        if p["rows_seen"] <= rows:
            hv = p["hv"]
    return hv


def summary_md(p: dict) -> str:
    g = p["goals"]
    lines = ["# bench-scale: SST-2 at full size, multi-fidelity against full-fidelity search", "",
             f"Teacher: MiniLM-L6 fine-tuned on all {p['teacher']['train_rows']:,} SST-2 training rows, "
             f"{p['teacher']['epochs']} epochs: dev accuracy {p['teacher']['accuracy']:.4f} "
             f"({p['teacher']['train_hours']:.2f} h on {p['teacher']['device']}).", "",
             "## Goals", "", "| goal | value | target | met |", "|---|---|---|---|"]
    for k, v in g.items():
        lines.append(f"| {k} | {v['value']:.4f} | {v['goal']} | {'yes' if v['met'] else 'no'} |")
    for kind in ("mf", "ff"):
        s = p["studies"][kind]
        lines += ["", f"## {s['title']}", "", f"{s['trials']} trials, {s['rows_seen']:,} training rows seen, "
                  f"{s['seconds'] / 3600:.2f} trial-hours; final hypervolume {s['hv_final']:.4f}."]
    lines += ["", f"Hypervolume reference point: accuracy {HV_REFERENCE['accuracy']}, parameters = the teacher's, "
              "latency ratio 1.0 (objectives accuracy up, parameters down, latency ratio to the teacher down; feasible "
              "top-rung trials only, on the SST-2 dev set).", ""]
    if p.get("promotion"):
        lines += ["## Promoted frontier (all training rows)", "",
                  "| trial | rows | accuracy | accuracy at 12k rows | params | latency ratio [95% CI] | on promoted frontier |",
                  "|---|---|---|---|---|---|---|"]
        for q in p["promotion"]["points"]:
            lo = q["low_budget"]
            lines.append(f"| {q['trial']} | {q['train_rows']:,} | {q['value']:.4f} | {lo['value']:.4f} | "
                         f"{q['params']:,} | {q['latency_ratio']:.3f} [{q['latency_ratio_ci95'][0]:.3f}, "
                         f"{q['latency_ratio_ci95'][1]:.3f}] | {'yes' if q['trial'] in p['promotion']['frontier'] else ''} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--stage", choices=STAGES, default=STAGES[-1], help="run the stages up to this one")
    ap.add_argument("--promote-top", type=int, default=3, help="frontier points promoted to all rows")
    args = ap.parse_args()
    raw = base_mapping()
    upto = STAGES.index(args.stage)
    teacher = stage_teacher(raw)
    print(f"teacher: accuracy {teacher['value']:.4f} on {teacher['eval_rows']} dev rows, {teacher['train_rows']:,} "
          f"training rows, {teacher['train_seconds'] / 3600:.2f} h", flush=True)
    if upto < 1:
        return
    studies = {}
    for kind in ("mf", "ff")[: upto]:
        studies[kind] = stage_study(raw, kind)
    if upto < 2:
        return
    from compress.search import open_study, write_outputs
    from compress.search.promote import promote_frontier

    mf_cfg, mf = studies["mf"]
    ff_cfg, ff = studies["ff"]
    promotion = mf.user_attrs.get("promotion")
    if upto >= 3 and promotion is None:
        promote_frontier(mf_cfg, args.promote_top)
        mf = open_study(mf_cfg, create=False)
        write_outputs(mf_cfg, mf)
        promotion = json.loads((mf_cfg.run_dir / "promoted.json").read_text())
    tparams = float(teacher["params"])
    curves = {"mf": compute_curve(mf, tparams, top_only=True), "ff": compute_curve(ff, tparams, top_only=False)}
    ff_total = curves["ff"][-1]["rows_seen"]
    hv_ff = curves["ff"][-1]["hv"]
    hv_mf_third = hv_at(curves["mf"], ff_total / 3)
    ratio = hv_mf_third / hv_ff if hv_ff > 0 else 0.0
    full_rows = teacher["train_rows"]
    reported = (promotion or {}).get("points") or []
    on_front = [q for q in reported if q["trial"] in (promotion or {}).get("frontier", [])]
    share = (sum(q["train_rows"] == full_rows for q in on_front) / len(on_front)) if on_front else 0.0
    goals = {
        "teacher_accuracy": {"value": teacher["value"], "goal": 0.90, "met": teacher["value"] >= 0.90},
        "hv_ratio_at_third_compute": {"value": ratio, "goal": 1.0, "met": ratio >= 1.0,
                                      "mf_hv_at_third": hv_mf_third, "ff_hv_final": hv_ff,
                                      "ff_rows_seen": ff_total},
        "promoted_share": {"value": share, "goal": 1.0, "met": share >= 1.0},
    }
    payload = {
        "goals": goals,
        "teacher": {"accuracy": teacher["value"], "train_rows": teacher["train_rows"],
                    "epochs": (teacher.get("train_config") or {}).get("epochs"),
                    "train_hours": teacher["train_seconds"] / 3600,
                    "device": (teacher.get("training_device") or {}).get("device", "cpu")},
        "studies": {k: {"title": {"mf": "Multi-fidelity study (rungs 1,500 / 4,000 / 12,000 rows, best third "
                                        "promoted)", "ff": "Full-fidelity study (every trial on 12,000 rows)"}[k],
                        "trials": len(c), "rows_seen": int(c[-1]["rows_seen"]), "seconds": c[-1]["seconds"],
                        "hv_final": c[-1]["hv"], "curve": c} for k, c in curves.items()},
        "promotion": promotion, "gpu": "no GPU was lent to this session: the GPU path was not timed",
    }
    write_results("scale-sst2", payload, summary_md(payload))
    print(json.dumps(goals, indent=2))


if __name__ == "__main__":
    main()
