"""The catalogue of Nerva components the harness knows, declared once.

For every layer kind, loss and optimizer this module records its parameters (with defaults),
which trainable parameters a layer owns, and where the function is not differentiable. The
kinks are declared here and nowhere else: the comparator asks this module where to look.

Components the libraries do not ship (an activation, a loss, a weight initializer) are declared
with :class:`CustomActivation`, :class:`CustomLoss` and :class:`CustomInitializer` and entered by
:func:`register`, which adds them to :data:`LAYERS`, :data:`LOSSES` and :data:`INITIALIZERS`: from
then on they are named like Nerva's own. A declaration holds, besides the name, parameters and kinks,
the SymPy forward definition (the oracle differentiates it) and each library's implementation
(the code under test, with its hand-written gradient), either as objects or as ``"module:attribute"``
references resolved when first used (:func:`resolve`), so that nothing heavy is imported here.
The two custom pieces of nerva-sympy's cross-framework test are the first two users:
:data:`BUILTIN_COMPONENTS`, ELU(alpha) and AbsoluteError, defined in
:mod:`harness.oracle.definitions` and implemented in :mod:`adapters.extensions`. A user's file
(``--components FILE``) or entry point is loaded by :mod:`harness.run.component_files`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from harness.core.errors import SpecError


@dataclass(frozen=True)
class Kink:
    """A point where a function is not differentiable.

    ``at`` names where, on the tensor the function is applied to: a number (ReLU: 0.0), the
    name of one of the function's own parameters (SReLU: "tl"), or "T" (the loss at Y = T).
    """

    at: float | str


@dataclass(frozen=True)
class LayerKind:
    name: str
    params: dict[str, float | None] = field(default_factory=dict)  # None: required
    has_weights: bool = True  # owns W and b (a linear map first); False only for BatchNormalization
    activation: bool = False  # pointwise activation after the linear map (has Z, DZ)
    row: bool = False  # a row function after the linear map (softmax, log-softmax): each output depends on its row
    kinks: tuple[Kink, ...] = ()
    trainable: tuple[str, ...] = ("W", "b")
    source: str = ""  # where a custom component was declared ("" for Nerva's own)

    @property
    def has_z(self) -> bool:
        return self.name != "Linear"


LAYERS: dict[str, LayerKind] = {
    k.name: k
    for k in [
        LayerKind("Linear"),
        LayerKind("ReLU", activation=True, kinks=(Kink(0.0),)),
        LayerKind("Sigmoid", activation=True),
        LayerKind("HyperbolicTangent", activation=True),
        LayerKind("LeakyReLU", {"alpha": None}, activation=True, kinks=(Kink(0.0),)),
        LayerKind("AllReLU", {"alpha": None}, activation=True, kinks=(Kink(0.0),)),
        LayerKind(
            "SReLU",
            {"al": 0.0, "tl": 0.0, "ar": 0.0, "tr": 1.0},
            activation=True,
            kinks=(Kink("tl"), Kink("tr")),
            trainable=("W", "b", "srelu"),
        ),
        LayerKind("Softmax", row=True),
        LayerKind("LogSoftmax", row=True),
        LayerKind("BatchNormalization", has_weights=False, trainable=("gamma", "beta")),
    ]
}


@dataclass(frozen=True)
class LossKind:
    name: str
    kinks: tuple[Kink, ...] = ()
    source: str = ""  # where a custom loss was declared ("" for Nerva's own)
    link: str | None = None  # the activation whose value the gradient is computed from (harness.judge.bounds)


LOSSES: dict[str, LossKind] = {
    k.name: k
    for k in [
        LossKind("SquaredError"),
        LossKind("CrossEntropy"),
        LossKind("SoftmaxCrossEntropy"),
        LossKind("LogisticCrossEntropy", link="Sigmoid"),  # T (Sigmoid(Y) - 1)
        LossKind("NegativeLogLikelihood"),
    ]
}

SRELU_PARAMS = ("al", "tl", "ar", "tr")
"""SReLU's four parameters in the order Nerva keeps them (one trainable vector ``srelu``)."""

BN_EPSILON = 1e-7
"""The epsilon Nerva's BatchNormalization adds to the variance: inv_sqrt(Sigma + epsilon)."""

ROW_LAYERS = tuple(name for name, kind in LAYERS.items() if kind.row)

OPTIMIZERS: dict[str, dict[str, float | None]] = {
    "GradientDescent": {},
    "Momentum": {"mu": None},
    "Nesterov": {"mu": None},
}

VELOCITY_OPTIMIZERS = ("Momentum", "Nesterov")
"""The optimizers that keep a velocity per parameter (traced and reset as ``W1.v`` …)."""

DTYPES = ("float32", "float64")
MODES = ("trajectory", "lockstep")
BACKENDS = ("numpy", "torch", "jax", "tensorflow")  # the four Nerva libraries, the default backends
ORACLES = ("sympy", "autodiff")  # the references of lockstep mode (harness.run.choice picks one)
ORACLE_CHOICES = ("auto", *ORACLES, "none")  # what --oracle takes: auto picks by size, none compares backends only

# Weight initializers: the name, and (distribution, scale(D, K)) for W of shape (K, D).
INITIALIZERS = {
    "XavierNormal": ("normal", lambda D, K: (2.0 / (D + K)) ** 0.5),
    "XavierUniform": ("uniform", lambda D, K: (6.0 / (D + K)) ** 0.5),
    "HeNormal": ("normal", lambda D, K: (2.0 / D) ** 0.5),
    "HeUniform": ("uniform", lambda D, K: (6.0 / D) ** 0.5),
    "LeCunNormal": ("normal", lambda D, K: (1.0 / D) ** 0.5),
    "LeCunUniform": ("uniform", lambda D, K: (3.0 / D) ** 0.5),
    "Zero": ("zero", lambda D, K: 0.0),
}


# ---------------------------------------------------------------------------------------------
# Custom components: declared once, registered by name
# ---------------------------------------------------------------------------------------------

Reference = Any  # an object, or a "module:attribute" string naming it (resolved on first use)


@dataclass(frozen=True)
class CustomActivation:
    """An elementwise activation the libraries do not ship.

    ``definition(x, *params)``: f(x) as a SymPy expression of the real symbol ``x`` and one real
    symbol per parameter, in the order of ``params`` (a ``Piecewise`` for a function with kinks).
    ``implementations``: backend name -> ``factory(**params)`` returning that library's
    ``ActivationFunction`` object (``__call__`` and the hand-written ``gradient``).
    ``params``: name -> default (None: required). ``kinks``: where f is not differentiable, a
    number or a parameter's name.
    """

    name: str
    definition: Reference
    implementations: Reference
    params: Mapping[str, float | None] = field(default_factory=dict)
    kinks: tuple[float | str, ...] = ()


@dataclass(frozen=True)
class CustomLoss:
    """A loss the libraries do not ship: ``definition(y, t)`` is one element's loss as a SymPy
    expression (the batch loss is its sum over every element, as Nerva's losses are);
    ``implementations``: backend name -> ``factory()`` returning that library's ``LossFunction``
    object. ``kinks``: "T" when the loss has a kink at Y = T."""

    name: str
    definition: Reference
    implementations: Reference
    kinks: tuple[float | str, ...] = ()


@dataclass(frozen=True)
class CustomInitializer:
    """A weight initializer: W of shape (K, D) drawn by the harness (from the run's seed, never a
    framework's RNG) from ``distribution`` ("normal", "uniform" or "zero") scaled by ``scale(D, K)``."""

    name: str
    distribution: str
    scale: Callable[[int, int], float]


CUSTOM: dict[str, Any] = {}
"""Every registered custom activation and loss by name (initializers only enter INITIALIZERS)."""
SOURCES: dict[str, str] = {}
"""Where each registered custom component was declared."""


def resolve(ref: Reference) -> Any:
    """The object a ``"module:attribute"`` reference names (any other value is itself)."""
    if not isinstance(ref, str):
        return ref
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


def register(component: Any, source: str) -> None:
    """Enter a custom component under its name; ``source`` says where it was declared. A name
    that is already taken by another declaration is bad input."""
    name = component.name
    table = {CustomActivation: LAYERS, CustomLoss: LOSSES, CustomInitializer: INITIALIZERS}[type(component)]
    if name in table and SOURCES.get(name) != source:
        where = SOURCES.get(name) or "Nerva"
        raise SpecError(f"{source}: the component name {name!r} is already taken (by {where}); give it another name")
    SOURCES[name] = source
    if isinstance(component, CustomInitializer):
        INITIALIZERS[name] = (component.distribution, component.scale)
        return
    CUSTOM[name] = component
    kinks = tuple(Kink(k) for k in component.kinks)
    if isinstance(component, CustomActivation):
        LAYERS[name] = LayerKind(name, dict(component.params), activation=True, kinks=kinks, source=source)
    else:
        LOSSES[name] = LossKind(name, kinks=kinks, source=source)


def unregister(name: str) -> None:
    """Remove a registered custom component (a command loads its components afresh)."""
    for table in (LAYERS, LOSSES, INITIALIZERS, CUSTOM, SOURCES):
        table.pop(name, None)


def custom_components(scenario: Any) -> set[str]:
    """The custom components (activations, loss, initializers) a scenario uses."""
    names = {layer.kind for layer in scenario.layers} | {scenario.loss} | {layer.init for layer in scenario.layers}
    return {name for name in names if name in SOURCES}


def from_file(name: str) -> bool:
    """Whether a component was registered from a user's file or entry point (not Nerva's, not built in)."""
    return SOURCES.get(name, BUILTIN) != BUILTIN


BUILTIN = "nerva-consistency"  # the source of the built-in custom components
BUILTIN_COMPONENTS = (
    # ELU(alpha): f(x) = x for x > 0, alpha (exp(x) - 1) otherwise (a kink at 0 unless alpha = 1)
    CustomActivation("ELU", "harness.oracle.definitions:elu", "adapters.extensions:ELU", {"alpha": 1.0}, (0.0,)),
    # AbsoluteError: L(Y, T) = sum |Y - T| (a kink at Y = T)
    CustomLoss("AbsoluteError", "harness.oracle.definitions:absolute_error", "adapters.extensions:ABSOLUTE_ERROR",
               ("T",)),
)
for _component in BUILTIN_COMPONENTS:
    register(_component, BUILTIN)
