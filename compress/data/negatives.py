"""Generated unanswerable questions for SQuAD 2.0-style training (`data.negatives`).

SQuAD 1.1 has no unanswerable questions, and a QA model that never sees one never learns to abstain. For a share
`ratio` of the answerable training questions (a seeded draw), a copy of the question is paired with another
paragraph and marked unanswerable: a paragraph of the same article when `same_article` and the article has one
(a hard negative: same topic, same names), else a paragraph of another article. The paragraph is never the
question's own, and never one that contains any of the question's answer texts (compared case-insensitively),
since the copy would then be answerable after all. Only training examples are read and extended: the contexts
come from the training split, so no eval or test article leaks into training.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from typing import Any

import numpy as np

from ..config import NegativesConfig
from .loaders import QAExample

__all__ = ["NEGATIVE_SUFFIX", "generate_negatives", "negatives_record"]

TRIES = 20  # paragraphs drawn per question before it is given up (every candidate held an answer)
NEGATIVE_SUFFIX = "-negative"  # a generated copy's qid: the question's own and this


def _holds_answer(context: str, answers: list[str]) -> bool:
    low = context.lower()
    return any(a and a.lower() in low for a in answers)


def generate_negatives(examples: list[QAExample], cfg: NegativesConfig) -> list[QAExample]:
    """The unanswerable copies for `examples` (a training split) under `cfg`; [] when ratio is 0."""
    answerable = [ex for ex in examples if ex.answers]
    n = int(round(cfg.ratio * len(answerable)))
    if n == 0:
        return []
    rng = np.random.default_rng(cfg.seed)
    by_title: dict[str, list[str]] = defaultdict(list)
    seen: set[tuple[str, str]] = set()
    for ex in examples:
        if (ex.title, ex.context) not in seen:
            seen.add((ex.title, ex.context))
            by_title[ex.title].append(ex.context)
    everything = [(t, c) for t, cs in by_title.items() for c in cs]
    chosen = rng.choice(len(answerable), size=n, replace=False)
    out = []
    for i in sorted(int(k) for k in chosen):
        ex = answerable[i]
        answers = [t for t, _ in ex.answers]
        pick = None
        own = [c for c in by_title[ex.title] if c != ex.context] if cfg.same_article else []
        own = [c for c in own if not _holds_answer(c, answers)]
        if own:
            pick = (ex.title, own[int(rng.integers(len(own)))])
        else:
            for _ in range(TRIES):
                title, ctx = everything[int(rng.integers(len(everything)))]
                if ctx != ex.context and (title != ex.title or not cfg.same_article) \
                        and not _holds_answer(ctx, answers):
                    pick = (title, ctx)
                    break
        if pick is None:
            continue
        out.append(dataclasses.replace(ex, qid=f"{ex.qid}{NEGATIVE_SUFFIX}", title=pick[0], context=pick[1], answers=(),
                                       is_impossible=True))
    return out


def negatives_record(examples: list[QAExample], made: list[QAExample], cfg: NegativesConfig) -> dict[str, Any]:
    """What split.json says about the generated questions (`examples`: the training split before them)."""
    title_of = {ex.qid: ex.title for ex in examples}
    same = sum(1 for ex in made if title_of.get(ex.qid[: -len(NEGATIVE_SUFFIX)]) == ex.title)
    answerable = sum(1 for ex in examples if ex.answers)
    return {"ratio": cfg.ratio, "seed": cfg.seed, "same_article": cfg.same_article, "answerable": answerable,
            "requested": int(round(cfg.ratio * answerable)), "made": len(made),
            "rule": "a copy of the question with another training paragraph that holds none of its answers "
                    "(its own article's first when same_article), marked unanswerable", "same_article_made": same}
