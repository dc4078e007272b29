"""ν: offline transformations that make new training examples from ones a student gets wrong (for Agora).

Word deletion, word swap, and substitution of a word by one of its nearest neighbours in the teacher's own
input-embedding space (cosine similarity over whole-word vocabulary entries; no external model). For sentence
pairs one side is changed; for QA the context changes only outside the answer span (the answer text and its
new character offset stay exact) or the question changes, so every answer span stays valid.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

__all__ = ["TRANSFORMS", "Nu"]

TRANSFORMS = ("delete", "swap", "neighbour")
_WORD = re.compile(r"^[a-z]{3,}$")


@dataclass
class Nu:
    """Transformations of text, seeded; `neighbours` nearest tokens are candidates for substitution."""

    tokenizer: Any
    embeddings: np.ndarray  # the teacher's input embeddings (vocab, hidden)
    transforms: tuple[str, ...] = TRANSFORMS
    neighbours: int = 10

    def __post_init__(self) -> None:
        bad = [t for t in self.transforms if t not in TRANSFORMS]
        if bad or not self.transforms:
            raise ValueError(f"agora.transforms={list(self.transforms)}: use some of {', '.join(TRANSFORMS)}")
        vocab = self.tokenizer.get_vocab()
        self._ids = {w: i for w, i in vocab.items() if _WORD.match(w)}  # whole lowercase words only
        self._words = np.array(sorted(self._ids, key=self._ids.get))
        idx = np.array([self._ids[w] for w in self._words])
        emb = self.embeddings[idx].astype(np.float32)
        self._unit = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        self._row = {w: r for r, w in enumerate(self._words)}
        self._cache: dict[str, list[str]] = {}

    def nearest(self, word: str) -> list[str]:
        """The `neighbours` whole words closest to `word` in the teacher's embedding space (cosine)."""
        w = word.lower()
        if w not in self._row:
            return []
        if w not in self._cache:
            sims = self._unit @ self._unit[self._row[w]]
            order = np.argsort(-sims)
            self._cache[w] = [str(self._words[j]) for j in order[: self.neighbours + 1] if self._words[j] != w][
                : self.neighbours]
        return self._cache[w]

    def words(self, words: list[str], rng: np.random.Generator, kind: str) -> list[str] | None:
        """One transformation of a word list; None when it does not apply (too short, no known word)."""
        if kind == "delete":
            if len(words) < 2:
                return None
            k = int(rng.integers(len(words)))
            return words[:k] + words[k + 1:]
        if kind == "swap":
            if len(words) < 2:
                return None
            a, b = rng.choice(len(words), size=2, replace=False)
            out = list(words)
            out[a], out[b] = out[b], out[a]
            return out
        positions = [i for i, w in enumerate(words) if self.nearest(w.strip(".,;:!?\"'()"))]
        if not positions:
            return None
        i = int(rng.choice(positions))
        core = words[i].strip(".,;:!?\"'()")
        repl = str(rng.choice(self.nearest(core)))
        if core[:1].isupper():
            repl = repl.capitalize()
        out = list(words)
        out[i] = words[i].replace(core, repl, 1)
        return out

    def text(self, text: str, rng: np.random.Generator) -> str | None:
        """A new text by one randomly chosen transformation that applies (None when none does)."""
        words = text.split()
        for kind in rng.permutation(list(self.transforms)):
            out = self.words(words, rng, str(kind))
            if out is not None and out != words:
                return " ".join(out)
        return None

    def example(self, ex: Any, rng: np.random.Generator) -> Any | None:
        """A transformed copy of a TextExample (one side of a pair) or QAExample (answer spans kept exact)."""
        if hasattr(ex, "texts"):
            side = int(rng.integers(len(ex.texts)))
            new = self.text(ex.texts[side], rng)
            if new is None:
                return None
            texts = tuple(new if i == side else t for i, t in enumerate(ex.texts))
            return replace(ex, texts=texts, row=f"{ex.row}+nu")
        return self._qa(ex, rng)

    def _qa(self, ex: Any, rng: np.random.Generator) -> Any | None:
        if rng.random() < 0.3:  # change the question instead of the context
            q = self.text(ex.question, rng)
            return None if q is None else replace(ex, question=q, qid=f"{ex.qid}+nu{int(rng.integers(1 << 30))}")
        ctx = ex.context
        if ex.answers:
            text, start = ex.answers[0]
            end = start + len(text)
            before, answer, after = ctx[:start], ctx[start:end], ctx[end:]
        else:
            before, answer, after = ctx, "", ""
        # Change the part before or after the answer; the answer text itself is never touched.
        parts = [p for p in ("before", "after") if (before if p == "before" else after).split()]
        if not parts:
            return None
        which = str(rng.choice(parts))
        piece = before if which == "before" else after
        lead = piece[: len(piece) - len(piece.lstrip())]
        trail = piece[len(piece.rstrip()):]
        new = self.text(piece.strip(), rng)
        if new is None:
            return None
        piece = lead + new + trail
        if which == "before":
            before = piece
        else:
            after = piece
        shift = len(before) - (ex.answers[0][1] if ex.answers else 0)
        answers = tuple((t, s + shift) for t, s in ex.answers) if ex.answers else ()
        if ex.answers and len(ex.answers) > 1:  # other gold answers elsewhere: keep only those still exact
            context = before + answer + after
            answers = answers[:1] + tuple((t, context.find(t)) for t, _ in ex.answers[1:] if context.find(t) >= 0)
        return replace(ex, context=before + answer + after, answers=answers,
                       qid=f"{ex.qid}+nu{int(rng.integers(1 << 30))}")
