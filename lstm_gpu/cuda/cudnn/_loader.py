"""Find and load cuDNN 9 (`libcudnn.so.9`) with ctypes.

Search order (the first that loads wins; the result, success or failure, is cached):

1. ``LSTM_GPU_CUDNN_PATH``: a path to ``libcudnn.so.9`` or to the directory holding it. When
   set it is the only candidate: a wrong override is an error, never silently replaced.
2. A cuDNN 9 already loaded in this process (``RTLD_NOLOAD``; e.g. by PyTorch), so that two
   copies never live side by side.
3. The pip wheels ``nvidia-cudnn-cu12`` / ``nvidia-cudnn-cu13``: ``site-packages/nvidia/cudnn/lib``
   (found through the ``nvidia`` namespace package), or ``cuda.pathfinder`` when its catalog
   knows cuDNN.
4. The system loader (``dlopen("libcudnn.so.9")``: ``LD_LIBRARY_PATH``, ldconfig cache).

For a wheel directory the sub-libraries are preloaded by absolute path with ``RTLD_GLOBAL``
(cuBLASLt first, then ``libcudnn_graph``, ``_ops``, the rest, ``_adv``, the shim last). The shim
``dlopen``s its sub-libraries by soname on first use; preloading makes that find the copies of
the same wheel instead of a system cuDNN of another version (``SUBLIBRARY_VERSION_MISMATCH``).
shim, graph, ops and adv are required; the others are best-effort.

``LSTM_GPU_DEBUG_LOAD=1`` writes every attempt to stderr. Loading never happens at import of
``lstm_gpu``; call `load()` (raises `CudnnNotAvailable`) or `available()`.
"""
from __future__ import annotations

import ctypes
import glob
import importlib.util
import os
import sys
import threading
from typing import Callable, Optional

from ...errors import CudnnNotAvailable

ENV_PATH = "LSTM_GPU_CUDNN_PATH"
ENV_DEBUG = "LSTM_GPU_DEBUG_LOAD"
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

INSTALL_HINT = (
    "install cuDNN 9 with `pip install lstm-gpu[cuda12]` (CUDA 12) or "
    "`pip install lstm-gpu[cuda13]` (CUDA 13), or point "
    f"{ENV_PATH} at libcudnn.so.9"
)

_lock = threading.Lock()
_state: dict = {}  # "lib" -> CDLL, "path" -> str, "error" -> CudnnNotAvailable


def _debug(msg: str) -> None:
    if os.environ.get(ENV_DEBUG, "") not in ("", "0"):
        print(f"lstm_gpu: cudnn loader: {msg}", file=sys.stderr, flush=True)


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


def _wheel_dirs() -> list[str]:
    """``nvidia/cudnn/lib`` directories of installed cuDNN wheels."""
    dirs = []
    try:
        spec = importlib.util.find_spec("nvidia.cudnn")
    except (ImportError, ValueError):
        spec = None
    for loc in (spec.submodule_search_locations or []) if spec else []:
        lib = os.path.join(loc, "bin" if sys.platform == "win32" else "lib")
        if os.path.isfile(os.path.join(lib, SHIM_NAME)):
            dirs.append(lib)
    return dirs


def _cublaslt_candidates(cudnn_dir: str) -> list[str]:
    """cuBLASLt of the matching wheels (cuDNN 9 needs it at run time)."""
    nvidia = os.path.dirname(os.path.dirname(cudnn_dir))
    pats = ["cu13/lib/libcublasLt.so.*[0-9]", "cublas/lib/libcublasLt.so.*[0-9]"]
    out = []
    for pat in pats:
        out.extend(sorted(glob.glob(os.path.join(nvidia, pat))))
    return out


def _cdll(path: str, mode: int = ctypes.RTLD_GLOBAL) -> ctypes.CDLL:
    return ctypes.CDLL(path, mode=mode)


def _load_from_dir(directory: str) -> ctypes.CDLL:
    """Preload a wheel-style directory's sub-libraries, then open its shim."""
    for lt in _cublaslt_candidates(directory):
        try:
            _cdll(lt)
            _debug(f"preloaded {lt}")
            break
        except OSError as e:
            _debug(f"could not preload {lt}: {e}")
    for sub in _ordered_sublibs(directory):
        try:
            _cdll(sub)
            _debug(f"preloaded {sub}")
        except OSError as e:
            if _sublib_key(sub) in _REQUIRED:
                raise OSError(f"required sub-library {sub} failed to load: {e}") from e
            _debug(f"optional sub-library {sub} failed to load (ignored): {e}")
    return _cdll(os.path.join(directory, SHIM_NAME))


def _from_env(value: str) -> ctypes.CDLL:
    if os.path.isdir(value):
        return _load_from_dir(value)
    directory = os.path.dirname(value)
    if directory and glob.glob(os.path.join(directory, _SUBLIB_GLOB)):
        for sub in _ordered_sublibs(directory):
            try:
                _cdll(sub)
            except OSError as e:
                _debug(f"could not preload {sub}: {e}")
    return _cdll(value)


def _already_loaded() -> ctypes.CDLL:
    mode = getattr(os, "RTLD_NOLOAD", None)
    if mode is None:
        raise OSError("RTLD_NOLOAD not available on this platform")
    return ctypes.CDLL(SHIM_NAME, mode=mode | ctypes.RTLD_GLOBAL)


def _from_pathfinder() -> ctypes.CDLL:
    import cuda.pathfinder as pf  # optional dependency

    names = getattr(pf, "SUPPORTED_NVIDIA_LIBNAMES", ())
    if "cudnn" not in names:
        raise OSError("this cuda.pathfinder does not know cuDNN")
    loaded = pf.load_nvidia_dynamic_lib("cudnn")
    directory = os.path.dirname(loaded.abs_path)
    if glob.glob(os.path.join(directory, _SUBLIB_GLOB)):
        return _load_from_dir(directory)
    return _cdll(loaded.abs_path)


def _candidates() -> list[tuple[str, Callable[[], ctypes.CDLL]]]:
    override = os.environ.get(ENV_PATH)
    if override:
        return [(f"{ENV_PATH}={override}", lambda: _from_env(override))]
    cands: list[tuple[str, Callable[[], ctypes.CDLL]]] = [
        ("already loaded in this process", _already_loaded)
    ]
    for d in _wheel_dirs():
        cands.append((f"wheel {d}", lambda d=d: _load_from_dir(d)))
    if importlib.util.find_spec("cuda") is not None:
        cands.append(("cuda.pathfinder", _from_pathfinder))
    cands.append((f"system loader ({SHIM_NAME})", lambda: _cdll(SHIM_NAME)))
    return cands


def _check_version(lib: ctypes.CDLL) -> int:
    fn = lib.cudnnGetVersion
    fn.restype, fn.argtypes = ctypes.c_size_t, []
    version = int(fn())
    if version // 10000 != REQUIRED_MAJOR:
        raise OSError(f"found cuDNN version {version}, lstm_gpu needs cuDNN {REQUIRED_MAJOR}.x")
    return version


def _library_path(lib: ctypes.CDLL) -> str:
    return getattr(lib, "_name", "") or SHIM_NAME


def load() -> ctypes.CDLL:
    """The loaded cuDNN 9 shim library; raises `CudnnNotAvailable` with the reasons."""
    with _lock:
        if "lib" in _state:
            return _state["lib"]
        if "error" in _state:
            raise _state["error"]
        tried = []
        for what, attempt in _candidates():
            try:
                lib = attempt()
                version = _check_version(lib)
            except (OSError, AttributeError, ImportError) as e:
                _debug(f"{what}: failed: {e}")
                tried.append(f"{what}: {e}")
                continue
            _debug(f"{what}: loaded {_library_path(lib)} (version {version})")
            _state.update(lib=lib, path=_library_path(lib), version=version)
            return lib
        err = CudnnNotAvailable(
            "cuDNN 9 could not be loaded; " + INSTALL_HINT + ". Tried: " + "; ".join(tried)
        )
        _state["error"] = err
        raise err


def available() -> bool:
    try:
        load()
        return True
    except CudnnNotAvailable:
        return False


def unavailable_reason() -> Optional[str]:
    """None when cuDNN loads, else the loader's message."""
    try:
        load()
        return None
    except CudnnNotAvailable as e:
        return str(e)


def loaded_path() -> Optional[str]:
    return _state.get("path") if available() else None


def _reset_for_tests() -> None:
    """Forget the cached result (the loaded library itself stays mapped)."""
    with _lock:
        _state.clear()
