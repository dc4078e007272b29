"""What a figure was measured on: machine, threads and library versions, recorded beside every result."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from typing import Any

import torch

__all__ = ["environment"]

_LIBRARIES = ("torch", "transformers", "tokenizers", "onnxruntime", "optimum-onnx", "optuna", "bentoml", "numpy")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment() -> dict[str, Any]:
    """The machine (CPU, cores, torch threads, platform), Python and the versions of the libraries that matter."""
    versions = {}
    for lib in _LIBRARIES:
        try:
            versions[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            versions[lib] = None
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
    }
