"""Parts of paths/cuda_kernels.py that run without a GPU: contract, errors, graph-runner logic."""
from __future__ import annotations

import types

import numpy as np
import pytest

from lstm_gpu import activations
from lstm_gpu.errors import PathUnavailable
from lstm_gpu.paths import cuda_kernels, fused_loop
from lstm_gpu.paths.base import CellSpec, Weights


def _spec(act="tanh"):
    return CellSpec(2, activations.get(act), activations.get("sigmoid"), True, False, 2)


def test_module_contract():
    assert cuda_kernels.NAME == "cuda-kernels"
    assert callable(cuda_kernels.forward) and callable(cuda_kernels.backward)


def test_numpy_input_is_rejected_and_callable_unavailable():
    x = np.zeros((2, 1, 2), np.float32)
    w = Weights(np.zeros((2, 8), np.float32), np.zeros((2, 8), np.float32), None)
    h = np.zeros((1, 2), np.float32)
    with pytest.raises(TypeError):
        cuda_kernels.forward(w, x, None, h, h, _spec(), None, False)
    with pytest.raises(PathUnavailable):
        fused_loop.forward(None, w, x, None, h, h, _spec(lambda v: v), None, False)


def test_loop_mode_env(monkeypatch):
    monkeypatch.delenv(cuda_kernels.LOOP_ENV, raising=False)
    assert cuda_kernels.loop_mode() == "auto"
    monkeypatch.setenv(cuda_kernels.LOOP_ENV, "GRAPH")
    assert cuda_kernels.loop_mode() == "graph"
    monkeypatch.setenv(cuda_kernels.LOOP_ENV, "fast")
    with pytest.raises(ValueError):
        cuda_kernels.loop_mode()


def test_colsum_chunks_cover_rows():
    for rows, U in ((1, 1), (7, 3), (6400, 512), (1600, 128), (10 ** 6, 4)):
        rpc, chunks = fused_loop.colsum_chunks(rows, U)
        assert rpc * chunks >= rows > rpc * (chunks - 1)


class _FakeGraph:
    def __init__(self, runner_log):
        self.log = runner_log

    def launch(self, stream=None):
        self.log.append("replay")


def test_graph_runner_decisions(monkeypatch):
    """First sighting eager, second captures, later replays; auto gives up on churn."""
    log = []
    runner = cuda_kernels.GraphRunner(max_graphs=4)
    fake_cp = types.SimpleNamespace(cuda=types.SimpleNamespace(get_current_stream=lambda: None))
    monkeypatch.setattr(cuda_kernels, "cupy_module", lambda: fake_cp)
    monkeypatch.setattr(cuda_kernels, "graph_key",
                        lambda kind, a, with_addresses=True:
                        (kind, a.scalars["ptr"] if with_addresses else None))

    def capture(body):
        log.append("capture")
        return _FakeGraph(log)

    monkeypatch.setattr(runner, "_capture", capture)
    body = lambda: log.append("eager")  # noqa: E731

    def args(ptr):
        a = fused_loop.LoopArgs()
        a.scalars["ptr"] = ptr
        return a

    monkeypatch.setenv(cuda_kernels.LOOP_ENV, "graph")
    for _ in range(4):
        runner("forward", args(1), body)
    assert log == ["eager", "capture", "replay", "replay", "replay"]

    log.clear()
    monkeypatch.setenv(cuda_kernels.LOOP_ENV, "eager")
    runner("forward", args(1), body)
    assert log == ["eager"]

    # auto: addresses never repeat twice in a row -> after GIVE_UP_AFTER wasted captures, eager
    log.clear()
    runner.clear()
    monkeypatch.setenv(cuda_kernels.LOOP_ENV, "auto")
    for ptr in range(100, 100 + 2 * 10):
        runner("backward", args(ptr // 2), body)  # each key seen exactly twice
    assert log.count("capture") == cuda_kernels.GraphRunner.GIVE_UP_AFTER
