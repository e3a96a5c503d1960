"""Scenario specification: parsing Nerva's own spec strings, validating, printing back.

The strings follow the Nerva libraries (``parse_multilayer_perceptron``, ``parse_activation``,
``parse_optimizer``, ``parse_loss_function``) and the flags of Nerva's ``mlp.py``, so a Nerva user
can paste what they already use:

    layers      "ReLU;BatchNormalization;LeakyReLU(alpha=0.1);Softmax"   one per layer
    sizes       "784;1024;512;10"            input width, then the width of each linear layer
    optimizers  "Momentum(0.9);GradientDescent;Nesterov(mu=0.5)"   one per layer (incl. BN)
    init        "XavierNormal;HeNormal"      one per linear layer
    loss        "SoftmaxCrossEntropy"
    lr          "0.01", "Constant(0.01)" or a scheduler (:mod:`harness.spec.schedule`)

Sizes and initializers are separated by ``;`` as ``tools/mlp.py`` splits them; ``,`` (this
harness's older spelling) is read too when no ``;`` is given.

Extensions (decided here, documented in the README):

- ``ELU(alpha)`` and the ``AbsoluteError`` loss (nerva-sympy's custom pieces);
- ``LeCunNormal`` / ``LeCunUniform`` initializers;
- the libraries' parameterised initializers ``Uniform(a=…,b=…)`` and ``Normal(a=…,b=…)`` are
  read too, but only a run built by the libraries (``build = "nerva"``) can use them: the
  libraries draw them, the harness's own parameters (:mod:`harness.spec.state`) do not;
- a per-parameter optimizer for one layer: ``W=Momentum(0.9),b=Nesterov(0.75)`` (parameters
  not named fall back to the first one given);
- ``SReLU(x)`` with one positional number sets al = tl = ar = tr = x, as in Nerva; keywords not
  given take Nerva's defaults al = tl = ar = 0, tr = 1.

One optimizer for several layers. Nerva's own parser (``parse_multilayer_perceptron``) takes
exactly one optimizer string per layer, BatchNormalization included, and each layer builds its
own optimizer from its string (``layer.set_optimizer(text)``: one optimizer object, with its own
velocity, per trainable parameter; nothing is shared between layers or parameters). Here a
single string given for several layers means that string repeated for every layer: the same
kind and ``mu`` everywhere, every parameter still with its own state, exactly what Nerva builds
from the repeated list. Any other count than 1 or one per layer is an error. The same holds for
one weight initializer given for several linear layers.

Every parse error is a :class:`SpecError` whose message says what is wrong and how to mend it;
the numbers are checked by :mod:`harness.spec.rules` (finite, and in range where the component
needs it).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from typing import Any

from harness.spec import rules
from harness.spec.schedule import Schedule, parse_schedule
from harness.core.components import DTYPES, INITIALIZERS, LAYERS, LOSSES, MODES, OPTIMIZERS, LayerKind
from harness.core.errors import SpecError


_CALL = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:\((.*)\))?\s*$", re.S)


@dataclass(frozen=True)
class Call:
    """A parsed ``Name(arg, key=value)`` string with numeric arguments."""

    name: str
    args: tuple[float, ...] = ()
    kwargs: tuple[tuple[str, float], ...] = ()


def parse_call(text: str, what: str) -> Call:
    m = _CALL.match(text)
    if not m:
        raise SpecError(f"cannot parse {what} {text!r}: expected Name or Name(number, key=number)")
    name, inner = m.group(1), m.group(2)
    args: list[float] = []
    kwargs: list[tuple[str, float]] = []
    if inner is not None and inner.strip():
        for part in inner.split(","):
            key, eq, value = part.partition("=")
            try:
                number = float((value if eq else key).strip())
            except ValueError:
                raise SpecError(
                    f"cannot parse {what} {text!r}: {part.strip()!r} is not a number or key=number"
                ) from None
            if eq:
                kwargs.append((key.strip(), number))
            else:
                args.append(number)
    return Call(name, tuple(args), tuple(kwargs))


def _bind(call: Call, params: dict[str, float | None], what: str, text: str) -> dict[str, float]:
    """Bind positional and keyword numbers to the declared parameters of a component."""
    names = list(params)
    if call.name == "SReLU" and len(call.args) == 1 and not call.kwargs:
        return {n: call.args[0] for n in names}  # Nerva's quirk: SReLU(x) sets all four
    if len(call.args) > len(names):
        raise SpecError(f"{what} {text!r} takes at most {len(names)} number(s) ({', '.join(names) or 'none'})")
    bound = dict(zip(names, call.args))
    for key, value in call.kwargs:
        if key not in params:
            raise SpecError(f"{what} {text!r} has no parameter {key!r}; it takes: {', '.join(names) or 'none'}")
        bound[key] = value
    for key, default in params.items():
        if key not in bound:
            if default is None:
                raise SpecError(f"{what} {text!r} needs {key}=…, e.g. {call.name}({key}=0.1)")
            bound[key] = default
    return bound


def number_text(value: float) -> str:
    """A number as a spec string writes it: the shortest text that reads back to the same float,
    without a trailing ``.0``."""
    return repr(float(value)).removesuffix(".0") if float(value).is_integer() else repr(float(value))


def call_text(name: str, args: dict[str, float]) -> str:
    """The spec string of a component and its numbers, ``Name(key=number, ...)`` (``Name`` alone
    without numbers): the one printer of layers and optimizers, which :func:`parse_call` reads
    back to the same component."""
    if not args:
        return name
    return f"{name}(" + ", ".join(f"{k}={number_text(v)}" for k, v in args.items()) + ")"


@dataclass(frozen=True)
class OptimizerSpec:
    name: str
    args: tuple[tuple[str, float], ...] = ()

    @property
    def mu(self) -> float:
        return dict(self.args).get("mu", 0.0)

    def __str__(self) -> str:
        return call_text(self.name, dict(self.args))


def parse_optimizer(text: str) -> OptimizerSpec:
    call = parse_call(text, "optimizer")
    if call.name not in OPTIMIZERS:
        raise SpecError(f"unknown optimizer {call.name!r}; choose one of {', '.join(OPTIMIZERS)}")
    args = rules.component(call.name, _bind(call, OPTIMIZERS[call.name], "optimizer", text), text, "optimizer")
    return OptimizerSpec(call.name, tuple(args.items()))


@dataclass(frozen=True)
class LayerSpec:
    """One Nerva layer: its kind, the kind's parameters, its output width, optimizers, init."""

    kind: str
    args: tuple[tuple[str, float], ...]
    units: int
    optimizers: tuple[tuple[str, OptimizerSpec], ...]  # trainable parameter -> optimizer
    init: str | None  # weight initializer (linear-type layers only)

    @property
    def info(self) -> LayerKind:
        return LAYERS[self.kind]

    @property
    def arg(self) -> dict[str, float]:
        return dict(self.args)

    @property
    def text(self) -> str:
        return call_text(self.kind, self.arg)

    @property
    def optimizer_text(self) -> str:
        opts = dict(self.optimizers)
        texts = {str(o) for o in opts.values()}
        if len(texts) == 1:
            return texts.pop()
        return ",".join(f"{p}={o}" for p, o in opts.items())


def parse_layer(text: str) -> tuple[str, dict[str, float]]:
    if text.strip() == "Linear()":
        raise SpecError("layer 'Linear()' is written 'Linear' (without parentheses), as in Nerva")
    call = parse_call(text, "layer")
    if call.name not in LAYERS:
        raise SpecError(f"unknown layer {call.name!r}; choose one of {', '.join(LAYERS)}")
    return call.name, rules.component(call.name, _bind(call, LAYERS[call.name].params, "layer", text), text, "layer")


def parse_layer_optimizers(text: str, kind: LayerKind) -> tuple[tuple[str, OptimizerSpec], ...]:
    """``Momentum(0.9)`` for every parameter, or ``W=Momentum(0.9),b=Nesterov(0.75)``."""
    parts = rules.items(text, _split_top(text, ","), "optimizer", ",", "W=Momentum(0.9),b=GradientDescent")
    if not any("=" in p.split("(")[0] for p in parts):
        opt = parse_optimizer(text)
        return tuple((p, opt) for p in kind.trainable)
    named: dict[str, OptimizerSpec] = {}
    for part in parts:
        key, eq, value = part.partition("=")
        key = key.strip()
        if not eq or key not in kind.trainable:
            raise SpecError(
                f"optimizer {text!r}: {part.strip()!r} should be PARAM=Optimizer with PARAM one of "
                f"{', '.join(kind.trainable)} for a {kind.name} layer"
            )
        named[key] = parse_optimizer(value)
    first = next(iter(named.values()))
    return tuple((p, named.get(p, first)) for p in kind.trainable)


def _split_top(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside parentheses."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        depth += ch == "("
        depth -= ch == ")"
        if ch == sep and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return [p for p in (s.strip() for s in parts)]


def learning_rate_schedule(text: str | float) -> tuple[float, Schedule | None]:
    """A number, ``Constant(number)`` or a scheduler as Nerva's mlp.py writes it: the rate of the
    first epoch and the schedule (None: the rate is constant)."""
    schedule = parse_schedule(repr(float(text)) if isinstance(text, (int, float)) else str(text))
    return schedule.lr, (None if schedule.name == "Constant" else schedule)


def parse_learning_rate(text: str | float) -> float:
    """The rate a ``--learning-rate`` value starts with (epoch 0)."""
    return learning_rate_schedule(text)[0]


BUILDS = ("harness", "nerva")
"""How a run's models are made: by the harness from the layer classes with its own parameters,
batches and step (``harness``), or by each library's own parser, initializers, loaders and
training loop (``nerva``, :mod:`adapters.nerva_native`)."""

PARAMETRISED_INITIALIZERS = {"Uniform": ("a", "b"), "Normal": ("a", "b")}
"""The libraries' ``set_layer_weights`` forms with numbers (defaults a = 0, b = 1)."""


@dataclass(frozen=True)
class DataSpec:
    """Where inputs and targets come from: synthetic | digits | digits784 | npz:PATH.

    ``targets`` (synthetic only): onehot (default), soft (rows of a Dirichlet draw) or real.
    """

    source: str = "synthetic"
    targets: str = "onehot"

    def __str__(self) -> str:
        return self.source


@dataclass(frozen=True)
class Scenario:
    name: str
    sizes: tuple[int, ...]
    layers: tuple[LayerSpec, ...]
    loss: str
    lr: float
    batch_size: int
    steps: int
    data: DataSpec = DataSpec()
    dtype: str = "float32"
    mode: str = "trajectory"
    seed: int = 0
    description: str = ""
    schedule: Schedule | None = None  # None: the rate ``lr`` for every step
    build: str = "harness"  # BUILDS
    init_from: str = "numpy"  # build "nerva": the library whose initializers draw the parameters
    weights: str = ""  # --load-weights: a weights file's absolute path ("" none): the initial W and b

    def eta(self, epoch: int) -> float:
        """The learning rate of epoch ``epoch`` (0-based)."""
        return self.lr if self.schedule is None else self.schedule.eta(epoch)

    @property
    def lr_text(self) -> str:
        """``--learning-rate`` as given: the number, or the scheduler's text."""
        return repr(self.lr) if self.schedule is None else str(self.schedule)

    @property
    def input_size(self) -> int:
        return self.sizes[0]

    @property
    def output_size(self) -> int:
        return self.layers[-1].units

    def with_(self, **changes: Any) -> "Scenario":
        return replace(self, **changes)

    def layer_strings(self) -> dict[str, str]:
        """The Nerva-style strings that describe this model (keys ``layers``, ``sizes``,
        ``optimizers``, ``init_weights``); :func:`harness.spec.flags.flags` prints every flag of a run."""
        return {
            "layers": ";".join(layer.text for layer in self.layers),
            "sizes": ",".join(str(s) for s in self.sizes),
            "optimizers": ";".join(layer.optimizer_text for layer in self.layers),
            "init_weights": ",".join(layer.init or "" for layer in self.layers if layer.info.has_weights),
        }


def build_scenario(
    *,
    name: str,
    layers: str | list[str],
    sizes: str | list[int],
    optimizers: str | list[str],
    init_weights: str | list[str] | None,
    loss: str,
    lr: str | float,
    batch_size: int,
    steps: int,
    data: DataSpec = DataSpec(),
    dtype: str = "float32",
    mode: str = "trajectory",
    seed: int = 0,
    description: str = "",
    build: str = "harness",
    init_from: str = "numpy",
    weights: str = "",
) -> Scenario:
    """Validate Nerva-style pieces and assemble a :class:`Scenario`. The pieces are checked in
    this order, so that of several problems the first one here is the one reported: layers,
    sizes, optimizers, each layer, the sizes' count, the optimizers' count, initializers, loss,
    each layer's optimizers, dtype, mode, batch size, steps, seed, learning rate, build."""
    layer_texts = _layer_texts(layers)
    size_list = _parse_sizes(sizes)
    opt_texts = rules.items(str(optimizers), _pieces(optimizers, ";"), "optimizers", ";", "Momentum(0.9);GradientDescent")
    parsed = [parse_layer(t) for t in layer_texts]
    n_linear = sum(LAYERS[k].has_weights for k, _ in parsed)
    if len(size_list) != n_linear + 1:
        raise SpecError(
            f"sizes {','.join(map(str, size_list))} do not fit {n_linear} linear layer(s): "
            f"give {n_linear + 1} sizes (input width, then one per non-BatchNormalization layer)"
        )
    opt_texts = _one_per_layer(opt_texts, len(parsed))
    init_list = _initializers(init_weights, n_linear)
    if loss not in LOSSES:
        raise SpecError(f"unknown loss {loss!r}; choose one of {', '.join(LOSSES)}")
    specs = _layer_specs(parsed, size_list, opt_texts, init_list)
    if dtype not in DTYPES:
        raise SpecError(f"unknown dtype {dtype!r}; choose float32 or float64")
    if mode not in MODES:
        raise SpecError(f"unknown mode {mode!r}; choose trajectory or lockstep")
    rules.integer(batch_size, "batch size")
    rules.steps(steps)
    rules.seed(seed)
    rate, schedule = learning_rate_schedule(lr)
    _check_build(build, init_from)
    return Scenario(
        name=name,
        sizes=tuple(size_list),
        layers=tuple(specs),
        loss=loss,
        lr=rate,
        schedule=schedule,
        batch_size=batch_size,
        steps=steps,
        data=data,
        dtype=dtype,
        mode=mode,
        seed=seed,
        description=description,
        build=build,
        init_from=init_from,
        weights=os.path.abspath(weights) if str(weights).strip() else "",
    )


def _check_build(build: str, init_from: str) -> None:
    from harness.core.components import BACKENDS

    if build not in BUILDS:
        raise SpecError(f"unknown build {build!r}; choose one of {', '.join(BUILDS)}")
    if init_from not in BACKENDS:
        raise SpecError(f"unknown --init-from {init_from!r}; choose one of {', '.join(BACKENDS)}")


def harness_problem(scenario: Scenario) -> str | None:
    """Why the harness cannot build ``scenario`` itself, or None: an initializer only the
    libraries draw (``Uniform(a=…,b=…)``, ``Normal(a=…,b=…)``)."""
    drawn = [layer.init for layer in scenario.layers if layer.init is not None and layer.init not in INITIALIZERS]
    if drawn:
        return f"weight initializer {drawn[0]!r} is drawn by the libraries' own initializers"
    return None


def _pieces(value: str | list, sep: str) -> list:
    """A spec string split on ``sep`` outside parentheses, or the list given instead."""
    return _split_top(value, sep) if isinstance(value, str) else list(value)


def _layer_texts(layers: str | list[str]) -> list[str]:
    texts = _pieces(layers, ";")
    if not any(t.strip() for t in texts):
        raise SpecError("no layers given: use e.g. --layers 'ReLU;Softmax'")
    return rules.items(str(layers), texts, "layers", ";", "ReLU;Softmax")


def _one_per_layer(opt_texts: list[str], n_layers: int) -> list[str]:
    """One optimizer string per layer (one given for several layers: that one for each)."""
    if len(opt_texts) == 1 and n_layers > 1:
        opt_texts = opt_texts * n_layers
    if len(opt_texts) != n_layers:
        raise SpecError(
            f"{len(opt_texts)} optimizer(s) for {n_layers} layer(s): give one per layer "
            "(BatchNormalization included), separated by ';'"
        )
    return opt_texts


def _initializers(init_weights: str | list[str] | None, n_linear: int) -> list[str]:
    """One weight initializer per linear layer (none given: XavierNormal; one for several: that one for each)."""
    if init_weights is None or init_weights == "":
        init_list = ["XavierNormal"] * n_linear
    else:
        init_list = _pieces(init_weights, ";" if ";" in str(init_weights) else ",")
        init_list = rules.items(str(init_weights), init_list, "weight initializers", ",", "XavierNormal,HeNormal")
        if len(init_list) == 1 and n_linear > 1:
            init_list = init_list * n_linear
    if len(init_list) != n_linear:
        raise SpecError(f"{len(init_list)} weight initializer(s) for {n_linear} linear layer(s): give one per linear layer")
    return [_initializer(init) for init in init_list]


def _initializer(text: str) -> str:
    """One weight initializer: a name of the harness's, or a libraries' form such as
    ``Uniform(a=-0.1,b=0.1)`` (printed back in the libraries' ``key=value`` form)."""
    if text in INITIALIZERS:
        return text
    call = parse_call(text, "weight initializer")
    if call.name in PARAMETRISED_INITIALIZERS:
        params = PARAMETRISED_INITIALIZERS[call.name]
        args = _bind(call, dict.fromkeys(params, None) | {"a": 0.0, "b": 1.0}, "weight initializer", text)
        for key, value in args.items():
            rules.finite(value, f"weight initializer {text!r}: {key}", f"{call.name}(a=-0.1,b=0.1)")
        return f"{call.name}(" + ",".join(f"{k}={number_text(v)}" for k, v in args.items()) + ")"
    known = [*INITIALIZERS, *(f"{n}(a=…,b=…)" for n in PARAMETRISED_INITIALIZERS)]
    raise SpecError(f"unknown weight initializer {text!r}; choose one of {', '.join(known)}")


def _layer_specs(parsed: list[tuple[str, dict[str, float]]], sizes: list[int], opt_texts: list[str],
                 inits: list[str]) -> list[LayerSpec]:
    """Each parsed layer with its width, optimizers and (linear-type layers) initializer."""
    specs: list[LayerSpec] = []
    width, li = sizes[0], 0
    for (kind, args), opt_text in zip(parsed, opt_texts):
        info = LAYERS[kind]
        if info.has_weights:
            width, init = sizes[li + 1], inits[li]
            li += 1
        else:
            init = None
        specs.append(LayerSpec(kind, tuple(args.items()), width, parse_layer_optimizers(opt_text, info), init))
    return specs


def _parse_sizes(sizes: str | list[int]) -> list[int]:
    sep = ";" if isinstance(sizes, str) and ";" in sizes else ","
    items = [s for s in sizes.split(sep)] if isinstance(sizes, str) else list(sizes)
    out = []
    if isinstance(sizes, str):
        rules.items(sizes, items, "sizes", sep, "784;1024;10")
    for s in items:
        try:
            n = int(str(s).strip())
        except ValueError:
            raise SpecError(f"sizes must be positive integers separated by ';', got {sizes!r}") from None
        if n < 1:
            raise SpecError(f"sizes must be positive integers, got {n} in {sizes!r}")
        out.append(n)
    return out
