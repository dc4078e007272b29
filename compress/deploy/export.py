"""Export a saved student or teacher to ONNX and check it against PyTorch before anyone serves it.

`export_onnx(model_dir, out_dir, task_type)` writes out_dir/model.onnx (+ config and tokenizer) and validates it.
"""

from __future__ import annotations

import logging
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn
from transformers import AutoConfig, AutoModelForQuestionAnswering, AutoModelForSequenceClassification

from ..model.inference import output_names
from .measure import onnx_size

__all__ = ["ExportMismatch", "ExportResult", "export_onnx", "max_abs_diff", "random_batch", "validate_onnx"]

TASK_TYPES = ("classification", "pair_classification", "regression", "qa")
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
# Files a tokenizer may be saved as; the torch.onnx path copies whichever exist so the folder stays loadable.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
                   "added_tokens.json")
DEFAULT_OPSET = 18  # what optimum-onnx picks for BERT with this torch; every ONNX Runtime since 1.14 runs it


class ExportMismatch(ValueError):
    """The ONNX model's outputs differ from PyTorch's by more than the tolerance (or in name or shape)."""


@dataclass(frozen=True)
class ExportResult:
    """Where the export went and how faithful it is."""

    path: Path  # out_dir/model.onnx
    size_bytes: int  # model.onnx plus its external data file, if any
    max_abs_diff: dict[str, float]  # per output, worst |ONNX - PyTorch| over every validation batch
    opset: int  # default-domain opset recorded in the file
    exporter: str  # "optimum" (optimum-onnx main_export) or "torch.onnx"
    seconds: float  # wall time of export and validation together


def _load_model(model_dir: Path, task_type: str) -> nn.Module:
    config = AutoConfig.from_pretrained(model_dir)
    wanted = "ForQuestionAnswering" if task_type == "qa" else "ForSequenceClassification"
    archs = getattr(config, "architectures", None) or []
    # NOTE: loading a checkpoint into the other head class only warns and initialises a random head; refuse it.
    if archs and not any(a.endswith(wanted) for a in archs):
        raise ValueError(
            f"{model_dir} holds {archs} but task_type={task_type!r} needs a *{wanted} model; "
            "pass the task type the model was trained for"
        )
    if task_type == "regression" and config.num_labels != 1:
        raise ValueError(f"task_type='regression' but {model_dir} has num_labels={config.num_labels}; "
                         "a regression head has exactly 1 output")
    cls = AutoModelForQuestionAnswering if task_type == "qa" else AutoModelForSequenceClassification
    return cls.from_pretrained(model_dir).eval()


# ----------------------------------------------------------------------------------------------
# Validation


def _as_batch(sample: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    missing = [k for k in ("input_ids", "attention_mask") if k not in sample]
    if missing:
        raise ValueError(f"validation sample lacks {missing}; give input_ids and attention_mask "
                         "(token_type_ids defaults to zeros)")
    batch = {k: np.ascontiguousarray(np.asarray(sample[k]), dtype=np.int64) for k in INPUT_NAMES if k in sample}
    batch.setdefault("token_type_ids", np.zeros_like(batch["input_ids"]))
    shapes = {k: v.shape for k, v in batch.items()}
    if batch["input_ids"].ndim != 2 or len(set(shapes.values())) != 1:
        raise ValueError(f"validation sample shapes {shapes}: every input must be (batch, sequence) of one shape")
    return batch


def random_batch(rows: int, length: int, vocab_size: int, seed: int) -> dict[str, np.ndarray]:
    """Token ids in a range every BERT vocabulary has, a second segment, and right padding on row 0."""
    rng = np.random.default_rng(seed)
    low = 1000 if vocab_size > 2000 else 0  # skip BERT's [PAD]/[unused] block when the vocabulary allows
    ids = rng.integers(low, min(vocab_size, 29000), (rows, length), dtype=np.int64)
    mask = np.ones_like(ids)
    mask[0, max(1, length * 2 // 3):] = 0
    ids[mask == 0] = 0
    types = np.zeros_like(ids)
    types[:, length // 2:] = 1
    types[mask == 0] = 0
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def _validation_batches(sample: dict[str, np.ndarray] | None, config) -> list[dict[str, np.ndarray]]:
    """The sample, plus batches of other sizes and lengths: a dynamic axis that was frozen fails one of them."""
    max_len = int(config.max_position_embeddings)
    base = _as_batch(sample) if sample is not None else random_batch(2, min(16, max_len), config.vocab_size, 0)
    rows, length = base["input_ids"].shape
    if length > max_len:
        raise ValueError(f"validation sample has {length} tokens per row but the model takes at most {max_len} "
                         "(max_position_embeddings); trim the sample")
    batches = [base]
    if length > 2:  # the same rows, shorter
        batches.append({k: np.ascontiguousarray(v[:, : length // 2]) for k, v in base.items()})
    longer = min(max_len, 2 * length + 3)
    batches.append(random_batch(rows + 1, longer, config.vocab_size, 1))
    return batches


def max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    """Worst |a - b|. Equal entries (including matching infinities) count as 0; a NaN on either side counts as
    infinitely far."""
    diff = np.where(a == b, 0.0, np.abs(a.astype(np.float64) - b.astype(np.float64)))
    return float(np.max(np.where(np.isnan(diff), np.inf, diff), initial=0.0))


@torch.inference_mode()
def validate_onnx(model: nn.Module, onnx_path: str | Path, sample: dict[str, np.ndarray] | None = None,
                  atol: float = 1e-4) -> dict[str, float]:
    """Worst |ONNX Runtime - PyTorch| per output over the sample and over other batch sizes and lengths.

    `model` is run in eval mode. Raises ExportMismatch when any output differs by more than `atol`, or
    when the ONNX model lacks an output or gives it another shape.
    """
    if atol < 0:
        raise ValueError(f"atol={atol}: a tolerance is 0 or more")
    was_training = model.training
    model.eval()
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    onnx_outputs = [o.name for o in session.get_outputs()]
    feeds = [i.name for i in session.get_inputs()]
    fixed = {i.name: i.shape for i in session.get_inputs() if any(isinstance(d, int) for d in i.shape)}
    if fixed:
        raise ExportMismatch(f"{onnx_path} has inputs of fixed shape {fixed}; a server sends any batch size and "
                             "length: re-export with dynamic batch and sequence axes")
    worst: dict[str, float] = {}
    try:
        for batch in _validation_batches(sample, model.config):
            reference = model(**{k: torch.from_numpy(v) for k, v in batch.items()})
            names = [k for k in ("logits", "start_logits", "end_logits") if getattr(reference, k, None) is not None]
            lacking = [k for k in names if k not in onnx_outputs]
            if lacking:
                raise ExportMismatch(f"{onnx_path} has outputs {onnx_outputs} but PyTorch gives {names}; "
                                     f"{lacking} missing: re-export for the model's task")
            try:
                got = dict(zip(onnx_outputs, session.run(None, {k: batch[k] for k in feeds})))
            except Exception as exc:  # noqa: BLE001 - ORT's own types; a shape frozen inside the graph lands here
                raise ExportMismatch(f"ONNX Runtime fails on {onnx_path} for inputs of shape "
                                     f"{batch['input_ids'].shape}: {exc}") from exc
            for name in names:
                want = getattr(reference, name).float().numpy()
                if got[name].shape != want.shape:
                    raise ExportMismatch(
                        f"ONNX output {name!r} has shape {got[name].shape} but PyTorch gives {want.shape} for "
                        f"inputs of shape {batch['input_ids'].shape}: an axis was exported as fixed; re-export "
                        "with dynamic axes"
                    )
                worst[name] = max(worst.get(name, 0.0), max_abs_diff(got[name], want))
    finally:
        model.train(was_training)
    bad = {k: v for k, v in worst.items() if not v <= atol}
    if bad:
        detail = ", ".join(f"{k!r} by {v:.3g}" for k, v in bad.items())
        raise ExportMismatch(
            f"ONNX model {onnx_path} differs from PyTorch: output {detail} (max abs difference) exceeds "
            f"atol={atol:g}. Re-export (another opset), or raise atol if the difference is expected"
        )
    return worst


# ----------------------------------------------------------------------------------------------
# Exporters


def _export_optimum(model_dir: Path, out_dir: Path, task_type: str, opset: int | None) -> None:
    # NOTE: imported here, not at the top: Optimum's exporters are heavy and only an export needs them.
    from optimum.exporters.onnx import main_export

    # Our own validation follows (more lengths, our tolerance, our exception); Optimum's would only repeat it.
    # It writes config.json and the tokenizer beside model.onnx, so ORTModelFor* load the folder as it is.
    task = "question-answering" if task_type == "qa" else "text-classification"
    # NOTE: Optimum warns that its tied-weight deduplication needs accelerate; encoders with a classification
    # or QA head have no tied weights, so the check has nothing to do here.
    logging.getLogger("optimum.exporters.onnx.base").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # constant mask arithmetic, traced as intended
        main_export(str(model_dir), output=out_dir, task=task, opset=opset, device="cpu", do_validation=False,
                    library_name="transformers", local_files_only=True)


class _Outputs(nn.Module):
    """The model with plain tensor outputs in a fixed order: what torch.onnx traces."""

    def __init__(self, model: nn.Module, names: tuple[str, ...]) -> None:
        super().__init__()
        self.model, self.names = model, names

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        return tuple(getattr(out, k) for k in self.names)


def _export_torch(model: nn.Module, model_dir: Path, out_dir: Path, task_type: str, opset: int | None) -> None:
    names = output_names(task_type)
    example = random_batch(2, min(16, model.config.max_position_embeddings), model.config.vocab_size, 0)
    axes = {0: "batch_size", 1: "sequence_length"}
    dynamic = {k: axes for k in INPUT_NAMES} | {k: ({0: "batch_size"} if k == "logits" else axes) for k in names}
    wrapper = _Outputs(model, names).eval()
    # NOTE: the TorchScript exporter (dynamo=False) is what optimum-onnx uses too; it restores the wrapper's
    # training flag afterwards, hence the eval() above and in validate_onnx.
    torch.onnx.export(wrapper, tuple(torch.from_numpy(example[k]) for k in INPUT_NAMES), str(out_dir / "model.onnx"),
                      input_names=list(INPUT_NAMES), output_names=list(names), dynamic_axes=dynamic,
                      opset_version=opset or DEFAULT_OPSET, do_constant_folding=True, dynamo=False)
    model.config.save_pretrained(out_dir)
    for name in TOKENIZER_FILES:
        if (model_dir / name).is_file():
            shutil.copy2(model_dir / name, out_dir / name)


def export_onnx(model_dir: str | Path, out_dir: str | Path, task_type: str, sample: dict[str, np.ndarray] | None = None,
                atol: float = 1e-4, opset: int | None = None,
                exporter: Literal["optimum", "torch.onnx"] = "optimum") -> ExportResult:
    """Export the save_pretrained model in `model_dir` to out_dir/model.onnx and validate it against PyTorch.

    Inputs are input_ids, attention_mask and token_type_ids (int64, dynamic batch and sequence); outputs
    `logits`, or `start_logits` and `end_logits` for task_type "qa". Head-pruned models (a different head
    count per layer) export with either exporter. `sample` (e.g. a few real rows) is checked, as are other
    batch sizes and lengths; a difference over `atol` raises ExportMismatch.
    """
    start = time.perf_counter()
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if task_type not in TASK_TYPES:
        raise ValueError(f"task_type={task_type!r}: use one of {', '.join(TASK_TYPES)}")
    if exporter not in ("optimum", "torch.onnx"):
        raise ValueError(f"exporter={exporter!r}: use 'optimum' or 'torch.onnx'")
    if not (model_dir / "config.json").is_file():
        raise ValueError(f"model_dir {str(model_dir)!r} has no config.json; pass a save_pretrained folder")
    if model_dir.resolve() == out_dir.resolve():
        raise ValueError(f"out_dir {str(out_dir)!r} is model_dir: the export would overwrite its config.json; "
                         "pick another folder")
    model = _load_model(model_dir, task_type)
    out_dir.mkdir(parents=True, exist_ok=True)
    if exporter == "optimum":
        _export_optimum(model_dir, out_dir, task_type, opset)
    else:
        _export_torch(model, model_dir, out_dir, task_type, opset)
    path = out_dir / "model.onnx"
    diffs = validate_onnx(model, path, sample, atol)
    proto = onnx.load(str(path), load_external_data=False)
    file_opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    return ExportResult(path=path, size_bytes=onnx_size(path), max_abs_diff=diffs, opset=int(file_opset),
                        exporter=exporter, seconds=time.perf_counter() - start)
