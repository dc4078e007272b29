"""ONNX Runtime sessions configured one way everywhere: latency protocol, evaluation and the server (no torch)."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort

__all__ = ["GRAPH_OPTIMIZATION", "onnx_session"]

GRAPH_OPTIMIZATION = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


def onnx_session(onnx_path: str | Path, threads: int = 2, graph_optimization: str = "all") -> ort.InferenceSession:
    """A CPU session with `threads` intra-op threads, one operator at a time (BERT's graph is a chain)."""
    if graph_optimization not in GRAPH_OPTIMIZATION:
        raise ValueError(f"graph_optimization={graph_optimization!r}: use one of {', '.join(GRAPH_OPTIMIZATION)}")
    if threads < 1:
        raise ValueError(f"threads={threads}: need at least 1")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = GRAPH_OPTIMIZATION[graph_optimization]
    return ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
