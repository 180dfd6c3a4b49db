"""`Bidirectional`: Keras 3's wrapper that runs an `LSTM` over the sequence in both directions.

The wrapper owns two `LSTM` layers, ``forward_layer`` and ``backward_layer`` (the latter with
``go_backwards``), calls both on the same inputs and merges their outputs. Each direction is a
whole `LSTM` call, so it runs on whichever path the dispatcher picks for it (NumPy on the CPU;
cuDNN or the CUDA kernels on the GPU) and reports it in ``last_path``.

Both directions are two separate layer calls, not one ``CUDNN_BIDIRECTIONAL`` cuDNN call: a
custom ``backward_layer`` may differ from the forward one (activations, units, dropout,
``use_cudnn``), masks are left- or right-padded per direction, and a direction cuDNN refuses
falls back on its own; one fused call would need both directions eligible at once and a
second weight packing, for at most one saved launch sequence per call.
"""
from __future__ import annotations

import copy
import itertools
from typing import Any, Optional, Sequence

from . import _validation as _v
from ._xp import array_module
from .compat import v1 as _compat_v1
from .layer import LSTM

MERGE_MODES = ("concat", "sum", "mul", "ave", None)
# (module, class_name) of the layer dicts in configs -> class. Keras writes "keras.layers".
_LAYER_CLASSES = {("keras.layers", "LSTM"): LSTM,
                  ("lstm_gpu.compat.v1", "LSTM"): _compat_v1.LSTM}
_name_counter = itertools.count()


class Bidirectional:
    """Bidirectional wrapper for `LSTM` layers, with Keras 3's semantics.

    ``Bidirectional(layer, merge_mode="concat", weights=None, backward_layer=None,
    name=None, trainable=True, dtype=None)``

    layer: an `LSTM`. The forward layer is a fresh copy of it from its config, named
        ``forward_<name>``; the layer itself is not used (its weights are not reused).
    backward_layer: an `LSTM` with the same ``return_sequences``, ``return_state``,
        ``stateful`` and ``time_major`` as `layer` and the opposite ``go_backwards``, used as
        is; by default a copy of `layer` with ``go_backwards`` flipped, named
        ``backward_<name>``. (Keras 3 sets it to True instead of flipping it, and so rejects
        an inner layer with ``go_backwards=True``; tf.keras 2 flipped it, as we do.)
    merge_mode: "concat" (forward units first), "sum", "mul", "ave", or None (no merge: both
        outputs are returned).
    weights: the initial weights, forward layer's then backward layer's (as `get_weights`),
        set when the layer is built. (Keras 3 accepts and ignores them; tf.keras 2 set them.)
    dtype: the dtype the merged output is cast to (Keras's wrapper dtype policy; None means
        float32, as in Keras, whatever the inner layers' dtype). States are not cast.

    With ``return_sequences`` both layers get ``zero_output_for_mask=True`` (else False), as
    Keras forces, and the backward output is reversed in time before merging.

    Call: ``bi(inputs, mask=None, training=None, initial_state=None)``; inputs and mask as for
    `LSTM`; ``initial_state`` is ``[h_fw, c_fw, h_bw, c_bw]``, each (batch, units of its
    direction). Returns the merged output ((batch, 2*units) for "concat", (batch, units)
    otherwise, with a time axis under ``return_sequences``), or the tuple ``(y_fw, y_bw)``
    with merge_mode None; with ``return_state`` the tuple ``(output, h_fw, c_fw, h_bw,
    c_bw)`` (merge_mode None: ``(y_fw, y_bw, h_fw, c_fw, h_bw, c_bw)``).
    """

    def __init__(self, layer: LSTM, merge_mode: Optional[str] = "concat",
                 weights: Optional[Sequence[Any]] = None,
                 backward_layer: Optional[LSTM] = None, name: Optional[str] = None,
                 trainable: bool = True, dtype: Any = None, **kwargs: Any):
        if kwargs:
            raise ValueError(f"Unrecognized keyword arguments passed to Bidirectional: {kwargs}")
        _check_lstm(layer, "layer")
        if backward_layer is not None:
            _check_lstm(backward_layer, "backward_layer")
        if not (merge_mode is None
                or (isinstance(merge_mode, str) and merge_mode in MERGE_MODES)):
            raise ValueError(f"Invalid merge mode. Received: merge_mode={merge_mode!r}. Merge "
                             "mode should be one of {'sum', 'mul', 'ave', 'concat', None}")
        if weights is not None and not isinstance(weights, (list, tuple)):
            raise ValueError("Argument `weights` must be a list of arrays (forward layer's, then "
                             f"backward layer's). Received: {type(weights).__name__}")
        self.merge_mode = merge_mode
        self.dtype = _v.resolve_dtype(dtype)
        self.name = name or _unique_name()

        forward = _copy_layer(layer, f"forward_{_removeprefix(layer.name, 'forward_')}")
        if backward_layer is None:
            name = f"backward_{_removeprefix(layer.name, 'backward_')}"
            backward_layer = _copy_layer(layer, name, go_backwards=not layer.go_backwards)
        _check_compatible(forward, backward_layer, merge_mode)
        self.forward_layer, self.backward_layer = forward, backward_layer
        for sub in self._layers:
            sub.use_cudnn = layer.use_cudnn  # Keras: kept on both, as it is not serialized
            sub.zero_output_for_mask = sub.return_sequences
        self.stateful = layer.stateful
        self.return_sequences = layer.return_sequences
        self.return_state = layer.return_state
        self.time_major = layer.time_major
        self._trainable = bool(trainable)  # Keras: the argument does not reach the sub-layers
        self._initial_weights = list(weights) if weights else None
        self._tape: Optional[dict] = None
        if self.built:
            self._set_initial_weights()

    @property
    def _layers(self) -> tuple:
        return (self.forward_layer, self.backward_layer)

    # ----------------------------------------------------------------- weights
    @property
    def built(self) -> bool:
        return self.forward_layer.built and self.backward_layer.built

    def build(self, input_shape: Sequence[Optional[int]]) -> None:
        """Build whichever direction is not built yet, then set the ``weights`` given."""
        for sub in self._layers:
            if not sub.built:
                sub.build(input_shape)
        self._set_initial_weights()

    def _set_initial_weights(self) -> None:
        if self._initial_weights is not None:
            weights, self._initial_weights = self._initial_weights, None
            self.set_weights(weights)

    @property
    def trainable(self) -> bool:
        return self._trainable

    @trainable.setter
    def trainable(self, value: bool) -> None:
        """Keras: setting it (unlike the constructor's argument) sets both directions."""
        self._trainable = bool(value)
        for sub in self._layers:
            sub.trainable = self._trainable

    @property
    def weights(self) -> list:
        """The forward layer's weights, then the backward layer's (Keras's order)."""
        return self.forward_layer.weights + self.backward_layer.weights

    @property
    def trainable_weights(self) -> list:
        if not self.trainable:
            return []
        return self.forward_layer.trainable_weights + self.backward_layer.trainable_weights

    def get_weights(self) -> list:
        """NumPy copies: forward [kernel, recurrent_kernel(, bias)], then backward's."""
        return self.forward_layer.get_weights() + self.backward_layer.get_weights()

    def set_weights(self, weights: Sequence[Any]) -> None:
        """Set the forward layer's weights, then the backward layer's, in one list (Keras's
        `get_weights` order); checked whole before either layer changes."""
        for sub in self._layers:
            sub._require_built("set_weights()")
        n_forward = len(self.forward_layer.weights)
        expected = [tuple(w.shape) for w in self.weights]
        arrays = _v.check_weight_list(weights, expected)
        self.forward_layer.set_weights(arrays[:n_forward])
        self.backward_layer.set_weights(arrays[n_forward:])

    @property
    def losses(self) -> list:
        """The forward layer's losses, then the backward layer's."""
        return self.forward_layer.losses + self.backward_layer.losses

    # ----------------------------------------------------------------- states
    @property
    def states(self) -> Optional[tuple]:
        """``(h_fw, c_fw, h_bw, c_bw)`` of a stateful layer, or None before it has states."""
        if self.forward_layer.states and self.backward_layer.states:
            return tuple(self.forward_layer.states) + tuple(self.backward_layer.states)
        return None

    def reset_states(self, states: Optional[Sequence[Any]] = None) -> None:
        """States to zeros, or to the given ``[h_fw, c_fw, h_bw, c_bw]``; stateful only."""
        if not self.stateful:
            raise AttributeError("Layer must be stateful.")
        if states is None:
            for sub in self._layers:
                sub.reset_states()
            return
        forward_states, backward_states = _split_states(states, "states")
        saved = self.forward_layer.states
        self.forward_layer.reset_states(forward_states)
        try:
            self.backward_layer.reset_states(backward_states)
        except BaseException:
            self.forward_layer.states = saved
            raise

    def reset_state(self) -> None:
        """Keras 3: both directions' states to zeros (stateful only)."""
        self.reset_states()

    # ----------------------------------------------------------------- call
    def __call__(self, inputs: Any, mask: Any = None, training: Optional[bool] = None,
                 initial_state: Optional[Sequence[Any]] = None):
        forward_state = backward_state = None
        if initial_state is not None:
            forward_state, backward_state = _split_states(initial_state, "initial_state")
        x = _v.check_inputs(inputs, None, self.time_major)
        if not self.built:
            self.build(x.shape)
        forward, backward = self._layers
        snapshot = (self._tape, forward._snapshot())
        self._tape = None
        try:
            y = forward(x, mask=mask, training=training, initial_state=forward_state)
            y_rev = backward(x, mask=mask, training=training, initial_state=backward_state)
        except BaseException:  # leave both directions as they were: the call did not happen
            self._tape = snapshot[0]
            forward._restore(snapshot[1])
            raise

        states: tuple = ()
        if self.return_state:
            (y, *forward_states), (y_rev, *backward_states) = y, y_rev
            states = tuple(forward_states) + tuple(backward_states)
        y = y.astype(self.dtype, copy=False)
        y_rev = y_rev.astype(self.dtype, copy=False)
        if self.return_sequences:
            y_rev = _reverse_time(y_rev, self.time_major)
        output = _merge(self.merge_mode, y, y_rev)
        outputs = (output if self.merge_mode is None else (output,)) + states
        if training:
            self._tape = {"x": x, "shapes": [tuple(o.shape) for o in outputs],
                          "y": y, "y_rev": y_rev}
        return outputs if self.return_state or self.merge_mode is None else output

    @property
    def last_path(self) -> tuple:
        """``(forward, backward)``: the path each direction's last call ran (see `LSTM`)."""
        return (self.forward_layer.last_path, self.backward_layer.last_path)

    def cudnn_ineligibility(self, mask: Any = None, training: Optional[bool] = None) -> list:
        """The dispatcher rules that keep either direction off cuDNN, each prefixed with the
        direction ("forward: ..."); empty when both would use cuDNN."""
        return [f"{d}: {rule}" for d, sub in zip(("forward", "backward"), self._layers)
                for rule in sub.cudnn_ineligibility(mask=mask, training=training)]

    # ----------------------------------------------------------------- training
    def backward(self, d_out: Any) -> dict:
        """Gradients of the last ``training=True`` call.

        d_out mirrors that call's output (one array, or a tuple with merge_mode None or
        ``return_state``); any entry may be None (zero). Returns::

            {"inputs": dx,                                  # like the inputs
             "initial_state": [dh_fw, dc_fw, dh_bw, dc_bw],
             "forward": <forward_layer.backward() dict>,     # "kernel", "recurrent_kernel",
             "backward": <backward_layer.backward() dict>}   # "bias", ... of each direction

        ``dx`` is the sum of both directions' input gradients. The optimizers apply the
        whole dict in one step: ``opt.apply(bi, grads)``.
        """
        tape = self._tape
        if tape is None:
            raise RuntimeError(
                "Bidirectional.backward() needs a preceding call with training=True; the last "
                "call was not a training call (or there was none).")
        items = _v.check_output_gradients(d_out, tape["shapes"], tape["x"])
        n_main = 2 if self.merge_mode is None else 1
        if self.merge_mode is None:
            d_y, d_y_rev = items[:2]
        else:
            d_y, d_y_rev = _merge_gradient(self.merge_mode, items[0], tape["y"], tape["y_rev"],
                                           self.forward_layer.units)
        if self.return_sequences and d_y_rev is not None:
            d_y_rev = _reverse_time(d_y_rev, self.time_major)
        d_states = items[n_main:]
        grads = {}
        for direction, sub, d_main, d_sub_states in (
                ("forward", self.forward_layer, d_y, d_states[:2]),
                ("backward", self.backward_layer, d_y_rev, d_states[2:])):
            grads[direction] = sub.backward((d_main, *d_sub_states) if self.return_state
                                            else d_main)
        forward, backward = grads["forward"], grads["backward"]
        return {"inputs": forward["inputs"] + backward["inputs"],
                "initial_state": forward["initial_state"] + backward["initial_state"],
                "forward": forward, "backward": backward}

    # ----------------------------------------------------------------- config
    def get_config(self) -> dict:
        """Keras 3's keys: name, trainable, dtype, merge_mode, layer, backward_layer."""
        return {
            "name": self.name, "trainable": self.trainable,
            "dtype": {"module": "keras", "class_name": "DTypePolicy",
                      "config": {"name": self.dtype.name}, "registered_name": None},
            "merge_mode": self.merge_mode,
            "layer": _serialize(self.forward_layer),
            "backward_layer": _serialize(self.backward_layer),
        }

    @classmethod
    def from_config(cls, config: dict) -> "Bidirectional":
        """From our config or a Keras 3 Bidirectional's (its LSTM layer dicts)."""
        config = copy.deepcopy(config)
        config["layer"] = _deserialize(config.get("layer"), "layer")
        backward = config.pop("backward_layer", None)
        if backward is not None:
            config["backward_layer"] = _deserialize(backward, "backward_layer")
        return cls(**config)

    def __repr__(self) -> str:
        return (f"<Bidirectional name={self.name!r} merge_mode={self.merge_mode!r} "
                f"layers=({self.forward_layer!r}, {self.backward_layer!r})>")


# --------------------------------------------------------------------- construction helpers
def _unique_name() -> str:
    n = next(_name_counter)
    return "bidirectional" if n == 0 else f"bidirectional_{n}"


def _removeprefix(text: str, prefix: str) -> str:
    return text[len(prefix):] if text.startswith(prefix) else text


def _check_lstm(layer: Any, argument: str) -> None:
    if isinstance(layer, LSTM):
        return
    hint = ""
    if type(layer).__module__.startswith("keras"):
        hint = (" For a Keras layer, make ours from its config: "
                "lstm_gpu.LSTM.from_config(layer.get_config()).")
    raise ValueError(f"Argument `{argument}` of Bidirectional must be an lstm_gpu.LSTM "
                     f"instance. Received: {argument}={layer!r}.{hint}")


def _copy_layer(layer: LSTM, name: str, **changes: Any) -> LSTM:
    """A fresh layer from `layer`'s config (new weights, no states), built when it is."""
    config = dict(layer.get_config(), name=name, **changes)
    fresh = type(layer).from_config(config)
    if layer.built:
        fresh.build((None, None, layer.input_features))
    return fresh


def _check_compatible(forward: LSTM, backward: LSTM, merge_mode: Optional[str]) -> None:
    if forward.go_backwards == backward.go_backwards:
        raise ValueError(
            "Forward layer and backward layer should have different `go_backwards` value. "
            f"Received: forward_layer.go_backwards={forward.go_backwards}, "
            f"backward_layer.go_backwards={backward.go_backwards}")
    for attribute in ("stateful", "return_sequences", "return_state", "time_major"):
        forward_value, backward_value = getattr(forward, attribute), getattr(backward, attribute)
        if forward_value != backward_value:
            raise ValueError(
                "Forward layer and backward layer are expected to have the same value for "
                f'attribute "{attribute}", got "{forward_value}" for forward layer and '
                f'"{backward_value}" for backward layer')
    if merge_mode in ("sum", "mul", "ave") and forward.units != backward.units:
        raise ValueError(
            f"merge_mode={merge_mode!r} needs both directions to have the same units. "
            f"Received: forward layer units={forward.units}, backward layer "
            f"units={backward.units}")


def _split_states(states: Any, argument: str) -> tuple:
    """``[h_fw, c_fw, h_bw, c_bw]`` -> ``([h_fw, c_fw], [h_bw, c_bw])``."""
    if not isinstance(states, (list, tuple)) or len(states) != 4:
        got = (f"a {type(states).__name__} of length {len(states)}"
               if isinstance(states, (list, tuple)) else type(states).__name__)
        raise ValueError(f"Argument `{argument}` of Bidirectional must be a list of four "
                         f"arrays [h_fw, c_fw, h_bw, c_bw]. Received: {got}")
    return list(states[:2]), list(states[2:])


def _serialize(layer: LSTM) -> dict:
    """Keras's layer dict; `build_config` records the feature size of a built layer."""
    module = "lstm_gpu.compat.v1" if isinstance(layer, _compat_v1.LSTM) else "keras.layers"
    doc = {"module": module, "class_name": "LSTM", "config": layer.get_config(),
           "registered_name": None}
    if layer.built:
        doc["build_config"] = {"input_shape": [None, None, layer.input_features]}
    return doc


def _deserialize(doc: Any, argument: str) -> LSTM:
    if isinstance(doc, LSTM):
        return doc
    if not isinstance(doc, dict) or "config" not in doc:
        raise ValueError(f"Argument `{argument}` of Bidirectional.from_config must be a "
                         f"serialized layer dict. Received: {doc!r}")
    module, class_name = doc.get("module"), doc.get("class_name")
    cls = _LAYER_CLASSES.get((module, class_name))
    if cls is None:
        raise ValueError(f"Bidirectional wraps LSTM layers only. Received: {argument} with "
                         f"module={module!r}, class_name={class_name!r}")
    layer = cls.from_config(doc["config"])
    shape = (doc.get("build_config") or {}).get("input_shape")
    if shape is not None:
        layer.build(shape)
    return layer


# --------------------------------------------------------------------- call helpers
def _reverse_time(a, time_major: bool):
    """A view of (B, T, U) (or (T, B, U) when time-major) reversed along time."""
    return a[::-1] if time_major else a[:, ::-1]


def _merge(merge_mode: Optional[str], y, y_rev):
    if merge_mode == "concat":
        # y_rev may be a reversed view. CuPy copies two arrays one by one with
        # `elementwise_copy`, which reads through any strides (cupy/_core/
        # _routines_manipulation.pyx, `_concatenate`); NumPy does the same.
        return array_module(y).concatenate([y, y_rev], axis=-1)
    if merge_mode == "sum":
        return y + y_rev
    if merge_mode == "ave":
        return (y + y_rev) / y.dtype.type(2)
    if merge_mode == "mul":
        return y * y_rev
    return (y, y_rev)


def _merge_gradient(merge_mode: str, d, y, y_rev, forward_units: int) -> tuple:
    """(d y, d y_rev) from the gradient of the merged output; None stays None."""
    if d is None:
        return None, None
    d = d.astype(y.dtype, copy=False)
    if merge_mode == "concat":
        return d[..., :forward_units], d[..., forward_units:]
    if merge_mode == "sum":
        return d, d
    if merge_mode == "ave":
        half = d / y.dtype.type(2)
        return half, half
    return d * y_rev, d * y  # "mul"


__all__ = ["Bidirectional", "MERGE_MODES"]
