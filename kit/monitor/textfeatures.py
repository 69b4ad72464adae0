"""Per-text features against the served tokenizer (length, unknown-token and subword-split rates) and a stable hash,
so a prediction log or a reference sample carries what drift is judged on and never the raw text."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kit.monitor.features import MonitorError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["TextFeatures", "load_feature_tokenizer", "text_hash", "text_features", "features_frame", "HASH_CHARS"]

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
    """The serving dir's tokenizer (kit.serve's loader), without padding or truncation so lengths are the texts' own.

    Args:
        model_dir: the serving dir (tokenizer.json inside it).

    Raises:
        MonitorError: tokenizer.json is missing or cannot be loaded (names it).
    """
    from kit.core.errors import ModelDirError
    from kit.serve.model import load_tokenizer

    path = Path(model_dir) / "tokenizer.json"
    if not path.is_file():
        raise MonitorError(f"{path}: tokenizer.json missing from the serving dir")
    try:
        tok = load_tokenizer(path, max_length=8192)
    except ModelDirError as exc:
        raise MonitorError(str(exc)) from None
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


def features_frame(
    tok: Any,
    texts: Sequence[str],
    labels: Sequence[str] | None = None,
    confidences: Sequence[float] | None = None,
) -> pd.DataFrame:
    """The feature table of a batch of texts: DEFAULT_FEATURES' text columns plus text_hash, and label/confidence
    when predictions are given.

    Args:
        tok: a tokenizer from `load_feature_tokenizer`.
        texts: the texts.
        labels: predicted labels, row-aligned (None: no label column).
        confidences: predicted-class probabilities, row-aligned (None: no confidence column).

    Returns:
        One row per text.

    Raises:
        MonitorError: labels or confidences are not row-aligned with the texts.
    """
    import pandas as pd

    for name, values in (("labels", labels), ("confidences", confidences)):
        if values is not None and len(values) != len(texts):
            raise MonitorError(f"features_frame: {len(values)} {name} for {len(texts)} texts")
    frame = pd.DataFrame([vars(f) for f in text_features(tok, texts)], columns=list(TextFeatures.__annotations__))
    if labels is not None:
        frame["label"] = [str(v) for v in labels]
    if confidences is not None:
        frame["confidence"] = [float(v) for v in confidences]
    return frame
