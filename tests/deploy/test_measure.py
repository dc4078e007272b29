"""ONNX Runtime latency protocol, eval-length batches and model size on a tiny exported model (no speed thresholds)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from compress.data import Split
from compress.deploy.measure import eval_length_batches, onnx_latency, onnx_size
from tests.conftest import tiny_config

SUMMARY = ("median_ms", "p90_ms", "mean_ms", "min_ms", "max_ms")


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory, tokenizer) -> Path:
    from transformers import BertForSequenceClassification

    from compress.deploy.export import export_onnx

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("measure")
    BertForSequenceClassification(tiny_config(num_labels=2)).save_pretrained(root / "model")
    tokenizer.save_pretrained(root / "model")
    return export_onnx(root / "model", root / "onnx", "classification").path


def _split(lengths: list[int], width: int = 24) -> Split:
    """Right-padded rows with the given numbers of real tokens."""
    n = len(lengths)
    mask = (np.arange(width)[None, :] < np.asarray(lengths)[:, None]).astype(np.int64)
    ids = np.where(mask == 1, 1000 + np.arange(n)[:, None], 0).astype(np.int64)
    arrays = {"input_ids": ids, "token_type_ids": np.zeros_like(ids), "attention_mask": mask,
              "labels": np.zeros(n, dtype=np.int64)}
    return Split("eval", arrays, [], "test")


def _check_summary(result: dict) -> None:
    assert all(result[k] > 0 for k in SUMMARY)
    assert result["min_ms"] <= result["median_ms"] <= result["p90_ms"] <= result["max_ms"]
    assert result["min_ms"] <= result["mean_ms"] <= result["max_ms"]


def test_fixed_shape_latency_records_its_method(onnx_path):
    result = onnx_latency(onnx_path, batch_size=2, seq_len=16, threads=1, warmup=2, repeats=5)
    _check_summary(result)
    assert result["runtime"] == "onnxruntime" and result["provider"] == "CPUExecutionProvider"
    assert result["onnxruntime"] == __import__("onnxruntime").__version__
    assert (result["threads"], result["batch_size"], result["seq_len"]) == (1, 2, 16)
    assert (result["warmup"], result["repeats"], result["graph_optimization"]) == (2, 5, "all")


def test_eval_length_latency_records_the_lengths_it_used(onnx_path):
    lengths = [3, 9, 17, 5, 12, 20, 7, 4]
    batches = eval_length_batches(_split(lengths), batch_size=2, limit=3)
    result = onnx_latency(onnx_path, warmup=2, repeats=5, inputs=batches, graph_optimization="basic")
    _check_summary(result)
    widths = [b["input_ids"].shape[1] for b in batches]
    timed = [widths[i % 3] for i in range(5)]  # repeats cycle over the batches from the first
    assert result["seq_len"] == "eval-lengths" and result["batch_size"] == 2 and result["batches"] == 3
    assert result["mean_seq_len"] == pytest.approx(np.mean(timed)) and result["max_seq_len"] == max(timed)
    assert result["graph_optimization"] == "basic"


@pytest.mark.parametrize("kwargs, message", [
    ({"graph_optimization": "fast"}, "graph_optimization='fast'"),
    ({"threads": 0}, "threads=0"),
    ({"seq_len": None}, "seq_len=None"),
    ({"inputs": []}, "empty list"),
    ({"inputs": [{"input_ids": np.ones((1, 4), dtype=np.int64)}]}, r"inputs\[0\] lacks \['attention_mask'"),
])
def test_bad_latency_arguments_are_named(onnx_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        onnx_latency(onnx_path, warmup=0, repeats=1, **kwargs)


def test_eval_length_batches_trim_each_batch_to_its_longest_row():
    lengths = [3, 9, 17, 5, 12, 20, 7, 4, 6, 11]
    split = _split(lengths)
    batches = eval_length_batches(split, batch_size=3, limit=64, seed=0)
    assert len(batches) == 3  # 10 rows make three full batches; the short fourth is dropped
    order = np.random.default_rng(0).permutation(len(lengths))
    for i, batch in enumerate(batches):
        rows = order[3 * i: 3 * i + 3]
        assert set(batch) == {"input_ids", "token_type_ids", "attention_mask"}
        assert all(v.dtype == np.int64 and v.shape == (3, max(lengths[r] for r in rows)) for v in batch.values())
        np.testing.assert_array_equal(batch["attention_mask"].sum(axis=1), [lengths[r] for r in rows])
    assert len({b["input_ids"].shape[1] for b in batches}) > 1  # lengths really differ between batches


def test_eval_length_batches_respect_limit_and_seed():
    split = _split(list(range(1, 21)))
    assert len(eval_length_batches(split, batch_size=2, limit=4)) == 4
    first = eval_length_batches(split, batch_size=2, limit=4, seed=1)
    again = eval_length_batches(split, batch_size=2, limit=4, seed=1)
    other = eval_length_batches(split, batch_size=2, limit=4, seed=2)
    assert all(np.array_equal(a["input_ids"], b["input_ids"]) for a, b in zip(first, again))
    assert not all(np.array_equal(a["input_ids"], b["input_ids"]) for a, b in zip(first, other))
    small = eval_length_batches(_split([4, 2]), batch_size=8)  # fewer rows than a batch: one short batch
    assert len(small) == 1 and small[0]["input_ids"].shape == (2, 4)
    with pytest.raises(ValueError, match="limit=0"):
        eval_length_batches(split, batch_size=2, limit=0)


def test_onnx_size_is_the_file_size(onnx_path):
    assert onnx_size(onnx_path) == onnx_path.stat().st_size


def test_onnx_size_counts_external_data(onnx_path, tmp_path):
    proto = onnx.load(str(onnx_path))
    path = tmp_path / "model.onnx"
    onnx.save_model(proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="model.onnx_data", size_threshold=0)
    data = tmp_path / "model.onnx_data"
    assert data.stat().st_size > path.stat().st_size  # the weights really moved out
    assert onnx_size(path) == path.stat().st_size + data.stat().st_size
    data.unlink()
    with pytest.raises(ValueError, match=r"external data \['model.onnx_data'\]"):
        onnx_size(path)
