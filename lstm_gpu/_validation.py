"""Checks of call arguments. Each raises ValueError/TypeError naming the argument and what it
received, before the layer changes any state."""
from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any, Optional

import numpy as np

from ._xp import array_module, is_cupy_array

SUPPORTED_DTYPES = ("float16", "float32", "float64")
# Keras dtype policies we recognise but do not compute in.
UNSUPPORTED_POLICIES = ("bfloat16", "mixed_float16", "mixed_bfloat16", "float8_e4m3fn",
                        "float8_e5m2", "int8", "int4")


def check_units(units: Any) -> int:
    if isinstance(units, bool) or not isinstance(units, Integral) or units <= 0:
        raise ValueError(
            "Received an invalid value for argument `units`, expected a positive integer, "
            f"got {units!r}."
        )
    return int(units)


def check_use_cudnn(use_cudnn: Any) -> Any:
    if not any(use_cudnn is v or (isinstance(use_cudnn, str) and use_cudnn == v)
               for v in ("auto", True, False)):
        raise ValueError(
            "Invalid value received for argument `use_cudnn`. Expected one of "
            f"{{'auto', True, False}}. Received: use_cudnn={use_cudnn!r}"
        )
    return use_cudnn


def _is_int(value: Any) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def check_float(name: str, value: Any, low: float = -math.inf, high: float = math.inf, *,
                low_open: bool = False, high_open: bool = False,
                allow_none: bool = False) -> Optional[float]:
    """A finite real number in [low, high] (ends open as asked), or None when allowed."""
    if value is None and allow_none:
        return None
    ok = isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        v = float(value)
        ok = (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
    if not ok:
        interval = (f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}")
        none = " or None" if allow_none else ""
        raise ValueError(f"Argument `{name}` must be a float in the range {interval}{none}. "
                         f"Received: {name}={value!r}")
    return v


def check_rate(name: str, rate: Any) -> float:
    """A dropout rate in [0, 1): stricter than Keras, which clamps (README, Semantics)."""
    return check_float(name, rate, 0.0, 1.0, high_open=True)


def check_training(training: Any) -> bool:
    """The `training` flag: None, a bool, 0 or 1, or a one-element bool/int array (a Keras
    `training` tensor)."""
    value = training
    if is_cupy_array(value) or isinstance(value, np.ndarray):
        if value.size != 1 or value.dtype.kind not in "biu":
            raise ValueError("Argument `training` must be None, a boolean or a one-element "
                             f"boolean array. Received: training={training!r}")
        value = value.reshape(()).item()
    if value is None:
        return False
    if isinstance(value, (bool, np.bool_)) or (_is_int(value) and value in (0, 1)):
        return bool(value)
    raise TypeError("Argument `training` must be None or a boolean. "
                    f"Received: training={training!r} of type {type(training).__name__}")


def check_input_shape(input_shape: Any) -> tuple:
    """(batch, timesteps, features) (time-major layers: (timesteps, batch, features)): the
    features a positive int, the others None or non-negative ints."""
    shape = None
    if not isinstance(input_shape, (str, bytes)):
        try:
            shape = tuple(input_shape)
        except TypeError:
            shape = None
    ok = (shape is not None and len(shape) == 3 and _is_int(shape[2]) and shape[2] > 0
          and all(s is None or (_is_int(s) and s >= 0) for s in shape[:2]))
    if not ok:
        raise ValueError(
            "Argument `input_shape` must be (batch, timesteps, features) with a positive "
            "integer feature size and non-negative integers (or None) for the others. "
            f"Received: input_shape={input_shape!r}")
    return tuple(None if s is None else int(s) for s in shape)


def check_implementation(implementation: Any) -> int:
    if implementation not in (0, 1, 2) or isinstance(implementation, bool):
        raise ValueError(
            "Argument `implementation` must be 1 or 2. "
            f"Received: implementation={implementation!r}"
        )
    return 1 if implementation == 0 else int(implementation)  # tf.keras 2 maps 0 to 1


def resolve_dtype(dtype: Any) -> np.dtype:
    """The layer's variable dtype from None, a name, a NumPy dtype or a Keras DTypePolicy."""
    if dtype is None:
        return np.dtype("float32")
    if isinstance(dtype, dict):  # Keras DTypePolicy config: {"config": {"name": ...}}
        config = dtype.get("config")
        name = config.get("name") if isinstance(config, dict) else dtype.get("name")
    else:
        name = getattr(dtype, "name", dtype)
    if isinstance(name, str) and name in UNSUPPORTED_POLICIES:
        raise NotImplementedError(
            f"dtype {name!r} is not supported by lstm_gpu; use one of {SUPPORTED_DTYPES}."
        )
    resolved = None
    if name is not None:  # np.dtype(None) would be float64
        try:
            resolved = np.dtype(name)
        except (TypeError, ValueError):
            resolved = None
    if resolved is None or resolved.name not in SUPPORTED_DTYPES:
        raise ValueError(
            f"Argument `dtype` must be one of {SUPPORTED_DTYPES}. Received: dtype={dtype!r}"
        )
    return resolved


def as_array(value: Any, name: str, like: Any = None):
    """NumPy/CuPy array from value; with `like`, require the same array library."""
    if like is not None and is_cupy_array(like) != is_cupy_array(value):
        if is_cupy_array(like) or is_cupy_array(value):
            want = "CuPy" if is_cupy_array(like) else "NumPy"
            raise TypeError(
                f"Argument `{name}` must be a {want} array like the inputs (lstm_gpu does not "
                f"copy between host and device). Received: {type(value).__name__}"
            )
    if is_cupy_array(value) or isinstance(value, np.ndarray):
        return value
    try:
        return np.asarray(value)
    except Exception as exc:  # ragged lists and the like
        raise TypeError(f"Argument `{name}` could not be converted to an array: {exc}") from exc


def check_numeric(a: Any, name: str) -> None:
    if a.dtype.kind not in "biuf":
        raise TypeError(
            f"Argument `{name}` must have a numeric dtype (bool, int or float). "
            f"Received: {name}.dtype={a.dtype}"
        )


def check_inputs(inputs: Any, built_features: int | None, time_major: bool):
    x = as_array(inputs, "inputs")
    if x.ndim != 3:
        layout = "(timesteps, batch, features)" if time_major else "(batch, timesteps, features)"
        raise ValueError(
            f"Argument `inputs` of layer LSTM must be 3D {layout}: expected ndim=3, "
            f"found ndim={x.ndim}. Full shape received: {tuple(x.shape)}"
        )
    check_numeric(x, "inputs")
    if x.shape[0 if time_major else 1] == 0:  # an empty batch is fine (Keras), no steps is not
        raise ValueError("Argument `inputs` has no timesteps (the time axis is empty). "
                         f"Full shape received: {tuple(x.shape)}")
    check_features(x, built_features)
    return x


def check_features(x, built_features: int | None) -> None:
    if built_features is not None and x.shape[2] != built_features:
        raise ValueError(
            f"Argument `inputs` has {x.shape[2]} features, but the layer was built for "
            f"{built_features}. Full shape received: {tuple(x.shape)}"
        )


def mask_array(mask: Any, like: Any = None):
    """A mask as a 2D bool array ((batch, timesteps), or (timesteps, batch) time-major); a
    trailing axis of 1 is dropped."""
    m = as_array(mask, "mask", like=like)
    check_numeric(m, "mask")
    if m.ndim == 3 and m.shape[-1] == 1:
        m = m[..., 0]
    if m.ndim != 2:
        raise ValueError("Argument `mask` must be 2D, (batch, timesteps) or (timesteps, batch) "
                         f"for time-major layers. Received: mask.shape={tuple(m.shape)}")
    return m.astype(bool, copy=False)


def check_mask(mask: Any, x, time_major: bool):
    if mask is None:
        return None
    batch, steps = (x.shape[1], x.shape[0]) if time_major else (x.shape[0], x.shape[1])
    expected = (steps, batch) if time_major else (batch, steps)
    m = as_array(mask, "mask", like=x)
    shape = tuple(m.shape[:-1]) if m.ndim == 3 and m.shape[-1] == 1 else tuple(m.shape)
    if shape != expected:  # no broadcasting: stricter than Keras (README, Semantics)
        raise ValueError(
            f"Argument `mask` must have shape {expected} "
            f"({'(timesteps, batch)' if time_major else '(batch, timesteps)'}). "
            f"Received: mask.shape={tuple(m.shape)}"
        )
    return mask_array(m)


def check_initial_state(initial_state: Any, x, batch: int, units: int):
    if initial_state is None:
        return None
    if not isinstance(initial_state, (list, tuple)) or len(initial_state) != 2:
        got = (f"{type(initial_state).__name__} of length {len(initial_state)}"
               if isinstance(initial_state, (list, tuple)) else type(initial_state).__name__)
        raise ValueError(
            "Argument `initial_state` must be a list of two arrays [h0, c0], each of shape "
            f"(batch, units) = ({batch}, {units}). Received: {got}"
        )
    states = []
    for name, s in zip(("h0", "c0"), initial_state):
        a = as_array(s, f"initial_state ({name})", like=x)
        check_numeric(a, f"initial_state ({name})")
        if tuple(a.shape) != (batch, units):
            raise ValueError(
                f"Argument `initial_state` ({name}) must have shape (batch, units) = "
                f"({batch}, {units}). Received: shape={tuple(a.shape)}"
            )
        states.append(a)
    return states


def check_weight_list(weights: Any, expected: list[tuple]) -> list:
    if not isinstance(weights, (list, tuple)) or len(weights) != len(expected):
        n = len(weights) if isinstance(weights, (list, tuple)) else type(weights).__name__
        raise ValueError(
            f"Argument `weights` must be a list of {len(expected)} arrays with shapes "
            f"{expected}. Received: {n}"
        )
    arrays = []
    for k, (w, shape) in enumerate(zip(weights, expected)):
        a = as_array(w, f"weights[{k}]")
        check_numeric(a, f"weights[{k}]")
        if tuple(a.shape) != tuple(shape):
            raise ValueError(
                f"Argument `weights[{k}]` must have shape {tuple(shape)}. "
                f"Received: shape={tuple(a.shape)}"
            )
        arrays.append(a)
    return arrays


def check_output_gradients(d_out: Any, shapes: list, like: Any,
                           names: str | None = None) -> list:
    """The gradient of a call's output, as a list mirroring it (None entries mean zero).

    shapes: the output's shapes; one shape means one array, several a tuple of arrays (named
    `names` in the message, e.g. "(d_output, d_h, d_c)"). The arrays must be of like's array
    library, numeric, and of the output's shapes.
    """
    if len(shapes) > 1:
        if not isinstance(d_out, (list, tuple)) or len(d_out) != len(shapes):
            got = (f"a {type(d_out).__name__} of length {len(d_out)}"
                   if isinstance(d_out, (list, tuple)) else type(d_out).__name__)
            tuple_ = f"a tuple {names}" if names else "a tuple"
            raise ValueError(f"Argument `d_out` must be {tuple_} of {len(shapes)} arrays (or "
                             f"None) mirroring the output, of shapes {shapes}. Received: {got}")
        items = list(d_out)
    else:
        if isinstance(d_out, (list, tuple)):
            raise ValueError("Argument `d_out` must be one array mirroring the output of shape "
                             f"{shapes[0]}. Received a {type(d_out).__name__} of length "
                             f"{len(d_out)}")
        items = [d_out]
    checked = []
    for k, (g, shape) in enumerate(zip(items, shapes)):
        if g is not None:
            g = as_array(g, f"d_out[{k}]", like=like)
            check_numeric(g, f"d_out[{k}]")
            if tuple(g.shape) != tuple(shape):
                raise ValueError(f"Argument `d_out[{k}]` must have the output's shape {shape}. "
                                 f"Received: shape={tuple(g.shape)}")
        checked.append(g)
    return checked
