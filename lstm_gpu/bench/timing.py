"""Clocks and statistics for the benchmark.

Two clocks, one interface (`start()`, `stop() -> seconds`):

- `HostTimer`: `time.perf_counter_ns`, monotonic. For work that runs on the CPU.
- `CupyEventTimer` / `TorchEventTimer`: a pair of CUDA events recorded on the current stream;
  `stop()` synchronises on the end event before reading the elapsed time. For GPU work the
  events measure what the device did, including any gaps in which it waited for the host.

`measure()` runs a callable under one clock: warm-up calls first, then `repeats` samples of
`number` calls each (`number` is chosen so that one sample is long enough for the clock to
resolve), synchronising before every start. It returns the per-call time of each sample.
`summarize()` turns samples into a median and a spread (quartiles, IQR, min, max).
"""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable, Optional, Sequence

# One sample must last at least this long, so timer resolution and the cost of reading the
# clock stay far below 1% of the measurement.
MIN_SAMPLE_S = {"host": 2e-3, "cuda-event": 2e-4}


class HostTimer:
    """Wall-clock timer for host (CPU) work: a monotonic, nanosecond clock."""

    kind = "host"

    def __init__(self, sync: Optional[Callable[[], None]] = None):
        self._sync = sync or (lambda: None)
        self._t0 = 0

    def start(self) -> None:
        self._sync()
        self._t0 = time.perf_counter_ns()

    def stop(self) -> float:
        self._sync()
        return (time.perf_counter_ns() - self._t0) * 1e-9


class CupyEventTimer:
    """CUDA-event timer on CuPy's current stream."""

    kind = "cuda-event"

    def __init__(self):
        import cupy

        self._cupy = cupy
        self._start = cupy.cuda.Event()
        self._end = cupy.cuda.Event()

    def start(self) -> None:
        self._cupy.cuda.get_current_stream().synchronize()
        self._start.record()

    def stop(self) -> float:
        self._end.record()
        self._end.synchronize()
        return self._cupy.cuda.get_elapsed_time(self._start, self._end) * 1e-3


class TorchEventTimer:
    """CUDA-event timer on PyTorch's current stream."""

    kind = "cuda-event"

    def __init__(self):
        import torch

        self._torch = torch
        self._start = torch.cuda.Event(enable_timing=True)
        self._end = torch.cuda.Event(enable_timing=True)

    def start(self) -> None:
        self._torch.cuda.synchronize()
        self._start.record()

    def stop(self) -> float:
        self._end.record()
        self._end.synchronize()
        return self._start.elapsed_time(self._end) * 1e-3


@dataclass(frozen=True)
class Stats:
    """Summary of per-call times, in seconds."""

    median: float
    q1: float
    q3: float
    iqr: float
    min: float
    max: float
    mean: float
    repeats: int  # number of samples
    number: int = 1  # calls per sample
    timer: str = "host"

    def to_json(self) -> dict:
        return {f"{k}_s" if k not in ("repeats", "number", "timer") else k: v
                for k, v in asdict(self).items()}


def quartiles(samples: Sequence[float]) -> tuple[float, float, float]:
    """(q1, median, q3) with linear interpolation (NumPy's default method)."""
    xs = sorted(samples)
    if not xs:
        raise ValueError("quartiles of an empty sample")

    def at(p: float) -> float:
        pos = p * (len(xs) - 1)
        lo = math.floor(pos)
        hi = min(lo + 1, len(xs) - 1)
        return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)

    return at(0.25), at(0.5), at(0.75)


def summarize(samples: Sequence[float], *, number: int = 1, timer: str = "host") -> Stats:
    """Median and spread of per-call times."""
    q1, med, q3 = quartiles(samples)
    return Stats(median=med, q1=q1, q3=q3, iqr=q3 - q1, min=min(samples), max=max(samples),
                 mean=statistics.fmean(samples), repeats=len(samples), number=number,
                 timer=timer)


def plan_repeats(call_s: float, repeats: int, budget_s: Optional[float],
                 min_repeats: int = 3) -> int:
    """How many samples fit a time budget: `repeats`, cut down to the budget, never below
    `min_repeats` (a median of fewer than three says little)."""
    if budget_s is None or call_s <= 0:
        return repeats
    return max(min(repeats, int(budget_s / call_s)), min(min_repeats, repeats))


def measure(fn: Callable[[], None], timer, *, repeats: int, warmup: int = 1,
            budget_s: Optional[float] = None) -> Stats:
    """Time `fn` under `timer` (see the module docstring). Returns per-call statistics.

    With a budget, warm-up stops early once it has used a quarter of it (at least one
    warm-up call always runs), and the samples are cut to what the rest of it allows.
    """
    call_s, spent = 0.0, 0.0
    for _ in range(max(warmup, 1)):  # the last warm-up call also sizes the samples
        timer.start()
        fn()
        call_s = timer.stop()
        spent += call_s
        if budget_s is not None and spent >= budget_s / 4:
            break
    floor = MIN_SAMPLE_S.get(timer.kind, 0.0)
    number = 1 if call_s >= floor else min(1000, math.ceil(floor / max(call_s, 1e-9)))
    left = None if budget_s is None else max(budget_s - spent, 0.0)
    n = plan_repeats(call_s * number, repeats, left)
    samples = []
    for _ in range(n):
        timer.start()
        for _ in range(number):
            fn()
        samples.append(timer.stop() / number)
    return summarize(samples, number=number, timer=timer.kind)
