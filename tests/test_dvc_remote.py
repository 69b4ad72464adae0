"""Shared results through a real DVC remote (Debian's sshd on loopback): `make push` from one clone, `make pull` into
a fresh clone with an empty cache, whose `dvc repro` then runs nothing and whose `dvc status` is clean."""

from __future__ import annotations

import hashlib
import importlib.util
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, copy_project, run_env
from tests.fixtures_remote import SSH_KEYGEN, SSHD, SshServer, run_sshd

pytestmark = pytest.mark.slow
# The data stage alone (a few seconds on tiny params) stands in for the whole pipeline: what `make pull` restores is
# every cached out in dvc.lock, whichever stage made it.
STAGE = "data"


@pytest.fixture(scope="module")
def sshd(tmp_path_factory) -> SshServer:
    if SSHD is None or SSH_KEYGEN is None:
        pytest.skip("OpenSSH server not installed (Debian's openssh-server; .ci/run installs it)")
    if importlib.util.find_spec("dvc_ssh") is None:
        pytest.skip("dvc-ssh not installed (requirements.lock)")
    with run_sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server


def sh(
    args: list[str], cwd: Path, env: dict[str, str], ok: bool = True, log: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `args`; unless not `ok`, assert it succeeded, quoting its output (and the sshd `log`, if given)."""
    res = subprocess.run(args, cwd=cwd, capture_output=True, text=True, env=env, timeout=300)
    if ok and res.returncode != 0:
        server = f"\nsshd log:\n{log.read_text()[-3000:]}" if log else ""
        raise AssertionError(f"{' '.join(args)} failed:\n{res.stdout[-4000:]}\n{res.stderr[-4000:]}{server}")
    return res


def client_env(server: SshServer, remote: str | None) -> dict[str, str]:
    """The project's environment for a teammate whose ~/.ssh reaches the server; KIT_DVC_REMOTE set or unset."""
    env = run_env()
    env.pop("KIT_DVC_REMOTE", None)
    env |= {
        "HOME": str(server.home),
        "GIT_AUTHOR_NAME": "kit",
        "GIT_AUTHOR_EMAIL": "kit@example.invalid",
        "GIT_COMMITTER_NAME": "kit",
        "GIT_COMMITTER_EMAIL": "kit@example.invalid",
    }
    if remote is not None:
        env["KIT_DVC_REMOTE"] = remote
    return env


def make(
    target: str, cwd: Path, env: dict[str, str], server: SshServer, ok: bool = True
) -> subprocess.CompletedProcess[str]:
    """`make target` in `cwd`. -o install: the copies share this interpreter's environment, not a .venv of their own."""
    return sh(["make", "--no-print-directory", "-o", "install", target], cwd, env, ok, server.log)


def cached_outs(proj: Path) -> dict[str, str]:
    """md5 of each cached out of STAGE in dvc.lock, as recorded there."""
    outs = yaml.safe_load((proj / "dvc.lock").read_text())["stages"][STAGE]["outs"]
    stage = yaml.safe_load((proj / "dvc.yaml").read_text())["stages"][STAGE]
    declared = [o for kind in ("outs", "metrics", "plots") for o in stage.get(kind, [])]
    uncached = {p for o in declared if isinstance(o, dict) for p, opts in o.items() if opts.get("cache") is False}
    return {o["path"]: o["md5"] for o in outs if o["path"] not in uncached}


@pytest.fixture(scope="module")
def pushed(sshd, tmp_path_factory) -> tuple[Path, Path, str]:
    """A teammate's repo that ran STAGE, committed dvc.lock and pushed its cache: (repo, remote dir, remote URL)."""
    tmp = tmp_path_factory.mktemp("team")
    proj = copy_project(tmp / "origin")
    (proj / "params.yaml").write_text((REPO / "tests/params_tiny.yaml").read_text())
    dvc_yaml = yaml.safe_load((proj / "dvc.yaml").read_text())
    dvc_yaml["stages"] = {STAGE: dvc_yaml["stages"][STAGE]}
    (proj / "dvc.yaml").write_text(yaml.safe_dump(dvc_yaml, sort_keys=False))
    storage = tmp / "storage"
    storage.mkdir()
    env = client_env(sshd, sshd.url(storage))
    assert re.findall(r"Running stage '(\w+)'", sh(["dvc", "repro"], proj, env).stdout) == [STAGE]
    sh(["git", "add", "-A"], proj, env)
    sh(["git", "commit", "-q", "-m", "pipeline run"], proj, env)
    out = make("push", proj, env, sshd).stdout
    assert f"{len(cached_outs(proj))} files pushed" in out, out
    return proj, storage, sshd.url(storage)


def test_push_stores_every_cached_out_on_the_server(pushed):
    proj, storage, url = pushed
    stored = {"".join(p.relative_to(storage / "files" / "md5").parts) for p in storage.rglob("*") if p.is_file()}
    assert set(cached_outs(proj).values()) <= stored
    # The URL lives in the git-ignored config.local, never in a committed file.
    assert url in (proj / ".dvc/config.local").read_text()
    tracked = sh(["git", "ls-files"], proj, run_env()).stdout.split()
    assert ".dvc/config.local" not in tracked and url not in (proj / ".dvc/config").read_text()


def test_fresh_clone_pulls_and_reruns_nothing(pushed, sshd, tmp_path):
    proj, _, url = pushed
    clone = tmp_path / "clone"
    env = client_env(sshd, url)
    sh(["git", "clone", "-q", str(proj), str(clone)], tmp_path, env)
    assert not (clone / ".dvc/cache").exists()
    assert "not in cache" in sh(["dvc", "status"], clone, env).stdout  # the clone alone lacks every cached out

    out = make("pull", clone, env, sshd).stdout
    assert re.search(rf"{len(cached_outs(proj))} files? (fetched|added)", out), out
    for path, md5 in cached_outs(proj).items():
        assert hashlib.md5((clone / path).read_bytes()).hexdigest() == md5, path
        assert (clone / path).read_bytes() == (proj / path).read_bytes(), path
    mtimes = {p: (clone / p).stat().st_mtime_ns for p in cached_outs(proj)}

    repro = sh(["dvc", "repro"], clone, env)
    assert "Running stage" not in repro.stdout and f"Stage '{STAGE}' didn't change, skipping" in repro.stdout
    assert {p: (clone / p).stat().st_mtime_ns for p in cached_outs(proj)} == mtimes
    assert "up to date" in sh(["dvc", "status"], clone, env).stdout
    assert "in sync" in sh(["dvc", "status", "--cloud"], clone, env).stdout
    assert sh(["git", "status", "--porcelain"], clone, env).stdout == ""


def test_pull_without_a_remote_says_how_to_set_one(pushed, sshd, tmp_path):
    proj, _, _ = pushed
    clone = tmp_path / "clone"
    env = client_env(sshd, None)
    sh(["git", "clone", "-q", str(proj), str(clone)], tmp_path, env)
    res = make("pull", clone, env, sshd, ok=False)
    assert res.returncode != 0 and "KIT_DVC_REMOTE" in res.stderr, res.stderr
    assert not (clone / "data/train.parquet").exists()
