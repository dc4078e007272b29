"""The packaged service through a real `bentoml serve` on 127.0.0.1: answers equal offline evaluation, bad
requests get their status and message, /metrics parses and moves; and a built bento serves.

Two tiny studies (classification with precision searched over fp32/int8, and SQuAD 2.0 QA with contexts longer
than one window) are run once, packaged with `compress package` into a temporary BentoML home.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from compress.config import from_mapping
from compress.distill.jobs import finetune_teacher
from compress.search import run_worker
from serve.launch import LocalServer
from tests.conftest import CONFIRM_QUICK, ROOT, job_config, write_sentiment_tsv, write_squad

BIN = Path(sys.executable).parent


def _cfg(tmp: Path, base: str, kind: str, teacher: str | None = None):
    if kind == "qa":
        train, dev = write_squad(tmp / "train.json"), write_squad(tmp / "dev.json")
        raw = job_config(tmp, {"type": "qa"}, str(train), str(dev), teacher or base)
        raw["data"].update(max_seq_length=40, doc_stride=1)  # questions up to 35 characters; contexts in 2 windows
        space = {"num_layers": {"type": "int", "low": 1, "high": 2}}
    else:
        train = write_sentiment_tsv(tmp / "train.tsv", 48, seed=1, labels=("neg", "pos"))
        dev = write_sentiment_tsv(tmp / "dev.tsv", 24, seed=2, labels=("neg", "pos"))
        raw = job_config(tmp, {"type": "classification", "labels": ["neg", "pos"]}, str(train), str(dev),
                         teacher or base)
        space = {"num_layers": {"type": "int", "low": 1, "high": 2},
                 "precision": {"type": "categorical", "choices": ["int8"]}}
    raw["name"] = f"serve-{kind}"
    raw["distill"]["train"] = {"max_steps": 4, "batch_size": 8, "eval_every": 2}
    raw["student"] = {}
    raw["search"] = {"n_trials": 2, "sampler": "random", "seed": 0, "space": space,
                     "objectives": ["metric", "params", "latency_ms"],
                     "latency": {"batch_size": 1, "seq_len": 16, "threads": 1, "warmup": 1, "repeats": 3,
                                 "rounds": 3, "calls_per_round": 2, "wait_s": 0},
                     "confirm": CONFIRM_QUICK}
    return from_mapping(raw)


def _package(run_dir: Path, home: Path, trial: int, *extra: str) -> dict:
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true"}
    out = subprocess.run([str(BIN / "compress"), "package", str(run_dir), "--trial", str(trial), *extra],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    tag = next(line.split()[1] for line in out.stdout.splitlines() if line.startswith("packaged "))
    name, version = tag.split(":")
    folder = home / "models" / name / version
    return {"tag": tag, "stdout": out.stdout, "folder": folder, "meta": json.loads((folder / "compress.json").read_text())}


@pytest.fixture(scope="module")
def packaged(tmp_path_factory, tiny_base):
    """Both tiny runs, searched and packaged (trial 1 of each: the non-baseline trial)."""
    home = tmp_path_factory.mktemp("bentoml-home")
    out = {"home": home}
    for kind in ("classification", "qa"):
        tmp = tmp_path_factory.mktemp(kind)
        teacher = str(finetune_teacher(_cfg(tmp, tiny_base, kind), progress=False))
        cfg = _cfg(tmp, tiny_base, kind, teacher)
        run_worker(cfg, progress=False)
        out[kind] = {"cfg": cfg, **_package(cfg.run_dir, home, 1)}
    return out


def Server(home: Path, target: str, env: dict[str, str] | None = None) -> LocalServer:
    return LocalServer(target, home, env)


def _offline(entry: dict):
    """The packaged ONNX file scored by offline evaluation (as the search and `compress package` do)."""
    from compress.data import prepare_task_data
    from compress.model.inference import evaluate_onnx
    from compress.model.teacher import load_tokenizer

    cfg = entry["cfg"]
    data = prepare_task_data(cfg, load_tokenizer(str(entry["folder"])))
    thr = entry["meta"]["na_threshold"]
    metrics, preds = evaluate_onnx(entry["folder"] / "model.onnx", data, threads=1,
                                   na_threshold=thr if thr is not None else 0.0)
    return data, metrics, preds


@pytest.fixture(scope="module")
def servers(packaged):
    started = {}
    try:
        for kind in ("classification", "qa"):
            started[kind] = Server(packaged["home"], "serve.service:Compress",
                                   {"COMPRESS_MODEL": packaged[kind]["tag"], "COMPRESS_MAX_BODY_BYTES": "20000",
                                    "COMPRESS_THREADS": "1", "COMPRESS_WORKERS": "1"})
        yield started
    finally:
        for s in started.values():
            s.stop()


# ------------------------------------------------------------------ packaging


def test_package_holds_only_onnx_json_and_tokenizer_files(packaged):
    for kind in ("classification", "qa"):
        entry = packaged[kind]
        names = {p.name for p in entry["folder"].iterdir()}
        assert {"model.onnx", "config.json", "tokenizer.json", "compress.json", "model.yaml", "README.md"} <= names
        assert not [n for n in names if n.endswith((".pkl", ".pickle", ".bin", ".pt"))], names
        meta = entry["meta"]
        for key in ("metric", "metric_value", "params", "latency_ms", "precision", "config_hash", "run", "trial"):
            assert meta[key] is not None, key
        assert "curl" in entry["stdout"] and "bentoml serve" in entry["stdout"]
        # a Hugging Face model card: YAML metadata (model-index with the measured metric) and the readable body
        from huggingface_hub import ModelCard

        card = ModelCard.load(entry["folder"] / "README.md")
        assert card.data.pipeline_tag == ("question-answering" if kind == "qa" else "text-classification")
        [res] = [r for r in card.data.eval_results if r.metric_type == meta["metric"] and r.dataset_split == "eval"]
        assert res.metric_value == pytest.approx(meta["metric_value"])
        for section in ("## Task", "## Teacher and data", "## How it was compressed", "## Metrics", "## Latency",
                        "## Intended use and limits"):
            assert section in card.text, section
        assert f"{meta['latency_ms']:.3f} ms median" in card.text
    assert packaged["classification"]["meta"]["precision"] == "int8"  # the searched precision is the default
    assert packaged["classification"]["meta"]["labels"] == ["neg", "pos"]
    qa = packaged["qa"]["meta"]
    assert qa["version_2"] is True and isinstance(qa["na_threshold"], float)


def test_packaged_metric_is_measured_on_the_packaged_file(packaged):
    for kind in ("classification", "qa"):
        entry = packaged[kind]
        _, metrics, _ = _offline(entry)
        assert metrics[entry["meta"]["metric"]] == pytest.approx(entry["meta"]["metric_value"])


def test_package_refuses_an_unknown_trial(packaged):
    env = {**os.environ, "BENTOML_HOME": str(packaged["home"])}
    out = subprocess.run([str(BIN / "compress"), "package", str(packaged["qa"]["cfg"].run_dir), "--trial", "99"],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert out.returncode == 2 and "trial 99 is not in study" in out.stderr


# ------------------------------------------------------------------ the service


def test_binds_loopback_by_default(servers):
    for s in servers.values():
        assert f"listening on http://127.0.0.1:{s.port}" in s.log.read_text()


def test_classify_equals_offline_predictions(packaged, servers):
    data, _, preds = _offline(packaged["classification"])
    texts = [ex.texts[0] for ex in data.eval.examples]
    status, body = servers["classification"].post("/classify", {"texts": texts})
    assert status == 200 and len(body) == len(texts)
    assert [r["label_id"] for r in body] == preds
    assert all(r["label"] == ["neg", "pos"][r["label_id"]] for r in body)
    assert all(abs(sum(r["scores"].values()) - 1) < 1e-6 for r in body)


def test_answer_equals_offline_predictions_with_sliding_windows(packaged, servers):
    data, _, preds = _offline(packaged["qa"])
    thr = packaged["qa"]["meta"]["na_threshold"]
    examples = data.eval.examples
    assert len(data.eval) > len(examples)  # contexts longer than one window
    items = [{"question": ex.question, "context": ex.context} for ex in examples]
    status, body = servers["qa"].post("/answer", {"items": items})
    assert status == 200 and len(body) == len(items)
    for got, p, ex in zip(body, preds, examples):
        want = p.answer(thr)
        assert got["answer"] == want
        assert got["no_answer"] == (want == "")
        if want:
            assert (got["start"], got["end"]) == (p.start, p.end)
            assert ex.context[got["start"]:got["end"]] == got["answer"]
        assert got["threshold"] == pytest.approx(thr)


def test_concurrent_questions_share_calls_and_get_their_own_answers(packaged, servers):
    """One question per request, eight at a time: each answer is still its own evaluated prediction and every
    window ran once (which requests meet in one call depends on timing and length buckets here;
    tests/serve/test_scheduler.py checks the batching itself)."""
    data, _, preds = _offline(packaged["qa"])
    thr = packaged["qa"]["meta"]["na_threshold"]
    s = servers["qa"]
    before = _metrics(s)
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda ex: s.post("/answer", {"items": [{"question": ex.question,
                                                                           "context": ex.context}]}),
                                data.eval.examples * 3))
    assert all(status == 200 for status, _ in results)
    assert [body[0]["answer"] for _, body in results] == [p.answer(thr) for p in preds] * 3
    after = _metrics(s)
    windows = _sample(after, "compress_batch_items", "compress_batch_items_sum", endpoint="/answer") - \
        _sample(before, "compress_batch_items", "compress_batch_items_sum", endpoint="/answer")
    assert windows == 3 * len(data.eval) > len(results)  # every window of every request ran once


def test_concurrent_requests_get_their_own_answers(packaged, servers):
    data, _, preds = _offline(packaged["classification"])
    texts = [ex.texts[0] for ex in data.eval.examples]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda t: servers["classification"].post("/classify", {"texts": [t]}), texts))
    assert [r[1][0]["label_id"] for r in results] == preds


BAD = [
    ("classification", "/classify", {"texts": ["fine", "   "]}, 400, "texts[1]: is empty"),
    ("classification", "/classify", {"text": ["fine"]}, 400, "texts: is required"),
    ("classification", "/classify", {"texts": "fine"}, 400, "texts: Input should be a valid"),
    ("classification", "/classify", {"texts": [3]}, 400, "texts[0]: expected a string"),
    ("classification", "/classify", {"texts": [None]}, 400, "texts[0]: expected a string"),
    ("classification", "/classify", {"texts": []}, 400, "texts: List should have at least 1 item"),
    ("classification", "/classify", {"texts": [["a", "b"]]}, 400, "texts[0]: expected a string"),
    ("classification", "/answer", {"items": [{"question": "q", "context": "c"}]}, 404, "answers POST /classify"),
    ("qa", "/answer", {"items": [{"question": "who?"}]}, 400, "items[0].context: is required"),
    ("qa", "/answer", {"items": [{"question": "", "context": "some text"}]}, 400, "items[0].question: is empty"),
    ("qa", "/answer", {"items": [{"question": 7, "context": "some text"}]}, 400, "items[0].question"),
    ("qa", "/answer", {"items": [{"question": "why " * 40, "context": "c"}]}, 400, "items[0].question: String should "
     "have at most 35 characters (as much as this model reads)"),
    ("qa", "/answer", {"items": [{"question": "who?", "context": " \t "}]}, 400, "items[0].context: is empty"),
    ("qa", "/classify", {"texts": ["x"]}, 404, "answers POST /answer"),
]


@pytest.mark.parametrize("kind,path,body,status,message", BAD, ids=[b[4][:30] for b in BAD])
def test_bad_requests_get_status_and_message(servers, kind, path, body, status, message):
    got, payload = servers[kind].post(path, body)
    assert got == status, payload
    assert message in payload["error"], payload


def test_malformed_json_oversized_body_and_wrong_content_type(servers):
    s = servers["classification"]
    status, payload = s.post("/classify", None, raw=b'{"texts": [oops')
    assert status == 400 and payload["error"].startswith("body: is not valid JSON")
    status, payload = s.post("/classify", None, raw=json.dumps({"texts": ["a" * 30000]}).encode())
    assert status == 413 and "over the limit of 20000 bytes" in payload["error"]
    status, payload = s.post("/classify", None, raw=b"plain words", content_type="text/plain")
    assert status == 415 and "text/plain" in payload["error"] and payload["field"] == "body"


def _raw(server: LocalServer, method: str, path: str, body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict, dict]:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        data = r.read()
        return r.status, dict(r.getheaders()), json.loads(data)
    finally:
        conn.close()


GOOD = json.dumps({"texts": ["good film"]}).encode()
MALFORMED = [  # (method, path, body, headers, status, words in the error)
    ("POST", "/classify", GOOD, {"Content-Type": "multipart/form-data"}, 415, "multipart/form-data"),
    ("POST", "/classify", GOOD, {"Content-Type": "multipart/form-data; boundary=xyz"}, 415, "multipart/form-data"),
    ("POST", "/classify", GOOD, {"Content-Type": "application/x-www-form-urlencoded"}, 415, "application/json"),
    ("POST", "/classify", b"<texts><t>good</t></texts>", {"Content-Type": "application/xml"}, 415, "application/xml"),
    ("POST", "/classify", GOOD, {}, 415, "no Content-Type"),
    ("POST", "/classify", GOOD, {"Content-Type": "application/json; charset=latin-1"}, 415, "charset"),
    ("POST", "/classify", b'{"texts": ["\\ud800 lone"]}', {"Content-Type": "application/json"}, 400, "body"),
    ("POST", "/classify", b'{"texts": ["\xff\xfe"]}', {"Content-Type": "application/json"}, 400, "body"),
    ("POST", "/classify", b"[" * 5000 + b"]" * 5000, {"Content-Type": "application/json"}, 400, "body"),
    ("POST", "/classify", b'{"texts": ["a"], "texts": 3}', {"Content-Type": "application/json"}, 400, "texts"),
    ("POST", "/classify", b"", {"Content-Type": "application/json"}, 400, "body: is empty"),
    ("POST", "/classify", b"null", {"Content-Type": "application/json"}, 400, ""),
    ("GET", "/classify", None, {}, 405, "method not allowed"),
    ("PUT", "/classify", GOOD, {"Content-Type": "application/json"}, 405, "method not allowed"),
    ("GET", "/nowhere", None, {}, 404, "no such endpoint"),
    ("POST", "/nowhere", GOOD, {"Content-Type": "application/json"}, 404, "no such endpoint"),
]


@pytest.mark.parametrize("method,path,body,headers,status,words", MALFORMED,
                         ids=[f"{m[0]} {m[1]} {m[3].get('Content-Type', 'none')[:20]} {m[4]}" for m in MALFORMED])
def test_malformed_requests_get_a_4xx_json_body(servers, method, path, body, headers, status, words):
    got, hdrs, payload = _raw(servers["classification"], method, path, body, headers)
    assert got == status, payload
    assert hdrs.get("content-type") == "application/json" and "error" in payload and "field" in payload
    assert words in payload["error"], payload


def test_each_rejected_request_is_one_log_line_without_a_traceback(servers):
    s = servers["classification"]
    before = s.log.read_text()
    for _ in range(3):
        s.post("/classify", {"texts": [""]})
        _raw(s, "POST", "/classify", GOOD, {"Content-Type": "multipart/form-data"})
    import time

    time.sleep(1.0)  # the server flushes its log
    new = s.log.read_text()[len(before):]
    assert "Traceback" not in new, new[-2000:]
    lines = [ln for ln in new.splitlines() if "rejected POST /classify" in ln]
    assert len([ln for ln in lines if " 400: texts[0]: is empty" in ln]) == 3, new[-2000:]
    assert len([ln for ln in lines if " 415: " in ln]) == 3


def _metrics(server: LocalServer) -> dict:
    from prometheus_client.parser import text_string_to_metric_families

    status, text = server.get("/metrics")
    assert status == 200
    return {f.name: f for f in text_string_to_metric_families(text)}


def _sample(families: dict, family: str, sample_name: str, **labels) -> float:
    fam = families.get(family)
    if fam is None:
        return 0.0
    return sum(s.value for s in fam.samples if s.name == sample_name
               and all(s.labels.get(k) == v for k, v in labels.items()))


def test_metrics_parse_and_move(servers):
    s = servers["classification"]
    before = _metrics(s)
    ok = _sample(before, "bentoml_service_request", "bentoml_service_request_total", endpoint="/classify",
                 http_response_code="200")
    bad = _sample(before, "bentoml_service_request", "bentoml_service_request_total", endpoint="/classify",
                  http_response_code="400")
    for _ in range(3):
        assert s.post("/classify", {"texts": ["good movie", "bad movie"]})[0] == 200
    assert s.post("/classify", {"texts": [""]})[0] == 400
    after = _metrics(s)
    assert _sample(after, "bentoml_service_request", "bentoml_service_request_total", endpoint="/classify",
                   http_response_code="200") == ok + 3
    assert _sample(after, "bentoml_service_request", "bentoml_service_request_total", endpoint="/classify",
                   http_response_code="400") == bad + 1
    assert _sample(after, "bentoml_service_request_duration_seconds", "bentoml_service_request_duration_seconds_count",
                   endpoint="/classify") >= ok + bad + 4
    # the scheduler's own: one model call per request here (sent one after another), 2 texts each
    for name in ("compress_batch_items", "compress_inference_seconds", "compress_batch_token_fill"):
        calls = [_sample(m, name, f"{name}_count", endpoint="/classify") for m in (before, after)]
        assert calls[1] - calls[0] >= 3, name
    items = [_sample(m, "compress_batch_items", "compress_batch_items_sum", endpoint="/classify")
             for m in (before, after)]
    assert items[1] - items[0] == 6
    fills = [_sample(m, "compress_batch_token_fill", "compress_batch_token_fill_sum", endpoint="/classify")
             for m in (before, after)]
    assert 0 < fills[1] - fills[0] <= calls[1] - calls[0] + 1e-9  # each fill <= 1; sums of floats round
    info = [x for x in after["compress_model_info"].samples if x.value == 1]
    assert info and info[0].labels["precision"] == "int8" and info[0].labels["metric"] == "accuracy"
    assert int(info[0].labels["params"]) > 0


def test_health_endpoints(servers):
    for s in servers.values():
        assert s.get("/healthz")[0] == 200 and s.get("/readyz")[0] == 200


# ------------------------------------------------------------------ the bento


def test_bentoml_build_and_serve_the_bento(packaged):
    env = {**os.environ, "BENTOML_HOME": str(packaged["home"]), "BENTOML_DO_NOT_TRACK": "true",
           "COMPRESS_MODEL": packaged["classification"]["tag"]}
    out = subprocess.run([str(BIN / "bentoml"), "build", "--output", "tag"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    tag = out.stdout.strip().splitlines()[-1].replace("__tag__:", "")
    assert tag.startswith("compress:")
    bento = json.dumps(__import__("yaml").safe_load(
        (packaged["home"] / "bentos" / "compress" / tag.split(":")[1] / "bento.yaml").read_text()))
    assert packaged["classification"]["tag"] in bento
    bento_dir = packaged["home"] / "bentos" / "compress" / tag.split(":")[1]
    # the bento's README is the deployment guide, and the Kubernetes manifest travels with it
    assert (bento_dir / "README.md").read_text() == (ROOT / "serve" / "deploy" / "README.md").read_text()
    assert (bento_dir / "src" / "serve" / "deploy" / "k8s.yaml").is_file()
    server = Server(packaged["home"], tag, {"COMPRESS_MODEL": packaged["classification"]["tag"]})
    try:
        status, body = server.post("/classify", {"texts": ["the movie was great"]})
        assert status == 200 and body[0]["label"] in ("neg", "pos")
    finally:
        server.stop()


def test_int8_variant_is_smaller_than_fp32(packaged):
    folder = packaged["classification"]["folder"]
    meta = packaged["classification"]["meta"]
    fp32 = Path(packaged["classification"]["cfg"].run_dir, "trials", "1", "onnx", "model.onnx")
    assert (folder / "model.onnx").stat().st_size < 0.6 * fp32.stat().st_size
    assert np.isfinite(meta["latency_ms"])


# ------------------------------------------------------------------ the OpenAPI document tells the truth

from hypothesis import HealthCheck, settings  # noqa: E402


def _fuzz_schema(server: LocalServer):
    import schemathesis.specs.openapi.checks  # noqa: F401 - registers the OpenAPI checks

    # Invalid data must get a 4xx the schema declares; valid data a 200, or 413 when the body is over the server's
    # byte limit (a limit on the body, which a JSON schema cannot state) or 503 when overloaded.
    config = schemathesis.Config.from_dict({"checks": {
        "negative_data_rejection": {"expected-statuses": [400, 413, 415]},
        "positive_data_acceptance": {"expected-statuses": [200, 413, 503]}}})
    return schemathesis.openapi.from_url(f"{server.url}/docs.json", config=config).include(
        path_regex="^/(classify|answer)$")


def _every_check():
    from schemathesis.checks import CHECKS

    return list(CHECKS.get_all())  # not_a_server_error, status code, content type, headers, response schema,
    # negative data rejected, positive data accepted, ...


FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


@pytest.mark.parametrize("kind,path", [("classification", "/classify"), ("qa", "/answer")])
def test_requests_fuzzed_from_the_schema_get_what_it_declares(servers, kind, path):
    """Requests generated from /docs.json, 150 valid and 150 invalid per endpoint, with every check schemathesis
    has: no 5xx, declared statuses, content types, headers and bodies, invalid data rejected, valid data accepted.
    (schemathesis' pytest plugin does not run under this pytest; its strategies are driven with hypothesis.)"""
    from hypothesis import given

    from schemathesis import GenerationMode

    schema = _fuzz_schema(servers[kind])
    ops = [r.ok() for r in schema.get_all_operations()]
    assert [op.path for op in ops] == [path]
    calls = {"n": 0}
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        @given(case=ops[0].as_strategy(generation_mode=mode))
        @FUZZ
        def run(case):
            calls["n"] += 1
            case.call_and_validate(checks=_every_check())

        run()
    assert calls["n"] >= 250


def test_the_schema_declares_what_the_server_enforces(servers):
    doc = json.loads(servers["classification"].get("/docs.json")[1])
    assert "/answer" not in doc["paths"]  # a classification model serves /classify only
    op = doc["paths"]["/classify"]["post"]
    body = op["requestBody"]["content"]["application/json"]["schema"]
    body = doc["components"]["schemas"][body["$ref"].rsplit("/", 1)[1]] if "$ref" in body else body
    texts = body["properties"]["texts"]
    assert texts["minItems"] == 1 and texts["maxItems"] == 256
    assert texts["items"] == {"minLength": 1, "pattern": "\\S", "type": "string"}
    assert set(op["responses"]) == {"200", "400", "413", "415", "503", "500"}
    assert op["responses"]["503"]["headers"]["Retry-After"]["schema"]["type"] == "integer"
    assert doc["components"]["schemas"]["Error"]["required"] == ["error", "field"]
    qa = json.loads(servers["qa"].get("/docs.json")[1])
    assert set(qa["paths"]) & {"/classify", "/answer"} == {"/answer"}


def test_exported_folders_carry_a_model_card(packaged):
    from huggingface_hub import ModelCard

    from compress.deploy.package import export_variants, resolve_trial

    cfg = packaged["classification"]["cfg"]
    [row] = export_variants(cfg, resolve_trial(cfg, trial=1), ["fp32"], progress=False)
    card = ModelCard.load(Path(row["dir"]) / "README.md")
    assert card.data.model_name == f"{cfg.name}-trial1-fp32" and "onnx" in card.data.tags
    assert "labels (id order): neg, pos" in card.text and "## Intended use and limits" in card.text


def test_kubernetes_manifest_matches_the_service(servers):
    """Ports, probes, Prometheus annotations and environment of serve/deploy/k8s.yaml against the service."""
    import re

    import yaml

    docs = list(yaml.safe_load_all((ROOT / "serve" / "deploy" / "k8s.yaml").read_text()))
    deploy = next(d for d in docs if d["kind"] == "Deployment")
    service = next(d for d in docs if d["kind"] == "Service")
    pod = deploy["spec"]["template"]
    [container] = pod["spec"]["containers"]
    [port] = container["ports"]
    assert port["containerPort"] == 3000  # `bentoml serve`'s port, which the bento's image runs
    assert service["spec"]["selector"] == deploy["spec"]["selector"]["matchLabels"] == pod["metadata"]["labels"]
    assert service["spec"]["ports"][0]["targetPort"] == port["name"]
    s = servers["classification"]
    for probe in ("readinessProbe", "livenessProbe"):
        path = container[probe]["httpGet"]["path"]
        assert container[probe]["httpGet"]["port"] == port["name"] and s.get(path)[0] == 200, path
    ann = pod["metadata"]["annotations"]
    assert ann["prometheus.io/scrape"] == "true" and int(ann["prometheus.io/port"]) == port["containerPort"]
    assert s.get(ann["prometheus.io/path"])[0] == 200
    # every variable the manifest sets is one the service reads, with a value it accepts
    source = (ROOT / "serve" / "service.py").read_text()
    read = set(re.findall(r'(?:os\.environ\.get|_env_int)\("(COMPRESS_[A-Z_]+)"', source))
    env = {e["name"]: e["value"] for e in container["env"]}
    assert set(env) <= read, set(env) - read
    assert env["COMPRESS_HOST"] == "0.0.0.0"
    threads, cpus = int(env["COMPRESS_THREADS"]), float(container["resources"]["limits"]["cpu"])
    assert threads * int(env.get("COMPRESS_WORKERS", "1")) <= cpus  # ONNX Runtime's threads never above the cores
