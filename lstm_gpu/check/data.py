"""The arrays of the grid's cases.

Every array is drawn in float64 from a seed derived from the case's label, then rounded to
the dtype under check. The reference runs in float64 on exactly those rounded values
(`ProblemData.cast(np.float64)`), so a float32 path is compared with the exact result of its
own inputs, not with another float32 computation. Dropout masks keep 80% of the entries and
hold 0 or 1.25, which every dtype represents exactly.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, fields, replace
from typing import Any, Optional

import numpy as np

from ..paths.base import DropoutMasks, Weights
from .grid import LayerCase, Problem

KEEP = 0.8  # dropout keep probability: masks hold 0 or 1 / KEEP = 1.25


def case_seed(label: str) -> int:
    """A seed that depends on the case label only (stable across processes and dtypes)."""
    return zlib.crc32(label.encode())


def make_mask(kind: str, steps: int, batch: int,
              rng: np.random.Generator) -> Optional[np.ndarray]:
    """A (T, B) bool mask of one of `grid.MASK_KINDS`, or None for "none".

    Row 0 is always full length where rows have lengths, so the longest sequence spans T.
    """
    if kind == "none":
        return None
    steps_col = np.arange(steps)[:, None]
    if kind == "all_masked":
        return np.zeros((steps, batch), bool)
    lengths = rng.integers(1, steps + 1, size=batch)
    lengths[0] = steps
    if kind == "holes":
        mask = steps_col < lengths[None, :]
        for b in range(batch):
            if lengths[b] >= 3:  # valid, masked, valid
                mask[rng.integers(1, lengths[b] - 1), b] = False
        return mask
    if kind == "right":
        start = np.zeros(batch, int)
    elif kind == "left":
        start = steps - lengths
    elif kind == "both":
        start = rng.integers(0, steps - lengths + 1)
    elif kind == "fully_masked":
        start = np.where(np.arange(batch) % 2 == 1, steps - lengths, 0)
        empty = rng.permutation(np.arange(1, batch))[:max(1, batch // 3)]
        lengths[empty] = 0
    else:
        raise ValueError(f"unknown mask kind {kind!r}")
    return (steps_col >= start[None, :]) & (steps_col < (start + lengths)[None, :])


def _cast(value: Any, dtype) -> Any:
    """Float arrays (and those inside Weights / DropoutMasks / lists) to `dtype`."""
    if isinstance(value, np.ndarray):
        return value.astype(dtype) if value.dtype.kind == "f" else value
    if isinstance(value, (Weights, DropoutMasks)):
        return replace(value, **{f.name: _cast(getattr(value, f.name), dtype)
                                 for f in fields(value)})
    if isinstance(value, list):
        return [_cast(v, dtype) for v in value]
    return value


@dataclass
class ProblemData:
    """The arrays of one `Problem`, NumPy, time-major in processing order.

    x (T, B, F); mask (T, B) bool or None; h0, c0 (B, U); weights in Keras layout (bias None
    without bias); dropout masks (inputs (G, B, F), recurrent (4, B, U)) or None; the
    upstream gradients of backward: d_last (B, U), d_sequence (T, B, U), d_h, d_c (B, U).
    """

    x: np.ndarray
    mask: Optional[np.ndarray]
    h0: np.ndarray
    c0: np.ndarray
    weights: Weights
    dropout: Optional[DropoutMasks]
    d_last: np.ndarray
    d_sequence: np.ndarray
    d_h: np.ndarray
    d_c: np.ndarray

    @property
    def dtype(self) -> np.dtype:
        return self.x.dtype

    def cast(self, dtype) -> "ProblemData":
        return ProblemData(**{f.name: _cast(getattr(self, f.name), dtype) for f in fields(self)})


def problem_data(problem: Problem, dtype) -> ProblemData:
    """The arrays of `problem`, rounded to `dtype`."""
    s = problem.shape
    T, B, F, U = s.steps, s.batch, s.features, s.units
    rng = np.random.default_rng(case_seed(problem.label))
    normal = rng.standard_normal
    x = normal((T, B, F))
    mask = make_mask(problem.mask, T, B, rng)
    h0, c0 = (0.5 * normal((B, U)) for _ in range(2))
    if not problem.initial_state:
        h0, c0 = np.zeros_like(h0), np.zeros_like(c0)
    weights = Weights(normal((F, 4 * U)) / np.sqrt(F), normal((U, 4 * U)) / np.sqrt(U),
                      0.3 * normal(4 * U) if problem.use_bias else None)
    dropout = None
    if problem.input_dropout or problem.recurrent_dropout:
        keep = lambda *shape: (rng.random(shape) < KEEP) / KEEP  # noqa: E731
        dropout = DropoutMasks(
            inputs=keep(problem.input_dropout, B, F) if problem.input_dropout else None,
            recurrent=keep(4, B, U) if problem.recurrent_dropout else None)
    data = ProblemData(x, mask, h0, c0, weights, dropout, d_last=normal((B, U)),
                       d_sequence=normal((T, B, U)), d_h=normal((B, U)), d_c=normal((B, U)))
    return data.cast(dtype)


# ------------------------------------------------------------------------------ layer cases


@dataclass
class LayerData:
    """The arrays of one `LayerCase`, NumPy, in the layer's own layout.

    inputs: one (B, T, F) array per call ((T, B, F) with time_major); mask (B, T) ((T, B)
    with time_major) or None; initial_state [h0, c0] ([h_fw, c_fw, h_bw, c_bw] for
    Bidirectional), each (B, U), or None; weights in `get_weights` order. `upstream` draws
    the output gradients of one call, rounded like the rest.
    """

    inputs: list
    mask: Optional[np.ndarray]
    initial_state: Optional[list]
    weights: list
    seed: int
    rounding: np.dtype  # the dtype the data was rounded to
    dtype: np.dtype  # the dtype the arrays are held in (float64 for the reference)

    def cast(self, dtype) -> "LayerData":
        return replace(self, inputs=_cast(self.inputs, dtype),
                       initial_state=_cast(self.initial_state, dtype),
                       weights=_cast(self.weights, dtype), dtype=np.dtype(dtype))

    def upstream(self, call: int, shapes: list) -> list:
        """Output gradients of call `call` (0-based), one per output shape."""
        rng = np.random.default_rng([self.seed, call])
        return [rng.standard_normal(s).astype(self.rounding).astype(self.dtype) for s in shapes]


def layer_data(case: LayerCase, dtype) -> LayerData:
    """The arrays of `case`, rounded to `dtype`."""
    s = case.shape
    T, B, F, U = s.steps, s.batch, s.features, s.units
    seed = case_seed(case.label)
    rng = np.random.default_rng(seed)
    normal = rng.standard_normal
    layout = (T, B, F) if case.time_major else (B, T, F)
    inputs = [normal(layout) for _ in range(case.calls)]
    mask = make_mask(case.mask, T, B, rng)
    if mask is not None and not case.time_major:
        mask = np.ascontiguousarray(mask.T)
    directions = 2 if case.wrapper == "bidirectional" else 1
    use_bias = case.options.get("use_bias", True)
    weights = []
    for _ in range(directions):
        weights += [normal((F, 4 * U)) / np.sqrt(F), normal((U, 4 * U)) / np.sqrt(U)]
        if use_bias:
            weights.append(0.3 * normal(4 * U))
    initial_state = None
    if case.initial_state:
        initial_state = [0.5 * normal((B, U)) for _ in range(2 * directions)]
    data = LayerData(inputs, mask, initial_state, weights, seed, np.dtype(dtype),
                     np.dtype(np.float64))
    return data.cast(dtype)
