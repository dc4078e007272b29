"""`compress report RUN`: the page for choosing a frontier model."""

from .page import QA_CATEGORIES, build_report, heldout_note, importances, preferred_values, qa_error_table, scenario_rows

__all__ = ["QA_CATEGORIES", "build_report", "heldout_note", "importances", "preferred_values", "qa_error_table",
           "scenario_rows"]
