"""Injected bugs must be caught, blamed on the right backend and localized to the right tensor."""

import importlib

import pytest

import scenarios
from harness.runner import run

pytestmark = pytest.mark.backends


def _scale_db(backend):
    """A wrong bias gradient (Db off by 0.1%) written the way each library stores it."""

    def numpy(layer):
        layer.Db[...] = layer.Db * 1.001

    def torch(layer):
        layer.Db.mul_(1.001)

    def jax(layer):
        layer.Db = layer.Db * 1.001

    def tensorflow(layer):
        layer.Db.assign(layer.Db * 1.001)

    return {"numpy": numpy, "torch": torch, "jax": jax, "tensorflow": tensorflow}[backend]


@pytest.mark.parametrize("backend", ["numpy", "torch", "jax", "tensorflow"])
def test_broken_backward_is_blamed_on_its_backend(backend, installed, monkeypatch):
    layers = importlib.import_module(f"nerva_{backend}.layers")
    original = layers.ActivationLayer.backpropagate
    corrupt = _scale_db(backend)

    def broken(self, Y, DY):
        original(self, Y, DY)
        corrupt(self)

    monkeypatch.setattr(layers.ActivationLayer, "backpropagate", broken)
    # relu-softmax: ReLU;ReLU;Softmax. The Softmax layer is not an ActivationLayer, so the
    # first wrong tensor in backward order is Db of layer 2 (the upper ReLU layer).
    result = run(scenarios.get("relu-softmax", steps=3), installed)
    assert not result.passed
    step, verdict = result.first_divergence
    assert step == 0
    assert verdict.key == ("Db", 2)
    assert verdict.blamed == [backend] and verdict.majority
    assert verdict.worst[backend] > 1
    assert all(verdict.worst[b] < 1 for b in installed if b != backend)


def test_a_wrong_activation_derivative_is_caught_in_DZ(installed, monkeypatch):
    import nerva_torch.activation_functions as acts

    # Tanh' written as 1 - tanh (a typo-sized bug): wrong everywhere except where tanh is 0 or 1.
    monkeypatch.setattr(acts, "Hyperbolic_tangent_gradient", lambda X: 1 - acts.torch.tanh(X))
    result = run(scenarios.get("sigmoid-logistic", steps=2), installed)
    step, verdict = result.first_divergence
    assert (step, verdict.key, verdict.blamed) == (0, ("DZ", 2), ["torch"])


def test_same_wrong_formula_in_three_backends_leaves_no_majority_for_the_right_one(installed, monkeypatch):
    """Blame follows the majority: three wrong backends outvote the correct one. (Finding such
    bugs needs the exact oracle; this test documents the limit of backend-vs-backend comparison.)"""
    for backend in ("torch", "jax", "tensorflow"):
        layers = importlib.import_module(f"nerva_{backend}.layers")
        original = layers.ActivationLayer.backpropagate
        corrupt = _scale_db(backend)

        def broken(self, Y, DY, original=original, corrupt=corrupt):
            original(self, Y, DY)
            corrupt(self)

        monkeypatch.setattr(layers.ActivationLayer, "backpropagate", broken)
    result = run(scenarios.get("relu-softmax", steps=1), installed)
    _, verdict = result.first_divergence
    assert verdict.blamed == ["numpy"]
