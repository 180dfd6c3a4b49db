"""Mask helpers shared by the paths: run lengths, shifting, and Keras's masked-step values.

Pure array code, NumPy or CuPy (the module of the array given), so CI tests it with NumPy.

Notation (processing order, time-major): a (T, B) mask row b is *one contiguous run* when its
valid steps are exactly ``[s_b, s_b + n_b)``. Right-padded rows have ``s_b = 0``, left-padded
ones ``s_b + n_b = T`` (Keras's `pad_sequences` pads in front by default, and ``go_backwards``
flips a right-padded mask into one). Fully masked rows have ``n_b = 0``; we set ``s_b = T``.

Keras's masked-step rule (TF backend, `base.py`): h and c are carried through masked steps;
the output of a masked step repeats the previous output, which is zeros before the first
valid step, or is zeros with ``zero_output_for_mask``. For one run that gives::

    t <  s_b              output 0,              state (h0, c0)
    s_b <= t < s_b + n_b  LSTM over the run,     started from (h0, c0)
    t >= s_b + n_b        output h_last (or 0),  state (h_last, c_last)

so a path that can only run *front-aligned* sequences with per-sample lengths (cuDNN) gets
Keras's numbers by `shift_to_front` (inputs), running, `restore_outputs` (outputs) and
`select_states` (fully masked rows keep h0/c0). The backward helpers are the exact adjoints:
`route_output_grads` sends the gradient of a repeated output to the h it repeats.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from .._xp import array_module, to_numpy


# --- the dispatcher's tests on the user's (B, T) mask ---------------------------------------


def is_one_run_per_row(mask: Any) -> bool:
    """True when the valid steps of every row of a (B, T) bool mask are contiguous.

    That is right-padded (valid then masked), left-padded (masked then valid: Keras's
    `pad_sequences` default), both, fully valid or fully masked; False for a row with a hole
    (valid, masked, valid). NumPy or CuPy (one small device-to-host read); a Python bool.
    """
    if mask.ndim != 2:
        raise ValueError(f"mask must be (batch, timesteps), got shape {mask.shape}")
    xp = array_module(mask)
    m = mask.astype(bool, copy=False)
    rises = m[:, :1].astype(xp.int32) + (m[:, 1:] & ~m[:, :-1]).sum(axis=1, keepdims=True)
    return not bool(xp.any(rises > 1))


def has_fully_masked_sample(mask: Any) -> bool:
    """True when some row of a (B, T) mask has no valid step."""
    xp = array_module(mask)
    return bool(xp.any(~xp.any(mask.astype(bool, copy=False), axis=1)))


# --- runs in processing order ---------------------------------------------------------------


@dataclass(frozen=True)
class MaskRuns:
    """Per-sample run of valid steps, on the host: ``starts`` and ``lengths`` are (B,) int64."""

    starts: np.ndarray
    lengths: np.ndarray
    steps: int  # T

    @property
    def batch(self) -> int:
        return int(self.lengths.shape[0])

    @property
    def all_full(self) -> bool:
        """Every step of every sample is valid: the mask changes nothing."""
        return bool(np.all(self.lengths == self.steps))

    @property
    def front_aligned(self) -> bool:
        """No sample needs shifting (every non-empty run starts at step 0)."""
        return bool(np.all((self.starts == 0) | (self.lengths == 0)))

    @property
    def empty(self) -> np.ndarray:
        """(B,) bool: fully masked samples."""
        return self.lengths == 0

    @property
    def any_empty(self) -> bool:
        return bool(np.any(self.lengths == 0))

    @property
    def all_empty(self) -> bool:
        return bool(np.all(self.lengths == 0))

    def kernel_lengths(self) -> np.ndarray:
        """Lengths for a kernel that rejects 0: empty samples run one dummy step."""
        return np.maximum(self.lengths, 1).astype(np.int32)


def full_runs(steps: int, batch: int) -> MaskRuns:
    """The runs of 'no mask'."""
    return MaskRuns(np.zeros(batch, np.int64), np.full(batch, steps, np.int64), steps)


def mask_runs(mask: Any) -> Optional[MaskRuns]:
    """Runs of a (T, B) processing-order mask, or None when a row is not one contiguous run.

    Copies the mask to the host (T*B bytes) when it is a CuPy array.
    """
    m = to_numpy(mask).astype(bool, copy=False)
    if m.ndim != 2:
        raise ValueError(f"mask must be (timesteps, batch), got shape {m.shape}")
    steps, batch = m.shape
    lengths = m.sum(axis=0).astype(np.int64)
    starts = np.where(lengths > 0, np.argmax(m, axis=0), steps).astype(np.int64)
    t = np.arange(steps)[:, None]
    expected = (t >= starts[None, :]) & (t < (starts + lengths)[None, :])
    if not np.array_equal(m, expected):
        return None
    return MaskRuns(starts, lengths, steps)


# --- shifting between processing order and front-aligned order ------------------------------


def _grid(runs: MaskRuns, xp):
    t = xp.arange(runs.steps)[:, None]
    s = xp.asarray(runs.starts)[None, :]
    n = xp.asarray(runs.lengths)[None, :]
    return t, s, n


def _zero_outside(a: Any, valid: Any):
    """a where valid (T, B) holds, else 0."""
    xp = array_module(a)
    keep = valid.reshape(valid.shape + (1,) * (a.ndim - 2))
    return xp.where(keep, a, xp.zeros((), dtype=a.dtype))


def _gather(a: Any, time_index: Any, valid: Any):
    """out[t, b] = a[time_index[t, b], b] where valid, else 0 (a is (T, B, ...))."""
    xp = array_module(a)
    steps, batch = a.shape[0], a.shape[1]
    idx = xp.clip(time_index, 0, steps - 1)
    return _zero_outside(a[idx, xp.arange(batch)[None, :]], valid)


def shift_to_front(a: Any, runs: MaskRuns) -> Any:
    """(T, B, ...) -> front-aligned: out[t, b] = a[s_b + t, b] for t < n_b, else 0."""
    if runs.all_full:
        return a
    xp = array_module(a)
    t, s, n = _grid(runs, xp)
    if runs.front_aligned:
        return _zero_outside(a, t < n)
    return _gather(a, t + s, t < n)


def shift_back(a: Any, runs: MaskRuns) -> Any:
    """Inverse of `shift_to_front`: out[t, b] = a[t - s_b, b] inside the run, else 0."""
    if runs.all_full:
        return a
    xp = array_module(a)
    t, s, n = _grid(runs, xp)
    if runs.front_aligned:
        return _zero_outside(a, t < n)
    return _gather(a, t - s, (t >= s) & (t < s + n))


# --- Keras's masked-step values and their adjoint --------------------------------------------


def restore_outputs(y_front: Any, h_last: Any, runs: MaskRuns,
                    zero_output_for_mask: bool) -> Any:
    """The (T, B, U) output sequence in processing order, Keras's masked-step values included.

    y_front: (T, B, U) outputs of a front-aligned run (only t < n_b is read).
    h_last:  (B, U) output at each sample's last valid step (cuDNN's hy).
    """
    if runs.all_full:
        return y_front
    xp = array_module(y_front)
    seq = shift_back(y_front, runs)
    if not zero_output_for_mask:
        t, s, n = _grid(runs, xp)
        after = (t >= s + n)[:, :, None]
        seq = xp.where(after, h_last[None, :, :], seq)
    return seq


def route_output_grads(d_sequence: Any, d_last: Any, runs: MaskRuns,
                       zero_output_for_mask: bool, like: Any) -> tuple[Any, Any]:
    """Adjoint of ``(sequence, last=sequence[-1]) = restore_outputs(y_front, h_last)``.

    d_sequence (T, B, U) and d_last (B, U) may be None (zero). `like` is a (T, B, U) array
    giving shape and dtype. Returns (dy_front (T, B, U), zero beyond each n_b; dh_last (B, U)).
    """
    xp = array_module(like)
    total = xp.zeros(like.shape, like.dtype) if d_sequence is None else d_sequence
    if d_last is not None:
        total = total.copy() if total is d_sequence else total
        total[-1] += d_last
    if runs.all_full:
        return total, xp.zeros(like.shape[1:], like.dtype)
    dy_front = shift_to_front(total, runs)
    if zero_output_for_mask:
        return dy_front, xp.zeros(like.shape[1:], like.dtype)
    t, s, n = _grid(runs, xp)
    after = (t >= s + n)[:, :, None]
    dh_last = xp.where(after, total, xp.zeros((), like.dtype)).sum(axis=0)
    return dy_front, dh_last.astype(like.dtype, copy=False)


def select_states(state_run: Any, state0: Any, runs: MaskRuns) -> Any:
    """(B, U): the run's final state, or the initial state for fully masked samples."""
    if not runs.any_empty:
        return state_run
    xp = array_module(state_run)
    empty = xp.asarray(runs.empty)[:, None]
    return xp.where(empty, state0, state_run)


def split_state_grad(d_state: Any, runs: MaskRuns) -> tuple[Any, Any]:
    """Adjoint of `select_states`: (gradient to the run's final state, to the initial state)."""
    xp = array_module(d_state)
    if not runs.any_empty:
        return d_state, xp.zeros_like(d_state)
    empty = xp.asarray(runs.empty)[:, None]
    zero = xp.zeros((), d_state.dtype)
    return xp.where(empty, zero, d_state), xp.where(empty, d_state, zero)
