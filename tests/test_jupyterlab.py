"""The notebooks as users open them: a real JupyterLab on loopback (token auth), its REST API listing every stage
notebook, a kernel started through a session, and the data notebook executed cell by cell over the kernel's
websocket, unmodified (its parameters cell reads params.yaml when papermill injects nothing)."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from kit.core.runner import STAGES
from tests.conftest import REPO
from tests.fixtures_serve import free_port


@dataclass
class Lab:
    url: str
    token: str
    root: Path
    log: Path

    def get(self, path: str) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", headers={"Authorization": f"token {self.token}"}, timeout=30)

    def post(self, path: str, body: dict) -> httpx.Response:
        return httpx.post(f"{self.url}{path}", json=body, headers={"Authorization": f"token {self.token}"}, timeout=60)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    base = tmp_path_factory.mktemp("lab")
    root = base / "proj"
    shutil.copytree(REPO / "notebooks", root / "notebooks")
    shutil.copy(REPO / "tests" / "params_tiny.yaml", root / "params.yaml")
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    port, token = free_port(), secrets.token_hex(16)
    # Config, data and runtime dirs of its own: no user setting or running server of this machine takes part.
    env = dict(os.environ, HF_HUB_OFFLINE="1", JUPYTER_CONFIG_DIR=str(base / "cfg"),
               JUPYTER_RUNTIME_DIR=str(base / "run"), JUPYTER_PLATFORM_DIRS="1")  # fmt: skip
    cmd = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        f"--config={REPO / 'jupyter_server_config.py'}",
    ]  # as `make lab`
    if os.geteuid() == 0:  # CI containers run as root; Jupyter refuses that unless told
        cmd.append("--allow-root")
    log = base / "lab.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=root)
    server = Lab(f"http://127.0.0.1:{port}", token, root, log)
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, f"jupyter lab exited with {proc.returncode}:\n{log.read_text()[-3000:]}"
            try:
                if server.get("/api/status").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"jupyter lab not up after 90 s:\n{log.read_text()[-3000:]}"
            time.sleep(0.3)
        yield server
    finally:
        proc.send_signal(signal.SIGINT)  # Jupyter's own shutdown: kernels first, then the server
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_lab_serves_its_ui_and_lists_every_stage_notebook(lab):
    page = lab.get("/lab")
    assert page.status_code == 200 and "JupyterLab" in page.text
    assert httpx.get(f"{lab.url}/api/contents/notebooks", timeout=30).status_code == 403  # no token, no listing
    listing = lab.get("/api/contents/notebooks").json()
    notebooks = {item["name"]: item["type"] for item in listing["content"]}
    for stage in STAGES.values():
        assert notebooks.get(Path(stage.notebook).name) == "notebook", (stage.name, sorted(notebooks))


def _message(session: str, code: str) -> dict:
    return {
        "header": {"msg_id": uuid.uuid4().hex, "msg_type": "execute_request", "username": "test", "session": session,
                   "date": "", "version": "5.3"},
        "parent_header": {}, "metadata": {}, "buffers": [], "channel": "shell",
        "content": {"code": code, "silent": False, "store_history": True, "user_expressions": {},
                    "allow_stdin": False, "stop_on_error": True},
    }  # fmt: skip


async def _run_cells(lab: Lab, kernel_id: str, cells: list[str]) -> list[dict]:
    """Send each cell as an execute_request over the kernel's websocket; per cell its reply status, its error
    output (if any) and how many outputs it produced."""
    from tornado.websocket import websocket_connect

    ws_url = lab.url.replace("http", "ws", 1) + f"/api/kernels/{kernel_id}/channels?token={lab.token}"
    conn = await websocket_connect(ws_url)
    session, results = uuid.uuid4().hex, []
    try:
        for code in cells:
            msg = _message(session, code)
            await conn.write_message(json.dumps(msg))
            result: dict = {"status": None, "error": None, "outputs": 0}
            idle = False
            while result["status"] is None or not idle:
                raw = await asyncio.wait_for(conn.read_message(), timeout=300)
                assert raw is not None, "kernel websocket closed"
                reply = json.loads(raw)
                if reply.get("parent_header", {}).get("msg_id") != msg["header"]["msg_id"]:
                    continue
                kind = reply["msg_type"]
                if kind == "execute_reply":
                    result["status"] = reply["content"]["status"]
                elif kind == "error":
                    result["error"] = f"{reply['content']['ename']}: {reply['content']['evalue']}"
                elif kind in ("stream", "display_data", "execute_result"):
                    result["outputs"] += 1
                elif kind == "status" and reply["content"]["execution_state"] == "idle":
                    idle = True
            results.append(result)
            if result["status"] != "ok":
                break
    finally:
        conn.close()
    return results


def test_the_data_notebook_runs_cell_by_cell_in_a_lab_kernel(lab):
    path = "notebooks/01_data.ipynb"
    before = (lab.root / path).read_bytes()
    session = lab.post("/api/sessions", {"path": path, "type": "notebook", "name": "01_data.ipynb",
                                         "kernel": {"name": "python3"}})  # fmt: skip
    assert session.status_code == 201, session.text
    kernel_id = session.json()["kernel"]["id"]
    nb = lab.get(f"/api/contents/{path}").json()["content"]
    cells = [c["source"] for c in nb["cells"] if c["cell_type"] == "code"]
    tagged = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1 and "data = None" in tagged[0]["source"]  # unmodified: nothing injected
    results = asyncio.run(_run_cells(lab, kernel_id, cells))
    failed = [(i, r) for i, r in enumerate(results) if r["status"] != "ok"]
    assert not failed and len(results) == len(cells), f"{failed}\n{lab.log.read_text()[-2000:]}"
    assert sum(r["outputs"] for r in results) >= len(cells) - 1  # tables and plots came back to the client
    # What the notebook did, in the project the lab serves: the data stage's splits and report.
    for rel in ("data/train.parquet", "data/validation.parquet", "data/test.parquet", "reports/data.json"):
        assert (lab.root / rel).is_file(), rel
    assert (lab.root / path).read_bytes() == before  # running is not saving: the committed notebook is untouched
    assert lab.get(f"/api/kernels/{kernel_id}").json()["execution_state"] in {"idle", "busy"}


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_committed_notebooks_hold_no_outputs_counts_or_volatile_metadata(stage):
    import nbformat

    nb = nbformat.read(REPO / STAGES[stage].notebook, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "strip outputs before committing"
    assert set(nb.metadata) <= {"kernelspec", "language_info"}, sorted(nb.metadata)
    assert all(set(c.metadata) <= {"tags"} for c in nb.cells), [dict(c.metadata) for c in nb.cells if c.metadata]
    # Byte for byte what Jupyter writes (nbformat's JSON): a save from the lab changes no byte, so DVC, which hashes
    # the notebook as a stage dependency, reruns nothing for it.
    text = (REPO / STAGES[stage].notebook).read_text(encoding="utf-8")
    assert text == nbformat.writes(nb) + "\n", "normalise with nbformat (python scripts/normalise_notebooks.py)"


def test_saving_a_notebook_run_by_hand_keeps_only_what_a_person_wrote(lab):
    import nbformat

    path = "notebooks/06_cost.ipynb"
    model = lab.get(f"/api/contents/{path}").json()
    nb = model["content"]
    for n, cell in enumerate(c for c in nb["cells"] if c["cell_type"] == "code"):
        cell["execution_count"] = n + 1  # what running it in the lab leaves behind
        cell["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "ran by hand\n"}]
        cell["metadata"]["execution"] = {"iopub.status.busy": "2026-12-01T00:00:00Z"}
    nb["metadata"]["widgets"] = {"state": {}}
    saved = httpx.put(
        f"{lab.url}/api/contents/{path}", json={"type": "notebook", "format": "json", "content": nb},
        headers={"Authorization": f"token {lab.token}"}, timeout=30,
    )  # fmt: skip
    assert saved.status_code == 200, saved.text
    # jupyter_server_config.py's pre-save hook stripped the run: the saved notebook is the committed one.
    assert (lab.root / path).read_bytes() == (REPO / path).read_bytes()
