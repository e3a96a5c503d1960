"""A run built as the libraries build it (``--build nerva``): their parser, initializers, weights
files, optimizers, data loaders and training loop, observed step by step.

Each backend's model is made by its own ``parse_multilayer_perceptron`` from the spec strings
(so its own ``parse_linear_layer``, ``set_optimizer`` and ``set_layer_weights`` run), then its
parameters are loaded by its own ``load_weights_and_bias`` from one file that one library's own
initializers drew (``--init-from``, :func:`initial_state`: random initializers draw different
numbers in each library, so only one can be the source) and the harness checks that every
parameter then holds exactly the file's values (a library that loads other values fails its
build, blamed on it alone). Its batches come from its own ``create_npz_dataloaders`` and its
steps from its own ``training.stochastic_gradient_descent`` with its own
``learning_rate.parse_learning_rate``; nothing of the loop is copied here.

The loop runs in a thread of its own per backend. The harness observes it by wrapping the
model's ``feedforward``, ``backpropagate`` and ``optimize`` and the loss's ``gradient`` on the
instances: each ``optimize`` call is one step, whose trace (X and T as the loader yielded them,
Y, DY, the loss, every layer tensor and the updated parameters) is handed to the runner, and the
loop waits there until the runner asks for the next step (or re-anchors the parameters after a
kink flip, through the same slots as :class:`adapters.nerva_driver.NervaAdapter`). One thread
runs at a time. The loop's own printing (epoch table, "Loading ...") is discarded.
"""

from __future__ import annotations

import math
import os
import tempfile
import threading
from dataclasses import replace
from typing import Any

import numpy as np

import adapters
from adapters.nerva_driver import param_slots
from harness.core.components import BACKENDS
from harness.core.errors import SpecError
from harness.core.keys import Trace
from harness.spec.data import linear_positions, loader_arrays
from harness.spec.state import as_dtype, initial_state as spec_state
from harness.spec.scenario import Scenario

OPTIMIZER_ORDER = {"BatchNormalization": ("beta", "gamma")}
"""The order in which a layer's ``set_optimizer`` lists its parameters' optimizers (the others:
W, b, then SReLU's four)."""


class _Stop(BaseException):
    """Raised inside a library's loop to end it when the run is over (not an Exception, so that
    no library code can swallow it)."""


def _quiet(*args: Any, **kwargs: Any) -> None:
    """Replaces ``print`` in the library modules whose loop prints (module globals shadow the builtin)."""


def model_strings(scenario: Scenario) -> tuple[list[str], list[int], list[str], list[str]]:
    """The four lists ``parse_multilayer_perceptron`` takes, as ``tools/mlp.py`` splits them."""
    return ([layer.text for layer in scenario.layers], list(scenario.sizes),
            [layer.optimizer_text for layer in scenario.layers],
            [layer.init or "" for layer in scenario.layers if layer.info.has_weights])


def learning_rate_text(scenario: Scenario) -> str:
    """``--learning-rate`` as the libraries' ``parse_learning_rate`` reads it (a bare number is ``Constant``)."""
    return f"Constant({scenario.lr!r})" if scenario.schedule is None else str(scenario.schedule)


def _seed(base: Any, seed: int) -> None:
    """Seed every RNG a library's initializers draw from, so that ``--seed`` fixes the draw."""
    np.random.seed(seed % 2**32)
    if base.name == "torch":
        base.torch.manual_seed(seed)
    elif base.name == "tensorflow":
        base.tf.random.set_seed(seed % 2**31)


def _spec_params(scenario: Scenario) -> dict[str, np.ndarray]:
    """The parameters the spec sets (BatchNormalization's, SReLU's), in float32; W and b as zeros,
    to be replaced by a weights file's (the initializers are the libraries' here, not the harness's)."""
    layers = tuple(replace(layer, init="Zero") if layer.info.has_weights else layer for layer in scenario.layers)
    return spec_state(scenario.with_(dtype="float32", layers=layers))


def _parse(base: Any, scenario: Scenario) -> Any:
    """The library's own model of ``scenario``, its own initializers run (the RNG seeded)."""
    base.setup()
    mlp = base._module("multilayer_perceptron")
    _seed(base, scenario.seed)
    with base.precision("float32"):
        return mlp.parse_multilayer_perceptron(*model_strings(scenario))


def initial_state(scenario: Scenario) -> dict[str, np.ndarray]:
    """The parameters ``--init-from``'s library draws: its model made by its own parser (its own
    initializers), saved by its own ``save_weights_and_bias`` and read back from that file; the
    parameters a weights file does not hold (BatchNormalization's, SReLU's) as the spec sets them,
    in float32 (:func:`harness.spec.state.initial_state`: the libraries build them from the spec)."""
    if scenario.weights:  # --load-weights: the user's file instead of a library's draw (the runner adds it)
        return _spec_params(scenario)
    base = adapters.load(scenario.init_from)
    base.setup()
    for name in ("multilayer_perceptron", "utilities"):
        base._module(name).print = _quiet
    try:
        model = _parse(base, scenario)
    except Exception as e:  # its own parser refuses the spec: it cannot be the one that draws
        others = ", ".join(b for b in BACKENDS if b != scenario.init_from)
        raise SpecError(f"--init-from {scenario.init_from}: its own parse_multilayer_perceptron raised "
                        f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''} "
                        f"(a finding about it, which its build in the run shows too); choose another of "
                        f"{others}") from None
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "weights.npz")
        model.save_weights_and_bias(path)
        with np.load(path) as saved:
            weights = {k: np.asarray(saved[k], dtype=np.float64) for k in saved.files}
    state = _spec_params(scenario)
    for index, position in enumerate(linear_positions(scenario), start=1):
        state[f"W{position}"], state[f"b{position}"] = weights[f"W{index}"], weights[f"b{index}"].reshape(-1)
    return state


class NativeBackend:
    """One library run as it runs itself; the :class:`harness.core.backend.Backend` protocol."""

    def __init__(self, base: Any):
        self.base, self.name = base, base.name
        self.dtypes: dict[str, str] = {}
        self._go, self._back = threading.Semaphore(0), threading.Semaphore(0)
        self._item: tuple[str, Any] = ("done", None)
        self._stop = False
        self._thread: threading.Thread | None = None
        self._steps = 0

    def setup(self) -> None:
        self.base.setup()

    def build(self, scenario: Scenario, state: dict[str, np.ndarray]) -> None:
        base = self.base
        base.setup()
        base.scenario, base.dtype = scenario, "float32"
        self.scenario = scenario
        for name in ("training", "datasets", "multilayer_perceptron", "utilities"):
            base._module(name).print = _quiet
        self.model = model = _parse(base, scenario)
        self._load(scenario, state)
        base.model = model
        base._slots = param_slots(scenario, model.layers)
        base._optimizers = {}
        for i, (spec, layer) in enumerate(zip(scenario.layers, model.layers), start=1):
            order = OPTIMIZER_ORDER.get(spec.kind, ("W", "b", "srelu"))
            for param, optimizer in zip(order, layer.optimizer.optimizers):
                base._optimizers[f"{param}{i}"] = optimizer
        self.loss = base._module("loss_functions").parse_loss_function(scenario.loss)
        self._observe()

    def _load(self, scenario: Scenario, state: dict[str, np.ndarray]) -> None:
        """Load ``state`` through the library's own ``load_weights_and_bias`` and check that the
        model then holds exactly those values (BatchNormalization's and SReLU's, which the file does
        not hold, as the spec sets them, compared in float32: a library that keeps them in another
        dtype is the runner's dtype finding, not a loading fault)."""
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "weights.npz")
            np.savez(path, **{f"{p}{index}": state[f"{p}{position}"].astype(np.float32)
                              for index, position in enumerate(linear_positions(scenario), start=1) for p in "Wb"})
            with self.base.precision("float32"):
                self.model.load_weights_and_bias(path)
        filed = {f"{p}{position}" for position in linear_positions(scenario) for p in "Wb"}
        for slot, (obj, attr, _, _) in param_slots(scenario, self.model.layers).items():
            held = np.asarray(self.base.to_numpy(getattr(obj, attr)))
            held = held if slot in filed else as_dtype(held, "float32")
            want = state[slot]
            if held.shape != want.shape or not np.array_equal(held, want):
                where = "its shape " + str(held.shape) if held.shape != want.shape else \
                    "element " + str(tuple(int(j) for j in np.argwhere(held != want)[0]))
                raise RuntimeError(f"after load_weights_and_bias, {slot} differs from the weights file "
                                   f"(from --init-from {scenario.init_from}) at {where}")

    def _observe(self) -> None:
        """Wrap the model's and the loss's methods on the instances (the classes stay untouched)."""
        model, loss, seen = self.model, self.loss, {}
        feedforward, backpropagate, optimize, gradient = model.feedforward, model.backpropagate, model.optimize, \
            loss.gradient

        def observed_feedforward(X):
            seen["X"] = X
            return feedforward(X)

        def observed_gradient(Y, T):
            seen["T"], seen["loss"] = T, loss(Y, T)
            return gradient(Y, T)

        def observed_backpropagate(Y, DY):
            seen["Y"], seen["DY"] = Y, DY
            return backpropagate(Y, DY)

        def observed_optimize(eta):
            trace = self._trace(seen, eta, optimize)
            self._item = ("trace", trace)
            self._back.release()
            self._go.acquire()
            if self._stop:
                raise _Stop

        model.feedforward, model.backpropagate, model.optimize = observed_feedforward, observed_backpropagate, \
            observed_optimize
        loss.gradient = observed_gradient

    def _trace(self, seen: dict, eta: float, optimize: Any) -> Trace:
        self.eta = eta

        def update() -> None:
            with np.errstate(all="ignore"):
                optimize(eta)

        trace = self.base.record(seen, update)
        self.dtypes = self.base.dtypes
        return trace

    def _loop(self) -> None:
        """The library's own training: loaders, scheduler, then its SGD loop, in this thread."""
        base, sc = self.base, self.scenario
        self._go.acquire()
        try:
            if self._stop:
                return
            with base.precision("float32"), np.errstate(all="ignore"), tempfile.TemporaryDirectory() as tmp:
                path = sc.data.source[4:]
                if not sc.data.source.startswith("npz:"):  # built-in data, in the libraries' file format
                    path = os.path.join(tmp, "data.npz")
                    np.savez(path, **loader_arrays(sc))
                train, test = base._module("datasets").create_npz_dataloaders(path, batch_size=sc.batch_size)
                schedule = base._module("learning_rate").parse_learning_rate(learning_rate_text(sc))
                epochs = math.ceil(sc.steps / max(1, len(train)))
                base._module("training").stochastic_gradient_descent(self.model, epochs, self.loss, schedule, train, test)
            self._item = ("done", None)
        except _Stop:
            return
        except Exception as e:  # the library's own failure: handed to the runner's step
            self._item = ("error", e)
        self._back.release()

    def step(self, X: np.ndarray, T: np.ndarray, lr: float) -> Trace:
        """The library's next step, as its loop made it. ``X``, ``T`` and ``lr`` are the harness's
        expectation, not given to the library (its loop uses its own loader and scheduler); the
        rate its scheduler gave must be ``lr`` exactly, else the step fails, blamed on it."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name=f"nerva-{self.name}", daemon=True)
            self._thread.start()
        self._go.release()
        self._back.acquire()
        kind, value = self._item
        if kind == "error":
            raise value
        if kind == "done":
            raise RuntimeError(f"the training loop ended after {self._steps} step(s), "
                               f"before the {self.scenario.steps} its loaders and epochs should make")
        self._steps += 1
        if self.eta != lr:  # its scheduler, against the formula (harness.spec.schedule) evaluated as they do
            raise RuntimeError(f"its learning-rate scheduler gave {self.eta!r} at step {self._steps - 1}, "
                               f"where the formula of --learning-rate {self.scenario.lr_text} gives {lr!r}")
        return value

    def get_state(self, parameters: bool = True) -> dict[str, np.ndarray]:
        return self.base.get_state(parameters)

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        self.base.set_state(state)

    def close(self) -> None:
        """End the library's loop (it waits in ``optimize``) and its thread."""
        if self._thread is not None and self._thread.is_alive():
            self._stop = True
            self._go.release()
            self._thread.join(timeout=60)
