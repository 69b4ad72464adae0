"""Lazy public APIs for the stage packages: `from kit.optimize import run_optimize` imports its module on first use.
Importing a package (or its commands module, which the CLI loads) therefore stays cheap: no torch until called."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

__all__ = ["lazy_api"]


def lazy_api(package: str, sources: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Module `__getattr__` and `__dir__` for `package`, resolving each public name from the module `sources` maps
    it to (PEP 562).

    Args:
        package: the package's `__name__`.
        sources: public name -> the module that defines it.

    Returns:
        (__getattr__, __dir__) to assign at the package's top level.
    """
    namespace = importlib.import_module(package).__dict__

    def __getattr__(name: str) -> Any:
        if name not in sources:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(sources[name]), name)
        namespace[name] = value  # later look-ups skip this function
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(sources))

    return __getattr__, __dir__
