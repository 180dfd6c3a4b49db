"""Turn results into a terminal table, a Markdown report and JSON.

Results are grouped into sections of cases that differ only by batch size (one section per
dtype, mode, shape, mask, dropout and activations), one row per batch size and path. Paths
that were skipped are gathered under the tables with their reasons, once per reason; a
mismatch or an error shows in its row and, in full, under the tables.
"""
from __future__ import annotations

import json
from collections import OrderedDict
from typing import Iterable, Optional, Sequence

from .engine import ERROR, MISMATCH, OK, SKIPPED, Result

SCHEMA = "lstm_gpu.bench/1"
COLUMNS = ("batch", "path", "median ms", "IQR ms", "us/step", "ratio", "max |diff|")
RIGHT = {"batch", "median ms", "IQR ms", "us/step", "ratio", "max |diff|"}


def _sections(results: Sequence[Result]) -> "OrderedDict[tuple, list[Result]]":
    groups: "OrderedDict[tuple, list[Result]]" = OrderedDict()
    for r in results:
        if r.status != SKIPPED:
            groups.setdefault(r.case.series_key, []).append(r)
    return groups


def section_title(r: Result) -> str:
    c = r.case
    title = f"{c.dtype} {c.mode} T={c.timesteps} F={c.features} U={c.units}"
    if c.bidirectional:
        title += ", bidirectional"
    if c.mask != "none":
        title += f", {c.mask}-padded mask"
    if c.recurrent_dropout:
        title += f", recurrent_dropout={c.recurrent_dropout:g}"
    if (c.activation, c.recurrent_activation) != ("tanh", "sigmoid"):
        title += f", activation={c.activation}, recurrent_activation={c.recurrent_activation}"
    return title


def _cells(r: Result) -> list[str]:
    diff = "" if r.check is None else f"{r.check.max_abs_diff:.1e}"
    if r.check is not None and r.check.on != "same case":
        diff += "*"
    if r.status == OK:
        s = r.stats
        ratio = "" if r.ratio is None else f"{r.ratio:.2f}"
        return [str(r.case.batch), r.label, f"{s.median * 1e3:.3f}", f"{s.iqr * 1e3:.3f}",
                f"{r.per_step_s * 1e6:.1f}", ratio, diff]
    return [str(r.case.batch), r.label, r.status.upper(), "", "", "", diff]


MAX_MISMATCH_LINES = 12


def _footnotes(results: Sequence[Result]) -> tuple[list[str], list[str]]:
    """(skipped lines, problem lines). A skip or an error with one reason is listed once,
    with the number of cases it hit; mismatches (their diffs differ) one per case, up to
    MAX_MISMATCH_LINES."""
    grouped: "OrderedDict[tuple, list[str]]" = OrderedDict()
    mismatches = []
    for r in results:
        if r.status in (SKIPPED, ERROR):
            where = grouped.setdefault((r.status, r.label, r.reason), [])
            if r.case.label not in where:
                where.append(r.case.label)
        elif r.status == MISMATCH:
            mismatches.append(f"{r.label} on {r.case.label}: mismatch: {r.reason}")
    n_cases = len({r.case for r in results})
    skipped, problems = [], []
    for (status, label, reason), where in grouped.items():
        if len(where) == n_cases:
            scope = ""
        elif len(where) == 1:
            scope = f" [{where[0]}]"
        else:
            scope = f" [{len(where)} of {n_cases} cases]"
        if status == SKIPPED:
            skipped.append(f"{label}: {reason}{scope}")
        else:
            problems.append(f"{label}: error: {reason}{scope}")
    if len(mismatches) > MAX_MISMATCH_LINES:
        more = len(mismatches) - MAX_MISMATCH_LINES
        mismatches = mismatches[:MAX_MISMATCH_LINES] + [f"... and {more} more (see --json)"]
    return skipped, problems + mismatches


def baseline_note(results: Sequence[Result]) -> str:
    bases = sorted({r.baseline for r in results if r.baseline})
    if not bases:
        return "ratio: no baseline path ran"
    return (f"ratio = median time / {' or '.join(bases)} median time of the same case "
            "(below 1 is faster); us/step = median / timesteps")


def _table(rows: list[list[str]], markdown: bool) -> list[str]:
    if markdown:
        def md(cells):
            return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

        rule = "|" + "|".join("---:" if c in RIGHT else "---" for c in COLUMNS) + "|"
        return [md(COLUMNS), rule] + [md(r) for r in rows]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(COLUMNS)]

    def line(cells):
        return "  ".join(c.rjust(w) if col in RIGHT else c.ljust(w)
                         for c, w, col in zip(cells, widths, COLUMNS)).rstrip()

    return [line(COLUMNS)] + [line(r) for r in rows]


def render(results: Sequence[Result], env: dict, *, markdown: bool = False,
           command: Optional[str] = None) -> str:
    """The table for the terminal (markdown=False) or a Markdown document."""
    out = []
    if markdown:
        out += ["# lstm-gpu-bench results", "", f"- device: {env['device']}"]
        out += [f"- {k}: {v}" for k, v in environment_summary(env).items()]
        if command:
            out += [f"- command: `{command}`"]
        out.append("")
    for group in _sections(results).values():
        out.append(("### " if markdown else "") + section_title(group[0]))
        if markdown:
            out.append("")
        out += _table([_cells(r) for r in group], markdown)
        out.append("")
    if not _sections(results):
        out += ["(no path ran)", ""]
    out.append(baseline_note(results) + ("." if markdown else ""))
    if any(r.check is not None and r.check.on != "same case" for r in results):
        out.append("* checked on the same case without recurrent dropout (the path draws "
                   "other random dropout masks than the NumPy path), then timed with it")
    skipped, problems = _footnotes(results)
    bullet = "- " if markdown else "  "
    for title, lines in (("Skipped", skipped),
                         ("Not timed (failed the check or raised)", problems)):
        if lines:
            out += ["", f"**{title}:**", ""] if markdown else ["", f"{title}:"]
            out += [bullet + ln for ln in lines]
    return "\n".join(out).rstrip() + "\n"


def environment_summary(env: dict) -> dict:
    """The few lines of the environment a reader wants beside the numbers."""
    v = env.get("versions", {})
    gpu = env.get("gpu") or {}
    summary = {"lstm-gpu": v.get("lstm-gpu"), "numpy": v.get("numpy"), "cupy": v.get("cupy")}
    if gpu:
        summary.update({"driver": gpu.get("driver"), "CUDA runtime": gpu.get("cuda_runtime"),
                        "cuDNN": gpu.get("cudnn")})
    summary.update({"torch": v.get("torch"), "keras": v.get("keras"),
                    "keras backend": env.get("keras_backend"), "python": env.get("python"),
                    "cpu": f"{env['cpu']['name']} ({env['cpu']['logical_cores']} logical cores)"})
    return {k: val for k, val in summary.items() if val}


def to_json(results: Sequence[Result], env: dict, settings: dict,
            paths: Iterable[dict], command: Optional[str] = None,
            created: Optional[str] = None) -> dict:
    return {
        "schema": SCHEMA,
        "created": created,
        "command": command,
        "environment": env,
        "settings": settings,
        "paths": list(paths),
        "results": [r.to_json() for r in results],
    }


def write_json(doc: dict, path) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=2, default=str)
        f.write("\n")
