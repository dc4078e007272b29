"""Losses on the teacher's internals: MiniLM-v2 self-attention relations, TinyBERT attention maps and hidden states
(with a learned projection when widths differ): their values, shapes, and a distillation that uses them."""

from __future__ import annotations

import json
import math

import pytest
import torch

from compress.config import ConfigError, DistillConfig, from_mapping
from compress.distill.jobs import distill_student, finetune_teacher, load_context
from compress.distill.losses import attention_mse, hidden_mse, relation_kl, relations_loss
from compress.distill.loop import relation_heads_for
from compress.model.student import StudentSpec
from tests.conftest import job_config, write_sentiment_tsv, write_squad


def _mask(b=2, t=7, pad=2):
    m = torch.ones(b, t, dtype=torch.long)
    m[1, t - pad:] = 0  # the second row is padded
    return m


def test_relation_kl_is_zero_for_identical_vectors_and_positive_otherwise():
    torch.manual_seed(0)
    x = torch.randn(2, 7, 64)
    mask = _mask()
    assert relation_kl(x, x.clone(), 4, mask).item() == pytest.approx(0.0, abs=1e-6)
    y = torch.randn(2, 7, 64)
    assert relation_kl(y, x, 4, mask).item() > 1e-3
    # Padded positions do not count: changing them changes nothing.
    y2 = y.clone()
    y2[1, -2:] = torch.randn(2, 64) * 100
    assert relation_kl(y2, x, 4, mask).item() == pytest.approx(relation_kl(y, x, 4, mask).item(), rel=1e-5)


def test_relations_work_when_the_student_is_narrower_than_the_teacher():
    torch.manual_seed(1)
    mask = _mask()
    teacher = {k: torch.randn(2, 7, 96) for k in ("query", "key", "value")}
    student = {k: torch.randn(2, 7, 32, requires_grad=True) for k in ("query", "key", "value")}
    loss = relations_loss(student, teacher, 4, mask)  # 4 relation heads of 8 (student) and 24 (teacher) dims
    assert loss.ndim == 0 and loss.item() > 0
    loss.backward()
    assert all(v.grad is not None and torch.isfinite(v.grad).all() for v in student.values())
    # The relation maps are T x T whatever the width: a narrow student whose relations equal the teacher's
    # scores 0. Here each teacher head is the student's head with every feature repeated 3 times and scaled by
    # 3^(-1/4), which keeps x·x' / sqrt(d_h) the same (3 c^2 / sqrt(24) = 1 / sqrt(8)).
    narrow = {k: torch.randn(2, 7, 32) for k in ("query", "key", "value")}
    wide = {k: (v.view(2, 7, 4, 8).repeat_interleave(3, dim=-1) * 3 ** -0.25).reshape(2, 7, 96)
            for k, v in narrow.items()}
    assert relations_loss(narrow, wide, 4, mask).item() == pytest.approx(0.0, abs=1e-5)
    with pytest.raises(ValueError, match="relation_heads=5 does not divide the student's width 32"):
        relation_kl(student["query"], teacher["query"], 5, mask)


def test_default_relation_heads_divide_both_widths():
    kd = DistillConfig()
    assert relation_heads_for(kd, 384, 384, 12) == 12
    assert relation_heads_for(kd, 128, 384, 12) == 8  # a head-pruned student: 4 heads x 32
    assert relation_heads_for(kd, 96, 384, 12) == 12
    assert relation_heads_for(DistillConfig(relation_heads=4), 128, 384, 12) == 4
    with pytest.raises(ValueError, match="relation_heads=12 does not divide the student's query width 128"):
        relation_heads_for(DistillConfig(relation_heads=12), 128, 384, 12)
    with pytest.raises(ConfigError, match="distill.relation_heads"):
        DistillConfig(relation_heads=0)


def test_attention_mse_zero_for_identical_maps_head_mean_when_heads_differ():
    torch.manual_seed(2)
    mask = _mask()
    t = tuple(torch.softmax(torch.randn(2, 4, 7, 7), -1) for _ in range(3))
    assert attention_mse(t[:2], t, [0, 1], mask).item() == pytest.approx(0.0, abs=1e-9)
    s = tuple(torch.softmax(torch.randn(2, 4, 7, 7), -1) for _ in range(2))
    assert attention_mse(s, t, [0, 2], mask).item() > 0
    # Two heads against four: the head-mean maps are compared (zero when the means agree).
    pair = (torch.stack([t[2][:, :2].mean(1), t[2][:, 2:].mean(1)], 1),)
    assert attention_mse(pair, t, [2], mask).item() == pytest.approx(0.0, abs=1e-9)


def test_hidden_mse_needs_a_projection_across_widths():
    torch.manual_seed(3)
    mask = _mask()
    teacher = tuple(torch.randn(2, 7, 48) for _ in range(3))
    student = tuple(torch.randn(2, 7, 16) for _ in range(2))
    with pytest.raises(ValueError, match="width 16, teacher layer 1 48; a projection is needed"):
        hidden_mse(student, teacher, [1], mask)
    proj = torch.nn.Linear(16, 48, bias=False)
    loss = hidden_mse(student, teacher, [1], mask, proj)
    loss.backward()
    assert loss.item() > 0 and proj.weight.grad is not None
    assert hidden_mse(teacher[:2], teacher, [0], mask).item() == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("kind", ["classification", "qa"])
def test_distillation_with_every_internal_loss_and_a_narrower_student(kind, tmp_path, tiny_base):
    if kind == "qa":
        train, dev = write_squad(tmp_path / "train.json", version_2=True), write_squad(tmp_path / "dev.json")
        raw = job_config(tmp_path, {"type": "qa"}, str(train), str(dev), tiny_base)
        raw["data"].update(max_seq_length=64, doc_stride=16)
    else:
        train = write_sentiment_tsv(tmp_path / "train.tsv", 48, seed=1)
        dev = write_sentiment_tsv(tmp_path / "dev.tsv", 16, seed=2)
        raw = job_config(tmp_path, {"type": "classification"}, str(train), str(dev), tiny_base)
    raw["distill"].update(alpha_hidden=0.5, alpha_attention=0.5, alpha_relations=1.0, relation_layer=2)
    cfg = from_mapping(raw)
    finetune_teacher(cfg, progress=False)
    ctx = load_context(cfg, progress=False)
    out = tmp_path / "student"
    # hidden 16 (teacher 32), 2 heads of 8: every internal loss crosses widths and head counts
    m = distill_student(ctx, StudentSpec(num_layers=2, heads=2, hidden_size=16), out, progress=False)
    curve = [json.loads(line) for line in (out / "curves.jsonl").read_text().splitlines()]
    for key in ("loss_hidden", "loss_attention", "loss_relations", "loss_ce", "loss_task"):
        assert key in curve[-1] and math.isfinite(curve[-1][key]) and curve[-1][key] > 0, key
    # The projection is training machinery: the saved student is a plain model of its own width.
    from safetensors.torch import load_file

    names = load_file(str(out / "model.safetensors")).keys()
    assert not [n for n in names if "projection" in n]
    assert json.loads((out / "config.json").read_text())["hidden_size"] == 16
    assert m["distill_config"]["alpha_relations"] == 1.0
    with pytest.raises(ValueError, match="relation_layer=7: the teacher has 4 layers"):
        distill_student(ctx, StudentSpec(num_layers=1), tmp_path / "bad",
                        distill=DistillConfig(alpha_relations=1.0, relation_layer=7, train=cfg.distill.train),
                        progress=False)


def test_a_run_with_a_projection_resumes_from_its_checkpoint(tmp_path, tiny_base):
    """The learned projection is part of the checkpoint: a killed run resumes to the uninterrupted result."""
    from compress.distill.loop import StopTraining  # noqa: F401 - the same early-exit machinery as a trial

    train = write_sentiment_tsv(tmp_path / "train.tsv", 48, seed=1)
    dev = write_sentiment_tsv(tmp_path / "dev.tsv", 16, seed=2)
    raw = job_config(tmp_path, {"type": "classification"}, str(train), str(dev), tiny_base)
    raw["distill"].update(alpha_hidden=1.0, alpha_relations=0.5)
    raw["distill"]["train"] = {"max_steps": 6, "batch_size": 8, "eval_every": 3, "checkpoint_every": 2,
                               "device": "cpu"}
    cfg = from_mapping(raw)
    finetune_teacher(cfg, progress=False)
    ctx = load_context(cfg, progress=False)
    spec = StudentSpec(num_layers=2, hidden_size=16, heads=2)
    whole = distill_student(ctx, spec, tmp_path / "whole", progress=False)

    class Killed(Exception):
        pass

    def kill(step, total, metrics):
        if step == 3:
            raise Killed()

    with pytest.raises(Killed):
        distill_student(ctx, spec, tmp_path / "again", progress=False, on_eval=kill)
    assert json.loads((tmp_path / "again" / "checkpoint" / "progress.json").read_text())["step"] == 2
    resumed = distill_student(ctx, spec, tmp_path / "again", progress=False)
    for key in ("accuracy",):
        assert resumed["metrics"][key] == whole["metrics"][key]
    a = [json.loads(x) for x in (tmp_path / "whole" / "curves.jsonl").read_text().splitlines()]
    b = [json.loads(x) for x in (tmp_path / "again" / "curves.jsonl").read_text().splitlines()]
    assert [p["step"] for p in a] == [p["step"] for p in b]
    assert all(math.isclose(x["loss_hidden"], y["loss_hidden"], rel_tol=1e-4) for x, y in zip(a, b))


def test_the_internal_losses_are_searchable(tmp_path, tiny_base):
    from compress.search.space import SearchSpace, SearchSpaceError
    from tests.conftest import tiny_config

    train = write_sentiment_tsv(tmp_path / "train.tsv", 8, seed=1)
    raw = job_config(tmp_path, {"type": "classification"}, str(train), str(train), tiny_base)
    raw["search"] = {"space": {"alpha_relations": {"type": "float", "low": 0.0, "high": 2.0},
                               "alpha_attention": {"type": "categorical", "choices": [0.0, 1.0]},
                               "relation_layer": {"type": "int", "low": 1, "high": 3}}}
    space = SearchSpace.from_config(from_mapping(raw), tiny_config())
    _, kd = space.settings({"alpha_relations": 1.5, "alpha_attention": 1.0, "relation_layer": 2})
    assert (kd.alpha_relations, kd.alpha_attention, kd.relation_layer) == (1.5, 1.0, 2)
    assert kd.uses_teacher_internals
    base = space.baseline_values()
    assert base["alpha_relations"] == 0.0 and base["alpha_attention"] == 0.0
    raw["search"]["space"]["relation_layer"]["high"] = 4  # the tiny teacher has layers 0..3
    with pytest.raises(SearchSpaceError, match="relation_layer=4: the teacher has 4 layers"):
        SearchSpace.from_config(from_mapping(raw), tiny_config())
