"""Your own components: load a components file (``--components FILE``) or entry point and register it.

A components file is a Python module with a list ``COMPONENTS`` of
:class:`~harness.core.components.CustomActivation`, ``CustomLoss`` and ``CustomInitializer``
declarations (``harness.api`` exports them; docs/plugins.md, "Your own components"). An installed
distribution can declare one module under the entry-point group :data:`GROUP` instead. Once
loaded, their names can be used in ``--layers``, ``--loss`` and ``--init-weights`` like Nerva's
own, and each is judged against its SymPy definition (its derivative by ``sp.diff``), never
against the hand-written gradient of its implementations.

Everything in a file is checked here, before a framework is imported or a step runs: a file that
cannot be imported, has no ``COMPONENTS``, or declares a component the harness cannot use
(a definition that is not a SymPy expression of its own symbols, an implementation for an unknown
backend, a name already taken …) is bad input, one line naming the file and the component.

A command registers its components afresh (:func:`load`): what an earlier command in the same
process loaded is removed first, and every cache derived from a definition by name is dropped.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType
from typing import Any, Iterable, Sequence

import sympy as sp

from harness.core import components as catalogue
from harness.core.components import CustomActivation, CustomInitializer, CustomLoss
from harness.core.errors import SpecError
from harness.oracle import symbolic, transcription
from harness.oracle.definitions import X, loss_symbols

GROUP = "nerva_consistency.components"
"""The entry-point group of installed components modules (each entry point names a module)."""
DISTRIBUTIONS = ("normal", "uniform", "zero")
_loaded: list[str] = []  # the names the last load registered (removed by the next)


def load(paths: Sequence[str] = (), entry_point_group: str = GROUP) -> list[str]:
    """Register the components of every installed entry point and of every file in ``paths``
    (in that order), after removing those an earlier call registered. Returns their names."""
    for name in _loaded:
        catalogue.unregister(name)
    _loaded.clear()
    symbolic.forget_custom_components()
    transcription.forget_custom_components()
    modules = [(f"entry point {ep.name}", _import(f"entry point {ep.name}", ep.load))
               for ep in entry_points(group=entry_point_group)]
    modules += [(str(Path(p).resolve()), _import_file(p)) for p in paths]
    for source, module in modules:
        for component in _declared(source, module):
            check(component, source)
            catalogue.register(component, source)
            _loaded.append(component.name)
    return list(_loaded)


def loaded_files() -> list[str]:
    """The components files the current registration came from (for the reproduce commands)."""
    return sorted({catalogue.SOURCES[n] for n in _loaded if not catalogue.SOURCES[n].startswith("entry point")})


def check_implemented(scenario: Any, backends: Sequence[str]) -> None:
    """Refuse a run of a Nerva backend that a custom component of the scenario has no implementation for."""
    for name in sorted(catalogue.custom_components(scenario)):
        if name not in catalogue.CUSTOM:  # an initializer: drawn by the harness, no library code
            continue
        have = catalogue.resolve(catalogue.CUSTOM[name].implementations)
        missing = [b for b in backends if b in catalogue.BACKENDS and b not in have]
        if missing:
            raise SpecError(f"{catalogue.SOURCES[name]}: {name} has no implementation for {', '.join(missing)}; "
                            f"add one to its implementations or run --backends {','.join(have)}")


def _import(source: str, how: Any) -> ModuleType:
    try:
        return how()
    except SpecError:
        raise
    except Exception as e:  # the user's code: any error in it is bad input, said in one line
        raise SpecError(f"{source}: importing it raised {type(e).__name__}: {_one_line(e)}; fix the file") from None


def _import_file(path: str) -> ModuleType:
    p = Path(path)
    if not p.is_file() or p.suffix != ".py":
        raise SpecError(f"--components {path}: not a Python file (.py); give the path of your components file")
    name = f"nerva_consistency_components_{abs(hash(str(p.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, p)
    module = importlib.util.module_from_spec(spec)

    def run() -> ModuleType:
        sys.modules[name] = module  # (dataclasses and pickling look a module up by name)
        spec.loader.exec_module(module)
        return module

    return _import(f"--components {path}", run)


def _declared(source: str, module: ModuleType) -> Iterable[Any]:
    found = getattr(module, "COMPONENTS", None)
    if not isinstance(found, (list, tuple)) or not found:
        raise SpecError(f"{source}: no COMPONENTS list; end the file with COMPONENTS = [CustomActivation(...), ...]")
    for component in found:
        if not isinstance(component, (CustomActivation, CustomLoss, CustomInitializer)):
            raise SpecError(f"{source}: COMPONENTS holds {component!r}; it may hold only CustomActivation, "
                            "CustomLoss and CustomInitializer declarations (from harness.api)")
    names = [c.name for c in found]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise SpecError(f"{source}: {', '.join(twice)} declared twice; give each component its own name")
    return found


def check(component: Any, source: str) -> None:
    """Refuse a declaration the harness cannot use, with one line that says how to mend it."""
    where = f"{source}: {type(component).__name__} {component.name!r}"
    if not isinstance(component.name, str) or not component.name.isidentifier():
        raise SpecError(f"{where}: the name must be an identifier (letters, digits, _), as it is written in --layers")
    if isinstance(component, CustomInitializer):
        return _check_initializer(component, where)
    implementations = catalogue.resolve(component.implementations)
    if not isinstance(implementations, dict) or not implementations:
        raise SpecError(f"{where}: implementations must map backend names to factories, e.g. {{'numpy': make}}")
    unknown = sorted(set(implementations) - set(catalogue.BACKENDS))
    if unknown or not all(callable(f) for f in implementations.values()):
        raise SpecError(f"{where}: implementations must map {', '.join(catalogue.BACKENDS)} to factories"
                        + (f", not {', '.join(unknown)}" if unknown else " (callables)"))
    if isinstance(component, CustomActivation):
        _check_activation(component, where)
    else:
        _check_loss(component, where)


def _check_activation(component: CustomActivation, where: str) -> None:
    params = dict(component.params)
    for name, default in params.items():
        if not name.isidentifier() or name == str(X):
            raise SpecError(f"{where}: parameter {name!r} must be an identifier other than {X}")
        if default is not None and not (isinstance(default, (int, float)) and math.isfinite(default)):
            raise SpecError(f"{where}: the default of {name} must be a finite number or None (required)")
    for kink in component.kinks:
        if not (isinstance(kink, (int, float)) and math.isfinite(kink)) and kink not in params:
            raise SpecError(f"{where}: kink {kink!r} must be a number or one of its parameters ({', '.join(params)})")
    symbols = [sp.Symbol(name, real=True) for name in params]
    expr = _check_expression(where, lambda: component.definition, (X, *symbols))
    declared = {sp.Symbol(k, real=True) if isinstance(k, str) else sp.nsimplify(k) for k in component.kinks}
    for cond in (c for _, c in expr.args) if isinstance(expr, sp.Piecewise) else ():
        for rel in cond.atoms(sp.core.relational.Relational):
            for point in sp.solve(sp.Eq(rel.lhs, rel.rhs), X):
                if not any(sp.simplify(point - k) == 0 for k in declared):
                    raise SpecError(f"{where}: its definition switches branch at {X} = {point}; add {point} to its "
                                    "kinks (a number or the parameter's name), so that a tie there is judged as one")


def _check_loss(component: CustomLoss, where: str) -> None:
    if any(k != "T" for k in component.kinks):
        raise SpecError(f"{where}: a loss's kinks can only be \"T\" (a kink at Y = T)")
    (y,), (t,) = loss_symbols(1)
    _check_expression(where, lambda: component.definition, (y, t))


def _check_expression(where: str, definition: Any, symbols: tuple) -> sp.Expr:
    """The definition, called with its symbols, is a SymPy expression of those symbols only."""
    try:
        expr = sp.sympify(catalogue.resolve(definition())(*symbols))
    except Exception as e:  # the user's definition: say what it raised
        raise SpecError(f"{where}: its definition raised {type(e).__name__}: {_one_line(e)} when called with "
                        f"the SymPy symbols {', '.join(map(str, symbols))}; it must return a SymPy expression") from None
    stray = sorted(map(str, expr.free_symbols - set(symbols)))
    if not isinstance(expr, sp.Expr) or stray:
        raise SpecError(f"{where}: its definition must be a SymPy expression of {', '.join(map(str, symbols))}"
                        + (f" only, not of {', '.join(stray)}" if stray else f", not {type(expr).__name__}"))
    return expr


def _check_initializer(component: CustomInitializer, where: str) -> None:
    if component.distribution not in DISTRIBUTIONS:
        raise SpecError(f"{where}: distribution must be one of {', '.join(DISTRIBUTIONS)}")
    try:
        scale = float(component.scale(4, 3))
    except Exception as e:
        raise SpecError(f"{where}: scale(D, K) raised {type(e).__name__}: {_one_line(e)}; it must return a number") \
            from None
    if not math.isfinite(scale) or scale < 0:
        raise SpecError(f"{where}: scale(D, K) must be a finite number >= 0, not {scale}")


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())[:200]
