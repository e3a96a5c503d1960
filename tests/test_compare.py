"""The comparator on constructed deviations: hand-made traces in, known verdicts out.

No backend is involved: a trace is a dict backend -> {tensor name -> float64 array}, built here
from random numbers and then perturbed on purpose. The comparator is pure, so the bounds are
chosen here too (``bounds_for``: every element ``B``, the inputs X and T exact); how the bound
itself is computed is tests/test_rounding.py's subject. Against the consensus an element may be
``2 B`` off, against an oracle ``B`` (plus the oracle's own float64 rounding, ``2**-53 |ref|``).
"""

from __future__ import annotations

import numpy as np
import pytest

from harness.judge.compare import (
    allowed,
    compare_step,
    consensus,
    judge,
    key_name,
    near,
    propagate,
    ratio,
    reference,
    scan_kinks,
    tensor_order,
)
from harness.spec.scenario import build_scenario

BACKENDS = ("numpy", "torch", "jax", "tensorflow")
N = 5  # batch size
B = 1e-6  # the bound of every element of the hand-made traces (the inputs X, T: 0)


def scenario(layers="ReLU;Linear", sizes="3,4,2", loss="SquaredError", **kw):
    return build_scenario(name="t", layers=layers, sizes=sizes, optimizers="GradientDescent", init_weights=None,
                          loss=loss, lr=0.01, batch_size=N, steps=1, **kw)


def shapes(sc, n=N) -> dict[str, tuple]:
    """The shape of every tensor tensor_order lists, from the scenario's widths."""
    widths_in, width = [], sc.input_size
    for layer in sc.layers:
        widths_in.append(width)
        width = layer.units
    out = {}
    for tensor, i in tensor_order(sc):
        name = key_name((tensor, i))
        if i is None:
            out[name] = {"X": (n, sc.input_size), "T": (n, sc.output_size), "Y": (n, sc.output_size),
                         "DY": (n, sc.output_size), "loss": ()}[tensor]
            continue
        D, K = widths_in[i - 1], sc.layers[i - 1].units
        out[name] = {"X": (n, D), "DX": (n, D), "Z": (n, K), "DZ": (n, K), "W": (K, D), "DW": (K, D),
                     "b": (K,), "Db": (K,), "gamma": (K,), "beta": (K,), "Dgamma": (K,), "Dbeta": (K,),
                     "srelu": (4,), "Dsrelu": (4,)}[tensor]
    return out


def base_trace(sc, seed=0) -> dict[str, np.ndarray]:
    """Random values of magnitude 0.5..2 (far from every kink at 0, and Y far from T)."""
    rng = np.random.default_rng(seed)
    trace = {}
    for name, shape in shapes(sc).items():
        trace[name] = rng.choice([-1.0, 1.0], size=shape) * rng.uniform(0.5, 2.0, size=shape)
    trace["Y"] = trace["T"] + rng.choice([-1.0, 1.0], size=trace["T"].shape) * rng.uniform(0.5, 1.0, size=trace["T"].shape)
    return trace


def traces_from(base) -> dict[str, dict[str, np.ndarray]]:
    return {b: {k: v.copy() for k, v in base.items()} for b in BACKENDS}


def verdict_of(step_verdict, name):
    return next(t for t in step_verdict.tensors if key_name(t.key) == name)


def bounds_for(sc, value=B, **override) -> dict[str, np.ndarray]:
    """A bound for every element: ``value``, 0 for the inputs X and T (exact), ``override``s by name."""
    out = {name: np.full(shape, 0.0 if name in ("X", "T") else value) for name, shape in shapes(sc).items()}
    for name, v in override.items():
        out[name] = np.broadcast_to(np.asarray(v, dtype=np.float64), out[name].shape).copy()
    return out


def run(sc, traces, bounds=None, params=None, oracle=None, step=0):
    return compare_step(sc, step, traces, params or {}, bounds_for(sc) if bounds is None else bounds, oracle)


def with_oracle(base, name="sympy") -> dict[str, dict[str, np.ndarray]]:
    """Four backends and an oracle, all with the values of ``base``."""
    traces = traces_from(base)
    traces[name] = {k: v.copy() for k, v in base.items()}
    return traces


# ---------------------------------------------------------------------------------- ordering

def test_tensor_order_relu_linear():
    names = [key_name(k) for k in tensor_order(scenario())]
    assert names == ["X", "T", "X1", "Z1", "X2", "Y", "loss", "DY",
                     "DW2", "Db2", "DX2", "DZ1", "DW1", "Db1", "DX1",
                     "W1", "b1", "W2", "b2"]


def test_tensor_order_batchnorm_and_srelu():
    sc = scenario(layers="SReLU;BatchNormalization;Linear", sizes="3,4,2")
    names = [key_name(k) for k in tensor_order(sc)]
    assert names.index("Dsrelu1") == names.index("Db1") + 1
    assert {"Dgamma2", "Dbeta2", "gamma2", "beta2", "srelu1"} <= set(names)
    assert "DW2" not in names and "W2" not in names
    assert names[-7:] == ["W1", "b1", "srelu1", "gamma2", "beta2", "W3", "b3"]


# --------------------------------------------------------------------------------- agreement

def test_identical_traces_agree():
    sc = scenario()
    v = run(sc, traces_from(base_trace(sc)))
    assert v.first_failure is None
    assert len(v.tensors) == len(tensor_order(sc))
    for t in v.tensors:
        for b in BACKENDS:
            assert t.worst[b] == 0.0  # the median of identical values is that value, exactly
        assert t.kinks == {b: 0 for b in BACKENDS}
        assert not t.failed and t.index is None and t.allowed is None
        assert t.ulps is None  # ulps only against an oracle
    assert (v.near_kinks, v.flips, v.kink_events) == (0, 0, [])


def test_half_the_allowed_error_passes_with_ratio_one_half():
    sc = scenario()
    base = base_trace(sc)
    traces = traces_from(base)
    ref = base["DW1"][1, 2]
    traces["torch"]["DW1"][1, 2] = ref + B  # the consensus allows 2 B: half of it
    v = run(sc, traces)
    assert v.first_failure is None
    t = verdict_of(v, "DW1")
    assert t.worst["torch"] == pytest.approx(0.5, rel=1e-6)
    for b in ("numpy", "jax", "tensorflow"):
        assert t.worst[b] == pytest.approx(0.0, abs=1e-6)


def test_three_times_the_allowed_error_fails_and_is_localized():
    sc = scenario()
    base = base_trace(sc)
    traces = traces_from(base)
    ref = base["DW1"][2, 1]
    traces["jax"]["DW1"][2, 1] = ref - 3 * (2 * B)
    v = run(sc, traces)
    t = verdict_of(v, "DW1")
    assert t.failed
    assert t.blamed == ["jax"]
    assert t.majority is True
    assert t.index == (2, 1)
    assert t.worst["jax"] == pytest.approx(3.0, rel=1e-6)
    for b in ("numpy", "torch", "tensorflow"):
        assert t.worst[b] == pytest.approx(0.0, abs=1e-6)
    assert set(t.values) == set(BACKENDS) | {"consensus"}
    assert t.values["jax"] == traces["jax"]["DW1"][2, 1]
    for b in ("numpy", "torch", "tensorflow"):
        assert t.values[b] == ref
    assert t.values["consensus"] == pytest.approx(ref, rel=1e-12)
    assert t.allowed == pytest.approx(2 * B, rel=1e-15)  # twice the bound: no oracle
    assert v.first_failure is t
    assert [key_name(x.key) for x in v.tensors if x.failed] == ["DW1"]
    assert t.outside == {"jax": 1} and t.elements == 12  # DW1 is 4 x 3: one element outside


def test_the_count_outside_the_bound_is_per_blamed_backend_and_only_of_failing_tensors():
    sc = scenario()
    traces = traces_from(base_trace(sc))
    traces["jax"]["DW1"][0] += 10 * B  # a whole row of DW1 (3 elements), 5x the allowed 2 B
    traces["torch"]["DW1"][1, 1] += 10 * B
    traces["torch"]["DW1"][2, 0] += 1.5 * B  # inside twice the bound: not counted
    v = run(sc, traces)
    t = verdict_of(v, "DW1")
    assert sorted(t.blamed) == ["jax", "torch"] and t.outside == {"jax": 3, "torch": 1} and t.elements == 12
    assert all(x.outside == {} and x.elements == 0 for x in v.tensors if not x.failed)


def test_first_failure_is_earliest_in_tensor_order():
    sc = scenario()
    base = base_trace(sc)
    traces = traces_from(base)
    traces["torch"]["DX1"][0, 0] += 1.0   # backward
    traces["numpy"]["Z1"][3, 2] += 1.0    # forward: comes first
    v = run(sc, traces)
    assert [key_name(x.key) for x in v.tensors if x.failed] == ["Z1", "DX1"]
    first = v.first_failure
    assert key_name(first.key) == "Z1" and first.blamed == ["numpy"] and first.index == (3, 2)
    assert verdict_of(v, "DX1").blamed == ["torch"]


def test_float64_scenario_localizes_a_small_deviation():
    sc = scenario(dtype="float64")
    base = base_trace(sc)
    traces = traces_from(base)
    bound = 1e-15
    ref = base["DX2"][4, 0]
    traces["tensorflow"]["DX2"][4, 0] = ref + 2 * (2 * bound)
    t = verdict_of(run(sc, traces, bounds_for(sc, bound)), "DX2")
    assert t.allowed == pytest.approx(2 * bound, rel=1e-15)
    assert t.blamed == ["tensorflow"] and t.index == (4, 0)
    assert t.worst["tensorflow"] == pytest.approx(2.0, rel=1e-3)  # ref + 4e-15 is not exact in float64


def test_one_huge_outlier_is_blamed_alone():
    sc = scenario(dtype="float64")
    base = base_trace(sc)
    base["DW1"][0, 0] = 0.1
    traces = traces_from(base)
    traces["jax"]["DW1"][0, 0] = 1e12
    t = verdict_of(run(sc, traces), "DW1")
    assert t.blamed == ["jax"] and t.majority is True


def test_two_of_four_wrong_the_same_way_has_no_majority():
    sc = scenario()
    base = base_trace(sc)
    traces = traces_from(base)
    ref = base["Db1"][3]
    for b in ("jax", "tensorflow"):
        traces[b]["Db1"][3] = ref + 6 * (2 * B)
    t = verdict_of(run(sc, traces), "Db1")
    assert t.failed and t.majority is False
    # the consensus is halfway: every backend is 3 allowed errors away
    assert sorted(t.blamed) == sorted(BACKENDS)
    for b in BACKENDS:
        assert t.worst[b] == pytest.approx(3.0, rel=1e-4)


def test_one_of_three_wrong_keeps_majority():
    sc = scenario()
    base = base_trace(sc)
    traces = {b: t for b, t in traces_from(base).items() if b != "tensorflow"}
    traces["torch"]["b2"][0] += 1.0
    t = verdict_of(run(sc, traces), "b2")
    assert t.blamed == ["torch"] and t.majority is True and t.index == (0,)


def test_scalar_loss_failure():
    sc = scenario()
    base = base_trace(sc)
    traces = traces_from(base)
    traces["tensorflow"]["loss"] = base["loss"] + 10 * (2 * B)
    t = verdict_of(run(sc, traces), "loss")
    assert t.blamed == ["tensorflow"] and t.index == ()
    assert t.worst["tensorflow"] == pytest.approx(10.0, rel=1e-6)
    assert t.allowed == pytest.approx(2 * B)


def test_shape_mismatch_is_blamed():
    sc = scenario()
    traces = traces_from(base_trace(sc))
    traces["jax"]["DW1"] = traces["jax"]["DW1"].T.copy()
    t = verdict_of(run(sc, traces), "DW1")
    assert t.failed and "jax" in t.blamed


# ------------------------------------------------------------------------------------ bounds

def test_ratio_is_the_error_over_what_is_allowed():
    ref = np.array([1.0, -2.0, 0.0])
    value = np.array([1.5, -2.0, 3e-6])
    assert ratio(value, ref, np.array([1.0, 1.0, 1e-6])).tolist() == pytest.approx([0.5, 0.0, 3.0])
    assert ratio(value, ref, 0.25).tolist() == pytest.approx([2.0, 0.0, 1.2e-5])  # a scalar broadcasts


def test_ratio_with_nothing_allowed_is_zero_when_equal_and_infinite_otherwise():
    ref = np.array([1.0, 0.0, -3.0, 5.0])
    value = np.array([1.0, 0.0, np.nextafter(-3.0, 0.0), 5.0 + 1e-300])
    assert ratio(value, ref, np.zeros(4)).tolist() == [0.0, 0.0, np.inf, 0.0]  # 5 + 1e-300 == 5


def test_allowed_is_twice_the_bound_against_the_consensus_and_the_bound_against_the_oracle():
    sc = scenario(dtype="float64")
    bounds = {"DW1": np.array([[1e-9, 0.0], [2e-9, 4e-9]])}
    ref = np.array([[3.0, -0.5], [0.0, 1e8]])
    assert allowed(sc, bounds, "DW1", ref, None).tolist() == [[2e-9, 0.0], [4e-9, 8e-9]]
    with_oracle_ = allowed(sc, bounds, "DW1", ref, "sympy")
    assert with_oracle_ == pytest.approx(bounds["DW1"] + np.abs(ref) * 2.0 ** -53, rel=1e-15)
    assert with_oracle_[0, 1] == 0.5 * 2.0 ** -53  # an exact result: only the oracle's rounding of -0.5


def test_the_bound_is_per_element():
    sc = scenario()
    base = base_trace(sc)
    traces = traces_from(base)
    for index in [(0, 0), (3, 2)]:
        traces["jax"]["DW1"][index] = base["DW1"][index] + 1e-3
    bounds = bounds_for(sc, DW1=np.where(np.arange(4)[:, None] == 0, 1e-3, B) * np.ones((4, 3)))
    t = verdict_of(run(sc, traces, bounds), "DW1")
    assert t.blamed == ["jax"] and t.index == (3, 2)  # (0, 0) has a bound of 1e-3: half of 2e-3 allowed
    assert t.worst["jax"] == pytest.approx(1e-3 / (2 * B), rel=1e-6)
    assert t.allowed == pytest.approx(2 * B)
    traces["jax"]["DW1"][3, 2] = base["DW1"][3, 2]
    t = verdict_of(run(sc, traces, bounds), "DW1")
    assert not t.failed and t.worst["jax"] == pytest.approx(0.5, rel=1e-6)


@pytest.mark.parametrize("oracle", [None, "sympy"])
def test_an_exact_element_fails_on_any_difference_and_passes_when_equal(oracle):
    """Bound 0: the element is exact in any correct implementation (e.g. an input, a ReLU of
    an exact value): one ulp of the dtype off is a failure, equal is a pass."""
    sc = scenario()
    base = base_trace(sc)
    base["Db1"] = base["Db1"].astype(np.float32).astype(np.float64)  # values of the dtype
    traces = with_oracle(base) if oracle else traces_from(base)
    bounds = bounds_for(sc, Db1=0.0)
    t = verdict_of(run(sc, traces, bounds, oracle=oracle), "Db1")
    assert not t.failed and all(t.worst[b] == 0.0 for b in BACKENDS)
    ref = base["Db1"][2]
    traces["torch"]["Db1"][2] = float(np.nextafter(np.float32(ref), np.float32(np.inf)))  # one float32 ulp
    t = verdict_of(run(sc, traces, bounds, oracle=oracle), "Db1")
    assert t.blamed == ["torch"] and t.index == (2,)
    assert t.worst["torch"] > 1
    if oracle is None:
        assert t.worst["torch"] == np.inf and t.allowed == 0.0
    else:  # only the oracle's float64 rounding is allowed: one float32 ulp is 2**29 of those
        assert t.allowed == abs(ref) * 2.0 ** -53
        assert t.worst["torch"] > 2.0 ** 28
        assert t.ulps["torch"] >= 1 and t.ulps["numpy"] == 0.0


def test_the_consensus_allows_twice_the_bound_the_oracle_once():
    sc = scenario()
    base = base_trace(sc)
    ref = base["DX1"][1, 2]
    deviation = 1.5 * B
    traces = traces_from(base)
    traces["jax"]["DX1"][1, 2] = ref + deviation
    t = verdict_of(run(sc, traces), "DX1")
    assert not t.failed and t.worst["jax"] == pytest.approx(0.75, rel=1e-6)  # 1.5 B / 2 B
    traces = with_oracle(base)
    traces["jax"]["DX1"][1, 2] = ref + deviation
    t = verdict_of(run(sc, traces, oracle="sympy"), "DX1")
    assert t.blamed == ["jax"] and t.index == (1, 2)
    assert t.worst["jax"] == pytest.approx(deviation / (B + abs(ref) * 2.0 ** -53), rel=1e-6)  # about 1.5
    assert t.allowed == pytest.approx(B + abs(ref) * 2.0 ** -53, rel=1e-15)
    assert set(t.values) == set(BACKENDS) | {"sympy"} and t.values["sympy"] == ref


def test_against_the_oracle_blame_needs_no_majority():
    sc = scenario()
    base = base_trace(sc)
    traces = with_oracle(base)
    for b in ("numpy", "torch", "jax"):
        traces[b]["Db2"][1] += 10 * B
    t = verdict_of(run(sc, traces, oracle="sympy"), "Db2")
    assert sorted(t.blamed) == ["jax", "numpy", "torch"] and t.majority is True
    assert t.worst["tensorflow"] == 0.0
    # the same three without the oracle are the majority: the odd one out is blamed
    t = verdict_of(run(sc, {b: traces[b] for b in BACKENDS}), "Db2")
    assert t.blamed == ["tensorflow"] and t.majority is True


def test_ulps_against_the_oracle_at_the_tensors_scale():
    sc = scenario()
    base = base_trace(sc)
    traces = with_oracle(base)
    scale = float(np.max(np.abs(base["DW2"])))
    spacing = float(np.spacing(np.float32(scale)))
    traces["jax"]["DW2"][1, 1] += 3 * spacing
    t = verdict_of(run(sc, traces, oracle="sympy"), "DW2")
    assert t.ulps["jax"] == pytest.approx(3.0, rel=1e-9)
    assert {b: t.ulps[b] for b in ("numpy", "torch", "tensorflow")} == {"numpy": 0.0, "torch": 0.0, "tensorflow": 0.0}
    # ulps are reported whatever the verdict: 3 ulps of a value below 2 are under 1e-6 = B
    ref = base["DW2"][1, 1]
    assert not t.failed
    assert t.worst["jax"] == pytest.approx(3 * spacing / (B + abs(ref) * 2.0 ** -53), rel=1e-6)


def test_carried_bounds_pass_what_an_exact_start_fails():
    """Trajectory mode has no growth law: the parameters' error carried from earlier steps makes
    the bounds larger (harness.judge.bounds), and the comparator judges whatever bounds it is given."""
    sc = scenario()
    assert sc.mode == "trajectory"
    base = base_trace(sc)
    traces = traces_from(base)
    ref = base["W2"][1, 3]
    traces["torch"]["W2"][1, 3] = ref + 3 * (2 * B)
    assert verdict_of(run(sc, traces), "W2").blamed == ["torch"]
    t = verdict_of(run(sc, traces, bounds_for(sc, W2=5 * B), step=5), "W2")
    assert not t.failed
    assert t.worst["torch"] == pytest.approx(3 / 5, rel=1e-6)


def test_compare_step_is_scan_then_judge_against_the_reference():
    sc = scenario(layers="ReLU;Linear")
    base = base_trace(sc)
    base["Z1"][2, 1] = 0.0
    traces = traces_from(base)
    _relu_flip(traces, 2, 1)
    traces["numpy"]["DX2"][0, 0] += 1.0
    bounds = bounds_for(sc)
    whole = compare_step(sc, 3, traces, {}, bounds)
    scan = scan_kinks(sc, 3, traces, {})
    ref = reference(sc, traces)
    parts = judge(sc, 3, traces, scan, bounds, None, ref)
    assert (scan.near, scan.flips) == (1, 1) and set(scan.seeds) == {"Z1"}
    assert [(key_name(t.key), t.worst, t.kinks, t.blamed) for t in whole.tensors] == \
           [(key_name(t.key), t.worst, t.kinks, t.blamed) for t in parts.tensors]
    assert whole.first_failure.blamed == ["numpy"] and key_name(whole.first_failure.key) == "DX2"
    assert ref["DX2"][0, 0] == base["DX2"][0, 0]  # the median of four, one off
    with_o = with_oracle(base)
    assert reference(sc, with_o, "sympy") is with_o["sympy"]


# ------------------------------------------------------------------------------- non-finite

def test_nan_in_every_backend_is_agreement():
    sc = scenario()
    traces = traces_from(base_trace(sc))
    for b in BACKENDS:
        traces[b]["DX1"][1, 1] = np.nan
    v = run(sc, traces)
    assert v.first_failure is None
    for b in BACKENDS:
        assert verdict_of(v, "DX1").worst[b] == pytest.approx(0.0, abs=1e-9)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_inf_in_every_backend_is_agreement():
    sc = scenario()
    traces = traces_from(base_trace(sc))
    for b in BACKENDS:
        traces[b]["loss"] = np.array(np.inf)
    assert run(sc, traces).first_failure is None


def test_nan_in_one_backend_is_blamed_on_it():
    sc = scenario()
    traces = traces_from(base_trace(sc))
    traces["jax"]["DX1"][1, 1] = np.nan
    t = verdict_of(run(sc, traces), "DX1")
    assert t.failed
    assert t.blamed == ["jax"]
    assert t.index == (1, 1)


def test_nan_in_one_backend_is_a_failure():
    # whoever is blamed, a NaN in one backend only must not pass
    sc = scenario()
    traces = traces_from(base_trace(sc))
    traces["jax"]["DX1"][1, 1] = np.nan
    v = run(sc, traces)
    assert v.first_failure is not None and key_name(v.first_failure.key) == "DX1"


def test_ratio_non_finite_rules():
    ref = np.array([1.0, np.nan, np.inf, 1.0])
    value = np.array([1.0, np.nan, np.inf, np.nan])
    assert ratio(value, ref, 2 * B).tolist() == [0.0, 0.0, 0.0, np.inf]
    assert ratio(value, ref, np.zeros(4)).tolist() == [0.0, 0.0, 0.0, np.inf]
    assert ratio(np.array([np.inf]), np.array([1.0]), np.array([np.inf])).tolist() == [np.inf]
    assert ratio(np.zeros(3), np.zeros((3, 1)), 2 * B).tolist() == [[np.inf]] * 3


# --------------------------------------------------------------------------------- consensus

@pytest.mark.parametrize("n", [3, 4, 5])
def test_consensus_equals_median(n):
    rng = np.random.default_rng(n)
    arrays = [rng.standard_normal((6, 7)) for _ in range(n)]
    assert np.allclose(consensus(arrays), np.median(np.stack(arrays), axis=0), rtol=1e-14, atol=1e-15)


def test_consensus_of_four_is_mean_of_middle_two():
    a = [np.array([1.0]), np.array([10.0]), np.array([3.0]), np.array([2.0])]
    assert consensus(a).tolist() == [2.5]


def test_consensus_of_two_is_mean():
    assert consensus([np.array([1.0, 3.0]), np.array([2.0, 5.0])]).tolist() == [1.5, 4.0]


def test_one_outlier_does_not_move_consensus_out_of_the_cluster():
    a = [np.array([1.0]), np.array([1.0 + 1e-7]), np.array([1.0 - 1e-7]), np.array([1e6])]
    assert abs(consensus(a)[0] - 1.0) <= 1e-7


def test_consensus_leaves_inputs_untouched():
    a = [np.array([1.0, 2.0]), np.array([3.0, 0.0]), np.array([2.0, 1.0]), np.array([0.0, 5.0])]
    copies = [x.copy() for x in a]
    assert consensus(a).tolist() == [1.5, 1.5]
    assert all(np.array_equal(x, y) for x, y in zip(a, copies))


def test_consensus_of_scalars():
    a = [np.array(1.0), np.array(4.0), np.array(2.0), np.array(3.0)]
    c = consensus(a)
    assert np.shape(c) == () and float(c) == 2.5


# -------------------------------------------------------------------------------------- kinks

def test_near_widens_the_spread_of_the_values_by_the_reach():
    values = [np.array([1e-9, 0.5, -0.3, 2e-9]), np.array([2e-9, 0.5, 0.4, 3e-9])]
    reach = np.array([1e-9, 1.0, 0.0, 1e-9])
    # [1e-9, 2e-9] reaches 0 with 1e-9; 0.5 with a reach of 1; -0.3..0.4 spans it; [2e-9, 3e-9] does not
    assert near(values, 0.0, reach).tolist() == [True, True, True, False]
    assert near(values, 0.0, 0.0).tolist() == [False, False, True, False]
    assert near(values, 0.5, 0.0).tolist() == [False, True, False, False]  # another kink point


def _relu_flip(traces, n, k, who="jax", lr=0.01):
    """``who`` took the other side of ReLU at Z1[n, k]: derivative 1 instead of 0."""
    t = traces[who]
    g = traces["numpy"]["DX2"][n, k]  # the incoming gradient dL/dX2 at that element
    for b in traces:
        traces[b]["DZ1"][n, k] = 0.0
    t["DZ1"][n, k] = g
    dW = g * traces["numpy"]["X1"][n, :]
    t["DW1"][k, :] += dW
    t["Db1"][k] += g
    t["DX1"][n, :] += g * traces["numpy"]["W1"][k, :]
    t["W1"][k, :] -= lr * dW
    t["b1"][k] -= lr * g


@pytest.mark.parametrize("z_values", [
    {b: 0.0 for b in BACKENDS},
    {"numpy": 1e-9, "torch": 2e-9, "jax": -1e-9, "tensorflow": 1e-9},  # the two sides within rounding
    {"numpy": 0.0, "torch": 2e-9, "jax": 0.0, "tensorflow": 1e-9},  # on it and on one side
])
def test_relu_kink_flip_is_excused(z_values):
    sc = scenario()
    traces = traces_from(base_trace(sc))
    n, k = 2, 1
    for b in BACKENDS:
        traces[b]["Z1"][n, k] = z_values[b]
    _relu_flip(traces, n, k)
    v = run(sc, traces)
    assert v.first_failure is None
    assert v.near_kinks == 1
    assert v.flips == 1
    dz, dw, db, dx = (verdict_of(v, name) for name in ("DZ1", "DW1", "Db1", "DX1"))
    assert dz.kinks == {"numpy": 0, "torch": 0, "jax": 1, "tensorflow": 0}
    assert dw.kinks["jax"] == 3  # the whole row k of DW1 (3 inputs)
    assert db.kinks["jax"] == 1
    assert dx.kinks["jax"] >= 1
    assert verdict_of(v, "W1").kinks["jax"] >= 1
    for t in (dz, dw, db, dx):
        assert t.worst["jax"] == pytest.approx(0.0, abs=1e-9)  # the excused elements do not count
    (event,) = v.kink_events
    assert event["tensor"] == "Z1" and event["index"] == [n, k] and event["flipped"] is True
    assert event["site"] == "ReLU layer 1" and event["point"] == 0.0
    assert event["gradient"]["jax"] == traces["jax"]["DZ1"][n, k]


def test_values_strictly_on_one_side_of_a_kink_are_judged_however_close():
    """Z1 = 1e-9 in every backend (and far inside Z1's bound of the kink): every backend used
    the same branch, so a backend with the other derivative there is wrong, not a convention."""
    sc = scenario()
    traces = traces_from(base_trace(sc))
    n, k = 2, 1
    for b in BACKENDS:
        traces[b]["Z1"][n, k] = 1e-9
    _relu_flip(traces, n, k)
    v = run(sc, traces, bounds_for(sc, Z1=1e-3))
    assert v.near_kinks == 0 and v.flips == 0 and v.kink_events == []
    first = v.first_failure
    assert key_name(first.key) == "DZ1" and first.blamed == ["jax"] and first.index == (n, k)
    assert verdict_of(v, "DZ1").kinks == {b: 0 for b in BACKENDS}
    assert verdict_of(v, "DW1").blamed == ["jax"]
    traces["numpy"]["Z1"][n, k] = -1e-9  # one backend on the other side: now a flip
    v = run(sc, traces)
    assert (v.near_kinks, v.flips) == (1, 1) and v.first_failure is None


def test_a_gradient_apart_by_a_factor_at_a_kink_is_a_flip_even_inside_its_bound():
    """docs/findings.md #11: a DZ difference inside DZ's own bound can move DW = DZ^T X far
    outside DW's; at a kink element derivatives apart by more than rounding (KINK_TIE_UNITS) took sides."""
    sc = scenario()
    base = base_trace(sc)
    n, k = 2, 1
    base["Z1"][n, k] = 0.0
    base["DZ1"][n, k] = 1e-7  # the side with derivative 1; inside B of the other side's 0
    traces = traces_from(base)
    traces["jax"]["DZ1"][n, k] = 0.0
    v = run(sc, traces)
    assert (v.near_kinks, v.flips) == (1, 1)
    assert verdict_of(v, "DZ1").kinks == {b: 0 for b in BACKENDS}  # inside the bound anyway
    assert v.first_failure is None


def test_relu_near_kink_without_flip_counts_event_only():
    sc = scenario()
    traces = traces_from(base_trace(sc))
    for b in BACKENDS:
        traces[b]["Z1"][0, 0] = 0.0
    v = run(sc, traces)
    assert v.first_failure is None and v.near_kinks == 1 and v.flips == 0
    assert v.kink_events[0]["flipped"] is False


def test_same_deviation_far_from_the_kink_fails():
    sc = scenario()
    base = base_trace(sc)
    n, k = 2, 1
    base["Z1"][n, k] = 0.5
    traces = traces_from(base)
    _relu_flip(traces, n, k)
    v = run(sc, traces)
    assert v.near_kinks == 0 and v.flips == 0
    first = v.first_failure
    assert key_name(first.key) == "DZ1"
    assert first.blamed == ["jax"] and first.index == (n, k)
    assert verdict_of(v, "DW1").blamed == ["jax"]
    assert verdict_of(v, "DZ1").kinks["jax"] == 0


def test_kink_does_not_excuse_a_bug_elsewhere():
    sc = scenario()
    traces = traces_from(base_trace(sc))
    n, k = 2, 1
    for b in BACKENDS:
        traces[b]["Z1"][n, k] = 0.0
    _relu_flip(traces, n, k)
    traces["jax"]["DW1"][(k + 1) % 4, 0] += 1.0  # another row of DW1: not influenced by the flip
    traces["jax"]["DX1"][(n + 1) % N, 0] += 1.0  # another sample of DX1
    v = run(sc, traces)
    assert v.flips == 1
    dw, dx = verdict_of(v, "DW1"), verdict_of(v, "DX1")
    assert dw.blamed == ["jax"] and dw.index == ((k + 1) % 4, 0)
    assert dx.blamed == ["jax"] and dx.index == ((n + 1) % N, 0)
    assert v.first_failure is dw
    assert dw.outside == {"jax": 1} and dx.outside == {"jax": 1}  # the flip's own elements are excused, not counted


def test_a_flip_against_the_oracle_is_excused_in_every_backend():
    """With an oracle on the kink taking the right-hand derivative (its convention) and every
    backend the left-hand one, all four flipped: counted as kinks, not failures."""
    sc = scenario()
    base = base_trace(sc)
    n, k = 2, 1
    base["Z1"][n, k] = 0.0
    traces = with_oracle(base)
    _relu_flip(traces, n, k, who="sympy")
    v = run(sc, traces, oracle="sympy")
    assert v.first_failure is None
    assert (v.near_kinks, v.flips) == (1, 1)
    assert verdict_of(v, "DZ1").kinks == {b: 1 for b in BACKENDS}
    assert verdict_of(v, "DW1").kinks == {b: 3 for b in BACKENDS}
    assert set(v.kink_events[0]["values"]) == set(BACKENDS) | {"sympy"}
    # the same difference away from the kink is every backend's bug
    base["Z1"][n, k] = 0.5
    traces = with_oracle(base)
    _relu_flip(traces, n, k, who="sympy")
    v = run(sc, traces, oracle="sympy")
    first = v.first_failure
    assert key_name(first.key) == "DZ1" and sorted(first.blamed) == sorted(BACKENDS) and first.majority


def test_srelu_kink_uses_params_before():
    sc = scenario(layers="SReLU(al=0.05,tl=-0.3,ar=0.2,tr=0.4);Linear")
    traces = traces_from(base_trace(sc))
    for b in BACKENDS:
        traces[b]["Z1"][1, 1] = 0.7  # tr in the parameters before the step, not the spec's 0.4
        traces[b]["Z1"][2, 2] = 0.4
    params = {"srelu1": np.array([0.05, -0.3, 0.2, 0.7])}
    v = run(sc, traces, params={b: params for b in BACKENDS})
    assert [e["index"] for e in v.kink_events] == [[1, 1]]
    assert v.kink_events[0]["point"] == pytest.approx(0.7)
    v_spec = run(sc, traces)  # no parameters given: the spec's tl, tr
    assert [e["index"] for e in v_spec.kink_events] == [[2, 2]]


def _absolute(n, k, y_equals_t):
    sc = scenario(loss="AbsoluteError")
    base = base_trace(sc)
    if y_equals_t:
        base["Y"][n, k] = base["T"][n, k]
    traces = traces_from(base)
    traces["jax"]["DY"][n, k] += 2.0 / N  # sign(Y - T) / N from the other side
    return sc, traces


def test_absolute_error_kink_flip_is_excused():
    n, k = 3, 0
    sc, traces = _absolute(n, k, y_equals_t=True)
    v = run(sc, traces)
    assert v.first_failure is None
    assert v.near_kinks == 1 and v.flips == 1
    dy = verdict_of(v, "DY")
    assert dy.kinks == {"numpy": 0, "torch": 0, "jax": 1, "tensorflow": 0}
    assert dy.worst["jax"] == pytest.approx(0.0, abs=1e-9)
    (event,) = v.kink_events
    assert event["site"] == "AbsoluteError loss" and event["tensor"] == "Y" and event["index"] == [n, k]


def test_absolute_error_same_deviation_away_from_kink_fails():
    n, k = 3, 0
    sc, traces = _absolute(n, k, y_equals_t=False)
    v = run(sc, traces)
    assert v.near_kinks == 0 and v.flips == 0
    first = v.first_failure
    assert key_name(first.key) == "DY" and first.blamed == ["jax"] and first.index == (n, k)
    assert first.worst["jax"] == pytest.approx((2.0 / N) / (2 * B), rel=1e-6)


def test_squared_error_has_no_loss_kink():
    n, k = 3, 0
    sc, traces = _absolute(n, k, y_equals_t=True)
    sc = sc.with_(loss="SquaredError")
    v = run(sc, traces)
    assert v.near_kinks == 0
    assert v.first_failure is not None and key_name(v.first_failure.key) == "DY"


# -------------------------------------------------------------------------------- propagate

def _mask(masks, name, shape):
    return np.broadcast_to(masks[name], shape)


def test_propagate_linear_from_dy():
    sc = scenario()  # ReLU(3->4); Linear(4->2)
    sh = shapes(sc)
    seed = np.zeros(sh["DY"], dtype=bool)
    seed[3, 1] = True
    masks = propagate(sc, sh, {"DY": seed})
    dw2 = np.zeros((2, 4), bool); dw2[1, :] = True
    assert np.array_equal(_mask(masks, "DW2", (2, 4)), dw2)
    assert np.array_equal(_mask(masks, "W2", (2, 4)), dw2)
    assert _mask(masks, "Db2", (2,)).tolist() == [False, True]
    rows = np.zeros((N, 4), bool); rows[3, :] = True
    assert np.array_equal(_mask(masks, "DX2", (N, 4)), rows)
    assert np.array_equal(_mask(masks, "DZ1", (N, 4)), rows)
    assert _mask(masks, "DW1", (4, 3)).all()  # row 3 of DZ1 touches every unit
    dx1 = np.zeros((N, 3), bool); dx1[3, :] = True
    assert np.array_equal(_mask(masks, "DX1", (N, 3)), dx1)


def test_propagate_relu_seed_marks_one_row_of_dw():
    sc = scenario()
    sh = shapes(sc)
    z = np.zeros((N, 4), bool); z[2, 1] = True
    masks = propagate(sc, sh, {"Z1": z})
    assert not _mask(masks, "DY", sh["DY"]).any() and not _mask(masks, "DW2", (2, 4)).any()
    assert np.array_equal(_mask(masks, "DZ1", (N, 4)), z)
    dw1 = np.zeros((4, 3), bool); dw1[1, :] = True
    assert np.array_equal(_mask(masks, "DW1", (4, 3)), dw1)
    assert _mask(masks, "Db1", (4,)).tolist() == [False, True, False, False]
    dx1 = np.zeros((N, 3), bool); dx1[2, :] = True
    assert np.array_equal(_mask(masks, "DX1", (N, 3)), dx1)


def test_propagate_softmax_mixes_a_row():
    sc = scenario(layers="ReLU;Softmax", sizes="3,4,6")
    sh = shapes(sc)
    seed = np.zeros((N, 6), bool); seed[1, 4] = True
    masks = propagate(sc, sh, {"DY": seed})
    row = np.zeros((N, 6), bool); row[1, :] = True
    assert np.array_equal(_mask(masks, "DZ2", (N, 6)), row)
    assert _mask(masks, "DW2", (6, 4)).all()
    dx2 = np.zeros((N, 4), bool); dx2[1, :] = True
    assert np.array_equal(_mask(masks, "DX2", (N, 4)), dx2)
    assert np.array_equal(_mask(masks, "DZ1", (N, 4)), dx2)


def test_propagate_batchnorm_mixes_a_column():
    sc = scenario(layers="ReLU;BatchNormalization", sizes="3,4")
    sh = shapes(sc)
    seed = np.zeros((N, 4), bool); seed[2, 3] = True
    masks = propagate(sc, sh, {"DY": seed})
    assert _mask(masks, "Dgamma2", (4,)).tolist() == [False, False, False, True]
    assert _mask(masks, "beta2", (4,)).tolist() == [False, False, False, True]
    col = np.zeros((N, 4), bool); col[:, 3] = True
    assert np.array_equal(_mask(masks, "DX2", (N, 4)), col)
    assert np.array_equal(_mask(masks, "DZ1", (N, 4)), col)
    dw1 = np.zeros((4, 3), bool); dw1[3, :] = True
    assert np.array_equal(_mask(masks, "DW1", (4, 3)), dw1)
    assert _mask(masks, "DX1", (N, 3)).all()  # column 3 touches every sample


def test_propagate_batchnorm_between_linear_layers():
    sc = scenario(layers="ReLU;BatchNormalization;Linear", sizes="3,4,2")
    sh = shapes(sc)
    seed = np.zeros((N, 2), bool); seed[0, 1] = True
    masks = propagate(sc, sh, {"DY": seed})
    assert _mask(masks, "Db3", (2,)).tolist() == [False, True]
    row = np.zeros((N, 4), bool); row[0, :] = True
    assert np.array_equal(_mask(masks, "DX3", (N, 4)), row)
    assert _mask(masks, "Dgamma2", (4,)).all()  # the row reaches every column
    assert _mask(masks, "DX2", (N, 4)).all()


def test_propagate_srelu_marks_its_four_parameters():
    sc = scenario(layers="SReLU;Linear")
    sh = shapes(sc)
    seed = np.zeros((N, 2), bool); seed[0, 0] = True
    masks = propagate(sc, sh, {"DY": seed})
    assert _mask(masks, "Dsrelu1", (4,)).all() and _mask(masks, "srelu1", (4,)).all()
    none = propagate(sc, sh, {"DY": np.zeros((N, 2), bool)})
    assert not _mask(none, "Dsrelu1", (4,)).any()
