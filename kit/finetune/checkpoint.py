"""Spot-safe checkpoint bookkeeping for the finetune stage: run fingerprints, completion markers, resume choice.
A checkpoint is resumed only when it is complete (MARKER written last) and of this very run (same fingerprint)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from kit.core.io import rel_path, sha256_file
from kit.core.params import Params

__all__ = ["MARKER", "CHECKPOINT_PREFIX", "run_fingerprint", "checkpoints", "find_resume_checkpoint"]

MARKER = "kit_complete.json"  # written last into a checkpoint: a checkpoint without it is half-written
CHECKPOINT_PREFIX = "checkpoint-"
# Keys that change neither the weights nor the data order: a checkpoint stays valid when only these differ.
_NOT_FINGERPRINTED = {"min_macro_f1", "min_gain_over_baseline", "keep_checkpoints", "checkpoint_dir", "logging_steps"}


def run_fingerprint(params: Params, data_dir: str | Path, world_size: int = 1) -> str:
    """A hash of everything that decides the weights: model/train params, data files, process count, versions.

    A checkpoint is resumed only when its fingerprint equals the current run's.
    """
    import torch
    import transformers

    data_dir = Path(data_dir)
    train = {k: v for k, v in params.finetune.model_dump(mode="json").items() if k not in _NOT_FINGERPRINTED}
    blob = {
        "model": params.model.model_dump(mode="json"),
        "train": train,
        "data": {p.name: sha256_file(p) for p in sorted(data_dir.glob("*.parquet")) + [data_dir / "labels.json"]},
        "world_size": world_size,
        "versions": [torch.__version__, transformers.__version__],
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


def checkpoints(ckpt_dir: Path) -> list[Path]:
    """checkpoint-N directories, oldest step first."""
    found = []
    for p in ckpt_dir.glob(f"{CHECKPOINT_PREFIX}*"):
        suffix = p.name[len(CHECKPOINT_PREFIX) :]
        if p.is_dir() and suffix.isdigit():
            found.append((int(suffix), p))
    return [p for _, p in sorted(found)]


def find_resume_checkpoint(ckpt_dir: str | Path, fingerprint: str, cleanup: bool = True, log=print) -> Path | None:
    """The newest complete checkpoint of this very run (same fingerprint), or None to start fresh.

    Args:
        ckpt_dir: the Trainer's output directory.
        fingerprint: run_fingerprint(...) of the current run.
        cleanup: remove half-written checkpoints and those of other params/data (only the main process should).
        log: where to say what was found.

    Returns:
        Path of the checkpoint to resume from, or None.
    """
    ckpt_dir = Path(ckpt_dir)
    complete, stale, partial = [], [], []
    for ckpt in checkpoints(ckpt_dir):
        try:
            mark = json.loads((ckpt / MARKER).read_text())
        except (OSError, ValueError):
            mark = None
        if not mark or not (ckpt / "trainer_state.json").is_file():
            partial.append(ckpt)
        elif mark.get("fingerprint") == fingerprint:
            complete.append(ckpt)
        else:
            stale.append(ckpt)

    def shown(path: Path) -> str:  # logs land in executed notebooks: no machine path, relative to the run's cwd
        return rel_path(path, Path.cwd())

    for ckpt in partial:
        log(f"ignoring half-written checkpoint {shown(ckpt)} (no completion marker)")
    if stale:
        log(
            f"{len(stale)} checkpoint(s) in {shown(ckpt_dir)} belong to other params or data (fingerprint differs): "
            "not resuming"
        )
    if cleanup:
        for ckpt in partial + stale:
            shutil.rmtree(ckpt, ignore_errors=True)
    if complete:
        log(f"resuming from {shown(complete[-1])} (fingerprint {fingerprint})")
        return complete[-1]
    log(f"no checkpoint of this run in {shown(ckpt_dir)}: starting fresh (fingerprint {fingerprint})")
    return None
