"""Tokenising long texts that the model truncates, without tokenising what it throws away.

A classifier that reads 64 tokens is often sent a document of several thousand characters. The tokenizer
normalises, splits and encodes all of it, then truncation keeps the first 64 tokens: on 256 texts of 3.9 KB that
is 330-450 ms of tokenising per request (measured with MiniLM's tokenizer on these cores), against 45 ms for the
first 400 characters of each.

`tokenize_truncated` gives the same token ids as `tokenizer(texts, truncation=True, max_length=n)` and reads only a
prefix of each long text. It is exact, not a guess:

- The text is cut at a plain space that follows a non-space character, at most `chars` characters in. For the
  tokenizers this allows (below), every token that ends before such a space is the same whether the rest of the
  text is there or not: normalisation maps characters one by one, and pre-tokenisation splits at that space, so
  the words before it are encoded alone.
- When the prefix still holds at least as many tokens as truncation keeps, those are the first tokens of the full
  text, and truncation keeps exactly them. When it holds fewer (long words, few spaces), that text is tokenised
  whole, as before.

Allowed: normalizers BertNormalizer, Lowercase, NFC/NFD/NFKC/NFKD, StripAccents, Strip, Prepend (and sequences of
them); pre-tokenizers BertPreTokenizer, Whitespace, WhitespaceSplit, Punctuation, Digits, ByteLevel with its
regex, Metaspace that splits (and sequences of them); truncation on the right; no added token that holds
whitespace. That covers BERT, DistilBERT, MiniLM, ELECTRA (WordPiece) and RoBERTa (byte-level BPE). Any other
tokenizer (SentencePiece's precompiled normalizer, a custom Split, no pre-tokenizer at all) is tokenised whole.
Sentence pairs are always tokenised whole: which of the two loses tokens under `longest_first` depends on both
full lengths.
"""

from __future__ import annotations

import json
import weakref
from typing import Any, Sequence

__all__ = ["prefix_chars", "shorten", "tokenize_truncated"]

CHARS_PER_TOKEN = 8  # the prefix read per token kept: English runs at about 4-5 characters a token (MiniLM)
_NORMALIZERS = {"BertNormalizer", "Lowercase", "NFC", "NFD", "NFKC", "NFKD", "StripAccents", "Strip", "Prepend"}
_LATER = {"BertPreTokenizer", "Whitespace", "WhitespaceSplit", "Punctuation", "Digits", "ByteLevel", "Metaspace"}


def _local_normalizer(node: dict | None) -> bool:
    if node is None:
        return True
    kind = node.get("type")
    if kind == "Sequence":
        return all(_local_normalizer(n) for n in node.get("normalizers") or [])
    return kind in _NORMALIZERS


def _splits_at_spaces(node: dict | None) -> bool:
    """Whether the pre-tokenizer always splits at a space (so words before it are encoded on their own)."""
    if node is None:
        return False  # the whole text is one word: a merge may span any space
    kind = node.get("type")
    if kind == "Sequence":  # the first must split at spaces (a ByteLevel first would turn them into bytes);
        # the later ones only split words further or map their characters
        parts = node.get("pretokenizers") or []
        return bool(parts) and _splits_at_spaces(parts[0]) and all(p.get("type") in _LATER for p in parts[1:])
    if kind in ("BertPreTokenizer", "Whitespace", "WhitespaceSplit"):
        return True
    if kind == "ByteLevel":
        return node.get("use_regex", True) is not False
    if kind == "Metaspace":
        return node.get("split", True) is not False and node.get("replacement", "\u2581") != " "
    return False


_PROVEN: "weakref.WeakKeyDictionary[Any, tuple[int, bool]]" = weakref.WeakKeyDictionary()


def _local(tokenizer: Any) -> bool:
    """Whether the tokenizer's pipeline is one the prefix is exact for (module docstring). Read from its JSON
    once per tokenizer and set of added tokens (serialising a 30k vocabulary takes milliseconds, too long per
    request; so does len(tokenizer))."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return False
    size = len(backend.get_added_tokens_decoder())  # tokens added later (add_tokens) change it
    try:
        known = _PROVEN.get(tokenizer)
    except TypeError:  # not weak-referenceable: worked out each time
        known = None
    if known is not None and known[0] == size:
        return known[1]
    try:
        spec = json.loads(backend.to_str())
    except (ValueError, AttributeError):
        return False
    ok = not any(any(ch.isspace() for ch in t.get("content", "")) for t in spec.get("added_tokens") or []) and \
        _local_normalizer(spec.get("normalizer")) and _splits_at_spaces(spec.get("pre_tokenizer"))
    try:
        _PROVEN[tokenizer] = (size, ok)
    except TypeError:
        pass
    return ok


def prefix_chars(tokenizer: Any, max_len: int) -> int | None:
    """How many characters of a text to read for `max_len` tokens, or None when this tokenizer must read it all."""
    if getattr(tokenizer, "truncation_side", "right") != "right" or not _local(tokenizer):
        return None
    return CHARS_PER_TOKEN * max(1, int(max_len))


def shorten(text: str, chars: int) -> str:
    """`text` cut before the last plain space at most `chars` in that follows a non-space; `text` itself when it
    is no longer than that or has no such space."""
    if len(text) <= chars:
        return text
    i = text.rfind(" ", 0, chars)
    while i > 0 and text[i - 1].isspace():  # Python's whitespace is a superset of the tokenizers'
        i = text.rfind(" ", 0, i)
    return text[:i] if i > 0 else text


def tokenize_truncated(tokenizer: Any, texts: Sequence[str], max_len: int, **kwargs: Any) -> dict[str, list]:
    """`tokenizer(texts, truncation=True, max_length=max_len, **kwargs)` as a dict of lists, reading only a prefix of
    each long text where that gives the same ids (module docstring)."""
    texts = list(texts)
    chars = prefix_chars(tokenizer, max_len)
    short = texts if chars is None else [shorten(t, chars) for t in texts]
    enc = dict(tokenizer(short, truncation=True, max_length=max_len, **kwargs))
    if chars is None:
        return enc
    masks = enc.get("attention_mask")
    ids = enc["input_ids"]
    redo = [i for i, (s, t) in enumerate(zip(short, texts)) if s is not t and
            (sum(masks[i]) if masks is not None else len(ids[i])) < max_len]
    if redo:  # the prefix held fewer tokens than truncation keeps: this text is read whole
        full = tokenizer([texts[i] for i in redo], truncation=True, max_length=max_len, **kwargs)
        for key in enc:
            for j, i in enumerate(redo):
                enc[key][i] = full[key][j]
    return enc
