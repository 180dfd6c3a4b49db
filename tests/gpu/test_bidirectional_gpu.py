"""`Bidirectional` on CuPy input: each direction on the path the dispatcher picks, compared
with the same wrapper on NumPy input (float64: 1e-10, DESIGN.md section 6). The parity cases
are lstm-gpu-check's (`lstm_gpu.check.grid`).

Skipped without a CUDA device (cuDNN cases also without cuDNN).
"""
from __future__ import annotations

import numpy as np
import pytest

from lstm_gpu import LSTM, Bidirectional
from lstm_gpu._xp import gpu_available
from lstm_gpu.check import grid
from lstm_gpu.check.compute import check_layer_case, gpu_space, reference_layer
from lstm_gpu.check.data import layer_data

try:
    from tests import lstm_testlib as T_
    from tests import bidirectional_testlib as BT
except ImportError:  # tests/ itself on sys.path
    import lstm_testlib as T_
    import bidirectional_testlib as BT

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(
    not gpu_available(), reason="needs a CUDA device (CuPy sees none)")]

B, T, F, U = 5, 7, 3, 4
RTOL = 1e-10


def _pair(use_cudnn, merge_mode, mask_kind, **config):
    """(numpy wrapper, cupy wrapper, x, mask, init) with the same weights."""
    w = BT.both_weights(F, U)
    layers = [Bidirectional(LSTM(U, dtype="float64", use_cudnn=use_cudnn, **config),
                            merge_mode=merge_mode, dtype="float64") for _ in range(2)]
    for layer in layers:
        T_.built(layer, (B, T, F), w)
    return layers, T_.random_inputs(B, T, F), T_.make_mask(mask_kind, B, T), \
        T_.random_states(B, U) + T_.random_states(B, U, seed=7)


# lstm-gpu-check's Bidirectional layer cases (every merge mode and mask kind in the "full"
# tier: return_sequences, return_state, initial states), one list with the command's.
CASES = [c for c in grid.layer_cases("full", group="layer") if c.wrapper == "bidirectional"]


@pytest.mark.parametrize("use_cudnn,expected_path", [
    pytest.param(True, "cudnn", marks=pytest.mark.cudnn),
    (False, "cuda-kernels"),
])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_gpu_matches_numpy_forward_and_backward(use_cudnn, expected_path, case):
    """Both directions on the expected path, every output and gradient against the float64
    NumPy wrapper on the same data."""
    data = layer_data(case, "float64")
    result = check_layer_case(case, data, gpu_space(), reference_layer(case, data),
                              use_cudnn=use_cudnn, expected=expected_path)
    assert result.passed, result.describe()


def test_holes_keep_both_directions_off_cudnn():
    import cupy as cp

    (cpu, gpu), x, mask, _ = _pair("auto", "sum", "holes")
    assert gpu.cudnn_ineligibility(mask=mask)
    got = gpu(cp.asarray(x), mask=cp.asarray(mask))
    assert gpu.last_path == ("cuda-kernels", "cuda-kernels")
    T_.assert_close(got, cpu(x, mask=mask), rtol=RTOL)


def test_optimizer_step_on_the_gpu_keeps_weights_there():
    import cupy as cp

    from lstm_gpu.optimizers import Adam

    (_, gpu), x, _, _ = _pair(False, "concat", "none")
    out = gpu(cp.asarray(x), training=True)
    Adam().apply(gpu, gpu.backward(cp.ones_like(out)))
    assert all(isinstance(w, cp.ndarray) for w in gpu.weights)
    assert np.all(np.isfinite(np.concatenate([w.ravel() for w in gpu.get_weights()])))
