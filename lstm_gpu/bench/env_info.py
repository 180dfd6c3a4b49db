"""What machine and software a run measured: CPU, GPU, driver, CUDA, cuDNN, library versions.

Every probe is defensive: a missing library or a failing query gives None, never an error,
because the benchmark must run on any machine.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import os
import platform
import re
import sys
from typing import Any, Optional

DISTRIBUTIONS = ("lstm-gpu", "numpy", "cupy", "torch", "keras", "tensorflow", "jax",
                 "matplotlib")
CUPY_DISTRIBUTIONS = ("cupy", "cupy-cuda12x", "cupy-cuda13x", "cupy-cuda11x")


def distribution_version(dist: str) -> Optional[str]:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def cuda_version_text(v: Optional[int]) -> Optional[str]:
    """12040 -> "12.4" (the CUDA encoding: 1000 * major + 10 * minor)."""
    if not v:
        return None
    return f"{v // 1000}.{(v % 1000) // 10}"


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def nvidia_driver() -> Optional[str]:
    """The NVIDIA kernel driver version, e.g. "550.54.15" (Linux), else None."""
    try:
        with open("/proc/driver/nvidia/version", encoding="utf-8") as f:
            m = re.search(r"Kernel Module\s+(?:for \S+\s+)?(\d+\.\d+(?:\.\d+)?)", f.read())
            return m.group(1) if m else None
    except OSError:
        return None


def gpu_info() -> Optional[dict]:
    """Device 0 as CuPy sees it, or None without a GPU."""
    from .._xp import cupy_module, gpu_available

    cupy = cupy_module()
    if cupy is None or not gpu_available():
        return None
    rt = cupy.cuda.runtime
    info: dict[str, Any] = {"index": cupy.cuda.Device().id}
    try:
        props = rt.getDeviceProperties(info["index"])
        name = props["name"]
        info["name"] = name.decode() if isinstance(name, bytes) else str(name)
        info["compute_capability"] = f"{props['major']}.{props['minor']}"
        info["memory_gib"] = round(props["totalGlobalMem"] / 2**30, 1)
        info["multiprocessors"] = props["multiProcessorCount"]
    except Exception:
        info.setdefault("name", "unknown NVIDIA GPU")
    info["driver"] = nvidia_driver()
    try:
        info["cuda_driver_api"] = cuda_version_text(rt.driverGetVersion())
        info["cuda_runtime"] = cuda_version_text(rt.runtimeGetVersion())
    except Exception:
        pass
    info["cudnn"] = cudnn_version()
    return info


def cudnn_version() -> Optional[str]:
    """cuDNN as lstm_gpu loads it; None when it does not load (or the binding is absent)."""
    for module in ("..cuda.cudnn.api", "..cuda.cudnn"):  # the binding's layout may vary
        try:
            mod = importlib.import_module(module, __package__)
        except Exception:
            continue
        fn = getattr(mod, "version", None)
        if fn is None:
            continue
        try:
            return _cudnn_version_text(fn() if callable(fn) else fn)
        except Exception:  # cuDNN does not load here
            return None
    return None


def _cudnn_version_text(v: Any) -> str:
    """cuDNN 9 encodes versions as major * 10000 + minor * 100 + patch."""
    if isinstance(v, int) and v >= 10000:
        return f"{v // 10000}.{(v % 10000) // 100}.{v % 100}"
    return str(v)


def torch_info() -> Optional[dict]:
    if "torch" not in sys.modules and distribution_version("torch") is None:
        return None
    try:
        import torch
    except Exception:
        return None
    info = {"version": torch.__version__, "threads": torch.get_num_threads(),
            "cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available()}
    if torch.cuda.is_available():
        info["device"] = torch.cuda.get_device_name()
        v = torch.backends.cudnn.version()
        info["cudnn"] = _cudnn_version_text(v) if v else None
    return info


def collect(keras_backend: Optional[str] = None) -> dict:
    """Everything above as one JSON-able dict."""
    gpu = gpu_info()
    versions = {d: distribution_version(d) for d in DISTRIBUTIONS}
    versions["cupy"] = next((v for v in map(distribution_version, CUPY_DISTRIBUTIONS) if v), None)
    if versions["lstm-gpu"] is None:  # running from a source tree
        from .. import __version__

        versions["lstm-gpu"] = __version__
    return {
        "device": gpu["name"] if gpu else f"CPU: {cpu_name()}",
        "gpu": gpu,
        "cpu": {"name": cpu_name(), "logical_cores": os.cpu_count(),
                "machine": platform.machine()},
        "load_average": _load_average(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
        "torch": torch_info(),
        "keras_backend": keras_backend,
        "threads_env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                                   "OPENBLAS_NUM_THREADS") if k in os.environ},
    }


def _load_average() -> Optional[list]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):  # not on every platform
        return None


def busy_note(env: dict) -> Optional[str]:
    """A warning when other work already loads the CPU (timings will be noisy), else None."""
    load, cores = env.get("load_average"), env["cpu"].get("logical_cores") or 1
    if load and load[0] > 0.75 * cores:
        return (f"Note: this machine is busy (load average {load[0]:.1f} on {cores} logical "
                "cores); timings will be noisy (see the IQR column). Multi-threaded CPU "
                "paths suffer most: try --threads 1 with OMP_NUM_THREADS=1.")
    return None


def device_slug(env: dict) -> str:
    """A file-name-friendly device name: "NVIDIA H100 80GB HBM3" -> "nvidia-h100-80gb-hbm3"."""
    name = env["gpu"]["name"] if env.get("gpu") else "cpu-" + env["cpu"]["name"]
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return slug[:60] or "unknown-device"
