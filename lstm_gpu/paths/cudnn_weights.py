"""Keras LSTM weights <-> cuDNN's weight space: layout, packing, gradient unpacking.

Pure array code (NumPy or CuPy) plus one CUDA kernel (`kernels/cudnn_pack.cu`) that packs the
canonical layout in a single launch.

Layout: `cudnnGetRNNWeightParams` reports, per linLayerID, a matrix block (rows, cols) and a
bias block. For 1 unidirectional LSTM layer with DOUBLE_BIAS, cuDNN 9 puts W0..W3 (U x F, on x)
then R4..R7 (U x U, on h), then bW0..3, bR4..7: `canonical_layout`. Keras's gate blocks
i, f, c, o are linLayerIDs 0..3 / 4..7; Keras's bias goes into the recurrent slot and the
input bias stays zero (TF/Keras's own choice).

Never stale: the weight space is packed from the live Keras arrays on *every* call, into a
fresh buffer (which the call's backward keeps). The options considered, per call, with
N = 4U(F+U+1) Keras weight elements (the space has 4U more, the zero input bias). CuPy arrays
cannot be made read-only, so nothing can stop ``layer.kernel[...] = v`` or ``w -= lr * g`` on
the arrays the layer hands out:

    option                              launches          elements moved     host syncs
    repack, fused kernel (chosen)       1                 ~2N                0
    repack, CuPy copies                 5 (memset, 4)     ~3N                0
    content fingerprint + cache         >= 1 reduction    N                  1 (the compare)
    version counter + cache (before)    0 when unchanged  0                  0, but stale
                                                                             after in-place
                                                                             edits

A device->host sync per call would serialize the host with the GPU, which costs more than the
copy it saves: ~2N elements are 17 MB for F = U = 512 in float32, about 5 us at an H100's
memory bandwidth (an estimate; bench/bench_cudnn.py measures the whole call). TensorFlow's
Keras backend also rebuilds the cuDNN parameter buffer on every call.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._xp import array_module, is_cupy_array
from .base import Weights

PACK_SOURCE = "cudnn_pack.cu"
PACK_OPTIONS = ("-std=c++17",)
# The pack kernel moves bits: one instantiation per element width.
PACK_BIT_TYPES = {2: "unsigned short", 4: "unsigned int", 8: "unsigned long long"}
PACK_THREADS = 256
PACK_MAX_BLOCKS = 4096


@dataclass(frozen=True)
class Block:
    """One linear layer in the weight space, offsets in elements from its start."""

    m_offset: int
    m_shape: tuple  # (rows, cols): gate = W @ input
    b_offset: int
    b_size: int


@dataclass(frozen=True)
class WeightLayout:
    """Where cuDNN wants each block (`blocks`, linLayerID 0..7) in a space of `elements`.

    canonical: the blocks are exactly `canonical_layout`, which allows bulk copies and the
    one-launch pack kernel.
    """

    blocks: dict
    elements: int
    canonical: bool


def canonical_layout(features: int, units: int) -> dict[int, Block]:
    """The layout cuDNN uses for 1 unidirectional LSTM layer with DOUBLE_BIAS."""
    f, u = features, units
    blocks = {}
    bias0 = 4 * u * f + 4 * u * u
    for k in range(4):
        blocks[k] = Block(k * u * f, (u, f), bias0 + k * u, u)
        blocks[4 + k] = Block(4 * u * f + k * u * u, (u, u), bias0 + (4 + k) * u, u)
    return blocks


def weight_space_elements(features: int, units: int) -> int:
    return 4 * units * (features + units) + 8 * units


def weight_layout(blocks: dict, elements: int, features: int, units: int) -> WeightLayout:
    """A `WeightLayout` for reported blocks, marking whether they are the canonical ones."""
    canonical = (blocks == canonical_layout(features, units)
                 and elements == weight_space_elements(features, units))
    return WeightLayout(dict(blocks), int(elements), canonical)


def pack_weights(kernel: Any, recurrent_kernel: Any, bias: Any, layout: dict[int, Block],
                 out: Any, canonical: bool = False) -> Any:
    """Write Keras weights into the flat weight space `out` (already zeroed or fresh).

    kernel (F, 4U), recurrent_kernel (U, 4U), bias (4U,) with gate blocks i, f, c, o =
    linLayerIDs 0..3 (input) and 4..7 (recurrent). The input bias stays zero.
    """
    f, u4 = kernel.shape
    u = u4 // 4
    if canonical:
        out[:4 * u * f].reshape(4 * u, f)[...] = kernel.T
        start = 4 * u * f
        out[start:start + 4 * u * u].reshape(4 * u, u)[...] = recurrent_kernel.T
        bias0 = start + 4 * u * u
        out[bias0:bias0 + 4 * u] = 0
        out[bias0 + 4 * u:bias0 + 8 * u] = bias
        return out
    for k in range(4):
        cols = slice(k * u, (k + 1) * u)
        for lin, src, b in ((k, kernel, None), (4 + k, recurrent_kernel, bias)):
            blk = layout[lin]
            rows, ncols = blk.m_shape
            size = rows * ncols
            out[blk.m_offset:blk.m_offset + size].reshape(rows, ncols)[...] = src[:, cols].T
            out[blk.b_offset:blk.b_offset + blk.b_size] = 0 if b is None else b[cols]
    return out


def unpack_weight_grads(dflat: Any, layout: dict[int, Block], features: int, units: int,
                        canonical: bool = False) -> tuple[Any, Any, Any]:
    """(dkernel (F, 4U), drecurrent_kernel (U, 4U), dbias (4U,)) from a flat gradient.

    cuDNN adds the input and recurrent biases, so their gradients are equal; Keras's single
    bias gets the recurrent one (not the sum).
    """
    xp = array_module(dflat)
    f, u = features, units
    if canonical:
        dk = xp.ascontiguousarray(dflat[:4 * u * f].reshape(4 * u, f).T)
        start = 4 * u * f
        drk = xp.ascontiguousarray(dflat[start:start + 4 * u * u].reshape(4 * u, u).T)
        bias0 = start + 4 * u * u
        return dk, drk, dflat[bias0 + 4 * u:bias0 + 8 * u].copy()
    dk = xp.empty((f, 4 * u), dflat.dtype)
    drk = xp.empty((u, 4 * u), dflat.dtype)
    db = xp.empty((4 * u,), dflat.dtype)
    for k in range(4):
        cols = slice(k * u, (k + 1) * u)
        for lin, dst in ((k, dk), (4 + k, drk)):
            blk = layout[lin]
            rows, ncols = blk.m_shape
            dst[:, cols] = dflat[blk.m_offset:blk.m_offset + rows * ncols].reshape(rows, ncols).T
        blk = layout[4 + k]
        db[cols] = dflat[blk.b_offset:blk.b_offset + blk.b_size]
    return dk, drk, db


# --- packing every call ------------------------------------------------------------------


def pack(weights: Weights, layout: WeightLayout, dtype: Any) -> Any:
    """A fresh weight space of `dtype` packed from the live Keras arrays of `weights`.

    CuPy with the canonical layout: one launch of `kernels/cudnn_pack.cu`. Otherwise the
    generic block copies into a zeroed buffer (NumPy, or a layout cuDNN changed).
    """
    xp = array_module(weights.kernel)
    dt = np.dtype(dtype)
    arrays = [xp.ascontiguousarray(a, dtype=dt)
              for a in (weights.kernel, weights.recurrent_kernel, weights.bias)]
    if layout.canonical and is_cupy_array(arrays[0]):
        out = xp.empty(layout.elements, dt)
        grid, block, args = pack_launch(*arrays, out)
        _pack_function(out.device.id, dt.itemsize)(grid, block, args)
        return out
    out = xp.zeros(layout.elements, dt)
    return pack_weights(*arrays, layout.blocks, out, canonical=layout.canonical)


def pack_name(itemsize: int) -> str:
    """Name expression of the pack kernel for elements of `itemsize` bytes."""
    return f"lstm_cudnn::pack_canonical<{PACK_BIT_TYPES[itemsize]}>"


PACK_NAME_EXPRESSIONS = tuple(pack_name(n) for n in sorted(PACK_BIT_TYPES))


def pack_launch(kernel: Any, recurrent_kernel: Any, bias: Any, out: Any):
    """(grid, block, args) of `pack_canonical` for C-contiguous arrays of one dtype.

    Arguments follow the kernel's signature: (const T* kernel, const T* recurrent,
    const T* bias, T* out, idx_t features, idx_t units) with T the unsigned integer of the
    element width (the arrays are reinterpreted, not converted).
    """
    features, units4 = kernel.shape
    units = units4 // 4
    n = weight_space_elements(features, units)
    if out.size != n:
        raise ValueError(f"weight space has {out.size} elements, expected {n}")
    bits = np.dtype(f"u{out.dtype.itemsize}")
    args = tuple(a.view(bits) for a in (kernel, recurrent_kernel, bias, out))
    blocks = max(1, min(PACK_MAX_BLOCKS, -(-n // PACK_THREADS)))
    return (blocks,), (PACK_THREADS,), args + (np.int64(features), np.int64(units))


def pack_source() -> str:
    from ..cuda.kernels import _read_kernel_file

    return _read_kernel_file(PACK_SOURCE)


_modules_lock = threading.Lock()
_modules: dict[int, Any] = {}


def _pack_function(device_id: int, itemsize: int):
    """The compiled pack kernel for one device and element width (NVRTC, once per device)."""
    module = _modules.get(device_id)
    if module is None:
        from .._xp import cupy_module

        cp = cupy_module()
        with _modules_lock:
            module = _modules.get(device_id)
            if module is None:
                with cp.cuda.Device(device_id):
                    module = cp.RawModule(code=pack_source(), options=PACK_OPTIONS,
                                          name_expressions=list(PACK_NAME_EXPRESSIONS))
                _modules[device_id] = module
    return module.get_function(pack_name(itemsize))

