"""What a model run returns, row-aligned with its texts (`Rows`), and the slicing that gives each request its rows
back: a request's answer (`Batched`) carries them with the size of the micro-batch they ran in."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

__all__ = ["Rows", "Batched", "slice_rows", "take_rows", "concat_rows"]

# What one model run returns for its texts: an array, or several (None for one a model does not produce), row i of
# each belonging to text i. The batcher slices them per request and concatenates the chunks of a split request.
Rows = TypeVar("Rows", np.ndarray, tuple[np.ndarray | None, ...])


@dataclass(frozen=True)
class Batched(Generic[Rows]):
    """A request's answer: its rows, and the size of the micro-batch its texts ran in (the largest, if split)."""

    rows: Rows
    batch_size: int


def slice_rows(rows: Rows, start: int, stop: int) -> Rows:
    """Rows start..stop of every array."""
    if isinstance(rows, tuple):
        return tuple(None if r is None else r[start:stop] for r in rows)
    return rows[start:stop]


def take_rows(rows: Rows, index: np.ndarray) -> Rows:
    """The rows at `index` (in its order) of every array."""
    if isinstance(rows, tuple):
        return tuple(None if r is None else r[index] for r in rows)
    return rows[index]


def concat_rows(parts: list[Rows]) -> Rows:
    """Parts stacked in order, array by array (an array None in the parts stays None)."""
    first = parts[0]
    if isinstance(first, tuple):
        return tuple(
            None if first[k] is None else np.concatenate([x for p in parts if (x := p[k]) is not None])
            for k in range(len(first))
        )
    return np.concatenate(parts)
