"""Distillation losses as pure functions of logits, labels and masks.

Total = alpha_ce · T² · KL(teacher ‖ student at T) + alpha_task · hard loss + alpha_hidden · hidden MSE.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["soft_kl", "hard_loss", "hidden_mse", "qa_soft_kl", "regression_soft"]

_MASKED = -1e4  # logit given to padding positions: exp() underflows to 0 in float32 at any sane T


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
               layer_map: list[int], attention_mask: torch.Tensor) -> torch.Tensor:
    """MSE between each student layer's output and its mapped teacher layer's, over real tokens.

    Hidden-state tuples hold the embeddings at index 0, so layer i's output is at index i + 1.
    """
    mask = attention_mask.unsqueeze(-1).to(student_hidden[0].dtype)  # (B, T, 1)
    total = student_hidden[0].new_zeros(())
    for s, t in enumerate(layer_map):
        diff = (student_hidden[s + 1] - teacher_hidden[t + 1]) * mask
        total = total + diff.pow(2).sum() / (mask.sum() * diff.size(-1))
    return total / len(layer_map)
