"""The tracer of :mod:`harness.judge.replay`: the walk's rules run once on traced values.

A :class:`Traced` value is a NumPy array that computes as usual (the recording's results are the
eager results) and notes every operation in a :class:`Graph`: elementwise ufuncs, ``np.where``
and broadcasts as :class:`Line` s of scalar code, the reductions the rules branch on as guards
(:class:`Reduced`) with the outcome they had. What would let data steer the rules without a
guard (``float()`` of a traced value, a concrete array of several values, an operation into a
concrete array) raises :class:`Unsupported`: that evaluation then stays eager.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import numpy as np


class Unsupported(Exception):
    """The rules did something the plan cannot replay: the evaluation stays eager."""


# ---------------------------------------------------------------------------------------------
# Recording
# ---------------------------------------------------------------------------------------------

class Line(NamedTuple):
    """One node of a graph: ``name = expression``, the scalar code of ``ufunc`` (a NumPy ufunc's
    name, ``where`` or ``alias``: a broadcast) over ``operands`` (names, or literals: see
    :func:`literal`); ``invalid``: the operation can make a NaN of numbers (0 * inf, inf - inf,
    0 / 0, sqrt(-1)), as NumPy reports; ``propagates``: a NaN operand makes the result NaN (not
    so for a selection, fmax or a comparison)."""

    name: str
    expression: str
    operands: tuple
    ufunc: str
    boolean: bool
    invalid: bool
    propagates: bool


class Graph:
    """The operations of one recorded evaluation: nodes in order (each an expression over earlier
    nodes, inputs and constants), the reductions guards read, and the guards' outcomes."""

    def __init__(self, ndim: int) -> None:
        self.ndim = ndim
        self.lines: list[Line] = []
        self.inputs: list[str] = []
        self.reductions: list[tuple[str, str, str]] = []  # (name, kind, operand name)
        self.guards: list[tuple[str, bool]] = []
        self.shapes: dict[str, tuple] = {}  # broadcast pattern of every node (1 where it broadcasts)
        self.ndims: dict[str, int] = {}

    def add(self, expression: str, value: np.ndarray, operands: tuple, ufunc: str) -> "Traced":
        """A node: its scalar expression over ``operands`` (names or literals), its value, and
        what it is (:class:`Line`)."""
        name = f"t{len(self.lines)}"
        self.lines.append(Line(name, expression, operands, ufunc, value.dtype == np.bool_, ufunc in _INVALID,
                               ufunc in _PROPAGATES or ufunc == "alias"))
        return self._traced(name, value)

    def input(self, value: Any) -> "Traced":
        name = f"a{len(self.inputs)}"
        self.inputs.append(name)
        return self._traced(name, np.asarray(value))

    def _traced(self, name: str, value: np.ndarray) -> "Traced":
        if value.ndim > self.ndim:
            raise Unsupported("a value of more dimensions than the evaluation's")
        self.shapes[name], self.ndims[name] = pattern(value.shape, self.ndim), value.ndim
        return Traced(value, name, self)


def pattern(shape: tuple, ndim: int) -> tuple:
    """A shape's broadcast pattern against ``ndim`` dimensions: 1 where it broadcasts, -1 where
    it runs along the evaluation's axis."""
    full = (1,) * (ndim - len(shape)) + tuple(shape)
    return tuple(1 if d == 1 else -1 for d in full)


_UFUNCS = {  # ufunc name -> scalar expression (numba), operands x, y
    "add": "({x} + {y})", "subtract": "({x} - {y})", "multiply": "({x} * {y})",
    "true_divide": "({x} / {y})", "divide": "({x} / {y})", "negative": "(-{x})", "absolute": "abs({x})",
    "square": "({x} * {x})", "sqrt": "np.sqrt({x})", "exp": "np.exp({x})", "expm1": "np.expm1({x})",
    "log": "np.log({x})", "log1p": "np.log1p({x})", "tanh": "np.tanh({x})", "power": "np.power({x}, {y})",
    "fmax": "np.fmax({x}, {y})", "fmin": "np.fmin({x}, {y})", "maximum": "np.maximum({x}, {y})",
    "minimum": "np.minimum({x}, {y})", "sign": "np.sign({x})",
    "isnan": "np.isnan({x})", "isinf": "np.isinf({x})", "isfinite": "np.isfinite({x})",
    "less": "({x} < {y})", "less_equal": "({x} <= {y})", "greater": "({x} > {y})",
    "greater_equal": "({x} >= {y})", "equal": "({x} == {y})", "not_equal": "({x} != {y})",
    "logical_and": "({x} & {y})", "logical_or": "({x} | {y})", "logical_not": "(not {x})",
    "bitwise_and": "({x} & {y})", "bitwise_or": "({x} | {y})", "invert": "(not {x})",
}
# The operations NumPy reports as invalid where they make a NaN of numbers (its errstate, and so
# the step's NaN state: harness.judge.arithmetic.NAN_SEEN)
_INVALID = {"add", "subtract", "multiply", "true_divide", "divide", "sqrt", "log", "log1p", "power"}
_PROPAGATES = {"add", "subtract", "multiply", "true_divide", "divide", "negative", "absolute", "square", "sqrt",
               "exp", "expm1", "log", "log1p", "tanh", "maximum", "minimum", "sign"}
_LOGICAL = {"logical_and", "logical_or", "logical_not", "bitwise_and", "bitwise_or", "invert"}  # booleans only


class Traced(np.lib.mixins.NDArrayOperatorsMixin):
    """A value of the recorded evaluation: its concrete NumPy value and its name in the graph."""

    __array_priority__ = 1000

    def __init__(self, value: np.ndarray, name: str, graph: Graph) -> None:
        self.value, self.name, self.graph = value, name, graph

    shape = property(lambda self: self.value.shape)
    ndim = property(lambda self: self.value.ndim)
    dtype = property(lambda self: self.value.dtype)

    def __array_ufunc__(self, ufunc: np.ufunc, method: str, *inputs: Any, **kwargs: Any) -> Any:
        out = kwargs.pop("out", None)
        if method != "__call__" or kwargs or ufunc.__name__ not in _UFUNCS:
            raise Unsupported(f"np.{ufunc.__name__}.{method}")
        if out is not None and (len(out) != 1 or out[0] is not inputs[0] or not isinstance(out[0], Traced)):
            raise Unsupported("an operation into a concrete array")
        result = _apply(self.graph, ufunc, inputs)
        if out is None:
            return result
        target = out[0]  # in place (x += y): the traced value becomes the new node, as an array would
        target.value, target.name = result.value, result.name
        return target

    def __array_function__(self, func: Any, types: Any, args: tuple, kwargs: dict) -> Any:
        handler = _FUNCTIONS.get(func)
        if handler is None:
            raise Unsupported(f"np.{func.__name__}")
        return handler(self.graph, *args, **kwargs)

    def __bool__(self) -> bool:
        """The truth of a 0-d traced boolean (``np.abs(c) == 1`` of a scalar input): a guard."""
        if self.ndim or self.dtype != np.bool_:
            raise Unsupported("the truth of a traced array")
        return bool(Reduced(self.graph, "all", self, bool(self.value)))

    def __float__(self) -> float:
        raise Unsupported("float() of a traced value")

    __int__ = __index__ = __float__

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        raise Unsupported("a traced value turned into a plain array")

    def any(self) -> "Reduced":
        return _reduce(self.graph, "any", self)

    def all(self) -> "Reduced":
        return _reduce(self.graph, "all", self)


def _apply(graph: Graph, ufunc: np.ufunc, inputs: tuple) -> Any:
    values = [concrete(x) for x in inputs]
    booleans = [np.asarray(v).dtype == np.bool_ for v in values]
    if ufunc.__name__ in _LOGICAL and not all(booleans):
        raise Unsupported(f"np.{ufunc.__name__} on numbers")
    if ufunc.__name__ not in _LOGICAL and any(booleans):
        raise Unsupported(f"np.{ufunc.__name__} on booleans")
    result = ufunc(*values)
    if any(isinstance(x, Reduced) for x in inputs):
        return _on_reduction(ufunc, inputs, result, graph)
    names = [_operand(x, graph) for x in inputs]
    return graph.add(_UFUNCS[ufunc.__name__].format(x=names[0], y=names[-1]), np.asarray(result), tuple(names),
                     ufunc.__name__)


class Reduced:
    """A reduction over a traced value (np.any, np.all, np.isnan(np.sum(...))): its truth is a
    guard (:class:`Graph`.guards), recorded with the outcome the recording saw."""

    def __init__(self, graph: Graph, kind: str, operand: Any, value: Any) -> None:
        self.graph, self.kind, self.operand, self.value = graph, kind, operand, value

    def __array_ufunc__(self, ufunc: np.ufunc, method: str, *inputs: Any, **kwargs: Any) -> Any:
        if method != "__call__" or kwargs or len(inputs) != 1:
            raise Unsupported(f"np.{ufunc.__name__}.{method} of a reduction")
        return _on_reduction(ufunc, inputs, ufunc(self.value), self.graph)

    def __bool__(self) -> bool:
        if self.kind == "sum":
            raise Unsupported("a sum used as a number")
        outcome = bool(self.value)
        if not isinstance(self.operand, Traced):
            raise Unsupported("a reduction of a constant")
        name = f"r{len(self.graph.reductions)}"
        self.graph.reductions.append((name, self.kind, self.operand.name))
        self.graph.guards.append((name, outcome))
        return outcome


def _reduce(graph: Graph, kind: str, x: Any) -> Any:
    if not isinstance(x, Traced):
        return getattr(np, kind)(x)
    if kind in ("any", "all") and x.dtype != np.bool_:
        x = graph.add(f"({x.name} != 0.0)", x.value != 0, (x.name, "0.0"), "not_equal")
    return Reduced(graph, kind, x, getattr(np, kind)(x.value))


def _on_reduction(ufunc: np.ufunc, inputs: tuple, result: Any, graph: Graph) -> Reduced:
    """np.isnan(np.sum(x)): the NaN check the rules make on a sum of non-negative terms; in the
    kernel, whether x holds a NaN or both infinities (or a sum that could overflow: the guard
    then fails safe)."""
    (x,) = inputs
    if ufunc.__name__ != "isnan" or x.kind != "sum":
        raise Unsupported(f"np.{ufunc.__name__} of a reduction")
    return Reduced(graph, "sum_isnan", x.operand, result)


def concrete(x: Any) -> Any:
    if isinstance(x, Traced):
        return x.value
    if isinstance(x, Reduced):
        return x.value
    return x


def _operand(x: Any, graph: Graph) -> str:
    """The name of a traced operand, or the literal of a constant one (a number, or an array that
    holds one number, as ``np.full`` makes: its shape is the evaluation's, which may change)."""
    if isinstance(x, Traced):
        if x.graph is not graph:
            raise Unsupported("a value of another recording")
        return x.name
    a = np.asarray(x)
    if a.size == 0:
        raise Unsupported("an empty array")
    first = a.reshape(-1)[0]
    if a.ndim and not (np.all(a == first) or (np.isnan(first) and np.all(np.isnan(a)))):
        raise Unsupported("a concrete array of several values")
    if a.dtype == np.bool_:
        return "True" if first else "False"
    f = float(first)
    if np.isnan(f):
        return "np.nan"
    if np.isinf(f):
        return "np.inf" if f > 0 else "(-np.inf)"
    return repr(f)


_LITERALS = {"np.nan": np.nan, "np.inf": np.inf, "(-np.inf)": -np.inf, "True": True, "False": False}


def literal(text: str) -> Any:
    """The value of a literal operand, as :func:`_operand` wrote it (``repr`` of a float gives
    the float back exactly)."""
    return _LITERALS[text] if text in _LITERALS else float(text)


def _where(graph: Graph, condition: Any, x: Any, y: Any) -> Traced:
    if np.asarray(concrete(condition)).dtype != np.bool_:
        raise Unsupported("np.where on a condition that is not boolean")
    value = np.where(concrete(condition), concrete(x), concrete(y))
    c, a, b = (_operand(v, graph) for v in (condition, x, y))
    return graph.add(f"({a} if {c} else {b})", np.asarray(value), (c, a, b), "where")


def _broadcast_to(graph: Graph, x: Any, shape: tuple, subok: bool = False) -> Any:
    if not isinstance(x, Traced):
        return np.broadcast_to(x, shape)
    return graph.add(x.name, np.broadcast_to(x.value, shape), (x.name,), "alias")  # the same scalar per element


def _sum(graph: Graph, x: Any, *args: Any, **kwargs: Any) -> Any:
    if args or kwargs:
        raise Unsupported("a partial sum")
    return _reduce(graph, "sum", x)


_FUNCTIONS: dict[Any, Callable] = {
    np.where: _where,
    np.broadcast_to: _broadcast_to,
    np.shape: lambda graph, x: np.shape(concrete(x)),
    np.ndim: lambda graph, x: np.ndim(concrete(x)),
    np.sum: _sum,
    np.any: lambda graph, x: _reduce(graph, "any", x),
    np.all: lambda graph, x: _reduce(graph, "all", x),
}
