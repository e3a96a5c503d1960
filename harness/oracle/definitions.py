"""The forward definitions of every Nerva component, each written once, as SymPy expressions.

Exactly as the libraries compute them (``nerva_numpy``'s layers, activations, softmax and loss
functions):

- activations of one real symbol :data:`X` (ReLU, LeakyReLU, AllReLU and SReLU as
  ``Piecewise``, their parameters as symbols too);
- row functions of ``z1..zK`` (softmax, log_softmax, and the stable forms written with a shift
  symbol ``c``: softmax(z - c), evaluated at c = max(z); their derivative with respect to ``c`` is
  identically 0, so the partial Jacobian with respect to z is the total one), as a small
  computation graph whose node is the forward's own intermediate quantity (the row sum S of
  exponentials, or its logarithm L);
- losses of one row ``y1..yK``, ``t1..tK`` (the batch loss is the sum over rows, as in Nerva);
- BatchNormalization of one column ``x1..xN`` (batch mean ``m``, biased variance ``s`` as graph
  nodes, ``Z = (x - m) / sqrt(s + epsilon)``, ``Y = gamma * Z + beta``);
- the linear element ``z = sum_d x_d w_d + b`` and the optimizer updates (GradientDescent,
  Momentum, Nesterov).

A custom component (:class:`harness.core.components.CustomActivation` / ``CustomLoss``) brings
its own definition, a function of SymPy symbols; the harness's two, :func:`elu` and
:func:`absolute_error`, are written here. :func:`activation_definition` and
:func:`loss_expression` hand every registered one out like Nerva's own.

Everything else derives from these: the exact oracle's derivatives (:mod:`harness.oracle.symbolic`,
``sp.diff``), the rounding bound (:mod:`harness.judge.walk` walks these trees), the float64 torch
transcription of the autodiff oracle (:mod:`harness.oracle.transcription`, checked against these
element by element) and the magnitudes the Hypothesis strategies keep in range (lambdified here
in NumPy: :func:`numpy_activation`, :func:`numpy_row_function`, :func:`numpy_batch_normalization`).

epsilon of BatchNormalization: Nerva adds the Python float ``BN_EPSILON``
(:mod:`harness.core.components`). The definition uses the exact value of that binary64 float,
``EPSILON = sp.Rational(BN_EPSILON)`` (a dyadic rational, not a decimal fraction). Float32
backends round it to float32 when they add it (a relative change in epsilon far below the
variance's own rounding).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np
import sympy as sp

from harness.core.components import BN_EPSILON, CUSTOM, LAYERS, LOSSES as LOSS_KINDS, SRELU_PARAMS, CustomActivation, \
    CustomLoss, resolve

EPSILON = sp.Rational(BN_EPSILON)  # the exact value of the binary64 float that Nerva adds
ACTIVATIONS = ("ReLU", "Sigmoid", "HyperbolicTangent", "LeakyReLU", "AllReLU", "SReLU")  # Nerva's own
ROW_FUNCTIONS = ("softmax", "stable_softmax", "log_softmax", "stable_log_softmax")
LOSSES = ("SquaredError", "CrossEntropy", "SoftmaxCrossEntropy", "LogisticCrossEntropy",
          "NegativeLogLikelihood")  # Nerva's own
ELEMENTWISE_LOSSES = ("SquaredError", "CrossEntropy", "LogisticCrossEntropy")  # and every custom loss
OPTIMIZERS = ("GradientDescent", "Momentum", "Nesterov")


# ---------------------------------------------------------------------------------------------
# Activations
# ---------------------------------------------------------------------------------------------

X = sp.Symbol("x", real=True)  # the argument of every activation
ALPHA = sp.Symbol("alpha", real=True)
SRELU_SYMBOLS = sp.symbols(" ".join(SRELU_PARAMS), real=True)  # al, tl, ar, tr


def activation_variant(kind: str, args: dict[str, float]) -> str:
    """Which form of the definition the parameters select (LeakyReLU: max(alpha x, x) is one of
    two Piecewise forms, depending on alpha <= 1)."""
    if kind == "LeakyReLU":
        return "alpha<=1" if float(args["alpha"]) <= 1 else "alpha>1"
    return ""


def activation_definition(kind: str, variant: str = "") -> tuple[sp.Expr, tuple[sp.Symbol, ...]]:
    """(f(x), its parameter symbols): the forward definition, as nerva_numpy.activation_functions
    computes it."""
    x, a = X, ALPHA
    al, tl, ar, tr = SRELU_SYMBOLS
    if kind == "ReLU":  # max(0, x)
        return sp.Piecewise((0, x < 0), (x, True)), ()
    if kind == "Sigmoid":  # 1 / (1 + exp(-x))
        return 1 / (1 + sp.exp(-x)), ()
    if kind == "HyperbolicTangent":
        return sp.tanh(x), ()
    if kind == "LeakyReLU":  # max(alpha x, x): which branch is the max depends on alpha <= 1
        if variant == "alpha<=1":
            return sp.Piecewise((a * x, x < 0), (x, True)), (a,)
        return sp.Piecewise((x, x < 0), (a * x, True)), (a,)
    if kind == "AllReLU":  # where(x < 0, alpha x, x)
        return sp.Piecewise((a * x, x < 0), (x, True)), (a,)
    if kind == "SReLU":  # x <= tl: tl + al (x - tl); tl < x < tr: x; x >= tr: tr + ar (x - tr)
        return sp.Piecewise((tl + al * (x - tl), x <= tl), (x, x < tr), (tr + ar * (x - tr), True)), \
            (al, tl, ar, tr)
    if isinstance(CUSTOM.get(kind), CustomActivation):
        return custom_activation_definition(kind)
    raise ValueError(f"unknown activation {kind!r}; choose one of {', '.join(ACTIVATIONS + tuple(CUSTOM))}")


def elu(x: sp.Symbol, alpha: sp.Symbol) -> sp.Expr:
    """ELU(alpha), the harness's custom activation: where(x > 0, x, alpha (exp(x) - 1))."""
    return sp.Piecewise((x, x > 0), (alpha * (sp.exp(x) - 1), True))


def custom_activation_definition(kind: str) -> tuple[sp.Expr, tuple[sp.Symbol, ...]]:
    """(f(x), its parameter symbols) of a registered custom activation: its own definition called
    with :data:`X` and one real symbol per parameter (named as the parameter)."""
    params = tuple(sp.Symbol(name, real=True) for name in LAYERS[kind].params)
    return sp.sympify(resolve(CUSTOM[kind].definition)(X, *params)), params


# ---------------------------------------------------------------------------------------------
# Row functions, BatchNormalization: small computation graphs
# ---------------------------------------------------------------------------------------------

class GraphDefinition(NamedTuple):
    """inputs -> intermediate nodes (symbol, expression) in evaluation order -> outputs; the
    parameters are held fixed (any other symbol)."""

    inputs: tuple[sp.Symbol, ...]
    params: tuple[sp.Symbol, ...]
    nodes: tuple[tuple[sp.Symbol, sp.Expr], ...]
    outputs: tuple[sp.Expr, ...]


@functools.lru_cache(maxsize=None)
def row_function_definition(name: str, K: int) -> GraphDefinition:
    """softmax / log_softmax of a row of K entries, the stable forms shifted by ``c``."""
    if name not in ROW_FUNCTIONS:
        raise ValueError(f"unknown row function {name!r}; choose one of {', '.join(ROW_FUNCTIONS)}")
    z = sp.symbols(f"z1:{K + 1}", real=True)
    c = sp.Symbol("c", real=True)  # the shift of the stable forms (evaluated at max z)
    shift = c if name.startswith("stable_") else 0
    if name.endswith("log_softmax"):  # z - c - log(sum exp(z - c))
        L = sp.Symbol("L", real=True)
        nodes = ((L, sp.log(sp.Add(*[sp.exp(zj - shift) for zj in z]))),)
        outputs = tuple(zk - shift - L for zk in z)
    else:  # exp(z - c) / sum exp(z - c)
        S = sp.Symbol("S", positive=True)
        nodes = ((S, sp.Add(*[sp.exp(zj - shift) for zj in z])),)
        outputs = tuple(sp.exp(zk - shift) / S for zk in z)
    return GraphDefinition(tuple(z), (c,), nodes, outputs)


class BatchNormDefinition(NamedTuple):
    """BatchNormalization of one column of N samples: the graph of Z (mean ``m`` and biased
    variance ``s`` as nodes, ``epsilon`` its parameter) and the affine output ``y`` of one
    element, gamma * zeta + beta."""

    graph: GraphDefinition
    x: tuple[sp.Symbol, ...]
    epsilon: sp.Symbol
    m: sp.Symbol
    s: sp.Symbol
    z: tuple[sp.Expr, ...]
    zeta: sp.Symbol
    gamma: sp.Symbol
    beta: sp.Symbol
    y: sp.Expr


@functools.lru_cache(maxsize=None)
def batch_norm_definition(N: int) -> BatchNormDefinition:
    x = sp.symbols(f"x1:{N + 1}", real=True)
    epsilon = sp.Symbol("epsilon", positive=True)
    m, s = sp.Symbol("m", real=True), sp.Symbol("s", nonnegative=True)
    nodes = ((m, sp.Add(*x) / N),  # the column mean
             (s, sp.Add(*[(xi - m) ** 2 for xi in x]) / N))  # biased variance
    z = tuple((xi - m) / sp.sqrt(s + epsilon) for xi in x)  # R * inv_sqrt(Sigma)
    gamma, beta, zeta = sp.symbols("gamma beta zeta", real=True)
    return BatchNormDefinition(GraphDefinition(tuple(x), (epsilon,), nodes, z), tuple(x), epsilon, m, s, z,
                               zeta, gamma, beta, gamma * zeta + beta)  # Y = gamma * Z + beta, per element


# ---------------------------------------------------------------------------------------------
# Losses (per row; the batch loss is the sum over rows)
# ---------------------------------------------------------------------------------------------

def loss_expression(name: str, y: Sequence[sp.Symbol], t: Sequence[sp.Symbol]) -> sp.Expr:
    """The loss of one row of outputs ``y`` and targets ``t``."""
    if name == "SquaredError":  # sum (y - t)^2
        return sp.Add(*[(yk - tk) ** 2 for yk, tk in zip(y, t)])
    if name == "CrossEntropy":  # -sum t log y
        return -sp.Add(*[tk * sp.log(yk) for yk, tk in zip(y, t)])
    if name == "SoftmaxCrossEntropy":  # -sum t log_softmax(y)
        lse = sp.log(sp.Add(*[sp.exp(yk) for yk in y]))
        return -sp.Add(*[tk * (yk - lse) for yk, tk in zip(y, t)])
    if name == "LogisticCrossEntropy":  # -sum t log(sigmoid(y))
        return -sp.Add(*[tk * sp.log(1 / (1 + sp.exp(-yk))) for yk, tk in zip(y, t)])
    if name == "NegativeLogLikelihood":  # -log(sum y t)
        return -sp.log(sp.Add(*[yk * tk for yk, tk in zip(y, t)]))
    if isinstance(CUSTOM.get(name), CustomLoss):  # the sum of its elements' losses
        element = resolve(CUSTOM[name].definition)
        return sp.Add(*[sp.sympify(element(yk, tk)) for yk, tk in zip(y, t)])
    raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOSS_KINDS)}")


def absolute_error(y: sp.Symbol, t: sp.Symbol) -> sp.Expr:
    """AbsoluteError, the harness's custom loss, of one element: |y - t|."""
    return sp.Abs(y - t)


def elementwise_loss(name: str) -> bool:
    """Whether the loss of a row is a sum of one function of each element (y_k, t_k)."""
    return name in ELEMENTWISE_LOSSES or isinstance(CUSTOM.get(name), CustomLoss)


def loss_symbols(K: int) -> tuple[tuple[sp.Symbol, ...], tuple[sp.Symbol, ...]]:
    """(y1..yK, t1..tK)."""
    return sp.symbols(f"y1:{K + 1}", real=True), sp.symbols(f"t1:{K + 1}", real=True)


# ---------------------------------------------------------------------------------------------
# Linear, optimizers
# ---------------------------------------------------------------------------------------------

def linear_element(D: int) -> tuple[sp.Expr, tuple, tuple, sp.Symbol]:
    """(z, x, w, b): one output of a linear layer, z = sum_d x_d w_d + b."""
    x = sp.symbols(f"x1:{D + 1}", real=True)
    w = sp.symbols(f"w1:{D + 1}", real=True)
    b = sp.Symbol("b", real=True)
    return sp.Add(*[xd * wd for xd, wd in zip(x, w)]) + b, x, w, b


class OptimizerSymbols(NamedTuple):
    x: sp.Symbol  # the parameter
    Dx: sp.Symbol  # its gradient
    v: sp.Symbol  # its velocity
    eta: sp.Symbol  # the learning rate
    mu: sp.Symbol  # the momentum


OPTIMIZER_SYMBOLS = OptimizerSymbols(*sp.symbols("x Dx v eta mu", real=True))


def optimizer_definition(name: str) -> tuple[sp.Expr, sp.Expr | None]:
    """(x_new, v_new) in :data:`OPTIMIZER_SYMBOLS` (v_new None for GradientDescent)."""
    x, Dx, v, eta, mu = OPTIMIZER_SYMBOLS
    if name == "GradientDescent":  # x <- x - eta Dx
        return x - eta * Dx, None
    if name == "Momentum":  # v <- mu v - eta Dx; x <- x + v
        v_new = mu * v - eta * Dx
        return x + v_new, v_new
    if name == "Nesterov":  # v <- mu v - eta Dx; x <- x + mu v - eta Dx (the new v)
        v_new = mu * v - eta * Dx
        return x + mu * v_new - eta * Dx, v_new
    raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")


# ---------------------------------------------------------------------------------------------
# The definitions in NumPy float64 (lambdified once)
# ---------------------------------------------------------------------------------------------

def _numpy(args: Sequence[sp.Symbol], exprs: Any) -> Callable:
    return sp.lambdify(list(args), exprs, modules="numpy")


@functools.lru_cache(maxsize=None)
def _numpy_activation(kind: str, variant: str) -> Callable:
    expr, params = activation_definition(kind, variant)
    return _numpy((X, *params), expr)


def forget_numpy_definitions() -> None:
    """Drop the lambdified activations (see :func:`harness.oracle.symbolic.forget_custom_components`)."""
    _numpy_activation.cache_clear()


def numpy_activation(kind: str, args: dict[str, float], Z: np.ndarray) -> np.ndarray:
    """f(Z) elementwise in float64; ``args``: alpha, or SReLU's al, tl, ar, tr."""
    _, params = activation_definition(kind, activation_variant(kind, args))
    values = [args[str(p)] for p in params]
    with np.errstate(over="ignore", invalid="ignore"):
        return np.broadcast_to(_numpy_activation(kind, activation_variant(kind, args))(Z, *values), np.shape(Z))


@functools.lru_cache(maxsize=None)
def _numpy_graph(definition: GraphDefinition) -> tuple[list[Callable], Callable]:
    args = [*definition.inputs, *definition.params]
    nodes = []
    for sym, expr in definition.nodes:
        nodes.append(_numpy(args, expr))
        args.append(sym)
    return nodes, _numpy(args, list(definition.outputs))


def numpy_graph(definition: GraphDefinition, values: Sequence) -> list:
    """The outputs of a graph in float64, every input and parameter given (arrays broadcast)."""
    nodes, outputs = _numpy_graph(definition)
    args = list(values)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for fn in nodes:
            args.append(fn(*args))
        return outputs(*args)


def numpy_row_function(name: str, Z: np.ndarray) -> np.ndarray:
    """A row function of every row of Z in float64 (the stable forms shifted by the row max)."""
    N, K = Z.shape
    columns = numpy_graph(row_function_definition(name, K), [*Z.T, Z.max(axis=1)])
    return np.stack([np.broadcast_to(c, (N,)) for c in columns], axis=1)


def numpy_batch_normalization(X: np.ndarray, gamma: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """Y = gamma * Z + beta of BatchNormalization in float64, every column of X at once."""
    N, D = X.shape
    bn = batch_norm_definition(N)
    Z = np.stack(numpy_graph(bn.graph, [*X, float(EPSILON)]), axis=0).reshape(N, D)
    return _numpy_affine(bn)(Z, gamma, beta)


@functools.lru_cache(maxsize=None)
def _numpy_affine(bn: BatchNormDefinition) -> Callable:
    return _numpy((bn.zeta, bn.gamma, bn.beta), bn.y)
