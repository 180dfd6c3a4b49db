"""`lstm-gpu-check`: does every path of lstm_gpu compute the right numbers on this machine?

Prints the environment (CuPy, CUDA, GPU, cuDNN, cuBLAS, NVRTC, the kernels' compile), then
checks every path that can run here on a grid of small random problems against the float64
NumPy reference on the same rounded inputs (`lstm_gpu.check.grid`), one table line per (path,
case group), the dispatcher's choices, and the final line ``N passed, M failed``.

Exit status: 0 when every check that ran passed, 1 when one failed (or when nothing could be
checked), 2 on a usage error.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import shlex
import sys
from typing import Iterator, Optional, Sequence

from . import environment, report
from .registry import ALL_DTYPES, Registry, default_registry
from .runner import Checker, unavailable

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
DEFAULT_DTYPES = ("float32", "float64", "float16")  # float16 where the path takes it
REPORT_HINT = ("Something failed. Please open an issue at the lstm_gpu repository with this "
               "output and the JSON file of `lstm-gpu-check --json lstm-gpu-check.json`.")


def _names(allowed: Sequence[str]):
    """Parse "a,b" (or one name) into a list, each name one of `allowed`."""

    def parse(text: str) -> list:
        out = [v.strip() for v in text.split(",") if v.strip()]
        for v in out:
            if v not in allowed:
                raise argparse.ArgumentTypeError(
                    f"invalid choice {v!r} (choose from {', '.join(allowed)})")
        return out

    return parse


def build_parser(registry: Registry) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lstm-gpu-check",
        description="Check that every LSTM path of lstm_gpu (cuDNN, the CUDA kernels in eager "
                    "and graph mode, the CuPy and NumPy references, the dispatcher) computes "
                    "the right numbers on this machine: each against the float64 NumPy "
                    "reference on the same rounded inputs, forward and backward.",
        epilog="Exit status: 0 when every check that ran passed, 1 when one failed or nothing "
               "could be checked, 2 on a usage error. When a check fails, send the output "
               "and the --json file with your bug report.")
    p.add_argument("--json", metavar="PATH", help="write the environment and every result")
    p.add_argument("--quick", action="store_true",
                   help="a smaller grid (a few seconds)")
    p.add_argument("--paths", type=_names(registry.choices()), nargs="+", metavar="PATH",
                   help=f"paths to check (default: all of {', '.join(registry.names())}; "
                        "cuda-kernels means both loop modes)")
    p.add_argument("--dtype", type=_names(ALL_DTYPES), nargs="+", metavar="DTYPE",
                   help="dtypes to check (default: float32, float64 and float16 where the "
                        "path takes it)")
    p.add_argument("--device", type=int, metavar="N",
                   help="the CUDA device to check (default: CuPy's current device, 0)")
    p.add_argument("--list-paths", action="store_true",
                   help="say which paths can run here, and why not, then exit")
    return p


def _flat(values) -> list:
    return [v for group in values or [] for v in group]


@contextlib.contextmanager
def _on_device(device: Optional[int]) -> Iterator[Optional[str]]:
    """CuPy's device `device` for the duration; yields a note when there is no GPU to use."""
    from .._xp import gpu_unavailable_reason

    why = gpu_unavailable_reason()
    if why or device is None:
        yield None if device is None else f"--device {device} ignored: {why}"
        return
    import cupy

    # Device.__enter__ makes it CuPy's current device and __exit__ restores the previous one
    # (CuPy 14.2 cupy/cuda/device.pyx lines 177 and 184): the check's arrays, the cuDNN
    # handle and the kernels' module all follow it.
    with cupy.cuda.Device(device):
        yield None


def _check_device(device: Optional[int], parser: argparse.ArgumentParser) -> None:
    if device is None:
        return
    if device < 0:
        parser.error(f"--device must be at least 0, got {device}")
    from .._xp import gpu_unavailable_reason

    if gpu_unavailable_reason():
        return
    import cupy

    count = cupy.cuda.runtime.getDeviceCount()
    if device >= count:
        parser.error(f"--device {device}: this machine has {count} CUDA device(s), "
                     f"0 to {count - 1}")


def _open_json(path: Optional[str], parser: argparse.ArgumentParser) -> None:
    """Fail at once, before the run, when the JSON file cannot be written."""
    if path is None:
        return
    try:
        with open(path, "a", encoding="utf-8"):
            pass
    except OSError as e:
        parser.error(f"--json {path}: {e}")


def _run(paths, tier: str, dtypes: list, device: Optional[int], out) -> tuple[list, list]:
    """The environment, then every path's table lines as it finishes: (facts, outcomes)."""
    outcomes = []
    with _on_device(device) as note:
        print("lstm-gpu-check: does every lstm_gpu path compute the right numbers here?\n",
              file=out)
        facts = environment.collect()
        print(report.render_environment(facts), file=out)
        if note:
            print(f"  Note: {note}", file=out)
        print(f"\n{report.render_tolerances()}\n", file=out)
        print(f"Checks ({tier} grid; {', '.join(dtypes)}):\n{report.HEADER}", file=out,
              flush=True)
        for outcome in Checker(tier, dtypes).run(paths):
            outcomes.append(outcome)
            print(report.render_outcome(outcome), file=out, flush=True)
    dispatch = report.render_dispatch(outcomes)
    if dispatch:
        print(f"\n{dispatch}", file=out)
    return facts, outcomes


def main(argv: Optional[Sequence[str]] = None, registry: Optional[Registry] = None) -> int:
    """The command; `registry` defaults to lstm_gpu's paths (tests pass one with doubles)."""
    registry = registry or default_registry()
    parser = build_parser(registry)
    args = parser.parse_args(argv)
    paths = registry.select(_flat(args.paths) or None)
    dtypes = list(dict.fromkeys(_flat(args.dtype))) or list(DEFAULT_DTYPES)
    tier = "quick" if args.quick else "default"
    out = sys.stdout
    if args.list_paths:
        for path in paths:
            why = unavailable(path)
            print(f"  {path.name:<20} {'available' if why is None else 'unavailable: ' + why}",
                  file=out)
        return EXIT_OK
    _check_device(args.device, parser)
    _open_json(args.json, parser)
    started = datetime.datetime.now(datetime.timezone.utc)
    facts, outcomes = _run(paths, tier, dtypes, args.device, out)
    passed, failed = report.totals(outcomes)
    status = EXIT_OK if passed and not failed else EXIT_FAILED
    if not passed and not failed:
        print("\nNothing was checked: none of the selected paths can run here.", file=out)
    elif failed:
        print(f"\n{REPORT_HINT}", file=out)
    if args.json:
        command = " ".join(["lstm-gpu-check", *map(shlex.quote, argv if argv is not None
                                                  else sys.argv[1:])])
        doc = report.to_json(outcomes, facts, command=command,
                             created=started.isoformat(timespec="seconds"), tier=tier,
                             dtypes=dtypes, exit_status=status)
        report.write_json(doc, args.json)
        print(f"\nwrote {args.json}", file=out)
    print(f"\n{report.summary_line(outcomes)}", file=out, flush=True)
    return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
