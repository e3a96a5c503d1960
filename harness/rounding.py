"""The unit of judgement: a bound on the rounding error a correct implementation can make.

Every element of every traced tensor gets a bound ``E`` on ``|computed - exact|`` for an
implementation that evaluates the forward definitions of :mod:`harness.symbolic` (and their
``sp.diff`` derivatives, the chain rule and the optimizer updates) in the run's dtype, with

- every elementary operation (``+ - * /``) correctly rounded: ``fl(a op b) = (a op b)(1 + d) + e``
  with ``|d| <= u`` (the unit roundoff, 2**-24 or 2**-53) and ``|e| <= tiny`` (the smallest normal
  number: flushing subnormals to zero, as XLA does, is allowed);
- every library function (exp, log, tanh) within :data:`FUNCTION_ULPS` units of ``u``;
- every sum and dot product of ``n`` terms within ``gamma(n) * sum |terms|``, where
  ``gamma(n) = min(n u / (1 - n u), LAMBDA sqrt(n) u)``: Higham's deterministic bound for short
  sums, the probabilistic bound of Higham & Mary (2019) for long ones (it holds with probability
  at least ``1 - 2 n exp(-LAMBDA**2 / 2)`` for independent rounding errors; blocked and pairwise
  summation, which BLAS and NumPy use, do better still);
- the freedom to shift a row by its maximum before exponentiating (softmax, log_softmax and the
  softmax cross-entropy): the row's rounding then includes ``u * max |row|``.

The bound is a first-order running error bound (Higham, *Accuracy and Stability of Numerical
Algorithms*, 2nd ed., section 3.3): it is evaluated alongside the values, operation by operation,
with absolute values, so it carries the error of everything a tensor depends on (forward and
backward) and the conditioning of every operation (cancellation in a sum shows as
``sum |terms|`` much larger than ``|sum|``). It needs no new copy of the formulas: the same SymPy
expressions the exact oracle evaluates (:mod:`harness.symbolic`) are walked here node by node in
"error arithmetic" on NumPy arrays of (value, bound) pairs (:func:`evaluate`), and the
contractions of the chain rule (``DW = DZ^T X``, ``DZ_j = sum_k DY_k J_kj``, …) use the dot
product rule. docs/rounding.md justifies the choices and shows the checks of the bound itself.

Where the reference is the backends' consensus instead of the exact value (no oracle), two correct
backends can be off in opposite directions, so the comparator allows twice the bound. In
trajectory mode the bound on each parameter after the update is carried into the next step as the
error of that parameter (``carried``): the growth of the tolerance over the steps is this
propagation, not an assumed law; a re-anchoring resets it to zero.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Sequence

import numpy as np
import sympy as sp

from harness import symbolic as S
from harness.components import LAYERS, LOSSES
from harness.spec import Scenario

LAMBDA = 8.0  # standard deviations: P(|error| > LAMBDA sd) <= 2 exp(-LAMBDA**2 / 2) = 2.5e-14 (Hoeffding)
# exp, log, tanh: their own error, in units of u (2 u = 1 ulp). XLA's float64 tanh was measured
# 7 ulps off (the component suite); float32 libraries are held to 4 ulps.
FUNCTION_ULPS = {"float32": 8, "float64": 16}

Pair = tuple[np.ndarray, np.ndarray]  # (value, bound on the error of the computed value)
_GRADIENT = {"W": "DW", "b": "Db", "gamma": "Dgamma", "beta": "Dbeta", "srelu": "Dsrelu"}


class Arithmetic:
    """The rounding model of one dtype, carrying every error in two ways at once.

    An error is an array with one more axis than its value, the last, of length two:

    - ``[..., 0]`` the worst case: errors add with absolute values; ``k`` roundings of a result of
      size M cost ``gamma_k M`` (Higham's ``k u / (1 - k u)``);
    - ``[..., 1]`` a standard deviation: the rounding errors are independent, mean-zero and bounded
      by u (the model of Higham & Mary and of Ipsen & Zhou), so independent contributions add in
      quadrature and ``k`` roundings of a result of size M cost ``sqrt(k) u M``.

    The bound is ``min(worst case, LAMBDA * standard deviation)`` per element (:meth:`bound`).
    Where a dot product has more than ``LAMBDA**2`` terms the standard deviation always gives
    the smaller bound, so there the worst-case row is set to ``LAMBDA`` standard deviations
    (Higham & Mary's probabilistic bound) instead of being computed: half the work on the
    large layers.
    """

    def __init__(self, dtype: str) -> None:
        self.dtype = np.dtype(dtype)
        self.u = float(np.finfo(self.dtype).eps) / 2
        self.tiny = float(np.finfo(self.dtype).tiny)
        self.function_ulps = FUNCTION_ULPS[self.dtype.name]

    def gamma(self, n: int | float) -> float:
        """Worst-case relative error of n roundings (Higham's gamma_n)."""
        nu = max(float(n), 0.0) * self.u
        return nu / (1 - nu) if nu < 1 else math.inf

    def zero(self, shape: tuple = ()) -> np.ndarray:
        return np.zeros((*shape, 2))

    def local(self, magnitude: Any, k: float = 1) -> np.ndarray:
        """The error of ``k`` roundings of a result of this size (with underflow)."""
        m = np.abs(np.asarray(magnitude, dtype=np.float64))
        m = np.where(np.isnan(m), np.inf, m)  # a value the float64 evaluation could not give: unknown
        if not k:
            return self.zero(m.shape)
        return np.stack([self.gamma(k) * m + k * self.tiny, math.sqrt(k) * (self.u * m + self.tiny)], axis=-1)

    def function(self, value: Any) -> np.ndarray:
        """A library function's own error (exp, log, tanh), the same in both rows."""
        f = self.function_ulps * self.u * np.abs(value) + self.tiny
        return np.stack([f, f], axis=-1)

    @staticmethod
    def combine(*errors: Any) -> np.ndarray:
        """Errors of independent origin: the sum of the worst cases, the root of the sum of
        squares of the standard deviations."""
        errors = tuple(_defined(np.asarray(e, dtype=np.float64)) for e in errors)  # 0 * inf terms carry nothing
        worst = sum(e[..., 0] for e in errors)
        if len(errors) == 1:
            return _defined(np.broadcast_to(errors[0], np.shape(worst) + (2,)).copy())
        sds = [e[..., 1] for e in errors]
        largest = functools.reduce(np.maximum, sds)  # scale by the largest: no square underflows
        safe = np.where(largest > 0, largest, 1.0)
        sd = largest * np.sqrt(sum(np.square(x / safe) for x in sds))
        return _defined(np.stack(np.broadcast_arrays(worst, sd), axis=-1))

    @staticmethod
    def total(errors: np.ndarray, axis: int | None = None) -> np.ndarray:
        """The propagated error of a sum of elements carrying ``errors`` (``axis`` of the values)."""
        if axis is None:
            flat = np.reshape(errors, (-1, 2))
            return np.array([flat[:, 0].sum(), _root_sum_square(flat[:, 1], 0)])
        return np.stack([np.sum(errors[..., 0], axis=axis), _root_sum_square(errors[..., 1], axis)], axis=-1)

    def bound(self, errors: np.ndarray) -> np.ndarray:
        """The bound of each element: min(worst case, LAMBDA standard deviations), and never below
        an underflow (``tiny``) where the worst case allows one (tiny squared is 0 in float64)."""
        worst, sd = errors[..., 0], errors[..., 1]
        with np.errstate(invalid="ignore"):
            probable = np.where(sd > 0, np.fmin(worst, LAMBDA * sd), worst)  # sd 0: underflowed, or exact
            return np.fmax(probable, np.fmin(worst, self.tiny))

    def exact_in_dtype(self, x: float) -> bool:
        return bool(np.isfinite(x)) and float(self.dtype.type(x)) == x

    def constant(self, c: Any) -> Pair:
        """A constant of the definitions as the implementation holds it (rounded to the dtype)."""
        v = float(c)
        exact = self.exact_in_dtype(v) and (not isinstance(c, sp.Basic) or sp.Rational(v) == c)
        e = 0.0 if exact else self.u * abs(v)
        return np.float64(v), np.array([e, e])

    def given(self, value: Any, error: Any = 0.0) -> Pair:
        """An input: its value, and the error it carries (0 for a value exact in the dtype),
        the same in both rows (a measured or exact quantity, not a random one). A subnormal
        input may be read as 0 (XLA and TensorFlow do: docs/findings.md #4)."""
        v = np.asarray(value, dtype=np.float64)
        e = np.broadcast_to(np.asarray(error, dtype=np.float64), v.shape)
        e = e + np.where(np.abs(v) < self.tiny, np.abs(v), 0.0)
        return v, np.stack([e, e], axis=-1)


# ---------------------------------------------------------------------------------------------
# Error arithmetic over SymPy expressions
# ---------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _program(exprs: tuple) -> tuple[list, list]:
    """Common subexpressions of a list of expressions (``sp.cse``), computed once."""
    replacements, reduced = sp.cse(list(exprs), symbols=sp.numbered_symbols("_e"))
    return replacements, reduced


def evaluate(exprs: Sequence[sp.Expr], env: dict[sp.Symbol, Pair], ar: Arithmetic) -> list[Pair]:
    """(value, bound) of each expression, every symbol bound in ``env`` to a (value, error) pair.

    Each node's bound is the first-order propagation of its operands' errors plus its own
    rounding (module docstring). Values broadcast like NumPy arrays.
    """
    replacements, reduced = _program(tuple(exprs))
    env = dict(env)
    memo: dict[Any, Pair] = {}
    with np.errstate(all="ignore"):
        for sym, sub in replacements:
            env[sym] = _node(sub, env, ar, memo)
        return [_node(e, env, ar, memo) for e in reduced]


def _power_of_two(x: float) -> bool:
    m, _ = math.frexp(abs(x))
    return x != 0 and m == 0.5


def _node(e: Any, env: dict, ar: Arithmetic, memo: dict) -> Pair:
    if e in memo:
        return memo[e]
    if e.is_Symbol:
        r = env[e]
    elif e.is_Number:
        r = ar.constant(e)
    elif isinstance(e, sp.Add):
        parts = [_node(a, env, ar, memo) for a in e.args]
        v = sum(p[0] for p in parts)
        r = v, ar.combine(*[p[1] for p in parts], ar.local(sum(np.abs(p[0]) for p in parts), len(parts) - 1))
    elif isinstance(e, sp.Mul):
        parts = [_node(a, env, ar, memo) for a in e.args]
        v = functools.reduce(np.multiply, [p[0] for p in parts])
        terms = []
        for i, (_, ei) in enumerate(parts):
            others = [np.abs(p[0]) for j, p in enumerate(parts) if j != i]
            terms.append(ei * _c(functools.reduce(np.multiply, others)) if others else ei)
        exact_factors = sum(1 for a in e.args if a.is_Number and _power_of_two(float(a)))
        r = v, ar.combine(*terms, ar.local(v, max(len(parts) - 1 - exact_factors, 0)))
    elif isinstance(e, sp.Pow):
        r = _pow(e, env, ar, memo)
    elif isinstance(e, sp.exp):
        a, ea = _node(e.args[0], env, ar, memo)
        v = np.exp(a)
        r = v, ar.combine(_c(v) * ea, ar.function(v))
    elif isinstance(e, sp.log):
        a, ea = _node(e.args[0], env, ar, memo)
        v = np.log(a)
        r = v, ar.combine(ea / _c(np.abs(a)), ar.function(v))
    elif isinstance(e, sp.tanh):
        a, ea = _node(e.args[0], env, ar, memo)
        v = np.tanh(a)
        r = v, ar.combine(_c(1 - v * v) * ea, ar.function(v))
    elif isinstance(e, sp.Abs):
        a, ea = _node(e.args[0], env, ar, memo)
        r = np.abs(a), ea
    elif isinstance(e, sp.sign):
        a, _ = _node(e.args[0], env, ar, memo)
        r = np.sign(a), ar.zero(np.shape(a))
    elif isinstance(e, sp.Piecewise):
        r = _piecewise(e, env, ar, memo)
    elif isinstance(e, (sp.logic.boolalg.Boolean, sp.core.relational.Relational)):
        c = _condition(e, env, ar, memo)  # a branch condition (sp.cse may name one)
        r = c, ar.zero(np.shape(c))
    else:
        raise NotImplementedError(f"harness.rounding has no rule for {type(e).__name__} ({e})")
    memo[e] = r
    return r


def _pow(e: sp.Pow, env: dict, ar: Arithmetic, memo: dict) -> Pair:
    base, p = e.args
    b, eb = _node(base, env, ar, memo)
    if not p.is_Number:
        raise NotImplementedError(f"harness.rounding has no rule for a symbolic power ({e})")
    q = float(p)
    v = np.power(b, q)
    if q == 0.5:  # sqrt: first order, or sqrt(error) at 0
        prop = np.where(_c(v > 0), eb / _c(2 * np.where(v > 0, v, 1)), np.sqrt(eb))
        return v, ar.combine(prop, ar.local(v))
    # |q b**(q - 1)| e_b, written |q v| (e_b / |b|): b**(q - 1) alone overflows or underflows where
    # v does not (1 / (1 + exp(501)) = 2.6e-218, but (1 + exp(501))**-2 = 0 in float64)
    nonzero = b != 0
    relative = eb / _c(np.where(nonzero, np.abs(b), 1.0))
    prop = np.where(_c(nonzero), _c(np.abs(q * v)) * relative, _c(np.abs(q * np.power(b, q - 1))) * eb)
    if q.is_integer() and q > 0:
        k = int(q) - 1  # multiplications
    elif q.is_integer():
        k = int(-q)  # multiplications, then one division
    else:
        k = ar.function_ulps  # a library power or sqrt-and-divide
    return v, ar.combine(prop, ar.local(v, k))


def _condition(c: Any, env: dict, ar: Arithmetic, memo: dict) -> np.ndarray:
    if c.is_Symbol:
        return np.asarray(env[c][0], dtype=bool)
    if c is sp.true:
        return np.bool_(True)
    if c is sp.false:
        return np.bool_(False)
    if isinstance(c, sp.And):
        return functools.reduce(np.logical_and, [_condition(a, env, ar, memo) for a in c.args])
    if isinstance(c, sp.Or):
        return functools.reduce(np.logical_or, [_condition(a, env, ar, memo) for a in c.args])
    if isinstance(c, sp.Not):
        return np.logical_not(_condition(c.args[0], env, ar, memo))
    lhs, _ = _node(c.lhs, env, ar, memo)
    rhs, _ = _node(c.rhs, env, ar, memo)
    ops = {sp.StrictLessThan: np.less, sp.LessThan: np.less_equal, sp.StrictGreaterThan: np.greater,
           sp.GreaterThan: np.greater_equal, sp.Equality: np.equal, sp.Unequality: np.not_equal}
    return ops[type(c)](lhs, rhs)


def _piecewise(e: sp.Piecewise, env: dict, ar: Arithmetic, memo: dict) -> Pair:
    """The branch each element's value selects; within its error of a breakpoint, the largest
    error of any branch (a computed value may sit on the other side: ELU's output just right of 0
    moves with slope 1, not alpha). Derivatives there are the kink scan's business."""
    value = error = None
    taken = near = None
    branches = []
    for expr, cond in e.args:
        v, err = _node(expr, env, ar, memo)
        c = _condition(cond, env, ar, memo)
        if value is None:
            shape = np.broadcast_shapes(np.shape(v), np.shape(c))
            value, error = np.full(shape, np.nan), np.full((*shape, 2), np.nan)
            taken, near = np.zeros(shape, dtype=bool), np.zeros(shape, dtype=bool)
        pick = np.broadcast_to(c, taken.shape) & ~taken
        value = np.where(pick, v, value)
        error = np.where(_c(pick), err, error)
        taken |= pick
        near |= _near_boundary(cond, env, ar, memo)
        branches.append(_full(err, shape))
    if near.any():
        widest = functools.reduce(np.fmax, branches)
        error = np.where(_c(near), np.fmax(error, widest), error)
    return value, error


def _near_boundary(c: Any, env: dict, ar: Arithmetic, memo: dict) -> np.ndarray:
    """Where a condition's two sides are within their (worst-case) errors of each other."""
    if isinstance(c, (sp.And, sp.Or, sp.Not)):
        return functools.reduce(np.logical_or, [_near_boundary(a, env, ar, memo) for a in c.args])
    if not isinstance(c, sp.core.relational.Relational):
        return np.bool_(False)
    (lhs, el), (rhs, er) = _node(c.lhs, env, ar, memo), _node(c.rhs, env, ar, memo)
    return np.abs(lhs - rhs) <= el[..., 0] + er[..., 0]


# ---------------------------------------------------------------------------------------------
# The rules of the chain rule's contractions
# ---------------------------------------------------------------------------------------------

def _root_sum_square(x: np.ndarray, axis: int) -> np.ndarray:
    """sqrt(sum x**2) along ``axis``, scaled by the largest |x| so that nothing underflows."""
    scale = np.max(np.abs(x), axis=axis, keepdims=True, initial=0.0)
    safe = np.where(scale > 0, scale, 1.0)
    with np.errstate(invalid="ignore", over="ignore"):
        return (np.sqrt(np.sum(np.square(x / safe), axis=axis, keepdims=True)) * scale).squeeze(axis)


def _carried(a: np.ndarray, e: np.ndarray, left: bool, square: bool = False) -> np.ndarray:
    """a @ e (or e @ a) for a >= 0 and errors e >= 0, some of which may be infinite (unknown):
    an output is infinite exactly where it depends on one (0 * inf is not a dependence)."""
    unknown = ~np.isfinite(e)
    known = np.where(unknown, 0.0, e)
    out = _scaled_square_matmul(a, known, left) if square else (a @ known if left else known @ a)
    if unknown.any():
        hit = ((a > 0).astype(np.float64) @ unknown if left else unknown @ (a > 0).astype(np.float64)) > 0
        out = np.where(hit, np.inf, out)
    return out


def _scaled_square_matmul(a: np.ndarray, e: np.ndarray, left: bool) -> np.ndarray:
    """sqrt(a**2 @ e**2) (or sqrt(e**2 @ a**2)) for a, e >= 0, never below it and without
    underflow: a and e are each scaled by their largest element; entries more than 1e150 below
    it (whose squares would underflow) are added without squaring (sqrt(sum x**2) <= sum x)."""
    scale = float(np.max(e, initial=0.0))
    if scale == 0 or not math.isfinite(scale):
        return np.zeros((a.shape[0], e.shape[1]) if left else (e.shape[0], a.shape[1]))
    small = e < scale * 1e-150
    q = np.square(np.where(small, 0.0, e) / scale)
    a_scale = float(np.max(a, initial=0.0))
    if a_scale == 0 or not math.isfinite(a_scale):
        a_scale = 1.0
    a2 = np.square(a / a_scale)  # values scaled too: (3.5e-184)**2 underflows as well
    a_small = a < a_scale * 1e-150
    a2 = np.where(a_small, 0.0, a2)
    out = np.sqrt(a2 @ q if left else q @ a2) * (scale * a_scale)
    if np.any(a_small & (a > 0)):  # their terms, unsquared: sum bounds the root
        tiny_a = np.where(a_small, a, 0.0)
        out = out + (tiny_a @ e if left else e @ tiny_a)
    rest = np.where(small, e, 0.0)
    if np.any(rest):
        out = out + (a @ rest if left else rest @ a)
    return out


def _defined(errors: np.ndarray) -> np.ndarray:
    """0 for an error that came out as 0 * inf: a zero sensitivity to an operand that overflowed
    in the float64 evaluation (exp(800) inside 1 / (1 + exp(800)) = 0) carries nothing."""
    return np.where(np.isnan(errors), 0.0, errors)


def _c(coefficient: Any) -> np.ndarray:
    """A value-shaped coefficient, ready to multiply an error (whose last axis is the two rows)."""
    return np.asarray(coefficient)[..., None]


def _full(e: np.ndarray, shape: tuple) -> np.ndarray:
    """An error broadcast to a value shape (plus its two rows)."""
    return np.broadcast_to(e, (*shape, 2))


def dot(ar: Arithmetic, A: Pair, B: Pair, n: int, value: np.ndarray | None = None) -> Pair:
    """A @ B of n-term dot products: |A| E_B (+) E_A |B| (+) n roundings of |A||B|.

    Short products (n <= LAMBDA**2) carry both rows exactly as every other operation. Long ones
    (the wide layers, where this is nearly all the work) take the worst case for the errors
    carried in and Higham & Mary's ``LAMBDA sqrt(n) u |A||B|`` for their own rounding: three
    products of non-negative matrices, no squares; the standard deviation row is then that
    bound over LAMBDA, so the bound is the same in both rows.
    """
    (a, ea), (b, eb) = A, B
    aa, ab = np.abs(a), np.abs(b)
    v = a @ b if value is None else value
    if n > LAMBDA ** 2:
        worst = LAMBDA * math.sqrt(n) * (ar.u * (aa @ ab) + ar.tiny)
        if np.any(eb):
            worst = worst + _carried(aa, _full(eb, np.shape(b))[..., 0], left=True)
        if np.any(ea):
            worst = worst + _carried(ab, _full(ea, np.shape(a))[..., 0], left=False)
        return v, _defined(np.stack([worst, worst / LAMBDA], axis=-1))
    magnitude = aa @ ab
    worst = ar.gamma(n) * magnitude + n * ar.tiny
    sd = math.sqrt(n) * (ar.u * magnitude + ar.tiny)
    if np.any(eb):
        eb = _full(eb, np.shape(b))
        sd = np.hypot(sd, _carried(aa, eb[..., 1], left=True, square=True))
        worst = worst + _carried(aa, eb[..., 0], left=True)
    if np.any(ea):
        ea = _full(ea, np.shape(a))
        sd = np.hypot(sd, _carried(ab, ea[..., 1], left=False, square=True))
        worst = worst + _carried(ab, ea[..., 0], left=False)
    return v, _defined(np.stack([worst, sd], axis=-1))


def colsum(ar: Arithmetic, A: Pair) -> Pair:
    """Sum over the batch (axis 0)."""
    a, ea = A
    n = a.shape[0]
    return a.sum(axis=0), ar.combine(ar.total(_full(ea, a.shape), axis=0), ar.local(np.abs(a).sum(axis=0), n))


def times(ar: Arithmetic, A: Pair, B: Pair) -> Pair:
    """Elementwise product with one rounding."""
    (a, ea), (b, eb) = A, B
    v = a * b
    return v, ar.combine(ea * _c(np.abs(b)), _c(np.abs(a)) * eb, ar.local(v))


def contract(ar: Arithmetic, weights: list[Pair], vectors: list[Pair]) -> tuple[np.ndarray, np.ndarray]:
    """(sum of |w| |x|, propagated error) of ``sum_k w_k x_k`` over the pairs given."""
    absdot, parts = 0.0, []
    for (w, ew), (x, ex) in zip(weights, vectors):
        absdot = absdot + np.abs(w * x)
        parts += [ex * _c(np.abs(w)), _c(np.abs(x)) * ew]
    return absdot, ar.total(np.stack([_full(p, np.shape(absdot)) for p in parts]), axis=0)


# ---------------------------------------------------------------------------------------------
# Components
# ---------------------------------------------------------------------------------------------

def _activation_env(act: S.Activation, ar: Arithmetic, Z: Pair, srelu: Pair | None) -> dict:
    env = {act.symbol: Z}
    if act.kind == "SReLU":
        v, e = srelu
        e = _full(e, np.shape(v))
        for k, sym in enumerate(act.parameters):
            env[sym] = (np.float64(v[k]), e[k])
    elif act.parameters:
        env[act.parameters[0]] = ar.constant(float(act.args["alpha"]))
    return env


def _rows(ar: Arithmetic, symbols: Sequence[sp.Symbol], M: Pair, shift: bool) -> dict:
    """Bind row symbols z1..zK to the columns of M; ``shift``: a row may be shifted by its max."""
    v, e = M
    e = _full(e, v.shape)
    if shift:
        e = e + _c(ar.u * np.abs(v).max(axis=1, keepdims=True))
    return {s: (v[:, k], e[:, k]) for k, s in enumerate(symbols)}


@functools.lru_cache(maxsize=None)
def _ratio_of_derivatives(g: sp.Expr, h: sp.Expr, x: sp.Symbol) -> sp.Expr:
    """(dg/dx) / (dh/dx): how much g moves per unit of h, both functions of x."""
    return sp.diff(g, x) / sp.diff(h, x)


def from_rounded_value(ar: Arithmetic, g: sp.Expr, h: sp.Expr, x: sp.Symbol, env: dict) -> np.ndarray:
    """The extra error of a derivative ``g(x)`` computed from the rounded value of ``h(x)``.

    Backpropagation evaluates a derivative from the forward's output rather than its input:
    the sigmoid's as Y (1 - Y), LogisticCrossEntropy's as T (Sigmoid(Y) - 1). Where h saturates,
    that form loses what the derivative's own expression keeps (at x = 30 in float32, Y rounds
    to 1 and Y (1 - Y) to 0, where the exact value is 9e-14). It is a correct implementation
    all the same, so its error is allowed: ``|dg/dh|`` times the rounding of h, with
    ``dg/dh = g'(x) / h'(x)`` from ``sp.diff`` (0 where h' is 0: piecewise-linear functions).
    """
    expr = _ratio_of_derivatives(g, h, x)
    if expr == 0 or (isinstance(expr, sp.Piecewise) and all(e == 0 or e is sp.nan for e, _ in expr.args)):
        return ar.zero()  # piecewise-linear: the derivative does not depend on the value
    (ratio, _), (hv, _) = evaluate([expr, h], env, ar)
    ratio = np.where(np.isfinite(ratio), np.abs(ratio), 0.0)
    rounded = ar.function(hv)  # h computed to within its library error
    return _c(ratio) * rounded


def activation_derivative(ar: Arithmetic, act: S.Activation, env: dict) -> Pair:
    """f'(Z) with its error: the derivative's own expression (sp.diff), or computed from the
    rounded output Y = f(Z) as backpropagation does (Y (1 - Y)), whichever errs more."""
    d = _unjudged_where_undefined(evaluate([act.derivative_expr], env, ar)[0])
    return d[0], ar.combine(d[1], from_rounded_value(ar, act.derivative_expr, act.expr, act.symbol, env))


def _unjudged_where_undefined(pair: Pair) -> Pair:
    """An infinite bound where the float64 evaluation of a definition or a derivative overflows
    (LogisticCrossEntropy's log(1 / (1 + exp(-y))) at y < -709): the bound is not known there,
    so the element is not failed on it; the kink scan and non-finite checks still apply."""
    v, e = pair
    bad = ~np.isfinite(v)
    return (v, np.where(_c(bad), np.inf, e)) if np.any(bad) else pair


def loss(ar: Arithmetic, name: str, Y: Pair, T: Pair) -> tuple[np.ndarray, Pair]:
    """(error of the loss L = sum over rows, (dL/dY, its error)) at Y, T (rows of K).

    The softmax cross-entropy may shift each row by its maximum; LogisticCrossEntropy's gradient
    may be computed from the rounded Sigmoid(Y) (``LossKind.link``, :func:`from_rounded_value`).
    """
    N, K = np.shape(Y[0])
    L = S.Loss(name, K)
    shift = name == "SoftmaxCrossEntropy"
    if shift:  # the loss and its gradient do not change when a row is shifted: evaluate the
        Y = (Y[0] - Y[0].max(axis=1, keepdims=True), Y[1])  # exponentials where they cannot overflow
    env = {**_rows(ar, L.y, Y, shift), **_rows(ar, L.t, T, False)}
    per_row = _unjudged_where_undefined(evaluate([L.expr], env, ar)[0])
    value_error = np.asarray(ar.combine(ar.total(_full(per_row[1], (N,))), ar.local(np.sum(np.abs(per_row[0])), N)))
    grad = _unjudged_where_undefined(_stack(evaluate(L.gradient_exprs, env, ar), (N,)))
    link = LOSSES[name].link
    if link is not None:  # the gradient computed from the rounded link, T (Sigmoid(Y) - 1)
        f = S.Activation(link)
        extra = [from_rounded_value(ar, g, f.expr.subs(f.symbol, y), y, env) for g, y in zip(L.gradient_exprs, L.y)]
        grad = (grad[0], ar.combine(grad[1], np.stack([_full(e, (N,)) for e in extra], axis=1)))
    return value_error, grad


def _row_function(name: str, K: int) -> S._Graph:
    """The stable form of a row function (shifted by c = max z; d/dc is identically 0)."""
    return S._row_graph(f"stable_{name}", K)


def _graph_env(graph: S._Graph, env: dict, ar: Arithmetic) -> dict:
    env = dict(env)
    for sym, expr in graph.nodes:
        env[sym] = evaluate([expr], env, ar)[0]
    return env


def _stack(pairs: list[Pair], shape: tuple, axis: int = 1) -> Pair:
    """Stack values of ``shape`` along a new ``axis`` (an expression SymPy reduced to a constant,
    such as the softmax cross-entropy gradient of a single output, is broadcast to it)."""
    values = np.stack([np.broadcast_to(p[0], shape) for p in pairs], axis=axis)
    errors = np.stack([_full(p[1], shape) for p in pairs], axis=axis)
    return values, errors


def step_bounds(scenario: Scenario, ref: dict[str, np.ndarray], state: dict[str, np.ndarray],
                carried: dict[str, np.ndarray] | None = None) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Bounds for every tensor of one training step, and for the state it ends in.

    ``ref``: the step's values (the oracle's trace, or the consensus); ``state``: parameters and
    velocities (``W1.v``) at the start of the step; ``carried``: their errors (trajectory mode;
    None: exact, as in lockstep). Returns (bounds by trace key, bounds of the new state by state
    key, velocities included). Each bound is ``min(worst case, LAMBDA * standard deviation)``
    (:class:`Arithmetic`).
    """
    ar = Arithmetic(scenario.dtype)
    with np.errstate(all="ignore"):  # overflow, 0 * inf and inf - inf are handled where they arise
        errors, new_errors = _step_bounds(scenario, ref, state, carried, ar)
    shapes = {**{k: np.shape(v) for k, v in ref.items()}, **{k: np.shape(v) for k, v in state.items()}}
    bounds = {k: ar.bound(_full(e, shapes[k])) for k, e in errors.items()}
    return bounds, {k: ar.bound(_full(e, shapes[k.removesuffix(".v")])) for k, e in new_errors.items()}


def _step_bounds(scenario: Scenario, ref: dict[str, np.ndarray], state: dict[str, np.ndarray],
                 carried: dict[str, np.ndarray] | None, ar: Arithmetic) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    carried = carried or {}
    N = ref["X"].shape[0]
    P = {k: ar.given(v, carried.get(k, 0.0)) for k, v in state.items()}
    E: dict[str, np.ndarray] = {"X": ar.zero(), "T": ar.zero()}
    T = ar.given(ref["T"])
    h = ar.given(ref["X"])
    saved: list[dict] = []
    for i, spec in enumerate(scenario.layers, start=1):
        kind = LAYERS[spec.kind]
        E[f"X{i}"] = h[1]
        keep: dict[str, Any] = {"X": h}
        if spec.kind == "BatchNormalization":
            bn = S.BatchNorm(N)
            m = bn._m
            cols = {x: (h[0][j], _full(h[1], h[0].shape)[j]) for j, x in enumerate(m.x)}
            env = _graph_env(m.graph, {**cols, m.epsilon: ar.constant(bn.epsilon)}, ar)
            Z = _stack(evaluate(m.z, env, ar), (h[0].shape[1],), axis=0)
            keep.update(bn=(bn, env))
            y = evaluate([m.y], {m.zeta: Z, m.gamma: P[f"gamma{i}"], m.beta: P[f"beta{i}"]}, ar)[0]
            out = (ref[f"X{i + 1}"] if i < len(scenario.layers) else ref["Y"], y[1])
        else:
            Z = dot(ar, h, (P[f"W{i}"][0].T, np.swapaxes(P[f"W{i}"][1], 0, 1)), n=ref[f"X{i}"].shape[1] + 1,
                    value=ref[f"Z{i}"] if kind.has_z else None)
            b = P[f"b{i}"]
            Z = (Z[0] + (0 if kind.has_z else b[0]),
                 ar.combine(Z[1], b[1], ar.local(b[0], ref[f"X{i}"].shape[1] + 1)))
            if spec.kind == "Linear":
                y = Z
            elif spec.kind in ("Softmax", "LogSoftmax"):
                g = _row_function("softmax" if spec.kind == "Softmax" else "log_softmax", spec.units)
                env = _rows(ar, g.inputs, Z, shift=True)
                env[g.params[0]] = (Z[0].max(axis=1), ar.zero((N,)))  # the shift's error cancels exactly
                env = _graph_env(g, env, ar)
                y = _stack(evaluate(g.outputs, env, ar), (N,))
                probabilities = y[0] if spec.kind == "Softmax" else np.exp(y[0])
                keep.update(rows=(g, env), probabilities=probabilities)
            else:
                act = S.Activation(spec.kind, spec.arg)
                env = _activation_env(act, ar, Z, P.get(f"srelu{i}"))
                y = evaluate([act.expr], env, ar)[0]
                keep.update(act=(act, env))
            out = (y[0], y[1])
        if kind.has_z:
            E[f"Z{i}"] = Z[1]
        keep["Z"] = Z
        saved.append(keep)
        nxt = f"X{i + 1}" if i < len(scenario.layers) else "Y"
        h = (ref[nxt], _full(out[1], ref[nxt].shape))
    E["Y"] = h[1]
    Y = h

    E["loss"], grad = loss(ar, scenario.loss, Y, T)
    n_exact = _power_of_two(float(N))
    DY = (ref["DY"], ar.combine(grad[1] / N, ar.local(ref["DY"], 0 if n_exact else 1)))
    E["DY"] = DY[1]

    for i in range(len(scenario.layers), 0, -1):
        spec, keep = scenario.layers[i - 1], saved[i - 1]
        X, Z = keep["X"], keep["Z"]
        if spec.kind == "BatchNormalization":
            bn, env = keep["bn"]
            m = bn._m
            gamma = P[f"gamma{i}"]
            DZ = times(ar, DY, gamma)
            E[f"DZ{i}"] = DZ[1]
            E[f"Dgamma{i}"] = colsum(ar, times(ar, DY, Z))[1]
            E[f"Dbeta{i}"] = colsum(ar, DY)[1]
            J = evaluate([e for row in bn.jacobian_exprs for e in row], env, ar)  # J[a][b] over columns
            dz_v, dz_e = DZ[0], _full(DZ[1], DZ[0].shape)
            columns = []
            for b in range(N):  # DX[b] = sum_a DZ[a] J[a][b], column by column
                absdot, err = contract(ar, [J[a * N + b] for a in range(N)], [(dz_v[a], dz_e[a]) for a in range(N)])
                columns.append(ar.combine(err, ar.local(absdot, N)))
            DX = (ref[f"DX{i}"], np.stack(columns, axis=0))
        else:
            if spec.kind == "Linear":
                DZ = DY
            elif "rows" in keep:
                g, env = keep["rows"]
                K = spec.units
                J = evaluate([e for row in g.jacobian_exprs for e in row], env, ar)  # J[k][j], per row
                dy_v, dy_e = DY[0], _full(DY[1], DY[0].shape)
                columns = []
                for j in range(K):  # DZ[:, j] = sum_k DY[:, k] J[k][j], per row
                    absdot, err = contract(ar, [J[k * K + j] for k in range(K)], [(dy_v[:, k], dy_e[:, k]) for k in range(K)])
                    columns.append(ar.combine(err, ar.local(absdot, K)))
                # The Jacobian computed from the rounded outputs (diag(p) - p p^T, or 1 - p for
                # log_softmax): one rounding of each of its terms, even where SymPy's form of it
                # is exactly 0 (a single output).
                p = keep["probabilities"]
                from_outputs = ar.local(np.abs(dy_v) * (1 if spec.kind == "LogSoftmax" else p)
                                        + p * np.sum(np.abs(dy_v) * (1 if spec.kind == "LogSoftmax" else p), axis=1, keepdims=True))
                DZ = (ref[f"DZ{i}"], ar.combine(np.stack(columns, axis=1), from_outputs))
            else:
                act, env = keep["act"]
                d = activation_derivative(ar, act, env)
                DZ = times(ar, DY, d)
                DZ = (ref[f"DZ{i}"], DZ[1])
                if spec.kind == "SReLU":
                    dp = evaluate(list(act._m.dparam_exprs), env, ar)
                    errs = []
                    for dv, de in dp:
                        prod = times(ar, DY, (np.broadcast_to(dv, DY[0].shape), _full(de, DY[0].shape)))
                        errs.append(ar.combine(ar.total(_full(prod[1], prod[0].shape)), ar.local(np.sum(np.abs(prod[0])), prod[0].size)))
                    E[f"Dsrelu{i}"] = np.stack(errs, axis=0)
            if LAYERS[spec.kind].has_z:
                E[f"DZ{i}"] = DZ[1]
            W = P[f"W{i}"]
            E[f"DW{i}"] = dot(ar, (DZ[0].T, np.swapaxes(_full(DZ[1], DZ[0].shape), 0, 1)), X, n=N)[1]
            E[f"Db{i}"] = colsum(ar, DZ)[1]
            DX = (ref[f"DX{i}"], dot(ar, DZ, W, n=spec.units)[1])
        E[f"DX{i}"] = DX[1]
        DY = DX

    new_state: dict[str, np.ndarray] = {}
    eta = ar.constant(scenario.lr)
    for i, spec in enumerate(scenario.layers, start=1):
        for param, opt in spec.optimizers:
            key = f"{param}{i}"
            x_new, v_new = S.optimizer_expressions(opt.name)
            grad_key = _GRADIENT[param] + str(i)
            env = {S._ox: P[key], S._oDx: (ref[grad_key], E[grad_key]), S._oeta: eta,
                   S._omu: ar.constant(opt.mu if opt.mu is not None else 0.0),
                   S._ov: P.get(key + ".v", ar.given(np.zeros_like(state[key])))}
            exprs = [x_new] + ([v_new] if v_new is not None else [])
            out = evaluate(exprs, env, ar)
            E[key] = new_state[key] = out[0][1]
            if v_new is not None:
                new_state[key + ".v"] = out[1][1]
    return E, new_state
