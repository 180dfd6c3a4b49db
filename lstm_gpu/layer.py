"""`LSTM`: the Keras 3 LSTM layer for NumPy and CuPy arrays.

The layer owns everything common to the compute paths (see `paths/base.py`): validation,
weights and their placement, the time-major processing-order layout, dropout masks,
stateful states, regularization and the training tape. NumPy input runs the reference path
on the CPU; CuPy input runs on the GPU through the dispatcher (cuDNN or CUDA kernels).
"""
from __future__ import annotations

import copy
import itertools
import pickle
import threading
from typing import Any, Optional, Sequence

import numpy as np

from . import activations as _activations
from . import constraints as _constraints
from . import initializers as _initializers
from . import regularizers as _regularizers
from . import _validation as _v
from ._xp import (array_module, device_of, from_portable, is_cupy_array, move_like,
                  same_place, to_numpy, to_portable)
from .dropout import MaskGenerator, draw_masks
from .paths import empty_batch
from .paths.base import CellSpec, Weights

_WEIGHT_NAMES = ("kernel", "recurrent_kernel", "bias")
_name_counter = itertools.count()
_call_serials = itertools.count(1)  # one number per successful call, of any layer
# The constructor arguments that may hold a user's Python callable.
_CALLABLE_ARGUMENTS = ("activation", "recurrent_activation", "kernel_initializer",
                       "recurrent_initializer", "bias_initializer", "kernel_regularizer",
                       "recurrent_regularizer", "bias_regularizer", "activity_regularizer",
                       "kernel_constraint", "recurrent_constraint", "bias_constraint")
# Attributes that are never copied or pickled (`_init_transient` makes them afresh).
_TRANSIENT = ("_lock", "_thread_calls")


class LayerIdentity:
    """Names a layer's weights in optimizer slots; copied and pickled with the layer, so a
    layer and its optimizer copied together stay attached."""

def _unique_name(base: str = "lstm") -> str:
    n = next(_name_counter)
    return base if n == 0 else f"{base}_{n}"


class LSTM:
    """Long Short-Term Memory layer (Hochreiter 1997), with Keras 3's arguments and numbers.

    Call: ``layer(inputs, mask=None, training=None, initial_state=None)``.
    inputs: (batch, timesteps, features), or (timesteps, batch, features) with
        ``time_major=True``; a NumPy array (CPU) or a CuPy array (its GPU).
    mask: (batch, timesteps) (or (timesteps, batch) when time-major), True = use the step.
    initial_state: ``[h0, c0]``, each (batch, units).
    Returns the last output (batch, units), or the sequence (batch, timesteps, units) with
    ``return_sequences`` (in processing order under ``go_backwards``); with ``return_state``
    the tuple ``(output, h, c)``.

    Beyond Keras 3: ``implementation`` (1 or 2) and ``time_major`` from tf.keras 2,
    ``zero_output_for_mask`` as an explicit argument, and ``dtype`` float16 (stored in
    float16, computed in float32). ``layer.last_path`` names the path the last call ran:
    "cpu-native" (the compiled CPU core, NumPy input's default), "numpy" (the NumPy
    reference: Python-callable activations, LSTM_GPU_CPU_PATH=numpy, or no compiled core),
    "cudnn", "cuda-kernels", "cupy-reference" (the reference algorithm in CuPy, used on the
    GPU for Python-callable activations), or "empty-batch" (batch size 0: empty results,
    nothing computed).

    A call that raises leaves the layer as it was (weights, states, training record, dropout
    stream). Calls from several threads are safe for inference without ``stateful`` (the
    first call builds once); training one layer from several threads at once is not
    supported, and `backward` raises when another thread's call replaced this thread's
    training record. Copies and pickles keep everything but the training record.
    """

    _legacy_activations = False  # tf.compat.v1 layers: "hard_sigmoid" is Keras 2's
    _default_implementation = 2

    def __init__(self, units: int, activation: Any = "tanh",
                 recurrent_activation: Any = "sigmoid", use_bias: bool = True,
                 kernel_initializer: Any = "glorot_uniform",
                 recurrent_initializer: Any = "orthogonal", bias_initializer: Any = "zeros",
                 unit_forget_bias: bool = True, kernel_regularizer: Any = None,
                 recurrent_regularizer: Any = None, bias_regularizer: Any = None,
                 activity_regularizer: Any = None, kernel_constraint: Any = None,
                 recurrent_constraint: Any = None, bias_constraint: Any = None,
                 dropout: float = 0.0, recurrent_dropout: float = 0.0,
                 seed: Optional[int] = None, return_sequences: bool = False,
                 return_state: bool = False, go_backwards: bool = False,
                 stateful: bool = False, unroll: bool = False, use_cudnn: Any = "auto",
                 implementation: Optional[int] = None, time_major: bool = False,
                 zero_output_for_mask: bool = False, dtype: Any = None,
                 name: Optional[str] = None, trainable: bool = True, **kwargs: Any):
        if kwargs:
            raise ValueError(f"Unrecognized keyword arguments passed to LSTM: {kwargs}")
        if implementation is None:
            implementation = self._default_implementation
        self.units = _v.check_units(units)
        legacy = self._legacy_activations
        self.activation = _activations.get(activation, argument="activation", legacy=legacy)
        self.recurrent_activation = _activations.get(
            recurrent_activation, argument="recurrent_activation", legacy=legacy)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = _initializers.get(kernel_initializer, "kernel_initializer")
        self.recurrent_initializer = _initializers.get(recurrent_initializer,
                                                       "recurrent_initializer")
        self.bias_initializer = _initializers.get(bias_initializer, "bias_initializer")
        self.unit_forget_bias = bool(unit_forget_bias)
        self.kernel_regularizer = _regularizers.get(kernel_regularizer, "kernel_regularizer")
        self.recurrent_regularizer = _regularizers.get(recurrent_regularizer,
                                                       "recurrent_regularizer")
        self.bias_regularizer = _regularizers.get(bias_regularizer, "bias_regularizer")
        self.activity_regularizer = _regularizers.get(activity_regularizer,
                                                      "activity_regularizer")
        self.kernel_constraint = _constraints.get(kernel_constraint, "kernel_constraint")
        self.recurrent_constraint = _constraints.get(recurrent_constraint,
                                                     "recurrent_constraint")
        self.bias_constraint = _constraints.get(bias_constraint, "bias_constraint")
        self.dropout = _v.check_rate("dropout", dropout)
        self.recurrent_dropout = _v.check_rate("recurrent_dropout", recurrent_dropout)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"Argument `seed` must be an int or None. Received: seed={seed!r}")
        self.seed = seed
        self.return_sequences = bool(return_sequences)
        self.return_state = bool(return_state)
        self.go_backwards = bool(go_backwards)
        self.stateful = bool(stateful)
        self.unroll = bool(unroll)
        self.use_cudnn = _v.check_use_cudnn(use_cudnn)
        self._requested_implementation = _v.check_implementation(implementation)
        # Keras: recurrent dropout needs per-gate masks, i.e. implementation 1.
        self.implementation = 1 if self.recurrent_dropout else self._requested_implementation
        self.time_major = bool(time_major)
        self.zero_output_for_mask = bool(zero_output_for_mask)
        self.dtype = _v.resolve_dtype(dtype)
        self.compute_dtype = np.dtype("float32") if self.dtype == np.float16 else self.dtype
        self.name = name or _unique_name()
        self.trainable = bool(trainable)

        self.built = False
        self.input_features: Optional[int] = None
        self._params: dict[str, Any] = {}
        self.states: Optional[list] = None
        self._state_batch: Optional[int] = None
        self._mask_generator = MaskGenerator(seed)
        self._activity_losses: list = []
        self._tape: Optional[dict] = None
        self.last_path: Optional[str] = None
        self._last_call: Optional[int] = None  # serial of the last successful call
        self._identity = LayerIdentity()
        self._init_transient()

    def _init_transient(self) -> None:
        """What a copy or an unpickled layer gets afresh: the build lock, the per-thread
        record of calls."""
        self._lock = threading.RLock()
        self._thread_calls = threading.local()  # .last = (serial, training) of this thread

    # ----------------------------------------------------------------- weights
    def build(self, input_shape: Sequence[Optional[int]]) -> None:
        """Create the weights for inputs of `input_shape` (batch may be None)."""
        shape = _v.check_input_shape(input_shape)
        with self._lock:
            self._build(shape)

    def _build_once(self, input_shape: tuple) -> None:
        """Build on the first call; concurrent first calls build one set of weights (the
        weights stay when the call then fails, as in Keras)."""
        if not self.built:
            with self._lock:
                if not self.built:
                    self._build(input_shape)

    def _build(self, shape: tuple) -> None:
        features = shape[2]
        batch = shape[1] if self.time_major else shape[0]
        u = self.units
        dt = self.dtype
        params = {
            "kernel": self.kernel_initializer((features, 4 * u), dt),
            "recurrent_kernel": self.recurrent_initializer((u, 4 * u), dt),
            "bias": None,
        }
        if self.use_bias:
            if self.unit_forget_bias:
                params["bias"] = np.concatenate([
                    self.bias_initializer((u,), dt), np.ones((u,), dt),
                    self.bias_initializer((2 * u,), dt)])
            else:
                params["bias"] = self.bias_initializer((4 * u,), dt)
        for key, value in params.items():
            if value is not None and value.shape != self._weight_shapes(features)[key]:
                raise ValueError(f"{key} initializer returned shape {value.shape}")
        self._params = {k: (None if v is None else np.asarray(v, dtype=dt))
                        for k, v in params.items()}
        self.input_features = features
        self.states = None
        self._state_batch = None
        if self.stateful and batch is not None:
            self._reset_state_arrays(np, int(batch))
        self.built = True  # last: a concurrent first call that sees it finds everything set

    def _weight_shapes(self, features: int) -> dict:
        u = self.units
        return {"kernel": (features, 4 * u), "recurrent_kernel": (u, 4 * u), "bias": (4 * u,)}

    def _require_built(self, what: str) -> None:
        if not self.built:
            raise ValueError(f"Layer {self.name} has no weights yet: call build() or the "
                             f"layer once before {what}.")

    @property
    def kernel(self):
        """(features, 4*units), gate blocks i, f, c, o; on the layer's current device."""
        self._require_built("reading `kernel`")
        return self._params["kernel"]

    @property
    def recurrent_kernel(self):
        """(units, 4*units), gate blocks i, f, c, o."""
        self._require_built("reading `recurrent_kernel`")
        return self._params["recurrent_kernel"]

    @property
    def bias(self):
        """(4*units,) or None without bias; Keras's single bias."""
        self._require_built("reading `bias`")
        return self._params["bias"]

    @property
    def weights(self) -> list:
        return [self._params[k] for k in _WEIGHT_NAMES if self._params.get(k) is not None]

    @property
    def trainable_weights(self) -> list:
        return self.weights if self.trainable else []

    def get_weights(self) -> list:
        """NumPy copies [kernel, recurrent_kernel(, bias)] in Keras layout."""
        return [np.array(to_numpy(w)) for w in self.weights]

    def set_weights(self, weights: Sequence[Any]) -> None:
        """Set [kernel, recurrent_kernel(, bias)] (NumPy or CuPy arrays, Keras layout)."""
        self._require_built("set_weights()")
        shapes = self._weight_shapes(self.input_features)
        names = [k for k in _WEIGHT_NAMES if self._params.get(k) is not None]
        arrays = _v.check_weight_list(weights, [shapes[k] for k in names])
        for name, value in zip(names, arrays):
            self.assign_weight(name, value)

    def assign_weight(self, name: str, value: Any) -> None:
        """Replace one weight (kept on the layer's current device, in its dtype)."""
        current = self._params.get(name) if isinstance(name, str) else None
        if current is None:
            names = [k for k in _WEIGHT_NAMES if self._params.get(k) is not None]
            raise ValueError(f"Layer {self.name} has no weight {name!r}; its weights: {names}.")
        value = _v.as_array(value, "value")
        _v.check_numeric(value, "value")
        xp = array_module(current)
        if tuple(value.shape) != tuple(current.shape):
            raise ValueError(f"Weight {name!r} must have shape {tuple(current.shape)}. "
                             f"Received: shape={tuple(value.shape)}")
        if xp is np:
            self._params[name] = np.array(to_numpy(value), dtype=self.dtype)
        else:
            with current.device:
                self._params[name] = xp.array(value, dtype=self.dtype)

    def _place(self, like) -> None:
        """Move weights and states to like's library and device, if they are elsewhere."""
        arrays = list(self._params.values()) + list(self.states or [])
        if all(a is None or same_place(a, like) for a in arrays):
            return

        def move(a):
            return None if a is None else move_like(a, like)

        self._params = {k: move(v) for k, v in self._params.items()}
        if self.states is not None:
            self.states = [move(s) for s in self.states]

    # ----------------------------------------------------------------- states
    def _reset_state_arrays(self, xp, batch: int) -> None:
        self.states = [xp.zeros((batch, self.units), dtype=self.dtype) for _ in range(2)]
        self._state_batch = batch

    def reset_state(self) -> None:
        """Keras 3: set a stateful layer's states to zeros (no-op when not stateful)."""
        self.reset_states()

    def reset_states(self, states: Optional[Sequence[Any]] = None) -> None:
        """tf.keras 2: states to zeros, or to the given ``[h, c]`` (each (batch, units))."""
        if not self.stateful:
            if states is not None:
                raise AttributeError("Layer must be stateful to reset its states to values.")
            return
        if states is None:
            if self.states is not None:
                xp = array_module(self.states[0])
                self.states = [xp.zeros_like(s) for s in self.states]
            return
        batch = self._state_batch
        if not isinstance(states, (list, tuple)) or len(states) != 2:
            n = len(states) if isinstance(states, (list, tuple)) else 1
            raise ValueError(f"Layer {self.name} expects 2 states, but it received {n} "
                             f"state values. States received: {states!r}")
        like = self.states[0] if self.states is not None else None
        arrays = []
        for k, s in enumerate(states):
            a = _v.as_array(s, f"states[{k}]")
            _v.check_numeric(a, f"states[{k}]")  # strings, objects; complex is not dropped
            expected = (batch if batch is not None else a.shape[0], self.units)
            if a.ndim != 2 or tuple(a.shape) != expected:
                raise ValueError(f"State {k} is incompatible with layer {self.name}: expected "
                                 f"shape={expected} but found shape={tuple(a.shape)}")
            arrays.append(a)
        xp = array_module(like) if like is not None else np
        self.states = [np.array(to_numpy(a), dtype=self.dtype) if xp is np
                       else xp.array(a, dtype=self.dtype) for a in arrays]
        self._state_batch = expected[0]

    # ----------------------------------------------------------------- call
    def _cell_spec(self) -> CellSpec:
        return CellSpec(self.units, self.activation, self.recurrent_activation, self.use_bias,
                        self.zero_output_for_mask, self.implementation, self.unroll)

    def _path_weights(self) -> Weights:
        cd = self.compute_dtype
        cast = (lambda a: None if a is None else a.astype(cd, copy=False))
        p = self._params
        return Weights(cast(p["kernel"]), cast(p["recurrent_kernel"]), cast(p["bias"]))

    def __call__(self, inputs: Any, mask: Any = None, training: Optional[bool] = None,
                 initial_state: Optional[Sequence[Any]] = None):
        x = _v.check_inputs(inputs, self.input_features, self.time_major)
        batch = x.shape[1] if self.time_major else x.shape[0]
        user_mask = _v.check_mask(mask, x, self.time_major)
        init = _v.check_initial_state(initial_state, x, batch, self.units)
        training = _v.check_training(training)
        if self.stateful and self._state_batch is not None and batch != self._state_batch:
            raise ValueError(
                "If an RNN is stateful, the batch size of the input sequences must be the same "
                f"as the batch size of the initial state.\n- Expected batch size: "
                f"{self._state_batch}\n- Received batch size: {batch}")
        self._build_once(x.shape)
        _v.check_features(x, self.input_features)  # another thread may have built it
        snapshot = self._snapshot()
        try:
            with device_of(x):  # masks, zero states, empty results: on x's GPU
                outputs = self._run(x, user_mask, init, batch, training)
        except BaseException:
            self._restore(snapshot)
            raise
        return tuple(outputs) if self.return_state else outputs[0]

    def _snapshot(self) -> tuple:
        """Everything a call changes. A call replaces these attributes and never mutates their
        values in place, so restoring the references undoes a failed call exactly."""
        return (self._params, self.states, self._state_batch,
                self._tape, self._activity_losses, self.last_path, self._last_call,
                getattr(self._thread_calls, "last", None), self._mask_generator.position)

    def _restore(self, snapshot: tuple) -> None:
        (self._params, self.states, self._state_batch, self._tape,
         self._activity_losses, self.last_path, self._last_call, self._thread_calls.last,
         self._mask_generator.position) = snapshot

    def _run(self, x, user_mask, init, batch: int, training: bool) -> list:
        """One call on validated arguments; returns [output(, h, c)]."""
        self._place(x)
        xp = array_module(x)
        if self.stateful and self.states is None:
            self._reset_state_arrays(xp, batch)

        cd = self.compute_dtype
        # A training record owns its inputs: the caller may edit x or the mask before backward.
        x_tm = _to_processing_order(x, self.time_major, self.go_backwards, cd, own=training)
        mask_tm = None
        if user_mask is not None:
            mask_tm = _to_processing_order(user_mask, self.time_major, self.go_backwards, None,
                                           own=training)
        if init is not None:
            h0, c0 = (s.astype(cd) for s in init)
        elif self.stateful:
            h0, c0 = (s.astype(cd) for s in self.states)
        else:
            h0 = xp.zeros((batch, self.units), dtype=cd)
            c0 = xp.zeros_like(h0)
        dropout = None
        if training:
            dropout = draw_masks(self._mask_generator, x, batch=batch, features=x.shape[2],
                                 units=self.units, dropout=self.dropout,
                                 recurrent_dropout=self.recurrent_dropout,
                                 implementation=self.implementation, dtype=cd)

        if batch == 0:
            path, path_name = empty_batch, empty_batch.NAME
        else:
            path, path_name = self._select_path(x, user_mask, training)
        result = path.forward(self._path_weights(), x_tm, mask_tm, h0, c0, self._cell_spec(),
                              dropout, training)

        if self.stateful:
            self.states = [result.h.astype(self.dtype), result.c.astype(self.dtype)]
        output = result.last
        if self.return_sequences:
            output = result.sequence if self.time_major else result.sequence.transpose(1, 0, 2)
        # Training: the caller gets an array of its own (a path may keep its results for
        # backward, cuDNN its y); h and c are always copies (they may be the last output).
        outputs = [output.astype(self.dtype, copy=training)]
        if self.return_state:
            outputs += [result.h.astype(self.dtype), result.c.astype(self.dtype)]
        self._activity_losses = self._activity_penalties(outputs)
        self._tape = None
        if training:
            kept = None
            if self.activity_regularizer is not None:
                kept = [o.copy() for o in outputs]
            # "x": the inputs as the record owns them (processing order, compute dtype)
            self._tape = {"path": path, "saved": result.saved, "x": x_tm,
                          "input_dtype": x.dtype, "shapes": [tuple(o.shape) for o in outputs],
                          "outputs": kept}
        self.last_path = _ran_path_name(path, path_name)
        self._last_call = next(_call_serials)
        self._thread_calls.last = (self._last_call, training)
        return outputs

    def _select_path(self, x, user_mask, training: bool):
        """(path module, name) for this call."""
        if not is_cupy_array(x):
            from .paths import cpu_native

            return cpu_native.select(self.activation.is_builtin
                                     and self.recurrent_activation.is_builtin)
        from . import gpu_routing

        return gpu_routing.select(self, x, user_mask, training)

    def cudnn_ineligibility(self, mask: Any = None, training: Optional[bool] = None) -> list:
        """The dispatcher rules that keep a GPU call with this mask off cuDNN ([] = cuDNN)."""
        from . import gpu_routing

        if mask is not None:
            mask = _v.mask_array(mask)
        return gpu_routing.ineligibility(self, mask, _v.check_training(training))

    # ----------------------------------------------------------------- training
    def backward(self, d_out: Any) -> dict:
        """Gradients of the last ``training=True`` call.

        d_out mirrors that call's output: one array, or ``(d_output, d_h, d_c)`` with
        ``return_state``; any entry may be None (zero). Returns ``{"inputs",
        "initial_state": [dh0, dc0], "kernel", "recurrent_kernel", "bias"}`` (bias None
        without bias) as arrays of the inputs' library, in Keras layout. The weight
        gradients include the kernel/recurrent/bias regularizer gradients, and the output
        gradients include the activity regularizer's (both as in ``layer.losses``).
        Python-callable activations are differentiated by central finite differences
        unless the callable has a ``derivative(x, y)`` attribute.
        """
        tape = self._tape
        mine = getattr(self._thread_calls, "last", None)  # this thread's last call
        if mine is not None and mine[1] and mine[0] != self._last_call:
            raise RuntimeError(
                f"LSTM.backward(): this thread's last training call of layer {self.name} was "
                "replaced by a call from another thread. Training one layer from several "
                "threads at once is not supported; give each thread its own layer.")
        if tape is None or (mine is not None and not mine[1]):
            raise RuntimeError(
                "LSTM.backward() needs a preceding call with training=True; the last call "
                "was not a training call (or there was none; a copied or unpickled layer "
                "has no training record).")
        with device_of(tape["x"]):
            return self._backward(tape, d_out)

    def _backward(self, tape: dict, d_out: Any) -> dict:
        grads_out = self._check_d_out(d_out, tape)
        grads_out = self._add_activity_gradients(grads_out, tape["outputs"])
        xp = array_module(tape["x"])
        cd = self.compute_dtype
        d_main = grads_out[0]
        d_last = d_seq = None
        if d_main is not None:
            d_main = d_main.astype(cd, copy=False)
            if self.return_sequences:
                d_seq = d_main if self.time_major else xp.ascontiguousarray(
                    d_main.transpose(1, 0, 2))
            else:
                d_last = d_main
        d_h, d_c = (None if g is None else g.astype(cd, copy=False)
                    for g in (grads_out + [None, None])[1:3])
        g = tape["path"].backward(tape["saved"], d_last, d_seq, d_h, d_c)

        dx = _from_processing_order(g.inputs, self.time_major, self.go_backwards)
        in_dtype = tape["input_dtype"]
        out_dtype = in_dtype if in_dtype.kind == "f" else self.dtype
        weights = {"kernel": g.kernel, "recurrent_kernel": g.recurrent_kernel, "bias": g.bias}
        regs = {"kernel": self.kernel_regularizer, "recurrent_kernel": self.recurrent_regularizer,
                "bias": self.bias_regularizer}
        result = {"inputs": dx.astype(out_dtype, copy=False),
                  "initial_state": [g.h0.astype(self.dtype), g.c0.astype(self.dtype)]}
        for name, grad in weights.items():
            if grad is not None and regs[name] is not None:
                grad = grad + _regularizers.gradient(regs[name], self._params[name]).astype(cd)
            result[name] = None if grad is None else grad.astype(self.dtype, copy=False)
        return result

    def _check_d_out(self, d_out: Any, tape: dict) -> list:
        return _v.check_output_gradients(d_out, tape["shapes"], tape["x"],
                                         names="(d_output, d_h, d_c)")

    # ----------------------------------------------------------------- regularization
    def _activity_penalties(self, outputs: list) -> list:
        """Keras: the activity regularizer of every output, divided by its shape[0]."""
        reg = self.activity_regularizer
        if reg is None:
            return []
        return [reg(o.astype(self.compute_dtype)) / _per_sample(o) for o in outputs]

    def _add_activity_gradients(self, grads: list, outputs: list) -> list:
        reg = self.activity_regularizer
        if reg is None:
            return grads
        total = []
        for g, o in zip(grads, outputs):
            o = o.astype(self.compute_dtype)
            extra = _regularizers.gradient(reg, o) / _per_sample(o)
            total.append(extra if g is None else g.astype(self.compute_dtype) + extra)
        return total

    @property
    def losses(self) -> list:
        """Activity penalties of the last call, then the weight regularizer penalties."""
        losses = list(self._activity_losses)
        if self.built:
            regs = (self.kernel_regularizer, self.recurrent_regularizer, self.bias_regularizer)
            for name, reg in zip(_WEIGHT_NAMES, regs):
                w = self._params.get(name)
                if reg is not None and w is not None:
                    losses.append(reg(w))
        return losses

    def constraints(self) -> dict:
        """{weight name: constraint or None}, applied by the optimizers after each update."""
        return {"kernel": self.kernel_constraint, "recurrent_kernel": self.recurrent_constraint,
                "bias": self.bias_constraint}

    # ----------------------------------------------------------------- config
    def get_config(self) -> dict:
        """Keras 3's keys (plus `implementation`, `time_major`, `use_cudnn` when not default)."""
        config = {
            "name": self.name, "trainable": self.trainable,
            "dtype": {"module": "keras", "class_name": "DTypePolicy",
                      "config": {"name": self.dtype.name}, "registered_name": None},
            "return_sequences": self.return_sequences, "return_state": self.return_state,
            "go_backwards": self.go_backwards, "stateful": self.stateful,
            "unroll": self.unroll, "zero_output_for_mask": self.zero_output_for_mask,
            "units": self.units,
            "activation": _activations.serialize(self.activation),
            "recurrent_activation": _activations.serialize(self.recurrent_activation),
            "use_bias": self.use_bias,
            "kernel_initializer": _initializers.serialize(self.kernel_initializer),
            "recurrent_initializer": _initializers.serialize(self.recurrent_initializer),
            "bias_initializer": _initializers.serialize(self.bias_initializer),
            "unit_forget_bias": self.unit_forget_bias,
            "kernel_regularizer": _regularizers.serialize(self.kernel_regularizer),
            "recurrent_regularizer": _regularizers.serialize(self.recurrent_regularizer),
            "bias_regularizer": _regularizers.serialize(self.bias_regularizer),
            "activity_regularizer": _regularizers.serialize(self.activity_regularizer),
            "kernel_constraint": _constraints.serialize(self.kernel_constraint),
            "recurrent_constraint": _constraints.serialize(self.recurrent_constraint),
            "bias_constraint": _constraints.serialize(self.bias_constraint),
            "dropout": self.dropout, "recurrent_dropout": self.recurrent_dropout,
            "seed": self.seed,
        }
        if self._requested_implementation != self._default_implementation:
            config["implementation"] = self._requested_implementation
        if self.time_major:
            config["time_major"] = True
        if self.use_cudnn != "auto":
            config["use_cudnn"] = self.use_cudnn
        return config

    @classmethod
    def from_config(cls, config: dict) -> "LSTM":
        return cls(**config)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name!r} units={self.units}>"

    # ----------------------------------------------------------------- copy and pickle
    def _copied_state(self) -> dict:
        """Everything but the threading objects and the training record (which holds a
        path's buffers, cuDNN's reserve space among them): a copy has no record."""
        state = {k: v for k, v in self.__dict__.items() if k not in _TRANSIENT}
        state["_tape"] = None
        return state

    def __getstate__(self) -> dict:
        """CuPy arrays travel with their device id and come back on that device."""
        state = self._copied_state()
        state["_params"] = {k: to_portable(v) for k, v in state["_params"].items()}
        for key in ("states", "_activity_losses"):
            if state[key] is not None:
                state[key] = [to_portable(a) for a in state[key]]
        return state

    def __setstate__(self, state: dict) -> None:
        state = dict(state)
        state["_params"] = {k: from_portable(v) for k, v in state["_params"].items()}
        for key in ("states", "_activity_losses"):
            if state[key] is not None:
                state[key] = [from_portable(a) for a in state[key]]
        self.__dict__.update(state)
        self._init_transient()

    def __reduce_ex__(self, protocol):
        for argument in _CALLABLE_ARGUMENTS:  # say which argument pickle cannot serialize
            value = getattr(self, argument)
            if isinstance(value, _activations.Activation):
                value = value.name
            try:
                pickle.dumps(value, protocol)
            except Exception as exc:
                raise TypeError(
                    f"Layer {self.name} cannot be pickled: its `{argument}` is {value!r}, "
                    f"which pickle cannot serialize ({exc}). Use a name, a Keras config or a "
                    "function defined at module level; copy.deepcopy works as it is."
                ) from exc
        return super().__reduce_ex__(protocol)

    def __deepcopy__(self, memo: dict) -> "LSTM":
        new = type(self).__new__(type(self))
        memo[id(self)] = new
        new.__setstate__(copy.deepcopy(self._copied_state(), memo))
        return new


def _ran_path_name(path, default: str) -> str:
    """The name of the path that actually ran (a fallback wrapper knows it)."""
    name = getattr(path, "last_name", None)
    return default if name is None else name


def _per_sample(output) -> int:
    """Keras's activity penalty divisor: output.shape[0], with divide_no_nan's 0 for none."""
    return max(output.shape[0], 1)


def _to_processing_order(a, time_major: bool, go_backwards: bool, dtype, own: bool = False):
    """(B, T, ...) or (T, B, ...) -> contiguous time-major in processing order; with `own`,
    never memory of `a` (the layout change or the cast usually copies already)."""
    xp = array_module(a)
    tm = a if time_major else a.swapaxes(0, 1)
    if go_backwards:
        tm = tm[::-1]
    if dtype is not None:
        tm = tm.astype(dtype, copy=False)
    out = xp.ascontiguousarray(tm)
    if own and xp.may_share_memory(out, a):  # bounds only, no data read (NumPy and CuPy)
        out = out.copy()
    return out


def _from_processing_order(a, time_major: bool, go_backwards: bool):
    """Inverse of `_to_processing_order` for a (T, B, ...) array."""
    if go_backwards:
        a = a[::-1]
    return a if time_major else a.swapaxes(0, 1)
