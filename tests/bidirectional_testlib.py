"""Helpers of the Bidirectional tests: the same wrapper in Keras 3 (torch backend) and ours,
with the same weights, and Keras's gradients by torch autograd."""
from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

try:
    from tests import lstm_testlib as T_
except ImportError:  # tests/ itself on sys.path (pytest's rootdir insertion)
    import lstm_testlib as T_

WEIGHT_KEYS = ("kernel", "recurrent_kernel", "bias")


def both_weights(features: int, units: int, backward_units: Optional[int] = None,
                 use_bias: bool = True) -> list:
    """Forward layer's [kernel, recurrent_kernel, bias], then the backward layer's (different)."""
    return (T_.random_weights(features, units, use_bias=use_bias, seed=10)
            + T_.random_weights(features, backward_units or units, use_bias=use_bias, seed=11))


def make_pair(units: int, input_shape: Sequence[int], weights: list, *,
              merge_mode: Optional[str] = "concat", backward: Optional[dict] = None,
              dtype: str = "float64", **config: Any):
    """(keras Bidirectional, our Bidirectional), built, with `weights`; `backward` (a config)
    makes an explicit backward layer in both."""
    keras = T_.keras_or_skip()
    from lstm_gpu import Bidirectional

    keras_kw: dict = {}
    ours_kw: dict = {}
    if backward is not None:
        b = dict(config, **backward)
        b_units = b.pop("units", units)
        keras_kw["backward_layer"] = T_.make_keras(b_units, dtype, **b)
        ours_kw["backward_layer"] = T_.make_ours(b_units, dtype, **b)
    kb = keras.layers.Bidirectional(T_.make_keras(units, dtype, **config),
                                    merge_mode=merge_mode, dtype=dtype, **keras_kw)
    ob = Bidirectional(T_.make_ours(units, dtype, **config), merge_mode=merge_mode,
                       dtype=dtype, **ours_kw)
    for layer in (kb, ob):
        layer.build(tuple(input_shape))
        layer.set_weights([np.array(w, copy=True) for w in weights])
    return kb, ob


def keras_grads(layer, x, upstream: Sequence, mask=None, initial_state=None):
    """Gradients of sum_k sum(out_k * upstream_k) (+ the layer's losses) through Keras's
    Bidirectional by torch autograd. Returns (outputs tuple, dict shaped like our
    `Bidirectional.backward`)."""
    import torch

    xt = torch.tensor(np.asarray(x), requires_grad=True)
    leaves = [xt]
    kw: dict = {}
    if mask is not None:
        kw["mask"] = torch.as_tensor(np.asarray(mask, dtype=bool))
    if initial_state is not None:
        states = [torch.tensor(np.asarray(s), requires_grad=True) for s in initial_state]
        kw["initial_state"] = states
        leaves += states
    sub_weights = []
    for sub in (layer.forward_layer, layer.backward_layer):
        cell = sub.cell
        sub_weights.append([cell.kernel.value, cell.recurrent_kernel.value]
                           + ([cell.bias.value] if cell.use_bias else []))
    out = T_.as_tuple(layer(xt, **kw))
    loss = 0
    for o, g in zip(out, upstream):
        if g is not None:
            loss = loss + (o * torch.as_tensor(np.asarray(g), dtype=o.dtype)).sum()
    for penalty in layer.losses:
        loss = loss + penalty
    flat = leaves + sub_weights[0] + sub_weights[1]
    grads = torch.autograd.grad(loss, flat, allow_unused=True)
    grads = [None if g is None else g.detach().cpu().numpy() for g in grads]
    result = {"inputs": grads[0]}
    k = 1
    if initial_state is not None:
        result["initial_state"] = grads[1:5]
        k = 5
    for direction, weights in zip(("forward", "backward"), sub_weights):
        names = WEIGHT_KEYS[:len(weights)]
        result[direction] = dict(zip(names, grads[k:k + len(weights)]))
        k += len(weights)
    return tuple(o.detach().cpu().numpy() for o in out), result


def assert_grads_close(got: dict, expected: dict, rtol: float, with_state: bool) -> None:
    def zero_if_none(e, like):
        return np.zeros_like(T_.to_numpy(like)) if e is None else e

    T_.assert_close(got["inputs"], zero_if_none(expected["inputs"], got["inputs"]), rtol=rtol,
                    what="d/d inputs")
    if with_state:
        for k, g in enumerate(got["initial_state"]):
            T_.assert_close(g, zero_if_none(expected["initial_state"][k], g), rtol=rtol,
                            what=f"d/d initial_state[{k}]")
    for direction in ("forward", "backward"):
        for key, e in expected[direction].items():
            g = got[direction][key]
            T_.assert_close(g, zero_if_none(e, g), rtol=rtol, what=f"d/d {direction} {key}")


def upstream_arg(upstream: Sequence):
    """Our `backward` argument: one array for a single output, else the tuple."""
    return upstream[0] if len(upstream) == 1 else tuple(upstream)
