"""The cost stage's inputs: the shipped price sheet validates, a bad row is one line naming file, row and column;
the traffic profile's diurnal curve and CSV trace."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from kit.cost.errors import CostError
from kit.cost.prices import DEFAULT_PRICES, read_prices
from kit.cost.traffic import TrafficProfile, diurnal_weights, hourly_rates, read_trace

REPO = Path(__file__).resolve().parents[1]
SHEET = REPO / DEFAULT_PRICES


def test_shipped_sheet_validates_and_every_row_has_a_source():
    sheet = read_prices(SHEET)
    rows = [*sheet.instances, *sheet.serverless, *sheet.scale_to_zero]
    assert len(sheet.instances) >= 4 and sheet.serverless and sheet.scale_to_zero
    assert all(len(r.source) > 10 and r.date.year >= 2024 for r in rows)
    c7a = sheet.instance("c7a.large")
    assert (c7a.vcpu, c7a.memory_gib, c7a.arch) == (2, 4.0, "x86_64")
    assert c7a.spot_usd_h < c7a.on_demand_usd_h
    assert sheet.scale_to_zero_model("knative-default").min_scale == 0


def _bad_sheet(tmp_path: Path, table: str, index: int, **change) -> Path:
    raw = yaml.safe_load(SHEET.read_text())
    row = raw[table][index]
    for key, value in change.items():
        if value is None:
            row.pop(key)
        else:
            row[key] = value
    path = tmp_path / "prices.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.mark.parametrize(
    "table, index, change, column, why",
    [
        ("instances", 1, {"on_demand_usd_h": -0.1}, "on_demand_usd_h", "greater than 0"),
        ("instances", 0, {"spot_usd": 0.02}, "spot_usd", "unknown column"),
        ("serverless", 1, {"source": None}, "source", "missing"),
        ("scale_to_zero", 0, {"grace_period_s": -5}, "grace_period_s", "greater than or equal to 0"),
    ],
)
def test_bad_row_is_one_line_naming_file_row_and_column(tmp_path, table, index, change, column, why):
    path = _bad_sheet(tmp_path, table, index, **change)
    with pytest.raises(CostError) as err:
        read_prices(path)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(str(path))
    assert f"{table} row {index + 1}," in msg and f"column {column!r}" in msg and why in msg
    # The line number points at the row's first line in the file.
    line = int(msg.split("line ")[1].split(",")[0])
    name = yaml.safe_load(SHEET.read_text())[table][index]["name"]
    assert name in "".join(path.read_text().splitlines(keepends=True)[line - 1 : line + 15])


def test_unknown_table_and_unknown_row_name(tmp_path):
    raw = yaml.safe_load(SHEET.read_text())
    raw["gpus"] = []
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(CostError, match="unknown table 'gpus'"):
        read_prices(path)
    with pytest.raises(CostError, match="no row named 'c9z.huge' in instances"):
        read_prices(SHEET).instance("c9z.huge")


def test_diurnal_curve_has_mean_one_and_the_asked_peak():
    w = diurnal_weights(3.0, peak_hour=14.0)
    assert w.mean() == pytest.approx(1.0)
    assert w.max() == pytest.approx(3.0, rel=1e-6) and int(np.argmax(w)) == 14
    assert np.allclose(diurnal_weights(1.0), 1.0)
    rates = hourly_rates(TrafficProfile(requests_per_day=86_400))
    assert rates.sum() * 3600 == pytest.approx(86_400)


def test_trace_csv_replaces_the_shape_and_bad_rows_are_named(tmp_path):
    trace = tmp_path / "trace.csv"
    trace.write_text("weight\n1\n3\n")
    rates = hourly_rates(TrafficProfile(requests_per_day=172_800, trace=str(trace)))
    assert rates.tolist() == pytest.approx([1.0, 3.0])  # two half-day slices, 2 requests/s on average
    trace.write_text("weight\n1\n-2\n")
    with pytest.raises(CostError, match=r"row 2, column 'weight'"):
        read_trace(trace)
