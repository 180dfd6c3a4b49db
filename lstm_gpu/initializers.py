"""Keras 3 weight initializers, computed on the host with NumPy.

Each initializer is called as ``init(shape, dtype) -> np.ndarray``. The distributions and
their parameters are Keras's; the random streams are NumPy's (Keras's cannot be reproduced
bit for bit), seeded by the initializer's ``seed`` when given.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from ._registry import KerasObject, Registry

REGISTRY = Registry("keras.initializers", "initializer")

# Keras: stddev of a normal truncated at +-2 stddev, divided out so the variance is `scale/n`.
_TRUNCATED_STDDEV_CORRECTION = 0.87962566103423978


def _fans(shape: tuple) -> tuple[float, float]:
    if len(shape) == 0:
        return 1.0, 1.0
    if len(shape) == 1:
        return float(shape[0]), float(shape[0])
    receptive = float(np.prod(shape[:-2])) if len(shape) > 2 else 1.0
    return shape[-2] * receptive, shape[-1] * receptive


def _truncated_normal(rng: np.random.Generator, mean: float, stddev: float, shape) -> np.ndarray:
    values = rng.standard_normal(shape)
    bad = np.abs(values) > 2.0
    while bad.any():
        values[bad] = rng.standard_normal(int(bad.sum()))
        bad = np.abs(values) > 2.0
    return mean + stddev * values


class Initializer(KerasObject):
    """Base: subclasses implement `_sample(rng, shape)` (float64) and `get_config`."""

    seed: Any = None

    def __call__(self, shape, dtype="float32") -> np.ndarray:
        shape = tuple(int(s) for s in shape)
        rng = np.random.default_rng(self.seed)
        return np.asarray(self._sample(rng, shape), dtype=np.dtype(dtype))

    def _sample(self, rng: np.random.Generator, shape: tuple) -> np.ndarray:
        raise NotImplementedError


@REGISTRY.register
class Zeros(Initializer):
    def _sample(self, rng, shape):
        return np.zeros(shape)


@REGISTRY.register
class Ones(Initializer):
    def _sample(self, rng, shape):
        return np.ones(shape)


@REGISTRY.register
class Constant(Initializer):
    def __init__(self, value: float = 0.0):
        self.value = value

    def _sample(self, rng, shape):
        return np.full(shape, self.value, dtype=np.float64)

    def get_config(self):
        return {"value": self.value}


@REGISTRY.register
class Identity(Initializer):
    def __init__(self, gain: float = 1.0):
        self.gain = gain

    def _sample(self, rng, shape):
        if len(shape) != 2:
            raise ValueError(f"Identity initializer needs a 2D shape, got shape={shape}")
        return self.gain * np.eye(*shape)

    def get_config(self):
        return {"gain": self.gain}


@REGISTRY.register
class RandomNormal(Initializer):
    def __init__(self, mean: float = 0.0, stddev: float = 0.05, seed=None):
        self.mean, self.stddev, self.seed = mean, stddev, seed

    def _sample(self, rng, shape):
        return rng.normal(self.mean, self.stddev, shape)

    def get_config(self):
        return {"seed": self.seed, "mean": self.mean, "stddev": self.stddev}


@REGISTRY.register
class RandomUniform(Initializer):
    def __init__(self, minval: float = -0.05, maxval: float = 0.05, seed=None):
        self.minval, self.maxval, self.seed = minval, maxval, seed

    def _sample(self, rng, shape):
        return rng.uniform(self.minval, self.maxval, shape)

    def get_config(self):
        return {"seed": self.seed, "minval": self.minval, "maxval": self.maxval}


@REGISTRY.register
class TruncatedNormal(Initializer):
    def __init__(self, mean: float = 0.0, stddev: float = 0.05, seed=None):
        self.mean, self.stddev, self.seed = mean, stddev, seed

    def _sample(self, rng, shape):
        return _truncated_normal(rng, self.mean, self.stddev, shape)

    def get_config(self):
        return {"seed": self.seed, "mean": self.mean, "stddev": self.stddev}


@REGISTRY.register
class VarianceScaling(Initializer):
    _MODES = ("fan_in", "fan_out", "fan_avg")
    _DISTRIBUTIONS = ("truncated_normal", "untruncated_normal", "normal", "uniform")

    def __init__(self, scale: float = 1.0, mode: str = "fan_in",
                 distribution: str = "truncated_normal", seed=None, **_axes):
        if scale <= 0:
            raise ValueError(f"Argument `scale` must be positive. Received: scale={scale}")
        if mode not in self._MODES:
            raise ValueError(f"Argument `mode` must be one of {self._MODES}. Received: {mode!r}")
        if distribution not in self._DISTRIBUTIONS:
            raise ValueError(
                f"Argument `distribution` must be one of {self._DISTRIBUTIONS}. "
                f"Received: {distribution!r}"
            )
        self.scale, self.mode, self.distribution, self.seed = scale, mode, distribution, seed
        # Keras 3.15 writes these fan-axis keys; only their default (None) is supported.
        unknown = set(_axes) - {"input_axes", "output_axes"}
        if unknown:
            raise TypeError(f"Unexpected arguments for {type(self).__name__}: {sorted(unknown)}")
        if any(v is not None for v in _axes.values()):
            raise NotImplementedError(
                f"{type(self).__name__}: custom input_axes/output_axes are not supported; "
                f"the fans of the 2D LSTM kernels come from their shape. Received: {_axes}")
        self._axes = {"input_axes": None, "output_axes": None}

    def _sample(self, rng, shape):
        fan_in, fan_out = _fans(shape)
        n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[self.mode]
        variance = self.scale / max(1.0, n)
        if self.distribution == "truncated_normal":
            return _truncated_normal(rng, 0.0, math.sqrt(variance) / _TRUNCATED_STDDEV_CORRECTION,
                                     shape)
        if self.distribution in ("untruncated_normal", "normal"):
            return rng.normal(0.0, math.sqrt(variance), shape)
        limit = math.sqrt(3.0 * variance)
        return rng.uniform(-limit, limit, shape)

    def get_config(self):
        return {"seed": self.seed, "scale": self.scale, "mode": self.mode,
                "distribution": self.distribution, **self._axes}


def _variance_scaling_preset(name: str, scale: float, mode: str, distribution: str):
    def __init__(self, seed=None, **_axes):
        VarianceScaling.__init__(self, scale, mode, distribution, seed, **_axes)

    def get_config(self):
        return {"seed": self.seed, **self._axes}

    cls = type(name, (VarianceScaling,), {"__init__": __init__, "get_config": get_config})
    return REGISTRY.register(cls)


GlorotUniform = _variance_scaling_preset("GlorotUniform", 1.0, "fan_avg", "uniform")
GlorotNormal = _variance_scaling_preset("GlorotNormal", 1.0, "fan_avg", "truncated_normal")
HeUniform = _variance_scaling_preset("HeUniform", 2.0, "fan_in", "uniform")
HeNormal = _variance_scaling_preset("HeNormal", 2.0, "fan_in", "truncated_normal")
LecunUniform = _variance_scaling_preset("LecunUniform", 1.0, "fan_in", "uniform")
LecunNormal = _variance_scaling_preset("LecunNormal", 1.0, "fan_in", "truncated_normal")


@REGISTRY.register
class Orthogonal(Initializer):
    def __init__(self, gain: float = 1.0, seed=None):
        self.gain, self.seed = gain, seed

    def _sample(self, rng, shape):
        if len(shape) < 2:
            raise ValueError(f"Orthogonal initializer needs at least 2 dims, got shape={shape}")
        rows, cols = int(np.prod(shape[:-1])), shape[-1]
        flat = (max(rows, cols), min(rows, cols))
        q, r = np.linalg.qr(rng.standard_normal(flat))
        q = q * np.sign(np.diag(r))
        if rows < cols:
            q = q.T
        return self.gain * q.reshape(shape)

    def get_config(self):
        return {"seed": self.seed, "gain": self.gain}


REGISTRY.alias("identity", Identity)
REGISTRY.alias("orthogonal", Orthogonal)


def get(identifier: Any, argument: str = "initializer"):
    """Resolve a Keras initializer identifier; a `constant` by name needs a value (TypeError)."""
    if identifier is None:
        raise ValueError(f"Argument `{argument}` must not be None.")
    return REGISTRY.get(identifier, argument)


def serialize(initializer: Any) -> Any:
    return REGISTRY.serialize(initializer)
