"""The case grid of lstm-gpu-check and the GPU tests (`lstm_gpu.check.grid` and `.data`):
every mask kind is what its name says, tiers nest, data is reproducible and rounded once."""
from __future__ import annotations

import numpy as np
import pytest

from lstm_gpu.check import data, grid
from lstm_gpu.paths.masking import has_fully_masked_sample, is_one_run_per_row


def _runs(mask_tb):
    """(start, length) of every row's valid steps, or None for a row that is not one run."""
    out = []
    for row in mask_tb.T:
        idx = np.flatnonzero(row)
        if idx.size == 0:
            out.append((row.size, 0))
        elif idx[-1] - idx[0] + 1 == idx.size:
            out.append((int(idx[0]), int(idx.size)))
        else:
            out.append(None)
    return out


@pytest.mark.parametrize("shape", [grid.Shape(7, 5, 3, 4), grid.Shape(17, 9, 1, 1),
                                   grid.Shape(3, 2, 1, 1), grid.Shape(200, 17, 1, 1)])
@pytest.mark.parametrize("kind", grid.MASK_KINDS)
def test_mask_kinds_are_what_they_say(kind, shape):
    if not grid.mask_fits(kind, shape):
        pytest.skip(f"{kind} cannot be drawn at {shape}")
    T, B = shape.steps, shape.batch
    mask = data.make_mask(kind, T, B, np.random.default_rng(0))
    if kind == "none":
        assert mask is None
        return
    assert mask.shape == (T, B) and mask.dtype == bool
    runs = _runs(mask)
    if kind == "all_masked":
        assert not mask.any()
        return
    assert runs[0] == (0, T) or kind in ("holes",)  # the longest sequence spans T
    if kind == "right":
        assert all(r[0] == 0 and r[1] >= 1 for r in runs)
    elif kind == "left":
        assert all(r[0] + r[1] == T and r[1] >= 1 for r in runs)
    elif kind == "both":
        assert all(r is not None and r[1] >= 1 for r in runs)
    elif kind == "holes":
        assert not is_one_run_per_row(mask.T)
        assert mask[0].all()  # every row starts valid
    elif kind == "fully_masked":
        assert has_fully_masked_sample(mask.T) and mask.any(axis=0).sum() >= 1
        assert is_one_run_per_row(mask.T)
        assert any(r[0] > 0 for r in runs if r[1]) or B < 3  # left-padded rows too


def test_tiers_nest_and_labels_are_unique():
    quick, default, full = (grid.path_problems(t) for t in grid.TIERS)
    assert set(quick) <= set(default) <= set(full)
    assert len({p.label for p in full}) == len(full)
    layers = [grid.layer_cases(t) for t in grid.TIERS]
    assert set(layers[0]) <= set(layers[1]) <= set(layers[2])
    assert len({c.label for c in layers[2]}) == len(layers[2])
    groups = {p.group for p in quick}
    assert groups == {"masks", "states", "dropout", "activations"}  # --quick covers each
    assert {c.group for c in layers[0]} == {"layer", "dispatch"}
    with pytest.raises(ValueError, match="tier"):
        grid.path_problems("everything")


def test_every_problem_fits_its_shape():
    for p in grid.path_problems("full"):
        assert grid.mask_fits(p.mask, p.shape), p
        assert p.implementation == (1 if p.recurrent_dropout or p.input_dropout == 4 else 2)
        spec = p.spec()
        assert spec.units == p.shape.units and spec.use_bias == p.use_bias


def test_problem_data_is_reproducible_and_rounded_once():
    problem = next(p for p in grid.path_problems("default") if p.input_dropout == 4
                   and p.recurrent_dropout and not p.use_bias)
    a = data.problem_data(problem, np.float32)
    b = data.problem_data(problem, np.float32)
    exact = data.problem_data(problem, np.float64)
    for name in ("x", "h0", "c0", "d_last", "d_sequence", "d_h", "d_c"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
        assert getattr(a, name).dtype == np.float32
        # the float32 data is the float64 data rounded: same draw, one rounding
        np.testing.assert_array_equal(getattr(a, name), getattr(exact, name).astype(np.float32))
    assert a.weights.bias is None and a.dropout.inputs.shape == (4, 5, 3)
    assert set(np.unique(a.dropout.recurrent)) <= {0.0, 1.0 / data.KEEP}
    up = a.cast(np.float64)
    assert up.x.dtype == np.float64 and up.mask is a.mask
    np.testing.assert_array_equal(up.weights.kernel, a.weights.kernel.astype(np.float64))


def test_layer_data_follows_the_case():
    case = next(c for c in grid.layer_cases("default") if c.time_major)
    d = data.layer_data(case, "float16")
    T, B, F, U = (case.shape.steps, case.shape.batch, case.shape.features, case.shape.units)
    assert d.inputs[0].shape == (T, B, F) and d.mask.shape == (T, B)
    assert d.inputs[0].dtype == np.float16 and len(d.weights) == 3
    bi = next(c for c in grid.layer_cases("default") if c.wrapper == "bidirectional"
              and c.initial_state)
    d = data.layer_data(bi, "float32")
    assert len(d.weights) == 6 and len(d.initial_state) == 4
    stateful = next(c for c in grid.layer_cases("default") if c.calls > 1)
    d = data.layer_data(stateful, "float32").cast(np.float64)
    assert len(d.inputs) == stateful.calls
    up = d.upstream(1, [(B, U), (B, T, U)])
    assert [u.shape for u in up] == [(B, U), (B, T, U)] and up[0].dtype == np.float64
    # rounded to the checked dtype, held in float64
    np.testing.assert_array_equal(up[0], up[0].astype(np.float32).astype(np.float64))
    np.testing.assert_array_equal(up[0], d.upstream(1, [(B, U)])[0])
