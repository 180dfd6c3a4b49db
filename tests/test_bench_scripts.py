"""The per-path GPU bench scripts and bench/gpu_check.sh, as far as they run without a GPU."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

from lstm_gpu._xp import gpu_available

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(REPO, "bench")


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, os.path.join(BENCH, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _times(fwd: float, both: float) -> dict:
    return {"forward": {"median_ms": fwd}, "forward+backward": {"median_ms": both}}


def test_cudnn_targets_flag_a_miss(capsys):
    bench = _load("bench_cudnn")
    bench.print_targets([{"shape": dict(B=64, T=100, F=512, U=512),
                          "lstm_gpu.path": _times(1.0, 2.0), "lstm_gpu.layer": _times(1.2, 2.1),
                          "torch.nn.LSTM": _times(1.0, 2.0)}])
    lines = capsys.readouterr().out.splitlines()
    path_line = next(s for s in lines if "lstm_gpu.path" in s)
    layer_line = next(s for s in lines if "lstm_gpu.layer" in s)
    assert "MISSED" not in path_line
    assert "1.20 MISSED" in layer_line and "1.05 ok" in layer_line


def test_kernel_targets_use_the_faster_loop_mode(capsys):
    bench = _load("bench_kernels")
    shape = list(bench.SHAPES[0])
    rows = [dict(path="cudnn", shape=shape, mask=None, recurrent_dropout=0.0, median_ms=1.0),
            dict(path="torch-nocudnn", shape=shape, mask=None, recurrent_dropout=0.0,
                 error="RuntimeError()")]
    for mask, rd in bench.VARIANTS:
        for mode, ms in (("eager", 3.0), ("graph", 1.5)):
            rows.append(dict(path=f"cuda-kernels[{mode}]", shape=shape, mask=mask,
                             recurrent_dropout=rd, median_ms=ms * (1.2 if rd else 1.0)))
    bench.print_targets(rows)
    lines = [s for s in capsys.readouterr().out.splitlines() if s.startswith(str(tuple(shape)))]
    out = {label: next(s for s in lines if label in s) for label, *_ in bench.TARGETS}
    assert "1.50 (limit 2.0) ok" in out["kernels / cudnn"]
    assert "cuda-kernels[graph]" in out["kernels / cudnn"]
    assert "n/a" in out["kernels / torch-nocudnn"]
    assert "1.20 (limit 1.15) MISSED" in out["recurrent_dropout 0.2 / 0"]
    assert "1.00 (limit 1.1) ok" in out["left-padded mask / no mask"]


@pytest.mark.skipif(gpu_available(), reason="checks the message given without a GPU")
@pytest.mark.parametrize("script", ["bench_cudnn.py", "bench_kernels.py"])
def test_gpu_scripts_say_they_need_a_gpu(script):
    proc = subprocess.run([sys.executable, os.path.join(BENCH, script)], capture_output=True,
                          text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 2
    assert "needs an NVIDIA GPU" in proc.stderr and "Traceback" not in proc.stderr


def test_gpu_check_rejects_an_unknown_stage():
    proc = subprocess.run(["bash", os.path.join(BENCH, "gpu_check.sh"), "nonsense"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "usage" in proc.stderr
