"""The case grid of `lstm-gpu-check` and of the GPU tests (one list, two users).

Two kinds of case:

- `Problem`: one call of a path through the path contract (`lstm_gpu.paths.base`): shapes,
  mask kind, initial states, dropout masks, activations, bias. Every path gets the same
  arrays, dropout masks included, so dropout is compared exactly.
- `LayerCase`: calls of the public `LSTM` (or `Bidirectional`) with one configuration:
  output modes, go_backwards, time_major, initial states, stateful carry over several calls;
  plus, in the "dispatch" group, configurations the dispatcher keeps off cuDNN.

Each case has a tier: "quick" cases run with ``--quick``, "default" ones in a plain run,
"full" ones only in the GPU tests (larger and longer shapes, every Bidirectional merge mode).
`path_problems(tier)` and `layer_cases(tier)` give every case of that tier and below.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Optional

TIERS = ("quick", "default", "full")

# Mask kinds, as (T, B) masks in processing order (`data.make_mask` draws them):
#   none          every step valid
#   right         right-padded: lengths 1..T, valid steps first
#   left          left-padded (Keras's pad_sequences default; a right-padded mask under
#                 go_backwards)
#   both          one contiguous run per row anywhere: right-, left- and both-side-padded rows
#   holes         right-padded rows with a masked step between valid ones (not one run)
#   fully_masked  right- and left-padded rows, about a third of them with no valid step
#   all_masked    no valid step at all
MASK_KINDS = ("none", "right", "left", "both", "holes", "fully_masked", "all_masked")


@dataclass(frozen=True)
class Shape:
    steps: int
    batch: int
    features: int
    units: int

    def __str__(self) -> str:
        return f"T{self.steps} B{self.batch} F{self.features} U{self.units}"


SHAPES = {
    "tiny": Shape(1, 1, 1, 1),
    "small": Shape(7, 5, 3, 4),
    "odd": Shape(17, 9, 13, 33),
    "single": Shape(50, 1, 8, 16),
    "long": Shape(200, 17, 8, 16),
    "large": Shape(40, 64, 48, 256),
}
# The shapes every path problem runs at, per tier.
TIER_SHAPES = {
    "quick": ("small",),
    "default": ("tiny", "small", "odd"),
    "full": ("tiny", "small", "odd", "single", "long", "large"),
}


def mask_fits(kind: str, shape: Shape) -> bool:
    """Whether a mask kind can be drawn at this shape (a hole needs three steps, a fully
    masked row beside valid ones two samples)."""
    if kind in ("both", "holes"):
        return shape.steps >= 3
    if kind == "fully_masked":
        return shape.batch >= 2
    return True


def _tier_index(tier: str) -> int:
    if tier not in TIERS:
        raise ValueError(f"unknown tier {tier!r}; expected one of {', '.join(TIERS)}")
    return TIERS.index(tier)


@dataclass(frozen=True)
class Problem:
    """One path call: x (T, B, F) time-major in processing order, as the paths see it."""

    group: str
    name: str
    shape: Shape
    mask: str = "none"
    initial_state: bool = True  # random h0, c0; else zeros
    zero_output_for_mask: bool = False
    input_dropout: int = 0  # input masks: 0, 1 (implementation 2) or 4 (one per gate)
    recurrent_dropout: bool = False  # four recurrent masks (implementation 1)
    use_bias: bool = True
    activation: str = "tanh"
    recurrent_activation: str = "sigmoid"
    tier: str = "default"

    @property
    def implementation(self) -> int:
        """1 with per-gate masks (recurrent dropout or four input masks), else 2."""
        return 1 if self.recurrent_dropout or self.input_dropout == 4 else 2

    @property
    def label(self) -> str:
        return f"{self.group}/{self.name} {self.shape}"

    def __str__(self) -> str:
        return self.label

    def spec(self):
        """The `CellSpec` of this problem."""
        from .. import activations
        from ..paths.base import CellSpec

        return CellSpec(units=self.shape.units, activation=activations.get(self.activation),
                        recurrent_activation=activations.get(self.recurrent_activation),
                        use_bias=self.use_bias, zero_output_for_mask=self.zero_output_for_mask,
                        implementation=self.implementation)


def _problem(group: str, name: str, tier: str = "default", **options: Any) -> Problem:
    return Problem(group, name, SHAPES["small"], tier=tier, **options)


# Every path problem, at the "small" shape; `path_problems` puts them at each tier's shapes.
PROBLEMS = (
    _problem("masks", "no mask", "quick"),
    _problem("masks", "right-padded", "quick", mask="right"),
    _problem("masks", "left-padded", "quick", mask="left"),
    _problem("masks", "one run anywhere", mask="both"),
    _problem("masks", "holes", "quick", mask="holes"),
    _problem("masks", "fully masked rows", "quick", mask="fully_masked"),
    _problem("masks", "all masked", mask="all_masked"),
    _problem("states", "zero initial state", "quick", mask="right", initial_state=False),
    _problem("states", "zero_output_for_mask, holes", mask="holes", zero_output_for_mask=True),
    _problem("states", "zero_output_for_mask, fully masked rows", mask="fully_masked",
             zero_output_for_mask=True),
    _problem("dropout", "input, implementation 2", "quick", mask="left", input_dropout=1),
    _problem("dropout", "input, implementation 2, fully masked rows", mask="fully_masked",
             input_dropout=1),
    _problem("dropout", "input, implementation 1", mask="right", input_dropout=4),
    _problem("dropout", "input and recurrent", input_dropout=4, recurrent_dropout=True),
    _problem("dropout", "recurrent, gelu", recurrent_dropout=True, activation="gelu"),
    _problem("dropout", "recurrent, hard_sigmoid, no bias, holes", mask="holes",
             input_dropout=4, recurrent_dropout=True, use_bias=False,
             recurrent_activation="hard_sigmoid"),
    _problem("activations", "relu / hard_sigmoid_keras2", "quick", mask="left",
             activation="relu", recurrent_activation="hard_sigmoid_keras2",
             zero_output_for_mask=True),
    _problem("activations", "use_bias=False", mask="right", use_bias=False),
)


def path_problems(tier: str = "default") -> list[Problem]:
    """Every problem of `tier` and below, at each of the tier's shapes, in grid order."""
    level = _tier_index(tier)
    out = []
    for problem in PROBLEMS:
        if _tier_index(problem.tier) > level:
            continue
        for shape_name in TIER_SHAPES[tier]:
            shape = SHAPES[shape_name]
            if mask_fits(problem.mask, shape):
                out.append(replace(problem, shape=shape))
    return out


# ------------------------------------------------------------------------------ layer cases

NO_WRAPPER = "lstm"  # `LayerCase.wrapper` for a plain LSTM


@dataclass(frozen=True)
class LayerCase:
    """Calls of a layer built from `config` (keyword arguments of `LSTM`).

    wrapper: "lstm", or "bidirectional" (`Bidirectional(LSTM(...), merge_mode)`).
    calls: how many calls in a row (more than one with ``stateful=True``: the states carry).
    Every call is a training call followed by `backward` with random output gradients.
    """

    group: str
    name: str
    config: tuple = ()  # LSTM keyword arguments as (name, value) pairs
    mask: str = "none"
    initial_state: bool = False
    calls: int = 1
    wrapper: str = NO_WRAPPER
    merge_mode: Optional[str] = "concat"
    shape: Shape = field(default=SHAPES["small"])
    tier: str = "default"

    @property
    def options(self) -> dict:
        return dict(self.config)

    @property
    def time_major(self) -> bool:
        return bool(self.options.get("time_major", False))

    @property
    def label(self) -> str:
        return f"{self.group}/{self.name}"

    def __str__(self) -> str:
        return self.label


def _layer(group: str, name: str, tier: str = "default", config: Optional[dict] = None,
           **fields: Any) -> LayerCase:
    return LayerCase(group, name, tuple(sorted((config or {}).items())), tier=tier, **fields)


_BIDIRECTIONAL_FULL = tuple(
    _layer("layer", f"Bidirectional {mode or 'no merge'}, every output, {mask}", "full",
           dict(return_sequences=True, return_state=True), mask=mask, initial_state=True,
           wrapper="bidirectional", merge_mode=mode)
    for mode in ("concat", "sum", "mul", "ave", None) for mask in ("none", "right", "left"))

LAYER_CASES = (
    _layer("layer", "last output", "quick"),
    _layer("layer", "return_sequences, right-padded", config=dict(return_sequences=True),
           mask="right"),
    _layer("layer", "return_state, initial state, left-padded", "quick",
           dict(return_sequences=True, return_state=True), mask="left", initial_state=True),
    _layer("layer", "go_backwards, right-padded", config=dict(go_backwards=True,
                                                              return_sequences=True),
           mask="right"),
    _layer("layer", "time_major, go_backwards, left-padded",
           config=dict(time_major=True, go_backwards=True, return_sequences=True), mask="left"),
    _layer("layer", "stateful carry over 3 calls", "quick",
           dict(stateful=True, return_sequences=True, return_state=True), calls=3),
    _layer("layer", "zero_output_for_mask, fully masked rows",
           config=dict(return_sequences=True, zero_output_for_mask=True), mask="fully_masked"),
    _layer("layer", "Bidirectional concat, left-padded", "quick",
           dict(return_sequences=True), mask="left", wrapper="bidirectional"),
    _layer("layer", "Bidirectional no merge, return_state, initial state",
           config=dict(return_state=True), initial_state=True, wrapper="bidirectional",
           merge_mode=None, mask="right"),
    *_BIDIRECTIONAL_FULL,
    # The dispatcher's group: calls "auto" keeps off cuDNN (or not), with the reason.
    _layer("dispatch", "activation relu", config=dict(activation="relu",
                                                      return_sequences=True), mask="right"),
    _layer("dispatch", "mask with holes", "quick", dict(return_sequences=True), mask="holes"),
    _layer("dispatch", "use_bias=False", config=dict(use_bias=False)),
    _layer("dispatch", "recurrent_activation hard_sigmoid",
           config=dict(recurrent_activation="hard_sigmoid")),
    _layer("dispatch", "unroll=True", config=dict(unroll=True), mask="left"),
    _layer("dispatch", "Bidirectional, holes", config=dict(return_sequences=True),
           mask="holes", wrapper="bidirectional"),
)


def layer_cases(tier: str = "default", group: Optional[str] = None) -> list[LayerCase]:
    """Every layer case of `tier` and below (of one group when given), in grid order."""
    level = _tier_index(tier)
    return [c for c in LAYER_CASES if _tier_index(c.tier) <= level
            and (group is None or c.group == group)]
