"""Per-text features against the served tokenizer (length, unknown-token and subword-split rates) and a stable hash,
so a prediction log or a reference sample carries what drift is judged on and never the raw text. Torch- and pandas-free."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kit.core.errors import ModelDirError

__all__ = ["TextFeatures", "TokenCounter", "load_feature_tokenizer", "text_hash", "text_features", "HASH_CHARS"]

HASH_CHARS = 16  # 64 bits of sha256: collisions are negligible at log sizes, and the log stays small


@dataclass(frozen=True)
class TextFeatures:
    """The features of one text: lengths, the share of unknown tokens and of words split into several pieces."""

    text_hash: str
    length_chars: int
    length_tokens: int
    unk_rate: float
    subword_rate: float


def load_feature_tokenizer(model_dir: str | Path, max_length: int | None = None) -> Any:
    """The serving dir's tokenizer as the server runs it: truncating where the server truncates, never padding.

    Args:
        model_dir: the serving dir (tokenizer.json inside it).
        max_length: truncation in tokens (None: serving.json's max_length, else no truncation).

    Raises:
        ModelDirError: tokenizer.json is missing or cannot be loaded (names it).
    """
    from kit.serve.model import load_tokenizer

    d = Path(model_dir)
    path = d / "tokenizer.json"
    if not path.is_file():
        raise ModelDirError(f"{path}: tokenizer.json missing from the serving dir")
    if max_length is None and (d / "serving.json").is_file():
        max_length = json.loads((d / "serving.json").read_text(encoding="utf-8")).get("max_length")
    tok = load_tokenizer(path, max_length=max_length or 8192)
    tok.no_padding()
    if not max_length:
        tok.no_truncation()
    return tok


class TokenCounter:
    """Per-text token figures of an encoded batch, vectorised over its id matrix: the server computes them from the
    very batch it runs (no second tokenization), and the reference profile the same way.

    A word split into pieces is a word-start token followed by a continuation piece: WordPiece marks continuations
    (`##`); byte-level BPE and SentencePiece mark word starts (`Ġ`, `▁`) instead."""

    def __init__(self, tok: Any):
        vocab: dict[str, int] = tok.get_vocab(with_added_tokens=True)
        size = max(vocab.values()) + 1
        prefix = getattr(tok.model, "continuing_subword_prefix", None)
        cont = np.zeros(size, dtype=bool)
        special = np.zeros(size, dtype=bool)
        for token, i in vocab.items():
            cont[i] = token.startswith(prefix) if prefix else not token.startswith(("Ġ", "▁"))
        self.unk_id = _unk_id(tok)
        for i, added in tok.get_added_tokens_decoder().items():
            if added.special and i != self.unk_id:  # [CLS], [SEP], [PAD] frame the text; [UNK] is part of it
                special[i] = True
                cont[i] = False
        self._cont, self._special = cont, special

    def counts(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """float64 [n, 3]: tokens (special excluded), unknown-token rate, share of words split into pieces."""
        ids = np.clip(input_ids, 0, len(self._cont) - 1)
        real = (attention_mask > 0) & ~self._special[ids]
        n = real.sum(axis=1)
        unk = ((ids == self.unk_id) & real).sum(axis=1) if self.unk_id is not None else np.zeros(len(ids))
        cont = self._cont[ids] & real
        starts = real & ~cont
        split = (starts[:, :-1] & cont[:, 1:]).sum(axis=1)
        words = starts.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.stack([n, np.where(n > 0, unk / n, 0.0), np.where(words > 0, split / words, 0.0)], axis=1).astype(
                np.float64
            )


def text_hash(text: str) -> str:
    """A stable (unsalted) sha256 hex prefix of the UTF-8 text: equal texts give equal hashes across processes."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:HASH_CHARS]


def _unk_id(tok: Any) -> int | None:
    # WordPiece / BPE / Unigram models name their unknown token differently; byte-level BPE has none.
    unk = getattr(tok.model, "unk_token", None)
    if unk is None and hasattr(tok.model, "unk_id"):
        return tok.model.unk_id
    return None if unk is None else tok.token_to_id(unk)


def text_features(tok: Any, texts: Sequence[str], counter: TokenCounter | None = None) -> list[TextFeatures]:
    """Features of each text against the tokenizer, counted as the server counts them (`TokenCounter`).

    Args:
        tok: a tokenizer from `load_feature_tokenizer` (any `tokenizers.Tokenizer` without padding).
        texts: the texts.
        counter: the tokenizer's counter (None: built here).

    Returns:
        One TextFeatures per text, in order.
    """
    counter = counter or TokenCounter(tok)
    encs = [tok.encode(t, add_special_tokens=True) for t in texts]
    width = max((len(e.ids) for e in encs), default=0)
    ids = np.zeros((len(encs), width), dtype=np.int64)
    mask = np.zeros((len(encs), width), dtype=np.int64)
    for row, e in enumerate(encs):
        ids[row, : len(e.ids)], mask[row, : len(e.ids)] = e.ids, 1
    counts = counter.counts(ids, mask)
    return [
        TextFeatures(text_hash(t), len(t), int(c[0]), float(c[1]), float(c[2]))
        for t, c in zip(texts, counts, strict=True)
    ]
