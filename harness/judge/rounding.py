"""The unit of judgement: a bound on the rounding error a correct implementation can make.

Every element of every traced tensor gets a bound ``E`` on ``|computed - exact|`` for an
implementation that evaluates the forward definitions of :mod:`harness.oracle.symbolic` (and their
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

The bound is a running error bound (Higham, *Accuracy and Stability of Numerical Algorithms*,
2nd ed., section 3.3), first order in the roundings (a product carries its operands' errors
exactly, second order included: :func:`_product_error`): it is evaluated alongside the values, operation by operation,
with absolute values, so it carries the error of everything a tensor depends on (forward and
backward) and the conditioning of every operation (cancellation in a sum shows as
``sum |terms|`` much larger than ``|sum|``). It needs no new copy of the formulas: the same SymPy
expressions the exact oracle evaluates (:mod:`harness.oracle.symbolic`) are walked here node by node in
"error arithmetic" on NumPy arrays of (value, bound) pairs (:func:`evaluate`), and the
contractions of the chain rule (``DW = DZ^T X``, ``DZ_j = sum_k DY_k J_kj``, …) use the dot
product rule. docs/rounding.md justifies the choices and shows the checks of the bound itself.

Where the reference is the backends' consensus instead of the exact value (no oracle), two correct
backends can be off in opposite directions, so the comparator allows twice the bound. In
trajectory mode the bound of each step is taken at the backends' consensus parameters, and their
measured spread there enters as the parameters' error (``carried``): the growth of the tolerance
over the steps is the propagation of that spread through the step, not an assumed law (carrying
the bound itself from step to step grows geometrically: docs/rounding.md); a re-anchoring resets
it to zero.
"""

from __future__ import annotations

import contextvars
import functools
import math
from typing import Any, NamedTuple, Sequence

import numpy as np
import sympy as sp

from harness.oracle import symbolic as S
from harness.oracle.definitions import OPTIMIZER_SYMBOLS, optimizer_definition
from harness.core.components import LAYERS, LOSSES
from harness.core.keys import GRADIENT
from harness.spec.scenario import Scenario

LAMBDA = 8.0  # standard deviations: P(|error| > LAMBDA sd) <= 2 exp(-LAMBDA**2 / 2) = 2.5e-14 (Hoeffding)
# exp, log, tanh: their own error, in units of u (2 u = 1 ulp). XLA's float64 tanh was measured
# 7 ulps off (the component suite); float32 libraries are held to 4 ulps.
FUNCTION_ULPS = {"float32": 8, "float64": 16}
# Below this variance (a standard deviation under 3e-151, reachable only in float64) squares may
# have underflowed, so the standard deviation is not trusted and the worst case is the bound.
VAR_MIN = 2.0 ** -1000



class Err(NamedTuple):
    """The error of a computed value, carried in two ways at once (each broadcastable to the value):

    - ``worst``: the worst case: errors add with absolute values; ``k`` roundings of a result of
      size M cost ``gamma_k M`` (Higham's ``k u / (1 - k u)``);
    - ``var``: a variance: the rounding errors are independent, mean-zero and bounded by u (the
      model of Higham & Mary and of Ipsen & Zhou), so independent contributions add, and ``k``
      roundings of a result of size M cost ``k (u M)**2``. ``inf`` (not known) or ``None`` mean
      the worst case bounds alone.

    Keeping the variance rather than the standard deviation makes combining errors a plain sum
    (no square roots, no rescaling), which is most of the work on the large layers.
    """

    worst: Any
    var: Any

    def scaled(self, c: Any) -> "Err":
        """The error of ``c x`` for a coefficient ``c >= 0`` (c (c var): no premature underflow)."""
        return Err(self.worst * c, None if self.var is None else self.var * c * c)

    def full(self, shape: tuple) -> "Err":
        return Err(np.broadcast_to(self.worst, shape), _map(self.var, np.broadcast_to, shape))

    def __getitem__(self, index: Any) -> "Err":  # type: ignore[override]
        return Err(self.worst[index], None if self.var is None else self.var[index])

    @property
    def T(self) -> "Err":
        return Err(np.transpose(self.worst), _map(self.var, np.transpose))

    @staticmethod
    def stack(errors: Sequence["Err"], shape: tuple, axis: int) -> "Err":
        """Errors of values of ``shape``, stacked along a new ``axis``."""
        worst = np.stack([np.broadcast_to(e.worst, shape) for e in errors], axis=axis)
        if any(e.var is None for e in errors):
            return Err(worst, None)
        return Err(worst, np.stack([np.broadcast_to(e.var, shape) for e in errors], axis=axis))


def _map(x: Any, f: Any, *args: Any) -> Any:
    return None if x is None else f(x, *args)


Pair = tuple[np.ndarray, Err]  # (value, the error of the computed value)
NO_ERROR = Err(0.0, 0.0)


class Arithmetic:
    """The rounding model of one dtype.

    Every error is an :class:`Err` (worst case and variance). The bound is
    ``min(worst case, LAMBDA * standard deviation)`` per element (:meth:`bound`). Where a dot
    product has more than ``LAMBDA**2`` terms the standard deviation always gives the smaller
    bound, so there the worst case is set to ``LAMBDA`` standard deviations (Higham & Mary's
    probabilistic bound) instead of being computed: half the work on the large layers.
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

    def local(self, magnitude: Any, k: float = 1, random: bool = True, nonneg: bool = False) -> Err:
        """The error of ``k`` roundings of a result of this size (with underflow); unknown (inf)
        where the float64 evaluation gave no magnitude (NaN). ``random=False``: the worst case
        only (the result will be combined with a measured error: :class:`Err`). ``nonneg``: the
        magnitude is already a sum of absolute values."""
        if not k:
            return NO_ERROR
        m = magnitude if nonneg else np.abs(magnitude)
        worst = self.gamma(k) * m
        worst += k * self.tiny
        if random:
            s = self.u * m
            s += self.tiny
            s *= s
            s *= k
        return _unknown_where_nan(Err(worst, s if random else None))

    def function(self, value: Any, random: bool = True) -> Err:
        """A library function's own error (exp, log, tanh)."""
        f = (self.function_ulps * self.u) * np.abs(value)
        f += self.tiny
        return Err(f, f * f if random else None)

    @staticmethod
    def combine(*errors: Err) -> Err:
        """Errors of independent origin: worst cases add, and so do variances. A term that came
        out as 0 * inf (a zero sensitivity to an operand that overflowed in the float64
        evaluation: exp(800) inside 1 / (1 + exp(800)) = 0) carries nothing."""
        errors = tuple(e for e in errors if e is not NO_ERROR)
        if not errors:
            return NO_ERROR
        if len(errors) == 1:
            return errors[0]
        random = all(e.var is not None for e in errors)
        worst = functools.reduce(np.add, [e.worst for e in errors])
        var = functools.reduce(np.add, [e.var for e in errors]) if random else None
        # every term is >= 0, so a sum is NaN exactly when a term is: one read, no copy
        if _nan_possible() and (np.isnan(np.sum(worst)) or (random and np.isnan(np.sum(var)))):
            worst = functools.reduce(np.add, [np.fmax(e.worst, 0.0) for e in errors])
            var = functools.reduce(np.add, [np.fmax(e.var, 0.0) for e in errors]) if random else None
        return Err(worst, var)

    @staticmethod
    def correlated(*errors: Err) -> Err:
        """Errors that may share a source (one input reached along two paths: Nesterov's x + mu v'
        - eta Dx with v' = mu v - eta Dx carries the error of Dx twice, with the same sign): worst
        cases add, and so do the standard deviations, sd(a + b) <= sd(a) + sd(b) whatever the
        correlation (quadrature would allow sqrt(2) too little there; found by the property tests)."""
        errors = tuple(e for e in errors if e is not NO_ERROR)
        if len(errors) <= 1 or any(e.var is None for e in errors):
            return Arithmetic.combine(*errors)
        s = Arithmetic.combine(*[Err(e.worst, np.sqrt(e.var)) for e in errors])  # sums of sds
        return Err(s.worst, s.var * s.var)

    @staticmethod
    def total(errors: Err, axis: int | None = None) -> Err:
        """The propagated error of a sum of elements carrying ``errors`` (``axis`` of the values)."""
        return Err(np.sum(errors.worst, axis=axis), _map(errors.var, np.sum, axis))

    def bound(self, errors: Err) -> np.ndarray:
        """The bound of each element: min(worst case, LAMBDA standard deviations), and never below
        an underflow (``tiny``) where the worst case allows one. Where the variance is under
        ``VAR_MIN`` (its squares may have underflowed) or unknown, the worst case alone."""
        worst = np.asarray(errors.worst, dtype=np.float64)
        if errors.var is None:
            return worst.copy()
        var = np.asarray(errors.var, dtype=np.float64)
        shape = np.broadcast_shapes(worst.shape, var.shape)
        with np.errstate(invalid="ignore"):
            out = np.sqrt(var)  # in place from here: these are the largest arrays of a step
            if not isinstance(out, np.ndarray) or out.shape != shape:
                out = np.array(np.broadcast_to(out, shape))
            out *= LAMBDA
            np.fmin(out, worst, out=out)
            np.copyto(out, np.broadcast_to(worst, shape), where=~(var >= VAR_MIN))
            np.fmax(out, np.fmin(worst, self.tiny), out=out)
            return out

    def exact_in_dtype(self, x: float) -> bool:
        return bool(np.isfinite(x)) and float(self.dtype.type(x)) == x

    def constant(self, c: Any) -> Pair:
        """A constant of the definitions as the implementation holds it (rounded to the dtype)."""
        v = float(c)
        exact = self.exact_in_dtype(v) and (not isinstance(c, sp.Basic) or sp.Rational(v) == c)
        if exact:
            return np.float64(v), NO_ERROR
        e = self.u * abs(v)
        return np.float64(v), Err(e, e * e)

    def given(self, value: Any, error: Any = None) -> Pair:
        """An input: its value, and ``error``: None for a value exact in the dtype, else a
        measured error (the spread of trajectories), a known size rather than a random one, so
        its standard deviation is the error itself. A subnormal input may be read as 0 (XLA and
        TensorFlow do: docs/findings.md #4), an error the size of the value."""
        v = np.asarray(value, dtype=np.float64)
        subnormal = (np.abs(v) < self.tiny) & (v != 0)
        if error is None and not subnormal.any():
            return v, NO_ERROR  # exact: no error to carry (and no products of zeros to form)
        e = np.where(subnormal, np.abs(v), 0.0) if subnormal.any() else 0.0
        if error is not None:
            e = np.broadcast_to(np.asarray(error, dtype=np.float64) + e, v.shape)
        return v, Err(e, e * e)


# Whether a NaN can be in the arrays at hand. Outside :func:`step_bounds` always; inside, only
# once an input held one or an operation made one (0 * inf, inf - inf: NumPy reports those as
# "invalid" to the errstate callback), so the common finite case skips the checks for NaN.
_NAN_SEEN: contextvars.ContextVar[list[bool] | None] = contextvars.ContextVar("nan_seen", default=None)


def _nan_possible() -> bool:
    seen = _NAN_SEEN.get()
    return seen is None or seen[0]


def _unknown_where_nan(e: Err) -> Err:
    """inf (unknown) where an error came out NaN from a NaN magnitude."""
    if _nan_possible() and np.isnan(np.sum(e.worst)):
        bad = np.isnan(e.worst)
        return Err(np.where(bad, np.inf, e.worst), _map(e.var, lambda x: np.where(bad, np.inf, x)))
    return e


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

    Every rule is elementwise, so a large evaluation runs block by block along the first axis
    (:data:`BLOCK` elements at a time): each node of the tree is then one pass over arrays that
    stay in the CPU's cache instead of one over main memory, with the same result, element for
    element.
    """
    shape = np.broadcast_shapes(*(np.shape(x) for v, e in env.values() for x in (v, e.worst, e.var) if x is not None))
    size = math.prod(shape)
    if size <= 2 * BLOCK or not shape:
        return _evaluate(exprs, env, ar)
    rows = BLOCK // max(1, size // shape[0])
    if not 2 <= rows < shape[0]:  # (a block of one row could not be told from a broadcast row)
        return _evaluate(exprs, env, ar)
    parts = [_evaluate(exprs, {s: _rows_of(p, shape, r, r + rows) for s, p in env.items()}, ar)
             for r in range(0, shape[0], rows)]
    return [_join([block[k] for block in parts], shape, rows) for k in range(len(exprs))]


BLOCK = 1 << 14  # elements per block of a large evaluation (a few arrays of it fit in L2)


def _rows_of(pair: Pair, shape: tuple, start: int, stop: int) -> Pair:
    """Rows ``start:stop`` of a (value, error) pair broadcast to ``shape``; an operand that
    broadcasts along the first axis (a scalar, a row) is passed whole."""
    def cut(x: Any) -> Any:
        if x is None or np.ndim(x) < len(shape) or np.shape(x)[0] == 1:
            return x
        return x[start:stop]

    v, e = pair
    return cut(v), e if e is NO_ERROR else Err(cut(e.worst), cut(e.var))


def _join(blocks: list[Pair], shape: tuple, rows: int) -> Pair:
    """The blocks of one result, concatenated along the first axis. A part that does not run
    along it (a scalar, a row) came from operands passed whole, so it is the same in every block."""
    def whole(xs: list) -> Any:
        if all(np.ndim(x) < len(shape) or np.shape(x)[0] == 1 for x in xs):
            return xs[0]
        return np.concatenate([np.broadcast_to(x, (min(rows, shape[0] - k * rows), *shape[1:]))
                               for k, x in enumerate(xs)], axis=0)

    errors = [b[1] for b in blocks]
    if all(e is NO_ERROR for e in errors):
        error = NO_ERROR
    else:
        var = None if any(e.var is None for e in errors) else whole([e.var for e in errors])
        error = Err(whole([e.worst for e in errors]), var)
    return whole([b[0] for b in blocks]), error


def _evaluate(exprs: Sequence[sp.Expr], env: dict[sp.Symbol, Pair], ar: Arithmetic) -> list[Pair]:
    replacements, reduced = _program(tuple(exprs))
    env = dict(env)
    # the inputs each symbol's error comes from (for correlations); an exact input has none
    sources: dict[sp.Symbol, frozenset] = {s: frozenset() if p[1] is NO_ERROR else frozenset((s,)) for s, p in env.items()}
    memo: dict[Any, Any] = {_SOURCES: sources}
    for sym, sub in replacements:
        sources[sym] = _sources_of(sub, sources)
    with _arithmetic_errstate():
        for sym, sub in replacements:
            env[sym] = _node(sub, env, ar, memo)
        return [_node(e, env, ar, memo) for e in reduced]


_SOURCES = object()  # the key of the sources map in evaluate's memo


def _arithmetic_errstate() -> np.errstate:
    """Overflow, division by zero and underflow are handled where they arise; an invalid
    operation (a NaN made) is reported to step_bounds's callback when inside it."""
    tracked = _NAN_SEEN.get() is not None
    return np.errstate(over="ignore", divide="ignore", under="ignore", invalid="call" if tracked else "ignore")


@functools.lru_cache(maxsize=4096)
def _free_symbols(e: Any) -> frozenset:
    """SymPy recomputes ``free_symbols`` on every access; every block of an evaluation asks again."""
    return frozenset(e.free_symbols)


def _sources_of(e: Any, sources: dict) -> frozenset:
    """The input symbols an expression's error comes from (common subexpressions expanded)."""
    return frozenset().union(*(sources.get(s, frozenset((s,))) for s in _free_symbols(e)))


def _groups(args: Sequence[Any], errors: Sequence[Err], sources: dict) -> list[Err]:
    """The errors of an operation's operands, those that share an input summed as correlated
    (:meth:`Arithmetic.correlated`): one error per group of operands that are independent of
    every other group."""
    groups: list[tuple[frozenset, list[Err]]] = []
    for a, err in zip(args, errors):
        own, members = _sources_of(a, sources), [err]
        for g in [g for g in groups if g[0] & own]:
            groups.remove(g)
            own, members = own | g[0], g[1] + members
        groups.append((own, members))
    return [Arithmetic.correlated(*members) for _, members in groups]


def _through(e: Err, worst: Any, slope: Any) -> Err:
    """An argument's error through a function: the worst case given, the standard deviation
    times the function's steepest slope where the argument can be."""
    return Err(worst, None if e.var is None else e.var * slope * slope)


def _product_error(ar: Arithmetic, A: Pair, B: Pair, shared: bool = False) -> Err:
    """The error of a b carried from the errors of a and b, exactly: |a| e_b + |b| e_a + e_a e_b.

    The second-order term is not negligible where a value is 0 and its error is not (in a
    trajectory, the median of 0, 0, 0 and x is 0 with a spread of |x|): the product of two such
    factors is then all second order (SReLU's DZ = DY ar with DY and ar both 0 at the median,
    torch's both not: found by explore).
    """
    (a, ea), (b, eb) = A, B
    if ea is NO_ERROR:
        return NO_ERROR if eb is NO_ERROR else eb if _unit(a) else eb.scaled(np.abs(a))
    if eb is NO_ERROR:
        return ea if _unit(b) else ea.scaled(np.abs(b))
    both = Err(ea.worst * eb.worst, None if ea.var is None or eb.var is None else ea.var * eb.var)
    terms = (eb.scaled(np.abs(a)), ea.scaled(np.abs(b)), both)
    return ar.correlated(*terms) if shared else ar.combine(*terms)


def _unit(c: Any) -> bool:
    """Whether ``c`` is the scalar 1 or -1 (a sign: multiplying by it moves no error)."""
    return np.ndim(c) == 0 and abs(float(c)) == 1.0


def _random(pairs: Sequence[Pair]) -> bool:
    """Whether a result of these operands carries a variance (none of them is measured)."""
    return all(p[1].var is not None for p in pairs)


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
        v = functools.reduce(np.add, [p[0] for p in parts])
        magnitude = functools.reduce(np.add, [np.abs(p[0]) for p in parts])
        operands = _groups(e.args, [p[1] for p in parts], memo[_SOURCES])
        r = v, ar.combine(*operands, ar.local(magnitude, len(parts) - 1, _random(parts), nonneg=True))
    elif isinstance(e, sp.Mul):
        sources = memo[_SOURCES]
        parts = sorted(((*_node(a, env, ar, memo), _sources_of(a, sources)) for a in e.args),
                       key=lambda p: np.ndim(p[0]))  # scalars first

        def fold(p: tuple, q: tuple) -> tuple:
            return p[0] * q[0], _product_error(ar, p[:2], q[:2], shared=bool(p[2] & q[2])), p[2] | q[2]

        v, err, _ = functools.reduce(fold, parts)
        exact_factors = sum(1 for a in e.args if a.is_Number and _power_of_two(float(a)))
        r = v, ar.combine(err, ar.local(v, max(len(parts) - 1 - exact_factors, 0), _random(parts)))
    elif isinstance(e, sp.Pow):
        r = _pow(e, env, ar, memo)
    # The library functions carry an argument's error through their exact worst case over the
    # interval a +- e (the first-order slope underestimates it once e is not small: a measured
    # spread of trajectories need not be); the standard deviation through the steepest slope
    # on that interval (a Lipschitz bound there).
    elif isinstance(e, sp.exp):
        a, ea = _node(e.args[0], env, ar, memo)
        v = np.exp(a)
        r = v, ar.combine(_through(ea, v * np.expm1(ea.worst), v * np.exp(ea.worst)), ar.function(v, ea.var is not None))
    elif isinstance(e, sp.log):
        a, ea = _node(e.args[0], env, ar, memo)
        v = np.log(a)
        m = np.abs(a)
        inside = ea.worst < m
        worst = np.where(inside, -np.log1p(-ea.worst / np.where(m > 0, m, 1.0)), np.inf)
        steepest = np.where(inside, 1 / np.where(inside, m - ea.worst, 1.0), np.inf)
        r = v, ar.combine(_through(ea, worst, steepest), ar.function(v, ea.var is not None))
    elif isinstance(e, sp.tanh):
        a, ea = _node(e.args[0], env, ar, memo)
        v = np.tanh(a)
        nearest = np.tanh(np.fmax(np.abs(a) - ea.worst, 0.0))  # tanh' is largest nearest to 0
        steepest = 1 - nearest * nearest
        r = v, ar.combine(_through(ea, ea.worst * steepest, steepest), ar.function(v, ea.var is not None))
    elif isinstance(e, sp.Abs):
        a, ea = _node(e.args[0], env, ar, memo)
        r = np.abs(a), ea
    elif isinstance(e, sp.sign):
        a, _ = _node(e.args[0], env, ar, memo)
        r = np.sign(a), NO_ERROR
    elif isinstance(e, sp.Piecewise):
        r = _piecewise(e, env, ar, memo)
    elif isinstance(e, (sp.logic.boolalg.Boolean, sp.core.relational.Relational)):
        r = _condition(e, env, ar, memo), NO_ERROR  # a branch condition (sp.cse may name one)
    else:
        raise NotImplementedError(f"harness.judge.rounding has no rule for {type(e).__name__} ({e})")
    memo[e] = r
    return r


def _pow(e: sp.Pow, env: dict, ar: Arithmetic, memo: dict) -> Pair:
    base, p = e.args
    b, eb = _node(base, env, ar, memo)
    if not p.is_Number:
        raise NotImplementedError(f"harness.judge.rounding has no rule for a symbolic power ({e})")
    q = float(p)
    v = np.power(b, q)
    if q == 0.5:  # sqrt: first order, or sqrt(error) at 0
        positive = v > 0
        half = eb.scaled(1 / (2 * np.where(positive, v, 1.0)))
        at_zero = np.sqrt(eb.worst)
        prop = Err(np.where(positive, half.worst, at_zero), _map(half.var, lambda x: np.where(positive, x, at_zero * at_zero)))
        return v, ar.combine(prop, ar.local(v, 1, eb.var is not None))
    # |q b**(q - 1)| e_b, written |q v| (e_b / |b|): b**(q - 1) alone overflows or underflows where
    # v does not (1 / (1 + exp(501)) = 2.6e-218, but (1 + exp(501))**-2 = 0 in float64)
    nonzero = b != 0
    relative = eb.scaled(1 / np.where(nonzero, np.abs(b), 1.0)).scaled(np.abs(q * v))
    if np.all(nonzero):
        prop = relative
    else:
        at_zero = eb.scaled(np.abs(q * np.power(b, q - 1)))
        var = None if relative.var is None else np.where(nonzero, relative.var, at_zero.var)
        prop = Err(np.where(nonzero, relative.worst, at_zero.worst), var)
    if q.is_integer() and 2 <= q <= 4 and eb is not NO_ERROR:
        # a power is a product of equal factors: its error carries every order, exactly,
        # sum_j C(q, j) |b|**(q - j) e**j; at b = 0 all of it is e**q (SquaredError at Y = T,
        # where one backend's Y is not: found by explore)
        e, m = eb.worst, np.abs(b)
        higher = sum(math.comb(int(q), j) * m ** (int(q) - j) * e ** j for j in range(2, int(q) + 1))
        prop = ar.combine(prop, Err(higher, None if eb.var is None else higher * higher))
    if q.is_integer() and q > 0:
        k = int(q) - 1  # multiplications
    elif q.is_integer():
        k = int(-q)  # multiplications, then one division
    else:
        k = ar.function_ulps  # a library power or sqrt-and-divide
    return v, ar.combine(prop, ar.local(v, k, eb.var is not None))


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
    value = worst = var = None
    taken = near = None
    branches = []
    for expr, cond in e.args:
        v, err = _node(expr, env, ar, memo)
        c = _condition(cond, env, ar, memo)
        branches.append((v, err, c, _near_boundary(cond, env, ar, memo)))
    random = all(err.var is not None for _, err, _, _ in branches)
    for v, err, c, close in branches:
        if value is None:
            shape = np.broadcast_shapes(np.shape(v), np.shape(c))
            value, worst = np.full(shape, np.nan), np.full(shape, np.nan)
            var = np.full(shape, np.nan) if random else None
            taken, near = np.zeros(shape, dtype=bool), np.zeros(shape, dtype=bool)
        pick = np.broadcast_to(c, taken.shape) & ~taken
        value = np.where(pick, v, value)
        worst = np.where(pick, err.worst, worst)
        if random:
            var = np.where(pick, err.var, var)
        taken |= pick
        near |= close
    if near.any():
        widest = functools.reduce(np.fmax, [np.broadcast_to(b[1].worst, shape) for b in branches])
        worst = np.where(near, np.fmax(worst, widest), worst)
        if random:
            widest = functools.reduce(np.fmax, [np.broadcast_to(b[1].var, shape) for b in branches])
            var = np.where(near, np.fmax(var, widest), var)
    return value, Err(worst, var)


def _near_boundary(c: Any, env: dict, ar: Arithmetic, memo: dict) -> np.ndarray:
    """Where a condition's two sides are within their (worst-case) errors of each other."""
    if isinstance(c, (sp.And, sp.Or, sp.Not)):
        return functools.reduce(np.logical_or, [_near_boundary(a, env, ar, memo) for a in c.args])
    if not isinstance(c, sp.core.relational.Relational):
        return np.bool_(False)
    (lhs, el), (rhs, er) = _node(c.lhs, env, ar, memo), _node(c.rhs, env, ar, memo)
    return np.abs(lhs - rhs) <= el.worst + er.worst


# ---------------------------------------------------------------------------------------------
# The rules of the chain rule's contractions
# ---------------------------------------------------------------------------------------------

def _matmul(a: np.ndarray, e: np.ndarray, left: bool) -> np.ndarray:
    """a @ e (or e @ a) for a >= 0 and e >= 0, either with infinite (unknown) elements: an output
    is infinite exactly where it depends on one (0 * inf is not a dependence)."""
    ua, ue = np.isinf(a), np.isinf(e)
    if not ue.any() and not ua.any():
        return a @ e if left else e @ a
    x, y = (np.where(ua, 0.0, a), np.where(ue, 0.0, e)) if left else (np.where(ue, 0.0, e), np.where(ua, 0.0, a))
    ux, uy = (ua, ue) if left else (ue, ua)
    hit = ((ux.astype(np.float64) @ (y > 0)) + ((x > 0) @ uy.astype(np.float64)) + (ux.astype(np.float64) @ uy)) > 0
    return np.where(hit, np.inf, x @ y)


def _scale_of(x: np.ndarray) -> float:
    """A power of two near the largest finite element (1 if there is none): dividing by it is exact."""
    finite = x[np.isfinite(x)] if not np.all(np.isfinite(x)) else x
    top = float(np.max(finite, initial=0.0))
    return 2.0 ** math.frexp(top)[1] if top > 0 else 1.0


def _carried(a: np.ndarray, e: Err, left: bool) -> Err:
    """The error of a @ x (or x @ a) carried from x's error ``e``, for a = |A| >= 0.

    The variance is ``a**2 @ var``, computed with a and var scaled to at most 1 so that nothing
    overflows; an output whose scaled variance falls where the squares could have underflowed
    (below 2**-900 of the largest possible term) has an unknown (inf) variance: its worst case bounds
    it alone.
    """
    worst = _matmul(a, e.worst, left)
    if e.var is None:
        return Err(worst, None)
    sa, sv = _scale_of(a), _scale_of(e.var)
    q = a / sa
    scaled = _matmul(q * q, e.var / sv, left)
    var = np.where((scaled >= 2.0 ** -900) | (scaled == 0) & (worst == 0), scaled * sv * sa * sa, np.inf)
    return Err(worst, var)


def dot(ar: Arithmetic, A: Pair, B: Pair, n: int, value: np.ndarray | None = None) -> Pair:
    """A @ B of n-term dot products: |A| E_B (+) E_A |B| (+) n roundings of |A||B|.

    Short products (n <= LAMBDA**2) carry both the worst case and the variance as every other
    operation. Long ones (the wide layers, where this is nearly all the work) take the worst
    case for the errors carried in and Higham & Mary's ``c |A||B|``, ``c = LAMBDA sqrt(n) u``,
    for their own rounding (and E_A E_B, second order), all in two products of non-negative
    matrices, ``|A| (c |B| + E_B) + E_A (|B| + E_B)``, one where an operand is exact; the
    variance is then that bound over LAMBDA, squared, so the bound is the same either way.
    ``value``: A @ B where the caller has it (the reference's tensor), else it is computed.
    """
    (a, ea), (b, eb) = A, B
    aa, ab = np.abs(a), np.abs(b)
    v = a @ b if value is None else value
    if n > LAMBDA ** 2:
        c = LAMBDA * math.sqrt(n) * ar.u
        if eb is NO_ERROR:
            worst = _matmul(aa, ab * c, left=True)
        else:
            eb_worst = np.broadcast_to(eb.worst, np.shape(b))
            worst = _matmul(aa, ab * c + eb_worst, left=True)
        if ea is not NO_ERROR:
            # E_A E_B: second order, but not negligible around values that are 0 at the reference
            # while their errors are not (:func:`_product_error`)
            worst += _matmul(np.broadcast_to(ea.worst, np.shape(a)), ab if eb is NO_ERROR else ab + eb_worst, left=True)
        worst += LAMBDA * math.sqrt(n) * ar.tiny
        if (eb is not NO_ERROR and eb.var is None) or (ea is not NO_ERROR and ea.var is None):
            return v, Err(worst, None)
        sd = worst / LAMBDA
        return v, Err(worst, sd * sd)
    magnitude = aa @ ab
    terms = [Err(ar.gamma(n) * magnitude + n * ar.tiny, n * np.square(ar.u * magnitude + ar.tiny))]
    if eb is not NO_ERROR:
        terms.append(_carried(aa, eb.full(np.shape(b)), left=True))
    if ea is not NO_ERROR:
        terms.append(_carried(ab, ea.full(np.shape(a)), left=False))
    if ea is not NO_ERROR and eb is not NO_ERROR:
        second = _matmul(np.broadcast_to(ea.worst, np.shape(a)), np.broadcast_to(eb.worst, np.shape(b)), left=True)
        terms.append(Err(second, second * second))
    return v, ar.combine(*terms)


def colsum(ar: Arithmetic, A: Pair) -> Pair:
    """Sum over the batch (axis 0)."""
    a, ea = A
    n = a.shape[0]
    return a.sum(axis=0), ar.combine(ar.total(ea.full(a.shape), axis=0), ar.local(np.abs(a).sum(axis=0), n, ea.var is not None))


def times(ar: Arithmetic, A: Pair, B: Pair) -> Pair:
    """Elementwise product with one rounding."""
    v = A[0] * B[0]
    return v, ar.combine(_product_error(ar, A, B), ar.local(v, 1, _random([A, B])))


def contract(ar: Arithmetic, weights: list[Pair], vectors: list[Pair]) -> tuple[np.ndarray, Err]:
    """(sum of |w| |x|, propagated error) of ``sum_k w_k x_k`` over the pairs given."""
    absdot, parts = 0.0, []
    for W, X in zip(weights, vectors):
        absdot = absdot + np.abs(W[0] * X[0])
        parts.append(_product_error(ar, W, X))
    return absdot, ar.combine(*parts)


# ---------------------------------------------------------------------------------------------
# Components
# ---------------------------------------------------------------------------------------------

def _activation_env(act: S.Activation, ar: Arithmetic, Z: Pair, srelu: Pair | None) -> dict:
    env = {act.symbol: Z}
    if act.kind == "SReLU":
        v, e = srelu
        e = e.full(np.shape(v))
        for k, sym in enumerate(act.parameters):
            env[sym] = (np.float64(v[k]), e[k])
    elif act.parameters:
        env[act.parameters[0]] = ar.constant(float(act.args["alpha"]))
    return env


def _rows(ar: Arithmetic, symbols: Sequence[sp.Symbol], M: Pair, shift: bool) -> dict:
    """Bind row symbols z1..zK to the columns of M; ``shift``: a row may be shifted by its max."""
    v, e = M
    e = e.full(v.shape)
    if shift:
        s = ar.u * np.abs(v).max(axis=1, keepdims=True)
        e = Err(e.worst + s, _map(e.var, lambda x: x + s * s))
    return {s: (v[:, k], e[:, k]) for k, s in enumerate(symbols)}


@functools.lru_cache(maxsize=None)
def _numeric(exprs: tuple, symbols: tuple) -> Any:
    """The float64 NumPy values of expressions, without their errors (``sp.lambdify``)."""
    return sp.lambdify(list(symbols), list(exprs), modules="numpy", cse=True)


@functools.lru_cache(maxsize=None)
def _ratio_of_derivatives(g: sp.Expr, h: sp.Expr, x: sp.Symbol) -> sp.Expr:
    """(dg/dx) / (dh/dx): how much g moves per unit of h, both functions of x."""
    return sp.diff(g, x) / sp.diff(h, x)


def from_rounded_value(ar: Arithmetic, g: sp.Expr, h: sp.Expr, x: sp.Symbol, env: dict) -> Err:
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
        return NO_ERROR  # piecewise-linear: the derivative does not depend on the value
    symbols = tuple(sorted(expr.free_symbols | h.free_symbols, key=str))
    with _arithmetic_errstate():  # only values are needed here: no error arithmetic
        ratio, hv = _numeric((expr, h), symbols)(*[env[s][0] for s in symbols])
    ratio = np.where(np.isfinite(ratio), np.abs(ratio), 0.0)
    return ar.function(hv).scaled(ratio)  # h computed to within its library error


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
    if not np.any(bad):
        return pair
    e = e.full(np.shape(v))
    return v, Err(np.where(bad, np.inf, e.worst), _map(e.var, lambda x: np.where(bad, np.inf, x)))


def loss(ar: Arithmetic, name: str, Y: Pair, T: Pair) -> tuple[Err, Pair]:
    """(error of the loss L = sum over rows, (dL/dY, its error)) at Y, T (rows of K).

    The softmax cross-entropy may shift each row by its maximum, and its gradient may be computed
    from the rounded probabilities, ``p sum(t) - t``; LogisticCrossEntropy's gradient may be
    computed from the rounded Sigmoid(Y) (``LossKind.link``, :func:`from_rounded_value`).
    """
    N, K = np.shape(Y[0])
    L = S.Loss(name, K)
    shift = name == "SoftmaxCrossEntropy"
    if shift:  # the loss and its gradient do not change when a row is shifted: evaluate the
        Y = (Y[0] - Y[0].max(axis=1, keepdims=True), Y[1])  # exponentials where they cannot overflow
    env = {**_rows(ar, L.y, Y, shift), **_rows(ar, L.t, T, False)}
    per_row = _unjudged_where_undefined(evaluate([L.expr], env, ar)[0])
    value_error = ar.combine(ar.total(per_row[1].full((N,))), ar.local(np.sum(np.abs(per_row[0])), N))
    grad = _unjudged_where_undefined(_stack(evaluate(L.gradient_exprs, env, ar), (N,)))
    if shift:
        # Backpropagation computes p sum(t) - t from the rounded probabilities p = softmax(Y),
        # each within a library exponential's error and the K roundings of its sum and quotient
        # (exp(y - logsumexp(y)) included). Where that moves the gradient more than the error
        # SymPy's form carries (a single output: log(exp(y)) is y, the gradient exactly 0, where
        # a computed p of 1 - u is correct), that is the gradient's error. p sum(t) is read off
        # the gradient itself (g + t), so softmax is not written a second time.
        pt = np.abs(grad[0] + T[0])
        grad = (grad[0], _larger(grad[1].full(grad[0].shape), ar.combine(ar.function(pt), ar.local(pt, K))))
    link = LOSSES[name].link
    if link is not None:  # the gradient computed from the rounded link, T (Sigmoid(Y) - 1)
        f = S.Activation(link)
        extra = [from_rounded_value(ar, g, f.expr.subs(f.symbol, y), y, env) for g, y in zip(L.gradient_exprs, L.y)]
        grad = (grad[0], ar.combine(grad[1], Err.stack(extra, (N,), axis=1)))
    return value_error, grad


def _row_function(name: str, K: int) -> S.Graph:
    """The stable form of a row function (shifted by c = max z; d/dc is identically 0)."""
    return S.row_graph(f"stable_{name}", K)


@functools.lru_cache(maxsize=None)
def _jacobian_of_outputs(kind: str, K: int) -> tuple[tuple, tuple]:
    """(q1..qK, dF_k/dz_j for k, j) of a row function written in its outputs q, as
    backpropagation evaluates it: q_k (delta_kj - q_j) for Softmax (diag(q) - q q^T), and
    delta_kj - exp(q_j) for LogSoftmax (its outputs are log-probabilities)."""
    q = sp.symbols(f"q1:{K + 1}", real=True)
    if kind == "Softmax":
        J = tuple(q[k] * (int(k == j) - q[j]) for k in range(K) for j in range(K))
    else:
        J = tuple(int(k == j) - sp.exp(q[j]) for k in range(K) for j in range(K))
    return q, J


def _larger(a: Err, b: Err) -> Err:
    """The elementwise larger of two errors of the same value (worst cases and variances)."""
    var = None if a.var is None or b.var is None else np.fmax(a.var, b.var)
    return Err(np.fmax(a.worst, b.worst), var)


def _graph_env(graph: S.Graph, env: dict, ar: Arithmetic) -> dict:
    env = dict(env)
    for sym, expr in graph.nodes:
        env[sym] = evaluate([expr], env, ar)[0]
    return env


def _stack(pairs: list[Pair], shape: tuple, axis: int = 1) -> Pair:
    """Stack values of ``shape`` along a new ``axis`` (an expression SymPy reduced to a constant,
    such as the softmax cross-entropy gradient of a single output, is broadcast to it)."""
    values = np.stack([np.broadcast_to(p[0], shape) for p in pairs], axis=axis)
    return values, Err.stack([p[1] for p in pairs], shape, axis)


def step_bounds(scenario: Scenario, ref: dict[str, np.ndarray], state: dict[str, np.ndarray],
                carried: dict[str, np.ndarray] | None = None,
                new_state: bool = False) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Bounds for every tensor of one training step, and (``new_state``) for the state it ends in.

    ``ref``: the step's values (the oracle's trace, or the consensus); ``state``: parameters and
    velocities (``W1.v``) at the start of the step; ``carried``: their errors (trajectory mode;
    None: exact, as in lockstep). Returns (bounds by trace key, bounds of the new state by state
    key, velocities included; empty unless ``new_state``: the runner judges the updated
    parameters through the trace and takes the next step's ``carried`` from the backends' spread,
    so only the tests of the propagation ask for them). Each bound is
    ``min(worst case, LAMBDA * standard deviation)`` (:class:`Arithmetic`).
    """
    ar = Arithmetic(scenario.dtype)
    seen = [any(np.isnan(np.sum(v)) for d in (ref, state, carried or {}) for v in d.values())]

    def invalid(kind: str, flag: int) -> None:
        seen[0] = True

    token = _NAN_SEEN.set(seen)
    try:  # overflow, 0 * inf and inf - inf are handled where they arise
        with np.errstate(all="ignore", invalid="call", call=invalid):
            errors, new_errors = _step_bounds(scenario, ref, state, carried, ar)
    finally:
        _NAN_SEEN.reset(token)
    shapes = {**{k: np.shape(v) for k, v in ref.items()}, **{k: np.shape(v) for k, v in state.items()}}
    bounds = {k: _bound(ar, e, shapes[k]) for k, e in errors.items()}
    if not new_state:
        return bounds, {}
    return bounds, {k: bounds[k] if k in bounds else _bound(ar, e, shapes[k.removesuffix(".v")])
                    for k, e in new_errors.items()}


def _bound(ar: Arithmetic, e: Err, shape: tuple) -> np.ndarray:
    b = ar.bound(e)  # a new array
    return b if b.shape == shape else np.array(np.broadcast_to(b, shape))


def _step_bounds(scenario: Scenario, ref: dict[str, np.ndarray], state: dict[str, np.ndarray],
                 carried: dict[str, np.ndarray] | None, ar: Arithmetic) -> tuple[dict[str, Err], dict[str, Err]]:
    carried = carried or {}
    N = ref["X"].shape[0]
    P = {k: ar.given(v, carried.get(k)) for k, v in state.items()}
    E: dict[str, Err] = {"X": NO_ERROR, "T": NO_ERROR}
    T = ar.given(ref["T"])
    h = ar.given(ref["X"])
    saved: list[dict] = []
    for i, spec in enumerate(scenario.layers, start=1):
        kind = LAYERS[spec.kind]
        E[f"X{i}"] = h[1]
        keep: dict[str, Any] = {"X": h}
        if spec.kind == "BatchNormalization":
            bn = S.BatchNorm(N)
            m = bn.model
            cols = {x: (h[0][j], h[1].full(h[0].shape)[j]) for j, x in enumerate(m.x)}
            env = _graph_env(m.graph, {**cols, m.epsilon: ar.constant(bn.epsilon)}, ar)
            Z = _stack(evaluate(m.z, env, ar), (h[0].shape[1],), axis=0)
            keep.update(bn=(bn, env))
            y = evaluate([m.y], {m.zeta: Z, m.gamma: P[f"gamma{i}"], m.beta: P[f"beta{i}"]}, ar)[0]
            out = (ref[f"X{i + 1}"] if i < len(scenario.layers) else ref["Y"], y[1])
        else:
            Z = dot(ar, h, (P[f"W{i}"][0].T, P[f"W{i}"][1].T), n=ref[f"X{i}"].shape[1] + 1,
                    value=ref[f"Z{i}"] if kind.has_z else None)
            b = P[f"b{i}"]
            Z = (Z[0] + (0 if kind.has_z else b[0]),
                 ar.combine(Z[1], b[1], ar.local(b[0], ref[f"X{i}"].shape[1] + 1)))
            if spec.kind == "Linear":
                y = Z
            elif LAYERS[spec.kind].row:
                g = _row_function("softmax" if spec.kind == "Softmax" else "log_softmax", spec.units)
                env = _rows(ar, g.inputs, Z, shift=True)
                env[g.params[0]] = (Z[0].max(axis=1), NO_ERROR)  # the shift's error cancels exactly
                env = _graph_env(g, env, ar)
                y = _stack(evaluate(g.outputs, env, ar), (N,))
                probabilities = y[0] if spec.kind == "Softmax" else np.exp(y[0])
                keep.update(rows=(g, env), probabilities=probabilities, outputs=y)
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
        h = (ref[nxt], out[1].full(ref[nxt].shape))
    E["Y"] = h[1]
    Y = h

    E["loss"], grad = loss(ar, scenario.loss, Y, T)
    n_exact = _power_of_two(float(N))
    DY = (ref["DY"], ar.combine(grad[1].scaled(1 / N), ar.local(ref["DY"], 0 if n_exact else 1)))
    E["DY"] = DY[1]

    for i in range(len(scenario.layers), 0, -1):
        spec, keep = scenario.layers[i - 1], saved[i - 1]
        X, Z = keep["X"], keep["Z"]
        if spec.kind == "BatchNormalization":
            bn, env = keep["bn"]
            m = bn.model
            gamma = P[f"gamma{i}"]
            DZ = times(ar, DY, gamma)
            E[f"DZ{i}"] = DZ[1]
            E[f"Dgamma{i}"] = colsum(ar, times(ar, DY, Z))[1]
            E[f"Dbeta{i}"] = colsum(ar, DY)[1]
            J = evaluate([e for row in bn.jacobian_exprs for e in row], env, ar)  # J[a][b] over columns
            dz_v, dz_e = DZ[0], DZ[1].full(DZ[0].shape)
            columns = []
            for b in range(N):  # DX[b] = sum_a DZ[a] J[a][b], column by column
                absdot, err = contract(ar, [J[a * N + b] for a in range(N)], [(dz_v[a], dz_e[a]) for a in range(N)])
                columns.append(ar.combine(err, ar.local(absdot, N)))
            DX = (ref[f"DX{i}"], Err.stack(columns, (X[0].shape[1],), axis=0))
        else:
            if spec.kind == "Linear":
                DZ = DY
            elif "rows" in keep:
                g, env = keep["rows"]
                K = spec.units
                J = evaluate([e for row in g.jacobian_exprs for e in row], env, ar)  # J[k][j], per row
                # Backpropagation evaluates the Jacobian from the rounded outputs: where their
                # error moves it more than the error of Z does (a single output, whose SymPy
                # Jacobian is exactly 0), that error is the Jacobian's
                q, from_q = _jacobian_of_outputs(spec.kind, K)
                J = [(v, _larger(e, eq)) for (v, e), (_, eq) in zip(J, evaluate(from_q, _rows(ar, q, keep["outputs"], False), ar))]
                dy_v, dy_e = DY[0], DY[1].full(DY[0].shape)
                columns = []
                for j in range(K):  # DZ[:, j] = sum_k DY[:, k] J[k][j], per row
                    absdot, err = contract(ar, [J[k * K + j] for k in range(K)], [(dy_v[:, k], dy_e[:, k]) for k in range(K)])
                    columns.append(ar.combine(err, ar.local(absdot, K)))
                # The product computed in that form (diag(p) - p p^T, or 1 - p for log_softmax):
                # one rounding of each of its terms, even where SymPy's form of the Jacobian is
                # exactly 0, each of the size of the computed DY (its value and its error)
                p = keep["probabilities"]
                dy_m = np.abs(dy_v) + dy_e.worst
                from_outputs = ar.local(dy_m * (1 if spec.kind == "LogSoftmax" else p)
                                        + p * np.sum(dy_m * (1 if spec.kind == "LogSoftmax" else p), axis=1, keepdims=True))
                DZ = (ref[f"DZ{i}"], ar.combine(Err.stack(columns, (N,), axis=1), from_outputs))
            else:
                act, env = keep["act"]
                d = activation_derivative(ar, act, env)
                DZ = times(ar, DY, d)
                DZ = (ref[f"DZ{i}"], DZ[1])
                if spec.kind == "SReLU":
                    dp = evaluate(list(act.parameter_derivative_exprs), env, ar)
                    errs = []
                    for dv, de in dp:
                        prod = times(ar, DY, (np.broadcast_to(dv, DY[0].shape), de.full(DY[0].shape)))
                        errs.append(ar.combine(ar.total(prod[1].full(prod[0].shape)), ar.local(np.sum(np.abs(prod[0])), prod[0].size)))
                    E[f"Dsrelu{i}"] = Err.stack(errs, (), axis=0)
            if LAYERS[spec.kind].has_z:
                E[f"DZ{i}"] = DZ[1]
            W = P[f"W{i}"]
            E[f"DW{i}"] = dot(ar, (DZ[0].T, DZ[1].full(DZ[0].shape).T), X, n=N, value=ref[f"DW{i}"])[1]
            E[f"Db{i}"] = colsum(ar, DZ)[1]
            DX = (ref[f"DX{i}"], dot(ar, DZ, W, n=spec.units, value=ref[f"DX{i}"])[1])
        E[f"DX{i}"] = DX[1]
        DY = DX

    new_state: dict[str, Err] = {}
    eta = ar.constant(scenario.lr)
    for i, spec in enumerate(scenario.layers, start=1):
        for param, opt in spec.optimizers:
            key = f"{param}{i}"
            x_new, v_new = optimizer_definition(opt.name)
            grad_key = GRADIENT[param] + str(i)
            o = OPTIMIZER_SYMBOLS
            env = {o.x: P[key], o.Dx: (ref[grad_key], E[grad_key]), o.eta: eta,
                   o.mu: ar.constant(opt.mu if opt.mu is not None else 0.0),
                   o.v: P.get(key + ".v", (np.float64(0.0), NO_ERROR))}
            exprs = [x_new] + ([v_new] if v_new is not None else [])
            out = evaluate(exprs, env, ar)
            E[key] = new_state[key] = out[0][1]
            if v_new is not None:
                new_state[key + ".v"] = out[1][1]
    return E, new_state
