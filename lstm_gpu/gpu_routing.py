"""Routing of a CuPy call: the dispatcher's rules applied to one layer call.

The rules, their reason strings and the cuDNN-error fallback live in `dispatch`; this module
gathers the layer's arguments for them and remembers which path ran, so that backward goes
to the same path as the forward it differentiates.
"""
from __future__ import annotations

from typing import Any, Optional

from .paths import numpy_ref

NAME_REFERENCE = "cupy-reference"


def ineligibility(layer: Any, user_mask: Any, training: bool,
                  device_id: Optional[int] = None) -> list[str]:
    """The cuDNN rules this call fails; mask is the user's, (batch, T) or (T, batch).

    device_id: the GPU the call runs on, when known (see `dispatch.cudnn_ineligibility`).
    """
    from . import dispatch

    mask_bt = None
    if user_mask is not None:
        mask_bt = user_mask.T if layer.time_major else user_mask
    return dispatch.cudnn_ineligibility(
        activation=layer.activation, recurrent_activation=layer.recurrent_activation,
        use_bias=layer.use_bias, unroll=layer.unroll, dropout=layer.dropout,
        recurrent_dropout=layer.recurrent_dropout, training=training, mask=mask_bt,
        dtype=layer.compute_dtype, implementation=layer.implementation, device_id=device_id)


def kernel_path_name(layer: Any) -> str:
    """The path of a CuPy call that does not run on cuDNN: "cuda-kernels", or
    "cupy-reference" when an activation is a Python callable (no kernel form)."""
    from .dispatch import PATH_KERNELS

    builtin = layer.activation.is_builtin and layer.recurrent_activation.is_builtin
    return PATH_KERNELS if builtin else NAME_REFERENCE


def _kernel_path(layer: Any):
    """Our CUDA kernels, or the CuPy reference for Python-callable activations."""
    if kernel_path_name(layer) == NAME_REFERENCE:
        return numpy_ref, NAME_REFERENCE
    from .paths import cuda_kernels

    return cuda_kernels, cuda_kernels.NAME


class RoutedPath:
    """A path-like object: forward on the chosen GPU path (with cuDNN's fallback), backward
    on whichever path ran. `last_name` is that path's name."""

    def __init__(self, use_cudnn: Any, cudnn_module: Any, fallback: Any, fallback_name: str):
        self.use_cudnn = use_cudnn
        self.cudnn = cudnn_module
        self.fallback, self.fallback_name = fallback, fallback_name
        self.last_name = fallback_name
        self._ran = fallback

    def forward(self, *args):
        if self.cudnn is None:
            return self.fallback.forward(*args)
        from . import dispatch

        result, name = dispatch.run_with_fallback(
            self.use_cudnn, lambda: self.cudnn.forward(*args),
            lambda: self.fallback.forward(*args))
        cudnn_ran = name == self.cudnn.NAME
        self._ran = self.cudnn if cudnn_ran else self.fallback
        self.last_name = name if cudnn_ran else self.fallback_name
        return result

    def backward(self, saved, *grads):
        return self._ran.backward(saved, *grads)


def select(layer: Any, x: Any, user_mask: Any, training: bool):
    """(path, name) for a CuPy call of `layer`."""
    from . import dispatch

    reasons = ineligibility(layer, user_mask, training, device_id=x.device.id)
    fallback, fallback_name = _kernel_path(layer)
    if dispatch.choose_gpu_path(layer.use_cudnn, reasons) == "cudnn":
        from .paths import cudnn

        return RoutedPath(layer.use_cudnn, cudnn, fallback, fallback_name), cudnn.NAME
    return RoutedPath(layer.use_cudnn, None, fallback, fallback_name), fallback_name
