"""Teacher-labelled augmentation for distillation: rows made by the transforms and read from unlabelled text,
labelled by the teacher, cached, searchable, and used by a distillation."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from compress.config import AugmentConfig, ConfigError, SourceConfig, from_mapping
from compress.data.files import DataError
from compress.distill.augment import augmented_training
from compress.distill.jobs import distill_student, finetune_teacher, load_context
from compress.model.student import StudentSpec
from tests.conftest import job_config, write_sentiment_tsv, write_squad


@pytest.fixture(scope="module")
def sentiment_ctx(tmp_path_factory, tiny_base):
    tmp = tmp_path_factory.mktemp("augment")
    train = write_sentiment_tsv(tmp / "train.tsv", 48, seed=1)
    dev = write_sentiment_tsv(tmp / "dev.tsv", 16, seed=2)
    raw = job_config(tmp, {"type": "classification"}, str(train), str(dev), tiny_base)
    cfg = from_mapping(raw)
    finetune_teacher(cfg, progress=False)
    return tmp, raw, load_context(cfg, progress=False)


def test_transformed_rows_are_new_teacher_labelled_and_cached(sentiment_ctx):
    _, _, ctx = sentiment_ctx
    aug = AugmentConfig(factor=2.0, seed=3)
    data, outputs, rec = augmented_training(ctx, aug)
    n = len(ctx.data.train.examples)
    assert rec["enabled"] and rec["requested"] == 2 * n and rec["cached"] is False
    new = data.train.examples[n:]
    assert len(new) == rec["rows"] == rec["transformed"] > n  # most rows take a transformation
    originals = {ex.texts for ex in ctx.data.train.examples}
    assert not [ex for ex in new if ex.texts in originals] and len({ex.texts for ex in new}) == len(new)
    # The original rows and their teacher outputs come first, unchanged.
    assert data.train.examples[:n] == ctx.data.train.examples
    assert np.array_equal(outputs["logits"][:n], ctx.outputs["logits"])
    assert len(outputs["logits"]) == len(data.train) == len(data.train.examples)
    # Hard labels are the teacher's predictions on the new rows, which its stored outputs are.
    from compress.distill.augment import encode_split
    from compress.model.inference import predict_logits

    fresh = predict_logits(ctx.teacher, encode_split(ctx, "check", new), task_type="classification")["logits"]
    assert np.allclose(fresh, outputs["logits"][n:], atol=1e-4)
    assert [ex.label for ex in new] == list(fresh.argmax(axis=-1))
    assert np.array_equal(data.train.arrays["labels"][n:], fresh.argmax(axis=-1))
    # The same settings reuse the cache; another seed makes other rows.
    again_data, again_out, again = augmented_training(ctx, aug)
    assert again["cached"] is True and again_data.train.examples == data.train.examples
    assert np.array_equal(again_out["logits"], outputs["logits"])
    other, _, _ = augmented_training(ctx, dataclasses.replace(aug, seed=4))
    assert other.train.examples[n:] != new
    off, off_out, rec_off = augmented_training(ctx, AugmentConfig())
    assert off is ctx.data and off_out is ctx.outputs and rec_off == {"enabled": False}


def test_unlabelled_text_is_labelled_by_the_teacher(sentiment_ctx, tmp_path):
    _, _, ctx = sentiment_ctx
    text = tmp_path / "unlabelled.tsv"
    text.write_text("sentence\nan utterly lovely film\nthe plot was weak and boring\n\t\nthe movie was good "
                    "\"really\" \n")  # a blank row is bad; the last repeats a training row and is dropped
    aug = AugmentConfig(unlabelled=(SourceConfig(path=str(text)),))
    cfg = dataclasses.replace(ctx.cfg, data=dataclasses.replace(ctx.cfg.data, on_bad_row="skip"))
    data, outputs, rec = augmented_training(dataclasses.replace(ctx, cfg=cfg), aug)
    n = len(ctx.data.train.examples)
    assert rec["unlabelled"] == 2 and rec["transformed"] == 0 and rec["duplicates_dropped"] == 1
    assert [ex.texts[0] for ex in data.train.examples[n:]] == ["an utterly lovely film", "the plot was weak and boring"]
    assert all(ex.label in (0, 1) for ex in data.train.examples[n:])
    bad = tmp_path / "bad.tsv"
    bad.write_text("review\nsomething\n")
    aug_bad = dataclasses.replace(aug, unlabelled=(dataclasses.replace(aug.unlabelled[0], path=str(bad)),))
    with pytest.raises(DataError, match="sentence"):
        augmented_training(ctx, aug_bad)


def test_a_distillation_trains_on_the_augmented_rows(sentiment_ctx):
    tmp, raw, ctx = sentiment_ctx
    # one epoch over whatever the training set holds (max_steps would hide the bigger set)
    raw = {**raw, "distill": {"augment": {"factor": 1.0},
                              "train": {"epochs": 1, "batch_size": 8, "learning_rate": 1e-3, "eval_every": 0}}}
    cfg = from_mapping(raw)
    ctx2 = dataclasses.replace(ctx, cfg=cfg)
    out = tmp / "student-aug"
    m = distill_student(ctx2, StudentSpec(num_layers=2), out, progress=False)
    rec = m["augment"]
    assert rec["enabled"] and rec["train_rows"] == 48 and rec["train_rows_augmented"] == 48 + rec["rows"]
    assert m["total_steps"] == math.ceil((48 + rec["rows"]) / 8) > 48 // 8  # the steps of the bigger set
    assert m["distill_config"]["augment"]["factor"] == 1.0


def test_qa_rows_keep_their_answers_exact(tmp_path, tiny_base):
    train, dev = write_squad(tmp_path / "train.json", version_2=True), write_squad(tmp_path / "dev.json")
    raw = job_config(tmp_path, {"type": "qa"}, str(train), str(dev), tiny_base)
    raw["data"].update(max_seq_length=64, doc_stride=16)
    cfg = from_mapping(raw)
    finetune_teacher(cfg, progress=False)
    ctx = load_context(cfg, progress=False)
    data, outputs, rec = augmented_training(ctx, AugmentConfig(factor=1.0))
    n = len(ctx.data.train.examples)
    assert rec["rows"] > 0 and len(outputs["start_logits"]) == len(data.train)
    for ex in data.train.examples[n:]:
        for text, start in ex.answers:
            assert ex.context[start:start + len(text)] == text
    with pytest.raises(ValueError, match="unlabelled text is for classification and regression"):
        augmented_training(ctx, AugmentConfig(unlabelled=cfg.data.train))


def test_augmentation_settings_are_checked_and_searchable(tmp_path, tiny_base):
    from compress.search.space import SearchSpace
    from tests.conftest import tiny_config

    train = write_sentiment_tsv(tmp_path / "train.tsv", 8, seed=1)
    raw = job_config(tmp_path, {"type": "classification"}, str(train), str(train), tiny_base)
    for bad, match in (({"factor": -1}, "distill.augment.factor"), ({"transforms": ["shout"]}, "transforms"),
                       ({"fator": 2}, "did you mean 'factor'")):
        with pytest.raises(ConfigError, match=match):
            from_mapping({**raw, "distill": {**raw["distill"], "augment": bad}})
    cfg = from_mapping({**raw, "distill": {**raw["distill"], "augment": {"unlabelled": str(train)}}})
    assert cfg.distill.augment.unlabelled[0].path == str(train)  # one path, like a data split
    raw["search"] = {"space": {"augment_factor": {"type": "categorical", "choices": [0, 2, 4]}}}
    space = SearchSpace.from_config(from_mapping(raw), tiny_config())
    _, kd = space.settings({"augment_factor": 4})
    assert kd.augment.factor == 4.0 and kd.augment.enabled
    assert space.baseline_values()["augment_factor"] == 0
