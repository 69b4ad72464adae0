"""The verdict on one window of predictions: per feature its score, calibrated threshold and whether it drifted,
and the window's decision after multiple-testing control ("not enough data" when the window is too small)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import BaseModel

from kit.monitor.calibrate import score_window
from kit.monitor.features import MonitorError, check_frame

if TYPE_CHECKING:
    import pandas as pd

    from kit.monitor.profile import Reference

__all__ = ["FeatureVerdict", "WindowVerdict", "window_verdict", "NOT_ENOUGH_DATA", "DRIFT", "NO_DRIFT"]

DRIFT, NO_DRIFT, NOT_ENOUGH_DATA = "drift", "no drift", "not enough data"


class FeatureVerdict(BaseModel):
    """One feature in one window: Evidently's score, its calibrated p-value and threshold, and the decision."""

    method: str
    score: float
    p_value: float  # empirical, from the null windows of the calibration
    threshold: float  # score boundary at the level the window was judged at
    lower_is_drift: bool
    drifted: bool


class WindowVerdict(BaseModel):
    """The decision on one window; `features` is empty when there was not enough data."""

    status: Literal["drift", "no drift", "not enough data"]
    rows: int
    min_rows: int
    model_version: str
    method: str
    level: float  # per-feature p-value level after Bonferroni / Benjamini-Hochberg
    features: dict[str, FeatureVerdict]

    @property
    def drifted_features(self) -> list[str]:
        """Names of the features that drifted in this window."""
        return [name for name, f in self.features.items() if f.drifted]


def window_verdict(
    reference: Reference,
    window: pd.DataFrame,
    embeddings: np.ndarray | None = None,
    *,
    model_version: str,
    min_rows: int = 50,
) -> WindowVerdict:
    """Judge one window against the reference and its calibrated thresholds.

    Args:
        reference: the reference (profile, calibration, anchor sample and embeddings).
        window: the window's features, one row per prediction.
        embeddings: the window's pooled embeddings, row-aligned (None: the embedding feature is not tested).
        model_version: the model that served the window; must be the one the reference was made for.
        min_rows: below this many rows the window is "not enough data", never "drift".

    Returns:
        The verdict.

    Raises:
        MonitorError: the reference was made for another model version, or the window lacks a feature.
    """
    prof = reference.profile
    if model_version != prof.model_version:
        raise MonitorError(
            f"reference profile was made for model version {prof.model_version!r}, "
            f"the window was served by {model_version!r}: rebuild the reference for this model"
        )
    cal = prof.calibration
    base = {"rows": len(window), "min_rows": min_rows, "model_version": model_version, "method": cal.method}
    if len(window) < max(min_rows, 2):
        return WindowVerdict(status=NOT_ENOUGH_DATA, level=cal.alpha_feature, features={}, **base)
    check_frame(window, prof.features, "window")
    if embeddings is not None and len(embeddings) != len(window):
        raise MonitorError(f"window embeddings have {len(embeddings)} rows, the window {len(window)}")
    scores = score_window(reference.sample, window, prof.features, mmd=reference.mmd, window_embeddings=embeddings)
    pvals, level = cal.decide(scores)
    features = {
        name: FeatureVerdict(
            method=cal.features[name].method,
            score=scores[name],
            p_value=p,
            threshold=cal.features[name].threshold_at(level),
            lower_is_drift=cal.features[name].lower_is_drift,
            drifted=bool(p <= level),
        )  # fmt: skip
        for name, p in pvals.items()
    }
    status = DRIFT if any(f.drifted for f in features.values()) else NO_DRIFT
    return WindowVerdict(status=status, level=level, features=features, **base)
