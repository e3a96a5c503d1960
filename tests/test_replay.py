"""The compiled plans of the bound against the eager rules they are recorded from.

:mod:`harness.judge.replay` replays the walk's large evaluations as fused kernels; the eager NumPy
evaluation stays the definition. Here every evaluation is compiled (the size threshold set to
one element) and the bounds of a whole step compared with the eager ones: on every catalog
scenario, in both dtypes and both modes (lockstep: exact parameters; trajectory: parameters
that carry a spread), to 1e-12 relative, with NaN and infinities in the same places. The guards
are tested on constructed inputs: a branch that flips (a kink within reach, a zero base of a
power, a NaN made), a second variant, and a structure a plan cannot replay.
"""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

import scenarios
import adapters
from harness.judge import arithmetic, replay, walk
from harness.judge.arithmetic import NO_ERROR, Arithmetic, Err
from harness.judge.bounds import step_bounds
from harness.spec.data import batches
from harness.spec.state import initial_state


@pytest.fixture(autouse=True)
def _record_at_once(monkeypatch):
    """Record a structure on its first evaluation (a run records on the second:
    test_a_structure_is_recorded_on_its_second_evaluation), with no plans from other tests."""
    monkeypatch.setattr(replay, "EAGER_FIRST", False)
    monkeypatch.setattr(replay, "_PLANS", {})
    monkeypatch.setattr(replay, "_SEEN", set())


def _same_bounds(eager: dict, compiled: dict, exact: bool) -> None:
    assert eager.keys() == compiled.keys()
    for key, x in eager.items():
        y = compiled[key]
        assert np.shape(x) == np.shape(y), key
        if exact:
            assert np.array_equal(x, y, equal_nan=True), key
        assert np.array_equal(np.isnan(x), np.isnan(y)) and np.array_equal(np.isinf(x), np.isinf(y)), key
        finite = np.isfinite(x)
        np.testing.assert_allclose(y[finite], x[finite], rtol=1e-12, atol=0, err_msg=key)


def _both(monkeypatch, *args, executor: str, large: bool = False, **kwargs) -> tuple:
    """(eager bounds, bounds while recording, bounds replayed, whether each replay held).
    ``executor`` "numpy": every evaluation replayed node by node in NumPy; "kernel": as loops, on
    small networks every evaluation, the loops run as their Python source, and (``large``) with
    the threshold and the compiled kernels a run uses."""
    monkeypatch.setattr(walk, "COMPILED", [False])
    eager = step_bounds(*args, **kwargs)
    monkeypatch.setattr(walk, "COMPILED", [True])
    size = 1 << 62 if executor == "numpy" else replay.COMPILE_SIZE if large else 1
    monkeypatch.setattr(replay, "COMPILE_SIZE", size)
    monkeypatch.setattr(replay, "INTERPRET", [not large])
    monkeypatch.setattr(replay, "_PLANS", {})
    replays = []
    original = replay.Plan.replay

    def counted(self, *a):
        out = original(self, *a)
        replays.append(out is not None)
        return out

    monkeypatch.setattr(replay.Plan, "replay", counted)
    first = step_bounds(*args, **kwargs)  # recorded (the eager results, through the tracer)
    again = step_bounds(*args, **kwargs)  # replayed
    return eager, first, again, replays


def _trace(sc) -> tuple[dict, dict]:
    """nerva-numpy's first step of the scenario (the values the bound is taken at, in the dtype it
    computed) and its state."""
    state = initial_state(sc)
    backend = adapters.load("numpy")
    backend.build(sc, state)
    X, T = batches(sc)[0]
    return backend.step(X, T, sc.lr), state


@pytest.mark.parametrize("executor", ["numpy", "kernel"])
@pytest.mark.parametrize("mode", ["lockstep", "trajectory"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", sorted(scenarios.catalog()))
def test_a_replayed_step_bound_is_the_eager_one(name, dtype, mode, executor, monkeypatch):
    """NumPy's replay runs the rules' own ufuncs: bit for bit; the loops use LLVM's exp, log and
    tanh where the rules use NumPy's: to 1e-12."""
    sc = scenarios.get(name, dtype=dtype, mode=mode, steps=1)
    trace, state = _trace(sc)
    ref = {k: v.astype(np.float64) for k, v in trace.items() if isinstance(v, np.ndarray)}  # as the runner's reference
    carried = None
    if mode == "trajectory":  # a spread on every parameter, 0 on some elements (the median's own)
        carried = {k: np.abs(v) * 3e-7 * (np.arange(v.size).reshape(v.shape) % 3 != 0) for k, v in state.items()}
    large = max(v.size for v in state.values()) >= replay.COMPILE_SIZE
    eager, first, again, replays = _both(monkeypatch, sc, ref, state, carried, new_state=True, large=large,
                                         executor=executor)
    for e, c in zip(eager, first):
        _same_bounds(e, c, exact=True)  # the recording computes what the rules compute
    for e, c in zip(eager, again):
        _same_bounds(e, c, exact=executor == "numpy")
    assert replays and any(replays), "no evaluation was replayed from a plan"


# ---------------------------------------------------------------------------------------------
# Guards, variants, NaN, structures a plan cannot replay, the cache
# ---------------------------------------------------------------------------------------------

SHAPE = (256, 1 + replay.COMPILE_SIZE // 256)  # large enough to be planned and compiled
X, ALPHA = sp.symbols("x alpha", real=True)
ELU = sp.Piecewise((X, X > 0), (ALPHA * (sp.exp(X) - 1), True))


def _eager(exprs, env, ar):
    walk.COMPILED[0] = False
    try:
        return walk.evaluate(exprs, env, ar)
    finally:
        walk.COMPILED[0] = True


def _same_pairs(eager: list, compiled: list) -> None:
    for (v, e), (w, f) in zip(eager, compiled):
        assert (e is NO_ERROR) == (f is NO_ERROR) and (e is NO_ERROR or (e.var is None) == (f.var is None))
        pairs = [(v, w)] + ([] if e is NO_ERROR else [(e.worst, f.worst)] + ([] if e.var is None else [(e.var, f.var)]))
        for x, y in pairs:
            x, y = np.broadcast_to(x, SHAPE), np.broadcast_to(y, SHAPE)
            assert np.array_equal(np.isnan(x), np.isnan(y)) and np.array_equal(np.isinf(x), np.isinf(y))
            finite = np.isfinite(x)
            np.testing.assert_allclose(y[finite], x[finite], rtol=1e-12, atol=0)


def _noted(replays: list, result: list | None) -> list | None:
    """A replay's result, with whether it held noted in ``replays``."""
    replays.append(result is not None)
    return result


def _elu_env(ar, z: np.ndarray, error: float) -> dict:
    return {X: (z, Err(np.full(SHAPE, error), np.full(SHAPE, error * error))), ALPHA: ar.constant(0.5)}


def test_a_kink_within_reach_is_a_second_variant_not_a_replay(monkeypatch):
    """ELU's Piecewise widens an element's error within reach of 0 only if some element is
    there (``near.any()``): a guard. Away from 0 the first plan is recorded; near 0 its guard
    fails, the evaluation runs eagerly and a second variant is recorded; both then replay."""
    monkeypatch.setattr(replay, "_PLANS", {})
    ar = Arithmetic("float32")
    rng = np.random.default_rng(5)
    far = 1.0 + rng.random(SHAPE) * np.where(rng.random(SHAPE) < 0.5, -3, 3)  # at least 1 from 0... mostly
    far[np.abs(far) < 0.5] = 2.0
    near = far.copy()
    near[3, 7] = 1e-9  # one element within its error of the kink
    replays = []
    original = replay.Plan.replay
    monkeypatch.setattr(replay.Plan, "replay", lambda self, *args: _noted(replays, original(self, *args)))
    for z in (far, near, far, near):
        env = _elu_env(ar, z, 1e-6)
        _same_pairs(_eager([ELU], env, ar), walk.evaluate([ELU], env, ar))
    (plans,) = [v for k, v in replay._PLANS.items() if k[0] == (ELU,)]
    assert len(plans) == 2 and len({tuple(p.expected) for p in plans}) == 2  # two outcomes of the guards
    # near: the far plan fails (recorded anew); far: near's fails, far's holds; near: near's holds
    assert replays == [False, False, True, False, True]


def test_a_nan_made_where_the_recording_saw_none_runs_eagerly_and_is_seen(monkeypatch):
    """Inside a step (NAN_SEEN tracked) the rules skip their NaN checks until an operation makes
    a NaN; a plan recorded without one cannot replay an evaluation that makes one (0 * inf)."""
    monkeypatch.setattr(replay, "_PLANS", {})
    ar = Arithmetic("float64")
    a, b = sp.symbols("a b", real=True)
    expr = a * b + a
    rng = np.random.default_rng(6)
    x, y = rng.random(SHAPE), rng.random(SHAPE)
    seen = [False]
    token = arithmetic.NAN_SEEN.set(seen)
    try:
        with np.errstate(all="ignore", invalid="call", call=lambda *_: seen.__setitem__(0, True)):
            env = {a: (x, Err(x * 1e-9, (x * 1e-9) ** 2)), b: (y, NO_ERROR)}
            walk.evaluate([expr], env, ar)  # recorded, no NaN
            walk.evaluate([expr], env, ar)  # replayed
            assert seen == [False]
            x2, y2 = x.copy(), y.copy()
            x2[1, 2], y2[1, 2] = 0.0, np.inf  # 0 * inf
            env = {a: (x2, Err(x2 * 1e-9, (x2 * 1e-9) ** 2)), b: (y2, NO_ERROR)}
            replays = []
            original = replay.Plan.replay
            monkeypatch.setattr(replay.Plan, "replay", lambda self, *args: replays.append(original(self, *args)) or replays[-1])
            out = walk.evaluate([expr], env, ar)
    finally:
        arithmetic.NAN_SEEN.reset(token)
    assert replays and replays[0] is None  # the plan saw the NaN and gave the evaluation back
    assert seen == [True]  # the eager evaluation reported it
    assert np.isnan(out[0][0][1, 2])


def test_a_structure_a_plan_cannot_replay_stays_eager(monkeypatch):
    """A branch condition bound to an input symbol (its truth read with np.asarray) is not
    traced: the structure is marked eager, and its results are the eager ones."""
    monkeypatch.setattr(replay, "_PLANS", {})
    ar = Arithmetic("float64")
    c = sp.Symbol("c")
    expr = sp.Piecewise((X, c), (2 * X, True))
    z = np.linspace(-1, 1, np.prod(SHAPE)).reshape(SHAPE)
    env = {X: (z, NO_ERROR), c: (z > 0, NO_ERROR)}
    for _ in range(2):
        _same_pairs(_eager([expr], env, ar), walk.evaluate([expr], env, ar))
    assert [v for k, v in replay._PLANS.items() if k[0] == (expr,)] == [None]


def test_the_compiled_kernels_match_the_rules_on_hard_values(monkeypatch):
    """NaN, infinities, zeros of both signs, subnormals and huge values in ELU, its derivative
    and a Momentum update, compiled (no NaN tracking: outside a step every check is made)."""
    monkeypatch.setattr(replay, "_PLANS", {})
    ar = Arithmetic("float32")
    rng = np.random.default_rng(7)
    z = rng.normal(size=SHAPE) * 3
    specials = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-310, -1e-310, 1e300, -1e300, 1e-7]
    z.reshape(-1)[: len(specials) * 7 : 7] = specials
    error = np.abs(rng.normal(size=SHAPE)) * 1e-6
    error[0, :5] = [0.0, np.inf, np.nan, 1e-300, 0.0]
    env = {X: (z, Err(error, error * error)), ALPHA: ar.constant(0.5)}
    from harness.oracle.definitions import OPTIMIZER_SYMBOLS as o, optimizer_definition

    update, _ = optimizer_definition("Momentum")
    u_env = {o.x: (z, Err(error, error * error)), o.Dx: (z[::-1].copy(), Err(error[::-1].copy(), None)),
             o.eta: ar.constant(0.1), o.mu: ar.constant(0.9), o.v: (z * 0.5, Err(error, error * error))}
    replays = []
    original = replay.Plan.replay
    monkeypatch.setattr(replay.Plan, "replay", lambda self, *args: _noted(replays, original(self, *args)))
    for exprs, e in (([ELU], env), ([sp.diff(ELU, X)], env), ([update], u_env)):
        eager = _eager(exprs, e, ar)
        walk.evaluate(exprs, e, ar)  # recorded
        _same_pairs(eager, walk.evaluate(exprs, e, ar))  # compiled
    assert replays == [True, True, True]


def test_a_structure_is_recorded_on_its_second_evaluation(monkeypatch):
    """What a run evaluates once is not traced: the first evaluation of a structure is eager,
    the second recorded (its results the eager ones), the third replayed."""
    monkeypatch.setattr(replay, "EAGER_FIRST", True)
    ar = Arithmetic("float64")
    z = np.linspace(-2, 2, 96).reshape(12, 8)
    env = {X: (z, Err(np.abs(z) * 1e-9, (z * 1e-9) ** 2))}
    expr = [sp.tanh(X) * X + 1]
    eager = _eager(expr, env, ar)
    recorded, replayed = [], []
    original_record, original_replay = replay.record, replay.Plan.replay
    monkeypatch.setattr(replay, "record", lambda *a: recorded.append(1) or original_record(*a))
    monkeypatch.setattr(replay.Plan, "replay", lambda self, *a: replayed.append(1) or original_replay(self, *a))
    for k in range(3):
        out = walk.evaluate(expr, env, ar)
        assert (len(recorded), len(replayed)) == [(0, 0), (1, 0), (1, 1)][k]
        for (v, e), (w, f) in zip(eager, out):
            assert np.array_equal(v, w) and np.array_equal(e.worst, f.worst) and np.array_equal(e.var, f.var)


def test_a_second_process_takes_the_compiled_kernel_from_the_cache(tmp_path):
    """The kernel's source is written under NERVA_CONSISTENCY_CACHE and numba caches its
    compiled code beside it: a second process loads it instead of compiling."""
    import os
    import subprocess
    import sys

    code = (
        "import numpy as np, sympy as sp\n"
        "from harness.judge import replay, walk\n"
        "from harness.judge.arithmetic import Arithmetic, Err\n"
        "x = sp.Symbol('x', real=True)\n"
        f"z = np.linspace(-2, 2, {np.prod(SHAPE)}).reshape({SHAPE})\n"
        "env = {x: (z, Err(np.abs(z) * 1e-7, (z * 1e-7) ** 2))}\n"
        "ar = Arithmetic('float64')\n"
        "for _ in range(3): walk.evaluate([sp.tanh(x) * x], env, ar)  # eager, recorded, replayed\n"
        "(plans,) = [v for v in replay._PLANS.values() if v]\n"
        "print(len(plans[0].kernel.stats.cache_hits), len(plans[0].kernel.stats.cache_misses))\n"
    )
    env = dict(os.environ, NERVA_CONSISTENCY_CACHE=str(tmp_path))
    runs = [subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout.split()
            for _ in range(2)]
    assert runs[0] == ["0", "1"]  # the first process compiled
    assert runs[1] == ["1", "0"]  # the second loaded it
    assert list(tmp_path.glob("nerva_consistency_plan_*.py"))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_compiled_passes_of_the_arithmetic_are_its_numpy_form_bit_for_bit(dtype, monkeypatch):
    """Arithmetic.bound and Arithmetic.given on large arrays run as one compiled pass each; on
    planted values (NaN, infinities, zeros, subnormals, variances under VAR_MIN) they give what
    their NumPy form gives, bit for bit."""
    ar = Arithmetic(dtype)
    rng = np.random.default_rng(8)
    worst = np.abs(rng.normal(size=SHAPE)) * 1e-6
    var = (worst / 4) ** 2
    hard = [np.nan, np.inf, 0.0, arithmetic.VAR_MIN / 2, 1e-320, 1e300]
    worst.reshape(-1)[:6], var.reshape(-1)[6:12] = hard, hard
    v = rng.normal(size=SHAPE)
    v.reshape(-1)[:8] = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-310, -1e-310, 1e-39]

    def both(f):
        fast = f()
        monkeypatch.setattr(arithmetic, "COMPILED_PASS", 1 << 62)
        slow = f()
        monkeypatch.setattr(arithmetic, "COMPILED_PASS", 1 << 15)
        return fast, slow

    def same(x, y):
        x, y = np.broadcast_to(x, SHAPE), np.broadcast_to(y, SHAPE)
        assert np.array_equal(x, y, equal_nan=True) and np.array_equal(np.signbit(x), np.signbit(y))

    with np.errstate(over="ignore"):  # (the NumPy form squares 1e300: an overflow a step ignores too)
        same(*both(lambda: ar.bound(Err(worst, var))))
        (v1, e1), (v2, e2) = both(lambda: ar.given(v, worst))
    same(v1, v2), same(e1.worst, e2.worst), same(e1.var, e2.var)
    (_, e1), (_, e2) = both(lambda: ar.given(v))
    same(e1.worst, e2.worst), same(e1.var, e2.var)  # the subnormals' errors
    exact = np.round(v.clip(-1e3, 1e3), 2)
    exact[~np.isfinite(exact)] = 1.0
    assert both(lambda: ar.given(exact)[1]) == (NO_ERROR, NO_ERROR)
    # a long product (n > LAMBDA**2) with errors on both sides, B a transposed view as W^T is
    A = (rng.normal(size=(40, 300)), Err(np.abs(rng.normal(size=(40, 300))) * 1e-7, None))
    W = rng.normal(size=(200, 300))
    B = (W.T, Err(np.abs(W.T) * 1e-6, (np.abs(W.T) * 1e-6) ** 2))
    for left in (A, (A[0], NO_ERROR)):
        (v1, e1), (v2, e2) = both(lambda: arithmetic.dot(ar, left, B, n=300))
        same_shape = lambda x, y: x.shape == y.shape and np.array_equal(x, y, equal_nan=True)  # noqa: E731
        assert same_shape(v1, v2) and same_shape(e1.worst, e2.worst)
        assert (e1.var is None) == (e2.var is None) and (e1.var is None or same_shape(e1.var, e2.var))
