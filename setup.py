"""Build of the optional CPU core, `lstm_gpu._cpu_core` (kernels/cpu/, see its README).

Everything else is in pyproject.toml. The extension is optional: when it cannot be compiled
(no C++ compiler, no Python headers, an unsupported platform), installation still succeeds,
the layer runs the NumPy reference on the CPU, and the reason is written next to the package
(`lstm_gpu/_cpu_core.unavailable`) for `lstm_gpu.paths.cpu_native.unavailable_reason()`.
Set LSTM_GPU_BUILD_CPU_CORE=0 to skip the build on purpose.
"""
from __future__ import annotations

import os
import traceback

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

CORE = "lstm_gpu._cpu_core"
REASON_FILE = "_cpu_core.unavailable"
SOURCES = ["kernels/cpu/lstm_cpu_module.cpp"]
DEPENDS = ["kernels/lstm_cell.cuh", "kernels/cpu/lstm_cpu_loops.hpp", "kernels/cpu/vmath.h",
           "kernels/cpu/packed_gemm.hpp", "kernels/cpu/thread_pool.hpp",
           "kernels/cpu/vmath_avx512.h"]
# No -ffast-math: IEEE semantics as in NumPy (the vectorised exp/tanh are in kernels/cpu/
# vmath.h). The instruction set is chosen at load time, so no -march here either.
UNIX_FLAGS = ["-std=c++17", "-O3", "-g0", "-fvisibility=hidden", "-fno-fast-math"]
MSVC_FLAGS = ["/std:c++17", "/O2", "/EHsc"]


class OptionalBuildExt(build_ext):
    """build_ext that records a failure instead of failing the installation."""

    def build_extension(self, ext):
        reason_path = self._reason_path()
        if os.environ.get("LSTM_GPU_BUILD_CPU_CORE", "1") == "0":
            self._record(reason_path, "the build was skipped (LSTM_GPU_BUILD_CPU_CORE=0)")
            return
        flags = MSVC_FLAGS if self.compiler.compiler_type == "msvc" else UNIX_FLAGS
        ext.extra_compile_args = list(ext.extra_compile_args or []) + flags
        try:
            super().build_extension(ext)
        except Exception as exc:  # compiler missing or failing: keep installing
            detail = traceback.format_exception_only(type(exc), exc)[-1].strip()
            self._record(reason_path, f"the C++ extension did not build: {detail}")
            self.warn(f"lstm_gpu: the CPU core was not built ({detail}); NumPy input will run "
                      "the NumPy reference path")
            return
        if os.path.exists(reason_path):
            os.remove(reason_path)

    def copy_extensions_to_source(self):
        """--inplace: the recorded reason goes to the source package too (or is removed)."""
        super().copy_extensions_to_source()
        build_py = self.get_finalized_command("build_py")
        for ext in self.extensions:
            inplace_file, regular_file = self._get_inplace_equivalent(build_py, ext)
            built = os.path.join(os.path.dirname(regular_file), REASON_FILE)
            source = os.path.join(os.path.dirname(inplace_file), REASON_FILE)
            if os.path.exists(built):
                self.copy_file(built, source)
            elif os.path.exists(source):
                os.remove(source)

    def _reason_path(self) -> str:
        package_dir = os.path.dirname(self.get_ext_fullpath(CORE))
        return os.path.join(package_dir, REASON_FILE)

    @staticmethod
    def _record(path: str, reason: str) -> None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(reason + "\n")


setup(
    ext_modules=[Extension(CORE, SOURCES, depends=DEPENDS, language="c++",
                           include_dirs=["kernels", "kernels/cpu"],
                           # optional: setuptools then skips copying a missing build output
                           # back into the source tree (--inplace, editable installs)
                           optional=True)],
    cmdclass={"build_ext": OptionalBuildExt},
)
