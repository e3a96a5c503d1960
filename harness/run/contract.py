"""The backend contract checked (docs/plugins.md): what a backend declares it provides, the
minimum a run needs, and every trace against the declaration.

- Before any step (:func:`omitted`): a backend whose ``provides`` leaves out a tensor of
  :func:`harness.core.backend.minimum` is refused (SpecError, exit 2, with the list); a tensor
  that no participant of the run provides (the rounding bound is computed from the reference's
  tensors) is refused the same way. What a backend may leave out (a layer's X, Z, DZ) is
  returned, so that every report says "not judged for mymlp: DZ1, DZ2".
- After each step (:func:`trace_problem`): a declared tensor missing from the trace, or one that
  is not a NumPy array of the scenario's shape in float64 or the run's dtype, is the backend's
  finding (the runner records it like an exception the backend raised), never an error of the
  harness. A trace may keep each tensor in the dtype it was computed in (the built-in adapters
  do: no upcast on the thread that steps the backends); the judge reads every tensor as
  float64, which a float32 value is exactly. ``get_state()`` returns float64.
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np

from harness.core.components import VELOCITY_OPTIMIZERS
from harness.core.backend import MINIMUM_GLOBAL, minimum
from harness.core.errors import SpecError
from harness.core.keys import GRADIENT, Key, Trace
from harness.judge.compare import tensor_order
from harness.spec.scenario import Scenario

GUIDE = "docs/plugins.md"


def provided(scenario: Scenario, backend: Any) -> list[str]:
    """The key names of the scenario's tensors that ``backend`` declares (all without ``provides``)."""
    kinds = getattr(backend, "provides", None)
    return [Key(*k).name for k in tensor_order(scenario) if kinds is None or k[0] in kinds]


def omitted(scenario: Scenario, backends: dict[str, Any], oracle: str | None) -> dict[str, list[str]]:
    """Backend -> the scenario's tensors it does not provide (only backends that omit some).

    SpecError, before any step, when one omits a tensor of the minimum, or when a tensor is
    provided by no participant and there is no oracle to take it from."""
    out: dict[str, list[str]] = {}
    for name, backend in backends.items():
        have = set(provided(scenario, backend))
        missing = [Key(*k) for k in tensor_order(scenario) if Key(*k).name not in have]
        short = [k.name for k in missing if minimum(k)]
        if short:
            raise SpecError(f"backend {name!r} does not provide {', '.join(short)}: every backend must provide "
                            f"{', '.join(MINIMUM_GLOBAL)} and each layer's DX, every parameter after the update and "
                            f"its gradient; add them to its trace and its `provides` ({GUIDE})")
        if missing:
            out[name] = [k.name for k in missing]
    if oracle is None and backends and out:
        nobody = [k for k in out[next(iter(out))] if all(k in out.get(b, ()) for b in backends)]
        if len(out) == len(backends) and nobody:
            raise SpecError(f"no backend of this run provides {', '.join(nobody)}, which the rounding bound needs: "
                            "add a Nerva library to --backends (e.g. numpy) or run in lockstep with an oracle")
    return out


def shapes(scenario: Scenario, state: dict[str, np.ndarray], X: np.ndarray, T: np.ndarray) -> dict[str, tuple]:
    """The shape of every tensor of the scenario's trace for a batch (X, T) and the parameters
    ``state`` (a gradient has its parameter's shape)."""
    N, units = X.shape[0], [scenario.input_size, *(spec.units for spec in scenario.layers)]  # each layer's width
    out: dict[str, tuple] = {"X": X.shape, "T": T.shape, "Y": (N, units[-1]), "DY": (N, units[-1]), "loss": ()}
    grads = {g: p for p, g in GRADIENT.items()}
    for tensor, layer in tensor_order(scenario):
        key = Key(tensor, layer)
        if layer is None:
            continue
        if tensor in ("X", "DX"):
            out[key.name] = (N, units[layer - 1])
        elif tensor in ("Z", "DZ"):
            out[key.name] = (N, units[layer])
        else:
            out[key.name] = np.shape(state[Key(grads.get(tensor, tensor), layer).name])
    return out


def trace_problem(trace: Any, want: list[str], expected: dict[str, tuple], dtype: str = "float64") -> str | None:
    """What is wrong with one step's trace, in one line (None: nothing): not a dict, a declared
    tensor missing, not a NumPy array, neither float64 nor ``dtype`` (the run's), or not the
    scenario's shape."""
    accepted, copies = ("float64", "float64") if dtype == "float64" else (f"float64 or the run's {dtype}", f"float64 or {dtype}")
    if not isinstance(trace, dict):
        return f"step() returned a {type(trace).__name__}, not a dict of tensor name -> float64 NumPy array ({GUIDE})"
    lacking = [k for k in want if k not in trace]
    if lacking:
        return f"its trace lacks {', '.join(lacking)}, which it provides (declare what it leaves out in `provides`)"
    for name in want:
        a = trace[name]
        if not isinstance(a, np.ndarray):
            return f"{name} is a {type(a).__module__}.{type(a).__name__}, not a NumPy array (return float64 copies)"
        if a.dtype != np.float64 and a.dtype != dtype:
            return f"{name} is {a.dtype}, not {accepted} (return {copies} copies; say the dtype computed in `dtypes`)"
        if a.shape != tuple(expected[name]):
            return f"{name} has shape {a.shape}, the scenario's is {tuple(expected[name])}"
    return None


def state_keys(scenario: Scenario) -> list[str]:
    """What ``get_state()`` returns: every parameter (``W1``, ``srelu2`` …) and, for a Momentum
    or Nesterov parameter, its velocity (``W1.v``)."""
    out = []
    for i, spec in enumerate(scenario.layers, 1):
        for param, opt in spec.optimizers:
            out.append(f"{param}{i}")
            if opt.name in VELOCITY_OPTIMIZERS:
                out.append(f"{param}{i}.v")
    return out


def state_problem(state: Any, scenario: Scenario, reference: dict[str, np.ndarray]) -> str | None:
    """What is wrong with what ``get_state()`` returned (None: nothing): every key of
    :func:`state_keys` as a float64 NumPy array of its parameter's shape."""
    if not isinstance(state, dict):
        return f"get_state() returned a {type(state).__name__}, not a dict of parameter name -> float64 NumPy array"
    want = state_keys(scenario)
    lacking = [k for k in want if k not in state]
    if lacking:
        return f"get_state() lacks {', '.join(lacking)} (parameters and the velocities of Momentum/Nesterov ones)"
    return trace_problem(state, want, {k: np.shape(reference[k.removesuffix(".v")]) for k in want})


def check(trace: Trace, scenario: Scenario, want: list[str], state: dict[str, np.ndarray], X: np.ndarray,
          T: np.ndarray) -> str | None:
    """:func:`trace_problem` with the scenario's shapes for this batch and its dtype."""
    return trace_problem(trace, want, shapes(scenario, state, X, T), scenario.dtype)


def velocities(backend: Any) -> dict[str, np.ndarray]:
    """The optimizer velocities (``W1.v`` …) a trajectory step starts from: ``get_state(parameters=False)``
    where the backend takes that argument (the built-in adapters: the trace already holds the
    parameters), else the ``.v`` entries of its whole state (a plug-in's plain ``get_state()``)."""
    try:
        takes = "parameters" in inspect.signature(backend.get_state).parameters
    except (TypeError, ValueError):
        takes = False
    if takes:
        return backend.get_state(parameters=False)
    return {k: v for k, v in backend.get_state().items() if k.endswith(".v")}
