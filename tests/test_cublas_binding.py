"""lstm_gpu's ctypes binding to cuBLAS: loading, prototypes against ``cublas_api.h``, status
mapping and the GEMM call path, all without a GPU.

cuBLAS loads and answers ``cublasGetProperty`` / ``cublasGetStatusName`` with no device; a
GEMM issued on a NULL handle returns ``CUBLAS_STATUS_NOT_INITIALIZED`` before touching any
pointer, which exercises the real call (argument marshalling and error mapping) on the host.
"""
from __future__ import annotations

import ctypes
import os
import pickle
import re
import subprocess
import sys

import numpy as np
import pytest

from lstm_gpu._xp import gpu_available
from lstm_gpu.cuda import cublas, gemm_plan
from lstm_gpu.cuda.cublas import _bindings as B
from lstm_gpu.cuda.cublas import _loader
from lstm_gpu.errors import CublasError, CublasNotAvailable

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
needs_lib = pytest.mark.skipif(not cublas.available(), reason="cuBLAS does not load here")


def _run(code: str, **env) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, PYTHONPATH=REPO, **env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=full_env, cwd=REPO, timeout=120)


@pytest.fixture(scope="module")
def headers():
    import c_headers

    if not cublas.available():
        pytest.skip("cuBLAS does not load here")
    directory = c_headers.include_dir(cublas.loaded_path(), c_headers.CUBLAS)
    if directory is None:
        pytest.skip(f"no cublas_api.h beside {cublas.loaded_path()}")
    return c_headers.Headers(directory, c_headers.CUBLAS)


# --- loader -----------------------------------------------------------------------------------


@needs_lib
def test_version_matches_the_header_of_the_loaded_library(headers):
    """cublasGetProperty(MAJOR_VERSION=0, MINOR_VERSION=1, PATCH_LEVEL=2) -- values from
    library_types.h, which the wheel does not ship -- agree with cublas_api.h's macros."""
    import c_headers

    text = open(os.path.join(c_headers.include_dir(cublas.loaded_path(), c_headers.CUBLAS),
                             "cublas_api.h"), encoding="utf-8").read()
    macro = {k: int(v) for k, v in re.findall(r"#define CUBLAS_VER_(\w+) (\d+)", text)}
    from lstm_gpu.cuda.cublas import api

    assert _loader.read_version(cublas.load()) == (macro["MAJOR"], macro["MINOR"],
                                                   macro["PATCH"])
    assert api.version() == macro["MAJOR"] * 10000 + macro["MINOR"] * 100 + macro["PATCH"]


def test_sonames_follow_cupys_cuda_major(monkeypatch):
    monkeypatch.setattr(_loader, "cupy_cuda_major", lambda: 12)
    assert _loader.sonames() == ("libcublas.so.12",)
    monkeypatch.setattr(_loader, "cupy_cuda_major", lambda: None)
    assert _loader.sonames() == ("libcublas.so.13", "libcublas.so.12")


class _FakeProperty:
    """Stands in for cublasGetProperty: writes (major, minor, patch)."""

    def __init__(self, parts):
        self.parts, self.restype, self.argtypes = parts, None, None

    def __call__(self, prop, out):
        out._obj.value = self.parts[prop]
        return 0


def test_version_check_refuses_another_major(monkeypatch):
    lib = type("Lib", (), {"cublasGetProperty": _FakeProperty((12, 9, 1))})()
    monkeypatch.setattr(_loader, "cupy_cuda_major", lambda: 13)
    with pytest.raises(OSError, match=r"found cuBLAS 12\.9\.1, lstm_gpu needs cuBLAS 13"):
        _loader._check_version(lib)
    monkeypatch.setattr(_loader, "cupy_cuda_major", lambda: None)
    assert _loader._check_version(lib) == 120901
    lib = type("Lib", (), {"cublasGetProperty": _FakeProperty((11, 0, 0))})()
    with pytest.raises(OSError, match="11.0.0"):
        _loader._check_version(lib)


def test_bad_override_gives_one_clear_message():
    r = _run("from lstm_gpu.cuda import cublas\n"
             "print(cublas.available())\n"
             "print(cublas.unavailable_reason())\n",
             LSTM_GPU_CUBLAS_PATH="/nonexistent/libcublas.so.13")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "False"
    assert lines[1].startswith("cuBLAS could not be loaded")
    for text in ("pip install lstm-gpu[cuda13]", "pip install lstm-gpu[cuda12]",
                 "/nonexistent/libcublas.so.13", "LSTM_GPU_CUBLAS_PATH"):
        assert text in lines[1]


@needs_lib
def test_override_with_directory_and_debug_log():
    directory = os.path.dirname(cublas.loaded_path())
    r = _run("from lstm_gpu.cuda import cublas; print(cublas.available(), cublas.loaded_path())",
             LSTM_GPU_CUBLAS_PATH=directory, LSTM_GPU_DEBUG_LOAD="1")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[0] == "True"
    assert os.path.dirname(r.stdout.split()[1]) == directory
    assert "lstm_gpu: cublas loader:" in r.stderr and "loaded" in r.stderr


@needs_lib
def test_a_copy_loaded_by_cupy_is_reused():
    """After CuPy's own cuBLAS binding is imported, RTLD_NOLOAD finds that copy first."""
    r = _run("import cupy\nfrom cupy_backends.cuda.libs import cublas as _\n"
             "from lstm_gpu.cuda import cublas; print(cublas.available())",
             LSTM_GPU_DEBUG_LOAD="1")
    if "No module named" in r.stderr:
        pytest.skip("CuPy is not installed")
    assert r.returncode == 0, r.stderr
    assert "already loaded in this process: loaded" in r.stderr


# --- prototypes, constants, status -----------------------------------------------------------


@pytest.mark.parametrize("name", sorted(B.PROTOTYPES))
def test_prototype_matches_header(headers, name):
    from c_headers import check_prototypes

    check_prototypes(headers, B.PROTOTYPES, name)


HEADER_CONSTANTS = {
    "OP_N": "CUBLAS_OP_N", "OP_T": "CUBLAS_OP_T",
    "POINTER_MODE_HOST": "CUBLAS_POINTER_MODE_HOST",
    "POINTER_MODE_DEVICE": "CUBLAS_POINTER_MODE_DEVICE",
    "DEFAULT_MATH": "CUBLAS_DEFAULT_MATH", "PEDANTIC_MATH": "CUBLAS_PEDANTIC_MATH",
    "TF32_TENSOR_OP_MATH": "CUBLAS_TF32_TENSOR_OP_MATH",
}


def test_constants_match_header(headers):
    for ours, theirs in HEADER_CONSTANTS.items():
        assert getattr(B, ours) == headers.constants[theirs], (ours, theirs)
    assert (gemm_plan.OP_N, gemm_plan.OP_T) == (B.OP_N, B.OP_T)
    statuses = {v: k for k, v in headers.constants.items() if k.startswith("CUBLAS_STATUS_")}
    assert B.STATUS_NAMES == statuses


@needs_lib
def test_every_prototype_is_bound_and_status_names_agree_with_cublas():
    from lstm_gpu.cuda.cublas import api

    fns = api.functions()
    assert fns.missing == ()
    for name, (restype, argtypes) in B.PROTOTYPES.items():
        assert getattr(fns, name).restype == restype, name
        assert list(getattr(fns, name).argtypes) == list(argtypes), name
    for code, name in B.STATUS_NAMES.items():
        assert fns.cublasGetStatusName(code).decode() == name, code
    assert api.status_name(7) == "CUBLAS_STATUS_INVALID_VALUE"
    assert "12345" in api.status_name(12345)


@needs_lib
def test_check_status_raises_with_name_and_text():
    from lstm_gpu.cuda.cublas import api

    api.check_status(0)
    with pytest.raises(CublasError) as info:
        api.check_status(7, "cublasSomething")
    err = info.value
    assert (err.status, err.name, err.call) == (7, "CUBLAS_STATUS_INVALID_VALUE",
                                                "cublasSomething")
    assert err.message and err.message in str(err)
    e2 = pickle.loads(pickle.dumps(err))
    assert (e2.status, e2.name, e2.message, e2.call, str(e2)) == (
        err.status, err.name, err.message, err.call, str(err))


@needs_lib
@pytest.mark.skipif(gpu_available(), reason="checks the no-GPU failure")
def test_handle_without_gpu_is_a_cublas_error():
    from lstm_gpu.cuda.cublas import api

    with pytest.raises(CublasError) as info:
        api.Handle()
    assert info.value.name == "CUBLAS_STATUS_NOT_INITIALIZED"
    assert info.value.call == "cublasCreate_v2"


@needs_lib
@pytest.mark.parametrize("dtype, batch, name", [
    (np.float32, 0, "cublasSgemm_v2"), (np.float64, 0, "cublasDgemm_v2"),
    (np.float32, 3, "cublasSgemmStridedBatched"), (np.float64, 3, "cublasDgemmStridedBatched"),
])
def test_prepared_gemm_reaches_cublas(dtype, batch, name):
    """The prepared call goes through the real symbol: on a NULL handle cuBLAS answers
    NOT_INITIALIZED (it checks the handle before any pointer) and nothing is written."""
    from lstm_gpu.cuda.cublas import api

    lead = (batch,) if batch else ()
    a, b = np.ones(lead + (3, 4), dtype), np.ones(lead + (4, 5), dtype)
    out = np.zeros(lead + (3, 5), dtype)
    run = api.prepare_gemm(gemm_plan.plan_gemm(gemm_plan.operand(a), gemm_plan.operand(b),
                                               gemm_plan.operand(out)))
    with pytest.raises(CublasError) as info:
        run(0)
    assert (info.value.name, info.value.call) == ("CUBLAS_STATUS_NOT_INITIALIZED", name)
    assert not out.any()


def test_recommended_workspace():
    from lstm_gpu.cuda.cublas import api

    assert api.recommended_workspace_bytes(80) == 4 << 20
    assert api.recommended_workspace_bytes(90) == api.recommended_workspace_bytes(100) == 32 << 20


def test_errors_are_library_errors():
    from lstm_gpu.errors import CudnnError, LibraryStatusError

    assert issubclass(CublasError, LibraryStatusError) and issubclass(CublasError, RuntimeError)
    assert issubclass(CudnnError, LibraryStatusError)
    assert issubclass(CublasNotAvailable, ImportError)
    assert ctypes.sizeof(ctypes.c_longlong) == 8  # cublas_api.h's `long long int` strides
