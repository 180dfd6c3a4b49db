"""Element-wise activations the LSTM accepts, with their derivatives and kernel ids.

Every name Keras 3 accepts for an element-wise activation resolves to an `Activation`:
its forward function and derivative work on NumPy and CuPy arrays alike, and its
`kernel_id` is the value of `enum Act` in `kernels/lstm_cell.cuh` (keep the two in step;
a test checks it). Formulas follow Keras 3's NumPy backend (`keras/src/backend/numpy/nn.py`).

`hard_sigmoid` is Keras 3's `clip(x/6 + 0.5, 0, 1)`; the Keras 2 / tf.compat.v1 formula
`clip(0.2x + 0.5, 0, 1)` is `hard_sigmoid` for `lstm_gpu.compat.v1.LSTM` (``legacy=True``)
and is also reachable everywhere by the explicit name ``"hard_sigmoid_keras2"``.

Every value and every derivative is NaN at a NaN input (Keras's activations give NaN there;
a piecewise formula written with comparisons would not, see `_where`).

A Python callable is accepted too; its derivative is then taken by a central finite
difference (documented in `LSTM.backward`), unless the callable has a ``derivative``
attribute ``(x, y) -> dy/dx``. Whatever it returns must be an array of its input's library
and shape (nothing is broadcast). Activations pickle: built-in ones by name, callables as
themselves (so a lambda does not).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ._xp import array_module, is_cupy_array

ArrayFn = Callable[[Any], Any]
GradFn = Callable[[Any, Any], Any]

SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946
LEAKY_RELU_SLOPE = 0.2
SHRINK_THRESHOLD = 0.5
SQUAREPLUS_B = 4.0
CELU_ALPHA = 1.0
ELU_ALPHA = 1.0


@dataclass(frozen=True)
class Activation:
    """One element-wise activation.

    name: the name written by `get_config` (Keras's name, or the callable itself).
    kernel_id: value of `enum Act` in `kernels/lstm_cell.cuh`; -1 for Python callables.
    fn: ``y = fn(x)``.  grad: ``dy/dx = grad(x, y)``.
    """

    name: Any
    kernel_id: int
    fn: ArrayFn
    grad: GradFn

    @property
    def is_builtin(self) -> bool:
        return self.kernel_id >= 0

    def __call__(self, x):
        return self.fn(x)

    def __reduce__(self):
        if self.is_builtin:  # the functions are lambdas: rebuild from the name
            return _builtin, (_NAME_OF_KERNEL_ID[self.kernel_id], self.name)
        return Activation, (self.name, self.kernel_id, self.fn, self.grad)


def _c(x, value):
    """A scalar of x's dtype, so float32 math stays float32 in NumPy."""
    return x.dtype.type(value)


def _erf(x):
    xp = array_module(x)
    if is_cupy_array(x):
        from cupyx.scipy.special import erf

        return erf(x)
    try:
        from scipy.special import erf
    except ImportError:
        erf = np.vectorize(math.erf, otypes=[x.dtype])
    return xp.asarray(erf(x), dtype=x.dtype)


def _sigmoid(x):
    xp = array_module(x)
    return _c(x, 1) / (_c(x, 1) + xp.exp(-x))


def _softplus(x):
    return array_module(x).logaddexp(x, _c(x, 0))


def _hard_sigmoid(x):
    xp = array_module(x)
    return xp.clip(x / _c(x, 6) + _c(x, 0.5), _c(x, 0), _c(x, 1))


def _hard_sigmoid_k2(x):
    xp = array_module(x)
    return xp.clip(_c(x, 0.2) * x + _c(x, 0.5), _c(x, 0), _c(x, 1))


def _elu(x, alpha):
    xp = array_module(x)
    return xp.where(x >= 0, x, _c(x, alpha) * xp.expm1(x))


def _where(cond, a, x, otherwise=0):
    """`cond ? a : otherwise` in x's dtype, and NaN where x is NaN (a comparison with NaN
    is false, so a piecewise formula would turn NaN into a number); a may be a scalar."""
    xp = array_module(x)
    out = xp.where(cond, a, _c(x, otherwise))
    return xp.where(xp.isnan(x), x, out).astype(x.dtype, copy=False)


def _inside(x, lo, hi, value):
    return _where((x > lo) & (x < hi), _c(x, value), x)


def _one(x, y):
    """The derivative 1 (linear), NaN at NaN like every derivative here."""
    return _where(x == x, _c(x, 1), x)


def _gelu(x):
    return x * (_erf(x / _c(x, math.sqrt(2.0))) + _c(x, 1)) / _c(x, 2)


def _gelu_grad(x, y):
    xp = array_module(x)
    cdf = (_erf(x / _c(x, math.sqrt(2.0))) + _c(x, 1)) / _c(x, 2)
    pdf = xp.exp(-x * x / _c(x, 2)) / _c(x, math.sqrt(2.0 * math.pi))
    return cdf + x * pdf


def _mish_grad(x, y):
    xp = array_module(x)
    t = xp.tanh(_softplus(x))
    return t + x * (_c(x, 1) - t * t) * _sigmoid(x)


def _silu_grad(x, y):
    s = _sigmoid(x)
    return s + x * s * (_c(x, 1) - s)


def _hard_silu_grad(x, y):
    xp = array_module(x)
    mid = x / _c(x, 3) + _c(x, 0.5)
    return xp.where(x <= -3, _c(x, 0), xp.where(x >= 3, _c(x, 1), mid)).astype(x.dtype)


def _sparse_plus(x):
    xp = array_module(x)
    mid = (x + _c(x, 1)) ** 2 / _c(x, 4)
    return xp.where(x <= -1, _c(x, 0), xp.where(x < 1, mid, x)).astype(x.dtype)


def _sparse_plus_grad(x, y):
    # 0 below -1, (x + 1) / 2 inside, 1 above: clip keeps NaN where a `where` chain would not.
    return (array_module(x).clip(x, _c(x, -1), _c(x, 1)) + _c(x, 1)) / _c(x, 2)


def _soft_shrink(x):
    # x - t above t, x + t below -t, 0 between: x - clip(x, -t, t), which keeps NaN.
    t = _c(x, SHRINK_THRESHOLD)
    return x - array_module(x).clip(x, -t, t)


def _celu(x):
    xp = array_module(x)
    a = _c(x, CELU_ALPHA)
    return xp.maximum(x, _c(x, 0)) + a * xp.expm1(xp.minimum(x, _c(x, 0)) / a)


def _celu_grad(x, y):
    xp = array_module(x)
    return xp.where(x > 0, _c(x, 1), xp.exp(xp.minimum(x, _c(x, 0)) / _c(x, CELU_ALPHA)))


def _leaky_relu_grad(x, y):
    return _where(x > 0, _c(x, 1), x, LEAKY_RELU_SLOPE)


def _selu(x):
    return _c(x, SELU_SCALE) * _elu(x, SELU_ALPHA)


def _selu_grad(x, y):
    xp = array_module(x)
    neg = _c(x, SELU_SCALE * SELU_ALPHA) * xp.exp(xp.minimum(x, _c(x, 0)))
    return xp.where(x >= 0, _c(x, SELU_SCALE), neg).astype(x.dtype)


def _elu_grad(x, y):
    xp = array_module(x)
    return xp.where(x >= 0, _c(x, 1), y + _c(x, ELU_ALPHA)).astype(x.dtype)


def _squareplus(x):
    xp = array_module(x)
    return (x + xp.sqrt(x * x + _c(x, SQUAREPLUS_B))) / _c(x, 2)


def _squareplus_grad(x, y):
    xp = array_module(x)
    return (_c(x, 1) + x / xp.sqrt(x * x + _c(x, SQUAREPLUS_B))) / _c(x, 2)


def _shrink_grad(x, y):
    return _where(array_module(x).abs(x) > _c(x, SHRINK_THRESHOLD), _c(x, 1), x)


def _hard_shrink(x):
    return _where(array_module(x).abs(x) > _c(x, SHRINK_THRESHOLD), x, x)


def _np(name):
    return lambda x: getattr(array_module(x), name)(x)


# name -> (kernel_id, fn, grad). The kernel ids are `enum Act` in kernels/lstm_cell.cuh.
_BUILTINS: dict[str, tuple[int, ArrayFn, GradFn]] = {
    "linear": (0, lambda x: x, _one),
    "tanh": (1, _np("tanh"), lambda x, y: _c(x, 1) - y * y),
    "sigmoid": (2, _sigmoid, lambda x, y: y * (_c(x, 1) - y)),
    "hard_sigmoid": (3, _hard_sigmoid, lambda x, y: _inside(x, -3, 3, 1 / 6)),
    "hard_sigmoid_keras2": (4, _hard_sigmoid_k2, lambda x, y: _inside(x, -2.5, 2.5, 0.2)),
    "relu": (5, lambda x: array_module(x).maximum(x, _c(x, 0)),
             lambda x, y: _where(x > 0, _c(x, 1), x)),
    "relu6": (6, lambda x: array_module(x).clip(x, _c(x, 0), _c(x, 6)),
              lambda x, y: _inside(x, 0, 6, 1)),
    "leaky_relu": (7, lambda x: array_module(x).maximum(x, _c(x, LEAKY_RELU_SLOPE) * x),
                   _leaky_relu_grad),
    "elu": (8, lambda x: _elu(x, ELU_ALPHA), _elu_grad),
    "selu": (9, _selu, _selu_grad),
    "celu": (10, _celu, _celu_grad),
    "softplus": (11, _softplus, lambda x, y: _sigmoid(x)),
    "softsign": (12, lambda x: x / (_c(x, 1) + array_module(x).abs(x)),
                 lambda x, y: _c(x, 1) / (_c(x, 1) + array_module(x).abs(x)) ** 2),
    "squareplus": (13, _squareplus, _squareplus_grad),
    "soft_shrink": (14, _soft_shrink, _shrink_grad),
    "hard_shrink": (15, _hard_shrink, _shrink_grad),
    "sparse_plus": (16, _sparse_plus, _sparse_plus_grad),
    "sparse_sigmoid": (17, lambda x: array_module(x).clip((x + _c(x, 1)) / _c(x, 2),
                                                          _c(x, 0), _c(x, 1)),
                       lambda x, y: _inside(x, -1, 1, 0.5)),
    "silu": (18, lambda x: x * _sigmoid(x), _silu_grad),
    "gelu": (19, _gelu, _gelu_grad),
    "tanh_shrink": (20, lambda x: x - array_module(x).tanh(x),
                    lambda x, y: array_module(x).tanh(x) ** 2),
    "exponential": (21, _np("exp"), lambda x, y: y),
    "hard_silu": (22, lambda x: x * _hard_sigmoid(x), _hard_silu_grad),
    "hard_tanh": (23, lambda x: array_module(x).clip(x, _c(x, -1), _c(x, 1)),
                  lambda x, y: _inside(x, -1, 1, 1)),
    "mish": (24, lambda x: x * array_module(x).tanh(_softplus(x)), _mish_grad),
    "log_sigmoid": (25, lambda x: -_softplus(-x), lambda x, y: _sigmoid(-x)),
}

ALIASES = {"swish": "silu", "hard_swish": "hard_silu"}

# Keras names that are activations but not element-wise: an LSTM gate cannot use them.
NOT_ELEMENTWISE = ("softmax", "log_softmax", "glu", "sparsemax")
# Keras names that need arguments Keras cannot pass by name.
NEEDS_ARGUMENTS = ("threshold",)

KERNEL_IDS: dict[str, int] = {name: spec[0] for name, spec in _BUILTINS.items()}
_NAME_OF_KERNEL_ID = {kernel_id: name for name, kernel_id in KERNEL_IDS.items()}


def builtin_names() -> list[str]:
    """Every accepted activation name (aliases included), in kernel-id order."""
    return list(_BUILTINS) + list(ALIASES)


def _builtin(name: str, config_name: str | None = None) -> Activation:
    kernel_id, fn, grad = _BUILTINS[name]
    return Activation(config_name or name, kernel_id, fn, grad)


class _Checked:
    """A user's activation or derivative: its result must be a real array of its input's
    library and shape (a scalar, a list or a broadcastable shape raises; nothing is
    broadcast); it comes back in the input's dtype."""

    def __init__(self, fn: Callable, argument: str):
        self.fn, self.argument = fn, argument

    def __call__(self, x, *rest):
        y = self.fn(x, *rest)
        xp = array_module(x)
        if not (isinstance(y, xp.ndarray) and y.shape == x.shape and y.dtype.kind in "biuf"):
            got = (f"an array of shape {tuple(y.shape)} and dtype {y.dtype}"
                   if isinstance(y, xp.ndarray) else f"{type(y).__name__} {y!r:.60}")
            raise ValueError(
                f"Argument `{self.argument}`: the callable {self.fn!r} must return a real "
                f"{xp.__name__} array of its input's shape {tuple(x.shape)}. Received: {got}")
        return y.astype(x.dtype, copy=False)


class _CentralDifference:
    """dy/dx of `fn` by a central finite difference (a callable without `derivative`)."""

    def __init__(self, fn: ArrayFn):
        self.fn = fn

    def __call__(self, x, y):
        eps = _c(x, 1e-3 if x.dtype.itemsize <= 4 else 1e-6)
        return (self.fn(x + eps) - self.fn(x - eps)) / (eps + eps)


def _callable_name(fn: Any) -> str | None:
    """Map well-known library functions (keras.activations.tanh, np.tanh, ...) to our names."""
    name = getattr(fn, "__name__", None)
    module = getattr(fn, "__module__", None) or ""
    if name is None:
        return None
    known = name in _BUILTINS or name in ALIASES
    from_library = module.startswith(("keras", "numpy", "cupy", "lstm_gpu")) or (
        isinstance(fn, np.ufunc) or type(fn).__name__ == "ufunc"
    )
    return name if known and from_library else None


def get(identifier: Any, *, argument: str = "activation", legacy: bool = False) -> Activation:
    """Resolve a Keras activation identifier (name, None, Activation or callable).

    legacy=True makes ``"hard_sigmoid"`` mean Keras 2's ``clip(0.2x + 0.5, 0, 1)``
    (tf.compat.v1 layers). Raises ValueError for unknown or non-element-wise names and
    TypeError for other objects; the message names ``argument``.
    """
    if isinstance(identifier, Activation):
        return identifier
    if identifier is None:
        return _builtin("linear")
    if isinstance(identifier, str):
        name = ALIASES.get(identifier, identifier)
        if legacy and name == "hard_sigmoid":
            return _builtin("hard_sigmoid_keras2", "hard_sigmoid")
        if name in _BUILTINS:
            return _builtin(name, identifier)
        if identifier in NOT_ELEMENTWISE:
            raise ValueError(
                f"Argument `{argument}` must be an element-wise activation; "
                f"'{identifier}' is not (it mixes units). Received: {argument}={identifier!r}"
            )
        if identifier in NEEDS_ARGUMENTS:
            raise ValueError(
                f"Activation '{identifier}' needs arguments that cannot be given by name; "
                f"pass a callable instead. Received: {argument}={identifier!r}"
            )
        raise ValueError(
            f"Unknown activation for argument `{argument}`: {identifier!r}. "
            f"Known names: {', '.join(builtin_names())}"
        )
    if callable(identifier):
        known = _callable_name(identifier)
        if known is not None:
            return get(known, argument=argument, legacy=legacy)
        fn = _Checked(identifier, argument)
        derivative = getattr(identifier, "derivative", None)
        grad = (_Checked(derivative, f"{argument}.derivative") if derivative is not None
                else _CentralDifference(fn))
        return Activation(identifier, -1, fn, grad)
    raise TypeError(
        f"Argument `{argument}` must be a string, None or a callable. "
        f"Received: {argument}={identifier!r} of type {type(identifier).__name__}"
    )


def serialize(activation: Activation) -> Any:
    """What `get_config` writes: the Keras name, or the callable itself."""
    return activation.name
