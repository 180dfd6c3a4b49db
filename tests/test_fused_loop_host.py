"""The kernel path's full forward + backward orchestration on the CPU.

`lstm_gpu.paths.fused_loop` runs on `HostDevice` (tests/lstm_host_lib.py): the host build of
the kernels' element bodies for the fused steps and SciPy's BLAS on the GEMM planner's
arguments for the per-step GEMMs, in plans driven by a `LoopEngine` in eager or graph mode
(graph: the recorded program is replayed, as a CUDA graph would be). Results are compared with
the reference path (`numpy_ref`, the spec), gradients with central finite differences. This
checks every index, stride, layout and GEMM argument that the CUDA path uses, without a GPU.
"""
from __future__ import annotations

import numpy as np
import pytest

from lstm_gpu import activations
from lstm_gpu.errors import PathUnavailable
from lstm_gpu.paths import fused_loop, numpy_ref
from lstm_gpu.paths.base import CellSpec, DropoutMasks, Weights
from lstm_gpu.paths.loop_engine import LoopEngine

from lstm_host_lib import HostDevice


def ref_forward(W, R, b, x, mask, h0, c0, act, ract, zero_output, mx=None, mr=None):
    """The reference path (the spec): (last, sequence, h, c)."""
    spec = CellSpec(h0.shape[1], act, ract, b is not None, zero_output, 1)
    dropout = None if mx is None and mr is None else DropoutMasks(mx, mr)
    r = numpy_ref.forward(Weights(W, R, b), x, mask, h0, c0, spec, dropout, False)
    return r.last, r.sequence, r.h, r.c


def make_case(rng, T, B, F, U, dtype=np.float64, mask_kind=None, in_drop=0, rec_drop=False,
              use_bias=True):
    x = rng.normal(size=(T, B, F))
    W = rng.normal(size=(F, 4 * U)) * 0.5
    R = rng.normal(size=(U, 4 * U)) * 0.5
    b = rng.normal(size=(4 * U,)) * 0.3 if use_bias else None
    h0 = rng.normal(size=(B, U)) * 0.5
    c0 = rng.normal(size=(B, U)) * 0.5
    mask = None
    if mask_kind == "left":
        mask = np.ones((T, B), bool)
        for j in range(B):
            mask[: j % T, j] = False
        mask[:, -1] = False  # a fully masked sample
        if T > 2:
            mask[T // 2, 0] = False  # a hole in the middle
    elif mask_kind == "right":
        mask = np.ones((T, B), bool)
        for j in range(B):
            mask[T - (j % T):, j] = False
    mx = mr = None
    if in_drop:
        mx = (rng.random((in_drop, B, F)) > 0.3) / 0.7
    if rec_drop:
        mr = (rng.random((4, B, U)) > 0.25) / 0.75
    cast = (lambda a: None if a is None else np.asarray(a, dtype))
    return dict(x=cast(x), W=cast(W), R=cast(R), b=cast(b), h0=cast(h0), c0=cast(c0),
                mask=mask, mx=cast(mx), mr=cast(mr))


def run_path(case, act, ract, zero_output, training=True, fixed=True, engine=None,
             device=None):
    """(device, spec, ForwardResult); a new eager engine unless one is given."""
    spec = CellSpec(units=case["h0"].shape[1], activation=activations.get(act),
                    recurrent_activation=activations.get(ract),
                    use_bias=case["b"] is not None, zero_output_for_mask=zero_output,
                    implementation=1 if case["mr"] is not None else 2)
    dropout = None
    if case["mx"] is not None or case["mr"] is not None:
        dropout = DropoutMasks(inputs=case["mx"], recurrent=case["mr"])
    w = Weights(kernel=case["W"], recurrent_kernel=case["R"], bias=case["b"])
    device = device or HostDevice(case["x"].dtype, fixed=fixed)
    engine = engine or LoopEngine(mode=lambda: "eager")
    res = fused_loop.forward(device, engine, w, case["x"], case["mask"], case["h0"], case["c0"],
                             spec, dropout, training)
    return device, spec, res


def ref_of(case, act, ract, zero_output, **over):
    c = {**case, **over}
    return ref_forward(c["W"], c["R"], c["b"], c["x"], c["mask"], c["h0"], c["c0"],
                       activations.get(act), activations.get(ract), zero_output, c["mx"], c["mr"])


CONFIGS = [
    # (mask_kind, in_drop, rec_drop, use_bias, act, ract, zero_output)
    (None, 0, False, True, "tanh", "sigmoid", False),
    ("left", 0, False, True, "tanh", "sigmoid", False),
    ("left", 0, False, True, "tanh", "sigmoid", True),
    ("right", 1, False, True, "tanh", "sigmoid", False),
    ("left", 4, True, True, "tanh", "sigmoid", False),
    (None, 0, True, True, "tanh", "hard_sigmoid", True),
    (None, 4, False, False, "tanh", "sigmoid", False),
    ("left", 0, False, False, "relu", "hard_sigmoid", False),
    (None, 1, True, True, "gelu", "hard_sigmoid_keras2", False),
    ("left", 0, False, True, "softsign", "sigmoid", False),
    (None, 0, False, True, "mish", "log_sigmoid", False),
]


@pytest.mark.parametrize("mode", ["eager", "graph"])
@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: "-".join(map(str, c)))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_forward_matches_reference(cfg, dtype, mode):
    """Three calls of one shape with different data share a plan: in graph mode the first
    captures and the next two replay, so every input must reach the plan's buffers."""
    mask_kind, in_drop, rec_drop, use_bias, act, ract, zo = cfg
    tol = dict(rtol=1e-10, atol=1e-12) if dtype == np.float64 else dict(rtol=1e-5, atol=2e-6)
    engine = LoopEngine(mode=lambda: mode)
    for seed in range(3):
        case = make_case(np.random.default_rng(seed), 6, 5, 4, 3, np.float64, mask_kind,
                         in_drop, rec_drop, use_bias)
        want = ref_of(case, act, ract, zo)
        cast = {k: (v.astype(dtype) if isinstance(v, np.ndarray) and v.dtype.kind == "f"
                    else v) for k, v in case.items()}
        for training in (True, False):
            _, _, res = run_path(cast, act, ract, zo, training=training, engine=engine)
            for got, exp in zip((res.last, res.sequence, res.h, res.c), want):
                assert got.dtype == dtype
                np.testing.assert_allclose(got, exp, **tol)
            assert (res.saved is not None) == training
    stats = engine.snapshot()
    assert stats["replays"] == (4 if mode == "graph" else 0), stats


def test_fixed_and_dynamic_instantiations_agree():
    case = make_case(np.random.default_rng(1), 5, 4, 3, 4, mask_kind="left")
    a = run_path(case, "tanh", "sigmoid", False, fixed=True)[2]
    b = run_path(case, "tanh", "sigmoid", False, fixed=False)[2]
    np.testing.assert_array_equal(a.sequence, b.sequence)
    np.testing.assert_array_equal(a.c, b.c)


def _loss_and_grads(case, act, ract, zo, g, engine=None):
    device, spec, res = run_path(case, act, ract, zo, training=True, engine=engine)
    return fused_loop.backward(device, res.saved, g["last"], g["seq"], g["h"], g["c"])


def _loss(case, act, ract, zo, g, **over):
    last, seq, h, c = ref_of(case, act, ract, zo, **over)
    total = 0.0
    for name, val in (("last", last), ("seq", seq), ("h", h), ("c", c)):
        if g[name] is not None:
            total += float(np.sum(val * g[name]))
    return total


def _numeric(case, act, ract, zo, g, name, eps=1e-6):
    base = case[name]
    num = np.zeros_like(base)
    for idx in np.ndindex(base.shape):
        plus, minus = base.copy(), base.copy()
        plus[idx] += eps
        minus[idx] -= eps
        num[idx] = (_loss(case, act, ract, zo, g, **{name: plus})
                    - _loss(case, act, ract, zo, g, **{name: minus})) / (2 * eps)
    return num


GRAD_CONFIGS = CONFIGS + [
    ("left", 1, False, True, "tanh", "sigmoid", True),
    ("right", 4, True, True, "elu", "sigmoid", True),
]


@pytest.mark.parametrize("cfg", GRAD_CONFIGS, ids=lambda c: "-".join(map(str, c)))
def test_backward_matches_finite_differences(cfg):
    mask_kind, in_drop, rec_drop, use_bias, act, ract, zo = cfg
    rng = np.random.default_rng(2)
    T, B, F, U = 4, 4, 3, 2
    case = make_case(rng, T, B, F, U, np.float64, mask_kind, in_drop, rec_drop, use_bias)
    g = {"last": rng.normal(size=(B, U)), "seq": rng.normal(size=(T, B, U)),
         "h": rng.normal(size=(B, U)), "c": rng.normal(size=(B, U))}
    grads = _loss_and_grads(case, act, ract, zo, g)
    pairs = [("x", grads.inputs), ("W", grads.kernel), ("R", grads.recurrent_kernel),
             ("h0", grads.h0), ("c0", grads.c0)]
    if use_bias:
        pairs.append(("b", grads.bias))
    else:
        assert grads.bias is None
    for name, got in pairs:
        want = _numeric(case, act, ract, zo, g, name)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-8, err_msg=name)


@pytest.mark.parametrize("present", [("last",), ("seq",), ("h", "c"), ()])
def test_backward_with_missing_output_gradients(present):
    rng = np.random.default_rng(3)
    T, B, F, U = 3, 3, 2, 2
    case = make_case(rng, T, B, F, U, mask_kind="left")
    full = {"last": rng.normal(size=(B, U)), "seq": rng.normal(size=(T, B, U)),
            "h": rng.normal(size=(B, U)), "c": rng.normal(size=(B, U))}
    g = {k: (v if k in present else None) for k, v in full.items()}
    grads = _loss_and_grads(case, "tanh", "sigmoid", False, g)
    want = _numeric(case, "tanh", "sigmoid", False, g, "x")
    np.testing.assert_allclose(grads.inputs, want, rtol=1e-6, atol=1e-8)
    if not present:
        assert not np.any(grads.kernel) and not np.any(grads.h0)


def test_float32_backward_close_to_float64():
    rng = np.random.default_rng(4)
    T, B, F, U = 7, 5, 6, 8
    case = make_case(rng, T, B, F, U, np.float64, "left", 4, True)
    g = {"last": rng.normal(size=(B, U)), "seq": rng.normal(size=(T, B, U)),
         "h": rng.normal(size=(B, U)), "c": rng.normal(size=(B, U))}
    g64 = _loss_and_grads(case, "tanh", "sigmoid", False, g)
    c32 = {k: (v.astype(np.float32) if isinstance(v, np.ndarray) and v.dtype.kind == "f" else v)
           for k, v in case.items()}
    g32 = _loss_and_grads(c32, "tanh", "sigmoid", False,
                          {k: v.astype(np.float32) for k, v in g.items()})
    for a, b in zip((g32.inputs, g32.kernel, g32.recurrent_kernel, g32.bias, g32.h0, g32.c0),
                    (g64.inputs, g64.kernel, g64.recurrent_kernel, g64.bias, g64.h0, g64.c0)):
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_callable_activation_is_unavailable():
    case = make_case(np.random.default_rng(5), 2, 2, 2, 2)
    with pytest.raises(PathUnavailable):
        run_path(case, lambda v: v * 2.0, "sigmoid", False)


@pytest.mark.parametrize("in_drop, rec_drop", [(0, False), (1, False), (4, True)])
def test_weights_and_masks_are_cast_to_the_compute_dtype(in_drop, rec_drop):
    """float64 weights and dropout masks with float32 inputs are cast, not read through
    `float*` (which gave garbage before)."""
    case = make_case(np.random.default_rng(7), 5, 3, 4, 3, np.float64, "left", in_drop,
                     rec_drop)
    f32 = {k: (v.astype(np.float32) if isinstance(v, np.ndarray) and v.dtype.kind == "f"
               else v) for k, v in case.items()}
    mixed = dict(f32, W=case["W"], R=case["R"], b=case["b"], mx=case["mx"], mr=case["mr"])
    want = run_path(f32, "tanh", "sigmoid", False)[2]
    got = run_path(mixed, "tanh", "sigmoid", False)[2]
    for a, b in zip((got.sequence, got.h, got.c), (want.sequence, want.h, want.c)):
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_single_step_and_single_sample():
    rng = np.random.default_rng(6)
    for T, B in ((1, 3), (4, 1)):
        case = make_case(rng, T, B, 3, 2, mask_kind="left")
        want = ref_of(case, "tanh", "sigmoid", False)
        _, _, res = run_path(case, "tanh", "sigmoid", False)
        for got, exp in zip((res.last, res.sequence, res.h, res.c), want):
            np.testing.assert_allclose(got, exp, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("T, B", [(0, 3), (4, 0)])
def test_empty_time_or_batch(T, B):
    case = make_case(np.random.default_rng(8), max(T, 1), max(B, 1), 3, 2, mask_kind="left")
    case = dict(case, x=case["x"][:T, :B], h0=case["h0"][:B], c0=case["c0"][:B],
                mask=case["mask"][:T, :B])
    want = ref_of(case, "tanh", "sigmoid", False)
    device, _, res = run_path(case, "tanh", "sigmoid", False)
    for got, exp in zip((res.last, res.sequence, res.h, res.c), want):
        np.testing.assert_array_equal(got, exp)
    g = fused_loop.backward(device, res.saved, None, None, np.ones((B, 2)), None)
    assert g.inputs.shape == (T, B, 3) and not g.kernel.any() and not g.bias.any()
    np.testing.assert_array_equal(g.h0, np.ones((B, 2)))
