"""Backends behind one interface (:class:`adapters.nerva_driver.NervaAdapter`).

The four Nerva libraries are registered under the entry-point group
``nerva_consistency.adapters`` (see pyproject.toml); a user can plug in their own MLP by
registering a class with the same interface there. Nothing here imports a framework: a backend
is imported only when it is built.
"""

from __future__ import annotations

import importlib
import importlib.util
from importlib.metadata import entry_points

from harness.core.components import BACKENDS
from harness.core.errors import BackendUnavailable

BUILTIN = {
    "numpy": "adapters.numpy_adapter:NumpyAdapter",
    "torch": "adapters.torch_adapter:TorchAdapter",
    "jax": "adapters.jax_adapter:JaxAdapter",
    "tensorflow": "adapters.tensorflow_adapter:TensorflowAdapter",
}
# What must be importable for each built-in backend (checked without importing it). A built-in
# backend's name is also its extra in pyproject.toml, which the install hint names.
REQUIRES = {
    "numpy": ("numpy", "nerva_numpy"),
    "torch": ("torch", "nerva_torch"),
    "jax": ("jax", "nerva_jax"),
    "tensorflow": ("tensorflow", "nerva_tensorflow"),
}

# References with the same interface: exact SymPy/mpmath, or float64 autodiff of the same
# forward definitions (never the libraries' hand-written backward code).
ORACLES = {
    "sympy": ("adapters.sympy_oracle:SympyOracle", ("sympy", "mpmath")),
    "autodiff": ("adapters.autodiff_oracle:AutodiffOracle", ("torch",)),
}


def registry() -> dict[str, str]:
    """Backend name -> "module:Class", the built-ins first, then plug-ins."""
    found = dict(BUILTIN)
    for ep in entry_points(group="nerva_consistency.adapters"):
        found.setdefault(ep.name, ep.value)
    return found


def why_unavailable(name: str) -> str | None:
    """None when the backend can be used, else a one-line reason (nothing is imported)."""
    reg = registry()
    if name not in reg:
        return f"unknown backend {name!r}; choose from {', '.join(reg)}"
    for module in REQUIRES.get(name, (reg[name].split(":")[0],)):
        if importlib.util.find_spec(module) is None:
            hint = f" (pip install 'nerva-consistency[{name}]' -c constraints.txt)" if name in BACKENDS else ""
            return f"backend {name!r} is unavailable: module {module!r} is not installed{hint}"
    return None


def available() -> list[str]:
    return [name for name in registry() if why_unavailable(name) is None]


def load(name: str):
    """A fresh adapter instance for ``name``; raises BackendUnavailable with the reason."""
    reason = why_unavailable(name)
    if reason:
        raise BackendUnavailable(reason)
    module, _, cls = registry()[name].partition(":")
    return getattr(importlib.import_module(module), cls)()


def why_oracle_unavailable(name: str) -> str | None:
    if name not in ORACLES:
        return f"unknown oracle {name!r}; choose from auto, {', '.join(ORACLES)}, none"
    for module in ORACLES[name][1]:
        if importlib.util.find_spec(module) is None:
            return f"oracle {name!r} is unavailable: module {module!r} is not installed"
    return None


def load_oracle(name: str):
    reason = why_oracle_unavailable(name)
    if reason:
        raise BackendUnavailable(reason)
    module, _, cls = ORACLES[name][0].partition(":")
    return getattr(importlib.import_module(module), cls)()
