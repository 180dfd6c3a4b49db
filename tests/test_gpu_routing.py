"""GPU routing without a GPU: which path runs, the fallback chain, backward on the same path."""
import types

import pytest

from lstm_gpu import LSTM, dispatch, gpu_routing
from lstm_gpu.errors import CudnnError


def _fake_path(name, fail=None):
    calls = []

    def forward(*args):
        calls.append("forward")
        if fail is not None:
            raise fail
        return name

    def backward(saved, *grads):
        calls.append("backward")
        return name

    return types.SimpleNamespace(NAME=name, forward=forward, backward=backward, calls=calls)


def test_cudnn_runs_and_backward_goes_to_it():
    cudnn, kernels = _fake_path("cudnn"), _fake_path("cuda-kernels")
    routed = gpu_routing.RoutedPath("auto", cudnn, kernels, "cuda-kernels")
    assert routed.forward() == "cudnn" and routed.last_name == "cudnn"
    assert routed.backward(None) == "cudnn"
    assert kernels.calls == []


def test_cudnn_error_under_auto_falls_back_with_a_warning():
    cudnn = _fake_path("cudnn", fail=CudnnError(3, "CUDNN_STATUS_BAD_PARAM"))
    kernels = _fake_path("cuda-kernels")
    routed = gpu_routing.RoutedPath("auto", cudnn, kernels, "cuda-kernels")
    with pytest.warns(dispatch.CudnnFallbackWarning, match="CUDNN_STATUS_BAD_PARAM"):
        assert routed.forward() == "cuda-kernels"
    assert routed.last_name == "cuda-kernels"
    assert routed.backward(None) == "cuda-kernels"


def test_cudnn_error_under_true_raises():
    cudnn = _fake_path("cudnn", fail=CudnnError(3, "CUDNN_STATUS_BAD_PARAM"))
    routed = gpu_routing.RoutedPath(True, cudnn, _fake_path("cuda-kernels"), "cuda-kernels")
    with pytest.raises(CudnnError):
        routed.forward()


def test_callable_activation_routes_to_the_cupy_reference():
    layer = LSTM(3, activation=lambda z: z)
    path, name = gpu_routing._kernel_path(layer)
    assert name == "cupy-reference" and path.NAME == "numpy"
    path, name = gpu_routing._kernel_path(LSTM(3, recurrent_activation="relu"))
    assert name == "cuda-kernels"


def test_ineligibility_lists_the_layers_rules():
    layer = LSTM(3, activation="relu", unroll=True, recurrent_dropout=0.2)
    reasons = layer.cudnn_ineligibility(training=True)
    for reason in (dispatch.REASON_ACTIVATION, dispatch.REASON_UNROLL,
                   dispatch.REASON_RECURRENT_DROPOUT):
        assert reason in reasons
    assert dispatch.REASON_RECURRENT_DROPOUT not in layer.cudnn_ineligibility(training=False)


def test_left_padded_masks_and_input_dropout_keep_cudnn(monkeypatch):
    import numpy as np

    monkeypatch.setitem(dispatch._avail, "reason", None)
    lengths = np.array([5, 2, 0, 3])
    left = np.arange(5)[None, :] >= (5 - lengths)[:, None]  # Keras's pad_sequences default
    layer = LSTM(4)
    assert layer.cudnn_ineligibility(mask=left, training=True) == []
    assert layer.cudnn_ineligibility(mask=left[:, ::-1], training=True) == []  # right-padded
    holes = left.copy()
    holes[0, 2] = False
    assert layer.cudnn_ineligibility(mask=holes) == [dispatch.REASON_MASK]
    assert LSTM(4, dropout=0.3).cudnn_ineligibility(training=True) == []
    assert LSTM(4, dropout=0.3, implementation=1).cudnn_ineligibility(training=True) == [
        dispatch.REASON_DROPOUT]
    assert LSTM(4, dropout=0.3, recurrent_dropout=0.2).cudnn_ineligibility(training=True) == [
        dispatch.REASON_DROPOUT, dispatch.REASON_RECURRENT_DROPOUT]  # forces implementation 1
    time_major = LSTM(4, time_major=True)
    assert time_major.cudnn_ineligibility(mask=left.T, training=True) == []
