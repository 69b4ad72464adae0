"""The cost stage on a throwaway project holding the repo's real reports: reports/cost.json reads back, the plots
exist, nothing absolute is written; params.yaml's cost section is the settings; cross-field errors name their key."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from kit.core.errors import ParamsError, ReportError
from kit.core.layout import LAYOUT
from kit.core.params import CostParams, Params, load_params
from kit.core.reports import read_report
from kit.cost import CostReport, CostSettings
from kit.cost.stage import run_cost
from tests.conftest import REPO

SMALL = {"sim_max_arrivals": 2_000, "curve_points": 5, "curve_max_arrivals": 1_000}
SMALL_DEFAULT_WRITE = CostParams().checkpoint_write_s


def _project(root: Path) -> Path:
    for rel in (LAYOUT.serve_report, LAYOUT.bench_report, LAYOUT.train_report, "cost/prices.yaml"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / rel, root / rel)
    return root


def test_run_cost_writes_the_report_and_plots_with_relative_paths(tmp_path, capsys):
    root = _project(tmp_path / "proj")
    (root / "traffic.csv").write_text("weight\n" + "\n".join(str(1 + (h == 14) * 3) for h in range(24)) + "\n")
    params = Params(cost={**SMALL, "traffic": {"trace": "traffic.csv"}})
    report = run_cost(params, root)
    back = read_report(root / LAYOUT.cost_report, CostReport)
    assert back == report
    assert back.plots == [LAYOUT.cost_breakeven_plot, LAYOUT.cost_sensitivity_plot]
    for plot in back.plots:
        assert (root / plot).read_bytes()[:4] == b"\x89PNG"
    assert back.settings.traffic.trace == "traffic.csv" and back.prices["path"] == "cost/prices.yaml"
    text = (root / LAYOUT.cost_report).read_text()
    assert str(tmp_path) not in text and str(REPO) not in text
    out = capsys.readouterr().out
    assert "cost: recommended: " in out and "wrote reports/cost.json" in out


def test_a_missing_measured_report_names_the_file(tmp_path):
    root = _project(tmp_path / "proj")
    (root / LAYOUT.bench_report).unlink()
    with pytest.raises(ReportError, match="reports/bench.json"):
        run_cost(Params(cost=SMALL), root)


def test_params_cost_section_is_the_settings():
    params = load_params(REPO / "params.yaml")
    settings = CostSettings.from_params(params.cost)
    assert settings.model_dump() == params.cost.model_dump()
    # params.yaml spells out the library's defaults: one source, no drift.
    assert CostSettings() == settings
    assert set(CostSettings.model_fields) == set(CostParams.model_fields)


@pytest.mark.parametrize(
    ("cost", "key"),
    [
        ({"min_replicas": 5, "max_replicas": 3}, "cost.max_replicas"),
        ({"spot_on_demand_floor": 9, "max_replicas": 3}, "cost.spot_on_demand_floor"),
        ({"curve_min_per_day": 1e6, "curve_max_per_day": 1e3}, "cost.curve_max_per_day"),
        ({"traffic": {"peak_factor": 0.5}}, "cost.traffic.peak_factor"),
    ],
)
def test_cross_field_errors_name_their_key(tmp_path, cost, key):
    import yaml

    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"cost": cost}))
    with pytest.raises(ParamsError) as info:
        load_params(path)
    assert any(line.startswith(f"{key}:") for line in info.value.lines), info.value.lines


def test_training_cost_uses_the_recorded_checkpoint_write_time(tmp_path):
    root = _project(tmp_path / "proj")
    raw = json.loads((root / LAYOUT.train_report).read_text())
    raw["train"]["checkpoint_write_s"] = 0.75
    (root / LAYOUT.train_report).write_text(json.dumps(raw))
    training = run_cost(Params(cost=SMALL), root).training
    assert training.checkpoint_write_s == 0.75
    assert training.checkpoint_write_source == "reports/train.json train.checkpoint_write_s"
    raw["train"]["checkpoint_write_s"] = None  # no checkpoint written: the assumption, and the report says so
    (root / LAYOUT.train_report).write_text(json.dumps(raw))
    training = run_cost(Params(cost=SMALL), root).training
    assert training.checkpoint_write_s == SMALL_DEFAULT_WRITE
    assert training.checkpoint_write_source.startswith("assumption")
