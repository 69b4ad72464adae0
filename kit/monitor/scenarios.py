"""Simulated production: windows of texts drawn from data the kit ships (a no-shift control and five kinds of
shift), each deterministic from a seed, with request ids and a seeded fraction of delayed labels."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from kit.monitor.features import MonitorError

__all__ = [
    "SCENARIOS",
    "ScenarioSettings",
    "Window",
    "Scenario",
    "load_pool",
    "add_typos",
    "foreign_texts",
    "build_scenario",
    "build_scenarios",
]

SCENARIOS = ("control", "label_prior", "length_long", "length_short", "typos", "vocabulary", "gradual")
# The vocabulary shift's source: Faker's lorem provider for another language (a word list it ships, offline).
FOREIGN_PACKAGE = "faker"


class ScenarioSettings(BaseModel):
    """How the production windows are drawn (defaults as the monitor params will name them).

    Args:
        window_size: texts per window.
        windows: windows per shift scenario; the control has `control_windows`.
        control_windows: windows of the no-shift control (false alarms are counted over them).
        shift_starts_at: index of the first shifted window; the windows before it are unshifted.
        prior_class: the class whose weight is tripled (None: the pool's least frequent).
        prior_factor: its weight's multiplier.
        length_quantile: long texts are those above the pool's 1 - q quantile of length, short ones below q.
        typo_rate: chance per character of a typo (substitution, deletion, insertion or swap).
        foreign_locale: Faker locale of the vocabulary shift's texts.
        ramp_windows: windows over which the gradual shift grows from none to all texts.
        gradual_kind: the shift the gradual scenario ramps in.
        label_fraction: share of labelled requests whose label arrives later (delayed labels).
        seed: seeds every draw.
    """

    model_config = ConfigDict(extra="forbid")

    window_size: int = Field(200, ge=1)
    windows: int = Field(10, ge=1)
    control_windows: int = Field(50, ge=1)
    shift_starts_at: int = Field(3, ge=0)
    prior_class: str | None = None
    prior_factor: float = Field(3.0, gt=1)
    length_quantile: float = Field(0.25, gt=0, lt=0.5)
    typo_rate: float = Field(0.08, gt=0, le=1)
    foreign_locale: str = "de_DE"
    ramp_windows: int = Field(5, ge=1)
    gradual_kind: Literal["typos", "vocabulary", "length_long"] = "vocabulary"
    label_fraction: float = Field(0.3, ge=0, le=1)
    seed: int = 0

    @model_validator(mode="after")
    def _shift_inside(self) -> ScenarioSettings:
        if self.shift_starts_at >= self.windows:
            raise ValueError(f"shift_starts_at ({self.shift_starts_at}) must be below windows ({self.windows})")
        return self


@dataclass(frozen=True)
class Window:
    """One window of requests: texts, their labels (None where the source has none) and request ids."""

    index: int
    texts: list[str]
    labels: list[str | None]
    request_ids: list[str]
    shifted_share: float  # share of the window's texts drawn from the shifted source


@dataclass(frozen=True)
class Scenario:
    """A named sequence of windows; `shift_starts_at` is None for the control."""

    name: str
    windows: list[Window]
    shift_starts_at: int | None
    metadata: dict[str, Any] = field(default_factory=dict)

    def delayed_labels(self, fraction: float, seed: int = 0) -> pd.DataFrame:
        """A seeded `fraction` of the labelled requests as (request_id, label): the labels that arrive later."""
        rows = [(r, lab) for w in self.windows for r, lab in zip(w.request_ids, w.labels, strict=True) if lab]
        rng = np.random.default_rng([seed, len(rows)])
        keep = np.sort(rng.permutation(len(rows))[: round(fraction * len(rows))])
        return pd.DataFrame([rows[i] for i in keep], columns=["request_id", "label"])


def load_pool(path: str | Path) -> pd.DataFrame:
    """Read the texts scenarios draw from (the test split: Parquet with text and label columns).

    Raises:
        MonitorError: the file is missing, lacks a column or holds no row.
    """
    p = Path(path)
    if not p.is_file():
        raise MonitorError(f"{p}: scenario source not found (the data stage's test split)")
    frame = pd.read_parquet(p)
    missing = {"text", "label"} - set(frame.columns)
    if missing:
        raise MonitorError(f"{p}: scenario source lacks column(s) {', '.join(sorted(missing))}")
    if frame.empty:
        raise MonitorError(f"{p}: scenario source has no rows")
    return frame[["text", "label"]].astype(str).reset_index(drop=True)


def add_typos(text: str, rate: float, rng: np.random.Generator) -> str:
    """`text` with seeded keyboard-style noise: each character, with chance `rate`, is substituted, dropped,
    doubled with a random letter or swapped with the next one."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    out: list[str] = []
    chars = list(text)
    i = 0
    while i < len(chars):
        c = chars[i]
        if not c.isalpha() or rng.random() >= rate:
            out.append(c)
        else:
            op = rng.integers(4)
            if op == 0:
                out.append(letters[rng.integers(26)])
            elif op == 2:
                out.extend([c, letters[rng.integers(26)]])
            elif op == 3 and i + 1 < len(chars):
                out.extend([chars[i + 1], c])
                i += 1
        i += 1
    return "".join(out)


def foreign_texts(lengths: np.ndarray, locale: str, seed: int) -> list[str]:
    """Texts in another language from Faker's lorem provider, each about as long (in characters) as `lengths`."""
    from faker import Faker

    fake = Faker(locale)
    fake.seed_instance(seed)
    texts = []
    for n in lengths:
        words: list[str] = []
        while len(" ".join(words)) < n:
            words.extend(fake.words(4))
        texts.append(" ".join(words)[: max(int(n) - 1, 1)].rstrip().capitalize() + ".")
    return texts


_Draw = Callable[[np.random.Generator, int], tuple[list[str], list[str | None]]]


def _rows(pool: pd.DataFrame, idx: np.ndarray) -> tuple[list[str], list[str | None]]:
    return pool["text"].iloc[idx].tolist(), pool["label"].iloc[idx].tolist()


def _pick(rng: np.random.Generator, n: int, candidates: np.ndarray, p: np.ndarray | None = None) -> np.ndarray:
    # Without replacement while the source has enough rows, so a window never repeats a text it need not.
    return rng.choice(candidates, n, replace=n > len(candidates), p=p)


def _shift_draws(pool: pd.DataFrame, s: ScenarioSettings) -> tuple[dict[str, _Draw], dict[str, dict[str, Any]]]:
    """Per shift: how its shifted texts are drawn, and the metadata the report names it by."""
    everyone = np.arange(len(pool))
    lengths = pool["text"].str.len().to_numpy()
    shares = pool["label"].value_counts(normalize=True)
    cls = s.prior_class if s.prior_class is not None else str(shares.idxmin())
    if cls not in shares.index:
        raise MonitorError(f"prior_class {cls!r} is not a label of the scenario source ({', '.join(shares.index)})")
    weights = np.where(pool["label"].to_numpy() == cls, s.prior_factor, 1.0)
    long_cut, short_cut = np.quantile(lengths, [1 - s.length_quantile, s.length_quantile])
    longs, shorts = everyone[lengths > long_cut], everyone[lengths < short_cut]
    if len(longs) == 0 or len(shorts) == 0:
        raise MonitorError(f"scenario source has too few distinct lengths for a length shift ({len(pool)} rows)")

    def typos(rng: np.random.Generator, n: int) -> tuple[list[str], list[str | None]]:
        texts, labels = _rows(pool, _pick(rng, n, everyone))
        return [add_typos(t, s.typo_rate, rng) for t in texts], labels

    def vocabulary(rng: np.random.Generator, n: int) -> tuple[list[str], list[str | None]]:
        seed = int(rng.integers(2**31))
        return foreign_texts(lengths[_pick(rng, n, everyone)], s.foreign_locale, seed), [None] * n

    prior_share = float(shares[cls] * s.prior_factor / (shares[cls] * s.prior_factor + 1 - shares[cls]))
    draws: dict[str, _Draw] = {
        "label_prior": lambda rng, n: _rows(pool, _pick(rng, n, everyone, weights / weights.sum())),
        "length_long": lambda rng, n: _rows(pool, _pick(rng, n, longs)),
        "length_short": lambda rng, n: _rows(pool, _pick(rng, n, shorts)),
        "typos": typos,
        "vocabulary": vocabulary,
    }
    meta: dict[str, dict[str, Any]] = {
        "control": {"description": "unseen rows of the same distribution"},
        "label_prior": {"description": f"class {cls!r} weighted x{s.prior_factor:g}", "class": cls,
                        "base_share": float(shares[cls]), "expected_share": prior_share},
        "length_long": {"description": f"texts longer than {long_cut:g} chars only", "min_chars": float(long_cut)},
        "length_short": {"description": f"texts shorter than {short_cut:g} chars only", "max_chars": float(short_cut)},
        "typos": {"description": f"character noise at {s.typo_rate:g} per letter", "typo_rate": s.typo_rate},
        "vocabulary": {"description": f"{s.foreign_locale} text from {FOREIGN_PACKAGE}'s lorem provider",
                       "package": FOREIGN_PACKAGE, "package_version": version(FOREIGN_PACKAGE),
                       "locale": s.foreign_locale, "labels": "none (another language has no label of this task)"},
    }  # fmt: skip
    draws["gradual"] = draws[s.gradual_kind]
    meta["gradual"] = {**meta[s.gradual_kind], "kind": s.gradual_kind, "ramp_windows": s.ramp_windows}
    meta["gradual"]["description"] = f"{s.gradual_kind} ramping in over {s.ramp_windows} windows"
    return draws, meta


def _share(name: str, k: int, s: ScenarioSettings) -> float:
    if name == "control" or k < s.shift_starts_at:
        return 0.0
    if name == "gradual":
        return min(1.0, (k - s.shift_starts_at + 1) / s.ramp_windows)
    return 1.0


def build_scenario(name: str, pool: pd.DataFrame, settings: ScenarioSettings | None = None) -> Scenario:
    """One scenario's windows, deterministic from `settings.seed`.

    Args:
        name: one of SCENARIOS.
        pool: unseen rows (text, label) of the training distribution, e.g. the test split.
        settings: window sizes, shift strengths, seed.

    Returns:
        The scenario: `windows` (control: `control_windows`) windows; before `shift_starts_at` unshifted.

    Raises:
        MonitorError: an unknown scenario name, or a pool the shift cannot be drawn from.
    """
    s = settings or ScenarioSettings()
    if name not in SCENARIOS:
        raise MonitorError(f"unknown scenario {name!r}; choose from {', '.join(SCENARIOS)}")
    if pool.empty:
        raise MonitorError("scenario source has no rows")
    return _build(name, pool, s, _shift_draws(pool, s))


def _build(name: str, pool: pd.DataFrame, s: ScenarioSettings, prepared: tuple[dict[str, _Draw], Any]) -> Scenario:
    draws, meta = prepared
    everyone = np.arange(len(pool))
    windows = []
    for k in range(s.control_windows if name == "control" else s.windows):
        rng = np.random.default_rng([s.seed, SCENARIOS.index(name), k])
        share = _share(name, k, s)
        n_shift = round(share * s.window_size)
        texts, labels = _rows(pool, _pick(rng, s.window_size - n_shift, everyone))
        if n_shift:
            more_t, more_l = draws[name](rng, n_shift)
            texts, labels = texts + more_t, labels + more_l
        order = rng.permutation(s.window_size)  # shifted texts interleave with the others, as in traffic
        windows.append(
            Window(
                index=k,
                texts=[texts[i] for i in order],
                labels=[labels[i] for i in order],
                request_ids=[f"{name}-{k:03d}-{i:04d}" for i in range(s.window_size)],
                shifted_share=share,
            )
        )
    start = None if name == "control" else s.shift_starts_at
    return Scenario(name=name, windows=windows, shift_starts_at=start, metadata=meta[name])


def build_scenarios(pool: pd.DataFrame, settings: ScenarioSettings | None = None) -> dict[str, Scenario]:
    """Every scenario of SCENARIOS, by name (the shift sources are prepared once)."""
    s = settings or ScenarioSettings()
    if pool.empty:
        raise MonitorError("scenario source has no rows")
    prepared = _shift_draws(pool, s)
    return {name: _build(name, pool, s, prepared) for name in SCENARIOS}
