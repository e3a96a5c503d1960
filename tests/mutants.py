"""Planted bugs for the tests that must catch them (tests/test_mutation.py, tests/test_properties.py)."""

import importlib


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


def break_bias_gradient(monkeypatch, backend, layer_class="ActivationLayer"):
    """Patch ``backend``'s ``layer_class.backpropagate`` to scale Db by 1.001; returns the original."""
    layers = importlib.import_module(f"nerva_{backend}.layers")
    original = getattr(layers, layer_class).backpropagate
    corrupt = _scale_db(backend)

    def broken(self, Y, DY):
        original(self, Y, DY)
        corrupt(self)

    monkeypatch.setattr(getattr(layers, layer_class), "backpropagate", broken)
    return original
