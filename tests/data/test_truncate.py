"""Tokenising only the prefix of a long text gives exactly the ids of tokenising all of it and truncating.

Checked on MiniLM's WordPiece tokenizer and on byte-level BPE (RoBERTa's kind) and Metaspace Unigram
(SentencePiece's kind) tokenizers trained here, over random texts built to break it: whitespace runs of every
kind, punctuation, accents and combining marks, CJK, digits, emoji, zero-width and control characters, words
longer than WordPiece reads. Tokenizers it cannot prove this for are tokenised whole.
"""

from __future__ import annotations

import random

import pytest
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from compress.data.truncate import prefix_chars, shorten, tokenize_truncated

PIECES = ["the", "film", "was", "not", "good", "café", "naïve", "e\u0301t\u00e9", "東京大学", "映画", "12345", "3.14",
          "...", "!?", "(ok)", "don't", "it's", "x" * 150, "😀", "\u200b", "\x00", "\x1f", "Ünïcödé", "ﬁne", "²"]
SPACES = [" ", " ", " ", "  ", "\n", "\t", " \n ", "\u3000", "\u00a0", "   ", "\r\n"]


def _texts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        parts = []
        for _ in range(rng.choice([1, 3, 20, 80, 300, 700])):
            parts.append(rng.choice(PIECES))
            if rng.random() < 0.8:
                parts.append(rng.choice(SPACES))
        out.append("".join(parts))
    return out


def _corpus() -> list[str]:
    return _texts(200, seed=99)


def _byte_level_bpe() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(_corpus(), trainers.BpeTrainer(vocab_size=400, special_tokens=["<s>", "</s>", "<pad>"],
                                                           initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.post_processor = processors.RobertaProcessing(("</s>", tok.token_to_id("</s>")),
                                                      ("<s>", tok.token_to_id("<s>")))
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", cls_token="<s>",
                                   sep_token="</s>", pad_token="<pad>")


def _metaspace_unigram() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.train_from_iterator(_corpus(), trainers.UnigramTrainer(vocab_size=300, unk_token="<unk>",
                                                               special_tokens=["<s>", "</s>", "<pad>", "<unk>"]))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[
        ("<s>", tok.token_to_id("<s>")), ("</s>", tok.token_to_id("</s>"))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>")


@pytest.fixture(scope="module")
def tokenizers_under_test(tokenizer):
    seq = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    seq.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation(),
                                                 pre_tokenizers.Digits(individual_digits=True)])
    return {"wordpiece": tokenizer, "byte-level bpe": _byte_level_bpe(), "metaspace unigram": _metaspace_unigram(),
            "sequence": PreTrainedTokenizerFast(tokenizer_object=seq, pad_token="[PAD]", unk_token="[UNK]")}


@pytest.mark.parametrize("name", ["wordpiece", "byte-level bpe", "metaspace unigram", "sequence"])
@pytest.mark.parametrize("max_len", [8, 16, 64])
def test_prefix_tokenising_gives_the_ids_of_the_whole_text(tokenizers_under_test, name, max_len):
    tok = tokenizers_under_test[name]
    chars = prefix_chars(tok, max_len)
    assert chars is not None, f"{name} should be read by its prefix"
    texts = _texts(300, seed=max_len)
    shortened = sum(shorten(t, chars) is not t for t in texts)
    assert shortened > len(texts) // 3, "the random texts do not exercise the prefix"
    for kwargs in ({}, {"padding": "max_length"}):
        got = tokenize_truncated(tok, texts, max_len, **kwargs)
        want = tok(texts, truncation=True, max_length=max_len, **kwargs)
        assert set(got) == set(want)
        for key in want:
            bad = [i for i in range(len(texts)) if got[key][i] != want[key][i]]
            assert not bad, f"{name}, max_len {max_len}, {key}: text {bad[0]} differs: {texts[bad[0]][:300]!r}"


def test_tokenizers_it_cannot_prove_are_read_whole(tokenizer):
    left = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(tokenizer.backend_tokenizer.to_str()),
                                   truncation_side="left", pad_token="[PAD]")
    assert prefix_chars(left, 16) is None  # keeps the end of the text

    whole = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    whole.pre_tokenizer = None  # one word per text: a merge may span any space
    assert prefix_chars(PreTrainedTokenizerFast(tokenizer_object=whole, pad_token="[PAD]"), 16) is None

    split = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    split.pre_tokenizer = pre_tokenizers.Split("ab", "isolated")
    assert prefix_chars(PreTrainedTokenizerFast(tokenizer_object=split, pad_token="[PAD]"), 16) is None

    bytes_first = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    bytes_first.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.ByteLevel(use_regex=False),
                                                         pre_tokenizers.WhitespaceSplit()])  # no space left to split
    assert prefix_chars(PreTrainedTokenizerFast(tokenizer_object=bytes_first, pad_token="[PAD]"), 16) is None
    words_first = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    words_first.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Digits()])
    assert prefix_chars(PreTrainedTokenizerFast(tokenizer_object=words_first, pad_token="[PAD]"), 16) is not None

    added = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(tokenizer.backend_tokenizer.to_str()),
                                    pad_token="[PAD]")
    assert prefix_chars(added, 16) is not None
    added.add_tokens(["new york"])  # after a first answer: the added token is seen all the same
    assert prefix_chars(added, 16) is None

    texts = _texts(50, seed=5)
    assert tokenize_truncated(added, texts, 16) == dict(added(texts, truncation=True, max_length=16))


def test_shorten_cuts_only_at_a_space_after_a_non_space():
    assert shorten("short", 10) == "short"
    assert shorten("a  b c", 3) == "a"
    assert shorten("ab \n cd ef", 6) == "ab"
    assert shorten("abcdefgh", 3) == "abcdefgh"  # no space to cut at: read whole
    assert shorten(" abc def", 2) == " abc def"  # only a leading space: read whole
