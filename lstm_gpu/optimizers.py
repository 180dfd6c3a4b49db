"""Keras 3's SGD and Adam update rules for NumPy or CuPy arrays.

``opt.apply(target, grads)`` updates in place, then applies the weights' constraints, as
Keras does after each step. `target` is an `LSTM` (grads: the dict of `LSTM.backward`), a
`Bidirectional` (grads: the dict of `Bidirectional.backward`; both directions in one step)
or a dict ``{name: array}`` of other parameters (grads: a dict with the same names). Each
call is one optimizer step (``opt.iterations`` counts them); call it once per training step
with every parameter group, or use one optimizer per group.

Gradient processing follows Keras's order: clipnorm / clipvalue / global_clipnorm on the
gradients, weight decay ``w -= w * weight_decay * lr``, then the update rule.

Slots (momentum, Adam's moments) belong to (layer, weight name) for an LSTM, so they survive
`set_weights` as Keras's do, and to the array itself for a dict target. Optimizers pickle
and deep-copy with their slots; copy an optimizer together with the layers (or arrays) it
trains, e.g. ``pickle.dumps((layer, opt))``, so that the copies stay attached.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

from . import _validation as _v
from ._xp import array_module, from_portable, move_like, to_portable
from .bidirectional import Bidirectional
from .layer import LSTM


class Optimizer:
    def __init__(self, learning_rate: float = 0.001, weight_decay: Optional[float] = None,
                 clipnorm: Optional[float] = None, clipvalue: Optional[float] = None,
                 global_clipnorm: Optional[float] = None):
        self.learning_rate = _v.check_float("learning_rate", learning_rate, 0.0)
        self.weight_decay = _v.check_float("weight_decay", weight_decay, 0.0, allow_none=True)
        clip = dict(low=0.0, low_open=True, allow_none=True)
        self.clipnorm = _v.check_float("clipnorm", clipnorm, **clip)
        self.clipvalue = _v.check_float("clipvalue", clipvalue, **clip)
        self.global_clipnorm = _v.check_float("global_clipnorm", global_clipnorm, **clip)
        if clipnorm is not None and global_clipnorm is not None:
            raise ValueError("Only one of `clipnorm` and `global_clipnorm` can be set. "
                             f"Received: clipnorm={clipnorm}, global_clipnorm={global_clipnorm}")
        self.iterations = 0
        # (id(anchor), weight name) -> (anchor, {slot name: array}); the anchor (a layer's
        # identity, or the array of a dict target) keeps the id unique while the entry lives.
        self._slots: dict[tuple, tuple[Any, dict]] = {}

    # -- one step ---------------------------------------------------------------------------
    def apply(self, target: Any, grads: Mapping[str, Any]) -> None:
        params, constraints, owners = self._params_of(target)
        if not isinstance(grads, Mapping):
            raise TypeError("Argument `grads` must be a dict {name: gradient}, as "
                            f"LSTM.backward returns. Received: {type(grads).__name__}")
        grads = _flatten(grads)
        pairs = []
        for name, var in params.items():
            g = grads.get(name)
            if var is None or g is None:
                continue
            g = _v.as_array(g, f"grads[{name!r}]", like=var)
            _v.check_numeric(g, f"grads[{name!r}]")
            if tuple(g.shape) != tuple(var.shape):
                raise ValueError(f"Gradient {name!r} must have shape {tuple(var.shape)}. "
                                 f"Received: shape={tuple(g.shape)}")
            pairs.append((name, var, g.astype(var.dtype, copy=False)))
        if not pairs:
            return
        gradients = self._clip([g for _, _, g in pairs])
        self.iterations += 1
        for (name, var, _), g in zip(pairs, gradients):
            if self.weight_decay:
                var -= var * var.dtype.type(self.weight_decay * self.learning_rate)
            anchor, weight = owners.get(name, (var, name))
            self._update(var, g, self._slots_for(anchor, weight, var))
            constraint = constraints.get(name)
            if constraint is not None:
                var[...] = constraint(var)

    @staticmethod
    def _params_of(target: Any):
        """(params, constraints, owners): owners maps a param name to the (anchor, weight
        name) its slots belong to (default: the array itself)."""
        if isinstance(target, LSTM):
            if not target.built:
                raise ValueError("The LSTM has no weights yet: call it once before apply().")
            params = {} if not target.trainable else {
                "kernel": target.kernel, "recurrent_kernel": target.recurrent_kernel,
                "bias": target.bias}
            owners = {name: (target._identity, name) for name in params}
            return params, target.constraints(), owners
        if isinstance(target, Bidirectional):  # names "forward/kernel", ...: see _flatten
            params, constraints, owners = {}, {}, {}
            for direction, layer in (("forward", target.forward_layer),
                                     ("backward", target.backward_layer)):
                p, c, o = Optimizer._params_of(layer)
                if target.trainable:
                    params.update({f"{direction}/{k}": v for k, v in p.items()})
                    owners.update({f"{direction}/{k}": v for k, v in o.items()})
                constraints.update({f"{direction}/{k}": v for k, v in c.items()})
            return params, constraints, owners
        if isinstance(target, Mapping):
            for name, var in target.items():  # updated in place: arrays of floats only
                if not (hasattr(var, "dtype") and hasattr(var, "shape")
                        and var.dtype.kind == "f"):
                    raise TypeError(f"Argument `target[{name!r}]` must be a NumPy or CuPy "
                                    f"float array. Received: {type(var).__name__}")
            return dict(target), {}, {}
        raise TypeError("Argument `target` must be an LSTM, a Bidirectional or a dict of arrays. "
                        f"Received: {type(target).__name__}")

    def _slots_for(self, anchor, name: str, var) -> dict:
        """The slots of one weight, following it: moved to its device when the layer moved,
        started afresh when its shape changed (a rebuilt layer)."""
        entry = self._slots.get((id(anchor), name))
        if entry is None or entry[0] is not anchor:
            entry = self._slots[(id(anchor), name)] = (anchor, {})
        slots = entry[1]
        if any(s.shape != var.shape or s.dtype != var.dtype for s in slots.values()):
            slots.clear()
        for key, s in slots.items():
            slots[key] = move_like(s, var)
        return slots

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_slots"] = [(anchor, name, {k: to_portable(a) for k, a in slots.items()})
                           for (_, name), (anchor, slots) in self._slots.items()]
        return state

    def __setstate__(self, state: dict) -> None:
        state = dict(state)
        state["_slots"] = {(id(anchor), name): (anchor, {k: from_portable(a)
                                                         for k, a in slots.items()})
                           for anchor, name, slots in state["_slots"]}
        self.__dict__.update(state)

    def _clip(self, gradients: list) -> list:
        if self.clipvalue is not None:
            v = self.clipvalue
            gradients = [array_module(g).clip(g, -v, v) for g in gradients]
        if self.clipnorm is not None:
            gradients = [_clip_by_norm(g, self.clipnorm) for g in gradients]
        if self.global_clipnorm is not None:
            total = sum(float((g * g).sum()) for g in gradients) ** 0.5
            scale = self.global_clipnorm / max(total, self.global_clipnorm)
            gradients = [g * g.dtype.type(scale) for g in gradients]
        return gradients

    def _update(self, var, g, slots: dict) -> None:
        raise NotImplementedError


def _flatten(grads: Mapping[str, Any]) -> dict:
    """Nested dicts of gradients (Bidirectional's "forward" and "backward") as "outer/inner"."""
    flat = {}
    for name, g in grads.items():
        if isinstance(g, Mapping):
            flat.update({f"{name}/{k}": v for k, v in g.items()})
        else:
            flat[name] = g
    return flat


def _clip_by_norm(g, clip: float):
    norm = float((g * g).sum()) ** 0.5
    return g * g.dtype.type(clip / max(norm, clip))


class SGD(Optimizer):
    """Keras 3 SGD: ``m = momentum*m - lr*g``; ``w += m`` (nesterov: ``w += momentum*m - lr*g``)."""

    def __init__(self, learning_rate: float = 0.01, momentum: float = 0.0,
                 nesterov: bool = False, **kwargs: Any):
        super().__init__(learning_rate, **kwargs)
        self.momentum = _v.check_float("momentum", momentum, 0.0, 1.0)
        self.nesterov = bool(nesterov)

    def _update(self, var, g, slots):
        lr = var.dtype.type(self.learning_rate)
        if self.momentum == 0:
            var -= g * lr
            return
        mom = var.dtype.type(self.momentum)
        m = slots.setdefault("momentum", array_module(var).zeros_like(var))
        m[...] = m * mom - g * lr
        if self.nesterov:
            var += m * mom - g * lr
        else:
            var += m


class Adam(Optimizer):
    """Keras 3 Adam (epsilon outside the square root, bias correction folded into lr)."""

    def __init__(self, learning_rate: float = 0.001, beta_1: float = 0.9,
                 beta_2: float = 0.999, epsilon: float = 1e-7, amsgrad: bool = False,
                 **kwargs: Any):
        super().__init__(learning_rate, **kwargs)
        # beta = 1 would divide by zero in the bias correction
        self.beta_1 = _v.check_float("beta_1", beta_1, 0.0, 1.0, high_open=True)
        self.beta_2 = _v.check_float("beta_2", beta_2, 0.0, 1.0, high_open=True)
        self.epsilon = _v.check_float("epsilon", epsilon, 0.0)
        self.amsgrad = bool(amsgrad)

    def _update(self, var, g, slots):
        xp = array_module(var)
        t = self.iterations
        alpha = self.learning_rate * (1 - self.beta_2 ** t) ** 0.5 / (1 - self.beta_1 ** t)
        dt = var.dtype.type
        m = slots.setdefault("m", xp.zeros_like(var))
        v = slots.setdefault("v", xp.zeros_like(var))
        m += (g - m) * dt(1 - self.beta_1)
        v += (g * g - v) * dt(1 - self.beta_2)
        if self.amsgrad:
            v_hat = slots.setdefault("v_hat", xp.zeros_like(var))
            xp.maximum(v_hat, v, out=v_hat)
            v = v_hat
        var -= (m * dt(alpha)) / (xp.sqrt(v) + dt(self.epsilon))


__all__ = ["Optimizer", "SGD", "Adam"]
