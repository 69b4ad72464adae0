"""Params schema checks: defaults, one-line errors with key paths, the CLI gate before any stage work."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from kit.core.errors import ParamsError
from kit.core.params import Params, load_params, reference_markdown
from tests.conftest import REPO, run_env


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_repo_params_file_is_valid():
    params = load_params(REPO / "params.yaml")
    assert params.data.source == "embedded"
    assert set(Params.model_fields) == {"data", "model", "finetune", "optimize", "serve", "deploy", "monitor", "cost"}


def test_empty_file_gives_schema_defaults(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("")
    assert load_params(path) == Params()


BAD = {
    "finetune": {"learning_rate": -1, "batch_size": "big"},
    "data": {"colour": "blue"},
}


def test_three_kinds_of_error_each_one_line_with_key_path(tmp_path):
    with pytest.raises(ParamsError) as info:
        load_params(write(tmp_path, BAD))
    lines = info.value.lines
    assert len(lines) == 3, lines
    assert "finetune.learning_rate: input should be greater than 0, got -1" in lines
    assert any(line.startswith("finetune.batch_size: ") and "got 'big'" in line for line in lines)
    assert "data.colour: unknown key" in lines
    assert all("\n" not in line for line in lines)


def test_cross_field_rule_names_the_key(tmp_path):
    with pytest.raises(ParamsError) as info:
        load_params(write(tmp_path, {"data": {"source": "csv"}}))
    assert info.value.lines == ["data.path: required when data.source is csv"]


@pytest.mark.parametrize(
    ("raw", "line"),
    [
        ({"deploy": {"min_replicas": 3, "max_replicas": 2}}, "deploy.max_replicas: must be >= deploy.min_replicas (3), got 2"),
        ({"finetune": {"save_steps": 7, "eval_steps": 5}}, "finetune.save_steps: must be a multiple of finetune.eval_steps (5)"),
        ({"deploy": {"concurrency_levels": [1, 2], "ratio_concurrency": 3}}, "deploy.ratio_concurrency: must be one of"),
        ({"optimize": {"seq_lengths": [1]}}, "optimize.seq_lengths: must all be within 2..512"),
        ({"data": {"labels": ["a", "a"]}}, "data.labels: must be unique"),
    ],
)
def test_every_cross_field_rule_names_its_key_path(tmp_path, raw, line):
    with pytest.raises(ParamsError) as info:
        load_params(write(tmp_path, raw))
    assert len(info.value.lines) == 1 and info.value.lines[0].startswith(line), info.value.lines


def test_the_old_train_section_is_refused_with_its_new_name(tmp_path):
    with pytest.raises(ParamsError) as info:
        load_params(write(tmp_path, {"train": {"learning_rate": 1e-4}}))
    assert info.value.lines == [f"train: renamed to `finetune`; rename the section in {tmp_path / 'params.yaml'}"]


def test_unknown_section_and_missing_file(tmp_path):
    with pytest.raises(ParamsError) as info:
        load_params(write(tmp_path, {"trian": {}}))
    assert info.value.lines == ["trian: unknown key"]
    with pytest.raises(ParamsError, match="file not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(bad)


def test_overrides_replace_keys_of_a_section(tmp_path):
    path = write(tmp_path, {"data": {"seed": 1, "val_fraction": 0.2}})
    params = load_params(path, overrides={"data": {"seed": 7}, "finetune": None})
    assert (params.data.seed, params.data.val_fraction) == (7, 0.2)


def test_cli_check_prints_errors_and_fails(tmp_path):
    path = write(tmp_path, BAD)
    res = subprocess.run(["kit", "params", "check", str(path)], capture_output=True, text=True, env=run_env())
    assert res.returncode == 1
    assert len(res.stderr.strip().splitlines()) == 3
    ok = subprocess.run(["kit", "params", "check", str(REPO / "params.yaml")], capture_output=True, text=True, env=run_env())
    assert ok.returncode == 0, ok.stderr


def test_kit_run_refuses_invalid_params(tmp_path):
    path = write(tmp_path, BAD)
    res = subprocess.run(["kit", "run", "data", "--params", str(path)], capture_output=True, text=True, cwd=REPO,
                         env=run_env())
    assert res.returncode == 1
    assert "Traceback" not in res.stderr
    assert "data.colour: unknown key" in res.stderr


def test_reference_lists_every_key():
    ref = reference_markdown()
    for section, field in Params.model_fields.items():
        for key in field.annotation.model_fields:
            assert f"`{section}.{key}`" in ref
