"""How a path's numbers are judged: tolerances and the worst error over named arrays.

The error of one array is ``max |got - want| / max(1, max |want|)``: relative to the largest
magnitude of the expected array (at least 1), since a weight gradient sums B * T terms and its
small entries carry the rounding of its large ones. NaN or Inf where the reference is finite
is an infinite error. The tolerances are those of the GPU tests (DESIGN.md section 6): float64
1e-10; float32 1e-5 for outputs and 1e-4 for gradients (tests/gpu/test_cudnn_path.py's
factor of ten for sums over B * T); float16 (stored in float16, computed in float32) 2e-2 and
5e-2.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Optional

import numpy as np

# dtype -> (outputs, gradients)
TOLERANCES = {"float64": (1e-10, 1e-10), "float32": (1e-5, 1e-4), "float16": (2e-2, 5e-2)}
METRIC = "max |got - want| / max(1, max |want|) per array, against the float64 NumPy " \
         "reference on the same rounded inputs"


def tolerance(dtype, gradient: bool) -> float:
    return TOLERANCES[np.dtype(dtype).name][1 if gradient else 0]


def describe_tolerances() -> str:
    """One line naming every tolerance, for the command's output."""
    parts = [f"{d} {o:g}" if o == g else f"{d} {o:g} (outputs) / {g:g} (gradients)"
             for d, (o, g) in TOLERANCES.items()]
    return "; ".join(parts)


def scaled_error(got, want) -> float:
    """``max |got - want| / max(1, max |want|)``; inf on a shape mismatch or a non-finite
    value where `want` is finite."""
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    if got.shape != want.shape:
        return float("inf")
    if want.size == 0:
        return 0.0
    diff = np.abs(got - want)
    diff[~np.isfinite(diff)] = np.inf
    return float(np.max(diff)) / max(1.0, float(np.max(np.abs(want))))


@dataclass
class Computed:
    """What one run produced, as NumPy arrays by name: outputs and gradients apart, since
    they have different tolerances. None stands for an absent array (no bias gradient)."""

    outputs: dict = field(default_factory=dict)
    gradients: dict = field(default_factory=dict)


@dataclass
class Comparison:
    """The worst array of a comparison, judged by error / tolerance."""

    passed: bool = True
    error: float = 0.0
    tolerance: float = 0.0
    array: str = ""  # the name of the worst array
    problem: str = ""  # a shape or presence mismatch, said in words

    @property
    def ratio(self) -> float:
        return self.error / self.tolerance if self.tolerance else 0.0

    def describe(self) -> str:
        if self.problem:
            return f"{self.array}: {self.problem}"
        verdict = "within" if self.passed else "exceeds"
        return f"{self.array}: error {self.error:.3g} {verdict} tolerance {self.tolerance:g}"

    def worse(self, other: "Comparison") -> "Comparison":
        """The worse of two comparisons (a failure beats a pass, then the larger ratio)."""
        if self.passed != other.passed:
            return other if self.passed else self
        return other if other.ratio > self.ratio else self


def compare(got: Computed, want: Computed, dtype) -> Comparison:
    """Every array of `want` against `got`'s array of the same name."""
    worst = Comparison(tolerance=tolerance(dtype, False))
    for gradient, wanted, have in ((False, want.outputs, got.outputs),
                                   (True, want.gradients, got.gradients)):
        worst = worst.worse(_compare_group(have, wanted, tolerance(dtype, gradient)))
    return worst


def _compare_group(got: Mapping, want: Mapping, tol: float) -> Comparison:
    worst = Comparison(tolerance=tol)
    for name, w in want.items():
        g = got.get(name)
        problem = _presence_problem(name in got, g, w)
        if problem:
            return Comparison(False, float("inf"), tol, name, problem)
        if w is None:
            continue
        err = scaled_error(g, w)
        c = Comparison(err <= tol, err, tol, name)
        if np.shape(g) != np.shape(w):
            c.problem = f"shape {np.shape(g)}, expected {np.shape(w)}"
        worst = worst.worse(c)
    return worst


def _presence_problem(present: bool, got, want) -> Optional[str]:
    if not present:
        return "missing"
    if (got is None) != (want is None):
        return "None, expected an array" if got is None else "an array, expected None"
    return None
