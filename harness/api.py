"""The public surface for a backend or component of one's own: what a plug-in imports.

A backend implements :class:`Backend` and returns :data:`Trace` dictionaries keyed by
:class:`Key` names; what it is asked to run is a :class:`Scenario` of :class:`LayerSpec` s, built
from Nerva's spec strings, with the catalogue of components (:data:`LAYERS`, :data:`LOSSES`,
:data:`OPTIMIZERS`, :data:`INITIALIZERS`). This module stands on :mod:`harness.core` and
:mod:`harness.spec` alone (checked by import-linter in ``tox -e lint``), so a plug-in never pulls
in the oracle, the judge or a framework.
"""

from harness.core.backend import Backend, BackendFailure
# The contract's optional parts (docs/plugins.md): what a backend provides, the single functions.
from harness.core.backend import COMPONENTS, MINIMUM_GLOBAL, MINIMUM_LAYER, Components, lacks_components, minimum
from harness.core.components import INITIALIZERS, LAYERS, LOSSES, OPTIMIZERS, LayerKind, LossKind
# Your own components (docs/plugins.md, "Your own components"): a components file declares these in a
# list COMPONENTS, loaded with --components FILE or the entry-point group nerva_consistency.components.
from harness.core.components import CustomActivation, CustomInitializer, CustomLoss
from harness.core.errors import BackendUnavailable, SpecError
from harness.core.keys import GRADIENT, Key, Trace, parse as parse_key
from harness.spec.scenario import DataSpec, LayerSpec, OptimizerSpec, Scenario, build_scenario

__all__ = ["Backend", "BackendFailure", "INITIALIZERS", "LAYERS", "LOSSES", "OPTIMIZERS", "LayerKind", "LossKind",
           "BackendUnavailable", "SpecError", "GRADIENT", "Key", "Trace", "parse_key", "DataSpec", "LayerSpec",
           "OptimizerSpec", "Scenario", "build_scenario",
           "COMPONENTS", "MINIMUM_GLOBAL", "MINIMUM_LAYER", "Components", "lacks_components", "minimum",
           "CustomActivation", "CustomInitializer", "CustomLoss"]
