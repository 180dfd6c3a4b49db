"""`CudnnCore` on the host: the real runtime code against a NumPy model of CuPy and cuDNN
(tests/fake_cudnn.py), plus its pure decisions (operands, streams, threads, sizes)."""
from __future__ import annotations

import gc
import threading
import types
import warnings

import numpy as np
import pytest

import lstm_reference as ref
from fake_cudnn import FakeCupy, OnFakeDevice, fake_core
from lstm_testlib import run_in_thread
from lstm_gpu import activations, dispatch, gpu_routing
from lstm_gpu.errors import CudnnError, CudnnNotAvailable, PathUnavailable
from lstm_gpu.paths import cudnn as cudnn_path
from lstm_gpu.paths import cudnn_runtime as rt
from lstm_gpu.paths import cudnn_weights as cw
from lstm_gpu.paths.base import CellSpec, DropoutMasks, Weights

T, B, F, U = 6, 4, 3, 5
LEFT = (np.arange(T)[:, None] >= np.array([0, 2, 5, 6])[None, :])  # (T, B), last row empty


def _problem(seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(T, B, F)).astype(dtype)
    h0, c0 = (rng.normal(size=(B, U)).astype(dtype) * 0.5 for _ in range(2))
    w = Weights(*(rng.normal(size=s).astype(dtype) * 0.4 for s in ((F, 4 * U), (U, 4 * U),
                                                                  (4 * U,))))
    return x, h0, c0, w


def _spec(zofm=False):
    return CellSpec(U, activations.get("tanh"), activations.get("sigmoid"), True, zofm, 2)


def _shuffled_layout():
    order, blocks, pos = [6, 1, 4, 3, 0, 7, 2, 5], {}, 7
    for lin in order:
        shape = (U, F) if lin < 4 else (U, U)
        blocks[lin] = [pos, shape]
        pos += shape[0] * shape[1] + 2
    for lin in order[::-1]:
        blocks[lin].append(pos)
        pos += U + 3
    blocks = {lin: cw.Block(v[0], v[1], v[2], U) for lin, v in blocks.items()}
    return cw.weight_layout(blocks, pos, F, U)


def _grads(g):
    return [g.inputs, g.h0, g.c0, g.kernel, g.recurrent_kernel, g.bias]


# --- the core, end to end on the fake device -------------------------------------------------


@pytest.mark.parametrize("layout", [None, "shuffled"])
@pytest.mark.parametrize("mask", [None, "right", "left"])
@pytest.mark.parametrize("dropout", [False, True])
def test_core_on_fake_device_matches_reference(layout, mask, dropout):
    lay = _shuffled_layout() if layout else None
    core, cp, api = fake_core(lay)
    assert core.weight_layout(cp.empty((1, 1, F)), U).canonical == (layout is None)
    glue = cudnn_path.FrontAlignedPath(OnFakeDevice(core, cp))
    x, h0, c0, w = _problem(1)
    m = {None: None, "right": LEFT[::-1].copy(), "left": LEFT}[mask]
    rng = np.random.default_rng(2)
    masks = None
    if dropout:
        masks = DropoutMasks(inputs=(rng.random((1, B, F)) > 0.3) / 0.7)
    res = glue.forward(w, x, m, h0, c0, _spec(), masks, True)
    want = ref_forward = cudnn_path.FrontAlignedPath(ref.FrontAlignedCore()).forward(
        w, x, m, h0, c0, _spec(), masks, True)
    for a, b in zip((res.last, res.sequence, res.h, res.c),
                    (want.last, want.sequence, want.h, want.c)):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-14)
    d = [rng.normal(size=s) for s in ((B, U), (T, B, U), (B, U), (B, U))]
    got = glue.backward(res.saved, *d)
    exp = cudnn_path.FrontAlignedPath(ref.FrontAlignedCore()).backward(ref_forward.saved, *d)
    for a, b in zip(_grads(got), _grads(exp)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)
    names = [c["name"] for c in api.calls]
    assert names == ["temp_space_sizes", "rnn_forward", "temp_space_sizes",
                     "rnn_backward_data", "rnn_backward_weights"]


def test_inference_forward_has_no_reserve_and_no_token():
    core, cp, api = fake_core()
    x, h0, c0, w = _problem(3)
    lay = core.weight_layout(cp.asarray(x), U)
    y, hy, cy, token = core.forward(cp.asarray(cw.pack(w, lay, x.dtype)), cp.asarray(x),
                                    np.full(B, T, np.int32), cp.asarray(h0), cp.asarray(c0),
                                    False)
    assert token is None
    call = api.calls[-1]
    assert call["name"] == "rnn_forward" and call["mode"] == 0 and call["reserve"] == 0


# --- 3. the workspace is queried again before backward ---------------------------------------


def _forward(core, cp, x, h0, c0, w, lengths=None):
    lay = core.weight_layout(cp.asarray(x), U)
    lengths = np.full(B, T, np.int32) if lengths is None else lengths
    return core.forward(cp.asarray(cw.pack(w, lay, x.dtype)), cp.asarray(x), lengths,
                        cp.asarray(h0), cp.asarray(c0), True)


def test_backward_uses_a_fresh_workspace_query_and_the_forward_reserve():
    core, cp, api = fake_core()
    x, h0, c0, w = _problem(4)
    *_, token = _forward(core, cp, x, h0, c0, w)
    api.work_bytes = 3 * 4096  # the library asks for more now (older cuDNN did in backward)
    d = cp.asarray(np.ones((T, B, U)))
    core.backward(token, d, cp.zeros((B, U)), cp.zeros((B, U)))
    bwd = [c for c in api.calls if c["name"].startswith("rnn_backward")]
    assert [c["work"] for c in bwd] == [3 * 4096] * 2
    assert [c["reserve"] for c in bwd] == [4096] * 2  # the forward's reserve space
    assert api.calls[2]["name"] == "temp_space_sizes" and api.calls[2]["mode"] == 1


def test_backward_refuses_a_reserve_bigger_than_the_forward_kept():
    core, cp, api = fake_core()
    x, h0, c0, w = _problem(5)
    *_, token = _forward(core, cp, x, h0, c0, w)
    api.reserve_bytes = 8192
    with pytest.raises(RuntimeError, match="reserve space"):
        core.backward(token, cp.zeros((T, B, U)), cp.zeros((B, U)), cp.zeros((B, U)))


def test_backward_space_sizes():
    assert rt.backward_space_sizes((100, 40), 64) == (100, 64)
    with pytest.raises(RuntimeError):
        rt.backward_space_sizes((100, 65), 64)


# --- 5. operands: C-contiguous, the data dtype, 16-byte aligned ------------------------------


def test_needs_copy():
    assert not rt.needs_copy(512, True, True)
    assert not rt.needs_copy(16 * 7, True, True)
    assert rt.needs_copy(512 + 4, True, True)  # e.g. float32 x[1:] with B * F = 1 (mod 4)
    assert rt.needs_copy(512, False, True)
    assert rt.needs_copy(512, True, False)


def test_misaligned_view_is_copied_and_aligned_arrays_are_not():
    core, cp, api = fake_core()
    x, h0, c0, w = _problem(6, np.float32)
    big = cp.asarray(np.concatenate([x[:1], x]))  # (T + 1, B, F): big[1:] starts 48 bytes in
    big1 = cp.asarray(np.ones((T + 1, 1, F), np.float32))  # big1[1:] starts 12 bytes in
    assert big[1:].data.ptr % 16 == 0 and big1[1:].data.ptr % 16 == 12
    _forward(core, cp, big[1:], h0, c0, w)
    assert api.calls[-1]["x"] == big[1:].data.ptr  # aligned view: passed as it is
    x1 = big1[1:]
    lay = core.weight_layout(x1, U)
    w1 = Weights(*(a.astype(np.float32) for a in (w.kernel, w.recurrent_kernel, w.bias)))
    y, *_ = core.forward(cp.asarray(cw.pack(w1, lay, np.float32)), x1,
                         np.full(1, T, np.int32), cp.asarray(h0[:1]), cp.asarray(c0[:1]),
                         False)  # the fake raises MISALIGNED_POINTER for an unaligned x
    assert api.calls[-1]["x"] != x1.data.ptr


def test_device_operand_converts_dtype_and_layout():
    cp = FakeCupy()
    a = cp.asarray(np.arange(12.0).reshape(3, 4))
    assert rt.device_operand(cp, a, np.float64) is a
    t = rt.device_operand(cp, a.T, np.float64)
    assert t.flags.c_contiguous and np.array_equal(t, a.T)
    f = rt.device_operand(cp, a, np.float32)
    assert f.dtype == np.float32 and np.array_equal(f, a)


# --- 2. streams -------------------------------------------------------------------------------


class _Stream:
    def __init__(self, ptr):
        self.ptr = ptr


def test_stream_keyed_cache_never_shares_between_streams():
    cache = rt.StreamKeyedCache(size=3)
    made = []

    def make():
        made.append(object())
        return made[-1]

    a, b = _Stream(1), _Stream(2)
    va = cache.get(a, "k", make)
    assert cache.get(a, "k", make) is va and len(made) == 1
    vb = cache.get(b, "k", make)
    assert vb is not va and len(made) == 2
    a_again = _Stream(1)  # another stream object with a's handle value (a new stream)
    assert cache.get(a_again, "k", make) is not va
    del a, a_again
    gc.collect()
    c = _Stream(1)  # a's handle reused after a died
    assert cache.get(c, "k", make) not in (va,) and len(made) == 4
    for key in range(5):
        cache.get(c, key, make)
    assert len(cache) == 3


def test_ordered_after_events_both_ways():
    cp = FakeCupy()
    a, b = cp.null, cp.new_stream()
    with rt.ordered_after(a, a, cp.cuda.Event):
        cp.log.append("body")
    assert cp.log == ["body"]
    cp.log.clear()
    with rt.ordered_after(a, b, cp.cuda.Event):
        cp.log.append("body")
    assert cp.log == [("record", a.ptr), ("wait", b.ptr, a.ptr), "body",
                      ("record", b.ptr), ("wait", a.ptr, b.ptr)]
    cp.log.clear()
    with pytest.raises(KeyError):
        with rt.ordered_after(a, b, cp.cuda.Event):
            raise KeyError("cuDNN failed half way")
    assert cp.log[-1] == ("wait", a.ptr, b.ptr)  # the forward stream still waits


def test_each_stream_gets_its_own_device_lengths_and_the_handle_follows_the_stream():
    core, cp, api = fake_core()
    x, h0, c0, w = _problem(7)
    ctx = core.contexts.get(0)
    lengths = np.array([6, 2, 1, 4], np.int32)
    _forward(core, cp, x, h0, c0, w, lengths)
    on_null = ctx.device_lengths(cp.null, lengths)
    stream = cp.new_stream()
    with stream:
        _forward(core, cp, x, h0, c0, w, lengths)
        on_stream = ctx.device_lengths(stream, lengths)
    assert on_null is not on_stream and np.array_equal(on_null, on_stream)
    assert ctx.device_lengths(cp.null, lengths) is on_null  # reused on its own stream
    fwd = [c for c in api.calls if c["name"] == "rnn_forward"]
    assert [c["stream"] for c in fwd] == [0, stream.ptr]


def test_backward_on_another_stream_is_ordered_with_events():
    core, cp, api = fake_core()
    x, h0, c0, w = _problem(8)
    fwd_stream = cp.new_stream()
    with fwd_stream:
        *_, token = _forward(core, cp, x, h0, c0, w)
    bwd_stream = cp.new_stream()
    with bwd_stream:
        cp.log.clear()
        core.backward(token, cp.zeros((T, B, U)), cp.zeros((B, U)), cp.zeros((B, U)))
    assert cp.log == [("record", fwd_stream.ptr), ("wait", bwd_stream.ptr, fwd_stream.ptr),
                      ("record", bwd_stream.ptr), ("wait", fwd_stream.ptr, bwd_stream.ptr)]
    assert {c["stream"] for c in api.calls if c["name"].startswith("rnn_backward")} == {
        bwd_stream.ptr}
    *_, token = _forward(core, cp, x, h0, c0, w)
    cp.log.clear()
    core.backward(token, cp.zeros((T, B, U)), cp.zeros((B, U)), cp.zeros((B, U)))
    assert cp.log == []  # same stream: no events


# --- 6. threads ---------------------------------------------------------------------------------


def test_thread_contexts_are_per_thread_and_device():
    made = []
    contexts = rt.ThreadContexts(lambda d: made.append((threading.get_ident(), d)) or made[-1])
    assert contexts.get(0) is contexts.get(0)
    assert contexts.get(1) != contexts.get(0)
    other = []
    t = threading.Thread(target=lambda: other.append(contexts.get(0)))
    t.start()
    t.join()
    assert other[0] != contexts.get(0) and len(made) == 3


def test_backward_on_another_thread_uses_that_threads_handle_and_descriptors():
    core, cp, api = fake_core()
    x, h0, c0, w = _problem(9)
    *_, token = _forward(core, cp, x, h0, c0, w)

    def backward_here() -> int:  # the fake raises on another thread's handle or descriptor
        core.backward(token, cp.asarray(np.ones((T, B, U))), cp.zeros((B, U)), cp.zeros((B, U)))
        return threading.get_ident()

    ident = run_in_thread(backward_here)
    fwd, *bwd = [c for c in api.calls if c["name"].startswith("rnn")]
    assert {c["thread"] for c in bwd} == {ident} and fwd["thread"] != ident
    assert {id(c["handle"]) for c in bwd} != {id(fwd["handle"])}


def test_backward_runs_once():
    core, cp, api = fake_core()
    x, h0, c0, w = _problem(10)
    *_, token = _forward(core, cp, x, h0, c0, w)
    args = (cp.zeros((T, B, U)), cp.zeros((B, U)), cp.zeros((B, U)))
    core.backward(token, *args)
    with pytest.raises(RuntimeError, match="once"):
        core.backward(token, *args)


# --- 6. a failed cudnnCreate is remembered per device -----------------------------------------


@pytest.fixture
def failing_cudnn_create(monkeypatch):
    """cudnnCreate fails (counted) on every device; CuPy's Device is a no-op context."""
    from lstm_gpu import _xp
    from lstm_gpu.cuda.cudnn import api

    attempts = []

    def handle(device_id=-1):
        attempts.append(device_id)
        raise CudnnError(1001, "CUDNN_STATUS_NOT_INITIALIZED", "no driver", "cudnnCreate")

    fake_cupy = types.SimpleNamespace(cuda=types.SimpleNamespace(
        Device=lambda d: FakeCupy().cuda.Device(d)))
    monkeypatch.setattr(api, "Handle", handle)
    monkeypatch.setattr(api, "_failed_handles", {})
    monkeypatch.setattr(api, "_local", threading.local())
    monkeypatch.setattr(_xp, "cupy_module", lambda: fake_cupy)
    monkeypatch.setitem(dispatch._avail, "reason", None)
    return attempts


def test_failed_cudnn_create_is_tried_once_per_device(failing_cudnn_create):
    from lstm_gpu.cuda.cudnn import api

    assert api.handle_failure(3) is None
    with pytest.raises(CudnnError):
        api.get_handle(3)
    for _ in range(3):
        with pytest.raises(CudnnNotAvailable, match="cudnnCreate failed on device 3"):
            api.get_handle(3)
    assert failing_cudnn_create == [3]
    assert "CUDNN_STATUS_NOT_INITIALIZED" in api.handle_failure(3)
    with pytest.raises(CudnnError):
        api.get_handle(4)  # another device is tried on its own
    assert failing_cudnn_create == [3, 4]
    reasons = dispatch.cudnn_ineligibility(
        activation=activations.get("tanh"), recurrent_activation=activations.get("sigmoid"),
        use_bias=True, unroll=False, dropout=0, recurrent_dropout=0, training=False,
        mask=None, dtype=np.float32, device_id=3)
    assert len(reasons) == 1 and reasons[0].startswith(
        "cuDNN not available: cudnnCreate failed on device 3")
    assert dispatch.cudnn_unavailable_reason(5) is None


def test_failed_cudnn_create_warns_once_then_falls_back_quietly(failing_cudnn_create,
                                                                 monkeypatch):
    monkeypatch.setattr(cudnn_path, "_check_supported", lambda *a: None)
    monkeypatch.setattr(cudnn_path, "_path", cudnn_path.FrontAlignedPath(rt.CudnnCore()))
    from lstm_gpu.cuda import cudnn as binding

    monkeypatch.setattr(binding, "unavailable_reason", lambda: None)
    cp = FakeCupy()
    x, h0, c0, w = _problem(11)
    kernels = types.SimpleNamespace(forward=lambda *a: "kernels", backward=None)
    routed = gpu_routing.RoutedPath("auto", cudnn_path, kernels, "cuda-kernels")
    args = (w, cp.asarray(x), None, cp.asarray(h0), cp.asarray(c0), _spec(), None, False)
    with pytest.warns(dispatch.CudnnFallbackWarning, match="NOT_INITIALIZED"):
        assert routed.forward(*args) == "kernels"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(3):
            assert routed.forward(*args) == "kernels"
    with pytest.raises(PathUnavailable, match="cudnnCreate failed on device 0"):
        cudnn_path.forward(*args)
    assert failing_cudnn_create == [0]
