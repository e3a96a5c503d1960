"""The scalable reference: float64 torch.autograd of the forward definitions ("autodiff oracle").

Only the FORWARD pass is written here, once, in torch float64, from the definitions below;
every gradient in a trace comes from ``torch.autograd.grad`` of ``L / N``. No hand-written
backward equation and no Nerva library is used, so a bug in a backend's backpropagation cannot
be copied into the reference. It has the interface of :class:`adapters.nerva_driver.NervaAdapter`
(``setup``, ``build``, ``get_state``, ``set_state``, ``step``, ``precision``, ``dtypes``) and
its traces have exactly the keys of a Nerva backend's trace.

Row layout (one sample per row); X is (N, D), W is (K, D), b is (K,).

Layers (``Z`` and ``DZ`` are traced for every kind except Linear):

- Linear:              Y = X W^T + b
- activation layers:   Z = X W^T + b,  Y = f(Z) with f applied element-wise:
    ReLU               f(z) = max(0, z)                          torch.relu
    Sigmoid            f(z) = 1 / (1 + exp(-z))                  torch.sigmoid
    HyperbolicTangent  f(z) = tanh(z)                            torch.tanh
    LeakyReLU(alpha)   f(z) = max(z, alpha z)                    written where(z > 0, max(1, alpha) z,
                                                                 min(1, alpha) z), equal for every alpha
    AllReLU(alpha)     f(z) = alpha z if z < 0, else z           where(z < 0, alpha z, z)
    ELU(alpha)         f(z) = z if z > 0, else alpha (exp(z) - 1)
                       (exp is taken of where(z > 0, 0, z), so the unused branch cannot overflow
                       and poison the gradient with 0 * inf)
    SReLU              f(z) = tl + al (z - tl)   if z <= tl
                              z                  if tl < z < tr
                              tr + ar (z - tr)   if z >= tr
                       with the layer's trainable [al, tl, ar, tr] (parameter ``srelu{i}``)
- Softmax:             Z = X W^T + b,  Y = softmax(Z) over each row      torch.softmax
- LogSoftmax:          Z = X W^T + b,  Y = log_softmax(Z) over each row  torch.log_softmax
- BatchNormalization:  R = X - colmean(X),  Sigma = colmean(R^2) (biased),
                       Z = R / sqrt(Sigma + 1e-7),  Y = gamma Z + beta   (no W, b; Z is traced)

Losses, SUMS over the batch (T the targets):

- SquaredError            L = sum (Y - T)^2
- CrossEntropy            L = -sum T log(Y)
- SoftmaxCrossEntropy     L = -sum T log_softmax(Y)           (rows)
- LogisticCrossEntropy    L = -sum T log(sigmoid(Y))          torch.nn.functional.logsigmoid
- NegativeLogLikelihood   L = -sum_rows log(sum_k Y T)
- AbsoluteError           L = sum |Y - T|

A step (Nerva's training loop): ``Y = forward(X)``, ``L = loss(Y, T)``; with N the batch size,
every traced gradient is that of ``L / N``: ``DY``, ``DZ{i}`` (BatchNormalization: wrt its
normalized Z), ``DW{i}``, ``Db{i}``, ``Dgamma{i}``, ``Dbeta{i}``, ``Dsrelu{i}`` and ``DX{i}``
(wrt the layer's input). Then, under ``torch.no_grad()``, each parameter x with gradient Dx is
updated by its own optimizer, velocity v starting at 0 and kept across steps:

- GradientDescent   x -= eta Dx
- Momentum(mu)      v = mu v - eta Dx;  x += v
- Nesterov(mu)      v = mu v - eta Dx;  x += mu v - eta Dx

Kinks: what autograd returns exactly AT a non-differentiable point with this formulation (a
one-sided derivative each time; they coincide with Nerva's hand-written gradients):

- ReLU:        torch.relu'(0) = 0 (the left derivative).
- LeakyReLU:   at z = 0 the ``z > 0`` test fails, so f'(0) = min(1, alpha) (= alpha for
               alpha <= 1, the left derivative).
- AllReLU:     at z = 0 the ``z < 0`` test fails, so f'(0) = 1 (the right derivative).
- ELU:         at z = 0 the ``z > 0`` test fails, so f'(0) = alpha (the left derivative).
- SReLU:       at z = tl the first piece is taken: df/dz = al, df/dal = 0, df/dtl = 1 - al;
               at z = tr (> tl) the third piece: df/dz = ar, df/dar = 0, df/dtr = 1 - ar.
               (Both left of tl and right of tr are one-sided limits from the outer pieces.)
- AbsoluteError: |Y - T|' at Y = T is sign(0) = 0 (torch.abs's subgradient; neither side).
- Everything else (Sigmoid, tanh, softmax, the other losses, BatchNormalization with its
  epsilon) is smooth.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np

from harness.core.components import BN_EPSILON, VELOCITY_OPTIMIZERS
from harness.core.process import cpu_only
from harness.spec.scenario import Scenario

Trace = dict[str, np.ndarray]



# -- the forward definitions ------------------------------------------------------------------
def activation(torch: Any, kind: str, arg: dict[str, float], Z: Any, srelu: Any = None) -> Any:
    """Y = f(Z) for an activation layer (formulas and kink conventions: module docstring)."""
    if kind == "ReLU":
        return torch.relu(Z)
    if kind == "Sigmoid":
        return torch.sigmoid(Z)
    if kind == "HyperbolicTangent":
        return torch.tanh(Z)
    if kind == "LeakyReLU":  # max(z, alpha z)
        alpha = arg["alpha"]
        return torch.where(Z > 0, max(1.0, alpha) * Z, min(1.0, alpha) * Z)
    if kind == "AllReLU":
        alpha = arg["alpha"]
        return torch.where(Z < 0, alpha * Z, Z)
    if kind == "ELU":
        alpha = arg["alpha"]
        positive = Z > 0
        negative = torch.where(positive, torch.zeros_like(Z), Z)
        return torch.where(positive, Z, alpha * (torch.exp(negative) - 1))
    if kind == "SReLU":
        al, tl, ar, tr = srelu[0], srelu[1], srelu[2], srelu[3]
        return torch.where(Z <= tl, tl + al * (Z - tl), torch.where(Z < tr, Z, tr + ar * (Z - tr)))
    raise ValueError(f"the autodiff oracle has no activation {kind!r}")


def batch_normalization(torch: Any, X: Any, gamma: Any, beta: Any) -> tuple[Any, Any]:
    """(Z, Y): R = X - colmean(X), Sigma = colmean(R^2), Z = R / sqrt(Sigma + eps), Y = gamma Z + beta."""
    R = X - X.mean(dim=0, keepdim=True)
    Sigma = (R * R).mean(dim=0, keepdim=True)
    Z = R / torch.sqrt(Sigma + BN_EPSILON)
    return Z, gamma * Z + beta


def loss_value(torch: Any, name: str, Y: Any, T: Any) -> Any:
    """L(Y, T), a sum over the batch (formulas: module docstring)."""
    if name == "SquaredError":
        return ((Y - T) ** 2).sum()
    if name == "CrossEntropy":
        return -(T * torch.log(Y)).sum()
    if name == "SoftmaxCrossEntropy":
        return -(T * torch.log_softmax(Y, dim=1)).sum()
    if name == "LogisticCrossEntropy":
        return -(T * torch.nn.functional.logsigmoid(Y)).sum()
    if name == "NegativeLogLikelihood":
        return -torch.log((Y * T).sum(dim=1)).sum()
    if name == "AbsoluteError":
        return torch.abs(Y - T).sum()
    raise ValueError(f"the autodiff oracle has no loss {name!r}")


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

    def get_state(self) -> dict[str, np.ndarray]:
        """Parameters and velocities (``W1.v``, Momentum/Nesterov only) as float64 copies."""
        state = {}
        for key, p in self._params.items():
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
                Z, h = batch_normalization(torch, h, P[f"gamma{i}"], P[f"beta{i}"])
                zs[i] = Z
                continue
            Z = h @ P[f"W{i}"].T + P[f"b{i}"]
            if kind == "Linear":
                h = Z
            elif kind == "Softmax":
                zs[i], h = Z, torch.softmax(Z, dim=1)
            elif kind == "LogSoftmax":
                zs[i], h = Z, torch.log_softmax(Z, dim=1)
            else:
                zs[i], h = Z, activation(torch, kind, spec.arg, Z, P.get(f"srelu{i}"))
        return h, inputs, zs

    def step(self, X: np.ndarray, T: np.ndarray, lr: float) -> Trace:
        """One SGD step; every intermediate as a float64 NumPy copy (keys as a Nerva trace)."""
        torch = self.torch
        N = X.shape[0]
        Xt = self._tensor(X).requires_grad_(True)
        Tt = self._tensor(T)
        Y, inputs, zs = self._forward(Xt)
        L = loss_value(torch, self.scenario.loss, Y, Tt)
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
                opt, Dx = self._optimizers[key], D[key]
                if opt.name == "GradientDescent":
                    p -= lr * Dx
                elif opt.name == "Momentum":
                    v = self._velocity[key]
                    v.mul_(opt.mu).sub_(lr * Dx)
                    p += v
                elif opt.name == "Nesterov":
                    v = self._velocity[key]
                    v.mul_(opt.mu).sub_(lr * Dx)
                    p += opt.mu * v - lr * Dx
                else:
                    raise ValueError(f"the autodiff oracle has no optimizer {opt.name!r}")
        for key, p in self._params.items():
            keep(key, p)
        self.dtypes = {key: "float64" for key in trace}
        return trace
