"""`lstm-gpu-bench`: time every LSTM path on this machine, side by side, after checking it.

Run with no arguments for the default grid (GPU grid with a CUDA GPU, a smaller CPU grid
without one), or `--quick` for a few-second smoke run. See `--help` for the options.
"""
from __future__ import annotations

import argparse
import datetime
import os
import shlex
import sys
from dataclasses import replace
from typing import Optional, Sequence

from .cases import CPU_DEFAULT, DTYPES, GPU_DEFAULT, MASKS, MODES, QUICK, Grid
from .engine import ERROR, MISMATCH, Bench, Settings
from .progress import Progress
from .runners import OWN_PATHS, PATH_NAMES, KerasRunner, make_runner

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _list(kind):
    """Parse "1,8,32" (or one value) into a list of `kind`."""

    def parse(text: str):
        try:
            return [kind(v) for v in text.split(",") if v.strip()]
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from e

    return parse


def _choices(allowed: Sequence[str], aliases: Optional[dict] = None):
    def parse(text: str):
        out = []
        for v in (s.strip() for s in text.split(",") if s.strip()):
            for w in (aliases or {}).get(v, [v]):
                if w not in allowed:
                    raise argparse.ArgumentTypeError(
                        f"invalid choice {v!r} (choose from {', '.join(allowed)})")
                out.append(w)
        return out

    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lstm-gpu-bench",
        description="Time every LSTM path (lstm_gpu's cudnn, cuda-kernels, cpu-native and "
                    "numpy paths; "
                    "torch and Keras when installed) on this machine. Each path's outputs are "
                    "checked against the NumPy path before it is timed.",
        epilog="List options take several values, space- or comma-separated "
               "(--batch 1 8 64 or --batch 1,8,64); the grid is their product. Exit status: "
               "0 when every lstm_gpu path that ran passed its check, 1 when one failed or "
               "raised (a peer's failure is reported but does not change it), 2 on bad "
               "options.")
    g = p.add_argument_group("grid (defaults: a GPU grid with a GPU, a CPU grid without)")
    g.add_argument("--batch", "-b", type=_list(int), nargs="+", metavar="N")
    g.add_argument("--timesteps", "-t", type=_list(int), nargs="+", metavar="N")
    g.add_argument("--features", "-f", type=_list(int), nargs="+", metavar="N")
    g.add_argument("--units", "-u", type=_list(int), nargs="+", metavar="N")
    g.add_argument("--dtype", type=_choices(DTYPES), nargs="+", metavar="DTYPE",
                   help="float32 (default), float64, float16")
    g.add_argument("--mode", type=_choices(MODES, {"both": list(MODES)}), nargs="+",
                   metavar="MODE", help="inference (forward), training (forward + backward) "
                                        "or both (default)")
    g.add_argument("--mask", type=_choices(MASKS), nargs="+", metavar="KIND",
                   help="none (default), right (right-padded), left (left-padded)")
    g.add_argument("--recurrent-dropout", type=_list(float), nargs="+", metavar="RATE")
    g.add_argument("--activation", type=_list(str), nargs="+", metavar="NAME")
    g.add_argument("--recurrent-activation", type=_list(str), nargs="+", metavar="NAME")
    g.add_argument("--bidirectional", action="store_true",
                   help="wrap every path in Bidirectional (merge_mode concat): lstm_gpu's "
                        "Bidirectional, torch's nn.LSTM(bidirectional=True), Keras's "
                        "Bidirectional")
    g.add_argument("--quick", action="store_true",
                   help="a tiny grid and few repeats: a smoke test of a few seconds")
    r = p.add_argument_group("paths and timing")
    r.add_argument("--paths", type=_choices(PATH_NAMES), nargs="+", metavar="PATH",
                   help=f"paths to run (default: all of {', '.join(PATH_NAMES)})")
    r.add_argument("--baseline", choices=PATH_NAMES,
                   help="the path ratios are taken against (default: cudnn with a GPU; "
                        "without one torch when it runs, else numpy)")
    r.add_argument("--repeats", type=int, metavar="N",
                   help="timed samples per path and case (default 10, 3 with --quick)")
    r.add_argument("--warmup", type=int, metavar="N", help="untimed calls first (default 2)")
    r.add_argument("--budget", type=float, metavar="SECONDS",
                   help="time budget per path and case; fewer repeats (never below 3) when "
                        "one call is slow (default 2 with a GPU, 1 without; 0 for none)")
    r.add_argument("--seed", type=int, default=0, help="seed of inputs and weights")
    r.add_argument("--threads", type=int, metavar="N",
                   help="CPU threads for the cpu-native path, torch (and NumPy's BLAS when "
                        "threadpoolctl is installed); default: the libraries' own choice")
    o = p.add_argument_group("output")
    o.add_argument("--json", metavar="FILE", help="write every result and the environment")
    o.add_argument("--markdown", metavar="FILE", help="write the tables as Markdown")
    o.add_argument("--plot", metavar="FILE.png",
                   help="plot time per step against batch size (needs matplotlib)")
    o.add_argument("--out-dir", metavar="DIR",
                   help="write JSON, Markdown and (with matplotlib) PNG into DIR, named "
                        "after the device")
    o.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    o.add_argument("--list-paths", action="store_true",
                   help="say which paths can run here, and why not, then exit")
    return p


def _flat(values):
    return None if values is None else [v for group in values for v in group]


def make_grid(args, on_gpu: bool) -> Grid:
    grid = QUICK if args.quick else (GPU_DEFAULT if on_gpu else CPU_DEFAULT)
    overrides = {}
    for name in ("batch", "timesteps", "features", "units", "dtype", "mode", "mask",
                 "recurrent_dropout", "activation", "recurrent_activation"):
        values = _flat(getattr(args, name))
        if values:
            overrides[name] = tuple(dict.fromkeys(values))  # unique, in order
    if args.bidirectional:
        overrides["bidirectional"] = (True,)
    return replace(grid, **overrides)


def _validate(args, parser) -> None:
    for name in ("batch", "timesteps", "features", "units"):
        if any(v < 1 for v in _flat(getattr(args, name)) or []):
            parser.error(f"--{name} values must be at least 1")
    if any(not 0 <= v < 1 for v in _flat(args.recurrent_dropout) or []):
        parser.error("--recurrent-dropout must be in [0, 1)")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be at least 1")
    if args.repeats is not None and args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if args.plot:
        from .plot import MISSING

        try:
            import matplotlib  # noqa: F401
        except ImportError:
            parser.error(MISSING)


def _default_baseline(on_gpu: bool, runners) -> str:
    """cudnn on a GPU; on a CPU torch when it is among the paths and runs here (the fastest
    common CPU LSTM, the peer the native path is measured against), else numpy."""
    if on_gpu:
        return "cudnn"
    torch = next((r for r in runners if r.name == "torch"), None)
    return "torch" if torch is not None and torch.unavailable() is None else "numpy"


def _settings(args, on_gpu: bool, baseline: str) -> Settings:
    budget = args.budget if args.budget is not None else (
        0.5 if args.quick else 2.0 if on_gpu else 1.0)
    return Settings(
        repeats=args.repeats or (3 if args.quick else 10),
        warmup=args.warmup if args.warmup is not None else (1 if args.quick else 2),
        budget_s=budget or None, seed=args.seed,
        baseline=args.baseline or baseline, settle_s=0.0 if args.quick else 0.25)


def _paths_json(runners, bench) -> list[dict]:
    return [{"name": r.name, "label": r.label, "device": r.device,
             "available": bench.unavailable(r.name) is None,
             "reason": bench.unavailable(r.name)} for r in runners]


def _print_paths(runners, out) -> None:
    for r in runners:
        why = r.unavailable()
        print(f"  {r.name:<13} {'ok' if why is None else 'skipped'}"
              f"{'' if why is None else ': ' + why}", file=out)


def _limit_threads(n: Optional[int]) -> Optional[str]:
    """Cap CPU threads at `n`; returns a note when NumPy's BLAS could not be capped."""
    if n is None:
        return None
    import importlib.util

    from ..paths import cpu_native

    cpu_native.set_num_threads(n)
    if importlib.util.find_spec("torch") is not None:
        import torch

        torch.set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return ("Note: --threads caps torch only; NumPy's BLAS follows OMP_NUM_THREADS / "
                "OPENBLAS_NUM_THREADS / MKL_NUM_THREADS set before start (or install "
                "threadpoolctl).")
    threadpool_limits(n)
    return None


def _outputs(args, env) -> dict:
    """{"json": path, "markdown": path, "plot": path} from the options and --out-dir."""
    files = {"json": args.json, "markdown": args.markdown, "plot": args.plot}
    if args.out_dir:
        from .env_info import device_slug

        os.makedirs(args.out_dir, exist_ok=True)
        stem = os.path.join(args.out_dir, f"lstm-gpu-bench-{device_slug(env)}")
        for key, ext in (("json", ".json"), ("markdown", ".md"), ("plot", ".png")):
            files[key] = files[key] or stem + ext
    return files


def _header(env, on_gpu: bool, notes, n_cases: int, n_paths: int, settings, out) -> None:
    print(f"lstm-gpu-bench: lstm-gpu {env['versions']['lstm-gpu']} on {env['device']}",
          file=out)
    if not on_gpu:
        print("No CUDA GPU found: timing the CPU paths and the CPU peers; the GPU paths "
              "are listed as skipped.", file=out)
    for note in filter(None, notes):
        print(note, file=out)
    print(f"{n_cases} cases x {n_paths} paths; {settings.repeats} repeats (median), "
          f"{settings.warmup} warm-up; each path is checked against the NumPy path "
          "first.\n", file=out, flush=True)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _validate(args, parser)
    out = sys.stdout
    from .._xp import gpu_available
    from . import env_info, report

    on_gpu = gpu_available()
    paths = _flat(args.paths) or list(PATH_NAMES)
    runners = [make_runner(n) for n in dict.fromkeys(paths)]
    reference = next((r for r in runners if r.name == "numpy"), None) or make_runner("numpy")
    if args.list_paths:
        print("paths on this machine:", file=out)
        _print_paths(runners, out)
        return EXIT_OK

    threads_note = _limit_threads(args.threads)
    grid = make_grid(args, on_gpu)
    cases = grid.cases()
    settings = _settings(args, on_gpu, _default_baseline(on_gpu, runners))
    progress = Progress(enabled=not args.quiet)
    bench = Bench(runners, settings, reference=reference, progress=progress)
    keras = next((r for r in runners if isinstance(r, KerasRunner)), None)
    keras_backend = keras.backend if keras and bench.unavailable("keras") is None else None
    env = env_info.collect(keras_backend=keras_backend)

    env["threads_limit"] = args.threads
    files = _outputs(args, env)  # before the run: a bad --out-dir fails at once
    _header(env, on_gpu, [threads_note, env_info.busy_note(env)], len(cases), len(runners),
            settings, out)

    started = datetime.datetime.now(datetime.timezone.utc)
    try:
        results = bench.run(cases)
    finally:
        progress.close()

    command = " ".join(["lstm-gpu-bench", *map(shlex.quote, argv if argv is not None
                                                  else sys.argv[1:])])
    print(report.render(results, env), file=out)
    _write(files, results, env, settings, runners, bench, command, started, out)
    failed = any(r.status in (MISMATCH, ERROR) and r.path in OWN_PATHS for r in results)
    return EXIT_FAILED if failed else EXIT_OK


def _write(files, results, env, settings, runners, bench, command, started, out) -> None:
    from . import report

    if files["json"]:
        settings_doc = dict(settings.__dict__)
        doc = report.to_json(results, env, settings_doc, _paths_json(runners, bench),
                             command=command, created=started.isoformat(timespec="seconds"))
        report.write_json(doc, files["json"])
        print(f"wrote {files['json']}", file=out)
    if files["markdown"]:
        with open(files["markdown"], "w", encoding="utf-8") as f:
            f.write(report.render(results, env, markdown=True, command=command))
        print(f"wrote {files['markdown']}", file=out)
    if files["plot"]:
        from .plot import PlotUnavailable, plot

        try:
            plot(results, files["plot"], title=f"lstm-gpu-bench on {env['device']}")
            print(f"wrote {files['plot']}", file=out)
        except PlotUnavailable as e:
            print(f"no plot: {e}", file=out)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
