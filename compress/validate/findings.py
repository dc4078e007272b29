"""What the checks of `compress validate` find: a Report of splits, teacher, errors, warnings and notes, and the
ValidationError a command raises when a check fails."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["COMMANDS", "SPLITS", "Report", "ValidationError", "first_line"]

COMMANDS = ("validate", "teacher", "distill", "agora", "fptas", "search")

SPLITS = ("train", "eval", "test")


class ValidationError(ValueError):
    """The job cannot run as configured. Holds every error the checks found; the CLI prints it and exits 2."""

    def __init__(self, errors: list[str], warnings: list[str] | None = None) -> None:
        self.errors = list(errors)
        self.warnings = list(warnings or [])
        if len(self.errors) == 1:
            message = self.errors[0]
        else:
            message = (f"{len(self.errors)} problems stop this job (nothing was run):\n"
                       + "\n".join(f"  - {e}" for e in self.errors))
        super().__init__(message)


@dataclass
class Report:
    """What the checks found. `to_json()` is the `--json` output; `notes` appear in the human output only."""

    splits: dict[str, dict[str, Any]] = field(default_factory=dict)
    teacher: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"splits": self.splits, "teacher": self.teacher, "errors": self.errors, "warnings": self.warnings}


def first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= 240 else text[:237] + "..."

