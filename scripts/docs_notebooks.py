"""Executed notebooks as the docs show them: a run header (the params and dvc.lock hashes the stage ran with) and
the noise taken out (stderr streams, progress widgets, params reprs and long dumps turned into tables or folded).
Works on a copy: scripts/docs_hooks.py writes the result to a temp file that mkdocs-jupyter renders."""

from __future__ import annotations

import ast
import hashlib
import html
from pathlib import Path
from typing import Any

import nbformat
import yaml

# A text output over either limit is folded (<details>) instead of filling the page.
FOLD_LINES = 15
FOLD_CHARS = 1200
# Params tables: columns of (param, value) pairs side by side, so a 40-key section stays short.
PAIRS_PER_ROW = 2
# The folded papermill cell: code, so left out of the search index like the code cells (scripts/docs_hooks.py).
INJECTED_CLASS = "kit-injected-parameters"


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as one level of dotted keys ({"a": {"b": 1}} -> {"a.b": 1}); other values kept as they are."""
    if not isinstance(value, dict) or not value:
        return {prefix: value} if prefix else {}
    out: dict[str, Any] = {}
    for key, sub in value.items():
        out.update(flatten(sub, f"{prefix}.{key}" if prefix else str(key)))
    return out


def params_table(params: dict[str, Any], pairs: int = PAIRS_PER_ROW) -> str:
    """An HTML table of flattened params, `pairs` (param, value) pairs per row, keys in their given order."""
    items = [
        (html.escape(k, False), html.escape(repr(v) if isinstance(v, str) else str(v), False))
        for k, v in params.items()
    ]
    rows = []
    for i in range(0, len(items), pairs):
        cells = "".join(f"<td><code>{k}</code></td><td>{v}</td>" for k, v in items[i : i + pairs])
        rows.append(f"<tr>{cells}</tr>")
    head = "<th>param</th><th>value</th>" * min(pairs, max(len(items), 1))
    return f'<table class="kit-params"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def lock_digest(lock_path: Path) -> tuple[str, str]:
    """(md5 of dvc.lock's bytes, its git blob id): what identifies the lock a run was recorded in."""
    data = lock_path.read_bytes()
    blob = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # noqa: S324 - git's object id, not security
    return hashlib.md5(data).hexdigest(), blob  # noqa: S324 - the checksum DVC itself uses


def run_header(stage: str, lock_path: Path, notebook_params: dict[str, Any] | None = None) -> str:
    """The markdown-cell HTML heading an executed notebook: params from the stage's dvc.lock entry, lock hashes, and
    a folded table of the stage's dep/out hashes. Says so when the lock has no entry for the stage, and warns when the
    executed notebook's papermill parameters (`notebook_params`) hold another value for a key the lock records (the
    notebook was run outside `dvc repro`, or the lock is from another run)."""
    if not lock_path.is_file():
        return (
            f"<p><strong>Run record:</strong> no <code>dvc.lock</code>; stage <code>{stage}</code> not run by DVC.</p>"
        )
    entry = (yaml.safe_load(lock_path.read_text(encoding="utf-8")) or {}).get("stages", {}).get(stage)
    md5, blob = lock_digest(lock_path)
    lock = f"<code>dvc.lock</code> md5 <code>{md5[:12]}</code> (git blob <code>{blob[:12]}</code>)"
    if entry is None:
        return f"<p><strong>Run record:</strong> {lock} has no entry for stage <code>{stage}</code>.</p>"
    params: dict[str, Any] = {}
    for source in entry.get("params", {}).values():  # {params.yaml: {...}}: the source file name is not a key
        params.update(flatten(source))
    ran = flatten(notebook_params or {})
    differ = [k for k, v in params.items() if k in ran and ran[k] != v]
    warning = (
        f"<p><strong>Warning:</strong> this notebook ran with other values than <code>dvc.lock</code> records for "
        f"{', '.join(f'<code>{html.escape(k)}</code> ({html.escape(str(ran[k]))})' for k in differ)}.</p>"
        if differ
        else ""
    )
    files = [("dep", d) for d in entry.get("deps", [])] + [("out", o) for o in entry.get("outs", [])]
    # One digest over every dep and out hash: two runs with the same inputs and outputs show the same value.
    combined = hashlib.md5("".join(f"{f['path']}:{f.get('md5', '')};" for _, f in files).encode()).hexdigest()  # noqa: S324
    rows = "".join(
        f"<tr><td>{kind}</td><td><code>{html.escape(f['path'])}</code></td><td><code>{f.get('md5', '')[:12]}</code>"
        f"</td></tr>"
        for kind, f in files
    )
    return (
        f'<div class="kit-run-header"><p><strong>Run record</strong> of stage <code>{stage}</code>: {lock}; '
        f"deps and outs digest <code>{combined[:12]}</code> ({len(files)} paths).</p>{warning}"
        f"<p>Params it ran with ({len(params)}, from <code>dvc.lock</code>, which records the keys set in "
        f"<code>params.yaml</code>; the others are the schema's defaults, on the params page):</p>"
        f"{params_table(params)}"
        f"<details><summary>Dep and out hashes ({len(files)})</summary><table><thead><tr><th>kind</th>"
        f"<th>path</th><th>md5</th></tr></thead><tbody>{rows}</tbody></table></details></div>"
    )


def literal_table(text: str) -> str | None:
    """An HTML params table for a printed params repr (`XParams(a=1, ...)`, a dict, or a tuple of dicts); None when
    the text is something else. Parsed with `ast`, never evaluated."""
    try:
        node = ast.parse(text.strip(), mode="eval").body
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id.endswith("Params"):
            value: Any = {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords if kw.arg}
        else:
            value = ast.literal_eval(node)
    except (SyntaxError, ValueError, TypeError):
        return None
    parts = value if isinstance(value, tuple) else (value,)
    if not parts or not all(isinstance(p, dict) and p for p in parts):
        return None
    flat: dict[str, Any] = {}
    for part in parts:
        flat.update(flatten(part))
    return params_table(flat)


def _folded(text: str) -> str:
    first = html.escape(text.strip().splitlines()[0][:100])
    lines = text.count("\n") + 1
    return f"<details><summary>{first} … ({lines} lines)</summary><pre>{html.escape(text)}</pre></details>"


def _too_long(text: str) -> bool:
    return text.count("\n") >= FOLD_LINES or len(text) > FOLD_CHARS


def clean_output(out: dict[str, Any]) -> dict[str, Any] | None:
    """One output as the docs show it, or None to drop it (stderr, progress widgets)."""
    kind = out.get("output_type")
    if kind == "stream":
        if _is_stderr(out):  # progress bars and library warnings: the run's noise, not its result
            return None
        text = "".join(out.get("text", ""))
        return nbformat.v4.new_output("display_data", data={"text/html": _folded(text)}) if _too_long(text) else out
    if kind in ("display_data", "execute_result"):
        data = out.get("data", {})
        if "<progress" in "".join(data.get("text/html", "")):  # a notebook progress widget: meaningless once done
            return None
        if set(data) == {"text/plain"}:
            text = "".join(data["text/plain"])
            table = literal_table(text)
            if table is not None:
                return nbformat.v4.new_output("display_data", data={"text/html": table, "text/plain": text})
            if _too_long(text):
                return nbformat.v4.new_output("display_data", data={"text/html": _folded(text), "text/plain": text})
    return out


def _is_stderr(out: dict[str, Any]) -> bool:
    return out.get("output_type") == "stream" and out.get("name") == "stderr"


def _merge_streams(outputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Adjacent chunks of one stream as one output, each line as a terminal leaves it (the text after its last
    carriage return), so a line printed in pieces or redrawn by a progress bar is one line on the page."""
    merged: list[dict[str, Any]] = []
    for out in outputs:
        prev = merged[-1] if merged else None
        if prev is not None and out.get("output_type") == prev.get("output_type") == "stream":
            if out.get("name") == prev.get("name"):
                prev["text"] = "".join(prev["text"]) + "".join(out["text"])
                continue
        merged.append(dict(out))
    for out in merged:
        if out.get("output_type") == "stream":
            out["text"] = "\n".join(line.rsplit("\r", 1)[-1] for line in "".join(out["text"]).split("\n"))
    return merged


def clean_notebook(nb: Any, header_html: str | None = None) -> Any:
    """The notebook as the docs show it (modified in place and returned): the run header first, the papermill
    injected-parameters cell folded, stderr and progress widgets dropped, params reprs as tables, long text folded."""
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        if "injected-parameters" in cell.get("metadata", {}).get("tags", []):
            # Repeated in the run header's table; the code is kept, folded, for whoever wants the exact values.
            source = html.escape(cell.source)
            cell.cell_type, cell.outputs, cell.execution_count = "markdown", None, None
            del cell["outputs"], cell["execution_count"]
            cell.source = f'<details class="{INJECTED_CLASS}"><summary>Parameters papermill injected</summary><pre>{source}</pre></details>'
            continue
        outputs = [o for o in cell.get("outputs", []) if not _is_stderr(o)]
        kept = [clean_output(o) for o in _merge_streams(outputs)]
        cell.outputs = [nbformat.from_dict(o) for o in kept if o is not None]
    if header_html:
        nb.cells.insert(_title_end(nb), nbformat.v4.new_markdown_cell(header_html))
    return nb


def _title_end(nb: Any) -> int:
    """Where the run header goes: right under the notebook's `# title` line (its first markdown cell split there when
    more follows the title), or first when the notebook opens otherwise."""
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "markdown":
            continue
        title, _, rest = cell.source.lstrip().partition("\n")
        if not title.startswith("# "):
            return 0
        if rest.strip():
            cell.source = title
            nb.cells.insert(i + 1, nbformat.v4.new_markdown_cell(rest.strip()))
        return i + 1
    return 0
