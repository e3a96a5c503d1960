"""A plain NumPy MLP with hand-written backpropagation, checked by nerva-consistency as a plug-in.

The worked example of docs/plugins.md: it implements the Backend protocol of ``harness.api``
(``setup``, ``build``, ``step``, ``get_state``, ``set_state``, ``dtypes``), provides every tensor of
the trace, and is registered under the entry-point group ``nerva_consistency.adapters`` by its
pyproject.toml. It knows the layers Linear, ReLU, Sigmoid, HyperbolicTangent and Softmax, the
losses SquaredError and CrossEntropy, and the optimizers GradientDescent, Momentum and Nesterov.
It also implements the optional part (``harness.api.Components``: ``activation``, ``loss_function``,
``array``, ``to_numpy``, ``precision``), so that ``nerva-consistency conventions`` evaluates its
derivatives at the kinks.

``NUMPY_MLP_FAULT`` selects a faulty variant, so that the tests can show what the harness does
with it: ``db`` scales every Db by 1.0001 (a wrong gradient: blamed on this backend alone), ``omit-db``
leaves Db out of ``provides`` (refused before any step: Db is in the minimum); ``raise``, ``drop``,
``float32`` and ``shape`` break the contract in a step (an exception; DW1 missing from the trace;
Y as float32; DW1 transposed): each is a finding about this backend.
"""

from __future__ import annotations

import contextlib
import os

import numpy as np

from harness.api import SpecError, Trace, parse_key

ACTIVATIONS = {  # kind -> (f, f')
    "Linear": (lambda z: z, lambda z: np.ones_like(z)),
    "ReLU": (lambda z: np.maximum(0, z), lambda z: np.where(z > 0, 1, 0).astype(z.dtype)),
    "Sigmoid": (lambda z: 1 / (1 + np.exp(-z)), lambda z: (1 / (1 + np.exp(-z))) * (1 - 1 / (1 + np.exp(-z)))),
    "HyperbolicTangent": (np.tanh, lambda z: 1 - np.tanh(z) ** 2),
}
LOSSES = {  # name -> (L(Y, T) summed over the batch, dL/dY)
    "SquaredError": (lambda Y, T: ((Y - T) ** 2).sum(), lambda Y, T: 2 * (Y - T)),
    "CrossEntropy": (lambda Y, T: -(T * np.log(Y)).sum(), lambda Y, T: -T / Y),
}


class Function:
    """One activation or loss as Nerva's objects are: ``f(x)`` and ``f.gradient(x)``."""

    def __init__(self, f, gradient):
        self.f, self.gradient = f, gradient

    def __call__(self, *args):
        return self.f(*args)


def softmax(Z):
    E = np.exp(Z)
    return E / E.sum(axis=1, keepdims=True)


class NumpyMLP:
    name = "mymlp"
    # What the traces hold (Key.tensor names), in every layer that has them: everything.
    provides = frozenset({"X", "T", "Y", "DY", "loss", "Z", "DZ", "DW", "Db", "DX", "W", "b"})

    def __init__(self):
        self.fault = os.environ.get("NUMPY_MLP_FAULT", "")
        if self.fault == "omit-db":
            self.provides = self.provides - {"Db"}
        self.dtypes: dict[str, str] = {}

    def setup(self) -> None:
        """Nothing to import: NumPy is already loaded."""

    def build(self, scenario, state: dict[str, np.ndarray]) -> None:
        for spec in scenario.layers:
            if spec.kind not in ACTIVATIONS and spec.kind != "Softmax":
                raise SpecError(f"mymlp has no {spec.kind} layer")
        if scenario.loss not in LOSSES:
            raise SpecError(f"mymlp has no {scenario.loss} loss")
        self.scenario, self.dtype = scenario, np.dtype(scenario.dtype)
        self.set_state(state)

    # -- the optional part: single functions, for `conventions` and the component suite --------
    def activation(self, kind: str, arg: dict[str, float], dtype: str | None = None) -> Function:
        if kind not in ACTIVATIONS:
            raise NotImplementedError(f"mymlp has no {kind} activation")
        return Function(*ACTIVATIONS[kind])

    def loss_function(self, name: str) -> Function:
        if name not in LOSSES:
            raise NotImplementedError(f"mymlp has no {name} loss")
        return Function(*LOSSES[name])

    def array(self, a: np.ndarray, dtype: str) -> np.ndarray:
        return np.array(a, dtype=dtype)

    def to_numpy(self, x) -> np.ndarray:
        return np.array(x, dtype=np.float64)

    def precision(self, dtype: str):
        return contextlib.nullcontext()

    def get_state(self) -> dict[str, np.ndarray]:
        return {k: v.astype(np.float64) for k, v in self.params.items()}

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        self.params = {k: np.array(v, dtype=self.dtype) for k, v in state.items()}
        for i, spec in enumerate(self.scenario.layers, 1):  # a velocity starts at zero
            for p, opt in spec.optimizers:
                if opt.name in ("Momentum", "Nesterov") and f"{p}{i}.v" not in self.params:
                    self.params[f"{p}{i}.v"] = np.zeros_like(self.params[f"{p}{i}"])

    def step(self, X: np.ndarray, T: np.ndarray, lr: float) -> Trace:
        if self.fault == "raise":
            raise FloatingPointError("a fault injected by NUMPY_MLP_FAULT=raise")
        sc, P, trace = self.scenario, self.params, {}
        X, T = X.astype(self.dtype), T.astype(self.dtype)
        N, h, layers = X.shape[0], X, []
        for i, spec in enumerate(sc.layers, 1):  # feedforward
            Z = h @ P[f"W{i}"].T + P[f"b{i}"]
            Y = softmax(Z) if spec.kind == "Softmax" else ACTIVATIONS[spec.kind][0](Z)
            layers.append((h, Z))
            h = Y
        loss, gradient = LOSSES[sc.loss]
        trace.update(X=X, T=T, Y=h, loss=np.asarray(loss(h, T)))
        DY = gradient(h, T) / self.dtype.type(N)
        trace["DY"], D = DY, DY
        for i in range(len(sc.layers), 0, -1):  # backpropagate
            spec, (Xi, Z) = sc.layers[i - 1], layers[i - 1]
            if spec.kind == "Softmax":
                Y = softmax(Z)
                DZ = Y * (D - (D * Y).sum(axis=1, keepdims=True))
            else:
                DZ = D * ACTIVATIONS[spec.kind][1](Z)
            Db = DZ.sum(axis=0) * (self.dtype.type(1.0001) if self.fault == "db" else 1)
            D = DZ @ P[f"W{i}"]
            trace.update({f"X{i}": Xi, f"DW{i}": DZ.T @ Xi, f"Db{i}": Db, f"DX{i}": D})
            if spec.kind != "Linear":  # a Linear layer's Z is its output, Y or the next layer's X
                trace.update({f"Z{i}": Z, f"DZ{i}": DZ})
        eta = self.dtype.type(lr)
        for i, spec in enumerate(sc.layers, 1):  # optimize, as Nerva's optimizers do
            for p, opt in spec.optimizers:
                key, grad, mu = f"{p}{i}", trace[f"D{p}{i}"], self.dtype.type(opt.mu)
                if opt.name == "GradientDescent":
                    P[key] = P[key] - eta * grad
                else:
                    P[f"{key}.v"] = mu * P[f"{key}.v"] - eta * grad
                    P[key] = P[key] + (P[f"{key}.v"] if opt.name == "Momentum" else mu * P[f"{key}.v"] - eta * grad)
                trace[key] = P[key]
        trace = {k: v for k, v in trace.items() if parse_key(k).tensor in self.provides}  # what it declares
        self.dtypes = {k: str(v.dtype) for k, v in trace.items()}
        out = {k: np.array(v, dtype=np.float64) for k, v in trace.items()}
        if self.fault in ("drop", "float32", "shape"):
            out.pop("DW1") if self.fault == "drop" else None
            out["Y"] = out["Y"].astype(np.float32) if self.fault == "float32" else out["Y"]
            out["DW1"] = out["DW1"].T if self.fault == "shape" else out.get("DW1")
            out = {k: v for k, v in out.items() if v is not None}
        return out
