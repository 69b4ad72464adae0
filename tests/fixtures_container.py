"""Test helpers for the server image: podman set up for this machine, a Debian base image made with debootstrap (no
registry can be reached), wheels fetched on the host, the project Dockerfile built offline, and a running container.

No registry is reachable from here, so the Dockerfile's `FROM python:3.11-slim-bookworm` lines are swapped, in a temp
copy of the build context, for a local Debian bookworm minbase + python3 image (the same Debian release and Python
minor version); the repo's Dockerfile itself is unchanged. pip inside a build cannot verify PyPI's certificate either,
so the pinned wheels are downloaded on the host and mounted into the build (PIP_NO_INDEX / PIP_FIND_LINKS build args).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from kit.deploy.servers import free_port

__all__ = [
    "BASE_TAG",
    "IMAGE_TAG",
    "BuiltImage",
    "Container",
    "podman",
    "podman_problem",
    "ensure_base_image",
    "download_wheels",
    "swap_base",
    "build_image",
]

ROOT = Path(__file__).resolve().parents[1]
BASE_TAG = "localhost/kit-base-bookworm:py311"
IMAGE_TAG = "localhost/kit-serve:test"
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kit-container"
# The base's Debian release, its python3 and glibc: the wheels must fit these, not the host.
SUITE, PY_VERSION, GLIBC_MINOR = "bookworm", "3.11", 36
BASE_PACKAGES = "python3,python3-venv,python-is-python3,ca-certificates"
# crun fails on this kernel's cgroup set-up and podman's default rlimits are refused here: runc and explicit limits.
CONTAINERS_CONF = """[engine]
runtime = "runc"

[containers]
default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]
"""


def _env() -> dict[str, str]:
    conf = CACHE / "containers.conf"
    if not conf.is_file() or conf.read_text() != CONTAINERS_CONF:
        conf.parent.mkdir(parents=True, exist_ok=True)
        conf.write_text(CONTAINERS_CONF)
    return dict(os.environ, CONTAINERS_CONF=str(conf))


def podman(*args: str, check: bool = True, timeout: float = 120, **kw: object) -> subprocess.CompletedProcess:
    """Run `podman ARGS` with this machine's containers.conf; text output captured.

    Raises:
        RuntimeError: the command failed (with its stderr) and `check` is set.
    """
    res = subprocess.run(["podman", *args], env=_env(), capture_output=True, text=True, timeout=timeout, **kw)
    if check and res.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args[:3])} ... exited {res.returncode}:\n{res.stderr[-3000:]}")
    return res


def podman_problem() -> str | None:
    """Why containers cannot be built and run here, or None when they can."""
    if shutil.which("podman") is None:
        return "podman is not installed (.ci/run installs Debian's podman, runc and debootstrap)"
    info = podman("info", "--format", "{{.Host.OCIRuntime.Name}}", check=False, timeout=60)
    if info.returncode != 0:
        return f"podman cannot run here: {info.stderr.strip()[-500:]}"
    if podman("image", "exists", BASE_TAG, check=False).returncode != 0:
        if shutil.which("debootstrap") is None:
            return f"no {BASE_TAG} image and no debootstrap to make one"
        if os.geteuid() != 0:
            return f"no {BASE_TAG} image, and debootstrap needs root to make one"
    return None


def _debian_mirror() -> str:
    """The Debian mirror apt uses here (a proxy or local mirror may stand in for deb.debian.org)."""
    files = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for f in files:
        text = f.read_text(errors="replace") if f.is_file() else ""
        if m := re.search(r"https?://[^\s\]]+/debian(?=/?\s)", text + "\n"):
            return m.group(0)
    return "http://deb.debian.org/debian"


def ensure_base_image(tag: str = BASE_TAG) -> float | None:
    """Make the local stand-in for python:3.11-slim-bookworm once per machine (podman's store keeps it).

    Returns:
        Seconds it took to build, or None when it was already there.

    Raises:
        RuntimeError: debootstrap or the import failed (with the log's tail).
    """
    if podman("image", "exists", tag, check=False).returncode == 0:
        return None
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="kit-base-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        cmd = ["debootstrap", "--variant=minbase", f"--include={BASE_PACKAGES}", SUITE, str(rootfs), _debian_mirror()]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        if res.returncode != 0:
            raise RuntimeError(f"debootstrap exited {res.returncode}:\n{(res.stdout + res.stderr)[-3000:]}")
        # What python:slim leaves out too: docs, man pages, locales, apt's package lists and downloaded debs.
        for junk in ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale", "var/lib/apt/lists",
                     "var/cache/apt", "var/cache/debconf/templates.dat-old", "var/log"):  # fmt: skip
            target = rootfs / junk
            shutil.rmtree(target, ignore_errors=True) if target.is_dir() else target.unlink(missing_ok=True)
        changes = ["ENV LANG=C.UTF-8", "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                   'CMD ["python3"]']  # fmt: skip
        args = [a for c in changes for a in ("--change", c)]
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "--numeric-owner", "-c", "."], stdout=subprocess.PIPE)
        try:
            podman("import", *args, "-", tag, stdin=tar.stdout, timeout=600)
        finally:
            tar.wait()
    return time.perf_counter() - t0


def download_wheels() -> tuple[Path, float | None]:
    """The wheels of requirements-serve.txt and the package's build backend, for the base's Python and glibc.

    Downloaded once per requirements version into the user cache (the build then needs no network).

    Returns:
        (wheel dir, seconds the download took or None when cached).
    """
    reqs = (ROOT / "requirements-serve.txt").read_bytes()
    build = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    arch = platform.machine()
    key = hashlib.sha256(reqs + json.dumps([build, arch, PY_VERSION, GLIBC_MINOR]).encode()).hexdigest()[:12]
    dest = CACHE / f"wheels-{key}"
    if (dest / ".complete").is_file():
        return dest, None
    t0 = time.perf_counter()
    part = dest.with_name(dest.name + ".part")
    shutil.rmtree(part, ignore_errors=True)
    # pip does not widen an explicit manylinux tag to older glibc versions: list every one the base can load.
    plats = [f"manylinux_2_{m}_{arch}" for m in range(GLIBC_MINOR, 4, -1)]
    plats += [f"manylinux{y}_{arch}" for y in ("2014", "2010", "1")]
    cmd = [sys.executable, "-m", "pip", "download", "-q", "-d", str(part), "--only-binary=:all:",
           "--python-version", PY_VERSION, "--implementation", "cp", *[a for p in plats for a in ("--platform", p)],
           "-r", str(ROOT / "requirements-serve.txt"), *build]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if res.returncode != 0:
        raise RuntimeError(f"pip download exited {res.returncode}:\n{res.stderr[-3000:]}")
    (part / ".complete").touch()
    shutil.rmtree(dest, ignore_errors=True)
    part.rename(dest)
    return dest, time.perf_counter() - t0


def swap_base(dockerfile: str, base: str = BASE_TAG) -> str:
    """The Dockerfile with every FROM image replaced by `base` (stage names and all other lines kept)."""
    out, n = re.subn(r"^(FROM\s+(?:--platform=\S+\s+)?)\S+", lambda m: m.group(1) + base, dockerfile, flags=re.M)
    if n == 0:
        raise ValueError("Dockerfile has no FROM line")
    return out


@dataclass
class BuiltImage:
    """The server image and what making it cost (None: that step was cached)."""

    tag: str
    size_mb: float
    base_build_s: float | None
    wheels_s: float | None
    build_s: float
    serving_dir: Path
    id: str = ""  # what the containers run: the tag may be moved meanwhile by another build on this machine


def build_image(serving_dir: Path, tag: str = IMAGE_TAG) -> BuiltImage:
    """Build the project Dockerfile on the local base, offline, with `serving_dir` as its models/serving.

    The context is a temp dir holding what .dockerignore lets in (and the .dockerignore itself); podman's layer
    cache makes a rebuild with unchanged inputs cheap.
    """
    with ThreadPoolExecutor(1) as pool:  # the download (network) overlaps debootstrap (disk and CPU)
        fetch = pool.submit(download_wheels)
        base_s = ensure_base_image()
        wheels, wheels_s = fetch.result()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="kit-image-") as tmp:
        ctx = Path(tmp)
        for name in ("requirements-serve.txt", "pyproject.toml", "README.md", "params.yaml", ".dockerignore"):
            shutil.copy2(ROOT / name, ctx / name)
        shutil.copytree(ROOT / "kit", ctx / "kit", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        shutil.copytree(serving_dir, ctx / "models" / "serving")
        (ctx / "Dockerfile").write_text(swap_base((ROOT / "Dockerfile").read_text()))
        podman("build", "--format", "docker", "--network", "none", "--volume", f"{wheels}:/wheels:ro",
               "--build-arg", "PIP_NO_INDEX=1", "--build-arg", "PIP_FIND_LINKS=/wheels",
               "--iidfile", str(ctx / "iid"), "--tag", tag, str(ctx), timeout=900)  # fmt: skip
        iid = (ctx / "iid").read_text().strip()
    build_s = time.perf_counter() - t0
    size = int(podman("image", "inspect", "--format", "{{.Size}}", iid).stdout.strip())
    return BuiltImage(tag, round(size / 1e6, 1), base_s, wheels_s, build_s, serving_dir, iid)


class Container:
    """The image run as the manifests run it: read-only root fs, no capabilities, UID 10001, a CPU limit, the API
    port and the admin port published on loopback. Use as a context manager (the container is removed on exit).

    Args:
        image: image tag or ID.
        extra: more `podman run` options (volumes, ...).
        command: replaces the image's CMD (the manifests' `kit serve ...` arguments, say).
        admin_port: the admin port inside the container (serve.admin_port), published beside 8000; None: none.
    """

    def __init__(self, image: str, *, cpus: str = "1", cpuset: str | None = None, extra: tuple[str, ...] = (),
                 command: tuple[str, ...] = (), admin_port: int | None = 9000):  # fmt: skip
        self.name = f"kit-serve-{uuid.uuid4().hex[:10]}"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        publish = ["--publish", f"127.0.0.1:{self.port}:8000"]
        self.admin_url = self.url
        if admin_port is not None:
            host_admin = free_port()
            self.admin_url = f"http://127.0.0.1:{host_admin}"
            publish += ["--publish", f"127.0.0.1:{host_admin}:{admin_port}"]
        limits = ["--cpus", cpus] + (["--cpuset-cpus", cpuset] if cpuset else [])
        self.started = time.perf_counter()
        podman("run", "--detach", "--name", self.name, "--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL",
               "--user", "10001", *limits, *publish, *extra, image, *command)  # fmt: skip

    def __enter__(self) -> Container:
        return self

    def __exit__(self, *exc: object) -> None:
        podman("rm", "--force", "--time", "0", self.name, check=False)

    def state(self) -> dict:
        """podman's State of the container (Running, ExitCode, Pid, ...)."""
        return json.loads(podman("inspect", "--format", "{{json .State}}", self.name).stdout)

    def wait_ready(self, timeout: float = 120.0) -> float:
        """Poll /readyz until 200; returns seconds from `podman run` to ready.

        Raises:
            RuntimeError: the container exited or was not ready in time (with its log).
        """
        import httpx

        deadline, next_check = time.perf_counter() + timeout, 0.0
        with httpx.Client(timeout=1.0) as client:
            while time.perf_counter() < deadline:
                try:
                    if client.get(self.url + "/readyz").status_code == 200:
                        return time.perf_counter() - self.started
                except httpx.TransportError:
                    pass
                if time.perf_counter() > next_check:  # a podman call costs ~0.1 s: not on every poll
                    if not self.state()["Running"]:
                        raise RuntimeError(f"container exited {self.state()['ExitCode']}:\n{self.logs()[-3000:]}")
                    next_check = time.perf_counter() + 1.0
                time.sleep(0.02)
        raise RuntimeError(f"container not ready after {timeout} s:\n{self.logs()[-3000:]}")

    def logs(self) -> str:
        res = podman("logs", self.name, check=False)
        return res.stdout + res.stderr

    def exec(self, *cmd: str, user: str | None = None) -> subprocess.CompletedProcess:
        """Run a command inside the running container (as its user unless `user` is given); not checked."""
        return podman("exec", *(["--user", user] if user else []), self.name, *cmd, check=False)

    def healthcheck(self) -> subprocess.CompletedProcess:
        """Run the image's HEALTHCHECK command once (podman schedules it with systemd timers, absent here)."""
        return podman("healthcheck", "run", self.name, check=False)

    def stop(self, timeout_s: int = 30) -> int:
        """`podman stop` (SIGTERM, SIGKILL after timeout_s); returns the exit code."""
        podman("stop", "--time", str(timeout_s), self.name, timeout=timeout_s + 60)
        return int(self.state()["ExitCode"])

    def kill(self, signal: str = "TERM") -> None:
        """Send `signal` to the server (PID 1) and nothing after it, unlike `podman stop`'s SIGKILL."""
        podman("kill", "--signal", signal, self.name)

    def wait(self, timeout_s: float = 120) -> int:
        """Block until the container exits (`podman wait`); returns its exit code."""
        return int(podman("wait", self.name, timeout=timeout_s).stdout.strip())
