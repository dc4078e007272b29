"""Distillation losses as pure functions of logits, hidden states, attention maps, labels and masks.

Total = alpha_ce · T² · KL(teacher ‖ student at T) + alpha_task · hard loss + alpha_hidden · hidden MSE
        + alpha_attention · attention MSE + alpha_relations · self-attention relation KL.

- hidden MSE (TinyBERT): each student layer's output against its mapped teacher layer's; when the widths differ
  the student's states go through a learned linear projection to the teacher's width first.
- attention MSE (TinyBERT): each student layer's attention probabilities against its mapped teacher layer's,
  over real query rows; when a layer keeps fewer heads than the teacher's (head pruning), the head-mean maps
  are compared, since a pruned student's heads have no one-to-one teacher head.
- relation KL (MiniLM-v2, Wang et al. 2021): the query-query, key-key and value-value relations of one teacher
  layer and the student's last layer, each split into `relation_heads` relation heads of its own width
  (so the student may be narrower than the teacher): KL(teacher relation ‖ student relation) per query row.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["attention_mse", "hard_loss", "hidden_mse", "qa_soft_kl", "regression_soft", "relation_kl",
           "relations_loss", "soft_kl", "QKV"]

_MASKED = -1e4  # logit given to padding positions: exp() underflows to 0 in float32 at any sane T
QKV = ("query", "key", "value")  # the self-attention projections whose relations MiniLM-v2 transfers


def soft_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float, mask: torch.Tensor | None = None) -> torch.Tensor:
    """T² · KL(softmax(teacher/T) ‖ softmax(student/T)) over the last axis, averaged over rows.

    student, teacher: (B, C); mask (B, C) with 1 where a class (token position) exists.
    The T² factor keeps the gradient scale independent of T (Hinton et al., 2015).
    """
    if mask is not None:
        student = student.masked_fill(mask == 0, _MASKED)
        teacher = teacher.masked_fill(mask == 0, _MASKED)
    log_p_s = F.log_softmax(student / temperature, dim=-1)
    log_p_t = F.log_softmax(teacher / temperature, dim=-1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=-1)  # (B,)
    return kl.mean() * temperature**2


def qa_soft_kl(student_start, student_end, teacher_start, teacher_end, temperature: float, mask: torch.Tensor) -> torch.Tensor:
    """Mean of the start- and end-position soft losses; padding positions are masked out."""
    return 0.5 * (soft_kl(student_start, teacher_start, temperature, mask)
                  + soft_kl(student_end, teacher_end, temperature, mask))


def regression_soft(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Regression has no distribution to soften: match the teacher's output with MSE."""
    return F.mse_loss(student.view(-1), teacher.view(-1))


def hard_loss(task_type: str, outputs, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The task's own loss on gold labels: cross-entropy, MSE (regression), or mean start/end CE (QA)."""
    if task_type == "qa":
        width = outputs.start_logits.size(1)
        start = batch["start_positions"].clamp(0, width - 1)
        end = batch["end_positions"].clamp(0, width - 1)
        return 0.5 * (F.cross_entropy(outputs.start_logits, start) + F.cross_entropy(outputs.end_logits, end))
    if task_type == "regression":
        return F.mse_loss(outputs.logits.view(-1), batch["labels"].float().view(-1))
    return F.cross_entropy(outputs.logits, batch["labels"])


def hidden_mse(student_hidden: tuple[torch.Tensor, ...], teacher_hidden: tuple[torch.Tensor, ...],
               layer_map: list[int], attention_mask: torch.Tensor, projection=None) -> torch.Tensor:
    """MSE between each student layer's output and its mapped teacher layer's, over real tokens.

    Hidden-state tuples hold the embeddings at index 0, so layer i's output is at index i + 1. `projection`
    (a module mapping the student's width to the teacher's, trained with the student) is needed when the widths
    differ.
    """
    mask = attention_mask.unsqueeze(-1).to(student_hidden[0].dtype)  # (B, T, 1)
    total = student_hidden[0].new_zeros(())
    for s, t in enumerate(layer_map):
        student = student_hidden[s + 1]
        if projection is not None:
            student = projection(student)
        if student.size(-1) != teacher_hidden[t + 1].size(-1):
            raise ValueError(f"hidden MSE: student layer {s} has width {student.size(-1)}, teacher layer {t} "
                             f"{teacher_hidden[t + 1].size(-1)}; a projection is needed")
        diff = (student - teacher_hidden[t + 1]) * mask
        total = total + diff.pow(2).sum() / (mask.sum() * diff.size(-1))
    return total / len(layer_map)


def attention_mse(student_attn: tuple[torch.Tensor, ...], teacher_attn: tuple[torch.Tensor, ...],
                  layer_map: list[int], attention_mask: torch.Tensor) -> torch.Tensor:
    """MSE between attention probabilities (B, heads, T, T) of each student layer and its mapped teacher layer,
    over real query rows; layers whose head counts differ compare their head-mean maps."""
    rows = attention_mask.to(student_attn[0].dtype)[:, None, :, None]  # (B, 1, T, 1): real query positions
    total = student_attn[0].new_zeros(())
    for s, t in enumerate(layer_map):
        a, b = student_attn[s], teacher_attn[t]
        if a.size(1) != b.size(1):
            a, b = a.mean(dim=1, keepdim=True), b.mean(dim=1, keepdim=True)
        diff = (a - b) * rows
        total = total + diff.pow(2).sum() / (rows.sum() * a.size(1) * a.size(-1))
    return total / len(layer_map)


def _relations(x: torch.Tensor, heads: int, key_mask: torch.Tensor) -> torch.Tensor:
    """log softmax(x_h x_hᵀ / √d_h) per relation head: (B, heads, T, T), padded keys masked out."""
    b, t, d = x.shape
    xh = x.view(b, t, heads, d // heads).transpose(1, 2)  # (B, heads, T, d_h)
    scores = xh @ xh.transpose(-1, -2) / math.sqrt(d // heads)
    scores = scores.masked_fill(key_mask[:, None, None, :] == 0, _MASKED)
    return F.log_softmax(scores.float(), dim=-1)


def relation_kl(student: torch.Tensor, teacher: torch.Tensor, heads: int,
                attention_mask: torch.Tensor) -> torch.Tensor:
    """KL(teacher relation ‖ student relation) of one vector kind (queries, keys or values), (B, T, width) each,
    both split into `heads` relation heads; summed over keys, averaged over real query rows and heads."""
    for name, x in (("student", student), ("teacher", teacher)):
        if x.size(-1) % heads:
            raise ValueError(f"relation_heads={heads} does not divide the {name}'s width {x.size(-1)}; "
                             "choose a number of relation heads that divides both widths")
    log_s = _relations(student, heads, attention_mask)
    log_t = _relations(teacher, heads, attention_mask)
    kl = (log_t.exp() * (log_t - log_s)).sum(dim=-1)  # (B, heads, T)
    rows = attention_mask.to(kl.dtype)[:, None, :]
    return (kl * rows).sum() / (rows.sum() * heads)


def relations_loss(student_qkv: dict[str, torch.Tensor], teacher_qkv: dict[str, torch.Tensor], heads: int,
                   attention_mask: torch.Tensor) -> torch.Tensor:
    """MiniLM-v2: the mean of the query-query, key-key and value-value relation KLs."""
    return sum(relation_kl(student_qkv[k], teacher_qkv[k], heads, attention_mask) for k in QKV) / len(QKV)

