"""Run the registry's paths over the grid: each case against the float64 reference.

A path that cannot run here is reported with its reason and not counted. A case the path
does not take (its dtypes, or its `declines` rule: cuDNN and a mask with holes) is skipped
with the reason. Anything a case raises is that case's failure, anything a path raises
outside a case (its module does not import) is that path's failure; the next path runs
either way. References are computed once per case and dtype and shared by every path.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional, Sequence

from .compare import Comparison
from .compute import (check_layer_case, check_problem, environment, reference_layer,
                      reference_path)
from .data import layer_data, problem_data
from .grid import LayerCase, Problem, layer_cases, path_problems
from .registry import CheckPath

PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"


@dataclass
class CaseResult:
    path: str
    group: str
    case: str
    dtype: str
    status: str
    comparison: Optional[Comparison] = None
    reason: Optional[str] = None  # why skipped, or what failed besides the numbers
    seconds: float = 0.0
    ran: Optional[list] = None  # layer cases: the path each call ran
    reasons: Optional[list] = None  # layer cases on a GPU: the cuDNN rules that failed
    warnings: list = field(default_factory=list)

    def to_json(self) -> dict:
        c = self.comparison
        return {"path": self.path, "group": self.group, "case": self.case, "dtype": self.dtype,
                "status": self.status, "reason": self.reason, "seconds": round(self.seconds, 4),
                "error": None if c is None else c.error,
                "tolerance": None if c is None else c.tolerance,
                "worst_array": None if c is None else c.array,
                "ran": self.ran, "cudnn_rules_failed": self.reasons, "warnings": self.warnings}


@dataclass
class PathOutcome:
    path: CheckPath
    unavailable: Optional[str] = None
    results: list = field(default_factory=list)
    counters: Optional[dict] = None  # the change of `path.counters()` over the run
    crash: Optional[str] = None  # a failure outside any case

    @property
    def failed(self) -> int:
        return sum(r.status == FAILED for r in self.results) + (self.crash is not None)

    @property
    def passed(self) -> int:
        return sum(r.status == PASSED for r in self.results)


def _text(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"


def unavailable(path: CheckPath) -> Optional[str]:
    """Why `path` cannot run here (None when it can); a failing check is a reason too."""
    try:
        return path.unavailable()
    except Exception as e:
        return f"its availability check failed: {_text(e)}"


class Checker:
    """Runs paths over the cases of one tier, in the given dtypes."""

    def __init__(self, tier: str, dtypes: Sequence[str]):
        self.problems: list[Problem] = path_problems(tier)
        self.layer_cases: list[LayerCase] = layer_cases(tier)
        self.dtypes = list(dtypes)
        self._cache: dict = {}

    def _cached(self, key: Any, make: Callable[[], Any]) -> Any:
        if key not in self._cache:
            try:
                self._cache[key] = (make(), None)
            except Exception as e:
                self._cache[key] = (None, _text(e))
        value, error = self._cache[key]
        if error is not None:
            raise _NoReference(f"no reference: {error}")
        return value

    def run(self, paths: Sequence[CheckPath]) -> Iterator[PathOutcome]:
        for path in paths:
            yield self.run_path(path)

    def run_path(self, path: CheckPath) -> PathOutcome:
        outcome = PathOutcome(path, unavailable(path))
        if outcome.unavailable:
            return outcome
        try:
            with environment(path.environ):
                self._run_available(path, outcome)
        except Exception as e:
            outcome.crash = _text(e)
        finally:
            _release_gpu_memory()
        return outcome

    def _run_available(self, path: CheckPath, outcome: PathOutcome) -> None:
        space = path.space()
        if path.reset is not None:
            path.reset()
        before = path.counters() if path.counters else None
        if path.module is not None:
            module = path.module()
            for problem in self.problems:
                for dtype in self.dtypes:
                    outcome.results.append(self._problem(path, module, space, problem, dtype))
        if path.layer is not None:
            for case in self.layer_cases:
                if case.group in path.layer.groups:
                    for dtype in self.dtypes:
                        outcome.results.append(self._layer(path, space, case, dtype))
        if before is not None:
            after = path.counters()
            outcome.counters = {k: after.get(k, 0) - before.get(k, 0) for k in after}
            why = path.counters_problem(outcome.counters) if path.counters_problem else None
            text = ", ".join(f"{k} {v}" for k, v in outcome.counters.items())
            outcome.results.append(CaseResult(
                path.name, "counters", "counters over the run", "-", FAILED if why else PASSED,
                reason=f"{why} ({text})" if why else text))

    # -- one problem through the path contract

    def _problem(self, path: CheckPath, module, space, problem: Problem,
                 dtype: str) -> CaseResult:
        res = CaseResult(path.name, problem.group, problem.label, dtype, SKIPPED)
        if dtype not in path.dtypes:
            res.reason = f"the path takes {', '.join(path.dtypes)}"
            return res
        started = time.perf_counter()
        try:
            data = self._cached(("data", problem, dtype), lambda: problem_data(problem, dtype))
            res.reason = path.declines(problem, data)
            if res.reason:
                return res
            want = self._cached(("ref", problem, dtype), lambda: reference_path(problem, data))
            started = time.perf_counter()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                res.comparison = check_problem(module, space, problem, data, want, path.calls)
            res.warnings = [str(w.message) for w in caught]
            res.status = PASSED if res.comparison.passed else FAILED
        except Exception as e:
            res.status, res.reason = FAILED, _text(e)
        res.seconds = time.perf_counter() - started
        return res

    # -- one layer case through the public layer

    def _layer(self, path: CheckPath, space, case: LayerCase, dtype: str) -> CaseResult:
        route = path.layer
        res = CaseResult(path.name, case.group, case.label, dtype, SKIPPED)
        started = time.perf_counter()
        try:
            data = self._cached(("layer data", case, dtype), lambda: layer_data(case, dtype))
            want = self._cached(("layer ref", case, dtype), lambda: reference_layer(case, data))
            started = time.perf_counter()
            check = check_layer_case(case, data, space, want, route.use_cudnn,
                                     route.activation, route.expected)
            res.reasons, res.warnings = check.reasons, check.warnings
            if check.declined:
                res.reason = check.declined
                return res
            res.ran = [list(r) for r in check.ran]
            res.comparison = check.comparison
            res.reason = check.wrong_path
            res.status = PASSED if check.passed else FAILED
        except Exception as e:
            res.status, res.reason = FAILED, _text(e)
        res.seconds = time.perf_counter() - started
        return res


class _NoReference(Exception):
    pass


def _release_gpu_memory() -> None:
    """Hand CuPy's cached blocks back between paths (one path's pool must not starve the
    next path's library)."""
    import sys

    cupy = sys.modules.get("cupy")
    if cupy is None:
        return
    try:
        cupy.get_default_memory_pool().free_all_blocks()
    except Exception:
        pass
