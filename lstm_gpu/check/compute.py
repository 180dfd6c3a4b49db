"""Running the grid's cases: a path through its contract, the public layer, the reference.

- `run_path(module, space, problem, data, training)`: one call of a path module
  (`forward`, then `backward` when training) on the problem's arrays, results on the host.
- `reference_path(problem, data)`: the same through `paths.numpy_ref` in float64 on the same
  rounded arrays, for a training call and an inference call.
- `check_problem(...)`: `calls` training calls and one inference call of a path, each
  compared with the reference; the worst `Comparison`.
- `run_layer(layer, data, space)`: the layer's calls and backward passes, with the path each
  call ran; `reference_layer` does the same with a float64 NumPy layer, and
  `check_layer_case` compares a path's run with it.
- `predicted_paths(layer, mask)`: the path the dispatcher's rules choose for a CuPy call of
  the layer (per direction of a Bidirectional), and the rules that failed.
"""
from __future__ import annotations

import contextlib
import os
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Optional

import numpy as np

from ..paths.base import DropoutMasks, Weights
from .compare import Comparison, Computed, compare
from .data import LayerData, ProblemData
from .grid import LayerCase, Problem

CPU_PATH_ENV = "LSTM_GPU_CPU_PATH"  # numpy | native: which path NumPy input runs (issue #13)

FORWARD_NAMES = ("last", "sequence", "h", "c")
GRADIENT_NAMES = ("inputs", "h0", "c0", "kernel", "recurrent_kernel", "bias")


@dataclass(frozen=True)
class ArraySpace:
    """Where a path computes: `put` copies a NumPy array there, `get` copies one back."""

    name: str
    put: Callable[[np.ndarray], Any]
    get: Callable[[Any], np.ndarray]
    on_gpu: bool = False

    def put_all(self, arrays):
        return None if arrays is None else [self.put(a) for a in arrays]


# A copy: a path that wrote into its inputs must not change the next path's data.
HOST = ArraySpace("host", lambda a: np.array(a, copy=True), np.asarray)


def gpu_space() -> ArraySpace:
    """CuPy arrays on CuPy's current device."""
    import cupy

    return ArraySpace("gpu", cupy.asarray, cupy.asnumpy, on_gpu=True)


@contextlib.contextmanager
def environment(variables: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for the duration (the paths read their switches per call)."""
    saved = {k: os.environ.get(k) for k in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# ------------------------------------------------------------------------------ path level


def run_path(module: Any, space: ArraySpace, problem: Problem, data: ProblemData,
             training: bool = True) -> Computed:
    """One call of a path module; dropout masks only in training (as the layer passes them)."""
    def put(a):
        return None if a is None else space.put(a)

    def get(a):
        return None if a is None else space.get(a)

    w = data.weights
    weights = Weights(put(w.kernel), put(w.recurrent_kernel), put(w.bias))
    dropout = None
    if training and data.dropout is not None:
        dropout = DropoutMasks(put(data.dropout.inputs), put(data.dropout.recurrent))
    res = module.forward(weights, put(data.x), put(data.mask), put(data.h0), put(data.c0),
                         problem.spec(), dropout, training)
    out = Computed({n: get(getattr(res, n)) for n in FORWARD_NAMES})
    if training:
        g = module.backward(res.saved, put(data.d_last), put(data.d_sequence), put(data.d_h),
                            put(data.d_c))
        out.gradients = {n: get(getattr(g, n)) for n in GRADIENT_NAMES}
    return out


@dataclass
class PathReference:
    training: Computed  # outputs and gradients of a training call
    inference: Computed  # outputs of an inference call (no dropout)


def reference_path(problem: Problem, data: ProblemData) -> PathReference:
    """The float64 NumPy reference on `data`'s (rounded) values."""
    from ..paths import numpy_ref

    exact = data.cast(np.float64)
    training = run_path(numpy_ref, HOST, problem, exact, training=True)
    if exact.dropout is None:
        inference = Computed(dict(training.outputs))
    else:
        inference = run_path(numpy_ref, HOST, problem, exact, training=False)
    return PathReference(training, inference)


def check_problem(module: Any, space: ArraySpace, problem: Problem, data: ProblemData,
                  want: PathReference, calls: int = 1) -> Comparison:
    """`calls` training calls (graph mode: capture, then replays) and one inference call,
    each against the reference; the worst comparison, its array named with the call."""
    worst = None
    for k in range(calls):
        c = _named(compare(run_path(module, space, problem, data, True), want.training,
                           data.dtype), f"call {k + 1}: " if calls > 1 else "")
        worst = c if worst is None else worst.worse(c)
    c = _named(compare(run_path(module, space, problem, data, False), want.inference,
                       data.dtype), "inference ")
    return worst.worse(c)


def _named(c: Comparison, prefix: str) -> Comparison:
    c.array = prefix + c.array
    return c


# ------------------------------------------------------------------------------ layer level


def make_layer(case: LayerCase, data: LayerData, use_cudnn: Any = "auto",
               activation: Any = None):
    """The case's layer in `data`'s dtype, built, with `data`'s weights (NumPy, so they sit
    on the host until the first call moves them where the inputs are)."""
    from .. import LSTM, Bidirectional

    options = case.options
    if activation is not None:
        options["activation"] = activation
    dtype = data.dtype.name
    layer = LSTM(case.shape.units, dtype=dtype, use_cudnn=use_cudnn, **options)
    if case.wrapper == "bidirectional":
        layer = Bidirectional(layer, merge_mode=case.merge_mode, dtype=dtype)
    layer.build(data.inputs[0].shape)
    layer.set_weights([np.array(w) for w in data.weights])
    return layer


def directions(layer) -> tuple:
    """The LSTM layers a layer runs: itself, or a Bidirectional's two."""
    return (layer.forward_layer, layer.backward_layer) if hasattr(layer, "forward_layer") \
        else (layer,)


@dataclass
class LayerRun:
    computed: Computed
    ran: list = field(default_factory=list)  # `last_path` of each call (Bidirectional: tuples)


def run_layer(layer, data: LayerData, space: ArraySpace) -> LayerRun:
    """Every call of the case (training) and its backward with `data.upstream` gradients."""
    run = LayerRun(Computed())
    mask = None if data.mask is None else space.put(data.mask)
    for k, x in enumerate(data.inputs):
        kwargs: dict = {"training": True}
        if mask is not None:
            kwargs["mask"] = mask
        if data.initial_state is not None and k == 0:
            kwargs["initial_state"] = space.put_all(data.initial_state)
        out = layer(space.put(x), **kwargs)
        items = list(out) if isinstance(out, tuple) else [out]
        upstream = space.put_all(data.upstream(k, [tuple(o.shape) for o in items]))
        grads = layer.backward(tuple(upstream) if isinstance(out, tuple) else upstream[0])
        prefix = f"call {k + 1}: " if len(data.inputs) > 1 else ""
        _flatten(prefix + "output", out, run.computed.outputs, space.get)
        _flatten(prefix + "d", grads, run.computed.gradients, space.get)
        run.ran.append(layer.last_path)
    return run


def reference_layer(case: LayerCase, data: LayerData) -> Computed:
    """The case through a float64 NumPy layer (the NumPy reference path) on `data`'s values."""
    exact = data.cast(np.float64)
    with environment({CPU_PATH_ENV: "numpy"}):
        layer = make_layer(case, exact)
        return run_layer(layer, exact, HOST).computed


@dataclass
class LayerCheck:
    """A layer case on one path: the comparison, the path each call ran (a tuple per call),
    the path(s) expected, the cuDNN rules that failed (GPU), warnings, or why the route
    declined the case (then nothing ran)."""

    comparison: Optional[Comparison] = None
    ran: list = field(default_factory=list)
    expected: tuple = ()
    reasons: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    declined: Optional[str] = None

    @property
    def wrong_path(self) -> Optional[str]:
        wrong = next((r for r in self.ran if r != self.expected), None)
        if wrong is None:
            return None
        said = f" ({'; '.join(self.warnings)})" if self.warnings else ""
        return f"the layer ran {', '.join(wrong)}, expected {', '.join(self.expected)}{said}"

    @property
    def passed(self) -> bool:
        return self.wrong_path is None and self.comparison is not None \
            and self.comparison.passed

    def describe(self) -> str:
        return self.declined or self.wrong_path or self.comparison.describe()


def check_layer_case(case: LayerCase, data: LayerData, space: ArraySpace, want: Computed,
                     use_cudnn: Any = "auto", activation: Any = None,
                     expected: Optional[str] = None) -> LayerCheck:
    """The case on the layer built with `use_cudnn` and `activation`, against `want`
    (`reference_layer`). Every call must run `expected`; None means the dispatcher's choice.
    On a GPU, a case whose rules send it elsewhere than `expected` is declined, not run."""
    layer = make_layer(case, data, use_cudnn, activation)
    check = LayerCheck(expected=(expected,) * len(directions(layer)))
    if space.on_gpu:
        try:
            predicted, check.reasons = predicted_paths(
                layer, None if data.mask is None else space.put(data.mask))
        except ValueError as e:  # use_cudnn=True and a rule fails
            check.declined = f"declined: {e}"
            return check
        if expected is None:
            check.expected = predicted
        elif predicted != check.expected:
            check.declined = (f"declined: the dispatcher sends this call to "
                              f"{', '.join(predicted)} ({'; '.join(check.reasons)})")
            return check
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = run_layer(layer, data, space)
    check.warnings = [str(w.message) for w in caught]
    check.ran = [tuple(r) if isinstance(r, tuple) else (r,) for r in run.ran]
    check.comparison = compare(run.computed, want, data.dtype)
    return check


def _flatten(name: str, value: Any, into: dict, get: Callable) -> None:
    """Nested tuples, lists and dicts of arrays -> {"name[0]": array, "name.key": ...}."""
    if isinstance(value, dict):
        for key, v in value.items():
            _flatten(f"{name}.{key}", v, into, get)
    elif isinstance(value, (list, tuple)):
        for k, v in enumerate(value):
            _flatten(f"{name}[{k}]", v, into, get)
    else:
        into[name] = None if value is None else get(value)


def predicted_paths(layer, mask: Any) -> tuple[tuple, list]:
    """(path per direction, failed rules) the dispatcher's rules give a CuPy training call of
    `layer` with `mask` (on the device): what `gpu_routing.select` will pick, barring a cuDNN
    error at run time. Raises ValueError, as the call would, under use_cudnn=True when a rule
    fails."""
    from .. import dispatch, gpu_routing

    chosen, reasons = [], []
    for sub in directions(layer):
        failed = sub.cudnn_ineligibility(mask=mask, training=True)
        reasons += failed
        name = dispatch.choose_gpu_path(sub.use_cudnn, failed)
        if name == dispatch.PATH_KERNELS:
            name = gpu_routing.kernel_path_name(sub)
        chosen.append(name)
    return tuple(chosen), list(dict.fromkeys(reasons))
