"""The data stage as one call: build the splits, draw the plots, write reports/data.json (typed DataReport).
notebooks/01_data.ipynb calls run_data once and shows what it returns."""

from __future__ import annotations

import sys
from pathlib import Path

from kit.core.io import project_root, rel_path
from kit.core.layout import LAYOUT
from kit.core.params import Params
from kit.core.reports import DataReport, write_report
from kit.data.dataset import SPLITS, build_dataset
from kit.data.figures import save_plots

__all__ = ["run_data"]


def run_data(params: Params, root: str | Path | None = None) -> DataReport:
    """Run the data stage: splits and labels.json under data.out_dir, plots under reports/plots, reports/data.json.

    Args:
        params: validated params (section `data` is read).
        root: project root (default: found from cwd); data.path and data.out_dir are relative to it.

    Returns:
        The report as written, plus the length histograms the plots were drawn from (not written).

    Raises:
        DataError: a missing file or column, bad text, unknown or missing labels, too few rows per class.
    """
    root = Path(root).resolve() if root else project_root()  # resolved: rel_path then strips it from every output
    p = params.data
    report = build_dataset(p, root)
    plots = save_plots(report, root / LAYOUT.plots_dir)
    out_dir = root / p.out_dir
    report.outputs = {
        **{s: rel_path(out_dir / f"{s}.parquet", root) for s in SPLITS},
        "labels": rel_path(out_dir / "labels.json", root),
        **{f"plot_{name}": rel_path(path, root) for name, path in plots.items()},
    }
    write_report(root / LAYOUT.data_report, report)
    print(
        f"{report.rows_read:,} rows read, {report.duplicates_dropped:,} duplicates dropped -> "
        + ", ".join(f"{s} {report.rows[s]:,}" for s in SPLITS),
        file=sys.stdout,
    )
    return report
