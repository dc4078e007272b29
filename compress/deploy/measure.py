"""Latency protocol and size figures: fixed threads, warm-up, repeats, median and p90, with the method recorded.

`torch_latency(model, ...)` times PyTorch eager inference, `onnx_latency(path, ...)` ONNX Runtime on CPU.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

if TYPE_CHECKING:
    from ..data import Split

__all__ = ["eval_length_batches", "external_data", "latency_summary", "onnx_latency", "onnx_size", "torch_latency"]

from .onnxrt import GRAPH_OPTIMIZATION, onnx_session


def latency_summary(times_s: list[float]) -> dict[str, float]:
    """Median, p90, mean and spread of per-call wall times, in milliseconds."""
    ms = np.asarray(times_s) * 1000.0
    return {"median_ms": float(np.median(ms)), "p90_ms": float(np.percentile(ms, 90)),
            "mean_ms": float(ms.mean()), "min_ms": float(ms.min()), "max_ms": float(ms.max())}


@torch.inference_mode()
def torch_latency(model: nn.Module, batch_size: int = 1, seq_len: int = 128, threads: int = 2,
                  warmup: int = 10, repeats: int = 50, seed: int = 0) -> dict[str, Any]:
    """Wall time of one forward pass of `model` on random token ids of a fixed shape.

    Threads are pinned for the measurement and restored after; the first `warmup` calls are discarded.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        model.eval()
        g = torch.Generator().manual_seed(seed)
        vocab = model.config.vocab_size
        inputs = {
            "input_ids": torch.randint(1000, min(vocab, 29000), (batch_size, seq_len), generator=g),
            "attention_mask": torch.ones(batch_size, seq_len, dtype=torch.long),
            "token_type_ids": torch.zeros(batch_size, seq_len, dtype=torch.long),
        }
        for _ in range(warmup):
            model(**inputs)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(**inputs)
            times.append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(previous)
    return {**latency_summary(times), "runtime": "pytorch-eager", "batch_size": batch_size, "seq_len": seq_len,
            "threads": threads, "warmup": warmup, "repeats": repeats, "torch": torch.__version__}


# ----------------------------------------------------------------------------------------------
# ONNX Runtime


def _vocab_size(onnx_path: Path) -> int:
    """The model's vocabulary from the config.json exported beside it; BERT's when there is none."""
    config = onnx_path.parent / "config.json"
    if config.is_file():
        return int(json.loads(config.read_text()).get("vocab_size", 30522))
    return 30522


def onnx_latency(onnx_path: str | Path, batch_size: int = 1, seq_len: int | None = 128, threads: int = 2,
                 warmup: int = 10, repeats: int = 50, inputs: list[dict[str, np.ndarray]] | None = None,
                 graph_optimization: str = "all", seed: int = 0, provider: str = "cpu") -> dict[str, Any]:
    """Wall time of one ONNX Runtime call on CPU (or on a GPU with provider "cuda"), with the session pinned to `threads` intra-op threads.

    Fixed shape (default): random token ids of batch_size × seq_len, no padding. With `inputs` (real
    batches, e.g. eval_length_batches), warm-up and then the repeats each cycle over them from the first,
    so each batch keeps its own length; batch_size and seq_len are then ignored and the lengths recorded.
    """
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise ValueError(f"ONNX model {str(onnx_path)!r} does not exist; export one with compress.deploy.export.export_onnx")
    if graph_optimization not in GRAPH_OPTIMIZATION:
        raise ValueError(f"graph_optimization={graph_optimization!r}: use one of {', '.join(GRAPH_OPTIMIZATION)}")
    if threads < 1 or warmup < 0 or repeats < 1:
        raise ValueError(f"threads={threads}, warmup={warmup}, repeats={repeats}: need threads >= 1, "
                         "warmup >= 0 and repeats >= 1")
    session = onnx_session(onnx_path, threads, graph_optimization, provider=provider)
    feeds = [i.name for i in session.get_inputs()]

    if inputs is None:
        if seq_len is None or seq_len < 1 or batch_size < 1:
            raise ValueError(f"batch_size={batch_size}, seq_len={seq_len}: a fixed-shape run needs both >= 1 "
                             "(or pass `inputs`)")
        rng = np.random.default_rng(seed)
        ids = rng.integers(1000, min(_vocab_size(onnx_path), 29000), (batch_size, seq_len), dtype=np.int64)
        batches = [{"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}]
    else:
        if not inputs:
            raise ValueError("inputs is an empty list; pass at least one batch (or None for a fixed shape)")
        batches = [{k: np.ascontiguousarray(b[k], dtype=np.int64) for k in b} for b in inputs]
    for i, b in enumerate(batches):
        missing = [k for k in feeds if k not in b]
        if missing:
            raise ValueError(f"inputs[{i}] lacks {missing}; the model takes {feeds}")
    feed_batches = [{k: b[k] for k in feeds} for b in batches]

    def cycle(n: int) -> Iterator[dict[str, np.ndarray]]:
        return (feed_batches[i % len(feed_batches)] for i in range(n))

    for feed in cycle(warmup):
        session.run(None, feed)
    times, widths, rows = [], [], set()
    for feed in cycle(repeats):
        t0 = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - t0)
        widths.append(next(iter(feed.values())).shape[1])
        rows.add(next(iter(feed.values())).shape[0])

    method: dict[str, Any] = {"runtime": "onnxruntime", "onnxruntime": ort.__version__,
                              "provider": session.get_providers()[0], "threads": threads, "inter_op_threads": 1,
                              "execution_mode": "sequential", "graph_optimization": graph_optimization,
                              "warmup": warmup, "repeats": repeats, "model": onnx_path.name}
    if inputs is None:
        method |= {"batch_size": batch_size, "seq_len": seq_len}
    else:
        # Batches of unequal size (a short last batch) are recorded as the sizes seen.
        method |= {"batch_size": rows.pop() if len(rows) == 1 else sorted(rows), "seq_len": "eval-lengths",
                   "mean_seq_len": float(np.mean(widths)), "max_seq_len": int(max(widths)),
                   "batches": min(len(feed_batches), repeats)}
    return {**latency_summary(times), **method}


def eval_length_batches(split: Split, batch_size: int, limit: int = 64, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Up to `limit` batches of `batch_size` rows drawn at random (seeded) from the split, each trimmed to
    its own longest row, as int64 arrays: the lengths a server would see.

    A short final batch is dropped unless the split is smaller than one batch, so timed batches match in size.
    """
    if batch_size < 1 or limit < 1:
        raise ValueError(f"batch_size={batch_size}, limit={limit}: both must be at least 1")
    n = len(split)
    if n == 0:
        raise ValueError(f"split {split.name!r} is empty; there is nothing to time")
    order = np.random.default_rng(seed).permutation(n)
    stop = n if n < batch_size else n - n % batch_size
    batches = []
    for start in range(0, stop, batch_size):
        if len(batches) == limit:
            break
        batch = split.batch(order[start: start + batch_size], labels=False)
        batches.append({k: v.numpy().astype(np.int64) for k, v in batch.items()})
    return batches


def _tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    """Every tensor stored in a graph: initializers and constant attributes, subgraphs included."""
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _tensors(attr.g)
            for sub in attr.graphs:
                yield from _tensors(sub)


def external_data(path: str | Path) -> list[str]:
    """The external data files an ONNX model refers to, relative to its folder, in name order ([] when the .onnx
    file holds every weight itself)."""
    proto = onnx.load(str(path), load_external_data=False)
    return sorted({entry.value for tensor in _tensors(proto.graph) for entry in tensor.external_data
                   if entry.key == "location"})


def onnx_size(path: str | Path) -> int:
    """Bytes on disk of an ONNX model: the .onnx file plus every external data file it refers to."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"ONNX model {str(path)!r} does not exist")
    locations = external_data(path)
    missing = [loc for loc in locations if not (path.parent / loc).is_file()]
    if missing:
        raise ValueError(f"ONNX model {path} refers to external data {missing} that is not beside it; "
                         "copy the data files with the model")
    return path.stat().st_size + sum((path.parent / loc).stat().st_size for loc in locations)
