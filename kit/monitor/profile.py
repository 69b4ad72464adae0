"""The reference profile: per-feature sketches, the embedding reference and the calibration, made once per model.
Saved as a directory (profile.json + the anchor sample as Parquet + embeddings as .npy) a DVC stage can output."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel

from kit.core.io import atomic_path, write_text
from kit.monitor.calibrate import Calibration, CalibrationSettings, calibrate
from kit.monitor.embedding import MMDReference
from kit.monitor.features import DEFAULT_FEATURES, FeatureSpec, MonitorError, check_frame

__all__ = ["FeatureSketch", "EmbeddingInfo", "ReferenceProfile", "Reference", "build_reference", "sketch"]

QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
PROFILE, SAMPLE, EMBEDDINGS = "profile.json", "reference.parquet", "embeddings.npy"


class FeatureSketch(BaseModel):
    """Summary of one feature in the reference: quantiles and moments (numeric) or class shares (categorical)."""

    kind: str
    rows: int
    mean: float | None = None
    std: float | None = None
    quantiles: dict[str, float] = {}
    shares: dict[str, float] = {}


class EmbeddingInfo(BaseModel):
    """The embedding reference's shape and the RBF bandwidth fixed from it."""

    rows: int
    dim: int
    bandwidth: float


class ReferenceProfile(BaseModel):
    """What the monitor keeps about the reference: JSON, written once by the stage and never recomputed."""

    model_version: str
    features: list[FeatureSpec]
    sketches: dict[str, FeatureSketch]
    embedding: EmbeddingInfo | None
    calibration: Calibration


@dataclass(frozen=True)
class Reference:
    """A profile with the anchor sample windows are compared with (and its embeddings, when monitored)."""

    profile: ReferenceProfile
    sample: pd.DataFrame
    embeddings: np.ndarray | None = None

    @cached_property
    def mmd(self) -> MMDReference | None:
        """The embedding reference with the stored bandwidth (None without embeddings)."""
        if self.embeddings is None or self.profile.embedding is None:
            return None
        return MMDReference.fit(self.embeddings, bandwidth=self.profile.embedding.bandwidth)

    def save(self, directory: str | Path) -> Path:
        """Write profile.json, reference.parquet and (with embeddings) embeddings.npy under `directory`."""
        out = Path(directory)
        with atomic_path(out / SAMPLE, suffix=".parquet") as tmp:
            self.sample.to_parquet(tmp, index=False)
        if self.embeddings is not None:
            with atomic_path(out / EMBEDDINGS, suffix=".npy") as tmp:
                np.save(tmp, self.embeddings.astype(np.float32))
        write_text(out / PROFILE, self.profile.model_dump_json(indent=1) + "\n")
        return out

    @classmethod
    def load(cls, directory: str | Path) -> Reference:
        """Read a reference saved by `save`; names the missing file."""
        d = Path(directory)
        if not (d / PROFILE).is_file():
            raise MonitorError(f"{d / PROFILE}: reference file missing (build the reference profile first)")
        profile = ReferenceProfile.model_validate(json.loads((d / PROFILE).read_text()))
        for name in (SAMPLE, EMBEDDINGS) if profile.embedding is not None else (SAMPLE,):
            if not (d / name).is_file():
                raise MonitorError(f"{d / name}: reference file missing beside {PROFILE} (rebuild the reference)")
        emb = np.load(d / EMBEDDINGS).astype(np.float64) if profile.embedding is not None else None
        return cls(profile=profile, sample=pd.read_parquet(d / SAMPLE), embeddings=emb)


def sketch(values: pd.Series, spec: FeatureSpec) -> FeatureSketch:
    """The sketch of one feature's reference values."""
    if spec.kind == "categorical":
        shares = values.astype(str).value_counts(normalize=True).sort_index()
        return FeatureSketch(kind=spec.kind, rows=len(values), shares={k: float(v) for k, v in shares.items()})
    q = values.astype(float).quantile(list(QUANTILES))
    return FeatureSketch(
        kind=spec.kind, rows=len(values), mean=float(values.mean()), std=float(values.std()),
        quantiles={f"q{int(p * 100):02d}": float(v) for p, v in zip(QUANTILES, q, strict=True)},
    )  # fmt: skip


def build_reference(
    frame: pd.DataFrame,
    embeddings: np.ndarray | None = None,
    *,
    model_version: str,
    features: Sequence[FeatureSpec] = DEFAULT_FEATURES,
    settings: CalibrationSettings | None = None,
    anchor_rows: int | None = None,
    embedding_rows: int = 500,
) -> Reference:
    """Split a reference sample (seeded) into the anchor windows are compared with and a pool for null windows,
    sketch the features and calibrate every threshold.

    Args:
        frame: the reference features (e.g. the validation split through the serving model), one row per text.
        embeddings: pooled sentence embeddings row-aligned with `frame` (None: no embedding drift).
        model_version: the serving model's version; verdicts refuse windows of another one.
        features: the tabular features and their Evidently methods.
        settings: calibration settings (target, method, window size, seed).
        anchor_rows: rows kept as the anchor (default: half the sample); the rest is the null pool.
        embedding_rows: anchor rows whose embeddings MMD^2 compares with (bounds its cost per window).

    Returns:
        The reference (profile with calibration, anchor sample, anchor embeddings).
    """
    s = settings or CalibrationSettings()
    check_frame(frame, features, "reference")
    if embeddings is not None and len(embeddings) != len(frame):
        raise MonitorError(f"reference embeddings have {len(embeddings)} rows, the features {len(frame)}")
    order = np.random.default_rng(s.seed).permutation(len(frame))
    n_anchor = anchor_rows or len(frame) // 2
    a_idx, p_idx = order[:n_anchor], order[n_anchor:]
    anchor = frame.iloc[a_idx].reset_index(drop=True)[[f.name for f in features]]
    mmd, emb, info = None, None, None
    if embeddings is not None:
        # float32 as saved, so a loaded reference scores windows exactly as the one calibrated here
        emb = np.asarray(embeddings, dtype=np.float32)[a_idx[:embedding_rows]].astype(np.float64)
        mmd = MMDReference.fit(emb)
        info = EmbeddingInfo(rows=emb.shape[0], dim=emb.shape[1], bandwidth=mmd.bandwidth)
    pool_emb = None if embeddings is None else np.asarray(embeddings, dtype=np.float64)[p_idx]
    anchor_emb = None if embeddings is None else np.asarray(embeddings, dtype=np.float64)[a_idx]
    cal = calibrate(
        anchor, frame.iloc[p_idx].reset_index(drop=True), features, model_version=model_version, settings=s,
        mmd=mmd, pool_embeddings=pool_emb, anchor_embeddings=anchor_emb,
    )  # fmt: skip
    profile = ReferenceProfile(
        model_version=model_version, features=list(features), embedding=info, calibration=cal,
        sketches={f.name: sketch(frame[f.name], f) for f in features},
    )  # fmt: skip
    return Reference(profile=profile, sample=anchor, embeddings=emb)
