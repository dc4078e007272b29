"""Vocabulary pruning (compress.model.vocab, compress.distill.vocab): kept tokens, equal logits on text inside the
vocabulary (PyTorch and ONNX), [UNK] for words the kept pieces cannot spell, special tokens, the affected-token
share, and a tiny search whose pruned trial is exported, scored on a test split, packaged and served.

Tiny random BERTs with the packaged MiniLM tokenizer (30,522 tokens); the search at the end takes about a minute.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from compress.config import ConfigError, from_mapping
from compress.model.student import StudentSpec, model_param_count, param_count
from compress.model.vocab import (
    check_prunable, choose_vocabulary, count_tokens, id_map, prune_embeddings, prune_tokenizer, vocabulary_changes,
)
from tests.conftest import CONFIRM_QUICK, ROOT, job_config, tiny_config, write_sentiment_tsv

TRAIN = [("the movie was good",), ("the film was bad , really bad",), ("a great movie , indeed",),
         ("playing the movie again",)]
TRAIN_TOKENS = {"the", "movie", "was", "good", "film", "bad", ",", "really", "a", "great", "indeed", "playing",
                "again"}
SPECIALS = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"}


def _kept(tokenizer, rows=TRAIN, **settings):
    settings.setdefault("keep_chars", False)
    return choose_vocabulary(tokenizer, count_tokens(tokenizer, rows), **settings)


@pytest.fixture(scope="module")
def classifier():
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    return BertForSequenceClassification(tiny_config(num_hidden_layers=2, num_labels=3)).eval()


@pytest.fixture(scope="module")
def pruned(tokenizer, classifier):
    """(kept vocabulary, pruned model, pruned tokenizer) of TRAIN without coverage tokens."""
    kept = _kept(tokenizer)
    model = copy.deepcopy(classifier)
    prune_embeddings(model, kept.ids)
    return kept, model, prune_tokenizer(tokenizer, kept.ids)


# ------------------------------------------------------------------ what is kept


def test_kept_tokens_are_the_specials_and_the_training_tokens(tokenizer):
    kept = _kept(tokenizer)
    assert set(tokenizer.convert_ids_to_tokens(list(kept.ids))) == SPECIALS | TRAIN_TOKENS
    assert list(kept.ids) == sorted(kept.ids) and kept.ids[0] == tokenizer.pad_token_id  # the teacher's order
    assert (kept.special, kept.from_training, kept.characters, kept.extra) == (5, len(TRAIN_TOKENS), 0, 0)
    twice = _kept(tokenizer, min_count=2)  # the, movie, was, bad and "," occur at least twice
    assert set(tokenizer.convert_ids_to_tokens(list(twice.ids))) == SPECIALS | {"the", "movie", "was", "bad", ","}


def test_coverage_tokens_characters_and_the_teachers_commonest_words(tokenizer):
    base = set(_kept(tokenizer).ids)
    chars = _kept(tokenizer, keep_chars=True)
    added = set(tokenizer.convert_ids_to_tokens(sorted(set(chars.ids) - base)))
    letters = {c for t in TRAIN_TOKENS for c in t}
    assert added == ({c for c in letters} | {f"##{c}" for c in letters}) - TRAIN_TOKENS
    assert chars.characters == len(added)
    extra = _kept(tokenizer, extra_top_n=3)  # BERT's vocabulary after its characters: the, of, and, in, ...
    assert set(tokenizer.convert_ids_to_tokens(sorted(set(extra.ids) - base))) == {"of", "and", "in"}
    with pytest.raises(ValueError, match="min_count=0"):
        _kept(tokenizer, min_count=0)


# ------------------------------------------------------------------ the pruned model and tokenizer


def test_pruned_model_gives_the_same_logits_on_text_in_its_vocabulary(tokenizer, classifier, pruned):
    kept, model, small = pruned
    table = id_map(kept.ids, len(tokenizer), small.unk_token_id)
    first = ["the movie was good", "a great film , really bad indeed"]
    for second in (None, ["playing it again", "the movie"]):
        old = tokenizer(first, second, padding=True, return_tensors="pt")
        new = small(first, second, padding=True, return_tensors="pt")
        assert torch.equal(new["attention_mask"], old["attention_mask"])
        assert torch.equal(new["token_type_ids"], old["token_type_ids"])
        # the teacher's ids mapped to the kept ones; "it" is not kept: one [UNK] there
        assert new["input_ids"].tolist() == table[old["input_ids"].numpy()].tolist()
        if second is None:
            with torch.no_grad():
                torch.testing.assert_close(model(**new).logits, classifier(**old).logits, rtol=0, atol=1e-6)
    assert model.config.vocab_size == len(kept) == len(small)
    assert param_count(model.config, "classification", 3) == model_param_count(model)
    assert model_param_count(classifier) - model_param_count(model) == (len(tokenizer) - len(kept)) * 32


def test_a_word_the_kept_pieces_cannot_spell_becomes_unk(tokenizer, pruned):
    _, _, small = pruned
    assert small.tokenize("the zebra was unplayable") == ["the", "[UNK]", "was", "[UNK]"]  # one [UNK] per word
    assert small.convert_ids_to_tokens(small("the zebra")["input_ids"]) == ["[CLS]", "the", "[UNK]", "[SEP]"]
    # With the characters kept, a word spelt with kept pieces is split into them instead: "movies" was one token.
    chars = prune_tokenizer(tokenizer, _kept(tokenizer, keep_chars=True).ids)
    assert tokenizer.tokenize("movies") == ["movies"] and chars.tokenize("movies") == ["movie", "##s"]
    assert chars.tokenize("zebra") == ["[UNK]"]  # no "z" in the training text


def test_special_tokens_keep_their_places(tokenizer, pruned, tmp_path):
    kept, _, small = pruned
    new_id = {t: i for i, t in enumerate(tokenizer.convert_ids_to_tokens(list(kept.ids)))}
    assert (small.pad_token_id, small.unk_token_id, small.cls_token_id, small.sep_token_id, small.mask_token_id) == \
        tuple(new_id[t] for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"))
    enc = small(["good", "the movie was good"], ["bad", "really"], padding=True)
    cls, sep, pad = small.cls_token_id, small.sep_token_id, small.pad_token_id
    good, bad, really = (new_id[t] for t in ("good", "bad", "really"))
    assert enc["input_ids"][0] == [cls, good, sep, bad, sep, pad, pad, pad]
    assert enc["attention_mask"][0] == [1, 1, 1, 1, 1, 0, 0, 0]
    assert enc["token_type_ids"][1] == [0, 0, 0, 0, 0, 0, 1, 1] and enc["input_ids"][1][-2:] == [really, sep]
    assert small.decode(enc["input_ids"][1], skip_special_tokens=True) == "the movie was good really"
    assert small.tokenize("the [MASK] was good") == ["the", "[MASK]", "was", "good"]
    # The folder: fast and slow tokenizers agree, and every file names the specials with the new ids.
    from transformers import AutoTokenizer, BertTokenizer

    small.save_pretrained(tmp_path)
    fast, slow = AutoTokenizer.from_pretrained(tmp_path), BertTokenizer.from_pretrained(tmp_path)
    text = "the movie was good , really bad zebra"
    assert fast(text)["input_ids"] == slow(text)["input_ids"] == small(text)["input_ids"]
    assert (tmp_path / "vocab.txt").read_text().split("\n")[: len(kept)] == list(new_id)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert {int(k): v["content"] for k, v in config["added_tokens_decoder"].items()} == \
        {new_id[t]: t for t in SPECIALS}
    named = json.loads((tmp_path / "special_tokens_map.json").read_text())  # by text (or AddedToken form)
    assert {k: v if isinstance(v, str) else v["content"] for k, v in named.items()} == \
        {"cls_token": "[CLS]", "sep_token": "[SEP]", "pad_token": "[PAD]", "unk_token": "[UNK]", "mask_token": "[MASK]"}
    spec = json.loads((tmp_path / "tokenizer.json").read_text())
    assert spec["post_processor"]["special_tokens"]["[CLS]"]["ids"] == [cls]
    assert spec["post_processor"]["special_tokens"]["[SEP]"]["ids"] == [sep]
    assert len(spec["model"]["vocab"]) == len(kept)


def test_tied_output_embeddings_are_pruned_with_the_input_ones(tokenizer):
    from transformers import BertForMaskedLM

    torch.manual_seed(0)
    full = BertForMaskedLM(tiny_config(num_hidden_layers=1)).eval()
    kept = _kept(tokenizer)
    small = copy.deepcopy(full)
    prune_embeddings(small, kept.ids)
    assert small.get_output_embeddings().weight is small.get_input_embeddings().weight
    ids = torch.tensor([list(kept.ids[:6])])
    with torch.no_grad():
        want = full(input_ids=ids).logits[..., list(kept.ids)]
        got = small(input_ids=torch.arange(6)[None]).logits
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    assert got.shape[-1] == len(kept)


def test_the_affected_share_on_a_constructed_eval_set(tokenizer):
    small = prune_tokenizer(tokenizer, _kept(tokenizer, [("the movie was good",)]).ids)
    rows = [("the movie was good",),  # 4 tokens, all kept
            ("the movies were awful",),  # the | movies were awful: 3 of 4 tokens become [UNK]
            ("unplayable", "good"),  # un ##play ##able -> one [UNK]: 3 tokens; good: kept
            ("good 😀",)]  # the emoji was [UNK] before: not counted
    got = vocabulary_changes(tokenizer, small, rows)
    assert (got["rows"], got["tokens"], got["unk_tokens"], got["unk_rows"]) == (4, 14, 6, 2)
    assert got["unk_token_share"] == pytest.approx(6 / 14) and got["unk_row_share"] == pytest.approx(0.5)
    assert got["changed_tokens"] == 6  # without the characters every changed word is [UNK]
    chars = prune_tokenizer(tokenizer, _kept(tokenizer, [("the movie was good",)], keep_chars=True).ids)
    got = vocabulary_changes(tokenizer, chars, rows)
    # movies -> movie ##s (changed, not [UNK]); were, awful (an "r", an "f"), unplayable (a "p"): [UNK]
    assert (got["unk_tokens"], got["changed_tokens"], got["unk_rows"], got["changed_rows"]) == (5, 6, 2, 2)


# ------------------------------------------------------------------ refusals and config


def test_config_and_spec_validation_name_the_key(tmp_path, tiny_base):
    train = write_sentiment_tsv(tmp_path / "train.tsv", 8, seed=1)
    raw = job_config(tmp_path, {"type": "classification"}, str(train), str(train), tiny_base)
    assert from_mapping(raw).vocab_prune.min_count == 1
    for section, match in (({"min_count": 0}, "config key 'vocab_prune.min_count': got 0"),
                           ({"extra_top_n": -1}, "config key 'vocab_prune.extra_top_n': got -1"),
                           ({"enabled": True}, "config key 'vocab_prune.enabled' is not known")):
        with pytest.raises(ConfigError, match=match):
            from_mapping({**raw, "vocab_prune": section})
    with pytest.raises(ValueError, match="StudentSpec.vocab_pruning='yes': use true or false"):
        StudentSpec(num_layers=1, vocab_pruning="yes")
    assert StudentSpec(num_layers=1, vocab_pruning=True).tag().endswith("-vocab")
    assert StudentSpec.from_json({"num_layers": 1}).vocab_pruning is False  # spec.json of older runs

    from compress.search.space import SearchSpace, SearchSpaceError

    for bad in ({"type": "int", "low": 0, "high": 1}, {"type": "categorical", "choices": [0, 1]}):
        with pytest.raises(SearchSpaceError, match="'search.space.vocab_pruning'.*choices \\[false, true\\]"):
            SearchSpace.from_config(from_mapping({**raw, "search": {"space": {"vocab_pruning": bad}}}), tiny_config())
    space = SearchSpace.from_config(from_mapping(
        {**raw, "search": {"space": {"vocab_pruning": {"type": "categorical", "choices": [False, True]}}}}),
        tiny_config())
    assert space.settings({"vocab_pruning": True})[0].vocab_pruning is True
    assert space.baseline_values()["vocab_pruning"] is False


def test_only_wordpiece_tokenizers_are_pruned():
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    bpe = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.BPE(vocab={"a": 0, "b": 1}, merges=[])))
    with pytest.raises(ValueError, match="rewrites WordPiece tokenizers.*model is BPE"):
        check_prunable(bpe)


# ------------------------------------------------------------------ ONNX


def test_the_pruned_folder_exports_and_loads_with_optimum(tokenizer, classifier, pruned, tmp_path):
    from optimum.onnxruntime import ORTModelForSequenceClassification
    from transformers import AutoTokenizer

    from compress.deploy.export import export_onnx

    kept, model, small = pruned
    model.save_pretrained(tmp_path / "model")
    small.save_pretrained(tmp_path / "model")
    result = export_onnx(tmp_path / "model", tmp_path / "onnx", "classification")
    assert max(result.max_abs_diff.values()) <= 1e-4
    assert json.loads((tmp_path / "onnx" / "config.json").read_text())["vocab_size"] == len(kept)
    ort_model = ORTModelForSequenceClassification.from_pretrained(tmp_path / "onnx")
    onnx_tok = AutoTokenizer.from_pretrained(tmp_path / "onnx")
    texts = ["the movie was good", "a great film , really bad indeed", "the zebra was unplayable"]
    enc = onnx_tok(texts, padding=True, return_tensors="pt")
    assert enc["input_ids"].tolist() == small(texts, padding=True)["input_ids"]
    got = ort_model(**enc).logits
    with torch.no_grad():
        torch.testing.assert_close(got, model(**enc).logits, rtol=0, atol=1e-4)
        # and the unpruned model on the same text (inside the vocabulary: rows 0 and 1) through its own tokenizer
        full = classifier(**tokenizer(texts[:2], padding=True, return_tensors="pt")).logits
    torch.testing.assert_close(got[:2], full, rtol=0, atol=1e-4)


# ------------------------------------------------------------------ a tiny search with vocabulary pruning


def _study_raw(tmp: Path, teacher: str) -> dict:
    train = write_sentiment_tsv(tmp / "train.tsv", 48, seed=1, labels=("neg", "pos"))
    dev = write_sentiment_tsv(tmp / "dev.tsv", 24, seed=2, labels=("neg", "pos"))
    with open(dev, "a") as fh:  # two rows with words the training text cannot spell (no j, no q)
        fh.write("the movie was jazzy\tpos\na quixotic film\tneg\n")
    test = write_sentiment_tsv(tmp / "test.tsv", 16, seed=3, labels=("neg", "pos"))
    raw = job_config(tmp, {"type": "classification", "labels": ["neg", "pos"]}, str(train), str(dev), teacher)
    raw["name"] = "vocab"
    raw["data"]["test"] = str(test)
    raw["distill"]["train"] = {"max_steps": 4, "batch_size": 8, "eval_every": 2}
    raw["student"] = {"num_layers": 1}
    raw["search"] = {
        "n_trials": 2, "sampler": "grid", "seed": 0, "baseline": False,
        "space": {"vocab_pruning": {"type": "categorical", "choices": [False, True]},
                  "precision": {"type": "categorical", "choices": ["optimized"]}},
        "objectives": ["metric", "params", "latency_ms"],
        # eval-set lengths: the teacher's real ids are timed against the pruned model too (confirmation)
        "latency": {"batch_size": 1, "seq_len": "eval", "threads": 1, "warmup": 1, "repeats": 3, "rounds": 3,
                    "calls_per_round": 2, "wait_s": 0},
        "confirm": CONFIRM_QUICK,
    }
    return raw


@pytest.fixture(scope="module")
def study_run(tmp_path_factory, tiny_base):
    from compress.distill.jobs import finetune_teacher
    from compress.search import open_study, run_worker

    tmp = tmp_path_factory.mktemp("vocab-study")
    teacher = str(finetune_teacher(from_mapping(_study_raw(tmp, tiny_base)), progress=False))
    cfg = from_mapping(_study_raw(tmp, teacher))
    run_worker(cfg, progress=False)
    trials = {t.params["vocab_pruning"]: t for t in open_study(cfg, create=False).get_trials()}
    return cfg, trials


def test_a_trial_with_vocab_pruning_runs_end_to_end(study_run, tokenizer):
    from optuna.trial import TrialState

    cfg, trials = study_run
    full, pruned_t = trials[False], trials[True]
    assert full.state == pruned_t.state == TrialState.COMPLETE
    assert full.user_attrs["vocab_prune"] is None
    v = pruned_t.user_attrs["vocab_prune"]
    assert v["teacher_vocab_size"] == len(tokenizer) and 20 < v["vocab_size"] < 100
    # the jazzy and quixotic rows: their last words become [UNK] (jazz ##y, qui ##x ##otic), nothing else
    assert v["eval"]["rows"] == 26 and v["eval"]["unk_rows"] == 2 and v["eval"]["unk_tokens"] == 5
    assert v["eval"]["unk_row_share"] == pytest.approx(2 / 26)
    params, params_full = pruned_t.user_attrs["measures"]["params"], full.user_attrs["measures"]["params"]
    assert params == v["params"] and params_full - params == (len(tokenizer) - v["vocab_size"]) * 32
    trial_dir = Path(pruned_t.user_attrs["dir"])
    deployed = Path(pruned_t.user_attrs["onnx"]).parent  # the optimized variant's folder
    for folder in (trial_dir / "model", trial_dir / "onnx", deployed):
        assert json.loads((folder / "config.json").read_text())["vocab_size"] == v["vocab_size"], folder
        assert (folder / "tokenizer.json").is_file()
    assert deployed.name.endswith("optimized")
    assert json.loads((trial_dir / "model" / "metrics.json").read_text())["params"] == params
    assert (trial_dir / "model" / "vocab_prune.json").is_file()
    assert (trial_dir / "test.json").is_file()  # on the frontier (fewest params): scored on the held-out split
    assert json.loads((trial_dir / "test.json").read_text())["rows"] == 16
    # Every split as the pruned model reads it: eval and test tokenised again, training ids mapped (for static int8
    # calibration); an unpruned folder's data is the job's own.
    from compress.data.features import prepare_task_data
    from compress.distill.vocab import data_for_model

    data = prepare_task_data(cfg, tokenizer)
    assert data_for_model(cfg, data, Path(full.user_attrs["dir"]) / "model", tokenizer) is data
    own = data_for_model(cfg, data, trial_dir / "model", tokenizer)
    for split in (own.train, own.eval, own.test):
        assert split.arrays["input_ids"].max() < v["vocab_size"]
    from transformers import AutoTokenizer

    small = AutoTokenizer.from_pretrained(trial_dir / "model")
    jazzy = own.eval.arrays["input_ids"][-2][own.eval.arrays["attention_mask"][-2] == 1]
    assert small.convert_ids_to_tokens(jazzy.tolist()) == ["[CLS]", "the", "movie", "was", "[UNK]", "[SEP]"]
    study_doc = json.loads((cfg.run_dir / "frontier.json").read_text())
    assert any(r.get("vocab_prune") for r in study_doc["frontier"])
    assert "unk_token_share" in (cfg.run_dir / "trials.csv").read_text().splitlines()[0]


def test_the_pruned_trial_loads_with_optimum_like_its_torch_model(study_run):
    from optimum.onnxruntime import ORTModelForSequenceClassification
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    _, trials = study_run
    trial_dir = Path(trials[True].user_attrs["dir"])
    tok = AutoTokenizer.from_pretrained(trial_dir / "onnx")
    texts = ["the movie was good \"really\"", "the movie was jazzy"]
    enc = tok(texts, padding=True, return_tensors="pt")
    assert tok.unk_token_id in enc["input_ids"][1].tolist()
    torch_model = AutoModelForSequenceClassification.from_pretrained(trial_dir / "model").eval()
    with torch.no_grad():
        want = torch_model(**enc).logits
    got = ORTModelForSequenceClassification.from_pretrained(trial_dir / "onnx")(**enc).logits
    torch.testing.assert_close(got, want, rtol=0, atol=1e-4)


def test_the_packaged_service_scores_like_the_deployed_onnx_file(study_run, tokenizer, tmp_path):
    from compress.deploy.onnxrt import onnx_session
    from serve.runtime import load_runtime

    cfg, trials = study_run
    t = trials[True]
    env = {**os.environ, "BENTOML_HOME": str(tmp_path / "bentoml"), "BENTOML_DO_NOT_TRACK": "true"}
    out = subprocess.run([str(Path(sys.executable).parent / "compress"), "package", str(cfg.run_dir), "--trial",
                          str(t.number)], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    name, version = next(line.split()[1] for line in out.stdout.splitlines() if line.startswith("packaged ")).split(":")
    runtime = load_runtime(tmp_path / "bentoml" / "models" / name / version, threads=1)
    assert len(runtime.tokenizer) == t.user_attrs["vocab_prune"]["vocab_size"]
    texts = ["the movie was good", "the movie was awful indeed", "the movie was jazzy"]
    served = runtime.classify(texts)
    # The deployed file, fed the teacher's tokenisation mapped to the kept ids: the same scores on the first two
    # (inside the vocabulary); the third's last word is one [UNK] for the service.
    kept = [tokenizer.convert_tokens_to_ids(tok) for tok in runtime.tokenizer.convert_ids_to_tokens(
        list(range(len(runtime.tokenizer))))]
    table = id_map(kept, len(tokenizer), runtime.tokenizer.unk_token_id)
    enc = tokenizer(texts[:2], padding=True, return_tensors="np")
    session = onnx_session(t.user_attrs["onnx"], 1)
    logits = session.run(["logits"], {"input_ids": table[enc["input_ids"]], "attention_mask": enc["attention_mask"],
                                      "token_type_ids": enc["token_type_ids"]})[0].astype(np.float64)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    for s, p in zip(served, probs):
        assert [s["scores"][k] for k in ("neg", "pos")] == pytest.approx(p.tolist(), abs=1e-6)
    assert served[2]["label"] in ("neg", "pos")


def test_compress_distill_prunes_the_vocabulary_when_the_student_says_so(study_run, tmp_path, capsys):
    import yaml
    from transformers import AutoTokenizer

    from compress.cli import main

    cfg, _ = study_run
    raw = _study_raw(tmp_path, cfg.teacher.model)
    raw.pop("search")
    raw.update(name="cli", student={"num_layers": 1, "vocab_pruning": True}, vocab_prune={"keep_chars": False})
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(raw))
    assert main(["distill", str(job)]) == 0
    assert "vocabulary pruned to" in capsys.readouterr().out
    out = tmp_path / "runs" / "cli" / "students" / "L1-Hall-Fall-teacher-vocab"
    record = json.loads((out / "vocab_prune.json").read_text())
    assert record["characters"] == 0 and record["settings"]["keep_chars"] is False
    assert json.loads((out / "config.json").read_text())["vocab_size"] == record["vocab_size"]
    assert len(AutoTokenizer.from_pretrained(out)) == record["vocab_size"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["params"] == record["params"] < record["params_before"]
    assert metrics["vocab_prune"]["metrics_full_vocabulary"] is not None
    assert len(json.loads((out / "predictions.json").read_text())) == 26
