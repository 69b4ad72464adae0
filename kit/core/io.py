"""Small file helpers shared by every stage: the project root, atomic writes, relative paths and file hashes.
Outputs are written to a temp file beside the target and renamed, so a crash never leaves a half-written result."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kit.core.errors import KitError

__all__ = [
    "project_root",
    "atomic_path",
    "write_json",
    "write_text",
    "save_figure",
    "rel_path",
    "sha256_file",
    "read_labels",
    "write_labels",
]


def project_root(start: str | Path | None = None) -> Path:
    """The nearest directory at or above `start` (default: cwd) that holds params.yaml and dvc.yaml."""
    here = Path(start or Path.cwd()).resolve()
    for cand in (here, *here.parents):
        if (cand / "params.yaml").is_file() and (cand / "dvc.yaml").is_file():
            return cand
    raise KitError(f"no params.yaml + dvc.yaml at or above {here}: run from inside the project")


@contextlib.contextmanager
def atomic_path(target: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temp path next to `target`; on success rename it over `target`, on error delete it."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix or ".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.is_file():  # mkstemp makes 0600 files; give outputs the usual umask-based mode
            tmp_path.chmod(0o666 & ~_umask())
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once at import: os.umask can only be read by setting it, which is not thread-safe while writers run.
_UMASK = _read_umask()


def _umask() -> int:
    return _UMASK


def write_text(path: str | Path, text: str) -> Path:
    """Write text atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: str | Path, obj: Any) -> Path:
    """Write JSON atomically, keys sorted so reruns diff cleanly."""
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def save_figure(fig: Any, path: str | Path, dpi: int = 110, *, tight: bool = False, close: bool = False) -> Path:
    """Save a matplotlib figure atomically (format from the suffix, parents made).

    Args:
        tight: lay the figure out first (`tight_layout`).
        close: close it after saving (a stage writing many plots); left open by default so notebooks still show it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if tight:
        fig.tight_layout()
    with atomic_path(path, suffix=path.suffix) as tmp:
        # Without the Software tag a PNG is the same bytes whichever matplotlib wrote it.
        meta = {"Software": None} if path.suffix == ".png" else None
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", metadata=meta)
    if close:
        import matplotlib.pyplot as plt

        plt.close(fig)
    return path


def rel_path(path: str | Path, root: str | Path) -> str:
    """`path` relative to `root` in POSIX form, so reports carry no machine path; a path outside root stays as given
    (made relative to cwd's spelling only by the caller)."""
    p = Path(path)
    if not p.is_absolute():
        return p.as_posix()
    try:
        return p.resolve().relative_to(Path(root).resolve()).as_posix()
    except ValueError:
        return p.as_posix()


def sha256_file(*paths: str | Path) -> str:
    """Hex SHA-256 of the files' bytes, concatenated in the given order (one file: its usual digest)."""
    h = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def read_labels(path: str | Path, error: type[KitError] = KitError) -> list[str]:
    """Class names in id order from a labels.json (`{"labels": [...]}`), the one format every stage writes.

    Args:
        path: the labels.json file.
        error: the KitError subclass to raise (DataError for the data splits, ModelDirError for a serving dir).

    Raises:
        error: the file is missing or unreadable, or does not hold at least two unique strings (names the file).
    """
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"{path}: not found (the data stage writes it)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error(f"{path}: cannot read JSON: {exc}") from None
    labels = raw.get("labels") if isinstance(raw, dict) else None
    if not isinstance(labels, list) or len(labels) < 2 or not all(isinstance(x, str) and x for x in labels):
        raise error(f'{path}: expected {{"labels": [at least two strings in id order]}}')
    if len(set(labels)) != len(labels):
        raise error(f"{path}: labels must be unique, got {labels}")
    return list(labels)


def write_labels(path: str | Path, labels: list[str]) -> Path:
    """Write labels.json in the format read_labels reads."""
    return write_json(path, {"labels": list(labels)})
