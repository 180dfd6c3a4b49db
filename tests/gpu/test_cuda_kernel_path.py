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


def test_graph_mode_replays():
    import cupy as cp

    from lstm_gpu.paths import cuda_kernels

    case, grads = _case((20, 4, 3, 16), np.float32, "left", 0, False, True)
    spec = CellSpec(16, activations.get("tanh"), activations.get("sigmoid"), True, False, 2)
    x = cp.asarray(case["x"])
    w = Weights(cp.asarray(case["W"]), cp.asarray(case["R"]), cp.asarray(case["b"]))
    h0, c0, m = cp.asarray(case["h0"]), cp.asarray(case["c0"]), cp.asarray(case["mask"])
    before = cuda_kernels.graph_stats()
    outs = [cuda_kernels.forward(w, x, m, h0, c0, spec, None, False).sequence.get()
            for _ in range(6)]
    after = cuda_kernels.graph_stats()
    for o in outs[1:]:
        np.testing.assert_array_equal(o, outs[0])
    assert after["fallbacks"] == before["fallbacks"], f"capture fell back to eager: {after}"
    assert after["replays"] > before["replays"], f"no graph replay: {before} -> {after}"


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
