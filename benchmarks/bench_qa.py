"""bench-qa: a SQuAD 2.0 teacher worth serving, a searched QA frontier built from it, the chosen student served.

Stages, each resumable (a session lasts 3 hours; run it again and it goes on where it stopped), state under
.cache/bench-qa/ (the config's output_dir):

1. teacher: `compress teacher` on benchmarks/configs/qa-squad2.yaml (the recipe: all of SQuAD 1.1 train, 8 articles
   of the SQuAD 2.0 dev half, generated negatives; windows of 384 with 128 overlap; one pass, a checkpoint every
   100 steps). Its curves.jsonl is the learning curve: F1 on the eval articles against training questions seen.
2. score: the teacher exported to ONNX and scored on the test articles at the no-answer threshold chosen on the
   eval articles (compress.search.heldout, what `compress package` would serve), best_f1 on test beside it.
3. study: a multi-fidelity search (12 trials) of students built from this teacher, trained on a seeded subset of
   the questions (STUDY_QUESTIONS of SQuAD 1.1 plus the same dev-half articles and negatives), objectives best F1 on
   eval, parameters and latency ratio at batch 1 x 384 tokens, constraint best F1 >= 90% of the teacher's.
4. promote: the frontier's best points retrained on all of the study's training rows (compress promote).
5. serve: the chosen student (the most accurate promoted point at least 2x faster than the teacher, else the
   knee) packaged; POST /answer on 200 test questions must return exactly its evaluated predictions (text,
   offsets, no-answer decisions), and its HTTP latency is measured beside the in-process model's.

`--render` writes benchmarks/results/qa-squad2.{md,json} from whatever is done (a teacher still training shows its
learning curve, how far it is from the goal and how fast it is closing). Goals: teacher_f1 (>= 65) and
teacher_hasans_f1 (>= 70) on test at the eval-chosen threshold; student_f1_share_at_2x (>= 0.95: best test F1
share of the teacher among students >= 2x faster); student_hasans_noans_balance (<= 10: the larger of the chosen
student's HasAns and NoAns exact-match gaps to the teacher, in points).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")

from common import write_results  # noqa: E402

from compress.artifacts import write_json  # noqa: E402

from compress.config import from_mapping  # noqa: E402

CONFIG = HERE / "configs" / "qa-squad2.yaml"
STAGES = ("teacher", "score", "study", "promote", "serve")
GOALS = {"teacher_f1": 65.0, "teacher_hasans_f1": 70.0, "student_f1_share_at_2x": 0.95,
         "student_hasans_noans_balance": 10.0}
STUDY_QUESTIONS = 16000  # SQuAD 1.1 questions the trials train on (a seeded sample; with the dev-half articles and
#                         negatives about 28,000 windows); promotion retrains on all of them
SHARE_OF_TEACHER = 0.90  # the search's constraint: best F1 on eval >= this share of the teacher's
SPACE = {
    "num_layers": {"type": "int", "low": 2, "high": 6},
    "heads": {"type": "categorical", "choices": [4, 8, 12]},
    "intermediate_size": {"type": "categorical", "choices": [768, 1536]},
    "alpha_ce": {"type": "float", "low": 0.5, "high": 0.9, "step": 0.4},
    "learning_rate": {"type": "categorical", "choices": [1.0e-4, 3.0e-4]},
}
SEARCH = {"n_trials": 12, "sampler": "tpe", "seed": 0, "objectives": ["metric", "params", "latency_ratio"],
          "latency": {"batch_size": 1, "seq_len": 384, "threads": 2}, "space": SPACE,
          "fidelity": {"enabled": True, "rows": [2000, 6000, 18000], "reduction": 3, "seed": 0}}
SERVE_QUESTIONS = 200
RESULT_NAME = "qa-squad2"  # benchmarks/results/<this>.{md,json}


# ------------------------------------------------------------------ configs


def base_mapping(config: Path = CONFIG) -> dict:
    raw = yaml.safe_load(config.read_text())
    raw["output_dir"] = str((ROOT / raw["output_dir"]).resolve())
    for part in ("train", "eval", "test"):
        for src in raw["data"].get(part) or []:
            src["path"] = str((ROOT / src["path"]).resolve())
    return raw


def teacher_dir(raw: dict) -> Path:
    return Path(raw["output_dir"]) / raw["name"] / "teacher"


def study_mapping(raw: dict, teacher_best_f1: float, questions: int | None = None) -> dict:
    """The search job: the recipe's data with the SQuAD 1.1 source cut to a seeded sample of `questions`, the
    trained teacher, best_f1 as the metric and a constraint at SHARE_OF_TEACHER of the teacher's."""
    out = copy.deepcopy(raw)
    out["name"] = f"{raw['name']}-search"
    out["teacher"] = {"model": str(teacher_dir(raw))}
    out["task"]["metric"] = "best_f1"
    out["data"]["train"][0].update({"limit": questions or STUDY_QUESTIONS, "sample_seed": 0})
    out["search"] = copy.deepcopy(SEARCH)
    out["search"]["constraints"] = [f"best_f1 >= {SHARE_OF_TEACHER * teacher_best_f1:.2f}"]
    return out


# ------------------------------------------------------------------ stage 1: the teacher and its learning curve


def teacher_progress(raw: dict) -> dict[str, Any]:
    """Where the teacher's training is: done (metrics.json), or the step of its last checkpoint and the curve."""
    tdir = teacher_dir(raw)
    if (tdir / "metrics.json").is_file():
        m = json.loads((tdir / "metrics.json").read_text())
        curve = [json.loads(line) for line in (tdir / "curves.jsonl").read_text().splitlines() if line.strip()]
        return {"done": True, "step": m["steps"], "total": m["total_steps"], "curve": curve, "metrics": m}
    ckpt = Path(raw["output_dir"]) / raw["name"] / "checkpoints" / "teacher" / "progress.json"
    curve_file = tdir / "curves.jsonl"
    curve = ([json.loads(line) for line in curve_file.read_text().splitlines() if line.strip()]
             if curve_file.is_file() else [])
    if ckpt.is_file():
        p = json.loads(ckpt.read_text())
        return {"done": False, "step": p["step"], "total": p["total"], "curve": curve}
    return {"done": False, "step": 0, "total": None, "curve": curve}


def learning_curve(curve: list[dict], batch_size: int, windows_per_question: float) -> list[dict]:
    """The curve's points with training questions seen (steps x batch windows, over windows per question)."""
    out = []
    for p in curve:
        windows = p["step"] * batch_size
        out.append({"step": p["step"], "epoch": p.get("epoch"), "windows_seen": windows,
                    "questions_seen": int(round(windows / windows_per_question)),
                    **{k: p.get(k) for k in ("loss", "f1", "exact", "best_f1", "HasAns_f1", "NoAns_exact",
                                             "eval_rows", "train_seconds")}})
    return out


def closing_rate(points: list[dict], key: str = "best_f1", last: int = 3) -> dict[str, Any] | None:
    """How fast `key` is rising: points gained per 10,000 questions over the last `last` evaluations (a
    least-squares slope), and the latest value. None with fewer than two points."""
    pts = [p for p in points if p.get(key) is not None][-last:]
    if len(pts) < 2:
        return None
    xs = [p["questions_seen"] / 1e4 for p in pts]
    ys = [float(p[key]) for p in pts]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else 0.0
    return {"metric": key, "latest": ys[-1], "per_10k_questions": slope, "over_points": len(pts),
            "from_questions": pts[0]["questions_seen"], "to_questions": pts[-1]["questions_seen"]}


def data_record(raw: dict) -> Path:
    return Path(raw["output_dir"]) / raw["name"] / "teacher-data.json"


def stage_teacher(raw: dict) -> dict:
    """Fine-tune (or go on fine-tuning) the teacher. The training split's counts are written first, so that a
    teacher still training can be reported in questions seen (the featurised splits are cached, so training reads
    them again at no cost)."""
    from compress.data.features import prepare_task_data
    from compress.distill.jobs import finetune_teacher
    from compress.model.teacher import load_tokenizer, resolve_model

    metrics = teacher_dir(raw) / "metrics.json"
    if not metrics.exists():
        cfg = from_mapping(raw, config_path=str(CONFIG))
        if not data_record(raw).is_file():
            data = prepare_task_data(cfg, load_tokenizer(resolve_model(cfg.teacher.model, cfg.config_path)))
            ex = data.train.examples
            write_json(data_record(raw), {
                "questions": len(ex), "windows": len(data.train), "unanswerable": sum(1 for e in ex if not e.answers),
                "eval_questions": len(data.eval.examples), "test_questions": len(data.test.examples)})
        finetune_teacher(cfg, force=True)
    return json.loads(metrics.read_text())


# ------------------------------------------------------------------ stage 2: the teacher on the test articles


def stage_score(raw: dict) -> dict:
    """The teacher's ONNX file scored on test at the eval-chosen threshold (cached in teacher_onnx/test.json)."""
    from compress.data.features import prepare_task_data
    from compress.deploy.export import export_onnx
    from compress.model.teacher import load_tokenizer
    from compress.search.heldout import CACHE_NAME, cached_score

    cfg = from_mapping(raw, config_path=str(CONFIG))
    tdir = teacher_dir(raw)
    out = cfg.run_dir / "teacher_onnx"
    if not (out / "model.onnx").is_file():
        export_onnx(tdir, out, "qa")
    data = prepare_task_data(cfg, load_tokenizer(str(tdir)))
    return cached_score(out / "model.onnx", out / CACHE_NAME, data, threads=cfg.search.latency.threads)


# ------------------------------------------------------------------ stages 3-4: the search and its promotion


def study_config(raw: dict, teacher: dict):
    return from_mapping(study_mapping(raw, teacher["metrics"]["best_f1"]), config_path=str(CONFIG))


def stage_study(raw: dict, teacher: dict):
    from compress.search import open_study, run_worker

    cfg = study_config(raw, teacher)
    run_worker(cfg)
    return cfg, open_study(cfg, create=False)


def stage_promote(cfg, top: int) -> dict:
    from compress.search import open_study, write_outputs
    from compress.search.promote import promote_frontier

    promoted = cfg.run_dir / "promoted.json"
    if not promoted.is_file():
        promote_frontier(cfg, top)
        write_outputs(cfg, open_study(cfg, create=False))
    return json.loads(promoted.read_text())


def frontier_doc(cfg) -> dict:
    """frontier.json with every reported point scored on the test split (compress.search.heldout; cached per file,
    so only what is missing is computed)."""
    from compress.search import open_study, write_outputs
    from compress.search.heldout import evaluate_heldout

    study = open_study(cfg, create=False)
    evaluate_heldout(cfg, study)
    fpath, _ = write_outputs(cfg, study)
    return json.loads(Path(fpath).read_text())


def students_table(doc: dict, teacher_test: dict) -> list[dict]:
    """Every reported frontier point with its test figures and its share of the teacher's test F1."""
    t_f1 = teacher_test["metrics"]["f1"]
    rows = []
    for r in doc.get("frontier", []):
        test = r.get("test") or {}
        if test.get("f1") is None:
            continue
        rows.append({"trial": r["number"], "params": r["params"], "latency_ratio": r.get("latency_ratio"),
                     "latency_ratio_ci95": r.get("latency_ratio_ci95"), "latency_ms": r.get("latency_ms"),
                     "speedup": 1 / r["latency_ratio"] if r.get("latency_ratio") else None,
                     "eval_best_f1": r.get("value"), "test_f1": test["f1"], "test_exact": test.get("exact"),
                     "test_HasAns_exact": test.get("HasAns_exact"), "test_NoAns_exact": test.get("NoAns_exact"),
                     "test_HasAns_f1": test.get("HasAns_f1"), "f1_share": test["f1"] / t_f1,
                     "promoted": bool(r.get("promoted")), "train_rows": r.get("train_rows"),
                     "spec": r.get("spec"), "precision": r.get("precision")})
    return rows


def choose_student(rows: list[dict], doc: dict) -> dict | None:
    """The student to serve: the best test F1 among points >= 2x faster than the teacher (upper end of the
    latency ratio's interval <= 0.5 where it has one), else the frontier's knee."""
    fast = [r for r in rows if r["latency_ratio"] is not None and _ratio_hi(r) <= 0.5]
    if fast:
        return max(fast, key=lambda r: (r["test_f1"], -r["params"]))
    from compress.search.scenarios import pick

    knee = pick(doc, "knee")["number"]
    return next((r for r in rows if r["trial"] == knee), None)


def _ratio_hi(r: dict) -> float:
    ci = r.get("latency_ratio_ci95")
    return ci[1] if ci else r["latency_ratio"]


# ------------------------------------------------------------------ stage 5: served and checked


def sample_questions(split, n: int, seed: int = 0):
    """A seeded sample of `n` questions of a QA split (all their windows, example_index renumbered), in the
    split's order: spread over every article, where the first n would all come from the first one."""
    import numpy as np

    from compress.data.features import Split

    k = min(n, len(split.examples))
    chosen = np.sort(np.random.default_rng(seed).choice(len(split.examples), size=k, replace=False))
    new_pos = np.full(len(split.examples), -1, dtype=np.int64)
    new_pos[chosen] = np.arange(k)
    keep = new_pos[split.arrays["example_index"]] >= 0
    arrays = {key: v[keep] for key, v in split.arrays.items()}
    arrays["example_index"] = new_pos[arrays["example_index"]]
    return Split(split.name, arrays, [split.examples[i] for i in chosen], f"{split.key}-sample{k}-{seed}")


def stage_serve(cfg, chosen: dict, home: Path, questions: int | None = None) -> dict:
    """Package the chosen student; /answer on `questions` test questions against its evaluated predictions, and
    HTTP latency (one question a request, sequential) beside the in-process runtime's on the same questions."""
    import numpy as np

    os.environ["BENTOML_HOME"] = str(home)
    from compress.data.features import prepare_task_data
    from compress.deploy.package import package
    from compress.model.inference import evaluate_onnx
    from compress.model.teacher import load_tokenizer
    from serve.launch import LocalServer
    from serve.runtime import load_runtime

    import bentoml

    res = package(cfg, trial=chosen["trial"], progress=False)
    meta, folder = res["meta"], Path(bentoml.models.get(res["tag"]).path)  # in the store (res["path"] was the draft)
    onnx = folder / "model.onnx"
    data = prepare_task_data(cfg, load_tokenizer(str(folder)))
    split = sample_questions(data.test, questions or SERVE_QUESTIONS)
    thr = meta["na_threshold"]
    _, preds = evaluate_onnx(onnx, data, split=split, na_threshold=thr)
    examples = split.examples
    items = [{"question": ex.question, "context": ex.context} for ex in examples]
    mismatches = []
    http_ms, bare_ms = [], []
    runtime = load_runtime(folder, threads=cfg.search.latency.threads)
    for it in items[:20]:  # warm-up, both paths
        runtime.answer([(it["question"], it["context"])])
    with LocalServer("serve.service:Compress", home, {"COMPRESS_MODEL": res["tag"]}, own_home=True,
                     log=home / "serve-qa.log") as server:
        status, body = server.post("/answer", {"items": items})
        if status != 200:
            raise RuntimeError(f"/answer answered {status}: {str(body)[:500]}")
        for got, p, ex in zip(body, preds, examples):
            want = p.answer(thr)
            same = got["answer"] == want and got["no_answer"] == (want == "") and (
                not want or (got["start"], got["end"]) == (p.start, p.end))
            if not same:
                mismatches.append({"qid": ex.qid, "served": got, "evaluated": {"text": want, "start": p.start,
                                                                              "end": p.end}})
        for it in items[:20]:
            server.post("/answer", {"items": [it]})
        for it in items:  # interleaved, so both see the same machine state
            t0 = time.perf_counter()
            s, _ = server.post("/answer", {"items": [it]})
            http_ms.append((time.perf_counter() - t0) * 1e3)
            if s != 200:
                raise RuntimeError(f"/answer answered {s} for one question")
            t0 = time.perf_counter()
            runtime.answer([(it["question"], it["context"])])
            bare_ms.append((time.perf_counter() - t0) * 1e3)

    def stats(ms):
        a = np.asarray(ms)
        return {"p50_ms": float(np.percentile(a, 50)), "p90_ms": float(np.percentile(a, 90)),
                "p99_ms": float(np.percentile(a, 99)), "n": int(a.size)}

    return {"tag": res["tag"], "trial": chosen["trial"], "precision": meta["precision"], "na_threshold": thr,
            "questions": len(items), "articles": sorted({ex.title for ex in examples}), "windows": int(len(split)), "mismatches": mismatches,
            "equal": not mismatches, "http": stats(http_ms), "bare": stats(bare_ms),
            "method": "one question per request, sequential, HTTP (urllib, keep-alive off) to bentoml serve on "
                      "127.0.0.1 interleaved with the same question through serve.runtime in this process (tokenise, "
                      f"windows, ONNX Runtime at {cfg.search.latency.threads} threads, decode)"}


# ------------------------------------------------------------------ results


def goal(value, target, higher: bool) -> dict:
    met = value is not None and (value >= target if higher else value <= target)
    return {"value": value, "goal": target, "met": bool(met)}


def compute_goals(teacher_test: dict | None, rows: list[dict], chosen: dict | None) -> dict:
    tm = (teacher_test or {}).get("metrics") or {}
    fast = [r["f1_share"] for r in rows if r["latency_ratio"] is not None and _ratio_hi(r) <= 0.5]
    balance = None
    if chosen is not None and tm:
        balance = max(abs(chosen["test_HasAns_exact"] - tm["HasAns_exact"]),
                      abs(chosen["test_NoAns_exact"] - tm["NoAns_exact"]))
    return {"teacher_f1": goal(tm.get("f1"), GOALS["teacher_f1"], True),
            "teacher_hasans_f1": goal(tm.get("HasAns_f1"), GOALS["teacher_hasans_f1"], True),
            "student_f1_share_at_2x": goal(max(fast) if fast else None, GOALS["student_f1_share_at_2x"], True),
            "student_hasans_noans_balance": goal(balance, GOALS["student_hasans_noans_balance"], False)}


def _f(v, fmt=".2f", none="—"):
    return none if v is None else format(v, fmt)


def summary_md(p: dict) -> str:
    t = p["teacher"]
    lines = ["# bench-qa: a SQuAD 2.0 teacher, a searched QA frontier, the chosen student served", ""]
    lines += ["## Goals", "", "| goal | value | target | met |", "|---|---|---|---|"]
    for k, g in p["goals"].items():
        lines.append(f"| {k} | {_f(g['value'], '.4g')} | {('<= ' if k.endswith('balance') else '>= ')}{g['goal']} | "
                     f"{'yes' if g['met'] else 'no'} |")
    lines += ["", "## Teacher", "", p["recipe"], ""]
    if t["done"]:
        d = t["device"]
        lines.append(f"Trained: {t['step']:,} steps of {t['batch_size']} windows, {t['train_hours']:.2f} h on "
                     f"{d.get('device')} (mixed precision {d.get('mixed_precision')}, {d.get('processes')} process).")
    else:
        lines.append(f"**Still training**: step {t['step']:,} of {t['total'] or '?'} "
                     f"({t['step'] / t['total']:.1%} of the schedule) at the last checkpoint."
                     if t.get("total") else "**Not started.**")
    if p.get("teacher_test"):
        tt = p["teacher_test"]
        m, o = tt["metrics"], tt.get("oracle_threshold_on_test", {})
        lines += ["", f"On the test articles ({tt['rows']:,} questions; {tt['method']}): exact {m['exact']:.2f}, "
                  f"F1 {m['f1']:.2f}, HasAns F1 {m['HasAns_f1']:.2f}, HasAns exact {m['HasAns_exact']:.2f}, "
                  f"NoAns exact {m['NoAns_exact']:.2f}, no-answer threshold {m.get('na_threshold', float('nan')):.3f} "
                  f"(chosen on eval). For reference only, the test split's own best threshold would give best_f1 "
                  f"{_f(o.get('best_f1'))} at {_f(o.get('best_f1_thresh'), '.3f')}."]
    if p["curve"]:
        lines += ["", "### Learning curve (eval articles, during training)", "",
                  "F1 and exact at no-answer threshold 0, best_f1 at the eval split's own best threshold (so an "
                  "upper bound of what a threshold chosen elsewhere gives).", "",
                  "| step | epoch | questions seen | loss | F1 | best F1 | HasAns F1 | NoAns exact |",
                  "|---|---|---|---|---|---|---|---|"]
        for c in p["curve"]:
            lines.append(f"| {c['step']:,} | {_f(c['epoch'])} | {c['questions_seen']:,} | {_f(c['loss'], '.3f')} | "
                         f"{_f(c['f1'])} | {_f(c['best_f1'])} | {_f(c['HasAns_f1'])} | {_f(c['NoAns_exact'])} |")
        r = p.get("closing")
        if r:
            lines += ["", f"Closing: best F1 on eval {r['latest']:.2f} at {r['to_questions']:,} questions, "
                      f"{r['per_10k_questions']:+.2f} points per 10,000 questions over the last {r['over_points']} "
                      f"evaluations (from {r['from_questions']:,}); the test goal is F1 {GOALS['teacher_f1']}."]
    if p.get("students"):
        lines += ["", "## Students (frontier, test articles at each file's eval-chosen threshold)", "",
                  "| trial | rows | params | speed-up | latency ratio [95% CI] | eval best F1 | test F1 | share of "
                  "teacher | HasAns exact | NoAns exact |", "|---|---|---|---|---|---|---|---|---|---|"]
        for r in p["students"]:
            ci = r.get("latency_ratio_ci95") or [None, None]
            lines.append(f"| {r['trial']}{' (chosen)' if p.get('chosen') == r['trial'] else ''} | "
                         f"{_f(r['train_rows'], ',')} | {r['params']:,} | {_f(r['speedup'])}x | "
                         f"{_f(r['latency_ratio'], '.3f')} [{_f(ci[0], '.3f')}, {_f(ci[1], '.3f')}] | "
                         f"{_f(r['eval_best_f1'])} | {r['test_f1']:.2f} | {r['f1_share']:.3f} | "
                         f"{_f(r['test_HasAns_exact'])} | {_f(r['test_NoAns_exact'])} |")
    if p.get("serve"):
        s = p["serve"]
        verdict = ("exactly the evaluated predictions" if s["equal"] else
                   f"{len(s['mismatches'])} answers that differ from the evaluated ones")
        lines += ["", "## Served", "", f"`{s['tag']}` (trial {s['trial']}, {s['precision']}, no-answer threshold "
                  f"{s['na_threshold']:.3f}): POST /answer on {s['questions']} test questions (a seeded sample from "
                  f"{len(s['articles'])} article{'' if len(s['articles']) == 1 else 's'}, {s['windows']} windows) "
                  f"returned {verdict}.",
                  "", f"Latency, {s['method']}: HTTP p50 {s['http']['p50_ms']:.1f} ms / p90 {s['http']['p90_ms']:.1f} "
                  f"ms; in-process p50 {s['bare']['p50_ms']:.1f} ms / p90 {s['bare']['p90_ms']:.1f} ms."]
    if p.get("errors_md"):
        lines += ["", p["errors_md"]]
    return "\n".join(lines)


def render(raw: dict, extra: dict | None = None) -> dict:
    """Results from what exists: the teacher's progress, and each later stage's output if it ran."""
    extra = extra or {}
    prog = teacher_progress(raw)
    bs = raw["teacher"]["train"]["batch_size"]
    info = json.loads((teacher_dir(raw) / "metrics.json").read_text()) if prog["done"] else None
    counts = json.loads(data_record(raw).read_text()) if data_record(raw).is_file() else None
    wpq = (info["train_features"] / info["train_rows"] if info else
           counts["windows"] / counts["questions"] if counts else 1.0)
    curve = learning_curve(prog["curve"], bs, wpq)
    teacher = {"done": prog["done"], "step": prog["step"], "total": prog["total"], "batch_size": bs,
               "windows_per_question": wpq, "data": counts}
    if info:
        teacher.update({"train_hours": info["train_seconds"] / 3600, "device": info["training_device"],
                        "train_rows": info["train_rows"], "train_features": info["train_features"],
                        "eval_metrics": info["metrics"]})
    recipe = RECIPE_MD
    if counts:
        recipe += (f" Featurised: {counts['questions']:,} training questions ({counts['unanswerable'] / counts['questions']:.1%}"
                   f" unanswerable) in {counts['windows']:,} windows; {counts['eval_questions']:,} eval and "
                   f"{counts['test_questions']:,} test questions.")
    payload = {"teacher": teacher, "curve": curve, "closing": closing_rate(curve), "recipe": recipe,
               "config": raw, **extra}
    payload["goals"] = compute_goals(extra.get("teacher_test"), extra.get("students") or [],
                                     next((r for r in extra.get("students") or [] if r["trial"] == extra.get("chosen")),
                                          None))
    write_results(RESULT_NAME, payload, summary_md(payload))
    return payload


RECIPE_MD = ("Recipe (`benchmarks/configs/qa-squad2.yaml`): MiniLM-L6 (all-MiniLM-L6-v2) fine-tuned on all 87,599 "
             "SQuAD 1.1 training questions, the first 8 articles of the SQuAD 2.0 dev half (2,805 questions) and "
             "generated unanswerable questions (ratio 0.5: a copy of every other answerable question paired with "
             "another paragraph of its article that holds none of its answers), 134,823 questions in all, a third "
             "unanswerable; windows of 384 tokens, 128 overlap; one pass (1 epoch), batch 32, learning rate 1e-4, batches "
             "grouped by length. The dev half is split by article: articles 8-11 are the eval split (learning curve, "
             "no-answer threshold, search), articles 12-15 the test split every reported figure is scored on, "
             "with the official SQuAD 2.0 logic.")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--stage", choices=STAGES, default=STAGES[-1], help="run the stages up to this one")
    ap.add_argument("--render", action="store_true", help="only write the results from what is done")
    ap.add_argument("--promote-top", type=int, default=3, help="frontier points promoted to all study rows")
    ap.add_argument("--config", type=Path, default=CONFIG, help=argparse.SUPPRESS)  # a smaller recipe for trying
    args = ap.parse_args()
    raw = base_mapping(args.config)
    home = Path(raw["output_dir"]) / "bentoml"
    if args.render:
        extra = _done_parts(raw, home)
        p = render(raw, extra)
        print((ROOT / "benchmarks" / "results" / f"{RESULT_NAME}.md").read_text() if p else "")
        return
    upto = STAGES.index(args.stage)
    teacher = stage_teacher(raw)
    print(f"teacher: eval best_f1 {teacher['metrics']['best_f1']:.2f}, f1 {teacher['metrics']['f1']:.2f}, "
          f"{teacher['train_rows']:,} questions, {teacher['train_seconds'] / 3600:.2f} h", flush=True)
    if upto >= 1:
        tt = stage_score(raw)
        print(f"teacher on test: f1 {tt['metrics']['f1']:.2f}, HasAns_f1 {tt['metrics']['HasAns_f1']:.2f}", flush=True)
    if upto >= 2:
        cfg, _ = stage_study(raw, teacher)
    if upto >= 3:
        stage_promote(cfg, args.promote_top)
    extra = _done_parts(raw, home, serve=upto >= 4)
    render(raw, extra)
    print((ROOT / "benchmarks" / "results" / f"{RESULT_NAME}.md").read_text())


def _done_parts(raw: dict, home: Path, serve: bool = False) -> dict:
    """The later stages' results where they exist (scores are cached, so this is quick after the first time)."""
    out: dict[str, Any] = {}
    tdir = teacher_dir(raw)
    if not (tdir / "metrics.json").is_file():
        return out
    teacher = json.loads((tdir / "metrics.json").read_text())
    # The teacher's test record as stage_score cached it, while it is this file's (read_heldout loads no data):
    # scoring, or checking the cache against the splits, loads every split, the 134,823 training questions'
    # windows too, and main() has just done that.
    from compress.search.heldout import CACHE_NAME, read_heldout

    onnx = Path(raw["output_dir"]) / raw["name"] / "teacher_onnx" / "model.onnx"
    rec = read_heldout(onnx.parent / CACHE_NAME, onnx)
    if rec is None and serve:
        rec = stage_score(raw)
    if rec is not None:
        out["teacher_test"] = rec
    cfg = study_config(raw, teacher)
    if not (cfg.run_dir / "study.db").exists():
        return out
    doc = frontier_doc(cfg)
    if out.get("teacher_test"):
        rows = students_table(doc, out["teacher_test"])
        out["students"] = rows
        chosen = choose_student(rows, doc) if rows else None
        out["chosen"] = chosen["trial"] if chosen else None
        if chosen and serve:
            out["serve"] = stage_serve(cfg, chosen, home)
        if chosen:
            out["errors_md"] = qa_errors_md(cfg, doc, chosen["trial"])
    return out


def qa_errors_md(cfg, doc: dict, trial: int) -> str:
    """The report's QA error analysis for one frontier point (compress.report.collect.qa_analysis: its eval
    predictions at its serving threshold, per article and category), as a Markdown table."""
    from compress.report.collect import QA_CATEGORIES, qa_analysis

    rec = next((r for r in doc.get("frontier", []) if r["number"] == trial), None)
    qa = qa_analysis(cfg, rec) if rec else None
    if not qa:
        return ""
    lines = [f"## QA error analysis (trial {trial}, eval articles, no-answer threshold {_f(qa['threshold'], '.3f')}; "
             "as `compress report` shows it)", "", "| article | " + " | ".join(QA_CATEGORIES) + " |",
             "|---|" + "---|" * len(QA_CATEGORIES)]
    totals = {c: 0 for c in QA_CATEGORIES}
    for title, row in qa["table"].items():
        lines.append(f"| {title} | " + " | ".join(str(row[c]) for c in QA_CATEGORIES) + " |")
        for c in QA_CATEGORIES:
            totals[c] += row[c]
    n = sum(totals.values()) or 1
    lines.append("| all | " + " | ".join(f"{totals[c]} ({totals[c] / n:.0%})" for c in QA_CATEGORIES) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
