"""What a backend is to the harness: the :class:`Backend` protocol every adapter implements
(the four Nerva libraries, the two oracles, a plug-in), and :class:`BackendFailure`, what the
runner records when one raises.

The protocol is what the runner calls, in this order: ``setup()`` once (imports the framework),
``build(scenario, state)``, then per step ``step(X, T, lr)`` returning a :data:`~harness.core.keys.Trace`
(every tensor of docs/design.md, "What a trace holds", as float64 NumPy copies), and in lockstep
mode, or after a kink flip, ``get_state()`` / ``set_state(state)`` with the parameters by name
(``W1``, ``b1``, ``srelu2`` …) and the optimizer velocities (``W1.v`` …; the velocities only with
``parameters=False``, which trajectory mode reads at every step). ``dtypes`` records the
dtype each traced tensor had inside the framework (checked against the run's dtype).
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from harness.core.keys import Trace


@runtime_checkable
class Backend(Protocol):
    name: str
    dtypes: dict[str, str]

    def setup(self) -> None: ...

    def build(self, scenario, state: dict[str, np.ndarray]) -> None: ...

    def step(self, X: np.ndarray, T: np.ndarray, lr: float) -> Trace: ...

    def get_state(self, parameters: bool = True) -> dict[str, np.ndarray]: ...

    def set_state(self, state: dict[str, np.ndarray]) -> None: ...


@dataclass(frozen=True)
class BackendFailure:
    """A backend raised: while building (``step`` None) or in a step. ``str()`` is the one line
    reports show: ``step 3: RuntimeError: shapes do not match (layers.py:88)``."""

    step: int | None
    type: str
    message: str
    where: str | None = None  # "file.py:line" of the innermost frame

    @property
    def phase(self) -> str:
        return "build" if self.step is None else f"step {self.step}"

    @classmethod
    def of(cls, e: BaseException, step: int | None) -> "BackendFailure":
        frame = traceback.extract_tb(e.__traceback__)[-1] if e.__traceback__ else None
        where = f"{frame.filename.rsplit('/', 1)[-1]}:{frame.lineno}" if frame else None
        text = str(e).strip().splitlines()[0] if str(e).strip() else ""
        return cls(step, type(e).__name__, text, where)

    def __str__(self) -> str:
        return f"{self.phase}: {self.type}: {self.message}" + (f" ({self.where})" if self.where else "")
