"""Exceptions raised by lstm_gpu."""
from __future__ import annotations


class LstmGpuError(Exception):
    """Base class of lstm_gpu's own errors."""


class PathUnavailable(LstmGpuError, NotImplementedError):
    """A compute path cannot serve this call (the dispatcher falls back)."""


class LibraryStatusError(LstmGpuError, RuntimeError):
    """A call into an NVIDIA library returned a non-zero status.

    Attributes: ``status`` (int), ``name`` (e.g. ``"CUDNN_STATUS_BAD_PARAM"``), ``message``
    (the library's own error text, may be empty), ``call`` (the function's name).
    """

    def __init__(self, status: int, name: str, message: str = "", call: str = ""):
        self.status = status
        self.name = name
        self.message = message
        self.call = call
        where = f" in {call}" if call else ""
        text = f"{name} ({status}){where}"
        if message:
            text += f": {message}"
        super().__init__(text)

    def __reduce__(self):
        return (type(self), (self.status, self.name, self.message, self.call))


class CudnnError(LibraryStatusError):
    """A cuDNN call returned a non-zero status (``message``: cudnnGetLastErrorString)."""


class CublasError(LibraryStatusError):
    """A cuBLAS call returned a non-zero status (``message``: cublasGetStatusString)."""


class CudnnNotAvailable(LstmGpuError, ImportError):
    """cuDNN 9 could not be found or loaded."""


class CublasNotAvailable(LstmGpuError, ImportError):
    """cuBLAS (12 or 13, matching CuPy's CUDA) could not be found or loaded."""
