"""Check a job before any work: the config, every split, the teacher, the student, distill.layer_map and the search.

`compress validate job.yaml [--json]` lists every error and warning in seconds, without training, featurising or
running the teacher; `preflight(cfg, command)` runs the same checks first in `teacher`, `distill`, `agora`, `fptas`
and `search`, so a mistake is reported before minutes of featurisation and teacher inference.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..config import ConfigError, FptasConfig, JobConfig, SearchConfig, load_config
from .data import check_data
from .findings import COMMANDS, Report, ValidationError
from .job import (
    check_agora, check_devices, check_fidelity, check_fptas, check_layer_map, check_search, check_student,
)
from .teacher import check_head, check_teacher

# NOTE: the package's logger, so preflight warnings read "WARNING compress.validate: ..." as they always have
log = logging.getLogger(__package__)

__all__ = ["preflight", "validate", "validate_file"]


def validate_file(path: str | Path, command: str = "validate") -> tuple[Report, JobConfig | None]:
    """Load the config at `path` and validate it; a config that does not load is the one error reported."""
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        return Report(errors=[str(exc)]), None
    return validate(cfg, command), cfg


def preflight(cfg: JobConfig, command: str, student: str | None = None) -> Report:
    """The checks `compress validate` runs, before `command` does any work (token lengths are skipped: they cost
    a tokenizer pass). Raises ValidationError listing every error; with none, logs every warning."""
    report = validate(cfg, command, student=student, lengths=False)
    if report.errors:  # the errors alone: they are what stops the job (validate lists the warnings too)
        raise ValidationError(report.errors, report.warnings)
    for warning in report.warnings:
        log.warning("%s", warning)
    return report


def validate(cfg: JobConfig, command: str = "validate", student: str | None = None,
             lengths: bool = True) -> Report:
    """Check what `command` needs: the data, the teacher, the student (config student: section, or the spec file
    `student`), distill.layer_map, and for `search` (or validate with a search: section) the search space,
    objectives and constraints. `lengths` adds token-length statistics and, for QA, answers lost to truncation."""
    if command not in COMMANDS:
        raise ValueError(f"validate: command {command!r} is not one of {', '.join(COMMANDS)}")
    report = Report()
    check_devices(cfg, command, report)
    teacher = check_teacher(cfg, command, report)  # None: unusable (the errors say why); checks needing it skip
    num_labels = check_data(cfg, command, report, teacher.tokenizer if teacher else None, lengths)
    if teacher is not None:
        check_head(cfg, command, report, teacher, num_labels)
    strict = command != "teacher"  # `compress teacher` uses neither the student nor distill: a heads-up only
    found: list[str] = []
    spec = None
    if command in ("validate", "teacher", "distill", "agora") and teacher is not None:
        spec = check_student(cfg, student, teacher, found)
    space = None
    search = command == "search" or (command == "validate" and cfg.search != SearchConfig())
    if search:
        space = check_search(cfg, teacher, report)
        check_fidelity(cfg, report)
    fptas_depths = None
    if command == "fptas" or (command == "validate" and cfg.fptas != FptasConfig()):
        fptas_depths = check_fptas(cfg, teacher, report, constraints=not search)
    check_layer_map(cfg, command, teacher, spec, space, fptas_depths, found)
    if command == "agora" or (cfg.finetune == "agora" and command in ("validate", "search")):
        check_agora(cfg, command, space, found)
    if strict:
        report.errors.extend(found)
    else:
        report.warnings.extend(f"{p} (`compress teacher` does not use it; `compress distill` will refuse it)"
                               for p in found)
    return report

