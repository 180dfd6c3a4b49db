"""Parts of lstm-gpu-check: the comparison, the environment probes (with and without CuPy),
the cuBLAS version query against its header, and the dispatcher's predicted paths."""
from __future__ import annotations

import ctypes
import importlib.metadata
import os
import re

import numpy as np
import pytest

from lstm_gpu import LSTM, Bidirectional, dispatch
from lstm_gpu.check import compute, environment, grid
from lstm_gpu.check.compare import Comparison, Computed, compare, scaled_error, tolerance
from lstm_gpu.check.data import layer_data
from lstm_gpu.check.registry import python_tanh

# ----------------------------------------------------------------------------- comparison


def test_scaled_error_is_relative_to_the_largest_magnitude():
    want = np.array([100.0, 0.5, -3.0])
    assert scaled_error(want + [1e-8, 0, 0], want) == pytest.approx(1e-10)
    small = np.array([0.1, -0.2])
    assert scaled_error(small + 1e-7, small) == pytest.approx(1e-7)  # scale at least 1
    assert scaled_error(np.array([np.nan, 0.0]), np.zeros(2)) == np.inf
    assert scaled_error(np.array([np.inf, 0.0]), np.zeros(2)) == np.inf
    assert scaled_error(np.zeros(3), np.zeros(2)) == np.inf
    assert scaled_error(np.zeros((0, 2)), np.zeros((0, 2))) == 0.0


def test_compare_judges_outputs_and_gradients_by_their_own_tolerance():
    want = Computed({"last": np.ones(3)}, {"kernel": np.ones(3), "bias": None})
    got = Computed({"last": np.ones(3) + 5e-6}, {"kernel": np.ones(3) + 8e-5, "bias": None})
    c = compare(got, want, "float32")
    assert c.passed and c.array == "kernel" and c.tolerance == tolerance("float32", True)
    got.outputs["last"] = np.ones(3) + 2e-5
    c = compare(got, want, "float32")
    assert not c.passed and c.array == "last" and "exceeds tolerance 1e-05" in c.describe()
    assert not compare(got, want, "float64").passed
    for broken in ({"kernel": np.ones(3)}, {"kernel": np.ones(3), "bias": np.ones(3)},
                   {"kernel": None, "bias": None}):
        c = compare(Computed(want.outputs, broken), want, "float64")
        assert not c.passed and c.problem, broken
    c = compare(Computed(want.outputs, {"kernel": np.ones(4), "bias": None}), want, "float64")
    assert not c.passed and "shape" in c.describe()


def test_worse_prefers_a_failure_then_the_larger_ratio():
    ok_small = Comparison(True, 1e-12, 1e-10, "a")
    ok_big = Comparison(True, 5e-6, 1e-4, "b")
    bad = Comparison(False, 1e-9, 1e-10, "c")
    assert ok_small.worse(ok_big) is ok_big
    assert ok_big.worse(bad) is bad and bad.worse(ok_big) is bad


# ----------------------------------------------------------------------------- environment


def test_every_fact_has_a_value_or_a_reason():
    facts = environment.collect()
    assert [f.label for f in facts] == [label for label, _ in environment.PROBES]
    for f in facts:
        assert f.value is not None or f.why, f
        assert set(f.to_json()) >= {"value", "why"}


def test_without_cupy_every_gpu_fact_says_why(monkeypatch):
    from lstm_gpu import _xp

    monkeypatch.setattr(_xp, "_cupy", None)
    facts = {f.label: f for f in environment.collect()}
    for label in ("CuPy", "CUDA", "GPU", "cuBLAS", "NVRTC", "CUDA kernels"):
        assert facts[label].value is None and facts[label].why, label
    assert "CuPy" in facts["GPU"].why
    assert facts["NumPy"].value == np.__version__


def test_cpu_core_fact_names_its_simd_level_or_why_it_is_missing(monkeypatch):
    from lstm_gpu.paths import cpu_native

    fact = environment._cpu_core()
    if cpu_native.is_available():
        assert fact.value.startswith(f"{cpu_native.isa()}, ") and "scipy-openblas32" in fact.value
    monkeypatch.setattr(cpu_native, "_state", {"reason": "not built: no C++ compiler"})
    fact = environment._cpu_core()
    assert fact.value is None and fact.why == "not built: no C++ compiler"


def test_a_failing_probe_is_a_reason_not_an_exception():
    def broken():
        raise RuntimeError("driver exploded")

    fact = environment._probe("GPU", broken)
    assert fact.value is None and fact.why == "the probe failed: RuntimeError: driver exploded"


def _cublas_library():
    pytest.importorskip("cupy")
    from cupy_backends.cuda.libs import cublas  # noqa: F401 - maps libcublas

    path = environment.loaded_library("libcublas.so")
    if path is None:
        pytest.skip("no libcublas mapped into this process")
    return path


def test_cublas_get_property_matches_its_header():
    path = _cublas_library()
    header = os.path.join(os.path.dirname(os.path.dirname(path)), "include", "cublas_api.h")
    if not os.path.isfile(header):
        pytest.skip(f"no cublas_api.h beside {path}")
    text = open(header, encoding="utf-8").read()
    m = re.search(r"cublasStatus_t\s+CUBLASWINAPI\s+cublasGetProperty\s*\(([^)]*)\)", text)
    assert m, "cublasGetProperty is not declared in cublas_api.h"
    params = [p.strip() for p in m.group(1).split(",")]
    assert params == ["libraryPropertyType type", "int* value"]
    assert re.search(r"CUBLAS_STATUS_SUCCESS\s*=\s*0\b", text)
    name, restype, argtypes = environment.CUBLAS_GET_PROPERTY
    assert name == "cublasGetProperty" and restype is ctypes.c_int  # an enum: int
    assert argtypes[0] is ctypes.c_int and issubclass(argtypes[1], ctypes._Pointer)
    assert argtypes[1]._type_ is ctypes.c_int


def test_cublas_version_is_the_wheels():
    """The query runs on the real library (no GPU needed): MAJOR, MINOR, PATCH = 0, 1, 2."""
    path = _cublas_library()
    version = environment.cublas_version(path)
    assert re.fullmatch(r"\d+\.\d+\.\d+", version)
    try:
        wheel = importlib.metadata.version("nvidia-cublas")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("cuBLAS does not come from the nvidia-cublas wheel here")
    if "nvidia/cu" in path.replace(os.sep, "/"):
        assert wheel.startswith(version)


# ----------------------------------------------------------------------------- dispatcher


def _layer(case_name: str, **kwargs):
    case = next(c for c in grid.layer_cases("default") if c.name == case_name)
    d = layer_data(case, "float64")
    return compute.make_layer(case, d, **kwargs), d.mask


def test_predicted_paths_follow_the_dispatcher_rules():
    cudnn = "cudnn" if dispatch.cudnn_available() else "cuda-kernels"
    layer, mask = _layer("return_sequences, right-padded")
    assert compute.predicted_paths(layer, mask)[0] == (cudnn,)
    layer, mask = _layer("activation relu")
    paths, reasons = compute.predicted_paths(layer, mask)
    assert paths == ("cuda-kernels",) and dispatch.REASON_ACTIVATION in reasons
    layer, mask = _layer("mask with holes", use_cudnn=False)
    assert compute.predicted_paths(layer, mask)[0] == ("cuda-kernels",)
    layer, mask = _layer("last output", activation=python_tanh)
    assert compute.predicted_paths(layer, mask)[0] == ("cupy-reference",)
    layer, mask = _layer("Bidirectional, holes")
    paths, reasons = compute.predicted_paths(layer, mask)
    assert paths == ("cuda-kernels", "cuda-kernels") and reasons.count(dispatch.REASON_MASK) == 1
    layer, mask = _layer("mask with holes", use_cudnn=True)
    with pytest.raises(ValueError, match=dispatch.REASON_MASK):
        compute.predicted_paths(layer, mask)


def test_python_tanh_is_a_callable_with_an_exact_derivative():
    layer = LSTM(3, activation=python_tanh)
    assert not layer.activation.is_builtin
    x = np.linspace(-2, 2, 9)
    np.testing.assert_allclose(python_tanh(x), np.tanh(x), rtol=0, atol=0)
    np.testing.assert_allclose(layer.activation.grad(x, np.tanh(x)), 1 - np.tanh(x) ** 2)
    copied = Bidirectional(layer).backward_layer.activation  # from the config: the callable
    assert copied.name is python_tanh and not copied.is_builtin


def test_the_dispatcher_section_names_each_case_its_path_and_why():
    from lstm_gpu.check.registry import default_registry
    from lstm_gpu.check.report import render_dispatch
    from lstm_gpu.check.runner import PASSED, CaseResult, PathOutcome

    auto = default_registry().select(["auto"])[0]
    results = [CaseResult("auto", "layer", "layer/last output", dtype, PASSED, ran=[["cudnn"]],
                          reasons=[]) for dtype in ("float32", "float64")]
    results.append(CaseResult("auto", "dispatch", "dispatch/mask with holes", "float32", PASSED,
                              ran=[["cuda-kernels"]], reasons=[dispatch.REASON_MASK]))
    text = render_dispatch([PathOutcome(auto, results=results)])
    rows = text.splitlines()[1:]
    assert len(rows) == 2  # one row per case, whatever the dtypes
    assert re.search(r"layer/last output\s+cudnn\s+every cuDNN rule holds", rows[0])
    assert re.search(r"dispatch/mask with holes\s+cuda-kernels\s+mask has holes", rows[1])
    assert render_dispatch([PathOutcome(auto, unavailable="no GPU")]) is None
