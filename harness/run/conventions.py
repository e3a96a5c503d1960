"""What each backend returns exactly at a non-differentiable point, next to the one-sided limits.

At a kink the derivative does not exist; every implementation picks a value (ReLU'(0) = 0 in
all four Nerva libraries, sign(0) = 0 for AbsoluteError, …). Conventions are reported, never
failed: any value between the one-sided derivatives is a defensible choice, and the comparator
treats elements at or near a kink as kink events. ``nerva-consistency conventions`` prints the
table; the one-sided limits come from the exact oracle (harness.oracle.symbolic), the backend values
from each backend's own activation and loss objects evaluated exactly at the kink.

The SReLU parameters are chosen exactly representable in float32 (tl = -0.25, tr = 0.5) so a
float32 backend evaluates at the kink itself, not next to it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import adapters
from harness.core.backend import lacks_components

SRELU = {"al": 0.125, "tl": -0.25, "ar": 0.375, "tr": 0.5}


@dataclass(frozen=True)
class Site:
    label: str  # e.g. "ReLU'(0)"
    kind: str  # an activation kind, or "AbsoluteError"
    args: dict
    point: float


SITES = [
    Site("ReLU'(0)", "ReLU", {}, 0.0),
    Site("LeakyReLU(0.1)'(0)", "LeakyReLU", {"alpha": 0.1}, 0.0),
    Site("AllReLU(0.3)'(0)", "AllReLU", {"alpha": 0.3}, 0.0),
    Site("ELU(0.1)'(0)", "ELU", {"alpha": 0.1}, 0.0),
    Site("SReLU'(tl) (al=0.125, tl=-0.25)", "SReLU", SRELU, SRELU["tl"]),
    Site("SReLU'(tr) (ar=0.375, tr=0.5)", "SReLU", SRELU, SRELU["tr"]),
    Site("AbsoluteError dL/dY at Y = T", "AbsoluteError", {}, 0.0),
]


def one_sided(site: Site) -> tuple[float, float]:
    from harness.oracle import symbolic

    if site.kind == "AbsoluteError":
        left, right = symbolic.Loss("AbsoluteError", 1).one_sided(0.5, 0.5)
    else:
        left, right = symbolic.Activation(site.kind, site.args).one_sided(site.point)
    return float(left), float(right)


def backend_value(adapter, site: Site, dtype: str) -> float:
    adapter.setup()
    with adapter.precision(dtype):
        if site.kind == "AbsoluteError":
            loss = adapter.loss_function("AbsoluteError")
            Y = adapter.array(np.array([[0.5]]), dtype)
            return float(adapter.to_numpy(loss.gradient(Y, Y)).ravel()[0])
        act = adapter.activation(site.kind, site.args)
        return float(adapter.to_numpy(act.gradient(adapter.array(np.array([[site.point]]), dtype))).ravel()[0])


def not_implemented(name: str) -> str:
    """What the component suite and ``conventions`` say of a backend without the optional part."""
    return f"not implemented by {name}"


def measure(backends: list[str], dtype: str = "float32") -> list[dict]:
    """One row per kink: label, left, right, and each backend's value (or its error message;
    "not implemented by NAME" for a plug-in without the optional part, harness.core.backend.Components)."""
    models = {b: adapters.load(b) for b in backends}
    rows = []
    for site in SITES:
        left, right = one_sided(site)
        row = {"kink": site.label, "left": left, "right": right, "backends": {}}
        for name, model in models.items():
            if lacks_components(model):
                row["backends"][name] = not_implemented(name)
                continue
            try:
                row["backends"][name] = backend_value(model, site, dtype)
            except Exception as e:  # a backend that cannot evaluate there is reported, not fatal
                row["backends"][name] = f"{type(e).__name__}: {e}"
        rows.append(row)
    return rows
