"""Read function prototypes and enum values out of the cuDNN 9 C headers.

The nvidia-cudnn wheels ship ``include/cudnn*.h`` beside ``lib/``. The tests use this to check
the ctypes table in `lstm_gpu.cuda.cudnn._bindings` against the headers of the very library it
loads: a wrong argument width or a missing argument would not fail a descriptor call on the
host, but would corrupt the stack of a real RNN call on a GPU.

A C type is reduced to its calling-convention *kind*: ``"pointer"``, ``("int", size, signed)``,
``("float", size)`` or ``None`` (void), so that ``int`` and ``int32_t`` or an enum compare equal.
"""
from __future__ import annotations

import ctypes
import glob
import os
import re
from typing import Optional

_COMMENTS = re.compile(r"/\*.*?\*/|//[^\n]*", re.S)
_FUNCTION = re.compile(
    r"([A-Za-z_][\w \t\*]*?)\s*CUDNNWINAPI\s+(cudnn\w+)\s*\(([^)]*)\)\s*(?:CUDNN_DEPRECATED\s*)?;")
_POINTER_TYPEDEF = re.compile(r"typedef\s+struct\s+\w+\s*\*\s*(\w+)")
_ENUM_BODY = re.compile(r"typedef\s+enum\s*\w*\s*\{(.*?)\}\s*(\w+)", re.S)
_ENUM_ITEM = re.compile(r"(CUDNN_\w+)\s*=\s*(-?\d+)")
_FLAG_DEFINE = re.compile(r"#define\s+(CUDNN_\w+)\s+\(1U?\s*<<\s*(\d+)\)")
_EXTERNAL_POINTERS = {"cudaStream_t"}

_SCALARS = {
    "void": None,
    "int": ("int", 4, True),
    "int32_t": ("int", 4, True),
    "int64_t": ("int", 8, True),
    "unsigned": ("int", 4, False),
    "unsigned int": ("int", 4, False),
    "uint32_t": ("int", 4, False),
    "size_t": ("int", 8, False),
    "unsigned long long": ("int", 8, False),
    "float": ("float", 4),
    "double": ("float", 8),
}


def include_dir(library_path: Optional[str]) -> Optional[str]:
    """``<prefix>/include`` beside the ``<prefix>/lib`` that holds the loaded cuDNN, if present."""
    if not library_path:
        return None
    lib_dir = os.path.dirname(os.path.realpath(library_path))
    candidate = os.path.join(os.path.dirname(lib_dir), "include")
    return candidate if os.path.isfile(os.path.join(candidate, "cudnn_adv.h")) else None


def _header_text(directory: str) -> str:
    # The unversioned headers only #include their *_v9 twins; read each file once.
    paths = sorted(glob.glob(os.path.join(directory, "cudnn*.h")))
    return "\n".join(_COMMENTS.sub(" ", open(p, encoding="utf-8").read()) for p in paths)


class Headers:
    """Prototypes and enum constants of the cuDNN headers in one include directory."""

    def __init__(self, directory: str):
        text = _header_text(directory)
        self.pointer_types = set(_POINTER_TYPEDEF.findall(text)) | _EXTERNAL_POINTERS
        self.enum_types: set[str] = set()
        self.constants: dict[str, int] = {}
        for body, name in _ENUM_BODY.findall(text):
            self.enum_types.add(name)
            self.constants.update((k, int(v)) for k, v in _ENUM_ITEM.findall(body))
        self.constants.update((k, 1 << int(v)) for k, v in _FLAG_DEFINE.findall(text))
        self.functions: dict[str, tuple[str, list[str]]] = {}
        for ret, name, params in _FUNCTION.findall(text):
            args = [p.strip() for p in params.split(",")]
            self.functions[name] = (ret, [] if args in ([""], ["void"]) else args)

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
                return ("int", 4, True)
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
