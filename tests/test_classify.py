"""Classification of findings on constructed results (no backend runs)."""

import numpy as np

from harness.core.backend import BackendFailure
from harness.run.findings import RED, Finding, classify, is_red
from harness.judge.compare import StepVerdict, TensorVerdict
from harness.run.runner import RunResult
from harness.spec.scenario import build_scenario

SC = build_scenario(name="c", layers="ReLU;Linear", sizes="3,4,2", optimizers="GradientDescent",
                    init_weights="XavierNormal", loss="SquaredError", lr=0.1, batch_size=2, steps=2)
B = ["numpy", "torch", "jax", "tensorflow"]


def result(tensors=(), events=(), **kw):
    r = RunResult(SC, B, **kw)
    r.steps.append(StepVerdict(0, list(tensors), list(events), len(events), sum(e["flipped"] for e in events)))
    return r


def failing(values, blamed=("jax",)):
    worst = {b: (3.0 if b in blamed else 0.1) for b in B}
    return TensorVerdict(("DW", 1), worst, {b: 0 for b in B}, list(blamed), majority=True, index=(0, 1),
                         values=values)


def test_a_backend_outside_the_bound_is_a_red_bug_naming_it():
    r = result([failing({"numpy": 1.0, "torch": 1.0, "jax": 1.1, "tensorflow": 1.0, "consensus": 1.0})])
    (f,) = classify(r)
    assert (f.cls, f.backends, f.tensor, f.layer, f.layer_kind, f.step) == ("bug", ("jax",), "DW", 1, "ReLU", 0)
    assert f.red and is_red(r)


def test_nan_where_the_reference_is_finite_is_non_finite():
    r = result([failing({"numpy": 1.0, "torch": 1.0, "jax": float("nan"), "tensorflow": 1.0, "consensus": 1.0})])
    (f,) = classify(r)
    assert (f.cls, f.backends) == ("non-finite", ("jax",)) and f.red


def test_non_finite_in_every_backend_is_reported_not_red():
    """Red for non-finite "in a backend where others stay finite"; a shared overflow
    (the unsafe log_softmax at a logit above 709.78 in float64) is a limitation."""
    inf = float("-inf")
    r = result([failing({"numpy": inf, "torch": inf, "jax": inf, "tensorflow": inf, "sympy": -1154.85},
                        blamed=B)], oracle="sympy")
    (f,) = classify(r)
    assert (f.cls, f.backends, f.everywhere) == ("non-finite", tuple(sorted(B)), True)
    assert not f.red and not is_red(r) and "in every backend" in f.detail
    three = result([failing({"numpy": inf, "torch": inf, "jax": inf, "tensorflow": -1154.8, "sympy": -1154.85},
                            blamed=B[:3])], oracle="sympy")
    (g,) = classify(three)
    assert g.backends == ("jax", "numpy", "torch") and not g.everywhere and g.red


def test_known_numpy_float64_widening_is_not_red_but_a_new_dtype_mismatch_is():
    known = result(dtype_mismatches={"numpy": ["DX1", "DZ1"]})
    assert classify(known) == [] and not is_red(known)
    new = result(dtype_mismatches={"torch": ["DW1"]})
    (f,) = classify(new)
    assert (f.cls, f.backends, f.tensor) == ("dtype", ("torch",), "DW") and f.red


def test_kink_flips_and_conventions_are_reported_never_red():
    flip = {"step": 0, "site": "ReLU layer 1", "tensor": "Z1", "index": [0, 0], "point": 0.0, "flipped": True,
            "values": {"numpy": 1e-9, "torch": -1e-9, "jax": 1e-9, "tensorflow": 1e-9},
            "gradient": {b: 0.0 for b in B}}
    r = result(events=[flip])
    (f,) = classify(r)
    assert f.cls == "kink" and not f.red
    on = dict(flip, values={b: 0.0 for b in B})
    (g,) = classify(result(events=[on]))
    assert g.cls == "convention" and not g.red


def test_a_backend_that_raised_is_a_red_error():
    (f,) = classify(result(failures={"torch": BackendFailure(0, "RuntimeError", "boom", "layers.py:1")}))
    assert (f.cls, f.backends, f.red) == ("error", ("torch",), True)


def test_signature_ignores_step_and_element_so_duplicates_collapse():
    a = classify(result([failing({"numpy": 1, "torch": 1, "jax": 2, "tensorflow": 1, "consensus": 1})]))[0]
    other = failing({"numpy": 5, "torch": 5, "jax": 7, "tensorflow": 5, "consensus": 5})
    other.index = (1, 0)
    b = classify(result([other]))[0]
    assert a.signature == b.signature and a.detail != b.detail
    assert np.isfinite(a.step)


def test_unstable_is_red_with_its_own_signature_and_classify_alone_says_bug():
    """``unstable`` (a float32 bug that float64 does not show) needs a float64 rerun, so only
    harness.search.evaluate names it; classify judges one run. It is red, and a defect of its own."""
    r = result([failing({"numpy": 1.0, "torch": 1.0, "jax": 1.1, "tensorflow": 1.0, "consensus": 1.0})])
    (f,) = classify(r)
    assert f.cls == "bug"
    u = Finding("unstable", f.backends, f.tensor, f.layer, f.layer_kind, f.step)
    assert "unstable" in RED and u.red and u.signature != f.signature
