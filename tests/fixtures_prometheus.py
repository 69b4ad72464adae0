"""Test helpers for real Prometheus components: Debian's `prometheus` and `prometheus-pushgateway` started on
loopback ports under a temp dir (terminated and waited for on exit, even on failure), and a tiny HTTP API client."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx
import yaml

from kit.deploy.servers import free_port
from tests.fixtures_proc import logged_process

__all__ = ["PROMETHEUS", "PUSHGATEWAY", "Prom", "scrape_job", "run_prometheus", "run_pushgateway", "free_port"]

PROMETHEUS = shutil.which("prometheus")
PUSHGATEWAY = shutil.which("prometheus-pushgateway")


class Prom:
    """A running Prometheus and a tiny client for its HTTP API."""

    def __init__(self, url: str):
        self.url = url

    def query(self, expr: str) -> dict:
        return httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10).json()

    def wait_for(self, expr: str, timeout: float = 60) -> list:
        """The instant-query result of `expr` once it is not empty."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            res = self.query(expr)
            if res["status"] == "success" and res["data"]["result"]:
                return res["data"]["result"]
            time.sleep(0.5)
        raise AssertionError(f"Prometheus returned nothing for {expr} within {timeout} s")

    def rules(self) -> dict[str, dict]:
        """Alerting rules by name, with their state, health and last evaluation time."""
        groups = httpx.get(f"{self.url}/api/v1/rules", timeout=10).json()["data"]["groups"]
        return {r["name"]: r for g in groups for r in g["rules"]}

    def alerts(self) -> list[dict]:
        """Active (pending or firing) alerts."""
        return httpx.get(f"{self.url}/api/v1/alerts", timeout=10).json()["data"]["alerts"]


def scrape_job(job: str, port: int, *, honor_labels: bool = False) -> dict:
    """One static scrape config for a loopback target."""
    return {"job_name": job, "honor_labels": honor_labels, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}


def _wait_ready(url: str, proc: subprocess.Popen, log: Path, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, f"{what} exited {proc.returncode}:\n{log.read_text()}"
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"{what} did not become ready:\n{log.read_text()}"
        time.sleep(0.2)


@contextmanager
def _daemon(cmd: list[str], log: Path, ready_url: str, what: str) -> Iterator[None]:
    with logged_process(cmd, log) as proc:
        _wait_ready(ready_url, proc, log, what)
        yield


@contextmanager
def run_prometheus(
    tmp: Path, scrape_configs: Sequence[dict], rule_files: Sequence[Path] = (), *, interval: str = "1s"
) -> Iterator[Prom]:
    """A Prometheus scraping `scrape_configs` and evaluating `rule_files` every `interval`, on a free port."""
    assert PROMETHEUS is not None, "prometheus not installed"
    config = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [str(p) for p in rule_files],
        "scrape_configs": list(scrape_configs),
    }
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    cmd = [
        PROMETHEUS,
        f"--config.file={tmp / 'prometheus.yml'}",
        f"--storage.tsdb.path={tmp / 'prometheus-data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
    ]
    url = f"http://127.0.0.1:{port}"
    with _daemon(cmd, tmp / "prometheus.log", f"{url}/-/ready", "prometheus"):
        yield Prom(url)


@contextmanager
def run_pushgateway(tmp: Path) -> Iterator[tuple[str, int]]:
    """A Pushgateway on a free port, in memory only (its packaged default persists under /var/lib).

    Yields:
        (base URL, port).
    """
    assert PUSHGATEWAY is not None, "prometheus-pushgateway not installed"
    port = free_port()
    cmd = [PUSHGATEWAY, f"--web.listen-address=127.0.0.1:{port}", "--persistence.file=", "--log.level=warn"]
    url = f"http://127.0.0.1:{port}"
    with _daemon(cmd, tmp / "pushgateway.log", f"{url}/-/ready", "pushgateway"):
        yield url, port
