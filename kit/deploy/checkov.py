"""checkov, the policy scanner the manifests and the Dockerfile are checked with: finding its executable (its own
virtualenv, .tools/checkov) and running one offline scan whose passed, failed and skipped checks come back typed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kit.core.errors import DeployError, KitError
from kit.core.io import project_root

__all__ = ["CheckovResult", "find_checkov", "run_checkov"]


@dataclass
class CheckovResult:
    """Outcome of one checkov run: check ids that passed, failed (with resource and file) and were skipped."""

    passed: int
    failed: list[dict[str, str]]
    skipped: list[dict[str, str]]
    command: list[str]

    @property
    def ok(self) -> bool:
        return not self.failed


def find_checkov(root: str | Path | None = None) -> Path | None:
    """The checkov executable: $KIT_CHECKOV, then .tools/checkov (scripts/tools.sh), then PATH; None if absent."""
    env = os.environ.get("KIT_CHECKOV")
    if env and Path(env).is_file():
        return Path(env)
    try:
        r = Path(root) if root else project_root()
        cand = r / ".tools" / "checkov" / "bin" / "checkov"
        if cand.is_file():
            return cand
    except KitError:  # outside a project: only $KIT_CHECKOV or PATH
        pass
    found = shutil.which("checkov")
    return Path(found) if found else None


def run_checkov(paths: Iterable[str | Path], framework: str, checkov: str | Path | None = None) -> CheckovResult:
    """Scan files or directories with checkov in one invocation (offline: no policy download).

    Args:
        paths: files and directories (every file below them is scanned).
        framework: checkov framework, e.g. "kubernetes" or "dockerfile".
        checkov: executable (default: find_checkov()).

    Returns:
        Passed count, failed and skipped checks.

    Raises:
        DeployError: checkov is missing or its output is unreadable.
    """
    paths = list(paths)
    exe = Path(checkov) if checkov else find_checkov()
    if exe is None:
        raise DeployError("checkov not found: run scripts/tools.sh (creates .tools/checkov) or set KIT_CHECKOV")
    cmd = [str(exe), "--framework", framework, "--skip-download", "--compact", "-o", "json"]
    # Directories are expanded to their files: checkov mishandles several -d roots (scans one of them repeatedly),
    # and graph checks (e.g. a NetworkPolicy selecting the pods) need every manifest in the same run.
    files: list[Path] = []
    for p in map(Path, paths):
        files += sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith(".")) if p.is_dir() else [p]
    if not files:
        raise DeployError(f"nothing to scan in {[str(p) for p in paths]}")
    for f in files:
        cmd += ["-f", str(f)]
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    # One JSON document per scanned root (several -d give several documents back to back), each a report or a list.
    reports: list[Any] = []
    dec, text, pos = json.JSONDecoder(), proc.stdout, 0
    try:
        while text[pos:].strip():
            pos += len(text[pos:]) - len(text[pos:].lstrip())
            data, pos = dec.raw_decode(text, pos)
            reports += data if isinstance(data, list) else [data]
    except json.JSONDecodeError:
        err = proc.stderr.strip()[-500:]
        raise DeployError(f"checkov output is not JSON (exit {proc.returncode}): {err}") from None
    passed, failed, skipped, parse_errors = 0, [], [], 0
    for rep in reports:
        if not isinstance(rep, dict):
            continue
        results = rep.get("results") or {}
        passed += len(results.get("passed_checks") or [])
        parse_errors += int((rep.get("summary") or {}).get("parsing_errors") or 0)
        for c in results.get("failed_checks") or []:
            failed.append(
                {"check": c["check_id"], "name": c.get("check_name", ""), "resource": c.get("resource", ""),
                 "file": c.get("file_path", "")}
            )  # fmt: skip
        for c in results.get("skipped_checks") or []:
            skipped.append(
                {"check": c["check_id"], "resource": c.get("resource", ""),
                 "reason": (c.get("check_result") or {}).get("suppress_comment", "")}
            )  # fmt: skip
    if proc.returncode not in (0, 1) or (proc.returncode == 1 and not failed):
        raise DeployError(f"checkov failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}")
    if parse_errors:
        raise DeployError(f"checkov could not parse {parse_errors} file(s) of {[str(p) for p in paths]}")
    if passed + len(failed) + len(skipped) == 0:
        # An empty scan would read as a pass: e.g. a wrong framework or a directory without matching files.
        raise DeployError(f"checkov ran no {framework} checks on {[str(p) for p in paths]}")
    return CheckovResult(passed=passed, failed=failed, skipped=skipped, command=cmd)
