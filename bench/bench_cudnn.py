"""Time lstm_gpu's cuDNN path against torch.nn.LSTM (cuDNN) on one GPU.

    python bench/bench_cudnn.py [--repeat 50] [--warmup 10] [--dtype float32] [--no-torch]
                                [--shape B,T,F,U ...] [--tf32]

For each shape (batch, timesteps, features, units): forward (inference) and forward+backward
(training forward, gradient of the whole output sequence), each timed per iteration with CUDA
events on the stream that runs it, after warm-up; the median and the quartiles are reported
in milliseconds. Both sides use time-major input (our path's canonical form; torch's default)
and no TF32 unless --tf32. "lstm_gpu.path" calls `lstm_gpu.paths.cudnn` directly (what the
layer adds is layout and bookkeeping); "lstm_gpu.layer" goes through `lstm_gpu.LSTM` when that
exists. Results go to bench/results/cudnn_<UTC time>.json and a table is printed.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import sys
from typing import Callable

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from lstm_gpu._xp import gpu_available  # noqa: E402

DEFAULT_SHAPES = [(64, 100, 512, 512), (32, 10, 8, 4), (256, 50, 128, 256)]


def _timed(fn: Callable[[], None], timer, warmup: int, repeat: int) -> dict:
    """Median and quartiles in ms, from the CLI's shared CUDA-event timing."""
    from lstm_gpu.bench.timing import measure

    st = measure(fn, timer, repeats=repeat, warmup=warmup)
    return dict(median_ms=st.median * 1e3, p25_ms=st.q1 * 1e3, p75_ms=st.q3 * 1e3,
                min_ms=st.min * 1e3, n=st.repeats)


def time_cupy(fn: Callable[[], None], warmup: int, repeat: int) -> dict:
    from lstm_gpu.bench.timing import CupyEventTimer

    return _timed(fn, CupyEventTimer(), warmup, repeat)


def time_torch(fn: Callable[[], None], warmup: int, repeat: int) -> dict:
    from lstm_gpu.bench.timing import TorchEventTimer

    return _timed(fn, TorchEventTimer(), warmup, repeat)


def bench_path(shape, dtype, warmup, repeat) -> dict:
    import cupy as cp

    from lstm_gpu import activations
    from lstm_gpu.paths import cudnn as path
    from lstm_gpu.paths.base import CellSpec, Weights

    b, t, f, u = shape
    rng = cp.random.default_rng(0)
    x = rng.standard_normal((t, b, f), dtype=np.float32).astype(dtype)
    h0 = cp.zeros((b, u), dtype)
    c0 = cp.zeros((b, u), dtype)
    w = Weights((rng.standard_normal((f, 4 * u), dtype=np.float32) * 0.05).astype(dtype),
                (rng.standard_normal((u, 4 * u), dtype=np.float32) * 0.05).astype(dtype),
                cp.zeros(4 * u, dtype))  # packed into cuDNN's weight space on every call
    spec = CellSpec(units=u, activation=activations.get("tanh"),
                    recurrent_activation=activations.get("sigmoid"), use_bias=True,
                    zero_output_for_mask=False, implementation=2)
    dseq = cp.ones((t, b, u), dtype)

    def fwd():
        path.forward(w, x, None, h0, c0, spec, None, False)

    def fwd_bwd():
        res = path.forward(w, x, None, h0, c0, spec, None, True)
        path.backward(res.saved, None, dseq, None, None)

    return {"forward": time_cupy(fwd, warmup, repeat),
            "forward+backward": time_cupy(fwd_bwd, warmup, repeat)}


def bench_layer(shape, dtype, warmup, repeat) -> dict | None:
    import cupy as cp

    import lstm_gpu

    if not hasattr(lstm_gpu, "LSTM"):
        return None
    b, t, f, u = shape
    layer = lstm_gpu.LSTM(u, return_sequences=True, use_cudnn=True, time_major=True)
    x = cp.random.default_rng(1).standard_normal((t, b, f), dtype=np.float32).astype(dtype)
    layer(x)
    d_out = cp.ones((t, b, u), dtype)

    def fwd():
        layer(x, training=False)

    def fwd_bwd():
        layer(x, training=True)
        layer.backward(d_out)

    return {"forward": time_cupy(fwd, warmup, repeat),
            "forward+backward": time_cupy(fwd_bwd, warmup, repeat)}


def bench_torch(shape, dtype, warmup, repeat, tf32) -> dict | None:
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    torch.backends.cudnn.enabled = True
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    b, t, f, u = shape
    tdtype = getattr(torch, np.dtype(dtype).name)
    lstm = torch.nn.LSTM(f, u).cuda().to(tdtype)
    x = torch.randn(t, b, f, device="cuda", dtype=tdtype)
    xg = x.clone().requires_grad_(True)
    grad = torch.ones(t, b, u, device="cuda", dtype=tdtype)

    def fwd():
        with torch.no_grad():
            lstm(x)

    def fwd_bwd():
        out, _ = lstm(xg)
        out.backward(grad)

    return {"forward": time_torch(fwd, warmup, repeat),
            "forward+backward": time_torch(fwd_bwd, warmup, repeat),
            "torch": torch.__version__, "torch_cudnn": torch.backends.cudnn.version()}


def _environment() -> dict:
    import cupy as cp

    from lstm_gpu.cuda.cudnn import api

    dev = cp.cuda.runtime.getDeviceProperties(cp.cuda.runtime.getDevice())
    return dict(device=dev["name"].decode() if isinstance(dev["name"], bytes) else dev["name"],
                cupy=cp.__version__, cudnn=api.version(), python=platform.python_version(),
                tf32=os.environ.get("LSTM_GPU_ALLOW_TF32", "0"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", action="append", default=None,
                    help="B,T,F,U (repeatable); default: the three issue shapes")
    ap.add_argument("--dtype", default="float32", choices=["float16", "float32", "float64"])
    ap.add_argument("--repeat", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--tf32", action="store_true", help="allow TF32 on both sides")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    args = ap.parse_args(argv)
    if not gpu_available():
        print(f"{os.path.basename(__file__)} times GPU paths and needs an NVIDIA GPU visible "
              "to CuPy; none is (`lstm-gpu-bench` runs the CPU paths)", file=sys.stderr)
        return 2
    if args.tf32:
        os.environ["LSTM_GPU_ALLOW_TF32"] = "1"
    shapes = ([tuple(int(v) for v in s.split(",")) for s in args.shape] if args.shape
              else DEFAULT_SHAPES)
    dtype = np.dtype(args.dtype)
    rows = []
    for i, shape in enumerate(shapes, 1):
        print(f"[{i}/{len(shapes)}] shape B,T,F,U = {shape}", file=sys.stderr, flush=True)
        entry = {"shape": dict(zip("BTFU", shape)), "dtype": dtype.name,
                 "lstm_gpu.path": bench_path(shape, dtype, args.warmup, args.repeat)}
        layer = bench_layer(shape, dtype, args.warmup, args.repeat)
        if layer is not None:
            entry["lstm_gpu.layer"] = layer
        if not args.no_torch:
            torch_res = bench_torch(shape, dtype, args.warmup, args.repeat, args.tf32)
            if torch_res is not None:
                entry["torch.nn.LSTM"] = torch_res
        rows.append(entry)
    report = dict(environment=_environment(), repeat=args.repeat, warmup=args.warmup,
                  results=rows)
    os.makedirs(args.out, exist_ok=True)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = os.path.join(args.out, f"cudnn_{stamp}.json")
    with open(path, "w") as fh:
        json.dump(report, fh, indent=2)
    print(f"{'shape (B,T,F,U)':>22} {'impl':>16} {'fwd ms':>9} {'fwd+bwd ms':>11}")
    for entry in rows:
        s = entry["shape"]
        label = f"({s['B']},{s['T']},{s['F']},{s['U']})"
        for impl in ("lstm_gpu.path", "lstm_gpu.layer", "torch.nn.LSTM"):
            if impl in entry:
                r = entry[impl]
                print(f"{label:>22} {impl:>16} {r['forward']['median_ms']:9.3f} "
                      f"{r['forward+backward']['median_ms']:11.3f}")
    print_targets(rows)
    print(f"wrote {os.path.relpath(path)}")
    return 0


TARGET_RATIO = 1.10  # issue 4: ours / torch.nn.LSTM (cuDNN) on the same GPU and shapes


def print_targets(rows: list) -> None:
    """ours / torch for the bare path and the layer, forward and forward+backward."""
    print(f"\ntargets: time ratio ours / torch.nn.LSTM <= {TARGET_RATIO}")
    for entry in rows:
        torch_res = entry.get("torch.nn.LSTM")
        if torch_res is None:
            continue
        s = entry["shape"]
        label = f"({s['B']},{s['T']},{s['F']},{s['U']})"
        for impl in ("lstm_gpu.path", "lstm_gpu.layer"):
            if impl not in entry:
                continue
            cells = []
            for mode in ("forward", "forward+backward"):
                ratio = entry[impl][mode]["median_ms"] / torch_res[mode]["median_ms"]
                verdict = "ok" if ratio <= TARGET_RATIO else "MISSED"
                cells.append(f"{mode} {ratio:5.2f} {verdict}")
            print(f"{label:>22} {impl:>16}  " + "   ".join(cells))


if __name__ == "__main__":
    sys.exit(main())
