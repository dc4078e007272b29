"""Losses: the KD term's maths (zero at agreement, T² scaling, masking), hard losses, hidden-state MSE."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from compress.distill.losses import hard_loss, hidden_mse, qa_soft_kl, regression_soft, soft_kl


def test_soft_kl_is_zero_when_student_equals_teacher():
    x = torch.randn(4, 3)
    assert soft_kl(x, x.clone(), 2.0).item() == pytest.approx(0.0, abs=1e-6)


def test_soft_kl_matches_hand_computation():
    s = torch.tensor([[0.0, 0.0]])
    t = torch.tensor([[2.0, 0.0]])
    T = 2.0
    p = torch.softmax(t / T, -1)[0]  # teacher at T: [e/(e+1), 1/(e+1)]
    expected = (p[0] * math.log(p[0] / 0.5) + p[1] * math.log(p[1] / 0.5)) * T**2
    assert soft_kl(s, t, T).item() == pytest.approx(float(expected), rel=1e-5)
    # Same value as torch's own KL with batchmean reduction.
    ref = F.kl_div(F.log_softmax(s / T, -1), F.log_softmax(t / T, -1), log_target=True, reduction="batchmean") * T**2
    assert soft_kl(s, t, T).item() == pytest.approx(ref.item(), rel=1e-5)


def test_soft_kl_ignores_masked_positions():
    s = torch.tensor([[1.0, 2.0, 50.0]])
    t = torch.tensor([[1.0, 2.0, -50.0]])
    mask = torch.tensor([[1, 1, 0]])
    assert soft_kl(s, t, 1.0, mask).item() == pytest.approx(0.0, abs=1e-6)
    assert soft_kl(s, t, 1.0).item() > 1.0


def test_qa_soft_kl_averages_start_and_end():
    a, b = torch.randn(2, 5), torch.randn(2, 5)
    mask = torch.ones(2, 5)
    value = qa_soft_kl(a, b, b, a, 1.0, mask)
    assert value.item() == pytest.approx(0.5 * (soft_kl(a, b, 1.0) + soft_kl(b, a, 1.0)).item(), rel=1e-6)


def test_hard_losses_per_task():
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    out = SimpleNamespace(logits=logits)
    ce = hard_loss("classification", out, {"labels": torch.tensor([0, 1])})
    assert ce.item() == pytest.approx(F.cross_entropy(logits, torch.tensor([0, 1])).item())
    reg = hard_loss("regression", SimpleNamespace(logits=torch.tensor([[0.5], [1.0]])), {"labels": torch.tensor([0.0, 1.0])})
    assert reg.item() == pytest.approx(0.125)
    qa_out = SimpleNamespace(start_logits=torch.randn(2, 6), end_logits=torch.randn(2, 6))
    batch = {"start_positions": torch.tensor([1, 0]), "end_positions": torch.tensor([2, 0])}
    expected = 0.5 * (F.cross_entropy(qa_out.start_logits, batch["start_positions"])
                      + F.cross_entropy(qa_out.end_logits, batch["end_positions"]))
    assert hard_loss("qa", qa_out, batch).item() == pytest.approx(expected.item())


def test_regression_soft_is_mse_to_teacher():
    assert regression_soft(torch.tensor([[1.0], [3.0]]), torch.tensor([[1.0], [1.0]])).item() == pytest.approx(2.0)


def test_hidden_mse_uses_layer_map_and_mask():
    emb = torch.zeros(1, 3, 4)
    s_layer = torch.ones(1, 3, 4)
    t_hidden = (emb, torch.zeros(1, 3, 4), torch.ones(1, 3, 4))  # teacher: embeddings + 2 layers
    mask = torch.tensor([[1, 1, 0]])
    assert hidden_mse((emb, s_layer), t_hidden, [1], mask).item() == pytest.approx(0.0)
    assert hidden_mse((emb, s_layer), t_hidden, [0], mask).item() == pytest.approx(1.0)
    s_layer_pad = s_layer.clone()
    s_layer_pad[0, 2] = 100.0  # a padding position: must not count
    assert hidden_mse((emb, s_layer_pad), t_hidden, [1], mask).item() == pytest.approx(0.0)
