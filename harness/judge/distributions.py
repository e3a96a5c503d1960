"""Whether a sample of random draws follows a stated distribution, at a stated false-alarm probability.

The initializers of the four libraries (``Uniform(a=..., b=...)``, ``XavierNormal``, ...) draw
their parameters at random; what can be checked of them is that the draws follow the documented
distribution. :func:`check_draws` does so with three tests of a :class:`Law`, each of whose
probability of a false alarm (rejecting draws that do follow the law) is at most ``alpha / 3``,
so that a check has at most ``alpha``:

- the mean: for a uniform law Hoeffding's inequality, ``P(|mean - mu| >= t) <= 2 exp(-2 n t^2 /
  (hi - lo)^2)`` (a bound, valid for any distribution on [lo, hi]); for a normal law the sample
  mean is exactly normal with variance ``sigma^2 / n`` (a two-sided z test);
- the variance about the known mean: for a uniform law Hoeffding again, on ``(x - mu)^2`` which
  lies in ``[0, ((hi - lo) / 2)^2]``; for a normal law ``sum((x - mu)^2) / sigma^2`` is exactly
  chi-square with ``n`` degrees of freedom (two-sided);
- the shape: the Kolmogorov-Smirnov test against the law's distribution function
  (``scipy.stats.kstest``, its exact distribution of the statistic where scipy has it).

For a uniform law every draw must moreover lie in ``[lo, hi]`` (no false alarm possible).

The draws are float32: the rounding moves each draw by a relative ``2**-24`` at most, which
moves each statistic far less than its spread; it does not change these probabilities beyond
that. Many checks make a suite: :func:`per_check` divides the suite's false-alarm probability
among them (Bonferroni: the probability that any of ``m`` checks fires is at most the sum of
their ``m`` probabilities), so ``per_check(m)`` for every check keeps the suite under
:data:`SUITE_FALSE_ALARM`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

SUITE_FALSE_ALARM = 1e-6  # the whole suite's probability of failing on correct draws
TESTS_PER_CHECK = 3  # mean, variance, shape


def per_check(checks: int, suite: float = SUITE_FALSE_ALARM) -> float:
    """The false-alarm probability each of ``checks`` checks may have so that the suite has at most
    ``suite`` (Bonferroni)."""
    if checks < 1:
        raise ValueError("a suite has at least one check")
    return suite / checks


@dataclass(frozen=True)
class Law:
    """A documented distribution of draws: ``uniform`` on [lo, hi] or ``normal`` (lo = mean,
    hi = standard deviation), or ``zero`` (every draw exactly 0)."""

    kind: str
    lo: float = 0.0
    hi: float = 0.0

    @staticmethod
    def uniform(lo: float, hi: float) -> "Law":
        return Law("uniform", float(lo), float(hi))

    @staticmethod
    def normal(mean: float, std: float) -> "Law":
        return Law("normal", float(mean), float(std))

    @property
    def mean(self) -> float:
        return (self.lo + self.hi) / 2 if self.kind == "uniform" else self.lo if self.kind == "normal" else 0.0

    @property
    def variance(self) -> float:
        if self.kind == "uniform":
            return (self.hi - self.lo) ** 2 / 12
        return self.hi ** 2 if self.kind == "normal" else 0.0

    def scaled(self, factor: float) -> "Law":
        """The same kind and mean with the variance multiplied by ``factor`` (a deliberately wrong
        law, for the tests of this module's power)."""
        s = math.sqrt(factor)
        if self.kind == "uniform":
            half = (self.hi - self.lo) / 2 * s
            return Law.uniform(self.mean - half, self.mean + half)
        return Law.normal(self.lo, self.hi * s)

    def __str__(self) -> str:
        if self.kind == "uniform":
            return f"uniform on [{self.lo:.6g}, {self.hi:.6g}]"
        return f"normal(mean {self.lo:.6g}, sd {self.hi:.6g})" if self.kind == "normal" else "all zero"


def _frozen(law: Law):
    from scipy import stats

    if law.kind == "uniform":
        return stats.uniform(loc=law.lo, scale=law.hi - law.lo)
    return stats.norm(loc=law.lo, scale=law.hi)


def _hoeffding(values: np.ndarray, mu: float, width: float, alpha: float) -> tuple[float, float]:
    """(|mean - mu|, the deviation Hoeffding allows at false-alarm probability alpha) for values
    in an interval of ``width``."""
    return abs(float(np.mean(values)) - mu), width * math.sqrt(math.log(2 / alpha) / (2 * values.size))


def _moments(x: np.ndarray, law: Law, alpha: float) -> list[str]:
    from scipy import stats

    n, problems = x.size, []
    if law.kind == "uniform":
        half = (law.hi - law.lo) / 2
        tests = {"mean": _hoeffding(x, law.mean, law.hi - law.lo, alpha),
                 "variance": _hoeffding((x - law.mean) ** 2, law.variance, half * half, alpha)}
        for what, (dev, allowed) in tests.items():
            if dev > allowed:
                problems.append(f"{what} off by {dev:.3g}, more than the {allowed:.3g} Hoeffding allows")
        return problems
    z = (float(np.mean(x)) - law.mean) * math.sqrt(n) / law.hi
    if 2 * stats.norm.sf(abs(z)) < alpha:
        problems.append(f"mean {np.mean(x):.6g} is {z:+.2f} standard errors from {law.mean:.6g}")
    q = float(np.sum((x - law.mean) ** 2)) / law.variance
    p = 2 * min(stats.chi2.cdf(q, n), stats.chi2.sf(q, n))
    if p < alpha:
        problems.append(f"variance {q / n * law.variance:.6g}, not {law.variance:.6g} (chi-square p = {p:.3g})")
    return problems


def check_draws(draws: np.ndarray, law: Law, alpha: float) -> list[str]:
    """What is wrong with ``draws`` as independent draws from ``law``: empty when nothing is, where
    draws that follow the law give a non-empty answer with probability at most ``alpha``."""
    from scipy import stats

    x = np.asarray(draws, dtype=np.float64).ravel()
    if not np.all(np.isfinite(x)):
        return [f"{int(np.sum(~np.isfinite(x)))} of {x.size} draws are not finite"]
    if law.kind == "zero":
        return [] if not np.any(x) else [f"{int(np.count_nonzero(x))} of {x.size} draws are not 0"]
    a = alpha / TESTS_PER_CHECK
    problems = []
    if law.kind == "uniform" and (x.min() < law.lo or x.max() > law.hi):
        problems.append(f"draws in [{x.min():.6g}, {x.max():.6g}], outside [{law.lo:.6g}, {law.hi:.6g}]")
    problems += _moments(x, law, a)
    ks = stats.kstest(x, _frozen(law).cdf)
    if ks.pvalue < a:
        problems.append(f"Kolmogorov-Smirnov distance {ks.statistic:.3g} (p = {ks.pvalue:.3g})")
    return problems
