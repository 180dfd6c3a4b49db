"""Read function prototypes and enum values out of the C headers an NVIDIA wheel ships.

The nvidia-cudnn and nvidia-cublas wheels ship ``include/*.h`` beside ``lib/``. The tests use
this to check our ctypes tables (`lstm_gpu.cuda.cudnn._bindings`, `lstm_gpu.cuda.cublas.
_bindings`) against the headers of the very library they load: a wrong argument width or a
missing argument would not fail on the host, but would corrupt the stack of a real call on a
GPU.

A `Dialect` names a library's conventions (its function prefix, calling-convention macro,
header glob, and the types it takes from CUDA headers the wheel does not ship). A C type is
reduced to its calling-convention *kind*: ``"pointer"``, ``("int", size, signed)``,
``("float", size)`` or ``None`` (void), so that ``int`` and ``int32_t`` or an enum compare equal.
"""
from __future__ import annotations

import ctypes
import glob
import os
import re
from dataclasses import dataclass
from typing import Optional

_COMMENTS = re.compile(r"/\*.*?\*/|//[^\n]*", re.S)
_POINTER_TYPEDEF = re.compile(r"typedef\s+struct\s+\w+\s*\*\s*(\w+)")
_ENUM_BODY = re.compile(r"typedef\s+enum\s*\w*\s*\{(.*?)\}\s*(\w+)", re.S)

_SCALARS = {
    "void": None,
    "int": ("int", 4, True),
    "int32_t": ("int", 4, True),
    "int64_t": ("int", 8, True),
    "unsigned": ("int", 4, False),
    "unsigned int": ("int", 4, False),
    "uint32_t": ("int", 4, False),
    "size_t": ("int", 8, False),
    "long long": ("int", 8, True),
    "long long int": ("int", 8, True),
    "unsigned long long": ("int", 8, False),
    "float": ("float", 4),
    "double": ("float", 8),
}
_INT = ("int", 4, True)


@dataclass(frozen=True)
class Dialect:
    """How one library spells its headers."""

    prefix: str  # function and enumerator prefix, e.g. "cudnn" / "cublas"
    api_macro: str  # calling-convention macro before the name, e.g. "CUDNNWINAPI"
    header_glob: str  # e.g. "cudnn*.h"
    sentinel: str  # a header that must exist in the include directory
    deprecated_macro: str = ""
    external_pointers: tuple[str, ...] = ("cudaStream_t",)
    external_enums: tuple[str, ...] = ()  # enums from CUDA headers the wheel lacks


CUDNN = Dialect(prefix="cudnn", api_macro="CUDNNWINAPI", header_glob="cudnn*.h",
                sentinel="cudnn_adv.h", deprecated_macro="CUDNN_DEPRECATED")
# cublas_api.h takes cudaDataType and libraryPropertyType from library_types.h, which the
# nvidia-cublas wheel does not ship.
CUBLAS = Dialect(prefix="cublas", api_macro="CUBLASWINAPI", header_glob="cublas_api.h",
                 sentinel="cublas_api.h",
                 external_enums=("cudaDataType", "cudaDataType_t", "libraryPropertyType"))


def include_dir(library_path: Optional[str], dialect: Dialect = CUDNN) -> Optional[str]:
    """``<prefix>/include`` beside the ``<prefix>/lib`` that holds the loaded library."""
    if not library_path:
        return None
    lib_dir = os.path.dirname(os.path.realpath(library_path))
    candidate = os.path.join(os.path.dirname(lib_dir), "include")
    return candidate if os.path.isfile(os.path.join(candidate, dialect.sentinel)) else None


def _header_text(directory: str, dialect: Dialect) -> str:
    # cuDNN's unversioned headers only #include their *_v9 twins; read each file once.
    paths = sorted(glob.glob(os.path.join(directory, dialect.header_glob)))
    return "\n".join(_COMMENTS.sub(" ", open(p, encoding="utf-8").read()) for p in paths)


class Headers:
    """Prototypes and enum constants of one library's headers in one include directory."""

    def __init__(self, directory: str, dialect: Dialect = CUDNN):
        text = _header_text(directory, dialect)
        p, api = dialect.prefix, dialect.api_macro
        deprecated = rf"(?:{dialect.deprecated_macro}\s*)?" if dialect.deprecated_macro else ""
        function = re.compile(
            rf"([A-Za-z_][\w \t\*]*?)\s*{api}\s+({p}\w+)\s*\(([^)]*)\)\s*{deprecated};")
        enum_item = re.compile(rf"({p.upper()}_\w+)\s*=\s*(-?\d+)")
        flag_define = re.compile(rf"#define\s+({p.upper()}_\w+)\s+\(1U?\s*<<\s*(\d+)\)")
        self.pointer_types = set(_POINTER_TYPEDEF.findall(text)) | set(
            dialect.external_pointers)
        self.enum_types: set[str] = set(dialect.external_enums)
        self.constants: dict[str, int] = {}
        for body, name in _ENUM_BODY.findall(text):
            self.enum_types.add(name)
            self.constants.update((k, int(v)) for k, v in enum_item.findall(body))
        self.constants.update((k, 1 << int(v)) for k, v in flag_define.findall(text))
        self.functions: dict[str, tuple[str, list[str]]] = {}
        for ret, name, params in function.findall(text):
            args = [a.strip() for a in params.split(",")]
            self.functions[name] = (ret.strip(), [] if args in ([""], ["void"]) else args)

    def kind(self, c_type: str):
        """The calling-convention kind of a return type or a parameter with its name."""
        text = " ".join(c_type.replace("const ", " ").split())
        if "*" in text or text.endswith("[]"):
            return "pointer"
        words = text.split()
        for n in (len(words), len(words) - 1):  # the type alone, or the type and a name
            base = " ".join(words[:n])
            if base in _SCALARS:
                return _SCALARS[base]
            if base in self.pointer_types:
                return "pointer"
            if base in self.enum_types:
                return _INT
        raise ValueError(f"unknown C type {c_type!r}")


def ctypes_kind(t):
    """The same kinds for a ctypes type (``None`` for a void return)."""
    if t is None:
        return None
    if t in (ctypes.c_void_p, ctypes.c_char_p) or issubclass(t, ctypes._Pointer):
        return "pointer"
    if t in (ctypes.c_float, ctypes.c_double):
        return ("float", ctypes.sizeof(t))
    return ("int", ctypes.sizeof(t), t(-1).value < 0)


def check_prototypes(headers: Headers, prototypes: dict, name: str) -> None:
    """Assert that `prototypes[name]` = (restype, argtypes) matches the header's declaration."""
    assert name in headers.functions, f"{name} is not declared in the headers"
    c_return, c_params = headers.functions[name]
    restype, argtypes = prototypes[name]
    assert ctypes_kind(restype) == headers.kind(c_return), (name, c_return)
    assert len(argtypes) == len(c_params), (name, c_params)
    for i, (ours, theirs) in enumerate(zip(argtypes, c_params)):
        assert ctypes_kind(ours) == headers.kind(theirs), (name, i, theirs)
