"""`compress validate` and the preflight checks of every training command."""

from .checks import (
    COMMANDS, MAX_TOKENIZED_ROWS, Report, ValidationError, format_report, preflight, validate, validate_file,
)

__all__ = ["COMMANDS", "MAX_TOKENIZED_ROWS", "Report", "ValidationError", "format_report", "preflight", "validate",
           "validate_file"]
