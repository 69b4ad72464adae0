"""Test helpers for the monitor's window and CLI: synthetic prediction-log records written by hand as JSONL (the
writer's record keys, optional float16 base64 embeddings) and a small calibrated reference built from the same."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from kit.monitor.calibrate import CalibrationSettings
from kit.monitor.features import FeatureSpec
from kit.monitor.profile import Reference, build_reference

__all__ = ["FEATS", "WINDOW", "EMB_DIM", "CALIBRATION", "features", "embeddings", "encode", "records", "write_log",
           "small_reference"]  # fmt: skip

FEATS = (
    FeatureSpec(name="length_chars", kind="numeric"),
    FeatureSpec(name="length_tokens", kind="numeric"),
    FeatureSpec(name="confidence", kind="numeric"),
    FeatureSpec(name="label", kind="categorical", method="chisquare"),
)
WINDOW, EMB_DIM = 120, 8
# Cheap calibration (a second or so); the stage's default replays many more windows at a stricter target.
CALIBRATION = CalibrationSettings(target=0.02, method="bh", window_size=WINDOW, min_tail=1, seed=0)
T0 = datetime(2026, 12, 1, tzinfo=UTC)


def features(n: int, *, seed: int, length_scale: float = 1.0, label_p=(0.3, 0.4, 0.3)) -> pd.DataFrame:
    """Prediction features shaped like the log's (lengths, confidence, label)."""
    rng = np.random.default_rng(seed)
    chars = np.round(rng.lognormal(np.log(80), 0.4, n) * length_scale).astype(int) + 1
    return pd.DataFrame(
        {
            "length_chars": chars,
            "length_tokens": np.maximum(1, chars // 4),
            "confidence": rng.beta(6, 2, n),
            "label": rng.choice(["negative", "neutral", "positive"], n, p=label_p),
        }
    )


def embeddings(n: int, *, seed: int, shift: float = 0.0, dim: int = EMB_DIM) -> np.ndarray:
    """Gaussian stand-ins for pooled sentence embeddings, exactly representable in float16 after rounding."""
    emb = np.random.default_rng(seed).normal(shift, 1.0, (n, dim))
    return emb.astype(np.float16).astype(np.float32)


def encode(vec: np.ndarray) -> str:
    """The writer's encoding: base64 of little-endian float16 bytes."""
    return base64.b64encode(np.asarray(vec, dtype="<f2").tobytes()).decode("ascii")


def records(
    frame: pd.DataFrame,
    *,
    version: str = "v1",
    start: datetime = T0,
    step_s: float = 1.0,
    emb: np.ndarray | None = None,
    prefix: str = "r",
) -> list[dict]:
    """Prediction-log records (the writer's keys) for a features frame, one per row, `step_s` apart."""
    out = []
    for i, row in enumerate(frame.itertuples(index=False)):
        rec = {
            "request_id": f"{prefix}{i:05d}",
            "time": (start + timedelta(seconds=i * step_s)).isoformat(timespec="milliseconds"),
            "text_hash": f"{i:064x}",
            "length_chars": int(row.length_chars),
            "length_tokens": int(row.length_tokens),
            "unk_rate": 0.0,
            "subword_rate": 0.1,
            "label": str(row.label),
            "confidence": float(row.confidence),
            "latency_ms": 5.0,
            "model_version": version,
        }
        if emb is not None:
            rec["embedding"] = encode(emb[i])
        out.append(rec)
    return out


def write_log(directory: Path, recs: list[dict], *, file_no: int = 1, extra_lines: tuple[str, ...] = ()) -> Path:
    """One closed log file named like the writer's, with optional raw (e.g. corrupt) lines appended."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"predictions-20261201T000000-1-{file_no:06d}.jsonl"
    lines = [json.dumps(r) for r in recs] + list(extra_lines)
    path.write_text("\n".join(lines) + "\n")
    return path


def small_reference(*, with_embeddings: bool = False, version: str = "v1") -> Reference:
    """A calibrated reference of 1200 synthetic rows (and 8-dim embeddings when asked)."""
    emb = embeddings(1200, seed=1) if with_embeddings else None
    return build_reference(
        features(1200, seed=1), emb, model_version=version, features=FEATS, settings=CALIBRATION, embedding_rows=200
    )
