"""Backends behind one interface (:class:`adapters.nerva_driver.NervaAdapter`).

The four Nerva libraries are registered under the entry-point group
``nerva_consistency.adapters`` (see pyproject.toml); a user can plug in their own MLP by
registering a class with the same interface there (docs/plugins.md). A plug-in is opt-in: the
default backends are the four libraries (:func:`defaults`); a plug-in runs when it is named, or
with ``--backends all``. What a plug-in is, exactly, is recorded in every report
(:func:`provenance`: its distribution and version, and its module file's hash when the
distribution does not list that file). Nothing here imports a framework or a plug-in: a backend
is imported only when it is built.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
from importlib.metadata import entry_points
from pathlib import Path

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


GROUP = "nerva_consistency.adapters"
ALL = "all"  # --backends all: every installed backend, plug-ins too


def _plugin_points() -> dict:
    """Plug-in name -> its entry point (the group's names that are not built-in)."""
    found: dict = {}
    for ep in entry_points(group=GROUP):
        if ep.name not in BUILTIN:
            found.setdefault(ep.name, ep)
    return found


def registry() -> dict[str, str]:
    """Backend name -> "module:Class", the built-ins first, then plug-ins."""
    return {**BUILTIN, **{name: ep.value for name, ep in _plugin_points().items()}}


def plugins() -> list[str]:
    """The installed plug-ins' names."""
    return list(_plugin_points())


def provenance(name: str) -> str | None:
    """What a plug-in is: "its-dist 0.1.0", plus " (mlp.py sha256 0123456789ab)" when its
    distribution does not list the module's file (a .dist-info beside a checkout), so a change
    of the code shows; None for a built-in backend."""
    ep = _plugin_points().get(name)
    if ep is None:
        return None
    dist = getattr(ep, "dist", None)
    text = f"{dist.metadata['Name']} {dist.version}" if dist is not None else "no distribution"
    spec = _spec(ep.value.split(":")[0])
    origin = Path(spec.origin) if getattr(spec, "origin", None) and spec.has_location else None
    listed = {Path(str(dist.locate_file(f))).resolve() for f in (dist.files or [])} if dist is not None else set()
    if origin is not None and origin.resolve() not in listed:
        text += f" ({origin.name} sha256 {hashlib.sha256(origin.read_bytes()).hexdigest()[:12]})"
    return text


def _spec(module: str):
    """Where ``module`` would be imported from (None: nowhere); imports a parent package, never
    the module itself. A parent package that raises is there: loading it is the backend's failure."""
    try:
        return importlib.util.find_spec(module)
    except (ModuleNotFoundError, ValueError):  # a parent package is missing
        return None
    except Exception:
        return module


def defaults() -> list[str]:
    """The backends a run uses without ``--backends``: the four Nerva libraries that are installed."""
    return [name for name in BACKENDS if why_unavailable(name) is None]


def why_unavailable(name: str) -> str | None:
    """None when the backend can be used, else a one-line reason (nothing is imported)."""
    reg = registry()
    if name not in reg:
        return f"unknown backend {name!r}; choose from {', '.join(reg)}"
    for module in REQUIRES.get(name, (reg[name].split(":")[0],)):
        if _spec(module) is None:
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
