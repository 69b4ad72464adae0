"""The cost stage's error: a price sheet, traffic trace or report figure the cost model cannot use.
Messages name the file, the row and the column (or the report field) at fault."""

from __future__ import annotations

from kit.core.errors import KitError

__all__ = ["CostError"]


class CostError(KitError):
    """An input of the cost model is unusable; the message says which one and why."""
