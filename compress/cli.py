"""Command line: a thin layer over the stages (distill/, search/, deploy/, report/). Run `compress --help`.

Every expected failure (config, data, teacher, divergence) prints one clear line and exits non-zero. `teacher`,
`distill`, `agora`, `fptas` and `search` first run the checks of `compress validate` (compress/validate/), so a
mistake anywhere in the job is reported in seconds, before featurisation or teacher inference.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path

from .config import load_config, load_run_config
from .demo import demo_config

# NOTE: each command imports the stages it runs inside its function, not here: `compress --help` then loads no
# more than argparse and the config, and `compress validate` only what its checks need (not Optimum, BentoML or
# the plotting libraries).

__all__ = ["main"]


def _cmd_teacher(args: argparse.Namespace) -> int:
    from .distill import finetune_teacher

    cfg = load_config(args.config)
    _preflight(cfg, "teacher")
    out = finetune_teacher(cfg, force=args.force)
    metrics_file = out / "metrics.json"
    if metrics_file.exists():
        m = json.loads(metrics_file.read_text())
        print(f"teacher: {m['metric']} = {m['value']:.4f} on {m['eval_rows']} eval rows, "
              f"{m['params']:,} parameters, trained {m['train_seconds']:.0f} s")
    print(f"teacher saved in {out}")
    return 0


def _preflight(cfg, command: str, student: str | None = None) -> None:
    """The checks of `compress validate`, before any featurisation or teacher inference (ValidationError: exit 2)."""
    from .validate import preflight

    preflight(cfg, command, student=student)


def _cmd_validate(args: argparse.Namespace) -> int:
    from .validate import format_report, validate_file

    report, cfg = validate_file(args.config)
    if args.json:
        print(json.dumps(report.to_json(), indent=2, default=str))
    else:
        print(format_report(report, cfg))
    return 2 if report.errors else 0


def _student_spec(cfg, spec_path: str | None, teacher_layers: int):
    from .model import StudentSpec, configured_spec_fields

    if spec_path:
        return StudentSpec.load(spec_path)
    try:
        return StudentSpec.from_json(configured_spec_fields(cfg.student, teacher_layers))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"config key 'student': {exc}") from None


def _cmd_distill(args: argparse.Namespace) -> int:
    from .distill import distill_student, load_context

    cfg = load_config(args.config)
    _preflight(cfg, "distill", args.student)
    ctx = load_context(cfg)
    spec = _student_spec(cfg, args.student, ctx.teacher.config.num_hidden_layers)
    out = Path(args.out) if args.out else cfg.run_dir / "students" / spec.tag()
    if spec.vocab_pruning:
        from .model.vocab import check_prunable

        check_prunable(ctx.tokenizer)  # before training: a tokenizer this tool cannot rewrite
    m = distill_student(ctx, spec, out)
    if spec.vocab_pruning:
        from .distill.vocab import prune_student_vocabulary

        m = prune_student_vocabulary(ctx, out, cfg.vocab_prune, cfg.distill.augment)
        v = m["vocab_prune"]
        print(f"vocabulary pruned to {v['vocab_size']:,} of {v['teacher_vocab_size']:,} tokens: "
              f"{100 * v['eval']['unk_token_share']:.2f}% of eval tokens become [UNK] "
              f"({100 * v['eval']['unk_row_share']:.1f}% of rows)")
    _print_student(m, out)
    return 0


def _cmd_agora(args: argparse.Namespace) -> int:
    from .distill import load_context, run_agora

    cfg = load_config(args.config)
    _preflight(cfg, "agora", args.student)
    ctx = load_context(cfg)
    spec = _student_spec(cfg, args.student, ctx.teacher.config.num_hidden_layers)
    out = Path(args.out) if args.out else cfg.run_dir / "students" / f"{spec.tag()}-agora"
    res = run_agora(ctx, spec, out)
    if spec.vocab_pruning:  # the saved student (its metrics.json) is then the pruned one; the table is Agora's own
        from .distill.vocab import prune_student_vocabulary

        prune_student_vocabulary(ctx, out, cfg.vocab_prune)
    metric = cfg.task.primary_metric
    print(f"agora stopped: {res.stopped}")
    print(f"  {'iter':>4} {'rows':>7} {'kept':>12} {metric:>10} {'teacher':>8} {'gap pt':>7}")
    for row in res.table:
        print(f"  {row['iteration']:>4} {row['train_rows']:>7} {str(row['thetas_kept']):>12} {row[metric]:>10.4f} "
              f"{row['teacher']:>8.4f} {row['gap_points']:>7.2f}")
    print(f"convergent θ: {res.theta}; student saved in {out} (agora.json has the table)")
    return 0


def _cmd_fptas(args: argparse.Namespace) -> int:
    from .search import W_DEFINITION, run_fptas

    cfg = load_config(args.config)
    over = {k: v for k, v in (("top_k", args.top_k), ("steps", args.steps), ("alpha", args.alpha)) if v is not None}
    if args.calibrate:
        over["calibrate"] = True
    if over:
        cfg = dataclasses.replace(cfg, fptas=dataclasses.replace(cfg.fptas, **over))
    _preflight(cfg, "fptas")
    res = run_fptas(cfg)
    print(f"W-coefficient: {W_DEFINITION}")
    print(f"  {'rank':>4} {'W':>8} {'params':>12} {'ms':>7} {'error':>7}  depth heads hidden FFN")
    for r in res["ranking"]:
        print(f"  {r['rank']:>4} {r['W']:>8.3f} {r['params']:>12,} {r['inference_ms']:>7.3f} "
              f"{r['surrogate_error']:>7.4f}  {r['depth']:>5} {r['heads']:>5} {r['hidden']:>6} {r['intermediate']:>4}")
    for d in sorted(res["distilled"], key=lambda d: d["rank"]):
        print(f"distilled {d['candidate']} (rank {d['rank']}): {d['metric']} {d['value']:.4f}, {d['params']:,} params, "
              f"{d['latency_ms']:.2f} ms{' (misses ' + ', '.join(d['misses']) + ')' if d.get('misses') else ''} "
              f"-> {d['dir']}")
    first = min(res["distilled"], key=lambda d: d["rank"], default=None)
    if first and first["rank"] == 1 and first.get("misses"):
        print(f"warning: the first candidate misses {', '.join(first['misses'])} once distilled; alpha "
              f"{res['alpha']:g} favours size and speed here. Raise --alpha, or run with --calibrate to see which "
              "alpha puts a candidate meeting the constraints first.")
    cal = res.get("calibration")
    if cal:
        print(f"calibration: Spearman rho of surrogate error against distilled {cal['metric']} "
              f"{cal['spearman_error_metric']:.3f}; log real rel. error = {cal['k']:.2f} x log surrogate rel. error "
              f"{cal['c']:+.2f} (R^2 {cal['r2']:.2f})")
        for p in cal["per_alpha"]:
            print(f"  alpha {p['alpha']:>5g}: first {p['top']:<20} {cal['metric']} {p['value']:.4f} "
                  f"{'meets constraints' if p['meets_constraints'] else 'misses constraints'}, "
                  f"{'on' if p['on_frontier'] else 'off'} the distilled frontier")
        print(f"  smallest alpha whose first candidate meets {cal['constraints'] or 'the constraints (none set)'} "
              f"and is on the frontier: {cal['alpha_meeting_constraints']}")
        print(f"written: {cfg.run_dir / 'fptas' / 'calibration.md'} and calibration.png")
    print(f"written: {cfg.run_dir / 'fptas' / 'ranking.json'} and ranking.md")
    return 0


def _print_student(m: dict, out: Path) -> None:
    t = m["teacher"]
    print(f"student {out.name}: {m['metric']} = {m['value']:.4f} (teacher {t['metric']:.4f}), "
          f"{m['params']:,} parameters (teacher {t['params']:,}), distilled in {m['train_seconds']:.0f} s")
    if m.get("version_2"):
        mm = m["metrics"]
        print(f"  exact {mm['exact']:.2f}  f1 {mm['f1']:.2f}  HasAns_exact {mm.get('HasAns_exact', 0):.2f}  "
              f"NoAns_exact {mm.get('NoAns_exact', 0):.2f}  best_f1 {mm['best_f1']:.2f} at threshold "
              f"{mm['best_f1_thresh']:.3f}")
    print(f"student saved in {out} (model, tokenizer, spec.json, metrics.json, curves.jsonl, predictions.json)")


def _cmd_demo(args: argparse.Namespace) -> int:
    from .deploy.package import describe, package
    from .distill import finetune_teacher
    from .search import open_study, run_worker, write_outputs

    path = demo_config(args.output_dir)
    print(f"demo: generated data and config in {path.parent} (data set 'generated-sentiment', made by this project)")
    cfg = load_config(path)
    out = finetune_teacher(cfg, force=True)
    m = json.loads((out / "metrics.json").read_text())
    print(f"teacher: accuracy {m['value']:.4f}, {m['params']:,} parameters, fine-tuned in {m['train_seconds']:.0f} s")
    print(f"search: {cfg.search.n_trials} trials ({cfg.search.sampler}), objectives {list(cfg.search.objectives)}, "
          f"constraints {list(cfg.search.constraints)}")
    run_worker(cfg)
    write_outputs(cfg, open_study(cfg, create=False))
    _cmd_status(argparse.Namespace(run=str(cfg.run_dir), json=False))
    print(f"outputs: {cfg.run_dir}/frontier.json, {cfg.run_dir}/trials.csv, {cfg.run_dir}/trials/<n>/")
    res = package(cfg, scenario="knee", progress=False)
    print(f"packaged the frontier's knee as {res['tag']} (BentoML model store): {describe(res['meta'])}")
    _print_serve_help(res)
    return 0


def _cmd_search(args: argparse.Namespace) -> int:
    from .search import open_study, run_search, run_worker, write_outputs

    cfg = load_config(args.config)
    if args.threads:
        cfg = dataclasses.replace(cfg, threads=args.threads)
    if args.worker:  # started by a parent that ran the preflight checks already
        run_worker(cfg, workers=args.workers_hint, progress=False)
        return 0
    _preflight(cfg, "search")
    run_search(cfg, args.config, workers=args.workers)
    fpath, cpath = write_outputs(cfg, open_study(cfg, create=False))
    print(f"search done: {fpath} and {cpath}; `compress status {cfg.run_dir}` summarises it")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from .deploy.package import export_variants, resolve_trial

    cfg = load_run_config(args.run)
    rec = resolve_trial(cfg, args.trial, args.pick, args.within)
    precisions = [p.strip() for p in args.precision.split(",") if p.strip()]
    rows = export_variants(cfg, rec, precisions)
    metric = cfg.task.primary_metric
    print(f"trial {rec['number']}: variants re-measured on the eval set; latency with the single-model protocol "
          f"(ONNX Runtime, batch {cfg.search.latency.batch_size}, seq {cfg.search.latency.seq_len}, "
          f"{cfg.search.latency.threads} threads, median of {cfg.search.latency.repeats})")
    print(f"  {'precision':<12} {metric:>10} {'latency ms':>10} {'p90 ms':>8} {'size MB':>8}  folder")
    for r in rows:
        print(f"  {r['precision']:<12} {r['metrics'].get(metric, float('nan')):>10.4f} {r['latency_ms']:>10.2f} "
              f"{r['latency_p90_ms']:>8.2f} {r['size_mb']:>8.1f}  {r['dir']}")
    print(f"written: {Path(rec['dir']) / 'variants.json'}; each folder loads with Optimum's ORTModelFor*")
    return 0


def _cmd_package(args: argparse.Namespace) -> int:
    from .deploy.package import describe, package

    cfg = load_run_config(args.run)
    res = package(cfg, args.trial, args.pick, args.within, args.precision, args.name)
    print(f"packaged {res['tag']} in the BentoML model store: {describe(res['meta'])}")
    _print_serve_help(res)
    return 0


def _print_serve_help(res: dict) -> None:
    meta = res["meta"]
    print("serve it (binds 127.0.0.1:3000):")
    print(f"  COMPRESS_MODEL={res['tag']} .venv/bin/bentoml serve serve.service:Compress --port 3000")
    if meta["task"]["type"] == "qa":
        body = '{"items": [{"question": "Who led the raiders?", "context": "The raiders were led by Rollo."}]}'
        print(f"  curl -s -X POST http://127.0.0.1:3000/answer -H 'Content-Type: application/json' -d '{body}'")
    else:
        example = '["the acting was superb", "a dull, lifeless film"]'
        if meta["task"]["type"] == "pair_classification" or len(meta["task"]["text_columns"]) == 2:
            example = '[["A man is playing a guitar.", "A person plays music."]]'
        print(f"  curl -s -X POST http://127.0.0.1:3000/classify -H 'Content-Type: application/json' "
              f"-d '{{\"texts\": {example}}}'")
    print("  metrics: curl -s http://127.0.0.1:3000/metrics; a bento: .venv/bin/bentoml build, then "
          "bentoml serve compress:latest")


def _fmt(v, spec: str = ".4f") -> str:
    return "-" if v is None else format(v, spec)


def _cmd_confirm(args: argparse.Namespace) -> int:
    from .search import confirm_and_report, open_study
    from .search.confirm import confirm_candidates

    cfg = load_run_config(args.run)
    if args.rounds is not None:
        cfg = dataclasses.replace(cfg, search=dataclasses.replace(
            cfg.search, confirm=dataclasses.replace(cfg.search.confirm, rounds=args.rounds)))
    study = open_study(cfg, create=False)
    if not confirm_candidates(cfg, study):
        print(f"nothing to confirm in {cfg.run_dir}: no completed trial with an ONNX file yet", file=sys.stderr)
        return 2
    doc = confirm_and_report(cfg, study)
    if args.json:
        print(json.dumps(doc, indent=2, default=str))
    print(f"written: {cfg.run_dir / 'frontier.json'} (confirmed figures) and {cfg.run_dir / 'confirmation.json'} "
          "(every round); `compress package --pick` uses them")
    return 0


def _cmd_promote(args: argparse.Namespace) -> int:
    from .search import open_study, write_outputs
    from .search.intervals import with_interval
    from .search.promote import promote_frontier
    from .search.study import heldout_and_report

    cfg = load_run_config(args.run)
    doc = promote_frontier(cfg, args.top)
    study = open_study(cfg, create=False)
    write_outputs(cfg, study)
    if cfg.data.has_test:  # the promoted files on the held-out split (cached per file), frontier.json again
        heldout_and_report(cfg, study)
    if args.json:
        print(json.dumps(doc, indent=2, default=str))
        return 0
    print(f"promoted {len(doc['points'])} frontier points to all {doc['train_rows']:,} training rows "
          f"(latency: median [95% interval], timed together with the teacher):")
    print(f"  {'trial':>5} {'metric (budget -> all rows)':>30} {'latency ms':>22} {'ratio':>22}  frontier")
    for p in doc["points"]:
        low = p["low_budget"]
        print(f"  {p['trial']:>5} {_fmt(low.get('value')):>13} -> {_fmt(p['value']):<13} "
              f"{with_interval(p['latency_ms'], p['latency_ci95_ms']):>22} "
              f"{with_interval(p['latency_ratio'], p['latency_ratio_ci95'], '.3f'):>22}  "
              f"{'yes' if p['trial'] in doc['frontier'] else 'no'}")
    print(f"written: {cfg.run_dir / 'promoted.json'}; frontier.json and the report show the promoted frontier")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from .search import study_summary
    from .search.intervals import with_interval as _with_ci

    cfg = load_run_config(args.run)
    s = study_summary(cfg)
    if args.json:
        print(json.dumps(s, indent=2, default=str))
        return 0
    states = ", ".join(f"{k} {v}" for k, v in sorted(s["by_state"].items()))
    extra = f" (+{s['promotions']} promoted to a higher rung)" if s.get("promotions") else ""
    print(f"study {s['study']} ({s['storage']}): {s['completed'] - s.get('promotions', 0)}/{s['target']} done{extra}; "
          f"{states}; feasible {s['feasible']}")
    if s["eta_seconds"] is not None:
        print(f"time left: about {s['eta_seconds'] / 60:.0f} min; early stopping saved {s['early_stopping_saved_seconds'] / 60:.1f} min")
    if fid := s.get("fidelity"):
        rungs = "; ".join(f"rung {r['rung']} ({rows:,} rows): {r['complete']} done, {r['feasible']} feasible"
                          + (f", {r['warm_started']} continued from the rung below" if r.get("warm_started") else "")
                          for r, rows in zip(fid["trials_by_rung"], fid["rows"]))
        print(f"multi-fidelity (best 1/{fid['reduction']} of each rung promoted; frontier from the top rung): {rungs}")
    c = s["compute"]
    missing = c.get("trials_without_rows_seen")
    rows = (f"{c['rows_seen']:,} training rows seen" + (f" ({missing} older trials did not record theirs)"
                                                        if missing else "")) if missing != s["completed"] else \
        "training rows seen not recorded (trials from an older version)"
    waited = c.get("lock_wait_seconds") or 0
    print(f"compute: {rows}, {c['trial_seconds'] / 60:.1f} trial-min"
          + (f" (not counting {waited / 60:.1f} min waiting for other jobs' measurements)" if waited else ""))
    conf = s.get("confirmation")
    t = s.get("teacher") or {}
    if t:
        print(f"teacher: metric {_fmt(t.get('metric'))}, {t.get('params', 0):,} params, "
              f"{_with_ci(t.get('latency_ms'), t.get('latency_ci95_ms'))} ms ({t.get('latency_source')})")
    if promo := s.get("promotion"):
        print(f"promoted {promo['at']}: trials {promo['candidates']} retrained on all {promo['train_rows']:,} "
              f"training rows; the frontier below is theirs (search's own: "
              f"{[r['number'] for r in s['frontier_search']]})")
    print(f"frontier ({len(s['frontier'])} points; latency: median [95% interval], ratio to the teacher timed "
          "together; 'confirmed' = re-measured by the confirmation pass, 'promoted' = the retrained model timed "
          "with the teacher, 'single' = the trial's own measurement):")
    print(f"  {'trial':>5} {'metric':>8} {'params':>12} {'latency ms':>20} {'ratio':>21} {'figures':>9} "
          f"{'size MB':>8}  spec")
    for r in s["frontier"]:
        spec = r.get("spec") or {}
        print(f"  {r['number']:>5} {_fmt(r['value']):>8} {r['params'] or 0:>12,} "
              f"{_with_ci(r['latency_ms'], r.get('latency_ci95_ms')):>20} "
              f"{_with_ci(r.get('latency_ratio'), r.get('latency_ratio_ci95'), '.3f'):>21} "
              f"{r.get('latency_source') or '-':>9} {_fmt(r['size_mb'], '.1f'):>8}  L{spec.get('num_layers')} "
              f"H{spec.get('heads')} F{spec.get('intermediate_size')}{' (baseline)' if r['baseline'] else ''}")
    for a, b in s.get("ties") or []:
        print(f"tie: trials {a} and {b} overlap within their intervals on every objective they differ in")
    if conf:
        print(f"confirmed {conf['at']}: {len(conf['models'])} models, {conf['rounds']} interleaved rounds; frontier "
              f"{conf['before']['frontier']} -> {conf['after']['frontier']}"
              + ("; the teacher's rounds never settled (busy machine)" if conf.get("contended") else ""))
    elif s["frontier"]:
        print(f"not confirmed yet: `compress confirm {cfg.run_dir}` times the frontier again, together")
    for w in s["warnings"]:
        print(f"warning: {w}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from .report import build_report

    cfg = load_run_config(args.run)
    html_path, md_path = build_report(cfg, args.out)
    print(f"report: {html_path} (open in a browser; works offline) and {md_path} (plots in "
          f"{md_path.parent / 'report_files'})")
    return 0


def _cmd_trials(args: argparse.Namespace) -> int:
    from .search import filter_trials, format_trials, open_study, study_records

    cfg = load_run_config(args.run)
    study = open_study(cfg, create=False)
    recs = study_records(study)  # confirmed figures where the confirmation pass measured them
    print(format_trials(filter_trials(recs, args.where, args.sort, args.desc), args.format))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="compress", description="Distil a fine-tuned BERT-family teacher into smaller students.")
    p.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    sub = p.add_subparsers(dest="command", required=True)

    v = sub.add_parser("validate", help="check config, data, teacher, student and search in seconds, without training")
    v.add_argument("config", help="YAML job config")
    v.add_argument("--json", action="store_true", help="machine-readable output: splits, teacher, errors, warnings")
    v.set_defaults(func=_cmd_validate)

    t = sub.add_parser("teacher", help="fine-tune a task head on teacher.model; writes RUN/teacher/")
    t.add_argument("config", help="YAML job config")
    t.add_argument("--force", action="store_true", help="fine-tune even if the checkpoint already has a head")
    t.set_defaults(func=_cmd_teacher)

    d = sub.add_parser("distill", help="distill one student; writes RUN/students/<tag>/")
    d.add_argument("config", help="YAML job config")
    d.add_argument("--student", metavar="SPEC.json", help="student spec (default: the config's student: section)")
    d.add_argument("--out", metavar="DIR", help="output folder (default: RUN/students/<tag>)")
    d.set_defaults(func=_cmd_distill)

    s = sub.add_parser("search", help="multi-objective search over students; writes RUN/study.db, trials/, frontier.json")
    s.add_argument("config", help="YAML job config with a search: section")
    s.add_argument("--workers", type=int, default=1, help="worker processes on this machine (default 1)")
    s.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # one worker process (internal)
    s.add_argument("--threads", type=int, default=None, help=argparse.SUPPRESS)
    s.add_argument("--workers-hint", type=int, default=1, help=argparse.SUPPRESS)
    s.set_defaults(func=_cmd_search)

    st = sub.add_parser("status", help="live state of a study: trials by state, frontier, time left, warnings")
    st.add_argument("run", help="run directory (runs/<name>) or the job's YAML config")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    st.set_defaults(func=_cmd_status)

    c = sub.add_parser("confirm", help="time the frontier, the trials near it, the baseline and the teacher again, "
                                       "together, and recompute the frontier from those figures")
    c.add_argument("run", help="run directory (runs/<name>) or the job's YAML config")
    c.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default: search.confirm.rounds)")
    c.add_argument("--json", action="store_true", help="print the confirmation record as JSON")
    c.set_defaults(func=_cmd_confirm)

    pr = sub.add_parser("promote", help="retrain the frontier (or its best K points) on every training row, score "
                                        "and time it again; writes RUN/promoted.json")
    pr.add_argument("run", help="run directory (runs/<name>) or the job's YAML config")
    pr.add_argument("--top", type=int, default=None, help="promote the best K frontier points (default: all)")
    pr.add_argument("--json", action="store_true", help="print promoted.json")
    pr.set_defaults(func=_cmd_promote)

    for name, helptext in (("export", "make the fp32, optimized, int8-dynamic and int8-static ONNX variants of a trial "
                                     "and re-measure each"),
                           ("package", "store a trial's ONNX variant as a BentoML model for `bentoml serve`")):
        e = sub.add_parser(name, help=helptext)
        e.add_argument("run", help="run directory (runs/<name>) or the job's YAML config")
        which = e.add_mutually_exclusive_group(required=True)
        which.add_argument("--trial", type=int, help="trial number")
        which.add_argument("--pick", choices=["retain-size", "retain-metric", "fastest", "knee"],
                           help="the frontier point a scenario picks (see compress.search.scenarios)")
        e.add_argument("--within", type=float, default=1.0,
                       help="--pick fastest: points of the teacher's metric you may give up (default 1)")
        if name == "export":
            e.add_argument("--precision", default="fp32,optimized,int8-dynamic,int8-static",
                           help="comma-separated variants (int8 = int8-dynamic; int8-static calibrates on training "
                                "rows, as search.calibration says)")
            e.set_defaults(func=_cmd_export)
        else:
            # NOTE: written out, not compress.deploy.variants.PRECISIONS: importing it loads torch for --help
            e.add_argument("--precision", choices=["fp32", "optimized", "int8-dynamic", "int8-static", "int8"],
                           help="variant to serve (default: the one the trial was measured as)")
            e.add_argument("--name", default="compress-model", help="BentoML model name (default compress-model, "
                                                                    "what the service serves by default)")
            e.set_defaults(func=_cmd_package)

    a = sub.add_parser("agora", help="Agora fine-tuning of one student (teacher-labelled new examples from its errors)")
    a.add_argument("config", help="YAML job config (agora: section for Θ, ν and the budget)")
    a.add_argument("--student", metavar="SPEC.json", help="student spec (default: the config's student: section)")
    a.add_argument("--out", metavar="DIR", help="output folder (default: RUN/students/<tag>-agora)")
    a.set_defaults(func=_cmd_agora)

    f = sub.add_parser("fptas", help="rank candidate architectures by the W-coefficient; distill the top k")
    f.add_argument("config", help="YAML job config (fptas: section for the grid)")
    f.add_argument("--top-k", type=int, help="candidates to distill fully (default: fptas.top_k)")
    f.add_argument("--steps", type=int, help="surrogate-training steps per candidate (default: fptas.steps)")
    f.add_argument("--alpha", type=float, help="W-coefficient exponent on the relative error (default: fptas.alpha)")
    f.add_argument("--calibrate", action="store_true",
                   help="distill every candidate fully and report what each alpha in fptas.calibration_alphas picks")
    f.set_defaults(func=_cmd_fptas)

    r = sub.add_parser("report", help="write RUN/report.html and report.md: Pareto plots, scenarios, importance, curves")
    r.add_argument("run", help="run directory (runs/<name>) or the job's YAML config")
    r.add_argument("--out", help="folder for report.html, report.md and report_files/ (default: the run directory)")
    r.set_defaults(func=_cmd_report)

    q = sub.add_parser("trials", help="filtered, sorted table of trials, e.g. --where 'accuracy > 0.85 and params < 15e6'")
    q.add_argument("run", help="run directory (runs/<name>) or the job's YAML config")
    q.add_argument("--where", help="filter expression over trial fields, metrics and searched parameters")
    q.add_argument("--sort", help="field to sort by (e.g. latency_ms, accuracy, params)")
    q.add_argument("--desc", action="store_true", help="sort descending")
    q.add_argument("--format", choices=["table", "csv", "json"], default="table")
    q.set_defaults(func=_cmd_trials)

    m = sub.add_parser("demo", help="the embedded default job on generated data (no data of yours needed)")
    m.add_argument("--output-dir", default="runs", help="where runs/demo goes")
    m.set_defaults(func=_cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    # Accelerate logs every checkpoint's files at INFO; its warnings still show. The loop logs what matters (resume).
    logging.getLogger("accelerate").setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    # NOTE: transformers is imported here, not at the top: `compress --help` must not wait for it.
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # e.g. the SDPA fallback note when measuring head importance
    try:
        return args.func(args)
    except ValueError as exc:  # ConfigError, DataError, TeacherError, ValidationError, PackageError, ScenarioError,
        print(f"error: {exc}", file=sys.stderr)  # VariantError, QueryError, ExportMismatch: the input is wrong
        return 2
    except RuntimeError as exc:
        # NOTE: imported only when a command failed, so that no command loads the search and training stages for
        # these two names
        from .distill.loop import TrainingDiverged
        from .search.objectives import SearchError

        if isinstance(exc, SearchError):
            print(f"error: {exc}", file=sys.stderr)
            return 4
        if isinstance(exc, TrainingDiverged):
            print(f"error: {exc}", file=sys.stderr)
            return 3
        raise

if __name__ == "__main__":
    sys.exit(main())
