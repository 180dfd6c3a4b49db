"""Finding and loading an NVIDIA shared library with ctypes: one helper for cuDNN and cuBLAS.

A `LibrarySpec` says what to look for; a `LibraryLoader` tries, in order (the first that loads
and passes the spec's `check` wins; the result, success or failure, is cached):

1. ``<spec.env_path>`` (e.g. ``LSTM_GPU_CUDNN_PATH``): a path to the library or to the directory
   holding it. When set it is the only candidate: a wrong override is an error, never silently
   replaced.
2. A copy already loaded in this process (``RTLD_NOLOAD`` on each soname; e.g. by CuPy or
   PyTorch), so that two copies never live side by side.
3. The pip wheels' ``site-packages/nvidia/<package>/lib`` directories (found through the
   ``nvidia`` namespace package), then ``cuda.pathfinder`` when its catalog knows the library.
4. The system loader (``dlopen(soname)``: ``LD_LIBRARY_PATH``, ldconfig cache).

``LSTM_GPU_DEBUG_LOAD=1`` writes every attempt to stderr. Nothing is loaded at import.
"""
from __future__ import annotations

import ctypes
import importlib.util
import os
import sys
import threading
from dataclasses import dataclass
from typing import Callable, Optional

ENV_DEBUG = "LSTM_GPU_DEBUG_LOAD"


def debug(name: str, msg: str) -> None:
    if os.environ.get(ENV_DEBUG, "") not in ("", "0"):
        print(f"lstm_gpu: {name} loader: {msg}", file=sys.stderr, flush=True)


def cdll(path: str, mode: int = ctypes.RTLD_GLOBAL) -> ctypes.CDLL:
    return ctypes.CDLL(path, mode=mode)


def nvidia_package_dirs(package: str) -> list[str]:
    """``.../site-packages/nvidia/<package>/lib`` (``bin`` on Windows) of installed wheels."""
    try:
        spec = importlib.util.find_spec(f"nvidia.{package}")
    except (ImportError, ValueError):
        spec = None
    sub = "bin" if sys.platform == "win32" else "lib"
    locations = (spec.submodule_search_locations or []) if spec else []
    return [os.path.join(loc, sub) for loc in locations
            if os.path.isdir(os.path.join(loc, sub))]


def library_path(lib: ctypes.CDLL) -> str:
    return getattr(lib, "_name", "") or ""


@dataclass(frozen=True)
class LibrarySpec:
    """What a `LibraryLoader` looks for.

    name            short name for messages and the debug log ("cudnn", "cublas")
    label           what the error message calls it ("cuDNN 9")
    env_path        the override variable
    sonames         file names to try, preferred first ("libcublas.so.13", "libcublas.so.12")
    wheel_packages  ``nvidia.<package>`` namespaces holding ``lib/<soname>``
    pathfinder_name the name in ``cuda.pathfinder.SUPPORTED_NVIDIA_LIBNAMES`` ("" for none)
    check           validates a loaded library and returns its version (raises OSError)
    install_hint    how to get the library (ends the error message)
    error           the exception type raised when nothing loads
    open_file       how to open one file (default: `cdll`); cuDNN preloads its sub-libraries
    """

    name: str
    label: str
    env_path: str
    sonames: Callable[[], tuple[str, ...]]
    wheel_packages: tuple[str, ...]
    pathfinder_name: str
    check: Callable[[ctypes.CDLL], int]
    install_hint: str
    error: type
    open_file: Callable[[str], ctypes.CDLL] = cdll


class LibraryLoader:
    """Loads `spec`'s library once per process (thread-safe); see the module docstring."""

    def __init__(self, spec: LibrarySpec):
        self.spec = spec
        self._lock = threading.Lock()
        self._state: dict = {}  # "lib", "path", "version" | "error"

    def _from_env(self, value: str) -> ctypes.CDLL:
        if os.path.isdir(value):
            for soname in self.spec.sonames():
                path = os.path.join(value, soname)
                if os.path.isfile(path):
                    return self.spec.open_file(path)
            raise OSError(f"none of {', '.join(self.spec.sonames())} in {value}")
        return self.spec.open_file(value)

    def _already_loaded(self) -> ctypes.CDLL:
        mode = getattr(os, "RTLD_NOLOAD", None)
        if mode is None:
            raise OSError("RTLD_NOLOAD not available on this platform")
        errors = []
        for soname in self.spec.sonames():
            try:
                return ctypes.CDLL(soname, mode=mode | ctypes.RTLD_GLOBAL)
            except OSError as e:
                errors.append(str(e))
        raise OSError("; ".join(errors))

    def _from_pathfinder(self) -> ctypes.CDLL:
        import cuda.pathfinder as pf  # optional dependency

        if self.spec.pathfinder_name not in getattr(pf, "SUPPORTED_NVIDIA_LIBNAMES", ()):
            raise OSError(f"this cuda.pathfinder does not know {self.spec.pathfinder_name}")
        loaded = pf.load_nvidia_dynamic_lib(self.spec.pathfinder_name)
        return self.spec.open_file(loaded.abs_path)

    def candidates(self) -> list[tuple[str, Callable[[], ctypes.CDLL]]]:
        """(description, attempt) pairs in search order."""
        spec = self.spec
        override = os.environ.get(spec.env_path)
        if override:
            return [(f"{spec.env_path}={override}", lambda: self._from_env(override))]
        cands: list[tuple[str, Callable[[], ctypes.CDLL]]] = [
            ("already loaded in this process", self._already_loaded)]
        for package in spec.wheel_packages:
            for directory in nvidia_package_dirs(package):
                for soname in spec.sonames():
                    path = os.path.join(directory, soname)
                    if os.path.isfile(path):
                        cands.append((f"wheel {path}", lambda p=path: spec.open_file(p)))
        if spec.pathfinder_name and importlib.util.find_spec("cuda") is not None:
            cands.append(("cuda.pathfinder", self._from_pathfinder))
        for soname in spec.sonames():
            cands.append((f"system loader ({soname})", lambda s=soname: cdll(s)))
        return cands

    def load(self) -> ctypes.CDLL:
        """The loaded library; raises `spec.error` with every attempt's reason."""
        spec = self.spec
        with self._lock:
            if "lib" in self._state:
                return self._state["lib"]
            if "error" in self._state:
                raise self._state["error"]
            tried = []
            for what, attempt in self.candidates():
                try:
                    lib = attempt()
                    version = spec.check(lib)
                except (OSError, AttributeError, ImportError) as e:
                    debug(spec.name, f"{what}: failed: {e}")
                    tried.append(f"{what}: {e}")
                    continue
                path = library_path(lib)
                debug(spec.name, f"{what}: loaded {path} (version {version})")
                self._state.update(lib=lib, path=path, version=version)
                return lib
            err = spec.error(f"{spec.label} could not be loaded; {spec.install_hint}. "
                             "Tried: " + "; ".join(tried))
            self._state["error"] = err
            raise err

    def available(self) -> bool:
        try:
            self.load()
            return True
        except self.spec.error:
            return False

    def unavailable_reason(self) -> Optional[str]:
        """None when the library loads, else the loader's message."""
        try:
            self.load()
            return None
        except self.spec.error as e:
            return str(e)

    def loaded_path(self) -> Optional[str]:
        return self._state.get("path") if self.available() else None

    def version(self) -> Optional[int]:
        return self._state.get("version") if self.available() else None

    def reset_for_tests(self) -> None:
        """Forget the cached result (the loaded library itself stays mapped)."""
        with self._lock:
            self._state.clear()


class BoundFunctions:
    """Attribute access to a library's functions with `prototypes` applied once; the names
    the library lacks are listed in `missing`."""

    def __init__(self, lib: ctypes.CDLL, prototypes: dict):
        self.lib = lib
        missing = []
        for name, (restype, argtypes) in prototypes.items():
            try:
                fn = getattr(lib, name)
            except AttributeError:
                missing.append(name)
                continue
            fn.restype = restype
            fn.argtypes = list(argtypes)
            setattr(self, name, fn)
        self.missing = tuple(missing)


class Binding:
    """A library's prototypes, bound once on first use, and the names of its statuses.

    prototypes    {name: (restype, argtypes)}; a library lacking one is `spec.error`
    status_names  {code: "PREFIX_STATUS_..."}; other codes ask `name_function(code)`
    """

    def __init__(self, loader: LibraryLoader, prototypes: dict, status_names: dict,
                 name_function: str):
        self.loader = loader
        self.prototypes = prototypes
        self.status_names = status_names
        self.name_function = name_function
        self.prefix = next(iter(status_names.values())).rsplit("_STATUS_", 1)[0] + "_STATUS_"
        self._lock = threading.Lock()
        self._functions: Optional[BoundFunctions] = None

    def functions(self) -> BoundFunctions:
        """The bound prototypes; raises `spec.error` when the library does not load."""
        with self._lock:
            if self._functions is None:
                fns = BoundFunctions(self.loader.load(), self.prototypes)
                if fns.missing:
                    spec = self.loader.spec
                    raise spec.error(f"the loaded {spec.label} ({self.loader.loaded_path()}) "
                                     f"lacks {', '.join(fns.missing)}; {spec.install_hint}")
                self._functions = fns
            return self._functions

    def unavailable_reason(self) -> Optional[str]:
        """None when the library loads with every bound symbol, else why not."""
        try:
            self.functions()
            return None
        except self.loader.spec.error as e:
            return str(e)

    def bound(self) -> Optional[BoundFunctions]:
        """The bound prototypes if `functions()` succeeded before, else None (finalizers)."""
        return self._functions

    def status_name(self, status: int) -> str:
        """``<PREFIX>_STATUS_...`` for a code: our table, else the library's own name."""
        name = self.status_names.get(int(status))
        if name is not None:
            return name
        try:
            fn = getattr(self.functions(), self.name_function)
            raw = (fn(int(status)) or b"").decode(errors="replace")
            if raw.startswith(self.prefix):  # e.g. cuDNN says CUDNN_UNKNOWN_STATUS otherwise
                return raw
        except self.loader.spec.error:
            pass
        return f"{self.prefix}UNKNOWN_{int(status)}"
