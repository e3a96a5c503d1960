"""One driver for the four Nerva libraries; the adapters only say how their arrays work.

The four libraries are line-for-line translations of one another (see docs/nerva-api.md), so the
model is built, loaded, stepped and read the same way for all of them. What differs is small
and lives in each adapter as a handful of methods (:class:`NervaAdapter`'s abstract part):

- ``array(a, dtype)``        a new backend array holding the NumPy array ``a``;
- ``buffer(a, dtype)``       a new *parameter buffer* as the library stores it (tf.Variable …);
- ``write(obj, attr, a)``    overwrite a buffer so that the optimizer holding it sees the change;
- ``copy(x, dtype=None)``    a NumPy copy (never a view of a live buffer), in the dtype the backend
                             holds ``x`` in, or in ``dtype`` (``to_numpy``: float64);
- ``precision(dtype)``       a context in which the framework computes in ``dtype``;
- ``optimizer(factory, obj, attr, dattr)``  (JAX's factories take attribute names).

A custom activation or loss (:data:`harness.core.components.CUSTOM`: ELU, AbsoluteError, a
user's) is the object its declaration's factory for this backend makes.

A step is exactly Nerva's training loop: ``Y = M.feedforward(X)``,
``DY = loss.gradient(Y, T) / N``, ``M.backpropagate(Y, DY)``, ``M.optimize(eta)``.
"""

from __future__ import annotations

import contextlib
import importlib
from typing import Any, Callable

import numpy as np

from harness.core.components import CUSTOM, resolve
from harness.core.keys import GRADIENT, Trace
from harness.spec.scenario import OptimizerSpec, Scenario



def param_slots(scenario: Scenario, layers: list[Any]) -> dict[str, tuple[Any, str, str, OptimizerSpec]]:
    """Where each parameter lives in a built Nerva model: key -> (object, attr, grad attr, optimizer).

    The attribute names are the Nerva libraries' own (the same in all four): a linear-type layer
    keeps ``W``/``DW`` and ``b``/``Db``, BatchNormalization ``gamma``/``Dgamma`` and ``beta``/``Dbeta``,
    SReLU its four parameters in its activation's ``x``/``Dx``."""
    slots = {}
    for i, (spec, layer) in enumerate(zip(scenario.layers, layers), start=1):
        for param, opt in spec.optimizers:
            srelu = param == "srelu"  # SReLU's parameters live in its activation, as x and Dx
            attr, dattr = ("x", "Dx") if srelu else (param, GRADIENT[param])
            obj = layer.act if srelu else layer
            slots[f"{param}{i}"] = (obj, attr, dattr, opt)
    return slots


class NervaAdapter:
    """A Nerva backend behind the harness's interface. Subclasses fill in the array glue."""

    name: str = ""
    package: str = ""  # e.g. "nerva_numpy"
    framework: str = ""  # the module whose absence makes the backend unavailable

    # -- the per-backend glue -------------------------------------------------------------
    def array(self, a: np.ndarray, dtype: str) -> Any:
        raise NotImplementedError

    def buffer(self, a: np.ndarray, dtype: str) -> Any:
        return self.array(a, dtype)

    def write(self, obj: Any, attr: str, a: np.ndarray) -> None:
        raise NotImplementedError

    def copy(self, x: Any, dtype: Any = None) -> np.ndarray:
        return np.array(x, dtype=dtype)

    def to_numpy(self, x: Any) -> np.ndarray:
        """A float64 NumPy copy of ``x`` (states, single components)."""
        return self.copy(x, np.float64)

    def precision(self, dtype: str) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def optimizer(self, factory: Any, obj: Any, attr: str, dattr: str) -> Any:
        return factory(getattr(obj, attr), getattr(obj, dattr))

    def setup(self) -> None:
        """Import the framework (lazily: only when the backend is used)."""

    # -- shared ---------------------------------------------------------------------------
    def _module(self, name: str) -> Any:
        return importlib.import_module(f"{self.package}.{name}")

    def build(self, scenario: Scenario, state: dict[str, np.ndarray]) -> None:
        """Build the backend's MLP from the spec and load the harness's parameters."""
        self.setup()
        self.scenario, self.dtype = scenario, scenario.dtype
        layers_mod = self._module("layers")
        opts = self._module("optimizers")
        mlp = self._module("multilayer_perceptron")
        with self.precision(self.dtype):
            layers, width = [], scenario.input_size
            for spec in scenario.layers:
                D, K = width, spec.units
                kind, arg = spec.kind, spec.arg
                if kind == "Linear":
                    layer = layers_mod.LinearLayer(D, K)
                elif kind == "Softmax":
                    layer = layers_mod.SoftmaxLayer(D, K)
                elif kind == "LogSoftmax":
                    layer = layers_mod.LogSoftmaxLayer(D, K)
                elif kind == "BatchNormalization":
                    layer = layers_mod.BatchNormalizationLayer(D)
                elif kind == "SReLU":
                    layer = layers_mod.SReLULayer(D, K, self.activation(kind, arg))
                else:
                    layer = layers_mod.ActivationLayer(D, K, self.activation(kind, arg))
                layers.append(layer)
                width = K
            self.model = mlp.MultilayerPerceptron(layers)
            # Replace every buffer by one of the requested dtype, then attach the optimizers
            # (they hold the buffer objects in numpy/torch/tensorflow, so this order matters).
            self._slots = param_slots(scenario, self.model.layers)
            self._optimizers: dict[str, Any] = {}
            for key, (obj, attr, dattr, opt_spec) in self._slots.items():
                setattr(obj, attr, self.buffer(state[key], self.dtype))
                setattr(obj, dattr, self.buffer(np.zeros_like(state[key]), self.dtype))
            for layer, spec in zip(self.model.layers, scenario.layers):
                if spec.kind == "BatchNormalization":
                    layer.inv_sqrt_Sigma = self.buffer(np.zeros(spec.units), self.dtype)
                mine = [k for k in self._slots if self._slots[k][0] in (layer, getattr(layer, "act", None))]
                built = []
                for key in mine:
                    obj, attr, dattr, opt_spec = self._slots[key]
                    factory = opts.parse_optimizer(str(opt_spec))
                    self._optimizers[key] = self.optimizer(factory, obj, attr, dattr)
                    built.append(self._optimizers[key])
                layer.optimizer = opts.CompositeOptimizer(built)
            self.loss = self.loss_function(scenario.loss)
        self.set_state(state)

    # -- single components, for the component suite and the conventions table ------------
    def activation(self, kind: str, arg: dict[str, float], dtype: str | None = None) -> Any:
        """The backend's own activation function object (a custom one: its factory's for this backend).

        With ``dtype``, SReLU's parameter buffers are made in that dtype (the libraries make
        them float32, nerva-numpy float64), as :meth:`build` does for a model.
        """
        self.setup()
        acts = self._module("activation_functions")
        if kind == "SReLU":
            act = acts.SReLUActivation(**arg)
            if dtype is not None:
                act.x = self.buffer(np.array([arg["al"], arg["tl"], arg["ar"], arg["tr"]]), dtype)
                act.Dx = self.buffer(np.zeros(4), dtype)
            return act
        if kind in CUSTOM:
            return self.custom(kind)(**arg)
        text = kind + ("(" + ", ".join(f"{k}={v!r}" for k, v in arg.items()) + ")" if arg else "")
        return acts.parse_activation(text)

    def loss_function(self, name: str) -> Any:
        self.setup()
        losses = self._module("loss_functions")
        if name in CUSTOM:
            return self.custom(name)()
        return losses.parse_loss_function(name)

    def custom(self, name: str) -> Any:
        """This backend's factory of a custom component (its declaration's ``implementations``;
        :func:`harness.run.component_files.check_implemented` refuses a run without it)."""
        return resolve(CUSTOM[name].implementations)[self.name]

    def softmax_function(self, name: str) -> Any:
        """softmax, stable_softmax, log_softmax or stable_log_softmax, as the library defines it."""
        self.setup()
        return getattr(self._module("softmax_functions"), name)

    def backward(self, X: np.ndarray, DY: np.ndarray) -> Trace:
        """Feedforward X and backpropagate a given DY (no loss, no update): Y and every layer tensor."""
        with self.precision(self.dtype), np.errstate(all="ignore"):
            Xb = self.array(X, self.dtype)
            Y = self.model.feedforward(Xb)
            self.model.backpropagate(Y, self.array(DY, self.dtype))
            trace = {"Y": self.to_numpy(Y)}
            for i, layer in enumerate(self.model.layers, start=1):
                trace.update({f"{k}{i}": self.to_numpy(v) for k, v in self._layer_tensors(layer).items()})
        return trace

    @staticmethod
    def _layer_tensors(layer: Any) -> dict[str, Any]:
        found = {name: getattr(layer, name, None) for name in ("X", "Z", "DZ", "DW", "Db", "DX", "Dgamma", "Dbeta")}
        if hasattr(layer, "act") and hasattr(layer.act, "Dx"):
            found["Dsrelu"] = layer.act.Dx
        return {k: v for k, v in found.items() if v is not None}

    def get_state(self, parameters: bool = True) -> dict[str, np.ndarray]:
        """Parameters and optimizer velocities (``W1``, ``W1.v`` …) as float64 copies; without
        ``parameters`` the velocities only (a trace holds the parameters), what a trajectory
        step reads at every step: copies in the backend's dtype, as a trace's (the judge reads
        them as float64)."""
        state, copy = {}, self.to_numpy if parameters else self.copy
        for key, (obj, attr, _, _) in self._slots.items():
            if parameters:
                state[key] = self.to_numpy(getattr(obj, attr))
            velocity = getattr(self._optimizers[key], "delta_x", None)
            if velocity is not None:
                state[key + ".v"] = copy(velocity)
        return state

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        with self.precision(self.dtype):
            for key, (obj, attr, _, _) in self._slots.items():
                self.write(obj, attr, state[key])
                opt = self._optimizers[key]
                if hasattr(opt, "delta_x"):
                    v = state.get(key + ".v")
                    opt.delta_x = self.array(np.zeros_like(state[key]) if v is None else v, self.dtype)

    def step(self, X: np.ndarray, T: np.ndarray, lr: float) -> Trace:
        """One SGD step as Nerva's training loop does it; every intermediate as it was computed.

        NumPy's floating-point warnings (overflow in a float32 exp …) are silenced: a value that
        overflows is judged by the comparator, and a NaN or Inf is a ``non-finite`` finding that
        names the backend and the first tensor that produced it."""
        with self.precision(self.dtype), np.errstate(all="ignore"):
            Xb, Tb = self.array(X, self.dtype), self.array(T, self.dtype)
            M, N = self.model, X.shape[0]
            Y = M.feedforward(Xb)
            loss = self.loss(Y, Tb)
            DY = self.loss.gradient(Y, Tb) / N
            M.backpropagate(Y, DY)
            return self.record({"X": Xb, "T": Tb, "Y": Y, "DY": DY, "loss": loss}, lambda: M.optimize(lr))

    def record(self, seen: dict[str, Any], optimize: Callable[[], None]) -> Trace:
        """The trace of one step as NumPy copies in the dtype the backend computed (float32 in a
        float32 run: the upcast to float64 is the judge's, off this thread and exact): ``seen``
        (X and T as the backend holds them, Y, DY, the loss) and every layer's tensors, then
        ``optimize()`` and the updated parameters; :attr:`dtypes` the dtype each had inside the
        backend. The one trace of both builds (this driver's step and the library-built loop,
        adapters.nerva_native)."""
        trace: Trace = {}
        self.dtypes: dict[str, str] = {}

        def keep(key: str, value: Any) -> None:
            trace[key] = self.copy(value)
            self.dtypes[key] = dtype_name(value)

        for key in ("X", "T", "Y", "DY", "loss"):
            keep(key, seen[key])
        trace["loss"] = trace["loss"].reshape(())
        for i, layer in enumerate(self.model.layers, start=1):
            for name, value in self._layer_tensors(layer).items():
                keep(f"{name}{i}", value)
        optimize()
        for key, (obj, attr, _, _) in self._slots.items():
            keep(key, getattr(obj, attr))
        return trace


def dtype_name(x: Any) -> str:
    """'float32' for a NumPy, JAX, torch or TensorFlow array (or a Python float: 'float64')."""
    dtype = getattr(x, "dtype", None)
    if dtype is None:
        return "float64" if isinstance(x, float) else type(x).__name__
    name = getattr(dtype, "name", None)
    return name if isinstance(name, str) else str(dtype).rsplit(".", 1)[-1]
