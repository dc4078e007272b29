"""Carve eval and test splits from the training rows (`data.split`), deterministically, and describe splits.

Classification is stratified by label (each label keeps its share in every part); regression is a seeded
random draw; QA is split by article, never by question (questions on one paragraph leak into each other).
`split_record` is what the run folder keeps in split.json: rows, labels and a hash of the row ids per split.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from typing import Any, Sequence

import numpy as np

from ..config import SplitConfig
from .loaders import DataError, QAExample, TextExample

__all__ = ["carve_splits", "example_id", "ids_hash", "split_record"]


def example_id(ex: TextExample | QAExample) -> str:
    """Stable identity of a row: its file and line (text) or its question id (QA)."""
    return ex.qid if isinstance(ex, QAExample) else ex.row


def ids_hash(examples: Sequence[TextExample | QAExample]) -> str:
    """Hash of a split's row ids in order: two runs with the same hash hold exactly the same rows."""
    h = hashlib.sha256()
    for ex in examples:
        h.update(example_id(ex).encode())
        h.update(b"\n")
    return h.hexdigest()[:16]


def _size(part: int | float | None, n: int) -> int:
    if part is None:
        return 0
    return int(round(part * n)) if isinstance(part, float) else int(part)


def _allocate(total: int, groups: dict[Any, int]) -> dict[Any, int]:
    """`total` rows shared among groups in proportion to their sizes (largest remainder, ties by key order)."""
    n = sum(groups.values())
    exact = {g: total * size / n for g, size in groups.items()}
    out = {g: int(np.floor(v)) for g, v in exact.items()}
    rest = total - sum(out.values())
    for g in sorted(groups, key=lambda g: (-(exact[g] - out[g]), str(g)))[:rest]:
        out[g] += 1
    return out


def _carve_rows(examples: list[TextExample], n_eval: int, n_test: int, cfg: SplitConfig,
                stratify: bool) -> tuple[set[int], set[int]]:
    rng = np.random.default_rng(cfg.seed)
    if not stratify:
        order = rng.permutation(len(examples))
        return set(order[:n_eval].tolist()), set(order[n_eval:n_eval + n_test].tolist())
    by_label: dict[Any, list[int]] = {}
    for i, ex in enumerate(examples):
        by_label.setdefault(ex.label, []).append(i)
    labels = sorted(by_label)
    sizes = {y: len(by_label[y]) for y in labels}
    eval_k, test_k = _allocate(n_eval, sizes), _allocate(n_test, sizes)
    eval_idx: set[int] = set()
    test_idx: set[int] = set()
    for y in labels:
        rows = np.asarray(by_label[y])[rng.permutation(sizes[y])]
        eval_idx.update(rows[:eval_k[y]].tolist())
        test_idx.update(rows[eval_k[y]:eval_k[y] + test_k[y]].tolist())
    return eval_idx, test_idx


def _carve_articles(examples: list[QAExample], n_eval: int, n_test: int, cfg: SplitConfig) -> tuple[set[int], set[int]]:
    titles = sorted({ex.title for ex in examples})
    need = (n_eval > 0) + (n_test > 0) + 1
    if len(titles) < need:
        raise DataError(
            f"data.split: the training data has {len(titles)} article(s) but splitting by article needs at least "
            f"{need} (train{', eval' if n_eval else ''}{', test' if n_test else ''}); QA is never split by "
            "question. Give data.eval / data.test sources instead"
        )
    counts = Counter(ex.title for ex in examples)
    order = [titles[i] for i in np.random.default_rng(cfg.seed).permutation(len(titles))]
    chosen: dict[str, list[str]] = {"eval": [], "test": []}
    pos = 0
    for part, target in (("eval", n_eval), ("test", n_test)):
        got = 0
        while target > 0 and got < target and pos < len(order) - 1:  # the last article always trains
            chosen[part].append(order[pos])
            got += counts[order[pos]]
            pos += 1
    eval_titles, test_titles = set(chosen["eval"]), set(chosen["test"])
    eval_idx = {i for i, ex in enumerate(examples) if ex.title in eval_titles}
    test_idx = {i for i, ex in enumerate(examples) if ex.title in test_titles}
    return eval_idx, test_idx


def carve_splits(examples: list, cfg: SplitConfig, task_type: str) -> dict[str, list]:
    """Train, eval and test rows carved from `examples` (each in source order; a part not asked for is [])."""
    n = len(examples)
    n_eval, n_test = _size(cfg.eval, n), _size(cfg.test, n)
    if (cfg.eval is not None and n_eval < 1) or (cfg.test is not None and n_test < 1):
        raise DataError(f"data.split {{eval: {cfg.eval}, test: {cfg.test}}} gives an empty part of {n} training "
                        "rows; give a larger fraction or a row count")
    if n_eval + n_test >= n:
        raise DataError(f"data.split asks for {n_eval} eval and {n_test} test rows of {n} training rows, leaving "
                        "none to train on; give smaller parts")
    if task_type == "qa":
        eval_idx, test_idx = _carve_articles(examples, n_eval, n_test, cfg)
    else:
        stratify = cfg.stratify and task_type != "regression"
        eval_idx, test_idx = _carve_rows(examples, n_eval, n_test, cfg, stratify)
    return {
        "train": [ex for i, ex in enumerate(examples) if i not in eval_idx and i not in test_idx],
        "eval": [examples[i] for i in sorted(eval_idx)],
        "test": [examples[i] for i in sorted(test_idx)],
    }


def split_record(splits: dict[str, list], cfg: SplitConfig | None, task_type: str,
                 names: Sequence[str] | None = None) -> dict[str, Any]:
    """What split.json records: how the splits were made, and per split its rows, labels (by name when
    `names` are given) and id hash."""
    out: dict[str, Any] = {}
    for name, examples in splits.items():
        if not examples:
            continue
        rec: dict[str, Any] = {"rows": len(examples), "ids_sha256": ids_hash(examples)}
        if task_type == "qa":
            rec["articles"] = len({ex.title for ex in examples})
            rec["unanswerable"] = sum(ex.is_impossible for ex in examples)
        elif task_type != "regression":
            rec["labels"] = {(names[k] if names else str(k)): v
                             for k, v in sorted(Counter(ex.label for ex in examples).items())}
        out[name] = rec
    method = "given sources"
    if cfg is not None:
        how = ("by article" if task_type == "qa"
               else "stratified by label" if cfg.stratify and task_type != "regression" else "random rows")
        method = f"carved from train {how} (seed {cfg.seed}; eval {cfg.eval}, test {cfg.test})"
    return {"method": method, "splits": out}
