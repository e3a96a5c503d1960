"""The comparator's large passes as compiled loops: the same numbers, one pass instead of many.

(And, at the end, the error arithmetic's largest passes: :mod:`harness.judge.arithmetic`.)

The median of four traces (the consensus), the backends' spread around a centre, and the worst
ratio of every backend in a tensor are each a handful of NumPy passes over a tensor's elements
(:mod:`harness.judge.compare`). Here each is one loop over the elements
(numba, ``nogil`` so the judge's thread runs beside the backends, IEEE arithmetic: no fast-math,
NumPy's error model, so ``x / 0`` is ``inf`` as in NumPy). Every kernel computes exactly what the
NumPy code it replaces computes, operation for operation and rounding for rounding
(tests/test_kernels.py compares them, non-finite values, signed zeros and float32 traces
included: a kernel reads a float32 trace as it is and computes in float64, so the upcast costs
no pass of its own); the
comparator keeps its NumPy form for the rare cases (a failing tensor, whose worst element is
localised there; a flip step's excused elements; shapes that differ) and for tensors below
:data:`harness.judge.compare.KERNEL_SIZE` elements.

The compiled code is cached on disk (``cache=True``): beside this module when it is writable,
else in numba's per-user cache directory (or ``NUMBA_CACHE_DIR``), so only the first process
of an installation compiles.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_JIT = dict(nogil=True, cache=True, error_model="numpy", fastmath=False)
FLOAT32_FLOOR = 2.0 ** -100  # below it a float32 work array would round a bound coarsely


@njit(**_JIT)
def _mid(x, y, z, w):  # pragma: no cover - compiled
    """The mean of the middle two of four float64 values."""
    low = np.fmax(np.fmin(x, y), np.fmin(z, w))  # the middle two: max of the minima,
    high = np.fmin(np.fmax(x, y), np.fmax(z, w))  # min of the maxima
    mid = (high - low) * 0.5 + low
    if not np.isfinite(mid) and low == high:  # inf - inf where both are the same inf: that inf
        mid = low
    return mid


@njit(**_JIT)
def _median4(a, b, c, d, out):  # pragma: no cover - compiled
    for i in range(out.size):
        out[i] = _mid(np.float64(a[i]), np.float64(b[i]), np.float64(c[i]), np.float64(d[i]))


@njit(**_JIT)
def _median4_spread(a, b, c, d, out, spread):  # pragma: no cover - compiled
    for i in range(out.size):
        x, y, z, w = np.float64(a[i]), np.float64(b[i]), np.float64(c[i]), np.float64(d[i])
        mid = _mid(x, y, z, w)
        m = abs(x - mid)
        for v in (y, z, w):  # as _spread: the largest distance, a NaN wins
            e = abs(v - mid)
            if e > m or e != e:
                m = e
        out[i], spread[i] = mid, m


def median4(a: np.ndarray, b: np.ndarray, c: np.ndarray, d: np.ndarray, with_spread: bool = False):
    """The mean of the middle two of four arrays of one shape (float64 or float32, read as
    float64), as :func:`harness.judge.compare.consensus` defines it (NaN ignored where some are
    finite); float64. ``with_spread``: (that, :func:`spread` of the four around it), in the
    same pass."""
    out = np.empty(a.shape)
    if not with_spread:
        _median4(*_flats([a, b, c, d]), out.reshape(-1))
        return out
    far = np.empty(a.shape)
    _median4_spread(*_flats([a, b, c, d]), out.reshape(-1), far.reshape(-1))
    return out, far


@njit(**_JIT)
def _spread(values, centre, out):  # pragma: no cover - compiled
    for i in range(out.size):
        m = abs(np.float64(values[0][i]) - centre[i])
        for k in range(1, len(values)):
            x = abs(np.float64(values[k][i]) - centre[i])
            if x > m or x != x:  # np.maximum: a NaN wins
                m = x
        out[i] = m


def spread(values: list[np.ndarray], centre: np.ndarray) -> np.ndarray:
    """Element-wise largest ``|value - centre|`` over the backends (one shape; the values float64
    or float32, read as float64; the centre and the result float64)."""
    out = np.empty(centre.shape)
    _spread(tuple(_flats(values)), _flat(centre, np.float64), out.reshape(-1))
    return out


@njit(**_JIT)
def _permitted(E, r, scale, coefficient):  # pragma: no cover - compiled
    return E + abs(r) * coefficient if coefficient != 0.0 else E * scale


BLOCK = 1024  # elements per block of the worst ratios: a block's bounds and ratios stay in the L1 cache
_INF32 = np.int32(0x7F800000)  # the bits of float32 inf: a non-negative float32 is finite below them


@njit(**_JIT)
def _worst(values, ref, E, scale, coefficient, out):  # pragma: no cover - compiled
    """One pass in blocks: a block's permitted errors once (in float32, and whether any is below
    the floor, NaN or negative), then each backend's float32 ratios into a work block and their
    largest and smallest bits. The bits of non-negative floats order as the floats do, and an
    integer max vectorises where a float one (NaN's rules) does not; a block's slices (not
    offsets into the whole array) let the loops vectorise. Then per backend: every float32
    ratio finite and no permitted error below the floor, its largest ratio; else the float64
    pass. Returns whether every value was finite (a backend of finite float32 ratios has only
    finite values; the float64 pass looks at the others)."""
    n, m = ref.size, len(values)
    high, low = np.zeros(m, np.int32), np.full(m, _INF32, np.int32)
    pbuf, qbuf = np.empty(BLOCK, np.float32), np.empty(BLOCK, np.float32)
    qbits = qbuf.view(np.int32)
    slow = negative = False
    for s in range(0, n, BLOCK):
        size = min(BLOCK, n - s)
        r, e, p32, q, bits = ref[s:s + size], E[s:s + size], pbuf[:size], qbuf[:size], qbits[:size]
        few = below = 0
        for j in range(size):
            p = _permitted(e[j], r[j], scale, coefficient)
            few |= not (p >= FLOAT32_FLOOR)  # NaN too, as NumPy's min in compare._ratios
            below |= p < 0.0
            p32[j] = np.float32(p)
        slow, negative = slow or few != 0, negative or below != 0
        for k in range(m):
            x = values[k][s:s + size]
            for j in range(size):
                q[j] = np.float32(abs(np.float32(np.float64(x[j]) - r[j]))) / p32[j]
            h, lo = high[k], low[k]
            for j in range(size):
                h, lo = max(h, bits[j]), min(lo, bits[j])  # a sign bit (a NaN's too): lo < 0
            high[k], low[k] = h, lo
    if negative:  # a negative ratio orders differently as bits: element by element
        return _worst_elements(values, ref, E, scale, coefficient, out)
    seen = True
    for k in range(m):
        if not slow and low[k] >= 0 and high[k] < _INF32:
            out[k] = np.float64(high[k:k + 1].view(np.float32)[0])
        else:
            out[k], finite = _worst64(values[k], ref, E, scale, coefficient)
            seen = seen and finite
    return seen


@njit(**_JIT)
def _worst64(v, ref, E, scale, coefficient):  # pragma: no cover - compiled
    """One backend's largest float64 ratio, as compare.ratio gives them (equal values, non-finite
    ones too, 0; any other non-finite ratio inf), in blocks as :func:`_worst` (every permitted
    error non-negative: every ratio is), and whether its values were all finite."""
    n = ref.size
    buf = np.empty(BLOCK, np.float64)
    bits = buf.view(np.int64)
    h, bad = np.int64(0), 0
    for s in range(0, n, BLOCK):
        size = min(BLOCK, n - s)
        x, r, e, q, b = v[s:s + size], ref[s:s + size], E[s:s + size], buf[:size], bits[:size]
        for j in range(size):
            xj, rj = np.float64(x[j]), r[j]
            t = abs(xj - rj) / _permitted(e[j], rj, scale, coefficient)
            same = (xj == rj) | ((xj != xj) & (rj != rj))
            bad |= not (xj - xj == 0.0)
            q[j] = t if t - t == 0.0 else (0.0 if same else np.inf)
        for j in range(size):
            h = max(h, b[j])
    return np.array([h]).view(np.float64)[0], bad == 0


@njit(**_JIT)
def _worst_elements(values, ref, E, scale, coefficient, out):  # pragma: no cover - compiled
    """:func:`_worst` element by element, in the order compare._ratios takes them (for a
    negative permitted error, which no bound has: its ratios' signs need the float order)."""
    n, m = ref.size, len(values)
    worst = np.full(m, -np.inf, dtype=np.float32)
    finite = np.ones(m, dtype=np.bool_)  # per backend: every float32 ratio finite
    lowest, nan = np.inf, False
    for i in range(n):  # one pass: the float32 ratios of every backend, and the smallest bound
        r = ref[i]
        p = _permitted(E[i], r, scale, coefficient)
        nan |= p != p  # a NaN bound keeps the float64 path, as NumPy's min does
        lowest = min(lowest, p)
        p32 = np.float32(p)
        for k in range(m):
            r32 = np.float32(abs(np.float32(np.float64(values[k][i]) - r))) / p32
            if r32 > worst[k]:
                worst[k] = r32
            if not np.isfinite(r32):
                finite[k] = False
    fast = not nan and lowest >= FLOAT32_FLOOR
    seen = True  # every value finite (a backend whose float32 ratios are all finite has only finite values)
    for k in range(m):
        if fast and finite[k]:
            out[k] = np.float64(worst[k])
            continue
        v, w = values[k], -np.inf
        for i in range(n):  # float64, as ratio(): equal values 0, other non-finite ratios inf
            x = np.float64(v[i])
            r = abs(x - ref[i]) / _permitted(E[i], ref[i], scale, coefficient)
            if not np.isfinite(r):  # a non-finite value makes a non-finite ratio
                seen = seen and np.isfinite(x)
                same = x == ref[i] or (x != x and ref[i] != ref[i])
                r = 0.0 if same else np.inf
            if r > w:
                w = r
        out[k] = w
    return seen


def worst_ratios(values: list[np.ndarray], ref: np.ndarray, E: np.ndarray, scale: float,
                 coefficient: float) -> tuple[np.ndarray, bool]:
    """Each backend's largest ratio ``|value - ref| / permitted`` in a tensor, where
    ``permitted = E scale`` (``coefficient`` 0) or ``E + |ref| coefficient``, exactly as
    :func:`harness.judge.compare.judge` computes it: in float32 work arrays where every
    permitted error is at least :data:`FLOAT32_FLOOR` and every ratio finite there, else in
    float64 with equal values (non-finite ones too) at 0 and any other non-finite ratio infinite;
    and whether every value was finite (found on the way: a non-finite value has a non-finite
    ratio, which the float64 pass then looks at).
    ``ref`` not empty, every array of its shape (the values float64 or float32, read as float64;
    ``ref`` and ``E`` float64)."""
    out = np.empty(len(values))
    finite = _worst(tuple(_flats(values)), _flat(ref, np.float64), _flat(E, np.float64), float(scale),
                    float(coefficient), out)
    return out, bool(finite)


def _flat(a: np.ndarray, dtype=None) -> np.ndarray:
    """``a`` as one contiguous row, in ``dtype`` (None: float32 stays float32, anything else float64)."""
    if dtype is None:
        dtype = np.float32 if a.dtype == np.float32 else np.float64
    return np.ascontiguousarray(a, dtype=dtype).reshape(-1)


def _flats(arrays: list[np.ndarray]) -> list[np.ndarray]:
    """Traces as rows of one dtype (float32 if every one is: a kernel is compiled per dtype and
    a tuple of arrays must share one; float64 otherwise, exactly)."""
    dtype = np.float32 if all(a.dtype == np.float32 for a in arrays) else np.float64
    return [_flat(a, dtype) for a in arrays]


# ---------------------------------------------------------------------------------------------
# The error arithmetic's largest passes (harness.judge.arithmetic, from COMPILED_PASS elements):
# the same operations as its NumPy form, one loop (tests/test_replay.py compares them bit for bit)
# ---------------------------------------------------------------------------------------------

@njit(**_JIT)
def _bound(worst, var, tiny, lam, var_min, out):  # pragma: no cover - compiled
    for i in range(out.size):
        w, v = worst[i], var[i]
        b = np.fmin(np.sqrt(v) * lam, w)
        if not v >= var_min:
            b = w
        out[i] = np.fmax(b, np.fmin(w, tiny))


def bound(worst: np.ndarray, var: np.ndarray, tiny: float, lam: float, var_min: float) -> np.ndarray:
    """:meth:`harness.judge.arithmetic.Arithmetic.bound` of a worst case and a variance of one shape."""
    out = np.empty(worst.shape)
    _bound(_flat(worst), _flat(var), tiny, lam, var_min, out.reshape(-1))
    return out


@njit(**_JIT)
def _given(v, error, tiny, e, var):  # pragma: no cover - compiled
    for i in range(v.size):
        x = v[i]
        e[i] = error[i] + (abs(x) if abs(x) < tiny and x != 0 else 0.0)
        var[i] = e[i] * e[i]


def given(v: np.ndarray, error: np.ndarray, tiny: float) -> tuple[np.ndarray, np.ndarray]:
    """The (worst case, variance) :meth:`harness.judge.arithmetic.Arithmetic.given` gives an input
    with a measured error of its shape (a subnormal value's own size added)."""
    e, var = np.empty(v.shape), np.empty(v.shape)
    _given(_flat(v), _flat(error), tiny, e.reshape(-1), var.reshape(-1))
    return e, var


@njit(**_JIT)
def _any_subnormal(v, tiny):  # pragma: no cover - compiled
    for i in range(v.size):
        if abs(v[i]) < tiny and v[i] != 0:
            return True
    return False


def any_subnormal(v: np.ndarray, tiny: float) -> bool:
    return bool(_any_subnormal(_flat(v), tiny))


@njit(**_JIT)
def _long_operands(b, eb, c, both, first, second):  # pragma: no cover - compiled
    R, C = b.shape
    for i in range(R):
        for j in range(C):
            m, e = abs(b[i, j]), eb[i, j]
            first[i, j] = m * c + e
            if both:
                second[i, j] = m + e


def long_operands(b: np.ndarray, eb: np.ndarray, c: float, both: bool) -> tuple[np.ndarray, np.ndarray]:
    """The right operands of :func:`harness.judge.arithmetic.dot`'s long product: ``c |b| + e_b``
    and (``both``) ``|b| + e_b``, in b's memory order (W^T is read as it lies)."""
    first, second = np.empty_like(b, dtype=np.float64), np.empty_like(b, dtype=np.float64)
    arrays = (b, eb, first, second)
    if not b.flags.c_contiguous and b.flags.f_contiguous:
        arrays = tuple(x.T for x in arrays)
    _long_operands(arrays[0], arrays[1], c, both, arrays[2], arrays[3])
    return first, second


@njit(**_JIT)
def _long_result(worst, k, lam, var):  # pragma: no cover - compiled
    R, C = worst.shape
    for i in range(R):
        for j in range(C):
            w = worst[i, j] + k
            worst[i, j] = w
            sd = w / lam
            var[i, j] = sd * sd


def long_result(worst: np.ndarray, k: float, lam: float) -> np.ndarray:
    """:func:`harness.judge.arithmetic.dot`'s long product: ``worst += k`` (in place) and its
    variance ``(worst / lam)**2``."""
    var = np.empty_like(worst)
    _long_result(worst, k, lam, var)
    return var
