"""The libraries' learning-rate schedulers and epoch statistics (part of the component suite).

**Schedulers.** Each of the five (``parse_learning_rate``: Constant, TimeBased, StepBased,
MultiStepLR, Exponential) in each library, run by the library's own
``stochastic_gradient_descent`` on a model that records the rate its ``optimize`` is given, epoch
by epoch, against the scheduler's formula evaluated exactly (fractions; mpmath for exp) at the
parsed parameters. The bound is the float64 rounding of the formula as the library evaluates it:
each multiplication, division and addition one rounding (Higham's gamma), ``exp`` and ``pow`` a
library function's error (harness.judge.arithmetic), an argument's rounding carried through exp
as ``|c e| u``. TimeBased is stateful (its docstring: ``lr = lr / (1 + decay * epoch)``, applied
to its own last rate), so its formula is the product over the calls the loop makes:
``lr(0)`` once before the loop, then ``lr(e)`` at the start of each epoch.

**Statistics.** ``compute_loss`` and ``compute_accuracy`` of each library on the same model (one
weights file, loaded by each library's ``load_weights_and_bias``) and the same data (each
library's own DataLoader, a last batch shorter than the others), against the exact oracle
batch by batch, judged in units of the bound (harness.judge.statistics); and at every epoch of
the library's own training loop, at the parameters it holds then.
"""

from __future__ import annotations

import functools
import math
from fractions import Fraction

import mpmath
import numpy as np
import pytest

import adapters
from exact import assert_exact
from harness.judge import bounds as judge_bounds
from harness.judge.arithmetic import Arithmetic
from harness.judge.statistics import accuracy_range, mean_loss_bound
from harness.oracle.exact import high_precision
from harness.spec.scenario import build_scenario
from libraries import BACKENDS, array, mlp, module, parameters, quietly

pytestmark = pytest.mark.symbolic

EPOCHS = 12
U = Arithmetic("float64").u
F = Arithmetic("float64").function_ulps  # a library function's error, in ulps


def calls(epochs: int) -> list[int]:
    """The epochs stochastic_gradient_descent asks its scheduler for: 0, then 0, 1, ... epochs-1."""
    return [0, *range(epochs)]


def time_based(lr: float, decay: float, e: int) -> tuple[Fraction, float]:
    """(exact rate used in epoch e, relative bound): lr / prod over the calls so far of (1 + decay k)."""
    value, n = Fraction(lr), 0
    for k in calls(e + 1):
        value /= 1 + Fraction(decay) * k
        n += 3  # decay * k, 1 + ..., lr / ...
    return value, Arithmetic("float64").gamma(n)


def step_based(lr: float, drop: float, change: float, e: int) -> tuple[Fraction, float]:
    return Fraction(lr) * Fraction(drop) ** math.floor((1 + e) / change), (F + 1) * U


def multi_step(lr: float, milestones: list[int], gamma: float, e: int) -> tuple[Fraction, float]:
    j = sum(1 for m in milestones if e >= m)
    return Fraction(lr) * Fraction(gamma) ** j, Arithmetic("float64").gamma(j)


@high_precision
def exponential(lr: float, c: float, e: int) -> tuple[mpmath.mpf, float]:
    return mpmath.mpf(lr) * mpmath.exp(-mpmath.mpf(c) * e), (abs(c * e) + F + 1) * U


SCHEDULES = {
    "Constant(0.01)": lambda e: (Fraction(0.01), 0.0),
    "TimeBased(0.1,0.05)": lambda e: time_based(0.1, 0.05, e),
    "StepBased(0.1,0.5,3)": lambda e: step_based(0.1, 0.5, 3, e),
    "MultiStepLR(0.1;2,5,8;0.3)": lambda e: multi_step(0.1, [2, 5, 8], 0.3, e),
    "Exponential(0.1,0.25)": lambda e: exponential(0.1, 0.25, e),
}


class Recorder:
    """A model for the training loop that computes nothing and records every rate it is given."""

    layers: list = []

    def __init__(self) -> None:
        self.rates: list[float] = []

    def feedforward(self, X):
        return X

    def backpropagate(self, Y, DY) -> None:
        pass

    def optimize(self, eta: float) -> None:
        self.rates.append(float(eta))


def rates_in_training(name: str, text: str, monkeypatch) -> list[float]:
    """The rate of each epoch as the library's own stochastic_gradient_descent applies it."""
    training = module(name, "training")
    monkeypatch.setattr(training.TrainOptions, "print_statistics", False)
    X = array(name, np.eye(2))
    loader = module(name, "datasets").DataLoader(X, X, batch_size=2)
    loss = module(name, "loss_functions").parse_loss_function("SquaredError")
    model = Recorder()
    quietly(training.stochastic_gradient_descent, model, EPOCHS, loss,
            module(name, "learning_rate").parse_learning_rate(text), loader, loader)
    return model.rates


def rate_errors(name: str, text: str, monkeypatch) -> list[str]:
    """The epochs whose rate in the library's training loop is outside the formula's bound."""
    got = rates_in_training(name, text, monkeypatch)
    if len(got) != EPOCHS:
        return [f"{name} {text}: {len(got)} optimize calls in {EPOCHS} epochs of one batch"]
    problems = []
    for e, rate in enumerate(got):
        exact, relative = SCHEDULES[text](e)
        err = abs(Fraction(rate) - exact) if isinstance(exact, Fraction) else abs(rate - exact)
        if float(err) > relative * abs(float(exact)):
            problems.append(f"{name} {text} epoch {e}: {rate!r}, exact {float(exact)!r} "
                            f"(error {float(err):.3g} > bound {relative * abs(float(exact)):.3g})")
    return problems


@pytest.mark.parametrize("text", list(SCHEDULES))
@pytest.mark.parametrize("name", BACKENDS)
def test_scheduler_rate_per_epoch_is_its_formula(name, text, monkeypatch):
    problems = rate_errors(name, text, monkeypatch)
    assert not problems, "; ".join(problems)


def test_a_planted_scheduler_bug_is_caught_and_blamed_on_that_library(monkeypatch):
    """A planted bug: nerva-torch's StepBased drops at floor(epoch / change) (the 1 + missing).
    Only torch's StepBased is flagged."""
    lr = module("torch", "learning_rate")

    def late(self, epoch):
        return self.lr * math.pow(self.drop_rate, math.floor(epoch / self.change_rate))

    monkeypatch.setattr(lr.StepBasedScheduler, "__call__", late)
    blamed = {(n, t) for n in BACKENDS for t in SCHEDULES if rate_errors(n, t, monkeypatch)}
    assert blamed == {("torch", "StepBased(0.1,0.5,3)")}, sorted(blamed)


@pytest.mark.parametrize("text", ["StepBased(0.1,0.5,10)", "MultiStepLR(0.1;1,3,5;0.1)", "TimeBased(0.1, 0.05)"])
@pytest.mark.parametrize("name", BACKENDS)
def test_the_documented_forms_parse(name, text):
    """The forms learning_rate.py's docstring gives (and one with a space)."""
    assert module(name, "learning_rate").parse_learning_rate(text)(0) == 0.1


@pytest.mark.parametrize("name", BACKENDS)
def test_time_based_depends_on_the_calls_before(name):
    """docs/findings.md #32, pinned: asking TimeBased for the same epoch twice gives two rates, and the rate
    at epoch e is lr / prod_{k<=e} (1 + decay k), not lr / (1 + decay e)."""
    s = module(name, "learning_rate").parse_learning_rate("TimeBased(0.1,0.5)")
    assert (s(2), s(2)) == (0.1 / 2, 0.1 / 2 / 2)


@pytest.mark.parametrize("name", BACKENDS)
def test_multistep_milestones_out_of_order_are_missed(name):
    """docs/findings.md #33, pinned: milestones are read as sorted; ``5,1`` at epoch 2 applies none."""
    s = module(name, "learning_rate").parse_learning_rate("MultiStepLR(0.1;5,1;0.5)")
    assert (s(2), s(6)) == (0.1, 0.1 * 0.5 * 0.5)


# ----------------------------------------------------------------------- epoch statistics

LAYERS, SIZES, N, BATCH = ["ReLU", "Linear"], [8, 6, 4], 10, 4  # batches of 4, 4 and 2


@functools.lru_cache(maxsize=None)
def data() -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """(X, one-hot T, the parameters nerva-numpy's XavierNormal drew, as float32)."""
    rng = np.random.default_rng(31)
    X = rng.normal(0, 1, (N, SIZES[0])).astype(np.float32)
    T = np.eye(SIZES[-1], dtype=np.float32)[rng.integers(0, SIZES[-1], N)]
    module("numpy", "weight_initializers")  # the library is ready
    np.random.seed(3)
    return X, T, parameters(mlp("numpy", LAYERS, SIZES))


@functools.lru_cache(maxsize=None)
def exact_batches(loss: str) -> list[tuple[mpmath.mpf, float, np.ndarray, np.ndarray, np.ndarray]]:
    """exact_at for the parameters of data()."""
    return exact_at(loss, data()[2])


def exact_at(loss: str, params: dict[str, np.ndarray]) -> list[tuple[mpmath.mpf, float, np.ndarray, np.ndarray, np.ndarray]]:
    """Per batch of data(): (exact loss (mpf), its bound, exact Y, Y's bound, T) at ``params``
    (float32), from the sympy oracle and harness.judge.bounds.step_bounds."""
    X, T, _ = data()
    state = {k: v.astype(np.float64) for k, v in params.items()}
    oracle = adapters.load_oracle("sympy")
    out = []
    for start in range(0, N, BATCH):
        Xb, Tb = X[start:start + BATCH].astype(np.float64), T[start:start + BATCH].astype(np.float64)
        sc = build_scenario(name="statistics", layers=";".join(LAYERS), sizes=",".join(map(str, SIZES)),
                            optimizers="GradientDescent", init_weights="XavierNormal", loss=loss, lr=0.1,
                            batch_size=len(Xb), steps=1, dtype="float32")
        oracle.build(sc, state)
        trace = oracle.step(Xb, Tb, 0.1)
        bounds, _ = judge_bounds.step_bounds(sc, trace, state)
        out.append((oracle.exact["loss"][()], float(bounds["loss"]), trace["Y"], bounds["Y"], Tb))
    return out


def model_and_loader(name: str, tmp_path):
    """The library's model holding the parameters of one weights file (its load_weights_and_bias)
    and its DataLoader over the data."""
    X, T, params = data()
    path = tmp_path / "weights.npz"
    np.savez_compressed(path, **params)
    model = mlp(name, LAYERS, SIZES, init="Zero")
    quietly(model.load_weights_and_bias, str(path))
    loader = module(name, "datasets").DataLoader(array(name, X), array(name, T), batch_size=BATCH)
    return model, loader


LOSSES = ["SquaredError", "SoftmaxCrossEntropy", "LogisticCrossEntropy"]


def loss_problem(what: str, got: float, batches: list) -> str | None:
    """Why ``got`` is not compute_loss of ``batches`` (exact_at) within its bound, if it is not."""
    exact = mpmath.fsum(b[0] for b in batches) / N
    bound = mean_loss_bound("float32", [float(b[0]) for b in batches], [b[1] for b in batches], N)
    try:
        assert_exact(np.array([got]), np.array([exact], dtype=object), "float32", what, np.array([bound]))
    except AssertionError as e:
        return str(e)
    return None


def accuracy_problem(what: str, got: float, batches: list) -> str | None:
    """Why ``got`` is not a compute_accuracy a correct implementation can give, if it is not."""
    lo = sum(accuracy_range(b[2], b[3], b[4])[0] for b in batches)
    hi = sum(accuracy_range(b[2], b[3], b[4])[1] for b in batches)
    return None if lo / N <= got <= hi / N else f"{what} {got}, a correct implementation gives {lo}/{N} to {hi}/{N}"


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("name", BACKENDS)
def test_compute_loss_within_its_bound(name, loss, tmp_path):
    model, loader = model_and_loader(name, tmp_path)
    fn = module(name, "loss_functions").parse_loss_function(loss)
    got = float(np.asarray(module(name, "training").compute_loss(model, loader, fn)))
    problem = loss_problem(f"{name} compute_loss {loss}", got, exact_batches(loss))
    assert problem is None, problem


@pytest.mark.parametrize("name", BACKENDS)
def test_compute_accuracy_within_its_range(name, tmp_path):
    model, loader = model_and_loader(name, tmp_path)
    got = float(np.asarray(module(name, "training").compute_accuracy(model, loader)))
    problem = accuracy_problem(f"{name} compute_accuracy", got, exact_batches("SquaredError"))
    assert problem is None, problem


@pytest.mark.parametrize("name", BACKENDS)
def test_statistics_at_every_epoch_of_training(name, tmp_path, monkeypatch):
    """The library's own stochastic_gradient_descent, two epochs: at each of its three statistics
    points (before training and after each epoch) its compute_loss and compute_accuracy, on the
    parameters the library holds then, against the exact values at those parameters. The four
    libraries' parameters drift apart by rounding, so each is judged at its own."""
    model, loader = model_and_loader(name, tmp_path)
    training = module(name, "training")
    loss = module(name, "loss_functions").parse_loss_function("SquaredError")
    seen = []

    def record(M, lr, loss, train_loader, test_loader, epoch, *args, **kwargs):
        seen.append((epoch, parameters(M), float(np.asarray(training.compute_loss(M, train_loader, loss))),
                     float(np.asarray(training.compute_accuracy(M, train_loader)))))

    monkeypatch.setattr(training, "compute_statistics", record)
    quietly(training.stochastic_gradient_descent, model, 2, loss,
            module(name, "learning_rate").parse_learning_rate("Constant(0.05)"), loader, loader)
    assert [s[0] for s in seen] == [0, 1, 2]
    assert not np.array_equal(seen[0][1]["W2"], seen[2][1]["W2"]), "training did not move the parameters"
    problems = []
    for epoch, params, got_loss, got_accuracy in seen:
        batches = exact_at("SquaredError", params)
        problems += [loss_problem(f"{name} epoch {epoch} compute_loss", got_loss, batches),
                     accuracy_problem(f"{name} epoch {epoch} compute_accuracy", got_accuracy, batches)]
    assert not any(problems), "; ".join(p for p in problems if p)


def test_accuracy_range_counts_near_ties_either_way():
    """harness.judge.statistics.accuracy_range on a constructed near tie: row 0 certain and right,
    row 1 certain and wrong, row 2 within its bound of a tie (either), row 3 a tie with the target
    elsewhere (never right)."""
    Y = np.array([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0], [1.0, 1.0 + 1e-9, 0.0], [2.0, 2.0, 0.0]])
    T = np.eye(3)[[0, 0, 0, 2]]
    assert accuracy_range(Y, 1e-6, T) == (1, 2)
    assert accuracy_range(Y, 0.0, T) == (1, 1)


def test_a_planted_statistics_bug_is_caught_and_blamed_on_that_library(tmp_path, monkeypatch):
    """A planted bug: nerva-jax's compute_loss averages over the batches instead of the examples.
    Only jax's value is flagged."""
    training = module("jax", "training")
    original = training.compute_loss

    def per_batch(M, data_loader, loss):
        return original(M, data_loader, loss) * data_loader.dataset_size / len(data_loader)

    monkeypatch.setattr(training, "compute_loss", per_batch)
    blamed = set()
    for name in BACKENDS:
        model, loader = model_and_loader(name, tmp_path)
        fn = module(name, "loss_functions").parse_loss_function("SquaredError")
        got = float(np.asarray(module(name, "training").compute_loss(model, loader, fn)))
        if loss_problem(name, got, exact_batches("SquaredError")):
            blamed.add(name)
    assert blamed == {"jax"}, sorted(blamed)
