"""CUDA kernel path vs the NumPy path, forward and backward, on a GPU.

Skipped without a CUDA device. Reference: `lstm_gpu.paths.numpy_ref` (the spec).
Tolerances (DESIGN.md section 6): float64 1e-10, float32 1e-5 relative.
"""
from __future__ import annotations

import functools
import sys
from pathlib import Path

import numpy as np
import pytest

from lstm_gpu import activations
from lstm_gpu.paths import numpy_ref
from lstm_gpu._xp import gpu_available
from lstm_gpu.check import grid
from lstm_gpu.check.compute import check_problem, gpu_space, reference_path
from lstm_gpu.check.data import problem_data
from lstm_gpu.errors import PathUnavailable
from lstm_gpu.paths.base import CellSpec, DropoutMasks, Weights

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not gpu_available(), reason="needs a CUDA device (CuPy sees none)")]

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _mask(kind, T, B):
    if kind is None:
        return None
    m = np.ones((T, B), bool)
    for b in range(B):
        n = (b * 7) % (T + 1)
        if kind == "right":
            m[n:, b] = False if n else m[n:, b]
        elif kind == "left":
            m[: T - max(n, 1), b] = False
        elif kind == "random":
            m[:, b] = np.random.default_rng(b).random(T) > 0.4
    if kind in ("left", "random") and B > 1:
        m[:, 0] = False  # a fully masked sample
    return m


def _case(shape, dtype, mask_kind, in_drop, rec_drop, use_bias, seed=0):
    T, B, F, U = shape
    rng = np.random.default_rng(seed)
    f = lambda *s, scale=1.0: (rng.normal(size=s) * scale).astype(dtype)  # noqa: E731
    case = dict(x=f(T, B, F), W=f(F, 4 * U, scale=1 / np.sqrt(F)),
                R=f(U, 4 * U, scale=1 / np.sqrt(U)), b=f(4 * U, scale=0.3) if use_bias else None,
                h0=f(B, U, scale=0.5), c0=f(B, U, scale=0.5), mask=_mask(mask_kind, T, B),
                mx=None, mr=None)
    if in_drop:
        case["mx"] = ((rng.random((in_drop, B, F)) > 0.2) / 0.8).astype(dtype)
    if rec_drop:
        case["mr"] = ((rng.random((4, B, U)) > 0.2) / 0.8).astype(dtype)
    grads = dict(last=f(B, U), seq=f(T, B, U), h=f(B, U), c=f(B, U))
    return case, grads


def _run(path, xp, case, grads, spec, training=True):
    to = (lambda a: None if a is None else xp.asarray(a))
    w = Weights(kernel=to(case["W"]), recurrent_kernel=to(case["R"]), bias=to(case["b"]))
    drop = None
    if case["mx"] is not None or case["mr"] is not None:
        drop = DropoutMasks(inputs=to(case["mx"]), recurrent=to(case["mr"]))
    res = path.forward(w, to(case["x"]), to(case["mask"]), to(case["h0"]), to(case["c0"]), spec,
                       drop, training)
    out = [res.last, res.sequence, res.h, res.c]
    if training:
        g = path.backward(res.saved, to(grads["last"]), to(grads["seq"]), to(grads["h"]),
                          to(grads["c"]))
        out += [g.inputs, g.h0, g.c0, g.kernel, g.recurrent_kernel, g.bias]
    return out


def _reference(case, grads, spec):
    """The NumPy path in float64 on the case's (already rounded) data, so that a float32 run
    is compared with the exact result of its own inputs, not with another float32 run."""
    up = lambda d: {k: v.astype(np.float64) if isinstance(v, np.ndarray) and v.dtype.kind == "f"  # noqa: E731
                    else v for k, v in d.items()}
    return [None if a is None else np.asarray(a)
            for a in _run(numpy_ref, np, up(case), up(grads), spec)]


def _compare(got, want, dtype):
    import cupy as cp

    names = ["last", "sequence", "h", "c", "dx", "dh0", "dc0", "dkernel", "drecurrent", "dbias"]
    rtol = 1e-10 if dtype == np.float64 else 1e-5
    for name, g, w in zip(names, got, want):
        if w is None:
            assert g is None, name
            continue
        g = cp.asnumpy(g)
        scale = max(float(np.max(np.abs(w))), 1.0)
        np.testing.assert_allclose(g, w, rtol=rtol, atol=rtol * scale, err_msg=name)


# The parity grid is lstm-gpu-check's (`lstm_gpu.check.grid`, one list for the command and
# these tests): every problem it has, at the command's shapes and the "full" tier's larger
# and longer ones, compared by its float64 reference and its tolerances (float32 gradients
# 1e-4, as the cuDNN tests).
PROBLEMS = grid.path_problems("full")


@functools.lru_cache(maxsize=None)
def _grid_reference(problem, dtype):
    """The float64 NumPy path on the problem's data rounded to `dtype` (shared by both loop
    modes)."""
    return reference_path(problem, problem_data(problem, dtype))


@pytest.mark.parametrize("loop", ["eager", "graph"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("problem", PROBLEMS, ids=str)
def test_kernel_path_matches_numpy_path(problem, dtype, loop, monkeypatch):
    from lstm_gpu.paths import cuda_kernels

    monkeypatch.setenv(cuda_kernels.LOOP_ENV, loop)
    # Graph mode: warm-up, capture, replays (results are copied to the host and dropped
    # between calls); every training call and an inference call must agree with the
    # reference.
    result = check_problem(cuda_kernels, gpu_space(), problem, problem_data(problem, dtype),
                           _grid_reference(problem, dtype), calls=4)
    assert result.passed, result.describe()


def _device_args(case):
    import cupy as cp

    to = (lambda a: None if a is None else cp.asarray(a))
    w = Weights(to(case["W"]), to(case["R"]), to(case["b"]))
    drop = None
    if case["mx"] is not None or case["mr"] is not None:
        drop = DropoutMasks(inputs=to(case["mx"]), recurrent=to(case["mr"]))
    return w, to(case["x"]), to(case["mask"]), to(case["h0"]), to(case["c0"]), drop


@pytest.mark.parametrize("training", [False, True])
def test_second_call_of_a_shape_replays(training, monkeypatch):
    """Graph mode: the first call runs eagerly and captures, every later one replays, and
    each sees its own inputs."""
    import cupy as cp

    from lstm_gpu.paths import cuda_kernels

    monkeypatch.setenv(cuda_kernels.LOOP_ENV, "graph")
    cuda_kernels.clear_graphs()
    spec = CellSpec(16, activations.get("tanh"), activations.get("sigmoid"), True, False, 2)
    loops = 2 if training else 1
    for seed in range(3):
        case, grads = _case((20, 4, 3, 16), np.float32, "left", 0, False, True, seed=seed)
        got = _run(cuda_kernels, cp, case, grads, spec, training=training)
        stats = cuda_kernels.graph_stats()
        assert stats["fallbacks"] == 0, f"capture fell back to eager: {stats}"
        assert (stats["captures"], stats["replays"]) == (loops, loops * seed), stats
        _compare(got, _reference(case, grads, spec)[:len(got)], np.float32)


@pytest.mark.parametrize("opt", [("left", 0, False, True), (None, 4, True, True),
                                 ("random", 1, False, False)], ids=str)
def test_graph_results_equal_eager_results_bit_for_bit(opt, monkeypatch):
    import cupy as cp

    from lstm_gpu.paths import cuda_kernels

    mask_kind, in_drop, rec_drop, use_bias = opt
    case, grads = _case((30, 8, 12, 32), np.float32, mask_kind, in_drop, rec_drop, use_bias)
    spec = CellSpec(32, activations.get("tanh"), activations.get("sigmoid"), use_bias, False,
                    1 if (rec_drop or in_drop == 4) else 2)
    runs = {}
    for mode in ("eager", "graph"):
        monkeypatch.setenv(cuda_kernels.LOOP_ENV, mode)
        cuda_kernels.clear_graphs()
        for _ in range(3):  # graph: eager + capture, replay, replay; the last one is kept
            runs[mode] = [cp.asnumpy(a) for a in _run(cuda_kernels, cp, case, grads, spec)
                          if a is not None]
    assert cuda_kernels.graph_stats()["replays"] == 4
    for a, b in zip(runs["eager"], runs["graph"]):
        np.testing.assert_array_equal(a, b)


def test_training_loop_of_20_steps_replays_from_step_2(monkeypatch):
    """The layer on the kernel path (use_cudnn=False), 20 training steps of one shape: from
    step 2 on, both loops replay; the gradients equal an eager run's."""
    import cupy as cp

    from lstm_gpu import LSTM
    from lstm_gpu.paths import cuda_kernels

    rng = np.random.default_rng(0)
    xs = [cp.asarray(rng.normal(size=(8, 50, 16)).astype(np.float32)) for _ in range(20)]
    d_out = cp.asarray(rng.normal(size=(8, 50, 32)).astype(np.float32))
    grads, weights = {}, None
    for mode in ("eager", "graph"):
        monkeypatch.setenv(cuda_kernels.LOOP_ENV, mode)
        cuda_kernels.clear_graphs()
        layer = LSTM(32, return_sequences=True, use_cudnn=False)
        layer.build((8, 50, 16))
        if weights is None:
            weights = layer.get_weights()
        layer.set_weights(weights)
        before = cuda_kernels.graph_stats()
        for step, x in enumerate(xs):
            layer(x, training=True)
            assert layer.last_path == "cuda-kernels"
            g = layer.backward(d_out)
            stats = cuda_kernels.graph_stats()
            if mode == "graph":
                assert stats["replays"] - before["replays"] == 2 * step, (step, stats)
        grads[mode] = {k: cp.asnumpy(v) for k, v in g.items() if k != "initial_state"}
        if mode == "graph":
            assert stats["fallbacks"] == 0 and stats["record_copies"] == 0, stats
    for k in grads["eager"]:
        np.testing.assert_array_equal(grads["eager"][k], grads["graph"][k], err_msg=k)


def test_returned_arrays_survive_later_calls(monkeypatch):
    import cupy as cp

    from lstm_gpu.paths import cuda_kernels

    monkeypatch.setenv(cuda_kernels.LOOP_ENV, "graph")
    spec = CellSpec(16, activations.get("tanh"), activations.get("sigmoid"), True, False, 2)
    kept = []
    for seed in range(4):
        case, _ = _case((12, 4, 3, 16), np.float64, "left", 0, False, True, seed=seed)
        res = cuda_kernels.forward(*_device_args(case)[:5], spec, None, False)
        kept.append(([res.last, res.sequence, res.h, res.c],
                     [cp.asnumpy(a) for a in (res.last, res.sequence, res.h, res.c)]))
    for arrays, copies in kept:
        for a, b in zip(arrays, copies):
            np.testing.assert_array_equal(cp.asnumpy(a), b)


def test_a_record_copied_out_on_one_stream_and_back_on_another(monkeypatch):
    """Three live training records of one shape (two slots): the third forward, on another
    stream, copies the first record out (its copies come from that stream's pool arena); the
    first record's backward, queued on the null stream behind long GEMMs, copies them back
    and drops them. The other stream then takes those blocks and overwrites them with NaN at
    once: the backward must have read the copies first (the host waits before they are
    dropped; the host-side proof is tests/test_stream_order.py)."""
    import cupy as cp

    from lstm_gpu.paths import cuda_kernels

    monkeypatch.setenv(cuda_kernels.LOOP_ENV, "graph")
    cuda_kernels.clear_graphs()
    T, B, F, U = 40, 8, 12, 32
    spec = CellSpec(U, activations.get("tanh"), activations.get("sigmoid"), True, False, 2)
    cases = [_case((T, B, F, U), np.float64, "left", 0, False, True, seed=s) for s in range(3)]
    before = cuda_kernels.graph_stats()
    res = [cuda_kernels.forward(*_device_args(case)[:5], spec, None, True)
           for case, _ in cases[:2]]
    other = cp.cuda.Stream(non_blocking=True)
    with other:
        res.append(cuda_kernels.forward(*_device_args(cases[2][0])[:5], spec, None, True))
    other.synchronize()
    case, grads = cases[0]
    d = {k: cp.asarray(v) for k, v in grads.items()}
    busy = cp.ones((4096, 4096))
    for _ in range(4):  # some milliseconds of work ahead of the copy back, on the null stream
        busy = (busy @ busy) * (1 / 4096)
    g = cuda_kernels.backward(res[0].saved, d["last"], d["seq"], d["h"], d["c"])
    with other:  # blocks of the copies' sizes from their arena (a few, to take theirs too)
        junk = [cp.full(shape, np.nan) for shape in [(T, B, 4 * U), (T, B, U), (T, B, U)] * 4]
        junk += [cp.full((T, B), 255, cp.uint8) for _ in range(4)]
    cp.cuda.Device().synchronize()
    stats = cuda_kernels.graph_stats()
    assert stats["record_copies"] - before["record_copies"] == 2, stats
    assert stats["record_restores"] - before["record_restores"] == 1, stats
    got = [res[0].last, res[0].sequence, res[0].h, res[0].c, g.inputs, g.h0, g.c0, g.kernel,
           g.recurrent_kernel, g.bias]
    _compare(got, _reference(case, grads, spec), np.float64)


def test_cublas_binding_gemm_matches_cupy_and_captures():
    """Our binding on the planner's arguments: transposed, offset and batched operands, then
    the same GEMM captured into a CUDA graph (CuPy's own matmul is refused there)."""
    import cupy as cp

    from lstm_gpu.cuda import gemm_plan
    from lstm_gpu.cuda.cublas import _bindings as CB
    from lstm_gpu.cuda.cublas import api

    handle = api.get_handle()
    assert handle.math_mode() == CB.DEFAULT_MATH
    ws = cp.empty(api.recommended_workspace_bytes(
        int(cp.cuda.Device().compute_capability)), cp.uint8)
    rng = np.random.default_rng(0)
    big = cp.asarray(rng.normal(size=(3, 80, 80)).astype(np.float32))
    operands = [(big[0, :8, :16], big[1, :16, :64].T.copy().T),
                (big[1, 3:11, 2:18], big[2, :64, :16].T),
                (big[:, :8, :16], big[:, :16, :64])]
    for a, b in operands:
        out = cp.zeros(a.shape[:-1] + b.shape[-1:], cp.float32)
        run = api.prepare_gemm(gemm_plan.plan_gemm(gemm_plan.operand(a), gemm_plan.operand(b),
                                                   gemm_plan.operand(out)))
        stream = cp.cuda.get_current_stream()
        handle.bind(stream.ptr, ws.data.ptr, ws.nbytes)
        assert handle.stream() == stream.ptr
        run(handle.ptr)
        np.testing.assert_allclose(cp.asnumpy(out), cp.asnumpy(cp.matmul(a, b)), rtol=1e-5,
                                   atol=1e-5)
        out[...] = 0
        capture = cp.cuda.Stream(non_blocking=True)
        with capture:
            capture.begin_capture()
            try:
                handle.bind(capture.ptr, ws.data.ptr, ws.nbytes)
                run(handle.ptr)
            finally:
                graph = capture.end_capture()
        graph.launch(stream)
        np.testing.assert_allclose(cp.asnumpy(out), cp.asnumpy(cp.matmul(a, b)), rtol=1e-5,
                                   atol=1e-5)


def test_deterministic_backward():
    import cupy as cp

    from lstm_gpu.paths import cuda_kernels

    case, grads = _case((30, 32, 16, 64), np.float32, "random", 0, False, True)
    spec = CellSpec(64, activations.get("tanh"), activations.get("sigmoid"), True, False, 2)
    a = _run(cuda_kernels, cp, case, grads, spec)
    b = _run(cuda_kernels, cp, case, grads, spec)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(cp.asnumpy(x), cp.asnumpy(y))


def test_callable_activation_and_bad_dtype():
    import cupy as cp

    from lstm_gpu.paths import cuda_kernels

    case, grads = _case((3, 2, 2, 2), np.float32, None, 0, False, True)
    spec = CellSpec(2, activations.get(lambda v: v), activations.get("sigmoid"), True, False, 2)
    with pytest.raises(PathUnavailable):
        _run(cuda_kernels, cp, case, grads, spec)
    spec = CellSpec(2, activations.get("tanh"), activations.get("sigmoid"), True, False, 2)
    case16 = {k: (v.astype(np.float16) if isinstance(v, np.ndarray) and v.dtype.kind == "f"
                  else v) for k, v in case.items()}
    with pytest.raises(TypeError):
        _run(cuda_kernels, cp, case16, grads, spec)


@pytest.mark.parametrize("name", list(activations.KERNEL_IDS))
def test_every_activation_pair(name):
    import cupy as cp

    from lstm_gpu.paths import cuda_kernels

    case, grads = _case((6, 3, 4, 5), np.float64, "random", 0, False, True)
    for act, ract in ((name, "sigmoid"), ("tanh", name)):
        spec = CellSpec(5, activations.get(act), activations.get(ract), True, False, 2)
        want = _reference(case, grads, spec)
        _compare(_run(cuda_kernels, cp, case, grads, spec), want, np.float64)
