"""The search space: typed parameters over the student's architecture and its distillation settings.

`SearchSpace.from_config(cfg, teacher_config)` validates the space before any trial runs; `suggest(trial)`
samples one point and `settings(values)` turns it into a StudentSpec and a DistillConfig.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ..config import ConfigError, DistillConfig, JobConfig, build
from ..deploy.variants import ALIASES, PRECISIONS
from ..model.student import StudentSpec, configured_spec_fields, teacher_layers

__all__ = ["ParamSpec", "SearchSpace", "SearchSpaceError", "SPEC_PARAMS", "DISTILL_PARAMS", "TRAIN_PARAMS",
           "EXPORT_PARAMS", "AUGMENT_PARAMS"]

SPEC_PARAMS = ("num_layers", "heads", "intermediate_size", "hidden_size", "hidden_dropout", "attention_dropout",
               "classifier_dropout", "pruning_seed", "head_pruning", "layer_selection", "init", "vocab_pruning")
DISTILL_PARAMS = ("alpha_ce", "temperature", "alpha_hidden", "alpha_attention", "alpha_relations",
                  "relation_heads", "relation_layer")  # alpha_task follows as 1 - alpha_ce
AUGMENT_PARAMS = ("augment_factor",)  # distill.augment.factor: teacher-labelled new rows per training row
TRAIN_PARAMS = ("learning_rate", "warmup_steps", "epochs", "max_steps", "batch_size", "weight_decay")
EXPORT_PARAMS = ("precision",)  # the ONNX variant a trial deploys: fp32, optimized, int8-dynamic (int8), int8-static
_INT_PARAMS = {"num_layers", "heads", "intermediate_size", "hidden_size", "pruning_seed", "warmup_steps", "max_steps",
               "batch_size", "relation_heads", "relation_layer"}


class SearchSpaceError(ConfigError):
    """A search space that cannot be built or that can produce an invalid student."""


@dataclass(frozen=True)
class ParamSpec:
    """One searched parameter: int, float, logfloat (sampled on a log scale) or categorical."""

    type: Literal["int", "float", "logfloat", "categorical"]
    low: float | None = None
    high: float | None = None
    step: float | None = None  # int/float: grid spacing; also restricts sampling to multiples of it
    choices: tuple[Any, ...] | None = None  # categorical values (numbers, text, true/false)

    def __post_init__(self) -> None:
        if self.type == "categorical":
            if not self.choices:
                raise ConfigError("config key 'choices': a categorical parameter needs a non-empty list of choices")
            for c in self.choices:
                if not isinstance(c, (str, int, float, bool)) and c is not None:
                    raise ConfigError(f"config key 'choices': got {c!r}; choices are numbers, text or true/false")
            return
        if self.low is None or self.high is None:
            raise ConfigError(f"config key 'low'/'high': a {self.type} parameter needs both low and high")
        if not (math.isfinite(self.low) and math.isfinite(self.high)) or self.low > self.high:
            raise ConfigError(f"config key 'low'/'high': got low={self.low}, high={self.high}; need low <= high")
        if self.type == "logfloat" and self.low <= 0:
            raise ConfigError(f"config key 'low': got {self.low}; a logfloat parameter needs low > 0")
        if self.step is not None and self.step <= 0:
            raise ConfigError(f"config key 'step': got {self.step}; must be > 0")
        if self.type == "logfloat" and self.step is not None:
            raise ConfigError("config key 'step': a logfloat parameter cannot have a step")

    def corners(self) -> list[Any]:
        """The extreme values: every value a validity check must try."""
        if self.type == "categorical":
            return list(self.choices)
        if self.type == "int":
            return [int(self.low), int(self.high)]
        return [self.low, self.high]

    def grid(self, name: str) -> list[Any]:
        if self.type == "categorical":
            return list(self.choices)
        if self.step is None:
            if self.type == "int" and self.high - self.low <= 32:
                return list(range(int(self.low), int(self.high) + 1))
            raise SearchSpaceError(
                f"search.space.{name}: the grid sampler needs a finite list of values; give step or use "
                "type: categorical with choices"
            )
        values = np.arange(self.low, self.high + self.step / 2, self.step)
        return [int(round(v)) for v in values] if self.type == "int" else [float(v) for v in values]


class SearchSpace:
    """Named parameters to sample, plus the fixed settings (config student:/distill:) they override."""

    def __init__(self, params: dict[str, ParamSpec], cfg: JobConfig, teacher_config: Any) -> None:
        self.params = params
        self.cfg = cfg
        self.teacher_config = teacher_config

    # ------------------------------------------------------------------ building and validation

    @classmethod
    def from_config(cls, cfg: JobConfig, teacher_config: Any) -> "SearchSpace":
        raw = cfg.search.space
        if not raw:
            raise SearchSpaceError("config key 'search.space' is empty; name at least one parameter to search, "
                                   "e.g. num_layers: {type: int, low: 1, high: 4}")
        known = SPEC_PARAMS + DISTILL_PARAMS + AUGMENT_PARAMS + TRAIN_PARAMS + EXPORT_PARAMS
        params = {}
        for name, value in raw.items():
            if name not in known:
                raise SearchSpaceError(f"config key 'search.space.{name}' is not a searchable parameter; "
                                       f"allowed: {', '.join(known)}")
            try:
                spec = build(ParamSpec, value, f"search.space.{name}")
            except ConfigError as exc:
                msg = str(exc)
                if "config key 'search.space" not in msg:
                    msg = msg.replace("config key '", f"config key 'search.space.{name}.", 1)
                raise SearchSpaceError(msg) from None
            if name in _INT_PARAMS and spec.type in ("float", "logfloat"):
                raise SearchSpaceError(f"config key 'search.space.{name}.type': got {spec.type!r}; {name} is a "
                                       "whole number: use int or categorical")
            if name == "precision":
                bad = [c for c in (spec.choices or ()) if c not in PRECISIONS and c not in ALIASES]
                if spec.type != "categorical" or bad:
                    raise SearchSpaceError(f"config key 'search.space.precision': got {bad or spec.type!r}; use "
                                           f"type: categorical with choices from {list(PRECISIONS)} (int8 is "
                                           "int8-dynamic)")
            if name == "vocab_pruning" and (spec.type != "categorical"
                                            or not all(isinstance(c, bool) for c in spec.choices)):
                raise SearchSpaceError(f"config key 'search.space.vocab_pruning': got "
                                       f"{list(spec.choices) if spec.choices else spec.type!r}; use type: categorical "
                                       "with choices [false, true]")
            params[name] = spec
        space = cls(params, cfg, teacher_config)
        space.validate()
        if cfg.search.sampler == "grid":
            space.grid()  # every parameter must have a finite list of values
        return space

    def validate(self) -> None:
        """Build the settings at every parameter's extremes; report the first invalid one by name."""
        base = self.fixed_values()
        checks: list[dict[str, Any]] = []
        for name, p in self.params.items():
            for v in p.corners():
                checks.append({**base, name: v})
        lows = {n: p.corners()[0] for n, p in self.params.items()}
        highs = {n: p.corners()[-1] for n, p in self.params.items()}
        checks += [{**base, **lows}, {**base, **highs}]
        t = self.teacher_config
        for values in checks:
            try:
                spec, distill = self.settings(values)
                teacher_layers(spec, t.num_hidden_layers)
                heads = spec.heads_per_layer(t.num_attention_heads)
                if max(heads) > t.num_attention_heads:
                    raise ValueError(f"heads={max(heads)} exceeds the teacher's {t.num_attention_heads} heads per layer")
                if spec.hidden_size and spec.hidden_size > t.hidden_size:
                    raise ValueError(f"hidden_size={spec.hidden_size} exceeds the teacher's {t.hidden_size}")
                if spec.hidden_size and spec.hidden_size % (heads[0] if spec.heads else t.num_attention_heads):
                    raise ValueError(f"hidden_size={spec.hidden_size} is not divisible by the heads")
                if not -t.num_hidden_layers <= distill.relation_layer < t.num_hidden_layers:
                    raise ValueError(f"relation_layer={distill.relation_layer}: the teacher has {t.num_hidden_layers} "
                                     "layers (0 to the last, or -1 for the last)")
                if spec.intermediate_size and spec.intermediate_size > t.intermediate_size:
                    raise ValueError(f"intermediate_size={spec.intermediate_size} exceeds the teacher's "
                                     f"{t.intermediate_size}")
            except (ValueError, TypeError) as exc:
                searched = {k: values[k] for k in self.params if k in values}
                raise SearchSpaceError(
                    f"the search space can produce an invalid student at {searched}: {exc}. "
                    "Narrow the ranges in search.space"
                ) from None

    def fixed_values(self) -> dict[str, Any]:
        """Every setting at its configured (unsearched) value."""
        values = configured_spec_fields(self.cfg.student, self.teacher_config.num_hidden_layers)
        for name in DISTILL_PARAMS:
            values[name] = getattr(self.cfg.distill, name)
        values["augment_factor"] = self.cfg.distill.augment.factor
        for name in TRAIN_PARAMS:
            values[name] = getattr(self.cfg.distill.train, name)
        values["precision"] = self.cfg.search.precision
        return values

    # ------------------------------------------------------------------ sampling

    def suggest(self, trial) -> dict[str, Any]:
        """Sample every searched parameter on an Optuna trial (enqueued values are taken as given)."""
        out = {}
        for name, p in self.params.items():
            if p.type == "categorical":
                out[name] = trial.suggest_categorical(name, list(p.choices))
            elif p.type == "int":
                out[name] = trial.suggest_int(name, int(p.low), int(p.high), step=int(p.step or 1))
            else:
                out[name] = trial.suggest_float(name, p.low, p.high, step=p.step, log=p.type == "logfloat")
        return out

    def grid(self) -> dict[str, list[Any]]:
        return {name: p.grid(name) for name, p in self.params.items()}

    def grid_size(self) -> int:
        return math.prod(len(v) for v in self.grid().values())

    def baseline_values(self) -> dict[str, Any]:
        """DistilBERT-style: half the teacher's layers, every other layer, all heads and neurons, default KD."""
        t = self.teacher_config
        defaults = DistillConfig()
        student_defaults = StudentSpec(num_layers=max(1, t.num_hidden_layers // 2))
        base = {
            "num_layers": max(1, t.num_hidden_layers // 2), "heads": t.num_attention_heads,
            "intermediate_size": t.intermediate_size, "layer_selection": "even", "init": "teacher",
            "head_pruning": "importance", "pruning_seed": 0, "vocab_pruning": False,
            "alpha_ce": defaults.alpha_ce, "temperature": defaults.temperature, "alpha_hidden": 0.0,
            "alpha_attention": 0.0, "alpha_relations": 0.0,
            **{k: getattr(student_defaults, k) for k in ("hidden_dropout", "attention_dropout", "classifier_dropout")},
        }
        fixed = self.fixed_values()
        values = {name: base.get(name, fixed.get(name)) for name in self.params}
        for name, p in self.params.items():
            # A categorical the baseline's value is not among (e.g. precision: [int8]) takes its first choice:
            # Optuna refuses any other value for a categorical parameter.
            if p.type == "categorical" and values[name] not in p.choices:
                values[name] = p.choices[0]
        return values

    # ------------------------------------------------------------------ values -> settings

    def settings(self, values: dict[str, Any]) -> tuple[StudentSpec, DistillConfig]:
        """The student spec and distillation config of one point (searched values over fixed ones)."""
        merged = {**self.fixed_values(), **values}
        spec_kwargs = {k: merged[k] for k in SPEC_PARAMS if k in merged}
        spec = StudentSpec.from_json(spec_kwargs)
        distill = self.cfg.distill
        train = dataclasses.replace(distill.train, **{k: merged[k] for k in TRAIN_PARAMS if k in self.params})
        kd = {k: merged[k] for k in DISTILL_PARAMS if k in self.params}
        if "alpha_ce" in self.params:
            kd["alpha_task"] = round(1.0 - float(merged["alpha_ce"]), 10)
        distill = dataclasses.replace(distill, train=train, **kd)
        if "augment_factor" in self.params:
            distill = dataclasses.replace(distill, augment=dataclasses.replace(
                distill.augment, factor=float(merged["augment_factor"])))
        return spec, distill

    def precision(self, values: dict[str, Any]) -> str:
        """The ONNX variant a point deploys (and is measured as)."""
        return str({**self.fixed_values(), **values}["precision"])

    def describe(self) -> list[str]:
        lines = []
        for name, p in self.params.items():
            rng = f"{list(p.choices)}" if p.type == "categorical" else f"[{p.low}, {p.high}]" + (
                f" step {p.step}" if p.step else "")
            lines.append(f"{name}: {p.type} {rng}")
        return lines

