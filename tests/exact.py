"""assert_exact: torch.testing.assert_close's message, but against exact values, in units of a
rounding bound.

The unit is the comparator's (harness.judge.bounds, harness.judge.compare.allowed with an oracle): each
element's bound ``E`` on the error a correct implementation of the definitions in
harness.oracle.symbolic makes in the dtype at that point, plus the rounding of the exact value to
float64 (``2**-53 |exact|``). There is no other tolerance and no condition factor: the bound
carries the conditioning of the computation itself. :func:`rounding_bound` computes ``E`` the way
harness.judge.bounds.step_bounds does, ``min(worst case, LAMBDA * standard deviation)`` per element.

The message names the backend and component, counts the mismatches, and gives the worst element:
its index, the point, the exact value, the value got, the error in units of the bound and in
ulps of the dtype.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from harness.judge.compare import ratio
from harness.judge.arithmetic import Arithmetic, Pair
from harness.judge.message import sentence
from harness.oracle.exact import to_float64



def rounding_bound(dtype: str, compute: Callable[[Arithmetic], Sequence[Pair]]) -> list[np.ndarray]:
    """The bound of each (value, error) pair ``compute(ar)`` returns for ``ar = Arithmetic(dtype)``:
    ``ar.bound``, i.e. min(worst case, LAMBDA standard deviations) element by element, as
    harness.judge.bounds.step_bounds takes it."""
    ar = Arithmetic(dtype)
    return [np.broadcast_to(ar.bound(e), np.shape(v)) for v, e in compute(ar)]


def ratios(got, exact, bound) -> np.ndarray:
    """|got - exact| / (bound + 2**-53 |exact|) per element (harness.judge.compare.allowed with an
    oracle): 0 where equal (NaN too), inf for any difference where nothing is allowed."""
    got = np.asarray(got, dtype=np.float64)
    ref = to_float64(exact) if np.asarray(exact).dtype == object else np.asarray(exact, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        permitted = np.broadcast_to(np.asarray(bound, dtype=np.float64), ref.shape) + np.abs(ref) * 2.0 ** -53
    r = ratio(got, ref, permitted)
    return np.where(np.isnan(r), np.inf, r)


def assert_exact(got, exact, dtype: str, what: str, bound, point=None, skip=None) -> float:
    """Fail unless ``got`` (float array) is within the rounding ``bound`` of ``exact`` (mpf object array).

    ``bound``: per element (broadcastable), from :func:`rounding_bound` or
    harness.judge.bounds.step_bounds; 0 where a correct implementation is exact.
    ``skip``: a boolean mask of elements not judged (exactly on a kink: a convention).
    Returns the worst error / bound, so a test can also assert it is not trivially 0.
    """
    got = np.asarray(got, dtype=np.float64)
    ref = to_float64(exact) if np.asarray(exact).dtype == object else np.asarray(exact, dtype=np.float64)
    assert got.shape == ref.shape, f"{what}: shape {got.shape}, exact {ref.shape}"
    r = ratios(got, ref, bound)
    if skip is not None:
        r = np.where(np.broadcast_to(skip, r.shape), 0.0, r)
    bad = r > 1
    if bad.any():
        i = tuple(int(k) for k in np.unravel_index(int(np.argmax(r)), r.shape))
        err = abs(got[i] - ref[i])
        permitted = float(np.broadcast_to(np.asarray(bound, dtype=np.float64), ref.shape)[i]) + abs(ref[i]) * 2.0 ** -53
        spacing = float(np.spacing(np.abs(ref[i]).astype(dtype)))
        finite = np.abs(ref[np.isfinite(ref)])
        scale = float(np.spacing(np.asarray(finite.max() if finite.size else 0.0, dtype=dtype)))
        at = "" if point is None else f"; at point {np.asarray(point)[i] if np.ndim(point) else point!r}"
        raise AssertionError(
            sentence(step=None, label=what, index=i, blamed=["got"], ratios={"got": float(r[i])}, allowed=permitted,
                     twice=False, outside={"got": int(bad.sum())}, elements=int(bad.size),
                     values={"got": float(got[i]), "exact": float(ref[i])}, ulps={"got": err / scale})
            + f"; {err / spacing:.3g} ulp of {dtype} at that element{at}")
    return float(r.max()) if r.size else 0.0


def loss_point(name: str, targets: str, seed: int, N: int, K: int) -> tuple[np.ndarray, np.ndarray]:
    """(Y, T) where a loss is defined: Y standard normal (rows on the simplex for the losses that
    take probabilities), T one-hot or soft (rows on the simplex); the same for every caller."""
    rng = np.random.default_rng(seed)
    Y = rng.standard_normal((N, K))
    if name in ("CrossEntropy", "NegativeLogLikelihood"):  # they take probabilities
        Y = np.exp(Y) / np.exp(Y).sum(axis=1, keepdims=True)
    T = np.eye(K)[rng.integers(0, K, N)] if targets == "onehot" else rng.dirichlet(np.ones(K), N)
    return Y, T
