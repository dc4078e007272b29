"""The held-out test split: scored at the end of a study on each deployed ONNX file (teacher, baseline, frontier),
never seen by training or the search, shown beside eval in frontier.json and the report, cached per file, and
for SQuAD 2.0 scored at the no-answer threshold chosen on eval.

Studies run on a tiny teacher fine-tuned once for the module; the data set is generated (tests/conftest.py).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from compress.search import heldout
from compress.config import from_mapping
from compress.data.split import example_id
from compress.model.inference import evaluate_onnx
from compress.distill.jobs import finetune_teacher
from compress.report import build_report
from compress.search import open_study, run_worker
from tests.conftest import CONFIRM_QUICK, job_config, write_sentiment_tsv, write_squad

SPACE = {"num_layers": {"type": "int", "low": 1, "high": 2},
         "heads": {"type": "categorical", "choices": [2, 4]},
         "learning_rate": {"type": "logfloat", "low": 3e-4, "high": 3e-3}}


def _noisy_sentiment(path: Path, n: int, seed: int, flip: float = 0.25) -> Path:
    """The generated sentiment rows with a share of labels flipped: no model is perfect, so figures differ."""
    rng = random.Random(seed)
    lines = write_sentiment_tsv(path, n, seed).read_text().splitlines()
    for i in range(1, len(lines)):
        if rng.random() < flip:
            text, label = lines[i].rsplit("\t", 1)
            lines[i] = f"{text}\t{1 - int(label)}"
    path.write_text("\n".join(lines) + "\n")
    return path


def _raw(tmp: Path, teacher: str, name: str = "heldout") -> dict:
    """A search over 80 generated rows, eval and test carved from them (16 rows each)."""
    train = _noisy_sentiment(tmp / "train.tsv", 80, seed=3)
    raw = job_config(tmp, {"type": "classification"}, str(train), None, teacher)
    raw["name"] = name
    raw["data"].pop("eval")
    raw["data"]["split"] = {"eval": 0.2, "test": 0.2, "seed": 0}
    # long enough for the tiny models to learn the words, so that models (and eval and test) differ
    raw["teacher"]["train"] = {"max_steps": 60, "batch_size": 16, "learning_rate": 2e-3, "eval_every": 0}
    raw["distill"]["train"] = {"max_steps": 30, "batch_size": 16, "learning_rate": 2e-3, "eval_every": 10}
    raw["student"] = {}
    raw["search"] = {"n_trials": 4, "sampler": "random", "seed": 0, "space": SPACE,
                     "objectives": ["metric", "params", "latency_ms"],
                     "latency": {"batch_size": 1, "seq_len": 16, "threads": 1, "warmup": 1, "repeats": 3,
                                 "rounds": 3, "calls_per_round": 2, "wait_s": 0},
                     "confirm": CONFIRM_QUICK}
    return raw


@pytest.fixture(scope="module")
def study_run(tmp_path_factory, tiny_base):
    """A finished 3-trial study with a carved test split, its config and its data."""
    tmp = tmp_path_factory.mktemp("heldout")
    teacher = str(finetune_teacher(from_mapping(_raw(tmp, tiny_base)), progress=False))
    cfg = from_mapping(_raw(tmp, teacher))
    run_worker(cfg, progress=False)
    data = heldout.heldout_data(cfg)
    return cfg, data


def test_study_ends_with_test_figures_of_the_deployed_files(study_run):
    cfg, data = study_run
    doc = json.loads((cfg.run_dir / "frontier.json").read_text())
    assert doc["splits"]["eval"]["rows"] == 16 and doc["splits"]["test"]["rows"] == 16
    assert "carved from train" in doc["split_method"] and "never seen" in doc["held_out"]
    teacher_onnx = cfg.run_dir / "teacher_onnx" / "model.onnx"
    models = [(doc["teacher"], teacher_onnx), (doc["baseline"], Path(doc["baseline"]["onnx"]))]
    models += [(p, Path(p["onnx"])) for p in doc["frontier"]]
    assert doc["frontier"]
    for rec, onnx_path in models:
        test = rec["test"]
        direct, _ = evaluate_onnx(onnx_path, data, split=data.test, threads=1)
        assert test["accuracy"] == pytest.approx(direct["accuracy"]) and test["f1"] == pytest.approx(direct["f1"])
        assert test["rows"] == 16
        assert test["method"] == f"ONNX Runtime on {onnx_path.parent.name}/model.onnx, test split (16 rows), " \
                                 "task metrics as in the search"
    # eval figures stay what the search measured; the test figure sits beside them
    base = doc["baseline"]
    assert base["value"] == base["metrics"]["accuracy"]
    for p in doc["frontier"]:
        assert (Path(p["dir"]) / "test.json").is_file()
    assert (teacher_onnx.parent / "test.json").is_file()


def test_test_rows_are_never_trained_or_evaluated_on(study_run):
    cfg, data = study_run
    train, eval_, test = ({example_id(ex) for ex in s.examples} for s in (data.train, data.eval, data.test))
    assert len(test) == 16 and not test & train and not test & eval_ and not train & eval_
    split = json.loads((cfg.run_dir / "split.json").read_text())
    assert split["splits"]["test"]["rows"] == 16
    for folder in [cfg.run_dir / "teacher", *(cfg.run_dir / "trials").iterdir()]:
        model = folder if folder.name == "teacher" else folder / "model"
        rows = {p["row"] for p in json.loads((model / "predictions.json").read_text())}
        assert rows == eval_  # every evaluation in training and the search is on eval, never on test


def test_rerun_uses_the_cache(study_run, monkeypatch):
    cfg, data = study_run
    study = open_study(cfg, create=False)
    first = heldout.evaluate_heldout(cfg, study, data)

    def fail(*args, **kwargs):
        raise AssertionError("the held-out evaluation ran again instead of using the cache")

    monkeypatch.setattr(heldout, "evaluate_onnx", fail)
    again = heldout.evaluate_heldout(cfg, study)  # also loads the data itself, as `compress report` does
    assert again == first and set(again["trials"]) >= {0}
    # a file with other content is scored again (the cache is keyed by the ONNX file's content hash)
    rec = again["trials"][0]
    key = dict(rec["key"], onnx_sha256="0" * 64)
    cache = Path(json.loads((cfg.run_dir / "frontier.json").read_text())["baseline"]["dir"]) / "test.json"
    cache.write_text(json.dumps({**rec, "key": key}))
    with pytest.raises(AssertionError, match="ran again"):
        heldout.evaluate_heldout(cfg, study, data)
    monkeypatch.undo()
    assert heldout.evaluate_heldout(cfg, study, data)["trials"][0]["metrics"] == rec["metrics"]


def test_report_shows_eval_and_test_side_by_side(study_run, tmp_path):
    cfg, _ = study_run
    html_path, md_path = build_report(cfg, tmp_path)
    page, md = html_path.read_text(), md_path.read_text()
    for text in (page, md):
        assert "eval accuracy (used for selection)" in text and "test accuracy (held out)" in text
        assert "The search selected these students on the eval split (16 rows)" in text
        assert "the test split (16 rows) was never seen by it" in text
    header = next(line for line in md.splitlines() if line.startswith("| scenario |"))
    assert "| eval accuracy (used for selection) | test accuracy (held out) |" in header
    doc = json.loads((cfg.run_dir / "frontier.json").read_text())
    knee_row = next(line for line in md.splitlines() if line.startswith("| knee of the frontier |"))
    cells = [c.strip() for c in knee_row.strip("|").split("|")]
    knee = next(p for p in doc["frontier"] if str(p["number"]) == cells[1])
    assert cells[2] == f"{knee['value']:.4f}" and cells[3] == f"{knee['test']['accuracy']:.4f}"


def test_without_a_test_split_nothing_changes(tmp_path, tiny_base):
    raw = _raw(tmp_path, tiny_base, name="no-test")
    raw["data"]["split"] = {"eval": 0.2, "seed": 0}
    cfg = from_mapping(raw)
    assert not cfg.data.has_test
    assert heldout.evaluate_heldout(cfg, None) == {}  # never even opens the study


# ------------------------------------------------------------------ SQuAD 2.0: the threshold comes from eval


class _Pred:
    def __init__(self, qid: str, null_odds: float) -> None:
        self.qid, self.text, self.null_odds = qid, "x", null_odds


def test_squad2_test_is_scored_at_the_eval_threshold(monkeypatch, tmp_path):
    """Eval's best-exact threshold (1.5) scores test, whatever threshold would be best on test (-3.0)."""
    from types import SimpleNamespace

    calls = []

    def fake(path, data, split=None, batch_size=64, threads=2, na_threshold=0.0, progress=False):
        calls.append((split.name, na_threshold))
        if split.name == "eval":
            return ({"exact": 50.0, "best_exact": 75.0, "best_exact_thresh": 1.5, "best_f1": 75.0,
                     "best_f1_thresh": 1.5, "total": 4, "NoAns_total": 2},
                    [_Pred("e1", 2.0), _Pred("e2", -1.0)])
        return ({"exact": 40.0, "f1": 45.0, "na_threshold": na_threshold, "best_exact": 90.0,
                 "best_exact_thresh": -3.0, "best_f1": 92.0, "best_f1_thresh": -3.0}, [])

    monkeypatch.setattr(heldout, "evaluate_onnx", fake)
    monkeypatch.setattr(heldout, "_eval_at", lambda data, preds, threshold: {"exact": 75.0, "na_threshold": threshold})
    onnx_file = tmp_path / "onnx" / "model.onnx"
    onnx_file.parent.mkdir()
    onnx_file.write_bytes(b"")
    def split(name: str) -> SimpleNamespace:
        examples = [SimpleNamespace(qid=f"{name}{i}", row=f"{name}{i}") for i in range(4)]
        return SimpleNamespace(name=name, examples=examples, key=f"{name}-key")

    data = SimpleNamespace(version_2=True, eval=split("eval"), test=split("test"))
    rec = heldout.score_heldout(onnx_file, data, threads=1)
    assert calls == [("eval", 0.0), ("test", 1.5)]
    assert rec["metrics"] == {"exact": 40.0, "f1": 45.0, "na_threshold": 1.5}  # no best_* among the test figures
    oracle = rec["oracle_threshold_on_test"]
    assert oracle["best_exact"] == 90.0 and oracle["best_exact_thresh"] == -3.0
    assert "oracle threshold on test" in oracle["note"]
    assert rec["method"] == "ONNX Runtime on onnx/model.onnx, test split (4 rows), SQuAD 2.0 no-answer threshold " \
                            "1.5 chosen on eval"
    assert rec["eval_at_threshold"] == {"exact": 75.0, "na_threshold": 1.5}


def test_squad2_held_out_file_from_data_test(tmp_path, tiny_base):
    """QA with a data.test source: the exported teacher scored on test at the serving threshold of eval."""
    from compress.deploy.export import export_onnx
    from compress.model.inference import score_outputs, onnx_session, predict_onnx
    from compress.deploy.variants import serving_threshold

    raw = job_config(tmp_path, {"type": "qa"}, str(write_squad(tmp_path / "tr.json")),
                     str(write_squad(tmp_path / "dev.json")), tiny_base)
    raw["data"].update(max_seq_length=32, doc_stride=8, test=str(write_squad(tmp_path / "test.json")))
    cfg = from_mapping(raw)
    assert cfg.data.has_test
    teacher = finetune_teacher(cfg, progress=False)
    exported = export_onnx(teacher, cfg.run_dir / "teacher_onnx", "qa")
    data = heldout.heldout_data(cfg)
    assert data.version_2 and data.test is not None
    rec = heldout.cached_score(exported.path, exported.path.parent / "test.json", data, threads=1)
    session = onnx_session(exported.path, 1)
    eval_metrics, eval_preds = score_outputs(data, data.eval, predict_onnx(session, data.eval, "qa"))
    threshold = serving_threshold(eval_metrics, eval_preds)
    test_metrics, _ = score_outputs(data, data.test, predict_onnx(session, data.test, "qa"), threshold)
    assert rec["metrics"]["na_threshold"] == pytest.approx(threshold)
    for k in ("exact", "f1", "no_answer_rate"):
        assert rec["metrics"][k] == pytest.approx(test_metrics[k])
    assert not set(heldout.ORACLE_KEYS) & set(rec["metrics"])
    assert rec["oracle_threshold_on_test"]["best_f1"] == pytest.approx(test_metrics["best_f1"])
    assert "chosen on eval" in rec["method"] and rec["rows"] == 4


def test_package_carries_the_test_figures_of_the_packaged_file(study_run, tmp_path):
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    cfg, _ = study_run
    doc = json.loads((cfg.run_dir / "frontier.json").read_text())
    code = ("import json, sys; from compress.config import load_run_config; from compress.deploy.package import describe, package; "
            "res = package(load_run_config(sys.argv[1]), trial=0, progress=False); "
            "print(json.dumps({'meta': res['meta'], 'text': describe(res['meta'])}, default=str))")
    env = {**os.environ, "BENTOML_HOME": str(tmp_path / "bentoml"), "BENTOML_DO_NOT_TRACK": "true"}
    out = subprocess.run([sys.executable, "-c", code, str(cfg.run_dir)], capture_output=True, text=True, env=env,
                         cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["meta"]["test"] == doc["baseline"]["test"]  # the same file as the baseline's deployed one
    assert got["meta"]["test_metric_value"] == doc["baseline"]["test"]["accuracy"]
    assert "on the held-out test set (16 rows, never seen by the search)" in got["text"]
