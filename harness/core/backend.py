"""What a backend is to the harness: the :class:`Backend` protocol every adapter implements
(the four Nerva libraries, the two oracles, a plug-in), and :class:`BackendFailure`, what the
runner records when one raises.

The protocol is what the runner calls, in this order: ``setup()`` once (imports the framework),
``build(scenario, state)``, then per step ``step(X, T, lr)`` returning a :data:`~harness.core.keys.Trace`
(every tensor of docs/design.md, "What a trace holds", as NumPy copies in float64 or the run's
dtype), and in lockstep
mode, or after a kink flip, ``get_state()`` / ``set_state(state)`` with the parameters by name
(``W1``, ``b1``, ``srelu2`` …) and the optimizer velocities (``W1.v`` …; the velocities only with
``parameters=False``, which trajectory mode reads at every step, float64 or the run's dtype; a backend whose ``get_state``
takes no argument has its velocities taken from its whole state, :func:`harness.run.contract.velocities`). ``dtypes`` records the
dtype each traced tensor had inside the framework (checked against the run's dtype).

Two optional parts (docs/plugins.md). ``provides``: the tensor names (``Key.tensor``: ``"DZ"``,
``"W"`` …) the backend's traces hold, in every layer that has them; without it, every tensor of
the scenario. What the scenario defines and a backend does not provide is not judged for it and
is named in every report; a backend that does not provide :data:`MINIMUM` is refused before any
step. :class:`Components`: the single functions the component suite and ``conventions`` evaluate.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from harness.core.keys import GRADIENT, Key, Trace

MINIMUM_GLOBAL = ("X", "T", "Y", "DY", "loss")
"""The tensors of the whole step (``Key.layer`` None) every backend must provide."""
MINIMUM_LAYER = ("DX", *GRADIENT, *GRADIENT.values())
"""The layer tensors every backend must provide where the layer has them: DX, every trainable
parameter after the update (``W`` …) and its gradient (``DW`` …)."""


def minimum(key: Key) -> bool:
    """Whether a backend must provide ``key`` (:data:`MINIMUM_GLOBAL`, :data:`MINIMUM_LAYER`)."""
    return key.tensor in (MINIMUM_GLOBAL if key.layer is None else MINIMUM_LAYER)


@runtime_checkable
class Backend(Protocol):
    name: str
    dtypes: dict[str, str]

    def setup(self) -> None: ...

    def build(self, scenario, state: dict[str, np.ndarray]) -> None: ...

    def step(self, X: np.ndarray, T: np.ndarray, lr: float) -> Trace: ...

    def get_state(self, parameters: bool = True) -> dict[str, np.ndarray]: ...

    def set_state(self, state: dict[str, np.ndarray]) -> None: ...


COMPONENTS = ("activation", "loss_function", "array", "to_numpy", "precision")
"""The methods of :class:`Components`, the optional part; one missing: "not implemented by …"."""


@runtime_checkable
class Components(Protocol):
    """The optional part: single functions as the backend computes them, for the component suite
    and ``conventions``. ``activation(kind, arg)`` and ``loss_function(name)`` return objects with
    ``__call__`` and ``gradient`` (Nerva's interface); ``array(a, dtype)`` makes a backend array of
    a NumPy one, ``to_numpy(x)`` a float64 NumPy copy; ``precision(dtype)`` is a context manager
    in which the backend computes in ``dtype``."""

    def activation(self, kind: str, arg: dict[str, float], dtype: str | None = None): ...

    def loss_function(self, name: str): ...

    def array(self, a: np.ndarray, dtype: str): ...

    def to_numpy(self, x) -> np.ndarray: ...

    def precision(self, dtype: str): ...


def lacks_components(backend) -> list[str]:
    """The methods of :class:`Components` that ``backend`` does not have ([]: it implements them)."""
    return [name for name in COMPONENTS if not callable(getattr(backend, name, None))]


@dataclass(frozen=True)
class BackendFailure:
    """A backend raised: while building (``step`` None) or in a step. ``str()`` is the one line
    reports show: ``step 3: RuntimeError: shapes do not match (layers.py:88)``; ``details``: the
    whole traceback, which ``--debug`` prints."""

    step: int | None
    type: str
    message: str
    where: str | None = None  # "file.py:line" of the innermost frame
    details: str | None = field(default=None, compare=False)

    @property
    def phase(self) -> str:
        return "build" if self.step is None else f"step {self.step}"

    @classmethod
    def of(cls, e: BaseException, step: int | None) -> "BackendFailure":
        frame = traceback.extract_tb(e.__traceback__)[-1] if e.__traceback__ else None
        where = f"{frame.filename.rsplit('/', 1)[-1]}:{frame.lineno}" if frame else None
        text = str(e).strip().splitlines()[0] if str(e).strip() else ""
        return cls(step, type(e).__name__, text, where, "".join(traceback.format_exception(type(e), e, e.__traceback__)))

    def __str__(self) -> str:
        return f"{self.phase}: {self.type}: {self.message}" + (f" ({self.where})" if self.where else "")
