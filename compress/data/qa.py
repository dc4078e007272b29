"""Extractive QA: SQuAD featurisation into sliding windows, and decoding logits back to answer text.

Follows the standard Hugging Face recipe: windows of `max_seq_length` tokens overlapping by `doc_stride`,
answers outside a window (and unanswerable questions) pointed at the CLS token.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .loaders import DataError, QAExample

__all__ = ["QAPrediction", "detect_version_2", "featurize_qa", "decode_qa"]


def detect_version_2(examples: list[QAExample]) -> bool:
    """A QA set is SQuAD 2.0 when it holds at least one unanswerable question."""
    return any(ex.is_impossible for ex in examples)


def featurize_qa(
    examples: list[QAExample], tokenizer, max_seq_length: int, doc_stride: int
) -> dict[str, np.ndarray]:
    """Tokenise (question, context) pairs into overlapping windows over the context.

    Returns arrays with one row per window: input_ids, token_type_ids, attention_mask (N, L);
    start_positions, end_positions (N,) token indices of the answer, 0 (CLS) when the question is
    unanswerable or the answer is not wholly inside this window; example_index (N,); offsets (N, L, 2)
    character spans in the context, (-1, -1) for question, special and padding tokens.
    """
    pad_right = tokenizer.padding_side == "right"
    if not pad_right:
        raise DataError("the tokenizer pads on the left; QA featurisation expects padding_side='right'")
    longest_q = max(len(tokenizer(ex.question, add_special_tokens=False)["input_ids"]) for ex in examples)
    room = max_seq_length - longest_q - 3  # [CLS] q [SEP] c [SEP]
    if room <= doc_stride:
        raise DataError(
            f"data.doc_stride={doc_stride} must be smaller than the context room of a window "
            f"({room} tokens = max_seq_length {max_seq_length} - longest question {longest_q} - 3); "
            "lower doc_stride or raise max_seq_length"
        )
    enc = tokenizer(
        [ex.question.lstrip() for ex in examples],
        [ex.context for ex in examples],
        truncation="only_second",
        max_length=max_seq_length,
        stride=doc_stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        padding="max_length",
    )
    n = len(enc["input_ids"])
    offsets = np.full((n, max_seq_length, 2), -1, dtype=np.int32)
    starts = np.zeros(n, dtype=np.int64)
    ends = np.zeros(n, dtype=np.int64)
    example_index = np.asarray(enc["overflow_to_sample_mapping"], dtype=np.int64)
    for i in range(n):
        seq_ids = enc.sequence_ids(i)
        ctx = [j for j, s in enumerate(seq_ids) if s == 1]
        for j in ctx:
            offsets[i, j] = enc["offset_mapping"][i][j]
        ex = examples[example_index[i]]
        if not ex.answers:
            continue  # unanswerable: CLS
        text, start_char = ex.answers[0]
        end_char = start_char + len(text)
        first, last = ctx[0], ctx[-1]
        if not (offsets[i, first, 0] <= start_char and offsets[i, last, 1] >= end_char):
            continue  # answer not wholly inside this window: CLS, as the standard recipe does
        s = first
        while s <= last and offsets[i, s, 0] <= start_char:
            s += 1
        e = last
        while e >= first and offsets[i, e, 1] >= end_char:
            e -= 1
        starts[i], ends[i] = s - 1, e + 1
    return {
        "input_ids": np.asarray(enc["input_ids"], dtype=np.int64),
        "token_type_ids": np.asarray(enc["token_type_ids"], dtype=np.int64),
        "attention_mask": np.asarray(enc["attention_mask"], dtype=np.int64),
        "start_positions": starts,
        "end_positions": ends,
        "example_index": example_index,
        "offsets": offsets,
    }


@dataclass(frozen=True)
class QAPrediction:
    """The decoded answer of one question.

    `text` is the best non-empty span (empty only when no window has a valid span); `null_odds` is
    the no-answer score minus the best span's score: the model says "no answer" when
    null_odds > threshold. `start`/`end` are character offsets of `text` in the context.
    """

    qid: str
    text: str
    start: int
    end: int
    score: float
    null_odds: float

    def answer(self, threshold: float | None) -> str:
        """The final answer: "" (no answer) when null_odds exceeds the threshold; None answers always."""
        if threshold is not None and self.null_odds > threshold:
            return ""
        return self.text


def decode_qa(
    examples: list[QAExample],
    features: dict[str, np.ndarray],
    start_logits: np.ndarray,  # (N, L)
    end_logits: np.ndarray,  # (N, L)
    n_best: int = 20,
    max_answer_length: int = 30,
) -> list[QAPrediction]:
    """Pick the best span of each question over all its windows.

    A span's score is start_logit + end_logit; the no-answer score of a question is the lowest CLS
    score over its windows (the window most sure that an answer is present speaks for the question).
    """
    offsets = features["offsets"]
    by_example: dict[int, list[int]] = {}
    for i, e in enumerate(features["example_index"]):
        by_example.setdefault(int(e), []).append(i)
    preds: list[QAPrediction] = []
    for e_i, ex in enumerate(examples):
        best = (-np.inf, "", -1, -1)
        null = np.inf
        for i in by_example.get(e_i, []):
            s_log, e_log = start_logits[i], end_logits[i]
            null = min(null, float(s_log[0] + e_log[0]))
            valid = offsets[i, :, 0] >= 0  # context tokens only
            s_idx = [j for j in np.argsort(s_log)[::-1][: n_best * 4] if valid[j]][:n_best]
            e_idx = [j for j in np.argsort(e_log)[::-1][: n_best * 4] if valid[j]][:n_best]
            for s in s_idx:
                for t in e_idx:
                    if t < s or t - s + 1 > max_answer_length:
                        continue
                    score = float(s_log[s] + e_log[t])
                    if score > best[0]:
                        c0, c1 = int(offsets[i, s, 0]), int(offsets[i, t, 1])
                        best = (score, ex.context[c0:c1], c0, c1)
        score, text, c0, c1 = best
        if not np.isfinite(score):  # no valid span anywhere: only "no answer" is possible
            preds.append(QAPrediction(ex.qid, "", -1, -1, float("-inf"), float("inf")))
            continue
        preds.append(QAPrediction(ex.qid, text, c0, c1, score, null - score))
    return preds
