"""Threads: concurrent first calls build one set of weights; a record replaced by another
thread's call is never differentiated by mistake.

Inference from several threads at once is supported; training one layer from several threads
at once is not (README), but it fails loudly: `backward` in a thread whose last training call
was replaced by another thread's call raises instead of mixing the two.
"""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from lstm_gpu import LSTM
from lstm_gpu.initializers import GlorotUniform

try:
    from tests import lstm_testlib as T_
except ImportError:  # tests/ itself on sys.path
    import lstm_testlib as T_


class SlowInitializer(GlorotUniform):
    """Glorot, slow enough that concurrent builds overlap."""

    def __call__(self, shape, dtype="float32"):
        time.sleep(0.02)
        return super().__call__(shape, dtype)


def _run_threads(n, target):
    barrier = threading.Barrier(n)
    results, errors = [None] * n, []

    def run(k):
        barrier.wait()
        try:
            results[k] = target(k)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return results


def test_concurrent_first_calls_build_one_set_of_weights():
    layer = LSTM(3, kernel_initializer=SlowInitializer(), dtype="float64")
    x = T_.random_inputs(2, 4, 5)
    results = _run_threads(6, lambda k: layer(x))
    final = layer(x)
    for r in results:
        np.testing.assert_array_equal(r, final)


def test_concurrent_inference_agrees():
    layer = T_.built(LSTM(3, dtype="float64"), (2, 4, 5), T_.random_weights(5, 3))
    xs = [T_.random_inputs(2, 4, 5, seed=k) for k in range(6)]
    results = _run_threads(6, lambda k: layer(xs[k]))
    for x, r in zip(xs, results):
        np.testing.assert_array_equal(r, layer(x))


def test_backward_of_a_record_replaced_by_another_thread_raises():
    layer = T_.built(LSTM(3, dtype="float64"), (2, 4, 5), T_.random_weights(5, 3))
    x = T_.random_inputs(2, 4, 5)
    layer(x, training=True)                               # this thread's record ...
    other = threading.Thread(target=lambda: layer(x + 1, training=True))
    other.start()
    other.join()                                          # ... replaced by another thread
    with pytest.raises(RuntimeError, match="another thread"):
        layer.backward(np.ones((2, 3)))
    layer(x, training=False)                              # an inference call replaced it too
    other = threading.Thread(target=lambda: layer(x, training=False))
    other.start()
    other.join()
    with pytest.raises(RuntimeError, match="training=True"):
        layer.backward(np.ones((2, 3)))


def test_backward_in_a_thread_that_made_no_call_uses_the_last_record():
    layer = T_.built(LSTM(3, dtype="float64"), (2, 4, 5), T_.random_weights(5, 3))
    x = T_.random_inputs(2, 4, 5)
    worker = threading.Thread(target=lambda: layer(x, training=True))
    worker.start()
    worker.join()
    grads = layer.backward(np.ones((2, 3)))
    layer(x, training=True)
    np.testing.assert_array_equal(grads["kernel"], layer.backward(np.ones((2, 3)))["kernel"])
