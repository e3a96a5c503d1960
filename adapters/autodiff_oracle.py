"""The scalable reference: float64 torch.autograd of the forward definitions ("autodiff oracle").

Only the FORWARD pass is computed here, by the one float64 torch transcription of the forward
definitions (:mod:`harness.oracle.transcription`, of :mod:`harness.oracle.definitions`; its
docstring lists the formulas and what autograd returns at every kink); every gradient in a trace
comes from ``torch.autograd.grad`` of ``L / N``. No hand-written backward equation and no Nerva
library is used, so a bug in a backend's backpropagation cannot be copied into the reference. It
has the interface of :class:`adapters.nerva_driver.NervaAdapter` (``setup``, ``build``,
``get_state``, ``set_state``, ``step``, ``precision``, ``dtypes``) and its traces have exactly the
keys of a Nerva backend's trace.

Layers (``Z`` and ``DZ`` are traced for every kind except Linear): Linear Y = X W^T + b; an
activation, Softmax or LogSoftmax layer Z = X W^T + b, Y = f(Z); BatchNormalization normalizes
its input into Z (no W, b), Y = gamma Z + beta.

A step (Nerva's training loop): ``Y = forward(X)``, ``L = loss(Y, T)`` (a sum over the batch);
with N the batch size, every traced gradient is that of ``L / N``: ``DY``, ``DZ{i}``
(BatchNormalization: wrt its normalized Z), ``DW{i}``, ``Db{i}``, ``Dgamma{i}``, ``Dbeta{i}``,
``Dsrelu{i}`` and ``DX{i}`` (wrt the layer's input). Then, under ``torch.no_grad()``, each
parameter is updated by its own optimizer, velocity starting at 0 and kept across steps.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np

from harness.core.components import VELOCITY_OPTIMIZERS
from harness.core.keys import Trace
from harness.core.process import cpu_only
from harness.oracle import transcription
from harness.spec.scenario import Scenario



# -- the adapter --------------------------------------------------------------------------------
class AutodiffOracle:
    """float64 torch.autograd reference with the interface of a Nerva adapter."""

    name = "autodiff"
    framework = "torch"

    def __init__(self) -> None:
        self.torch: Any = None
        self.dtypes: dict[str, str] = {}

    def setup(self) -> None:
        cpu_only()
        import torch

        self.torch = torch

    def precision(self, dtype: str) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()  # always float64, whatever the run's dtype

    def _tensor(self, a: Any) -> Any:
        return self.torch.tensor(np.asarray(a, dtype=np.float64), dtype=self.torch.float64)

    def build(self, scenario: Scenario, state: dict[str, np.ndarray]) -> None:
        self.setup()
        self.scenario, self.dtype = scenario, scenario.dtype
        self._params: dict[str, Any] = {}  # "W1" -> leaf tensor (requires_grad)
        self._optimizers: dict[str, Any] = {}  # "W1" -> OptimizerSpec
        self._velocity: dict[str, Any] = {}  # "W1" -> tensor, Momentum/Nesterov only
        for i, spec in enumerate(scenario.layers, start=1):
            for param, opt in spec.optimizers:
                key = f"{param}{i}"
                self._params[key] = self._tensor(state[key]).requires_grad_(True)
                self._optimizers[key] = opt
                if opt.name in VELOCITY_OPTIMIZERS:
                    self._velocity[key] = self.torch.zeros_like(self._params[key], requires_grad=False)
        self.set_state(state)

    def get_state(self, parameters: bool = True) -> dict[str, np.ndarray]:
        """Parameters and velocities (``W1.v``, Momentum/Nesterov only) as float64 copies
        (without ``parameters`` the velocities only)."""
        state = {}
        for key, p in self._params.items():
            if parameters:
                state[key] = p.detach().numpy().copy()
            if key in self._velocity:
                state[key + ".v"] = self._velocity[key].numpy().copy()
        return state

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        """Load parameters; a missing velocity ``KEY.v`` means 0."""
        with self.torch.no_grad():
            for key, p in self._params.items():
                self._copy_into(p, state[key], key)
                if key in self._velocity:
                    v = state.get(key + ".v")
                    if v is None:
                        self._velocity[key].zero_()
                    else:
                        self._copy_into(self._velocity[key], v, key + ".v")

    def _copy_into(self, target: Any, a: Any, key: str) -> None:
        a = np.asarray(a, dtype=np.float64)
        if a.shape != tuple(target.shape):
            raise ValueError(f"state {key!r} has shape {a.shape}, the model needs {tuple(target.shape)}")
        target.copy_(self.torch.from_numpy(a))

    def _forward(self, X: Any) -> tuple[Any, list[Any], dict[int, Any]]:
        """(Y, the input of every layer, Z of every non-Linear layer by 1-based position)."""
        torch, P = self.torch, self._params
        inputs: list[Any] = []
        zs: dict[int, Any] = {}
        h = X
        for i, spec in enumerate(self.scenario.layers, start=1):
            inputs.append(h)
            kind = spec.kind
            if kind == "BatchNormalization":
                Z, h = transcription.batch_normalization(torch, h, P[f"gamma{i}"], P[f"beta{i}"])
                zs[i] = Z
                continue
            Z = h @ P[f"W{i}"].T + P[f"b{i}"]
            if kind == "Linear":
                h = Z
            elif kind == "Softmax":
                zs[i], h = Z, transcription.row_function(torch, "softmax", Z)
            elif kind == "LogSoftmax":
                zs[i], h = Z, transcription.row_function(torch, "log_softmax", Z)
            else:
                zs[i], h = Z, transcription.activation(torch, kind, spec.arg, Z, P.get(f"srelu{i}"))
        return h, inputs, zs

    def step(self, X: np.ndarray, T: np.ndarray, lr: float) -> Trace:
        """One SGD step; every intermediate as a float64 NumPy copy (keys as a Nerva trace)."""
        torch = self.torch
        N = X.shape[0]
        Xt = self._tensor(X).requires_grad_(True)
        Tt = self._tensor(T)
        Y, inputs, zs = self._forward(Xt)
        L = transcription.loss_value(torch, self.scenario.loss, Y, Tt)
        wrt = [Y, *zs.values(), *inputs, *self._params.values()]
        grads = torch.autograd.grad(L / N, wrt, allow_unused=True)
        grads = [torch.zeros_like(t) if g is None else g for t, g in zip(wrt, grads)]
        n_z, n_x = len(zs), len(inputs)
        DY = grads[0]
        DZ = dict(zip(zs, grads[1:1 + n_z]))
        DX = grads[1 + n_z:1 + n_z + n_x]
        D = dict(zip(self._params, grads[1 + n_z + n_x:]))

        trace: Trace = {}

        def keep(key: str, value: Any) -> None:
            trace[key] = value.detach().numpy().copy()

        keep("X", Xt)
        keep("T", Tt)
        keep("Y", Y)
        keep("DY", DY)
        keep("loss", L)
        trace["loss"] = trace["loss"].reshape(())
        for i, spec in enumerate(self.scenario.layers, start=1):
            keep(f"X{i}", inputs[i - 1])
            if i in zs:
                keep(f"Z{i}", zs[i])
                keep(f"DZ{i}", DZ[i])
            for param, _ in spec.optimizers:
                if param in ("W", "b"):
                    keep(f"D{param}{i}", D[f"{param}{i}"])
            keep(f"DX{i}", DX[i - 1])
            for param, _ in spec.optimizers:
                if param != "W" and param != "b":
                    keep(f"D{param}{i}", D[f"{param}{i}"])

        with torch.no_grad():
            for key, p in self._params.items():
                opt = self._optimizers[key]
                transcription.optimizer_update(opt.name, opt.mu, p, self._velocity.get(key), D[key], lr)
        for key, p in self._params.items():
            keep(key, p)
        self.dtypes = {key: "float64" for key in trace}
        return trace
