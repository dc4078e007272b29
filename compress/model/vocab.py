"""Vocabulary pruning: keep the word-embedding rows of the tokens a task's training data uses, and a tokenizer that
maps text to the new rows. A MiniLM student's embedding matrix is half its parameters; most rows are never read.

`count_tokens` and `choose_vocabulary` pick the rows, `prune_embeddings` slices the model, `prune_tokenizer` rewrites a
WordPiece fast tokenizer for the new ids, `vocabulary_changes` measures what the pruned vocabulary does to other text.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer
from torch import nn

__all__ = ["KeptVocabulary", "check_prunable", "choose_vocabulary", "count_tokens", "id_map", "prune_embeddings",
           "prune_tokenizer", "vocabulary_changes"]

# BERT vocabularies reserve [unused0]..[unused993] for users to repurpose; no text tokenises to them.
_UNUSED = re.compile(r"^\[unused\d+\]$")
# Config attributes that name a token by id (BertConfig has pad_token_id; others may carry the rest).
_CONFIG_TOKEN_IDS = ("pad_token_id", "bos_token_id", "eos_token_id", "sep_token_id", "cls_token_id", "unk_token_id",
                     "mask_token_id", "decoder_start_token_id")


@dataclass(frozen=True)
class KeptVocabulary:
    """The teacher token ids a pruned model keeps, ascending: row i of the pruned embedding is teacher row ids[i]."""

    ids: tuple[int, ...]
    teacher_vocab_size: int
    from_training: int  # training tokens seen at least min_count times (specials excluded)
    special: int  # special and added tokens of the tokenizer, always kept
    characters: int  # single-character pieces added for coverage (keep_chars), beyond the two sets above
    extra: int  # extra_top_n tokens added beyond the sets above

    def __len__(self) -> int:
        return len(self.ids)

    def to_json(self) -> dict[str, int]:
        return {"vocab_size": len(self.ids), "teacher_vocab_size": self.teacher_vocab_size,
                "from_training": self.from_training, "special": self.special, "characters": self.characters,
                "extra_top_n": self.extra}


def check_prunable(tokenizer) -> None:
    """Refuse, with the reason, a tokenizer whose vocabulary this module cannot rewrite (only WordPiece fast ones)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ValueError(f"vocabulary pruning needs a fast tokenizer (tokenizer.json); {type(tokenizer).__name__} "
                         "is not one")
    kind = json.loads(backend.to_str())["model"].get("type")
    if kind != "WordPiece":
        raise ValueError(f"vocabulary pruning rewrites WordPiece tokenizers (BERT's); this tokenizer's model is "
                         f"{kind}: turn student.vocab_pruning off")


def _plain_backend(tokenizer) -> Tokenizer:
    # NOTE: a copy, because a fast tokenizer's backend keeps the truncation and padding of its last call (and
    # MiniLM's tokenizer.json ships with max_length 128): counting and comparing tokens must see whole texts.
    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    backend.no_truncation()
    backend.no_padding()
    return backend


def _flatten(rows: Iterable[Sequence[str]]) -> list[str]:
    return [text for row in rows for text in row]


def count_tokens(tokenizer, rows: Iterable[Sequence[str]]) -> np.ndarray:
    """How often each token id occurs in the rows' texts (each row one text, a pair, or QA's question and context),
    tokenised whole (no truncation) without special tokens. Shape (len(tokenizer),)."""
    backend = _plain_backend(tokenizer)
    counts = np.zeros(len(tokenizer), dtype=np.int64)
    texts = _flatten(rows)
    for start in range(0, len(texts), 4096):
        for enc in backend.encode_batch(texts[start: start + 4096], add_special_tokens=False):
            np.add.at(counts, np.asarray(enc.ids, dtype=np.int64), 1)
    return counts


def _special_ids(tokenizer) -> set[int]:
    return set(tokenizer.all_special_ids) | set(tokenizer.added_tokens_decoder)


def choose_vocabulary(tokenizer, counts: np.ndarray, min_count: int = 1, keep_chars: bool = True,
                      extra_top_n: int = 0) -> KeptVocabulary:
    """The tokens to keep: every special and added token, every token the training data uses at least `min_count`
    times, with keep_chars the single-character pieces (c and ##c) of every character those tokens are spelt with
    (an unseen word spelt with them then splits into kept pieces instead of becoming [UNK]), and the first
    `extra_top_n` other ordinary tokens of the teacher's vocabulary in id order.

    NOTE: BERT's WordPiece vocabularies list their words by frequency in the pre-training corpus (after the [unused]
    slots and the characters: 'the', 'of', 'and', ...), so extra_top_n keeps the commonest words the task's
    training data happens to lack; for a vocabulary in another order it is simply the first ones.
    """
    if min_count < 1 or extra_top_n < 0:
        raise ValueError(f"min_count={min_count}, extra_top_n={extra_top_n}: need min_count >= 1, extra_top_n >= 0")
    vocab = tokenizer.get_vocab()  # token -> id, added tokens included
    tokens = {i: t for t, i in vocab.items()}
    if counts.shape[0] != len(tokenizer):
        raise ValueError(f"counts cover {counts.shape[0]} ids but the tokenizer has {len(tokenizer)}")
    special = _special_ids(tokenizer)
    data = {int(i) for i in np.flatnonzero(counts >= min_count)} - special
    keep = special | data
    prefix = json.loads(tokenizer.backend_tokenizer.to_str())["model"].get("continuing_subword_prefix") or "##"
    chars: set[int] = set()
    if keep_chars:
        letters = {c for i in data for c in tokens[i].removeprefix(prefix)}
        chars = {vocab[piece] for c in letters for piece in (c, prefix + c) if piece in vocab} - keep
        keep |= chars
    extra: set[int] = set()
    if extra_top_n:
        for i in sorted(tokens):
            if len(extra) == extra_top_n:
                break
            t = tokens[i]
            if i in keep or _UNUSED.match(t) or len(t.removeprefix(prefix)) <= 1:
                continue
            extra.add(i)
        keep |= extra
    return KeptVocabulary(tuple(sorted(keep)), len(tokenizer), len(data), len(special), len(chars), len(extra))


def id_map(kept: Sequence[int], teacher_vocab_size: int, unk_id: int) -> np.ndarray:
    """teacher id -> pruned id, with `unk_id` (a pruned id) for every id not kept. Shape (teacher_vocab_size,)."""
    table = np.full(teacher_vocab_size, unk_id, dtype=np.int64)
    table[np.asarray(kept, dtype=np.int64)] = np.arange(len(kept))
    return table


# ----------------------------------------------------------------------------------------------
# The model


@torch.no_grad()
def prune_embeddings(model: nn.Module, kept: Sequence[int]) -> None:
    """Keep only rows `kept` of the word embeddings (and of tied or untied output embeddings, for heads that have
    them; BERT's classification and QA heads have none), in place; config.vocab_size and token ids follow."""
    remap = {old: new for new, old in enumerate(kept)}
    idx = torch.as_tensor(list(kept), dtype=torch.long)
    cfg = model.config
    emb = model.get_input_embeddings()  # (V, H)
    if emb.num_embeddings != cfg.vocab_size:
        raise ValueError(f"the model's embeddings hold {emb.num_embeddings} rows but config.vocab_size is "
                         f"{cfg.vocab_size}; prune an unpruned model")
    if max(kept) >= emb.num_embeddings:
        raise ValueError(f"kept id {max(kept)} is beyond the model's {emb.num_embeddings} embedding rows")
    out = model.get_output_embeddings()
    tied = out is not None and out.weight is emb.weight
    pad = remap.get(emb.padding_idx) if emb.padding_idx is not None else None
    new_emb = nn.Embedding(len(kept), emb.embedding_dim, padding_idx=pad, dtype=emb.weight.dtype,
                           device=emb.weight.device)
    new_emb.weight.copy_(emb.weight[idx])  # (K, H)
    model.set_input_embeddings(new_emb)
    if out is not None:
        new_out = nn.Linear(out.in_features, len(kept), bias=out.bias is not None, dtype=out.weight.dtype,
                            device=out.weight.device)
        new_out.weight = new_emb.weight if tied else nn.Parameter(out.weight[idx].clone())
        if out.bias is not None:
            new_out.bias.copy_(out.bias[idx])
        model.set_output_embeddings(new_out)
    cfg.vocab_size = len(kept)
    for name in _CONFIG_TOKEN_IDS:
        old = getattr(cfg, name, None)
        if isinstance(old, int):
            if old not in remap:
                raise ValueError(f"config.{name}={old} names a token the pruned vocabulary does not keep")
            setattr(cfg, name, remap[old])


# ----------------------------------------------------------------------------------------------
# The tokenizer


def _remap_processor(node: dict[str, Any] | None, new_id: dict[str, int]) -> dict[str, Any] | None:
    """The post-processor (which adds [CLS] and [SEP]) with its token ids in the pruned vocabulary."""
    if node is None:
        return None
    kind = node.get("type")

    def lookup(token: str) -> int:
        if token not in new_id:
            raise ValueError(f"the tokenizer's post-processor adds {token!r}, which the pruned vocabulary lacks")
        return new_id[token]

    if kind == "TemplateProcessing":
        for entry in node["special_tokens"].values():
            entry["ids"] = [lookup(t) for t in entry["tokens"]]
    elif kind in ("BertProcessing", "RobertaProcessing"):
        for key in ("sep", "cls"):
            node[key] = [node[key][0], lookup(node[key][0])]
    elif kind == "Sequence":
        node["processors"] = [_remap_processor(p, new_id) for p in node["processors"]]
    elif kind != "ByteLevel":  # ByteLevel carries no ids
        raise ValueError(f"vocabulary pruning does not know the post-processor {kind!r}; turn vocab_pruning off")
    return node


def prune_tokenizer(tokenizer, kept: Sequence[int]):
    """A tokenizer of the same class whose vocabulary is `kept` (teacher ids, ascending) renumbered 0..K-1.

    The tokenizer.json is rewritten: the WordPiece vocabulary, the added tokens' ids, the post-processor's [CLS] and
    [SEP] ids and the padding id; normaliser, pre-tokeniser and decoder stay as they are. tokenizer_config.json's
    added_tokens_decoder is renumbered to match, and vocab.txt is written from the new vocabulary, so the fast and
    the slow tokenizer agree. A word WordPiece cannot spell with the kept pieces becomes [UNK]; one it can spell
    with other, shorter kept pieces ('movies' -> 'movie', '##s') is split into those.
    """
    check_prunable(tokenizer)
    kept = list(kept)
    if kept != sorted(set(kept)):
        raise ValueError("kept ids must be distinct and ascending (the pruned vocabulary keeps the teacher's order)")
    missing = sorted(_special_ids(tokenizer) - set(kept))
    if missing:
        raise ValueError(f"the special or added tokens {tokenizer.convert_ids_to_tokens(missing)} are not kept; "
                         "every special token must stay")
    old_tokens = tokenizer.convert_ids_to_tokens(kept)
    new_id = {t: i for i, t in enumerate(old_tokens)}
    remap = dict(zip(kept, range(len(kept))))
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    model_vocab = spec["model"]["vocab"]
    # Tokens of the WordPiece model first, added-only tokens after them: the order the tokenizers library gives ids in.
    spec["model"]["vocab"] = {t: new_id[t] for t in old_tokens if t in model_vocab}
    for entry in spec["added_tokens"]:
        entry["id"] = remap[entry["id"]]
    spec["post_processor"] = _remap_processor(spec.get("post_processor"), new_id)
    if spec.get("padding"):
        spec["padding"]["pad_id"] = new_id[spec["padding"]["pad_token"]]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        tokenizer.save_pretrained(folder)
        (folder / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
        config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
        if "added_tokens_decoder" in config:
            config["added_tokens_decoder"] = {str(remap[int(k)]): v for k, v in config["added_tokens_decoder"].items()}
        (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False),
                                                      encoding="utf-8")
        if (folder / "added_tokens.json").is_file():
            added = json.loads((folder / "added_tokens.json").read_text(encoding="utf-8"))
            (folder / "added_tokens.json").write_text(json.dumps({t: remap[i] for t, i in added.items()}),
                                                      encoding="utf-8")
        for name in ("vocab.txt",):  # the slow tokenizer's copy of the old vocabulary; save_pretrained writes it anew
            (folder / name).unlink(missing_ok=True)
        pruned = type(tokenizer).from_pretrained(folder, local_files_only=True)
        # Saved and loaded once more, so the object is exactly what a folder written by save_pretrained gives.
        again = folder / "saved"
        pruned.save_pretrained(again)
        pruned = type(tokenizer).from_pretrained(again, local_files_only=True)
        shutil.rmtree(again)
    _check_tokenizer(tokenizer, pruned, kept)
    return pruned


def _check_tokenizer(old, new, kept: list[int]) -> None:
    """Every kept token has its new id in the new tokenizer, and the special tokens are the same tokens."""
    if len(new) != len(kept):
        raise RuntimeError(f"the pruned tokenizer has {len(new)} tokens, {len(kept)} were kept")
    got = new.convert_tokens_to_ids(old.convert_ids_to_tokens(kept))
    wrong = [i for i, g in enumerate(got) if g != i]
    if wrong:
        token = old.convert_ids_to_tokens(kept[wrong[0]])
        raise RuntimeError(f"the pruned tokenizer maps {token!r} to {got[wrong[0]]}, not {wrong[0]}")
    if old.all_special_tokens != new.all_special_tokens:
        raise RuntimeError(f"special tokens changed: {old.all_special_tokens} -> {new.all_special_tokens}")


# ----------------------------------------------------------------------------------------------
# What the pruned vocabulary changes


def _words(tokens: list[str], word_ids: list[int | None]) -> list[list[str]]:
    """Tokens grouped by the word (pre-tokeniser unit) they spell; an added token stands alone."""
    out: list[list[str]] = []
    last: object = object()
    for t, w in zip(tokens, word_ids):
        if w is None or w != last:
            out.append([t])
        else:
            out[-1].append(t)
        last = w
    return out


def vocabulary_changes(old, new, rows: Sequence[Sequence[str]]) -> dict[str, Any]:
    """What the pruned tokenizer `new` changes on `rows` (each one text, a pair, or QA's question and context),
    against the unpruned `old`, counted in the unpruned tokens of the whole texts (no truncation, no special tokens).

    A word is "unk" when the pruned tokenizer makes it [UNK] and the unpruned one did not; "changed" when it splits
    it into other pieces at all (unk included: a word spelt with shorter kept pieces is changed but not unk).
    Returns the counts, the shares of tokens (tokens of such words / all tokens) and of rows (rows with at least one
    such word / all rows).
    """
    texts = sorted(set(_flatten(rows)))  # QA contexts repeat across questions: each text is tokenised once
    b_old, b_new = _plain_backend(old), _plain_backend(new)
    unk = new.unk_token
    per_text: dict[str, tuple[int, int, int]] = {}
    for start in range(0, len(texts), 4096):
        chunk = texts[start: start + 4096]
        for text, e_old, e_new in zip(chunk, b_old.encode_batch(chunk, add_special_tokens=False),
                                      b_new.encode_batch(chunk, add_special_tokens=False)):
            w_old, w_new = _words(e_old.tokens, e_old.word_ids), _words(e_new.tokens, e_new.word_ids)
            if len(w_old) != len(w_new):  # same normaliser and pre-tokeniser: the words must agree
                raise RuntimeError(f"the pruned tokenizer splits {text[:60]!r} into {len(w_new)} words, the unpruned "
                                   f"one into {len(w_old)}")
            n_unk = sum(len(a) for a, b in zip(w_old, w_new) if b == [unk] and a != [unk])
            n_changed = sum(len(a) for a, b in zip(w_old, w_new) if a != b)
            per_text[text] = (len(e_old.tokens), n_unk, n_changed)
    tokens = unk_tokens = changed_tokens = unk_rows = changed_rows = 0
    for row in rows:
        counts = [per_text[t] for t in row]
        tokens += sum(c[0] for c in counts)
        unk_tokens += sum(c[1] for c in counts)
        changed_tokens += sum(c[2] for c in counts)
        unk_rows += any(c[1] for c in counts)
        changed_rows += any(c[2] for c in counts)
    n_rows = len(rows)
    return {
        "rows": n_rows, "tokens": tokens, "unk_tokens": unk_tokens, "changed_tokens": changed_tokens,
        "unk_rows": unk_rows, "changed_rows": changed_rows,
        "unk_token_share": unk_tokens / tokens if tokens else 0.0,
        "unk_row_share": unk_rows / n_rows if n_rows else 0.0,
        "changed_token_share": changed_tokens / tokens if tokens else 0.0,
        "changed_row_share": changed_rows / n_rows if n_rows else 0.0,
        "definition": "tokens of the unpruned tokenisation (whole texts, no special tokens) in words the pruned "
                      "tokenizer makes [UNK] though the unpruned one did not (unk), or splits differently at all "
                      "(changed, unk included), over all tokens; rows: rows with at least one such word, over all rows",
    }
