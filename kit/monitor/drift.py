"""Per-feature drift scores and the HTML drift report, both through Evidently (imported lazily: it is heavy).
The kit wraps only what it needs: one Evidently stattest per feature, and a Report of ValueDrift metrics."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kit.core.io import write_text
from kit.monitor.features import FeatureSpec, MonitorError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["column_score", "feature_scores", "drift_report", "report_scores", "write_drift_report"]


def _import_evidently() -> None:
    """Import Evidently under pandas 3, which removed a helper Evidently 0.7.23 (the newest) imports at load time.

    Only its data-integrity tests call it, and the kit runs none; the stand-in gives pandas 2's answer (the
    dtype's scalar type) so a call would still be right. Remove when an Evidently release supports pandas 3."""
    import pandas as pd
    import pandas.core.dtypes.common as common

    if not hasattr(common, "infer_dtype_from_object"):
        common.infer_dtype_from_object = lambda dtype: pd.api.types.pandas_dtype(dtype).type
    import evidently  # noqa: F401


def _column_type(kind: str) -> Any:  # evidently's ColumnType
    _import_evidently()
    from evidently import ColumnType

    return ColumnType.Numerical if kind == "numeric" else ColumnType.Categorical


def column_score(reference: pd.Series, current: pd.Series, spec: FeatureSpec) -> float:
    """Evidently's drift score of one column: a p-value for p-value methods, else a distance.

    Args:
        reference: the reference sample of the column.
        current: the window's values.
        spec: the feature (its kind and Evidently method).

    Returns:
        The score; a test that cannot be computed (NaN) counts as the most extreme score, so it never hides drift.
    """
    ctype = _column_type(spec.kind)  # imports Evidently first
    from evidently.legacy.calculations.stattests.registry import get_stattest

    try:
        test = get_stattest(reference, current, ctype, spec.method)
    except Exception as exc:  # Evidently raises its own errors for unknown methods or kinds
        raise MonitorError(f"feature {spec.name!r}: Evidently has no {spec.kind} drift method {spec.method!r}") from exc
    score = float(test(reference, current, ctype, None).drift_score)
    if math.isnan(score):
        return 0.0 if spec.lower_is_drift else math.inf
    return score


def feature_scores(reference: pd.DataFrame, current: pd.DataFrame, features: Sequence[FeatureSpec]) -> dict[str, float]:
    """Evidently's drift score for each feature of `current` against `reference` (name -> score)."""
    return {f.name: column_score(reference[f.name], current[f.name], f) for f in features}


def drift_report(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    features: Sequence[FeatureSpec],
    thresholds: dict[str, float] | None = None,
) -> Any:
    """Run Evidently's Report of one ValueDrift per feature on a reference/current pair.

    Args:
        reference: the reference sample.
        current: the window.
        features: the features to show, with their methods.
        thresholds: per feature, the calibrated threshold to show instead of Evidently's default.

    Returns:
        Evidently's Snapshot (`save_html`, `dict`); `report_scores` reads the per-feature scores from it.
    """
    _import_evidently()
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift

    thresholds = thresholds or {}
    cols = [f.name for f in features]
    definition = DataDefinition(
        numerical_columns=[f.name for f in features if f.kind == "numeric"],
        categorical_columns=[f.name for f in features if f.kind == "categorical"],
    )
    metrics = [ValueDrift(column=f.name, method=f.method, threshold=thresholds.get(f.name)) for f in features]
    return Report(metrics).run(
        Dataset.from_pandas(current[cols], data_definition=definition),
        Dataset.from_pandas(reference[cols], data_definition=definition),
    )


def report_scores(snapshot: Any) -> dict[str, float]:
    """The drift score of each ValueDrift metric in an Evidently Snapshot (column -> score)."""
    return {
        m["config"]["column"]: float(m["value"])
        for m in snapshot.dict()["metrics"]
        if m["config"].get("type", "").endswith(":ValueDrift")
    }


def write_drift_report(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    path: str | Path,
    *,
    features: Sequence[FeatureSpec],
    thresholds: dict[str, float] | None = None,
) -> Path:
    """Write Evidently's HTML drift report (`drift_report`) for a reference/current pair, atomically.

    Args:
        reference: the reference sample.
        current: the window.
        path: where the HTML goes (its directory is created).
        features: the features to show, with their methods.
        thresholds: per feature, the calibrated threshold to show instead of Evidently's default.

    Returns:
        The path written.
    """
    snapshot = drift_report(reference, current, features=features, thresholds=thresholds)
    return write_text(path, snapshot.get_html_str(as_iframe=False))
