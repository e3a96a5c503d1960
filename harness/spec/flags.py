"""The scenario flags, written once: the flags of ``nerva-consistency run`` that make a scenario.

Each flag has its name (the command-line flag without ``--``, also the key of a catalog entry,
of a report's ``spec`` and of a bundle's), its argparse type, choices and help, the value an
ad-hoc run takes when the flag is left out, and how it is printed from a :class:`Scenario`.
The ``run`` parser, the ad-hoc defaults, the catalog's keys and the flags that rebuild a run
(:func:`flags`, what a report and a bundle record) are all built from :data:`FLAGS`.

The order of :data:`FLAGS` is the order of a run's flags everywhere: in ``run --help``, in a
report's ``spec`` and in the ``reproduce`` commands.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from harness.core.components import BACKENDS, DTYPES, LOSSES, MODES
from harness.spec.data import TARGETS
from harness.spec.scenario import BUILDS, Scenario


@dataclass(frozen=True)
class Flag:
    """One scenario flag of ``run``."""

    name: str  # "init-weights": the flag without "--", the key of a catalog entry and of a spec
    show: Callable[[Scenario], str]  # the flag's value that rebuilds the scenario
    help: str | None = None
    type: Callable[[str], Any] | None = None  # argparse's type (None: the string as given)
    choices: tuple[str, ...] | None = None
    default: Any = None  # an ad-hoc run's value when the flag is left out (None: the scenario's default)
    aliases: tuple[str, ...] = ()  # other spellings; the first of ``spellings`` is tools/mlp.py's

    @property
    def spellings(self) -> tuple[str, ...]:
        """The command-line spellings, tools/mlp.py's first (``--layer-sizes``, then ``--sizes``)."""
        return tuple(f"--{name}" for name in (*self.aliases, self.name))

    @property
    def attr(self) -> str:
        """The attribute argparse stores the flag in (``init_weights``)."""
        return self.name.replace("-", "_")


def _model(key: str) -> Callable[[Scenario], str]:
    return lambda scenario: scenario.layer_strings()[key]


def _dataset(scenario: Scenario) -> str:
    source = scenario.data.source
    return source[4:] if source.startswith("npz:") else source


_LOSS_NAMES = list(LOSSES)

FLAGS: tuple[Flag, ...] = (
    Flag("layers", _model("layers"), help='Nerva layer specs, e.g. "ReLU;BatchNormalization;Softmax"'),
    Flag("sizes", _model("sizes"), help="input width, then each linear layer's width, e.g. \"784;1024;10\"",
         aliases=("layer-sizes",)),
    Flag("optimizers", _model("optimizers"), help='one per layer, e.g. "Momentum(0.9);GradientDescent"',
         default="GradientDescent"),
    Flag("init-weights", _model("init_weights"), help='one per linear layer, e.g. "XavierNormal;Uniform(a=-0.1,b=0.1)"',
         aliases=("layer-weights",)),
    Flag("loss", lambda s: s.loss, default="SquaredError",
         help=f"{', '.join(_LOSS_NAMES[:-1])} or {_LOSS_NAMES[-1]}"),
    Flag("learning-rate", lambda s: s.lr_text, default="0.01",
         help="a number, Constant(lr), TimeBased(lr,decay), StepBased(lr,drop_rate,change_rate), "
              "MultiStepLR(lr;m1,m2;gamma) or Exponential(lr,change_rate)"),
    Flag("batch-size", lambda s: str(s.batch_size), type=int, default=16),
    Flag("steps", lambda s: str(s.steps), type=int, default=10),
    Flag("dataset", _dataset, help="synthetic (default), digits, digits784 or a Nerva .npz file",
         default="synthetic", aliases=("load-dataset",)),
    Flag("targets", lambda s: s.data.targets, choices=TARGETS, help="synthetic targets (default onehot)"),
    Flag("dtype", lambda s: s.dtype, choices=DTYPES),
    Flag("mode", lambda s: s.mode, choices=MODES),
    Flag("seed", lambda s: str(s.seed), type=int),
    Flag("build", lambda s: s.build, choices=BUILDS,
         help="nerva: each library's own parser, initializers, loaders and training loop (the default for an "
              "ad-hoc run that they can express); harness: the harness builds and steps every model"),
    Flag("load-weights", lambda s: s.weights,
         help="start from this weights file (W1, b1, W2 … as save_weights_and_bias writes them, numbered by "
              "linear layer) instead of drawn parameters"),
    Flag("init-from", lambda s: s.init_from, choices=BACKENDS,
         help="build nerva: the library whose initializers draw the parameters every backend loads (default numpy)"),
)

NAMES = tuple(flag.name for flag in FLAGS)

ADDED_LATER = ("build", "load-weights", "init-from")
"""Flags that a report or bundle written before them lacks; their defaults then apply (a bundle
replays on its recorded parameters and batches, through the harness's own build)."""

AD_HOC_DEFAULTS = {flag.name: flag.default for flag in FLAGS if flag.default is not None}
"""What an ad-hoc run (``--layers`` and ``--sizes`` without ``--scenario``) takes for a flag left out."""


def flags(scenario: Scenario) -> dict[str, str]:
    """The complete flags of ``nerva-consistency run`` that rebuild ``scenario``: the one printer
    of a scenario as Nerva-style strings."""
    return {flag.name: flag.show(scenario) for flag in FLAGS}


def given(args: Any) -> dict[str, Any]:
    """The scenario flags an argparse namespace holds (those left out are not in it)."""
    values = {flag.name: getattr(args, flag.attr) for flag in FLAGS}
    return {name: value for name, value in values.items() if value is not None}
