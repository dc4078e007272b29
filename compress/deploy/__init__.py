"""From a trained student to something to serve: the ONNX export (checked against PyTorch), its fp32, optimized
and int8 (dynamic, static) variants, the latency protocol, and the BentoML package.

onnxrt (ONNX Runtime sessions, configured one way everywhere) · export · variants · measure (latency and size) ·
latency (paired rounds against a reference, with bootstrap intervals) · capacity (throughput, peak memory) ·
measure_lock (no latency measured while another worker trains) · package (`compress export` and `compress package`).

Names are loaded on first use (the module `__getattr__` below): the HTTP service imports deploy.onnxrt and must
not load torch, which export and measure need. The function `package` is not among them, as its name is taken by
the module: import it from compress.deploy.package.
"""

from importlib import import_module
from typing import Any

_WHERE = {
    "GRAPH_OPTIMIZATION": "onnxrt", "onnx_session": "onnxrt",
    "ExportMismatch": "export", "ExportResult": "export", "export_onnx": "export", "validate_onnx": "export",
    "PRECISIONS": "variants", "Variant": "variants", "VariantError": "variants", "make_variant": "variants",
    "measure_variants": "variants", "serving_threshold": "variants", "variant_dir": "variants",
    "Calibration": "variants", "calibration_feeds": "variants", "canonical_precision": "variants",
    "eval_length_batches": "measure", "onnx_latency": "measure", "onnx_size": "measure", "torch_latency": "measure",
    "LatencySettings": "latency", "bootstrap_median_ci": "latency", "measure_paired": "latency",
    "paired_rounds": "latency", "round_spread": "latency",
    "peak_memory_mb": "capacity", "throughput": "capacity",
    "Hold": "measure_lock", "lock_dir_for": "measure_lock", "measuring": "measure_lock", "training_step": "measure_lock",
    "DEFAULT_MODEL_NAME": "package", "PackageError": "package", "describe": "package", "export_variants": "package",
    "resolve_trial": "package",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
