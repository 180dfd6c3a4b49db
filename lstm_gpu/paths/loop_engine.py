"""Plans with fixed buffers, and the runner that replays a plan's time loops as graphs.

A *plan* owns every array one shape's time loops read or write (the algorithm in
`paths/fused_loop.py` decides which), the per-step *programs* built over them once, the graphs
captured from those programs, and the device's per-plan state (for CUDA: the cuBLAS workspace
and an event ordering uses across streams). Because a plan's arrays never move, a graph
captured from its program stays valid for every later call of that shape: the graph key is the
plan key (the shape signature), whatever CuPy's memory pool does. A call copies its inputs into
the plan, runs the loop, and copies out what it returns.

Loop modes (`LoopEngine.mode`, the CUDA path reads ``LSTM_GPU_KERNEL_LOOP``):

    eager  the program runs op by op from Python on every call.
    graph  the first call of a plan runs eagerly (warming up the libraries) and then captures
           the program; every later call replays it with one launch.
    auto   (default) graph, with a give-up rule counting failed captures and wasted ones
           (a plan evicted before its graph was replayed): after GIVE_UP_AFTER failures in a
           row it stops capturing; after GIVE_UP_AFTER wasted captures in a row it captures a
           plan only on its second call, so shapes that never repeat cost nothing.

A capture that fails switches that plan's loop to eager, once, with a warning saying why; the
failed keys are remembered (bounded) and counted in ``stats["fallbacks"]``.

Training plans have *slots*: a training call's record for backward lives in its plan's
buffers. The record is the plan's *resident*; a later call that needs those buffers while the
record is still alive first copies it out (`Plan.resident` is a weak reference, so a record
nobody holds costs nothing). Up to `max_slots` plans share one training key. A layer holds its
last record until its next call succeeds (a failed call restores it), so k layers of one shape
(Bidirectional's two directions, stacked layers) hold k live records while one of them runs
the next forward: with k + 1 slots no record is copied. The default, 4, covers a stacked pair
or a Bidirectional with a same-shape neighbour; more live records of one shape are copied
out and back.

Memory: the plans held here (at most `max_plans`, least recently used dropped first) keep
their arrays until evicted or until `clear()`; `stats["plan_bytes"]` sums them. A dropped plan
whose record is still alive lives on with that record and goes with it.
"""
from __future__ import annotations

import threading
import warnings
import weakref
from collections import Counter, OrderedDict
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Optional, Protocol

LOOP_MODES = ("eager", "graph", "auto")


class LoopDevice(Protocol):
    """What the engine needs from a device (CUDA in `paths/cuda_kernels.py`; the host
    stand-ins of the tests). Ops in a program are zero-argument callables built by the
    device; `capture` records them without running them, as CUDA stream capture does."""

    def attach(self, plan: "Plan") -> None: ...  # per-plan state (plan.ctx)
    def before_use(self, plan: "Plan") -> None: ...  # order after the plan's previous use
    def after_use(self, plan: "Plan") -> None: ...
    def run(self, plan: "Plan", body: Callable[[], None]) -> None: ...  # eagerly
    def capture(self, plan: "Plan", body: Callable[[], None]) -> Any: ...  # raises on failure
    def launch(self, plan: "Plan", graph: Any) -> None: ...


def _run_program(program: list) -> None:
    for op in program:
        op()


class Plan:
    """One shape's buffers (`buf`), programs and graphs; used under `lock` by one call."""

    def __init__(self, key: tuple, training: bool):
        self.key = key
        self.training = training
        self.dims: Any = None  # the algorithm's description of the shape
        self.buf: dict[str, Any] = {}
        self.programs: dict[str, list] = {}
        self.graphs: dict[str, Any] = {}
        self.calls: Counter = Counter()
        self.replayed = False
        self.lock = threading.Lock()
        self.ctx: Any = None
        self._resident: Optional[weakref.ref] = None

    def nbytes(self) -> int:
        ws = getattr(self.ctx, "workspace", None)
        return sum(int(a.nbytes) for a in self.buf.values() if a is not None) + (
            int(ws.nbytes) if ws is not None else 0)

    def resident(self) -> Any:
        """The live record whose arrays are this plan's buffers, or None."""
        return None if self._resident is None else self._resident()

    def set_resident(self, record: Any) -> None:
        self._resident = None if record is None else weakref.ref(record)

    def body(self, kind: str) -> Callable[[], None]:
        program = self.programs[kind]
        return lambda: _run_program(program)


class LoopEngine:
    """Plan cache (LRU, training slots) and the eager/capture/replay runner with counters."""

    GIVE_UP_AFTER = 4

    def __init__(self, mode: Callable[[], str] = lambda: "auto", max_plans: int = 8,
                 max_failed: int = 64, max_slots: int = 4):
        self.mode = mode
        self.max_plans = max_plans
        self.max_slots = max_slots
        self.max_failed = max_failed
        self._plans: OrderedDict = OrderedDict()  # key -> list of slots (Plans)
        self._failed: OrderedDict = OrderedDict()  # (plan key, kind) -> reason
        self._lock = threading.Lock()
        self._failures_in_row = 0
        self._wasted_in_row = 0
        self.stats = Counter(eager=0, captures=0, replays=0, fallbacks=0, evictions=0,
                             record_copies=0, record_restores=0)

    # --- plans ------------------------------------------------------------------------------

    def plan(self, key: tuple, training: bool, create: Callable[[Plan], None],
             device: LoopDevice) -> Plan:
        """A plan for `key`: a training slot without a live record if there is one, a new
        slot while fewer than `max_slots` exist, else the least recently used slot (its record
        must be copied out by the caller: see `claim`)."""
        with self._lock:
            slots = self._plans.get(key)
            if slots is not None:
                self._plans.move_to_end(key)
                free = [p for p in slots if not training or p.resident() is None]
                if free or len(slots) >= (self.max_slots if training else 1):
                    chosen = (free or slots)[0]
                    slots.remove(chosen)
                    slots.append(chosen)  # slots are kept least recently used first
                    return chosen
            plan = Plan(key, training)
            device.attach(plan)  # programs may close over the device state
            create(plan)
            self._plans.setdefault(key, []).append(plan)
            self._plans.move_to_end(key)
            self._evict_beyond_limit()
            return plan

    def _evict_beyond_limit(self) -> None:
        while sum(len(s) for s in self._plans.values()) > self.max_plans:
            key, slots = next(iter(self._plans.items()))
            self._drop(slots.pop(0))
            if not slots:
                del self._plans[key]

    def _drop(self, plan: Plan) -> None:
        self.stats["evictions"] += 1
        if plan.graphs and not plan.replayed:
            self._wasted_in_row += 1

    @contextmanager
    def using(self, device: LoopDevice, plan: Plan) -> Iterator[Plan]:
        """Hold `plan` for one call: its lock, and the device's ordering after its last use."""
        with plan.lock:
            device.before_use(plan)
            try:
                yield plan
            finally:
                device.after_use(plan)

    def claim(self, plan: Plan, record: Any, evict: Callable[[Any, Plan], None]) -> None:
        """Make `record` the plan's resident; a different live resident is copied out first
        with `evict(old_record, plan)`. Call while holding the plan (`using`)."""
        old = plan.resident()
        if old is not None and old is not record:
            evict(old, plan)
            self.count("record_copies")
        plan.set_resident(record)

    def count(self, name: str) -> None:
        with self._lock:
            self.stats[name] += 1

    def clear(self) -> None:
        """Drop every plan (and its graphs and buffers) and forget failed captures."""
        with self._lock:
            self._plans.clear()
            self._failed.clear()
            self._failures_in_row = self._wasted_in_row = 0

    def snapshot(self) -> dict:
        """The counters, plus the plans held now and their bytes."""
        with self._lock:
            plans = [p for slots in self._plans.values() for p in slots]
            out = dict(self.stats)
            out.update(plans=len(plans), plan_bytes=sum(p.nbytes() for p in plans),
                       failed_keys=len(self._failed))
            return out

    # --- running ----------------------------------------------------------------------------

    def loop_mode(self) -> str:
        mode = self.mode()
        if mode not in LOOP_MODES:
            raise ValueError(f"loop mode must be one of {', '.join(LOOP_MODES)}; got {mode!r}")
        return mode

    def run(self, device: LoopDevice, plan: Plan, kind: str) -> None:
        """Run `plan.programs[kind]`: replay its graph, or run it eagerly (and capture it
        when the mode says so). Call while holding the plan (`using`)."""
        mode = self.loop_mode()
        graph = plan.graphs.get(kind) if mode != "eager" else None
        if graph is not None:
            device.launch(plan, graph)
            plan.replayed = True
            with self._lock:
                self.stats["replays"] += 1
                self._wasted_in_row = 0
            return
        body = plan.body(kind)
        device.run(plan, body)
        plan.calls[kind] += 1
        with self._lock:
            self.stats["eager"] += 1
            capture = mode != "eager" and self._should_capture(plan, kind, mode)
        if not capture:
            return
        try:
            graph = device.capture(plan, body)
        except Exception as exc:  # refused by the driver, a library, or our allocation guard
            self._capture_failed(plan, kind, exc)
            return
        plan.graphs[kind] = graph
        with self._lock:
            self.stats["captures"] += 1
            self._failures_in_row = 0

    def _should_capture(self, plan: Plan, kind: str, mode: str) -> bool:
        if (plan.key, kind) in self._failed:
            return False
        if mode == "graph":
            return True
        if self._failures_in_row >= self.GIVE_UP_AFTER:
            return False
        if self._wasted_in_row >= self.GIVE_UP_AFTER:
            return plan.calls[kind] >= 2
        return True

    def _capture_failed(self, plan: Plan, kind: str, exc: Exception) -> None:
        reason = f"{type(exc).__name__}: {exc}"
        with self._lock:
            self.stats["fallbacks"] += 1
            self._failures_in_row += 1
            self._wasted_in_row += 1
            self._failed[(plan.key, kind)] = reason
            while len(self._failed) > self.max_failed:
                self._failed.popitem(last=False)
        warnings.warn(f"lstm_gpu: CUDA graph capture of the kernel path's {kind} loop failed "
                      f"({reason}); this shape runs eagerly from now on", RuntimeWarning,
                      stacklevel=4)

    def failed_reason(self, key: tuple, kind: str) -> Optional[str]:
        return self._failed.get((key, kind))
