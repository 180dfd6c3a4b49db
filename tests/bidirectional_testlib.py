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
    sub_weights = [T_.keras_cell_weights(sub)
                   for sub in (layer.forward_layer, layer.backward_layer)]
    outs, result = T_.keras_autograd(layer, x, upstream, sub_weights[0] + sub_weights[1],
                                     mask, initial_state)
    grads = result.pop("weights")
    n_forward = len(sub_weights[0])
    result["forward"] = dict(zip(WEIGHT_KEYS, grads[:n_forward]))
    result["backward"] = dict(zip(WEIGHT_KEYS, grads[n_forward:]))
    return outs, result


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
