"""Keras weights <-> cuDNN weight space (pure layout code, NumPy) and the path's own checks."""
from __future__ import annotations

import numpy as np
import pytest

from lstm_gpu import activations
from lstm_gpu.errors import PathUnavailable
from lstm_gpu.paths import cudnn as cp_path
from lstm_gpu.paths import cudnn_runtime as runtime
from lstm_gpu.paths import cudnn_weights as cw
from lstm_gpu.paths.base import CellSpec, DropoutMasks, Weights

F, U = 3, 5


def _weights(seed=0, f=F, u=U):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(f, 4 * u)), rng.normal(size=(u, 4 * u)), rng.normal(size=4 * u))


def test_canonical_layout_offsets():
    lay = cw.canonical_layout(F, U)
    assert lay[0].m_offset == 0 and lay[0].m_shape == (U, F)
    assert lay[4].m_offset == 4 * U * F and lay[4].m_shape == (U, U)
    bias0 = 4 * U * F + 4 * U * U
    assert [lay[k].b_offset for k in range(8)] == [bias0 + k * U for k in range(8)]
    assert lay[7].b_offset + U == cw.weight_space_elements(F, U)


def test_packed_space_computes_keras_gates():
    """W_k x + R_k h + bW_k + bR_k from the flat buffer equals Keras's gate block k."""
    k, rk, b = _weights(1)
    lay = cw.canonical_layout(F, U)
    flat = cw.pack_weights(k, rk, b, lay, np.zeros(cw.weight_space_elements(F, U)))
    rng = np.random.default_rng(2)
    x, h = rng.normal(size=F), rng.normal(size=U)
    keras_z = x @ k + h @ rk + b
    for gate in range(4):  # i, f, c, o
        w, r = lay[gate], lay[4 + gate]
        wm = flat[w.m_offset:w.m_offset + U * F].reshape(U, F)
        rm = flat[r.m_offset:r.m_offset + U * U].reshape(U, U)
        bw = flat[w.b_offset:w.b_offset + U]
        br = flat[r.b_offset:r.b_offset + U]
        assert not bw.any()  # the input bias stays zero
        np.testing.assert_allclose(wm @ x + rm @ h + bw + br,
                                   keras_z[gate * U:(gate + 1) * U], rtol=1e-13)


def test_bulk_and_blockwise_packing_agree():
    k, rk, b = _weights(3)
    lay = cw.canonical_layout(F, U)
    n = cw.weight_space_elements(F, U)
    a = cw.pack_weights(k, rk, b, lay, np.full(n, np.nan), canonical=True)
    c = cw.pack_weights(k, rk, b, lay, np.full(n, np.nan), canonical=False)
    np.testing.assert_array_equal(a, c)


def _shuffled_layout():
    """A made-up layout (blocks in another order, with gaps) to exercise the generic code."""
    order = [7, 2, 5, 0, 3, 6, 1, 4]
    blocks, pos = {}, 10
    sizes = {lin: (U, F) if lin < 4 else (U, U) for lin in range(8)}
    for lin in order:
        rows, cols = sizes[lin]
        blocks[lin] = [pos, (rows, cols)]
        pos += rows * cols + 3
    for lin in order[::-1]:
        blocks[lin].append(pos)
        pos += U + 1
    layout = {lin: cw.Block(v[0], v[1], v[2], U) for lin, v in blocks.items()}
    return layout, pos


@pytest.mark.parametrize("generic", [False, True])
def test_unpack_inverts_pack(generic):
    k, rk, b = _weights(4)
    if generic:
        lay, n = _shuffled_layout()
    else:
        lay, n = cw.canonical_layout(F, U), cw.weight_space_elements(F, U)
    flat = cw.pack_weights(k, rk, b, lay, np.zeros(n), canonical=not generic)
    dk, drk, db = cw.unpack_weight_grads(flat, lay, F, U, canonical=not generic)
    np.testing.assert_array_equal(dk, k)
    np.testing.assert_array_equal(drk, rk)
    np.testing.assert_array_equal(db, b)  # the recurrent-bias slot, not bW + bR
    assert dk.flags.c_contiguous and drk.flags.c_contiguous


def _spec(act="tanh", rec="sigmoid", use_bias=True):
    return CellSpec(units=U, activation=activations.get(act),
                    recurrent_activation=activations.get(rec), use_bias=use_bias,
                    zero_output_for_mask=False, implementation=2)


def test_path_refuses_what_it_cannot_run():
    k, rk, b = _weights(5)
    x = np.zeros((2, 1, F))
    h = np.zeros((1, U))
    with pytest.raises(PathUnavailable, match="CuPy"):
        cp_path.forward(Weights(k, rk, b), x, None, h, h, _spec(), None, False)
    with pytest.raises(PathUnavailable) as info:
        cp_path.forward(Weights(k, rk, None), x, None, h, h,
                        _spec("relu", "hard_sigmoid", use_bias=False), None, True)
    msg = str(info.value)
    for reason in ("activation is not tanh", "recurrent_activation is not sigmoid",
                   "use_bias=False"):
        assert reason in msg


@pytest.mark.parametrize("masks,reasons", [
    (DropoutMasks(inputs=np.ones((4, 1, F))), ["dropout with implementation=1 in training"]),
    (DropoutMasks(recurrent=np.ones((4, 1, U))), ["recurrent_dropout in training"]),
    (DropoutMasks(inputs=np.ones((4, 1, F)), recurrent=np.ones((4, 1, U))),
     ["recurrent_dropout in training", "dropout with implementation=1 in training"]),
])
def test_glue_refuses_per_gate_and_recurrent_dropout(masks, reasons):
    import lstm_reference as ref

    k, rk, b = _weights(5)
    h = np.zeros((1, U))
    glue = cp_path.FrontAlignedPath(ref.FrontAlignedCore())
    with pytest.raises(PathUnavailable) as info:
        glue.forward(Weights(k, rk, b), np.zeros((2, 1, F)), None, h, h, _spec(), masks, True)
    assert str(info.value) == "; ".join(reasons)


def test_backward_without_saved():
    with pytest.raises(ValueError, match="training=True"):
        cp_path.backward(None, None, None, None, None)


def test_math_modes(monkeypatch):
    from lstm_gpu.cuda.cudnn import _bindings as B

    monkeypatch.delenv(runtime.ENV_ALLOW_TF32, raising=False)
    assert runtime.math_mode(np.float32) == (B.DATA_FLOAT, B.FMA_MATH)
    assert runtime.math_mode(np.float64) == (B.DATA_DOUBLE, B.DEFAULT_MATH)
    assert runtime.math_mode(np.float16) == (B.DATA_FLOAT, B.TENSOR_OP_MATH)
    monkeypatch.setenv(runtime.ENV_ALLOW_TF32, "1")
    assert runtime.math_mode(np.float32) == (B.DATA_FLOAT, B.DEFAULT_MATH)


def test_module_name():
    assert cp_path.NAME == "cudnn"
