"""The exact oracle ("sympy"): the same interface and trace as a Nerva backend, every value exact.

A thin driver over :mod:`harness.oracle.symbolic` (where all the mathematics lives, on the
definitions of :mod:`harness.oracle.definitions`): it runs Nerva's
training step - feedforward, loss, ``DY = dL/dY / N``, backpropagation through every layer, then
every parameter's optimizer update - on the SymPy-derived components, evaluated exactly at the
given inputs and parameters (mpmath, 40 digits; nothing is ever rounded to float32 inside).

The trace has exactly the keys a Nerva backend produces (``NervaAdapter.step``), each rounded
once to float64; ``self.exact`` keeps the high-precision values (object arrays of mpf) of the
last step. The parameters are held in high precision between steps (trajectory mode continues
exactly); ``get_state`` rounds them to float64.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np

from harness.core.components import VELOCITY_OPTIMIZERS
from harness.core.keys import GRADIENT, Key, Trace, parse as parse_key
from harness.oracle import symbolic as S
from harness.oracle.exact import divide, exact, to_float64
from harness.spec.scenario import Scenario



class SympyOracle:
    name = "sympy"
    package = "harness.oracle.symbolic"
    framework = "sympy"

    def __init__(self) -> None:
        self.dtypes: dict[str, str] = {}
        self.exact: dict[str, np.ndarray] = {}

    def setup(self) -> None:
        """Nothing to import lazily: sympy and mpmath are the harness's own dependencies."""

    def precision(self, dtype: str) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def build(self, scenario: Scenario, state: dict[str, np.ndarray]) -> None:
        self.setup()
        self.scenario, self.dtype = scenario, scenario.dtype
        self._components: list[Any] = []
        width = scenario.input_size
        for spec in scenario.layers:
            if spec.kind in ("Linear", "BatchNormalization"):
                component = None  # Linear: no function; BatchNorm: made per batch size (cached)
            elif spec.kind == "Softmax":
                component = S.RowFunction("softmax", spec.units)  # Nerva's layers use the plain forms
            elif spec.kind == "LogSoftmax":
                component = S.RowFunction("log_softmax", spec.units)
            else:
                component = S.Activation(spec.kind, spec.arg)
            self._components.append(component)
            width = spec.units
        self._loss = S.Loss(scenario.loss, width)
        self._optimizers = {f"{param}{i}": opt for i, spec in enumerate(scenario.layers, start=1)
                            for param, opt in spec.optimizers}
        self.set_state(state)

    def get_state(self, parameters: bool = True) -> dict[str, np.ndarray]:
        """Parameters and velocities (``W1.v`` … for Momentum/Nesterov parameters) as float64
        (without ``parameters`` the velocities only)."""
        state = {}
        for key in self._optimizers:
            if parameters:
                state[key] = to_float64(self._params[key])
            if key in self._velocity:
                state[key + ".v"] = to_float64(self._velocity[key])
        return state

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        """Load parameters exactly; missing velocities are zero."""
        self._params: dict[str, np.ndarray] = {}
        self._velocity: dict[str, np.ndarray] = {}
        for key, opt in self._optimizers.items():
            self._params[key] = exact(state[key])
            if opt.name in VELOCITY_OPTIMIZERS:
                v = state.get(key + ".v")
                self._velocity[key] = exact(np.zeros(np.shape(state[key])) if v is None else v)

    def step(self, X: np.ndarray, T: np.ndarray, lr: float) -> Trace:
        """One exact SGD step in Nerva's order; every intermediate as float64 (exact ones in .exact)."""
        P, N = self._params, X.shape[0]
        ex: dict[str, Any] = {"X": exact(X), "T": exact(T)}
        saved = []  # per layer: (input, Z) for the backward pass
        h = ex["X"]
        for i, (spec, f) in enumerate(zip(self.scenario.layers, self._components), start=1):
            ex[f"X{i}"] = h
            if spec.kind == "BatchNormalization":
                h, Z = S.BatchNorm(N).forward(h, P[f"gamma{i}"], P[f"beta{i}"])
            else:
                Z = S.linear_forward(h, P[f"W{i}"], P[f"b{i}"])
                if spec.kind == "Linear":
                    h = Z
                elif isinstance(f, S.RowFunction):
                    h = f.value(Z)
                else:
                    h = f.value(Z, srelu=P.get(f"srelu{i}"))
            if spec.kind != "Linear":
                ex[f"Z{i}"] = Z
            saved.append((ex[f"X{i}"], Z))
        ex["Y"] = Y = h
        ex["loss"] = np.array(self._loss.value(Y, ex["T"]), dtype=object).reshape(())
        ex["DY"] = DY = divide(self._loss.gradient(Y, ex["T"]), N)
        for i in range(len(self.scenario.layers), 0, -1):
            spec, f = self.scenario.layers[i - 1], self._components[i - 1]
            Xi, Z = saved[i - 1]
            if spec.kind == "BatchNormalization":
                DX, ex[f"Dgamma{i}"], ex[f"Dbeta{i}"], ex[f"DZ{i}"] = S.BatchNorm(N).vjp(Xi, P[f"gamma{i}"], DY)
            else:
                if spec.kind == "Linear":
                    DZ = DY
                elif isinstance(f, S.RowFunction):
                    DZ = ex[f"DZ{i}"] = f.vjp(Z, DY)
                else:
                    srelu = P.get(f"srelu{i}")
                    DZ = ex[f"DZ{i}"] = f.vjp(Z, DY, srelu=srelu)
                    if spec.kind == "SReLU":
                        ex[f"Dsrelu{i}"] = f.param_gradients(Z, DY, srelu)
                DX, ex[f"DW{i}"], ex[f"Db{i}"] = S.linear_vjp(Xi, P[f"W{i}"], DZ)
            ex[f"DX{i}"] = DY = DX
        for key, opt in self._optimizers.items():  # every parameter, after the whole backward pass
            param, layer = parse_key(key)
            grad = ex[Key(GRADIENT[param], layer).name]
            x_new, v_new = S.optimizer_update(opt.name, opt.mu, P[key], grad, self._velocity.get(key), lr)
            P[key] = ex[key] = x_new
            if v_new is not None:
                self._velocity[key] = v_new
        self.exact = ex
        self.dtypes = {key: "exact" for key in ex}
        return {key: to_float64(value) for key, value in ex.items()}
