"""Launch arguments against the kernels' signatures, without a GPU.

`lstm_gpu.cuda.kernels.*_PARAMS` list each __global__ kernel's parameters (name and kind);
here they are compared with the signatures parsed from kernels/lstm_kernels.cu, and the
packing the CUDA path does once per plan (`cuda_kernels.pack_args`) is checked value by value:
a pointer becomes a `CIntptr` holding the view's address (0 for None), an ``idx_t`` an 8-byte
and an ``int`` a 4-byte `CScalar` (CuPy's launcher passes `CPointer` objects through as they
are: cupy/cuda/function.pyx `_pointer`). A wrong order, width or missing argument would
corrupt a launch on a GPU and pass every host test otherwise.
"""
from __future__ import annotations

import ctypes
import re
from pathlib import Path

import numpy as np
import pytest

from lstm_gpu.cuda import kernels
from lstm_gpu.cuda.gemm_plan import address
from lstm_gpu.paths import cuda_kernels

REPO = Path(__file__).resolve().parents[1]
_KIND = {"idx_t": "idx", "int": "int"}


def kernel_signatures() -> dict:
    src = (REPO / "kernels" / "lstm_kernels.cu").read_text()
    src = src[:src.index("#ifdef LSTM_GPU_INSTANTIATE")]
    out = {}
    for name, params in re.findall(r"__global__ void (\w+)\(([^)]*)\)", src):
        parsed = []
        for p in params.split(","):
            words = p.replace("*", " * ").split()
            kind = "ptr" if "*" in words else _KIND[" ".join(words[:-1]).replace("const ", "")]
            parsed.append((words[-1], kind))
        out[name] = tuple(parsed)
    return out


@pytest.mark.parametrize("kernel, params", [
    ("fwd_step", kernels.FWD_STEP_PARAMS), ("bwd_step", kernels.BWD_STEP_PARAMS),
    ("colsum_partial", kernels.COLSUM_PARTIAL_PARAMS),
    ("colsum_final", kernels.COLSUM_FINAL_PARAMS),
])
def test_parameter_tables_match_the_kernel_signatures(kernel, params):
    assert kernel_signatures()[kernel] == params


def test_host_library_takes_the_same_order():
    """kernels/lstm_host.cpp's step functions: the kernel's parameters, then `fixed`."""
    src = (REPO / "kernels" / "lstm_host.cpp").read_text()
    for kernel, params in (("fwd_step", kernels.FWD_STEP_PARAMS),
                           ("bwd_step", kernels.BWD_STEP_PARAMS)):
        m = re.search(rf'extern "C" void lstm_{kernel}_##SUFFIX\(([^)]*)\)', src)
        names = [p.replace("*", " ").split()[-1] for p in m.group(1).split(",")]
        assert names == [n for n, _ in params] + ["fixed"]


def _value(arg, kind):
    width = {"ptr": ctypes.c_int64, "idx": ctypes.c_int64, "int": ctypes.c_int32}[kind]
    return width.from_address(arg.ptr).value


@pytest.mark.skipif(cuda_kernels._CIntptr is None, reason="CuPy's argument wrappers missing")
def test_packed_arguments_hold_addresses_and_widths():
    B, U = 3, 4
    arrays = {name: np.zeros((B, 4 * U)) for name, kind in kernels.FWD_STEP_PARAMS
              if kind == "ptr"}
    arrays["xz"] = np.zeros((5, B, 4 * U))[2]  # an offset view: its own first element
    arrays["bias"] = None
    scalars = dict(xz_gs=U, xz_bs=4 * U, rz_gs=U, rz_bs=4 * U, B=B, U=U, act=1, ract=2,
                   zero_output=1)
    packed = cuda_kernels.pack_args(kernels.FWD_STEP_PARAMS, {**arrays, **scalars})
    assert len(packed) == len(kernels.FWD_STEP_PARAMS)
    for (name, kind), arg in zip(kernels.FWD_STEP_PARAMS, packed):
        if kind == "ptr":
            assert isinstance(arg, cuda_kernels._CIntptr)
            want = 0 if arrays[name] is None else address(arrays[name])
        else:
            assert isinstance(arg, cuda_kernels._CScalar)
            assert arg.get_numpy_type() is (np.int64 if kind == "idx" else np.int32), name
            want = scalars[name]
        assert _value(arg, kind) == want, name


def test_missing_or_unexpected_arguments_are_refused():
    values = {name: 0 for name, _ in kernels.COLSUM_FINAL_PARAMS}
    with pytest.raises(KeyError):
        cuda_kernels.pack_args(kernels.COLSUM_FINAL_PARAMS, {k: v for k, v in values.items()
                                                            if k != "chunks"})
    with pytest.raises(TypeError, match="unexpected"):
        cuda_kernels.pack_args(kernels.COLSUM_FINAL_PARAMS, {**values, "bogus": 1})
