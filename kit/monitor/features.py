"""The tabular features a window of predictions is judged on, and the monitor's error type.
Each feature names its kind (numeric or categorical) and the Evidently drift method that scores it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict

from kit.core.errors import KitError

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "MonitorError",
    "FeatureSpec",
    "DEFAULT_FEATURES",
    "PVALUE_METHODS",
    "EMBEDDING_FEATURE",
    "check_frame",
]

# Evidently methods whose drift score is a p-value (small = drift); every other method scores a distance.
PVALUE_METHODS = frozenset(
    {"ks", "chisquare", "z", "anderson", "cramer_von_mises", "es", "fisher_exact", "g_test", "mannw", "t_test"}
)
# The name the embedding drift (MMD^2) takes beside the tabular features in calibrations and verdicts.
EMBEDDING_FEATURE = "embedding_mmd2"


class MonitorError(KitError):
    """Monitoring input is unusable: a missing feature, a reference for another model version, too small a sample."""


class FeatureSpec(BaseModel):
    """One tabular feature of a prediction window.

    Args:
        name: column name in the window's DataFrame.
        kind: numeric or categorical (Evidently's column type).
        method: Evidently drift method; a p-value method (`PVALUE_METHODS`) or a distance.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    kind: Literal["numeric", "categorical"]
    method: str = "ks"

    @property
    def lower_is_drift(self) -> bool:
        """True when a smaller score means more drift (p-values), False for distances."""
        return self.method in PVALUE_METHODS


DEFAULT_FEATURES: tuple[FeatureSpec, ...] = (
    FeatureSpec(name="length_chars", kind="numeric"),
    FeatureSpec(name="length_tokens", kind="numeric"),
    FeatureSpec(name="unk_rate", kind="numeric"),
    FeatureSpec(name="subword_rate", kind="numeric"),
    FeatureSpec(name="confidence", kind="numeric"),
    FeatureSpec(name="label", kind="categorical", method="chisquare"),
)


def check_frame(frame: pd.DataFrame, features: Sequence[FeatureSpec], what: str) -> None:
    """Raise MonitorError naming the features `frame` lacks or holds nulls in.

    Args:
        frame: a reference sample or a window of predictions.
        features: the features it must hold.
        what: how the error names the frame ("reference", "window 3").
    """
    missing = [f.name for f in features if f.name not in frame.columns]
    if missing:
        raise MonitorError(f"{what}: missing feature column(s) {', '.join(missing)} (has {', '.join(frame.columns)})")
    nulls = [f.name for f in features if frame[f.name].isna().any()]
    if nulls:
        raise MonitorError(f"{what}: null values in feature column(s) {', '.join(nulls)}")
