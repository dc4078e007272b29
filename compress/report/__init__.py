"""`compress report RUN`: the page for choosing a frontier model.

collect (what happened, from the study and the run folder) · figures (one function a figure, with its Plotly and
PNG renderers) · page (report.html and report.md).
"""

from .collect import QA_CATEGORIES, importances, preferred_values, provenance, qa_error_table, scenario_rows
from .figures import Figure, report_figures
from .page import build_report, heldout_note

__all__ = ["QA_CATEGORIES", "Figure", "build_report", "heldout_note", "importances", "preferred_values",
           "provenance", "qa_error_table", "report_figures", "scenario_rows"]
