"""Which GPU path runs a call: cuDNN when every rule holds, else the CUDA kernel path.

The rules (DESIGN.md section 3), each with a short, stable reason string:

    activation is tanh                          REASON_ACTIVATION
    recurrent_activation is sigmoid             REASON_RECURRENT_ACTIVATION
    dropout only with implementation 2          REASON_DROPOUT           (in training)
    recurrent_dropout == 0                      REASON_RECURRENT_DROPOUT (in training)
    unroll is False                             REASON_UNROLL
    use_bias is True                            REASON_USE_BIAS
    the mask, if any, has no holes              REASON_MASK
    dtype is float16/float32/float64            REASON_DTYPE
    cuDNN 9 loads (and, for a known device,     REASON_UNAVAILABLE + ": <why>"
    cudnnCreate has not failed there)

Wider than Keras's own rules, with the same numbers:
- Input dropout with implementation 2: x is multiplied by the one input mask before cuDNN, as
  Keras 3.15 does (keras/src/layers/rnn/lstm.py, `LSTM.inner_loop`). Implementation 1 draws
  four masks (one per gate), which cuDNN cannot apply.
- Masks: each sample's valid steps must be contiguous -- right-padded, left-padded (Keras's
  `pad_sequences` default) or both; the cuDNN path shifts each sample to the front and back.
  Keras and TensorFlow accept only right-padded masks. Fully masked samples are handled too
  (one dummy step whose results are discarded; outputs are zeros, states stay h0/c0).
The dropout rules only apply in training: at inference dropout does nothing.

`use_cudnn`: "auto" uses cuDNN when no rule fails and otherwise falls back (the reasons are
logged at DEBUG level on the ``lstm_gpu.dispatch`` logger, and `cudnn_ineligibility` gives
them to the caller); True raises ValueError listing every failed rule; False never uses cuDNN.
A cuDNN error at run time falls back under "auto" with a `CudnnFallbackWarning` naming the
status, and is raised under True (`run_with_fallback`). A failed `cudnnCreate` is remembered
per device (`lstm_gpu.cuda.cudnn.api.handle_failure`): it warns once, later calls on that
device fall back quietly.
"""
from __future__ import annotations

import logging
import threading
import warnings
from typing import Any, Callable, Optional

import numpy as np

from .activations import KERNEL_IDS
from .errors import CudnnError, PathUnavailable
from .paths.masking import is_one_run_per_row

PATH_CUDNN = "cudnn"
PATH_KERNELS = "cuda-kernels"

REASON_ACTIVATION = "activation is not tanh"
REASON_RECURRENT_ACTIVATION = "recurrent_activation is not sigmoid"
REASON_DROPOUT = "dropout with implementation=1 in training"
REASON_RECURRENT_DROPOUT = "recurrent_dropout in training"
REASON_UNROLL = "unroll=True"
REASON_USE_BIAS = "use_bias=False"
REASON_MASK = "mask has holes"
REASON_DTYPE = "dtype not supported by cuDNN"
REASON_UNAVAILABLE = "cuDNN not available"

SUPPORTED_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))
USE_CUDNN_VALUES = ("auto", True, False)

logger = logging.getLogger("lstm_gpu.dispatch")


class CudnnFallbackWarning(RuntimeWarning):
    """cuDNN failed at run time under use_cudnn='auto'; the CUDA kernel path ran instead."""


_avail_lock = threading.Lock()
_avail: dict = {}


def cudnn_unavailable_reason(device_id: Optional[int] = None) -> Optional[str]:
    """None when cuDNN 9 loads (cached for the process) and, for a given device, cudnnCreate
    has not failed there; else why not."""
    with _avail_lock:
        if "reason" not in _avail:
            from .cuda import cudnn

            _avail["reason"] = cudnn.unavailable_reason()
        why = _avail["reason"]
    if why is None and device_id is not None:
        from .cuda.cudnn import api

        why = api.handle_failure(device_id)
    return why


def cudnn_available() -> bool:
    return cudnn_unavailable_reason() is None


def _is(activation: Any, name: str) -> bool:
    return getattr(activation, "kernel_id", None) == KERNEL_IDS[name]


def cudnn_ineligibility(*, activation, recurrent_activation, use_bias: bool, unroll: bool,
                        dropout: float, recurrent_dropout: float, training: bool,
                        mask: Any, dtype: Any, implementation: int = 2,
                        device_id: Optional[int] = None) -> list[str]:
    """Every rule that keeps this call off cuDNN, in a fixed order; [] means cuDNN is fine.

    activation / recurrent_activation: `lstm_gpu.activations.Activation` objects.
    mask: the user's (batch, timesteps) bool mask in original time order (NumPy or CuPy;
    a CuPy mask costs one small device-to-host read), or None.
    dtype: the compute dtype. implementation: the layer's effective one (1 or 2).
    device_id: the GPU of the call, when known (a failed cudnnCreate there is a reason).
    """
    reasons = []
    if not _is(activation, "tanh"):
        reasons.append(REASON_ACTIVATION)
    if not _is(recurrent_activation, "sigmoid"):
        reasons.append(REASON_RECURRENT_ACTIVATION)
    if training and dropout and implementation != 2:
        reasons.append(REASON_DROPOUT)
    if training and recurrent_dropout:
        reasons.append(REASON_RECURRENT_DROPOUT)
    if unroll:
        reasons.append(REASON_UNROLL)
    if not use_bias:
        reasons.append(REASON_USE_BIAS)
    if mask is not None and not is_one_run_per_row(mask):
        reasons.append(REASON_MASK)
    if np.dtype(dtype) not in SUPPORTED_DTYPES:
        reasons.append(REASON_DTYPE)
    why = cudnn_unavailable_reason(device_id)
    if why is not None:
        reasons.append(f"{REASON_UNAVAILABLE}: {why}")
    return reasons


def _check_use_cudnn(use_cudnn: Any) -> None:
    if not any(use_cudnn is v or (isinstance(v, str) and use_cudnn == v)
               for v in USE_CUDNN_VALUES):
        raise ValueError(
            f"Argument `use_cudnn` must be one of 'auto', True, False. Received: "
            f"use_cudnn={use_cudnn!r}"
        )


def _not_possible(reasons) -> ValueError:
    listed = "; ".join(reasons)
    return ValueError(
        f"use_cudnn=True, but cuDNN cannot run this call: {listed}. "
        "Pass use_cudnn='auto' to fall back to the CUDA kernel path."
    )


def choose_gpu_path(use_cudnn: Any, reasons: list[str]) -> str:
    """"cudnn" or "cuda-kernels" for a call whose failed rules are `reasons`.

    use_cudnn=True with reasons raises ValueError listing all of them.
    """
    _check_use_cudnn(use_cudnn)
    if use_cudnn is False:
        return PATH_KERNELS
    if not reasons:
        return PATH_CUDNN
    if use_cudnn is True:
        raise _not_possible(reasons)
    logger.debug("use_cudnn='auto': CUDA kernel path because %s", "; ".join(reasons))
    return PATH_KERNELS


def run_with_fallback(use_cudnn: Any, cudnn_call: Callable[[], Any],
                      fallback_call: Callable[[], Any]) -> tuple[Any, str]:
    """Run `cudnn_call()`; under "auto" fall back to `fallback_call()` if cuDNN fails.

    Returns (result, path name that produced it). Call it once `choose_gpu_path` said
    "cudnn". A `CudnnError` under "auto" warns (`CudnnFallbackWarning`, naming the status) and
    falls back; under True it propagates. A `PathUnavailable` from the path (a case the rules
    do not see, e.g. an empty batch) falls back quietly under "auto" and becomes ValueError
    under True.
    """
    _check_use_cudnn(use_cudnn)
    if use_cudnn is False:
        return fallback_call(), PATH_KERNELS
    try:
        return cudnn_call(), PATH_CUDNN
    except CudnnError as e:
        if use_cudnn is True:
            raise
        warnings.warn(
            f"cuDNN failed with {e.name} ({e}); using the CUDA kernel path instead",
            CudnnFallbackWarning, stacklevel=2,
        )
    except PathUnavailable as e:
        if use_cudnn is True:
            raise _not_possible([str(e)]) from e
        logger.debug("use_cudnn='auto': CUDA kernel path because %s", e)
    return fallback_call(), PATH_KERNELS


def _reset_for_tests() -> None:
    with _avail_lock:
        _avail.clear()
