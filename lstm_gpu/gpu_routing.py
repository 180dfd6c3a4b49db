"""Routing of a CuPy call: the dispatcher's rules applied to one layer call.

`select` returns the path module (or a fallback wrapper) and its name. The cuDNN rules and
their reason strings live in `dispatch`; this module only gathers the layer's arguments.
"""
from __future__ import annotations

import warnings
from typing import Any

from .errors import CudnnError, PathUnavailable
from .paths import numpy_ref


def ineligibility(layer: Any, user_mask: Any, training: bool) -> list[str]:
    """The cuDNN rules this call fails; mask is the user's, (batch, T) or (T, batch)."""
    from . import dispatch

    mask_bt = None
    if user_mask is not None:
        mask_bt = user_mask.T if layer.time_major else user_mask
    return dispatch.cudnn_ineligibility(
        activation=layer.activation, recurrent_activation=layer.recurrent_activation,
        use_bias=layer.use_bias, unroll=layer.unroll, dropout=layer.dropout,
        recurrent_dropout=layer.recurrent_dropout, training=training, mask=mask_bt,
        dtype=layer.dtype)


class _Fallback:
    """Runs `first`; on a cuDNN error (use_cudnn="auto") or PathUnavailable runs `second`.

    `last_name` says which one ran; backward goes to the same one.
    """

    def __init__(self, first, first_name: str, second, second_name: str, warn_cudnn: bool):
        self.first, self.first_name = first, first_name
        self.second, self.second_name = second, second_name
        self.warn_cudnn = warn_cudnn
        self.last_name = first_name
        self._ran = first

    def forward(self, *args, **kwargs):
        try:
            result = self.first.forward(*args, **kwargs)
            self._ran, self.last_name = self.first, self.first_name
        except CudnnError as exc:
            if not self.warn_cudnn:
                raise
            warnings.warn(f"cuDNN failed ({exc.name}); falling back to the "
                          f"{self.second_name} path: {exc}", RuntimeWarning, stacklevel=4)
            result = self._second(*args, **kwargs)
        except PathUnavailable:
            result = self._second(*args, **kwargs)
        return result

    def _second(self, *args, **kwargs):
        self._ran, self.last_name = self.second, self.second_name
        return self.second.forward(*args, **kwargs)

    def backward(self, saved, *grads):
        return self._ran.backward(saved, *grads)


def select(layer: Any, x: Any, user_mask: Any, training: bool):
    """(path, name) for a CuPy call of `layer`."""
    from . import dispatch
    from .paths import cuda_kernels

    reasons = ineligibility(layer, user_mask, training)
    name = dispatch.choose_gpu_path(layer.use_cudnn, reasons)
    kernels = _Fallback(cuda_kernels, "cuda-kernels", numpy_ref, "cupy-reference",
                        warn_cudnn=False)
    if name == "cudnn":
        from .paths import cudnn

        return _Fallback(cudnn, "cudnn", kernels, "cuda-kernels",
                         warn_cudnn=layer.use_cudnn == "auto"), "cudnn"
    return kernels, "cuda-kernels"
