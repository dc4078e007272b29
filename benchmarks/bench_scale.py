"""bench-scale: SST-2 at full size. A teacher on all 67,349 training rows, a multi-fidelity and a full-fidelity study
of the same space and sampler, and the multi-fidelity frontier promoted to all rows.

Stages, each resumable (a session lasts 3 hours; run it again and it goes on where it stopped), state under
.cache/bench-scale/ (the configs' output_dir):

1. teacher: `compress teacher` on benchmarks/configs/scale-sst2.yaml, 2 epochs, a checkpoint every 300 steps.
2. mf: a 30-trial multi-fidelity study (rungs of 1,500 / 4,000 / 12,000 training rows, the best third promoted;
   a promotion goes on from its parent's model on the rows its rung adds: search.fidelity.warm_start, the default).
3. ff: the same space, sampler and seed with every trial on 12,000 rows (the top rung's budget), 30 trials.
4. promote: the multi-fidelity frontier (all of it by default; --promote-top K for fewer) retrained on all
   training rows (compress promote).

`--study mf-relaxed` runs one more multi-fidelity study, the same as mf but with
search.fidelity.lower_rung_metric: relaxed (the accuracy bound judged at the top rung only); the results show its
hypervolume at one third of the full-fidelity compute beside mf's.

Compute is counted in training rows seen (steps × batch size) and wall seconds of the trials. Goals:
teacher_accuracy (>= 0.90), hv_ratio_at_third_compute (hypervolume of the multi-fidelity study when it had spent one
third of the full-fidelity study's compute over the full-fidelity study's final hypervolume; >= 1.0),
promoted_share (share of the reported frontier trained on all rows; 1.0). `--stage NAME` runs up to that stage;
`--render` writes the results from what is done (a goal whose stage has not run is reported as not measured yet).
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
    "alpha_ce": {"type": "float", "low": 0.2, "high": 1.0, "step": 0.2},  # on its grid: the baseline's 0.8
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
    if kind.startswith("mf"):
        out["search"]["fidelity"] = {"enabled": True, "rows": [1500, 4000, TOP_ROWS], "reduction": 3, "seed": 0}
        # mf judges the metric bound at every rung, mf-relaxed at the top rung only (fidelity.lower_rung_metric)
        out["search"]["fidelity"]["lower_rung_metric"] = "relaxed" if kind == "mf-relaxed" else "hard"
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
    from compress.search.results import trial_seconds

    top = on_top_rung(study) if top_only else (lambda t: True)
    done = sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.datetime_complete)
    rows = secs = 0.0
    pts: list[list[float]] = []
    out = []
    for t in done:
        rows += float(t.user_attrs.get("rows_seen") or 0)
        secs += trial_seconds(t)  # its own wall time: a wait for another job's measurement lock is not compute
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


def _fmt(v) -> str:
    return "not measured yet" if v is None else f"{v:.4f}"


def summary_md(p: dict) -> str:
    g = p["goals"]
    lines = ["# bench-scale: SST-2 at full size, multi-fidelity against full-fidelity search", ""]
    if p.get("status"):
        lines += [f"**Not finished:** {p['status']}", ""]
    lines += [f"Teacher: MiniLM-L6 fine-tuned on all {p['teacher']['train_rows']:,} SST-2 training rows, "
              f"{p['teacher']['epochs']:g} epochs: dev accuracy {p['teacher']['accuracy']:.4f} "
              f"({p['teacher']['train_hours']:.2f} h on {p['teacher']['device']}).", ""]
    if p["teacher"].get("curve"):
        lines += ["Its dev accuracy during training: " + ", ".join(
            f"{c['accuracy']:.4f} at step {c['step']:,}" for c in p["teacher"]["curve"]) + ".", ""]
    lines += ["## Goals", "", "| goal | value | target | met |", "|---|---|---|---|"]
    for k, v in g.items():
        lines.append(f"| {k} | {_fmt(v['value'])} | {v['goal']} | {'yes' if v['met'] else 'no'} |")
    for kind in KINDS:
        s = p["studies"].get(kind)
        if not s:
            continue
        promoted = f" and {s['promotions']} promotions" if s.get("promotions") else ""
        if s.get("warm_started"):
            promoted += (f" ({s['warm_started']} of them continued from their parent's model on the rows their rung "
                         "adds; their rows count once)")
        lines += ["", f"## {s['title']}", "", f"{s['trials']} of {s['target']} trials completed{promoted}, "
                  f"{s['rows_seen']:,} training rows seen, {s['seconds'] / 3600:.2f} trial-hours; hypervolume so far "
                  f"{s['hv_final']:.4f}."]
        v = (g["hv_ratio_at_third_compute"].get("variants") or {}).get(kind)
        if v:
            ff_rows = g["hv_ratio_at_third_compute"]["ff_rows_seen"]
            lines[-1] += (f" At one third of the full-fidelity study's compute ({ff_rows / 3:,.0f} rows) its hypervolume "
                          f"was {v['mf_hv_at_third']:.4f}: {v['ratio']:.2f} of the full-fidelity study's final "
                          f"{g['hv_ratio_at_third_compute']['ff_hv_final']:.4f}.")
    lines += ["", f"Hypervolume reference point: accuracy {HV_REFERENCE['accuracy']}, parameters = the teacher's, "
              "latency ratio 1.0 (objectives accuracy up, parameters down, latency ratio to the teacher down; feasible "
              "top-rung trials only, on the SST-2 dev set).", ""]
    if p.get("promotion"):
        ps = g["promoted_share"]
        lines += ["## Promoted frontier (all training rows)", "",
                  f"The search's frontier had {ps['search_frontier_points']} points; "
                  f"{len(p['promotion']['points'])} of them (best accuracy first) were retrained on all rows, and "
                  "the frontier the "
                  f"run reports (frontier.json, the report, `compress package --pick`) has {ps['reported_points']} "
                  f"point{'s' if ps['reported_points'] != 1 else ''}, the promoted frontier.", "",
                  "| trial | rows | accuracy | accuracy at 12k rows | params | latency ratio [95% CI] | on promoted frontier |",
                  "|---|---|---|---|---|---|---|"]
        for q in p["promotion"]["points"]:
            lo = q["low_budget"]
            lines.append(f"| {q['trial']} | {q['train_rows']:,} | {q['value']:.4f} | {lo['value']:.4f} | "
                         f"{q['params']:,} | {q['latency_ratio']:.3f} [{q['latency_ratio_ci95'][0]:.3f}, "
                         f"{q['latency_ratio_ci95'][1]:.3f}] | {'yes' if q['trial'] in p['promotion']['frontier'] else ''} |")
    return "\n".join(lines)


TITLES = {"mf": "Multi-fidelity study (rungs 1,500 / 4,000 / 12,000 rows, best third promoted, promotions "
                "continued from their parent's model)",
          "mf-relaxed": "Multi-fidelity study as above, with the accuracy bound judged at the top rung only "
                        "(search.fidelity.lower_rung_metric: relaxed)",
          "ff": "Full-fidelity study (every trial on 12,000 rows)"}
KINDS = ("mf", "mf-relaxed", "ff")


def existing_study(raw: dict, kind: str):
    """(config, study) of a study that has been started, else None; opens nothing new."""
    from compress.search import open_study

    cfg = from_mapping(study_mapping(raw, kind), config_path=str(CONFIG))
    if not (cfg.run_dir / "study.db").is_file():
        return None
    return cfg, open_study(cfg, create=False)


def existing_studies(raw: dict) -> dict:
    """{kind: (config, study)} of every study that has been started."""
    return {k: s for k in KINDS if (s := existing_study(raw, k)) is not None}


def mf_promotion(studies: dict) -> dict | None:
    """The multi-fidelity study's promotion record, None before it is promoted."""
    return studies["mf"][1].user_attrs.get("promotion") if "mf" in studies else None


def render(raw: dict, teacher: dict, studies: dict, promotion: dict | None) -> dict:
    """benchmarks/results/scale-sst2.{md,json} from what is done: goals that need a stage still to come are
    reported as not measured yet (value null), never estimated."""
    from compress.search.study import _counts

    tparams = float(teacher["params"])
    curves, done, counts = {}, {}, {}
    for kind, (cfg, study) in studies.items():
        curves[kind] = compute_curve(study, tparams, top_only=kind.startswith("mf"))
        c = _counts(study, study.user_attrs.get("fidelity"))  # the worker's own count: promotions are extra
        counts[kind] = c["complete"]
        done[kind] = c["complete"] >= cfg.search.n_trials and not c["running_all"] and not c["waiting"]
    ratio = hv_mf_third = hv_ff = ff_total = None
    variants = {}
    if done.get("ff") and curves["ff"]:
        ff_total = curves["ff"][-1]["rows_seen"]
        hv_ff = curves["ff"][-1]["hv"]
        for kind in ("mf", "mf-relaxed"):
            if done.get(kind):
                hv = hv_at(curves[kind], ff_total / 3)
                variants[kind] = {"mf_hv_at_third": hv, "ratio": hv / hv_ff if hv_ff > 0 else 0.0,
                                  "mf_hv_final": curves[kind][-1]["hv"], "mf_rows_seen": curves[kind][-1]["rows_seen"]}
    if "mf" in variants:
        hv_mf_third, ratio = variants["mf"]["mf_hv_at_third"], variants["mf"]["ratio"]
    share = reported = search_front = None
    if promotion is not None and "mf" in studies:
        # What a user is shown: the frontier in the run's frontier.json (the report and `compress package --pick`
        # read it), each point with the rows its model was trained on.
        fpath = studies["mf"][0].run_dir / "frontier.json"
        fdoc = json.loads(fpath.read_text()) if fpath.is_file() else {}
        reported = fdoc.get("frontier") or []
        search_front = len(fdoc.get("frontier_search") or [])
        full = sum(r.get("train_rows") == teacher["train_rows"] for r in reported)
        share = full / len(reported) if reported else 0.0
    goals = {
        "teacher_accuracy": {"value": teacher["value"], "goal": 0.90, "met": teacher["value"] >= 0.90},
        "hv_ratio_at_third_compute": {"value": ratio, "goal": 1.0, "met": ratio is not None and ratio >= 1.0,
                                      "mf_hv_at_third": hv_mf_third, "ff_hv_final": hv_ff, "ff_rows_seen": ff_total,
                                      "variants": variants or None},
        "promoted_share": {"value": share, "goal": 1.0, "met": share is not None and share >= 1.0,
                           "reported_points": None if reported is None else len(reported),
                           "search_frontier_points": search_front},
    }
    todo = [f"the {kind} study ({counts.get(kind, 0)} of its trials completed)" for kind in ("mf", "ff")
            if not done.get(kind)] + (["the promotion of the multi-fidelity frontier"] if promotion is None else [])
    tcurve = [{"step": c["step"], "accuracy": c["accuracy"]} for c in _teacher_curve(raw) if "accuracy" in c]
    payload = {
        "goals": goals,
        "status": ("still to run: " + "; ".join(todo) + ". Run `make bench-scale` again to go on.") if todo else None,
        "teacher": {"accuracy": teacher["value"], "train_rows": teacher["train_rows"],
                    "epochs": (teacher.get("train_config") or {}).get("epochs"),
                    "learning_rate": (teacher.get("train_config") or {}).get("learning_rate"),
                    "train_hours": teacher["train_seconds"] / 3600,
                    "device": (teacher.get("training_device") or {}).get("device", "cpu"), "curve": tcurve},
        "studies": {k: {"title": TITLES[k], "trials": counts[k], "promotions": len(c) - counts[k],
                        "target": studies[k][0].search.n_trials,
                        "finished": done[k], "rows_seen": int(c[-1]["rows_seen"]) if c else 0,
                        "warm_started": sum(bool((t.user_attrs.get("warm_start") or {}).get("used"))
                                            for t in studies[k][1].get_trials(deepcopy=False)),
                        "seconds": c[-1]["seconds"] if c else 0.0, "hv_final": c[-1]["hv"] if c else 0.0,
                        "curve": c} for k, c in curves.items()},
        "promotion": promotion, "gpu": "no GPU was lent to this session: the GPU path was not timed",
    }
    write_results("scale-sst2", payload, summary_md(payload))
    return payload


def _teacher_curve(raw: dict) -> list[dict]:
    path = teacher_dir(raw) / "curves.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--stage", choices=STAGES, default=STAGES[-1], help="run the stages up to this one")
    ap.add_argument("--promote-top", type=int, default=None,
                    help="promote the best K frontier points to all rows (default: the whole frontier)")
    ap.add_argument("--study", choices=KINDS,
                    help="run only this study (after the teacher), e.g. ff while the mf settings are still changing")
    ap.add_argument("--render", action="store_true", help="only write the results from what is done; trains nothing")
    args = ap.parse_args()
    raw = base_mapping()
    if args.render:
        metrics = teacher_dir(raw) / "metrics.json"
        if not metrics.is_file():
            raise SystemExit("bench-scale: the teacher has not finished; nothing to render yet")
        studies = existing_studies(raw)
        print(json.dumps(render(raw, json.loads(metrics.read_text()), studies, mf_promotion(studies))["goals"],
                         indent=2))
        return
    upto = STAGES.index(args.stage)
    teacher = stage_teacher(raw)
    print(f"teacher: accuracy {teacher['value']:.4f} on {teacher['eval_rows']} dev rows, {teacher['train_rows']:,} "
          f"training rows, {teacher['train_seconds'] / 3600:.2f} h", flush=True)
    # the results from what is done so far (never an empty render over finished studies)
    studies = existing_studies(raw)
    render(raw, teacher, studies, mf_promotion(studies))
    if args.study:
        studies[args.study] = stage_study(raw, args.study)
        print(json.dumps(render(raw, teacher, studies, mf_promotion(studies))["goals"], indent=2))
        return
    for kind in ("mf", "ff")[: upto]:
        studies[kind] = stage_study(raw, kind)
        if not (kind == "ff" and upto == 2):  # with --stage ff the closing render below writes the same thing
            render(raw, teacher, studies, mf_promotion(studies))
    if upto < 2:
        return
    from compress.search import open_study, write_outputs
    from compress.search.promote import promote_frontier, promotion_candidates

    mf_cfg, mf = studies["mf"]
    promotion = mf_promotion(studies)
    wanted = [t.number for t in promotion_candidates(mf_cfg, mf, args.promote_top)]
    if upto >= 3 and (promotion is None or sorted(promotion["candidates"]) != sorted(wanted)):
        promote_frontier(mf_cfg, args.promote_top)  # resumes: the points already retrained are not trained again
        mf = open_study(mf_cfg, create=False)
        write_outputs(mf_cfg, mf)
        studies["mf"] = (mf_cfg, mf)
        promotion = json.loads((mf_cfg.run_dir / "promoted.json").read_text())
    print(json.dumps(render(raw, teacher, studies, promotion)["goals"], indent=2))


if __name__ == "__main__":
    main()
