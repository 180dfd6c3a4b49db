"""Loading the fused LSTM kernels (kernels/*.cu, *.cuh) with NVRTC through CuPy.

The sources ship as package data `lstm_gpu.kernels` (the repository's `kernels/` folder). The
header is pasted in place of the `#include "lstm_cell.cuh"` line, so NVRTC needs no include
path. One `cupy.RawModule` is built per device, lazily, on the first kernel request, with
`name_expressions` for every template instantiation listed in `NAME_EXPRESSIONS`.

Kernel templates (see kernels/lstm_kernels.cu):
    lstm::fwd_step<T, A, RA>, lstm::bwd_step<T, A, RA>   T float|double; A, RA = enum Act ids
                                                         or -1 (runtime activation ids)
    lstm::colsum_partial<T>, lstm::colsum_final<T>       deterministic bias-gradient sums

`nvrtc_compile(arch)` compiles the same source and names with the raw NVRTC binding, which
needs no CUDA driver (CI checks with it on machines without a GPU).
"""
from __future__ import annotations

import importlib.resources
import threading
from pathlib import Path
from typing import Any

import numpy as np

from .._xp import cupy_module

HEADER = "lstm_cell.cuh"
SOURCE = "lstm_kernels.cu"
INCLUDE_LINE = f'#include "{HEADER}"'
COMPILE_OPTIONS = ("-std=c++17",)

# dtype -> C type of the kernel templates. float16 is computed by the layer in float32.
CTYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}

DYNAMIC = -1
# (activation, recurrent_activation) ids compiled as constants; others use (-1, -1).
FIXED_ACTIVATIONS = ((1, 2),)  # tanh, sigmoid
_ACT_VARIANTS = ((DYNAMIC, DYNAMIC),) + FIXED_ACTIVATIONS


def step_name(kind: str, ctype: str, act: int, ract: int) -> str:
    """Name expression of a step kernel: kind is "fwd_step" or "bwd_step"."""
    return f"lstm::{kind}<{ctype}, {act}, {ract}>"


def sum_name(kind: str, ctype: str) -> str:
    """Name expression of a reduction kernel: "colsum_partial" or "colsum_final"."""
    return f"lstm::{kind}<{ctype}>"


def _params(text: str) -> tuple[tuple[str, str], ...]:
    return tuple(tuple(p.split(":")) for p in text.split())  # type: ignore[misc]


# Kernel parameters in order, as (name, kind): "ptr" (a device pointer, NULL for None),
# "idx" (idx_t = long long) or "int". tests/test_kernel_launch_args.py compares these with the
# __global__ signatures in kernels/lstm_kernels.cu.
FWD_STEP_PARAMS = _params("""
    xz:ptr xz_gs:idx xz_bs:idx rz:ptr rz_gs:idx rz_bs:idx bias:ptr h_prev:ptr c_prev:ptr
    out_prev:ptr mask:ptr rec_mask:ptr h_rec:ptr h:ptr c:ptr out:ptr z_save:ptr B:idx U:idx
    act:int ract:int zero_output:int""")
BWD_STEP_PARAMS = _params("""
    z:ptr c_prev:ptr c:ptr mask:ptr d_out:ptr g_out:ptr dh:ptr dh_rec:ptr rec_mask:ptr dc:ptr
    dz:ptr dz_gs:idx dz_bs:idx B:idx U:idx act:int ract:int zero_output:int""")
COLSUM_PARTIAL_PARAMS = _params("""
    in:ptr ts:idx bs:idx gs:idx T_:idx B:idx U:idx rows_per_chunk:idx chunks:idx partial:ptr""")
COLSUM_FINAL_PARAMS = _params("partial:ptr U:idx chunks:idx out:ptr")


def ordered_args(params, values: dict) -> list:
    """`values` (a dict by parameter name) in the kernel's parameter order; KeyError names a
    missing argument, and an unexpected one is a TypeError."""
    extra = set(values) - {name for name, _ in params}
    if extra:
        raise TypeError(f"unexpected kernel arguments {sorted(extra)}")
    return [values[name] for name, _ in params]


NAME_EXPRESSIONS: tuple[str, ...] = tuple(
    [step_name(k, c, a, r) for c in CTYPES.values() for a, r in _ACT_VARIANTS
     for k in ("fwd_step", "bwd_step")]
    + [sum_name(k, c) for c in CTYPES.values() for k in ("colsum_partial", "colsum_final")]
)


def _read_kernel_file(name: str) -> str:
    """A file of `lstm_gpu.kernels` (installed) or of the source tree's kernels/ folder."""
    try:
        return (importlib.resources.files("lstm_gpu.kernels") / name).read_text(encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError):
        tree = Path(__file__).resolve().parents[2] / "kernels" / name
        return tree.read_text(encoding="utf-8")


def kernel_source() -> str:
    """The single translation unit compiled by NVRTC."""
    body = _read_kernel_file(SOURCE)
    if INCLUDE_LINE not in body:
        raise RuntimeError(f"{SOURCE} does not include {HEADER}; cannot assemble the source")
    return body.replace(INCLUDE_LINE, _read_kernel_file(HEADER), 1)


def ctype_of(dtype: Any) -> str:
    """C type for a NumPy/CuPy dtype; TypeError for anything but float32/float64."""
    try:
        return CTYPES[np.dtype(dtype)]
    except (KeyError, TypeError):
        raise TypeError(
            f"The CUDA kernel path computes in float32 or float64; got dtype {dtype!r} "
            "(float16 inputs are cast to float32 by the layer)."
        ) from None


def activation_variant(act: int, ract: int) -> tuple[int, int]:
    """The template arguments serving (act, ract): a fixed instantiation or (-1, -1)."""
    if act < 0 or ract < 0:
        raise ValueError(f"kernel activations need ids >= 0, got ({act}, {ract})")
    return (act, ract) if (act, ract) in FIXED_ACTIVATIONS else (DYNAMIC, DYNAMIC)


class KernelSet:
    """The compiled module of one device; kernels are looked up by dtype and activation."""

    def __init__(self, device_id: int):
        cp = cupy_module()
        if cp is None:
            raise RuntimeError("CuPy is not importable; the CUDA kernels cannot be loaded")
        self.device_id = device_id
        with cp.cuda.Device(device_id):
            self.module = cp.RawModule(code=kernel_source(), options=COMPILE_OPTIONS,
                                       name_expressions=list(NAME_EXPRESSIONS))
        self._functions: dict[str, Any] = {}

    def _get(self, name: str):
        fn = self._functions.get(name)
        if fn is None:
            fn = self.module.get_function(name)
            self._functions[name] = fn
        return fn

    def step(self, kind: str, dtype: Any, act: int, ract: int):
        a, r = activation_variant(act, ract)
        return self._get(step_name(kind, ctype_of(dtype), a, r))

    def colsum(self, kind: str, dtype: Any):
        return self._get(sum_name(kind, ctype_of(dtype)))


_lock = threading.Lock()
_sets: dict[int, KernelSet] = {}


def get_kernels(device_id: int | None = None) -> KernelSet:
    """The KernelSet of a device (default: CuPy's current device), built once per process."""
    cp = cupy_module()
    if cp is None:
        raise RuntimeError("CuPy is not importable; the CUDA kernels cannot be loaded")
    if device_id is None:
        device_id = cp.cuda.Device().id
    ks = _sets.get(device_id)
    if ks is None:
        with _lock:
            ks = _sets.get(device_id)
            if ks is None:
                ks = KernelSet(device_id)
                _sets[device_id] = ks
    return ks


def nvrtc_compile(arch: str = "compute_80") -> tuple[bytes, dict[str, str]]:
    """Compile every name expression with the raw NVRTC binding (no driver needed).

    Returns (PTX, {name expression: lowered name}); raises RuntimeError with NVRTC's log.
    """
    from cupy_backends.cuda.libs import nvrtc

    prog = nvrtc.createProgram(kernel_source(), SOURCE, [], [])
    try:
        for name in NAME_EXPRESSIONS:
            nvrtc.addNameExpression(prog, name)
        try:
            nvrtc.compileProgram(prog, [f"-arch={arch}", *COMPILE_OPTIONS])
        except Exception as exc:
            raise RuntimeError(f"NVRTC failed for {arch}:\n{nvrtc.getProgramLog(prog)}") from exc
        lowered = {name: nvrtc.getLoweredName(prog, name) for name in NAME_EXPRESSIONS}
        ptx = nvrtc.getPTX(prog)
        log = nvrtc.getProgramLog(prog)
    finally:
        nvrtc.destroyProgram(prog)
    if log.strip():
        lowered["__log__"] = log
    return ptx, lowered
