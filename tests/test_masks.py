"""Mask helpers (lstm_gpu.paths.masking) and the cuDNN path's mask glue, with NumPy only."""
from __future__ import annotations

import numpy as np
import pytest

import lstm_reference as ref
from lstm_gpu import activations
from lstm_gpu.errors import PathUnavailable
from lstm_gpu.paths import cudnn as cudnn_path
from lstm_gpu.paths import masking
from lstm_gpu.paths.base import CellSpec

RIGHT = np.array([[1, 1, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0]], bool)  # (B, T)


def _rows(*rows):
    return np.array(rows, bool)


# --- the dispatcher's mask tests ----------------------------------------------------------


def test_is_one_run_per_row():
    assert masking.is_one_run_per_row(RIGHT)
    assert masking.is_one_run_per_row(_rows([0, 0, 0], [1, 1, 1]))  # fully masked counts
    assert masking.is_one_run_per_row(np.ones((2, 1), bool))
    assert masking.is_one_run_per_row(_rows([1, 1, 0], [0, 1, 1]))  # a left-padded row
    assert masking.is_one_run_per_row(_rows([0, 1, 1, 0], [0, 0, 0, 1]))  # padded both sides
    assert not masking.is_one_run_per_row(_rows([1, 0, 1]))  # hole
    assert not masking.is_one_run_per_row(_rows([1, 1, 1], [0, 1, 0], [1, 0, 1]))
    with pytest.raises(ValueError):
        masking.is_one_run_per_row(np.ones(3, bool))


def test_has_fully_masked_sample():
    assert not masking.has_fully_masked_sample(RIGHT)
    assert masking.has_fully_masked_sample(_rows([1, 0], [0, 0]))


# --- runs ---------------------------------------------------------------------------------


def test_mask_runs_right_left_and_mixed():
    r = masking.mask_runs(RIGHT.T)
    assert r.starts.tolist() == [0, 0, 0] and r.lengths.tolist() == [3, 4, 1]
    assert r.front_aligned and not r.all_full and not r.any_empty
    left = RIGHT[:, ::-1].T  # what go_backwards makes of a right-padded mask
    r = masking.mask_runs(left)
    assert r.starts.tolist() == [1, 0, 3] and r.lengths.tolist() == [3, 4, 1]
    assert not r.front_aligned
    r = masking.mask_runs(_rows([0, 1, 1, 0], [0, 0, 0, 0]).T)
    assert r.starts.tolist() == [1, 4] and r.lengths.tolist() == [2, 0]
    assert r.any_empty and not r.all_empty and r.kernel_lengths().tolist() == [2, 1]


def test_mask_runs_rejects_holes():
    assert masking.mask_runs(_rows([1, 0, 1, 0]).T) is None
    assert masking.mask_runs(_rows([1, 1, 1], [0, 1, 0], [1, 1, 0]).T) is not None


def test_full_runs():
    r = masking.full_runs(5, 2)
    assert r.all_full and r.front_aligned and r.kernel_lengths().tolist() == [5, 5]


# --- shifting and restoring: values and adjoints ----------------------------------------------


MASKS = {
    "right": RIGHT.T,
    "left": RIGHT[:, ::-1].T,
    "mixed": _rows([0, 1, 1, 0], [1, 1, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]).T,
}


@pytest.mark.parametrize("name", list(MASKS))
def test_shift_round_trip(name):
    runs = masking.mask_runs(MASKS[name])
    rng = np.random.default_rng(0)
    a = rng.normal(size=MASKS[name].shape + (3,))
    front = masking.shift_to_front(a, runs)
    back = masking.shift_back(front, runs)
    np.testing.assert_array_equal(back, np.where(MASKS[name][:, :, None], a, 0))
    for b in range(a.shape[1]):
        s, n = runs.starts[b], runs.lengths[b]
        np.testing.assert_array_equal(front[:n, b], a[s:s + n, b])
        assert not front[n:, b].any()


@pytest.mark.parametrize("zofm", [False, True])
@pytest.mark.parametrize("name", list(MASKS))
def test_restore_outputs_and_route_are_adjoint(name, zofm):
    mask = MASKS[name]
    runs = masking.mask_runs(mask)
    rng = np.random.default_rng(1)
    steps, batch = mask.shape
    y = rng.normal(size=(steps, batch, 2))
    y = masking.shift_to_front(y, runs)  # y is only read inside each run
    h = rng.normal(size=(batch, 2))
    dseq, dlast = rng.normal(size=y.shape), rng.normal(size=h.shape)
    seq = masking.restore_outputs(y, h, runs, zofm)
    dy, dh = masking.route_output_grads(dseq, dlast, runs, zofm, like=y)
    lhs = np.sum(seq * dseq) + np.sum(seq[-1] * dlast)
    rhs = np.sum(y * dy) + np.sum(h * dh)
    assert lhs == pytest.approx(rhs, rel=1e-12)
    assert not any(dy[runs.lengths[b]:, b].any() for b in range(batch))


def test_restore_outputs_keras_values():
    runs = masking.mask_runs(_rows([0, 1, 1, 0], [0, 0, 0, 0]).T)
    y = np.zeros((4, 2, 1))
    y[0, 0], y[1, 0] = 5.0, 7.0  # front-aligned outputs of sample 0
    h = np.array([[7.0], [9.0]])
    seq = masking.restore_outputs(y, h, runs, False)[:, :, 0]
    assert seq[:, 0].tolist() == [0, 5, 7, 7]  # leading zeros, run, carried last output
    assert seq[:, 1].tolist() == [0, 0, 0, 0]  # fully masked: zeros
    seq = masking.restore_outputs(y, h, runs, True)[:, :, 0]
    assert seq[:, 0].tolist() == [0, 5, 7, 0]


def test_route_output_grads_none_inputs():
    runs = masking.mask_runs(RIGHT.T)
    like = np.zeros((4, 3, 2))
    dy, dh = masking.route_output_grads(None, None, runs, False, like)
    assert not dy.any() and not dh.any()


def test_select_states_and_split():
    runs = masking.mask_runs(_rows([1, 0], [0, 0]).T)
    run, init = np.ones((2, 3)), np.full((2, 3), 2.0)
    np.testing.assert_array_equal(masking.select_states(run, init, runs)[:, 0], [1, 2])
    to_run, to_init = masking.split_state_grad(np.full((2, 3), 3.0), runs)
    assert to_run[:, 0].tolist() == [3, 0] and to_init[:, 0].tolist() == [0, 3]


# --- the reference itself: finite differences ---------------------------------------------


_problem = ref.random_problem


def _spec(units, zofm=False):
    return CellSpec(units=units, activation=activations.get("tanh"),
                    recurrent_activation=activations.get("sigmoid"), use_bias=True,
                    zero_output_for_mask=zofm, implementation=2)


@pytest.mark.parametrize("zofm", [False, True])
def test_reference_backward_matches_finite_differences(zofm):
    x, h0, c0, w = _problem(2)
    mask = _rows([1, 1, 1, 0, 0], [0, 0, 1, 1, 1], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1]).T
    rng = np.random.default_rng(3)
    dseq, dl, dh, dc = (rng.normal(size=s) for s in [(5, 4, 2), (4, 2), (4, 2), (4, 2)])

    def loss(x_, h0_, c0_, k_, rk_, b_):
        last, seq, h, c, _ = ref.forward(x_, mask, h0_, c0_, k_, rk_, b_, zofm)
        return np.sum(seq * dseq) + np.sum(last * dl) + np.sum(h * dh) + np.sum(c * dc)

    args = [x, h0, c0, w.kernel, w.recurrent_kernel, w.bias]
    *_, cache = ref.forward(x, mask, h0, c0, w.kernel, w.recurrent_kernel, w.bias, zofm)
    g = ref.backward(cache, dl, dseq, dh, dc)
    names = ["inputs", "h0", "c0", "kernel", "recurrent_kernel", "bias"]
    eps = 1e-6
    for k, name in enumerate(names):
        num = np.zeros_like(args[k])
        for idx in np.ndindex(args[k].shape):
            plus = [a.copy() for a in args]
            minus = [a.copy() for a in args]
            plus[k][idx] += eps
            minus[k][idx] -= eps
            num[idx] = (loss(*plus) - loss(*minus)) / (2 * eps)
        np.testing.assert_allclose(g[name], num, rtol=1e-6, atol=1e-8, err_msg=name)


# --- the cuDNN path's glue around a NumPy stand-in for cuDNN ------------------------------


GLUE_MASKS = {
    "none": None,
    "right": _rows([1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0], [1, 1, 0, 0, 0]).T,
    "left": _rows([0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 0, 1], [0, 0, 0, 1, 1]).T,
    "fully_masked": _rows([1, 1, 1, 0, 0], [0, 0, 0, 0, 0], [1, 0, 0, 0, 0],
                          [0, 0, 0, 0, 0]).T,
    "left_fully_masked": _rows([0, 0, 0, 0, 0], [0, 0, 0, 1, 1], [1, 1, 1, 1, 1],
                               [0, 1, 1, 1, 1]).T,
    "all_masked": np.zeros((5, 4), bool),
    "all_valid": np.ones((5, 4), bool),
}


@pytest.mark.parametrize("zofm", [False, True])
@pytest.mark.parametrize("name", list(GLUE_MASKS))
def test_cudnn_glue_matches_reference(name, zofm):
    mask = GLUE_MASKS[name]
    x, h0, c0, w = _problem(4)
    core = ref.FrontAlignedCore()
    glue = cudnn_path.FrontAlignedPath(core)
    res = glue.forward(w, x, mask, h0, c0, _spec(2, zofm), None, True)
    last, seq, h, c, cache = ref.forward(x, mask, h0, c0, w.kernel, w.recurrent_kernel,
                                         w.bias, zofm)
    for got, want in ((res.last, last), (res.sequence, seq), (res.h, h), (res.c, c)):
        np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-15)
    if name == "all_masked":
        assert core.calls == []  # nothing reached the "cuDNN" core
    rng = np.random.default_rng(5)
    dseq, dl, dh, dc = (rng.normal(size=s) for s in [(5, 4, 2), (4, 2), (4, 2), (4, 2)])
    got = glue.backward(res.saved, dl, dseq, dh, dc)
    want = ref.backward(cache, dl, dseq, dh, dc)
    for field, key in (("inputs", "inputs"), ("h0", "h0"), ("c0", "c0"), ("kernel", "kernel"),
                       ("recurrent_kernel", "recurrent_kernel"), ("bias", "bias")):
        np.testing.assert_allclose(getattr(got, field), want[key], rtol=1e-12, atol=1e-14,
                                   err_msg=field)


def test_cudnn_glue_partial_grads():
    x, h0, c0, w = _problem(6)
    mask = GLUE_MASKS["left"]
    glue = cudnn_path.FrontAlignedPath(ref.FrontAlignedCore())
    res = glue.forward(w, x, mask, h0, c0, _spec(2), None, True)
    *_, cache = ref.forward(x, mask, h0, c0, w.kernel, w.recurrent_kernel, w.bias)
    dl = np.ones((4, 2))
    got = glue.backward(res.saved, dl, None, None, None)
    want = ref.backward(cache, dl)
    np.testing.assert_allclose(got.inputs, want["inputs"], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(got.kernel, want["kernel"], rtol=1e-12, atol=1e-14)


def test_cudnn_glue_rejects_non_contiguous_mask():
    x, h0, c0, w = _problem(7)
    mask = GLUE_MASKS["right"].copy()
    mask[4, 0] = True  # sample 0 becomes [1, 1, 1, 0, 1]: a hole
    with pytest.raises(PathUnavailable, match="mask has holes"):
        cudnn_path.FrontAlignedPath(ref.FrontAlignedCore()).forward(w, x, mask, h0, c0,
                                                                     _spec(2), None, False)
