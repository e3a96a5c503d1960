"""The component suite: every component of every backend against the exact oracle.

Activations (value and derivative), the four softmax functions, the six losses (value and
gradient, one-hot and soft targets) and every layer kind (feedforward output and every
gradient), in float32 and float64, at points that include values on and next to kinks, large
magnitudes (large logits), a batch of one, constant and nearly constant columns under
BatchNormalization. Exact values come from harness.symbolic (SymPy derivatives of the forward
definitions, evaluated at exactly the points the backend used, at 40 digits).

Two things are not failures, and each is stated where it happens:
- exactly on a kink the derivative is a convention (``nerva-consistency conventions``), so
  those elements are skipped for derivatives (their values are still checked, and the
  derivative must lie between the one-sided limits), while points on either side are checked
  against the exact derivative. A point a *subnormal* away from a kink counts as on it: JAX
  (XLA on the CPU) flushes subnormals to zero, so nerva-jax computes ReLU'(1.4e-45) = 0, where
  the exact derivative is 1 — a measured platform difference, reported in the closing notes,
  not a failure;
- nearly constant BatchNormalization columns are ill-conditioned: the tolerance is multiplied
  by the condition number max|x| / sqrt(var + eps) of the column (rounding in x - mean is
  amplified by that much in any correct float implementation).
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

import adapters
from harness.spec import build_scenario
from harness.state import as_dtype, initial_state
from exact import assert_exact

symbolic = pytest.importorskip("harness.symbolic")

pytestmark = pytest.mark.symbolic

BACKENDS = ("numpy", "torch", "jax", "tensorflow")
DTYPES = ("float32", "float64")
SRELU = {"al": 0.125, "tl": -0.25, "ar": 0.375, "tr": 0.5}  # exact in float32: kinks are at the same points
ACTIVATIONS = {
    "ReLU": {}, "Sigmoid": {}, "HyperbolicTangent": {}, "LeakyReLU": {"alpha": 0.1}, "AllReLU": {"alpha": 0.3},
    "ELU": {"alpha": 0.1}, "SReLU": SRELU,
}


@functools.lru_cache(maxsize=None)
def backend(name: str):
    reason = adapters.why_unavailable(name)
    if reason:
        pytest.skip(reason)
    a = adapters.load(name)
    a.setup()
    return a


def run_in(a, dtype, fn):
    with a.precision(dtype):
        return fn()


def on_dtype(x, dtype):
    return as_dtype(np.asarray(x, dtype=np.float64), dtype)


# ----------------------------------------------------------------------------- activations

def activation_points(kind: str, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """Points (1, n) and the mask of those exactly on a kink."""
    rng = np.random.default_rng(11)
    kinks = symbolic.Activation(kind, ACTIVATIONS[kind]).kinks()
    pts = [rng.normal(0, 2, 24), [-60.0, -30.0, 30.0, 60.0], [1e-30, -1e-30, 1e-7, -1e-7]]
    for k in kinks:
        k = np.asarray(k, dtype=dtype)
        near = [np.nextafter(k, np.asarray(-np.inf, dtype)), k, np.nextafter(k, np.asarray(np.inf, dtype))]
        pts.append(np.array(near, dtype=np.float64))
        pts.append(float(k) + np.array([-1e-6, 1e-6]))
    Z = on_dtype(np.concatenate([np.ravel(p) for p in pts]), dtype)[None, :]
    on_kink = np.zeros(Z.shape, dtype=bool)
    for k in kinks:  # on the kink, or a subnormal away: XLA on the CPU flushes subnormals to zero
        on_kink |= np.abs(Z - float(k)) < np.finfo(dtype).tiny
    return Z, on_kink


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", list(ACTIVATIONS))
@pytest.mark.parametrize("name", BACKENDS)
def test_activation_value_and_derivative(name, kind, dtype):
    a = backend(name)
    Z, on_kink = activation_points(kind, dtype)
    exact = symbolic.Activation(kind, ACTIVATIONS[kind])
    act = a.activation(kind, ACTIVATIONS[kind], dtype)
    value = run_in(a, dtype, lambda: a.to_numpy(act(a.array(Z, dtype))))
    deriv = run_in(a, dtype, lambda: a.to_numpy(act.gradient(a.array(Z, dtype))))
    assert_exact(value, exact.value(Z), dtype, f"{name} {kind} value", point=Z)
    assert_exact(deriv, exact.derivative(Z), dtype, f"{name} {kind} derivative", point=Z, skip=on_kink)
    for k in exact.kinks():  # at (or a subnormal from) each kink: between the one-sided limits
        left, right = (float(v) for v in exact.one_sided(float(k)))
        for got in deriv[on_kink & (np.abs(Z - float(k)) < np.finfo(dtype).tiny)]:
            assert min(left, right) - 1e-7 <= got <= max(left, right) + 1e-7, (name, kind, got, left, right)


# --------------------------------------------------------------------------- softmax family

def logits(case: str, dtype: str) -> np.ndarray:
    rng = np.random.default_rng(5)
    Z = {"normal": rng.normal(0, 1, (5, 6)), "one row": rng.normal(0, 3, (1, 4)),
         "constant row": np.full((2, 5), 0.75), "large": rng.normal(0, 25, (4, 6)) + 40}[case]
    if case == "large":
        Z[1, 2] = 100.0  # beyond float32's exp range (88.7)
    return on_dtype(Z, dtype)


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning", "ignore:invalid value:RuntimeWarning")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ["normal", "one row", "constant row", "large"])
@pytest.mark.parametrize("function", ["softmax", "stable_softmax", "log_softmax", "stable_log_softmax"])
@pytest.mark.parametrize("name", BACKENDS)
def test_softmax_functions(name, function, case, dtype):
    a = backend(name)
    Z = logits(case, dtype)
    got = run_in(a, dtype, lambda: a.to_numpy(a.softmax_function(function)(a.array(Z, dtype))))
    exact = symbolic.RowFunction(function, Z.shape[1]).value(Z)
    if case == "large" and dtype == "float32" and not function.startswith("stable"):
        # exp(z) overflows float32 beyond z = 88.7: the unstable forms are not meant for this.
        # Documented, not excused silently: the result is non-finite, the stable forms are exact.
        assert not np.isfinite(got[1]).all() and np.isfinite(np.delete(got, 1, axis=0)).all()
        return
    assert_exact(got, exact, dtype, f"{name} {function} ({case})", point=Z)


# ----------------------------------------------------------------------------------- losses

LOSSES = ["SquaredError", "CrossEntropy", "SoftmaxCrossEntropy", "LogisticCrossEntropy", "NegativeLogLikelihood",
          "AbsoluteError"]


def loss_points(loss: str, targets: str, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    N, K = 5, 4
    raw = rng.normal(0, 2, (N, K))
    if loss in ("CrossEntropy", "NegativeLogLikelihood"):  # these take probabilities
        e = np.exp(raw - raw.max(axis=1, keepdims=True))
        Y = e / e.sum(axis=1, keepdims=True)
        Y[0, 0] = 1e-6  # a small probability: log and 1/y are steep there
    else:
        Y = raw
        Y[0, :] = [30.0, -30.0, 12.0, -12.0]  # large logits
    T = np.eye(K)[rng.integers(0, K, N)] if targets == "one-hot" else rng.dirichlet(np.ones(K), N)
    return on_dtype(Y, dtype), on_dtype(T, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("targets", ["one-hot", "soft"])
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("name", BACKENDS)
def test_loss_value_and_gradient(name, loss, targets, dtype):
    a = backend(name)
    Y, T = loss_points(loss, targets, dtype)
    fn = a.loss_function(loss)
    value = run_in(a, dtype, lambda: a.to_numpy(fn(a.array(Y, dtype), a.array(T, dtype))).reshape(()))
    grad = run_in(a, dtype, lambda: a.to_numpy(fn.gradient(a.array(Y, dtype), a.array(T, dtype))))
    exact = symbolic.Loss(loss, Y.shape[1])
    assert_exact(value, np.array(exact.value(Y, T), dtype=object), dtype, f"{name} {loss} value ({targets})")
    assert_exact(grad, exact.gradient(Y, T), dtype, f"{name} {loss} gradient ({targets})", point=Y, skip=(Y == T))


# ----------------------------------------------------------------------------------- layers

LAYERS = ["Linear", "ReLU", "Sigmoid", "HyperbolicTangent", "LeakyReLU(alpha=0.1)", "AllReLU(alpha=0.3)",
          "ELU(alpha=0.1)", "SReLU(al=0.125, tl=-0.25, ar=0.375, tr=0.5)", "Softmax", "LogSoftmax",
          "BatchNormalization"]


def layer_case(layer: str, case: str, dtype: str):
    N = {"batch": 6, "one sample": 1, "large": 5, "constant column": 6, "nearly constant column": 6}[case]
    D, K = 5, 4
    bn = layer == "BatchNormalization"
    sc = build_scenario(name="component", layers=layer, sizes=f"{D}" if bn else f"{D},{K}",
                        optimizers="GradientDescent", init_weights=None if bn else "XavierNormal",
                        loss="SquaredError", lr=0.1, batch_size=N, steps=1, dtype=dtype, seed=2)
    state = initial_state(sc)
    rng = np.random.default_rng(17)
    X = rng.normal(0, 1, (N, D)) * (20 if case == "large" else 1)
    if bn:
        state["gamma1"] = on_dtype(rng.uniform(0.5, 1.5, D), dtype)
        state["beta1"] = on_dtype(rng.normal(0, 0.5, D), dtype)
    if case == "constant column":
        X[:, 1] = 0.625
    if case == "nearly constant column":
        X[:, 1] = 3.0 + rng.normal(0, 1e-3, N)
    DY = rng.normal(0, 1, (N, D if bn else K))
    return sc, state, on_dtype(X, dtype), on_dtype(DY, dtype)


def exact_layer(layer: str, state, X, DY) -> dict:
    kind = layer.split("(")[0]
    out = {}
    if kind == "BatchNormalization":
        Y, Z = symbolic.BatchNorm(X.shape[0]).forward(X, state["gamma1"], state["beta1"])
        DX, Dgamma, Dbeta, DZ = symbolic.BatchNorm(X.shape[0]).vjp(X, state["gamma1"], DY)
        return {"Y": Y, "Z1": Z, "DZ1": DZ, "DX1": DX, "Dgamma1": Dgamma, "Dbeta1": Dbeta}
    Z = symbolic.linear_forward(X, state["W1"], state["b1"])
    if kind == "Linear":
        Y, DZ = Z, DY
    elif kind in ("Softmax", "LogSoftmax"):
        f = symbolic.RowFunction("softmax" if kind == "Softmax" else "log_softmax", Z.shape[1])
        Y, DZ = f.value(Z), f.vjp(Z, DY)
        out.update({"Z1": Z, "DZ1": DZ})
    else:
        args = ACTIVATIONS[kind]
        act = symbolic.Activation(kind, args)
        Y, DZ = act.value(Z), DY * act.derivative(Z)
        out.update({"Z1": Z, "DZ1": DZ})
        if kind == "SReLU":
            out["Dsrelu1"] = act.param_gradients(Z, DY, [args[p] for p in ("al", "tl", "ar", "tr")])
    DX, DW, Db = symbolic.linear_vjp(X, state["W1"], DZ)
    out.update({"Y": Y, "DX1": DX, "DW1": DW, "Db1": Db})
    return out


def bn_condition(X: np.ndarray) -> float:
    """max |x| / sqrt(var + eps) over the columns: how much rounding in x - mean is amplified."""
    return float(max(1.0, np.max(np.max(np.abs(X), axis=0) / np.sqrt(np.var(X, axis=0) + 1e-7))))


CASES = ["batch", "one sample", "large", "constant column", "nearly constant column"]

# Measured defects of the released backends (docs/findings.md; tests/test_findings.py pins the
# behaviour). Strict: when a release fixes one, its test passes and this list must shrink.
KNOWN = {
    ("tensorflow", "AllReLU(alpha=0.3)", "large", "float64"):
        "nerva-tensorflow 1.0.0 rounds AllReLU's alpha to float32 in float64 runs "
        "(tf.cast of a Python float goes through float32): DW off by 5e-7 relative (docs/findings.md)",
}


LAYER_CASES = [(layer, case) for layer in LAYERS for case in CASES
               if layer == "BatchNormalization" or "column" not in case]  # columns matter under BN only


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layer,case", LAYER_CASES)
@pytest.mark.parametrize("name", BACKENDS)
def test_layer_feedforward_and_every_gradient(name, layer, case, dtype, request):
    if (name, layer, case, dtype) in KNOWN:
        request.applymarker(pytest.mark.xfail(strict=True, reason=KNOWN[(name, layer, case, dtype)]))
    a = adapters.load(name) if adapters.why_unavailable(name) is None else backend(name)
    sc, state, X, DY = layer_case(layer, case, dtype)
    a.build(sc, state)
    got = a.backward(X, DY)
    exact = exact_layer(layer, state, X, DY)
    condition = bn_condition(X) if layer == "BatchNormalization" else 1.0
    Z = got.get("Z1")
    on_kink = None
    if Z is not None and layer.split("(")[0] in ACTIVATIONS:
        kinks = symbolic.Activation(layer.split("(")[0], ACTIVATIONS[layer.split("(")[0]]).kinks()
        on_kink = np.logical_or.reduce([Z == float(k) for k in kinks]) if kinks else None
    for key, value in exact.items():
        skip = on_kink if key == "DZ1" else None
        assert_exact(got[key], value, dtype, f"{name} {layer} {key} ({case})", condition=condition, skip=skip)
