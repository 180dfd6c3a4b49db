"""Which CUDA stream a CuPy stream object stands for, across threads.

A stream's ``ptr`` (the raw ``cudaStream_t``) names one stream for every thread, with one
exception: ``cudaStreamPerThread`` (``((cudaStream_t)0x2)``, CUDA's ``driver_types.h`` line
121: "an implicit stream with per-thread synchronization behavior") is a *different* stream in
each host thread. CuPy makes it every thread's current stream when per-thread default streams
are on (``CUPY_CUDA_PER_THREAD_DEFAULT_STREAM=1``): ``get_default_stream()`` returns the one
``Stream.ptds`` object, ``ptr`` 2, in every thread (CuPy 14.2 ``cupy/cuda/stream.pyx`` lines
74 and 648), and CuPy's own memory pool keys it by thread for that reason
(``cupy/cuda/memory.pyx`` line 877, ``_get_stream_identifier``). So equal ``ptr`` values do not
mean "the same stream", and work (an event record, a wait) can be put on another thread's
per-thread stream only by that thread.
"""
from __future__ import annotations

import threading
from typing import Any

PER_THREAD = 2  # cudaStreamPerThread (CuPy: cupy_backends.cuda.api.runtime.streamPerThread)


def stream_key(stream: Any) -> tuple[int, int]:
    """(ptr, thread) naming the stream `stream` is in the calling thread (thread 0 for streams
    every thread shares)."""
    ptr = int(stream.ptr)
    return ptr, (threading.get_ident() if ptr == PER_THREAD else 0)


def of_another_thread(key: tuple[int, int]) -> bool:
    """True when `key` is another thread's per-thread default stream: this thread can neither
    record an event on it nor make it wait."""
    return key[0] == PER_THREAD and key[1] != threading.get_ident()
