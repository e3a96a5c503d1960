"""Initial parameters, made once in NumPy from the seed, and the names of every parameter.

Parameters are named like Nerva's saved weights, by layer position (1-based, every layer
counted): ``W1``, ``b1`` for linear-type layers, ``gamma2``, ``beta2`` for BatchNormalization,
``srelu3`` for SReLU's [al, tl, ar, tr]. Optimizer velocities are ``W1.v`` and so on.

Weights follow the scenario's initializer (formulas in :mod:`harness.core.components`), biases and
beta start at 0, gamma at 1, SReLU at the values of its spec. The values are drawn in float64
and rounded once to the run's dtype, so every backend starts from the same bits.
"""

from __future__ import annotations

import numpy as np

from harness.core.components import INITIALIZERS
from harness.spec.scenario import Scenario


def rng_for(seed: int, purpose: str) -> np.random.Generator:
    """Independent streams for parameters and data, both fixed by the seed."""
    index = {"params": 0, "data": 1, "explore": 2}[purpose]
    return np.random.default_rng(np.random.SeedSequence(seed).spawn(3)[index])


def as_dtype(a: np.ndarray, dtype: str) -> np.ndarray:
    """Round to the run's dtype, keep as float64 (exactly representable)."""
    return np.asarray(a, dtype=np.float64).astype(dtype).astype(np.float64)


def param_shapes(scenario: Scenario) -> dict[str, tuple[int, ...]]:
    """Every parameter of the scenario's model and its shape (what :func:`initial_state` makes),
    without making any."""
    shapes: dict[str, tuple[int, ...]] = {}
    width = scenario.input_size
    for i, layer in enumerate(scenario.layers, start=1):
        if layer.kind == "BatchNormalization":
            shapes[f"gamma{i}"] = shapes[f"beta{i}"] = (width,)
            continue
        shapes[f"W{i}"], shapes[f"b{i}"] = (layer.units, width), (layer.units,)
        if layer.kind == "SReLU":
            shapes[f"srelu{i}"] = (4,)
        width = layer.units
    return shapes


def initial_state(scenario: Scenario) -> dict[str, np.ndarray]:
    rng = rng_for(scenario.seed, "params")
    state: dict[str, np.ndarray] = {}
    width = scenario.input_size
    for i, layer in enumerate(scenario.layers, start=1):
        if layer.kind == "BatchNormalization":
            state[f"gamma{i}"] = np.ones(width)
            state[f"beta{i}"] = np.zeros(width)
            continue
        D, K = width, layer.units
        dist, scale = INITIALIZERS[layer.init or "XavierNormal"]
        s = scale(D, K)
        if dist == "normal":
            W = rng.normal(0.0, s, size=(K, D))
        elif dist == "uniform":
            W = rng.uniform(-s, s, size=(K, D))
        else:
            W = np.zeros((K, D))
        state[f"W{i}"] = as_dtype(W, scenario.dtype)
        state[f"b{i}"] = np.zeros(K)
        if layer.kind == "SReLU":
            a = layer.arg
            state[f"srelu{i}"] = as_dtype(np.array([a["al"], a["tl"], a["ar"], a["tr"]]), scenario.dtype)
        width = K
    return state

