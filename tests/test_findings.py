"""What the harness measured in the released Nerva 1.0.0 backends (docs/findings.md).

Each test pins one measured behaviour exactly, so a release that changes it makes the test
fail and the finding gets revisited. None of them is a tolerance: they assert the values.
"""

import numpy as np
import pytest

import adapters

symbolic = pytest.importorskip("harness.symbolic")


def load(name):
    reason = adapters.why_unavailable(name)
    if reason:
        pytest.skip(reason)
    a = adapters.load(name)
    a.setup()
    return a


@pytest.mark.parametrize("kind", ["LeakyReLU", "AllReLU"])
def test_tensorflow_float64_rounds_alpha_to_float32(kind):
    """nerva-tensorflow: tf.cast(alpha, X.dtype) converts the Python float to a float32 tensor
    first, so in float64 runs the derivatives of LeakyReLU and AllReLU (and AllReLU's value)
    use float32(0.3) = 0.30000001192092896; LeakyReLU's value uses alpha * X, exact."""
    a = load("tensorflow")
    with a.precision("float64"):
        act = a.activation(kind, {"alpha": 0.3}, "float64")
        X = a.array(np.array([[-2.0]]), "float64")
        grad = float(a.to_numpy(act.gradient(X))[0, 0])
        value = float(a.to_numpy(act(X))[0, 0])
    assert grad == float(np.float32(0.3)) != 0.3
    assert value == -2.0 * (float(np.float32(0.3)) if kind == "AllReLU" else 0.3)
    for other in ("numpy", "torch", "jax"):  # the others keep alpha in float64
        b = load(other)
        with b.precision("float64"):
            g = b.to_numpy(b.activation(kind, {"alpha": 0.3}, "float64").gradient(b.array(np.array([[-2.0]]), "float64")))
        assert float(g[0, 0]) == 0.3


@pytest.mark.parametrize("name", ["numpy", "torch", "jax", "tensorflow"])
def test_leaky_relu_gradient_contradicts_its_forward_for_alpha_above_1(name):
    """All four define LeakyReLU(x) = max(alpha x, x) but its derivative as 1 for x > 0 and
    alpha otherwise: for alpha > 1 the forward is alpha x on x > 0, so the derivative there is
    alpha, not 1. Backend comparison cannot see it (all four agree); the exact oracle does."""
    a = load(name)
    X = np.array([[1.5, -1.5]])
    with a.precision("float64"):
        act = a.activation("LeakyReLU", {"alpha": 2.0}, "float64")
        got = a.to_numpy(act.gradient(a.array(X, "float64")))
        value = a.to_numpy(act(a.array(X, "float64")))
    exact = symbolic.Activation("LeakyReLU", {"alpha": 2.0})
    assert value.tolist() == [[3.0, -1.5]]  # max(2x, x)
    assert [float(v) for v in exact.derivative(X).ravel()] == [2.0, 1.0]
    assert got.tolist() == [[1.0, 2.0]]  # the library's derivative: wrong on both sides


def test_numpy_relu_family_derivatives_widen_float32_to_float64():
    """nerva-numpy's ReLU-family gradients are integer arrays (np.where(X > 0, 1, 0)), so
    hadamard(DY, gradient) promotes float32 to float64: DZ and DX leave float32."""
    a = load("numpy")
    act = a.activation("ReLU", {}, "float32")
    g = act.gradient(np.array([[1.0, -1.0]], dtype=np.float32))
    assert g.dtype.kind == "i"
    assert (np.ones((1, 2), dtype=np.float32) * g).dtype == np.float64


def test_jax_flushes_float32_subnormals_to_zero():
    """XLA on the CPU flushes subnormals: nerva-jax computes ReLU'(1.4e-45) = 0 (exact: 1)."""
    a = load("jax")
    tiny = np.array([[np.nextafter(np.float32(0), np.float32(1))]], dtype=np.float32)
    with a.precision("float32"):
        got = a.to_numpy(a.activation("ReLU", {}, "float32").gradient(a.array(tiny, "float32")))
    assert got[0, 0] == 0.0
    assert float(symbolic.Activation("ReLU", {}).derivative(tiny.astype(np.float64))[0, 0]) == 1.0


# Findings of the Hypothesis search (docs/findings.md #9, #10): each committed bundle reruns bit
# for bit and keeps its class. The expected class is written here, beside the bundle's name.
BUNDLES = {
    "9-log-softmax-overflow-float64": "non-finite everywhere",
    "10a-batchnorm-constant-column-forward-float32": "rounding",
    "10b-batchnorm-zero-column-backward-float32": "rounding",
    "10d-batchnorm-two-rows-backward-float32": "rounding",
}


@pytest.mark.backends
@pytest.mark.parametrize("stem", sorted(BUNDLES))
def test_a_search_finding_replays_bit_for_bit_and_keeps_its_class(stem, installed):
    from pathlib import Path

    from harness.explore import evaluate
    from harness.repro import load as load_bundle, replay
    from scenarios.strategies import Example

    (path,) = Path(__file__).parent.parent.glob(f"docs/findings/{stem}-*.npz")
    result, differences = replay(path)
    assert [d for d in differences if not d.startswith("versions differ")] == []
    _, scenario, state0, data = load_bundle(path)
    ev = evaluate(Example(scenario, state0, data), installed)
    assert ev.red == []
    if BUNDLES[stem] == "rounding":
        assert len(ev.rounding) == 1 and not result.passed
    else:
        (f,) = [f for f in ev.other if f.cls == "non-finite"]
        assert f.everywhere and f.tensor == "Y" and f.backends == tuple(sorted(installed))
        step, tv = result.first_divergence
        assert all(tv.values[b] == float("-inf") for b in installed) and np.isfinite(tv.values["sympy"])
