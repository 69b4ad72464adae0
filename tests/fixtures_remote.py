"""A real OpenSSH server (Debian's sshd) on a loopback port for the DVC remote tests, run as the current user with
its own host key, authorized key and config under a temp dir, and a client HOME whose ~/.ssh trusts and reaches it."""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from kit.deploy.servers import free_port
from tests.fixtures_proc import logged_process

__all__ = ["SSHD", "SSH_KEYGEN", "SshServer", "run_sshd"]

SSHD = shutil.which("sshd", path=f"{os.environ.get('PATH', '')}{os.pathsep}/usr/sbin")
SSH_KEYGEN = shutil.which("ssh-keygen")
# The name the client's ~/.ssh/config gives the server: remote URLs say ssh://ALIAS/path, as a team's would.
ALIAS = "kit-remote"


@dataclass(frozen=True)
class SshServer:
    """A running sshd and the client HOME set up to reach it (its ~/.ssh holds the key, config and known_hosts)."""

    port: int
    home: Path
    log: Path  # sshd's own log (-e): why a login was refused

    def url(self, path: Path) -> str:
        """The DVC remote URL of the absolute `path` on this server."""
        return f"ssh://{ALIAS}{path}"


def _keygen(path: Path) -> str:
    """A passphrase-less ed25519 key pair at `path`; returns the public key line."""
    assert SSH_KEYGEN is not None, "ssh-keygen not installed"
    subprocess.run([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)], check=True)
    return path.with_suffix(".pub").read_text().strip()


def _server_config(tmp: Path, port: int, client_pub: str) -> tuple[Path, str]:
    """sshd_config admitting only `client_pub`; returns its path and the server's public host key."""
    host_pub = _keygen(tmp / "host_key")
    (tmp / "authorized_keys").write_text(client_pub + "\n")
    # StrictModes off: pytest's temp dirs are not laid out as sshd demands of a home; no PAM: no root needed.
    lines = [
        f"Port {port}",
        "ListenAddress 127.0.0.1",
        f"HostKey {tmp / 'host_key'}",
        f"AuthorizedKeysFile {tmp / 'authorized_keys'}",
        f"PidFile {tmp / 'sshd.pid'}",
        "UsePAM no",
        "StrictModes no",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PubkeyAuthentication yes",
        "PermitRootLogin prohibit-password",
        "Subsystem sftp internal-sftp",
        "LogLevel VERBOSE",
    ]
    (tmp / "sshd_config").write_text("\n".join(lines) + "\n")
    return tmp / "sshd_config", host_pub


def _client_home(tmp: Path, port: int) -> tuple[Path, str]:
    """A HOME whose ~/.ssh names the server ALIAS and holds the client key; returns it and the public key line."""
    ssh = tmp / "home" / ".ssh"
    ssh.mkdir(parents=True, mode=0o700)
    pub = _keygen(ssh / "id_ed25519")
    config = [
        f"Host {ALIAS}",
        "  HostName 127.0.0.1",
        f"  Port {port}",
        f"  User {getpass.getuser()}",
        f"  IdentityFile {ssh / 'id_ed25519'}",
        # sshfs 2026.8 skips host-key checks (known_hosts=None, docs/remote.md); the key is pinned regardless, as
        # a teammate's would be and as a client that checks needs.
        f"  UserKnownHostsFile {ssh / 'known_hosts'}",
    ]
    (ssh / "config").write_text("\n".join(config) + "\n")
    return ssh.parent, pub


def _wait_banner(port: int, proc: subprocess.Popen, log: Path, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, f"sshd exited {proc.returncode}:\n{log.read_text()}"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                if s.recv(64).startswith(b"SSH-2.0-"):
                    return
        except OSError:
            pass
        assert time.monotonic() < deadline, f"sshd did not answer on port {port}:\n{log.read_text()}"
        time.sleep(0.1)


@contextmanager
def run_sshd(tmp: Path) -> Iterator[SshServer]:
    """sshd in the foreground on a free loopback port (terminated and waited for on exit, even on failure)."""
    assert SSHD is not None, "sshd not installed"
    if os.geteuid() == 0:
        # As root sshd insists on its privilege-separation dir, which Debian's service unit makes at boot.
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    port = free_port()
    home, client_pub = _client_home(tmp, port)
    config, host_pub = _server_config(tmp, port, client_pub)
    (home / ".ssh" / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_pub}\n")
    log = tmp / "sshd.log"
    # -D: stay in the foreground (our child); -e: log to stderr, i.e. the log file.
    with logged_process([SSHD, "-D", "-e", "-f", str(config)], log, grace_s=10) as proc:
        _wait_banner(port, proc, log)
        yield SshServer(port=port, home=home, log=log)
