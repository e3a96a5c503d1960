"""The rounding bound itself (harness.judge.arithmetic, walk and bounds): its rules, and three checks of what it claims.

- an exact computation sits inside it (the exact values rounded once to the dtype);
- a deliberately rounded computation sits inside it: the exact oracle's own step evaluated with
  every operation rounded to the dtype's precision (mpmath at 24 or 53 bits: an independent
  correct implementation of the forward definitions, in another order than any backend);
- a perturbed computation leaves it: one gradient off by a relative 1e-12 (float64) or 1e-5
  (float32), the sensitivity the issue asks of the harness.

These use the exact oracle only (no backend, no CPU kernel), so they hold on every machine.
"""

from __future__ import annotations

import dataclasses
import math

import mpmath
import numpy as np
import pytest
import sympy as sp

from harness.judge import arithmetic, walk
from harness.oracle import definitions as defs, exact as num
from harness.judge.compare import allowed, ratio
from harness.spec.data import batches
from harness.judge.arithmetic import Arithmetic, Err
from harness.judge.bounds import loss, step_bounds
from harness.judge.walk import evaluate
from harness.spec.scenario import build_scenario
from harness.spec.state import as_dtype, initial_state

pytestmark = pytest.mark.symbolic

NETWORKS = {
    "relu-softmax-xent": dict(layers="ReLU;Softmax", sizes="6,8,4", loss="CrossEntropy",
                              optimizers="Momentum(0.9);GradientDescent", batch_size=8),
    "leaky-logsoftmax": dict(layers="LeakyReLU(alpha=0.1);LogSoftmax", sizes="5,6,3", loss="SquaredError",
                             optimizers="Nesterov(0.9);GradientDescent", batch_size=4),
    "sigmoid-tanh-logistic": dict(layers="Sigmoid;HyperbolicTangent;Linear", sizes="4,6,5,3",
                                  loss="LogisticCrossEntropy", optimizers="GradientDescent;Momentum(0.8);Nesterov(0.7)",
                                  batch_size=5, targets="soft"),
    "batchnorm": dict(layers="ReLU;BatchNormalization;Linear", sizes="5,7,3", loss="SoftmaxCrossEntropy",
                      optimizers="Momentum(0.9);Momentum(0.5);GradientDescent", batch_size=6),
    "srelu-nll": dict(layers="SReLU(al=0.05,tl=-0.3,ar=0.2,tr=0.4);Softmax", sizes="4,6,3",
                      loss="NegativeLogLikelihood", optimizers="Momentum(0.9);GradientDescent", batch_size=5),
    "elu-absolute": dict(layers="ELU(alpha=0.5);Linear", sizes="4,5,2", loss="AbsoluteError",
                         optimizers="Momentum(0.7);GradientDescent", batch_size=3, targets="real"),
}


def _scenario(name: str, dtype: str):
    spec = dict(NETWORKS[name])
    from harness.spec.scenario import DataSpec

    targets = spec.pop("targets", "onehot")
    return build_scenario(name=name, init_weights=None, lr=0.1, steps=1, dtype=dtype, mode="lockstep",
                          seed=3, data=DataSpec("synthetic", targets), **spec)


def _exact_step(sc, prec: int | None = None):
    """The oracle's step on the scenario's first batch; ``prec`` bits: every operation rounded."""
    from adapters.sympy_oracle import SympyOracle

    state = initial_state(sc)
    X, T = batches(sc)[0]
    oracle = SympyOracle()
    oracle.build(sc, state)
    if prec is None:
        return oracle.step(X, T, sc.lr), state
    saved = num.precision
    num.precision = lambda: mpmath.workprec(prec)  # every mpmath operation rounds to prec bits
    try:
        with mpmath.workprec(prec):
            return oracle.step(X, T, sc.lr), state
    finally:
        num.precision = saved


def _worst(sc, trace, exact, bounds) -> dict[str, float]:
    return {k: float(np.max(ratio(trace[k], exact[k], allowed(sc, bounds, k, exact[k], "sympy")), initial=0.0))
            for k in exact}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", list(NETWORKS))
def test_the_exact_values_rounded_once_sit_inside(name, dtype):
    sc = _scenario(name, dtype)
    exact, state = _exact_step(sc)
    bounds, _ = step_bounds(sc, exact, state)
    rounded = {k: as_dtype(v, dtype).astype(np.float64) for k, v in exact.items()}
    worst = _worst(sc, rounded, exact, bounds)
    assert max(worst.values()) <= 1, {k: v for k, v in worst.items() if v > 1}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", list(NETWORKS))
def test_a_computation_rounded_at_every_operation_sits_inside(name, dtype):
    sc = _scenario(name, dtype)
    exact, state = _exact_step(sc)
    low, _ = _exact_step(sc, prec=24 if dtype == "float32" else 53)
    bounds, _ = step_bounds(sc, exact, state)
    worst = _worst(sc, low, exact, bounds)
    assert max(worst.values()) <= 1, {k: v for k, v in worst.items() if v > 1}
    assert max(worst.values()) > 1e-3  # the rounded computation really differs: the check is not vacuous


@pytest.mark.parametrize("name", list(NETWORKS))
def test_blocks_of_a_large_evaluation_give_the_whole_evaluations_bound(name, monkeypatch):
    """evaluate() runs large trees block by block; with blocks of 8, 10 or 16 elements the
    elementwise evaluations of these small networks over their parameters and batches are split
    (into blocks of 2 to 8 rows), and every bound is the same. (The eager rules: a plan's replay,
    harness.judge.replay, does not block; tests/test_replay.py compares it with them.)"""
    monkeypatch.setattr(walk, "COMPILED", [False])
    sc = _scenario(name, "float32")
    exact, state = _exact_step(sc)
    carried = {k: np.abs(v) * 1e-6 for k, v in state.items()}  # parameters with errors: every rule in use
    whole, whole_new = step_bounds(sc, exact, state, carried, new_state=True)
    split = {"evaluations": 0}
    original = walk.join_blocks

    def counted(*args):
        split["evaluations"] += 1
        return original(*args)

    monkeypatch.setattr(walk, "join_blocks", counted)
    for block in (8, 10, 16):
        monkeypatch.setattr(walk, "BLOCK", block)
        blocks, blocks_new = step_bounds(sc, exact, state, carried, new_state=True)
        for key in whole:
            np.testing.assert_allclose(blocks[key], whole[key], rtol=1e-12, atol=0, err_msg=key)
        for key in whole_new:
            np.testing.assert_allclose(blocks_new[key], whole_new[key], rtol=1e-12, atol=0, err_msg=key)
    assert split["evaluations"] > 0


def _below_target(name: str, dtype: str, tensor: str) -> list:
    """The probes where the bound, correlation-safe since docs/findings.md #18, is looser than
    the target: BatchNormalization's column statistics make every element of the column share
    an error, so its standard deviations add linearly. Strict: a tighter bound must say so."""
    if (name, dtype, tensor) == ("batchnorm", "float32", "Db1"):
        return [pytest.mark.xfail(strict=True, reason="Db1 off by 1e-5 is 0.65 of the bound (findings #18)")]
    return []


@pytest.mark.parametrize("name,dtype,eps,tensor", [
    pytest.param(name, dtype, eps, tensor, marks=_below_target(name, dtype, tensor))
    for tensor in ["DW1", "Db1"] for name in NETWORKS for dtype, eps in [("float32", 1e-5), ("float64", 1e-12)]])
def test_a_gradient_off_by_the_sensitivity_target_leaves(name, dtype, eps, tensor):
    sc = _scenario(name, dtype)
    exact, state = _exact_step(sc)
    low, _ = _exact_step(sc, prec=24 if dtype == "float32" else 53)
    bounds, _ = step_bounds(sc, exact, state)
    perturbed = dict(low)
    perturbed[tensor] = low[tensor] * (1 + eps)
    worst = _worst(sc, perturbed, exact, bounds)
    assert worst[tensor] > 1, f"{tensor} off by a relative {eps:g} is still within the bound ({worst[tensor]:.3g})"


def test_tensorflow_style_alpha_rounded_to_float32_leaves_the_float64_bound():
    """nerva-tensorflow's float64 LeakyReLU (alpha rounded to float32, docs/findings.md #2),
    made with the oracle itself: the bound of a float64 implementation does not cover it."""
    sc = _scenario("leaky-logsoftmax", "float64")
    exact, state = _exact_step(sc)
    alpha32 = float(np.float32(0.1))
    wrong = sc.with_(layers=(dataclasses.replace(sc.layers[0], args=(("alpha", alpha32),)), *sc.layers[1:]))
    bad, _ = _exact_step(wrong)
    bounds, _ = step_bounds(sc, exact, state)
    worst = _worst(sc, bad, exact, bounds)
    assert worst["Z1"] == 0 and worst["X2"] > 1e3 and worst["DW1"] > 1e3


# -- the rules ---------------------------------------------------------------------------------

x, y = sp.symbols("x y", real=True)


def test_a_sum_carries_its_operands_errors_and_one_rounding():
    ar = Arithmetic("float32")
    (v, e), = evaluate([x + y], {x: (3.0, Err(1e-6, 1e-12)), y: (-1.0, Err(2e-6, 4e-12))}, ar)
    assert v == 2.0
    assert e.worst == pytest.approx(3e-6 + ar.gamma(1) * 4.0)  # |x| + |y|, not |x + y|: cancellation counts
    assert math.sqrt(e.var) == pytest.approx(math.hypot(math.hypot(1e-6, 2e-6), ar.u * 4.0 + ar.tiny))


def test_long_sums_take_the_probabilistic_bound_short_ones_the_worst_case():
    ar = Arithmetic("float32")
    n = 10_000
    assert ar.gamma(n) == pytest.approx(n * ar.u, rel=1e-3)
    long = ar.bound(ar.local(1.0, n))
    short = ar.bound(ar.local(1.0, 4))
    assert long == pytest.approx(arithmetic.LAMBDA * math.sqrt(n) * ar.u, rel=1e-6)  # < n u
    assert short == pytest.approx(ar.gamma(4), rel=1e-6)  # < LAMBDA sqrt(4) u
    both = ar.combine(Err(3.0, 9.0), Err(4.0, 16.0))
    assert (both.worst, math.sqrt(both.var)) == (7.0, 5.0)  # worst cases add, standard deviations in quadrature
    measured = ar.combine(Err(3.0, 9.0), ar.given(0.0, 4.0)[1])  # a measured spread: sd = its size
    assert (measured.worst, measured.var) == (7.0, 25.0)


def test_constants_cost_a_rounding_only_where_the_dtype_cannot_hold_them():
    ar = Arithmetic("float32")
    assert ar.constant(sp.Rational(1, 2))[1] == (0, 0)
    assert ar.constant(0.1)[1].worst == pytest.approx(ar.u * 0.1)
    assert Arithmetic("float64").constant(0.1)[1].worst == 0  # the float 0.1 is exact in float64
    assert ar.constant(defs.EPSILON)[1].worst > 0


def test_exp_and_the_branch_of_a_piecewise():
    ar = Arithmetic("float64")
    (v, e), = evaluate([sp.exp(x)], {x: ar.given(np.array([0.0, 2.0]), np.array([0.0, 1e-10]))}, ar)
    assert np.allclose(v, np.exp([0.0, 2.0]))
    bound = ar.bound(e)
    assert bound[1] > np.exp(2.0) * 1e-10 and bound[0] == pytest.approx(ar.function_ulps * ar.u + ar.tiny)
    relu = sp.Piecewise((0, x < 0), (x, True))
    (v, e), = evaluate([relu], {x: ar.given(np.array([-1.0, 2.0]), np.array([1e-9, 1e-9]))}, ar)
    assert list(v) == [0.0, 2.0] and list(ar.bound(e)) == [0.0, pytest.approx(1e-9)]


def test_a_product_of_two_errors_around_zero_is_bounded_to_second_order():
    """At the median of a trajectory a value can be 0 with a spread that is not (0, 0, 0, x):
    the product of two such factors is all second order (found by explore: SReLU's DZ = DY ar).
    The bound holds for the worst corner of both spreads, in an elementwise product, a Mul node
    and a matrix product."""
    ar = Arithmetic("float32")
    dy, a = ar.given(np.array([0.0, 2.0]), 1e-8), ar.given(np.array([0.0, 0.0]), 5e-10)
    v, e = arithmetic.times(ar, dy, a)
    corner = (0.0 + 1e-8) * (0.0 + 5e-10)
    assert list(v) == [0.0, 0.0] and ar.bound(e)[0] >= corner and ar.bound(e)[1] >= (2.0 + 1e-8) * 5e-10
    (v, e), = evaluate([x * y], {x: dy, y: a}, ar)
    assert ar.bound(e)[0] >= corner
    A, B = ar.given(np.zeros((1, 3)), 1e-8), ar.given(np.zeros((3, 1)), 5e-10)
    v, e = arithmetic.dot(ar, A, B, n=3)
    assert ar.bound(e)[0, 0] >= 3 * corner


def test_a_long_product_bounds_every_corner_and_is_unknown_only_where_an_error_is():
    """A product of n > LAMBDA**2 terms: Higham & Mary's c |A||B| for its own rounding, and the
    errors carried in to second order, |A| E_B + E_A |B| + E_A E_B, whatever way the sum is
    formed; the largest change any corner of the operands' errors makes sits inside. An unknown
    (infinite) error makes an output unknown only where it meets a non-zero partner."""
    ar, n = Arithmetic("float32"), 100
    rng = np.random.default_rng(5)
    a, b = rng.standard_normal((3, n)), rng.standard_normal((n, 4))
    ea, eb = np.abs(a) * 1e-3 * rng.random((3, n)), np.abs(b) * 1e-3 * rng.random((n, 4))
    c = arithmetic.LAMBDA * math.sqrt(n) * ar.u
    carried = np.abs(a) @ eb + ea @ np.abs(b) + ea @ eb
    v, e = arithmetic.dot(ar, ar.given(a, ea), ar.given(b, eb), n=n)
    np.testing.assert_allclose(ar.bound(e), c * (np.abs(a) @ np.abs(b)) + carried + arithmetic.LAMBDA * math.sqrt(n) * ar.tiny, rtol=1e-12)
    corner = (a + np.sign(a) * ea) @ (b + np.sign(b) * eb) - a @ b
    assert np.all(np.abs(corner) <= ar.bound(e))
    v, e = arithmetic.dot(ar, ar.given(a), ar.given(b, eb), n=n)  # an exact operand adds nothing
    np.testing.assert_allclose(ar.bound(e), c * (np.abs(a) @ np.abs(b)) + np.abs(a) @ eb + arithmetic.LAMBDA * math.sqrt(n) * ar.tiny, rtol=1e-12)
    a[0, :], ea[1, 7], b[7, 2], eb[7, 2] = 0.0, np.inf, 0.0, 0.0
    ea[0, :] = 0.0
    v, e = arithmetic.dot(ar, ar.given(a, ea), ar.given(b, eb), n=n)
    unknown = np.isinf(ar.bound(e))
    assert unknown[1].tolist() == [True, True, False, True] and not unknown[[0, 2]].any()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_softmax_cross_entropy_gradient_from_rounded_probabilities_is_inside(dtype):
    """With one output SymPy's gradient of the softmax cross-entropy is exactly 0 (log(exp(y))
    is y), but backpropagation computes p - t from a rounded p = softmax(y): exp(y - logsumexp(y))
    with a library exponential gives p = 1 - u, correctly (found by the nightly property profile:
    TensorFlow, float32). That gradient is inside the bound; one a hundred units of u off is not."""
    ar = Arithmetic(dtype)
    Y, T = np.array([[0.0158], [3.0], [-40.0]]), np.ones((3, 1))
    _, (g, e) = loss(ar, "SoftmaxCrossEntropy", ar.given(Y), ar.given(T))
    bound = ar.bound(e)
    one_below = float(np.nextafter(np.array(1.0, dtype=dtype), 0)) - 1.0  # p = 1 - u, t = 1
    assert np.all(g == 0) and np.all(abs(one_below) <= bound) and np.all(100 * ar.u > bound)


def test_an_overflow_inside_a_definition_drops_its_term_not_the_bound():
    """Sigmoid(-722) in float64: exp(722) overflows in the float64 evaluation, so the derivative
    terms are 0 * inf (NaN); they carry nothing, but the value's own underflow (a correct backend
    may flush 1.8e-314 to 0) must stay in the bound (found by explore, seed 2026: it was 0)."""
    sc = _scenario("sigmoid-tanh-logistic", "float64")
    from adapters.sympy_oracle import SympyOracle

    state = initial_state(sc)
    state["W1"][0], state["b1"][0] = 0.0, -722.0  # Z1[:, 0] = -722 exactly
    X, T = batches(sc)[0]
    oracle = SympyOracle()
    oracle.build(sc, state)
    exact = oracle.step(X, T, sc.lr)
    bounds, _ = step_bounds(sc, exact, state)
    value = np.asarray(exact["X2"], dtype=np.float64)[:, 0]
    assert np.all((value > 0) & (value < 1e-300))  # subnormal: what a flushing backend gives as 0
    assert np.all(bounds["X2"][:, 0] >= value) and np.all(np.isfinite(bounds["X2"][:, 0]))


def test_one_error_reached_along_two_paths_is_not_added_in_quadrature():
    """Nesterov: x' = x + mu v' - eta Dx with v' = mu v - eta Dx carries Dx's error twice, with
    the same sign. At v = 0 that is (1 + mu) eta e_Dx exactly, and the bound of x' must hold it
    for any error of Dx inside Dx's bound (the property tests found x' 1.14 bounds off in
    float64 lockstep where quadrature allowed sqrt(mu**2 + 1) instead of 1 + mu)."""
    ar = Arithmetic("float64")
    Dx, e = np.array([-4.3e-8]), 1e-14
    dx = (Dx, Err(np.array([e]), np.array([(e / arithmetic.LAMBDA) ** 2])))  # bound e, all from the sd
    x_new, v_new = defs.optimizer_definition("Nesterov")
    env = {defs.OPTIMIZER_SYMBOLS.x: ar.given(np.zeros(1)), defs.OPTIMIZER_SYMBOLS.Dx: dx, defs.OPTIMIZER_SYMBOLS.eta: ar.constant(0.5), defs.OPTIMIZER_SYMBOLS.mu: ar.constant(0.9),
           defs.OPTIMIZER_SYMBOLS.v: ar.given(np.zeros(1))}
    (x, ex), (v, ev) = evaluate([x_new, v_new], env, ar)
    assert ar.bound(dx[1])[0] == pytest.approx(e)
    assert ar.bound(ex)[0] >= (1 + 0.9) * 0.5 * e


def test_a_square_at_zero_carries_its_error_squared():
    """SquaredError at Y = T where one backend's Y is not: (y - t)**2 has derivative 0 there, so
    its whole error is the square of Y's (explore, seed 2026: tensorflow's loss 8.9e-16 where the
    others gave 0 was judged against two tiny)."""
    ar = Arithmetic("float32")
    (v, e), = evaluate([(x - y) ** 2], {x: ar.given(np.array([0.5, 0.75]), 3e-8), y: ar.given(np.array([0.5, 0.5]))}, ar)
    assert list(v) == [0.0, 0.0625]
    assert ar.bound(e)[0] >= (3e-8) ** 2 and ar.bound(e)[1] >= 2 * 0.25 * 3e-8 + (3e-8) ** 2


@pytest.mark.parametrize("f,point,spread", [(sp.exp, 2.0, 1.0), (sp.log, 0.5, 0.4), (sp.tanh, 6.0, 4.0)])
def test_a_function_carries_a_large_error_through_its_worst_case_not_its_slope(f, point, spread):
    """A measured spread need not be small: the bound must hold the function's change over the
    whole interval (tanh at 6 +- 4 changes by 0.036, its slope at 6 allows 0.0001)."""
    ar = Arithmetic("float64")
    (v, e), = evaluate([f(x)], {x: ar.given(np.array([point]), spread)}, ar)
    g = sp.lambdify(x, f(x), "math")
    change = max(abs(g(point + spread) - g(point)), abs(g(point - spread) - g(point)))
    assert ar.bound(e)[0] >= change


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_jacobian_computed_from_rounded_outputs_carries_their_error(dtype):
    """A one-unit LogSoftmax: its output is exactly 0 and its SymPy Jacobian exactly 0, but
    backpropagation computes DZ = DY - exp(Y) DY from the computed Y, which may be off by Y's
    bound, and the computed DY, off by DY's: DZ is then DY (1 - exp(Y)) != 0 (the nightly
    property profile, seed 11: all four at -6.2e-33 in float64, against a bound of 6.4e-58).
    Here the worst corner that a correct implementation may compute must sit inside DZ's bound."""
    spec = dict(layers="LogSoftmax;Softmax", sizes="2,1,1", loss="CrossEntropy",
                optimizers="GradientDescent;GradientDescent", batch_size=1)
    from harness.spec.scenario import DataSpec

    sc = build_scenario(name="one-unit", init_weights=None, lr=0.01, steps=1, dtype=dtype, mode="lockstep",
                        seed=11, data=DataSpec("synthetic", "onehot"), **spec)
    exact, state = _exact_step(sc)
    bounds, _ = step_bounds(sc, exact, state)
    f = np.dtype(dtype).type
    assert float(exact["X2"][0, 0]) == 0.0 and float(exact["DZ1"][0, 0]) == 0.0
    Y = f(-bounds["X2"][0, 0])  # the computed output, as far off as its bound allows
    DY = f(float(exact["DX2"][0, 0]) + bounds["DX2"][0, 0])  # the computed DY, likewise
    DZ = DY - np.exp(Y) * DY  # in the dtype, as the backends compute it
    assert DZ != 0  # the corner really moves DZ: the check is not vacuous
    assert abs(float(DZ)) <= bounds["DZ1"][0, 0], (float(DZ), bounds["DZ1"][0, 0])
