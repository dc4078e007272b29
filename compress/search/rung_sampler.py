"""What the sampler learns from in a multi-fidelity study: each configuration once, at the highest rung it reached.

In a multi-fidelity study a promoted configuration appears as one trial per rung (the promotions repeat the
parameters of the trial below), and most trials stop at rung 0, whose metric underestimates the top rung's by an
amount that differs by architecture. Given every trial as it is, TPE (or any Optuna sampler) would count a
promoted configuration two or three times, mostly at its worst figures; and, since Optuna's samplers read each
trial's constraints (`Trial.set_constraint`), it would learn that a small student is infeasible from a rung-0
accuracy that the top rung does not confirm. In this project's SST-2 study the multi-fidelity sampler drifted to
4–6-layer students while the full-fidelity one, on the same space and seed, found the 1–3-layer students at
3e-4 that make its frontier. With this view (bench-scale, 2026-12-04, one run each, the same seeds): the relaxed
study's hypervolume at a third of the full-fidelity compute went from 0.0105 to 0.0128 (ratio 0.51 -> 0.63), its
final one from 0.0136 to 0.0148; the hard study's from 0.0098 to 0.0090 (0.48 -> 0.44), as a hard rule still
shows the sampler rung-0 accuracy below the bound for the small students.

`RungSampler` wraps the configured sampler and shows it a view of the study in which

* of each promotion chain (a trial and the promotions that repeat it) only the highest-rung trial that
  finished is there, with that rung's figures; its lower rungs are left out;
* bookkeeping trials that never ran (duplicates of a promotion, surplus trials) are left out;
* with `search.fidelity.lower_rung_metric: relaxed`, a completed trial below the top rung has its constraints on
  the task metric shown as satisfied, as the promotion rule judges them (fidelity.py); constraints on latency,
  size or parameters, and any trial stopped early, are shown as they are.

Everything else (the study's directions, storage, trial numbers, the seeded random start) is the wrapped
sampler's own, so a study resumes and runs on several workers as before. It wraps the samplers that learn from
the history (tpe, gp); random and grid read no figures, and NSGA-II keeps its own generations in the trials, so
those three see the study as it is.
"""

from __future__ import annotations

import copy
from collections.abc import Container, Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.study._constrained_optimization import _CONSTRAINTS_KEY
from optuna.trial import FrozenTrial, TrialState

__all__ = ["RungSampler", "sampler_view"]

_NEVER_RAN = {"duplicate", "surplus"}


def sampler_view(trials: Sequence[FrozenTrial], top_rung: int,
                 relaxed_constraints: Container[str] = ()) -> list[FrozenTrial]:
    """The trials the sampler is shown (see the module docstring), in their order; `relaxed_constraints`: the
    names (as set with `set_constraint`) of the constraints not judged below the top rung."""
    superseded: set[int] = set()
    for t in trials:  # a finished promotion hides its parent (and, through the parent's own parent, the chain)
        parent = t.user_attrs.get("promoted_from")
        if (parent is not None and t.state == TrialState.COMPLETE
                and t.user_attrs.get("state") not in _NEVER_RAN):
            superseded.add(int(parent))
    out = []
    for t in trials:
        if t.number in superseded or t.user_attrs.get("state") in _NEVER_RAN:
            continue
        if (relaxed_constraints and t.state == TrialState.COMPLETE and t.user_attrs.get("state") == "complete"
                and int(t.user_attrs.get("rung", top_rung)) < top_rung):
            t = _with_constraints_met(t, relaxed_constraints)
        out.append(t)
    return out


def _with_constraints_met(t: FrozenTrial, names: Container[str]) -> FrozenTrial:
    """A shallow copy of `t` whose constraints named in `names` read as satisfied (0.0); the stored trial is not
    changed."""
    prefix = f"{_CONSTRAINTS_KEY}:"
    attrs = {k: (min(0.0, v) if k.startswith(prefix) and k[len(prefix):] in names else v)
             for k, v in t.system_attrs.items()}
    c = copy.copy(t)
    c.system_attrs = attrs
    return c


class _StudyView:
    """The study as the sampler sees it: `_get_trials`/`get_trials` go through `sampler_view`; the rest is the
    study's own."""

    def __init__(self, study: optuna.Study, top_rung: int, relaxed: frozenset[str]) -> None:
        self._study, self._top, self._relaxed = study, top_rung, relaxed

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

    def _get_trials(self, deepcopy: bool = True, states: Sequence[TrialState] | None = None,
                    use_cache: bool = False) -> list[FrozenTrial]:
        # The chains are read from every trial (a promotion that finished hides its parent, whatever `states`).
        every = self._study._get_trials(deepcopy=False, states=None, use_cache=use_cache)
        view = sampler_view(every, self._top, self._relaxed)
        if states is not None:
            view = [t for t in view if t.state in states]
        return [copy.deepcopy(t) for t in view] if deepcopy else view

    def get_trials(self, deepcopy: bool = True, states: Sequence[TrialState] | None = None) -> list[FrozenTrial]:
        return self._get_trials(deepcopy=deepcopy, states=states, use_cache=False)

    @property
    def trials(self) -> list[FrozenTrial]:
        return self.get_trials()


class RungSampler(BaseSampler):
    """`base`, shown each configuration of a multi-fidelity study once, at its highest finished rung."""

    def __init__(self, base: BaseSampler, top_rung: int, relaxed_constraints: Sequence[str] = ()) -> None:
        self.base = base
        self.top_rung = top_rung
        self.relaxed_constraints = frozenset(relaxed_constraints)

    def _view(self, study: optuna.Study) -> Any:
        return _StudyView(study, self.top_rung, self.relaxed_constraints)

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self.base.infer_relative_search_space(self._view(study), trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return self.base.sample_relative(self._view(study), trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self.base.sample_independent(self._view(study), trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.base.before_trial(study, trial)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        self.base.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.base.reseed_rng()
