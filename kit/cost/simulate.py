"""Discrete-event simulation (SimPy) of a day's traffic against an autoscaled pool of pods: HPA or scale-to-zero.
Queueing, cold starts, pod-hours and idle time come from the simulated requests, not from averages."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Generator
from typing import Literal

import numpy as np
import simpy
from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Autoscaler", "SimResult", "simulate"]

_Steps = Generator[simpy.Event, object, None]  # a SimPy process body


class Autoscaler(BaseModel):
    """How the pool follows the load: desired pods = ceil(rate over `window_s` / (pod rate x target)), every `tick_s`.

    Scaling down takes the highest recommendation of the last `down_delay_s` (HPA's stabilization window, Knative's
    scale-to-zero grace period); a new pod serves after `start_s` (the cold start)."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["hpa", "kpa"] = "hpa"
    min_pods: int = Field(default=1, ge=0)
    max_pods: int = Field(default=100, ge=1)
    tick_s: float = Field(default=15.0, gt=0)
    window_s: float = Field(default=60.0, gt=0)
    target_utilization: float = Field(default=0.7, gt=0, le=1)
    down_delay_s: float = Field(default=300.0, ge=0)
    start_s: float = Field(default=1.0, ge=0)


class SimResult(BaseModel):
    """What the simulated day gave; shares are per request, waits include time spent waiting for a cold pod."""

    requests: float
    simulated_arrivals: int
    requests_per_arrival: float
    mean_pods: float
    peak_pods: int
    idle_share: float
    cold_share: float
    cold_wait_mean_s: float | None
    waiting_share: float
    mean_wait_s: float
    p99_wait_ms: float


class _Pod:
    def __init__(self, env: simpy.Environment, slots: int, ready_at: float):
        self.res = simpy.Resource(env, capacity=slots)
        self.started, self.stopped, self.ready_at = env.now, math.nan, ready_at

    def load(self) -> int:
        return self.res.count + len(self.res.queue)


class _Pool:
    """The pods, their billing and the arrival counts the autoscaler reads."""

    def __init__(self, env: simpy.Environment, scaler: Autoscaler, slots: int, pod_rate: float):
        self.env, self.scaler, self.slots, self.pod_rate = env, scaler, slots, pod_rate
        self.pods: list[_Pod] = []
        self.retired: list[_Pod] = []
        self.ready_event = env.event()
        self.window: deque[float] = deque()  # arrival times within the metric window
        self.history: deque[tuple[float, int]] = deque()  # (time, recommendation) within down_delay_s
        self.peak = 0

    def ready(self) -> list[_Pod]:
        return [p for p in self.pods if p.ready_at <= self.env.now]

    def add(self, n: int, delay: float) -> None:
        for _ in range(n):
            pod = _Pod(self.env, self.slots, self.env.now + delay)
            self.pods.append(pod)
            self.env.process(self._announce(delay))
        self.peak = max(self.peak, len(self.pods))

    def _announce(self, delay: float) -> _Steps:
        yield self.env.timeout(delay)
        event, self.ready_event = self.ready_event, self.env.event()
        event.succeed()

    def remove(self, n: int) -> None:
        # Starting pods go first (nothing in flight), then the least loaded; in-flight requests still finish.
        order = sorted(self.pods, key=lambda p: (p.ready_at <= self.env.now, p.load()))
        for pod in order[:n]:
            pod.stopped = self.env.now
            self.pods.remove(pod)
            self.retired.append(pod)

    def recommend(self) -> int:
        now, s = self.env.now, self.scaler
        while self.window and self.window[0] < now - s.window_s:
            self.window.popleft()
        rate = len(self.window) / min(s.window_s, max(now, s.tick_s))
        want = math.ceil(rate / (self.pod_rate * s.target_utilization)) if rate > 0 else 0
        return min(max(want, s.min_pods), s.max_pods)


def _scaler(pool: _Pool) -> _Steps:
    s, env = pool.scaler, pool.env
    while True:
        yield env.timeout(s.tick_s)
        pool.history.append((env.now, pool.recommend()))
        while pool.history[0][0] < env.now - s.down_delay_s:
            pool.history.popleft()
        current = len(pool.pods)
        up = pool.history[-1][1]
        down = max(r for _, r in pool.history)
        if up > current:
            pool.add(up - current, s.start_s)
        elif down < current:
            pool.remove(current - down)


def _request(pool: _Pool, service_s: float, rng: np.random.Generator, *, out: list[tuple[float, bool]]) -> _Steps:
    env, t0, cold = pool.env, pool.env.now, False
    pool.window.append(t0)
    while not pool.ready():
        cold = True
        if not pool.pods:  # scaled to zero: the activator starts one pod for this request
            pool.add(1, pool.scaler.start_s)
        yield pool.ready_event
    pod = min(pool.ready(), key=_Pod.load)
    with pod.res.request() as req:
        yield req
        out.append((env.now - t0, cold))
        yield env.timeout(rng.exponential(service_s))


def _arrivals(pool: _Pool, times: np.ndarray, *, service_s: float, rng: np.random.Generator, out: list) -> _Steps:
    env = pool.env
    for t in times:
        yield env.timeout(t - env.now)
        env.process(_request(pool, service_s, rng, out=out))


def simulate(
    rates: np.ndarray,
    *,
    scaler: Autoscaler,
    slots: int,
    service_s: float,
    duration_s: float = 86_400.0,
    max_arrivals: int = 100_000,
    seed: int = 0,
) -> SimResult:
    """Simulate Poisson arrivals at piecewise-constant `rates` (requests/s, equal slices of `duration_s`).

    Args:
        rates: requests per second in each slice.
        scaler: the autoscaler (min_pods = max_pods for a fixed pool).
        slots: requests one pod serves at once; each takes an exponential time of mean `service_s`.
        duration_s: simulated time.
        max_arrivals: above this many expected requests, each simulated arrival stands for several requests (and
            takes that many times `service_s`), so a busy day stays a few seconds of CPU.
        seed: the random stream.

    Returns:
        Per-request shares and waits, time-averaged pods and idle share of the paid pod time.
    """
    rng = np.random.default_rng(seed)
    rates = np.asarray(rates, dtype=float)
    slice_s = duration_s / len(rates)
    expected = float(rates.sum() * slice_s)
    weight = max(1.0, expected / max_arrivals)
    counts = rng.poisson(rates * slice_s / weight)
    times = np.sort(np.concatenate([rng.uniform(i * slice_s, (i + 1) * slice_s, n) for i, n in enumerate(counts)]))
    env = simpy.Environment()
    pool = _Pool(env, scaler, slots, pod_rate=slots / service_s / weight)
    first = rates[0] / (slots / service_s * scaler.target_utilization)
    pool.add(min(max(math.ceil(first), scaler.min_pods), scaler.max_pods), 0.0)
    out: list[tuple[float, bool]] = []
    env.process(_arrivals(pool, times, service_s=service_s * weight, rng=rng, out=out))
    env.process(_scaler(pool))
    env.run(until=duration_s)
    return _summarise(pool, out, duration_s=duration_s, weight=weight, busy_s=len(out) * service_s * weight)


def _summarise(
    pool: _Pool, out: list[tuple[float, bool]], *, duration_s: float, weight: float, busy_s: float
) -> SimResult:
    pod_s = sum((duration_s if math.isnan(p.stopped) else p.stopped) - p.started for p in pool.pods + pool.retired)
    waits = np.array([w for w, _ in out]) if out else np.zeros(1)
    colds = np.array([c for _, c in out], dtype=bool) if out else np.zeros(1, dtype=bool)
    return SimResult(
        requests=len(out) * weight,
        simulated_arrivals=len(out),
        requests_per_arrival=weight,
        mean_pods=pod_s / duration_s,
        peak_pods=pool.peak,
        idle_share=max(0.0, 1.0 - busy_s / (pod_s * pool.slots)) if pod_s > 0 else 0.0,
        cold_share=float(colds.mean()),
        cold_wait_mean_s=float(waits[colds].mean()) if colds.any() else None,
        waiting_share=float((waits > 1e-12).mean()),
        mean_wait_s=float(waits.mean()),
        p99_wait_ms=float(np.percentile(waits, 99) * 1000),
    )
