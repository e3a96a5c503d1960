"""The catalogue of Nerva components the harness knows, declared once.

For every layer kind, loss and optimizer this module records its parameters (with defaults),
which trainable parameters a layer owns, and where the function is not differentiable. The
kinks are declared here and nowhere else: the comparator asks this module where to look.

The two custom pieces of nerva-sympy's cross-framework test, which the libraries do not ship,
are declared here too and realised per backend by :mod:`adapters.extensions`:

- ELU(alpha):      f(x) = x for x > 0, alpha * (exp(x) - 1) otherwise;
                   f'(x) = 1 for x > 0, alpha * exp(x) otherwise (a kink at 0 unless alpha = 1).
- AbsoluteError:   L(Y, T) = sum |Y - T|,  dL/dY = sign(Y - T) (a kink at Y = T).
"""

from __future__ import annotations

from dataclasses import dataclass, field


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
        LayerKind("ELU", {"alpha": 1.0}, activation=True, kinks=(Kink(0.0),)),
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
    custom: bool = False
    link: str | None = None  # the activation whose value the gradient is computed from (harness.judge.bounds)


LOSSES: dict[str, LossKind] = {
    k.name: k
    for k in [
        LossKind("SquaredError"),
        LossKind("CrossEntropy"),
        LossKind("SoftmaxCrossEntropy"),
        LossKind("LogisticCrossEntropy", link="Sigmoid"),  # T (Sigmoid(Y) - 1)
        LossKind("NegativeLogLikelihood"),
        LossKind("AbsoluteError", kinks=(Kink("T"),), custom=True),
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
