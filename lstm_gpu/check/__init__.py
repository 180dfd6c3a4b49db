"""`lstm-gpu-check`: prove an install on this machine's GPU (or CPU).

- `grid`: the cases (path problems and layer cases), shared with the GPU tests;
- `data`: their arrays, rounded to the dtype under check;
- `compare`: tolerances and the worst error over named arrays;
- `compute`: running a case on a path, on the layer and on the float64 reference;
- `registry`: the paths, by name: availability and how to run each;
- `environment`: what the machine runs (CuPy, CUDA, GPU, cuDNN, cuBLAS, NVRTC, kernels);
- `runner`, `report`, `cli`: the command (`lstm-gpu-check`, `python -m lstm_gpu.check`).
"""
from __future__ import annotations


def main(argv=None) -> int:
    """The command; see `lstm_gpu.check.cli`."""
    from .cli import main as _main

    return _main(argv)
