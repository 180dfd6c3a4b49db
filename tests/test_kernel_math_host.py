"""kernels/lstm_cell.cuh built for the host (CMake, ctypes) vs the NumPy reference.

Every activation and derivative against lstm_gpu.activations, the enum ids against
KERNEL_IDS, and one fused step (cell update, mask carry, output rules, recurrent-dropout
scaling, saved pre-activations; backward gradients) against formulas written here.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from lstm_gpu import activations

from lstm_host_lib import HostOps, act_fn, act_grad, host_library

HEADER = Path(__file__).resolve().parents[1] / "kernels" / "lstm_cell.cuh"
NAMES = list(activations.KERNEL_IDS)


def _enum_ids() -> dict[str, int]:
    text = HEADER.read_text()
    body = re.search(r"enum Act \{(.*?)\};", text, re.S).group(1)
    ids = {}
    for name, value in re.findall(r"ACT_([A-Z0-9_]+)\s*=\s*(-?\d+)", body):
        if name not in ("COUNT", "DYNAMIC"):
            ids[name.lower()] = int(value)
    return ids


def test_enum_matches_kernel_ids():
    assert _enum_ids() == activations.KERNEL_IDS
    assert host_library().lstm_act_count() == len(activations.KERNEL_IDS)


def _points(dtype):
    rng = np.random.default_rng(0)
    edges = [-6, -3, -2.5, -1, -0.5, 0, 0.5, 1, 2.5, 3, 6]
    near = [e + d for e in edges for d in (-1e-3, 1e-3)]
    x = np.concatenate([rng.normal(scale=3, size=400), np.linspace(-8, 8, 161), near,
                        [-30.0, -12.0, 12.0, 30.0]])
    return x.astype(dtype)


TOL = {np.float64: dict(rtol=1e-13, atol=1e-14), np.float32: dict(rtol=2e-6, atol=2e-7)}


def _native_act_fn(act, x):
    from lstm_gpu import _cpu_core

    y = np.empty_like(x)
    _cpu_core.act_fn(act, x, y)
    return y


def _native_act_grad(act, x, y):
    from lstm_gpu import _cpu_core

    dy = np.empty_like(x)
    _cpu_core.act_grad(act, x, np.ascontiguousarray(y, dtype=x.dtype), dy)
    return dy


@pytest.fixture(params=["host", "native"])
def act_library(request):
    """(act_fn, act_grad) of the CMake host library, or of the native CPU core's own build
    (its vectorised float exp and tanh included)."""
    if request.param == "host":
        return act_fn, act_grad
    from lstm_gpu.paths import cpu_native

    if not cpu_native.is_available():
        pytest.skip(f"[native] {cpu_native.unavailable_reason()}")
    return _native_act_fn, _native_act_grad


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", NAMES)
def test_activation_and_derivative(name, dtype, act_library):
    fn, grad = act_library
    a = activations.get(name)
    x = _points(dtype)
    with np.errstate(over="ignore"):
        want_y = np.asarray(a.fn(x), dtype)
        want_dy = np.asarray(a.grad(x, want_y), dtype)
    y = fn(a.kernel_id, x)
    np.testing.assert_allclose(y, want_y, **TOL[dtype], err_msg=f"{name} value")
    dy = grad(a.kernel_id, x, want_y)
    np.testing.assert_allclose(dy, want_dy, **TOL[dtype], err_msg=f"{name} derivative")


def _sig(v):
    return 1 / (1 + np.exp(-v))


@pytest.mark.parametrize("fixed", [True, False])
@pytest.mark.parametrize("zero_output", [0, 1])
def test_fused_step_forward(fixed, zero_output):
    """Cell update, mask carry, output rule and h * rec_mask on the fused (B, 4U) layout."""
    rng = np.random.default_rng(1)
    B, U = 5, 3
    xz, rz = rng.normal(size=(B, 4 * U)), rng.normal(size=(B, 4 * U))
    bias = rng.normal(size=4 * U)
    h_prev, c_prev, out_prev = (rng.normal(size=(B, U)) for _ in range(3))
    mask = np.array([1, 0, 1, 0, 1], np.uint8)
    rec_mask = (rng.random((4, B, U)) > 0.5) / 0.5
    h, c, out = (np.empty((B, U)) for _ in range(3))
    z_save = np.empty((B, 4 * U))
    h_rec = np.empty((4, B, U))
    HostOps(np.float64, fixed=fixed).fwd_step(
        xz=xz, xz_gs=U, xz_bs=4 * U, rz=rz, rz_gs=U, rz_bs=4 * U, bias=bias, h_prev=h_prev,
        c_prev=c_prev, out_prev=out_prev, mask=mask, rec_mask=rec_mask, h_rec=h_rec, h=h, c=c,
        out=out, z_save=z_save, B=B, U=U, act=1, ract=2, zero_output=zero_output)
    z = xz + rz + bias
    i, f, g, o = (z[:, k * U:(k + 1) * U] for k in range(4))
    cn = _sig(f) * c_prev + _sig(i) * np.tanh(g)
    hn = _sig(o) * np.tanh(cn)
    m = mask[:, None].astype(bool)
    np.testing.assert_allclose(z_save, z, rtol=1e-15)
    np.testing.assert_allclose(c, np.where(m, cn, c_prev), rtol=1e-14)
    np.testing.assert_allclose(h, np.where(m, hn, h_prev), rtol=1e-14)
    np.testing.assert_allclose(out, np.where(m, hn, 0 if zero_output else out_prev), rtol=1e-14)
    np.testing.assert_allclose(h_rec, h[None] * rec_mask, rtol=1e-15)


def test_fused_step_forward_gate_major_and_first_step():
    """The per-gate (4, B, U) layout of implementation 1, no bias, out_prev = zeros."""
    rng = np.random.default_rng(2)
    B, U = 3, 2
    xz4, rz4 = rng.normal(size=(4, B, U)), rng.normal(size=(4, B, U))
    h_prev, c_prev = rng.normal(size=(B, U)), rng.normal(size=(B, U))
    mask = np.array([0, 1, 0], np.uint8)
    h, c, out = (np.empty((B, U)) for _ in range(3))
    HostOps(np.float64).fwd_step(
        xz=xz4, xz_gs=B * U, xz_bs=U, rz=rz4, rz_gs=B * U, rz_bs=U, bias=None, h_prev=h_prev,
        c_prev=c_prev, out_prev=None, mask=mask, rec_mask=None, h_rec=None, h=h, c=c, out=out,
        z_save=None, B=B, U=U, act=5, ract=3, zero_output=0)
    z = xz4 + rz4
    hs = activations.get("hard_sigmoid").fn
    cn = hs(z[1]) * c_prev + hs(z[0]) * np.maximum(z[2], 0)
    hn = hs(z[3]) * np.maximum(cn, 0)
    m = mask[:, None].astype(bool)
    np.testing.assert_allclose(out, np.where(m, hn, 0.0), rtol=1e-14)
    np.testing.assert_allclose(h, np.where(m, hn, h_prev), rtol=1e-14)


@pytest.mark.parametrize("zero_output", [0, 1])
@pytest.mark.parametrize("rec", [False, True])
def test_fused_step_backward(zero_output, rec):
    rng = np.random.default_rng(3)
    B, U = 4, 3
    z = rng.normal(size=(B, 4 * U))
    c_prev = rng.normal(size=(B, U))
    mask = np.array([1, 0, 1, 0], np.uint8)
    i, f, g, o = (z[:, k * U:(k + 1) * U] for k in range(4))
    cn = _sig(f) * c_prev + _sig(i) * np.tanh(g)
    c = np.where(mask[:, None].astype(bool), cn, c_prev)
    d_out, g_out, dh, dc = (rng.normal(size=(B, U)) for _ in range(4))
    rec_mask = (rng.random((4, B, U)) > 0.5) / 0.5 if rec else None
    dh_rec = rng.normal(size=(4, B, U)) if rec else rng.normal(size=(B, U))
    g_out0, dh0, dc0 = g_out.copy(), dh.copy(), dc.copy()
    dz = np.full((4, B, U), np.nan) if rec else np.full((B, 4 * U), np.nan)
    gs, bs = (B * U, U) if rec else (U, 4 * U)
    HostOps(np.float64).bwd_step(
        z=z, c_prev=c_prev, c=c, mask=mask, d_out=d_out, g_out=g_out, dh=dh, dh_rec=dh_rec,
        rec_mask=rec_mask, dc=dc, dz=dz, dz_gs=gs, dz_bs=bs, B=B, U=U, act=1, ract=2,
        zero_output=zero_output)
    go = g_out0 + d_out
    dhs = dh0 + ((dh_rec * rec_mask).sum(0) if rec else dh_rec)
    dhn = dhs + go
    si, sf, tg, so, tc = _sig(i), _sig(f), np.tanh(g), _sig(o), np.tanh(cn)
    dct = dc0 + dhn * so * (1 - tc ** 2)
    want = np.concatenate([dct * tg * si * (1 - si), dct * c_prev * sf * (1 - sf),
                           dct * si * (1 - tg ** 2), dhn * tc * so * (1 - so)], axis=1)
    m = mask[:, None].astype(bool)
    want = np.where(m, want, 0.0)
    got = dz.transpose(1, 0, 2).reshape(B, 4 * U) if rec else dz
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(dc, np.where(m, dct * sf, dc0), rtol=1e-13)
    np.testing.assert_allclose(dh, np.where(m, 0.0, dhs), rtol=1e-13)
    np.testing.assert_allclose(g_out, np.where(m | bool(zero_output), 0.0, go), rtol=1e-13)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("layout", ["fused", "gate_major"])
def test_bias_colsum(dtype, layout):
    rng = np.random.default_rng(4)
    T, B, U = 7, 5, 3
    lib = host_library()
    s = "f64" if dtype == np.float64 else "f32"
    if layout == "fused":
        src = rng.normal(size=(T, B, 4 * U)).astype(dtype)
        want = src.reshape(T * B, 4 * U).sum(0)
        strides = (B * 4 * U, 4 * U, U)
    else:
        src = rng.normal(size=(T, 4, B, U)).astype(dtype)
        want = src.sum(axis=(0, 2)).reshape(4 * U)
        strides = (4 * B * U, U, B * U)
    for chunks in (1, 3, T * B):
        rpc = -(-T * B // chunks)
        n = -(-T * B // rpc)
        partial = np.empty((n, 4 * U), dtype)
        out = np.empty(4 * U, dtype)
        getattr(lib, f"lstm_colsum_{s}")(src.ctypes.data, *strides, T, B, U, rpc, n,
                                         partial.ctypes.data, out.ctypes.data)
        np.testing.assert_allclose(out, want, rtol=1e-5 if dtype == np.float32 else 1e-13)
