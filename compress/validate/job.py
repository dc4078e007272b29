"""The parts of a job checked against the teacher's config: the student, distill.layer_map, the search space,
objectives and constraints, the fptas grid, and what Agora cannot train."""

from __future__ import annotations

import dataclasses
from typing import Any

from ..config import ConfigError, JobConfig
from ..model.student import StudentSpec, configured_spec_fields, teacher_layers
from ..search.fptas import candidate_grid
from ..search.objectives import SearchError, metric_names, objective_directions, search_constraints
from ..search.space import SearchSpace
from .findings import Report
from .teacher import TeacherFacts

__all__ = ["check_agora", "check_constraints", "check_fptas", "check_layer_map", "check_search", "check_student"]


def _spec_problems(spec: Any, t: Any) -> list[str]:
    """What build_student would refuse about `spec` for a teacher of config `t`, without building anything."""
    problems = []
    try:
        teacher_layers(spec, t.num_hidden_layers)
    except ValueError as exc:
        problems.append(str(exc))
    heads = spec.heads_per_layer(t.num_attention_heads)
    if max(heads) > t.num_attention_heads:
        problems.append(f"StudentSpec.heads={spec.heads!r} exceeds the teacher's {t.num_attention_heads} heads "
                        "per layer")
    if spec.intermediate_size is not None and spec.intermediate_size > t.intermediate_size:
        problems.append(f"StudentSpec.intermediate_size={spec.intermediate_size} exceeds the teacher's "
                        f"{t.intermediate_size}; a student keeps a subset of the teacher's FFN neurons")
    if spec.hidden_size is not None:
        if spec.hidden_size > t.hidden_size:
            problems.append(f"StudentSpec.hidden_size={spec.hidden_size} exceeds the teacher's {t.hidden_size}")
        elif spec.hidden_size % (heads[0] if spec.heads else t.num_attention_heads):
            problems.append(f"StudentSpec.hidden_size={spec.hidden_size} is not divisible by "
                            f"{heads[0] if spec.heads else t.num_attention_heads} heads")
    return problems


def check_student(cfg: JobConfig, student: str | None, teacher: TeacherFacts, found: list[str]) -> Any:
    """The StudentSpec `compress distill` would build (from --student or the student: section), or None."""
    t = teacher.config
    where = f"--student {student}" if student else "config key 'student'"
    try:
        if student:
            spec = StudentSpec.load(student)
        else:
            spec = StudentSpec.from_json(configured_spec_fields(cfg.student, t.num_hidden_layers))
    except (TypeError, ValueError) as exc:
        found.append(f"{where}: {exc}")
        return None
    shape = (f"{t.num_hidden_layers} layers, {t.num_attention_heads} heads, hidden {t.hidden_size}, "
             f"FFN {t.intermediate_size}")
    for problem in _spec_problems(spec, t):
        found.append(f"{where}: {problem} (the teacher {teacher.path} has {shape}); make the student smaller "
                     "than its teacher")
    return spec


def _layer_counts(space: Any) -> set[int] | None:
    """Every num_layers a search space can give, or None when num_layers is not searched."""
    p = space.params.get("num_layers")
    if p is None:
        return None
    if p.type == "categorical":
        return {int(c) for c in p.choices}
    return set(range(int(p.low), int(p.high) + 1, int(p.step or 1)))


def check_layer_map(cfg: JobConfig, command: str, teacher: TeacherFacts | None, spec: Any, space: Any,
                     fptas_depths: set[int] | None, found: list[str]) -> None:
    layer_map = cfg.distill.layer_map
    if layer_map is None:
        return
    shown = list(layer_map)
    layered = ("alpha_hidden", "alpha_attention")  # the per-layer losses that follow the layer map
    if not any(getattr(cfg.distill, k) > 0 or k in cfg.search.space for k in layered):
        found.append(f"config key 'distill.layer_map' ({shown}): layer_map is used only by the hidden-state and "
                     "attention losses; set distill.alpha_hidden or distill.alpha_attention > 0, or remove it")
    if teacher is None:
        return
    n = teacher.config.num_hidden_layers
    bad = [i for i in layer_map if i >= n]
    if bad:
        found.append(f"config key 'distill.layer_map': got {shown}; teacher layer{'s' if len(bad) > 1 else ''} "
                     f"{', '.join(map(str, bad))} do{'' if len(bad) > 1 else 'es'} not exist: the teacher "
                     f"{teacher.path} has {n} layers, numbered 0..{n - 1}")
    counts: set[int] = set()
    source = ""
    if command == "search" or (command == "validate" and space is not None):
        searched = _layer_counts(space) if space is not None else None
        if searched is not None:
            counts, source = searched, "search.space.num_layers gives students of"
        elif space is not None:
            counts, source = {space.settings({})[0].num_layers}, "the searched students have"
    elif command == "fptas" and fptas_depths:
        counts, source = fptas_depths, "fptas.depths distils candidates of"
    elif spec is not None:
        counts, source = {spec.num_layers}, "the student (student.num_layers, or --student) has"
    wrong = sorted(c for c in counts if c != len(layer_map))
    if wrong:
        layers = ", ".join(map(str, sorted(counts)))
        found.append(f"config key 'distill.layer_map' has {len(layer_map)} entries ({shown}) but {source} {layers} "
                     "layers; give one teacher layer per student layer, or remove layer_map (each student layer is "
                     "then compared with the teacher layer it was copied from)")


def check_search(cfg: JobConfig, teacher: TeacherFacts | None, report: Report) -> Any:
    """The search space against the teacher, the objectives and each constraint; the space, or None."""
    space = None
    if teacher is not None:
        try:
            space = SearchSpace.from_config(cfg, teacher.config)
        except (ConfigError, ValueError, TypeError) as exc:
            report.errors.append(str(exc))
    try:
        objective_directions(cfg)
    except SearchError as exc:
        report.errors.append(str(exc))
    check_constraints(cfg, report)
    seq = cfg.search.latency.seq_len
    positions = teacher.config.max_position_embeddings if teacher is not None else seq
    if isinstance(seq, int) and seq > positions:
        report.errors.append(f"config key 'search.latency.seq_len': got {seq}; the teacher has {positions} positions "
                             f"(max_position_embeddings): use {positions} or less, or 'eval'")
    return space


def check_constraints(cfg: JobConfig, report: Report) -> None:
    """Each of search.constraints on its own, so every bad one is listed (search_constraints stops at the first)."""
    names = metric_names(cfg)
    for text in cfg.search.constraints:
        one = dataclasses.replace(cfg, search=dataclasses.replace(cfg.search, constraints=(text,)))
        try:
            search_constraints(one, names)
        except SearchError as exc:
            report.errors.append(str(exc))


def check_fptas(cfg: JobConfig, teacher: TeacherFacts | None, report: Report, constraints: bool) -> set[int] | None:
    """The candidate grid the teacher can supply (and, with `constraints`, search.constraints, which fptas checks
    the distilled top k against); the depths of the candidates that may be distilled, or None."""
    if constraints:
        check_constraints(cfg, report)
    if teacher is None:
        return None
    try:
        grid = candidate_grid(cfg.fptas, teacher.config)
    except ValueError as exc:
        report.errors.append(f"config key 'fptas': {exc}")
        return None
    fc = cfg.fptas
    return {c.depth for c in grid} if (fc.top_k > 0 or fc.calibrate) else None


def check_agora(cfg: JobConfig, command: str, space: Any, found: list[str]) -> None:
    """Agora trains students on soft targets and labels only: the losses on the teacher's internals (hidden states,
    attention maps, relations) have no teacher pass there."""
    why = "Agora trains students without the losses on the teacher's internals (it runs no teacher forward pass " \
          "per step)"
    for key in ("alpha_hidden", "alpha_attention", "alpha_relations"):
        alpha = getattr(cfg.distill, key)
        searched = space.params.get(key) if space is not None else None
        high = max(searched.corners()) if searched is not None else None
        if (command == "agora" or searched is None) and alpha > 0:
            where = "`compress agora`" if command == "agora" else "finetune: agora"
            found.append(f"config key 'distill.{key}': got {alpha:g}; {why}: set it to 0 for {where}")
        elif searched is not None and high and high > 0 and command != "agora":
            found.append(f"config key 'search.space.{key}' reaches {high:g} with finetune: agora; {why}: remove "
                         f"{key} from search.space, or set finetune: distill")


def check_devices(cfg: JobConfig, command: str, report: Report) -> None:
    """The training sections' device and mixed precision against this machine (before any data is read)."""
    from ..distill.devices import DeviceError, check_precision, resolve_device

    sections = {"teacher.train": cfg.teacher.train} if command == "teacher" else {
        "teacher.train": cfg.teacher.train, "distill.train": cfg.distill.train}
    for where, tc in sections.items():
        try:
            check_precision(tc.mixed_precision, resolve_device(tc.device, f"{where}.device"),
                            f"{where}.mixed_precision")
        except DeviceError as exc:
            report.errors.append(str(exc))
    if command in ("search", "validate"):
        from ..deploy.onnxrt import check_provider

        try:
            check_provider(cfg.search.latency.provider)
        except ValueError as exc:
            report.errors.append(str(exc))


def check_fidelity(cfg: JobConfig, report: Report) -> None:
    """search.fidelity's rungs against the training rows (text tasks: a row is a feature; QA windows are counted
    only when featurised, so there the search checks it)."""
    fc = cfg.search.fidelity
    rows = (report.splits.get("train") or {}).get("rows")
    if not fc.enabled or rows is None or cfg.task.type == "qa":
        return
    from ..search.fidelity import rung_rows

    try:
        rung_rows(rows, fc.rows)
    except ValueError as exc:
        report.errors.append(str(exc))
