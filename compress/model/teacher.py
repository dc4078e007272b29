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
from huggingface_hub import constants, try_to_load_from_cache
from huggingface_hub.utils import HFValidationError, validate_repo_id
from safetensors import SafetensorError
from safetensors.numpy import load_file
from torch import nn
from transformers import AutoConfig, AutoModelForQuestionAnswering, AutoModelForSequenceClassification, AutoTokenizer

from ..data.features import Split, TaskData, save_atomic
from .inference import predict_logits
from .student import Importance, measure_importance

log = logging.getLogger(__name__)

__all__ = [
    "TeacherError", "cached_importance", "check_teacher_folder", "check_tokenizer", "load_teacher", "load_tokenizer",
    "model_fingerprint", "resolve_model", "teacher_outputs",
]

HEAD_KEYS = {"qa": ("qa_outputs.",), "default": ("classifier.",)}


class TeacherError(ValueError):
    """The teacher cannot be used as given; the message says why and what to do."""


WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
SHARD_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
OTHER_FRAMEWORK_WEIGHTS = ("tf_model.h5", "flax_model.msgpack")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model",
                   "tokenizer.model")
SAVE_FIX = "save the model with model.save_pretrained(folder) and its tokenizer with tokenizer.save_pretrained(folder)"


def _listing(folder: Path, limit: int = 8) -> str:
    """A short list of what a folder holds, for error messages."""
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    if not names:
        return "it is empty"
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return "it holds " + ", ".join(names[:limit]) + more


def _read_json(path: Path, fix: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise TeacherError(
            f"{path} is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); {fix}") from None
    except (UnicodeDecodeError, OSError) as exc:
        raise TeacherError(f"{path} cannot be read ({exc}); {fix}") from None


def check_teacher_folder(path: str | Path, fix: str = SAVE_FIX) -> None:
    """Refuse a model folder that from_pretrained could not load: no or broken config.json, no weights.

    `fix` is the advice that ends each message (a hub snapshot is fixed by downloading it again).
    """
    folder = Path(path)
    if not folder.is_dir():
        raise TeacherError(f"{folder} is a file, not a folder; give the folder that holds config.json and the weights")
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise TeacherError(f"{folder} is a folder without config.json ({_listing(folder)}); "
                           f"give a save_pretrained folder: {fix}")
    if not isinstance(_read_json(config_file, fix), dict):
        raise TeacherError(f"{config_file} does not hold a JSON object (a model config); {fix}")
    if any((folder / name).is_file() for name in WEIGHT_FILES):
        return
    for name in SHARD_INDEXES:
        index_file = folder / name
        if index_file.is_file():
            index = _read_json(index_file, fix)
            weight_map = index.get("weight_map") if isinstance(index, dict) else None
            if not isinstance(weight_map, dict) or not weight_map:
                raise TeacherError(f"{index_file} has no weight_map naming the shard files; {fix}")
            shards = {str(s) for s in weight_map.values()}
            missing = sorted(s for s in shards if not (folder / s).is_file())
            if missing:
                shown = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
                raise TeacherError(f"the sharded checkpoint in {folder} lacks {len(missing)} of the {len(shards)} "
                                   f"shard files named by {name} ({shown}); copy every shard, or {fix}")
            return
    other = [name for name in OTHER_FRAMEWORK_WEIGHTS if (folder / name).is_file()]
    if other:
        raise TeacherError(
            f"{folder} holds only {' and '.join(other)} (TensorFlow/Flax weights); this tool loads PyTorch weights: "
            "load it with from_tf=True (or from_flax=True) and save it again with model.save_pretrained(folder)")
    raise TeacherError(
        f"{folder} has config.json but no model weights (no {', '.join(WEIGHT_FILES)} or sharded "
        f"{SHARD_INDEXES[0]}; {_listing(folder)}); {fix}")


def _cached_snapshot(repo_id: str) -> Path | None:
    """The folder of `repo_id` in the local Hugging Face cache, or None; never touches the network."""
    found = try_to_load_from_cache(repo_id, "config.json")
    return Path(found).parent if isinstance(found, str) else None  # None or _CACHED_NO_EXIST: not there


def _can_be_hub_id(ref: str) -> bool:
    if ref.startswith((".", "/", "~")) or ref.count("/") > 1:
        return False
    try:
        validate_repo_id(ref)
    except HFValidationError:
        return False
    return True


def resolve_model(ref: str, config_path: str | None = None) -> str:
    """A local folder, `pkg:<module>` (a pip package exposing get_model_path()), or a hub id.

    A hub id is looked up only in the local Hugging Face cache; any of them is checked for a config and
    weights here, so a broken teacher is refused with a clear message before anything heavy is loaded.
    """
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
    config_dir = Path(config_path).resolve().parent if config_path is not None else None
    if not p.exists() and config_dir is not None and not p.is_absolute() and (config_dir / p).exists():
        p = config_dir / p
    if p.exists():
        try:
            check_teacher_folder(p)
        except TeacherError as exc:
            raise TeacherError(f"teacher.model {ref!r}: {exc}") from None
        return str(p)
    beside = config_dir is not None and config_dir != Path.cwd().resolve()
    looked = f"looked in {Path.cwd()}" + (f" and beside the config in {config_dir}" if beside else "")
    if not _can_be_hub_id(ref):
        where = "" if p.is_absolute() else f" ({looked})"
        raise TeacherError(
            f"teacher.model {ref!r} does not exist{where}; give a save_pretrained folder or a hub id")
    snapshot = _cached_snapshot(ref)
    if snapshot is None:
        raise TeacherError(
            f"teacher.model {ref!r} is not a folder ({looked}) and not a model in the local Hugging Face cache "
            f"({constants.HF_HUB_CACHE}); give the path to a save_pretrained folder, or download it first with "
            f"`huggingface-cli download {ref}` on a machine with network"
        )
    try:
        check_teacher_folder(snapshot, fix=f"download it again with `huggingface-cli download {ref}` "
                                            "on a machine with network")
    except TeacherError as exc:
        raise TeacherError(f"teacher.model {ref!r} (in the local Hugging Face cache): {exc}") from None
    return ref  # a hub id: loaded from the local Hugging Face cache only


def _reason(exc: BaseException, limit: int = 240) -> str:
    """An exception's message in one line: the first line, and the first shape mismatch if there is one."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    text = lines[0]
    mismatch = next((line for line in lines[1:] if "size mismatch" in line), None)
    if mismatch:
        text = f"{text.rstrip(':')}: {mismatch}"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _auto_class(task_type: str):
    return AutoModelForQuestionAnswering if task_type == "qa" else AutoModelForSequenceClassification


def load_tokenizer(path: str):
    """The fast tokenizer saved with a model: a local folder, or a hub id from the local cache only."""
    folder = Path(path)
    local = folder.is_dir()
    if local and not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise TeacherError(
            f"{path} has no tokenizer files (tokenizer.json or vocab.txt; {_listing(folder)}); save the "
            "tokenizer beside the model with tokenizer.save_pretrained(folder)"
        )
    try:
        tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except OSError as exc:
        if local:
            raise TeacherError(f"cannot read the tokenizer in {path} ({_reason(exc)}); save it again with "
                               "tokenizer.save_pretrained(folder)") from None
        raise TeacherError(
            f"no tokenizer found for {path!r} ({exc}); this tool runs offline: download the model first "
            "(huggingface-cli download ID) or give a folder that holds the tokenizer files"
        ) from None
    except Exception as exc:  # noqa: BLE001 - `tokenizers` raises a bare Exception for a broken tokenizer.json
        raise TeacherError(f"cannot read the tokenizer of {path!r} ({type(exc).__name__}: {_reason(exc)}); "
                           "save it again with tokenizer.save_pretrained(folder)") from None
    if not getattr(tok, "is_fast", False):
        raise TeacherError(f"the tokenizer of {path!r} is not a fast tokenizer; save one with tokenizer.json")
    return tok


def _is_load_fault(exc: BaseException) -> bool:
    """Whether from_pretrained failed because of the files it was given (not a bug or lack of memory)."""
    if isinstance(exc, (OSError, ValueError, SafetensorError)):
        return True
    return isinstance(exc, RuntimeError) and ("size mismatch" in str(exc) or "loading state_dict" in str(exc))


def load_teacher(path: str, data: TaskData, require_head: bool = True) -> tuple[nn.Module, bool]:
    """The teacher model for the task, and whether the checkpoint already had a trained head."""
    if Path(path).is_dir():
        check_teacher_folder(path)
    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise TeacherError(
            f"cannot load a model config from {path!r} ({_reason(exc)}); offline, give a local save_pretrained "
            "folder whose config.json names its model_type"
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
    try:
        model, info = _auto_class(data.task.type).from_pretrained(
            path, local_files_only=True, output_loading_info=True, **kwargs)
    except Exception as exc:
        if not _is_load_fault(exc):
            raise
        if "size mismatch" in str(exc):
            raise TeacherError(
                f"the weights in {path!r} do not match its config.json ({_reason(exc)}); keep config.json and the "
                "weights that were saved together: save both again with model.save_pretrained(folder)"
            ) from None
        raise TeacherError(
            f"cannot load the weights of teacher {path!r} ({_reason(exc)}); the files are damaged or incomplete: "
            "save the model again with model.save_pretrained(folder), or download it again"
        ) from None
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
                    batch_size: int = 128, device: str = "cpu") -> dict[str, np.ndarray]:
    """The teacher's logits on every row of `split`, computed once and kept as safetensors.

    `fingerprint` is the teacher's model_fingerprint: with the split's key it names the cache file. `device`
    (a resolved torch device, e.g. "cuda") is where the batches run; the teacher is back on the CPU after.
    """
    key = hashlib.sha256(f"{fingerprint}-{split.key}".encode()).hexdigest()[:20]
    path = cache_dir / f"teacher-outputs-{split.name}-{key}.safetensors"
    if path.exists():
        arrays = load_file(str(path))
        if all(len(v) == len(split) for v in arrays.values()):
            return arrays
        log.warning("cached teacher outputs %s do not match the split; recomputing", path)
    log.info("computing teacher outputs on %d %s rows (cached at %s)", len(split), split.name, path)
    from ..distill.devices import placed  # NOTE: here, not at the top: compress.distill imports this module

    with placed(teacher, device):
        arrays = predict_logits(teacher, split, batch_size, data.task.type, progress=True)
    save_atomic({k: v.astype(np.float32) for k, v in arrays.items()}, path)
    return arrays


def cached_importance(teacher: nn.Module, fingerprint: str, data: TaskData, cache_dir: Path, batches: int,
                      batch_size: int = 32):
    """Head and FFN-neuron importance of the teacher, measured on its training split once."""
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

