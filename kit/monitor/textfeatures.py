"""The feature table of a batch of texts (pandas) for drift checks; the per-text features, the hash and the
feature tokenizer live in kit.serve.textfeatures (the server computes them for its prediction log) and are re-exported."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from kit.monitor.features import MonitorError
from kit.serve.textfeatures import HASH_CHARS, TextFeatures, load_feature_tokenizer, text_features, text_hash

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["TextFeatures", "load_feature_tokenizer", "text_hash", "text_features", "features_frame", "HASH_CHARS"]


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
