"""End to end on tiny random teachers: every task head and loss, determinism, divergence, the CLI's errors."""

from __future__ import annotations

import contextlib
import json
import math
import socket
import subprocess
import sys
import threading
import time

import pytest
import torch
import yaml

from compress.config import from_mapping
from compress.distill.loop import TrainingDiverged
from compress.distill.jobs import distill_student, finetune_teacher, load_context
from compress.model.student import StudentSpec, model_param_count
from tests.conftest import (
    ROOT, job_config, write_pairs_jsonl, write_regression_csv, write_sentiment_tsv, write_squad,
)


def _task_case(kind: str, tmp_path):
    if kind == "classification":
        train = write_sentiment_tsv(tmp_path / "train.tsv", 48, seed=1)
        dev = write_sentiment_tsv(tmp_path / "dev.tsv", 16, seed=2)
        return {"type": "classification"}, str(train), str(dev), "accuracy"
    if kind == "pair_classification":
        train = write_pairs_jsonl(tmp_path / "train.jsonl", 48, seed=1)
        dev = write_pairs_jsonl(tmp_path / "dev.jsonl", 16, seed=2)
        task = {"type": "pair_classification", "text_columns": ["premise", "hypothesis"], "labels": ["different", "same"]}
        return task, str(train), str(dev), "accuracy"
    if kind == "regression":
        train = write_regression_csv(tmp_path / "train.csv", 48, seed=1)
        dev = write_regression_csv(tmp_path / "dev.csv", 16, seed=2)
        return {"type": "regression", "text_columns": ["text"], "label_column": "score"}, str(train), str(dev), "pearson"
    train = write_squad(tmp_path / "train.json", version_2=True)
    dev = write_squad(tmp_path / "dev.json", version_2=True)
    return {"type": "qa"}, str(train), str(dev), "f1"


@pytest.mark.parametrize("kind", ["classification", "pair_classification", "regression", "qa"])
@pytest.mark.parametrize("alpha_hidden", [0.0, 0.5], ids=["logits", "logits+hidden"])
def test_teacher_then_student_for_every_task(kind, alpha_hidden, tmp_path, tiny_base):
    task, train, dev, metric = _task_case(kind, tmp_path)
    raw = job_config(tmp_path, task, train, dev, tiny_base)
    if kind == "qa":
        raw["data"].update(max_seq_length=64, doc_stride=16)
    raw["distill"]["alpha_hidden"] = alpha_hidden
    cfg = from_mapping(raw)

    teacher_dir = finetune_teacher(cfg, progress=False)
    tm = json.loads((teacher_dir / "metrics.json").read_text())
    assert tm["metric"] == metric and math.isfinite(tm["value"])
    assert len((teacher_dir / "curves.jsonl").read_text().splitlines()) == 2  # steps 3 and 6

    ctx = load_context(cfg, progress=False)
    out = tmp_path / "student"
    m = distill_student(ctx, StudentSpec(num_layers=2, heads=2, intermediate_size=32), out, progress=False)
    assert m["params"] < m["teacher"]["params"]
    for name in ("config.json", "model.safetensors", "tokenizer.json", "spec.json", "metrics.json",
                 "curves.jsonl", "predictions.json"):
        assert (out / name).is_file(), name
    curve = [json.loads(line) for line in (out / "curves.jsonl").read_text().splitlines()]
    assert [p["step"] for p in curve] == [3, 6]
    terms = {"loss_ce", "loss_task"} | ({"loss_hidden"} if alpha_hidden else set())
    assert terms <= set(curve[-1])
    if kind == "qa":
        assert m["version_2"] is True
        for key in ("HasAns_exact", "HasAns_f1", "NoAns_exact", "NoAns_f1", "best_f1", "best_f1_thresh"):
            assert key in curve[-1] and key in m["metrics"]
    if kind != "regression" and kind != "qa":
        cfg_saved = json.loads((out / "config.json").read_text())
        assert set(cfg_saved["id2label"].values()) == ({"0", "1"} if kind == "classification" else {"different", "same"})


def test_student_is_smaller_and_loads_back(tmp_path, tiny_base):
    task, train, dev, _ = _task_case("classification", tmp_path)
    cfg = from_mapping(job_config(tmp_path, task, train, dev, tiny_base))
    finetune_teacher(cfg, progress=False)
    ctx = load_context(cfg, progress=False)
    m = distill_student(ctx, StudentSpec(num_layers=1, heads=1, intermediate_size=16), tmp_path / "s", progress=False)
    assert m["params"] < m["teacher"]["params"]
    from transformers import AutoModelForSequenceClassification

    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "s")
    assert model_param_count(loaded) == m["params"]


def _train_once(tmp_path, tiny_base, sub: str):
    task, train, dev, _ = _task_case("classification", tmp_path)
    raw = job_config(tmp_path, task, train, dev, tiny_base)
    cfg = from_mapping(raw)
    if not (cfg.run_dir / "teacher" / "config.json").exists():
        finetune_teacher(cfg, progress=False)
    ctx = load_context(cfg, progress=False)
    m = distill_student(ctx, StudentSpec(num_layers=2, hidden_dropout=0.2), tmp_path / sub, progress=False)
    from safetensors.torch import load_file

    return m, load_file(str(tmp_path / sub / "model.safetensors"))


def test_same_seed_same_result(tmp_path, tiny_base):
    m1, w1 = _train_once(tmp_path, tiny_base, "a")
    m2, w2 = _train_once(tmp_path, tiny_base, "b")
    assert m1["metrics"] == m2["metrics"]
    assert w1.keys() == w2.keys()
    for k in w1:
        assert torch.equal(w1[k], w2[k]), k
    c1 = [json.loads(x)["loss"] for x in (tmp_path / "a" / "curves.jsonl").read_text().splitlines()]
    c2 = [json.loads(x)["loss"] for x in (tmp_path / "b" / "curves.jsonl").read_text().splitlines()]
    assert c1 == c2


def test_divergence_stops_the_run_with_a_clear_error(tmp_path, tiny_base):
    task, train, dev, _ = _task_case("classification", tmp_path)
    cfg = from_mapping(job_config(tmp_path, task, train, dev, tiny_base))
    finetune_teacher(cfg, progress=False)
    ctx = load_context(cfg, progress=False)
    ctx.outputs = {"logits": ctx.outputs["logits"].copy()}
    ctx.outputs["logits"][:] = float("nan")  # a broken teacher output poisons the KD term
    with pytest.raises(TrainingDiverged, match=r"training diverged at step 1: loss is not finite .*lower the learning rate"):
        distill_student(ctx, StudentSpec(num_layers=1), tmp_path / "s", progress=False)
    assert (tmp_path / "s" / "spec.json").exists()  # what was written before the failure stays


def _run_cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "compress", *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_cli_reports_config_errors_by_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"name": "x", "task": {"type": "classification"},
                                   "data": {"train": "a.tsv", "eval": "b.tsv"},
                                   "teacher": {"model": "m"}, "distill": {"temprature": 2}}))
    res = _run_cli("distill", str(bad), cwd=ROOT)
    assert res.returncode == 2
    assert "config key 'distill.temprature' is not known; did you mean 'temperature'?" in res.stderr
    assert "Traceback" not in res.stderr


def test_cli_reports_missing_teacher_head(tmp_path, tiny_base):
    task, train, dev, _ = _task_case("classification", tmp_path)
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job_config(tmp_path, task, train, dev, tiny_base)))
    res = _run_cli("distill", str(path), cwd=ROOT)
    assert res.returncode == 2
    assert "has no trained classification head; run `compress teacher CONFIG`" in res.stderr


def test_cli_teacher_then_distill_with_spec_file(tmp_path, tiny_base):
    task, train, dev, _ = _task_case("classification", tmp_path)
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job_config(tmp_path, task, train, dev, tiny_base)))
    res = _run_cli("teacher", str(path), cwd=ROOT)
    assert res.returncode == 0, res.stderr
    assert "teacher saved in" in res.stdout
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"num_layers": 1, "heads": 2, "layer_selection": "first"}))
    res = _run_cli("distill", str(path), "--student", str(spec), "--out", str(tmp_path / "out"), cwd=ROOT)
    assert res.returncode == 0, res.stderr
    assert json.loads((tmp_path / "out" / "spec.json").read_text())["layer_selection"] == "first"
    spec.write_text(json.dumps({"num_layers": 1, "head": 2}))
    res = _run_cli("distill", str(path), "--student", str(spec), cwd=ROOT)
    assert res.returncode == 2 and "student spec key 'head' is not known" in res.stderr


def test_teacher_outputs_are_computed_once_and_cached(tmp_path, tiny_base, monkeypatch):
    import numpy as np

    import compress.model.teacher as teacher_mod

    task, train, dev, _ = _task_case("classification", tmp_path)
    cfg = from_mapping(job_config(tmp_path, task, train, dev, tiny_base))
    finetune_teacher(cfg, progress=False)
    first = load_context(cfg, progress=False)
    cached = list((cfg.run_dir / "cache").glob("teacher-outputs-train-*.safetensors"))
    assert len(cached) == 1

    def fail(*args, **kwargs):
        raise AssertionError("teacher outputs recomputed instead of read from the cache")

    monkeypatch.setattr(teacher_mod, "predict_logits", fail)
    second = load_context(cfg, progress=False)
    np.testing.assert_array_equal(first.outputs["logits"], second.outputs["logits"])
    assert first.outputs["logits"].shape == (48, 2)


def _spy_on_training_steps(monkeypatch) -> list[tuple[float, float, object]]:
    """(time, seconds waited, lock_dir) of every training step from now on, as the loop takes the lock."""
    import compress.distill.loop as loop

    steps = []
    real = loop.training_step

    @contextlib.contextmanager
    def spy(lock_dir):
        with real(lock_dir) as hold:
            steps.append((time.perf_counter(), hold.waited_s, lock_dir))
            yield hold

    monkeypatch.setattr(loop, "training_step", spy)
    return steps


def test_training_steps_take_the_measurement_lock(tmp_path, tiny_base, monkeypatch):
    """With a lock dir every step holds the lock: a measurement holding it first makes training wait, and a
    measurement after training is not blocked. Without one (plain `compress distill`) no lock is taken."""
    from compress.deploy.measure_lock import lock_dir_for, measuring

    task, train, dev, _ = _task_case("classification", tmp_path)
    cfg = from_mapping(job_config(tmp_path, task, train, dev, tiny_base))
    finetune_teacher(cfg, progress=False)
    ctx = load_context(cfg, progress=False)
    steps = _spy_on_training_steps(monkeypatch)
    distill_student(ctx, StudentSpec(num_layers=1), tmp_path / "plain", progress=False)
    assert steps and all(d is None for _, _, d in steps)

    lock_dir = lock_dir_for(cfg.run_dir)
    steps.clear()
    held, released = threading.Event(), []

    def measurer():
        with measuring(lock_dir):
            held.set()
            time.sleep(0.5)
            released.append(time.perf_counter())

    th = threading.Thread(target=measurer)
    th.start()
    assert held.wait(10)
    m = distill_student(ctx, StudentSpec(num_layers=1), tmp_path / "locked", progress=False, lock_dir=lock_dir)
    th.join(10)
    assert len(steps) == m["steps"] and all(d == lock_dir for _, _, d in steps)
    assert steps[0][0] >= released[0] and steps[0][1] > 0.2  # the first step waited for the measurement
    assert (lock_dir / "measure.lock").is_file() and (lock_dir / "gate.lock").is_file()
    waited = []

    def measure_after():
        with measuring(lock_dir) as hold:
            waited.append(hold.waited_s)

    after = threading.Thread(target=measure_after, daemon=True)
    after.start()
    after.join(5)
    assert waited and waited[0] < 1.0  # training released the lock: a measurement gets it at once


def test_a_teacher_in_another_run_folder_waits_for_a_measurement_under_one_machine_lock(tmp_path, tiny_base,
                                                                                       monkeypatch):
    """COMPRESS_LOCK_DIR: one lock for every job on the machine; teacher fine-tuning takes it as the search does."""
    from compress.deploy.measure_lock import lock_dir_for, measuring

    monkeypatch.setenv("COMPRESS_LOCK_DIR", str(tmp_path / "machine"))
    task, train, dev, _ = _task_case("classification", tmp_path)
    cfg = from_mapping(job_config(tmp_path / "teacher-job", task, train, dev, tiny_base))
    other_run = tmp_path / "some-study"  # a study elsewhere measuring a latency
    assert lock_dir_for(other_run) == lock_dir_for(cfg.run_dir) == tmp_path / "machine" / socket.gethostname()
    steps = _spy_on_training_steps(monkeypatch)
    held, released = threading.Event(), []

    def measurer():
        with measuring(lock_dir_for(other_run)):
            held.set()
            time.sleep(3.0)  # longer than the teacher's data preparation before its first step
            released.append(time.perf_counter())

    th = threading.Thread(target=measurer)
    th.start()
    assert held.wait(10)
    finetune_teacher(cfg, progress=False)
    th.join(10)
    assert steps and all(d == lock_dir_for(other_run) for _, _, d in steps)
    assert steps[0][0] >= released[0] and steps[0][1] > 0  # the teacher's first step waited for it
    monkeypatch.delenv("COMPRESS_LOCK_DIR")
    assert lock_dir_for(other_run) == other_run / ".locks" / socket.gethostname()
