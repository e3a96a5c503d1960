"""The float64 torch.autograd reference (adapters/autodiff_oracle.py) against nerva-numpy and by hand,
and its transcription (harness.oracle.transcription) against the SymPy definitions, element by element."""

import numpy as np
import pytest

import adapters
from adapters.autodiff_oracle import AutodiffOracle
from harness.judge.compare import key_name, tensor_order
from harness.core.components import LAYERS, LOSSES
from harness.spec.data import batches
from harness.spec.scenario import DataSpec, build_scenario
from harness.spec.state import initial_state

from exact import loss_point

pytest.importorskip("torch")

# Together: every layer kind, every loss, every optimizer (and a per-parameter optimizer).
SCENARIOS = {
    "relu-bn-softmax-ce": dict(
        layers="ReLU;BatchNormalization;Softmax", sizes="6,8,4",
        optimizers="Momentum(0.9);GradientDescent;Nesterov(0.5)", loss="CrossEntropy"),
    "leaky-allrelu-logsoftmax-se": dict(
        layers="LeakyReLU(alpha=0.1);AllReLU(alpha=0.3);LogSoftmax", sizes="5,7,6,4",
        optimizers="Nesterov(0.9);Momentum(0.5);GradientDescent", loss="SquaredError"),
    "sigmoid-tanh-linear-logistic": dict(
        layers="Sigmoid;HyperbolicTangent;Linear", sizes="6,7,5,3",
        optimizers="GradientDescent;Momentum(0.8);Nesterov(0.7)", loss="LogisticCrossEntropy",
        data=DataSpec("synthetic", "soft")),
    "srelu-softmax-nll": dict(
        layers="SReLU(al=0.05,tl=-0.3,ar=0.2,tr=0.4);Softmax", sizes="6,8,4",
        optimizers="Momentum(0.9);GradientDescent", loss="NegativeLogLikelihood"),
    "elu-bn-linear-absolute": dict(
        layers="ELU(alpha=0.5);BatchNormalization;Linear", sizes="6,8,3",
        optimizers="W=Nesterov(0.9),b=GradientDescent;Momentum(0.7);Momentum(0.5)", loss="AbsoluteError",
        data=DataSpec("synthetic", "real")),
    "bn-first-softmax-xent": dict(
        layers="BatchNormalization;ReLU;BatchNormalization;Linear", sizes="6,8,4",
        optimizers="Nesterov(0.5);Momentum(0.9);GradientDescent;Momentum(0.6)", loss="SoftmaxCrossEntropy"),
}


def scenario(name, dtype="float64", **changes):
    kw = dict(init_weights="XavierNormal", lr=0.05, batch_size=5, steps=3, dtype=dtype)
    kw.update(SCENARIOS[name])
    kw.update(changes)
    return build_scenario(name=name, **kw)


def test_scenarios_cover_every_component():
    kinds = {layer.kind for name in SCENARIOS for layer in scenario(name).layers}
    losses = {scenario(name).loss for name in SCENARIOS}
    opts = {o.name for name in SCENARIOS for layer in scenario(name).layers for _, o in layer.optimizers}
    assert kinds == set(LAYERS) and losses == set(LOSSES) and opts == {"GradientDescent", "Momentum", "Nesterov"}


def run_both(sc):
    """(per step: (oracle's trace, nerva-numpy's trace, the oracle's parameters before the step),
    the oracle, the numpy adapter) after running every step of ``sc`` in both."""
    state0 = initial_state(sc)
    oracle, numpy_ = AutodiffOracle(), adapters.load("numpy")
    oracle.build(sc, state0)
    numpy_.build(sc, state0)
    out = []
    for X, T in batches(sc):
        before = oracle.get_state()
        out.append((oracle.step(X, T, sc.lr), numpy_.step(X, T, sc.lr), before))
    return out, oracle, numpy_


def assert_away_from_kinks(sc, trace, before, margin=1e-9):
    """The libraries' one-sided derivatives may differ from autograd's exactly at a kink."""
    for i, layer in enumerate(sc.layers, start=1):
        for kink in LAYERS[layer.kind].kinks:
            at = kink.at if isinstance(kink.at, float) else before[f"srelu{i}"][["al", "tl", "ar", "tr"].index(kink.at)]
            assert np.min(np.abs(trace[f"Z{i}"] - at)) > margin, (sc.name, f"Z{i}", kink)
    if LOSSES[sc.loss].kinks:
        assert np.min(np.abs(trace["Y"] - trace["T"])) > margin, (sc.name, "Y - T")


# (a) the same keys as a Nerva backend's trace ---------------------------------------------
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", SCENARIOS)
def test_trace_keys_equal_numpy_backend(name, dtype):
    sc = scenario(name, dtype, steps=1)
    [(trace, theirs, _)], oracle, _ = run_both(sc)
    assert list(trace) == list(theirs)  # same keys, even in the same order
    assert {key_name(k) for k in tensor_order(sc)} | {"X", "T"} == set(trace)
    assert oracle.dtypes == {k: "float64" for k in trace}
    for key, value in trace.items():
        assert isinstance(value, np.ndarray) and value.dtype == np.float64, key
        assert value.shape == theirs[key].shape, key
    assert trace["loss"].shape == ()


# (b) float64 agreement with nerva-numpy, 3 steps -------------------------------------------
@pytest.mark.parametrize("name", SCENARIOS)
def test_agrees_with_numpy_backend_in_float64(name):
    sc = scenario(name)
    steps, _, _ = run_both(sc)
    for step, (mine, theirs, before) in enumerate(steps):
        assert_away_from_kinks(sc, mine, before)
        for key in theirs:
            np.testing.assert_allclose(mine[key], theirs[key], rtol=1e-9, atol=1e-12,
                                       err_msg=f"{name} step {step} {key}")


def test_state_round_trip_and_velocities_with_numpy_backend():
    sc = scenario("elu-bn-linear-absolute")
    _, oracle, numpy_ = run_both(sc)
    mine, theirs = oracle.get_state(), numpy_.get_state()
    assert list(mine) == list(theirs)  # W1.v (Nesterov) but no b1.v (GradientDescent)
    assert "W1.v" in mine and "b1.v" not in mine and "gamma2.v" in mine
    for key in theirs:
        np.testing.assert_allclose(mine[key], theirs[key], rtol=1e-9, atol=1e-12, err_msg=key)
    # set_state: velocities optional (missing = 0); values are copies, not views
    no_velocity = {k: v for k, v in mine.items() if not k.endswith(".v")}
    oracle.set_state(no_velocity)
    again = oracle.get_state()
    assert all(np.array_equal(again[k], mine[k]) for k in no_velocity)
    assert all(not again[k].any() for k in again if k.endswith(".v"))
    again["W1"][...] = 7.0
    assert not np.any(oracle.get_state()["W1"] == 7.0)
    with pytest.raises(ValueError, match="shape"):
        oracle.set_state({**mine, "W1": mine["W1"].T})


# (c) a hand-computed case ------------------------------------------------------------------
def test_linear_squared_error_by_hand():
    sc = build_scenario(name="linear-se", layers="Linear", sizes="3,2", optimizers="GradientDescent",
                        init_weights="XavierNormal", loss="SquaredError", lr=0.1, batch_size=4, steps=1,
                        dtype="float64")
    W = np.array([[0.5, -1.0, 2.0], [1.5, 0.25, -0.5]])
    b = np.array([0.1, -0.2])
    X = np.array([[1.0, 2.0, 3.0], [-1.0, 0.5, 0.0], [0.0, 0.0, 1.0], [2.0, -2.0, 0.5]])
    T = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    N = len(X)
    oracle = AutodiffOracle()
    oracle.build(sc, {"W1": W, "b1": b})
    trace = oracle.step(X, T, 0.1)
    Y = X @ W.T + b
    np.testing.assert_allclose(trace["Y"], Y, rtol=1e-15)
    np.testing.assert_allclose(trace["loss"], np.sum((Y - T) ** 2), rtol=1e-15)
    np.testing.assert_allclose(trace["DY"], 2 * (Y - T) / N, rtol=1e-15)
    DW = (2 / N) * (Y - T).T @ X
    Db = (2 / N) * (Y - T).sum(axis=0)
    np.testing.assert_allclose(trace["DW1"], DW, rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(trace["Db1"], Db, rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(trace["DX1"], (2 / N) * (Y - T) @ W, rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(trace["W1"], W - 0.1 * DW, rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(trace["b1"], b - 0.1 * Db, rtol=1e-14, atol=1e-15)
    assert set(trace) == {"X", "T", "Y", "DY", "loss", "X1", "DW1", "Db1", "DX1", "W1", "b1"}
    assert oracle.get_state().keys() == {"W1", "b1"}  # GradientDescent keeps no velocity


# (d) per-parameter optimizers: velocities follow the update rules ---------------------------
def test_per_parameter_momentum_and_nesterov():
    sc = build_scenario(name="per-param", layers="Linear", sizes="4,3", optimizers="W=Momentum(0.9),b=Nesterov(0.75)",
                        init_weights="XavierNormal", loss="SquaredError", lr=0.05, batch_size=5, steps=2,
                        data=DataSpec("synthetic", "real"), dtype="float64")
    oracle = AutodiffOracle()
    oracle.build(sc, initial_state(sc))
    state = oracle.get_state()
    W, b = state["W1"], state["b1"]
    vW, vb = np.zeros_like(W), np.zeros_like(b)
    assert not state["W1.v"].any() and not state["b1.v"].any()
    for X, T in batches(sc):
        trace = oracle.step(X, T, sc.lr)
        DW, Db = (2 / 5) * (X @ W.T + b - T).T @ X, (2 / 5) * (X @ W.T + b - T).sum(axis=0)
        np.testing.assert_allclose(trace["DW1"], DW, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(trace["Db1"], Db, rtol=1e-13, atol=1e-15)
        vW = 0.9 * vW - sc.lr * DW  # Momentum
        W = W + vW
        vb = 0.75 * vb - sc.lr * Db  # Nesterov
        b = b + 0.75 * vb - sc.lr * Db
        state = oracle.get_state()
        for key, want in {"W1": W, "W1.v": vW, "b1": b, "b1.v": vb}.items():
            np.testing.assert_allclose(state[key], want, rtol=1e-13, atol=1e-15, err_msg=key)
        np.testing.assert_array_equal(trace["W1"], state["W1"])
    assert vW.any() and vb.any()


# kink conventions: exactly at the kink, and the same as nerva-numpy's ------------------------
KINK_SLOPES = {  # activation at z = 0 (zero weights): f'(0) as the module docstring states
    "ReLU": 0.0,
    "LeakyReLU(alpha=0.1)": 0.1,
    "AllReLU(alpha=0.3)": 1.0,
    "ELU(alpha=0.5)": 0.5,
    "SReLU(al=0.05,tl=0,ar=0.2,tr=1)": 0.05,  # z = tl: the left piece
    "SReLU(al=0.05,tl=-1,ar=0.2,tr=0)": 0.2,  # z = tr: the right piece
}


@pytest.mark.parametrize("layer", KINK_SLOPES)
def test_kink_conventions(layer):
    sc = build_scenario(name="kink", layers=layer, sizes="3,4", optimizers="GradientDescent", init_weights="Zero",
                        loss="SquaredError", lr=0.1, batch_size=2, steps=1, dtype="float64")
    X = np.array([[1.0, -2.0, 0.5], [0.3, 0.0, -1.0]])
    T = np.array([[1.0, -1.0, 2.0, 0.5], [-0.5, 1.0, 0.0, 3.0]])
    state = initial_state(sc)
    oracle, numpy_ = AutodiffOracle(), adapters.load("numpy")
    oracle.build(sc, state)
    numpy_.build(sc, state)
    mine, theirs = oracle.step(X, T, sc.lr), numpy_.step(X, T, sc.lr)
    assert not mine["Z1"].any()  # every element exactly on the kink
    np.testing.assert_allclose(mine["DZ1"], KINK_SLOPES[layer] * mine["DY"], rtol=1e-15)
    if layer.startswith("SReLU"):
        al, tl, ar, tr = state["srelu1"]
        on_left = tl == 0
        want = [0.0, (1 - al) * mine["DY"].sum(), 0.0, 0.0] if on_left else [0.0, 0.0, 0.0, (1 - ar) * mine["DY"].sum()]
        np.testing.assert_allclose(mine["Dsrelu1"], want, rtol=1e-14, atol=1e-15)
    for key in theirs:
        np.testing.assert_allclose(mine[key], theirs[key], rtol=1e-12, atol=1e-15, err_msg=key)


def test_absolute_error_at_ties_has_zero_gradient():
    sc = build_scenario(name="tie", layers="Linear", sizes="2,3", optimizers="GradientDescent", init_weights="Zero",
                        loss="AbsoluteError", lr=0.1, batch_size=2, steps=1, dtype="float64")
    oracle = AutodiffOracle()
    oracle.build(sc, initial_state(sc))
    T = np.array([[0.0, 1.0, -2.0], [0.5, 0.0, 0.0]])
    trace = oracle.step(np.array([[1.0, 2.0], [3.0, 4.0]]), T, sc.lr)
    np.testing.assert_array_equal(trace["DY"], np.sign(0.0 - T) / 2)  # sign(0) = 0 at Y = T
    assert trace["loss"] == np.abs(T).sum()


# -- the transcription against the SymPy definitions, element by element -------------------------

TRANSCRIPTION_RTOL = 1e-13  # a float64 evaluation of a few operations against the exact value
TRANSCRIBED_ACTIVATIONS = [
    ("ReLU", {}), ("Sigmoid", {}), ("HyperbolicTangent", {}), ("LeakyReLU", {"alpha": 0.1}),
    ("LeakyReLU", {"alpha": 2.0}), ("AllReLU", {"alpha": 0.3}), ("ELU", {"alpha": 0.5}),
    ("SReLU", {"al": 0.2, "tl": -0.3, "ar": 0.4, "tr": 0.5}),
]


def _tensor(torch, a):
    return torch.tensor(np.asarray(a, dtype=np.float64), dtype=torch.float64)


def _close(got, want, rtol=TRANSCRIPTION_RTOL):
    """Every element of the transcription's value within ``rtol`` of the exact definition's."""
    from harness.oracle.exact import to_float64

    got = got.detach().numpy() if hasattr(got, "detach") else np.asarray(got)
    want = to_float64(want)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * 1e-3)


def _points(rng, shape, scale=2.0):
    """Real points, some exactly on the kinks (0, -0.3, 0.5) and some far out."""
    Z = scale * rng.standard_normal(shape)
    Z.reshape(-1)[:5] = [0.0, -0.3, 0.5, -30.0, 30.0]
    return Z


@pytest.mark.parametrize("kind,args", TRANSCRIBED_ACTIVATIONS, ids=[f"{k}{v}" for k, v in TRANSCRIBED_ACTIVATIONS])
def test_transcribed_activations_equal_the_definitions(kind, args):
    import torch

    from harness.core.components import SRELU_PARAMS
    from harness.oracle import symbolic, transcription

    Z = _points(np.random.default_rng(11), (6, 5))
    srelu = np.array([args[k] for k in SRELU_PARAMS]) if kind == "SReLU" else None
    got = transcription.activation(torch, kind, args, _tensor(torch, Z), None if srelu is None else _tensor(torch, srelu))
    _close(got, symbolic.Activation(kind, args).value(Z, srelu=srelu))


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_transcribed_row_functions_equal_the_definitions(name):
    import torch

    from harness.oracle import symbolic, transcription

    Z = _points(np.random.default_rng(12), (5, 4), scale=5.0)
    got = transcription.row_function(torch, name, _tensor(torch, Z))
    for form in (name, f"stable_{name}"):  # the plain and the stable definitions
        _close(got, symbolic.RowFunction(form, 4).value(Z))


@pytest.mark.parametrize("targets", ["onehot", "soft"])
@pytest.mark.parametrize("name", LOSSES)
def test_transcribed_losses_equal_the_definitions(name, targets):
    import torch

    from harness.oracle import symbolic, transcription

    K = 3
    Y, T = loss_point(name, targets, seed=13, N=5, K=K)
    got = transcription.loss_value(torch, name, _tensor(torch, Y), _tensor(torch, T))
    _close(got, np.array(symbolic.Loss(name, K).value(Y, T), dtype=object))


def test_transcribed_batch_normalization_equals_the_definition():
    import torch

    from harness.oracle import symbolic, transcription

    rng = np.random.default_rng(14)
    N, D = 6, 4
    X = rng.standard_normal((N, D)) * np.array([1.0, 0.01, 3.0, 1.0]) + 0.5
    X[:, 3] = 0.75  # a constant column: Z = 0 / sqrt(epsilon)
    gamma, beta = rng.standard_normal(D), rng.standard_normal(D)
    Z, Y = transcription.batch_normalization(torch, _tensor(torch, X), _tensor(torch, gamma), _tensor(torch, beta))
    Y_exact, Z_exact = symbolic.BatchNorm(N).forward(X, gamma, beta)
    _close(Z, Z_exact)
    _close(Y, Y_exact)


@pytest.mark.parametrize("name", ["GradientDescent", "Momentum", "Nesterov"])
def test_transcribed_optimizer_updates_equal_the_definitions(name):
    import torch

    from harness.oracle import symbolic, transcription

    rng = np.random.default_rng(15)
    x, Dx, v = rng.standard_normal(7), rng.standard_normal(7), rng.standard_normal(7)
    eta, mu = 0.05, 0.9
    p, vt = _tensor(torch, x), _tensor(torch, v)
    transcription.optimizer_update(name, mu, p, vt, _tensor(torch, Dx), eta)
    x_new, v_new = symbolic.optimizer_update(name, mu, x, Dx, None if name == "GradientDescent" else v, eta)
    _close(p, x_new)
    if v_new is not None:
        _close(vt, v_new)


def test_a_custom_piecewise_is_differentiated_piece_by_piece():
    """ELU's exp piece, not taken at a large z, overflows there (exp(800) = inf): the transcription
    evaluates each piece only where it is taken, so the gradient is the definition's (1, and
    alpha exp(z) on the other side) instead of autograd's 0 * inf = NaN, and the values are
    those of torch.where bit for bit."""
    import torch

    from harness.oracle import symbolic, transcription

    Z = np.concatenate([_points(np.random.default_rng(5), (40,)), [800.0, 710.0, -800.0, -1e-300, 0.0]])
    z = _tensor(torch, Z).requires_grad_(True)
    y = transcription.activation(torch, "ELU", {"alpha": 0.5}, z)
    y.sum().backward()
    assert torch.equal(y.detach(), torch.where(z > 0, z, 0.5 * (torch.exp(z) - 1)).detach())
    assert torch.isfinite(z.grad).all()
    off = Z != 0  # at the kink itself the transcription takes the left derivative (test_kink_conventions)
    _close(z.grad[off], symbolic.Activation("ELU", {"alpha": 0.5}).derivative(Z[off]))
    assert z.grad[~off].tolist() == [0.5, 0.5]
