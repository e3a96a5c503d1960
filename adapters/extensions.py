"""The built-in custom components' library code: ELU and AbsoluteError, written once for any backend.

nerva-sympy's cross-framework test adds these two components to the libraries; they are declared
in :data:`harness.core.components.BUILTIN_COMPONENTS` exactly as a user declares one (a
``--components`` file), and this module is their IMPLEMENTATION: :data:`ELU` and
:data:`ABSOLUTE_ERROR` map each backend to a factory of its library's object, judged like the rest
of the library's code. The DEFINITION it is judged against is :mod:`harness.oracle.definitions`'
(:func:`~harness.oracle.definitions.elu`, :func:`~harness.oracle.definitions.absolute_error`),
never this code.

Each factory imports its framework only when called (a backend in use), and builds the class on
the library's own ``ActivationFunction`` / ``LossFunction`` so that its layers use it like their
own. ``xp`` is the small namespace of array functions these two need (``where``, ``exp``,
``sign``, ``abs``, ``sum``, ``ones_like``) in that framework.
"""

from __future__ import annotations

import functools
import importlib
import types
from typing import Any

from harness.core.components import BACKENDS


def _xp(backend: str) -> Any:
    """where / exp / sign / abs / sum / ones_like in the backend's arrays."""
    if backend == "numpy":
        return importlib.import_module("numpy")
    if backend == "torch":
        return importlib.import_module("torch")
    if backend == "jax":
        return importlib.import_module("jax.numpy")
    tf = importlib.import_module("tensorflow")
    return types.SimpleNamespace(where=tf.where, exp=tf.exp, sign=tf.sign, abs=tf.abs, sum=tf.reduce_sum,
                                 ones_like=tf.ones_like)


def _base(backend: str, module: str, name: str) -> type:
    return getattr(importlib.import_module(f"nerva_{backend}.{module}"), name)


def elu_activation(backend: str, alpha: float) -> Any:
    """ELU(alpha): f(X) = X where X > 0, alpha (exp(X) - 1) elsewhere; f'(X) = 1 or alpha exp(X)."""
    xp = _xp(backend)

    # exp(-|X|) is exp(X) exactly where it is used (X <= 0) and cannot overflow where it is not
    class ELUActivation(_base(backend, "activation_functions", "ActivationFunction")):  # type: ignore[misc]
        def __call__(self, X):
            return xp.where(X > 0, X, alpha * (xp.exp(-xp.abs(X)) - 1))

        def gradient(self, X):
            return xp.where(X > 0, xp.ones_like(X), alpha * xp.exp(-xp.abs(X)))

        def __repr__(self) -> str:
            return f"ELU(alpha={alpha})"

    return ELUActivation()


def absolute_error_loss(backend: str) -> Any:
    """AbsoluteError: L(Y, T) = sum |Y - T| over the batch, dL/dY = sign(Y - T)."""
    xp = _xp(backend)

    class AbsoluteErrorLossFunction(_base(backend, "loss_functions", "LossFunction")):  # type: ignore[misc]
        def __call__(self, Y, T):
            return xp.sum(xp.abs(Y - T))

        def gradient(self, Y, T):
            return xp.sign(Y - T)

    return AbsoluteErrorLossFunction()


ELU = {backend: functools.partial(elu_activation, backend) for backend in BACKENDS}
ABSOLUTE_ERROR = {backend: functools.partial(absolute_error_loss, backend) for backend in BACKENDS}
