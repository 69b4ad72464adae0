"""The package layout's rules, read from the source: which package may import which, what serve must never load,
and that every stage's dvc.yaml deps cover every kit module its notebook reaches (so the map cannot drift)."""

from __future__ import annotations

import ast
import json
import re
from functools import cache
from pathlib import Path

import pytest
import yaml

from kit.core.headline import REPORT_FILES
from kit.core.layout import LAYOUT, STAGE_NAMES
from kit.core.runner import STAGES

REPO = Path(__file__).resolve().parents[1]
KIT = REPO / "kit"
PACKAGES = sorted(p.name for p in KIT.iterdir() if (p / "__init__.py").is_file())
# Who may import whom (besides itself); kit.cli is the root and may import any package, nothing imports it.
ALLOWED = {
    "core": set(),
    "data": {"core"},
    "finetune": {"core"},
    "optimize": {"core", "serve"},
    "serve": {"core"},
    "deploy": {"core", "serve"},
    "monitor": {"core", "serve", "deploy"},  # after deploy: reuses its server launcher and load client
    "cost": {"core"},
}
SERVE_FORBIDDEN = {"torch", "transformers", "sklearn"}
_MODULE_STRING = re.compile(r"^kit(\.\w+)+$")


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _file_of(module: str) -> Path | None:
    base = REPO / Path(*module.split("."))
    for cand in (base.with_suffix(".py"), base / "__init__.py"):
        if cand.is_file():
            return cand
    return None


def _imports_in(tree: ast.AST, current: str) -> set[str]:
    """Every module named by an import statement anywhere in the tree (function-level ones too), plus `kit.x`
    strings (what `python -m kit.serve` starts), resolved to the longest existing kit module."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the current package
                base = current.rsplit(".", node.level)[0]
                mod = f"{base}.{node.module}" if node.module else base
            else:
                mod = node.module or ""
            found.add(mod)
            found.update(f"{mod}.{a.name}" for a in node.names)  # `from kit.serve import app`
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _MODULE_STRING.match(node.value):
            found.add(node.value)
    return found


@cache
def _direct(module: str) -> frozenset[str]:
    path = _file_of(module)
    if path is None:
        return frozenset()
    return frozenset(_imports_in(ast.parse(path.read_text()), module))


def _kit_modules(names: set[str] | frozenset[str]) -> set[str]:
    """The kit modules (files) among `names`, with the packages whose __init__ each one runs."""
    out = set()
    for name in names:
        if name.split(".")[0] != "kit" or _file_of(name) is None:
            continue
        parts = name.split(".")
        out.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return {m for m in out if _file_of(m) is not None}


def _closure(roots: set[str]) -> set[str]:
    seen: set[str] = set()
    todo = _kit_modules(roots)
    while todo:
        mod = todo.pop()
        if mod in seen:
            continue
        seen.add(mod)
        todo |= _kit_modules(_direct(mod)) - seen
    return seen


def _all_modules() -> list[str]:
    return sorted(_module_name(p) for p in KIT.rglob("*.py") if "__pycache__" not in p.parts)


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_layout_is_one_level_deep_with_a_package_per_stage():
    assert {"core", *STAGE_NAMES} <= set(PACKAGES)
    assert not [p for p in KIT.glob("*/*/*.py") if "__pycache__" not in p.parts]
    assert sorted(p.name for p in KIT.glob("*.py")) == ["__init__.py", "cli.py"]
    for name in STAGE_NAMES:  # stage = package = notebook = docs page = params section
        assert (REPO / STAGES[name].notebook).name.endswith(f"_{name}.ipynb")
        assert (REPO / "docs" / "stages" / f"{name}.md").is_file()


def test_packages_import_only_what_the_rules_allow():
    broken = []
    for mod in _all_modules():
        pkg = _package(mod)
        for dep in _kit_modules(_direct(mod)):
            dep_pkg = _package(dep)
            if dep == "kit.cli" or (dep_pkg and mod != "kit.cli" and dep_pkg != pkg and dep_pkg not in ALLOWED[pkg]):
                broken.append(f"{mod} imports {dep}")
    assert not broken, "\n".join(broken)


def test_serve_never_reaches_torch_transformers_or_sklearn():
    serve = {m for m in _all_modules() if _package(m) == "serve"}
    reached = _closure(serve)
    assert reached >= serve
    offending = sorted(
        f"{mod} imports {name}" for mod in reached for name in _direct(mod) if name.split(".")[0] in SERVE_FORBIDDEN
    )
    assert not offending, "\n".join(offending)


def test_the_import_walk_sees_function_level_and_dash_m_imports():
    # The rules above are only as good as this walk: check it on code shaped like the kit's.
    tree = ast.parse("def f():\n    import torch\n    from kit.core.io import rel_path\ncmd = ['-m', 'kit.serve']\n")
    names = _imports_in(tree, "kit.x.y")
    assert {"torch", "kit.core.io", "kit.serve"} <= names
    assert "kit.serve.app" in _closure({"kit.serve.__main__"}) or "kit.serve.commands" in _closure({"kit.serve"})


def _notebook_imports(notebook: Path) -> set[str]:
    cells = json.loads(notebook.read_text())["cells"]
    code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    code = "\n".join(line for line in code.splitlines() if not line.lstrip().startswith(("%", "!")))
    return _imports_in(ast.parse(code), "")


def _covered(path: Path, deps: list[str]) -> bool:
    rel = path.relative_to(REPO).as_posix()
    return any(rel == d or rel.startswith(d.rstrip("/") + "/") for d in deps)


@pytest.mark.parametrize("stage", STAGE_NAMES)
def test_dvc_deps_cover_every_kit_module_the_stage_notebook_reaches(stage):
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][stage]
    deps = [d if isinstance(d, str) else next(iter(d)) for d in dvc["deps"]]
    notebook = REPO / STAGES[stage].notebook
    assert notebook.relative_to(REPO).as_posix() in deps
    reached = _closure(_notebook_imports(notebook) | {"kit.core.runner"})  # `kit run` executes it
    assert f"kit.{stage}" in reached, f"notebook {notebook.name} does not use its package kit.{stage}"
    # kit/__init__.py holds only the version (test_root_package_holds_no_logic), so no stage depends on it.
    missing = sorted(m for m in reached - {"kit"} if not _covered(_file_of(m), deps))
    assert not missing, f"stage {stage}: dvc.yaml deps miss {missing}"
    assert "kit.cli" not in reached and not any(d.startswith("kit/cli") for d in deps)


def test_root_package_holds_no_logic():
    tree = ast.parse((KIT / "__init__.py").read_text())
    assert not _imports_in(tree, "kit")
    assert all(isinstance(n, (ast.Expr, ast.Assign)) for n in tree.body)


def test_layout_paths_are_what_dvc_yaml_declares():
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]

    def declared(stage: str, kind: str) -> set[str]:
        return {d if isinstance(d, str) else next(iter(d)) for d in dvc[stage].get(kind, [])}

    assert {LAYOUT.split(s) for s in ("train", "validation", "test")} | {LAYOUT.labels} <= declared("data", "outs")
    for stage, report in REPORT_FILES.items():  # the detailed report is an output, its headline the metrics file
        assert report in declared(stage, "outs") and declared(stage, "metrics") == {
            f"{LAYOUT.metrics_dir}/{stage}.json"
        }
        assert f"{LAYOUT.timings_dir}/{stage}.json" in declared(stage, "outs")
    assert LAYOUT.finetune_dir in declared("finetune", "outs")
    assert {LAYOUT.onnx_dir, LAYOUT.serving_dir} <= declared("optimize", "outs")
    assert LAYOUT.finetune_dir in declared("optimize", "deps") and LAYOUT.serving_dir in declared("deploy", "deps")
    assert LAYOUT.manifests_dir in declared("deploy", "outs")
    for name in STAGE_NAMES:
        assert STAGES[name].notebook in declared(name, "deps")
        assert dvc[name]["cmd"] == f"kit run {name}"


def test_the_installed_package_holds_every_sub_package(tmp_path):
    # The image installs the kit with `pip install .`: a wheel that drops a sub-package would serve nothing.
    import shutil
    import subprocess
    import sys
    import zipfile

    src = tmp_path / "src"
    shutil.copytree(KIT, src / "kit", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(src),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    (wheel,) = tmp_path.glob("kit-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {p.relative_to(REPO).as_posix() for p in KIT.rglob("*.py") if "__pycache__" not in p.parts}
    assert expected <= names, sorted(expected - names)
