"""Parts of paths/cuda_kernels.py that run without a GPU: contract, errors, modes, counters.

The plan/graph logic itself is shared with the host device and tested in
tests/test_loop_engine_host.py; launch arguments in tests/test_kernel_launch_args.py.
"""
from __future__ import annotations

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
        fused_loop.forward(None, None, w, x, None, h, h, _spec(lambda v: v), None, False)
    with pytest.raises(ValueError, match="saved"):
        cuda_kernels.backward(None, None, None, None, None)


def test_loop_mode_env(monkeypatch):
    monkeypatch.delenv(cuda_kernels.LOOP_ENV, raising=False)
    assert cuda_kernels.loop_mode() == "auto"
    monkeypatch.setenv(cuda_kernels.LOOP_ENV, "GRAPH")
    assert cuda_kernels.loop_mode() == "graph"
    monkeypatch.setenv(cuda_kernels.LOOP_ENV, "fast")
    with pytest.raises(ValueError, match="LSTM_GPU_KERNEL_LOOP"):
        cuda_kernels.loop_mode()


def test_graph_stats_keys_and_clear():
    """The counters `lstm-gpu-check` reads (issue 14) and clear_graphs()."""
    cuda_kernels.clear_graphs()
    stats = cuda_kernels.graph_stats()
    for key in ("eager", "captures", "replays", "fallbacks", "evictions", "record_copies",
                "record_restores", "plans", "plan_bytes", "failed_keys"):
        assert isinstance(stats[key], int), key
    assert stats["plans"] == stats["plan_bytes"] == 0


def test_colsum_chunks_cover_rows():
    for rows, U in ((1, 1), (7, 3), (6400, 512), (1600, 128), (10 ** 6, 4)):
        rpc, chunks = fused_loop.colsum_chunks(rows, U)
        assert rpc * chunks >= rows > rpc * (chunks - 1)
