"""The cuDNN path's glue on the host, around the NumPy stand-in of cuDNN (and around the real
`CudnnCore` on the fake device of tests/fake_cudnn.py): never stale weights, zeroed padding,
input dropout, left-padded masks, through the layer, against the NumPy reference path."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lstm_reference as ref
from fake_cudnn import OnFakeDevice, fake_core
from lstm_gpu import LSTM, activations
from lstm_gpu.paths import cudnn as cudnn_path
from lstm_gpu.paths import masking, numpy_ref
from lstm_gpu.paths.base import CellSpec, DropoutMasks

T, B, F, U = 5, 4, 3, 2
MASKS = {
    "right": np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0], [0, 0, 0, 0, 0]]),
    "left": np.array([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 0, 1], [0, 0, 0, 0, 0]]),
    "both": np.array([[0, 1, 1, 0, 0], [0, 0, 1, 1, 1], [1, 1, 0, 0, 0], [0, 0, 0, 1, 0]]),
}


def _spec(zofm=False, units=U):
    return CellSpec(units, activations.get("tanh"), activations.get("sigmoid"), True, zofm, 2)


def _problem(seed, steps=T, batch=B):
    return ref.random_problem(seed, steps, batch, F, U)


def _out_grads(seed, steps=T, batch=B, units=U):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=s) for s in ((batch, units), (steps, batch, units),
                                         (batch, units), (batch, units))]


def _both(glue, w, x, mask, h0, c0, spec, dropout, d):
    """(glue forward, glue grads, reference forward, reference grads)."""
    res = glue.forward(w, x, mask, h0, c0, spec, dropout, True)
    want = numpy_ref.forward(w, x, mask, h0, c0, spec, dropout, True)
    return res, glue.backward(res.saved, *d), want, numpy_ref.backward(want.saved, *d)


def _assert_same(res, g, want, gw, rtol=1e-12):
    for a, b in zip((res.last, res.sequence, res.h, res.c),
                    (want.last, want.sequence, want.h, want.c)):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=1e-13)
    for name in ("inputs", "h0", "c0", "kernel", "recurrent_kernel", "bias"):
        np.testing.assert_allclose(getattr(g, name), getattr(gw, name), rtol=rtol, atol=1e-13,
                                   err_msg=name)


def _glues():
    core, cp, _ = fake_core()
    return {"stand-in": cudnn_path.FrontAlignedPath(ref.FrontAlignedCore()),
            "core": cudnn_path.FrontAlignedPath(OnFakeDevice(core, cp))}


# --- 1. an in-place edit of a weight reaches the next call --------------------------------------


@pytest.mark.parametrize("which", ["stand-in", "core"])
def test_in_place_weight_edit_reaches_the_next_call(which):
    glue = _glues()[which]
    x, h0, c0, w = _problem(1)
    mask = MASKS["left"].T.astype(bool)
    glue.forward(w, x, mask, h0, c0, _spec(), None, False)
    w.kernel[0] += 1.0
    w.recurrent_kernel *= 0.5
    w.bias[...] = -w.bias
    d = _out_grads(2)
    _assert_same(*_both(glue, w, x, mask, h0, c0, _spec(), None, d))


# --- 4. NaN and Inf in the padding never reach a number -----------------------------------------


@pytest.mark.parametrize("kind", ["right", "left", "both"])
def test_non_finite_padding_does_not_reach_outputs_or_gradients(kind):
    glue = _glues()["stand-in"]
    x, h0, c0, w = _problem(3)
    mask = MASKS[kind].T.astype(bool)
    poisoned = x.copy()
    poisoned[~mask] = np.nan
    poisoned[~mask & (np.arange(B)[None, :] % 2 == 1)] = np.inf
    d = _out_grads(4)
    res = glue.forward(w, poisoned, mask, h0, c0, _spec(), None, True)
    g = glue.backward(res.saved, *d)
    clean = np.where(mask[:, :, None], x, 0.0)
    want = numpy_ref.forward(w, clean, mask, h0, c0, _spec(), None, True)
    gw = numpy_ref.backward(want.saved, *d)
    _assert_same(res, g, want, gw)
    assert np.isfinite(g.kernel).all() and np.isfinite(g.inputs).all()


# --- 7. input dropout (implementation 2): x * mask before cuDNN, dx * mask after ------------------


@pytest.mark.parametrize("which", ["stand-in", "core"])
@pytest.mark.parametrize("kind", [None, "right", "left"])
@pytest.mark.parametrize("zofm", [False, True])
def test_input_dropout_matches_the_reference(which, kind, zofm):
    glue = _glues()[which]
    x, h0, c0, w = _problem(5)
    rng = np.random.default_rng(6)
    dropout = DropoutMasks(inputs=(rng.random((1, B, F)) >= 0.4) / 0.6)
    mask = None if kind is None else MASKS[kind].T.astype(bool)
    _assert_same(*_both(glue, w, x, mask, h0, c0, _spec(zofm), dropout, _out_grads(7)))


# --- 8. masks: any one run of valid steps per sample, as a property ----------------------------


@st.composite
def _runs_problem(draw):
    steps, batch = draw(st.integers(1, 6)), draw(st.integers(1, 4))
    starts = np.array([draw(st.integers(0, steps)) for _ in range(batch)])
    lengths = np.array([draw(st.integers(0, steps - s)) for s in starts])
    t = np.arange(steps)[:, None]
    mask = (t >= starts[None]) & (t < (starts + lengths)[None])
    return steps, batch, mask, draw(st.booleans()), draw(st.booleans()), draw(st.integers(0, 99))


@settings(max_examples=40, deadline=None)
@given(_runs_problem())
def test_glue_matches_the_reference_for_any_one_run_masks(problem):
    steps, batch, mask, zofm, with_dropout, seed = problem
    x, h0, c0, w = _problem(seed, steps, batch)
    dropout = None
    if with_dropout:
        rng = np.random.default_rng(seed)
        dropout = DropoutMasks(inputs=(rng.random((1, batch, F)) >= 0.5) * 2.0)
    glue = cudnn_path.FrontAlignedPath(ref.FrontAlignedCore())
    _assert_same(*_both(glue, w, x, mask, h0, c0, _spec(zofm), dropout,
                        _out_grads(seed, steps, batch)), rtol=1e-11)
    runs = masking.mask_runs(mask)
    assert masking.is_one_run_per_row(mask.T)
    assert runs.lengths.tolist() == mask.sum(axis=0).tolist()


@settings(max_examples=40, deadline=None)
@given(_runs_problem())
def test_shift_back_is_the_adjoint_of_shift_to_front(problem):
    steps, batch, mask, *_, seed = problem
    runs = masking.mask_runs(mask)
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=(steps, batch, 2)), rng.normal(size=(steps, batch, 2))
    lhs = np.sum(masking.shift_to_front(a, runs) * b)
    rhs = np.sum(a * masking.shift_back(b, runs))
    assert lhs == pytest.approx(rhs, rel=1e-12, abs=1e-12)


# --- the layer end to end through the glue -----------------------------------------------------


LAYER_CASES = [
    dict(return_sequences=True),
    dict(go_backwards=True, return_sequences=True),
    dict(time_major=True, return_sequences=True),
    dict(go_backwards=True, time_major=True),
    dict(zero_output_for_mask=True, return_sequences=True),
    dict(return_state=True),
    dict(dropout=0.3, seed=11, return_sequences=True),
    dict(dropout=0.3, seed=12, go_backwards=True),
]


def _pad_sequences_mask(batch, steps, lengths):
    """Keras's `pad_sequences` default: padding="pre", so the valid steps come last."""
    return np.arange(steps)[None, :] >= (steps - np.asarray(lengths))[:, None]


def _via(monkeypatch, glue):
    monkeypatch.setattr(LSTM, "_select_path", lambda self, x, m, t: (glue, "cudnn"))


@pytest.mark.parametrize("which", ["stand-in", "core"])
@pytest.mark.parametrize("padding", ["pre", "post"])
@pytest.mark.parametrize("kw", LAYER_CASES)
def test_layer_through_the_glue_matches_the_numpy_path(monkeypatch, kw, padding, which):
    batch, steps, features, units = 5, 7, 3, 4
    rng = np.random.default_rng(13)
    lengths = np.array([7, 1, 4, 0, 6])  # a fully masked row included
    mask = _pad_sequences_mask(batch, steps, lengths)
    if padding == "post":
        mask = mask[:, ::-1].copy()
    x = np.where(mask[..., None], rng.normal(size=(batch, steps, features)), 0.0)
    h0, c0 = rng.normal(size=(batch, units)), rng.normal(size=(batch, units))
    if kw.get("time_major"):
        x, mask = x.transpose(1, 0, 2).copy(), mask.T.copy()
    reference = LSTM(units, dtype="float64", **kw)
    out_ref = reference(x, mask=mask, training=True, initial_state=[h0, c0])
    layer = LSTM(units, dtype="float64", **kw)
    layer.build(x.shape)
    layer.set_weights(reference.get_weights())
    _via(monkeypatch, _glues()[which])
    poisoned = np.where(mask[..., None], x, np.nan)  # padding garbage must not matter
    out = layer(poisoned, mask=mask, training=True, initial_state=[h0, c0])
    assert layer.last_path == "cudnn"
    outs, refs = (list(o) if isinstance(o, tuple) else [o] for o in (out, out_ref))
    for a, b in zip(outs, refs):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)
    d_out = [rng.normal(size=np.shape(o)) for o in refs]
    d_out = tuple(d_out) if kw.get("return_state") else d_out[0]
    got, want = layer.backward(d_out), reference.backward(d_out)
    for key in ("inputs", "kernel", "recurrent_kernel", "bias"):
        np.testing.assert_allclose(got[key], want[key], rtol=1e-11, atol=1e-12, err_msg=key)
    for a, b in zip(got["initial_state"], want["initial_state"]):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-12)


def test_layer_in_place_weight_edit_reaches_the_next_call(monkeypatch):
    rng = np.random.default_rng(14)
    x = rng.normal(size=(3, 4, 2))
    reference = LSTM(3, dtype="float64")
    layer = LSTM(3, dtype="float64")
    reference(x)
    layer.build(x.shape)
    layer.set_weights(reference.get_weights())
    _via(monkeypatch, _glues()["core"])
    layer(x)
    for w in (layer, reference):  # what users and hand-written optimizers do
        w.kernel[...] = w.kernel * 0.5
        w.recurrent_kernel[1] += 0.25
        w.weights[2] -= 0.1
    np.testing.assert_allclose(layer(x), reference(x), rtol=1e-12, atol=1e-13)
