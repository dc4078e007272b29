"""The multi-objective search over students, and what is read from it.

space (what is searched) · objectives (what a trial is scored on: objectives, constraints, latency protocol) ·
storage (where the study lives) · study (running trials: workers, heartbeats, resume) · pareto (trial records,
dominance, the frontier) · results (frontier.json, trials.csv, status) · heldout (the test split, scored once the
search is over) · confirm (the frontier timed again together at the end) · intervals (dominance and ties of figures with error bars) · scenarios (picking one frontier point) · query (`compress trials`) · fptas, fptas_calibration,
fptas_output, fptas_run (`compress fptas`).
"""

from .fptas import W_DEFINITION, Candidate, candidate_grid, surrogate_error, w_coefficient
from .fptas_calibration import calibrate, real_relative_error, spearman
from .fptas_output import calibration_markdown, calibration_png, ranking_markdown
from .fptas_run import run_fptas
from .pareto import (
    baseline_trial, confirmation, dominates, frontier, frontier_ties, near_frontier, record_values, study_records,
    trial_record,
)
from .confirm import confirm_candidates, confirm_study, needs_confirmation
from .heldout import evaluate_heldout
from .intervals import Estimate, dominates_with_intervals, intervals_overlap, tied_with_intervals
from .objectives import (
    MEASURES, Constraint, SearchError, latency, metric_names, objective_directions, paired_latency, parse_constraint,
    search_constraints,
)
from .query import QueryError, filter_trials, format_trials
from .results import frontier_document, study_summary, write_outputs
from .scenarios import SCENARIOS, ScenarioError, pick
from .space import SearchSpace, SearchSpaceError
from .storage import open_study, storage_url
from .study import confirm_and_report, prepare_search, run_search, run_trial, run_worker

__all__ = [
    "MEASURES", "SCENARIOS", "W_DEFINITION", "Candidate", "Estimate", "dominates_with_intervals", "intervals_overlap",
    "tied_with_intervals", "Constraint", "QueryError", "ScenarioError", "SearchError",
    "SearchSpace", "SearchSpaceError", "baseline_trial", "calibrate", "calibration_markdown", "calibration_png",
    "candidate_grid", "dominates", "evaluate_heldout", "filter_trials", "format_trials", "frontier", "latency",
    "metric_names", "objective_directions", "open_study", "paired_latency", "parse_constraint", "pick",
    "prepare_search",
    "ranking_markdown", "real_relative_error", "run_fptas", "run_search", "run_trial", "run_worker",
    "search_constraints", "spearman", "storage_url", "study_summary", "surrogate_error", "trial_record",
    "w_coefficient", "write_outputs", "confirmation", "frontier_ties", "near_frontier", "record_values",
    "study_records", "confirm_candidates", "confirm_study", "needs_confirmation", "frontier_document",
    "confirm_and_report",
]
