"""Two threads on CuPy's per-thread default streams, on a GPU (tests/test_stream_order.py holds
the host checks of the same decisions).

CuPy reads ``CUPY_CUDA_PER_THREAD_DEFAULT_STREAM`` when it is imported, so each check runs in a
fresh interpreter. There every thread's current stream is ``Stream.ptds`` (ptr 2), a different
CUDA stream in each thread: work of two threads on one kernel-path plan, or a cuDNN backward
on another thread than its forward, is ordered only by the events the paths record.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lstm_gpu._xp import gpu_available

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not gpu_available(), reason="needs a CUDA device (CuPy sees none)")]

ROOT = Path(__file__).resolve().parents[2]

COMMON = """
import threading
import numpy as np
import cupy as cp
from lstm_gpu import activations
from lstm_gpu.paths import numpy_ref
from lstm_gpu.paths.base import CellSpec, Weights

assert cp.cuda.get_current_stream().ptr == 2, "per-thread default streams are off"
T, B, F, U = 60, 32, 48, 96
rng = np.random.default_rng(0)
W = rng.normal(size=(F, 4 * U)) / np.sqrt(F)
R = rng.normal(size=(U, 4 * U)) / np.sqrt(U)
b = rng.normal(size=4 * U) * 0.3
spec = CellSpec(U, activations.get("tanh"), activations.get("sigmoid"), True, False, 2)
h0 = np.zeros((B, U))


def on_gpu():
    return Weights(*(cp.asarray(a) for a in (W, R, b)))


def in_thread(fn):
    errors = []

    def run():
        try:
            fn()
        except Exception as e:
            errors.append(e)

    t = threading.Thread(target=run)
    t.start()
    t.join()
    if errors:
        raise errors[0]
"""

KERNEL_PLAN_SHARED = COMMON + """
from lstm_gpu.paths import cuda_kernels

xs = [rng.normal(size=(T, B, F)) for _ in range(2)]
want = [numpy_ref.forward(Weights(W, R, b), x, None, h0, h0, spec, None, False).sequence
        for x in xs]
got = [[], []]
start = threading.Barrier(2)


def work(i):
    w, x, z = on_gpu(), cp.asarray(xs[i]), cp.zeros((B, U))
    cp.cuda.get_current_stream().synchronize()
    start.wait()
    for _ in range(40):  # both threads on one plan (one shape), each on its own stream
        got[i].append(cuda_kernels.forward(w, x, None, z, z, spec, None, False).sequence)
    cp.cuda.get_current_stream().synchronize()


threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
for t in threads:
    t.start()
for t in threads:
    t.join()
assert cuda_kernels.graph_stats()["plans"] == 1
for i in range(2):
    for seq in got[i]:
        np.testing.assert_allclose(cp.asnumpy(seq), want[i], rtol=1e-10, atol=1e-10)
print("ok")
"""

CUDNN_BACKWARD_ELSEWHERE = COMMON + """
from lstm_gpu.paths import cudnn as cudnn_path

x = rng.normal(size=(T, B, F))
dseq = rng.normal(size=(T, B, U))
ref = numpy_ref.forward(Weights(W, R, b), x, None, h0, h0, spec, None, True)
want = numpy_ref.backward(ref.saved, None, dseq, None, None)
res = cudnn_path.forward(on_gpu(), cp.asarray(x), None, cp.zeros((B, U)), cp.zeros((B, U)),
                         spec, None, True)
out = []
in_thread(lambda: out.append(cudnn_path.backward(res.saved, None, cp.asarray(dseq), None,
                                                 None)))
for name in ("inputs", "kernel", "recurrent_kernel", "bias"):
    np.testing.assert_allclose(cp.asnumpy(getattr(out[0], name)), getattr(want, name),
                               rtol=1e-10, atol=1e-10, err_msg=name)
print("ok")
"""


def _run_with_per_thread_streams(script: str, **env) -> None:
    env = dict(os.environ, CUPY_CUDA_PER_THREAD_DEFAULT_STREAM="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), **env)
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), (
        done.stdout[-4000:] + done.stderr[-4000:])


@pytest.mark.parametrize("loop", ["eager", "graph"])
def test_two_threads_share_a_kernel_plan_on_per_thread_streams(loop):
    _run_with_per_thread_streams(KERNEL_PLAN_SHARED, LSTM_GPU_KERNEL_LOOP=loop)


@pytest.mark.cudnn
def test_cudnn_backward_on_another_thread_on_per_thread_streams():
    _run_with_per_thread_streams(CUDNN_BACKWARD_ELSEWHERE)
