"""Student building: analytic parameter counts, layer selection, head/FFN pruning, save/load round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import (
    BertConfig, BertForQuestionAnswering, BertForSequenceClassification, BertModel, DistilBertConfig,
)

from compress.model.student import (
    Importance, StudentSpec, build_student, measure_importance, model_param_count, param_count, teacher_layers,
)
from tests.conftest import tiny_config


@pytest.mark.parametrize(
    "config, expected",
    [
        (BertConfig(), 109_482_240),  # BERT-base (the paper's 110 M)
        (BertConfig(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096), 335_141_888),
        (DistilBertConfig(), 66_362_880),  # DistilBERT (66 M)
    ],
    ids=["bert-base", "bert-large", "distilbert"],
)
def test_param_count_of_published_encoders(config, expected):
    assert param_count(config) == expected


def test_param_count_equals_built_bare_encoder():
    cfg = tiny_config()
    assert param_count(cfg) == model_param_count(BertModel(cfg))


@pytest.mark.parametrize("cls, head", [(BertForSequenceClassification, "classification"), (BertForQuestionAnswering, "qa")])
@pytest.mark.parametrize(
    "spec",
    [
        StudentSpec(num_layers=2),
        StudentSpec(num_layers=3, heads=2, intermediate_size=40),
        StudentSpec(num_layers=2, heads=(1, 3), head_pruning="random", pruning_seed=3),
        StudentSpec(num_layers=1, layer_selection=(2,), heads=4, intermediate_size=8, init="random"),
    ],
    ids=["plain", "pruned", "per-layer-heads", "random-init"],
)
def test_built_student_count_equals_formula(cls, head, spec):
    torch.manual_seed(0)
    teacher = cls(tiny_config(num_labels=3))
    imp = Importance(np.random.default_rng(0).random((4, 4)), np.random.default_rng(1).random((4, 64)))
    student = build_student(teacher, spec, imp)
    assert param_count(student.config, head, 3) == model_param_count(student)
    assert student.config.num_hidden_layers == spec.num_layers


@pytest.mark.parametrize(
    "selection, k, expected",
    [("even", 3, [1, 3, 5]), ("even", 2, [2, 5]), ("even", 1, [5]), ("first", 2, [0, 1]), ((0, 4), 2, [0, 4])],
)
def test_teacher_layers(selection, k, expected):
    assert teacher_layers(StudentSpec(num_layers=k, layer_selection=selection), 6) == expected


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_layers": 0}, "at least 1 layer"),
        ({"num_layers": 2, "layer_selection": (1,)}, "lists 1 teacher layers"),
        ({"num_layers": 2, "heads": (1, 2, 3)}, "lists 3 values for 2 layers"),
        ({"num_layers": 2, "heads": 0}, "at least 1 head"),
        ({"num_layers": 2, "hidden_dropout": 1.5}, "a dropout is in [0, 1)"),
        ({"num_layers": 2, "init": "zeros"}, "use 'teacher' or 'random'"),
    ],
)
def test_bad_specs_are_refused_by_name(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        StudentSpec(**kwargs)


def test_spec_beyond_teacher_is_refused():
    teacher = BertForSequenceClassification(tiny_config())
    with pytest.raises(ValueError, match="exceeds the teacher's 4 layers"):
        build_student(teacher, StudentSpec(num_layers=5))
    with pytest.raises(ValueError, match="exceeds the teacher's 64"):
        build_student(teacher, StudentSpec(num_layers=2, intermediate_size=65, init="random"))


def test_full_width_student_reproduces_teacher_layers():
    """A student keeping every layer, head and neuron is the teacher, output for output."""
    torch.manual_seed(0)
    teacher = BertForSequenceClassification(tiny_config()).eval()
    student = build_student(teacher, StudentSpec(num_layers=4, layer_selection="first")).eval()
    ids = torch.randint(0, 1000, (2, 7))
    torch.testing.assert_close(student(input_ids=ids).logits, teacher(input_ids=ids).logits)


def test_importance_pruning_keeps_the_important_heads_and_neurons():
    torch.manual_seed(0)
    teacher = BertForSequenceClassification(tiny_config())
    heads = np.zeros((4, 4))
    heads[:, 2] = 1.0  # head 2 matters most in every layer
    neurons = np.zeros((4, 64))
    neurons[:, 10:18] = 1.0
    student = build_student(teacher, StudentSpec(num_layers=2, heads=1, intermediate_size=8), Importance(heads, neurons))
    assert student.config.pruned_heads == {0: [0, 1, 3], 1: [0, 1, 3]}
    t_layer = teacher.bert.encoder.layer[3]  # even selection of 2 of 4: layers 1 and 3
    s_layer = student.bert.encoder.layer[1]
    torch.testing.assert_close(s_layer.intermediate.dense.weight, t_layer.intermediate.dense.weight[10:18])
    torch.testing.assert_close(s_layer.attention.self.query.weight, t_layer.attention.self.query.weight[16:24])


def test_random_pruning_depends_on_seed():
    teacher = BertForSequenceClassification(tiny_config())
    a = build_student(teacher, StudentSpec(num_layers=4, heads=2, head_pruning="random", pruning_seed=1))
    b = build_student(teacher, StudentSpec(num_layers=4, heads=2, head_pruning="random", pruning_seed=1))
    c = build_student(teacher, StudentSpec(num_layers=4, heads=2, head_pruning="random", pruning_seed=2))
    assert a.config.pruned_heads == b.config.pruned_heads != c.config.pruned_heads


def test_random_init_does_not_copy_teacher():
    torch.manual_seed(0)
    teacher = BertForSequenceClassification(tiny_config())
    student = build_student(teacher, StudentSpec(num_layers=2, init="random"))
    assert not torch.equal(student.bert.embeddings.word_embeddings.weight, teacher.bert.embeddings.word_embeddings.weight)


def test_pruned_student_round_trips_through_save_pretrained(tmp_path):
    torch.manual_seed(0)
    teacher = BertForQuestionAnswering(tiny_config()).eval()
    student = build_student(teacher, StudentSpec(num_layers=2, heads=(1, 3), head_pruning="random",
                                                 intermediate_size=16, init="random",
                                                 hidden_dropout=0.0, attention_dropout=0.2)).eval()
    student.save_pretrained(tmp_path)
    loaded = BertForQuestionAnswering.from_pretrained(tmp_path).eval()
    ids = torch.randint(0, 1000, (2, 9))
    torch.testing.assert_close(loaded(input_ids=ids).start_logits, student(input_ids=ids).start_logits)
    assert loaded.config.attention_probs_dropout_prob == 0.2
    assert model_param_count(loaded) == param_count(loaded.config, "qa")


def test_measure_importance_shapes_and_signal():
    torch.manual_seed(0)
    teacher = BertForSequenceClassification(tiny_config(num_labels=2))
    batches = [{"input_ids": torch.randint(0, 1000, (4, 8)), "attention_mask": torch.ones(4, 8, dtype=torch.long),
                "labels": torch.randint(0, 2, (4,))} for _ in range(2)]
    imp = measure_importance(teacher, batches)
    assert imp.heads.shape == (4, 4) and imp.neurons.shape == (4, 64)
    assert np.all(imp.heads >= 0) and imp.heads.sum() > 0 and imp.neurons.sum() > 0
    assert all(p.grad is None for p in teacher.parameters())  # measuring leaves no gradients behind
