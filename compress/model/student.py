"""Build a student from its teacher's own weights: pick layers, prune heads and FFN neurons, set dropouts.

`StudentSpec` says what to build; `build_student(teacher, spec, importance)` builds it;
`param_count(config)` counts parameters from the config alone, equal to the built model's count.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

__all__ = [
    "Importance", "StudentSpec", "build_student", "configured_spec_fields", "measure_importance", "param_count",
    "teacher_layers",
]


@dataclass(frozen=True)
class StudentSpec:
    """What a student is: which teacher layers it keeps, how much of each it keeps, how it trains."""

    num_layers: int  # transformer layers of the student
    layer_selection: Literal["even", "first"] | tuple[int, ...] = "even"  # or explicit teacher layer indices
    heads: int | tuple[int, ...] | None = None  # heads kept per layer (one number for all, or one per layer)
    head_pruning: Literal["importance", "random"] = "importance"  # which heads go: least important, or random
    pruning_seed: int = 0  # seeds random head pruning
    intermediate_size: int | None = None  # FFN width; None keeps the teacher's. Neurons kept by importance
    # Model width; None keeps the teacher's (and `heads` prunes teacher heads). When set, `heads` splits
    # hidden_size evenly as in BERT, and weights are the teacher's sliced to the kept hidden units.
    hidden_size: int | None = None
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    classifier_dropout: float = 0.1  # dropout before the task head
    init: Literal["teacher", "random"] = "teacher"  # start from the teacher's weights, or from scratch
    # After training, keep only the embedding rows of the training data's tokens (config vocab_prune:, see
    # compress/model/vocab.py); off keeps the teacher's whole vocabulary.
    vocab_pruning: bool = False

    def __post_init__(self) -> None:
        if self.num_layers < 1:
            raise ValueError(f"StudentSpec.num_layers={self.num_layers}: a student needs at least 1 layer")
        if isinstance(self.layer_selection, (list, tuple)):
            object.__setattr__(self, "layer_selection", tuple(int(i) for i in self.layer_selection))
            if len(self.layer_selection) != self.num_layers:
                raise ValueError(
                    f"StudentSpec.layer_selection lists {len(self.layer_selection)} teacher layers "
                    f"{list(self.layer_selection)} but num_layers={self.num_layers}; list one per student layer"
                )
        elif self.layer_selection not in ("even", "first"):
            raise ValueError(f"StudentSpec.layer_selection={self.layer_selection!r}: use 'even', 'first' or a list")
        if isinstance(self.heads, (list, tuple)):
            object.__setattr__(self, "heads", tuple(int(h) for h in self.heads))
            if len(self.heads) != self.num_layers:
                raise ValueError(
                    f"StudentSpec.heads lists {len(self.heads)} values for {self.num_layers} layers; "
                    "give one number for all layers or one per layer"
                )
        for h in self.heads_per_layer(10**9):
            if h is not None and h < 1:
                raise ValueError(f"StudentSpec.heads={self.heads!r}: every layer keeps at least 1 head")
        if self.intermediate_size is not None and self.intermediate_size < 1:
            raise ValueError(f"StudentSpec.intermediate_size={self.intermediate_size}: must be at least 1")
        if self.hidden_size is not None:
            if self.hidden_size < 1:
                raise ValueError(f"StudentSpec.hidden_size={self.hidden_size}: must be at least 1")
            if isinstance(self.heads, tuple):
                raise ValueError("StudentSpec.hidden_size with a per-layer heads list: a narrower student has one "
                                 "head count for all layers; give heads as one number")
            if self.heads is not None and self.hidden_size % self.heads:
                raise ValueError(f"StudentSpec.hidden_size={self.hidden_size} is not divisible by heads={self.heads}; "
                                 "every head gets hidden_size / heads dimensions")
        for name in ("hidden_dropout", "attention_dropout", "classifier_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"StudentSpec.{name}={getattr(self, name)}: a dropout is in [0, 1)")
        if self.head_pruning not in ("importance", "random"):
            raise ValueError(f"StudentSpec.head_pruning={self.head_pruning!r}: use 'importance' or 'random'")
        if self.init not in ("teacher", "random"):
            raise ValueError(f"StudentSpec.init={self.init!r}: use 'teacher' or 'random'")
        if not isinstance(self.vocab_pruning, bool):
            raise ValueError(f"StudentSpec.vocab_pruning={self.vocab_pruning!r}: use true or false")

    def heads_per_layer(self, teacher_heads: int) -> list[int]:
        if self.heads is None:
            return [teacher_heads] * self.num_layers
        if isinstance(self.heads, int):
            return [self.heads] * self.num_layers
        return list(self.heads)

    def tag(self) -> str:
        """A short readable name, e.g. L3-H12-F1536-teacher (and -vocab with a pruned vocabulary)."""
        heads = self.heads if not isinstance(self.heads, tuple) else "x".join(map(str, self.heads))
        width = f"-D{self.hidden_size}" if self.hidden_size else ""
        vocab = "-vocab" if self.vocab_pruning else ""
        return f"L{self.num_layers}-H{heads or 'all'}-F{self.intermediate_size or 'all'}{width}-{self.init}{vocab}"

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return d

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "StudentSpec":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"student spec key {unknown[0]!r} is not known; allowed keys: {', '.join(sorted(known))}")
        return cls(**data)

    @classmethod
    def load(cls, path: str | Path) -> "StudentSpec":
        try:
            data = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ValueError(f"student spec {str(path)!r} does not exist") from None
        except json.JSONDecodeError as exc:
            raise ValueError(f"student spec {str(path)!r} is not valid JSON: {exc}") from None
        return cls.from_json(data)


def configured_spec_fields(configured: dict[str, Any], teacher_num_layers: int) -> dict[str, Any]:
    """The config's student: section, with num_layers defaulting to half the teacher's layers."""
    fields = dict(configured)
    fields.setdefault("num_layers", max(1, teacher_num_layers // 2))
    return fields


def teacher_layers(spec: StudentSpec, teacher_num_layers: int) -> list[int]:
    """Teacher layer copied into each student layer."""
    n, k = teacher_num_layers, spec.num_layers
    if k > n:
        raise ValueError(f"StudentSpec.num_layers={k} exceeds the teacher's {n} layers")
    if isinstance(spec.layer_selection, tuple):
        bad = [i for i in spec.layer_selection if not 0 <= i < n]
        if bad or len(set(spec.layer_selection)) != k:
            raise ValueError(
                f"StudentSpec.layer_selection={list(spec.layer_selection)}: needs {k} distinct teacher layers "
                f"in 0..{n - 1}"
            )
        return list(spec.layer_selection)
    if spec.layer_selection == "first":
        return list(range(k))
    # Spread evenly, always keeping the last layer: it feeds the head the teacher was trained with.
    # For k = n/2 this is every other layer (1, 3, 5, ...), as DistilBERT-style students take.
    return [round((i + 1) * n / k) - 1 for i in range(k)]


# ----------------------------------------------------------------------------------------------
# Parameter count from the config


def param_count(config: Any, head: Literal["none", "classification", "qa"] = "none", num_labels: int | None = None) -> int:
    """Parameters of a BERT or DistilBERT model, from its config alone.

    Counts embeddings (word, position, token type, LayerNorm), per layer the attention projections of
    the heads kept (config.pruned_heads), the FFN and two LayerNorms, the pooler (BERT; not with a QA head,
    which transformers builds without it), and the head: classifier (num_labels) or QA (2 outputs).
    """
    mt = getattr(config, "model_type", "bert")
    if mt == "distilbert":
        h, n_layers, n_heads, ffn = config.dim, config.n_layers, config.n_heads, config.hidden_dim
        types, pooler = 0, False
        extra_head = h * h + h if head == "classification" else 0  # DistilBERT's pre_classifier
    else:
        h, n_layers, n_heads, ffn = (config.hidden_size, config.num_hidden_layers,
                                     config.num_attention_heads, config.intermediate_size)
        types, pooler = config.type_vocab_size, head != "qa"
        extra_head = 0
    head_dim = h // n_heads
    total = (config.vocab_size + config.max_position_embeddings + types) * h + 2 * h
    pruned = {int(k): set(v) for k, v in (getattr(config, "pruned_heads", None) or {}).items()}
    for layer in range(n_layers):
        a = (n_heads - len(pruned.get(layer, ()))) * head_dim  # width of the kept heads
        total += 3 * (h * a + a) + (a * h + h) + 2 * h  # q, k, v, attention output, LayerNorm
        total += (h * ffn + ffn) + (ffn * h + h) + 2 * h  # FFN in, FFN out, LayerNorm
    if pooler:
        total += h * h + h
    if head == "classification":
        labels = num_labels if num_labels is not None else config.num_labels
        total += extra_head + h * labels + labels
    elif head == "qa":
        outputs = getattr(config, "num_labels", 2)  # transformers sizes qa_outputs by num_labels (2: start, end)
        total += h * outputs + outputs
    return total


def model_param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------------------------
# Importance of heads and FFN neurons, measured on the teacher


@dataclass
class Importance:
    """Per teacher layer: head importance (L, H) and FFN neuron importance (L, I); higher matters more."""

    heads: np.ndarray
    neurons: np.ndarray


def _bert(model: nn.Module) -> nn.Module:
    return getattr(model, model.base_model_prefix)


def measure_importance(teacher: nn.Module, batches: list[dict[str, torch.Tensor]]) -> Importance:
    """First-order (Taylor) importance on the teacher's own task loss (Michel et al., 2019).

    Head h of layer l scores |sum over batches of dLoss/dmask_lh| with a head mask of ones; FFN neuron j
    scores sum |activation_j · dLoss/dactivation_j|. Each layer's head scores are L2-normalised, as in the paper.
    """
    cfg = teacher.config
    n_layers, n_heads, ffn = cfg.num_hidden_layers, cfg.num_attention_heads, cfg.intermediate_size
    was_training = teacher.training
    teacher.eval()
    prev_impl = getattr(cfg, "_attn_implementation", None)
    cfg._attn_implementation = "eager"  # head_mask gradients need the eager attention path
    head_mask = torch.ones(n_layers, n_heads, requires_grad=True)
    neuron_scores = torch.zeros(n_layers, ffn)
    acts: dict[int, torch.Tensor] = {}

    def keep(layer_idx: int):
        def hook(_module, _inp, out):
            out.retain_grad()
            acts[layer_idx] = out
        return hook

    handles = [layer.intermediate.register_forward_hook(keep(i)) for i, layer in enumerate(_bert(teacher).encoder.layer)]
    try:
        for batch in batches:
            out = teacher(**batch, head_mask=head_mask)
            out.loss.backward()
            for i, a in acts.items():
                neuron_scores[i] += (a * a.grad).abs().sum(dim=(0, 1)).detach()
            acts.clear()
    finally:
        for h in handles:
            h.remove()
        cfg._attn_implementation = prev_impl
        teacher.zero_grad(set_to_none=True)
        teacher.train(was_training)
    heads = head_mask.grad.abs().detach()
    heads = heads / heads.norm(dim=1, keepdim=True).clamp_min(1e-20)
    return Importance(heads.numpy(), neuron_scores.numpy())


# ----------------------------------------------------------------------------------------------
# Building the student


def build_student(teacher: nn.Module, spec: StudentSpec, importance: Importance | None = None) -> nn.Module:
    """A new model of the teacher's class shaped by `spec`, initialised from the teacher's weights.

    Importance is needed when the spec prunes heads by importance or narrows the FFN.
    """
    tcfg = teacher.config
    if getattr(tcfg, "pruned_heads", None):
        raise ValueError("the teacher already has pruned heads; compress an unpruned teacher")
    layers = teacher_layers(spec, tcfg.num_hidden_layers)
    n_heads = tcfg.num_attention_heads
    keep_heads = spec.heads_per_layer(n_heads)
    if any(h > n_heads for h in keep_heads):
        raise ValueError(f"StudentSpec.heads={spec.heads!r} exceeds the teacher's {n_heads} heads per layer")
    ffn = spec.intermediate_size or tcfg.intermediate_size
    if ffn > tcfg.intermediate_size:
        raise ValueError(
            f"StudentSpec.intermediate_size={ffn} exceeds the teacher's {tcfg.intermediate_size}; "
            "a student can only keep a subset of the teacher's FFN neurons"
        )
    if spec.hidden_size is not None and (spec.hidden_size != tcfg.hidden_size
                                         or (spec.heads or n_heads) != n_heads):
        return _build_narrow(teacher, spec, layers, ffn, importance)
    needs_importance = spec.init == "teacher" and (
        ffn < tcfg.intermediate_size or (spec.head_pruning == "importance" and min(keep_heads) < n_heads)
    )
    if needs_importance and importance is None:
        raise ValueError("this spec prunes by importance; pass the teacher's Importance (measure_importance)")

    cfg = copy.deepcopy(tcfg)
    cfg.num_hidden_layers = spec.num_layers
    cfg.intermediate_size = ffn
    cfg.hidden_dropout_prob = spec.hidden_dropout
    cfg.attention_probs_dropout_prob = spec.attention_dropout
    cfg.classifier_dropout = spec.classifier_dropout
    cfg.pruned_heads = {}
    cfg._name_or_path = ""

    # Which heads each student layer drops.
    rng = np.random.default_rng(spec.pruning_seed)
    prune: dict[int, list[int]] = {}
    for s, (t, k) in enumerate(zip(layers, keep_heads)):
        if k == n_heads:
            continue
        if spec.head_pruning == "random" or spec.init == "random":
            drop = rng.permutation(n_heads)[: n_heads - k]
        else:
            drop = np.argsort(importance.heads[t], kind="stable")[: n_heads - k]  # least important first
        prune[s] = sorted(int(h) for h in drop)

    torch.manual_seed(spec.pruning_seed)
    student = type(teacher)(cfg)
    if spec.init == "teacher":
        _copy_weights(teacher, student, layers, ffn, importance)
    if prune:
        student.prune_heads(prune)  # records config.pruned_heads, so save/load rebuilds the same shapes
    student.config.student_spec = spec.to_json()
    student.config.teacher_layers = layers
    return student


def hidden_order(teacher: nn.Module) -> np.ndarray:
    """Teacher hidden units, most important first: by the L2 norm of their word-embedding column (a unit the
    embeddings barely write to carries little through the residual stream)."""
    emb = _bert(teacher).embeddings.word_embeddings.weight.detach()
    return np.argsort(-emb.norm(dim=0).numpy(), kind="stable")


def _build_narrow(teacher: nn.Module, spec: StudentSpec, layers: list[int], ffn: int,
                  importance: Importance | None) -> nn.Module:
    """A student narrower than the teacher (hidden_size < teacher's): every weight is the teacher's restricted
    to the kept hidden units (hidden_order), the kept FFN neurons (by importance) and the chosen layers.

    Heads: `heads` (default the teacher's count) split hidden_size evenly; when the head width differs from
    the teacher's, the sliced query/key/value rows regroup into the new heads: a starting point that
    distillation then adapts, not an exact copy of teacher heads.
    """
    tcfg = teacher.config
    h = int(spec.hidden_size)
    if h > tcfg.hidden_size:
        raise ValueError(f"StudentSpec.hidden_size={h} exceeds the teacher's {tcfg.hidden_size}")
    n_heads = spec.heads if isinstance(spec.heads, int) else tcfg.num_attention_heads
    if h % n_heads:
        raise ValueError(f"StudentSpec.hidden_size={h} is not divisible by {n_heads} heads")
    if spec.init == "teacher" and ffn < tcfg.intermediate_size and importance is None:
        raise ValueError("this spec narrows the FFN by importance; pass the teacher's Importance")
    cfg = copy.deepcopy(tcfg)
    cfg.hidden_size, cfg.num_attention_heads, cfg.intermediate_size = h, n_heads, ffn
    cfg.num_hidden_layers = spec.num_layers
    cfg.hidden_dropout_prob = spec.hidden_dropout
    cfg.attention_probs_dropout_prob = spec.attention_dropout
    cfg.classifier_dropout = spec.classifier_dropout
    cfg.pruned_heads = {}
    cfg._name_or_path = ""
    torch.manual_seed(spec.pruning_seed)
    student = type(teacher)(cfg)
    if spec.init == "teacher":
        keep_h = torch.from_numpy(np.sort(hidden_order(teacher)[:h]).copy())
        t_state = teacher.state_dict()
        prefix = f"{teacher.base_model_prefix}.encoder.layer."
        with torch.no_grad():
            for name, param in student.state_dict().items():
                t_name = name
                layer = None
                if name.startswith(prefix):
                    s_idx, rest = name[len(prefix):].split(".", 1)
                    layer = layers[int(s_idx)]
                    t_name = f"{prefix}{layer}.{rest}"
                src = t_state[t_name]
                ffn_dims: tuple[int, ...] = ()
                if layer is not None and ".intermediate.dense." in name:
                    ffn_dims = (0,)
                elif layer is not None and ".output.dense.weight" in name and ".attention." not in name:
                    ffn_dims = (1,)
                for dim in range(src.dim()):
                    if src.shape[dim] == param.shape[dim]:
                        continue
                    if dim in ffn_dims:
                        keep = torch.from_numpy(np.sort(np.argsort(-importance.neurons[layer], kind="stable")[:ffn]).copy())
                    elif src.shape[dim] == tcfg.hidden_size:
                        keep = keep_h
                    else:
                        keep = torch.arange(param.shape[dim])
                    src = src.index_select(dim, keep)
                param.copy_(src)
    student.config.student_spec = spec.to_json()
    student.config.teacher_layers = layers
    return student


def _copy_weights(teacher: nn.Module, student: nn.Module, layers: list[int], ffn: int, importance: Importance | None) -> None:
    t_base, s_base = _bert(teacher), _bert(student)
    with torch.no_grad():
        s_base.embeddings.load_state_dict(t_base.embeddings.state_dict())
        if getattr(t_base, "pooler", None) is not None and getattr(s_base, "pooler", None) is not None:
            s_base.pooler.load_state_dict(t_base.pooler.state_dict())
        for s, t in enumerate(layers):
            t_layer, s_layer = t_base.encoder.layer[t], s_base.encoder.layer[s]
            s_layer.attention.load_state_dict(t_layer.attention.state_dict())
            t_in, t_out = t_layer.intermediate.dense, t_layer.output.dense
            if ffn == t_in.out_features:
                keep = torch.arange(ffn)
            else:
                keep = torch.from_numpy(np.sort(np.argsort(-importance.neurons[t], kind="stable")[:ffn]).copy())
            s_layer.intermediate.dense.weight.copy_(t_in.weight[keep])
            s_layer.intermediate.dense.bias.copy_(t_in.bias[keep])
            s_layer.output.dense.weight.copy_(t_out.weight[:, keep])
            s_layer.output.dense.bias.copy_(t_out.bias)
            s_layer.output.LayerNorm.load_state_dict(t_layer.output.LayerNorm.state_dict())
        # The task head: classifier or qa_outputs, whatever the class calls it.
        t_modules = dict(teacher.named_children())
        for name, module in student.named_children():
            if name != teacher.base_model_prefix and name in t_modules:
                module.load_state_dict(t_modules[name].state_dict())
