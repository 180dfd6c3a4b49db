"""Keras 3 weight constraints: ``w_new = constraint(w)``, applied by the optimizers after
each update (as Keras does), never in the forward pass. NumPy or CuPy arrays."""
from __future__ import annotations

from typing import Any

from ._registry import KerasObject, Registry
from ._xp import array_module

REGISTRY = Registry("keras.constraints", "constraint")
EPSILON = 1e-7  # keras.config.epsilon()


class Constraint(KerasObject):
    def __call__(self, w):
        return w


def _norms(w, axis):
    xp = array_module(w)
    return xp.sqrt(xp.sum(w * w, axis=axis, keepdims=True))


@REGISTRY.register
class MaxNorm(Constraint):
    def __init__(self, max_value: float = 2, axis: int = 0):
        self.max_value, self.axis = max_value, axis

    def __call__(self, w):
        norms = _norms(w, self.axis)
        desired = array_module(w).clip(norms, 0, self.max_value)
        return w * (desired / (EPSILON + norms))

    def get_config(self):
        return {"max_value": self.max_value, "axis": self.axis}


@REGISTRY.register
class NonNeg(Constraint):
    def __call__(self, w):
        return w * (w >= 0).astype(w.dtype)


@REGISTRY.register
class UnitNorm(Constraint):
    def __init__(self, axis: int = 0):
        self.axis = axis

    def __call__(self, w):
        return w / (EPSILON + _norms(w, self.axis))

    def get_config(self):
        return {"axis": self.axis}


@REGISTRY.register
class MinMaxNorm(Constraint):
    def __init__(self, min_value: float = 0.0, max_value: float = 1.0, rate: float = 1.0,
                 axis: int = 0):
        self.min_value, self.max_value, self.rate, self.axis = min_value, max_value, rate, axis

    def __call__(self, w):
        norms = _norms(w, self.axis)
        clipped = array_module(w).clip(norms, self.min_value, self.max_value)
        desired = self.rate * clipped + (1 - self.rate) * norms
        return w * (desired / (EPSILON + norms))

    def get_config(self):
        return {"min_value": self.min_value, "max_value": self.max_value, "rate": self.rate,
                "axis": self.axis}


def get(identifier: Any, argument: str = "constraint"):
    return REGISTRY.get(identifier, argument)


def serialize(constraint: Any) -> Any:
    return REGISTRY.serialize(constraint)
