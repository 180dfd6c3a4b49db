"""The CUDA kernels compile without a GPU: NVRTC (every name expression) and nvcc via CMake."""
from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from lstm_gpu.cuda import kernels

REPO = Path(__file__).resolve().parents[1]


def _nvrtc_or_skip():
    try:
        from cupy_backends.cuda.libs import nvrtc
        nvrtc.getVersion()
    except Exception as exc:  # ImportError, or the NVRTC library is missing
        pytest.skip(f"CuPy's NVRTC binding is not usable here ({exc!r}); "
                    "pip install 'lstm-gpu[nvrtc]' (cupy-cuda13x + nvidia-cuda-nvrtc)")


@pytest.mark.parametrize("arch", ["compute_80", "compute_90"])
def test_nvrtc_compiles_every_name_expression(arch):
    _nvrtc_or_skip()
    ptx, lowered = kernels.nvrtc_compile(arch)
    assert "__log__" not in lowered, lowered.get("__log__")
    for name in kernels.NAME_EXPRESSIONS:
        assert lowered[name], name
        assert lowered[name].encode() in ptx, name


def test_name_expressions_cover_dtypes_and_variants():
    names = set(kernels.NAME_EXPRESSIONS)
    for ctype in ("float", "double"):
        for a, r in ((-1, -1), (1, 2)):
            assert f"lstm::fwd_step<{ctype}, {a}, {r}>" in names
            assert f"lstm::bwd_step<{ctype}, {a}, {r}>" in names
        assert f"lstm::colsum_partial<{ctype}>" in names
        assert f"lstm::colsum_final<{ctype}>" in names


def test_nvcc_instantiation_list_matches_name_expressions():
    src = (REPO / "kernels" / "lstm_kernels.cu").read_text()
    steps = re.findall(r"^LSTM_INST_STEP\((\w+), (-?\d+), (-?\d+)\)", src, re.M)
    sums = re.findall(r"^LSTM_INST_SUM\((\w+)\)", src, re.M)
    listed = {f"lstm::{k}<{t}, {a}, {r}>" for t, a, r in steps for k in ("fwd_step", "bwd_step")}
    listed |= {f"lstm::{k}<{t}>" for (t,) in [(s,) for s in sums]
               for k in ("colsum_partial", "colsum_final")}
    assert listed == set(kernels.NAME_EXPRESSIONS)


def test_source_is_self_contained():
    src = kernels.kernel_source()
    includes = [line for line in src.splitlines() if line.strip().startswith("#include")]
    # Only the host branch of the header includes anything (math.h, skipped by NVRTC/nvcc).
    assert includes == ["#include <math.h>"]


def test_dtype_dispatch_raises_type_error():
    import numpy as np

    assert kernels.ctype_of(np.float32) == "float"
    assert kernels.ctype_of("float64") == "double"
    for bad in (np.float16, np.int32, "bogus"):
        with pytest.raises(TypeError):
            kernels.ctype_of(bad)
    assert kernels.activation_variant(1, 2) == (1, 2)
    assert kernels.activation_variant(3, 2) == (-1, -1)
    with pytest.raises(ValueError):
        kernels.activation_variant(-1, 2)


def test_cmake_nvcc_build_sm80_sm90():
    if shutil.which("cmake") is None:
        pytest.skip("cmake is not installed")
    if shutil.which("nvcc") is None:
        pytest.skip("nvcc is not on PATH: the nvcc build check needs the CUDA toolkit")
    out = Path(tempfile.mkdtemp(prefix="lstm_gpu_nvcc_"))
    try:
        for cmd in (["cmake", "-S", str(REPO), "-B", str(out), "-DLSTM_GPU_BUILD_HOST=OFF",
                     "-DLSTM_GPU_CUDA_ARCHS=80;90"],
                    ["cmake", "--build", str(out), "--target", "lstm_kernels_cuda", "-j2"]):
            r = subprocess.run(cmd, capture_output=True, text=True)
            assert r.returncode == 0, f"{' '.join(cmd)}\n{r.stdout}\n{r.stderr}"
        assert list(out.rglob("lstm_kernels.cu.o")), "no object file produced"
    finally:
        shutil.rmtree(out, ignore_errors=True)
