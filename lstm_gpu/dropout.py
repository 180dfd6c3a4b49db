"""Dropout masks for one call, drawn once and constant over time (Keras 3 >= 3.8).

A mask entry is 0 with probability `rate`, else ``1 / (1 - rate)`` (inverted dropout).
implementation 2: one input mask shared by the four gates. implementation 1 (and any
recurrent dropout, which forces it): four input masks and four recurrent masks, one per gate
i, f, c, o. Masks are drawn with the array library of the inputs, from a generator seeded
by the layer's `seed`, so a seeded layer's sequence of masks is reproducible.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from ._xp import array_module, is_cupy_array
from .paths.base import DropoutMasks


class MaskGenerator:
    """One random stream per array library, created lazily from the seed."""

    def __init__(self, seed: Optional[int]):
        self.seed = seed
        self._generators: dict[str, Any] = {}

    def _generator(self, like):
        key = "cupy" if is_cupy_array(like) else "numpy"
        if key not in self._generators:
            self._generators[key] = array_module(like).random.default_rng(self.seed)
        return self._generators[key]

    def draw(self, like, shape: tuple, rate: float, dtype):
        """A (shape) mask of `dtype` on like's library: 0 or 1/(1-rate)."""
        xp = array_module(like)
        keep = self._generator(like).random(shape) >= rate
        return keep.astype(dtype) * xp.asarray(1.0 / (1.0 - rate), dtype=dtype)


def draw_masks(generator: MaskGenerator, like, *, batch: int, features: int, units: int,
               dropout: float, recurrent_dropout: float, implementation: int,
               dtype) -> Optional[DropoutMasks]:
    """The masks of one training call, or None when both rates are 0."""
    if dropout <= 0 and recurrent_dropout <= 0:
        return None
    dtype = np.dtype(dtype)
    inputs = recurrent = None
    if dropout > 0:
        count = 1 if implementation == 2 else 4
        inputs = generator.draw(like, (count, batch, features), dropout, dtype)
    if recurrent_dropout > 0:
        recurrent = generator.draw(like, (4, batch, units), recurrent_dropout, dtype)
    return DropoutMasks(inputs=inputs, recurrent=recurrent)
