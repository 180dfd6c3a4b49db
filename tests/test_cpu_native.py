"""The native CPU path (lstm_gpu.paths.cpu_native, the compiled core) against the reference.

Path level, every configuration the kernel path serves: masks (fully masked rows included),
zero_output_for_mask, initial states, implementation 1 and 2 with input and recurrent
dropout, every built-in activation, float32 and float64; forward in inference and training,
backward with every upstream gradient. Within 1e-6 (float32) and 1e-12 (float64) of
`numpy_ref`, relative to the largest magnitude. Also: the vectorised exp/tanh of the core
(every activation of the core's build: tests/test_kernel_math_host.py), routing, threads,
the core's argument checks, and that the core is built where it can be.
The layer-level suites (Keras parity, golden, gradients, validation) run on this path too,
through the `cpu_path` fixture.
"""
from __future__ import annotations

import importlib.util
import shutil
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lstm_gpu import LSTM, activations
from lstm_gpu.errors import PathUnavailable
from lstm_gpu.paths import cpu_native, numpy_ref
from lstm_gpu.paths.base import CellSpec, DropoutMasks, Weights

try:
    from tests import lstm_testlib as T_
except ImportError:  # tests/ itself on sys.path (pytest's rootdir insertion)
    import lstm_testlib as T_

RTOL = {np.float32: 1e-6, np.float64: 1e-12}
needs_core = pytest.mark.skipif(not cpu_native.is_available(),
                                reason=f"[native] {cpu_native.unavailable_reason()}")


def test_core_is_built_where_it_can_be():
    """With a C++ compiler and scipy-openblas32 installed, the core must load (CI builds it)."""
    why = cpu_native.unavailable_reason()
    if why is None:
        assert cpu_native.isa() in ("avx512", "avx2", "baseline")
        return
    compiler = any(shutil.which(c) for c in ("c++", "g++", "clang++", "cl"))
    if not compiler or importlib.util.find_spec("scipy_openblas32") is None:
        pytest.skip(f"[native] no C++ compiler or no scipy-openblas32 here: {why}")
    if "LSTM_GPU_BUILD_CPU_CORE=0" in why:
        pytest.skip(f"[native] {why}")
    pytest.fail(f"the native CPU core should have been built here: {why}")


# ----------------------------------------------------------------------------- path level
def _problem(dtype, *, steps=5, batch=6, features=3, units=4, mask="mixed", states=True,
             use_bias=True, zero_output=False, implementation=2, dropout=0.0,
             recurrent_dropout=0.0, act="tanh", ract="sigmoid", seed=0, scale=(1.0, 0.5)):
    """(weights, x, mask, h0, c0, spec, dropout masks) in the paths' canonical layout."""
    r = np.random.default_rng(seed)
    x_scale, w_scale = scale
    w = T_.random_weights(features, units, use_bias=use_bias, scale=w_scale, dtype=dtype,
                          seed=seed)
    x = (x_scale * r.standard_normal((steps, batch, features))).astype(dtype)
    m = T_.make_mask(mask, batch, steps, seed=seed + 3)
    m = None if m is None else np.ascontiguousarray(m.T)
    h0, c0 = (T_.random_states(batch, units, dtype=dtype, seed=seed + 2) if states
              else [np.zeros((batch, units), dtype)] * 2)
    drop = None
    if dropout or recurrent_dropout:
        keep = lambda shape, rate: ((r.random(shape) >= rate) / (1 - rate)).astype(dtype)  # noqa
        gates = 4 if implementation == 1 else 1
        drop = DropoutMasks(
            inputs=keep((gates, batch, features), dropout) if dropout else None,
            recurrent=keep((4, batch, units), recurrent_dropout) if recurrent_dropout else None)
    spec = CellSpec(units, activations.get(act), activations.get(ract), use_bias, zero_output,
                    implementation)
    weights = Weights(w[0], w[1], w[2] if use_bias else None)
    return weights, x, m, h0, c0, spec, drop


def _upstream(steps, batch, units, dtype, seed=7, which=("last", "seq", "h", "c")):
    r = np.random.default_rng(seed)
    g = lambda *shape: r.standard_normal(shape).astype(dtype)  # noqa: E731
    return (g(batch, units) if "last" in which else None,
            g(steps, batch, units) if "seq" in which else None,
            g(batch, units) if "h" in which else None,
            g(batch, units) if "c" in which else None)


def _assert_same(got, want, dtype, what):
    T_.assert_close(got, want, rtol=RTOL[dtype], what=what)


def _compare(dtype, upstream=("last", "seq", "h", "c"), **kw):
    weights, x, m, h0, c0, spec, drop = _problem(dtype, **kw)
    args = (weights, x, m, h0, c0, spec, drop)
    ref = numpy_ref.forward(*args, training=True)
    for training in (False, True):
        got = cpu_native.forward(*args, training=training)
        for name in ("last", "sequence", "h", "c"):
            _assert_same(getattr(got, name), getattr(ref, name), dtype,
                         f"forward {name} (training={training})")
            assert getattr(got, name).dtype == dtype
    d = _upstream(*x.shape[:2], spec.units, dtype, which=upstream)
    want = numpy_ref.backward(ref.saved, *d)
    grads = cpu_native.backward(got.saved, *d)
    for name in ("inputs", "h0", "c0", "kernel", "recurrent_kernel", "bias"):
        if getattr(want, name) is None:
            assert getattr(grads, name) is None, name
            continue
        _assert_same(getattr(grads, name), getattr(want, name), dtype, f"gradient {name}")


DTYPES = [np.float32, np.float64]


@needs_core
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mask", T_.MASK_KINDS)
@pytest.mark.parametrize("zero_output", [False, True])
def test_masks(dtype, mask, zero_output):
    _compare(dtype, mask=mask, zero_output=zero_output)


@needs_core
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("implementation,dropout,recurrent_dropout",
                         [(2, 0.3, 0.0), (1, 0.3, 0.0), (1, 0.0, 0.4), (1, 0.3, 0.4),
                          (2, 0.0, 0.0), (1, 0.0, 0.0)])
@pytest.mark.parametrize("mask", ["none", "mixed"])
def test_dropout_and_implementations(dtype, implementation, dropout, recurrent_dropout, mask):
    _compare(dtype, implementation=implementation, dropout=dropout,
             recurrent_dropout=recurrent_dropout, mask=mask)


@needs_core
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("use_bias,states", [(False, True), (True, False)])
def test_bias_and_zero_states(dtype, use_bias, states):
    _compare(dtype, use_bias=use_bias, states=states)


@needs_core
@pytest.mark.parametrize("upstream", [(), ("last",), ("seq",), ("h", "c")])
def test_partial_upstream_gradients(upstream):
    _compare(np.float64, upstream=upstream)


def _scales(name):
    return (0.3, 0.05) if name == "exponential" else (1.0, 0.5)


@needs_core
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", activations.builtin_names())
def test_every_builtin_activation(name, dtype):
    _compare(dtype, act=name, scale=_scales(name), recurrent_dropout=0.3, implementation=1)
    _compare(dtype, ract=name, scale=_scales(name))


@needs_core
@pytest.mark.parametrize("dtype", DTYPES)
def test_batches_split_over_threads(dtype, monkeypatch):
    """Large enough batches run in slices on several threads; same numbers as one thread."""
    monkeypatch.setattr(cpu_native, "_explicit_threads", None)  # restored after the test
    kw = dict(batch=67, steps=4, units=20, features=5, recurrent_dropout=0.3,
              implementation=1, dropout=0.2)
    cpu_native.set_num_threads(3)
    _compare(dtype, **kw)
    weights, x, m, h0, c0, spec, drop = _problem(dtype, **kw)
    many = cpu_native.forward(weights, x, m, h0, c0, spec, drop, False)
    cpu_native.set_num_threads(1)
    one = cpu_native.forward(weights, x, m, h0, c0, spec, drop, False)
    _assert_same(many.sequence, one.sequence, dtype, "3 threads vs 1")


# ----------------------------------------------------------------------------- SIMD levels
@pytest.fixture(params=cpu_native.ISA_LEVELS)
def isa_level(request):
    """The core runs the code of this SIMD level (skipped where the CPU does not run it)."""
    if not cpu_native.is_available():
        pytest.skip(f"[native] {cpu_native.unavailable_reason()}")
    try:
        previous = cpu_native.set_isa(request.param)
    except ValueError as e:
        pytest.skip(f"[native] {e}")
    yield request.param
    cpu_native.set_isa(previous)


# (batch, units): batches of one, below, at and past the tile rows (4 or 6) and their
# multiples; units below, at and past the vector width (2 to 16 lanes) and one unit.
EDGE_SHAPES = [(1, 1), (1, 17), (5, 16), (7, 33), (13, 20), (67, 9)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch,units", EDGE_SHAPES)
def test_every_simd_level_matches_reference(isa_level, dtype, batch, units):
    """The packed per-step products (plain and, with recurrent dropout, per gate block) and
    the element passes of each SIMD level, over partial vectors, tiles and panels."""
    kw = dict(steps=3, batch=batch, features=3, units=units)
    _compare(dtype, mask="mixed", **kw)
    _compare(dtype, mask="none", implementation=1, dropout=0.2, recurrent_dropout=0.3, **kw)


def test_simd_levels_on_threads(isa_level, monkeypatch):
    monkeypatch.setattr(cpu_native, "_explicit_threads", None)  # restored after the test
    cpu_native.set_num_threads(2)
    _compare(np.float32, steps=3, batch=67, features=5, units=20, recurrent_dropout=0.3,
             implementation=1)


@needs_core
def test_set_isa():
    best = cpu_native.isa()
    assert cpu_native.set_isa("baseline") == best
    assert cpu_native.isa() == "baseline"
    assert cpu_native.set_isa(None) == "baseline"
    assert cpu_native.isa() == best
    with pytest.raises(ValueError, match="level"):
        cpu_native.set_isa("sse9")
    above = cpu_native.ISA_LEVELS[cpu_native.ISA_LEVELS.index(best) + 1:]
    for level in above:
        with pytest.raises(ValueError, match="does not run"):
            cpu_native.set_isa(level)
    assert cpu_native.isa() == best


@needs_core
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.integers(1, 6), batch=st.integers(1, 40), features=st.integers(1, 5),
       units=st.integers(1, 9), mask=st.sampled_from(T_.MASK_KINDS),
       zero_output=st.booleans(), use_bias=st.booleans(), seed=st.integers(0, 1000),
       dtype=st.sampled_from(DTYPES))
def test_random_shapes_match_reference(steps, batch, features, units, mask, zero_output,
                                       use_bias, seed, dtype):
    if mask == "holes" and steps < 3:
        mask = "mixed"
    _compare(dtype, steps=steps, batch=batch, features=features, units=units, mask=mask,
             zero_output=zero_output, use_bias=use_bias, seed=seed)


@needs_core
def test_no_timesteps_returns_the_initial_state():
    weights, x, m, h0, c0, spec, drop = _problem(np.float64, steps=0, mask="none")
    r = cpu_native.forward(weights, x, m, h0, c0, spec, drop, True)
    assert r.sequence.shape == (0, 6, 4) and np.all(r.last == 0)
    np.testing.assert_array_equal(r.h, h0)
    np.testing.assert_array_equal(r.c, c0)
    g = cpu_native.backward(r.saved, None, None, h0, c0)
    np.testing.assert_array_equal(g.h0, h0)
    assert np.all(g.kernel == 0) and np.all(g.bias == 0) and g.inputs.shape == x.shape


@needs_core
def test_inputs_are_not_modified():
    weights, x, m, h0, c0, spec, drop = _problem(np.float32, recurrent_dropout=0.3,
                                                 implementation=1, dropout=0.2)
    arrays = [weights.kernel, weights.recurrent_kernel, weights.bias, x, m, h0, c0,
              drop.inputs, drop.recurrent]
    copies = [a.copy() for a in arrays]
    r = cpu_native.forward(weights, x, m, h0, c0, spec, drop, True)
    d = _upstream(*x.shape[:2], spec.units, np.float32)
    d_copies = [a.copy() for a in d]
    cpu_native.backward(r.saved, *d)
    for a, b in zip(arrays + list(d), copies + d_copies):
        np.testing.assert_array_equal(a, b)


def test_callable_activation_is_refused():
    weights, x, m, h0, c0, spec, drop = _problem(np.float64, act=np.tanh)
    spec = CellSpec(4, activations.get(lambda v: np.tanh(v)), spec.recurrent_activation, True,
                    False, 2)
    with pytest.raises(PathUnavailable, match="callable"):
        cpu_native.forward(weights, x, m, h0, c0, spec, drop, False)


# ----------------------------------------------------------------------------- the core
@needs_core
def test_core_checks_its_arguments():
    from lstm_gpu import _cpu_core as core

    weights, x, m, h0, c0, spec, _ = _problem(np.float32, mask="none")
    T, B, _F = x.shape
    U = spec.units
    out = dict(seq=np.empty((T, B, U), np.float32), h=np.empty((B, U), np.float32),
               c=np.empty((B, U), np.float32), Z=np.empty((T, B, 4 * U), np.float32))

    def call(**over):
        a = dict(x=x, W=weights.kernel, R=weights.recurrent_kernel, bias=weights.bias, h0=h0,
                 c0=c0, mask=None, mx=None, mr=None, act=1, ract=2, zero_output=0, threads=1,
                 **out, HS=None, CS=None)
        a.update(over)
        core.forward(*a.values())

    call()  # the arguments as given are fine
    with pytest.raises(ValueError, match="`W`.*float32"):
        call(W=weights.kernel.astype(np.float64))
    with pytest.raises(ValueError, match="`h0` has shape"):
        call(h0=h0[:1])
    with pytest.raises(ValueError, match="`x` must be a C-contiguous"):
        call(x=x[:, ::-1])
    with pytest.raises(ValueError, match="`seq` must be a C-contiguous, writable"):
        ro = out["seq"].copy()
        ro.flags.writeable = False
        call(seq=ro)
    with pytest.raises(ValueError, match="`mask` has element format"):
        call(mask=np.ones((T, B), np.float32))
    with pytest.raises(ValueError, match="activation ids"):
        call(act=99)
    with pytest.raises(TypeError, match="`R` must be an array"):
        call(R=None)
    with pytest.raises(TypeError, match="takes 19 arguments"):
        core.forward(x)


def _ulps(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    """|got - want| in units of the float32 spacing at want (want in float64)."""
    w32 = want.astype(np.float32)
    spacing = np.abs(np.spacing(np.abs(w32))).astype(np.float64)
    spacing = np.maximum(spacing, np.float64(np.finfo(np.float32).smallest_subnormal))
    return np.abs(got.astype(np.float64) - want) / spacing


def _act(name: str, x: np.ndarray) -> np.ndarray:
    from lstm_gpu import _cpu_core as core

    y = np.empty_like(x)
    core.act_fn(activations.KERNEL_IDS[name], x, y)
    return y


def test_vectorised_exp_sigmoid_tanh_accuracy(isa_level):
    """kernels/cpu/vmath.h and vmath_avx512.h at each SIMD level: float32 exp within 1.1 ulp,
    tanh within 1.4 ulp and sigmoid within 2 ulp of float64 math on a sample of every binade
    (the whole float range was checked once, offline), and the special values of <math.h>.
    Sigmoid is checked where its value is normal (x > -87): below, float32's 1 / (1 + exp(-x))
    is 0, like NumPy's, where the exact value is a subnormal."""
    r = np.random.default_rng(1)
    mags = np.ldexp(1.0 + r.random(60 * 256), np.repeat(np.arange(-150, 106), 60))
    x = np.concatenate([mags, -mags]).astype(np.float32)
    x = x[np.isfinite(x)]
    x64 = x.astype(np.float64)
    in_range = (x > -103) & (x < 88.7)
    assert _ulps(_act("exponential", x[in_range]), np.exp(x64[in_range])).max() <= 1.1
    assert _ulps(_act("tanh", x), np.tanh(x64)).max() <= 1.4
    normal = x > -87
    want = 1 / (1 + np.exp(-x64[normal]))
    assert _ulps(_act("sigmoid", x[normal]), want).max() <= 2.0
    special = np.array([np.inf, -np.inf, np.nan, 89.0, 1e30, -104.0, -1e30, 0.0, -0.0],
                       np.float32)
    np.testing.assert_array_equal(_act("exponential", special), [np.inf, 0, np.nan, np.inf,
                                                                  np.inf, 0, 0, 1, 1])
    y = _act("tanh", special)
    np.testing.assert_array_equal(y, [1, -1, np.nan, 1, 1, -1, -1, 0, -0.0])
    assert np.signbit(y[-1])
    np.testing.assert_array_equal(_act("sigmoid", special), [1, 0, np.nan, 1, 1, 0, 0, 0.5,
                                                              0.5])


def test_vector_math_matches_the_fma_build_of_vmath():
    """vmath_avx512.h is vmath.h's algorithm with the same FMAs: at "avx512" its results are
    those of the AVX2 build (vmath.h's scalar code, vectorised) bit for bit, on every length
    (the last partial vector goes through masked loads and stores)."""
    if not cpu_native.is_available() or cpu_native.isa() != "avx512":
        pytest.skip("[native] needs a CPU that runs AVX-512")
    r = np.random.default_rng(2)
    x = np.concatenate([r.standard_normal(4000) * 6, r.standard_normal(37) * 100,
                        [np.nan, np.inf, -np.inf, 0.0, -0.0, 0.625, -0.625]]).astype(np.float32)
    try:
        for name in ("tanh", "sigmoid", "exponential"):
            for n in (len(x), 1, 15, 17):
                got = _act(name, x[:n])
                cpu_native.set_isa("avx2")
                want = _act(name, x[:n])
                cpu_native.set_isa(None)
                np.testing.assert_array_equal(got, want, err_msg=f"{name}, {n} elements")
    finally:
        cpu_native.set_isa(None)


# ----------------------------------------------------------------------------- routing
def _layer_call(**kw):
    layer = LSTM(3, **kw)
    layer(T_.random_inputs(2, 4, 3))
    return layer.last_path


def test_routing(monkeypatch):
    monkeypatch.setenv("LSTM_GPU_CPU_PATH", "numpy")
    assert _layer_call() == "numpy"
    monkeypatch.setenv("LSTM_GPU_CPU_PATH", "auto")
    assert _layer_call() == ("cpu-native" if cpu_native.is_available() else "numpy")
    assert _layer_call(activation=lambda v: np.tanh(v)) == "numpy"
    monkeypatch.setenv("LSTM_GPU_CPU_PATH", "native")
    assert _layer_call(recurrent_activation=lambda v: 1 / (1 + np.exp(-v))) == "numpy"
    if cpu_native.is_available():
        assert _layer_call() == "cpu-native"
    monkeypatch.setenv("LSTM_GPU_CPU_PATH", "gpu")
    with pytest.raises(ValueError, match="LSTM_GPU_CPU_PATH"):
        _layer_call()


def test_native_requested_but_unavailable(monkeypatch):
    monkeypatch.setitem(cpu_native._state, "reason", "no compiler (test)")
    monkeypatch.setenv("LSTM_GPU_CPU_PATH", "native")
    with pytest.raises(RuntimeError, match="no compiler \\(test\\)"):
        _layer_call()
    monkeypatch.setenv("LSTM_GPU_CPU_PATH", "auto")
    assert _layer_call() == "numpy"
    assert cpu_native.unavailable_reason() == "no compiler (test)"


def test_set_num_threads_validates():
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="threads"):
            cpu_native.set_num_threads(bad)


@needs_core
def test_calls_from_several_python_threads():
    """The GIL is released during the loop; concurrent calls share the pool safely."""
    weights, x, m, h0, c0, spec, drop = _problem(np.float64, batch=64, steps=6, units=8)
    want = numpy_ref.forward(weights, x, m, h0, c0, spec, drop, False).sequence
    errors = []

    def work():
        try:
            for _ in range(20):
                got = cpu_native.forward(weights, x, m, h0, c0, spec, drop, False).sequence
                np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
