"""Which reference a run is judged against: the exact SymPy oracle, float64 autodiff, or none.

- ``sympy``: every value exact (rationals and mpmath at 40 digits) from SymPy derivatives of the
  forward definitions (:mod:`harness.oracle.symbolic`). Pure Python: for small networks.
- ``autodiff``: float64 torch.autograd of the same forward definitions
  (:mod:`adapters.autodiff_oracle`): any size, error ~1e-16 relative. Its own rounding is not in
  the bound of a float64 run, so a float64 run judged against it may flag what is its own error.
- ``none``: backends are compared with each other (the median).

An oracle is used in ``lockstep`` mode, where every backend starts each step from the state the
oracle reached (rounded to the run's dtype), so each backend's error is its own. In
``trajectory`` mode backends follow their own paths and are compared with each other.
``auto`` (the default) picks sympy when the scenario is small enough (see :func:`symbolic_cost`)
and autodiff otherwise; the choice and its reason are printed and recorded in the report.
"""

from __future__ import annotations

import adapters
from harness.core.components import LAYERS, ORACLE_CHOICES
from harness.core.errors import SpecError
from harness.spec.scenario import Scenario

SYMPY_LIMIT = 400_000  # multiply-adds per step the exact oracle takes on (16-32-32-10, batch 16: ~35 000)


def symbolic_cost(scenario: Scenario) -> int:
    """Multiply-adds of one exact step: the linear maps, softmax and BatchNormalization Jacobians."""
    N, width, cost = scenario.batch_size, scenario.input_size, 0
    for layer in scenario.layers:
        if LAYERS[layer.kind].has_weights:
            cost += 3 * N * width * layer.units  # forward, DW and DX
            width = layer.units
        else:
            cost += N * N * width  # one N x N Jacobian per column
        if LAYERS[layer.kind].row:
            cost += N * width * width
    return cost


def choose(scenario: Scenario, requested: str | None) -> tuple[str | None, str]:
    """(oracle or None, why) for a run; SpecError for a request that cannot be honoured."""
    requested = requested or "auto"
    if requested not in ORACLE_CHOICES:
        raise SpecError(f"unknown oracle {requested!r}; choose one of {', '.join(ORACLE_CHOICES)}")
    if requested == "none":
        return None, "none (asked): backends compared with each other"
    if scenario.mode != "lockstep":
        if requested != "auto":
            raise SpecError(f"--oracle {requested} needs --mode lockstep (each step judged at the oracle's point)")
        return None, "none: trajectory mode compares backends with each other (--mode lockstep for an oracle)"
    if requested == "auto":
        cost = symbolic_cost(scenario)
        if cost <= SYMPY_LIMIT and adapters.why_oracle_unavailable("sympy") is None:
            return "sympy", f"sympy (auto: {cost:,} multiply-adds per step <= {SYMPY_LIMIT:,})"
        if adapters.why_oracle_unavailable("autodiff") is None:
            return "autodiff", f"autodiff (auto: {cost:,} multiply-adds per step is too many for exact work)"
        return None, "none: neither oracle is installed"
    reason = adapters.why_oracle_unavailable(requested)
    if reason:
        raise SpecError(reason)
    return requested, f"{requested} (asked)"
