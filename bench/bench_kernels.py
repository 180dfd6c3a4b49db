"""Benchmark of the CUDA kernel path (issue 5): fp32 forward + backward.

    python bench/bench_kernels.py [--repeat 20] [--warmup 3] [--out bench/results/...json]

Shapes (batch, timesteps, features, units): (64, 100, 512, 512) and (8, 200, 64, 128).
Variants: no mask / left-padded mask, recurrent_dropout 0 / 0.2. Rows:
  cuda-kernels[eager], cuda-kernels[graph]   this path, per LSTM_GPU_KERNEL_LOOP mode
  cudnn                                      lstm_gpu.paths.cudnn when importable (no mask /
                                             right-padded only, no recurrent dropout)
  torch-nocudnn                              torch.nn.LSTM with torch.backends.cudnn disabled
                                             (no mask, no recurrent dropout: torch has neither)
Timing: CUDA events on the current stream around forward(training=True) + backward, after
warm-up calls, median of --repeat runs. TF32 is off. Each kernel-path row starts from
`clear_graphs()`; its first call (eager run + capture in graph mode) is timed on its own as
`first_call_ms`, and the row records how the loops ran (`graph_stats` deltas: eager runs,
captures, replays, fallbacks): a graph row whose replays do not cover every timed call, or
with a fallback, did not measure graphs.
Writes JSON (one record per row, with every sample) to bench/results/.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lstm_gpu._xp import gpu_available  # noqa: E402

SHAPES = [(64, 100, 512, 512), (8, 200, 64, 128)]
VARIANTS = [(mask, rd) for mask in (None, "left") for rd in (0.0, 0.2)]


def _time_cuda(fn, warmup, repeat):
    """(first call ms, per-call times in ms): CUDA events on the current stream, the CLI's
    timer; the first call is timed before the warm-up calls."""
    from lstm_gpu.bench.timing import CupyEventTimer

    timer = CupyEventTimer()
    timer.start()
    fn()
    first = timer.stop() * 1e3
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeat):
        timer.start()
        fn()
        samples.append(timer.stop() * 1e3)
    return first, samples


_COUNTERS = ("eager", "captures", "replays", "fallbacks")


def _loop_counts(before: dict, after: dict) -> dict:
    return {k: after[k] - before[k] for k in _COUNTERS}


def _problem(shape, mask_kind, rec_drop, seed=0):
    import cupy as cp

    from lstm_gpu import activations
    from lstm_gpu.paths.base import CellSpec, DropoutMasks, Weights

    B, T, F, U = shape
    rng = np.random.default_rng(seed)
    f32 = lambda *s, scale=1.0: cp.asarray((rng.normal(size=s) * scale).astype(np.float32))  # noqa
    w = Weights(f32(F, 4 * U, scale=F ** -0.5), f32(U, 4 * U, scale=U ** -0.5), f32(4 * U))
    x, h0, c0 = f32(T, B, F), f32(B, U), f32(B, U)
    mask = None
    if mask_kind == "left":
        lengths = rng.integers(T // 2, T + 1, size=B)
        m = np.zeros((T, B), bool)
        for b, n in enumerate(lengths):
            m[T - n:, b] = True
        mask = cp.asarray(m)
    drop = None
    if rec_drop:
        keep = rng.random((4, B, U)) >= rec_drop
        drop = DropoutMasks(recurrent=cp.asarray((keep / (1 - rec_drop)).astype(np.float32)))
    spec = CellSpec(U, activations.get("tanh"), activations.get("sigmoid"), True, False,
                    1 if rec_drop else 2)
    d_seq = f32(T, B, U)
    return dict(w=w, x=x, h0=h0, c0=c0, mask=mask, drop=drop, spec=spec, d_seq=d_seq)


def _path_step(path, p):
    def step():
        res = path.forward(p["w"], p["x"], p["mask"], p["h0"], p["c0"], p["spec"], p["drop"], True)
        path.backward(res.saved, None, p["d_seq"], None, None)
    return step


def _torch_step(shape):
    import torch

    B, T, F, U = shape
    torch.backends.cuda.matmul.allow_tf32 = False
    lstm = torch.nn.LSTM(F, U).cuda()
    x = torch.randn(T, B, F, device="cuda", requires_grad=True)
    g = torch.randn(T, B, U, device="cuda")

    def step():
        with torch.backends.cudnn.flags(enabled=False):
            out, _ = lstm(x)
            out.backward(g)
    return step, torch.__version__


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    if not gpu_available():
        print(f"{Path(__file__).name} times GPU paths and needs an NVIDIA GPU visible "
              "to CuPy; none is (`lstm-gpu-bench` runs the CPU paths)", file=sys.stderr)
        return 2

    import cupy as cp

    os.environ.setdefault("CUPY_TF32", "0")
    from lstm_gpu.paths import cuda_kernels

    try:
        from lstm_gpu.paths import cudnn as cudnn_path
    except ImportError as exc:
        cudnn_path, cudnn_missing = None, repr(exc)
    records = []
    dev = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)
    for shape in SHAPES:
        for mask_kind, rd in VARIANTS:
            p = _problem(shape, mask_kind, rd)
            rows = []
            for mode in ("eager", "graph"):
                rows.append((f"cuda-kernels[{mode}]", _path_step(cuda_kernels, p)))
            if cudnn_path is not None and mask_kind is None and not rd:
                rows.append(("cudnn", _path_step(cudnn_path, p)))
            for name, fn in rows:
                if name.startswith("cuda-kernels"):
                    os.environ[cuda_kernels.LOOP_ENV] = name[len("cuda-kernels["):-1]
                    cuda_kernels.clear_graphs()
                before = cuda_kernels.graph_stats()
                try:
                    first, samples = _time_cuda(fn, args.warmup, args.repeat)
                    rec = dict(median_ms=statistics.median(samples), samples_ms=samples,
                               first_call_ms=first)
                except Exception as exc:  # report and go on with the other rows
                    rec = dict(error=repr(exc))
                loops = _loop_counts(before, cuda_kernels.graph_stats())
                rec.update(path=name, shape=list(shape), mask=mask_kind, recurrent_dropout=rd,
                           loops=loops, graph_stats=cuda_kernels.graph_stats())
                records.append(rec)
                print(f"{str(shape):22} mask={str(mask_kind):5} rd={rd:<4} {name:22} "
                      f"{rec.get('median_ms', float('nan')):9.3f} ms "
                      f"(first {rec.get('first_call_ms', float('nan')):8.3f} ms; {loops}) "
                      f"{rec.get('error', '')}")
            if mask_kind is None and not rd:
                try:
                    fn, tv = _torch_step(shape)
                    _, samples = _time_cuda(fn, args.warmup, args.repeat)
                    rec = dict(median_ms=statistics.median(samples), samples_ms=samples,
                               torch=tv)
                except Exception as exc:
                    rec = dict(error=repr(exc))
                rec.update(path="torch-nocudnn", shape=list(shape), mask=None,
                           recurrent_dropout=0.0)
                records.append(rec)
                print(f"{str(shape):22} mask=None  rd=0.0  {'torch-nocudnn':22} "
                      f"{rec.get('median_ms', float('nan')):9.3f} ms {rec.get('error', '')}")
    out = args.out or (Path(__file__).resolve().parent / "results"
                       / f"kernels_{time.strftime('%Y%m%d_%H%M%S')}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = dict(device=dev["name"].decode() if isinstance(dev["name"], bytes) else dev["name"],
                cupy=cp.__version__, python=platform.python_version(),
                cudnn_path=None if cudnn_path else cudnn_missing,
                shape_order="batch, timesteps, features, units", dtype="float32",
                timing="CUDA events, forward(training=True)+backward, median")
    out.write_text(json.dumps(dict(meta=meta, records=records), indent=2))
    print(f"wrote {out}")
    print_targets(records)
    return 0


# (label, numerator row, denominator row, limit) of issue 5; rows are (mask, rd, path) and
# "kernels" stands for the faster cuda-kernels loop mode of that variant.
TARGETS = (
    ("kernels / cudnn", (None, 0.0, "kernels"), (None, 0.0, "cudnn"), 2.0),
    ("kernels / torch-nocudnn", (None, 0.0, "kernels"), (None, 0.0, "torch-nocudnn"), 0.8),
    ("recurrent_dropout 0.2 / 0", (None, 0.2, "kernels"), (None, 0.0, "kernels"), 1.15),
    ("left-padded mask / no mask", ("left", 0.0, "kernels"), (None, 0.0, "kernels"), 1.1),
)


def print_targets(records) -> None:
    """The issue's ratios per shape, each against its limit."""
    best: dict = {}
    for r in records:
        if "median_ms" not in r:
            continue
        path = "kernels" if r["path"].startswith("cuda-kernels") else r["path"]
        key = (tuple(r["shape"]), r["mask"], r["recurrent_dropout"], path)
        if key not in best or r["median_ms"] < best[key][0]:
            best[key] = (r["median_ms"], r["path"])
    print("\ntargets (forward+backward, fp32; kernels = the faster loop mode)")
    for shape in SHAPES:
        for label, num, den, limit in TARGETS:
            a, b = best.get((shape, *num)), best.get((shape, *den))
            if a is None or b is None:
                print(f"{str(shape):22} {label:28} n/a (a row is missing or failed)")
                continue
            ratio = a[0] / b[0]
            verdict = "ok" if ratio <= limit else "MISSED"
            print(f"{str(shape):22} {label:28} {ratio:6.2f} (limit {limit}) {verdict}  "
                  f"[{a[1]} {a[0]:.3f} ms / {b[1]} {b[0]:.3f} ms]")


if __name__ == "__main__":
    sys.exit(main())
