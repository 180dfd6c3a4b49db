"""Shared helpers for the Keras-parity, golden, gradient and dropout tests.

Import as ``from lstm_testlib import ...`` (pytest puts ``tests/`` on ``sys.path``) or as
``tests.lstm_testlib`` when the repository root is on the path.

Nothing here imports Keras at import time: `keras_or_skip()` does that on demand, with the
torch backend, and skips the calling test cleanly when Keras (or torch) is missing.
"""
from __future__ import annotations

import os
import threading
from typing import Any, Callable, Sequence

import numpy as np
import pytest

# Every element-wise activation Keras 3 accepts by name (keras.activations.get).
KERAS_ACTIVATIONS = (
    "tanh", "sigmoid", "hard_sigmoid", "relu", "relu6", "linear", "softsign", "softplus",
    "elu", "selu", "silu", "swish", "gelu", "hard_silu", "hard_swish", "leaky_relu",
    "exponential", "mish", "log_sigmoid", "hard_tanh", "celu", "squareplus", "soft_shrink",
    "hard_shrink", "sparse_plus", "sparse_sigmoid", "tanh_shrink",
)
# Activations that are smooth enough (C1 everywhere, or kinks far from where the test data
# lands with probability ~1) for finite differences.
SMOOTH_ACTIVATIONS = (
    "tanh", "sigmoid", "linear", "softplus", "elu", "selu", "silu", "gelu", "mish",
    "log_sigmoid", "celu", "squareplus", "exponential", "tanh_shrink", "softsign",
)

# Keras 3.15 LSTM.get_config() keys (checked against a real layer when Keras is installed).
KERAS_CONFIG_KEYS = frozenset({
    "name", "trainable", "dtype", "return_sequences", "return_state", "go_backwards",
    "stateful", "unroll", "zero_output_for_mask", "units", "activation",
    "recurrent_activation", "use_bias", "kernel_initializer", "recurrent_initializer",
    "bias_initializer", "unit_forget_bias", "kernel_regularizer", "recurrent_regularizer",
    "bias_regularizer", "activity_regularizer", "kernel_constraint", "recurrent_constraint",
    "bias_constraint", "dropout", "recurrent_dropout", "seed",
})

MASK_KINDS = ("none", "right", "left", "holes", "full", "mixed")


# --------------------------------------------------------------------------------------
# Keras (torch backend)
# --------------------------------------------------------------------------------------
def keras_or_skip():
    """Import Keras 3 with the torch backend, or skip the calling test."""
    backend = os.environ.setdefault("KERAS_BACKEND", "torch")
    if backend != "torch":
        pytest.skip(f"these tests need KERAS_BACKEND=torch, found {backend!r}")
    try:  # not importorskip: a Keras that is installed but fails to import also skips
        import torch  # noqa: F401
        import keras
    except ImportError as exc:
        pytest.skip(f"Keras 3 with torch is not importable: {exc}")
    if keras.backend.backend() != "torch":
        pytest.skip(f"keras was imported with the {keras.backend.backend()!r} backend")
    if int(keras.__version__.split(".")[0]) < 3:
        pytest.skip("these tests need Keras 3")
    _true_float64(keras)
    return keras


def _true_float64(keras):
    """Make Keras-torch's float64 layers compute in float64.

    Keras 3's type promotion (`keras.src.backend.common.dtypes._lattice_result_type`) maps
    float64 to float32 on every backend but TensorFlow ("aligned with JAX's default"), and
    torch's `ops.matmul` computes in that result type: a Keras-torch LSTM with dtype="float64"
    does its matmuls in float32 (~1e-8 off a float64 reference). For a float64 reference
    we switch that one mapping off; nothing else in Keras changes.
    """
    try:
        from keras.src.backend.common import dtypes
    except ImportError:  # layout changed: leave Keras alone
        return
    table = getattr(dtypes, "BIT64_TO_BIT32_DTYPE", None)
    if isinstance(table, dict) and table.get("float64") != "float64":
        table["float64"] = "float64"


def make_keras(units: int, dtype: str = "float64", **kwargs):
    """A Keras LSTM on its generic cell loop (use_cudnn=False), the path our NumPy path pins."""
    keras = keras_or_skip()
    kwargs.setdefault("use_cudnn", False)
    return keras.layers.LSTM(units, dtype=dtype, **kwargs)


def keras_call(layer, x, mask=None, initial_state=None, training=None):
    """Call a Keras layer on NumPy data; returns a tuple of NumPy arrays (output[, h, c])."""
    import torch

    kw: dict[str, Any] = {}
    if mask is not None:
        kw["mask"] = torch.as_tensor(np.asarray(mask, dtype=bool))
    if initial_state is not None:
        kw["initial_state"] = [torch.as_tensor(s) for s in initial_state]
    if training is not None:
        kw["training"] = training
    out = layer(torch.as_tensor(x), **kw)
    return tuple(o.detach().cpu().numpy() for o in as_tuple(out))


def keras_autograd(layer, x, upstream: Sequence, weights: Sequence, mask=None,
                   initial_state=None):
    """Gradients of sum_k sum(out_k * upstream_k) + sum(layer.losses) through a Keras layer
    (torch autograd) with respect to x, the initial states (when given) and `weights` (torch
    tensors of the layer's variables). upstream mirrors the output tuple; an entry may be None
    (contributes nothing). Returns (outputs tuple, {"inputs": dx, ["initial_state": [...],]
    "weights": [...]}), NumPy arrays (None for an unused leaf)."""
    import torch

    xt = torch.tensor(np.asarray(x), requires_grad=True)
    kw: dict[str, Any] = {}
    leaves = [xt]
    if mask is not None:
        kw["mask"] = torch.as_tensor(np.asarray(mask, dtype=bool))
    if initial_state is not None:
        states = [torch.tensor(np.asarray(s), requires_grad=True) for s in initial_state]
        kw["initial_state"] = states
        leaves += states
    out = as_tuple(layer(xt, **kw))
    loss = 0
    for o, g in zip(out, upstream):
        if g is not None:
            loss = loss + (o * torch.as_tensor(np.asarray(g), dtype=o.dtype)).sum()
    for l in layer.losses:
        loss = loss + l
    grads = torch.autograd.grad(loss, leaves + list(weights), allow_unused=True)
    grads = [None if g is None else g.detach().cpu().numpy() for g in grads]
    result = {"inputs": grads[0], "weights": grads[len(leaves):]}
    if initial_state is not None:
        result["initial_state"] = grads[1:len(leaves)]
    return tuple(o.detach().cpu().numpy() for o in out), result


def keras_cell_weights(layer) -> list:
    """[kernel, recurrent_kernel(, bias)] of a Keras LSTM as torch tensors."""
    cell = layer.cell
    return [cell.kernel.value, cell.recurrent_kernel.value] + (
        [cell.bias.value] if cell.use_bias else [])


def keras_grads(layer, x, upstream: Sequence, mask=None, initial_state=None):
    """Gradients of sum_k sum(out_k * upstream_k) through Keras (torch autograd).

    upstream mirrors the output tuple; an entry may be None (contributes nothing).
    Returns (outputs tuple, dict with our `backward` keys).
    """
    outs, result = keras_autograd(layer, x, upstream, keras_cell_weights(layer), mask,
                                  initial_state)
    weights = result.pop("weights") + [None]
    result["kernel"], result["recurrent_kernel"], result["bias"] = weights[:3]
    return outs, result


# --------------------------------------------------------------------------------------
# Our layer
# --------------------------------------------------------------------------------------
def expected_cpu_path() -> str:
    """`layer.last_path` of a NumPy call with built-in activations under the current
    LSTM_GPU_CPU_PATH (see the `cpu_path` fixture in conftest.py)."""
    from lstm_gpu.paths import cpu_native

    choice = os.environ.get(cpu_native.CPU_PATH_ENV) or "auto"
    if choice == "numpy" or (choice == "auto" and not cpu_native.is_available()):
        return "numpy"
    return cpu_native.NAME


def make_ours(units: int, dtype: str = "float64", **kwargs):
    from lstm_gpu import LSTM

    return LSTM(units, dtype=dtype, **kwargs)


def call(layer, x, mask=None, initial_state=None, training=None):
    """Call our layer with only the keyword arguments given; returns a tuple of arrays."""
    kw: dict[str, Any] = {}
    if mask is not None:
        kw["mask"] = mask
    if initial_state is not None:
        kw["initial_state"] = list(initial_state)
    if training is not None:
        kw["training"] = training
    return as_tuple(layer(x, **kw))


def built(layer, input_shape, weights=None):
    layer.build(tuple(input_shape))
    if weights is not None:
        layer.set_weights([np.array(w, copy=True) for w in weights])
    return layer


# --------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------
def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def random_weights(features: int, units: int, *, use_bias: bool = True, scale: float = 0.5,
                   dtype="float64", seed: int = 0) -> list[np.ndarray]:
    """Random, non-symmetric Keras-layout weights: kernel (F,4U), recurrent (U,4U), bias (4U,).

    Every entry differs, so gate-order, transposition or block mix-ups show.
    """
    r = rng(seed)
    w = [scale * r.standard_normal((features, 4 * units)),
         scale * r.standard_normal((units, 4 * units))]
    if use_bias:
        w.append(scale * r.standard_normal((4 * units,)))
    return [a.astype(dtype) for a in w]


def random_inputs(batch: int, steps: int, features: int, *, scale: float = 1.0,
                  dtype="float64", seed: int = 1) -> np.ndarray:
    return (scale * rng(seed).standard_normal((batch, steps, features))).astype(dtype)


def random_states(batch: int, units: int, *, scale: float = 0.7, dtype="float64",
                  seed: int = 2) -> list[np.ndarray]:
    r = rng(seed)
    return [(scale * r.standard_normal((batch, units))).astype(dtype) for _ in range(2)]


def make_mask(kind: str, batch: int, steps: int, seed: int = 3) -> np.ndarray | None:
    """A (batch, steps) bool mask of one kind.

    none: None. right: right-padded, lengths 1..T. left: left-padded. holes: masked steps in
    the middle (first and last valid). full: row 0 fully masked, others valid. mixed: one row
    of each pattern (all True, right, left, holes, fully masked, random) cycled over the batch.
    """
    if kind == "none":
        return None
    m = np.ones((batch, steps), dtype=bool)
    r = rng(seed)
    if kind == "right":
        for b in range(batch):
            m[b, 1 + (b % steps):] = False
    elif kind == "left":
        for b in range(batch):
            m[b, : b % steps] = False
        m[0, : steps - 1] = False
    elif kind == "holes":
        for b in range(batch):
            m[b, 1: steps - 1] = r.random(steps - 2) < 0.5
            if steps > 2:
                m[b, 1 + b % (steps - 2)] = False
    elif kind == "full":
        m[0, :] = False
    elif kind == "mixed":
        rows = [
            np.ones(steps, bool),
            np.arange(steps) < max(1, steps // 2),
            np.arange(steps) >= steps // 2,
            np.r_[True, np.arange(1, steps - 1) % 2 == 0, True][:steps],
            np.zeros(steps, bool),
            r.random(steps) < 0.5,
        ]
        for b in range(batch):
            m[b] = rows[b % len(rows)]
    else:
        raise ValueError(kind)
    return m


# --------------------------------------------------------------------------------------
# Comparison and finite differences
# --------------------------------------------------------------------------------------
def as_tuple(out) -> tuple:
    if isinstance(out, (tuple, list)):
        return tuple(out)
    return (out,)


def to_numpy(a):
    if a is None:
        return None
    if hasattr(a, "get"):  # CuPy
        return a.get()
    return np.asarray(a)


def assert_close(got, expected, *, rtol: float, atol: float = None, what: str = ""):
    """allclose with atol scaled by the magnitude of `expected` (defaults to rtol * max(1,|e|))."""
    got = to_numpy(got)
    expected = to_numpy(expected)
    assert got is not None, f"{what}: got None"
    assert np.shape(got) == np.shape(expected), (
        f"{what}: shape {np.shape(got)} != expected {np.shape(expected)}")
    scale = max(1.0, float(np.max(np.abs(expected)))) if np.size(expected) else 1.0
    if atol is None:
        atol = rtol * scale
    np.testing.assert_allclose(np.asarray(got, dtype=np.float64),
                               np.asarray(expected, dtype=np.float64),
                               rtol=rtol, atol=atol, err_msg=what)


def assert_outputs_close(got: Sequence, expected: Sequence, *, rtol: float, what: str = ""):
    assert len(got) == len(expected), f"{what}: {len(got)} outputs, expected {len(expected)}"
    names = ("output", "h", "c")
    for k, (g, e) in enumerate(zip(got, expected)):
        assert_close(g, e, rtol=rtol, what=f"{what} [{names[k] if k < 3 else k}]")


def fd_gradient(loss: Callable[[], float], array: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central finite differences of loss() with respect to `array`, perturbed in place."""
    grad = np.zeros_like(array, dtype=np.float64)
    flat = array.reshape(-1)
    g = grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        up = loss()
        flat[i] = old - eps
        down = loss()
        flat[i] = old
        g[i] = (up - down) / (2 * eps)
    return grad


def weighted_sum(outputs: Sequence, upstream: Sequence) -> float:
    """sum_k sum(outputs_k * upstream_k), skipping None upstreams."""
    total = 0.0
    for o, g in zip(outputs, upstream):
        if g is not None:
            total += float(np.sum(np.asarray(o, np.float64) * g))
    return total


def total_losses(layer) -> float:
    return float(sum(float(np.asarray(to_numpy(l))) for l in layer.losses))


def random_upstream(outputs: Sequence, seed: int = 5, drop: Sequence[int] = ()) -> list:
    """A random upstream gradient mirroring `outputs` (None at the indices in `drop`)."""
    r = rng(seed)
    return [None if k in drop else r.standard_normal(np.shape(o))
            for k, o in enumerate(outputs)]


def upstream_arg(upstream: Sequence, return_state: bool):
    """The argument of `layer.backward`: an array, or a tuple (d_output, d_h, d_c)."""
    return tuple(upstream) if return_state else upstream[0]


def run_in_thread(fn: Callable[[], Any]) -> Any:
    """fn() run in a new thread: its result, or its exception re-raised here."""
    out, errors = [], []

    def run():
        try:
            out.append(fn())
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            errors.append(e)

    t = threading.Thread(target=run)
    t.start()
    t.join()
    if errors:
        raise errors[0]
    return out[0]
