"""One runner per path: can it run here (and why not), prepare a case, run it once.

A runner answers three questions, each cheap to ask:

- `unavailable()`: why this path cannot run on this machine at all (None when it can).
- `unsupported(case)`: why it cannot run this case (None when it can).
- `prepare(case, data)`: put weights and inputs where the path computes and return a
  `Prepared`, whose `run()` does one call (forward, or forward + backward when training) and
  leaves device work queued, and whose `fetch()` does one call and returns NumPy copies of
  what the check compares. A runner may also raise `PathSkipped` from `prepare` or `fetch`
  when the path itself reports that it cannot serve the case (cuDNN's eligibility rules).

Every runner starts from the same NumPy arrays (`cases.CaseData`) in Keras layout.
Optional libraries are imported inside the runner, never at module import.
"""
from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np

from .cases import Case, CaseData
from .timing import CupyEventTimer, HostTimer, TorchEventTimer

PATH_NAMES = ("cudnn", "cuda-kernels", "cpu-native", "numpy", "torch", "torch-native", "keras")
OWN_PATHS = ("cudnn", "cuda-kernels", "cpu-native", "numpy")  # lstm_gpu's; others are peers
CPU_PATHS = {"cpu-native": "native", "numpy": "numpy"}  # lstm_gpu's CPU paths: their choice
TORCH_ACTIVATIONS = ("tanh", "sigmoid")


class PathSkipped(Exception):
    """The path declined this case; the message is the reason."""


@dataclass
class Outputs:
    last: np.ndarray  # (B, U), the last output
    dx: Optional[np.ndarray] = None  # (B, T, F), gradient of the input (training only)


@dataclass
class Prepared:
    run: Callable[[], Any]  # one call; device work may still be queued when it returns
    fetch: Callable[[], Outputs]  # one call, results copied to the host
    timer: Any  # a timing.*Timer suited to where the work runs


class Runner:
    """Base class. `name` is the path's stable name; `device` says where it computes."""

    name = "?"
    device = "cpu"
    # True when the path draws the same recurrent-dropout masks as the NumPy path for the same
    # seed, so training with dropout can be checked as is; otherwise the check runs on the
    # same case without dropout (same weights and inputs).
    same_dropout_as_reference = False

    @property
    def label(self) -> str:
        return self.name

    def unavailable(self) -> Optional[str]:
        return None

    def unsupported(self, case: Case) -> Optional[str]:
        return None

    def prepare(self, case: Case, data: CaseData) -> Prepared:
        raise NotImplementedError


# ----------------------------------------------------------------------------- lstm_gpu


def _import_lstm():
    from lstm_gpu import LSTM  # noqa: WPS433 - optional until the layer lands

    return LSTM


class LstmGpuRunner(Runner):
    """lstm_gpu's own paths: "cpu-native" and "numpy" (NumPy arrays; the layer is told which
    CPU path to run around each call), "cudnn" and "cuda-kernels" (CuPy)."""

    def __init__(self, name: str):
        if name not in OWN_PATHS:
            raise ValueError(f"not an lstm_gpu path: {name!r}")
        self.name = name
        self.device = "cpu" if name in CPU_PATHS else "gpu"
        self.use_cudnn = {"cudnn": True, "cuda-kernels": False}.get(name, "auto")

    @property
    def label(self) -> str:
        if self.name != "cpu-native" or self.unavailable() is not None:
            return self.name
        from ..paths import cpu_native

        return f"cpu-native ({cpu_native.isa()}, {cpu_native.num_threads()} threads)"

    def unavailable(self) -> Optional[str]:
        try:
            _import_lstm()
        except ImportError as e:
            return f"lstm_gpu.LSTM cannot be imported: {e}"
        if self.name == "cpu-native":
            from ..paths import cpu_native

            return cpu_native.unavailable_reason()
        if self.name == "numpy":
            return None
        from .._xp import gpu_unavailable_reason

        return gpu_unavailable_reason()

    def _layer(self, case: Case, data: CaseData):
        layer = _import_lstm()(
            case.units, activation=case.activation,
            recurrent_activation=case.recurrent_activation,
            recurrent_dropout=case.recurrent_dropout, seed=data.seed % (2**31),
            use_cudnn=self.use_cudnn, dtype=case.dtype)
        if case.bidirectional:
            from lstm_gpu import Bidirectional

            layer = Bidirectional(layer, dtype=case.dtype)
        layer.build(data.x.shape)
        layer.set_weights(data.weights)
        return layer

    def prepare(self, case: Case, data: CaseData) -> Prepared:
        layer = self._layer(case, data)
        if self.name in CPU_PATHS:
            xp, to_host, timer = np, np.asarray, HostTimer()
        else:
            import cupy as xp

            to_host, timer = xp.asnumpy, CupyEventTimer()
        x = xp.asarray(data.x)
        mask = None if data.mask is None else xp.asarray(data.mask)
        d_out = None if data.d_out is None else xp.asarray(data.d_out)
        if self.name == "cudnn":
            self._check_cudnn_eligible(layer, mask, case.training)

        choose = _cpu_path_chooser(CPU_PATHS.get(self.name))

        def run():
            previous = choose()
            try:
                out = layer(x, mask=mask, training=case.training)
                return layer.backward(d_out) if case.training else out
            finally:
                choose(previous)

        def fetch() -> Outputs:
            previous = choose()
            try:
                out = layer(x, mask=mask, training=case.training)
                dx = to_host(layer.backward(d_out)["inputs"]) if case.training else None
            except ValueError as e:  # use_cudnn=True: the dispatcher lists the failed rules
                if self.name == "cudnn":
                    raise PathSkipped(str(e)) from e
                raise
            finally:
                choose(previous)
            ran = getattr(layer, "last_path", None)
            ran = set(ran) if isinstance(ran, tuple) else {ran}  # Bidirectional: per direction
            if "cupy-reference" in ran:  # the kernels declined; timing it would mislabel
                raise PathSkipped("the CUDA kernels do not serve this case (the layer fell "
                                  "back to its CuPy reference)")
            if ran != {self.name}:
                raise RuntimeError(f"the layer ran path {' and '.join(sorted(map(str, ran)))}, "
                                   f"not {self.name!r}")
            return Outputs(last=to_host(out), dx=dx)

        return Prepared(run=run, fetch=fetch, timer=timer)

    @staticmethod
    def _check_cudnn_eligible(layer, mask, training: bool) -> None:
        rules = getattr(layer, "cudnn_ineligibility", None)
        if rules is None:
            return  # older layer: the ValueError of use_cudnn=True tells instead
        reasons = rules(mask=mask, training=training)
        if reasons:
            raise PathSkipped("not eligible for cuDNN: " + "; ".join(map(str, reasons)))


def _cpu_path_chooser(choice: Optional[str]) -> Callable[..., Optional[str]]:
    """choose() sets lstm_gpu's CPU path to `choice` and returns the previous one;
    choose(previous) restores it. A no-op for the GPU paths."""
    if choice is None:
        return lambda previous=None: None
    from ..paths import cpu_native

    return lambda previous=choice: cpu_native.set_cpu_path(previous)


# ----------------------------------------------------------------------------- torch


class TorchRunner(Runner):
    """torch.nn.LSTM(batch_first=True) with the same weights; cuDNN on or off ("native").

    TF32 is switched off for the timed calls, as lstm_gpu uses FMA math in float32: both then
    compute in true float32 and the comparison is fair (and the check meaningful).
    """

    def __init__(self, name: str):
        if name not in ("torch", "torch-native"):
            raise ValueError(f"not a torch path: {name!r}")
        self.name = name
        self.cudnn = name == "torch"
        self._torch = None

    def _import(self):
        if self._torch is None:
            import torch

            self._torch = torch
        return self._torch

    @property
    def device(self) -> str:  # type: ignore[override]
        try:
            return "cuda" if self._import().cuda.is_available() else "cpu"
        except ImportError:
            return "cpu"

    @property
    def label(self) -> str:
        return f"{self.name} ({self.device})"

    def unavailable(self) -> Optional[str]:
        try:
            self._import()
        except ImportError:
            return "torch is not installed"
        if not self.cudnn and self.device == "cpu":
            return "cuDNN is GPU-only: on a CPU `torch` already runs torch's native kernels"
        return None

    def unsupported(self, case: Case) -> Optional[str]:
        if (case.activation, case.recurrent_activation) != TORCH_ACTIVATIONS:
            return "torch.nn.LSTM has tanh/sigmoid activations only"
        if case.training and case.recurrent_dropout:
            return "torch.nn.LSTM has no recurrent dropout"
        if case.mask == "left":
            return "torch.nn.LSTM takes right-padded sequences only (pack_padded_sequence)"
        return None

    def prepare(self, case: Case, data: CaseData) -> Prepared:
        torch = self._import()
        dev = torch.device(self.device)
        dtype = getattr(torch, case.dtype)
        module = torch.nn.LSTM(case.features, case.units, batch_first=True,
                               bidirectional=case.bidirectional)
        module = module.to(device=dev, dtype=dtype)
        with torch.no_grad():  # torch gate order i, f, g, o is Keras's i, f, c, o
            for k, suffix in enumerate(("_l0", "_l0_reverse")[:1 + case.bidirectional]):
                kernel, recurrent, bias = data.weights[3 * k:3 * k + 3]
                getattr(module, "weight_ih" + suffix).copy_(torch.from_numpy(kernel.T.copy()))
                getattr(module, "weight_hh" + suffix).copy_(torch.from_numpy(recurrent.T.copy()))
                getattr(module, "bias_ih" + suffix).copy_(torch.from_numpy(bias))
                getattr(module, "bias_hh" + suffix).zero_()
        x = torch.from_numpy(data.x).to(dev)
        lengths = None if data.lengths is None else torch.from_numpy(data.lengths)
        d_out = None if data.d_out is None else torch.from_numpy(data.d_out).to(dev)
        flags = dict(enabled=self.cudnn, allow_tf32=False)
        pack = torch.nn.utils.rnn.pack_padded_sequence

        def forward(inp):
            if lengths is not None:
                inp = pack(inp, lengths, batch_first=True, enforce_sorted=False)
            _, (h, _c) = module(inp)
            if case.bidirectional:  # Keras's concat: forward's last output, then backward's
                return torch.cat((h[0], h[1]), dim=1)
            return h[-1]  # (B, U): the output at each sample's last valid step

        def run():
            with torch.backends.cudnn.flags(**flags):
                if not case.training:
                    with torch.no_grad():
                        return forward(x)
                module.zero_grad(set_to_none=True)
                xg = x.detach().requires_grad_(True)
                forward(xg).backward(d_out)
                return xg.grad

        def fetch() -> Outputs:
            with torch.backends.cudnn.flags(**flags):
                if not case.training:
                    with torch.no_grad():
                        return Outputs(last=forward(x).cpu().numpy())
                xg = x.detach().requires_grad_(True)
                last = forward(xg)
                last.backward(d_out)
                return Outputs(last=last.detach().cpu().numpy(), dx=xg.grad.cpu().numpy())

        timer = TorchEventTimer() if dev.type == "cuda" else HostTimer()
        return Prepared(run=run, fetch=fetch, timer=timer)


# ----------------------------------------------------------------------------- keras

KERAS_BACKENDS = ("tensorflow", "jax", "torch")


def import_keras():
    """Import Keras 3. When no backend is chosen (KERAS_BACKEND unset) and Keras is not yet
    imported, pick the first installed of tensorflow, jax, torch, as Keras would fail to
    import without its default (tensorflow)."""
    if "keras" not in sys.modules and not os.environ.get("KERAS_BACKEND"):
        for name in KERAS_BACKENDS:
            if importlib.util.find_spec(name) is not None:
                os.environ["KERAS_BACKEND"] = name
                break
    import keras

    return keras


class KerasRunner(Runner):
    """keras.layers.LSTM on whatever backend is installed, with the same weights."""

    name = "keras"

    def __init__(self):
        self._keras = None
        self._why_not: Optional[str] = None

    def _import(self):
        if self._keras is None and self._why_not is None:
            if importlib.util.find_spec("keras") is None:
                self._why_not = "keras is not installed"
            else:
                try:
                    self._keras = import_keras()
                except Exception as e:  # a missing or broken backend
                    self._why_not = f"keras cannot be imported: {type(e).__name__}: {e}"
        return self._keras

    @property
    def backend(self) -> str:
        keras = self._import()
        return keras.backend.backend() if keras is not None else "?"

    @property
    def device(self) -> str:  # type: ignore[override]
        if self._import() is None:
            return "cpu"
        return "cuda" if _keras_on_gpu(self.backend) else "cpu"

    @property
    def label(self) -> str:
        if self._import() is None:
            return self.name
        return f"keras ({self.backend}, {self.device})"

    def unavailable(self) -> Optional[str]:
        self._import()
        if self._why_not is None and self.backend not in KERAS_BACKENDS:
            return f"keras backend {self.backend!r} is not benchmarked"
        return self._why_not

    def prepare(self, case: Case, data: CaseData) -> Prepared:
        keras = self._import()
        layer = keras.layers.LSTM(
            case.units, activation=case.activation,
            recurrent_activation=case.recurrent_activation,
            recurrent_dropout=case.recurrent_dropout, seed=data.seed % (2**31), dtype=case.dtype,
            # set_weights replaces them; zeros also spare torch a float16 QR it lacks on CPU
            kernel_initializer="zeros", recurrent_initializer="zeros")
        if case.bidirectional:  # the wrapper's dtype: Keras casts the merged output to it
            layer = keras.layers.Bidirectional(layer, dtype=case.dtype)
        layer.build(data.x.shape)
        layer.set_weights(data.weights)
        convert = keras.ops.convert_to_tensor
        x = convert(data.x)
        mask = None if data.mask is None else convert(data.mask)
        d_out = None if data.d_out is None else convert(data.d_out)
        grad = _KERAS_GRAD[self.backend]
        kwargs = dict(mask=mask, training=case.training)
        last = []

        def call(inp):
            return layer(inp, **kwargs)

        def run():
            out = grad(layer, kwargs, x, d_out)[1] if case.training else call(x)
            last[:] = [out]
            return out

        def sync():
            if last:
                _keras_block(self.backend, last[0])

        def fetch() -> Outputs:
            if case.training:
                out, dx = grad(layer, kwargs, x, d_out)
                return Outputs(last=keras.ops.convert_to_numpy(out),
                               dx=keras.ops.convert_to_numpy(dx))
            return Outputs(last=keras.ops.convert_to_numpy(call(x)))

        if self.backend == "torch" and self.device == "cuda":
            timer = TorchEventTimer()
        else:
            timer = HostTimer(sync=sync)
        return Prepared(run=run, fetch=fetch, timer=timer)


def _keras_on_gpu(backend: str) -> bool:
    try:
        if backend == "torch":
            import torch

            return torch.cuda.is_available()
        if backend == "jax":
            import jax

            return jax.default_backend() == "gpu"
        if backend == "tensorflow":
            import tensorflow as tf

            return bool(tf.config.list_physical_devices("GPU"))
    except Exception:
        pass
    return False


def _keras_block(backend: str, value) -> None:
    """Wait until `value` is computed (the host clock must not stop before the device)."""
    if backend == "jax":
        value.block_until_ready()
    elif backend == "torch":
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()
    elif backend == "tensorflow":
        value.numpy()  # eager tensors: reading the value waits for it


def _grad_torch(layer, kwargs, x, d_out):
    """(last output, input gradient) by autograd; the weight gradients are computed too, as
    Keras variables are trainable torch parameters."""
    xg = x.detach().requires_grad_(True)
    out = layer(xg, **kwargs)
    out.backward(d_out)
    return out.detach(), xg.grad


def _grad_tensorflow(layer, kwargs, x, d_out):
    import tensorflow as tf

    with tf.GradientTape() as tape:
        tape.watch(x)
        out = layer(x, **kwargs)
    grads = tape.gradient(out, [x, *layer.trainable_variables], output_gradients=d_out)
    return out, grads[0]


def _grad_jax(layer, kwargs, x, d_out):
    import jax

    trainable = [v.value for v in layer.trainable_variables]
    fixed = [v.value for v in layer.non_trainable_variables]

    def f(inp, weights):
        return layer.stateless_call(weights, fixed, inp, **kwargs)[0]

    out, vjp = jax.vjp(f, x, trainable)
    return out, vjp(d_out)[0]


_KERAS_GRAD = {"torch": _grad_torch, "tensorflow": _grad_tensorflow, "jax": _grad_jax}


# ----------------------------------------------------------------------------- registry


def make_runner(name: str) -> Runner:
    if name in OWN_PATHS:
        return LstmGpuRunner(name)
    if name in ("torch", "torch-native"):
        return TorchRunner(name)
    if name == "keras":
        return KerasRunner()
    raise ValueError(f"unknown path {name!r}; expected one of {', '.join(PATH_NAMES)}")
