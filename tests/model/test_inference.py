"""Batched prediction: rows are batched by length, and every row's output is the one it has alone."""

from __future__ import annotations

import numpy as np
import torch

from compress.data.features import Split
from compress.model.inference import predict_logits
from tests.conftest import tiny_config


def _split(lengths: list[int], width: int = 40, seed: int = 0) -> Split:
    rng = np.random.default_rng(seed)
    n = len(lengths)
    ids = np.zeros((n, width), dtype=np.int64)
    mask = np.zeros((n, width), dtype=np.int64)
    for i, L in enumerate(lengths):
        ids[i, :L] = rng.integers(1000, 2000, size=L)
        mask[i, :L] = 1
    arrays = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids),
              "labels": np.zeros(n, dtype=np.int64)}
    return Split("eval", arrays, list(range(n)), "k")


def _alone(model, split: Split, names) -> dict[str, list[np.ndarray]]:
    out = {k: [] for k in names}
    with torch.no_grad():
        for i in range(len(split)):
            res = model(**split.batch([i], labels=False))
            for k in names:
                out[k].append(getattr(res, k)[0].numpy())
    return out


def test_each_row_gets_its_own_output_in_the_splits_order_whatever_the_batching():
    from transformers import BertForQuestionAnswering, BertForSequenceClassification

    lengths = [5, 40, 12, 3, 40, 27, 8, 19, 33, 6, 14]
    split = _split(lengths)
    torch.manual_seed(0)
    clf = BertForSequenceClassification(tiny_config(num_labels=3)).eval()
    got = predict_logits(clf, split, batch_size=4)["logits"]
    want = np.stack(_alone(clf, split, ["logits"])["logits"])
    assert got.shape == (len(lengths), 3)
    np.testing.assert_allclose(got, want, atol=1e-5)

    qa = BertForQuestionAnswering(tiny_config()).eval()
    out = predict_logits(qa, split, batch_size=3, task_type="qa")
    alone = _alone(qa, split, ["start_logits", "end_logits"])
    for k in ("start_logits", "end_logits"):
        assert out[k].shape == (len(lengths), 40)
        for i, L in enumerate(lengths):
            np.testing.assert_allclose(out[k][i, :L], alone[k][i], atol=1e-5)
