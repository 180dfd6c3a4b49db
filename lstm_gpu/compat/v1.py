"""tf.compat.v1's LSTM layer (tf_keras `lstm_v1`): Keras 2 defaults on the same class.

Differences from `lstm_gpu.LSTM`: `recurrent_activation` defaults to "hard_sigmoid", and
"hard_sigmoid" means Keras 2's ``clip(0.2 * x + 0.5, 0, 1)`` (Keras 3 uses x / 6);
`implementation` defaults to 1. Weights, calls and paths are the same.
"""
from __future__ import annotations

from typing import Any

from ..layer import LSTM as _LSTM


class LSTM(_LSTM):
    """`tf.compat.v1.keras.layers.LSTM` semantics; see `lstm_gpu.LSTM` for the arguments."""

    _legacy_activations = True
    _default_implementation = 1

    def __init__(self, units: int, activation: Any = "tanh",
                 recurrent_activation: Any = "hard_sigmoid", **kwargs: Any):
        super().__init__(units, activation=activation,
                         recurrent_activation=recurrent_activation, **kwargs)


__all__ = ["LSTM"]
