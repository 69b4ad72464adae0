"""Drift detection with calibrated thresholds (kit.monitor): a no-shift control stays near the target false-alarm
rate where fixed p < 0.05 does not, each shift is detected, and bad inputs are refused or reported, never as drift."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from kit.monitor.calibrate import Calibration, CalibrationSettings, bh_level, calibrate
from kit.monitor.drift import column_score, drift_report, feature_scores, report_scores, write_drift_report
from kit.monitor.embedding import MMDReference, median_bandwidth, mmd2, mmd_cost_per_1000
from kit.monitor.features import DEFAULT_FEATURES, EMBEDDING_FEATURE, MonitorError
from kit.monitor.profile import Reference, build_reference
from kit.monitor.verdict import DRIFT, NO_DRIFT, NOT_ENOUGH_DATA, window_verdict

LABELS = ("negative", "neutral", "positive")
BASE_P = (0.3, 0.4, 0.3)
DIM, WINDOW, TARGET, VERSION = 16, 200, 0.01, "model-v1"
CONTROL_WINDOWS = 100
# Class centres of the synthetic embeddings: a label-prior shift also moves them, as with a real encoder.
CENTRES = np.random.default_rng(123).normal(0, 1.0, (len(LABELS), DIM))


def predictions(n: int, *, seed: int, label_p=BASE_P, length_scale: float = 1.0, emb_shift: float = 0.0):
    """Synthetic prediction features shaped like the prediction log's, with row-aligned embeddings."""
    rng = np.random.default_rng(seed)
    label_idx = rng.choice(len(LABELS), n, p=np.asarray(label_p) / sum(label_p))
    chars = np.round(rng.lognormal(np.log(80), 0.5, n) * length_scale).astype(int) + 1
    tokens = np.maximum(1, np.round(chars / 4.2 + rng.normal(0, 2, n))).astype(int)
    frame = pd.DataFrame(
        {
            "length_chars": chars,
            "length_tokens": tokens,
            "unk_rate": rng.binomial(tokens, 0.01) / tokens,
            "subword_rate": rng.binomial(tokens, 0.15) / tokens,
            "confidence": rng.beta(6, 2, n),
            "label": np.asarray(LABELS)[label_idx],
        }
    )
    emb = CENTRES[label_idx] + rng.normal(0, 1.0, (n, DIM)) + emb_shift
    return frame, emb


@pytest.fixture(scope="module")
def reference() -> Reference:
    frame, emb = predictions(6000, seed=1)
    # min_tail=1 halves the replay (700 windows) to keep the suite quick; the stage default rests on 2.
    settings = CalibrationSettings(target=TARGET, method="bh", window_size=WINDOW, min_tail=1, seed=0)
    return build_reference(frame, emb, model_version=VERSION, settings=settings, embedding_rows=400)


@pytest.fixture(scope="module")
def bonferroni(reference) -> Reference:
    cal = reference.profile.calibration.with_method("bonferroni")
    profile = reference.profile.model_copy(update={"calibration": cal})
    return Reference(profile=profile, sample=reference.sample, embeddings=reference.embeddings)


@pytest.fixture(scope="module")
def control() -> list[tuple[pd.DataFrame, np.ndarray]]:
    # Unseen rows of the reference distribution, one fresh seed per window.
    return [predictions(WINDOW, seed=1000 + i) for i in range(CONTROL_WINDOWS)]


def _alarm_rate(ref: Reference, windows) -> float:
    verdicts = [window_verdict(ref, f, e, model_version=VERSION) for f, e in windows]
    return sum(v.status == DRIFT for v in verdicts) / len(verdicts)


def test_calibration_replays_enough_null_windows_and_meets_the_target(reference):
    cal = reference.profile.calibration
    assert set(cal.features) == {f.name for f in DEFAULT_FEATURES} | {EMBEDDING_FEATURE}
    assert cal.window_size == WINDOW and cal.model_version == VERSION and cal.method == "bh"
    # Each per-feature level (target / 7) must be resolvable by the empirical p-values.
    assert cal.n_null >= 700 and 1 / (cal.n_null + 1) <= cal.alpha_feature == pytest.approx(TARGET / 7)
    assert cal.null_false_alarm_rate <= TARGET
    ks = cal.features["length_chars"]
    assert ks.lower_is_drift and 0 < ks.threshold < 0.05  # far stricter than p < 0.05
    assert not cal.features[EMBEDDING_FEATURE].lower_is_drift


def test_control_false_alarms_stay_near_target_where_fixed_p_005_alarms_often(reference, bonferroni, control):
    calibrated = {"bh": _alarm_rate(reference, control), "bonferroni": _alarm_rate(bonferroni, control)}
    p_value_features = [f for f in DEFAULT_FEATURES if f.lower_is_drift]
    uncalibrated = np.mean(
        [min(feature_scores(reference.sample, f, p_value_features).values()) < 0.05 for f, _ in control]
    )
    print(f"control false-alarm rate over {CONTROL_WINDOWS} windows: {calibrated}; p<0.05: {uncalibrated:.2f}")
    assert all(rate <= 3 * TARGET for rate in calibrated.values()), calibrated
    assert uncalibrated >= 0.1 and uncalibrated > 5 * max(calibrated["bh"], 1 / CONTROL_WINDOWS)


@pytest.mark.parametrize(
    "shift, expected",
    [
        ({"length_scale": 1.4}, {"length_chars", "length_tokens"}),
        ({"label_p": (0.9, 0.4, 0.3)}, {"label"}),  # one class tripled
        ({"emb_shift": 0.25}, {EMBEDDING_FEATURE}),
    ],
    ids=["length", "label-prior", "embedding-mean"],
)
@pytest.mark.parametrize("method", ["bh", "bonferroni"])
def test_each_shift_is_detected_by_the_feature_it_moves(reference, bonferroni, shift, expected, method):
    ref = reference if method == "bh" else bonferroni
    frame, emb = predictions(WINDOW, seed=77, **shift)
    verdict = window_verdict(ref, frame, emb, model_version=VERSION)
    assert verdict.status == DRIFT and expected <= set(verdict.drifted_features), verdict.features
    for name in expected:
        f = verdict.features[name]
        assert (f.score < f.threshold) if f.lower_is_drift else (f.score > f.threshold)
    # The same seed without the shift is a quiet window: the shift, not the seed, made the verdict.
    quiet = window_verdict(ref, *predictions(WINDOW, seed=77), model_version=VERSION)
    assert quiet.status == NO_DRIFT and not quiet.drifted_features


def test_bh_rejects_at_least_what_bonferroni_does():
    p = [0.001, 0.008, 0.039, 0.041, 0.042, 0.06, 0.074, 0.205]
    assert bh_level(p, 0.05) == pytest.approx(2 * 0.05 / 8)  # two rejections (the textbook example)
    assert bh_level([0.5, 0.9], 0.05) == pytest.approx(0.05 / 2)  # none: the Bonferroni level, which nothing meets
    assert bh_level([0.01, 0.02], 0.05, m=4) == pytest.approx(0.025)


def test_too_few_rows_is_not_enough_data_never_drift(reference):
    frame, emb = predictions(30, seed=5, length_scale=3.0, label_p=(0.9, 0.05, 0.05))
    verdict = window_verdict(reference, frame, emb, model_version=VERSION, min_rows=50)
    assert verdict.status == NOT_ENOUGH_DATA and verdict.features == {} and verdict.rows == 30
    empty = window_verdict(reference, frame.iloc[:0], model_version=VERSION)  # an empty log's window
    assert empty.status == NOT_ENOUGH_DATA and empty.rows == 0
    # The same rows with a lower minimum are judged, and they are drift: the gate above is what held it back.
    assert window_verdict(reference, frame, emb, model_version=VERSION, min_rows=20).status == DRIFT


def test_a_reference_for_another_model_version_is_refused(reference):
    frame, emb = predictions(WINDOW, seed=3)
    with pytest.raises(MonitorError, match="model-v1.*model-v2"):
        window_verdict(reference, frame, emb, model_version="model-v2")


def test_a_window_missing_a_feature_names_it(reference):
    frame, _ = predictions(WINDOW, seed=3)
    with pytest.raises(MonitorError, match="confidence"):
        window_verdict(reference, frame.drop(columns="confidence"), model_version=VERSION)


def test_calibration_and_profile_round_trip_through_json(reference, tmp_path):
    cal = reference.profile.calibration
    back = Calibration.model_validate_json(json.dumps(json.loads(cal.model_dump_json())))
    assert back == cal and back.thresholds == cal.thresholds
    reference.save(tmp_path / "ref")
    loaded = Reference.load(tmp_path / "ref")
    assert loaded.profile == reference.profile
    assert loaded.profile.sketches["label"].shares.keys() == set(LABELS)
    assert loaded.profile.sketches["length_chars"].quantiles["q50"] > 0
    frame, emb = predictions(WINDOW, seed=9, emb_shift=0.25)
    a = window_verdict(reference, frame, emb, model_version=VERSION)
    b = window_verdict(loaded, frame, emb, model_version=VERSION)
    assert a.status == b.status and a.drifted_features == b.drifted_features
    assert a.features[EMBEDDING_FEATURE].score == pytest.approx(b.features[EMBEDDING_FEATURE].score, rel=1e-4)
    with pytest.raises(MonitorError, match="profile.json"):
        Reference.load(tmp_path / "nothing-here")
    (tmp_path / "ref" / "embeddings.npy").unlink()
    with pytest.raises(MonitorError, match="embeddings.npy"):
        Reference.load(tmp_path / "ref")


def test_too_few_null_windows_for_the_level_is_refused(reference):
    frame, _ = predictions(1000, seed=4)
    settings = CalibrationSettings(target=0.01, window_size=50, n_null=100)  # 1/101 > 0.01/6
    with pytest.raises(MonitorError, match="cannot resolve"):
        calibrate(frame[:500], frame[500:], DEFAULT_FEATURES, model_version=VERSION, settings=settings)


def test_evidently_scores_are_p_values_for_ks_and_flag_a_shift(reference):
    spec = DEFAULT_FEATURES[0]
    same = column_score(reference.sample[spec.name], predictions(WINDOW, seed=2)[0][spec.name], spec)
    moved = column_score(reference.sample[spec.name], predictions(WINDOW, seed=2, length_scale=1.4)[0][spec.name], spec)
    assert 0 <= moved < 1e-6 < 0.05 < same <= 1


def test_the_report_shows_the_scores_the_verdict_used(reference):
    # The HTML report and the verdict must tell the same story: Evidently's ValueDrift values are our scores.
    frame, _ = predictions(WINDOW, seed=11, length_scale=1.1)
    shown = report_scores(drift_report(reference.sample, frame, features=DEFAULT_FEATURES))
    used = feature_scores(reference.sample, frame, DEFAULT_FEATURES)
    assert shown.keys() == used.keys() and all(shown[k] == pytest.approx(used[k], rel=1e-9) for k in used)
    assert min(used.values()) < 0.05  # a moved window, so the comparison is not between two sets of ones


def test_evidently_html_report_is_written_atomically(reference, tmp_path):
    frame, _ = predictions(WINDOW, seed=11, length_scale=1.4)
    out = write_drift_report(
        reference.sample, frame, tmp_path / "monitor" / "length.html",
        features=DEFAULT_FEATURES, thresholds=reference.profile.calibration.thresholds,
    )  # fmt: skip
    html = out.read_text()
    assert html.lstrip().lower().startswith("<!doctype html") or "<html" in html[:500].lower()
    assert all(f.name in html for f in DEFAULT_FEATURES)
    assert [p.name for p in out.parent.iterdir()] == ["length.html"]  # no temp file left behind


def test_mmd_is_near_zero_without_shift_and_grows_with_it():
    x = np.random.default_rng(0).normal(size=(400, DIM))
    ref = MMDReference.fit(x)
    assert ref.bandwidth == pytest.approx(median_bandwidth(x))
    same = [mmd2(ref, np.random.default_rng(s).normal(size=(200, DIM))) for s in range(1, 6)]
    moved = mmd2(ref, np.random.default_rng(9).normal(size=(200, DIM)) + 0.5)
    assert max(abs(v) for v in same) < 0.01 < moved
    with pytest.raises(MonitorError, match="dim"):
        mmd2(ref, np.zeros((10, DIM + 1)))


def test_mmd_cost_per_1000_texts_is_measured(reference):
    # The served model's pooled embeddings are 384-d (MiniLM): time at that width, the default window and anchor.
    rng = np.random.default_rng(0)
    ref = MMDReference.fit(rng.normal(size=(500, 384)))
    cost = mmd_cost_per_1000(ref, rng.normal(size=(1000, 384)), window_size=WINDOW, repeats=5)
    print(f"MMD^2 cost: {cost * 1000:.1f} ms per 1,000 texts (384-d, anchor 500, window {WINDOW})")
    assert math.isfinite(cost) and 0 < cost < 1.0  # seconds per 1,000 texts: cheap enough to run every window
