"""Find and load cuDNN 9 (`libcudnn.so.9`) with ctypes, through `lstm_gpu.cuda._libload`.

Search order: see `_libload` (``LSTM_GPU_CUDNN_PATH``, a copy already loaded in this process,
the ``nvidia-cudnn-cu12`` / ``nvidia-cudnn-cu13`` wheels' ``site-packages/nvidia/cudnn/lib``,
``cuda.pathfinder`` when its catalog knows cuDNN, the system loader).

cuDNN's own step: before its shim is opened, the sub-libraries beside it are preloaded by
absolute path with ``RTLD_GLOBAL`` (cuBLASLt first, then ``libcudnn_graph``, ``_ops``, the
rest, ``_adv``). The shim ``dlopen``s its sub-libraries by soname on first use; preloading makes
that find the copies of the same wheel instead of a system cuDNN of another version
(``SUBLIBRARY_VERSION_MISMATCH``). graph, ops and adv are required; the others are
best-effort.

``LSTM_GPU_DEBUG_LOAD=1`` writes every attempt to stderr. Loading never happens at import of
``lstm_gpu``; call `load()` (raises `CudnnNotAvailable`) or `available()`.
"""
from __future__ import annotations

import ctypes
import glob
import os
import sys
from typing import Optional

from ...errors import CudnnNotAvailable
from .._libload import ENV_DEBUG, LibraryLoader, LibrarySpec, cdll, debug, nvidia_package_dirs

ENV_PATH = "LSTM_GPU_CUDNN_PATH"
REQUIRED_MAJOR = 9

if sys.platform == "win32":  # pragma: no cover - not exercised in CI
    SHIM_NAME = "cudnn64_9.dll"
    _SUBLIB_GLOB = "cudnn_*64_9.dll"
else:
    SHIM_NAME = "libcudnn.so.9"
    _SUBLIB_GLOB = "libcudnn_*.so.9"

# Preload order for a wheel directory: first ones are dependencies of later ones.
_FIRST = ("graph", "ops")
_LAST = ("adv",)
_REQUIRED = ("graph", "ops", "adv")
# cuBLASLt of the matching wheels (cuDNN 9 needs it at run time): nvidia-cublas (CUDA 13)
# installs nvidia/cu13/lib, nvidia-cublas-cu12 installs nvidia/cublas/lib.
CUBLAS_WHEEL_PACKAGES = ("cu13", "cublas")

INSTALL_HINT = (
    "install cuDNN 9 with `pip install lstm-gpu[cuda12]` (CUDA 12) or "
    "`pip install lstm-gpu[cuda13]` (CUDA 13), or point "
    f"{ENV_PATH} at libcudnn.so.9"
)

__all__ = ["ENV_DEBUG", "ENV_PATH", "INSTALL_HINT", "SHIM_NAME", "available", "load",
           "loaded_path", "unavailable_reason"]


def _sublib_key(path: str) -> str:
    """``.../libcudnn_engines_precompiled.so.9`` -> ``engines_precompiled``."""
    base = os.path.basename(path)
    stem = base.split(".")[0]
    return stem.split("cudnn_", 1)[1] if "cudnn_" in stem else stem


def _ordered_sublibs(directory: str) -> list[str]:
    found = sorted(glob.glob(os.path.join(directory, _SUBLIB_GLOB)))
    by_key = {_sublib_key(p): p for p in found}
    first = [by_key[k] for k in _FIRST if k in by_key]
    last = [by_key[k] for k in _LAST if k in by_key]
    middle = [p for k, p in sorted(by_key.items()) if k not in _FIRST + _LAST]
    return first + middle + last


def _cublaslt_candidates() -> list[str]:
    out = []
    for package in CUBLAS_WHEEL_PACKAGES:
        for directory in nvidia_package_dirs(package):
            out.extend(sorted(glob.glob(os.path.join(directory, "libcublasLt.so.*[0-9]"))))
    return out


def _open_shim(path: str) -> ctypes.CDLL:
    """Preload cuBLASLt and the sub-libraries beside `path`, then open the shim itself."""
    directory = os.path.dirname(path)
    sublibs = _ordered_sublibs(directory) if directory else []
    if sublibs:
        for lt in _cublaslt_candidates():
            try:
                cdll(lt)
                debug("cudnn", f"preloaded {lt}")
                break
            except OSError as e:
                debug("cudnn", f"could not preload {lt}: {e}")
    for sub in sublibs:
        try:
            cdll(sub)
            debug("cudnn", f"preloaded {sub}")
        except OSError as e:
            if _sublib_key(sub) in _REQUIRED:
                raise OSError(f"required sub-library {sub} failed to load: {e}") from e
            debug("cudnn", f"optional sub-library {sub} failed to load (ignored): {e}")
    return cdll(path)


def _check_version(lib: ctypes.CDLL) -> int:
    fn = lib.cudnnGetVersion
    fn.restype, fn.argtypes = ctypes.c_size_t, []
    version = int(fn())
    if version // 10000 != REQUIRED_MAJOR:
        raise OSError(f"found cuDNN version {version}, lstm_gpu needs cuDNN {REQUIRED_MAJOR}.x")
    return version


LOADER = LibraryLoader(LibrarySpec(
    name="cudnn", label="cuDNN 9", env_path=ENV_PATH, sonames=lambda: (SHIM_NAME,),
    wheel_packages=("cudnn",), pathfinder_name="cudnn", check=_check_version,
    install_hint=INSTALL_HINT, error=CudnnNotAvailable, open_file=_open_shim))


def load() -> ctypes.CDLL:
    """The loaded cuDNN 9 shim library; raises `CudnnNotAvailable` with the reasons."""
    return LOADER.load()


def available() -> bool:
    return LOADER.available()


def unavailable_reason() -> Optional[str]:
    """None when cuDNN loads, else the loader's message."""
    return LOADER.unavailable_reason()


def loaded_path() -> Optional[str]:
    return LOADER.loaded_path()


def _reset_for_tests() -> None:
    """Forget the cached result (the loaded library itself stays mapped)."""
    LOADER.reset_for_tests()
