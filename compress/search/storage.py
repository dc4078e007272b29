"""Where the study lives: the storage (an SQLite file in the run folder by default, any SQLAlchemy URL, or an
Optuna journal file), the sampler, and creating or resuming the study itself."""

from __future__ import annotations

from pathlib import Path

import optuna
from optuna.storages.journal import JournalFileBackend

from ..config import JobConfig
from .fidelity import lower_rung_rule, metric_constraint_indices
from .objectives import SearchError, metric_names, objective_directions, search_constraints
from .rung_sampler import RungSampler
from .space import SearchSpace

__all__ = ["make_sampler", "open_storage", "open_study", "storage_url"]


def storage_url(cfg: JobConfig) -> str:
    """search.storage, or the SQLite file study.db in the run folder."""
    return cfg.search.storage or f"sqlite:///{(cfg.run_dir / 'study.db').resolve()}"


def open_storage(cfg: JobConfig) -> optuna.storages.BaseStorage:
    """The Optuna storage at storage_url(cfg); SearchError when it cannot be opened."""
    url = storage_url(cfg)
    if url.startswith("journal:"):
        path = Path(url[len("journal:"):])
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        # NOTE: several worker processes write one SQLite file; wait for the lock instead of failing.
        return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})
    try:
        return optuna.storages.RDBStorage(url)
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy raises many kinds; all mean "cannot use it"
        raise SearchError(f"cannot open the study storage {url!r}: {exc}. Check search.storage "
                          "(an SQLAlchemy URL such as postgresql://user@host/db, or journal:PATH)") from None


def make_sampler(cfg: JobConfig, space: SearchSpace, known_fidelity: dict | None = None) -> optuna.samplers.BaseSampler:
    """search.sampler, seeded with search.seed (grid: every combination of the space). With search.fidelity the
    model-based samplers (tpe, gp) learn from each configuration once, at its highest rung (rung_sampler.py)."""
    s, seed = cfg.search.sampler, cfg.search.seed
    if s in ("tpe", "gp"):
        startup = min(10, max(2, cfg.search.n_trials // 3))
        base: optuna.samplers.BaseSampler = (
            optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=startup) if s == "tpe"
            else optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup))
        fc = cfg.search.fidelity
        if not fc.enabled:
            return base
        relaxed: list[str] = []
        if lower_rung_rule(fc.lower_rung_metric, known_fidelity) == "relaxed":
            cons = search_constraints(cfg, metric_names(cfg))
            relaxed = [str(cons[i]) for i in sorted(metric_constraint_indices(cons, metric_names(cfg)))]
        return RungSampler(base, top_rung=len(fc.rows) - 1, relaxed_constraints=relaxed)
    if s == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, min(50, cfg.search.n_trials // 3)))
    if s == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.GridSampler(space.grid(), seed=seed)


def open_study(cfg: JobConfig, space: SearchSpace | None = None, create: bool = True) -> optuna.Study:
    """Create or load the job's study (same name and storage resumes it)."""
    directions = [d for _, d in objective_directions(cfg)]
    name = cfg.search.study_name or cfg.name
    storage = open_storage(cfg)
    sampler = make_sampler(cfg, space) if space is not None else None
    if not create:
        try:
            return _follow_rule(optuna.load_study(study_name=name, storage=storage, sampler=sampler), cfg, space)
        except KeyError:
            raise SearchError(f"no study {name!r} in {storage_url(cfg)}; run `compress search CONFIG` first") from None
    study = optuna.create_study(study_name=name, storage=storage, sampler=sampler, directions=directions,
                                load_if_exists=True)
    if list(study.directions) != [optuna.study.StudyDirection[d.upper()] for d in directions]:
        raise SearchError(f"study {name!r} in {storage_url(cfg)} was created with other objectives; "
                          "use a new study_name or the original objectives")
    _follow_rule(study, cfg, space)
    study.set_user_attr("objectives", [n for n, _ in objective_directions(cfg)])
    return study



def _follow_rule(study: optuna.Study, cfg: JobConfig, space: SearchSpace | None) -> optuna.Study:
    """A resumed multi-fidelity study: its sampler judges the lower rungs by the rule the study was run with
    (search.fidelity.lower_rung_metric unset keeps it)."""
    known = study.user_attrs.get("fidelity")
    if known and isinstance(study.sampler, RungSampler):
        study.sampler = make_sampler(cfg, space, known)
    return study
