"""Plans, graph capture/replay and their bookkeeping (`paths/loop_engine.py`), on the host.

The time loop runs on `HostDevice` (tests/lstm_host_lib.py), whose `capture` records the ops
a body issues and whose `launch` replays the recording: the host model of a CUDA graph. So a
value a replay reads from anywhere but the plan's buffers, an input a call forgets to copy
in, or an output a later call overwrites shows up here as a wrong number, compared with the
NumPy reference path (`numpy_ref`) or with an eager run.
"""
from __future__ import annotations

import gc
import warnings

import numpy as np
import pytest

from lstm_gpu import activations
from lstm_gpu.paths import fused_loop, numpy_ref
from lstm_gpu.paths.base import CellSpec, DropoutMasks, Weights
from lstm_gpu.paths.loop_engine import LoopEngine

from lstm_host_lib import HostDevice
from test_fused_loop_host import make_case

T, B, F, U = 5, 4, 3, 6


def _spec(case):
    return CellSpec(U, activations.get("tanh"), activations.get("sigmoid"),
                    case["b"] is not None, False, 1 if case["mr"] is not None else 2)


def _args(case):
    drop = None
    if case["mx"] is not None or case["mr"] is not None:
        drop = DropoutMasks(case["mx"], case["mr"])
    return (Weights(case["W"], case["R"], case["b"]), case["x"], case["mask"], case["h0"],
            case["c0"], _spec(case), drop)


def fwd(engine, device, case, training=True):
    w, x, mask, h0, c0, spec, drop = _args(case)
    return fused_loop.forward(device, engine, w, x, mask, h0, c0, spec, drop, training)


def ref(case, grads=None):
    """numpy_ref's (last, seq, h, c) and, with grads, its gradients."""
    w, x, mask, h0, c0, spec, drop = _args(case)
    r = numpy_ref.forward(w, x, mask, h0, c0, spec, drop, grads is not None)
    out = [r.last, r.sequence, r.h, r.c]
    if grads is not None:
        g = numpy_ref.backward(r.saved, *grads)
        out += [g.inputs, g.h0, g.c0, g.kernel, g.recurrent_kernel, g.bias]
    return out


def outputs(res, g=None):
    out = [res.last, res.sequence, res.h, res.c]
    if g is not None:
        out += [g.inputs, g.h0, g.c0, g.kernel, g.recurrent_kernel, g.bias]
    return out


def assert_close(got, want):
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def cases(n, **kw):
    return [make_case(np.random.default_rng(100 + i), T, B, F, U, **kw) for i in range(n)]


def grads_for(seed):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(B, U)), rng.normal(size=(T, B, U)), rng.normal(size=(B, U)),
            rng.normal(size=(B, U)))


def test_second_call_of_a_shape_replays():
    engine, device = LoopEngine(mode=lambda: "graph"), HostDevice(np.float64)
    c1, c2, c3 = cases(3, mask_kind="left")
    assert_close(outputs(fwd(engine, device, c1, training=False)), ref(c1))
    assert engine.snapshot()["eager"] == 1 and engine.snapshot()["captures"] == 1
    for c in (c2, c3):
        assert_close(outputs(fwd(engine, device, c, training=False)), ref(c))
    s = engine.snapshot()
    assert (s["eager"], s["captures"], s["replays"], s["fallbacks"]) == (1, 1, 2, 0)
    assert s["plans"] == 1 and s["plan_bytes"] > 0


@pytest.mark.parametrize("opts", [dict(mask_kind="left"),
                                  dict(mask_kind="right", in_drop=4, rec_drop=True)],
                         ids=["mask", "dropout"])
def test_training_loop_of_20_steps_replays_from_step_2(opts):
    """As the layer does, the previous step's record is dropped before the next forward."""
    engine, device = LoopEngine(mode=lambda: "graph"), HostDevice(np.float64)
    for step, case in enumerate(cases(20, **opts)):
        grads = grads_for(step)
        res = fwd(engine, device, case)
        g = fused_loop.backward(device, res.saved, *grads)
        assert_close(outputs(res, g), ref(case, grads))
        del res
        s = engine.snapshot()
        assert s["replays"] == 2 * step, (step, s)
    assert (s["captures"], s["eager"], s["fallbacks"], s["record_copies"]) == (2, 2, 0, 0)
    assert device.executed["gemm"] == 2 * T * 20  # one per step of both loops, every call


def test_graph_results_equal_eager_results_bit_for_bit():
    results = {}
    for mode in ("eager", "graph"):
        engine, device = LoopEngine(mode=lambda: mode), HostDevice(np.float32)
        for case in cases(3, mask_kind="left", in_drop=1, rec_drop=True):
            case = {k: (v.astype(np.float32) if isinstance(v, np.ndarray) and v.dtype.kind == "f"
                        else v) for k, v in case.items()}
            res = fwd(engine, device, case)
            g = fused_loop.backward(device, res.saved, *(a.astype(np.float32)
                                                         for a in grads_for(0)))
            results.setdefault(mode, []).append(outputs(res, g))
    for a, b in zip(results["eager"], results["graph"]):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("training", [False, True])
def test_returned_arrays_are_never_overwritten_by_later_calls(training):
    engine, device = LoopEngine(mode=lambda: "graph"), HostDevice(np.float64)
    kept = []
    for case in cases(3, mask_kind="left"):
        res = fwd(engine, device, case, training)
        kept.append((outputs(res), [a.copy() for a in outputs(res)]))
    for got, snapshot in kept:
        for a, b in zip(got, snapshot):
            np.testing.assert_array_equal(a, b)


def test_live_records_take_slots_then_are_copied_out_and_back():
    """Three live training records of one shape: two slots, the oldest record copied out by
    the third forward and copied back for its backward; every gradient stays exact."""
    engine, device = LoopEngine(mode=lambda: "graph", max_slots=2), HostDevice(np.float64)
    cs = cases(3, mask_kind="left", rec_drop=True)
    results = [fwd(engine, device, c) for c in cs]
    s = engine.snapshot()
    assert (s["plans"], s["record_copies"]) == (2, 1)
    for i in (0, 2, 1):
        grads = grads_for(i)
        g = fused_loop.backward(device, results[i].saved, *grads)
        assert_close(outputs(results[i], g), ref(cs[i], grads))
        # a second backward of the same record gives the same gradients
        g2 = fused_loop.backward(device, results[i].saved, *grads)
        for a, b in zip(outputs(results[i], g), outputs(results[i], g2)):
            np.testing.assert_array_equal(a, b)
    s = engine.snapshot()
    assert s["record_restores"] >= 1 and s["plans"] == 2


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_a_training_loop_of_same_shape_layers_copies_no_record(layers):
    """Each layer keeps its last record until its next call has succeeded (the layer restores
    it after a failed call), as Bidirectional's two directions or stacked layers of one shape
    do: their training loop must find a free slot for every forward, never copy a record."""
    engine, device = LoopEngine(mode=lambda: "graph"), HostDevice(np.float64)
    case = cases(1)[0]
    records = [None] * layers
    for _ in range(4):
        for k in range(layers):
            records[k] = fwd(engine, device, case).saved  # the old record dies only now
        for record in records:
            fused_loop.backward(device, record, *grads_for(0))
    s = engine.snapshot()
    assert (s["record_copies"], s["record_restores"]) == (0, 0)
    assert s["replays"] > 0


def test_a_dropped_record_frees_its_slot():
    engine, device = LoopEngine(mode=lambda: "graph"), HostDevice(np.float64)
    c1, c2 = cases(2)
    res = fwd(engine, device, c1)
    del res
    gc.collect()
    res = fwd(engine, device, c2)
    s = engine.snapshot()
    assert (s["plans"], s["record_copies"], s["replays"]) == (1, 0, 1)
    assert_close(outputs(res), ref(c2))


def test_a_failed_capture_runs_eagerly_once_warned():
    engine = LoopEngine(mode=lambda: "graph")
    device = HostDevice(np.float64, capture_error=RuntimeError("stream capture refused"))
    c1, c2, c3 = cases(3)
    with pytest.warns(RuntimeWarning, match="stream capture refused"):
        assert_close(outputs(fwd(engine, device, c1, False)), ref(c1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second attempt, no second warning
        for c in (c2, c3):
            assert_close(outputs(fwd(engine, device, c, False)), ref(c))
    s = engine.snapshot()
    assert (s["fallbacks"], s["captures"], s["eager"], s["failed_keys"]) == (1, 0, 3, 1)


def test_auto_stops_capturing_after_failures_in_a_row():
    engine = LoopEngine(mode=lambda: "auto", max_failed=3)
    device = HostDevice(np.float64, capture_error=RuntimeError("no graphs here"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for steps in range(1, 9):  # eight shapes
            case = make_case(np.random.default_rng(steps), steps, B, F, U)
            assert_close(outputs(fwd(engine, device, case, False)), ref(case))
    s = engine.snapshot()
    assert s["fallbacks"] == LoopEngine.GIVE_UP_AFTER and s["failed_keys"] == 3


def test_auto_captures_on_the_second_call_after_wasted_captures():
    """Shapes that never repeat (every plan evicted before a replay): after GIVE_UP_AFTER
    wasted captures auto waits for a shape's second call; a replay restores first-call
    capture."""
    engine, device = LoopEngine(mode=lambda: "auto", max_plans=1), HostDevice(np.float64)
    n = LoopEngine.GIVE_UP_AFTER
    for steps in range(1, n + 4):
        fwd(engine, device, make_case(np.random.default_rng(steps), steps, B, F, U), False)
    assert engine.snapshot()["captures"] == n  # shape n + 1 evicted the n-th unused graph
    case = make_case(np.random.default_rng(0), 20, B, F, U)
    for _ in range(3):  # eager, eager + capture, replay
        assert_close(outputs(fwd(engine, device, case, False)), ref(case))
    s = engine.snapshot()
    assert (s["captures"], s["replays"]) == (n + 1, 1)
    fwd(engine, device, make_case(np.random.default_rng(1), 21, B, F, U), False)
    assert engine.snapshot()["captures"] == n + 2  # first-call capture again


def test_plans_are_bounded_and_cleared():
    engine, device = LoopEngine(mode=lambda: "graph", max_plans=2), HostDevice(np.float64)
    for steps in (2, 3, 4):
        fwd(engine, device, make_case(np.random.default_rng(steps), steps, B, F, U), False)
    s = engine.snapshot()
    assert (s["plans"], s["evictions"]) == (2, 1) and s["plan_bytes"] > 0
    engine.clear()
    s = engine.snapshot()
    assert (s["plans"], s["plan_bytes"], s["failed_keys"]) == (0, 0, 0)


def test_unknown_mode_is_refused():
    engine, device = LoopEngine(mode=lambda: "fast"), HostDevice(np.float64)
    with pytest.raises(ValueError, match="loop mode must be one of eager, graph, auto"):
        fwd(engine, device, cases(1)[0], False)


# --- the captured body calls no array-library routine --------------------------------------


class Traced(np.ndarray):
    """An ndarray that reports every NumPy function and ufunc applied to it."""

    report = staticmethod(lambda name: None)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        Traced.report(f"{ufunc.__name__}.{method}")
        plain = lambda a: a.view(np.ndarray) if isinstance(a, Traced) else a  # noqa: E731
        if "out" in kwargs:
            kwargs["out"] = tuple(plain(o) for o in kwargs["out"])
        return getattr(ufunc, method)(*(plain(i) for i in inputs), **kwargs)

    def __array_function__(self, func, types, args, kwargs):
        Traced.report(func.__name__)
        return super().__array_function__(func, types, args, kwargs)


class RecordingXp:
    """A stand-in array module: NumPy, with every routine call reported and every array it
    allocates `Traced`."""

    def __init__(self, report):
        self._report = report

    def __getattr__(self, name):
        obj = getattr(np, name)
        if not callable(obj) or isinstance(obj, type):
            return obj

        def routine(*args, **kwargs):
            self._report(name)
            out = obj(*args, **kwargs)
            return out.view(Traced) if isinstance(out, np.ndarray) else out
        return routine


def _recording_device():
    calls = []
    device = HostDevice(np.float64)
    report = (lambda name: calls.append((name, device.in_body)))
    device.xp = RecordingXp(report)
    Traced.report = staticmethod(report)
    return device, calls


@pytest.mark.parametrize("mode", ["eager", "graph"])
def test_loop_bodies_call_no_array_library_routine(mode):
    """The regression test for the original defect: an `xp.matmul` (a CuPy cuBLAS call,
    refused during stream capture) inside the captured loop. Bodies may only issue device
    ops: T GEMMs and T fused steps per loop."""
    device, calls = _recording_device()
    engine = LoopEngine(mode=lambda: mode)
    try:
        for case in cases(2, mask_kind="left", in_drop=4, rec_drop=True):
            res = fwd(engine, device, case)
            fused_loop.backward(device, res.saved, *grads_for(1))
    finally:
        Traced.report = staticmethod(lambda name: None)
    assert [name for name, in_body in calls if in_body] == []
    assert any(name == "matmul.__call__" for name, _ in calls)  # the recorder does see work
    # two calls of each loop, run eagerly or replayed: one GEMM and one fused step a step
    assert device.executed["gemm"] == 2 * 2 * T
    assert device.executed["fwd_step"] == device.executed["bwd_step"] == 2 * T


def test_the_recorder_catches_a_library_call_inside_a_body(monkeypatch):
    """Negative control: a body GEMM done with the array module is reported."""
    device, calls = _recording_device()

    def library_gemm(plan, a, b, out):
        xp = device.xp
        return lambda: xp.matmul(a, b, out=out)

    monkeypatch.setattr(device, "gemm", library_gemm)
    try:
        fwd(LoopEngine(mode=lambda: "eager"), device, cases(1)[0], False)
    finally:
        Traced.report = staticmethod(lambda name: None)
    assert ("matmul", True) in calls


def test_backward_with_and_without_a_sequence_gradient_share_a_plan():
    engine, device = LoopEngine(mode=lambda: "graph"), HostDevice(np.float64)
    for i, case in enumerate(cases(4, mask_kind="left")):
        grads = grads_for(i)
        if i % 2:
            grads = (grads[0], None, grads[2], grads[3])
        res = fwd(engine, device, case)
        g = fused_loop.backward(device, res.saved, *grads)
        assert_close(outputs(res, g), ref(case, grads))
        del res
    s = engine.snapshot()
    assert (s["plans"], s["captures"], s["replays"]) == (1, 3, 5)


def test_a_record_copied_back_into_another_slot_is_ordered_after_its_copy_out():
    """A record copied out of its plan (during a use of that plan, on that use's stream) and
    later copied into another slot, maybe on another stream, must be read only after the copy
    out: backward asks the device to order after the record's own plan too."""
    waited = []

    class Device(HostDevice):
        def before_use(self, plan):
            waited.append(plan)

    engine, device = LoopEngine(mode=lambda: "graph", max_slots=2), Device(np.float64)
    cs = cases(3, mask_kind="left")
    results = [fwd(engine, device, c) for c in cs]  # the third copies the first out
    first = results[0].saved
    home = first.plan
    assert home.resident() is results[2].saved
    waited.clear()
    grads = grads_for(0)
    g = fused_loop.backward(device, first, *grads)
    assert first.plan is not home  # restored into the other slot
    assert waited.count(home) == 1 and waited.count(first.plan) == 1
    assert_close(outputs(results[0], g), ref(cs[0], grads))
