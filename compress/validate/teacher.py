"""The teacher as the checks see it: its config, tokenizer and weight names, read from its files (no model is
built), and whether it has a head for the task."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import try_to_load_from_cache
from safetensors import SafetensorError, safe_open
from transformers import AutoConfig

from ..config import JobConfig
from ..model.teacher import TeacherError, load_tokenizer, resolve_model
from .findings import Report, first_line

__all__ = ["TeacherFacts", "check_head", "check_teacher"]


@dataclass
class TeacherFacts:
    """The teacher as far as the checks need it: read from its files, never loaded as a model."""

    path: str
    config: Any  # transformers PretrainedConfig
    tokenizer: Any | None
    head: tuple[bool, int | None] | None  # (has a head for the task, its outputs); None: weight names unreadable


def check_teacher(cfg: JobConfig, command: str, report: Report) -> TeacherFacts | None:
    run_teacher = cfg.run_dir / "teacher"
    # NOTE: as compress.distill.jobs.teacher_path: a teacher fine-tuned in this run is the one every later command uses;
    # `compress teacher` itself starts again from teacher.model.
    use_run = command != "teacher" and (run_teacher / "config.json").is_file()
    report.teacher["model"] = cfg.teacher.model
    try:
        path = str(run_teacher) if use_run else resolve_model(cfg.teacher.model, cfg.config_path)
    except TeacherError as exc:
        report.errors.append(str(exc))
        return None
    report.teacher.update(path=path, source="run" if use_run else "teacher.model")
    if use_run:
        report.notes.append(f"teacher: {run_teacher} holds this run's fine-tuned teacher; later commands use it "
                            f"(teacher.model {cfg.teacher.model!r} is only its starting point)")
    tokenizer = None
    try:
        tokenizer = load_tokenizer(path)
    except TeacherError as exc:
        report.errors.append(str(exc))
    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as exc:
        report.errors.append(f"cannot load a model config from {path!r} ({first_line(exc)}); offline, give a "
                             "local save_pretrained folder whose config.json names its model_type")
        return None
    report.teacher["model_type"] = config.model_type
    if config.model_type != "bert":
        report.errors.append(f"teacher {path!r} is a {config.model_type!r} model; this version compresses "
                             "BERT-family encoders with model_type 'bert': point teacher.model at one")
        return None
    for key in ("num_hidden_layers", "num_attention_heads", "hidden_size", "intermediate_size",
                "max_position_embeddings", "vocab_size"):
        report.teacher[key] = getattr(config, key)
    if tokenizer is not None:
        report.teacher["tokenizer_size"] = len(tokenizer)
        if len(tokenizer) > config.vocab_size:  # the check teacher.check_tokenizer makes on a loaded model
            report.errors.append(
                f"the tokenizer of {path} has {len(tokenizer)} tokens but the model's embeddings hold "
                f"{config.vocab_size} (config.json vocab_size): they do not belong together. Save the model and "
                "its own tokenizer in one folder")
    if cfg.data.max_seq_length > config.max_position_embeddings:
        report.errors.append(
            f"config key 'data.max_seq_length': got {cfg.data.max_seq_length}; the teacher {path} has "
            f"{config.max_position_embeddings} positions (max_position_embeddings): use "
            f"{config.max_position_embeddings} or less")
    if getattr(config, "pruned_heads", None):
        report.errors.append(f"the teacher {path} already has pruned heads ({config.pruned_heads}); students are "
                             "built from an unpruned teacher: point teacher.model at one")
    head = None
    try:
        head = _head_weights(path, cfg.task.type)
    except ValueError as exc:
        report.errors.append(str(exc))
    if head is None:
        report.notes.append(f"teacher: the weight names of {path} could not be read without loading the model; "
                            "its head is checked when the command loads it")
    return TeacherFacts(path, config, tokenizer, head)


def _checkpoint_folder(path: str) -> Path | None:
    """The folder holding a teacher's files: the folder itself, or a hub id's snapshot in the local cache."""
    folder = Path(path)
    if folder.is_dir():
        return folder
    found = try_to_load_from_cache(path, "config.json")
    return Path(found).parent if isinstance(found, str) else None


def _head_weights(path: str, task_type: str) -> tuple[bool, int | None] | None:
    """Whether the checkpoint holds a head for the task (`classifier.*`, or `qa_outputs.*` for QA) and how many
    outputs it has, from the weight names in the file headers (no model is built). None: names unreadable."""
    folder = _checkpoint_folder(path)
    if folder is None:
        return None
    prefix = "qa_outputs." if task_type == "qa" else "classifier."  # as teacher.HEAD_KEYS
    weight = f"{prefix}weight"

    def from_names(names: list[str], shape_of) -> tuple[bool, int | None]:
        has = any(n.startswith(prefix) for n in names)
        return has, (int(shape_of(weight)[0]) if weight in names else None)

    single = folder / "model.safetensors"
    if single.is_file():
        names = _safetensors_names(single)
        return from_names(names, lambda name: _safetensors_shape(single, name))
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = folder / index_name
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            except (OSError, ValueError, KeyError, TypeError):
                return None  # resolve_model has refused a broken index already; leave the rest to loading
            shard_of = {str(k): folder / str(v) for k, v in weight_map.items()}
            shape = (_safetensors_shape if index_name.startswith("model.") else _torch_shape)
            return from_names(list(shard_of), lambda name: shape(shard_of[name], name))
    pickled = folder / "pytorch_model.bin"
    if pickled.is_file():
        try:
            state = _torch_state(pickled)
        except Exception:  # noqa: BLE001 - an unreadable pickle: the model load reports it with its own words
            return None
        return from_names(list(state), lambda name: tuple(state[name].shape))
    return None


def _safetensors_names(file: Path) -> list[str]:
    try:
        with safe_open(str(file), framework="np") as fh:
            return list(fh.keys())
    except (SafetensorError, OSError) as exc:
        raise ValueError(f"cannot read the weights in {file} ({first_line(exc)}); the file is damaged or "
                         "incomplete: save the model again with model.save_pretrained(folder)") from None


def _safetensors_shape(file: Path, name: str) -> tuple[int, ...]:
    with safe_open(str(file), framework="np") as fh:
        return tuple(fh.get_slice(name).get_shape())


def _torch_state(file: Path) -> dict[str, Any]:
    # mmap: the tensors stay on disk; only the names and shapes are looked at
    return torch.load(str(file), map_location="cpu", weights_only=True, mmap=True)


def _torch_shape(file: Path, name: str) -> tuple[int, ...]:
    return tuple(_torch_state(file)[name].shape)


def check_head(cfg: JobConfig, command: str, report: Report, teacher: TeacherFacts, num_labels: int | None) -> None:
    kind = cfg.task.type
    if teacher.head is None:
        report.teacher["head"] = "unknown"  # the weight names could not be read (a note says so)
        return
    has, outputs = teacher.head
    report.teacher["head"] = ("qa" if kind == "qa" else "classification") if has else None
    report.teacher["head_outputs"] = outputs
    path = teacher.path
    if has:
        expected = 2 if kind == "qa" else num_labels
        if expected is not None and outputs is not None and outputs != expected:
            what = {"qa": "start and end", "regression": "one score"}.get(kind, f"{expected} labels")
            report.errors.append(
                f"teacher {path!r} has a {kind} head with {outputs} outputs but the task needs {expected} ({what}); "
                "fine-tune a teacher for this task (point teacher.model at its base encoder and run `compress "
                "teacher CONFIG`) or fix task.labels")
        return
    if command == "teacher":
        report.notes.append(f"teacher: {path} has no {kind} head yet; this command fine-tunes one")
    elif command == "validate":
        report.warnings.append(
            f"teacher {path!r} has no trained {kind} head: `compress teacher CONFIG` will fine-tune one into "
            f"{cfg.run_dir / 'teacher'}, which distill, search, agora and fptas then use")
    else:
        report.errors.append(
            f"teacher {path!r} has no trained {kind} head; run `compress teacher CONFIG` to fine-tune one "
            f"(into {cfg.run_dir / 'teacher'}), or point teacher.model at a fine-tuned checkpoint")

