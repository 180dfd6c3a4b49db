"""The one-launch weight packing kernel (kernels/cudnn_pack.cu) without a GPU: NVRTC and nvcc
compile it, its element function runs on the host (g++) against the NumPy packing, and the
launch arguments match the kernel's signature."""
from __future__ import annotations

import ctypes
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from lstm_gpu.cuda import kernels
from lstm_gpu.paths import cudnn_weights as cw
from lstm_gpu.paths.base import Weights
from test_kernels_compile import _nvrtc_or_skip

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO / "kernels" / cw.PACK_SOURCE


@pytest.mark.parametrize("arch", ["compute_80", "compute_90"])
def test_nvrtc_compiles_every_name_expression(monkeypatch, arch):
    _nvrtc_or_skip()
    # kernels.nvrtc_compile with the pack kernel's source, names and options
    monkeypatch.setattr(kernels, "kernel_source", cw.pack_source)
    monkeypatch.setattr(kernels, "SOURCE", cw.PACK_SOURCE)
    monkeypatch.setattr(kernels, "NAME_EXPRESSIONS", cw.PACK_NAME_EXPRESSIONS)
    monkeypatch.setattr(kernels, "COMPILE_OPTIONS", cw.PACK_OPTIONS)
    ptx, lowered = kernels.nvrtc_compile(arch)
    assert "__log__" not in lowered, lowered.get("__log__")
    for name in cw.PACK_NAME_EXPRESSIONS:
        assert lowered[name].encode() in ptx, name


def test_nvcc_compiles_the_instantiations(tmp_path):
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc is not on PATH: the nvcc check needs the CUDA toolkit")
    out = tmp_path / "cudnn_pack.o"
    cmd = [nvcc, "-c", "-std=c++17", "-DLSTM_GPU_INSTANTIATE", "-Werror=all-warnings",
           "-gencode=arch=compute_80,code=sm_80", "-gencode=arch=compute_90,code=sm_90",
           str(SOURCE), "-o", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, f"{' '.join(cmd)}\n{r.stdout}\n{r.stderr}"
    if shutil.which("nm"):  # one host stub per instantiation: unsigned short, int, long long
        symbols = subprocess.run(["nm", str(out)], capture_output=True, text=True).stdout
        assert set(re.findall(r"lstm_cudnnL14pack_canonicalI([tjy])E", symbols)) == set("tjy")


# --- the element function on the host ---------------------------------------------------------

_SHIM = """
#include "cudnn_pack.cu"
#define PACK(NAME, T)                                                                     \\
    extern "C" void NAME(const T* k, const T* r, const T* b, T* out, long long f,         \\
                         long long u) {                                                   \\
        const long long n = lstm_cudnn::packed_size(f, u);                                \\
        for (long long i = 0; i < n; ++i)                                                 \\
            out[i] = lstm_cudnn::packed_element<T>(k, r, b, f, u, i);                     \\
    }
PACK(pack16, unsigned short)
PACK(pack32, unsigned int)
PACK(pack64, unsigned long long)
"""


@pytest.fixture(scope="module")
def host_pack(tmp_path_factory):
    cxx = next((c for c in ("c++", "g++", "clang++") if shutil.which(c)), None)
    if cxx is None:
        pytest.skip("no C++ compiler: cannot build the pack kernel's element function")
    d = tmp_path_factory.mktemp("cudnn_pack_host")
    (d / "shim.cpp").write_text(_SHIM)
    lib = d / "libpack.so"
    cmd = [cxx, "-std=c++17", "-O1", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC",
           f"-I{SOURCE.parent}", str(d / "shim.cpp"), "-o", str(lib)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, f"{' '.join(cmd)}\n{r.stdout}\n{r.stderr}"
    so = ctypes.CDLL(str(lib))
    for bits in (16, 32, 64):
        fn = getattr(so, f"pack{bits}")
        fn.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_longlong] * 2
        fn.restype = None
    return so


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("features,units", [(1, 1), (3, 5), (7, 2), (16, 8)])
def test_host_element_function_matches_numpy_packing(host_pack, dtype, features, units):
    rng = np.random.default_rng(features * 10 + units)
    k, rk, b = (rng.normal(size=s).astype(dtype) for s in ((features, 4 * units),
                                                            (units, 4 * units), (4 * units,)))
    n = cw.weight_space_elements(features, units)
    want = cw.pack_weights(k, rk, b, cw.canonical_layout(features, units),
                           np.full(n, np.nan, dtype), canonical=True)
    grid, block, args = cw.pack_launch(k, rk, b, np.full(n, np.nan, dtype))
    fn = getattr(host_pack, f"pack{np.dtype(dtype).itemsize * 8}")
    fn(*(a.ctypes.data for a in args[:4]), *(int(v) for v in args[4:]))
    np.testing.assert_array_equal(args[3].view(dtype), want)
    assert np.signbit(args[3].view(dtype)).sum() == np.signbit(want).sum()  # +0.0, bit exact


# --- launch arguments against the kernel's signature ------------------------------------------


def _kernel_parameters():
    src = SOURCE.read_text()
    m = re.search(r"__global__ void pack_canonical\((.*?)\)\s*\{", src, re.S)
    return [" ".join(p.split()) for p in m.group(1).split(",")]


def test_launch_arguments_follow_the_signature():
    params = _kernel_parameters()
    assert params == ["const T* __restrict__ kernel", "const T* __restrict__ recurrent",
                      "const T* __restrict__ bias", "T* __restrict__ out", "idx_t features",
                      "idx_t units"]
    assert "typedef long long idx_t;" in SOURCE.read_text()
    f, u = 3, 5
    for dtype in (np.float16, np.float32, np.float64):
        arrays = [np.zeros(s, dtype) for s in ((f, 4 * u), (u, 4 * u), (4 * u,),
                                                (cw.weight_space_elements(f, u),))]
        grid, block, args = cw.pack_launch(*arrays)
        assert len(args) == len(params)
        bits = np.dtype(f"u{np.dtype(dtype).itemsize}")
        assert all(a.dtype == bits and a.flags.c_contiguous for a in args[:4])
        assert [type(v) for v in args[4:]] == [np.int64, np.int64]  # idx_t = long long
        assert (int(args[4]), int(args[5])) == (f, u)
        assert block == (cw.PACK_THREADS,) and 1 <= grid[0] <= cw.PACK_MAX_BLOCKS
        name = cw.pack_name(np.dtype(dtype).itemsize)
        assert name in cw.PACK_NAME_EXPRESSIONS and re.search(
            r"pack_canonical<unsigned (short|int|long long)>$", name)
    with pytest.raises(ValueError, match="weight space"):
        cw.pack_launch(*arrays[:3], np.zeros(7))


def test_pack_writes_a_fresh_space_each_call_on_numpy():
    rng = np.random.default_rng(1)
    w = Weights(rng.normal(size=(3, 8)), rng.normal(size=(2, 8)), rng.normal(size=8))
    lay = cw.weight_layout(cw.canonical_layout(3, 2), cw.weight_space_elements(3, 2), 3, 2)
    a, b = cw.pack(w, lay, np.float64), cw.pack(w, lay, np.float64)
    assert a is not b and np.array_equal(a, b)
    w.kernel[0, 0] += 1.0
    assert not np.array_equal(cw.pack(w, lay, np.float64), a)
    assert cw.pack(w, lay, np.float32).dtype == np.float32
