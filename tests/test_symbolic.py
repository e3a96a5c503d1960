"""The exact oracle tested itself (harness.oracle.symbolic, adapters.sympy_oracle).

Two independent references:

- float64 automatic differentiation: every component's float64 torch transcription
  (harness.oracle.transcription, checked element by element against the SymPy definitions in
  tests/test_autodiff_oracle.py; not the Nerva code, not the symbolic derivation), differentiated
  by torch.autograd;
- high-precision central finite differences (mpmath at 50 digits, h = 1e-20) of the oracle's own
  forward ``value`` functions: this checks the derivatives against the forward definitions at
  ~1e-30, far beyond float64.

Plus full-network oracle traces against torch.autograd of that transcription's forward pass,
the one-sided derivatives at the kinks, and the stable softmax's shift-invariance.
"""

from __future__ import annotations

import mpmath
import numpy as np
import pytest
import sympy as sp

torch = pytest.importorskip("torch")

from adapters.sympy_oracle import SympyOracle  # noqa: E402
from harness.core.components import BN_EPSILON  # noqa: E402
from harness.oracle import definitions as defs, exact as num, symbolic as S, transcription  # noqa: E402
from harness.judge.compare import key_name, tensor_order  # noqa: E402
from harness.spec.data import batches  # noqa: E402
from harness.spec.scenario import DataSpec, build_scenario  # noqa: E402
from harness.spec.state import initial_state  # noqa: E402

from exact import loss_point  # noqa: E402

pytestmark = pytest.mark.symbolic  # the oracle's own tests run with the component suite

FD_DPS, FD_H = 50, mpmath.mpf("1e-20")
FD_RTOL = 1e-25  # finite differences at 50 digits vs the oracle evaluated at 50 digits
AD_RTOL = 1e-11  # float64 autodiff vs the exact values (components)
NET_RTOL = 1e-10  # float64 autodiff vs the exact values (whole networks)


# -- helpers ------------------------------------------------------------------------------------

def close(actual, expected, rtol, atol=0.0):
    """Tensor-wise relative error: max |a - e| <= rtol * max |e| + atol (exact or float arrays)."""
    a = np.asarray(num.to_float64(actual) if _is_obj(actual) else actual, dtype=np.float64)
    e = np.asarray(num.to_float64(expected) if _is_obj(expected) else expected, dtype=np.float64)
    assert a.shape == e.shape, (a.shape, e.shape)
    err = float(np.max(np.abs(a - e))) if a.size else 0.0
    bound = rtol * (float(np.max(np.abs(e))) if e.size else 0.0) + atol
    assert err <= bound, f"error {err:.3e} > {bound:.3e}"


def _is_obj(a):
    return isinstance(a, np.ndarray) and a.dtype == object or isinstance(a, mpmath.mpf)


def mp_close(actual, expected, rtol=FD_RTOL):
    """High-precision comparison of object arrays of mpf (no rounding to float64)."""
    a, e = num.exact(actual).reshape(-1), num.exact(expected).reshape(-1)
    with mpmath.workdps(FD_DPS):
        scale = max([abs(v) for v in e] + [mpmath.mpf(1e-300)])
        err = max([abs(x - y) for x, y in zip(a, e)] + [mpmath.mpf(0)])
        assert err <= rtol * scale, f"error {mpmath.nstr(err, 5)} > {rtol} * {mpmath.nstr(scale, 5)}"


def fd_gradient(fun, A):
    """Central differences of the scalar fun(A) in every element of A, at FD_DPS digits."""
    A = num.exact(A)
    G = np.empty(A.shape, dtype=object)
    with mpmath.workdps(FD_DPS):
        for idx in np.ndindex(A.shape):
            plus, minus = A.copy(), A.copy()
            plus[idx] = A[idx] + FD_H
            minus[idx] = A[idx] - FD_H
            G[idx] = (fun(plus) - fun(minus)) / (2 * FD_H)
    return G


def weighted_sum(W, F):
    """sum W * F at FD_DPS digits (a scalar loss for vector-Jacobian products)."""
    with mpmath.workdps(FD_DPS):
        return mpmath.fsum(w * f for w, f in zip(num.exact(W).reshape(-1), num.exact(F).reshape(-1)))


def t(a, grad=False):
    return torch.tensor(np.asarray(a, dtype=np.float64), dtype=torch.float64, requires_grad=grad)


def away_from(values, points, margin=1e-3):
    """Shift elements within ``margin`` of a kink away from it (keeps the test off the kinks)."""
    v = np.array(values, dtype=np.float64)
    for p in points:
        near = np.abs(v - p) < margin
        v[near] = p + 2 * margin
    return v


# -- the float64 forward definitions: the one torch transcription (harness.oracle.transcription) --

def t_row(name, z):
    return transcription.row_function(torch, name.replace("stable_", ""), z)


# -- numbers --------------------------------------------------------------------------------------

def test_exact_conversion_and_rounding_back():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((3, 4))
    E = num.exact(a)
    assert E.dtype == object and E.shape == (3, 4)
    assert all(num.rational(e) == sp.Rational(float(v)) for e, v in zip(E.ravel(), a.ravel()))
    assert np.array_equal(num.to_float64(E), a)  # exact both ways
    f32 = rng.standard_normal(5).astype(np.float32)
    assert np.array_equal(num.to_float64(num.exact(f32)), f32.astype(np.float64))
    assert num.rational(num.exact(0.1)[()]) != sp.Rational(1, 10)  # the binary value, not 1/10
    assert num.exact(2.5).shape == () and num.to_float64(num.exact(2.5)) == 2.5
    # epsilon: the exact value of the binary64 float BN_EPSILON
    assert defs.EPSILON == sp.Rational(BN_EPSILON) and num.rational(BN_EPSILON) == defs.EPSILON
    # rounding to nearest, once
    with mpmath.workdps(60):
        x = mpmath.mpf(1) + mpmath.mpf(2) ** -53 + mpmath.mpf(2) ** -80  # just above the midpoint
    assert num.to_float64(np.array([x], dtype=object))[0] == 1 + 2.0 ** -52
    dps = mpmath.mp.dps
    S.Activation("Sigmoid", {}).value(a)
    assert mpmath.mp.dps == dps  # precision set locally only


# -- activations ----------------------------------------------------------------------------------

ACTIVATIONS = [
    ("ReLU", {}),
    ("Sigmoid", {}),
    ("HyperbolicTangent", {}),
    ("LeakyReLU", {"alpha": 0.1}),
    ("LeakyReLU", {"alpha": 2.0}),  # max(alpha x, x) with alpha > 1: the branches swap
    ("AllReLU", {"alpha": 0.3}),
    ("ELU", {"alpha": 0.5}),
]


@pytest.mark.parametrize("kind,args", ACTIVATIONS, ids=[f"{k}{v}" for k, v in ACTIVATIONS])
def test_activation_against_autodiff_and_finite_differences(kind, args):
    rng = np.random.default_rng(1)
    Z = away_from(2 * rng.standard_normal((4, 5)), [0.0])
    DY = rng.standard_normal(Z.shape)
    act = S.Activation(kind, args)
    z = t(Z, grad=True)
    y = transcription.activation(torch, kind, args, z)
    (y * t(DY)).sum().backward()
    close(act.value(Z), y.detach().numpy(), AD_RTOL)
    close(act.vjp(Z, DY), z.grad.numpy(), AD_RTOL)
    close(act.derivative(Z), torch.autograd.functional.jacobian(
        lambda u: transcription.activation(torch, kind, args, u).sum(), t(Z)).numpy(), AD_RTOL)
    # elementwise central differences of the oracle's own forward
    with mpmath.workdps(FD_DPS):
        Ze = num.exact(Z)
        plus = np.vectorize(lambda v: v + FD_H, otypes=[object])(Ze)
        minus = np.vectorize(lambda v: v - FD_H, otypes=[object])(Ze)
        fd = (act.value(plus) - act.value(minus)) / (2 * FD_H)
        mp_close(act.derivative(Ze), fd)


def test_srelu_values_derivative_and_parameter_gradients():
    rng = np.random.default_rng(2)
    p = np.array([0.2, -0.3, 0.4, 0.5])
    Z = away_from(rng.standard_normal((5, 4)), [p[1], p[3]])
    DY = rng.standard_normal(Z.shape)
    act = S.Activation("SReLU", {"al": 0.0, "tl": 0.0, "ar": 0.0, "tr": 1.0})  # srelu= overrides
    z, tp = t(Z, grad=True), t(p, grad=True)
    y = transcription.activation(torch, "SReLU", {}, z, tp)
    (y * t(DY)).sum().backward()
    close(act.value(Z, srelu=p), y.detach().numpy(), AD_RTOL)
    close(act.vjp(Z, DY, srelu=p), z.grad.numpy(), AD_RTOL)
    close(act.param_gradients(Z, DY, p), tp.grad.numpy(), AD_RTOL)
    assert [float(k) for k in act.kinks(srelu=p)] == [-0.3, 0.5]
    # finite differences: in x elementwise, in the four parameters on sum DY * f
    with mpmath.workdps(FD_DPS):
        Ze = num.exact(Z)
        fd = (act.value(np.vectorize(lambda v: v + FD_H, otypes=[object])(Ze), srelu=p)
              - act.value(np.vectorize(lambda v: v - FD_H, otypes=[object])(Ze), srelu=p)) / (2 * FD_H)
        mp_close(act.derivative(Ze, srelu=p), fd)
    fd_p = fd_gradient(lambda q: weighted_sum(DY, act.value(Z, srelu=q)), p)
    mp_close(act.param_gradients(Z, DY, p), fd_p)


def test_one_sided_derivatives_at_the_kinks():
    def pair(act, point, srelu=None):
        return tuple(float(v) for v in act.one_sided(point, srelu=srelu))

    assert pair(S.Activation("ReLU", {}), 0.0) == (0.0, 1.0)
    assert pair(S.Activation("LeakyReLU", {"alpha": 0.1}), 0.0) == (0.1, 1.0)
    assert pair(S.Activation("LeakyReLU", {"alpha": 2.0}), 0.0) == (1.0, 2.0)
    assert pair(S.Activation("AllReLU", {"alpha": 0.3}), 0.0) == (0.3, 1.0)
    assert pair(S.Activation("ELU", {"alpha": 0.1}), 0.0) == (0.1, 1.0)
    assert pair(S.Activation("ELU", {"alpha": 1.0}), 0.0) == (1.0, 1.0)  # a differentiable breakpoint
    srelu = S.Activation("SReLU", {"al": 0.125, "tl": -0.25, "ar": 0.375, "tr": 0.5})
    assert pair(srelu, -0.25) == (0.125, 1.0)
    assert pair(srelu, 0.5) == (1.0, 0.375)
    assert pair(srelu, 0.1) == (1.0, 1.0)  # not a kink
    assert pair(srelu, 0.0, srelu=[0.5, 0.0, 2.0, 1.0]) == (0.5, 1.0)
    assert pair(S.Activation("Sigmoid", {}), 0.0) == (0.25, 0.25)
    # the value used exactly at a kink is the right-hand derivative
    assert float(S.Activation("ReLU", {}).derivative(np.array([0.0]))[0]) == 1.0
    assert float(S.Activation("ELU", {"alpha": 0.1}).derivative(np.array([0.0]))[0]) == 1.0
    d = srelu.derivative(np.array([-0.25, 0.5, -1.0, 0.0, 2.0]))
    assert [float(v) for v in d] == [1.0, 0.375, 0.125, 1.0, 0.375]
    g = srelu.param_gradients(np.array([-0.25]), np.array([1.0]), [0.125, -0.25, 0.375, 0.5])
    assert [float(v) for v in g] == [0.0, 0.0, 0.0, 0.0]  # the middle branch, right of tl
    assert [float(k) for k in S.Activation("ReLU", {}).kinks()] == [0.0]
    assert S.Activation("Sigmoid", {}).kinks() == []
    # AbsoluteError at y = t: one-sided -1 and +1, the gradient used there is sign(0) = 0
    loss = S.Loss("AbsoluteError", 1)
    assert tuple(float(v) for v in loss.one_sided(0.5, 0.5)) == (-1.0, 1.0)
    assert tuple(float(v) for v in loss.one_sided(0.7, 0.5)) == (1.0, 1.0)
    assert float(S.Loss("AbsoluteError", 2).gradient(np.array([[0.5, 1.0]]), np.array([[0.5, 0.0]]))[0, 0]) == 0.0


# -- row functions ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", defs.ROW_FUNCTIONS)
def test_row_function_against_autodiff_and_finite_differences(name):
    rng = np.random.default_rng(3)
    Z = 3 * rng.standard_normal((3, 4))
    DY = rng.standard_normal(Z.shape)
    f = S.RowFunction(name, 4)
    z = t(Z, grad=True)
    y = t_row(name, z)
    (y * t(DY)).sum().backward()
    close(f.value(Z), y.detach().numpy(), AD_RTOL)
    close(f.vjp(Z, DY), z.grad.numpy(), AD_RTOL)
    J = torch.autograd.functional.jacobian(lambda u: t_row(name, u.reshape(1, -1)).reshape(-1), t(Z[0]))
    close(f.jacobian(Z[0]), J.numpy(), AD_RTOL)
    mp_close(f.vjp(Z, DY), fd_gradient(lambda A: weighted_sum(DY, f.value(A)), Z))
    # huge logits: no overflow in mpmath, the stable and plain forms agree
    big = Z + 800.0
    close(f.value(big), S.RowFunction(name.replace("stable_", ""), 4).value(big), 1e-30)


@pytest.mark.parametrize("name", ["stable_softmax", "stable_log_softmax"])
def test_stable_forms_do_not_depend_on_the_shift(name):
    f = S.RowFunction(name, 3)
    for e in f.exprs:
        assert f.shift in e.free_symbols
        assert sp.simplify(sp.diff(e, f.shift)) == 0
    plain = S.RowFunction(name.replace("stable_", ""), 3)
    assert all(sp.simplify(a - b) == 0 for a, b in zip(f.exprs, plain.exprs))


def test_jacobians_through_nodes_equal_direct_differentiation():
    """The chain rule over the forward's intermediate nodes gives sp.diff of the substituted form."""
    rng = np.random.default_rng(4)
    bn = S.BatchNorm(3)
    x = rng.standard_normal(3)
    direct = [[sp.diff(z, xj) for xj in bn.symbols] for z in bn.z_exprs]
    subs = {s: num.rational(v) for s, v in zip(bn.symbols, x)}
    subs[bn.epsilon_symbol] = defs.EPSILON
    with mpmath.workdps(FD_DPS):
        want = np.array([[num.from_sympy(e.subs(subs)) for e in row] for row in direct], dtype=object)
        got = np.array(bn.model.graph.jacobian([*num.exact(x), num.mpf(defs.EPSILON)]), dtype=object)
        mp_close(got, want, 1e-35)
    f = S.RowFunction("softmax", 3)
    z = rng.standard_normal(3)
    direct = [[sp.diff(e, zj) for zj in f.symbols] for e in f.exprs]
    subs = {s: num.rational(v) for s, v in zip(f.symbols, z)}
    with mpmath.workdps(FD_DPS):
        want = np.array([[num.from_sympy(e.subs(subs)) for e in row] for row in direct], dtype=object)
        mp_close(f.jacobian(z), want, 1e-35)


# -- losses -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("targets", ["onehot", "soft"])
@pytest.mark.parametrize("name", [*defs.LOSSES, "AbsoluteError"])  # Nerva's own and the built-in custom one
def test_loss_against_autodiff_and_finite_differences(name, targets):
    K = 3
    Y, T = loss_point(name, targets, seed=5, N=4, K=K)
    loss = S.Loss(name, K)
    y = t(Y, grad=True)
    value = transcription.loss_value(torch, name, y, t(T))
    value.backward()
    close(np.array(loss.value(Y, T), dtype=object), value.detach().numpy(), AD_RTOL)
    close(loss.gradient(Y, T), y.grad.numpy(), AD_RTOL)
    mp_close(loss.gradient(Y, T), fd_gradient(lambda A: loss.value(A, T), Y))


# -- BatchNormalization ------------------------------------------------------------------------------

def test_batchnorm_against_autodiff_and_finite_differences():
    rng = np.random.default_rng(6)
    N, D = 5, 3
    X = rng.standard_normal((N, D)) * np.array([1.0, 0.01, 3.0]) + 0.5
    gamma, beta = rng.standard_normal(D), rng.standard_normal(D)
    DY = rng.standard_normal((N, D))
    bn = S.BatchNorm(N)
    x, g, b = t(X, True), t(gamma, True), t(beta, True)
    z, y = transcription.batch_normalization(torch, x, g, b)
    z.retain_grad()
    (y * t(DY)).sum().backward()
    Y, Z = bn.forward(X, gamma, beta)
    close(Y, y.detach().numpy(), AD_RTOL)
    close(Z, z.detach().numpy(), AD_RTOL)
    DX, Dgamma, Dbeta, DZ = bn.vjp(X, gamma, DY)
    close(DX, x.grad.numpy(), AD_RTOL)
    close(Dgamma, g.grad.numpy(), AD_RTOL)
    close(Dbeta, b.grad.numpy(), AD_RTOL)
    close(DZ, z.grad.numpy(), AD_RTOL)
    mp_close(DX, fd_gradient(lambda A: weighted_sum(DY, bn.forward(A, gamma, beta)[0]), X))
    mp_close(Dgamma, fd_gradient(lambda G: weighted_sum(DY, bn.forward(X, G, beta)[0]), gamma))
    mp_close(Dbeta, fd_gradient(lambda B: weighted_sum(DY, bn.forward(X, gamma, B)[0]), beta))
    assert S.BatchNorm(N).epsilon == defs.EPSILON


# -- Linear and the optimizers ------------------------------------------------------------------------

def test_linear_against_autodiff_and_finite_differences():
    rng = np.random.default_rng(7)
    X, W, b = rng.standard_normal((4, 3)), rng.standard_normal((5, 3)), rng.standard_normal(5)
    DZ = rng.standard_normal((4, 5))
    x, w, bb = t(X, True), t(W, True), t(b, True)
    z = x @ w.T + bb
    (z * t(DZ)).sum().backward()
    close(S.linear_forward(X, W, b), z.detach().numpy(), AD_RTOL)
    DX, DW, Db = S.linear_vjp(X, W, DZ)
    close(DX, x.grad.numpy(), AD_RTOL)
    close(DW, w.grad.numpy(), AD_RTOL)
    close(Db, bb.grad.numpy(), AD_RTOL)
    mp_close(DX, fd_gradient(lambda A: weighted_sum(DZ, S.linear_forward(A, W, b)), X))
    mp_close(DW, fd_gradient(lambda A: weighted_sum(DZ, S.linear_forward(X, A, b)), W))
    mp_close(Db, fd_gradient(lambda A: weighted_sum(DZ, S.linear_forward(X, W, A)), b))


def test_optimizer_updates():
    rng = np.random.default_rng(8)
    x, Dx, v = rng.standard_normal(6), rng.standard_normal(6), rng.standard_normal(6)
    eta, mu = 0.05, 0.9
    with mpmath.workdps(FD_DPS):
        X, D, V, e, m = num.exact(x), num.exact(Dx), num.exact(v), num.mpf(eta), num.mpf(mu)
        v_new = np.array([m * a - e * d for a, d in zip(V, D)], dtype=object)
        want = {
            "GradientDescent": (np.array([a - e * d for a, d in zip(X, D)], dtype=object), None),
            "Momentum": (np.array([a + w for a, w in zip(X, v_new)], dtype=object), v_new),
            "Nesterov": (np.array([a + m * w - e * d for a, w, d in zip(X, v_new, D)], dtype=object), v_new),
        }
        for name, (x_want, v_want) in want.items():
            x_got, v_got = S.optimizer_update(name, mu, x, Dx, None if name == "GradientDescent" else v, eta)
            mp_close(x_got, x_want, 1e-45)
            if v_want is None:
                assert v_got is None
            else:
                mp_close(v_got, v_want, 1e-45)
    # starting from v = 0 (None), Momentum's first step is gradient descent
    x1, v1 = S.optimizer_update("Momentum", mu, x, Dx, None, eta)
    close(x1, x - eta * Dx, 1e-15)
    assert defs.optimizer_definition("GradientDescent")[1] is None
    assert defs.optimizer_definition("Nesterov")[0].free_symbols >= {defs.OPTIMIZER_SYMBOLS.x, defs.OPTIMIZER_SYMBOLS.v, defs.OPTIMIZER_SYMBOLS.Dx, defs.OPTIMIZER_SYMBOLS.eta, defs.OPTIMIZER_SYMBOLS.mu}


# -- whole networks: SympyOracle.step against torch.autograd of the transcription's forward pass ----

def torch_reference(scenario, state, data, lr):
    """Traces of Nerva's training step in torch (float64, autograd of the transcription)."""
    params = {k: v.copy() for k, v in state.items() if not k.endswith(".v")}
    velocity = {k: v.copy() for k, v in state.items() if k.endswith(".v")}
    traces = []
    for X, T in data:
        P = {k: t(v, grad=True) for k, v in params.items()}
        inputs, zs = [], {}
        h = t(X, grad=True)
        for i, spec in enumerate(scenario.layers, start=1):
            if h.grad_fn is not None:
                h.retain_grad()
            inputs.append(h)
            if spec.kind == "BatchNormalization":
                z, h = transcription.batch_normalization(torch, h, P[f"gamma{i}"], P[f"beta{i}"])
            else:
                z = h @ P[f"W{i}"].T + P[f"b{i}"]
                if spec.kind == "Linear":
                    h = z
                elif spec.kind in ("Softmax", "LogSoftmax"):
                    h = t_row("softmax" if spec.kind == "Softmax" else "log_softmax", z)
                elif spec.kind == "SReLU":
                    h = transcription.activation(torch, "SReLU", {}, z, P[f"srelu{i}"])
                else:
                    h = transcription.activation(torch, spec.kind, spec.arg, z)
            if spec.kind != "Linear":
                z.retain_grad()
                zs[i] = z
        Y = h
        Y.retain_grad()
        Tt = t(T)
        loss = transcription.loss_value(torch, scenario.loss, Y, Tt)
        (loss / X.shape[0]).backward()
        tr = {"X": X, "T": T, "Y": Y.detach().numpy(), "DY": Y.grad.numpy(), "loss": loss.detach().numpy()}
        for i, spec in enumerate(scenario.layers, start=1):
            tr[f"X{i}"] = inputs[i - 1].detach().numpy()
            tr[f"DX{i}"] = inputs[i - 1].grad.numpy()
            if i in zs:
                tr[f"Z{i}"], tr[f"DZ{i}"] = zs[i].detach().numpy(), zs[i].grad.numpy()
        grads = {"W": "DW", "b": "Db", "gamma": "Dgamma", "beta": "Dbeta", "srelu": "Dsrelu"}
        for i, spec in enumerate(scenario.layers, start=1):
            for param, opt in spec.optimizers:
                key = f"{param}{i}"
                g = P[key].grad.numpy()
                tr[f"{grads[param]}{i}"] = g
                if opt.name == "GradientDescent":
                    params[key] = params[key] - lr * g
                else:
                    v = opt.mu * velocity.get(key + ".v", 0.0) - lr * g
                    velocity[key + ".v"] = v
                    params[key] = params[key] + (v if opt.name == "Momentum" else opt.mu * v - lr * g)
                tr[key] = params[key]
        traces.append(tr)
    return traces


NETWORKS = {
    "relu-bn-softmax-xent": dict(layers="ReLU;BatchNormalization;Softmax", sizes="5,6,4", loss="CrossEntropy"),
    "elu-linear-abs": dict(layers="ELU(alpha=0.5);Linear", sizes="5,6,4", loss="AbsoluteError",
                           data=DataSpec(targets="real")),
    "srelu-logsoftmax-sq": dict(layers="SReLU(al=0.2, tl=-0.3, ar=0.4, tr=0.5);LogSoftmax", sizes="5,6,4",
                                loss="SquaredError"),
    "sigmoid-tanh-linear-logistic": dict(layers="Sigmoid;HyperbolicTangent;Linear", sizes="5,6,6,4",
                                         loss="LogisticCrossEntropy", data=DataSpec(targets="soft")),
    "leaky-allrelu-linear-softmaxxent": dict(layers="LeakyReLU(alpha=0.1);AllReLU(alpha=0.3);Linear",
                                             sizes="5,6,6,4", loss="SoftmaxCrossEntropy"),
    "momentum-nesterov-bn-nll": dict(layers="ReLU;BatchNormalization;Softmax", sizes="5,6,4",
                                     loss="NegativeLogLikelihood", steps=2,
                                     optimizers="Momentum(0.9);Nesterov(mu=0.5);W=Momentum(0.8),b=Nesterov(0.75)"),
    "nesterov-srelu-soft": dict(layers="SReLU(al=0.1, tl=-0.5, ar=0.2, tr=0.25);Linear", sizes="5,6,4",
                                loss="SquaredError", steps=2, optimizers="Nesterov(0.9)",
                                data=DataSpec(targets="soft")),
}


def network(name, **changes):
    spec = dict(optimizers="GradientDescent", init_weights="XavierNormal", lr=0.1, batch_size=7, steps=1)
    spec.update(NETWORKS[name])
    spec.update(changes)
    return build_scenario(name=name, **spec)


@pytest.mark.parametrize("name", list(NETWORKS))
def test_oracle_step_against_autodiff(name):
    sc = network(name)
    state, data = initial_state(sc), batches(sc)
    oracle = SympyOracle()
    oracle.build(sc, state)
    expected = torch_reference(sc, state, data, sc.lr)
    keys = {key_name(k) for k in tensor_order(sc)}
    for step, ((X, T), want) in enumerate(zip(data, expected)):
        got = oracle.step(X, T, sc.lr)
        assert set(got) == keys == set(want), (step, set(got) ^ keys)
        assert set(oracle.exact) == set(got) and set(oracle.dtypes) == set(got)
        assert all(v == "exact" for v in oracle.dtypes.values())
        assert all(v.dtype == np.float64 for v in got.values()) and got["loss"].shape == ()
        for key in got:
            assert got[key].shape == np.shape(want[key]), key
            try:
                close(got[key], want[key], NET_RTOL, atol=1e-15)
            except AssertionError as e:
                raise AssertionError(f"step {step} {key}: {e}") from None
        assert np.array_equal(num.to_float64(oracle.exact["W1"]), got["W1"])


def test_state_round_trip_and_velocities():
    sc = network("momentum-nesterov-bn-nll")
    state, data = initial_state(sc), batches(sc)
    oracle = SympyOracle()
    oracle.build(sc, state)  # no velocities given: zero
    oracle.step(*data[0], sc.lr)
    st = oracle.get_state()
    assert {k for k in st if k.endswith(".v")} == {"W1.v", "b1.v", "gamma2.v", "beta2.v", "W3.v", "b3.v"}
    again = SympyOracle()
    again.build(sc, st)
    assert all(np.array_equal(again.get_state()[k], st[k]) for k in st)
    gd = network("relu-bn-softmax-xent")
    o = SympyOracle()
    o.build(gd, initial_state(gd))
    assert not any(k.endswith(".v") for k in o.get_state())


def test_trace_matches_a_nerva_backend():
    """Same keys, shapes and (float64 backend) values as nerva-numpy driven by the harness."""
    pytest.importorskip("nerva_numpy")
    import adapters

    sc = network("relu-bn-softmax-xent", dtype="float64")
    state, (X, T) = initial_state(sc), batches(sc)[0]
    backend = adapters.load("numpy")
    backend.build(sc, state)
    want = backend.step(X, T, sc.lr)
    oracle = SympyOracle()
    oracle.build(sc, state)
    got = oracle.step(X, T, sc.lr)
    assert set(got) == set(want)
    for key in want:
        close(got[key], want[key], 1e-12, atol=1e-15)
