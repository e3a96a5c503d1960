"""The mutation corpus: realistic bugs planted in the released Nerva backends, each with the
verdict the harness must give (issue 12).

A mutant is a small function that says, in the backend's own array language, what a developer
might have typed instead of the released code, and patches it into the *imported* module
(``nerva_torch.layers``, ``nerva_numpy.loss_functions`` …) through a :class:`Patcher`, which
restores every original on exit. Installed files are never edited. Each mutant carries:

- ``backend``: the one backend it breaks (``"all"`` for a bug planted in all four);
- ``benign``: a change a correct implementation may make (another summation order, an
  algebraically equal formula, a more accurate function, one ulp): it must *not* be flagged;
- ``expect``: the verdict, derived from which tensor the bug changes first in the harness's
  localization order (forward, backward, update: docs/design.md) and confirmed by running:
  caught or not, the blamed backends, and the first divergence (step, tensor, layer). A
  backend that raises has the pseudo-tensor ``raised`` at the step where it raised;
- ``run``: the catalog scenario that exercises it, with the dtype, mode and number of steps:
  lockstep against the exact SymPy oracle where an error is small (a float64 constant, 1e-9)
  or where the bug is in all four backends; trajectory mode (each backend on its own path,
  judged against the majority, as the main job runs) for gross bugs and for a few benign
  changes whose roundings then also move a backend's parameters.

The corpus is grouped **by component kind**, one module each (``linear``, ``activations``,
``softmax``, ``losses``, ``batchnorm``, ``srelu``, ``optimizers``, ``precision``, ``faults``),
not by backend: the four libraries are line-by-line translations of one another, so the
reasoning that fixes a mutant's expected tensor (what a bug in this component changes first)
and the scenario that exercises the component are shared by every backend's bugs there, and a
reader checking coverage asks "what is planted in BatchNormalization", not "in nerva-jax". Each
module spreads its bugs over the four backends.

``harness/search/mutants.py`` runs the corpus (``nerva-consistency mutants``);
``tests/test_mutants.py`` asserts every expectation; docs/mutants.md has the measured table,
the coverage of the catalog and the explanation of every mutant that is not caught.
"""

from __future__ import annotations

import contextlib
import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

BACKENDS = ("numpy", "torch", "jax", "tensorflow")
RAISED = "raised"  # the pseudo-tensor of a first divergence where a backend raised
MODULES = ("linear", "activations", "softmax", "losses", "batchnorm", "srelu", "optimizers", "precision",
           "faults", "native")


@dataclass(frozen=True)
class Run:
    """The run that exercises a mutant: a catalog scenario and how it is run."""

    scenario: str
    dtype: str = "float32"
    mode: str = "lockstep"
    steps: int = 2
    oracle: str = "auto"  # lockstep: auto picks the exact SymPy oracle for the small catalog networks
    build: str = "harness"  # "nerva": built, fed and trained by the libraries themselves (module native)

    def __str__(self) -> str:
        built = " built by nerva" if self.build == "nerva" else ""
        return f"{self.scenario} {self.dtype} {self.mode} {self.steps} step{'s' if self.steps != 1 else ''}{built}"


@dataclass(frozen=True)
class Expect:
    """The verdict a run of the mutant must give."""

    caught: bool
    step: int | None = None
    tensor: str | None = None  # "DW", "Z", … or RAISED
    layer: int | None = None
    blamed: tuple[str, ...] = ()  # default: the mutated backend(s)

    @property
    def first(self) -> tuple[int | None, str | None, int | None]:
        return self.step, self.tensor, self.layer


def caught(step: int, tensor: str, layer: int | None = None, blamed: tuple[str, ...] = ()) -> Expect:
    return Expect(True, step, tensor, layer, blamed)


NOT_CAUGHT = Expect(False)


class Patcher:
    """Monkeypatch for one backend: ``module(name)`` imports ``nerva_<backend>.<name>``;
    ``set(obj, attr, value)`` replaces an attribute and remembers the original; ``undo()``
    restores everything in reverse order."""

    def __init__(self, backend: str):
        self.backend = backend
        self._undo: list[tuple[Any, str, Any, bool]] = []

    def module(self, name: str) -> Any:
        return importlib.import_module(f"nerva_{self.backend}.{name}")

    def set(self, obj: Any, attr: str, value: Any) -> Any:
        """Replace ``obj.attr`` by ``value``; returns the original (to call it from the mutant)."""
        had = attr in vars(obj) if hasattr(obj, "__dict__") else hasattr(obj, attr)
        original = getattr(obj, attr)
        self._undo.append((obj, attr, vars(obj).get(attr) if had else None, had))
        setattr(obj, attr, value)
        return original

    def undo(self) -> None:
        while self._undo:
            obj, attr, value, had = self._undo.pop()
            if had:
                setattr(obj, attr, value)
            else:
                delattr(obj, attr)


@dataclass(frozen=True)
class Mutant:
    name: str
    backend: str  # one of BACKENDS, or "all"
    benign: bool
    expect: Expect
    run: Run
    component: str  # the module it lives in: linear, activations, …
    plant: Callable[[Patcher], None] = field(repr=False, compare=False)

    @property
    def doc(self) -> str:
        return " ".join((self.plant.__doc__ or "").split())

    @property
    def backends(self) -> tuple[str, ...]:
        return BACKENDS if self.backend == "all" else (self.backend,)

    @property
    def blamed(self) -> tuple[str, ...]:
        """The backends the harness must blame when it catches the mutant."""
        return tuple(sorted(self.expect.blamed or self.backends))

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """The bug planted in every backend it concerns; every original restored on exit."""
        patchers = [Patcher(b) for b in self.backends]
        try:
            for p in patchers:
                self.plant(p)
            yield
        finally:
            for p in reversed(patchers):
                p.undo()


REGISTRY: dict[str, Mutant] = {}


def mutant(backend: str, run: Run, expect: Expect, benign: bool = False) -> Callable:
    """Register the decorated function ``plant(p: Patcher)`` as a mutant named after it
    (underscores become dashes)."""
    if backend not in (*BACKENDS, "all"):
        raise ValueError(f"unknown backend {backend!r}")
    if benign and expect.caught:
        raise ValueError("a benign change is expected not to be caught")

    def register(plant: Callable[[Patcher], None]) -> Callable[[Patcher], None]:
        name = plant.__name__.replace("_", "-")
        if name in REGISTRY:
            raise ValueError(f"mutant {name!r} is registered twice")
        if not plant.__doc__:
            raise ValueError(f"mutant {name!r} needs a docstring: what a developer might have typed")
        component = plant.__module__.rsplit(".", 1)[-1]
        REGISTRY[name] = Mutant(name, backend, benign, expect, run, component, plant)
        return plant

    return register


def corpus() -> list[Mutant]:
    """Every mutant, in module order (the order of MODULES, then of definition)."""
    for module in MODULES:
        importlib.import_module(f"{__name__}.{module}")
    return list(REGISTRY.values())


# -- the planted bias-gradient bug of the older tests (test_mutation, test_properties, test_repro)
def scale_db(backend: str, layer: Any, factor: float = 1.001) -> None:
    """Scale a layer's bias gradient Db in place, written the way each library stores it."""
    if backend == "numpy":
        layer.Db[...] = layer.Db * factor
    elif backend == "torch":
        layer.Db.mul_(factor)
    elif backend == "jax":
        layer.Db = layer.Db * factor
    else:
        layer.Db.assign(layer.Db * factor)


def break_bias_gradient(monkeypatch: Any, backend: str, layer_class: str = "ActivationLayer",
                        factor: float = 1.001) -> Callable:
    """Patch ``backend``'s ``layer_class.backpropagate`` (pytest's ``monkeypatch``) to scale Db by
    ``factor`` after the released computation; returns the original method. The corpus's
    ``bias-gradient-off-by-1e-3`` is the same bug."""
    layers = importlib.import_module(f"nerva_{backend}.layers")
    original = getattr(layers, layer_class).backpropagate

    def broken(self: Any, Y: Any, DY: Any) -> None:
        original(self, Y, DY)
        scale_db(backend, self, factor)

    monkeypatch.setattr(getattr(layers, layer_class), "backpropagate", broken)
    return original
