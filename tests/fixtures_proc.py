"""A daemon the tests start (sshd, Prometheus, Pushgateway): its output to a log file, stopped however the test ends.
SIGTERM first, SIGKILL if it has not exited within the grace period, so no test leaves a process behind."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["logged_process"]


@contextmanager
def logged_process(cmd: list[str], log: Path, grace_s: float = 15.0) -> Iterator[subprocess.Popen]:
    """Run `cmd` with stdout and stderr in `log`; on exit terminate it, then kill it after `grace_s` seconds."""
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
