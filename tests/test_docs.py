"""The docs site builds with --strict (broken links and anchors fail): every nav page exists, every notebook renders
with its run header and without noise, code stays out of the search index, the home page shows the last run, every
alert's runbook anchor exists, and no page loads anything from off the machine."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import subprocess
from pathlib import Path

import nbformat
import pytest
import yaml

from tests.conftest import REPO

STAGES = list(yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"])


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"test_{name}", REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _hooks():
    return _script("docs_hooks")


@pytest.fixture(scope="module")
def site(docs_site) -> Path:
    """The site built once, as `make docs` builds it (the one build every site check below reads)."""
    return docs_site.path


def test_mkdocs_build_strict(site):
    pipeline = (site / "pipeline" / "index.html").read_text()
    assert "finetune.learning_rate" in pipeline and "<!-- params-reference -->" not in pipeline
    for page in ("notebooks/01_data", "model_card", "recipes", "runbooks", "lineage", "api"):
        assert (site / page / "index.html").is_file(), page
    card = (site / "model_card" / "index.html").read_text()
    assert "Intended use" in card  # the finetune stage's reports/model_card.md, as a page


def test_a_notebook_with_an_error_output_is_named_with_its_cell(tmp_path):
    import nbformat

    hooks = _hooks()
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1"), nbformat.v4.new_code_cell("1/0")])
    nb.cells[1].outputs = [nbformat.v4.new_output("error", ename="ZeroDivisionError", evalue="division by zero")]
    nbformat.write(nb, tmp_path / "nb.ipynb")
    assert hooks.notebook_errors(tmp_path / "nb.ipynb") == ["cell 1: ZeroDivisionError: division by zero"]
    nb.cells[1].outputs = []
    nbformat.write(nb, tmp_path / "nb.ipynb")
    assert hooks.notebook_errors(tmp_path / "nb.ipynb") == []
    for executed in sorted((REPO / "reports" / "notebooks").glob("*.ipynb")):  # the committed pipeline run
        assert hooks.notebook_errors(executed) == [], executed.name


def test_a_page_over_the_size_budget_fails_the_build_naming_it(tmp_path):
    import pytest
    from mkdocs.exceptions import PluginError

    hooks = _hooks()
    (tmp_path / "small").mkdir()
    (tmp_path / "small" / "index.html").write_text("x" * 1000)
    (tmp_path / "big").mkdir()
    (tmp_path / "big" / "index.html").write_text("x" * 300_000)
    hooks.on_post_build({"extra": {"page_budget_mb": 0.5}, "site_dir": str(tmp_path)})  # both within 0.5 MB
    with pytest.raises(PluginError, match=r"big/index.html \(0.3 MB\)") as err:
        hooks.on_post_build({"extra": {"page_budget_mb": 0.1}, "site_dir": str(tmp_path)})
    assert "small" not in str(err.value)


def test_lineage_page_is_dvc_yaml_and_dvc_lock(tmp_path, site):
    lineage = _script("lineage")
    page = lineage.lineage_markdown(REPO, "assets/pipeline.svg")
    lock = yaml.safe_load((REPO / "dvc.lock").read_text())["stages"]
    assert "](assets/pipeline.svg)" in page
    for name in STAGES:
        assert f"## {name}\n" in page
        for out in lock[name]["outs"]:  # every output the lock records, with its hash
            assert f"| `{out['path']}` | `{out['md5'][:12]}` |" in page, out["path"]
    # The picture is DVC's own graph (`dvc dag --dot`) drawn by graphviz: every stage, every dependency edge.
    svg = (site / "assets" / "pipeline.svg").read_text()
    titles = set(re.findall(r"<title>([^<]+)</title>", svg))
    assert set(STAGES) <= titles
    for a, b in (("data", "finetune"), ("finetune", "optimize"), ("optimize", "deploy"), ("deploy", "monitor")):
        assert f"{a}&#45;&gt;{b}" in titles, (a, b)
    assert '<img alt="Stage graph' in (site / "lineage" / "index.html").read_text()
    # A project that never ran: each stage says so.
    (tmp_path / "dvc.yaml").write_text((REPO / "dvc.yaml").read_text())
    assert lineage.lineage_markdown(tmp_path).count("Not run yet") == len(STAGES)


def test_notebook_pages_open_with_the_run_record_from_dvc_lock(site):
    nbs = _script("docs_notebooks")
    lock_bytes = (REPO / "dvc.lock").read_bytes()
    md5, blob = nbs.lock_digest(REPO / "dvc.lock")
    assert md5 == hashlib.md5(lock_bytes).hexdigest()
    git_blob = subprocess.run(["git", "hash-object", "dvc.lock"], cwd=REPO, capture_output=True, text=True).stdout
    assert blob == git_blob.strip()
    lock = yaml.safe_load(lock_bytes)["stages"]
    header = nbs.run_header("optimize", REPO / "dvc.lock")
    flat = nbs.flatten(lock["optimize"]["params"]["params.yaml"])
    assert f"Params it ran with ({len(flat)}" in header and md5[:12] in header
    for key, value in flat.items():  # nested keys flattened, every one with its value
        assert f"<code>{key}</code></td><td>{value!r}</td>" in header or f"<code>{key}</code></td><td>{value}" in header
    for dep in lock["optimize"]["deps"]:
        assert f"<code>{dep['path']}</code></td><td><code>{dep['md5'][:12]}</code>" in header
    assert "no entry for stage <code>nosuch</code>" in nbs.run_header("nosuch", REPO / "dvc.lock")
    # The executed notebook's own papermill parameters: agreeing, no warning; another value, named.
    ran = {"optimize": {**lock["optimize"]["params"]["params.yaml"]["optimize"]}}
    assert "Warning" not in nbs.run_header("optimize", REPO / "dvc.lock", ran)
    ran["optimize"]["seed"] = -7
    assert "other values than <code>dvc.lock</code> records for <code>optimize.seed</code> (-7)" in nbs.run_header(
        "optimize", REPO / "dvc.lock", ran
    )
    assert nbs.flatten({"a": {"b": {"c": 1}, "d": [1, 2]}, "e": None}) == {"a.b.c": 1, "a.d": [1, 2], "e": None}
    page = (site / "notebooks" / "03_optimize" / "index.html").read_text()
    assert "Run record</strong> of stage <code>optimize</code>" in page and md5[:12] in page
    # Under the notebook's title, before its prose.
    assert page.index("Run record") < page.index("How much faster")


def test_notebook_noise_is_dropped_or_folded():
    nbs = _script("docs_notebooks")
    out = nbformat.v4.new_output
    long_text = "".join(f"apiVersion line {i}\n" for i in range(40))
    nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_markdown_cell("# 09 · Title\n\nWhat this stage does."),
            nbformat.v4.new_code_cell("x = {}", metadata={"tags": ["injected-parameters"]}),
            nbformat.v4.new_code_cell("run()"),
            nbformat.v4.new_code_cell("P.data"),
        ]
    )
    nb.cells[2].outputs = [
        out("stream", name="stdout", text="\rreading: 0 rows"),
        out("stream", name="stderr", text="TqdmWarning: IProgress not found\n"),
        out("stream", name="stdout", text="\rreading: 38k rows\n38,158 rows read\n"),
        out("display_data", data={"text/html": "<progress value='6' max='6'></progress>", "text/plain": "<HTML>"}),
        out("stream", name="stdout", text=long_text),
    ]
    nb.cells[3].outputs = [
        out("execute_result", data={"text/plain": "DataParams(source='embedded', seed=42, labels=['a', 'b'])"})
    ]
    nbs.clean_notebook(nb, "<p>HEADER</p>")
    assert [c.cell_type for c in nb.cells] == ["markdown", "markdown", "markdown", "markdown", "code", "code"]
    assert nb.cells[0].source == "# 09 · Title" and nb.cells[1].source == "<p>HEADER</p>"
    assert nb.cells[3].source.startswith(f'<details class="{nbs.INJECTED_CLASS}">')  # folded, code kept
    outs = nb.cells[4].outputs
    assert [o.output_type for o in outs] == ["stream", "display_data"]  # stderr and the progress widget gone
    assert outs[0].text == "reading: 38k rows\n38,158 rows read\n"  # one line per redrawn line, as a terminal
    assert outs[1].data["text/html"].startswith("<details><summary>apiVersion line 0")  # 40 lines folded
    table = nb.cells[5].outputs[0].data["text/html"]
    assert "<code>labels</code></td><td>['a', 'b']" in table and "<code>seed</code></td><td>42" in table
    assert nbs.literal_table("an ordinary printed sentence") is None and nbs.literal_table("[1, 2]") is None


def test_built_notebook_pages_carry_no_stderr_or_progress_noise(site):
    for executed in sorted((REPO / "reports" / "notebooks").glob("*.ipynb")):
        page = (site / "notebooks" / executed.stem / "index.html").read_text()
        for noise in ("%|", "it/s]", "Loading weights", "TqdmWarning", "<progress"):
            assert noise not in page, (executed.name, noise)
    css = (REPO / "docs" / "stylesheets" / "extra.css").read_text()
    assert "pre-wrap" in css  # long lines wrap instead of being cut off


def test_search_index_keeps_notebook_prose_but_not_code(site):
    index = json.loads((site / "search" / "search_index.json").read_text())["docs"]
    text = {d["location"]: d["text"] for d in index}
    notebook = " ".join(t for loc, t in text.items() if loc.startswith("notebooks/03_optimize/"))
    assert "How much faster" in notebook  # the notebook's markdown is searchable
    page = (site / "notebooks" / "03_optimize" / "index.html").read_text()
    for code in ("project_root", "load_params", "Parameters papermill injected"):
        assert code in page and code not in notebook, code  # on the page, not in the index
    assert any("load_params" in t for loc, t in text.items() if not loc.startswith("notebooks/"))  # other pages kept


def test_every_alert_runbook_anchor_exists(site):
    urls = []

    def walk(node):
        if isinstance(node, dict):
            urls.extend(v for k, v in node.items() if k == "runbook_url")
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    for path in sorted((REPO / "deploy" / "monitoring").glob("*.y*ml")):
        for doc in yaml.safe_load_all(path.read_text()):
            walk(doc)
    anchors = {u.split("#", 1)[1] for u in urls}
    assert len(anchors) >= 5, urls
    ids = set(re.findall(r'id="([^"]+)"', (site / "runbooks" / "index.html").read_text()))
    assert not anchors - ids, f"runbook_url anchors missing from docs/runbooks.md: {sorted(anchors - ids)}"


def test_home_page_shows_the_last_run_or_says_it_has_not_run(tmp_path, site):
    home = _script("docs_home")
    assert "has not run yet" in home.headline_markdown(tmp_path)  # no reports/metrics/ at all
    metrics = tmp_path / "reports" / "metrics"
    metrics.mkdir(parents=True)
    (metrics / "finetune.json").write_text(json.dumps({"f1": 0.6543, "base_f1": 0.6012, "gain_pts": 5.31}))
    (metrics / "deploy.json").write_text(json.dumps({"rps": 1234.4, "p99_ms": 87.26, "of_bare": 0.9}))
    page = home.headline_markdown(tmp_path)
    assert "| **finetune** | test macro-F1, fine-tuned | 0.6543 |" in page
    assert "| gain over the baseline | 5.31 points |" in page and "| 1,234 req/s |" in page and "87.3 ms" in page
    for stage in ("data", "optimize", "monitor", "cost"):  # each stage without a metrics file says so
        assert f"| **{stage}** | not run yet (no `reports/metrics/{stage}.json`) | |" in page
    built = (site / "index.html").read_text()
    assert built.index("What the last run achieved") < built.index("A Jupyter-first")  # before any prose
    for fig in _hooks_headlines():
        assert fig.label in built
    assert 'src="assets/pipeline.svg"' in built


def _hooks_headlines():
    from kit.core.headline import read_headlines

    figures = read_headlines(REPO)
    assert figures, "reports/metrics/ holds the committed run's figures"
    return figures


def test_site_loads_nothing_from_off_the_machine(site):
    """Static half of the offline check (the browser test visits the pages): no script, stylesheet, font or image
    is fetched from another host; links to other sites are fine, loading from them is not."""
    loads = re.compile(
        r"<(?:script|img|iframe)[^>]+src=\"(https?:)?//|<link[^>]+rel=\"stylesheet\"[^>]+href=\"https?://"
    )
    for page in site.rglob("*.html"):
        assert not loads.search(page.read_text()), page.relative_to(site)
    home = (site / "index.html").read_text()
    assert "fonts.googleapis" not in home
    # Material's repository widget fetches stars and forks from the GitHub API on every page view.
    assert 'data-md-component="source"' not in home


def test_api_reference_covers_every_module_of_every_package():
    """docs/api.md renders every module of the eight kit packages; only the CLI glue (commands, __main__), which the
    CLI's --help documents, is left out."""
    listed = set(re.findall(r"^::: (kit\.\w+\.\w+)$", (REPO / "docs" / "api.md").read_text(), flags=re.M))
    packages = ("core", "data", "finetune", "optimize", "serve", "deploy", "monitor", "cost")
    modules = {
        f"kit.{pkg}.{path.stem}"
        for pkg in packages
        for path in (REPO / "kit" / pkg).glob("*.py")
        if path.stem not in ("__init__", "__main__", "commands")
    }
    assert not modules - listed, f"modules missing from docs/api.md: {sorted(modules - listed)}"
    assert not listed - modules, f"docs/api.md names modules that do not exist: {sorted(listed - modules)}"


def _rows(markdown: str, table: int = 0) -> dict[str, list[str]]:
    """The body rows of the page's n-th generated markdown table, by their first cell (bold, "(served)" stripped)."""
    tables: list[dict[str, list[str]]] = []
    previous = ""
    for line in markdown.splitlines():
        if not line.startswith("|"):
            pass
        elif not previous.startswith("|"):  # a header row starts a table
            tables.append({})
        elif not set(line) <= set("|-"):  # a body row (not the separator)
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            tables[-1][cells[0].replace("**", "").replace(" (served)", "")] = cells[1:]
        previous = line
    return tables[table]


def _report(name: str) -> dict:
    return json.loads((REPO / "reports" / f"{name}.json").read_text())


def test_measured_tables_carry_the_committed_reports_figures():
    measured = _script("docs_measured")
    train = _report("train")
    rows = _rows(measured.measured_markdown("finetune", REPO))
    assert rows["fine-tuned"][:3] == [
        f"{train['model']['accuracy']:.3f}",
        f"{train['model']['macro_f1']:.4f}",
        f"{100 * train['macro_f1_gain']:+.1f}",
    ]
    assert rows["baseline"][1] == f"{train['baseline']['macro_f1']:.4f}"
    assert rows["fine-tuned"][-2:] == [
        f"{train['train']['train_time_s']:,.2f}",
        f"{train['train']['train_samples_per_s']:,.1f}",
    ]
    for i, label in enumerate(train["labels"]):
        assert rows["baseline"][3 + i] == f"{train['baseline']['per_class'][label]['f1']:.3f}"

    bench = _report("bench")
    page = measured.measured_markdown("optimize", REPO)
    rows, hl = _rows(page), bench["headline"]
    assert bench["benchmark"]["machine"]["cpu"] in page and bench["benchmark"]["machine"]["isa"] in page
    for res in bench["benchmark"]["results"]:
        row = rows[res["variant"]]
        if res["batch_size"] == hl["latency_batch_size"]:
            assert row[1:3] == [f"{res['latency_ms']['p50']:,.1f}", f"{res['speedup']:.2f}"], res["variant"]
        else:
            assert row[3:5] == [f"{res['throughput_seq_s']:,.1f}", f"{res['speedup']:.2f}"], res["variant"]
        assert row[5] == f"{bench['accuracy'][res['variant']]['macro_f1']:.4f}"
    assert f"**{hl['variant']}** (served)" in page

    serve = _report("serve")
    rows = _rows(measured.measured_markdown("deploy", REPO))
    nobatch = {n["concurrency"]: n for n in serve["nobatch_levels"]}
    for level in serve["levels"]:  # max batch 1 is measured from 4 clients up: "–" where it was not
        row = rows[str(level["concurrency"])]
        assert row[0] == f"{level['throughput_rps']:,.1f}" and row[2] == f"{level['p99_ms']:,.1f}"
        other = nobatch.get(level["concurrency"])
        assert row[4] == (f"{other['throughput_rps']:,.1f}" if other else "–")
    best, page = serve["bare"], measured.measured_markdown("deploy", REPO)
    for run in best.get("grid", []):  # every configuration of the bare ceiling, the best among them
        assert f"| {run['batch_size']} | {'yes' if run['bucketing'] else 'no'} | {run['throughput_rps']:,.1f} |" in page
    assert max(r["throughput_rps"] for r in best["grid"]) == best["throughput_rps"]
    goals = _rows(measured.measured_markdown("deploy", REPO), 2)
    for goal in serve["goals"]:
        assert goals[goal["name"]][-1] == ("yes" if goal["met"] else "**no**"), goal
    monitor = _report("monitor")
    page = measured.measured_markdown("monitor", REPO)
    rows = _rows(page)
    for sc in monitor["scenarios"]:
        assert rows[sc["name"]][3] == str(sc["false_alarms"])
    assert f"**{monitor['logging_overhead']['ratio']:.3f}×**" in page

    cost = _report("cost")
    page = measured.measured_markdown("cost", REPO)
    rows = _rows(page)
    for opt in cost["options"]:
        assert rows[opt["name"]][0] == f"${opt['monthly_usd']:,.2f}"
    assert f"Recommendation: **{cost['recommendation']['option']}**" in page


def test_deploy_table_shows_goals_and_the_bare_grid_of_a_newer_report(tmp_path):
    from kit.core.reports import BareRate, Goal, ServeReport

    report = _report("serve")
    report["goals"] = [
        Goal(name="p99", target="p99 <= 100 ms", threshold=100, value=123.4, met=False, where="32 clients").model_dump()
    ]
    report["bare"]["grid"] = [
        BareRate(batch_size=16, bucketing=True, runs=[], throughput_rps=777.7).model_dump(),
    ]
    report["wall_s"] = 321.0
    ServeReport.model_validate(report)  # the fields are the schema's
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "serve.json").write_text(json.dumps(report))
    page = _script("docs_measured").measured_markdown("deploy", tmp_path)
    assert _rows(page, 2)["p99"] == ["p99 <= 100 ms", "123", "**no**"]
    assert _rows(page, 1) == {"16": ["yes", "777.7"]} and "the stage took 321 s" in page


def test_optimize_table_shows_the_step_timings_when_the_report_has_them(tmp_path):
    from kit.core.reports import StepTime, StepTimings

    report = _report("bench")
    steps = [StepTime(name="export", seconds=30.0), StepTime(name="benchmark", seconds=90.0)]
    report["timings"] = StepTimings(steps=steps, total_s=120.0).model_dump()
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "bench.json").write_text(json.dumps(report))
    page = _script("docs_measured").measured_markdown("optimize", tmp_path)
    assert _rows(page, 1) == {"export": ["30.0", "25 %"], "benchmark": ["90.0", "75 %"]} and "120.0 s went" in page


def test_a_missing_report_or_timing_renders_a_note_and_a_wrong_marker_fails(tmp_path):
    measured = _script("docs_measured")
    for stage in ("finetune", "optimize", "deploy", "monitor", "cost"):
        page = measured.replace_markers(f"before\n\n<!-- measured:{stage} -->\n", tmp_path)
        assert "run the pipeline first" in page and "<!--" not in page, stage
    assert "run the pipeline first" in measured.stage_times_markdown(tmp_path)
    with pytest.raises(ValueError, match="measured:finetuen"):
        measured.replace_markers("<!-- measured:finetuen -->", tmp_path)

    from kit.core.headline import write_stage_time

    write_stage_time("data", tmp_path, 30.0)
    write_stage_time("deploy", tmp_path, 90.0)
    rows = _rows(measured.stage_times_markdown(tmp_path))
    assert rows["data"] == ["30.0", "25 %"] and rows["deploy"] == ["90.0", "75 %"]
    assert rows["total"] == ["**120.0**", "100 %"] and "finetune" not in rows


def test_built_pages_hold_the_measured_tables_and_no_marker(site):
    for page in site.rglob("*.html"):
        text = page.read_text()
        assert "<!-- measured:" not in text and "<!-- stage-times -->" not in text, page.relative_to(site)
    deploy = (site / "stages" / "deploy" / "index.html").read_text()
    assert f"<strong>{_report('serve')['server_over_bare']:.3f}</strong>" in deploy
    pipeline = (site / "pipeline" / "index.html").read_text()
    assert "Where the time goes" in pipeline
    assert ("<td><strong>total</strong></td>" in pipeline) == (REPO / "reports" / "timings").is_dir()
