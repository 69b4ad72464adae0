"""Progress where people wait: a bar that suits where the code runs, and a timer that gives each step a summary line.
A widget in JupyterLab, plain text lines on a console or under `kit run` (whose kernel output reaches the console)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["PROGRESS_ENV", "progress", "StepTimer"]

# `kit run` sets this to "text" for the papermill kernel: the runner streams the kernel's text output to the console,
# where a widget would show nothing (and an executed notebook keeps no widget state to render).
PROGRESS_ENV = "KIT_PROGRESS"


def progress(iterable: Iterable[Any] | None = None, **kwargs: Any) -> Any:
    """A tqdm bar: tqdm.auto's (a widget in a Jupyter kernel with ipywidgets) unless KIT_PROGRESS=text asks for lines.

    Args:
        iterable: what to iterate over (None: drive the bar with update()).
        kwargs: tqdm's keyword arguments (desc, total, unit, disable, ...).

    Returns:
        The tqdm instance.
    """
    if os.environ.get(PROGRESS_ENV) == "text":
        from tqdm.std import tqdm
    else:
        from tqdm.auto import tqdm
    return tqdm(iterable, **kwargs)


class StepTimer:
    """Times named steps of a stage, printing one summary line per step (`optimize: distill 154.2 s`).

    Attributes:
        steps: [(name, seconds)] in the order the steps ended.
    """

    def __init__(self, stage: str):
        self.stage = stage
        self.steps: list[tuple[str, float]] = []
        self._start = time.perf_counter()

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Time the body as step `name`; the summary line is printed once it ends (also when it raises)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            took = time.perf_counter() - start
            self.steps.append((name, round(took, 2)))
            print(f"{self.stage}: {name} {took:.1f} s", flush=True)

    @property
    def total_s(self) -> float:
        """Seconds since the timer was made."""
        return round(time.perf_counter() - self._start, 2)
