"""The one float64 torch transcription of the forward definitions (the autodiff oracle's).

:mod:`harness.oracle.definitions` is the definition of every component; this is the same forward
pass written once in torch, for ``torch.autograd`` to differentiate (``adapters.autodiff_oracle``)
where the exact oracle is too slow. tests/test_autodiff_oracle.py checks it element by element
against the SymPy definitions. ``torch`` is passed in: no framework is imported here.

Row layout (one sample per row); X is (N, D), W is (K, D), b is (K,).

- activations, applied element-wise (:func:`activation`):
    ReLU               f(z) = max(0, z)                          torch.relu
    Sigmoid            f(z) = 1 / (1 + exp(-z))                  torch.sigmoid
    HyperbolicTangent  f(z) = tanh(z)                            torch.tanh
    LeakyReLU(alpha)   f(z) = max(z, alpha z)                    written where(z > 0, max(1, alpha) z,
                                                                 min(1, alpha) z), equal for every alpha
    AllReLU(alpha)     f(z) = alpha z if z < 0, else z           where(z < 0, alpha z, z)
    SReLU              f(z) = tl + al (z - tl)   if z <= tl
                              z                  if tl < z < tr
                              tr + ar (z - tr)   if z >= tr
                       with the layer's trainable [al, tl, ar, tr]
- row functions (:func:`row_function`): softmax and log_softmax of each row (torch.softmax,
  torch.log_softmax);
- BatchNormalization (:func:`batch_normalization`): R = X - colmean(X), Sigma = colmean(R^2)
  (biased), Z = R / sqrt(Sigma + epsilon), Y = gamma Z + beta, epsilon the definitions' EPSILON;
- losses, SUMS over the batch (:func:`loss_value`, T the targets): SquaredError sum (Y - T)^2,
  CrossEntropy -sum T log(Y), SoftmaxCrossEntropy -sum T log_softmax(Y) (rows),
  LogisticCrossEntropy -sum T log(sigmoid(Y)) (torch.nn.functional.logsigmoid),
  NegativeLogLikelihood -sum_rows log(sum_k Y T);
- custom components (ELU, AbsoluteError, a user's): their SymPy definition itself, lambdified
  into torch (``sp.lambdify(..., modules="torch")``: a Piecewise becomes ``torch.where``), so
  there is nothing to transcribe by hand; a loss is the sum of its elements' losses. A top-level
  Piecewise is evaluated piece by piece where each piece is taken, so a piece that overflows
  where it is not taken (exp of a large z) does not poison the gradient.
- the optimizer updates (:func:`optimizer_update`), in place: GradientDescent x -= eta Dx;
  Momentum(mu) v = mu v - eta Dx, x += v; Nesterov(mu) v = mu v - eta Dx, x += mu v - eta Dx.

Kinks: what autograd returns exactly AT a non-differentiable point with this formulation (a
one-sided derivative each time; they coincide with Nerva's hand-written gradients):

- ReLU:        torch.relu'(0) = 0 (the left derivative).
- LeakyReLU:   at z = 0 the ``z > 0`` test fails, so f'(0) = min(1, alpha) (= alpha for
               alpha <= 1, the left derivative).
- AllReLU:     at z = 0 the ``z < 0`` test fails, so f'(0) = 1 (the right derivative).
- ELU:         at z = 0 the ``z > 0`` test fails, so f'(0) = alpha (the left derivative).
               (A custom Piecewise takes the branch whose condition holds, as ``torch.where`` does.)
- SReLU:       at z = tl the first piece is taken: df/dz = al, df/dal = 0, df/dtl = 1 - al;
               at z = tr (> tl) the third piece: df/dz = ar, df/dar = 0, df/dtr = 1 - ar.
               (Both left of tl and right of tr are one-sided limits from the outer pieces.)
- AbsoluteError: |Y - T|' at Y = T is sign(0) = 0 (torch.abs's subgradient; neither side).
- Everything else (Sigmoid, tanh, softmax, the other losses, BatchNormalization with its
  epsilon) is smooth.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import sympy as sp

from harness.core.components import CUSTOM
from harness.oracle.definitions import EPSILON, X, custom_activation_definition, loss_expression, loss_symbols

BN_EPSILON_FLOAT = float(EPSILON)  # the binary64 float itself (EPSILON is its exact value)


def activation(torch: Any, kind: str, arg: dict[str, float], Z: Any, srelu: Any = None) -> Any:
    """Y = f(Z) for an activation layer; ``srelu``: SReLU's [al, tl, ar, tr] (a tensor)."""
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
    if kind == "SReLU":
        al, tl, ar, tr = srelu[0], srelu[1], srelu[2], srelu[3]
        return torch.where(Z <= tl, tl + al * (Z - tl), torch.where(Z < tr, Z, tr + ar * (Z - tr)))
    if kind in CUSTOM:
        f, params = _custom_activation(kind)
        return f(Z, *[arg[name] for name in params])
    raise ValueError(f"the autodiff oracle has no activation {kind!r}")


@functools.lru_cache(maxsize=None)
def _custom_activation(kind: str) -> tuple[Callable, tuple[str, ...]]:
    expr, params = custom_activation_definition(kind)
    return _elementwise([X, *params], expr), tuple(p.name for p in params)


@functools.lru_cache(maxsize=None)
def _custom_loss(name: str) -> Callable:
    (y,), (t,) = loss_symbols(1)
    return _elementwise([y, t], loss_expression(name, (y,), (t,)))


def _elementwise(symbols: list[sp.Symbol], expr: sp.Expr) -> Callable:
    """``expr`` of elementwise tensors, lambdified into torch. A top-level Piecewise is evaluated
    piece by piece on the elements where that piece is the first whose condition holds (as
    SymPy reads it), and nowhere else: a piece that would overflow where it is not taken (exp of a
    large z) then never enters the value or the gradient, as it would with ``torch.where``
    (autograd's 0 * inf). The values are the same operations on the same elements."""
    if not isinstance(expr, sp.Piecewise):
        return sp.lambdify(symbols, expr, modules="torch")
    pieces = [(sp.lambdify(symbols, value, modules="torch"), sp.lambdify(symbols, cond, modules="torch"))
              for value, cond in expr.args]

    def piecewise(first: Any, *rest: Any) -> Any:
        import torch

        args = torch.broadcast_tensors(*[torch.as_tensor(a, dtype=torch.float64) for a in (first, *rest)])
        out, free = torch.zeros_like(args[0]), torch.ones_like(args[0], dtype=torch.bool)
        for value, cond in pieces:
            taken = free & torch.as_tensor(cond(*args), dtype=torch.bool).expand_as(free)
            if taken.any():
                values = torch.as_tensor(value(*[a[taken] for a in args]), dtype=out.dtype)
                out = out.index_put((taken,), values.expand(int(taken.sum())))
            free = free & ~taken
        return out

    return piecewise


def forget_custom_components() -> None:
    """Drop the lambdified custom components (their names are registered afresh per command)."""
    _custom_activation.cache_clear()
    _custom_loss.cache_clear()


def row_function(torch: Any, name: str, Z: Any) -> Any:
    """softmax or log_softmax of every row of Z."""
    if name == "softmax":
        return torch.softmax(Z, dim=1)
    if name == "log_softmax":
        return torch.log_softmax(Z, dim=1)
    raise ValueError(f"the autodiff oracle has no row function {name!r}")


def batch_normalization(torch: Any, X: Any, gamma: Any, beta: Any) -> tuple[Any, Any]:
    """(Z, Y): R = X - colmean(X), Sigma = colmean(R^2), Z = R / sqrt(Sigma + eps), Y = gamma Z + beta."""
    R = X - X.mean(dim=0, keepdim=True)
    Sigma = (R * R).mean(dim=0, keepdim=True)
    Z = R / torch.sqrt(Sigma + BN_EPSILON_FLOAT)
    return Z, gamma * Z + beta


def loss_value(torch: Any, name: str, Y: Any, T: Any) -> Any:
    """L(Y, T), a sum over the batch."""
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
    if name in CUSTOM:
        return _custom_loss(name)(Y, T).sum()
    raise ValueError(f"the autodiff oracle has no loss {name!r}")


def optimizer_update(name: str, mu: float | None, p: Any, v: Any, Dx: Any, lr: float) -> None:
    """Update the parameter ``p`` (and the velocity ``v``, Momentum and Nesterov) in place,
    under ``torch.no_grad()`` at the caller."""
    if name == "GradientDescent":
        p -= lr * Dx
    elif name == "Momentum":
        v.mul_(mu).sub_(lr * Dx)
        p += v
    elif name == "Nesterov":
        v.mul_(mu).sub_(lr * Dx)
        p += mu * v - lr * Dx
    else:
        raise ValueError(f"the autodiff oracle has no optimizer {name!r}")
