"""Run the grid: for each case, check every path against the NumPy path, then time it.

Order inside one case (all paths in this one process, so they share the machine's state):

1. Draw the inputs and weights once (`cases.make_data`).
2. For each path: skip it with a reason when it cannot run here or cannot run this case;
   otherwise prepare it and compare one call's outputs (last output and, when training, the
   input gradient) with the NumPy path's. A mismatch or an exception is reported and the path
   is not timed: a fast wrong path must not win.
3. Time the paths that passed (`timing.measure`).

Training with recurrent dropout draws random masks. A path that cannot draw the NumPy path's
masks is checked on the same case without dropout (same weights and inputs), then timed with
dropout after a check that its outputs are finite; the result says so.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np

from .cases import Case, CaseData, make_data
from .runners import Outputs, PathSkipped, Runner
from .timing import Stats, measure

OK, SKIPPED, MISMATCH, ERROR = "ok", "skipped", "mismatch", "error"

# (rtol, atol) per dtype for the check; atol is scaled by the largest reference magnitude
# (at least 1), so gradients summed over many steps are judged on their own scale.
TOLERANCES = {"float64": (1e-7, 1e-9), "float32": (1e-4, 1e-5), "float16": (2e-2, 2e-2)}


@dataclass
class Check:
    max_abs_diff: float
    rtol: float
    atol: float
    compared: list  # "last_output", "input_gradient"
    on: str = "same case"  # or "same case without recurrent dropout"
    passed: bool = True
    worst: str = ""  # which output had the largest violation

    def to_json(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Result:
    case: Case
    path: str
    label: str
    device: str
    status: str
    reason: Optional[str] = None
    check: Optional[Check] = None
    stats: Optional[Stats] = None
    baseline: Optional[str] = None
    ratio: Optional[float] = None  # median time / baseline median time

    @property
    def per_step_s(self) -> Optional[float]:
        return None if self.stats is None else self.stats.median / self.case.timesteps

    def to_json(self) -> dict:
        return {
            "case": self.case.to_json(), "path": self.path, "label": self.label,
            "device": self.device, "status": self.status, "reason": self.reason,
            "check": None if self.check is None else self.check.to_json(),
            "timing": None if self.stats is None else self.stats.to_json(),
            "per_step_s": self.per_step_s, "baseline": self.baseline, "ratio": self.ratio,
        }


@dataclass
class Settings:
    repeats: int = 10
    warmup: int = 2
    budget_s: Optional[float] = 2.0  # per path and case; caps repeats (never below 3)
    seed: int = 0
    baseline: str = "numpy"
    tolerances: dict = field(default_factory=lambda: dict(TOLERANCES))
    # Pause before timing a CPU path: worker threads that the previous path's library left
    # spinning (OpenBLAS's spin for about 0.1 s after a call, OpenMP runtimes' for a while
    # too) would otherwise take a core from the path being timed.
    settle_s: float = 0.0


def compare(ref: Outputs, got: Outputs, dtype: str, tolerances=None) -> Check:
    """Compare a path's outputs with the reference's."""
    rtol, atol = (tolerances or TOLERANCES)[dtype]
    pairs = [("last_output", ref.last, got.last)]
    if ref.dx is not None:
        pairs.append(("input_gradient", ref.dx, got.dx))
    check = Check(max_abs_diff=0.0, rtol=rtol, atol=atol, compared=[p[0] for p in pairs])
    worst_excess = -np.inf
    for name, r, g in pairs:
        r = np.asarray(r, dtype=np.float64)
        g = None if g is None else np.asarray(g, dtype=np.float64)
        if g is None or g.shape != r.shape:
            got_shape = None if g is None else g.shape
            check.passed, check.worst = False, f"{name}: shape {got_shape} != {r.shape}"
            check.max_abs_diff = float("inf")
            return check
        diff = np.abs(g - r)
        diff[np.isnan(diff)] = np.inf
        bound = atol * max(1.0, float(np.max(np.abs(r), initial=0.0))) + rtol * np.abs(r)
        excess = float(np.max(diff - bound, initial=-np.inf))
        check.max_abs_diff = max(check.max_abs_diff, float(np.max(diff, initial=0.0)))
        if excess > worst_excess:
            worst_excess, check.worst = excess, name
        if excess > 0:
            check.passed = False
    return check


class Bench:
    """Runs cases over runners; `progress(done, total, text)` is told before each step."""

    def __init__(self, runners: Sequence[Runner], settings: Settings,
                 reference: Optional[Runner] = None,
                 progress: Optional[Callable[[int, int, str], None]] = None):
        self.runners = list(runners)
        self.settings = settings
        self.reference = reference or next(r for r in self.runners if r.name == "numpy")
        self.progress = progress or (lambda done, total, text: None)
        self._unavailable = {r.name: r.unavailable() for r in self.runners}
        self._reference_unavailable = (self._unavailable.get(self.reference.name)
                                       if self.reference in self.runners
                                       else self.reference.unavailable())

    def unavailable(self, name: str) -> Optional[str]:
        return self._unavailable.get(name)

    def run(self, cases: Sequence[Case]) -> list[Result]:
        results: list[Result] = []
        total, done = len(cases) * len(self.runners), 0
        for case in cases:
            data = make_data(case, self.settings.seed)
            refs: dict[Case, Outputs] = {}
            case_results = []
            for runner in self.runners:
                self.progress(done, total, f"{case.label} | {runner.name}")
                case_results.append(self._one(case, data, runner, refs))
                done += 1
            self._ratios(case_results)
            results.extend(case_results)
            _release_device_memory()
        self.progress(total, total, "done")
        return results

    # -- one path on one case

    def _reference(self, case: Case, data: CaseData, refs: dict) -> Outputs:
        if case not in refs:
            if self._reference_unavailable:
                raise _NoReference(f"no reference: {self._reference_unavailable}")
            try:
                refs[case] = self.reference.prepare(case, data).fetch()
            except Exception as e:
                raise _NoReference(f"no reference: the {self.reference.name} path failed: "
                                   f"{type(e).__name__}: {e}") from e
        return refs[case]

    def _one(self, case: Case, data: CaseData, runner: Runner, refs: dict) -> Result:
        res = Result(case=case, path=runner.name, label=runner.label, device=runner.device,
                     status=SKIPPED)
        res.reason = self.unavailable(runner.name) or runner.unsupported(case)
        if res.reason:
            return res
        dropout_differs = (case.training and case.recurrent_dropout > 0
                           and not runner.same_dropout_as_reference)
        check_case = case.without_dropout() if dropout_differs else case
        try:
            prepared = runner.prepare(check_case, data)
            if runner is self.reference:  # computed once per case, shared with the others
                got = ref = self._reference(check_case, data, refs)
            else:
                got = prepared.fetch()
                ref = self._reference(check_case, data, refs)
            res.check = compare(ref, got, case.dtype, self.settings.tolerances)
            if dropout_differs:
                res.check.on = "same case without recurrent dropout"
            if not res.check.passed:
                res.status = MISMATCH
                res.reason = (f"{res.check.worst} differs from the {self.reference.name} "
                              f"path: max |diff| {res.check.max_abs_diff:.3g} "
                              f"(rtol {res.check.rtol:g}, atol {res.check.atol:g})")
                return res
            if dropout_differs:
                prepared = runner.prepare(case, data)
                _require_finite(prepared.fetch())
            s = self.settings
            if runner.device == "cpu" and s.settle_s > 0:
                time.sleep(s.settle_s)
            res.stats = measure(prepared.run, prepared.timer, repeats=s.repeats,
                                warmup=s.warmup, budget_s=s.budget_s)
            res.status = OK
        except PathSkipped as e:
            res.status, res.reason = SKIPPED, str(e)
        except _NoReference as e:
            res.status, res.reason = ERROR, str(e)
        except Exception as e:  # reported, never timed
            res.status, res.reason = ERROR, f"{type(e).__name__}: {e}"
        return res

    def _ratios(self, case_results: list[Result]) -> None:
        ok = {r.path: r for r in case_results if r.status == OK}
        base = ok.get(self.settings.baseline) or ok.get(self.reference.name)
        for r in case_results:
            if base is not None and r.stats is not None:
                r.baseline = base.path
                r.ratio = r.stats.median / base.stats.median


class _NoReference(Exception):
    pass


def _require_finite(out: Outputs) -> None:
    for name, a in (("last output", out.last), ("input gradient", out.dx)):
        if a is not None and not np.all(np.isfinite(np.asarray(a, dtype=np.float64))):
            raise ValueError(f"non-finite values in the {name}")


def _release_device_memory() -> None:
    """Give cached GPU memory back between cases, so one path's pool does not starve the
    next path's library (CuPy and torch keep separate pools)."""
    import sys

    cupy = sys.modules.get("cupy")
    torch = sys.modules.get("torch")
    try:
        if cupy is not None and cupy.cuda.runtime.getDeviceCount() > 0:
            cupy.get_default_memory_pool().free_all_blocks()
    except Exception:
        pass
    try:
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:
        pass
