"""The compiled comparator kernels against the NumPy code they replace, bit for bit.

Constructed arrays, not a seed's luck: random values with the hard elements planted in them
(NaN, both infinities, signed zeros, values beyond float32's range, bounds of 0, bounds below
float32's floor, a value equal to an infinite reference), so that every branch of the NumPy
code is taken and the kernel must take the same one. The comparison is exact (``array_equal``
with NaN equal, and the signs of zeros).
"""

from __future__ import annotations

import os
import subprocess
import sys
import zlib

import numpy as np
import pytest

from harness.judge import compare, kernels
from harness.run.runner import _pairwise_spread
from harness.spec.scenario import build_scenario

SHAPE = (181, 183)  # at least KERNEL_SIZE elements: the comparator dispatches to the kernels


def test_the_arrays_here_are_large_enough_for_the_kernels():
    assert np.prod(SHAPE) >= compare.KERNEL_SIZE


def _same(x: np.ndarray, y: np.ndarray) -> bool:
    return x.shape == y.shape and np.array_equal(x, y, equal_nan=True) and np.array_equal(np.signbit(x), np.signbit(y))


def _planted(rng: np.random.Generator, hard: bool) -> list[np.ndarray]:
    """Four traces of one tensor, close to each other, with (``hard``) special values planted."""
    base = rng.normal(size=SHAPE)
    values = [base + rng.normal(size=SHAPE) * 1e-7 for _ in range(4)]
    if hard:
        specials = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e300, -1e300, 5e-324]
        for v in values:
            idx = rng.integers(0, base.size, size=40)
            v.flat[idx] = rng.choice(specials, size=40)
        for v in values:  # the same infinity in the middle two, and equal zeros of both signs
            v[0, 0], v[0, 1], v[0, 2] = np.inf, -0.0 if v is values[0] else 0.0, -np.inf
    return values


@pytest.mark.parametrize("hard", [False, True])
@pytest.mark.parametrize("seed", range(4))
def test_the_median_of_four_is_the_numpy_one(seed, hard):
    values = _planted(np.random.default_rng(seed), hard)
    assert _same(kernels.median4(*values), compare._median4(*values))
    assert _same(compare.consensus(values), compare._median4(*values))


@pytest.mark.parametrize("hard", [False, True])
def test_the_spread_is_the_numpy_one(hard):
    values = _planted(np.random.default_rng(5), hard)
    centre = compare._median4(*values)
    with np.errstate(invalid="ignore"):
        expected = np.max(np.abs(np.stack(values) - centre), axis=0)  # np.max: a NaN wins
    assert _same(kernels.spread(values, centre), expected)
    assert _same(_pairwise_spread(values, centre), expected)
    with np.errstate(invalid="ignore"):
        three = np.max(np.abs(np.stack(values[:3]) - centre), axis=0)
    assert _same(kernels.spread(values[:3], centre), three)


def _scenario(dtype: str):
    return build_scenario(name="t", layers="ReLU;Linear", sizes="29,37,2", optimizers="GradientDescent",
                          init_weights=None, loss="SquaredError", lr=0.01, batch_size=37, steps=1, dtype=dtype)


def _bounds(rng: np.random.Generator, ref: np.ndarray, kind: str) -> np.ndarray:
    E = np.abs(ref) * 2.0 ** -22 + 1e-30
    if kind == "zeros":  # exact elements: any difference infinitely far, equal values at 0
        E.flat[rng.integers(0, E.size, size=30)] = 0.0
    elif kind == "tiny":  # below float32's floor: the float64 path
        E.flat[3] = 2.0 ** -120
    elif kind == "huge":  # beyond float32's range: inf in float32, the float64 path
        E.flat[5] = 1e300
    elif kind == "nan":
        E.flat[7] = np.nan
    return E


@pytest.mark.parametrize("oracle", [None, "sympy", "autodiff"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kind", ["plain", "zeros", "tiny", "huge", "nan"])
@pytest.mark.parametrize("hard", [False, True])
def test_every_backends_worst_ratio_is_the_numpy_one(oracle, dtype, kind, hard):
    rng = np.random.default_rng(zlib.crc32(repr((oracle, dtype, kind, hard)).encode()))
    values = _planted(rng, hard)
    ref = compare._median4(*values) if oracle is None else values.pop()
    if not hard and kind == "zeros":
        values[1].flat[:] = ref.flat  # exact where nothing is allowed, in one backend
    sc = _scenario(dtype)
    bounds = {"Z1": _bounds(rng, ref, kind)}
    backends = ["numpy", "torch", "jax", "tensorflow"][:len(values)]
    got = kernels.worst_ratios(values, ref, bounds["Z1"], *compare.allowance(sc, oracle))
    worst, kinks, kept, _ = compare._ratios(sc, bounds, "Z1", values, ref, oracle, None, backends, {})
    assert got.tolist() == [worst[b] for b in backends]
    assert all(np.isfinite(w) or w == np.inf for w in got)


def test_a_ratio_far_inside_and_one_outside_the_bound():
    """Constructed: one backend exactly 0.25 bound off, one 3 bounds off (ratios exact in binary)."""
    ref = np.linspace(1.0, 2.0, 64).reshape(8, 8)
    E = np.full_like(ref, 2.0 ** -20)
    inside, outside = ref + 0.25 * 2 * E, ref.copy()
    outside[5, 6] += 3 * 2 * E[5, 6]
    got = kernels.worst_ratios([ref.copy(), inside, outside], ref, E, 2.0, 0.0)
    assert got.tolist() == [0.0, 0.25, 3.0]


def test_judge_takes_the_kernel_and_localises_a_failure_as_before(monkeypatch):
    """A failing tensor is judged again in NumPy: its element, values and count outside."""
    sc = _scenario("float64")
    rng = np.random.default_rng(9)
    shape = (256, 1 + compare.KERNEL_SIZE // 256)  # large enough for the kernel
    trace = {"Z1": rng.normal(size=shape)}
    traces = {b: {"Z1": trace["Z1"].copy()} for b in ("numpy", "torch", "jax", "tensorflow")}
    bounds = {"Z1": np.full(shape, 1e-9)}
    scan = compare.KinkScan({}, [], 0, 0)
    traces["torch"]["Z1"][7, 3] += 1e-9  # inside: a ratio of 1/2
    ref = {"Z1": compare.consensus([t["Z1"] for t in traces.values()])}
    calls = []
    real = kernels.worst_ratios
    monkeypatch.setattr(kernels, "worst_ratios", lambda *a: calls.append(1) or real(*a))
    (t,) = compare.judge(sc, 0, traces, scan, bounds, None, ref).tensors
    assert calls and not t.blamed and t.worst["torch"] == pytest.approx(0.5, rel=1e-6)
    traces["jax"]["Z1"][4, 11] += 1e-3
    ref = {"Z1": compare.consensus([t["Z1"] for t in traces.values()])}
    (t,) = compare.judge(sc, 0, traces, scan, bounds, None, ref).tensors  # Z1: the one tensor they hold
    assert t.blamed == ["jax"] and t.index == (4, 11) and t.outside == {"jax": 1}
    assert t.worst["numpy"] == 0.0 and t.worst["jax"] == pytest.approx(1e-3 / 2e-9, rel=1e-6)  # float32 work arrays


def test_a_second_process_loads_the_kernels_from_the_disk_cache(tmp_path):
    """The first process compiles and writes the cache; the next one only loads it."""
    code = ("import numpy as np\nfrom harness.judge import kernels\n"
            "a = np.arange(6.0)\nkernels.median4(a, a, a, a); kernels.spread([a, a], a)\n"
            "kernels.worst_ratios([a], a, a + 1, 2.0, 0.0)\n"
            "fs = (kernels._median4, kernels._spread, kernels._worst)\n"
            "print(sum(sum(f.stats.cache_hits.values()) for f in fs), sum(sum(f.stats.cache_misses.values()) for f in fs))")
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
            for _ in range(2)]
    assert all(r.returncode == 0 for r in runs), [r.stderr for r in runs]
    (hits1, misses1), (hits2, misses2) = (tuple(map(int, r.stdout.split())) for r in runs)
    assert (hits2, misses2) == (3, 0) and misses1 >= 1
    assert any(tmp_path.rglob("*.nbi"))
