"""Hypothesis strategies that draw a whole consistency example: a network, its training setup,
and the exact inputs and initial parameters, adversarial values included.

    from scenarios.strategies import examples
    @given(examples())
    def test_...(example): run(example.scenario, backends, state0=example.state0, data=example.data)

An :class:`Example` holds the :class:`harness.spec.scenario.Scenario` (built by
:func:`harness.spec.scenario.build_scenario`, name ``"hypothesis"``), the initial parameters ``state0``
(``W1``, ``b1``, ``gamma2``, ``beta2``, ``srelu3`` …) and one ``(X, T)`` per step, as explicit
float64 arrays whose values are exact in the run's dtype (never a seed the harness expands).

What is drawn, in this order, so that Hypothesis's shrinking (integers towards their minimum,
lists towards shorter) leads to few layers, narrow layers, a small batch and few steps:

1. the batch size (1-32, mostly 1-4), dtype (float32 | float64), mode (trajectory | lockstep);
2. the output layer: its kind (any of :data:`harness.core.components.LAYERS` but
   BatchNormalization; Softmax three times as often), its parameters (LeakyReLU/AllReLU alpha
   in (0, 1), ELU alpha, SReLU al, tl, ar, tr with tl < tr), width (1-32, mostly 1-8), weight
   initializer, optimizer (per layer, sometimes per parameter:
   ``W=Momentum(0.9),b=Nesterov(0.5)``); a loss compatible with it (:func:`losses_for`); the
   learning rate; the input width;
3. the hidden layers, as a list (0-3), each drawn like the output layer and sometimes followed
   by a BatchNormalization layer (so BatchNormalization is never first nor last; up to 4 layers
   in all);
4. the steps, as a list (1-10, mostly 1-3): per step a recipe for X and one for T;
5. adversarial tricks, as a list (:data:`TRICKS`): zero weight rows (Z exactly equal to the
   bias, so exactly on a ReLU-family kink, or on SReLU's tl/tr as held in the run's dtype),
   constant columns under BatchNormalization (drawn with each BatchNormalization layer), zeroed
   samples and input columns, duplicated samples, logits pushed to the limit, targets tied
   exactly (AbsoluteError's kink) or nearly with Y.

Arrays are drawn as shape-free *recipes* (:mod:`scenarios.recipes`) with the layer or step they
belong to: a pattern (the initializer's distribution, Gaussian, uniform, a dyadic grid, small
integers - exact sums, exact zeros and ties - or a constant), a seed for NumPy, a scale and up
to three special elements (0, +-1, tiny and large magnitudes) - so deleting a layer or a step
deletes its values too. Targets suit the loss: one-hot, soft (Dirichlet rows, non one-hot), binary or real. The example stores
the arrays themselves, exact in the run's dtype.

By construction (``_normalize``, on the oracle's forward definitions evaluated in float64) a
float32 run cannot overflow: every layer's pre-activation stays within :data:`VALUE_LIMIT`
(Softmax/LogSoftmax logits within :data:`LOGIT_LIMIT`, where the libraries' unstable softmax is
exact) on every batch, and a float64 dry run of every step (the autodiff oracle, when torch is
installed) must stay finite and within :data:`DRY_LIMIT`; the learning rate is divided by 10 (up
to three times) until it does, else the example is rejected (rarely). Subnormal magnitudes are avoided (JAX flushes them:
docs/findings.md #4).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from hypothesis import assume
from hypothesis import strategies as st

from harness.core.components import DTYPES, INITIALIZERS, LAYERS, LOSSES, MODES, OPTIMIZERS, SRELU_PARAMS, from_file
from harness.oracle.definitions import numpy_activation, numpy_batch_normalization, numpy_row_function
from harness.spec.flags import flags as spec_flags
from harness.spec.scenario import DataSpec, Scenario, build_scenario, call_text, number_text
from harness.spec.state import as_dtype
from scenarios.recipes import POSITION, TARGET, TINY, Recipe, array, many, recipe, targets

NAME = "hypothesis"
# The kinds and losses are read from the catalogue when drawn, so that custom components
# (harness.core.components.register: ELU, AbsoluteError, a user's) are drawn like Nerva's own.
_GENERAL = ("SquaredError", "SoftmaxCrossEntropy", "LogisticCrossEntropy")


def losses_for(kind: str) -> tuple[str, ...]:
    """The losses that make sense after an output layer of this kind (first = what a failing
    example shrinks to). CrossEntropy and NegativeLogLikelihood take probabilities: only after a
    Softmax output. A custom loss (AbsoluteError, a user's) goes wherever SquaredError does."""
    custom = tuple(name for name, kind_ in LOSSES.items() if kind_.source)
    if kind == "Softmax":
        return ("CrossEntropy", "NegativeLogLikelihood")
    if kind == "LogSoftmax":
        return _weighted(("SoftmaxCrossEntropy", "SquaredError", *custom))
    return _weighted((*_GENERAL[:1], *custom, *_GENERAL[1:]))


def _weighted(names: tuple[str, ...]) -> tuple[str, ...]:
    """``names``, with the components of a user's file (``--components``) as often as all others
    together: a search with them is a search for their defects."""
    mine = tuple(n for n in names if from_file(n))
    return names + mine * max(1, (len(names) - len(mine)) // len(mine)) if mine else names


def _hidden_kinds() -> tuple[str, ...]:
    return _weighted(tuple(k for k in LAYERS if k != "BatchNormalization"))  # Linear first


def _output_kinds() -> tuple[str, ...]:
    return _hidden_kinds() + ("Softmax", "Softmax")  # a classification head more often: CrossEntropy, NLL need it

# Magnitudes, per dtype (see the module docstring). Tiny and large values are drawn, but within
# the range where the libraries' unstable formulas are still correct implementations: beyond it
# an example mostly finds overflow that every backend shares, not a backend defect.
X_SCALES = {"float32": (1.0, 0.1, 10.0, 1e-3), "float64": (1.0, 0.1, 10.0, 1e-3, 100.0)}
LARGE = {"float32": 100.0, "float64": 1e3}  # the "large" special element of X
PARAM_LARGE = {"float32": 10.0, "float64": 10.0}  # ... of W, b, gamma, beta
PARAM_LIMIT = {"float32": 1e3, "float64": 1e4}  # |W|, |b|
VALUE_LIMIT = {"float32": 100.0, "float64": 1e3}  # |Z| of every layer on every batch (step 0 parameters)
LOGIT_LIMIT = {"float32": 15.0, "float64": 30.0}  # |Z| of Softmax/LogSoftmax layers
DRY_LIMIT = {"float32": 1e3, "float64": 1e5}  # every tensor of the float64 dry run (loss, DY: finite)

TRICKS = ("zero-row", "kink-tie", "constant-bn-column", "zero-sample", "zero-column", "duplicate-rows",
          "large-logits", "tie-target")


class Size(NamedTuple):
    """How big an example is: what shrinking minimises."""

    layers: int
    width: int  # the largest width (input width included)
    batch: int
    steps: int

    def __str__(self) -> str:
        return f"{self.layers} layer(s), width <= {self.width}, batch {self.batch}, {self.steps} step(s)"


@dataclass
class Example:
    """One drawn example: the scenario and the explicit values a run starts from."""

    scenario: Scenario
    state0: dict[str, np.ndarray]
    data: list[tuple[np.ndarray, np.ndarray]]
    tricks: tuple[str, ...] = ()  # the adversarial constructions used (for reporting)

    @property
    def size(self) -> Size:
        sc = self.scenario
        return Size(len(sc.layers), max(sc.sizes), sc.batch_size, sc.steps)

    @property
    def weight(self) -> tuple:
        """A total order, smallest first: the size, then how many numbers the example holds."""
        numbers = sum(a.size for a in self.state0.values()) + sum(X.size + T.size for X, T in self.data)
        return (*self.size, numbers)

    def flags(self) -> dict[str, str]:
        """The Nerva-style flags of the scenario (the values come from state0/data, not a seed)."""
        shown = spec_flags(self.scenario)
        return {name.replace("-", "_"): shown[name] for name in ("layers", "sizes", "optimizers", "init-weights", "loss",
                                                                 "learning-rate", "batch-size", "steps", "dtype", "mode")}

    def describe(self, arrays: bool = True) -> str:
        lines = [f"{k}: {v}" for k, v in self.flags().items()]
        lines.append(f"size: {self.size}")
        if self.tricks:
            lines.append(f"tricks: {', '.join(self.tricks)}")
        if arrays:
            with np.printoptions(precision=17, floatmode="unique", linewidth=110, threshold=400):
                for k, v in self.state0.items():
                    lines.append(f"{k} = {np.array2string(v, separator=', ')}")
                for s, (X, T) in enumerate(self.data):
                    lines.append(f"X[step {s}] = {np.array2string(X, separator=', ')}")
                    lines.append(f"T[step {s}] = {np.array2string(T, separator=', ')}")
        return "\n".join(lines)

    def __repr__(self) -> str:  # what Hypothesis prints as the falsifying example
        return "Example(\n  " + self.describe().replace("\n", "\n  ") + "\n)"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # Hypothesis's pretty-printer
        printer.text(repr(self))


# --------------------------------------------------------------------------------- helpers

def _count(lo: int, typical: int, hi: int) -> st.SearchStrategy[int]:
    """Mostly in [lo, typical], about one in eight draws in [lo, hi]; shrinks towards lo."""

    @st.composite
    def draw_count(draw: Any) -> int:
        wide = draw(st.integers(0, 7)) == 7
        return draw(st.integers(lo, hi if wide else typical))

    return draw_count()



def _nice(values: list[float], lo: float, hi: float) -> st.SearchStrategy[float]:
    """A few readable values first (what shrinking reaches), sometimes any float in [lo, hi]."""
    return st.one_of(st.sampled_from(values),
                     st.floats(lo, hi, allow_nan=False, allow_infinity=False, allow_subnormal=False))


def _exact(value: float, dtype: str) -> float:
    return float(np.asarray(value, dtype=np.float64).astype(dtype))


def _kink_points(kind: str, args: dict[str, float], dtype: str) -> list[float]:
    """Where this layer's activation is not differentiable, as held in the run's dtype."""
    return [_exact(args[k.at] if isinstance(k.at, str) else k.at, dtype) for k in LAYERS[kind].kinks]


def _forward(kind: str, args: dict[str, float], Z: np.ndarray) -> np.ndarray:
    """A layer's output in float64 from its pre-activation, by the oracle's definitions (only used
    to keep magnitudes in range): the row functions in their stable forms."""
    if kind == "Linear":
        return Z
    if LAYERS[kind].row:
        return numpy_row_function("stable_softmax" if kind == "Softmax" else "stable_log_softmax", Z)
    return numpy_activation(kind, args, Z)



# --------------------------------------------------------------------------------- the network

W_PATTERNS = ("init", "grid", "integers", "normal")
B_PATTERNS = ("zeros", "normal", "grid")
X_PATTERNS = ("normal", "grid", "integers", "uniform", "constant")


@dataclass
class _Layer:
    kind: str
    args: dict[str, float]
    units: int = 0
    init: str | None = None
    optimizer: str = "GradientDescent"
    recipes: tuple[Recipe, ...] = ()  # W, b (linear) or gamma, beta (BatchNormalization)
    constant_column: int | None = None  # BatchNormalization: make this input column constant (a selector)


# Every draw below happens whatever the earlier choices were (the values not needed are simply
# not used), so that shrinking one choice - a kind, an optimizer, a flag - never shifts the
# meaning of the choices after it.

def _optimizer(draw: Any) -> str:
    name = draw(st.sampled_from(tuple(OPTIMIZERS)))  # GradientDescent first
    mu = draw(_nice([0.9, 0.5, 0.0, 0.99], 0.0, 0.99))
    return f"{name}({number_text(mu)})" if OPTIMIZERS[name] else name


def _layer_optimizer(draw: Any, kind: str) -> str:
    per_parameter = draw(st.integers(0, 3)) == 3  # sometimes one optimizer per parameter
    chosen = [_optimizer(draw) for _ in range(3)]
    if per_parameter:
        return ",".join(f"{p}={opt}" for p, opt in zip(LAYERS[kind].trainable, chosen))
    return chosen[0]


def _layer_args(draw: Any, kind: str) -> dict[str, float]:
    alpha = draw(_nice([0.5, 0.25, 0.1, 0.3, 0.01], 0.001, 0.999))  # LeakyReLU, AllReLU: in (0, 1)
    factor = draw(_nice([1.0, 0.5, 0.1, 2.0], 0.05, 2.0))  # a custom component's parameters: default x factor
    al = draw(_nice([0.0, 0.125, 0.25, 0.5], 0.0, 1.0))
    ar = draw(_nice([0.0, 0.125, 0.375, 0.5], 0.0, 1.0))
    tl = draw(_nice([0.0, -0.25, -1.0, -0.5], -2.0, 1.0))
    gap = draw(_nice([1.0, 0.5, 0.25, 2.0], 0.25, 3.0))
    if kind in ("LeakyReLU", "AllReLU"):
        return {"alpha": alpha}
    if kind == "SReLU":
        return {"al": al, "tl": tl, "ar": ar, "tr": tl + gap}
    return {name: factor * (1.0 if default is None else default) for name, default in LAYERS[kind].params.items()}




def _linear_layer(kinds: tuple[str, ...], width: st.SearchStrategy[int]) -> st.SearchStrategy[_Layer]:
    @st.composite
    def draw_layer(draw: Any) -> _Layer:
        kind = draw(st.sampled_from(kinds))
        layer = _Layer(kind, _layer_args(draw, kind))
        layer.units = draw(width)
        layer.init = draw(st.sampled_from(_weighted(tuple(INITIALIZERS))))
        layer.optimizer = _layer_optimizer(draw, kind)
        layer.recipes = (draw(recipe(W_PATTERNS, (1.0, 0.1, 3.0))), draw(recipe(B_PATTERNS, (1.0, 0.1, 0.01))))
        return layer

    return draw_layer()


@st.composite
def _batch_norm_layer(draw: Any) -> _Layer:
    layer = _Layer("BatchNormalization", {})
    layer.optimizer = _layer_optimizer(draw, "BatchNormalization")
    layer.recipes = (draw(recipe(("ones", "uniform", "normal"), (1.0, 0.5, 2.0))),
                     draw(recipe(("zeros", "normal"), (1.0, 0.1, 2.0))))
    column = draw(POSITION)
    if draw(st.booleans()):  # a constant input column for about one in two
        layer.constant_column = column
    return layer


def _hidden_layer(width: st.SearchStrategy[int]) -> st.SearchStrategy[list[_Layer]]:
    """A hidden layer, sometimes followed by a BatchNormalization layer (never first, never last)."""

    @st.composite
    def draw_hidden(draw: Any) -> list[_Layer]:
        layer = draw(_linear_layer(_hidden_kinds(), width))
        bn = draw(_batch_norm_layer())
        return [layer, bn] if draw(st.integers(0, 4)) == 4 else [layer]

    return draw_hidden()


class _Trick(NamedTuple):
    name: str
    selectors: tuple[int, int, int]  # which layer / unit / sample / column, modulo what exists
    exact: bool


_TRICK = st.builds(_Trick, st.sampled_from(tuple(t for t in TRICKS if t != "constant-bn-column")),  # that one:
                   st.tuples(POSITION, POSITION, POSITION), st.booleans())  # per BatchNormalization layer


class _Drawn(NamedTuple):
    """Every choice of an example, drawn before any array is made."""

    N: int
    dtype: str
    mode: str
    layers: list[_Layer]
    loss: str
    lr: float
    D0: int
    steps: list[tuple[Recipe, Any]]  # per step: the recipe of X, that of T
    tricks: list[_Trick]


def _draw(draw: Any, max_layers: int, max_width: int, max_batch: int, max_steps: int,
          dtypes: tuple[str, ...], modes: tuple[str, ...], adversarial: bool) -> _Drawn:
    """Every choice, in the order of the module docstring (what shrinking relies on)."""
    # 1. the batch size, dtype and mode
    N = draw(_count(1, min(4, max_batch), max_batch))
    dtype = draw(st.sampled_from(dtypes))
    mode = draw(st.sampled_from(modes))
    # 2. the network: the output layer (with the loss it allows), then the hidden layers as a list
    width = _count(1, min(8, max_width), max_width)
    output = draw(_linear_layer(_output_kinds(), width))
    loss = draw(st.sampled_from(losses_for(output.kind)))
    lr = draw(_nice([0.01, 0.1, 0.001, 0.5, 1.0], 1e-4, 1.0))
    D0 = draw(width)
    hidden = many(draw, _hidden_layer(width), 0, max_layers - 1)
    layers: list[_Layer] = []
    for group in hidden:
        for layer in group:
            if len(layers) < max_layers - 1:
                layers.append(layer)
    layers.append(output)
    # 3. the steps, as a list: each one batch (X) and its targets (T)
    long_run = draw(st.integers(0, 7)) == 7
    steps = many(draw, st.tuples(recipe(X_PATTERNS, X_SCALES[dtype]), TARGET), 1,
                 max_steps if long_run else min(3, max_steps))
    # 4. the adversarial tricks
    tricks = many(draw, _TRICK, 0, 3) if adversarial else []
    return _Drawn(N, dtype, mode, layers, loss, lr, D0, steps, tricks)


def _parameters(layers: list[_Layer], D0: int, dtype: str) -> tuple[dict[str, np.ndarray], list[int]]:
    """(the initial parameters in the harness's names, the layer sizes)."""
    sizes = [D0]
    state: dict[str, np.ndarray] = {}
    width_in = D0
    for i, layer in enumerate(layers, 1):
        if layer.kind == "BatchNormalization":
            layer.units = width_in
            state[f"gamma{i}"] = array(layer.recipes[0], (width_in,), dtype, PARAM_LARGE[dtype])
            state[f"beta{i}"] = array(layer.recipes[1], (width_in,), dtype, PARAM_LARGE[dtype])
            continue
        D, K = width_in, layer.units
        dist, scale = INITIALIZERS[layer.init or "XavierNormal"]
        state[f"W{i}"] = array(layer.recipes[0], (K, D), dtype, PARAM_LARGE[dtype], init=(dist, scale(D, K)))
        state[f"b{i}"] = array(layer.recipes[1], (K,), dtype, PARAM_LARGE[dtype])
        if layer.kind == "SReLU":
            a = layer.args
            state[f"srelu{i}"] = as_dtype(np.array([a["al"], a["tl"], a["ar"], a["tr"]]), dtype)
        sizes.append(K)
        width_in = K
    return state, sizes


class _Tricks:
    """The adversarial constructions, applied to the parameters and batches in place."""

    def __init__(self, drawn: _Drawn, state: dict[str, np.ndarray], xs: list[np.ndarray]) -> None:
        self.drawn, self.state, self.xs = drawn, state, xs
        self.layers, self.dtype = drawn.layers, drawn.dtype
        self.applied: list[str] = []
        self.tie_targets: list[tuple[int, int]] = []  # (output unit, step or -1 for all): T tied to Y there
        self.linear_at = [i for i, layer in enumerate(self.layers, 1) if LAYERS[layer.kind].has_weights]

    def zero_row(self, i: int, k: int, bias: float) -> None:  # Z[:, k] == b[k] exactly, for every sample
        self.state[f"W{i}"][k, :] = 0.0
        self.state[f"b{i}"][k] = _exact(bias, self.dtype)

    def constant_bn_columns(self) -> None:
        for j, layer in enumerate(self.layers, 1):
            if layer.kind == "BatchNormalization" and layer.constant_column is not None:
                i = max(li for li in self.linear_at if li < j)
                k = layer.constant_column % self.layers[i - 1].units
                self.zero_row(i, k, [0.625, 0.0, 0.1, 3.0, -1.5][layer.constant_column % 5])
                self.applied.append(f"constant-bn-column X{j}[:, {k}]")

    def apply(self, trick: _Trick) -> None:
        method = getattr(self, "_" + trick.name.replace("-", "_"))
        method(*trick.selectors, trick.exact)

    def _zero_row(self, s0: int, s1: int, s2: int, exact: bool) -> None:
        i = self.linear_at[s0 % len(self.linear_at)]
        k = s1 % self.layers[i - 1].units
        layer = self.layers[i - 1]
        choices = [0.0, *_kink_points(layer.kind, layer.args, self.dtype), 1.0, -1.0, TINY[self.dtype]]
        self.zero_row(i, k, choices[s2 % len(choices)])
        self.applied.append(f"zero-row W{i}[{k}]")

    def _kink_tie(self, s0: int, s1: int, s2: int, exact: bool) -> None:
        """A kinked layer whose Z sits exactly on a kink for one unit."""
        kinked = [i for i in self.linear_at if LAYERS[self.layers[i - 1].kind].kinks]
        if not kinked:
            return
        i = kinked[s0 % len(kinked)]
        k = s1 % self.layers[i - 1].units
        points = _kink_points(self.layers[i - 1].kind, self.layers[i - 1].args, self.dtype)
        point = points[s2 % len(points)]
        self.zero_row(i, k, point)
        self.applied.append(f"kink-tie Z{i}[:, {k}] = {point!r}")

    def _zero_sample(self, s0: int, s1: int, s2: int, exact: bool) -> None:
        """A sample of zeros: Z1 of that row is exactly b1."""
        s, n = s0 % len(self.xs), s1 % self.drawn.N
        self.xs[s][n, :] = 0.0
        self.applied.append(f"zero-sample X[step {s}][{n}]")

    def _zero_column(self, s0: int, s1: int, s2: int, exact: bool) -> None:
        d = s0 % self.drawn.D0
        for X in self.xs:
            X[:, d] = 0.0
        self.applied.append(f"zero-column X[:, {d}]")

    def _duplicate_rows(self, s0: int, s1: int, s2: int, exact: bool) -> None:
        N = self.drawn.N
        if N < 2:
            return
        n, m = s0 % N, s1 % N
        for X in self.xs:
            X[n] = X[m]
        self.applied.append(f"duplicate-rows X[{n}] = X[{m}]")

    def _large_logits(self, s0: int, s1: int, s2: int, exact: bool) -> None:
        """The output layer's pre-activations pushed to the limit."""
        i = self.linear_at[-1]
        factor = (1e3, 10.0, 100.0)[s0 % 3]
        self.state[f"W{i}"] = as_dtype(self.state[f"W{i}"] * factor, self.dtype)
        self.state[f"b{i}"] = as_dtype(self.state[f"b{i}"] * factor, self.dtype)
        self.applied.append(f"large-logits W{i} x {factor:g}")

    def _tie_target(self, s0: int, s1: int, s2: int, exact: bool) -> None:
        """T == Y: exactly where Y is exact (a zero row), else nearly."""
        if self.drawn.loss != "SquaredError" and not LOSSES[self.drawn.loss].source:  # the others need targets in [0, 1]
            return
        k = s0 % self.layers[-1].units
        if exact:
            self.state[f"W{len(self.layers)}"][k, :] = 0.0
        self.tie_targets.append((k, -1 if exact else s1 % len(self.xs)))
        self.applied.append(f"tie-target T[:, {k}] {'exact' if exact else 'near'}")


@st.composite
def _examples(draw: Any, max_layers: int, max_width: int, max_batch: int, max_steps: int,
              dtypes: tuple[str, ...], modes: tuple[str, ...], adversarial: bool, dry_run: bool) -> Example:
    drawn = _draw(draw, max_layers, max_width, max_batch, max_steps, dtypes, modes, adversarial)
    layers, dtype, N = drawn.layers, drawn.dtype, drawn.N
    # the arrays: parameters in the harness's names, then one batch per step
    state, sizes = _parameters(layers, drawn.D0, dtype)
    K = layers[-1].units
    xs = [array(x, (N, drawn.D0), dtype, LARGE[dtype]) for x, _ in drawn.steps]
    # the adversarial tricks
    tricks = _Tricks(drawn, state, xs)
    tricks.constant_bn_columns()
    for trick in drawn.tricks:
        tricks.apply(trick)
    state = tricks.state
    # magnitudes in range by construction, then targets (tied ones from the forward pass)
    outputs = _normalize(layers, state, xs, dtype, tricks.applied)
    ts = []
    target_kind = "onehot"
    for s, (_, t) in enumerate(drawn.steps):
        T, target_kind = targets(t, drawn.loss, N, K, dtype)
        for k, step in tricks.tie_targets:
            if step in (-1, s):
                T[:, k] = as_dtype(outputs[s][:, k], dtype)
        ts.append(T)
    data = list(zip(xs, ts))
    # the scenario, and a float64 dry run of every step
    scenario = build_scenario(
        name=NAME,
        layers=[call_text(layer.kind, layer.args) for layer in layers],
        sizes=sizes,
        optimizers=[layer.optimizer for layer in layers],
        init_weights=[layer.init for layer in layers if LAYERS[layer.kind].has_weights],
        loss=drawn.loss, lr=drawn.lr, batch_size=N, steps=len(drawn.steps),
        data=DataSpec("synthetic", "real" if target_kind == "binary" else target_kind),
        dtype=dtype, mode=drawn.mode, seed=0,
    )
    if dry_run:
        scenario = _dry_run(scenario, state, data, tricks.applied)
    return Example(scenario, state, data, tuple(tricks.applied))


def _normalize(layers: list[_Layer], state: dict[str, np.ndarray], xs: list[np.ndarray], dtype: str,
               tricks: list[str]) -> list[np.ndarray]:
    """Scale each layer's W and b down where its pre-activation would leave the limits on some
    batch; returns the float64 forward output of every batch (for tied targets)."""
    hs = [X.copy() for X in xs]
    for i, layer in enumerate(layers, 1):
        if layer.kind == "BatchNormalization":
            hs = [numpy_batch_normalization(h, state[f"gamma{i}"], state[f"beta{i}"]) for h in hs]
            continue
        W, b = state[f"W{i}"], state[f"b{i}"]
        limit = LOGIT_LIMIT[dtype] if LAYERS[layer.kind].row else VALUE_LIMIT[dtype]
        zs = [h @ W.T + b for h in hs]
        m = max(float(np.max(np.abs(z))) if z.size else 0.0 for z in zs)
        p = max(float(np.max(np.abs(W), initial=0.0)), float(np.max(np.abs(b), initial=0.0)))
        factor = min(1.0, limit / m if m > 0 else 1.0, PARAM_LIMIT[dtype] / p if p > 0 else 1.0)
        if factor < 1.0:  # the parameters themselves stay in range too
            state[f"W{i}"], state[f"b{i}"] = as_dtype(W * factor, dtype), as_dtype(b * factor, dtype)
            W, b = state[f"W{i}"], state[f"b{i}"]
            zs = [h @ W.T + b for h in hs]
            tricks.append(f"scaled W{i}, b{i} by {factor:.3g}")
        args = layer.args
        if layer.kind == "SReLU":
            args = dict(zip(SRELU_PARAMS, state[f"srelu{i}"]))
        hs = [_forward(layer.kind, args, z) for z in zs]
    return hs


def _dry_run(scenario: Scenario, state: dict[str, np.ndarray], data: list[tuple[np.ndarray, np.ndarray]],
             tricks: list[str]) -> Scenario:
    """Run every step in float64 (the autodiff oracle's forward definitions); divide the learning
    rate by 10 while some tensor leaves the limits (three times at most), else reject."""
    import adapters

    if adapters.why_oracle_unavailable("autodiff") is not None:
        return scenario
    limit = DRY_LIMIT[scenario.dtype]
    logit = 2 * LOGIT_LIMIT[scenario.dtype]
    soft = {f"Z{i}" for i, layer in enumerate(scenario.layers, 1) if LAYERS[layer.kind].row}
    for attempt in range(4):
        oracle = adapters.load_oracle("autodiff")
        oracle.build(scenario, state)
        ok = True
        for X, T in data:
            trace = oracle.step(X, T, scenario.lr)
            for key, value in trace.items():
                if key in ("loss", "DY"):  # DY = -T / (N Y) is large where a probability is small
                    ok = bool(np.all(np.isfinite(value)))
                else:
                    bound = logit if key in soft else limit
                    ok = bool(np.all(np.isfinite(value))) and (value.size == 0 or float(np.max(np.abs(value))) <= bound)
                if not ok:
                    break
            if not ok:
                break
        if ok:
            return scenario
        if attempt < 3:
            scenario = scenario.with_(lr=scenario.lr / 10)
            tricks.append(f"learning rate / 10 -> {scenario.lr:g}")
    assume(False)
    return scenario


def examples(*, max_layers: int = 4, max_width: int = 32, max_batch: int = 32, max_steps: int = 10,
             dtypes: tuple[str, ...] = DTYPES, modes: tuple[str, ...] = MODES, adversarial: bool = True,
             dry_run: bool = True) -> st.SearchStrategy[Example]:
    """Whole examples (see the module docstring). The bounds narrow the search, e.g.
    ``examples(max_layers=2, dtypes=("float64",), modes=("lockstep",))``."""
    if not (1 <= max_layers and 1 <= max_width and 1 <= max_batch and 1 <= max_steps):
        raise ValueError("the maxima must be at least 1")
    if not dtypes or set(dtypes) - set(DTYPES) or not modes or set(modes) - set(MODES):
        raise ValueError(f"dtypes from {DTYPES}, modes from {MODES}")
    return _examples(max_layers, max_width, max_batch, max_steps, tuple(dtypes), tuple(modes), adversarial, dry_run)
