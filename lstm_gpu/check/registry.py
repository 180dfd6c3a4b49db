"""The paths `lstm-gpu-check` checks: one registry, name -> availability and how to run.

`default_registry()` holds lstm_gpu's paths:

    numpy               the NumPy reference path in the checked dtype (host)
    cpu-native          the compiled CPU path, when this lstm_gpu has one (issue #13)
    cupy-reference      the reference algorithm in CuPy (a Python-callable activation)
    cudnn               the cuDNN 9 path
    cuda-kernels:eager  the fused CUDA kernels, time loop in Python
    cuda-kernels:graph  the same, time loop replayed as a CUDA graph
    auto                the layer with use_cudnn="auto": the dispatcher's choice

A test adds a double with `Registry.add` and passes the registry to `cli.main`; the command
runs it exactly like the others.
"""
from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from .._xp import array_module, gpu_unavailable_reason
from .compute import CPU_PATH_ENV, HOST, ArraySpace, gpu_space
from .data import KEEP, ProblemData
from .grid import Problem

ALL_DTYPES = ("float16", "float32", "float64")


@dataclass(frozen=True)
class LayerRoute:
    """How the public layer is made to run a path.

    use_cudnn: the layer's argument. expected: the path every call must report in
    `last_path`; None means the dispatcher's choice (`compute.predicted_paths`), as for "auto".
    activation: replaces the cases' activation (a Python callable sends a CuPy call to
    cupy-reference). groups: the layer-case groups the route runs.
    """

    use_cudnn: Any = "auto"
    expected: Optional[str] = None
    activation: Any = None
    groups: tuple = ("layer",)


def _takes_everything(problem: Problem, data: ProblemData) -> Optional[str]:
    return None


@dataclass
class CheckPath:
    """One checked path.

    unavailable(): why it cannot run on this machine, or None (asked once per run).
    module(): the path module (the `paths.base` contract) for the grid's problems, or None
    when the path is only reached through the layer. space(): where its arrays live.
    dtypes: the dtypes its contract takes. declines(problem, data): why it does not take a
    problem it would be asked (None when it takes it). environ: variables set while it runs.
    calls: training calls per problem. reset(): called before the path runs (a cache to
    start from empty). counters() / counters_problem(delta): counters reported after the
    path ran, and what in their change means the path did not run as named (None when all
    is well).
    """

    name: str
    description: str
    unavailable: Callable[[], Optional[str]]
    module: Optional[Callable[[], Any]] = None
    space: Callable[[], ArraySpace] = lambda: HOST
    dtypes: tuple = ("float32", "float64")
    declines: Callable[[Problem, ProblemData], Optional[str]] = _takes_everything
    environ: dict = field(default_factory=dict)
    calls: int = 1
    layer: Optional[LayerRoute] = None
    counters: Optional[Callable[[], dict]] = None
    counters_problem: Optional[Callable[[dict], Optional[str]]] = None
    reset: Optional[Callable[[], None]] = None

    @property
    def family(self) -> str:
        """"cuda-kernels" for "cuda-kernels:graph": `--paths cuda-kernels` selects both."""
        return self.name.split(":")[0]


class Registry:
    """Paths by name, in the order they run."""

    def __init__(self) -> None:
        self._paths: dict[str, CheckPath] = {}

    def add(self, path: CheckPath) -> CheckPath:
        if path.name in self._paths:
            raise ValueError(f"a path named {path.name!r} is registered already")
        self._paths[path.name] = path
        return path

    def names(self) -> list[str]:
        return list(self._paths)

    def choices(self) -> list[str]:
        """Every name `select` takes: each path's name and each family's."""
        return list(dict.fromkeys(n for p in self._paths.values() for n in (p.family, p.name)))

    def select(self, names: Optional[list[str]] = None) -> list[CheckPath]:
        """The paths named (a family name selects its members), in registry order; all
        without names. ValueError for an unknown name."""
        if not names:
            return list(self._paths.values())
        unknown = [n for n in names if n not in self.choices()]
        if unknown:
            raise ValueError(f"unknown path {', '.join(map(repr, unknown))}; choose from "
                             f"{', '.join(self.choices())}")
        return [p for p in self._paths.values() if p.name in names or p.family in names]


# ------------------------------------------------------------------------------ lstm_gpu's


def python_tanh(x):
    """tanh as a plain Python callable: the layer has no kernel form for a callable, so a CuPy
    call with it runs the cupy-reference path. Its derivative is exact (`derivative`)."""
    return array_module(x).tanh(x)


python_tanh.derivative = lambda x, y: x.dtype.type(1) - y * y  # type: ignore[attr-defined]

CPU_NATIVE_MODULE = "lstm_gpu.paths.cpu_native"


def _cpu_native_unavailable() -> Optional[str]:
    """Why the native CPU path cannot run: not part of this lstm_gpu, or its own reason."""
    try:
        found = importlib.util.find_spec(CPU_NATIVE_MODULE)
    except ImportError:
        found = None
    if found is None:
        return f"not built: this lstm_gpu has no native CPU path ({CPU_NATIVE_MODULE})"
    try:
        module = importlib.import_module(CPU_NATIVE_MODULE)
    except Exception as e:
        return f"not available: {CPU_NATIVE_MODULE} does not import: {type(e).__name__}: {e}"
    reason = getattr(module, "unavailable_reason", None)
    why = reason() if callable(reason) else None
    return None if why is None else f"not available: {why}"


def _cudnn_unavailable() -> Optional[str]:
    why = gpu_unavailable_reason()
    if why:
        return why
    from .. import dispatch

    why = dispatch.cudnn_unavailable_reason()
    if why:
        return f"{dispatch.REASON_UNAVAILABLE}: {why}"
    from ..cuda.cudnn import api

    ok, error = api.can_create_handle()
    return None if ok else f"{dispatch.REASON_UNAVAILABLE}: {error}"


def cudnn_declines(problem: Problem, data: ProblemData) -> Optional[str]:
    """The dispatcher's rules (`dispatch.cudnn_ineligibility`) on this problem; whether
    cuDNN loads at all is the path's availability, not a rule of the problem."""
    from .. import dispatch

    spec = problem.spec()
    rate = 1.0 - KEEP
    reasons = dispatch.cudnn_ineligibility(
        activation=spec.activation, recurrent_activation=spec.recurrent_activation,
        use_bias=problem.use_bias, unroll=False,
        dropout=rate if problem.input_dropout else 0.0,
        recurrent_dropout=rate if problem.recurrent_dropout else 0.0, training=True,
        mask=None if data.mask is None else data.mask.T, dtype=data.dtype,
        implementation=problem.implementation)
    return "; ".join(r for r in reasons if not r.startswith(dispatch.REASON_UNAVAILABLE)) \
        or None


def _module(name: str) -> Callable[[], Any]:
    return lambda: importlib.import_module(name)


def graph_counters_problem(delta: dict) -> Optional[str]:
    if delta.get("fallbacks"):
        return (f"{delta['fallbacks']} CUDA graph capture(s) fell back to eager loops: graph "
                "mode did not run as a graph")
    if not delta.get("replays"):
        return "no CUDA graph replay: graph mode did not run as a graph"
    return None


def default_registry() -> Registry:
    """lstm_gpu's paths, in the order the command runs them."""
    from ..paths import cuda_kernels

    r = Registry()
    r.add(CheckPath("numpy", "NumPy reference path (host)", lambda: None,
                    module=_module("lstm_gpu.paths.numpy_ref"),
                    environ={CPU_PATH_ENV: "numpy"}, layer=LayerRoute(expected="numpy")))
    r.add(CheckPath("cpu-native", "compiled CPU path (host)", _cpu_native_unavailable,
                    module=_module(CPU_NATIVE_MODULE), environ={CPU_PATH_ENV: "native"},
                    layer=LayerRoute(expected="cpu-native")))
    r.add(CheckPath("cupy-reference", "reference algorithm in CuPy", gpu_unavailable_reason,
                    module=_module("lstm_gpu.paths.numpy_ref"), space=gpu_space,
                    layer=LayerRoute(use_cudnn=False, expected="cupy-reference",
                                     activation=python_tanh)))
    r.add(CheckPath("cudnn", "cuDNN 9 RNN API", _cudnn_unavailable,
                    module=_module("lstm_gpu.paths.cudnn"), space=gpu_space, dtypes=ALL_DTYPES,
                    declines=cudnn_declines, layer=LayerRoute(use_cudnn=True,
                                                               expected="cudnn")))
    graph = dict(counters=cuda_kernels.graph_stats, counters_problem=graph_counters_problem,
                 reset=cuda_kernels.clear_graphs)
    # Graph mode: three calls per problem, so that the last ones replay whether a shape's
    # first call runs eagerly and the second captures, or the first captures already.
    for mode, calls, extra in (("eager", 1, {}), ("graph", 3, graph)):
        r.add(CheckPath(f"cuda-kernels:{mode}", f"fused CUDA kernels, {mode} time loop",
                        gpu_unavailable_reason, module=_module("lstm_gpu.paths.cuda_kernels"),
                        space=gpu_space, environ={cuda_kernels.LOOP_ENV: mode}, calls=calls,
                        layer=LayerRoute(use_cudnn=False, expected="cuda-kernels"), **extra))
    r.add(CheckPath("auto", 'the layer with use_cudnn="auto" (the dispatcher)',
                    gpu_unavailable_reason, space=gpu_space,
                    layer=LayerRoute(groups=("layer", "dispatch"))))
    return r
