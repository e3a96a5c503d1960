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
from harness.run import runner
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
    elif kind == "negative":  # no bound is negative; the kernel's integer max needs non-negative ratios
        E.flat[9] = -E.flat[9]
    elif kind == "late":  # a backend's first non-finite ratio in the last, partial block
        E.flat[-2] = 0.0
    return E


@pytest.mark.parametrize("oracle", [None, "sympy", "autodiff"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kind", ["plain", "zeros", "tiny", "huge", "nan", "negative", "late"])
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
    got, _ = kernels.worst_ratios(values, ref, bounds["Z1"], *compare.allowance(sc, oracle))
    worst, kinks, kept, _ = compare._ratios(sc, bounds, "Z1", values, ref, oracle, None, backends, {})
    assert got.tolist() == [worst[b] for b in backends]
    assert all(np.isfinite(w) or w == np.inf for w in got)


def test_a_ratio_far_inside_and_one_outside_the_bound():
    """Constructed: one backend exactly 0.25 bound off, one 3 bounds off (ratios exact in binary)."""
    ref = np.linspace(1.0, 2.0, 64).reshape(8, 8)
    E = np.full_like(ref, 2.0 ** -20)
    inside, outside = ref + 0.25 * 2 * E, ref.copy()
    outside[5, 6] += 3 * 2 * E[5, 6]
    got, finite = kernels.worst_ratios([ref.copy(), inside, outside], ref, E, 2.0, 0.0)
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


# -- traces in the dtype the backend computed: float32 read as float64, the same numbers ------------

def _as32(values: list[np.ndarray]) -> list[np.ndarray]:
    """float32 traces (rounded once, as a backend computes them) and their exact float64 upcasts."""
    with np.errstate(over="ignore"):
        small = [v.astype(np.float32) for v in values]
    return small, [v.astype(np.float64) for v in small]


@pytest.mark.parametrize("hard", [False, True])
def test_float32_traces_give_the_float64_numbers_in_every_kernel(hard):
    small, wide = _as32(_planted(np.random.default_rng(21), hard))
    assert small[0].dtype == np.float32 and compare.compilable(small, SHAPE)
    centre = kernels.median4(*wide)
    assert centre.dtype == np.float64 and _same(kernels.median4(*small), centre)
    assert _same(kernels.spread(small, centre), kernels.spread(wide, centre))
    assert _same(_pairwise_spread(small, centre), _pairwise_spread(wide, centre))
    mixed = [small[0], wide[1], small[2], wide[3]]  # a plug-in's float64 beside the libraries' float32
    assert _same(kernels.median4(*mixed), centre) and _same(kernels.spread(mixed, centre), kernels.spread(wide, centre))
    E = np.abs(centre) * 2.0 ** -22 + 1e-30
    for scale, coefficient in ((2.0, 0.0), (1.0, 2.0 ** -53)):
        got, finite = kernels.worst_ratios(small, centre, E, scale, coefficient)
        want, finite64 = kernels.worst_ratios(wide, centre, E, scale, coefficient)
        assert got.tolist() == want.tolist() and finite == finite64 == (not hard)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("size", [(3, 5), SHAPE])
def test_the_consensus_of_float32_traces_is_float64_and_that_of_their_upcasts(n, size):
    rng = np.random.default_rng(n)
    values = [v[:size[0], :size[1]] for v in _planted(rng, True)]
    small, wide = _as32([*values, values[0] * (1 + 1e-3)][:n])
    got = compare.consensus(small)
    assert got.dtype == np.float64 and _same(got, compare.consensus(wide))


def _float32_step(seed: int):
    """One step's traces of a network with a layer large enough for the kernels (DW1), float32 as
    nerva-numpy keeps them, copied into four backends a few float32 ulps apart, with a kink (Z1
    at 0 in two of them, just above it in the others) and a failing element of DW1 in one."""
    import adapters
    from harness.spec.data import batches
    from harness.spec.state import initial_state

    sc = build_scenario(name="t", layers="ReLU;Linear", sizes="129,256,2", optimizers="GradientDescent",
                        init_weights=None, loss="SquaredError", lr=0.01, batch_size=40, steps=1, dtype="float32")
    numpy_ = adapters.load("numpy")
    numpy_.build(sc, initial_state(sc))
    base = numpy_.step(*batches(sc)[0], sc.lr)
    assert base["DW1"].dtype == np.float32 and compare.compilable([base["DW1"]], base["DW1"].shape)
    rng = np.random.default_rng(seed)
    traces = {}
    for i, b in enumerate(("numpy", "torch", "jax", "tensorflow")):
        t = {k: (v * (1 + rng.integers(-2, 3, size=v.shape) * 2.0 ** -23)).astype(np.float32) for k, v in base.items()}
        t["Z1"][3, 5] = 0.0 if i < 2 else 1e-7
        t["DZ1"][3, 5] = 0.0 if i < 2 else t["DX2"][3, 5]
        traces[b] = t
    traces["jax"]["DW1"][100, 7] += np.float32(1e-2)
    return sc, traces


def test_the_kink_scan_and_the_judgement_of_float32_traces_are_those_of_their_upcasts():
    sc, small = _float32_step(3)
    wide = {b: {k: v.astype(np.float64) for k, v in t.items()} for b, t in small.items()}
    scans = [compare.scan_kinks(sc, 0, t, {}) for t in (small, wide)]
    assert scans[0].events == scans[1].events and scans[0].flips == scans[1].flips == 1
    assert all(_same(scans[0].seeds[k], scans[1].seeds[k]) for k in scans[1].seeds)
    refs = [compare.reference(sc, t) for t in (small, wide)]
    assert all(_same(refs[0][k], refs[1][k]) and refs[0][k].dtype == np.float64 for k in refs[1])
    bounds = {k: np.abs(v) * 2.0 ** -18 + 1e-6 for k, v in refs[1].items()}
    got, want = (compare.judge(sc, 0, t, scans[1], bounds, None, r) for t, r in zip((small, wide), refs))
    assert [(t.key, t.worst, t.kinks, t.blamed, t.index, t.values, t.allowed, t.outside) for t in got.tensors] == \
        [(t.key, t.worst, t.kinks, t.blamed, t.index, t.values, t.allowed, t.outside) for t in want.tensors]
    assert got.first_failure.blamed == ["jax"] and got.first_failure.index == (100, 7)


@pytest.mark.parametrize("where", ["DW1", "DZ1", "extra"])  # the kernel's pass, the NumPy pass (a flip), a plug-in's extra key
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_the_judgement_says_whether_it_met_a_non_finite_value(where, bad):
    sc, traces = _float32_step(4)
    scan = compare.scan_kinks(sc, 0, traces, {})
    assert "Z1" in scan.seeds  # DZ1 is judged in NumPy: its flipped element is excused
    bounds = {k: np.abs(v) * 2.0 ** -18 + 1e-6 for k, v in compare.reference(sc, traces).items()}
    assert compare.judge(sc, 0, traces, scan, bounds).finite
    traces["numpy"]["extra"] = np.zeros(30, dtype=np.float32)
    assert compare.judge(sc, 0, traces, scan, bounds).finite
    traces["torch"][where] = np.array(traces["torch"].get(where, np.zeros(30, dtype=np.float32)))
    traces["torch"][where].flat[17] = bad
    assert not compare.judge(sc, 0, traces, scan, bounds).finite
    found = runner.first_nonfinite(sc, 0, traces)
    assert found.name == where and found.backends == ["torch"] and (found.values["torch"] == bad or np.isnan(bad))


@pytest.mark.parametrize("hard", [False, True])
def test_the_median_with_its_spread_in_one_pass_is_the_two_passes(hard):
    values = _planted(np.random.default_rng(31), hard)
    for given in (values, _as32(values)[0]):
        centre, far = kernels.median4(*given, with_spread=True)
        assert _same(centre, kernels.median4(*given)) and _same(far, kernels.spread(given, centre))


def test_the_reference_gives_the_spread_of_the_updated_parameters_the_next_step_would_take():
    sc, traces = _float32_step(5)
    for t in traces.values():  # the updated parameters: W1 large enough for the kernel, b1 not
        t["W1"], t["b1"] = t["DW1"] * np.float32(3), t["DZ1"][0] * np.float32(3)
    spreads = {}
    ref = compare.reference(sc, traces, None, spreads)
    assert _same_ref(ref, compare.reference(sc, traces)) and list(spreads) == ["W1"]
    assert _same(spreads["W1"], _pairwise_spread([t["W1"] for t in traces.values()], ref["W1"]))


def _same_ref(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
