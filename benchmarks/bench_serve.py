"""Serving benchmark on SST-2: variant latency and metric, then a load test of the HTTP service.

1. The teacher and frontier students of the SST-2 search (runs/search-sst2-tpe, `make bench-search`): latency in
   PyTorch eager, ONNX fp32, ONNX Runtime optimised and dynamic int8, at batch 1 and 8, sequence 128, 2 threads
   (10 warm-up, 50 timed calls, median and p90), each with its own accuracy on the full SST-2 dev set.
2. A load test of `bentoml serve` on 127.0.0.1 with one student packaged (int8), at concurrency 1, 8 and 32,
   with adaptive batching on and off: each run is bounded in requests and seconds; throughput, p50, p99,
   errors, and the server's resident memory before and after. Client and server share the machine's cores.

Run `make bench-serve`. Writes benchmarks/results/serve-sst2.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
os.environ.setdefault("BENTOML_HOME", str(ROOT / "runs" / "bench-serve" / "bentoml"))
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")

from common import write_results  # noqa: E402

from compress.config import load_run_config  # noqa: E402
from serve.launch import LocalServer  # noqa: E402

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


# ----------------------------------------------------------------------------------------------
# Load test


def _rss_mb(pid: int) -> float:
    import psutil

    try:
        proc = psutil.Process(pid)
        return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)]) / 2**20
    except psutil.NoSuchProcess:
        return float("nan")


def _server(tag: str, batching: bool, home: Path, log: Path) -> LocalServer:
    env = {"COMPRESS_MODEL": tag, "COMPRESS_BATCHING": "1" if batching else "0", "COMPRESS_THREADS": "2",
           "COMPRESS_MAX_BATCH_SIZE": "32", "COMPRESS_MAX_LATENCY_MS": "30000"}
    return LocalServer("serve.service:Compress", home, env, own_home=False, log=log)


def load_test(url: str, texts: list[str], concurrency: int, max_requests: int, max_seconds: float) -> dict:
    """`concurrency` client threads, each with one keep-alive connection, one text per request."""
    import http.client

    host, port = url.split("//")[1].split(":")
    lock = threading.Lock()
    latencies: list[float] = []
    errors: dict[str, int] = {}
    issued = [0]
    t_end = time.perf_counter() + max_seconds

    def worker(k: int) -> None:
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        while True:
            with lock:
                if issued[0] >= max_requests or time.perf_counter() > t_end:
                    break
                i = issued[0]
                issued[0] += 1
            body = json.dumps({"texts": [texts[i % len(texts)]]})
            t0 = time.perf_counter()
            try:
                conn.request("POST", "/classify", body, {"Content-Type": "application/json"})
                resp = conn.getresponse()
                resp.read()
                ok = resp.status == 200
                key = str(resp.status)
            except Exception as exc:  # noqa: BLE001 - any client-side failure counts as an error
                ok, key = False, type(exc).__name__
                conn.close()
                conn = http.client.HTTPConnection(host, int(port), timeout=60)
            dt = time.perf_counter() - t0
            with lock:
                if ok:
                    latencies.append(dt)
                else:
                    errors[key] = errors.get(key, 0) + 1
        conn.close()

    start = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    ms = np.asarray(latencies) * 1000
    return {"concurrency": concurrency, "requests": len(latencies) + sum(errors.values()), "ok": len(latencies),
            "errors": sum(errors.values()), "errors_by_kind": errors, "seconds": elapsed,
            "throughput_rps": len(latencies) / elapsed, "p50_ms": float(np.percentile(ms, 50)) if len(ms) else None,
            "p99_ms": float(np.percentile(ms, 99)) if len(ms) else None, "bound": {"max_requests": max_requests,
                                                                                   "max_seconds": max_seconds}}


def _batch_metrics(url: str) -> dict:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url + "/metrics", timeout=10) as r:
        fams = {f.name: f for f in text_string_to_metric_families(r.read().decode())}
    items = fams.get("compress_batch_items")
    if not items:
        return {}
    s = {x.name: x.value for x in items.samples if x.labels.get("endpoint") == "/classify" and not x.name.endswith("_bucket")}
    calls = s.get("compress_batch_items_count", 0)
    return {"model_calls": calls, "mean_inputs_per_call": s.get("compress_batch_items_sum", 0) / calls if calls else None}


def serve_table(cfg, student: dict, texts: list[str], levels=(1, 8, 32), max_requests: int = 1500,
                max_seconds: float = 30.0) -> dict:
    from compress.deploy.package import package

    res = package(cfg, trial=student["number"], precision="int8", progress=False)
    logs = ROOT / "runs" / "bench-serve"
    logs.mkdir(parents=True, exist_ok=True)
    runs = []
    for batching in (True, False):
        server = _server(res["tag"], batching, Path(os.environ["BENTOML_HOME"]), logs / f"serve-batching-{int(batching)}.log")
        try:
            rss_before = _rss_mb(server.proc.pid)
            load_test(server.url, texts, 4, 100, 10)  # warm-up, not recorded
            for c in levels:
                r = load_test(server.url, texts, c, max_requests, max_seconds)
                r["batching"] = batching
                r["server_rss_mb_after"] = _rss_mb(server.proc.pid)
                runs.append(r)
                print(f"batching {'on' if batching else 'off'} c={c}: {r['throughput_rps']:.1f} req/s, p50 "
                      f"{r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, errors {r['errors']}", flush=True)
            batch_info = _batch_metrics(server.url)
            for r in runs:
                if r["batching"] == batching:
                    r["server_rss_mb_before"] = rss_before
            runs.append({"batching": batching, "summary": True, **batch_info,
                         "server_rss_mb_before": rss_before, "server_rss_mb_after": _rss_mb(server.proc.pid)})
        finally:
            server.stop()
    return {"package": {"tag": res["tag"], "meta": res["meta"]}, "runs": runs}


def _summary(variants: list[dict], serving: dict | None) -> str:
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
    if serving:
        meta = serving["package"]["meta"]
        lines += ["", f"## Load test: `bentoml serve` on 127.0.0.1, trial {meta['trial']} int8 "
                      f"(accuracy {meta['metric_value']:.4f})", "",
                  "One text per request, keep-alive connections, one client thread per concurrent request; the client "
                  "runs on the same 2 cores as the server. Each run stops at its request or time bound. Server RSS is "
                  "the serving process tree.", "",
                  "| batching | concurrency | requests | req/s | p50 ms | p99 ms | errors | RSS before MB | RSS after MB |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in serving["runs"]:
            if r.get("summary"):
                continue
            lines.append(f"| {'on' if r['batching'] else 'off'} | {r['concurrency']} | {r['requests']} | "
                         f"{r['throughput_rps']:.1f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['errors']} | "
                         f"{r['server_rss_mb_before']:.0f} | {r['server_rss_mb_after']:.0f} |")
        for r in serving["runs"]:
            if r.get("summary") and r.get("model_calls"):
                lines.append(f"\nBatching {'on' if r['batching'] else 'off'}: {r['model_calls']:.0f} model calls, "
                             f"{r['mean_inputs_per_call']:.2f} inputs per call on average (compress_batch_items).")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--students", type=int, default=3, help="frontier students to measure besides the teacher")
    ap.add_argument("--skip-load", action="store_true")
    ap.add_argument("--max-requests", type=int, default=1500)
    ap.add_argument("--max-seconds", type=float, default=30.0)
    args = ap.parse_args()
    if not (RUN / "frontier.json").is_file():
        raise SystemExit(f"{RUN} has no frontier.json; run `make bench-search` first")
    cfg = load_run_config(RUN)
    doc = json.loads((RUN / "frontier.json").read_text())
    students = _pick_students(doc, args.students)
    variants = variant_table(cfg, students)
    serving = None
    if not args.skip_load:
        from compress.data import load_text_examples

        texts = [ex.texts[0] for ex in load_text_examples(cfg.data.eval, cfg.task, cfg.config_path)]
        knee = next((s for s in students if s.get("scenario") == "knee"), students[0])
        serving = serve_table(cfg, knee, texts, max_requests=args.max_requests, max_seconds=args.max_seconds)
    write_results("serve-sst2", {"variants": variants, "serving": serving, "students": students},
                  _summary(variants, serving))


if __name__ == "__main__":
    main()
