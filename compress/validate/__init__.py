"""`compress validate` and the same checks run first by `teacher`, `distill`, `agora`, `fptas` and `search`.

run (the entry points) · findings (the Report and ValidationError) · teacher (config, tokenizer, head, from its
files) · data (every split) · lengths (token lengths against max_seq_length) · job (student, layer_map, search,
fptas, agora) · summary (the printed summary).
"""

from .findings import COMMANDS, Report, ValidationError
from .lengths import MAX_TOKENIZED_ROWS
from .run import preflight, validate, validate_file
from .summary import format_report

__all__ = ["COMMANDS", "MAX_TOKENIZED_ROWS", "Report", "ValidationError", "format_report", "preflight", "validate",
           "validate_file"]
