"""Keras 3 weight regularizers with their gradients (NumPy or CuPy arrays).

A regularizer is called as ``penalty = reg(w)`` (a 0-d array of w's library) and
``reg.gradient(w)`` gives d penalty / d w. A plain callable is accepted too; its gradient is
then taken by central finite differences on the host (slow; give it a ``gradient`` method
to avoid that).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ._registry import KerasObject, Registry
from ._xp import array_module, to_numpy

REGISTRY = Registry("keras.regularizers", "regularizer")


class Regularizer(KerasObject):
    def __call__(self, w):
        raise NotImplementedError

    def gradient(self, w):
        raise NotImplementedError


@REGISTRY.register
class L1L2(Regularizer):
    """``l1 * sum(|w|) + l2 * sum(w**2)``."""

    def __init__(self, l1: float = 0.0, l2: float = 0.0):
        for name, value in (("l1", l1), ("l2", l2)):
            if value is None or value < 0:
                raise ValueError(f"Argument `{name}` must be a non-negative float. "
                                 f"Received: {name}={value}")
        self.l1, self.l2 = float(l1), float(l2)

    def __call__(self, w):
        xp = array_module(w)
        total = xp.zeros((), dtype=w.dtype)
        if self.l1:
            total = total + w.dtype.type(self.l1) * xp.sum(xp.abs(w))
        if self.l2:
            total = total + w.dtype.type(self.l2) * xp.sum(w * w)
        return total

    def gradient(self, w):
        xp = array_module(w)
        g = xp.zeros_like(w)
        if self.l1:
            g = g + w.dtype.type(self.l1) * xp.sign(w)
        if self.l2:
            g = g + w.dtype.type(2 * self.l2) * w
        return g

    def get_config(self):
        return {"l1": self.l1, "l2": self.l2}


@REGISTRY.register
class L1(L1L2):
    def __init__(self, l1: float = 0.01):
        super().__init__(l1=l1)

    def get_config(self):
        return {"l1": self.l1}


@REGISTRY.register
class L2(L1L2):
    def __init__(self, l2: float = 0.01):
        super().__init__(l2=l2)

    def get_config(self):
        return {"l2": self.l2}


# tf.keras 2's `l1_l2()` function: 0.01 each (Keras 3 only knows the class, defaults 0).
REGISTRY.alias("l1_l2", lambda: L1L2(l1=0.01, l2=0.01))


class _Unsupported:
    def __init__(self, *args, **kwargs):
        raise NotImplementedError(
            "OrthogonalRegularizer is not implemented in lstm_gpu; pass a callable "
            "regularizer with a `gradient(w)` method instead."
        )


REGISTRY.classes["OrthogonalRegularizer"] = _Unsupported
REGISTRY.alias("orthogonal_regularizer", _Unsupported)


def get(identifier: Any, argument: str = "regularizer"):
    return REGISTRY.get(identifier, argument)


def serialize(regularizer: Any) -> Any:
    return REGISTRY.serialize(regularizer)


def gradient(regularizer: Any, w):
    """d regularizer(w) / d w, for our regularizers or any callable (finite differences)."""
    if hasattr(regularizer, "gradient"):
        return regularizer.gradient(w)
    xp = array_module(w)
    flat = np.array(to_numpy(w), dtype=np.float64).ravel()
    eps = 1e-6
    g = np.empty_like(flat)
    for k in range(flat.size):
        saved = flat[k]
        flat[k] = saved + eps
        plus = float(regularizer(xp.asarray(flat.reshape(w.shape), dtype=w.dtype)))
        flat[k] = saved - eps
        minus = float(regularizer(xp.asarray(flat.reshape(w.shape), dtype=w.dtype)))
        flat[k] = saved
        g[k] = (plus - minus) / (2 * eps)
    return xp.asarray(g.reshape(w.shape), dtype=w.dtype)
