"""Where training runs: the device and mixed precision of a TrainConfig, through Hugging Face Accelerate.

`accelerator_for(cfg)` checks the request against what torch sees (a clear DeviceError for a device or
precision this machine cannot give) and returns an `accelerate.Accelerator`. Under `accelerate launch` the
same call joins the launched processes: each takes its own device and its share of every batch
(`split_batches`), so `batch_size`, the learning-rate schedule and the step count mean the same with one process
or eight, and a run with 2 processes follows the run with one up to floating-point reduction order.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

__all__ = ["DeviceError", "accelerator_for", "device_report", "placed", "resolve_device"]

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("no", "fp16", "bf16")


class DeviceError(ValueError):
    """The configured device or precision is not available here; the message says what is and what to set."""


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def resolve_device(device: str, where: str = "train.device") -> str:
    """`auto` → cuda, else mps, else cpu; an explicit device must exist here."""
    if device not in DEVICES:
        raise DeviceError(f"{where}: {device!r} is not a device; use one of {', '.join(DEVICES)}")
    cuda, mps = torch.cuda.is_available(), _mps_available()
    if device == "auto":
        return "cuda" if cuda else "mps" if mps else "cpu"
    if device == "cuda" and not cuda:
        built = "a CUDA build" if torch.backends.cuda.is_built() else "a CPU-only build"
        raise DeviceError(f"{where}: cuda, but torch {torch.__version__} ({built}) sees no CUDA GPU on this machine; "
                          "set device: auto (uses a GPU when there is one) or cpu")
    if device == "mps" and not mps:
        raise DeviceError(f"{where}: mps, but Apple's Metal backend is not available here (it needs macOS on Apple "
                          "silicon); set device: auto or cpu")
    return device


def check_precision(precision: str, device: str, where: str = "train.mixed_precision") -> None:
    if precision not in PRECISIONS:
        raise DeviceError(f"{where}: {precision!r} is not a precision; use one of {', '.join(PRECISIONS)}")
    if precision == "fp16" and device == "cpu":
        raise DeviceError(f"{where}: fp16 needs a GPU and training runs on the CPU here; set mixed_precision: bf16 "
                          "(supported on CPU) or no")
    if precision == "bf16" and device == "cuda" and not torch.cuda.is_bf16_supported():
        raise DeviceError(f"{where}: bf16, but this GPU ({torch.cuda.get_device_name()}) does not support it; "
                          "set mixed_precision: fp16 or no")


def accelerator_for(cfg: Any, where: str = "train") -> Any:
    """An Accelerator for a TrainConfig's `device` and `mixed_precision` (checked first)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, PartialState
    from accelerate.utils import DataLoaderConfiguration

    device = resolve_device(cfg.device, f"{where}.device")
    check_precision(cfg.mixed_precision, device, f"{where}.mixed_precision")
    # Accelerate keeps one state per process, made by the first Accelerator (or PartialState) and fixed after. A
    # later run in this process (the teacher, then students; trials with other settings) may want another device
    # or precision: start a fresh state then, except under `accelerate launch`, whose distributed state must stay.
    partial, full = PartialState._shared_state, AcceleratorState._shared_state
    if partial:
        on_cpu = partial.get("device") is not None and partial["device"].type == "cpu"
        other = on_cpu != (device == "cpu") or (bool(full) and full.get("_mixed_precision") != cfg.mixed_precision)
        if other:
            if partial.get("num_processes", 1) > 1:
                raise DeviceError(f"{where}: device {cfg.device!r} and mixed_precision {cfg.mixed_precision!r} differ "
                                  "from those this launched process (accelerate launch) started with; give every "
                                  "training section of the job the same device and mixed_precision")
            AcceleratorState._reset_state(reset_partial_state=True)
    return Accelerator(cpu=device == "cpu", mixed_precision=cfg.mixed_precision,
                       dataloader_config=DataLoaderConfiguration(split_batches=True))


def device_report(accelerator: Any) -> dict[str, Any]:
    """What a run recorded about where it ran."""
    d = accelerator.device
    out: dict[str, Any] = {"device": str(d), "mixed_precision": accelerator.mixed_precision,
                           "processes": accelerator.num_processes}
    if d.type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(d)
    return out


@contextmanager
def placed(model: torch.nn.Module, device: str) -> Iterator[torch.nn.Module]:
    """The model on `device` (resolved, e.g. "cuda") for the block, back on the CPU after, whatever happens."""
    model.to(device)
    try:
        yield model
    finally:
        model.to("cpu")
