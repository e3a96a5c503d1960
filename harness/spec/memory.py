"""The memory estimate: whether a model, its batch and every participant's buffers fit in the
memory available now (a run whose buffers would not fit is refused before it starts)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from harness.core.errors import SpecError

if TYPE_CHECKING:  # pragma: no cover
    from harness.spec.scenario import Scenario

BYTES = 8  # every traced value is a float64 copy


def available_memory() -> int | None:
    """Bytes of memory available now (MemAvailable), or None where it cannot be told."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _gb(n: int) -> str:
    return f"{n / 1e9:,.1f} GB" if n >= 1e8 else f"{n / 1e6:,.0f} MB"


def memory_for(need: int, what: str, mend: str) -> None:
    free = available_memory()
    if free is not None and need > free:
        raise SpecError(f"{what} needs about {_gb(need)}, but {_gb(free)} of memory is available now; {mend}")


def model_size(scenario: "Scenario") -> tuple[int, int]:
    """(parameters, activations): the elements of one model's parameters, and of one step's
    tensors for one batch (X, T, Y, DY and every layer's X, Z, DZ, DX and output)."""
    N, width = scenario.batch_size, scenario.input_size
    params, acts = 0, N * (width + 3 * scenario.output_size)
    for layer in scenario.layers:
        units = layer.units
        if layer.info.has_weights:
            params += units * width + units + (4 if layer.kind == "SReLU" else 0)
        else:
            params += 2 * width
        acts += N * (2 * width + 3 * units)
        width = units
    return params, acts


def estimate(scenario: "Scenario", n_backends: int, oracle: str | None) -> int:
    """Bytes the buffers of a run take at least (not the frameworks' own code and caches).

    Per backend and for an oracle, in float64 (the frameworks' float32 buffers are counted as
    float64, which covers their workspaces): the parameters, their gradients and velocities,
    the trace's copies of all three and the state copies (9 x parameters), and a step's tensors
    in the framework and in the trace (3 x activations). The comparator holds, for the step it
    judges and the step being computed, a reference, a bound and a ratio per element (8 x
    (2 parameters + activations)). The exact SymPy oracle holds Python numbers: 1 kB an element.
    """
    P, A = model_size(scenario)
    participants = n_backends + (oracle is not None)
    need = BYTES * (participants * (9 * P + 3 * A) + 8 * (2 * P + A))
    if oracle == "sympy":
        need += 1000 * (P + A)
    return need


def memory(scenario: "Scenario", n_backends: int, oracle: str | None, source: str = "",
           mend: str = "use smaller --sizes or --batch-size") -> None:
    """Refuse a model or batch whose buffers would not fit in the memory available now
    (``source``: where the scenario comes from, e.g. a bundle, to name in the message)."""
    P, A = model_size(scenario)
    what = source + (f"sizes {','.join(map(str, scenario.sizes))} with batch size {scenario.batch_size} "
            f"({P:,} parameters, {A:,} values per step, on {n_backends} backend(s)"
            + (f" and the {oracle} oracle)" if oracle else ")"))
    memory_for(estimate(scenario, n_backends, oracle), what, mend)


