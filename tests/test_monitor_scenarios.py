"""Simulated production (kit.monitor.scenarios): every scenario is deterministic from its seed, its shift is real
(class share, length, changed characters, foreign vocabulary, a ramp), and the drift verdict on the served
tokenizer's features flags the shifted windows while the control stays quiet."""

from __future__ import annotations

from importlib.metadata import version

import numpy as np
import pandas as pd
import pytest

from kit.monitor.calibrate import CalibrationSettings
from kit.monitor.features import DEFAULT_FEATURES, MonitorError
from kit.monitor.profile import build_reference
from kit.monitor.scenarios import SCENARIOS, ScenarioSettings, add_typos, build_scenario, build_scenarios, load_pool
from kit.monitor.textfeatures import features_frame
from kit.serve.textfeatures import load_feature_tokenizer
from kit.monitor.verdict import DRIFT, NO_DRIFT, window_verdict
from tests.fixtures_serve import build_tiny_serving_dir

COMMON = "the a to and of in it is was for on with this that my at we you day time flight service".split()
MOOD = {
    "positive": "love great happy thanks good nice best".split(),
    "negative": "hate awful bad late worst angry rude".split(),
    "neutral": "what when where time gate seat ticket".split(),
}
SETTINGS = ScenarioSettings(window_size=150, windows=8, control_windows=6, shift_starts_at=2, ramp_windows=4, seed=7)


def synthetic_pool(n: int, seed: int) -> pd.DataFrame:
    """Short English texts of three classes (0.4 / 0.4 / 0.2), lengths log-normal in words."""
    rng = np.random.default_rng(seed)
    labels = rng.choice(["negative", "neutral", "positive"], n, p=[0.4, 0.4, 0.2])
    texts = []
    for lab in labels:
        k = int(np.clip(rng.lognormal(np.log(10), 0.5), 2, 60))
        words = rng.choice(COMMON + MOOD[lab] * 2, k)
        texts.append(" ".join(words).capitalize() + ".")
    return pd.DataFrame({"text": texts, "label": labels})


@pytest.fixture(scope="module")
def pool() -> pd.DataFrame:
    return synthetic_pool(1500, seed=1)


@pytest.fixture(scope="module")
def scenarios(pool):
    return build_scenarios(pool, SETTINGS)


def shifted(scenario):
    return [w for w in scenario.windows if w.index >= scenario.shift_starts_at]


def test_every_scenario_is_deterministic_from_its_seed(pool, scenarios):
    assert set(scenarios) == set(SCENARIOS)
    again = build_scenarios(pool, SETTINGS)
    for name in SCENARIOS:
        assert scenarios[name].windows == again[name].windows, name
        assert build_scenario(name, pool, SETTINGS).windows == again[name].windows, name
    other = build_scenarios(pool, SETTINGS.model_copy(update={"seed": 8}))
    assert all(scenarios[n].windows[0].texts != other[n].windows[0].texts for n in SCENARIOS)
    assert len(scenarios["control"].windows) == 6 and scenarios["control"].shift_starts_at is None
    assert all(len(w.texts) == 150 == len(set(w.request_ids)) for s in scenarios.values() for w in s.windows)


def test_label_prior_window_triples_one_class(scenarios):
    s = scenarios["label_prior"]
    assert s.metadata["class"] == "positive" and s.metadata["expected_share"] == pytest.approx(0.2 * 3 / 1.4, abs=0.02)

    def share(windows):
        return np.mean([lab == "positive" for w in windows for lab in w.labels])

    assert share(shifted(s)) == pytest.approx(s.metadata["expected_share"], abs=0.04)
    assert share(s.windows[:2]) == pytest.approx(0.2, abs=0.05)  # before the shift: the base share
    assert share(scenarios["control"].windows) == pytest.approx(0.2, abs=0.03)


def test_length_windows_hold_long_or_short_texts_only(pool, scenarios):
    lengths = pool["text"].str.len()
    before = np.mean([len(t) for w in scenarios["length_long"].windows[:2] for t in w.texts])
    assert before == pytest.approx(lengths.mean(), rel=0.1)
    long_texts = [len(t) for w in shifted(scenarios["length_long"]) for t in w.texts]
    short_texts = [len(t) for w in shifted(scenarios["length_short"]) for t in w.texts]
    assert min(long_texts) > lengths.quantile(0.75) and np.mean(long_texts) > 1.5 * lengths.mean()
    assert max(short_texts) < lengths.quantile(0.25)


def test_typos_change_characters_and_keep_labels(pool, scenarios):
    rng = np.random.default_rng(0)
    text = "the quick brown fox jumps over the lazy dog " * 20
    noisy = add_typos(text, 0.1, rng)
    changed = sum(a != b for a, b in zip(text, noisy, strict=False)) + abs(len(text) - len(noisy))
    assert changed > 0.05 * len(text) and noisy.count(" ") >= text.count(" ") - 2  # letters noised, not spaces
    assert add_typos(text, 0.1, np.random.default_rng(0)) == noisy
    seen = set(pool["text"])
    s = scenarios["typos"]
    assert all(t in seen for w in s.windows[:2] for t in w.texts)
    assert np.mean([t not in seen for w in shifted(s) for t in w.texts]) > 0.7
    assert all(lab is not None for w in s.windows for lab in w.labels)


def test_vocabulary_shift_is_another_language_named_in_metadata(pool, scenarios):
    s = scenarios["vocabulary"]
    assert s.metadata["package"] == "faker" and s.metadata["package_version"] == version("faker")
    assert s.metadata["locale"] == "de_DE"
    english = set(" ".join(pool["text"]).lower().replace(".", "").split())
    words = [x.strip(".").lower() for w in shifted(s) for t in w.texts for x in t.split()]
    assert np.mean([x in english for x in words]) < 0.1
    assert all(lab is None for w in shifted(s) for lab in w.labels)
    lengths = [len(t) for w in shifted(s) for t in w.texts]  # lengths matched: only the vocabulary moves
    assert np.mean(lengths) == pytest.approx(pool["text"].str.len().mean(), rel=0.1)


def test_gradual_shift_ramps_over_windows(pool, scenarios):
    s = scenarios["gradual"]
    assert [w.shifted_share for w in s.windows] == [0, 0, 0.25, 0.5, 0.75, 1, 1, 1]
    seen = set(pool["text"])
    foreign = [np.mean([t not in seen for t in w.texts]) for w in s.windows]
    assert foreign == pytest.approx([w.shifted_share for w in s.windows], abs=0.01)


def test_delayed_labels_are_a_seeded_fraction_of_labelled_requests(scenarios):
    s = scenarios["gradual"]
    labelled = {r: lab for w in s.windows for r, lab in zip(w.request_ids, w.labels, strict=True) if lab}
    late = s.delayed_labels(0.3, seed=1)
    assert len(late) == round(0.3 * len(labelled)) and late["request_id"].is_unique
    assert all(labelled[r] == lab for r, lab in zip(late["request_id"], late["label"], strict=True))
    assert late.equals(s.delayed_labels(0.3, seed=1)) and not late.equals(s.delayed_labels(0.3, seed=2))


def test_bad_sources_and_names_are_refused(tmp_path, pool):
    with pytest.raises(MonitorError, match="unknown scenario 'drifty'"):
        build_scenario("drifty", pool, SETTINGS)
    with pytest.raises(MonitorError, match="prior_class 'joy' is not a label"):
        build_scenario("label_prior", pool, SETTINGS.model_copy(update={"prior_class": "joy"}))
    with pytest.raises(MonitorError, match="scenario source not found"):
        load_pool(tmp_path / "test.parquet")
    pool[["text"]].to_parquet(tmp_path / "test.parquet")
    with pytest.raises(MonitorError, match="lacks column.*label"):
        load_pool(tmp_path / "test.parquet")
    with pytest.raises(ValueError, match="shift_starts_at \\(8\\) must be below windows \\(8\\)"):
        ScenarioSettings(windows=8, shift_starts_at=8)
    pool.assign(label_id=0).to_parquet(tmp_path / "test.parquet")
    assert load_pool(tmp_path / "test.parquet").equals(pool)


# ------------------------------------------------------------------------------- detection through the served model
@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The tiny serving dir's tokenizer and classifier (kit.serve's own loaders)."""
    from kit.serve.model import OnnxTextClassifier, read_model_dir

    model_dir = build_tiny_serving_dir(tmp_path_factory.mktemp("serving") / "model")
    meta = read_model_dir(model_dir, default_max_length=64)
    return load_feature_tokenizer(model_dir), OnnxTextClassifier(meta, threads=1), meta


def served_frame(served, texts: list[str]) -> pd.DataFrame:
    """What the prediction log would hold for `texts`: tokenizer features, predicted label and its confidence."""
    tok, clf, meta = served
    probs = np.concatenate([clf.predict_proba(texts[i : i + 256]) for i in range(0, len(texts), 256)])
    labels = [meta.labels[j] for j in probs.argmax(axis=1)]
    return features_frame(tok, texts, labels=labels, confidences=probs.max(axis=1).tolist())


def test_shift_is_detected_on_served_features_while_the_control_is_quiet(served, scenarios):
    ref_pool = synthetic_pool(3000, seed=2)  # same distribution, rows the scenarios never draw
    reference = build_reference(
        served_frame(served, ref_pool["text"].tolist()), model_version=served[2].version,
        settings=CalibrationSettings(target=0.05, window_size=150, n_null=150, seed=0),
    )  # fmt: skip
    assert [f.name for f in reference.profile.features] == [f.name for f in DEFAULT_FEATURES]

    def verdict(window):
        return window_verdict(reference, served_frame(served, window.texts), model_version=served[2].version)

    verdicts = {name: [verdict(w) for w in s.windows] for name, s in scenarios.items()}
    status = {name: [v.status for v in vs] for name, vs in verdicts.items()}
    assert status["control"] == [NO_DRIFT] * 6
    # Windows before a shift are control windows too: at 5% per window, about one false alarm in 14 is expected.
    before = [v for name in SCENARIOS[1:] for v in status[name][:2]]
    assert before.count(DRIFT) <= 2, status
    for name in ("typos", "vocabulary", "length_long", "length_short"):
        assert status[name][2:] == [DRIFT] * 6, (name, status[name])
    assert status["gradual"][-3:] == [DRIFT] * 3, status["gradual"]
    assert "subword_rate" in verdicts["typos"][-1].drifted_features
    assert "length_chars" in verdicts["length_long"][-1].drifted_features


def test_label_prior_shift_shows_in_the_label_share_when_predictions_track_the_truth(served, scenarios):
    # The tiny model is random, so its predicted classes barely follow the true ones; an accurate model's would.
    # Its predictions are replaced by the true labels here (an oracle) to show the label feature catches the shift.
    ref_pool = synthetic_pool(3000, seed=2)
    reference = build_reference(
        served_frame(served, ref_pool["text"].tolist()).assign(label=ref_pool["label"]), model_version="v",
        settings=CalibrationSettings(target=0.05, window_size=150, n_null=150, seed=0),
    )  # fmt: skip
    verdicts = [
        window_verdict(reference, served_frame(served, w.texts).assign(label=w.labels), model_version="v")
        for w in scenarios["label_prior"].windows
    ]
    assert [v.status for v in verdicts] == [NO_DRIFT] * 2 + [DRIFT] * 6
    assert all(v.drifted_features == ["label"] for v in verdicts[2:])
