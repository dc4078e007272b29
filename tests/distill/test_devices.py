"""Training through Accelerate: the same CPU results as before, clear device errors, resume, 2 processes."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from compress.config import ConfigError, from_mapping
from compress.distill.devices import DeviceError, accelerator_for, check_precision, resolve_device
from compress.distill.loop import StepBatches, step_rows, train
from tests.conftest import ROOT, job_config, tiny_config, write_sentiment_tsv
from tests.distill.reference_run import FIXTURE, reference_run

BIN = Path(sys.executable).parent


def _close(a: float, b: float, tol: float = 2e-4) -> bool:
    return math.isclose(a, b, rel_tol=tol, abs_tol=tol)


def test_cpu_run_equals_the_loop_before_accelerate(tmp_path, tokenizer):
    want = json.loads(FIXTURE.read_text())
    got = reference_run(tmp_path, tokenizer, device="cpu")
    for part in ("teacher", "student"):
        assert [p["step"] for p in got[part]] == [p["step"] for p in want[part]]
        for g, w in zip(got[part], want[part]):
            for key, value in w.items():
                assert _close(g[key], value, 1e-6), (part, g["step"], key, g[key], value)
    assert got["student_accuracy"] == want["student_accuracy"]


def _old_rows(n: int, batch_size: int, seed: int, steps: int) -> list[np.ndarray]:
    """The loop's data order before it ran through a DataLoader (commit 196f59d), kept here as the reference."""
    rng = np.random.default_rng(seed)
    order, pos, out = rng.permutation(n), 0, []
    for _ in range(steps):
        if pos + batch_size > n and pos > 0:
            order, pos = rng.permutation(n), 0
        out.append(np.sort(order[pos:pos + batch_size]))
        pos += batch_size
    return out


@pytest.mark.parametrize("n,batch_size", [(64, 8), (70, 8), (5, 8), (33, 4)])
def test_step_rows_is_the_old_order_and_resumes_anywhere(n, batch_size):
    old = _old_rows(n, batch_size, 7, 40)
    new = list(step_rows(n, batch_size, 7, 1, 40))
    assert all(np.array_equal(a, b) for a, b in zip(old, new)) and len(new) == 40
    tail = list(step_rows(n, batch_size, 7, 23, 40))
    assert all(np.array_equal(a, b) for a, b in zip(old[22:], tail)) and len(tail) == 18
    assert len(StepBatches(n, batch_size, 7, 23, 40)) == 18


def test_length_grouped_rows_pad_less_cover_each_epoch_and_resume_anywhere():
    rng = np.random.default_rng(0)
    n, batch_size = 1000, 8
    lengths = rng.integers(10, 380, size=n)
    grouped = list(step_rows(n, batch_size, 7, 1, 250, lengths))
    plain = list(step_rows(n, batch_size, 7, 1, 250))
    per_epoch = n // batch_size
    for e in (0, 1):  # each epoch: full batches of distinct rows, a different order each epoch
        rows = np.concatenate(grouped[e * per_epoch:(e + 1) * per_epoch])
        assert len(rows) == len(set(rows.tolist())) == per_epoch * batch_size
    assert not np.array_equal(grouped[0], grouped[per_epoch])

    def padded(batches):  # tokens a dynamically padded batch holds: its longest row, times the rows
        return sum(int(lengths[b].max()) * len(b) for b in batches)

    assert padded(grouped) < 0.7 * padded(plain)  # the point of it (random batches of 8 pad to ~340 tokens)
    tail = list(step_rows(n, batch_size, 7, 140, 250, lengths))  # a resume in the second epoch
    assert all(np.array_equal(a, b) for a, b in zip(grouped[139:], tail)) and len(tail) == 111
    assert [list(b) for b in StepBatches(n, batch_size, 7, 140, 250, lengths)] == [b.tolist() for b in tail]
    other = list(step_rows(n, batch_size, 8, 1, 10, lengths))
    assert not all(np.array_equal(a, b) for a, b in zip(grouped, other))


def test_group_by_length_trains_and_resumes(tmp_path, tokenizer):
    from compress.distill.loop import _fingerprint

    cfg, data = _tiny_data(tmp_path, tokenizer, checkpoint_every=4, device="cpu", group_by_length=True)
    tc = cfg.teacher.train
    whole = train(_model(), data, tc, progress=False)
    ckpt = tmp_path / "ckpt"

    def kill_after_step_6(step, total, metrics):
        if step == 6:
            raise Killed("the worker was killed")

    with pytest.raises(Killed):
        train(_model(), data, tc, on_eval=kill_after_step_6, checkpoint_dir=ckpt, progress=False)
    resumed = train(_model(seed=5), data, tc, checkpoint_dir=ckpt, progress=False)
    assert resumed.resumed_from == 4
    assert [_close(a["loss"], b["loss"], 1e-5) for a, b in zip(resumed.curve, whole.curve)] == [True] * 3
    # The order is part of what a checkpoint must match.
    off = dataclasses.replace(tc, group_by_length=False)
    model = _model()
    assert _fingerprint(model, data, tc, None) != _fingerprint(model, data, off, None)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message for a machine without a GPU")
def test_unavailable_device_and_precision_fail_with_a_clear_message(tmp_path):
    with pytest.raises(DeviceError, match=r"train.device: cuda, but torch .* sees no CUDA GPU .*device: auto"):
        resolve_device("cuda")
    if not torch.backends.mps.is_available():
        with pytest.raises(DeviceError, match="mps, but Apple's Metal backend is not available"):
            resolve_device("mps")
    assert resolve_device("auto") == "cpu"
    with pytest.raises(DeviceError, match="fp16 needs a GPU .* bf16"):
        check_precision("fp16", "cpu")
    # Through a job config: the key, the value and what to set.
    train_tsv = write_sentiment_tsv(tmp_path / "t.tsv", 16, seed=1)
    raw = job_config(tmp_path, {"type": "classification"}, str(train_tsv), str(train_tsv), "unused")
    raw["teacher"]["train"]["device"] = "tpu"
    with pytest.raises(ConfigError, match="device"):
        from_mapping(raw)
    raw["teacher"]["train"]["device"] = "cuda"
    cfg = from_mapping(raw)
    with pytest.raises(DeviceError, match="teacher.device: cuda"):
        accelerator_for(cfg.teacher.train, "teacher")


def _tiny_data(tmp_path, tokenizer, **train):
    from compress.data.features import prepare_task_data

    train_tsv = write_sentiment_tsv(tmp_path / "train.tsv", 48, seed=3)
    dev = write_sentiment_tsv(tmp_path / "dev.tsv", 16, seed=4)
    raw = job_config(tmp_path, {"type": "classification"}, str(train_tsv), str(dev), "unused")
    raw["teacher"]["train"] = {"max_steps": 9, "batch_size": 8, "learning_rate": 1e-3, "eval_every": 3, **train}
    cfg = from_mapping(raw)
    return cfg, prepare_task_data(cfg, tokenizer)


def _model(seed: int = 0):
    from transformers import BertForSequenceClassification

    torch.manual_seed(seed)
    return BertForSequenceClassification(tiny_config(num_labels=2))


def test_bf16_on_cpu_trains_and_hands_back_a_plain_cpu_model(tmp_path, tokenizer):
    cfg, data = _tiny_data(tmp_path, tokenizer, mixed_precision="bf16", device="cpu")
    model = _model()
    result = train(model, data, cfg.teacher.train, progress=False)
    assert result.device == {"device": "cpu", "mixed_precision": "bf16", "processes": 1}
    assert result.steps == 9 and all(math.isfinite(p["loss"]) for p in result.curve)
    # On the CPU, in float32, forward no longer wrapped in autocast: it exports and runs as any model would.
    assert {p.device.type for p in model.parameters()} == {"cpu"}
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert not hasattr(model.forward, "__wrapped__")
    out = model(**{k: v for k, v in data.eval.batch(np.arange(4), labels=False).items()})
    assert out.logits.dtype == torch.float32
    # The next run in the same process may ask for another precision.
    again = train(_model(), data, dataclasses.replace(cfg.teacher.train, mixed_precision="no"), progress=False)
    assert again.device["mixed_precision"] == "no"


class Killed(Exception):
    pass


def test_a_killed_run_resumes_from_its_checkpoint_and_ends_as_an_uninterrupted_one(tmp_path, tokenizer):
    cfg, data = _tiny_data(tmp_path, tokenizer, checkpoint_every=4, device="cpu")
    tc = cfg.teacher.train
    whole = train(_model(), data, tc, progress=False)

    ckpt = tmp_path / "ckpt"
    curves = tmp_path / "curves.jsonl"

    def kill_after_step_6(step, total, metrics):
        if step == 6:
            raise Killed("the worker was killed")

    with pytest.raises(Killed):
        train(_model(), data, tc, curves_path=curves, on_eval=kill_after_step_6, checkpoint_dir=ckpt, progress=False)
    progress = json.loads((ckpt / "progress.json").read_text())
    assert progress["step"] == 4 and progress["total"] == 9
    model = _model(seed=123)  # whatever it starts from, the checkpoint's weights replace it
    resumed = train(model, data, tc, curves_path=curves, checkpoint_dir=ckpt, progress=False)
    assert resumed.resumed_from == 4 and not ckpt.exists()
    assert [p["step"] for p in resumed.curve] == [p["step"] for p in whole.curve] == [3, 6, 9]
    for a, b in zip(resumed.curve, whole.curve):
        assert _close(a["loss"], b["loss"], 1e-5) and a["accuracy"] == b["accuracy"]
    assert [json.loads(line)["step"] for line in curves.read_text().splitlines()] == [3, 6, 9]

    # A checkpoint of other settings is not resumed: it says so and starts over.
    with pytest.raises(Killed):
        train(_model(), data, tc, on_eval=kill_after_step_6, checkpoint_dir=ckpt, progress=False)
    other = dataclasses.replace(tc, learning_rate=5e-4)
    fresh = train(_model(), data, other, checkpoint_dir=ckpt, progress=False)
    assert fresh.resumed_from is None and fresh.steps == 9


@pytest.mark.slow
def test_two_processes_under_accelerate_launch_follow_one_process(tmp_path, tokenizer):
    from safetensors.numpy import load_file
    from transformers import BertModel

    # No dropout, so both runs see the same arithmetic up to the order of the gradient all-reduce.
    torch.manual_seed(0)
    base = tmp_path / "base"
    BertModel(tiny_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)).save_pretrained(base)
    tokenizer.save_pretrained(base)
    train_tsv = write_sentiment_tsv(tmp_path / "train.tsv", 64, seed=5)
    dev = write_sentiment_tsv(tmp_path / "dev.tsv", 16, seed=6)
    runs = {}
    for label, launcher in (("one", [str(BIN / "python"), "-m", "compress"]),
                            # torchrun starts the processes (accelerate launch does the same on GPUs); Accelerate
                            # finds WORLD_SIZE=2 and trains data-parallel on the CPU (gloo).
                            ("two", [str(BIN / "python"), "-m", "torch.distributed.run", "--nproc_per_node", "2",
                                     "--master_port", "29517", "-m", "compress"])):
        raw = job_config(tmp_path / label, {"type": "classification"}, str(train_tsv), str(dev), str(base))
        raw["threads"] = 1
        raw["teacher"]["train"] = {"max_steps": 6, "batch_size": 8, "learning_rate": 1e-3, "eval_every": 3,
                                   "device": "cpu"}
        (tmp_path / label).mkdir()
        job = tmp_path / label / "job.yaml"
        job.write_text(yaml.safe_dump(raw))
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        proc = subprocess.run(launcher + ["teacher", str(job)], cwd=ROOT, capture_output=True, text=True,
                              timeout=600, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs[label] = Path(raw["output_dir"]) / raw["name"] / "teacher"
    m1, m2 = (json.loads((runs[k] / "metrics.json").read_text()) for k in ("one", "two"))
    assert m1["training_device"]["processes"] == 1 and m2["training_device"]["processes"] == 2
    c1, c2 = ([json.loads(line) for line in (runs[k] / "curves.jsonl").read_text().splitlines()] for k in ("one", "two"))
    assert [p["step"] for p in c1] == [p["step"] for p in c2] == [3, 6]
    w1, w2 = (load_file(str(runs[k] / "model.safetensors")) for k in ("one", "two"))
    assert w1.keys() == w2.keys()
    worst = max(float(np.abs(w1[k] - w2[k]).max()) for k in w1)
    assert worst < 1e-4, worst
    # The 2-process loss is the mean of the two halves' losses, as one process's is of the whole batch.
    assert _close(c1[0]["loss"], c2[0]["loss"], 1e-4)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message for a machine without a GPU")
def test_validate_reports_an_unavailable_device_before_reading_data(tmp_path):
    from compress.validate import validate

    train_tsv = write_sentiment_tsv(tmp_path / "t.tsv", 16, seed=1)
    raw = job_config(tmp_path, {"type": "classification"}, str(train_tsv), str(train_tsv), "unused")
    raw["distill"]["train"]["device"] = "cuda"
    raw["teacher"]["train"]["mixed_precision"] = "fp16"
    raw["search"] = {"latency": {"provider": "cuda"}}
    report = validate(from_mapping(raw), "validate", lengths=False)
    text = "\n".join(report.errors)
    assert "distill.train.device: cuda, but torch" in text
    assert "teacher.train.mixed_precision: fp16 needs a GPU" in text
    assert "search.latency.provider: cuda needs" in text


def test_loader_workers_give_the_same_run(tmp_path, tokenizer):
    cfg, data = _tiny_data(tmp_path, tokenizer, device="cpu")
    inline = train(_model(), data, cfg.teacher.train, progress=False)
    workers = train(_model(), data, dataclasses.replace(cfg.teacher.train, dataloader_workers=2), progress=False)
    assert [p["loss"] for p in workers.curve] == [p["loss"] for p in inline.curve]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_training_on_a_gpu_in_fp16_and_bf16(tmp_path, tokenizer):
    for precision in ("no", "fp16", "bf16"):
        if precision == "bf16" and not torch.cuda.is_bf16_supported():
            continue
        (tmp_path / precision).mkdir()
        cfg, data = _tiny_data(tmp_path / precision, tokenizer, device="cuda", mixed_precision=precision)
        model = _model()
        result = train(model, data, cfg.teacher.train, progress=False)
        assert result.device["device"].startswith("cuda") and result.device["mixed_precision"] == precision
        assert result.steps == 9 and all(math.isfinite(p["loss"]) for p in result.curve)
        assert {p.device.type for p in model.parameters()} == {"cpu"}
