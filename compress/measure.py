"""Latency protocol and size figures: fixed threads, warm-up, repeats, median and p90, with the method recorded.

`torch_latency(model, ...)` times PyTorch eager inference; ONNX Runtime timing joins it with the export issue.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["latency_summary", "torch_latency"]


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
