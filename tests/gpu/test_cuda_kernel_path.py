"""CUDA kernel path vs the NumPy path, forward and backward, on a GPU.

Skipped without a CUDA device. Reference: `lstm_gpu.paths.numpy_ref` (the spec) in float64 on
the same rounded data. The problems, the data, the comparison and its tolerances (DESIGN.md
section 6: float64 1e-10, float32 1e-5, 1e-4 for gradients) are lstm-gpu-check's
(`lstm_gpu.check`), so this file and the command check the same grid.
"""
from __future__ import annotations

import functools
from dataclasses import replace

import numpy as np
import pytest

from lstm_gpu import activations
from lstm_gpu._xp import gpu_available
from lstm_gpu.check import grid
from lstm_gpu.check.compute import check_problem, gpu_space, reference_path, run_path
from lstm_gpu.check.data import problem_data
from lstm_gpu.errors import PathUnavailable
from lstm_gpu.paths.base import Weights

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not gpu_available(), reason="needs a CUDA device (CuPy sees none)")]


# The kernel path takes every problem of the grid lstm-gpu-check runs (one list: the
# command's default tier and the larger shapes of the "full" tier).
PROBLEMS = grid.path_problems("full")


@functools.lru_cache(maxsize=None)
def _reference(problem, dtype):
    """The float64 NumPy path on the problem's data rounded to `dtype` (shared by both loop
    modes)."""
    return reference_path(problem, problem_data(problem, dtype))


def _problem(name, shape, dtype, **options):
    """A problem of the grid by name, at another shape (and options), with its data."""
    problem = replace(next(p for p in grid.PROBLEMS if p.name == name), shape=shape, **options)
    return problem, problem_data(problem, dtype)


@pytest.mark.parametrize("loop", ["eager", "graph"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("problem", PROBLEMS, ids=str)
def test_kernel_path_matches_numpy_path(problem, dtype, loop, monkeypatch):
    from lstm_gpu.paths import cuda_kernels

    monkeypatch.setenv(cuda_kernels.LOOP_ENV, loop)
    # Graph mode: eager warm-up, capture, replays (results are copied to the host and dropped
    # between calls, so the pool hands back the same addresses); every training call and an
    # inference call must agree with the reference.
    result = check_problem(cuda_kernels, gpu_space(), problem, problem_data(problem, dtype),
                           _reference(problem, dtype), calls=4)
    assert result.passed, result.describe()


def test_graph_mode_replays():
    import cupy as cp

    from lstm_gpu.paths import cuda_kernels

    problem, data = _problem("left-padded", grid.Shape(20, 4, 3, 16), "float32")
    spec = problem.spec()
    x, m, h0, c0 = (cp.asarray(a) for a in (data.x, data.mask, data.h0, data.c0))
    w = Weights(*(cp.asarray(a) for a in (data.weights.kernel, data.weights.recurrent_kernel,
                                          data.weights.bias)))
    before = cuda_kernels.graph_stats()
    outs = [cuda_kernels.forward(w, x, m, h0, c0, spec, None, False).sequence.get()
            for _ in range(6)]
    after = cuda_kernels.graph_stats()
    for o in outs[1:]:
        np.testing.assert_array_equal(o, outs[0])
    assert after["fallbacks"] == before["fallbacks"], f"capture fell back to eager: {after}"
    assert after["replays"] > before["replays"], f"no graph replay: {before} -> {after}"


def test_deterministic_backward():
    from lstm_gpu.paths import cuda_kernels

    problem, data = _problem("holes", grid.Shape(30, 32, 16, 64), "float32")
    a, b = (run_path(cuda_kernels, gpu_space(), problem, data) for _ in range(2))
    for name in (*a.outputs, *a.gradients):
        got = a.outputs.get(name, a.gradients.get(name))
        again = b.outputs.get(name, b.gradients.get(name))
        np.testing.assert_array_equal(got, again, err_msg=name)


def test_callable_activation_and_bad_dtype():
    import cupy as cp

    from lstm_gpu.paths import cuda_kernels

    problem, data = _problem("no mask", grid.Shape(3, 2, 2, 2), "float32")
    args = [cp.asarray(a) for a in (data.x, data.h0, data.c0)]
    w = Weights(*(cp.asarray(a) for a in (data.weights.kernel, data.weights.recurrent_kernel,
                                          data.weights.bias)))
    spec = replace(problem.spec(), activation=activations.get(lambda v: v))
    with pytest.raises(PathUnavailable):
        cuda_kernels.forward(w, args[0], None, args[1], args[2], spec, None, True)
    with pytest.raises(TypeError):
        run_path(cuda_kernels, gpu_space(), problem, data.cast(np.float16))


@pytest.mark.parametrize("name", list(activations.KERNEL_IDS))
def test_every_activation_pair(name):
    from lstm_gpu.paths import cuda_kernels

    for act, ract in ((name, "sigmoid"), ("tanh", name)):
        problem, data = _problem("holes", grid.Shape(6, 3, 4, 5), "float64", activation=act,
                                 recurrent_activation=ract)
        result = check_problem(cuda_kernels, gpu_space(), problem, data,
                               reference_path(problem, data))
        assert result.passed, f"{act} / {ract}: {result.describe()}"
