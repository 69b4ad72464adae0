"""End to end: `dvc repro` on tiny params in a temp copy of the repo, then what a second run and param edits rerun.
Also runs every stage notebook's set-up as committed (nothing injected) under nbval in such a copy."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, copy_project, run_env

pytestmark = pytest.mark.slow
SPEC = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
STAGES = list(SPEC)


def sh(args: list[str], cwd: Path, timeout: int = 900, stdout_only: bool = False) -> str:
    res = subprocess.run(args, cwd=cwd, capture_output=True, text=True, env=run_env(), timeout=timeout)
    assert res.returncode == 0, f"{' '.join(args)} failed:\n{res.stdout[-4000:]}\n{res.stderr[-4000:]}"
    return res.stdout if stdout_only else res.stdout + res.stderr


def ran(output: str) -> list[str]:
    return re.findall(r"Running stage '([\w-]+)'", output)


def set_param(proj: Path, section: str, key: str, value) -> None:
    path = proj / "params.yaml"
    params = yaml.safe_load(path.read_text())
    params.setdefault(section, {})[key] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    proj = copy_project(tmp_path_factory.mktemp("e2e") / "proj")
    (proj / "params.yaml").write_text((REPO / "tests/params_tiny.yaml").read_text())
    return proj


def test_repro_runs_every_stage_then_nothing(project):
    out = sh(["dvc", "repro"], project)
    assert ran(out) == STAGES
    for split in ("train", "validation", "test"):
        assert (project / "data" / f"{split}.parquet").stat().st_size > 0
    assert (project / "reports/notebooks/01_data.ipynb").is_file()
    metrics = json.loads(sh(["dvc", "metrics", "show", "--json"], project, stdout_only=True))
    assert metrics[""]["data"]["reports/metrics/data.json"]["data"] == {"rows": 900.0}
    assert json.loads((project / "reports/data.json").read_text())["rows_read"] == 38158
    sh(["dvc", "plots", "show", "-o", "plots_html"], project)
    html = (project / "plots_html" / "index.html").read_text()
    assert "data_class_balance.png" in html and "data_text_length.png" in html
    assert ran(sh(["dvc", "repro"], project)) == []
    assert "up to date" in sh(["dvc", "status"], project)


def test_exp_show_and_metrics_diff_read_as_short_tables(project):
    # What a DVC user compares: the headline figures of two experiments, in a normal terminal.
    sh(["git", "add", "-A"], project)
    sh(["git", "-c", "user.name=kit", "-c", "user.email=kit@example.com", "commit", "-qm", "tiny run"], project)
    sh(["dvc", "exp", "run", "-n", "busier", "-S", "cost.traffic.requests_per_day=5000000"], project)
    env = {**run_env(), "COLUMNS": "160"}
    res = subprocess.run(["dvc", "exp", "show", "--no-pager", "--only-changed"], cwd=project, env=env,
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    table = res.stdout
    # --only-changed: the columns that differ between the experiments (here the traffic and the monthly bill).
    assert res.returncode == 0 and "busier" in table and "usd_month" in table and "5000000" in table, table
    assert "…" not in table and max(map(len, table.splitlines())) <= 160, table
    busier = json.loads((project / "reports/metrics/cost.json").read_text())["usd_month"]
    assert f"{busier:.5g}" in table or str(busier) in table, table
    diff = sh(["dvc", "metrics", "diff", "HEAD"], project, stdout_only=True)  # workspace = the experiment's results
    lines = [line for line in diff.splitlines() if line.strip()]
    assert any("usd_month" in line for line in lines) and len(lines) <= 6, diff


def _text_outputs(project: Path) -> list[Path]:
    """Every text file the pipeline wrote that a user commits or ships: reports, executed notebooks, manifests, and
    the JSON/text files of the model dirs (weights are binary and carry no paths)."""
    roots = [project / "reports", project / "deploy", project / "data", project / "models"]
    files = [p for r in roots for p in r.rglob("*") if p.is_file()]
    return [p for p in files if p.suffix in {".json", ".ipynb", ".yaml", ".md", ".tsv", ".html", ".txt"}]


def test_no_output_holds_the_machine_path(project):
    # Outputs carry project-relative paths only, so they are the same in every clone (and DVC hashes agree).
    # The temp project, this checkout and the interpreter's prefix (a warning quoting a site-packages file, say).
    needles = {str(project), str(project.resolve()), str(REPO), sys.prefix}
    outputs = _text_outputs(project)
    assert len(outputs) > 15, [str(p.relative_to(project)) for p in outputs]
    hits = [f"{p.relative_to(project)}: {n}" for p in outputs for n in needles if n in p.read_text(errors="replace")]
    assert not hits, "absolute paths written into outputs:\n" + "\n".join(hits)


def test_param_that_leaves_data_unchanged_reruns_only_data(project):
    set_param(project, "data", "chunk_rows", 50_000)  # same rows, different chunking: identical Parquet
    assert ran(sh(["dvc", "repro"], project)) == ["data"]


def test_train_param_reruns_finetune_and_later_not_data(project):
    if "finetune" not in STAGES:
        pytest.skip("no finetune stage in dvc.yaml yet")
    set_param(project, "finetune", "learning_rate", 3e-4)  # not the default: the model must change
    assert ran(sh(["dvc", "repro"], project)) == STAGES[STAGES.index("finetune"):]


def _consumers(stage: str) -> set[str]:
    """Stages of dvc.yaml with a dep among `stage`'s outs (metrics and plots too)."""
    outs = {next(iter(o)) if isinstance(o, dict) else o
            for key in ("outs", "metrics", "plots") for o in SPEC[stage].get(key, [])}  # fmt: skip
    return {name for name, s in SPEC.items() if outs & set(s.get("deps", []))}


def test_data_param_makes_data_rerun_and_everything_downstream_stale(project):
    # The full rerun this implies is what the train-param test above already runs from finetune on: here the data
    # stage alone, then DVC must call every stage that reads the new splits stale, and these reach every later stage.
    set_param(project, "data", "seed", 7)
    assert ran(sh(["dvc", "repro", "data"], project)) == ["data"]
    stale = json.loads(sh(["dvc", "status", "--json"], project, stdout_only=True))
    assert set(stale) == _consumers("data") and "finetune" in stale, stale
    reached, frontier = set(stale), set(stale)
    while frontier:
        frontier = set().union(*map(_consumers, frontier)) - reached
        reached |= frontier
    assert reached == set(STAGES[1:]), reached
    assert stale["finetune"][0]["changed deps"]["data/train.parquet"] == "modified", stale


def _code(cell: dict) -> str:
    return "".join(cell["source"])


def _names_read(code: str) -> set[str]:
    return {n.id for n in ast.walk(ast.parse(code)) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def test_notebooks_run_as_committed_read_params_yaml(tmp_path):
    """What Run All in JupyterLab does: nothing injected, so each notebook's parameters cell leaves None and its setup
    cell reads params.yaml. Those cells run under nbval in a plain kernel of this environment, with a last cell
    checking that the params they load are the ones `kit run` injects (so the stage call and the tables after them,
    which `dvc repro` runs above, see the same input), and no later cell reads a parameter name itself."""
    proj = copy_project(tmp_path / "proj")
    (proj / "params.yaml").write_text((REPO / "tests/params_tiny.yaml").read_text())
    notebooks = sorted((proj / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert [p.stem.split("_", 1)[1] for p in notebooks] == STAGES
    for path, stage in zip(notebooks, STAGES, strict=True):
        nb = json.loads(path.read_text())
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        set_up = _code(code[1])
        assert "parameters" in code[0]["metadata"].get("tags", []) and "load_params(" in set_up, path.name
        names = {t.id for n in ast.parse(_code(code[0])).body for t in getattr(n, "targets", []) if hasattr(t, "id")}
        late = {name for c in code[2:] for name in _names_read(_code(c)) & names}
        assert names and not late, f"{path.name}: cells after the set-up read the injected names {sorted(late)}"
        check = (f"from kit.core.runner import STAGES, stage_parameters\n"
                 f"injected = stage_parameters(STAGES[{stage!r}], load_params(ROOT / 'params.yaml'))\n"
                 f"assert all(v is None for v in ({', '.join(sorted(names))},))\n"
                 f"assert P == load_params(ROOT / 'params.yaml', overrides=injected), 'plain and injected params differ'")  # fmt: skip
        # The set-up up to the statement that loads P (some set-up cells go on to call the stage function).
        stmt = next(n for n in ast.parse(set_up).body if "load_params(" in ast.unparse(n))
        setup = "\n".join(set_up.splitlines()[: stmt.end_lineno])
        cells = nb["cells"][: nb["cells"].index(code[1])]
        nb["cells"] = cells + [{**code[1], "source": setup, "outputs": []}, {**code[1], "source": check, "outputs": []}]
        path.write_text(json.dumps(nb))
    out = sh(["python", "-m", "pytest", "-p", "no:cacheprovider", "--nbval-lax", "--nbval-current-env", "-q",
              "-o", "addopts=", "-o", "testpaths=", *(str(p.relative_to(proj)) for p in notebooks)], proj)  # fmt: skip
    assert re.search(rf"{3 * len(notebooks)} passed", out) and "failed" not in out, out
