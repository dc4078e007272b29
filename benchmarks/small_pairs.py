"""A small sentence-pair data set built from public data, for trying the tool as a new user would on a set it has
never seen: QNLI's construction (Wang et al., 2018) applied to the 13 SQuAD 1.1 dev articles in ../shared/data.

Each question is paired with one sentence of its paragraph: the sentence holding the answer (label `entailment`)
or, with probability 1/2, another sentence of the same paragraph (`not_entailment`). Articles are split, never
questions: the first 10 articles give the training rows (at most 3,668, MRPC's size), the other 3 the dev rows
(at most 408). Written as TSV (`question<TAB>sentence<TAB>label`) to the given folder; nothing is written into
the repository.

    python benchmarks/small_pairs.py OUT_DIR
"""

from __future__ import annotations

import json
import random
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT.parent / "shared" / "data" / "squad1" / "dev-v1.1-13articles.json"
TRAIN_ROWS, DEV_ROWS, TRAIN_ARTICLES = 3668, 408, 10
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])")


def _sentences(context: str) -> list[tuple[int, str]]:
    """(start offset, sentence) of each sentence of a paragraph."""
    out, pos = [], 0
    for part in _SENTENCE_END.split(context):
        start = context.find(part, pos)
        out.append((start, part))
        pos = start + len(part)
    return out


def _clean(text: str) -> str:
    return " ".join(text.split())  # no tabs or newlines inside a TSV field


def build(seed: int = 0) -> tuple[list[tuple[str, str, str]], list[tuple[str, str, str]]]:
    rng = random.Random(seed)
    articles = json.loads(SOURCE.read_text())["data"]
    parts: list[list[tuple[str, str, str]]] = [[], []]
    for a, article in enumerate(articles):
        rows = parts[0 if a < TRAIN_ARTICLES else 1]
        for para in article["paragraphs"]:
            sents = _sentences(para["context"])
            if len(sents) < 2:
                continue
            for qa in para["qas"]:
                start = qa["answers"][0]["answer_start"]
                holding = max(i for i, (s, _) in enumerate(sents) if s <= start)
                if rng.random() < 0.5:
                    other = rng.choice([i for i in range(len(sents)) if i != holding])
                    rows.append((_clean(qa["question"]), _clean(sents[other][1]), "not_entailment"))
                else:
                    rows.append((_clean(qa["question"]), _clean(sents[holding][1]), "entailment"))
    train, dev = parts
    rng.shuffle(train)
    rng.shuffle(dev)
    return train[:TRAIN_ROWS], dev[:DEV_ROWS]


def write(out: Path, seed: int = 0) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, rows in zip(("train", "dev"), build(seed)):
        path = out / f"{name}.tsv"
        path.write_text("question\tsentence\tlabel\n" + "".join(f"{q}\t{s}\t{y}\n" for q, s, y in rows))
        paths[name] = path
    return paths


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    for name, path in write(Path(sys.argv[1])).items():
        lines = path.read_text().splitlines()[1:]
        pos = sum(line.endswith("\tentailment") for line in lines)
        print(f"{name}: {path} ({len(lines)} rows, {pos} entailment)")
