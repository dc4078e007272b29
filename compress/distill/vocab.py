"""Vocabulary pruning of a trained student's folder (StudentSpec.vocab_pruning), the step after its training.

`prune_student_vocabulary(ctx, folder, settings)` rewrites the saved model and tokenizer in place and scores the pruned
model on the eval split as its own tokenizer sees it; `data_for_model(cfg, data, folder)` gives any folder's splits so.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
from transformers import AutoModelForQuestionAnswering, AutoModelForSequenceClassification

from ..artifacts import write_json
from ..config import AugmentConfig, JobConfig, VocabPruneConfig, to_dict
from ..data.features import Split, TaskData, encode_texts, tokenizer_fingerprint
from ..data.qa import featurize_qa
from ..model.inference import evaluate_model
from ..model.student import model_param_count, param_count
from ..model.teacher import load_tokenizer
from ..model.vocab import (
    check_prunable, choose_vocabulary, count_tokens, id_map, prune_embeddings, prune_tokenizer, vocabulary_changes,
)
from .augment import augmented_training
from .jobs import _save_predictions

__all__ = ["RECORD", "data_for_model", "is_pruned", "prune_student_vocabulary", "text_rows"]

RECORD = "vocab_prune.json"  # in the student folder: what was kept, what it changes on the eval split, the metrics
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
                   "added_tokens.json")


def text_rows(split: Split) -> list[tuple[str, ...]]:
    """The texts of each example a split's features come from: one text or a pair; QA's (question, context)."""
    if "example_index" in split.arrays:  # QA windows: the questions they belong to (a rung keeps only some)
        return [(split.examples[i].question, split.examples[i].context)
                for i in np.unique(split.arrays["example_index"])]
    return [tuple(ex.texts) for ex in split.examples]


def is_pruned(folder: str | Path) -> bool:
    """Whether the model saved (or exported) in `folder` has a pruned vocabulary: its config.json says so."""
    config = Path(folder) / "config.json"
    return config.is_file() and bool(json.loads(config.read_text()).get("vocab_pruning"))


def _featurise(split: Split, cfg: JobConfig, tokenizer, key: str) -> Split:
    if "example_index" in split.arrays:
        arrays = featurize_qa(split.examples, tokenizer, cfg.data.max_seq_length, cfg.data.doc_stride)
    else:
        arrays = encode_texts(split.examples, tokenizer, cfg.data.max_seq_length, cfg.task.type == "regression")
    return Split(split.name, arrays, split.examples, f"{split.key}-{key}")


def _retokenised(cfg: JobConfig, data: TaskData, tokenizer, train_ids: np.ndarray | None) -> TaskData:
    """`data` with the eval and test splits featurised again by `tokenizer`, and the training rows' ids mapped through
    `train_ids` (teacher id -> pruned id) when given, else left as they are."""
    key = f"tok{tokenizer_fingerprint(tokenizer)[:8]}"
    train = data.train
    if train_ids is not None:
        # NOTE: mapping ids, not tokenising again, keeps a rung's rows and QA windows as they were. With min_count 1
        # every training token is kept, so this equals tokenising the text again with the pruned tokenizer.
        train = Split(train.name, {**train.arrays, "input_ids": train_ids[train.arrays["input_ids"]]}, train.examples,
                      f"{train.key}-{key}")
    return dataclasses.replace(data, train=train, eval=_featurise(data.eval, cfg, tokenizer, key),
                               test=None if data.test is None else _featurise(data.test, cfg, tokenizer, key))


def data_for_model(cfg: JobConfig, data: TaskData, folder: str | Path, source_tokenizer=None) -> TaskData:
    """`data` as the model in `folder` reads it: unchanged, or for a pruned vocabulary the eval and test splits
    featurised again with the folder's own tokenizer, and with `source_tokenizer` (the one `data` was made with)
    the training rows' ids mapped to the folder's (a token it lacks to [UNK]; static int8 calibrates on them).
    Without it the training split is left as it was: only evaluation and timing read it then."""
    if not is_pruned(folder):
        return data
    tokenizer = load_tokenizer(str(folder))
    table = None
    if source_tokenizer is not None:
        new = tokenizer.get_vocab()
        table = np.full(len(source_tokenizer), tokenizer.unk_token_id, dtype=np.int64)
        for token, i in source_tokenizer.get_vocab().items():
            if token in new:
                table[i] = new[token]
    return _retokenised(cfg, data, tokenizer, table)


def _check_training_text(old, new, kept: tuple[int, ...], rows: list[tuple[str, ...]]) -> None:
    """Training rows spelt only with kept tokens must give the same tokens, [CLS] and [SEP] included, in new ids."""
    table = id_map(kept, len(old), new.unk_token_id)
    keep = set(kept)
    for row in rows:
        before = old(*row, truncation=False)["input_ids"]
        if not keep.issuperset(before):
            continue  # a token below min_count: the pruned tokenizer may split the word otherwise
        after = new(*row, truncation=False)["input_ids"]
        if after != table[before].tolist():
            raise RuntimeError(f"the pruned tokenizer gives {new.convert_ids_to_tokens(after)} for training text "
                               f"{row!r}, the teacher's {old.convert_ids_to_tokens(before)}")


def _replace_files(folder: Path, staged: Path) -> None:
    for name in TOKENIZER_FILES:
        (folder / name).unlink(missing_ok=True)
    for f in staged.iterdir():
        os.replace(f, folder / f.name)
    shutil.rmtree(staged)


def prune_student_vocabulary(ctx, folder: str | Path, settings: VocabPruneConfig | None = None,
                             augment: AugmentConfig | None = None) -> dict[str, Any]:
    """Prune the vocabulary of the student saved in `folder` (by distill_student or Agora), in place.

    Kept: every special and added token, every token of the rows it trained on (ctx.data.train and, with `augment`
    on, the distill.augment rows it was distilled on too; tokenised whole) that occurs at least `settings.min_count`
    times, and the coverage tokens of `settings` (compress.model.vocab.choose_vocabulary). The model's word
    embeddings and the tokenizer are rewritten; the pruned model is scored again on the eval split tokenised by its
    own tokenizer, and what the pruned vocabulary changes there is measured (vocabulary_changes). Writes
    vocab_prune.json and updates metrics.json and predictions.json (their figures are the pruned model's; the full
    vocabulary's stay under "vocab_prune"). Returns the new metrics.json content.
    """
    t0 = time.perf_counter()
    settings = settings or ctx.cfg.vocab_prune
    cfg, data, teacher_tok = ctx.cfg, ctx.data, ctx.tokenizer
    folder = Path(folder)
    check_prunable(teacher_tok)
    metrics = json.loads((folder / "metrics.json").read_text())
    auto = AutoModelForQuestionAnswering if data.task.type == "qa" else AutoModelForSequenceClassification
    model = auto.from_pretrained(folder, local_files_only=True).eval()
    if getattr(model.config, "vocab_pruning", None) or model.config.vocab_size < len(teacher_tok):
        raise ValueError(f"the model in {folder} has {model.config.vocab_size} embedding rows, its teacher's tokenizer "
                         f"{len(teacher_tok)} tokens: its vocabulary is pruned already; train it again to prune it")
    # the augmented rows come from the run's cache: the very rows distill_student trained on
    trained_on = augmented_training(ctx, augment)[0].train if augment is not None and augment.enabled else data.train
    rows = text_rows(trained_on)
    kept = choose_vocabulary(teacher_tok, count_tokens(teacher_tok, rows), settings.min_count, settings.keep_chars,
                             settings.extra_top_n)
    tokenizer = prune_tokenizer(teacher_tok, kept.ids)
    _check_training_text(teacher_tok, tokenizer, kept.ids, rows[:256])

    head = "qa" if data.task.type == "qa" else "classification"
    params_before = param_count(model.config, head, data.num_labels)
    prune_embeddings(model, kept.ids)
    params = param_count(model.config, head, data.num_labels)
    if params != model_param_count(model):  # the count the search optimises must describe the saved model
        raise RuntimeError(f"parameter formula gives {params:,} but the pruned model has {model_param_count(model):,}")
    model.config.vocab_pruning = {**kept.to_json(), "settings": to_dict(settings)}

    pdata = _retokenised(cfg, data, tokenizer, id_map(kept.ids, len(teacher_tok), tokenizer.unk_token_id))
    scores, preds = evaluate_model(model, pdata, batch_size=cfg.distill.train.eval_batch_size)
    changes = vocabulary_changes(teacher_tok, tokenizer, text_rows(data.eval))

    staged = folder / ".vocab-prune"
    shutil.rmtree(staged, ignore_errors=True)
    model.save_pretrained(staged)
    tokenizer.save_pretrained(staged)
    _replace_files(folder, staged)
    _save_predictions(folder / "predictions.json", pdata, preds)
    metric = data.task.primary_metric
    record = {
        **kept.to_json(), "settings": to_dict(settings), "params_before": params_before, "params": params,
        "training_rows": len(rows), "eval": changes,
        "metrics_full_vocabulary": metrics.get("metrics"), "metrics": scores,
        "metric_source": "PyTorch on the full eval split tokenised by the pruned tokenizer",
        "seconds": round(time.perf_counter() - t0, 2),
    }
    write_json(folder / RECORD, record)
    metrics.update(value=scores.get(metric), metrics=scores, params=params,
                   vocab_prune={k: v for k, v in record.items() if k != "metrics"})
    write_json(folder / "metrics.json", metrics)
    return metrics
