"""The public surface for a backend or component of one's own: what a plug-in imports.

It stands on :mod:`harness.core` and :mod:`harness.spec` alone (checked by import-linter in
``tox -e lint``), so a plug-in never pulls in the oracle, the judge or a framework.
"""

from harness.core.components import INITIALIZERS, LAYERS, LOSSES, OPTIMIZERS, LayerKind, LossKind
from harness.core.errors import BackendUnavailable, SpecError
from harness.spec.scenario import DataSpec, LayerSpec, OptimizerSpec, Scenario, build_scenario

__all__ = ["INITIALIZERS", "LAYERS", "LOSSES", "OPTIMIZERS", "LayerKind", "LossKind", "BackendUnavailable",
           "SpecError", "DataSpec", "LayerSpec", "OptimizerSpec", "Scenario", "build_scenario"]
