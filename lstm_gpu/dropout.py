"""Dropout masks for one call, drawn once and constant over time (Keras 3 >= 3.8).

A mask entry is 0 with probability `rate`, else ``1 / (1 - rate)`` (inverted dropout).
implementation 2: one input mask shared by the four gates. implementation 1 (and any
recurrent dropout, which forces it): four input masks and four recurrent masks, one per gate
i, f, c, o.

The stream is counter-based, like Keras 3's SeedGenerator: call n of a layer draws its masks
from a generator seeded by (the layer's seed, n). Its whole state is `MaskGenerator.position`,
so the layer can restore it when a call fails (the next call then draws what it would have
drawn), and it pickles and copies with the layer. A seeded layer's masks are reproducible.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from ._xp import array_module, cupy_module, is_cupy_array
from .paths.base import DropoutMasks

# cuRAND states of one call's CuPy generator. CuPy's samplers run one thread per state in a
# loop over the output with stride = the state count (`execute_dist` and `kernel_launcher` in
# cupy/random/cupy_distributions.cu), so any count is correct; a small one keeps the per-call
# state allocation and initialisation (`init_curand`: curand_init(seed, id, 0) per state)
# cheap. Philox, not CuPy's default XORWOW, because a generator is made on every call: the
# cuRAND guide (Device API, "Pseudorandom Sequences") spaces subsequences 2**67 draws apart,
# which XORWOW's curand_init reaches with jump-matrix products (slow for many states) and
# Philox by setting its counter.
CUPY_STATES = 1 << 14


class MaskGenerator:
    """The dropout stream of one layer: `entropy` (the seed, or fresh OS entropy drawn once
    when the seed is None) and `position`, the number of generators handed out so far."""

    def __init__(self, seed: Optional[int]):
        self.entropy = np.random.SeedSequence(seed).entropy
        self.position = 0

    def next_generator(self, like):
        """The generator of the next call, on like's library; advances `position`."""
        seq = np.random.SeedSequence(self.entropy, spawn_key=(self.position,))
        self.position += 1
        if is_cupy_array(like):
            cp = cupy_module()
            return cp.random.default_rng(cp.random.Philox4x3210(seq, size=CUPY_STATES))
        return np.random.Generator(np.random.PCG64(seq))


def _draw(rng, like, shape: tuple, rate: float, dtype):
    """A (shape) mask of `dtype` on like's library: 0 or 1/(1-rate)."""
    keep = rng.random(shape) >= rate
    return keep.astype(dtype) * array_module(like).asarray(1.0 / (1.0 - rate), dtype=dtype)


def draw_masks(generator: MaskGenerator, like, *, batch: int, features: int, units: int,
               dropout: float, recurrent_dropout: float, implementation: int,
               dtype) -> Optional[DropoutMasks]:
    """The masks of one training call, or None when both rates are 0."""
    if dropout <= 0 and recurrent_dropout <= 0:
        return None
    dtype = np.dtype(dtype)
    rng = generator.next_generator(like)
    inputs = recurrent = None
    if dropout > 0:
        count = 1 if implementation == 2 else 4
        inputs = _draw(rng, like, (count, batch, features), dropout, dtype)
    if recurrent_dropout > 0:
        recurrent = _draw(rng, like, (4, batch, units), recurrent_dropout, dtype)
    return DropoutMasks(inputs=inputs, recurrent=recurrent)
