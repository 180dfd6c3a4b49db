"""The native CPU path: the kernels' element code in one compiled time loop ("cpu-native").

`lstm_gpu._cpu_core` (kernels/cpu/, built by the package's own build when a C++ compiler is
there) runs the whole forward and backward time loops in C++ with the GIL released: the
element functions of kernels/lstm_cell.cuh (the CUDA kernels' own per-element code) and,
per step, one product of [x_t, h_{t-1}] with the kernels [W; R], packed once per call into
panels for the core's own register-blocked micro-kernel (kernels/cpu/packed_gemm.hpp; the
input projection is part of it), backward the product with R^T likewise; the weight and
input gradients are large BLAS GEMMs once after the backward loop. The core's code is
compiled for AVX-512, AVX2+FMA and the baseline and the best the CPU runs is picked when it
loads (`isa()`; `set_isa()` lowers it, for tests); float32 exp, sigmoid and tanh are
branch-free versions that vectorise (kernels/cpu/vmath.h), with AVX-512 instructions of
their own at that level (kernels/cpu/vmath_avx512.h).

BLAS: cblas_sgemm / cblas_dgemm of the scipy-openblas32 wheel (a library made for linking),
whose addresses are handed to the core when it loads, so the build needs no BLAS. OpenBLAS's
own threads are set to 1: the core's threads split the batch (each runs the whole time loop
of its samples) and the large GEMMs, so nothing is oversubscribed.

Threads: `set_num_threads(n)`, else OMP_NUM_THREADS, else the CPUs this process may run on.

oneDNN was measured as an alternative for the configurations its LSTM primitive serves (see
README, "The CPU paths") and is not used: see the numbers there.

Same contract as `numpy_ref` (see `base`); a Python-callable activation raises
`PathUnavailable` (the layer routes such calls to the reference).
"""
from __future__ import annotations

import ctypes
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..errors import PathUnavailable
from . import numpy_ref
from .base import CellSpec, DropoutMasks, ForwardResult, Gradients, Weights

NAME = "cpu-native"

_state: dict[str, Any] = {}  # "core", "reason", "threads": filled by _load()
_explicit_threads: Optional[int] = None


def _blas_addresses() -> tuple[int, int]:
    """(cblas_sgemm, cblas_dgemm) addresses in scipy-openblas32, its threads set to 1."""
    import scipy_openblas32

    lib_dir = Path(scipy_openblas32.get_lib_dir())
    lib = ctypes.CDLL(str(lib_dir / scipy_openblas32.get_library(fullname=True)))
    lib.scipy_openblas_set_num_threads(ctypes.c_int(1))
    address = (lambda f: ctypes.cast(f, ctypes.c_void_p).value)  # noqa: E731
    _state["blas_lib"] = lib  # keep the handle (and the functions) alive
    return address(lib.scipy_cblas_sgemm), address(lib.scipy_cblas_dgemm)


def _load() -> None:
    if "reason" in _state:
        return
    try:
        from .. import _cpu_core as core
    except ImportError as exc:
        recorded = Path(__file__).resolve().parents[1] / "_cpu_core.unavailable"
        why = recorded.read_text().strip() if recorded.exists() else (
            "the compiled CPU core lstm_gpu._cpu_core is not built (reinstall with a C++ "
            f"compiler, or run `python setup.py build_ext --inplace`): {exc}")
        _state["reason"] = why
        return
    try:
        core.set_blas(*_blas_addresses())
    except ImportError as exc:
        _state["reason"] = f"no BLAS for the CPU core: scipy-openblas32 is not installed ({exc})"
        return
    except (OSError, AttributeError) as exc:
        _state["reason"] = f"no BLAS for the CPU core: scipy-openblas32 does not load ({exc})"
        return
    _state["core"] = core
    _state["reason"] = None
    _state["threads"] = _default_threads()


def unavailable_reason() -> Optional[str]:
    """None when the native CPU path can run here, else why not (for lstm-gpu-check)."""
    _load()
    return _state["reason"]


def is_available() -> bool:
    return unavailable_reason() is None


ISA_LEVELS = ("baseline", "avx2", "avx512")


def isa() -> Optional[str]:
    """The SIMD level the core runs ("avx512", "avx2", "baseline"; the best this CPU runs
    unless set_isa() lowered it), or None."""
    return _state["core"].isa() if is_available() else None


def set_isa(level: Optional[str]) -> str:
    """Run the core's code for a lower SIMD level than this CPU's best (one of ISA_LEVELS;
    None: the best again), for tests and comparisons. Returns the previous level; ValueError
    for a level the CPU does not run."""
    if level is not None and level not in ISA_LEVELS:
        raise ValueError(f"Argument `level` must be one of {', '.join(ISA_LEVELS)} or None. "
                         f"Received: level={level!r}")
    return _core().set_isa(level)


def _default_threads() -> int:
    env = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def set_num_threads(threads: Optional[int]) -> None:
    """Threads of the native CPU path (None: OMP_NUM_THREADS, else every CPU we may use)."""
    global _explicit_threads
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)
                                or threads < 1):
        raise ValueError(f"Argument `threads` must be a positive int or None. "
                         f"Received: threads={threads!r}")
    _explicit_threads = threads


def num_threads() -> int:
    """The threads the next call will use at most."""
    if _explicit_threads is not None:
        return _explicit_threads
    _load()
    return _state.get("threads") or _default_threads()


CPU_PATH_ENV = "LSTM_GPU_CPU_PATH"
CPU_PATH_CHOICES = ("auto", "native", "numpy")
_override: Optional[str] = None  # set_cpu_path(): wins over the environment variable


def set_cpu_path(choice: Optional[str]) -> Optional[str]:
    """Choose the CPU path in this process ("auto", "native", "numpy"; None: back to
    LSTM_GPU_CPU_PATH). Returns the previous choice. Cheap, so a benchmark may call it
    around every call."""
    global _override
    if choice is not None and choice not in CPU_PATH_CHOICES:
        raise ValueError(f"Argument `choice` must be one of {', '.join(CPU_PATH_CHOICES)} or "
                         f"None. Received: choice={choice!r}")
    previous, _override = _override, choice
    return previous


def select(builtin_activations: bool):
    """(path module, name) for a NumPy call.

    The choice (set_cpu_path(), else LSTM_GPU_CPU_PATH): "auto" (default) runs this path
    when it is available, else the NumPy reference; "native" insists (RuntimeError with the
    reason when unavailable); "numpy" runs the reference. Python-callable activations always
    run the reference.
    """
    choice = _override or os.environ.get(CPU_PATH_ENV) or "auto"
    if choice not in CPU_PATH_CHOICES:
        raise ValueError(f"{CPU_PATH_ENV} must be one of {', '.join(CPU_PATH_CHOICES)}. "
                         f"Received: {choice!r}")
    if choice == "numpy" or not builtin_activations:
        return numpy_ref, numpy_ref.NAME
    why = unavailable_reason()
    if why is None:
        return sys.modules[__name__], NAME
    if choice == "native":
        raise RuntimeError(f"{CPU_PATH_ENV}=native, but the native CPU path is unavailable: "
                           f"{why}")
    return numpy_ref, numpy_ref.NAME


def _core():
    _load()
    if _state["reason"] is not None:
        raise PathUnavailable(f"the native CPU path is unavailable: {_state['reason']}")
    return _state["core"]


@dataclass
class Saved:
    """What backward needs (training only); arrays time-major, processing order."""

    spec: CellSpec
    x: Any  # (T, B, F)
    kernel: Any  # (F, 4U)
    recurrent_kernel: Any  # (U, 4U)
    use_bias: bool
    h0: Any  # (B, U)
    c0: Any
    mask: Any  # (T, B) bool or None
    mx: Any  # (G, B, F) input dropout masks or None
    mr: Any  # (4, B, U) recurrent dropout masks or None
    z: Any  # (T, B, 4U) pre-activations, bias included
    hs: Any  # (T, B, U) h after each step
    cs: Any  # (T, B, U) c after each step


def _kernel_ids(spec: CellSpec) -> tuple[int, int]:
    act, ract = spec.activation.kernel_id, spec.recurrent_activation.kernel_id
    if act < 0 or ract < 0:
        raise PathUnavailable("the native CPU path has no compiled form of a Python callable "
                              "activation; the layer runs the NumPy reference instead")
    return act, ract


def _c(a, dtype):
    """a as a C-contiguous array of dtype (a itself when it is one already: the common case,
    checked first because np.ascontiguousarray costs microseconds per call at batch 1)."""
    if a is None or (type(a) is np.ndarray and a.dtype == dtype and a.flags.c_contiguous):
        return a
    return np.ascontiguousarray(a, dtype=dtype)


def forward(weights: Weights, x, mask, h0, c0, spec: CellSpec,
            dropout: Optional[DropoutMasks], training: bool) -> ForwardResult:
    act, ract = _kernel_ids(spec)
    core = _core()
    dt = x.dtype
    steps, batch, _ = x.shape
    units = spec.units
    x = _c(x, dt)
    kernel, recurrent = _c(weights.kernel, dt), _c(weights.recurrent_kernel, dt)
    bias = _c(weights.bias, dt) if spec.use_bias else None
    h0, c0 = _c(h0, dt), _c(c0, dt)
    mask = _c(mask, np.bool_)
    mx = _c(dropout.inputs, dt) if dropout is not None else None
    mr = _c(dropout.recurrent, dt) if dropout is not None else None
    seq = np.empty((steps, batch, units), dt)
    h, c = np.empty((batch, units), dt), np.empty((batch, units), dt)
    z = hs = cs = None  # inference: the core's scratch buffer holds z
    if training:
        z = np.empty((steps, batch, 4 * units), dt)
        hs, cs = np.empty_like(seq), np.empty_like(seq)
    core.forward(x, kernel, recurrent, bias, h0, c0, mask, mx, mr, act, ract,
                 int(spec.zero_output_for_mask), num_threads(), seq, h, c, z, hs, cs)
    if steps == 0:
        last = np.zeros((batch, units), dt)
        h[...], c[...] = h0, c0
    else:
        last = seq[steps - 1].copy()
    saved = None
    if training:
        saved = Saved(spec, x, kernel, recurrent, bias is not None, h0, c0, mask, mx, mr, z,
                      hs, cs)
    return ForwardResult(last, seq, h, c, saved)


def backward(saved: Saved, d_last, d_sequence, d_h, d_c) -> Gradients:
    if saved is None:
        raise ValueError("backward needs the `saved` of a forward call with training=True")
    act, ract = _kernel_ids(saved.spec)
    core = _core()
    x = saved.x
    dt = x.dtype
    steps, batch, features = x.shape
    units = saved.spec.units
    dx = np.empty_like(x)
    dh0, dc0 = np.empty((batch, units), dt), np.empty((batch, units), dt)
    d_kernel = np.empty((features, 4 * units), dt)
    d_recurrent = np.empty((units, 4 * units), dt)
    d_bias = np.empty((4 * units,), dt) if saved.use_bias else None
    core.backward(x, saved.kernel, saved.recurrent_kernel, saved.h0, saved.c0, saved.mask,
                  saved.mx, saved.mr, act, ract, int(saved.spec.zero_output_for_mask),
                  num_threads(), saved.z, saved.hs, saved.cs, _c(d_last, dt),
                  _c(d_sequence, dt), _c(d_h, dt), _c(d_c, dt), None, dx, dh0, dc0, d_kernel,
                  d_recurrent, d_bias)
    return Gradients(dx, dh0, dc0, d_kernel, d_recurrent, d_bias)
