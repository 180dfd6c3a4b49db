"""Dispatcher rules, reason strings, use_cudnn semantics and run-time fallback."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from lstm_gpu import activations, dispatch
from lstm_gpu.errors import CudnnError, PathUnavailable

TANH, SIGMOID = activations.get("tanh"), activations.get("sigmoid")


@pytest.fixture
def cudnn_loads(monkeypatch):
    monkeypatch.setitem(dispatch._avail, "reason", None)


def _reasons(**overrides):
    kw = dict(activation=TANH, recurrent_activation=SIGMOID, use_bias=True, unroll=False,
              dropout=0.0, recurrent_dropout=0.0, training=False, mask=None, dtype=np.float32)
    kw.update(overrides)
    return dispatch.cudnn_ineligibility(**kw)


def test_eligible(cudnn_loads):
    assert _reasons() == []
    assert _reasons(activation=activations.get(np.tanh)) == []  # library function by name


@pytest.mark.parametrize("overrides,reason", [
    (dict(activation=activations.get("relu")), "activation is not tanh"),
    (dict(activation=activations.get(lambda v: v)), "activation is not tanh"),
    (dict(recurrent_activation=activations.get("hard_sigmoid")),
     "recurrent_activation is not sigmoid"),
    (dict(dropout=0.2, training=True, implementation=1),
     "dropout with implementation=1 in training"),
    (dict(recurrent_dropout=0.2, training=True), "recurrent_dropout in training"),
    (dict(unroll=True), "unroll=True"),
    (dict(use_bias=False), "use_bias=False"),
    (dict(mask=np.array([[1, 0, 1]], bool)), "mask has holes"),
    (dict(mask=np.array([[1, 1, 1], [0, 1, 0], [1, 0, 1]], bool)), "mask has holes"),
    (dict(dtype=np.int32), "dtype not supported by cuDNN"),
    (dict(dtype=np.complex64), "dtype not supported by cuDNN"),
])
def test_each_rule(cudnn_loads, overrides, reason):
    assert _reasons(**overrides) == [reason]


def test_reason_constants_are_stable():
    assert dispatch.REASON_ACTIVATION == "activation is not tanh"
    assert dispatch.REASON_RECURRENT_ACTIVATION == "recurrent_activation is not sigmoid"
    assert dispatch.REASON_DROPOUT == "dropout with implementation=1 in training"
    assert dispatch.REASON_RECURRENT_DROPOUT == "recurrent_dropout in training"
    assert dispatch.REASON_UNROLL == "unroll=True"
    assert dispatch.REASON_USE_BIAS == "use_bias=False"
    assert dispatch.REASON_MASK == "mask has holes"
    assert dispatch.REASON_DTYPE == "dtype not supported by cuDNN"
    assert dispatch.REASON_UNAVAILABLE == "cuDNN not available"


def test_not_rules(cudnn_loads):
    assert _reasons(dropout=0.5, recurrent_dropout=0.5, training=False) == []
    assert _reasons(dropout=0.5, recurrent_dropout=0.5, training=False, implementation=1) == []
    assert _reasons(dropout=0.5, training=True) == []  # implementation 2: x * mask first
    assert _reasons(dropout=0.5, training=True, implementation=2) == []
    assert _reasons(mask=np.array([[1, 1, 0], [1, 1, 1]], bool)) == []
    assert _reasons(mask=np.array([[1, 1, 0], [0, 0, 0]], bool)) == []  # fully masked: ours
    assert _reasons(mask=np.array([[0, 1, 1], [0, 0, 1]], bool)) == []  # left-padded
    assert _reasons(mask=np.array([[0, 1, 1, 0], [1, 1, 0, 0]], bool)) == []  # both sides
    for dt in (np.float16, np.float64, "float32"):
        assert _reasons(dtype=dt) == []


def test_every_failed_rule_in_order(monkeypatch):
    monkeypatch.setitem(dispatch._avail, "reason", "no libcudnn.so.9")
    got = _reasons(activation=activations.get("relu"), use_bias=False, unroll=True,
                   dropout=0.1, recurrent_dropout=0.1, training=True, dtype=np.int8,
                   recurrent_activation=activations.get("tanh"), implementation=1,
                   mask=np.array([[1, 0, 1]], bool))
    assert got == ["activation is not tanh", "recurrent_activation is not sigmoid",
                   "dropout with implementation=1 in training",
                   "recurrent_dropout in training", "unroll=True", "use_bias=False",
                   "mask has holes", "dtype not supported by cuDNN",
                   "cuDNN not available: no libcudnn.so.9"]


def test_real_availability_is_cached():
    dispatch._reset_for_tests()
    first = dispatch.cudnn_available()
    assert dispatch.cudnn_available() is first
    assert "reason" in dispatch._avail


def test_choose_gpu_path():
    assert dispatch.choose_gpu_path("auto", []) == "cudnn"
    assert dispatch.choose_gpu_path(True, []) == "cudnn"
    assert dispatch.choose_gpu_path("auto", ["unroll=True"]) == "cuda-kernels"
    assert dispatch.choose_gpu_path(False, []) == "cuda-kernels"
    with pytest.raises(ValueError) as info:
        dispatch.choose_gpu_path(True, ["unroll=True", "use_bias=False"])
    assert "unroll=True" in str(info.value) and "use_bias=False" in str(info.value)
    with pytest.raises(ValueError, match="Received: use_cudnn='yes'"):
        dispatch.choose_gpu_path("yes", [])


def _fail(exc):
    def call():
        raise exc
    return call


def test_run_with_fallback_success_and_false():
    assert dispatch.run_with_fallback("auto", lambda: 1, lambda: 2) == (1, "cudnn")
    assert dispatch.run_with_fallback(True, lambda: 1, lambda: 2) == (1, "cudnn")
    assert dispatch.run_with_fallback(False, _fail(AssertionError()), lambda: 2) == (
        2, "cuda-kernels")


def test_cudnn_error_falls_back_with_warning_under_auto():
    err = CudnnError(3002, "CUDNN_STATUS_NOT_SUPPORTED_SHAPE", "too big", "cudnnRNNForward")
    with pytest.warns(dispatch.CudnnFallbackWarning, match="CUDNN_STATUS_NOT_SUPPORTED_SHAPE"):
        assert dispatch.run_with_fallback("auto", _fail(err), lambda: 2) == (2, "cuda-kernels")
    with pytest.raises(CudnnError):
        dispatch.run_with_fallback(True, _fail(err), lambda: 2)


def test_path_unavailable_falls_back_quietly_under_auto():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert dispatch.run_with_fallback("auto", _fail(PathUnavailable("empty input")),
                                          lambda: 2) == (2, "cuda-kernels")
    with pytest.raises(ValueError, match="empty input"):
        dispatch.run_with_fallback(True, _fail(PathUnavailable("empty input")), lambda: 2)


def test_other_errors_propagate():
    with pytest.raises(KeyError):
        dispatch.run_with_fallback("auto", _fail(KeyError("bug")), lambda: 2)
