"""Multi-fidelity search: trials start on a few training rows and only the promising ones go on to more.

Rungs are training-row budgets (`search.fidelity.rows`, e.g. [1500, 6000, 12000]); rung r trains on the first
rows[r] rows of one seeded permutation of the training split, so a rung's rows contain every smaller rung's.
The sampler's trials run at rung 0. A trial is *promoted* by enqueuing a new trial with the same parameters at
the next rung (user attributes `rung` and `promoted_from`): everything lives in Optuna's storage, so resume,
several workers and several machines keep working, and a killed worker's rung is re-run by the heartbeat
reaper like any other trial.

The promotion rule (asynchronous successive halving, ASHA, with a multi-objective, constrained ranking):
whenever a worker is free, for each rung from the highest below the top down to rung 0, the completed trials
of that rung are ranked (`rank_trials`) and the best ⌊n/η⌋ of them (η = `reduction`) are promotable; the
first promotable one not yet promoted is enqueued. The ranking is Deb's constrained non-dominated sorting, as
NSGA-II uses it: feasible trials before infeasible ones; feasible trials by non-dominated front (on the
study's objectives and directions), within a front by crowding distance (spread-out points first); infeasible
trials by their total constraint violation. Trials stopped early or failed are never promoted.

Constraints on the task metric at a lower rung (`search.fidelity.lower_rung_metric`): `hard` judges them there as
at the top; `relaxed` is the default for a new study (a study resumed keeps its own rule). But a lower rung's metric underestimates the top rung's, and by an amount that
differs by architecture: on SST-2 a one-layer student went from 0.742 on 1,500 rows to 0.811 on 12,000, four-layer
ones gained about 0.03, so a hard `accuracy >= 0.80` at rung 0 never promotes the small, fast students that end
up feasible. `relaxed` leaves the metric constraints out of the ranking below the top rung (constraints on
latency, size or parameters, which no budget changes, stay hard); a hopeless trial is still stopped by early
stopping (`search.early_stopping`, which judges the metric bounds during training at every rung) and so never
promoted, and the top rung, where the frontier is decided, judges every constraint.

Warm start (`search.fidelity.warm_start`, on by default): a promotion is *continued*, not retrained. It loads
the model its parent saved (`trial_dir/model`) and trains it on the rows its rung adds, rows[r+1] − rows[r]
(nested rungs: the parent has seen the others), for the trial's own epochs and schedule; so every row of the rung
has had the trial's epochs, as in a cold start, at the cost of the new rows only. `rows_seen` counts what this
trial trained (the compute it spent), `rows_seen_total` the chain's. A promotion starts cold instead, and says why
(`warm_start.why`), when the parent's model is not there, when its vocabulary was pruned (its tokenizer no longer
reads the training rows as the teacher does) or when the job fine-tunes with Agora (each θ is its own run). A
learned hidden-state projection (distill.alpha_hidden with a narrower student) is not saved with the model and
starts afresh.

Only top-rung trials are comparable with each other (same training rows), so the frontier, ties and the
confirmation pass use the top rung only; the lower rungs are shown as what they are, and the baseline runs at
the top rung directly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from .pareto import dominates

__all__ = ["DEFAULT_LOWER_RUNG_METRIC", "crowding_distance", "duplicate_of", "lower_rung_rule", "metric_constraint_indices", "nondominated_fronts", "promotable",
           "promote_next", "rank_trials", "rung_context", "rung_indices", "rung_rows", "warm_start_context", "warm_start_source"]


DEFAULT_LOWER_RUNG_METRIC = "relaxed"


def lower_rung_rule(configured: str | None, known: dict[str, Any] | None) -> str:
    """The study's search.fidelity.lower_rung_metric: as configured; unset, the rule a resumed study was run with
    (hard for studies from before the setting), else the default (relaxed)."""
    if configured is not None:
        return configured
    if known:
        return str(known.get("lower_rung_metric", "hard"))
    return DEFAULT_LOWER_RUNG_METRIC


def rung_rows(n_train: int, rows: Sequence[int]) -> list[int]:
    """The training rows of each rung on a split of n_train rows: the configured budgets, the top one capped at
    the split (a budget larger than the split is refused: it would repeat a rung)."""
    out = list(rows)
    for i, r in enumerate(out):
        if r > n_train:
            if i == len(out) - 1 and (i == 0 or out[i - 1] < n_train):
                out[i] = n_train
            else:
                raise ValueError(f"search.fidelity.rows[{i}] = {r}: the training split has only {n_train:,} rows; "
                                 "give rungs below that (the last rung may be the whole split)")
    return out


def rung_indices(n_train: int, rows: int, seed: int, start: int = 0) -> np.ndarray:
    """The training rows of a rung: the first `rows` of a seeded permutation (nested across rungs), sorted; with
    `start`, only those after the first `start` (what a rung adds to a smaller one)."""
    order = np.random.default_rng(seed).permutation(n_train)
    return np.sort(order[start:rows])


def nondominated_fronts(values: Sequence[Sequence[float]], directions: Sequence[str]) -> list[list[int]]:
    """Indices of `values` in non-dominated fronts (front 0 is the Pareto set), by exact figures."""
    n = len(values)
    dominated_by = [0] * n
    dominates_list: list[list[int]] = [[] for _ in range(n)]
    for i in range(n):
        for j in range(n):
            if i != j and dominates(values[i], values[j], list(directions)):
                dominates_list[i].append(j)
                dominated_by[j] += 1
    fronts, current = [], [i for i in range(n) if dominated_by[i] == 0]
    while current:
        fronts.append(sorted(current))
        nxt = []
        for i in current:
            for j in dominates_list[i]:
                dominated_by[j] -= 1
                if dominated_by[j] == 0:
                    nxt.append(j)
        current = nxt
    return fronts


def crowding_distance(values: Sequence[Sequence[float]]) -> list[float]:
    """NSGA-II's crowding distance of each point within one front (boundary points: infinite)."""
    n = len(values)
    if n <= 2:
        return [math.inf] * n
    dist = [0.0] * n
    for k in range(len(values[0])):
        order = sorted(range(n), key=lambda i: values[i][k])
        lo, hi = values[order[0]][k], values[order[-1]][k]
        dist[order[0]] = dist[order[-1]] = math.inf
        if hi == lo:
            continue
        for a, i, b in zip(order, order[1:], order[2:]):
            dist[i] += (values[b][k] - values[a][k]) / (hi - lo)
    return dist


def _violation(t: FrozenTrial, skip: frozenset[int] = frozenset()) -> float:
    """Total violation of the trial's constraints, leaving out the entries numbered in `skip`."""
    return float(sum(max(0.0, v) for i, v in enumerate(t.user_attrs.get("constraints") or []) if i not in skip))


def metric_constraint_indices(constraints: Sequence[Any], metrics: set[str]) -> frozenset[int]:
    """Positions of the constraints on the task metric (those a training budget changes) among `constraints`."""
    return frozenset(i for i, c in enumerate(constraints) if c.name in metrics)


def rank_trials(trials: Sequence[FrozenTrial], directions: Sequence[str],
                skip: frozenset[int] = frozenset()) -> list[FrozenTrial]:
    """Best first, by Deb's rule (see the module docstring); the constraints numbered in `skip` are not judged."""
    feasible = [t for t in trials if _violation(t, skip) <= 0]
    infeasible = sorted((t for t in trials if _violation(t, skip) > 0), key=lambda t: (_violation(t, skip), t.number))
    ranked: list[FrozenTrial] = []
    values = [list(t.values) for t in feasible]
    for front in nondominated_fronts(values, directions):
        crowd = crowding_distance([values[i] for i in front])
        ranked += [feasible[i] for _, i in sorted(zip(crowd, front), key=lambda p: (-p[0], feasible[p[1]].number))]
    return ranked + infeasible


def _promoted_parents(trials: Sequence[FrozenTrial]) -> set[int]:
    """Trials that already have a promotion (waiting, running, done, or failed and re-run by the reaper)."""
    out = set()
    for t in trials:
        parent = t.user_attrs.get("promoted_from")
        if parent is not None:
            out.add(int(parent))
    return out


def promotable(trials: Sequence[FrozenTrial], directions: Sequence[str], n_rungs: int,
               reduction: int, skip: frozenset[int] = frozenset()) -> list[tuple[FrozenTrial, int]]:
    """(trial, next rung) of every trial the rule promotes and that has no promotion yet, highest rung first;
    `skip`: the constraints a lower rung does not judge (search.fidelity.lower_rung_metric: relaxed)."""
    done = _promoted_parents(trials)
    out = []
    for r in range(n_rungs - 2, -1, -1):
        at = [t for t in trials if t.state == TrialState.COMPLETE and int(t.user_attrs.get("rung", 0)) == r
              and t.user_attrs.get("state") == "complete"]
        k = len(at) // reduction
        for t in rank_trials(at, directions, skip)[:k]:
            if t.number not in done:
                out.append((t, r + 1))
    return out


def promote_next(study: optuna.Study, n_rungs: int, reduction: int,
                 skip: frozenset[int] = frozenset()) -> FrozenTrial | None:
    """Enqueue the first promotable trial at its next rung; the trial promoted, or None when there is none.

    Two workers may enqueue the same promotion at once; the later copy notices when it starts (`duplicate_of`)
    and is pruned without training.
    """
    trials = study.get_trials(deepcopy=False)
    directions = [d.name.lower() for d in study.directions]
    cands = promotable(trials, directions, n_rungs, reduction, skip)
    if not cands:
        return None
    parent, rung = cands[0]
    attrs: dict[str, Any] = {"rung": rung, "promoted_from": parent.number}
    if parent.user_attrs.get("baseline"):
        attrs["baseline"] = True
    study.enqueue_trial(parent.params, user_attrs=attrs, skip_if_exists=False)
    return parent


def duplicate_of(study: optuna.Study, trial_number: int, parent: int | None) -> int | None:
    """A lower-numbered live trial promoting the same parent (the one to keep), if this one is a duplicate."""
    if parent is None:
        return None
    for t in study.get_trials(deepcopy=False):
        if (t.number < trial_number and t.user_attrs.get("promoted_from") == parent
                and t.state in (TrialState.RUNNING, TrialState.COMPLETE, TrialState.WAITING)
                and t.user_attrs.get("state") != "duplicate"):
            return t.number
    return None


def rung_context(ctx: Any, cfg: Any, rung: int) -> tuple[Any, int, int]:
    """(the shared context with the rung's training rows and the teacher's outputs on them, rung, rows)."""
    fc = cfg.search.fidelity
    n = len(ctx.data.train)
    rows_by_rung = rung_rows(n, fc.rows)
    if not 0 <= rung < len(rows_by_rung):
        raise ValueError(f"rung {rung} is not one of search.fidelity.rows' {len(rows_by_rung)} rungs")
    rows = rows_by_rung[rung]
    if rows >= n:
        return ctx, rung, n
    idx = rung_indices(n, rows, fc.seed)
    return _with_train_rows(ctx, idx, f"rung{rung}-{rows}-seed{fc.seed}"), rung, rows


def _with_train_rows(ctx: Any, idx: np.ndarray, tag: str) -> Any:
    """The shared context with only the training rows `idx` (and the teacher's outputs for them)."""
    import dataclasses

    train = ctx.data.train.take(idx, tag)
    outputs = {k: v[idx] for k, v in ctx.outputs.items()}
    return dataclasses.replace(ctx, data=dataclasses.replace(ctx.data, train=train), outputs=outputs)


def warm_start_source(study: optuna.Study, attrs: dict[str, Any], spec: Any, cfg: Any) -> dict[str, Any]:
    """Whether a trial continues its parent's model (see the module docstring): {"used": True, "why": None,
    "from_trial", "parent_rung", "model", "parent_rows_seen_total"} or {"used": False, "why"} (why None: the
    trial is not a promotion)."""
    parent_no = attrs.get("promoted_from")
    if parent_no is None:
        return {"used": False, "why": None}
    if not cfg.search.fidelity.warm_start:
        return {"used": False, "why": "search.fidelity.warm_start is off"}
    if cfg.finetune == "agora":
        return {"used": False, "why": "Agora fine-tunes each θ from the teacher's weights; promotions start cold"}
    parent = next((t for t in study.get_trials(deepcopy=False) if t.number == int(parent_no)), None)
    if parent is None or parent.state != TrialState.COMPLETE:
        return {"used": False, "why": f"trial {parent_no} is not a completed trial of this study"}
    if parent.user_attrs.get("vocab_prune") or getattr(spec, "vocab_pruning", False):
        return {"used": False, "why": f"trial {parent_no}'s vocabulary was pruned; its tokenizer does not read the "
                                      "new rows as the teacher's does"}
    model = Path(parent.user_attrs.get("dir", "")) / "model"
    if not (model / "config.json").is_file():
        return {"used": False, "why": f"trial {parent_no}'s model is not at {model} (deleted or on another "
                                      "machine)"}
    ua = parent.user_attrs
    return {"used": True, "why": None, "from_trial": parent.number, "parent_rung": int(ua.get("rung", 0)), "model": str(model),
            "parent_rows_seen_total": ua.get("rows_seen_total", ua.get("rows_seen"))}


def warm_start_context(ctx: Any, cfg: Any, rung: int, parent_rung: int) -> tuple[Any, int]:
    """(the shared context with only the rows rung `rung` adds to `parent_rung`'s, and how many they are)."""
    fc = cfg.search.fidelity
    n = len(ctx.data.train)
    rows_by_rung = rung_rows(n, fc.rows)
    if not 0 <= parent_rung < rung < len(rows_by_rung):
        raise ValueError(f"a warm start goes from a lower rung to a higher one, not {parent_rung} -> {rung}")
    lo, hi = rows_by_rung[parent_rung], rows_by_rung[rung]
    idx = rung_indices(n, hi, fc.seed, start=lo)
    return _with_train_rows(ctx, idx, f"rung{rung}-{lo}-{hi}-seed{fc.seed}"), len(idx)
