"""The command's grid through host stand-ins of the GPU paths, with the command's own runner.

No GPU runs here, so these prove what can be proven without one: that every problem of the
grid the command runs on a GPU (`grid.path_problems("default")`) passes its tolerances when
the GPU paths' own code runs on the host:

- the kernel path's time loop (`paths.fused_loop`) with the kernels' element code built for
  the host (tests/lstm_host_lib.py: kernels/lstm_cell.cuh through CMake and ctypes);
- the cuDNN path's glue (`paths.cudnn.FrontAlignedPath`) around the NumPy model of cuDNN
  (tests/lstm_reference.py) and around the real `CudnnCore` on a fake device
  (tests/fake_cudnn.py), with the registry's cuDNN rule (`registry.cudnn_declines`, the
  dispatcher's) deciding which problems it takes.

What cuDNN and the CUDA kernels compute on a device waits for `lstm-gpu-check` on a GPU.
"""
from __future__ import annotations

import pytest

import lstm_reference as ref
from fake_cudnn import OnFakeDevice, fake_core
from lstm_host_lib import HostDevice
from lstm_gpu.check import grid
from lstm_gpu.check.registry import (ALL_DTYPES, CheckPath, cudnn_declines,
                                     graph_counters_problem)
from lstm_gpu.check.runner import FAILED, PASSED, SKIPPED, Checker
from lstm_gpu.paths import cudnn as cudnn_path
from lstm_gpu.paths import fused_loop
from lstm_gpu.paths.loop_engine import LoopEngine


class HostKernelPath:
    """The kernel path's loop with the kernels' element code compiled for the host; its time
    loops run through the loop engine in `mode` ("graph": recorded once, then replayed)."""

    def __init__(self, mode: str = "eager"):
        self.engine = LoopEngine(mode=lambda: mode)

    def counters(self) -> dict:
        return self.engine.snapshot()

    def forward(self, weights, x, mask, h0, c0, spec, dropout, training):
        return fused_loop.forward(HostDevice(x.dtype), self.engine, weights, x, mask, h0, c0,
                                  spec, dropout, training)

    def backward(self, saved, d_last, d_sequence, d_h, d_c):
        return fused_loop.backward(HostDevice(saved.x.dtype), saved, d_last, d_sequence, d_h,
                                   d_c)


def _host_library_or_skip():
    from lstm_host_lib import host_library

    host_library()  # skips the test with the reason when cmake or a compiler is missing


def _glue(which: str):
    if which == "numpy-cudnn":
        return cudnn_path.FrontAlignedPath(ref.FrontAlignedCore())
    core, cp, _ = fake_core()
    return cudnn_path.FrontAlignedPath(OnFakeDevice(core, cp))


def _run(path: CheckPath):
    outcome = Checker("default", ALL_DTYPES).run_path(path)
    assert outcome.unavailable is None and outcome.crash is None, outcome
    failed = [f"{r.case} [{r.dtype}]: {r.reason or r.comparison.describe()}"
              for r in outcome.results if r.status == FAILED]
    assert not failed, "\n".join(failed)
    return outcome


def test_the_kernel_loop_on_the_host_passes_the_grid():
    _host_library_or_skip()
    outcome = _run(CheckPath("kernels-on-host", "fused_loop + host element code",
                             lambda: None, module=HostKernelPath))
    passed = [r for r in outcome.results if r.status == PASSED]
    assert len(passed) == 2 * len(grid.path_problems("default"))  # float32 and float64
    assert {r.dtype for r in outcome.results if r.status == SKIPPED} == {"float16"}


def test_graph_mode_on_the_host_replays_and_its_counters_pass():
    """The command's graph-mode entry (three calls, counters judged by the registry's rule)
    on the host model of capture and replay."""
    _host_library_or_skip()
    path = HostKernelPath("graph")
    outcome = _run(CheckPath("kernels-on-host:graph", "replayed loops", lambda: None,
                             module=lambda: path, calls=3, counters=path.counters,
                             counters_problem=graph_counters_problem))
    assert outcome.counters["replays"] > 0 and outcome.counters["fallbacks"] == 0
    assert outcome.results[-1].group == "counters" and outcome.results[-1].status == PASSED


@pytest.mark.parametrize("which", ["numpy-cudnn", "core-on-fake-device"])
def test_the_cudnn_glue_passes_the_problems_the_rules_give_it(which):
    outcome = _run(CheckPath(which, "cudnn glue", lambda: None, module=lambda: _glue(which),
                             dtypes=("float32", "float64"), declines=cudnn_declines))
    by_group = {}
    for r in outcome.results:
        by_group.setdefault(r.group, set()).add(r.status)
    assert PASSED in by_group["masks"] and PASSED in by_group["states"]
    assert by_group["activations"] == {SKIPPED}  # relu, no bias: not cuDNN's
    skipped = [r for r in outcome.results if r.status == SKIPPED and r.dtype != "float16"]
    assert skipped and all(r.reason for r in skipped)
