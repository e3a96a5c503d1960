"""assert_exact: torch.testing.assert_close's message, but against exact values.

The tolerance is the comparator's (harness.compare.DEFAULT_TOLERANCE for the dtype), times a
``condition`` factor where a problem is ill-conditioned (the caller computes it from the exact
data and says how). The message names the backend and component, counts the mismatches, and
gives the worst element: its index, the point, the exact value, the value got, the error in
units of tolerance and in ulps of the dtype.
"""

from __future__ import annotations

import numpy as np

from harness.compare import DEFAULT_TOLERANCE
from harness.symbolic import to_float64


def assert_exact(got, exact, dtype: str, what: str, point=None, condition=1.0, skip=None) -> float:
    """Fail unless ``got`` (float array) is within tolerance of ``exact`` (mpf object array).

    ``skip``: a boolean mask of elements not judged (exactly on a kink: a convention).
    Returns the worst error / tolerance, so a test can also assert it is not trivially 0.
    """
    got = np.asarray(got, dtype=np.float64)
    ref = to_float64(exact) if np.asarray(exact).dtype == object else np.asarray(exact, dtype=np.float64)
    assert got.shape == ref.shape, f"{what}: shape {got.shape}, exact {ref.shape}"
    rtol, atol = DEFAULT_TOLERANCE[dtype]
    rtol, atol = rtol * condition, atol * condition
    with np.errstate(invalid="ignore", over="ignore"):
        err = np.abs(got - ref)
        ratio = err / (atol + rtol * np.abs(ref))
    same = (got == ref) | (np.isnan(got) & np.isnan(ref))
    ratio = np.where(same, 0.0, np.where(np.isnan(ratio), np.inf, ratio))
    if skip is not None:
        ratio = np.where(np.broadcast_to(skip, ratio.shape), 0.0, ratio)
    bad = ratio > 1
    if bad.any():
        i = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
        spacing = np.spacing(np.abs(ref[i]).astype(dtype)).astype(np.float64)
        at = "" if point is None else f" at point {np.asarray(point)[i] if np.ndim(point) else point!r}"
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {bad.size} element(s) outside tolerance (rtol {rtol:.3g}, atol {atol:.3g})."
            f" Worst at index {tuple(int(k) for k in i)}{at}: exact {ref[i]!r}, got {got[i]!r},"
            f" error {err[i]:.3g} = {ratio[i]:.3g}x tolerance = {err[i] / spacing:.3g} ulp of {dtype}")
    return float(ratio.max()) if ratio.size else 0.0
