"""Drift thresholds calibrated by replaying reference-vs-reference windows, with multiple-testing control.
Fixed p < 0.05 per feature alarms on most windows; here each feature's threshold comes from its null distribution."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from kit.monitor.drift import feature_scores
from kit.monitor.embedding import MMDReference, mmd2
from kit.monitor.features import EMBEDDING_FEATURE, FeatureSpec, MonitorError

__all__ = ["CalibrationSettings", "FeatureCalibration", "Calibration", "calibrate", "score_window", "bh_level"]

_BATCH = 200  # null windows replayed between checks of the false-alarm rate


class CalibrationSettings(BaseModel):
    """How thresholds are calibrated (defaults as the monitor stage's params will name them).

    Args:
        target: false-alarm rate per window over all features together.
        method: multiple-testing control across features: Bonferroni or Benjamini-Hochberg.
        window_size: rows per window; thresholds hold for windows of this size.
        min_tail: null windows each feature's tail quantile must rest on; sets how many windows are replayed.
        n_null: replay exactly this many null windows (None: from `min_tail`).
        max_null: never replay more windows than this.
        resample_anchor: draw each null window's own anchor (of the anchor's size) and window, disjoint, from the
            whole reference. A fixed anchor and pool leave out how far the anchor itself sits from the population,
            and live windows then alarm more often than the target; resampling puts that spread into the null.
        seed: seeds the random windows.
    """

    model_config = ConfigDict(extra="forbid")

    target: float = Field(0.01, gt=0, lt=1)
    method: Literal["bonferroni", "bh"] = "bh"
    window_size: int = Field(200, ge=2)
    min_tail: int = Field(2, ge=1)
    n_null: int | None = Field(None, ge=10)
    max_null: int = Field(4000, ge=10)
    resample_anchor: bool = True
    seed: int = 0


class FeatureCalibration(BaseModel):
    """One feature's null distribution (scores of the replayed windows, in replay order) and its threshold."""

    method: str
    lower_is_drift: bool
    threshold: float
    null_scores: list[float]  # replay order, so the windows' joint scores survive for re-deciding

    def _null(self) -> np.ndarray:
        # Sorted on use (tens of microseconds): a cached copy would take part in pydantic's equality.
        return np.sort(np.asarray(self.null_scores, dtype=float))

    def p_value(self, score: float) -> float:
        """Empirical p-value: the share of null windows (plus the window itself) at least as extreme as `score`."""
        null = self._null()
        if self.lower_is_drift:
            count = int(np.searchsorted(null, score, side="right"))
        else:
            count = len(null) - int(np.searchsorted(null, score, side="left"))
        return (1 + count) / (len(null) + 1)

    def threshold_at(self, alpha: float) -> float:
        """The score boundary where the empirical p-value reaches `alpha`: drift below it for p-value methods,
        above it for distances (infinite when there are too few null windows to reach `alpha`)."""
        null = self._null()
        m = math.floor(alpha * (len(null) + 1) + 1e-9) - 1  # null windows allowed beyond the threshold
        if m < 0:
            return -math.inf if self.lower_is_drift else math.inf
        return float(null[m] if self.lower_is_drift else null[len(null) - 1 - m])


class Calibration(BaseModel):
    """Calibrated thresholds for one model version and window size; JSON-serialisable, stored as a DVC output."""

    model_version: str
    window_size: int
    n_null: int
    target: float
    method: Literal["bonferroni", "bh"]
    seed: int
    alpha_feature: float  # the per-feature level (target / number of features)
    null_false_alarm_rate: float  # windows of the replay itself that the decision rule flags
    features: dict[str, FeatureCalibration]

    @property
    def thresholds(self) -> dict[str, float]:
        """Per-feature threshold at the per-feature level (feature -> score boundary)."""
        return {name: f.threshold for name, f in self.features.items()}

    def decide(self, scores: dict[str, float]) -> tuple[dict[str, float], float]:
        """Empirical p-values of a window's scores and the level they are compared with (p <= level is drift).

        Args:
            scores: feature -> score; features without a calibration are ignored.

        Returns:
            (feature -> empirical p-value, the level after Bonferroni or Benjamini-Hochberg control).
        """
        pvals = {n: self.features[n].p_value(s) for n, s in scores.items() if n in self.features}
        if self.method == "bonferroni":
            return pvals, self.alpha_feature
        return pvals, bh_level(list(pvals.values()), self.target, m=len(self.features))

    def replay_false_alarm_rate(self) -> float:
        """Share of the replayed null windows this calibration's decision rule flags as drift."""
        names = list(self.features)
        rows = zip(*(self.features[n].null_scores for n in names), strict=True)
        decisions = (self.decide(dict(zip(names, r, strict=True))) for r in rows)
        return sum(any(p <= level for p in pv.values()) for pv, level in decisions) / self.n_null

    def with_method(self, method: Literal["bonferroni", "bh"]) -> Calibration:
        """The same null replay judged with another multiple-testing control (no windows are replayed again)."""
        cal = self.model_copy(update={"method": method})
        return cal.model_copy(update={"null_false_alarm_rate": cal.replay_false_alarm_rate()})


def bh_level(pvalues: Sequence[float], q: float, *, m: int | None = None) -> float:
    """Benjamini-Hochberg's step-up level: p-values at or below it are rejected (q / m when none is).

    Args:
        pvalues: one p-value per tested feature.
        q: the false-discovery (here: window false-alarm) rate.
        m: number of hypotheses (default: len(pvalues)); features not scored this window still count.
    """
    m = m or len(pvalues)
    ranked = np.sort(np.asarray(pvalues, dtype=float))
    passing = np.nonzero(ranked <= q * np.arange(1, len(ranked) + 1) / m)[0]
    return q * (int(passing[-1]) + 1 if passing.size else 1) / m


def score_window(
    anchor: pd.DataFrame,
    window: pd.DataFrame,
    features: Sequence[FeatureSpec],
    *,
    mmd: MMDReference | None = None,
    window_embeddings: np.ndarray | None = None,
) -> dict[str, float]:
    """Every drift score of one window: Evidently's per feature, plus MMD^2 when both embedding inputs are given."""
    scores = feature_scores(anchor, window, features)
    if mmd is not None and window_embeddings is not None:
        scores[EMBEDDING_FEATURE] = mmd2(mmd, window_embeddings)
    return scores


class _Source:
    """Where null windows come from: the anchor and the pool (and their embeddings), and how they are drawn."""

    def __init__(
        self,
        anchor: pd.DataFrame,
        pool: pd.DataFrame,
        features: Sequence[FeatureSpec],
        *,
        mmd: MMDReference | None,
        anchor_emb: np.ndarray | None,
        pool_emb: np.ndarray | None,
        s: CalibrationSettings,
    ):
        self.anchor, self.pool, self.features, self.mmd, self.size = anchor, pool, features, mmd, s.window_size
        self.pool_emb = pool_emb if mmd is not None else None
        self.resample = s.resample_anchor
        if self.resample:
            self.union = pd.concat([anchor, pool], ignore_index=True)
            self.union_emb: np.ndarray | None = None
            if mmd is not None and anchor_emb is not None and pool_emb is not None:
                self.union_emb = np.concatenate([anchor_emb, pool_emb])

    def window(self, rng: np.random.Generator) -> dict[str, float]:
        """The scores of one null window."""
        if not self.resample:
            idx = rng.choice(len(self.pool), self.size, replace=False)  # never repeats a row, never the anchor's
            emb = self.pool_emb[idx] if self.pool_emb is not None else None
            return score_window(self.anchor, self.pool.iloc[idx], self.features, mmd=self.mmd, window_embeddings=emb)
        order = rng.permutation(len(self.union))
        a_idx, w_idx = order[: len(self.anchor)], order[len(self.anchor) : len(self.anchor) + self.size]
        mmd, emb = None, None
        if self.union_emb is not None and self.mmd is not None:
            mmd = MMDReference.fit(self.union_emb[a_idx[: self.mmd.x.shape[0]]], bandwidth=self.mmd.bandwidth)
            emb = self.union_emb[w_idx]
        return score_window(
            self.union.iloc[a_idx], self.union.iloc[w_idx], self.features, mmd=mmd, window_embeddings=emb
        )


def _replay(source: _Source, n: int, rng: np.random.Generator) -> list[dict[str, float]]:
    return [source.window(rng) for _ in range(n)]


def _build(
    null: list[dict[str, float]], kinds: dict[str, tuple[str, bool]], *, s: CalibrationSettings, version: str
) -> Calibration:
    alpha = s.target / len(kinds)
    feats = {}
    for name, (method, lower) in kinds.items():
        fc = FeatureCalibration(method=method, lower_is_drift=lower, threshold=0.0, null_scores=[w[name] for w in null])
        feats[name] = fc.model_copy(update={"threshold": fc.threshold_at(alpha)})
    cal = Calibration(
        model_version=version, window_size=s.window_size, n_null=len(null), target=s.target, method=s.method,
        seed=s.seed, alpha_feature=alpha, null_false_alarm_rate=0.0, features=feats,
    )  # fmt: skip
    return cal.model_copy(update={"null_false_alarm_rate": cal.replay_false_alarm_rate()})


def calibrate(
    anchor: pd.DataFrame,
    pool: pd.DataFrame,
    features: Sequence[FeatureSpec],
    *,
    model_version: str,
    settings: CalibrationSettings | None = None,
    mmd: MMDReference | None = None,
    pool_embeddings: np.ndarray | None = None,
    anchor_embeddings: np.ndarray | None = None,
) -> Calibration:
    """Replay random windows of `pool` (reference rows the anchor does not hold) against the anchor until every
    feature's tail rests on `min_tail` null windows and the replay's own false-alarm rate is at most the target.

    Args:
        anchor: the reference sample every window is compared with.
        pool: held-out reference rows the null windows are drawn from (same distribution, disjoint from anchor).
        features: the tabular features.
        model_version: the model the reference was made with; verdicts refuse other versions.
        settings: target, method, window size, replay sizes, seed.
        mmd: the fitted embedding reference (with `pool_embeddings`, row-aligned with `pool`) to calibrate MMD^2.
        anchor_embeddings: the anchor's embeddings, row-aligned with `anchor` (needed to resample anchors for MMD^2).

    Returns:
        The calibration.
    """
    s = settings or CalibrationSettings()
    if len(pool) < 2 * s.window_size:
        raise MonitorError(f"calibration pool has {len(pool)} rows; need at least 2 windows of {s.window_size}")
    kinds = {f.name: (f.method, f.lower_is_drift) for f in features}
    if mmd is not None and pool_embeddings is not None:
        kinds[EMBEDDING_FEATURE] = ("mmd2", False)
    need = s.n_null or min(s.max_null, math.ceil(s.min_tail * len(kinds) / s.target))
    if (need + 1) * s.target / len(kinds) < 1:
        raise MonitorError(f"{need} null windows cannot resolve a per-feature level of {s.target / len(kinds):.2g}")
    if s.resample_anchor and mmd is not None and pool_embeddings is not None and anchor_embeddings is None:
        raise MonitorError("calibrate: resampling anchors for MMD^2 needs anchor_embeddings (row-aligned with anchor)")
    source = _Source(anchor, pool, features, mmd=mmd, anchor_emb=anchor_embeddings, pool_emb=pool_embeddings, s=s)
    rng = np.random.default_rng(s.seed)
    null = _replay(source, need, rng)
    cal = _build(null, kinds, s=s, version=model_version)
    while s.n_null is None and cal.null_false_alarm_rate > s.target and len(null) < s.max_null:
        null += _replay(source, _BATCH, rng)
        cal = _build(null, kinds, s=s, version=model_version)
    return cal
