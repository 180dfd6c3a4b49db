"""What `lstm-gpu-check` prints and writes: the environment, a table with one line per
(path, case group), the dispatcher's choices, the failing cases, and `N passed, M failed`;
the same as JSON for a bug report."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Optional, Sequence

from .compare import METRIC, TOLERANCES, Comparison, describe_tolerances
from .environment import Fact
from .runner import FAILED, PASSED, SKIPPED, CaseResult, PathOutcome

SCHEMA = "lstm-gpu-check/1"
SHOWN_FAILURES = 5  # failing cases listed under a table line; the JSON has all of them
HEADER = (f"  {'path':<20} {'group':<12} {'result':<7} {'passed':>6} {'failed':>6} "
          f"{'skipped':>7}  {'worst error (tolerance)':<26} {'time':>8}")


@dataclass
class Line:
    """One table line: the results of one path in one case group."""

    path: str
    group: str
    passed: int
    failed: int
    skipped: int
    worst: Optional[Comparison]
    seconds: float
    failures: list
    note: str = ""

    @property
    def result(self) -> str:
        return "FAIL" if self.failed else ("PASS" if self.passed else "-")

    def to_json(self) -> dict:
        w = self.worst
        return {"path": self.path, "group": self.group, "result": self.result,
                "passed": self.passed, "failed": self.failed, "skipped": self.skipped,
                "worst_error": None if w is None else w.error,
                "tolerance": None if w is None else w.tolerance,
                "seconds": round(self.seconds, 3), "note": self.note}


def lines(outcome: PathOutcome) -> list[Line]:
    """The table lines of one path, one per case group in the order the groups ran."""
    groups: dict[str, list[CaseResult]] = {}
    for r in outcome.results:
        groups.setdefault(r.group, []).append(r)
    out = []
    for group, results in groups.items():
        worst = None
        for r in results:
            if r.comparison is not None:
                worst = r.comparison if worst is None else worst.worse(r.comparison)
        counters = group == "counters" and results[0].status == PASSED
        note = (results[0].reason or "") if counters else ""
        out.append(Line(outcome.path.name, group, sum(r.status == PASSED for r in results),
                        sum(r.status == FAILED for r in results),
                        sum(r.status == SKIPPED for r in results), worst,
                        sum(r.seconds for r in results),
                        [r for r in results if r.status == FAILED], note))
    return out


def failure_text(r: CaseResult) -> str:
    what = f"{r.case} [{r.dtype}]" if r.dtype != "-" else r.case
    if r.reason:
        return f"{what}: {r.reason}"
    return f"{what}: {r.comparison.describe()}"


def render_line(line: Line) -> str:
    worst = "-" if line.worst is None else f"{line.worst.error:.2g} ({line.worst.tolerance:g})"
    text = (f"  {line.path:<20} {line.group:<12} {line.result:<7} {line.passed:>6} "
            f"{line.failed:>6} {line.skipped:>7}  {worst:<26} {line.seconds:>6.2f} s")
    if line.note:
        text += f"\n      {line.note}"
    shown = line.failures[:SHOWN_FAILURES]
    text += "".join(f"\n      FAIL {failure_text(r)}" for r in shown)
    if len(line.failures) > len(shown):
        text += f"\n      ... and {len(line.failures) - len(shown)} more (see --json)"
    return text


def render_outcome(outcome: PathOutcome) -> str:
    """The lines of one path, as it finishes."""
    name = f"  {outcome.path.name:<20} "
    if outcome.unavailable:
        return f"{name}unavailable: {outcome.unavailable}"
    text = [render_line(line) for line in lines(outcome)]
    if outcome.crash:
        text.append(f"{name}FAIL   the path failed outside its cases: {outcome.crash}")
    return "\n".join(text) or f"{name}nothing to check"


def render_environment(facts: Sequence[Fact]) -> str:
    rows = []
    for f in facts:
        value = f.value if f.value is not None else "-"
        rows.append(f"  {f.label:<14}{value}" + (f"  [{f.why}]" if f.why else ""))
    return "Environment\n" + "\n".join(rows)


def render_tolerances() -> str:
    return f"Tolerances ({METRIC}): {describe_tolerances()}."


def render_dispatch(outcomes: Sequence[PathOutcome]) -> Optional[str]:
    """Which path use_cudnn="auto" chose for each layer case, and why."""
    auto = next((o for o in outcomes if o.path.name == "auto" and not o.unavailable), None)
    if auto is None:
        return None
    rows, seen = [], set()
    for r in auto.results:
        if r.case in seen or r.ran is None:
            continue
        seen.add(r.case)
        chose = " / ".join(dict.fromkeys(p for call in r.ran for p in call))
        why = "; ".join(r.reasons or []) or "every cuDNN rule holds"
        rows.append(f"  {r.case:<58} {chose:<16} {why}")
    return 'Dispatcher: the path use_cudnn="auto" chose for each layer case, and why\n' + \
        "\n".join(rows)


def totals(outcomes: Sequence[PathOutcome]) -> tuple[int, int]:
    return sum(o.passed for o in outcomes), sum(o.failed for o in outcomes)


def summary_line(outcomes: Sequence[PathOutcome]) -> str:
    passed, failed = totals(outcomes)
    return f"{passed} passed, {failed} failed"


def to_json(outcomes: Sequence[PathOutcome], facts: Sequence[Fact], *, command: str,
            created: str, tier: str, dtypes: Sequence[str], exit_status: int) -> dict:
    passed, failed = totals(outcomes)
    return {
        "schema": SCHEMA, "command": command, "created": created, "tier": tier,
        "dtypes": list(dtypes),
        "environment": {f.label: f.to_json() for f in facts},
        "tolerances": {"metric": METRIC, **{d: {"outputs": o, "gradients": g}
                                            for d, (o, g) in TOLERANCES.items()}},
        "paths": [{"name": o.path.name, "description": o.path.description,
                   "available": o.unavailable is None, "reason": o.unavailable,
                   "crash": o.crash, "counters": o.counters, "passed": o.passed,
                   "failed": o.failed} for o in outcomes],
        "lines": [line.to_json() for o in outcomes for line in lines(o)],
        "results": [r.to_json() for o in outcomes for r in o.results],
        "summary": {"passed": passed, "failed": failed,
                    "skipped": sum(r.status == SKIPPED for o in outcomes for r in o.results),
                    "exit_status": exit_status},
    }


def write_json(doc: dict, path: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1, default=str)
        f.write("\n")
