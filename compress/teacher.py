"""Load the teacher (local folder, hub id from the local cache, or a packaged model), fine-tune a head
when it has none, and compute its outputs on the training split once, cached as safetensors.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file
from torch import nn

from .data import Split, TaskData
from .data.features import save_atomic
from .inference import predict_logits

log = logging.getLogger(__name__)

__all__ = [
    "TeacherError", "cached_importance", "check_tokenizer", "load_teacher", "load_tokenizer", "model_fingerprint",
    "resolve_model", "teacher_outputs",
]

HEAD_KEYS = {"qa": ("qa_outputs.",), "default": ("classifier.",)}


class TeacherError(ValueError):
    """The teacher cannot be used as given; the message says why and what to do."""


def resolve_model(ref: str, config_path: str | None = None) -> str:
    """A local folder, `pkg:<module>` (a pip package exposing get_model_path()), or a hub id."""
    if ref.startswith("pkg:"):
        module_name = ref[4:].replace("-", "_")
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            raise TeacherError(
                f"teacher.model {ref!r}: package {module_name!r} is not installed; "
                f"pip install {module_name.replace('_', '-')}, or point teacher.model at a folder"
            ) from None
        return str(module.get_model_path())
    p = Path(ref).expanduser()
    if not p.exists() and config_path is not None and (Path(config_path).resolve().parent / p).exists():
        p = Path(config_path).resolve().parent / p
    if p.exists():
        if not (p / "config.json").is_file():
            raise TeacherError(f"teacher.model {ref!r} is a folder without config.json; give a save_pretrained folder")
        return str(p)
    if ref.startswith((".", "/", "~")) or ref.count("/") > 1:
        raise TeacherError(f"teacher.model {ref!r} does not exist; give a save_pretrained folder or a hub id")
    return ref  # a hub id: loaded from the local Hugging Face cache only


def _auto_class(task_type: str):
    from transformers import AutoModelForQuestionAnswering, AutoModelForSequenceClassification

    return AutoModelForQuestionAnswering if task_type == "qa" else AutoModelForSequenceClassification


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except OSError as exc:
        raise TeacherError(
            f"no tokenizer found for {path!r} ({exc}); this tool runs offline: download the model first "
            "(huggingface-cli download ID) or give a folder that holds the tokenizer files"
        ) from None
    if not getattr(tok, "is_fast", False):
        raise TeacherError(f"the tokenizer of {path!r} is not a fast tokenizer; save one with tokenizer.json")
    return tok


def load_teacher(path: str, data: TaskData, require_head: bool = True) -> tuple[nn.Module, bool]:
    """The teacher model for the task, and whether the checkpoint already had a trained head."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True)
    except OSError as exc:
        raise TeacherError(
            f"cannot load a model config from {path!r} ({exc}); offline, give a local save_pretrained folder"
        ) from None
    if config.model_type not in ("bert",):
        raise TeacherError(
            f"teacher {path!r} is a {config.model_type!r} model; this version compresses BERT-family "
            "encoders with model_type 'bert'"
        )
    kwargs: dict[str, Any] = {}
    if data.task.type != "qa":
        kwargs = {"num_labels": data.num_labels, "id2label": data.id2label,
                  "label2id": {v: k for k, v in data.id2label.items()}}
        if data.task.type == "regression":
            kwargs["problem_type"] = "regression"
        elif data.num_labels > 1:
            kwargs["problem_type"] = "single_label_classification"
        saved = getattr(config, "num_labels", None)
        head_saved = any(a.endswith(("ForSequenceClassification",)) for a in (config.architectures or []))
        if head_saved and saved != data.num_labels:
            raise TeacherError(
                f"teacher {path!r} has a head with {saved} labels but the task has {data.num_labels} "
                f"({list(data.id2label.values())}); fine-tune a teacher for this task or fix task.labels"
            )
    model, info = _auto_class(data.task.type).from_pretrained(
        path, local_files_only=True, output_loading_info=True, **kwargs)
    prefixes = HEAD_KEYS["qa" if data.task.type == "qa" else "default"]
    has_head = not any(k.startswith(prefixes) for k in info["missing_keys"])
    if require_head and not has_head:
        raise TeacherError(
            f"teacher {path!r} has no trained {data.task.type} head; run `compress teacher CONFIG` to "
            "fine-tune one, or point teacher.model at a fine-tuned checkpoint"
        )
    return model, has_head


def check_tokenizer(tokenizer, model: nn.Module, where: str) -> None:
    """Distillation needs teacher and student to see identical tokens: refuse a mismatched vocabulary."""
    vocab = model.config.vocab_size
    if len(tokenizer) > vocab:
        raise TeacherError(
            f"the tokenizer of {where} has {len(tokenizer)} tokens but the model's embeddings hold {vocab}: "
            "they do not belong together. Save the model and its own tokenizer in one folder"
        )


def model_fingerprint(model: nn.Module) -> str:
    """Content hash of a model's weights and config: keys caches of its outputs."""
    h = hashlib.sha256(json.dumps(model.config.to_dict(), sort_keys=True, default=str).encode())
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def teacher_outputs(teacher: nn.Module, fingerprint: str, data: TaskData, split: Split, cache_dir: Path,
                    batch_size: int = 128) -> dict[str, np.ndarray]:
    """The teacher's logits on every row of `split`, computed once and kept as safetensors.

    `fingerprint` is the teacher's model_fingerprint: with the split's key it names the cache file.
    """
    key = hashlib.sha256(f"{fingerprint}-{split.key}".encode()).hexdigest()[:20]
    path = cache_dir / f"teacher-outputs-{split.name}-{key}.safetensors"
    if path.exists():
        arrays = load_file(str(path))
        if all(len(v) == len(split) for v in arrays.values()):
            return arrays
        log.warning("cached teacher outputs %s do not match the split; recomputing", path)
    log.info("computing teacher outputs on %d %s rows (cached at %s)", len(split), split.name, path)
    arrays = predict_logits(teacher, split, batch_size, data.task.type, progress=True)
    save_atomic({k: v.astype(np.float32) for k, v in arrays.items()}, path)
    return arrays


def cached_importance(teacher: nn.Module, fingerprint: str, data: TaskData, cache_dir: Path, batches: int,
                      batch_size: int = 32):
    """Head and FFN-neuron importance of the teacher, measured on its training split once."""
    from .student import Importance, measure_importance

    key = hashlib.sha256(f"{fingerprint}-{data.train.key}-{batches}-{batch_size}".encode()).hexdigest()[:20]
    path = cache_dir / f"importance-{key}.safetensors"
    if path.exists():
        arrays = load_file(str(path))
        return Importance(arrays["heads"], arrays["neurons"])
    rng = np.random.default_rng(0)
    order = rng.permutation(len(data.train))
    sample = [data.train.batch(np.sort(order[i * batch_size:(i + 1) * batch_size]))
              for i in range(min(batches, max(1, len(order) // batch_size)))]
    imp = measure_importance(teacher, sample)
    save_atomic({"heads": imp.heads.astype(np.float32), "neurons": imp.neurons.astype(np.float32)}, path)
    return imp

