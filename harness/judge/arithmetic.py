"""Error arithmetic: the rounding model of one dtype and the errors it carries.

An :class:`Err` holds the error of a computed value two ways at once (a worst case and a
variance); :class:`Arithmetic` is the rounding model of one dtype: every elementary operation
(``+ - * /``) correctly rounded, ``fl(a op b) = (a op b)(1 + d) + e`` with ``|d| <= u`` (the unit
roundoff) and ``|e| <= tiny`` (the smallest normal number: flushing subnormals to zero, as XLA
does, is allowed); every library function (exp, log, tanh) within :data:`FUNCTION_ULPS` units of
``u``; every sum and dot product of ``n`` terms within ``gamma(n) * sum |terms|``, where
``gamma(n) = min(n u / (1 - n u), LAMBDA sqrt(n) u)``: Higham's deterministic bound for short
sums, the probabilistic bound of Higham & Mary (2019) for long ones (it holds with probability
at least ``1 - 2 n exp(-LAMBDA**2 / 2)`` for independent rounding errors).

Beside the model: the exact error of a product (:func:`product_error`, second order included)
and the rules of the chain rule's contractions (:func:`dot`, :func:`colsum`, :func:`times`,
:func:`contract`), on (value, error) pairs of NumPy arrays. docs/rounding.md justifies the
choices. :mod:`harness.judge.walk` applies these rules to SymPy expression trees and
:mod:`harness.judge.bounds` to a whole training step.
"""

from __future__ import annotations

import contextvars
import functools
import math
from typing import Any, NamedTuple, Sequence

import numpy as np
import sympy as sp

LAMBDA = 8.0  # standard deviations: P(|error| > LAMBDA sd) <= 2 exp(-LAMBDA**2 / 2) = 2.5e-14 (Hoeffding)
# exp, log, tanh: their own error, in units of u (2 u = 1 ulp): 4 ulps in float32, 8 in float64,
# where the measured libraries need it (docs/rounding.md, the table of operations).
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
        return Err(np.broadcast_to(self.worst, shape), optional_map(self.var, np.broadcast_to, shape))

    def __getitem__(self, index: Any) -> "Err":  # type: ignore[override]
        return Err(self.worst[index], None if self.var is None else self.var[index])

    @property
    def T(self) -> "Err":
        return Err(np.transpose(self.worst), optional_map(self.var, np.transpose))

    @staticmethod
    def stack(errors: Sequence["Err"], shape: tuple, axis: int) -> "Err":
        """Errors of values of ``shape``, stacked along a new ``axis``."""
        worst = np.stack([np.broadcast_to(e.worst, shape) for e in errors], axis=axis)
        if any(e.var is None for e in errors):
            return Err(worst, None)
        return Err(worst, np.stack([np.broadcast_to(e.var, shape) for e in errors], axis=axis))


def optional_map(x: Any, f: Any, *args: Any) -> Any:
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
        return Err(np.sum(errors.worst, axis=axis), optional_map(errors.var, np.sum, axis))

    def bound(self, errors: Err) -> np.ndarray:
        """The bound of each element: min(worst case, LAMBDA standard deviations), and never below
        an underflow (``tiny``) where the worst case allows one. Where the variance is under
        ``VAR_MIN`` (its squares may have underflowed) or unknown, the worst case alone."""
        worst = np.asarray(errors.worst, dtype=np.float64)
        if errors.var is None:
            return worst.copy()
        var = np.asarray(errors.var, dtype=np.float64)
        shape = np.broadcast_shapes(worst.shape, var.shape)
        if worst.shape == var.shape and worst.size >= COMPILED_PASS:
            from harness.judge import kernels

            return kernels.bound(worst, var, self.tiny, LAMBDA, VAR_MIN)
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
        if v.size >= COMPILED_PASS and (error is None or np.shape(error) == v.shape):  # the same, in one pass
            from harness.judge import kernels

            if error is None:
                return (v, NO_ERROR) if not kernels.any_subnormal(v, self.tiny) else self._given(v, None)
            return v, Err(*kernels.given(v, np.asarray(error, dtype=np.float64), self.tiny))
        return self._given(v, error)

    def _given(self, v: np.ndarray, error: Any) -> Pair:
        subnormal = (np.abs(v) < self.tiny) & (v != 0)
        if error is None and not subnormal.any():
            return v, NO_ERROR  # exact: no error to carry (and no products of zeros to form)
        e = np.where(subnormal, np.abs(v), 0.0) if subnormal.any() else 0.0
        if error is not None:
            e = np.broadcast_to(np.asarray(error, dtype=np.float64) + e, v.shape)
        return v, Err(e, e * e)


# The largest passes run compiled from this many elements (harness.judge.kernels: the same
# operations in one loop); below it in NumPy, so that small networks never import numba.
COMPILED_PASS = 1 << 15


# Whether a NaN can be in the arrays at hand. Outside :func:`harness.judge.bounds.step_bounds` always; inside, only
# once an input held one or an operation made one (0 * inf, inf - inf: NumPy reports those as
# "invalid" to the errstate callback), so the common finite case skips the checks for NaN.
NAN_SEEN: contextvars.ContextVar[list[bool] | None] = contextvars.ContextVar("nan_seen", default=None)


def errstate() -> np.errstate:
    """The floating-point error handling of the rules: overflow, division by zero and underflow
    are handled where they arise; an invalid operation (a NaN made) is reported to
    harness.judge.bounds.step_bounds's callback when inside it (:data:`NAN_SEEN`)."""
    tracked = NAN_SEEN.get() is not None
    return np.errstate(over="ignore", divide="ignore", under="ignore", invalid="call" if tracked else "ignore")


def _nan_possible() -> bool:
    seen = NAN_SEEN.get()
    return seen is None or seen[0]


def _unknown_where_nan(e: Err) -> Err:
    """inf (unknown) where an error came out NaN from a NaN magnitude."""
    if _nan_possible() and np.isnan(np.sum(e.worst)):
        bad = np.isnan(e.worst)
        return Err(np.where(bad, np.inf, e.worst), optional_map(e.var, lambda x: np.where(bad, np.inf, x)))
    return e



def product_error(ar: Arithmetic, A: Pair, B: Pair, shared: bool = False) -> Err:
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
    return np.ndim(c) == 0 and bool(np.abs(c) == 1.0)  # (bool, not float: a compiled plan guards it)


def carries_variance(pairs: Sequence[Pair]) -> bool:
    """Whether a result of these operands carries a variance (none of them is measured)."""
    return all(p[1].var is not None for p in pairs)


def power_of_two(x: float) -> bool:
    m, _ = math.frexp(abs(x))
    return x != 0 and m == 0.5


# ---------------------------------------------------------------------------------------------
# The rules of the chain rule's contractions
# ---------------------------------------------------------------------------------------------

def _matmul(a: np.ndarray, e: np.ndarray, left: bool) -> np.ndarray:
    """a @ e (or e @ a) for a >= 0 and e >= 0, either with infinite (unknown) elements: an output
    is infinite exactly where it depends on one (0 * inf is not a dependence)."""
    if np.isfinite(np.sum(a)) and np.isfinite(np.sum(e)):  # no infinity in either (one read each, no copy)
        return a @ e if left else e @ a
    ua, ue = np.isinf(a), np.isinf(e)
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
    aa = np.abs(a)
    v = a @ b if value is None else value
    if n > LAMBDA ** 2:
        c = LAMBDA * math.sqrt(n) * ar.u
        eb_worst = np.broadcast_to(0.0 if eb is NO_ERROR else eb.worst, np.shape(b))
        k = LAMBDA * math.sqrt(n) * ar.tiny  # n underflows
        large = np.size(b) >= COMPILED_PASS
        if large:  # c |B| + E_B and (for E_A) |B| + E_B in one pass over B
            from harness.judge import kernels

            first, second = kernels.long_operands(b, eb_worst, c, ea is not NO_ERROR)
        else:
            ab = np.abs(b)
            first, second = ab * c + eb_worst, ab + eb_worst
        worst = _matmul(aa, first, left=True)
        if ea is not NO_ERROR:
            # E_A E_B: second order, but not negligible around values that are 0 at the reference
            # while their errors are not (:func:`product_error`)
            worst += _matmul(np.broadcast_to(ea.worst, np.shape(a)), second, left=True)
        if large:
            var = kernels.long_result(worst, k, LAMBDA)  # worst += k; var = (worst / LAMBDA)**2
        else:
            worst += k
            sd = worst / LAMBDA
            var = sd * sd
        if (eb is not NO_ERROR and eb.var is None) or (ea is not NO_ERROR and ea.var is None):
            return v, Err(worst, None)
        return v, Err(worst, var)
    ab = np.abs(b)
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
    return v, ar.combine(product_error(ar, A, B), ar.local(v, 1, carries_variance([A, B])))


def contract(ar: Arithmetic, weights: list[Pair], vectors: list[Pair]) -> tuple[np.ndarray, Err]:
    """(sum of |w| |x|, propagated error) of ``sum_k w_k x_k`` over the pairs given."""
    absdot, parts = 0.0, []
    for W, X in zip(weights, vectors):
        absdot = absdot + np.abs(W[0] * X[0])
        parts.append(product_error(ar, W, X))
    return absdot, ar.combine(*parts)


def larger(a: Err, b: Err) -> Err:
    """The elementwise larger of two errors of the same value (worst cases and variances)."""
    var = None if a.var is None or b.var is None else np.fmax(a.var, b.var)
    return Err(np.fmax(a.worst, b.worst), var)


def stack(pairs: list[Pair], shape: tuple, axis: int = 1) -> Pair:
    """Stack values of ``shape`` along a new ``axis`` (an expression SymPy reduced to a constant,
    such as the softmax cross-entropy gradient of a single output, is broadcast to it)."""
    values = np.stack([np.broadcast_to(p[0], shape) for p in pairs], axis=axis)
    return values, Err.stack([p[1] for p in pairs], shape, axis)


