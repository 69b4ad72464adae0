"""Per-text features against the served tokenizer (length, unknown-token and subword-split rates) and a stable hash,
so a prediction log or a reference sample carries what drift is judged on and never the raw text. Torch- and pandas-free."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kit.core.errors import ModelDirError

__all__ = ["TextFeatures", "load_feature_tokenizer", "text_hash", "text_features", "HASH_CHARS"]

HASH_CHARS = 16  # 64 bits of sha256: collisions are negligible at log sizes, and the log stays small


@dataclass(frozen=True)
class TextFeatures:
    """The features of one text: lengths, the share of unknown tokens and of words split into several pieces."""

    text_hash: str
    length_chars: int
    length_tokens: int
    unk_rate: float
    subword_rate: float


def load_feature_tokenizer(model_dir: str | Path) -> Any:
    """The serving dir's tokenizer (the server's loader), without padding or truncation so lengths are the texts' own.

    Args:
        model_dir: the serving dir (tokenizer.json inside it).

    Raises:
        ModelDirError: tokenizer.json is missing or cannot be loaded (names it).
    """
    from kit.serve.model import load_tokenizer

    path = Path(model_dir) / "tokenizer.json"
    if not path.is_file():
        raise ModelDirError(f"{path}: tokenizer.json missing from the serving dir")
    tok = load_tokenizer(path, max_length=8192)
    tok.no_padding()
    tok.no_truncation()
    return tok


def text_hash(text: str) -> str:
    """A stable (unsalted) sha256 hex prefix of the UTF-8 text: equal texts give equal hashes across processes."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:HASH_CHARS]


def _unk_id(tok: Any) -> int | None:
    # WordPiece / BPE / Unigram models name their unknown token differently; byte-level BPE has none.
    unk = getattr(tok.model, "unk_token", None)
    if unk is None and hasattr(tok.model, "unk_id"):
        return tok.model.unk_id
    return None if unk is None else tok.token_to_id(unk)


def _features(text: str, enc: Any, unk_id: int | None) -> TextFeatures:
    # Special tokens ([CLS], [SEP]) belong to the model's framing, not to the text.
    ids = [i for i, special in zip(enc.ids, enc.special_tokens_mask, strict=True) if not special]
    pieces: dict[int, int] = {}
    for word in enc.word_ids:
        if word is not None:
            pieces[word] = pieces.get(word, 0) + 1
    n_unk = sum(1 for i in ids if i == unk_id) if unk_id is not None else 0
    return TextFeatures(
        text_hash=text_hash(text),
        length_chars=len(text),
        length_tokens=len(ids),
        unk_rate=n_unk / len(ids) if ids else 0.0,
        subword_rate=sum(1 for n in pieces.values() if n > 1) / len(pieces) if pieces else 0.0,
    )


def text_features(tok: Any, texts: Sequence[str]) -> list[TextFeatures]:
    """Features of each text, tokenized as one batch (the tokenizer's Rust side parallelizes it).

    Args:
        tok: a tokenizer from `load_feature_tokenizer` (any `tokenizers.Tokenizer` without padding).
        texts: the texts.

    Returns:
        One TextFeatures per text, in order.
    """
    unk_id = _unk_id(tok)
    encs = tok.encode_batch(list(texts), add_special_tokens=True)
    return [_features(t, e, unk_id) for t, e in zip(texts, encs, strict=True)]
