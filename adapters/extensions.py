"""The ELU and AbsoluteError extensions of the Nerva libraries: code under test, written once for any backend.

nerva-sympy's cross-framework test adds these two components to the libraries; this is that
IMPLEMENTATION, in each library's own array module, and it is judged like the rest of the
library's code. The DEFINITION it is judged against is harness.oracle's
(:mod:`harness.oracle.definitions`), never this code.

``xp`` is a small namespace of array functions the adapter hands in (``where``, ``exp``,
``sign``, ``abs``, ``sum``, ``ones_like``); the classes derive from the backend's own
``ActivationFunction`` / ``LossFunction`` so the backend's layers use them like their own.
The components are declared in :mod:`harness.core.components`.
"""

from __future__ import annotations

from typing import Any


def elu_activation(base: type, xp: Any, alpha: float) -> Any:
    """ELU(alpha): f(X) = X where X > 0, alpha (exp(X) - 1) elsewhere; f'(X) = 1 or alpha exp(X)."""

    # exp(-|X|) is exp(X) exactly where it is used (X <= 0) and cannot overflow where it is not
    class ELUActivation(base):  # type: ignore[misc, valid-type]
        def __call__(self, X):
            return xp.where(X > 0, X, alpha * (xp.exp(-xp.abs(X)) - 1))

        def gradient(self, X):
            return xp.where(X > 0, xp.ones_like(X), alpha * xp.exp(-xp.abs(X)))

        def __repr__(self) -> str:
            return f"ELU(alpha={alpha})"

    return ELUActivation()


def absolute_error_loss(base: type, xp: Any) -> Any:
    """AbsoluteError: L(Y, T) = sum |Y - T| over the batch, dL/dY = sign(Y - T)."""

    class AbsoluteErrorLossFunction(base):  # type: ignore[misc, valid-type]
        def __call__(self, Y, T):
            return xp.sum(xp.abs(Y - T))

        def gradient(self, Y, T):
            return xp.sign(Y - T)

    return AbsoluteErrorLossFunction()
