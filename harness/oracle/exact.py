"""Exact numbers for the oracle: floats converted without rounding, precision, rounding back.

Inputs are float arrays; every float is converted EXACTLY (``exact``: a binary float is a dyadic
rational, and ``mpf`` holds it without rounding). Exact/high-precision tensors are NumPy object
arrays of ``mpmath.mpf``. All arithmetic runs at ``DPS`` = 40 significant digits (or the caller's
``mpmath.mp.dps`` if that is higher), set locally with ``mpmath.workdps`` (:func:`precision`,
:func:`high_precision`); the global precision is never changed permanently. ``to_float64`` rounds
once, to nearest. The relative error of an oracle value is then far below float64's unit
roundoff (more where a formula cancels catastrophically, e.g. ELU's exp(x) - 1 for tiny |x|).

Thread safety: ``mpmath.workdps`` changes mpmath's global context for the duration of a call, so
do not run the oracle concurrently with other mpmath work in another thread.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import mpmath
import numpy as np
import sympy as sp
from mpmath import libmp

DPS = 40


def precision():
    """A context with at least DPS digits (the caller's higher precision is kept)."""
    return mpmath.workdps(max(DPS, mpmath.mp.dps))


def high_precision(fn: Callable) -> Callable:
    """Run ``fn`` inside :func:`precision`."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with precision():
            return fn(*args, **kwargs)

    return wrapper


def mpf(v: Any) -> mpmath.mpf:
    """One number as an mpf, exactly for binary floats and integers."""
    if isinstance(v, mpmath.mpf):
        return v
    if isinstance(v, (bool, int, np.integer)):
        return mpmath.mp.make_mpf(libmp.from_int(int(v)))
    if isinstance(v, (float, np.floating)):
        if not np.isfinite(v):
            return mpmath.mp.make_mpf(libmp.from_float(float(v)))
        p, q = v.as_integer_ratio()  # q is a power of two: p / q is the float's exact value
        return mpmath.mp.make_mpf(libmp.from_man_exp(int(p), -(int(q).bit_length() - 1)))
    if isinstance(v, sp.Basic):
        return from_sympy(v)
    if isinstance(v, np.ndarray) and v.shape == ():
        return mpf(v[()])
    with precision():
        return mpmath.mpf(v)


def from_sympy(v: sp.Basic) -> mpmath.mpf:
    """A SymPy number as an mpf at the working precision (a rational rounded once, to nearest)."""
    with precision():
        if v.is_Rational:
            return mpmath.mp.make_mpf(libmp.from_rational(int(v.p), int(v.q), mpmath.mp.prec, libmp.round_nearest))
        return mpmath.mpf(sp.Float(v.evalf(mpmath.mp.dps + 10), mpmath.mp.dps + 10))


def rational(v: Any) -> sp.Rational:
    """The exact rational value of a float or mpf."""
    m = mpf(v)
    if not mpmath.isfinite(m):
        raise ValueError(f"{v!r} is not finite")
    sign, man, exp, _ = m._mpf_
    return (-1) ** sign * sp.Integer(int(man)) * sp.Integer(2) ** int(exp)


def exact(a: Any) -> np.ndarray:
    """An object array of mpf holding the exact values of a float array (or scalar).

    Binary floats (float16/32/64, longdouble) and integers are converted without rounding; mpf
    elements are kept as they are.
    """
    arr = a if isinstance(a, np.ndarray) else np.asarray(a, dtype=object if _is_mp(a) else None)
    out = np.empty(arr.shape, dtype=object)
    flat = out.reshape(-1)
    # tolist() gives Python floats (exact) except for extended precision, kept as NumPy scalars
    values = arr.reshape(-1) if arr.dtype == object or arr.dtype.itemsize > 8 else arr.reshape(-1).tolist()
    for k, v in enumerate(values):
        flat[k] = mpf(v)
    return out


def _is_mp(a: Any) -> bool:
    return isinstance(a, mpmath.mpf) or (isinstance(a, (list, tuple)) and any(isinstance(v, mpmath.mpf) for v in a))


def to_float64(a: Any) -> np.ndarray:
    """Round every element once, to nearest, to a float64 array of the same shape."""
    arr = a if isinstance(a, np.ndarray) else np.asarray(a, dtype=object)
    out = np.empty(arr.shape, dtype=np.float64)
    flat = out.reshape(-1)
    with mpmath.workdps(max(DPS, mpmath.mp.dps)):
        for k, v in enumerate(arr.reshape(-1)):
            flat[k] = float(v) if isinstance(v, mpmath.mpf) else float(mpf(v))
    return out


def matrix(rows: Sequence) -> np.ndarray:
    """A 2-d object array of the given rows."""
    out = np.empty((len(rows), len(rows[0]) if len(rows) else 0), dtype=object)
    for i, row in enumerate(rows):
        out[i, :] = list(row) if len(row) else []
    return out


def vector(values: Sequence) -> np.ndarray:
    """A 1-d object array of the given values."""
    out = np.empty(len(values), dtype=object)
    for k, v in enumerate(values):
        out[k] = v
    return out


def matmul(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """A @ B on object arrays of mpf, each entry a correctly rounded dot product (mpmath.fdot)."""
    rows, cols = A.tolist(), B.T.tolist()
    return matrix([[mpmath.fdot(r, c) for c in cols] for r in rows])


@high_precision
def divide(a: Any, n: Any) -> np.ndarray:
    """a / n elementwise at high precision (the training loop's DY = gradient / N)."""
    A, d = exact(a), mpf(n)
    out = np.empty(A.shape, dtype=object)
    out.reshape(-1)[:] = [v / d for v in A.reshape(-1)]
    return out


def lambdify(args: Sequence[sp.Symbol], expr: Any, cse: bool = False) -> Callable:
    """A numeric function of SymPy expressions, evaluated in mpmath."""
    return sp.lambdify(list(args), expr, modules="mpmath", cse=cse)
