"""The comparator on constructed deviations: hand-made traces in, known verdicts out.

No backend is involved: a trace is a dict backend -> {tensor name -> float64 array}, built here
from random numbers and then perturbed on purpose.
"""

from __future__ import annotations

import numpy as np
import pytest

from harness import compare
from harness.compare import compare_step, consensus, key_name, propagate, ratio, tensor_order, tolerance
from harness.spec import build_scenario

BACKENDS = ("numpy", "torch", "jax", "tensorflow")
N = 5  # batch size
RTOL32, ATOL32 = 1.3e-6, 1e-5


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


def tol32(ref):
    return ATOL32 + RTOL32 * abs(ref)


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
    v = compare_step(sc, 0, traces_from(base_trace(sc)), {})
    assert v.first_failure is None
    assert len(v.tensors) == len(tensor_order(sc))
    for t in v.tensors:
        for b in BACKENDS:
            assert t.worst[b] == 0.0  # the median of identical values is that value, exactly
        assert t.kinks == {b: 0 for b in BACKENDS}
        assert not t.failed and t.index is None
    assert (v.near_kinks, v.flips, v.kink_events) == (0, 0, [])


def test_half_tolerance_passes_with_ratio_one_half():
    sc = scenario()
    base = base_trace(sc)
    traces = traces_from(base)
    ref = base["DW1"][1, 2]
    traces["torch"]["DW1"][1, 2] = ref + 0.5 * tol32(ref)
    v = compare_step(sc, 0, traces, {})
    assert v.first_failure is None
    t = verdict_of(v, "DW1")
    assert t.worst["torch"] == pytest.approx(0.5, rel=1e-6)
    for b in ("numpy", "jax", "tensorflow"):
        assert t.worst[b] == pytest.approx(0.0, abs=1e-6)


def test_three_times_tolerance_fails_and_is_localized():
    sc = scenario()
    base = base_trace(sc)
    traces = traces_from(base)
    ref = base["DW1"][2, 1]
    traces["jax"]["DW1"][2, 1] = ref - 3 * tol32(ref)
    v = compare_step(sc, 0, traces, {})
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
    assert (t.rtol, t.atol) == (RTOL32, ATOL32)
    assert v.first_failure is t
    assert [key_name(x.key) for x in v.tensors if x.failed] == ["DW1"]


def test_first_failure_is_earliest_in_tensor_order():
    sc = scenario()
    base = base_trace(sc)
    traces = traces_from(base)
    traces["torch"]["DX1"][0, 0] += 1.0   # backward
    traces["numpy"]["Z1"][3, 2] += 1.0    # forward: comes first
    v = compare_step(sc, 0, traces, {})
    assert [key_name(x.key) for x in v.tensors if x.failed] == ["Z1", "DX1"]
    first = v.first_failure
    assert key_name(first.key) == "Z1" and first.blamed == ["numpy"] and first.index == (3, 2)
    assert verdict_of(v, "DX1").blamed == ["torch"]


def test_float64_scenario_localizes_a_small_deviation():
    sc = scenario(dtype="float64")
    base = base_trace(sc)
    traces = traces_from(base)
    ref = base["DX2"][4, 0]
    traces["tensorflow"]["DX2"][4, 0] = ref + 2 * (1e-7 + 1e-7 * abs(ref))
    t = verdict_of(compare_step(sc, 0, traces, {}), "DX2")
    assert (t.rtol, t.atol) == (1e-7, 1e-7)
    assert t.blamed == ["tensorflow"] and t.index == (4, 0)
    assert t.worst["tensorflow"] == pytest.approx(2.0, rel=1e-6)


def test_one_huge_outlier_is_blamed_alone():
    sc = scenario(dtype="float64")
    base = base_trace(sc)
    base["DW1"][0, 0] = 0.1
    traces = traces_from(base)
    traces["jax"]["DW1"][0, 0] = 1e12
    t = verdict_of(compare_step(sc, 0, traces, {}), "DW1")
    assert t.blamed == ["jax"] and t.majority is True


def test_two_of_four_wrong_the_same_way_has_no_majority():
    sc = scenario()
    base = base_trace(sc)
    traces = traces_from(base)
    ref = base["Db1"][3]
    for b in ("jax", "tensorflow"):
        traces[b]["Db1"][3] = ref + 6 * tol32(ref)
    t = verdict_of(compare_step(sc, 0, traces, {}), "Db1")
    assert t.failed and t.majority is False
    # the consensus is halfway: every backend is about 3 tolerances away
    assert sorted(t.blamed) == sorted(BACKENDS)
    for b in BACKENDS:
        assert t.worst[b] == pytest.approx(3.0, rel=1e-4)


def test_one_of_three_wrong_keeps_majority():
    sc = scenario()
    base = base_trace(sc)
    traces = {b: t for b, t in traces_from(base).items() if b != "tensorflow"}
    traces["torch"]["b2"][0] += 1.0
    t = verdict_of(compare_step(sc, 0, traces, {}), "b2")
    assert t.blamed == ["torch"] and t.majority is True and t.index == (0,)


def test_scalar_loss_failure():
    sc = scenario()
    base = base_trace(sc)
    traces = traces_from(base)
    traces["tensorflow"]["loss"] = base["loss"] + 10 * tol32(float(base["loss"]))
    t = verdict_of(compare_step(sc, 0, traces, {}), "loss")
    assert t.blamed == ["tensorflow"] and t.index == ()
    assert t.worst["tensorflow"] == pytest.approx(10.0, rel=1e-6)


def test_shape_mismatch_is_blamed():
    sc = scenario()
    traces = traces_from(base_trace(sc))
    traces["jax"]["DW1"] = traces["jax"]["DW1"].T.copy()
    t = verdict_of(compare_step(sc, 0, traces, {}), "DW1")
    assert t.failed and "jax" in t.blamed


# --------------------------------------------------------------------------------- tolerance

def test_float32_defaults():
    assert tolerance(scenario(), ("DW", 1)) == (1.3e-6, 1e-5)


def test_float64_defaults():
    assert tolerance(scenario(dtype="float64"), ("DW", 1)) == (1e-7, 1e-7)


def test_tolerance_override_by_name_changes_ratio():
    sc = scenario(tolerance={"DW": [1e-3, 1e-3]})
    assert tolerance(sc, ("DW", 1)) == (1e-3, 1e-3)
    assert tolerance(sc, ("DW", 2)) == (1e-3, 1e-3)
    assert tolerance(sc, ("Db", 1)) == (RTOL32, ATOL32)
    base = base_trace(sc)
    traces = traces_from(base)
    ref = base["DW1"][0, 0]
    delta = 1e-3  # 100 float32 tolerances (ref is 0.5..2), well inside the override
    traces["jax"]["DW1"][0, 0] = ref + delta
    v = compare_step(sc, 0, traces, {})
    t = verdict_of(v, "DW1")
    assert (t.rtol, t.atol) == (1e-3, 1e-3)
    assert not t.failed
    assert t.worst["jax"] == pytest.approx(delta / (1e-3 + 1e-3 * abs(ref)), rel=1e-6)
    # the same deviation with the default tolerance fails by ~delta / tol32
    t0 = verdict_of(compare_step(scenario(), 0, traces, {}), "DW1")
    assert t0.blamed == ["jax"] and t0.worst["jax"] == pytest.approx(delta / tol32(ref), rel=1e-6)


def test_tolerance_override_precedence():
    sc = scenario(tolerance={"*": [1e-2, 1e-2], "DW": [1e-3, 1e-3], "DW2": {"rtol": 1e-4, "atol": 2e-4}})
    assert tolerance(sc, ("DX", 1)) == (1e-2, 1e-2)
    assert tolerance(sc, ("loss", None)) == (1e-2, 1e-2)
    assert tolerance(sc, ("DW", 1)) == (1e-3, 1e-3)
    assert tolerance(sc, ("DW", 2)) == (1e-4, 2e-4)


def test_trajectory_tolerance_grows_linearly_with_growth_one():
    sc = scenario(growth=1.0)
    assert sc.mode == "trajectory"
    rtol, atol = tolerance(sc, ("DW", 1), since_sync=4)
    assert rtol == pytest.approx(5 * RTOL32, rel=1e-12) and atol == pytest.approx(5 * ATOL32, rel=1e-12)
    assert tolerance(sc, ("DW", 1), since_sync=0) == (RTOL32, ATOL32)


def test_trajectory_tolerance_default_growth_is_square_root():
    sc = scenario()
    assert sc.growth == 0.5
    rtol, atol = tolerance(sc, ("DW", 1), since_sync=4)
    assert rtol == pytest.approx(5 ** 0.5 * RTOL32, rel=1e-12) and atol == pytest.approx(5 ** 0.5 * ATOL32, rel=1e-12)
    rtol, atol = tolerance(sc, ("DW", 1), since_sync=8)
    assert (rtol, atol) == (pytest.approx(3 * RTOL32, rel=1e-12), pytest.approx(3 * ATOL32, rel=1e-12))


def test_growth_applies_to_overridden_tolerance():
    sc = scenario(growth=1.0, tolerance={"DW": [1e-3, 2e-3]})
    assert tolerance(sc, ("DW", 1), since_sync=2) == (pytest.approx(3e-3), pytest.approx(6e-3))


@pytest.mark.parametrize("growth", [0.5, 1.0])
def test_lockstep_tolerance_does_not_grow(growth):
    sc = scenario(mode="lockstep", growth=growth)
    assert tolerance(sc, ("DW", 1), since_sync=4) == (RTOL32, ATOL32)


def test_grown_tolerance_applies_in_compare_step():
    sc = scenario(growth=1.0)
    base = base_trace(sc)
    traces = traces_from(base)
    ref = base["W2"][1, 3]
    traces["torch"]["W2"][1, 3] = ref + 3 * tol32(ref)
    assert verdict_of(compare_step(sc, 0, traces, {}, since_sync=0), "W2").failed
    t = verdict_of(compare_step(sc, 5, traces, {}, since_sync=4), "W2")
    assert not t.failed
    assert t.worst["torch"] == pytest.approx(3 / 5, rel=1e-6)


# ------------------------------------------------------------------------------- non-finite

def test_nan_in_every_backend_is_agreement():
    sc = scenario()
    traces = traces_from(base_trace(sc))
    for b in BACKENDS:
        traces[b]["DX1"][1, 1] = np.nan
    v = compare_step(sc, 0, traces, {})
    assert v.first_failure is None
    for b in BACKENDS:
        assert verdict_of(v, "DX1").worst[b] == pytest.approx(0.0, abs=1e-9)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_inf_in_every_backend_is_agreement():
    sc = scenario()
    traces = traces_from(base_trace(sc))
    for b in BACKENDS:
        traces[b]["loss"] = np.array(np.inf)
    assert compare_step(sc, 0, traces, {}).first_failure is None


def test_nan_in_one_backend_is_blamed_on_it():
    sc = scenario()
    traces = traces_from(base_trace(sc))
    traces["jax"]["DX1"][1, 1] = np.nan
    t = verdict_of(compare_step(sc, 0, traces, {}), "DX1")
    assert t.failed
    assert t.blamed == ["jax"]
    assert t.index == (1, 1)


def test_nan_in_one_backend_is_a_failure():
    # whoever is blamed, a NaN in one backend only must not pass
    sc = scenario()
    traces = traces_from(base_trace(sc))
    traces["jax"]["DX1"][1, 1] = np.nan
    v = compare_step(sc, 0, traces, {})
    assert v.first_failure is not None and key_name(v.first_failure.key) == "DX1"


def test_ratio_non_finite_rules():
    ref = np.array([1.0, np.nan, np.inf, 1.0])
    value = np.array([1.0, np.nan, np.inf, np.nan])
    r = ratio(value, ref, RTOL32, ATOL32)
    assert r.tolist() == [0.0, 0.0, 0.0, np.inf]
    assert ratio(np.zeros(3), np.zeros((3, 1)), RTOL32, ATOL32).tolist() == [[np.inf]] * 3


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
    {b: 1e-9 for b in BACKENDS},
    {"numpy": 1e-9, "torch": 2e-9, "jax": -1e-9, "tensorflow": 1e-9},  # the two sides within rounding
])
def test_relu_kink_flip_is_excused(z_values):
    sc = scenario()
    traces = traces_from(base_trace(sc))
    n, k = 2, 1
    for b in BACKENDS:
        traces[b]["Z1"][n, k] = z_values[b]
    _relu_flip(traces, n, k)
    v = compare_step(sc, 0, traces, {})
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


def test_relu_near_kink_without_flip_counts_event_only():
    sc = scenario()
    traces = traces_from(base_trace(sc))
    for b in BACKENDS:
        traces[b]["Z1"][0, 0] = 0.0
    v = compare_step(sc, 0, traces, {})
    assert v.first_failure is None and v.near_kinks == 1 and v.flips == 0
    assert v.kink_events[0]["flipped"] is False


def test_same_deviation_far_from_the_kink_fails():
    sc = scenario()
    base = base_trace(sc)
    n, k = 2, 1
    base["Z1"][n, k] = 0.5
    traces = traces_from(base)
    _relu_flip(traces, n, k)
    v = compare_step(sc, 0, traces, {})
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
    v = compare_step(sc, 0, traces, {})
    assert v.flips == 1
    dw, dx = verdict_of(v, "DW1"), verdict_of(v, "DX1")
    assert dw.blamed == ["jax"] and dw.index == ((k + 1) % 4, 0)
    assert dx.blamed == ["jax"] and dx.index == ((n + 1) % N, 0)
    assert v.first_failure is dw


def test_srelu_kink_uses_params_before():
    sc = scenario(layers="SReLU(al=0.05,tl=-0.3,ar=0.2,tr=0.4);Linear")
    traces = traces_from(base_trace(sc))
    for b in BACKENDS:
        traces[b]["Z1"][1, 1] = 0.7  # tr in the parameters before the step, not the spec's 0.4
        traces[b]["Z1"][2, 2] = 0.4
    params = {"srelu1": np.array([0.05, -0.3, 0.2, 0.7])}
    v = compare_step(sc, 0, traces, {b: params for b in BACKENDS})
    assert [e["index"] for e in v.kink_events] == [[1, 1]]
    assert v.kink_events[0]["point"] == pytest.approx(0.7)
    v_spec = compare_step(sc, 0, traces, {})  # no parameters given: the spec's tl, tr
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
    v = compare_step(sc, 0, traces, {})
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
    v = compare_step(sc, 0, traces, {})
    assert v.near_kinks == 0 and v.flips == 0
    first = v.first_failure
    assert key_name(first.key) == "DY" and first.blamed == ["jax"] and first.index == (n, k)
    assert first.worst["jax"] == pytest.approx((2.0 / N) / tol32(traces["numpy"]["DY"][n, k]), rel=1e-6)


def test_squared_error_has_no_loss_kink():
    n, k = 3, 0
    sc, traces = _absolute(n, k, y_equals_t=True)
    sc = sc.with_(loss="SquaredError")
    v = compare_step(sc, 0, traces, {})
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
