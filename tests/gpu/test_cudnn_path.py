"""cuDNN path on a GPU against the NumPy reference and the layer.

The parity grids (path problems and layer cases), their data, the float64 reference on the
same rounded data and the comparison are lstm-gpu-check's (`lstm_gpu.check`): this file and
the command check the same cases. Tolerances (DESIGN.md section 6): float64 1e-10, float32
1e-5 (1e-4 for gradients, which sum B*T terms), float16 2e-2 (5e-2), relative to the
largest magnitude of the expected array (`_close` here, `check.compare` for the grids).
"""
from __future__ import annotations

import numpy as np
import pytest

import lstm_reference as ref
from lstm_gpu import activations
from lstm_gpu.check import grid
from lstm_gpu.check.compute import (check_layer_case, check_problem, gpu_space,
                                    reference_layer, reference_path)
from lstm_gpu.check.data import layer_data, problem_data
from lstm_gpu.check.registry import cudnn_declines
from lstm_gpu.paths import cudnn as cudnn_path
from lstm_gpu.paths import cudnn_runtime, cudnn_weights
from lstm_gpu.paths.base import CellSpec, Weights

pytestmark = [pytest.mark.gpu, pytest.mark.cudnn]

TOL = {np.float64: 1e-10, np.float32: 1e-5}
FEATURES, UNITS = 8, 16


def _cp():
    import cupy

    return cupy


def _close(got, want, rel, what=""):
    got = _cp().asnumpy(got) if not isinstance(got, np.ndarray) else got
    scale = max(1.0, float(np.max(np.abs(want)))) if want.size else 1.0
    err = float(np.max(np.abs(got.astype(np.float64) - want))) if want.size else 0.0
    assert err <= rel * scale, f"{what}: max error {err:.3g} > {rel:g} * {scale:.3g}"


def _spec(zofm=False):
    return CellSpec(units=UNITS, activation=activations.get("tanh"),
                    recurrent_activation=activations.get("sigmoid"), use_bias=True,
                    zero_output_for_mask=zofm, implementation=2)


def _problem(seed, steps, batch, mask_kind):
    """(x (T, B, F), mask (T, B) or None, h0, c0, (kernel, recurrent_kernel, bias)) in
    float64: lstm-gpu-check's data (`lstm_gpu.check.data`) for a problem of this shape."""
    problem = grid.Problem("cudnn", f"{mask_kind} {seed}",
                           grid.Shape(steps, batch, FEATURES, UNITS), mask=mask_kind)
    d = problem_data(problem, np.float64)
    return d.x, d.mask, d.h0, d.c0, (d.weights.kernel, d.weights.recurrent_kernel,
                                     d.weights.bias)


def _run(dtype, x, mask, h0, c0, w, zofm, training=True):
    cp = _cp()
    dev = lambda a: cp.asarray(a, dtype=dtype)  # noqa: E731
    weights = Weights(dev(w[0]), dev(w[1]), dev(w[2]))
    return cudnn_path.forward(weights, dev(x), None if mask is None else cp.asarray(mask),
                              dev(h0), dev(c0), _spec(zofm), None, training)


def _takes(problem) -> bool:
    return cudnn_declines(problem, problem_data(problem, np.float64)) is None


# lstm-gpu-check's grid (one list: the command's default tier and the larger and longer
# shapes of the "full" tier), the problems the dispatcher's rules give cuDNN.
PROBLEMS = [p for p in grid.path_problems("full") if _takes(p)]
FLOAT16_PROBLEMS = [p for p in grid.path_problems("default") if _takes(p)]


def _check(problem, dtype):
    data = problem_data(problem, dtype)
    return check_problem(cudnn_path, gpu_space(), problem, data, reference_path(problem, data))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("problem", PROBLEMS, ids=str)
def test_forward_backward_parity(problem, dtype):
    """Training (forward, every gradient) and inference against the float64 reference on the
    same rounded data: masks of every contiguous kind, fully masked rows, initial states,
    zero_output_for_mask, input dropout (implementation 2)."""
    result = _check(problem, dtype)
    assert result.passed, result.describe()


@pytest.mark.parametrize("problem", FLOAT16_PROBLEMS, ids=str)
def test_float16_parity(problem):
    """float16 storage, float32 math: 2e-2 for outputs, 5e-2 for gradients."""
    result = _check(problem, "float16")
    assert result.passed, result.describe()


@pytest.mark.parametrize("mask_kind", ["none", "right", "fully_masked"])
def test_inference_mode_matches_training_mode(mask_kind):
    x, mask, h0, c0, w = _problem(11, 30, 9, mask_kind)
    a = _run(np.float64, x, mask, h0, c0, w, False, training=False)
    b = _run(np.float64, x, mask, h0, c0, w, False, training=True)
    assert a.saved is None
    _close(a.sequence, _cp().asnumpy(b.sequence), 1e-12, "sequence")


def test_backward_runs_once():
    x, mask, h0, c0, w = _problem(13, 5, 2, "none")
    res = _run(np.float32, x, mask, h0, c0, w, False)
    d = _cp().ones((2, UNITS), np.float32)
    cudnn_path.backward(res.saved, d, None, None, None)
    with pytest.raises(RuntimeError, match="once"):
        cudnn_path.backward(res.saved, d, None, None, None)


def _context():
    cp = _cp()
    return cudnn_path._cudnn_path().core.contexts.get(cp.cuda.runtime.getDevice())


def test_weight_layout_is_canonical_on_this_cudnn():
    ctx = _context()
    for dtype in (np.float16, np.float32, np.float64):
        for f, u in ((1, 1), (8, 16), (512, 512), (3, 7)):
            plan = ctx.plan(cudnn_runtime.plan_key(dtype, f, u))
            assert plan.layout.blocks == cudnn_weights.canonical_layout(f, u), (dtype, f, u)
            assert plan.layout.canonical


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_pack_kernel_matches_the_numpy_packing(dtype):
    cp = _cp()
    rng = np.random.default_rng(3)
    for f, u in ((1, 1), (8, 16), (3, 7), (300, 129)):
        k, rk, b = (rng.normal(size=s).astype(dtype) for s in ((f, 4 * u), (u, 4 * u),
                                                                (4 * u,)))
        lay = _context().plan(cudnn_runtime.plan_key(dtype, f, u)).layout
        got = cudnn_weights.pack(Weights(cp.asarray(k), cp.asarray(rk), cp.asarray(b)), lay,
                                 dtype)
        want = cudnn_weights.pack_weights(k, rk, b, lay.blocks, np.zeros(lay.elements, dtype),
                                          canonical=True)
        np.testing.assert_array_equal(cp.asnumpy(got), want)


def test_in_place_weight_edit_reaches_the_next_call():
    cp = _cp()
    x, mask, h0, c0, w = _problem(14, 6, 3, "left")
    weights = Weights(*(cp.asarray(a, np.float64) for a in w))
    args = (cp.asarray(x), cp.asarray(mask), cp.asarray(h0), cp.asarray(c0), _spec(), None,
            False)
    cudnn_path.forward(weights, *args)
    weights.kernel += 1.0  # in place, as layer.kernel[...] = v does
    weights.bias[:3] = 0.0
    res = cudnn_path.forward(weights, *args)
    bias = w[2].copy()
    bias[:3] = 0.0
    last, *_ = ref.forward(x, mask, h0, c0, w[0] + 1.0, w[1], bias)
    _close(res.last, last, 1e-10, "last after in-place update")


def test_misaligned_time_major_view():
    cp = _cp()
    x, mask, h0, c0, w = _problem(20, 9, 1, "none")
    x = x[:, :, :3].astype(np.float32)  # B * F = 3: x[1:] starts 12 bytes into the buffer
    kernel = w[0][:3]
    big = cp.asarray(np.concatenate([x[:1], x]))
    assert big[1:].data.ptr % 16 != 0
    weights = Weights(*(cp.asarray(a, np.float32) for a in (kernel, w[1], w[2])))
    res = cudnn_path.forward(weights, big[1:], None, cp.asarray(h0, np.float32),
                             cp.asarray(c0, np.float32), _spec(), None, False)
    last, *_ = ref.forward(x.astype(np.float64), None, h0, c0, kernel, w[1], w[2])
    _close(res.last, last, 1e-5, "last")


def test_backward_on_another_stream_and_thread():
    import threading

    cp = _cp()
    x, mask, h0, c0, w = _problem(21, 40, 16, "left")
    stream_a, stream_b = cp.cuda.Stream(non_blocking=True), cp.cuda.Stream(non_blocking=True)
    with stream_a:
        res = _run(np.float64, x, mask, h0, c0, w, False)
    out = []

    def backward():
        with stream_b:
            out.append(cudnn_path.backward(res.saved, None, cp.ones_like(res.sequence), None,
                                           None))
        stream_b.synchronize()

    t = threading.Thread(target=backward)
    t.start()
    t.join()
    last, seq, h, c, cache = ref.forward(x, mask, h0, c0, *w)
    want = ref.backward(cache, None, np.ones_like(seq))
    _close(out[0].kernel, want["kernel"], 1e-10, "kernel")
    _close(out[0].inputs, want["inputs"], 1e-10, "inputs")


def test_memory_pool_does_not_grow():
    cp = _cp()
    x, mask, h0, c0, w = _problem(15, 20, 8, "right")
    dev = [cp.asarray(a, np.float32) for a in (x, h0, c0)]
    weights = Weights(*(cp.asarray(a, np.float32) for a in w))
    m = cp.asarray(mask)
    pool = cp.get_default_memory_pool()

    def step():
        res = cudnn_path.forward(weights, dev[0], m, dev[1], dev[2], _spec(), None, True)
        cudnn_path.backward(res.saved, None, cp.ones_like(res.sequence), None, None)

    for _ in range(20):
        step()
    cp.cuda.get_current_stream().synchronize()
    used, total = pool.used_bytes(), pool.total_bytes()
    for _ in range(1000):
        step()
    cp.cuda.get_current_stream().synchronize()
    assert pool.used_bytes() <= used
    assert pool.total_bytes() <= total


def test_non_default_stream():
    from lstm_gpu.cuda.cudnn import api

    cp = _cp()
    x, mask, h0, c0, w = _problem(16, 50, 32, "right")
    stream = cp.cuda.Stream(non_blocking=True)
    with stream:
        res = _run(np.float64, x, mask, h0, c0, w, False)
        g = cudnn_path.backward(res.saved, None, cp.ones_like(res.sequence), None, None)
        assert api.get_handle().get_stream() == stream.ptr
    stream.synchronize()
    last, seq, h, c, cache = ref.forward(x, mask, h0, c0, *w)
    _close(res.sequence, seq, 1e-10, "sequence")
    want = ref.backward(cache, None, np.ones_like(seq))
    _close(g.kernel, want["kernel"], 1e-10, "kernel")
    res = _run(np.float64, x, mask, h0, c0, w, False, training=False)  # back on the default
    assert api.get_handle().get_stream() == cp.cuda.get_current_stream().ptr


# --- through the public layer (DESIGN.md section 1) ---------------------------------------------


def _layers(**kw):
    lstm_gpu = pytest.importorskip("lstm_gpu")
    if not hasattr(lstm_gpu, "LSTM"):
        pytest.skip("lstm_gpu.LSTM is not on this branch yet")
    # float64: the 1e-10 comparisons below check the path, not float32 rounding.
    cpu = lstm_gpu.LSTM(UNITS, use_cudnn=False, dtype="float64", **kw)
    gpu = lstm_gpu.LSTM(UNITS, use_cudnn=True, dtype="float64", **kw)
    return cpu, gpu


@pytest.mark.parametrize("case", grid.layer_cases("full", group="layer"), ids=str)
def test_layer_parity(case):
    """lstm-gpu-check's layer cases (output modes, go_backwards, time_major, initial and
    stateful states, Bidirectional) with use_cudnn=True, in float64, every call on cuDNN."""
    data = layer_data(case, "float64")
    result = check_layer_case(case, data, gpu_space(), reference_layer(case, data),
                              use_cudnn=True, expected="cudnn")
    assert result.passed, result.describe()


def test_layer_auto_falls_back_and_says_why():
    lstm_gpu = pytest.importorskip("lstm_gpu")
    if not hasattr(lstm_gpu, "LSTM"):
        pytest.skip("lstm_gpu.LSTM is not on this branch yet")
    cp = _cp()
    layer = lstm_gpu.LSTM(UNITS, activation="relu", use_cudnn="auto")
    layer(cp.ones((2, 3, FEATURES), cp.float32))
    assert layer.last_path == "cuda-kernels"
    assert "activation is not tanh" in layer.cudnn_ineligibility()
    strict = lstm_gpu.LSTM(UNITS, activation="relu", use_cudnn=True)
    with pytest.raises(ValueError, match="activation is not tanh"):
        strict(cp.ones((2, 3, FEATURES), cp.float32))


def test_layer_in_place_weight_edit():
    cp = _cp()
    cpu, gpu = _layers(return_sequences=True)
    x = np.random.default_rng(23).normal(size=(4, 9, FEATURES))
    cpu(x)
    gpu.build(x.shape)
    gpu.set_weights(cpu.get_weights())
    gpu(cp.asarray(x))
    for layer in (cpu, gpu):
        layer.kernel[...] = layer.kernel * 0.5
        layer.recurrent_kernel[0] += 0.25
        layer.bias[...] = layer.bias - 0.1
    out = gpu(cp.asarray(x))
    assert gpu.last_path == "cudnn"
    _close(out, np.asarray(cpu(x)), 1e-10, "output after in-place edits")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_layer_input_dropout_runs_on_cudnn_like_the_kernel_path(dtype):
    lstm_gpu = pytest.importorskip("lstm_gpu")
    cp = _cp()
    rng = np.random.default_rng(24)
    x = cp.asarray(rng.normal(size=(5, 11, FEATURES)), dtype)
    mask = cp.asarray(np.arange(11)[None, :] >= np.array([0, 3, 10, 11, 6])[:, None])
    layers = [lstm_gpu.LSTM(UNITS, dropout=0.3, seed=7, use_cudnn=u, return_sequences=True,
                            dtype=dtype) for u in (True, False)]
    layers[0].build(x.shape)
    layers[1].build(x.shape)
    layers[1].set_weights(layers[0].get_weights())
    outs = [layer(x, mask=mask, training=True) for layer in layers]
    assert [layer.last_path for layer in layers] == ["cudnn", "cuda-kernels"]
    rel = TOL[np.dtype(dtype).type]
    _close(outs[0], cp.asnumpy(outs[1]).astype(np.float64), rel, "output")
    d = cp.ones_like(outs[0])
    grads = [layer.backward(d) for layer in layers]
    for key in ("inputs", "kernel"):
        _close(grads[0][key], cp.asnumpy(grads[1][key]).astype(np.float64), rel * 10, key)
