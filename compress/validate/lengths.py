"""Token lengths of every split against data.max_seq_length, measured with the teacher's tokenizer on all rows or a
seeded sample; for QA, whether a window has room for the context and which answers no window holds whole."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..config import JobConfig
from .findings import SPLITS, Report

__all__ = ["MAX_TOKENIZED_ROWS", "SAMPLE_SEED", "qa_window_room", "sample_rows", "token_lengths"]

MAX_TOKENIZED_ROWS = 20_000  # token lengths come from at most this many rows per split: a seeded sample beyond it

SAMPLE_SEED = 0  # same data, same sample, same percentiles

TRUNCATION_WARN = 0.05  # warn when more than this share of a split is longer than data.max_seq_length


def sample_rows(n: int) -> np.ndarray:
    """Indices of at most MAX_TOKENIZED_ROWS rows of a split of n: all of them, or a seeded sample (in order)."""
    if n <= MAX_TOKENIZED_ROWS:
        return np.arange(n)
    return np.sort(np.random.default_rng(SAMPLE_SEED).choice(n, size=MAX_TOKENIZED_ROWS, replace=False))


def _token_ids(tokenizer: Any, first: list[str], second: list[str] | None = None,
               special: bool = True) -> list[list[int]]:
    # verbose=False: lengths past the model's maximum are what is being measured, not a mistake to log
    return tokenizer(first, second, add_special_tokens=special, truncation=False, verbose=False,
                     return_attention_mask=False, return_token_type_ids=False)["input_ids"]


def token_lengths(cfg: JobConfig, report: Report, splits: dict[str, list], tokenizer: Any,
                   answers: bool = True) -> None:
    """Token-length percentiles against data.max_seq_length; for QA also the answers no window holds whole
    (`answers`: the windows can be made at all)."""
    max_len = cfg.data.max_seq_length
    for n in SPLITS:
        examples = splits[n]
        if not examples:
            continue
        idx = sample_rows(len(examples))
        rows = [examples[i] for i in idx]
        if cfg.task.type == "qa":
            lengths = _qa_lengths(tokenizer, rows)
        else:
            pair = len(rows[0].texts) == 2
            ids = _token_ids(tokenizer, [r.texts[0] for r in rows], [r.texts[1] for r in rows] if pair else None)
            lengths = np.asarray([len(x) for x in ids])
        over = float((lengths > max_len).mean())
        stats = {"rows_tokenized": len(rows), "sampled": len(rows) < len(examples), "seed": SAMPLE_SEED,
                 **{f"p{q}": int(np.percentile(lengths, q)) for q in (50, 90, 99)}, "max": int(lengths.max()),
                 "max_seq_length": max_len, "over_max_share": round(over, 4)}
        report.splits[n]["token_lengths"] = stats
        of = f" (of a seeded sample of {len(rows):,} rows)" if stats["sampled"] else ""
        if cfg.task.type == "qa" and answers:
            lost, answerable = _answers_lost(cfg, tokenizer, rows, lengths)
            report.splits[n]["answers_lost"] = lost
            if lost:
                report.warnings.append(
                    f"data.{n}: {lost} of {answerable} answers{of} lie in no window of data.max_seq_length={max_len} "
                    f"tokens with data.doc_stride={cfg.data.doc_stride} whole; those questions train and score as "
                    "if unanswerable. Raise max_seq_length, or raise doc_stride for more overlap between windows")
        elif over > TRUNCATION_WARN:
            cap = int(report.teacher.get("max_position_embeddings") or 4096)
            report.warnings.append(
                f"data.{n}: {over:.0%} of rows{of} are longer than data.max_seq_length={max_len} tokens and get "
                f"truncated (p90 {stats['p90']}, p99 {stats['p99']}, max {stats['max']}); raise "
                f"data.max_seq_length to about {min(stats['p99'], cap)}, or accept losing their ends")


def _qa_lengths(tokenizer: Any, rows: list[Any]) -> np.ndarray:
    """Tokens of [CLS] question [SEP] context [SEP], untruncated (each distinct context tokenised once)."""
    contexts = list(dict.fromkeys(r.context for r in rows))
    ctx_len = dict(zip(contexts, (len(x) for x in _token_ids(tokenizer, contexts, special=False))))
    q_len = [len(x) for x in _token_ids(tokenizer, [r.question.lstrip() for r in rows], special=False)]
    return np.asarray([q + ctx_len[r.context] + 3 for q, r in zip(q_len, rows)])


def qa_window_room(cfg: JobConfig, report: Report, splits: dict[str, list], tokenizer: Any) -> bool:
    """featurize_qa's own check, made before featurising: a window must have room for more than doc_stride context
    tokens beside the longest question of each split. False (and an error) when it has not."""
    max_len, stride = cfg.data.max_seq_length, cfg.data.doc_stride
    for n in SPLITS:
        if not splits[n]:
            continue
        longest = max(len(x) for x in _token_ids(tokenizer, [e.question for e in splits[n]], special=False))
        room = max_len - longest - 3  # [CLS] question [SEP] context [SEP]
        if room <= stride:
            report.errors.append(
                f"config key 'data.doc_stride': got {stride}; it must be smaller than the context room of a window "
                f"({room} tokens = data.max_seq_length {max_len} - the longest {n} question {longest} - 3): lower "
                "doc_stride or raise max_seq_length")
            return False
    return True


def _answers_lost(cfg: JobConfig, tokenizer: Any, rows: list[Any], lengths: np.ndarray) -> tuple[int, int]:
    """(answers no window holds whole, answerable questions), with the windows featurize_qa makes: the first answer
    must lie inside one window's context tokens, or the question trains as unanswerable."""
    max_len, stride = cfg.data.max_seq_length, cfg.data.doc_stride
    answerable = [r for r in rows if r.answers]
    # a question whose whole input fits one window holds its answer; only the longer ones need their windows
    long = [r for r, n in zip(rows, lengths) if r.answers and n > max_len]
    if not long:
        return 0, len(answerable)
    try:
        enc = tokenizer([r.question.lstrip() for r in long], [r.context for r in long], truncation="only_second",
                        max_length=max_len, stride=stride, return_overflowing_tokens=True,
                        return_offsets_mapping=True, verbose=False)
    except Exception:  # noqa: BLE001 - a tokenizer that cannot make these windows: leave it to featurisation
        return 0, len(answerable)
    held = set()
    for i, e in enumerate(enc["overflow_to_sample_mapping"]):
        if e in held:
            continue
        seq = enc.sequence_ids(i)
        if 1 not in seq:
            continue
        first, last = seq.index(1), len(seq) - 1 - seq[::-1].index(1)
        text, start = long[e].answers[0]
        offsets = enc["offset_mapping"][i]
        if offsets[first][0] <= start and offsets[last][1] >= start + len(text):
            held.add(e)
    return len(long) - len(held), len(answerable)

