"""The benchmark grid: cases, their inputs, weights and masks.

A `Case` is one problem (shapes, dtype, mode, mask kind, dropout, activations). `grid()` is
the cartesian product of the option lists. `make_data()` draws the inputs every path of a
case shares, from a seed derived from the case, so a run is reproducible and every path sees
exactly the same numbers.
"""
from __future__ import annotations

import itertools
import zlib
from dataclasses import asdict, dataclass, replace
from typing import Optional, Sequence

import numpy as np

MODES = ("inference", "training")
MASKS = ("none", "right", "left")
DTYPES = ("float32", "float64", "float16")


@dataclass(frozen=True)
class Case:
    batch: int
    timesteps: int
    features: int
    units: int
    dtype: str = "float32"
    mode: str = "inference"  # "inference" (forward) or "training" (forward + backward)
    mask: str = "none"  # "none", "right" (right-padded) or "left" (left-padded)
    recurrent_dropout: float = 0.0
    activation: str = "tanh"
    recurrent_activation: str = "sigmoid"
    bidirectional: bool = False  # wrapped in Bidirectional (merge_mode "concat")

    @property
    def output_units(self) -> int:
        """Width of the last output: 2 * units for a bidirectional (concat) case."""
        return 2 * self.units if self.bidirectional else self.units

    @property
    def training(self) -> bool:
        return self.mode == "training"

    @property
    def shape_label(self) -> str:
        return f"B={self.batch} T={self.timesteps} F={self.features} U={self.units}"

    @property
    def label(self) -> str:
        """One line naming everything about the case."""
        parts = [self.shape_label, self.dtype, self.mode]
        if self.bidirectional:
            parts.append("bidirectional")
        if self.mask != "none":
            parts.append(f"mask={self.mask}")
        if self.recurrent_dropout:
            parts.append(f"recurrent_dropout={self.recurrent_dropout:g}")
        if (self.activation, self.recurrent_activation) != ("tanh", "sigmoid"):
            parts.append(f"act={self.activation}/{self.recurrent_activation}")
        return " ".join(parts)

    @property
    def series_key(self) -> tuple:
        """Everything but the batch size: cases with the same key form one plot panel."""
        d = asdict(self)
        d.pop("batch")
        return tuple(d.items())

    def without_dropout(self) -> "Case":
        return replace(self, recurrent_dropout=0.0)

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Grid:
    """Lists of values; the grid is their cartesian product."""

    batch: Sequence[int]
    timesteps: Sequence[int]
    features: Sequence[int]
    units: Sequence[int]
    dtype: Sequence[str] = ("float32",)
    mode: Sequence[str] = ("inference",)
    mask: Sequence[str] = ("none",)
    recurrent_dropout: Sequence[float] = (0.0,)
    activation: Sequence[str] = ("tanh",)
    recurrent_activation: Sequence[str] = ("sigmoid",)
    bidirectional: Sequence[bool] = (False,)

    def cases(self) -> list[Case]:
        """Ordered so that cases differing only in batch size run one after another."""
        out = []
        for (bi, dt, mode, mask, rd, act, ract, t, f, u) in itertools.product(
                self.bidirectional, self.dtype, self.mode, self.mask, self.recurrent_dropout,
                self.activation, self.recurrent_activation, self.timesteps, self.features,
                self.units):
            for b in self.batch:
                out.append(Case(b, t, f, u, dt, mode, mask, float(rd), act, ract, bool(bi)))
        return out


# Default grids. The GPU grid finishes in well under two minutes on a current data-centre GPU
# (the NumPy reference, run once per case, is the slowest part); the CPU grid in well under a
# minute on two cores with the torch and Keras peers.
GPU_DEFAULT = Grid(batch=(1, 8, 32, 128, 512), timesteps=(100,), features=(128,), units=(256,),
                   mode=("inference", "training"))
CPU_DEFAULT = Grid(batch=(1, 8, 32, 128), timesteps=(50,), features=(32,), units=(64,),
                   mode=("inference", "training"))
QUICK = Grid(batch=(2, 8), timesteps=(8,), features=(4,), units=(8,),
             mode=("inference", "training"))


@dataclass
class CaseData:
    """The NumPy arrays every path of one case starts from."""

    x: np.ndarray  # (B, T, F)
    mask: Optional[np.ndarray]  # (B, T) bool or None
    lengths: Optional[np.ndarray]  # (B,) valid steps per sample, or None
    # [kernel (F, 4U), recurrent_kernel (U, 4U), bias (4U,)], Keras layout; bidirectional:
    # the forward direction's three, then the backward direction's (Keras's get_weights order)
    weights: list
    d_out: Optional[np.ndarray]  # (B, U) (bidirectional: (B, 2U)) gradient of the last output
    seed: int


def case_seed(case: Case, seed: int) -> int:
    """A seed that depends on the case and the run seed only (stable across processes)."""
    return zlib.crc32(f"{seed}:{case.label}".encode())


def make_mask(kind: str, batch: int, timesteps: int, rng: np.random.Generator):
    """(mask (B, T) bool, lengths (B,)) for `kind`, or (None, None) for "none".

    Lengths are drawn from [1, T] with the first sample full length, so the longest sequence
    spans every step and no sample is empty. "right": valid steps first, padding after.
    "left": padding first, valid steps last.
    """
    if kind == "none":
        return None, None
    if kind not in ("right", "left"):
        raise ValueError(f"unknown mask kind {kind!r}; expected one of {MASKS}")
    lengths = rng.integers(1, timesteps + 1, size=batch)
    lengths[0] = timesteps
    steps = np.arange(timesteps)[None, :]
    if kind == "right":
        mask = steps < lengths[:, None]
    else:
        mask = steps >= (timesteps - lengths)[:, None]
    return mask, lengths


def make_weights(features: int, units: int, rng: np.random.Generator, dtype) -> list:
    """Keras-like initial weights: glorot-uniform kernel, orthogonal recurrent kernel,
    forget-gate bias of one (plus a little noise so a bias bug cannot hide)."""
    limit = np.sqrt(6.0 / (features + 4 * units))
    kernel = rng.uniform(-limit, limit, size=(features, 4 * units))
    q, r = np.linalg.qr(rng.standard_normal((4 * units, units)))
    recurrent = (q * np.sign(np.diag(r))).T  # (units, 4 units), orthonormal rows
    bias = 0.1 * rng.standard_normal(4 * units)
    bias[units:2 * units] += 1.0
    return [np.ascontiguousarray(w, dtype=dtype) for w in (kernel, recurrent, bias)]


def make_data(case: Case, seed: int = 0) -> CaseData:
    s = case_seed(case, seed)
    rng = np.random.default_rng(s)
    dtype = np.dtype(case.dtype)
    x = rng.standard_normal((case.batch, case.timesteps, case.features)).astype(dtype)
    mask, lengths = make_mask(case.mask, case.batch, case.timesteps, rng)
    weights = make_weights(case.features, case.units, rng, dtype)
    if case.bidirectional:
        weights += make_weights(case.features, case.units, rng, dtype)
    d_out = (rng.standard_normal((case.batch, case.output_units)).astype(dtype)
             if case.training else None)
    return CaseData(x=x, mask=mask, lengths=lengths, weights=weights, d_out=d_out, seed=s)
