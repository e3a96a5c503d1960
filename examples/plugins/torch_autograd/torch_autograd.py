"""A PyTorch ``torch.nn`` MLP that implements only the forward pass, checked by nerva-consistency.

The template for "check my own PyTorch model against the Nerva libraries and the exact oracle"
(docs/plugins.md): the model is ``torch.nn.Linear`` layers and torch's activations, the gradients
come from autograd (``loss.backward()``), and the traced intermediates are kept with
``retain_grad()``. Autograd gives no gradient of a layer's pre-activation Z unless one asks, and
this model does not: its ``provides`` leaves DZ out, and every report says "not judged for
mytorch: DZ1, DZ2, …". torch is imported in ``setup()``, only when the backend is used.

``TORCH_AUTOGRAD_FAULT`` selects a faulty variant: ``relu`` uses a leaky ReLU (slope 0.001 below
zero: a wrong forward pass, blamed on this backend alone), ``omit-dx`` leaves DX out of
``provides`` (refused before any step: DX is in the minimum).
"""

from __future__ import annotations

import os

import numpy as np

from harness.api import SpecError, Trace, parse_key

ACTIVATIONS = ("Linear", "ReLU", "Sigmoid", "HyperbolicTangent", "Softmax")
LOSSES = ("SquaredError", "CrossEntropy")


class TorchAutogradMLP:
    name = "mytorch"
    provides = frozenset({"X", "T", "Y", "DY", "loss", "Z", "DW", "Db", "DX", "W", "b"})  # no DZ

    def __init__(self):
        self.dtypes: dict[str, str] = {}  # set by each step
        self.fault = os.environ.get("TORCH_AUTOGRAD_FAULT", "")
        self.provides = self.provides - ({"DX"} if self.fault == "omit-dx" else set())

    def setup(self) -> None:
        global torch
        import torch

    def build(self, scenario, state: dict[str, np.ndarray]) -> None:
        self.setup()
        bad = [s.kind for s in scenario.layers if s.kind not in ACTIVATIONS] + \
            ([scenario.loss] if scenario.loss not in LOSSES else [])
        if bad:
            raise SpecError(f"mytorch has no {', '.join(bad)}")
        self.scenario, self.dtype = scenario, getattr(torch, scenario.dtype)
        sizes = scenario.sizes
        self.layers = torch.nn.ModuleList(torch.nn.Linear(sizes[i], sizes[i + 1], dtype=self.dtype)
                                          for i in range(len(scenario.layers)))
        self.velocity: dict[str, torch.Tensor] = {}
        self.set_state(state)

    def _param(self, key: str) -> torch.nn.Parameter:
        tensor, i = key[0], int(key[1:])  # "W3" -> the weight of layer 3
        return getattr(self.layers[i - 1], "weight" if tensor == "W" else "bias")

    def get_state(self) -> dict[str, np.ndarray]:
        state = {}
        for i, spec in enumerate(self.scenario.layers, 1):
            for p, _ in spec.optimizers:
                state[f"{p}{i}"] = self._param(f"{p}{i}").detach().numpy().astype(np.float64)
        state.update({k: v.numpy().astype(np.float64) for k, v in self.velocity.items()})
        return state

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        with torch.no_grad():
            for i, spec in enumerate(self.scenario.layers, 1):
                for p, opt in spec.optimizers:
                    key = f"{p}{i}"
                    self._param(key).copy_(torch.tensor(state[key], dtype=self.dtype))
                    if opt.name in ("Momentum", "Nesterov"):
                        v = state.get(key + ".v", np.zeros_like(state[key]))
                        self.velocity[key + ".v"] = torch.tensor(v, dtype=self.dtype)

    def forward(self, X: torch.Tensor, keep: dict) -> torch.Tensor:
        """The model: each layer's Linear map, then its activation; every intermediate kept."""
        h = X
        for i, (spec, linear) in enumerate(zip(self.scenario.layers, self.layers), 1):
            keep[f"X{i}"] = h
            Z = linear(h)
            if spec.kind != "Linear":
                keep[f"Z{i}"] = Z
            if spec.kind == "ReLU":
                h = torch.nn.functional.leaky_relu(Z, 0.001) if self.fault == "relu" else torch.relu(Z)
            else:
                h = {"Linear": lambda z: z, "Sigmoid": torch.sigmoid, "HyperbolicTangent": torch.tanh,
                     "Softmax": lambda z: torch.softmax(z, dim=1)}[spec.kind](Z)
        return h

    def step(self, X: np.ndarray, T: np.ndarray, lr: float) -> Trace:
        Xt = torch.tensor(X, dtype=self.dtype, requires_grad=True)
        Tt = torch.tensor(T, dtype=self.dtype)
        keep: dict[str, torch.Tensor] = {"X": Xt, "T": Tt}
        Y = self.forward(Xt, keep)
        for t in keep.values():
            if t.requires_grad:
                t.retain_grad()
        Y.retain_grad()
        loss = ((Y - Tt) ** 2).sum() if self.scenario.loss == "SquaredError" else -(Tt * torch.log(Y)).sum()
        (loss / X.shape[0]).backward()  # Nerva's gradients are those of the loss over the batch size
        trace = {"Y": Y, "loss": loss, "DY": Y.grad}
        trace.update({k: v for k, v in keep.items()})
        for i in range(1, len(self.layers) + 1):
            trace.update({f"DX{i}": keep[f"X{i}"].grad, f"DW{i}": self._param(f"W{i}").grad,
                          f"Db{i}": self._param(f"b{i}").grad})
        out = {k: v.detach().numpy().astype(np.float64) for k, v in trace.items() if parse_key(k).tensor in self.provides}
        self.dtypes = {k: str(v.dtype).removeprefix("torch.") for k, v in trace.items()}
        self.optimize(lr)
        out.update({k: v for k, v in self.get_state().items() if not k.endswith(".v")})
        return out

    def optimize(self, lr: float) -> None:
        """Nerva's optimizers, on the parameters' autograd gradients (then cleared)."""
        with torch.no_grad():
            for i, spec in enumerate(self.scenario.layers, 1):
                for p, opt in spec.optimizers:
                    key = f"{p}{i}"
                    x = self._param(key)
                    if opt.name == "GradientDescent":
                        x -= lr * x.grad
                    else:
                        v = self.velocity[key + ".v"] = opt.mu * self.velocity[key + ".v"] - lr * x.grad
                        x += v if opt.name == "Momentum" else opt.mu * v - lr * x.grad
                    x.grad = None
