"""The four released libraries called as their users call them, for the tests of their own pieces
(initializers, weights files, schedulers, statistics): a library's module, its random generator's
seed, and a small MLP made by its own parse_multilayer_perceptron.

A backend is set up through its adapter first (harness.core.process: CPU only, quiet imports), and
skipped where it is not installed (tests/conftest.py fails instead under CI).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import io

import numpy as np
import pytest

import adapters

BACKENDS = ("numpy", "torch", "jax", "tensorflow")


@functools.lru_cache(maxsize=None)
def _ready(name: str) -> None:
    reason = adapters.why_unavailable(name)
    if reason:
        pytest.skip(reason)
    adapters.load(name).setup()


def module(name: str, part: str):
    """``nerva_<name>.<part>`` (weight_initializers, layers, multilayer_perceptron, ...)."""
    _ready(name)
    return importlib.import_module(f"nerva_{name}.{part}")


def seed(name: str, value: int) -> None:
    """Seed the generator the library's initializers draw from: NumPy's global one for nerva-numpy
    and nerva-jax (whose initializers call np.random), the framework's for torch and tensorflow."""
    _ready(name)
    if name in ("numpy", "jax"):
        np.random.seed(value)
    elif name == "torch":
        importlib.import_module("torch").manual_seed(value)
    else:
        importlib.import_module("tensorflow").random.set_seed(value)


def quietly(fn, *args):
    """fn(*args) without the line the libraries print (``Loading weights and bias from ...``)."""
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args)


def to_numpy(x) -> np.ndarray:
    """A library's tensor (ndarray, torch tensor, JAX array, TensorFlow variable) as a NumPy array
    of its own dtype: a copy, not a view of memory the library goes on changing."""
    if hasattr(x, "detach"):
        x = x.detach()
    return np.array(x.numpy() if hasattr(x, "numpy") else x)


def mlp(name: str, layers: list[str], sizes: list[int], init: str = "XavierNormal"):
    """The library's own MultilayerPerceptron from spec strings, as tools/mlp.py makes it."""
    parse = module(name, "multilayer_perceptron").parse_multilayer_perceptron
    return parse(layers, sizes, ["GradientDescent"] * len(layers), [init] * (len(sizes) - 1))


def parameters(model) -> dict[str, np.ndarray]:
    """W1, b1, W2, ... of a library's model, the keys of its weights files."""
    out = {}
    for i, layer in enumerate((la for la in model.layers if hasattr(la, "W")), start=1):
        out[f"W{i}"], out[f"b{i}"] = to_numpy(layer.W), to_numpy(layer.b)
    return out


def array(name: str, a: np.ndarray):
    """``a`` as the library's own tensor type (float32), as its data loaders hold data."""
    if name == "numpy":
        return np.asarray(a, dtype=np.float32)
    if name == "torch":
        return importlib.import_module("torch").tensor(np.asarray(a, dtype=np.float32))
    if name == "jax":
        return importlib.import_module("jax.numpy").asarray(np.asarray(a, dtype=np.float32))
    return importlib.import_module("tensorflow").constant(np.asarray(a, dtype=np.float32))
