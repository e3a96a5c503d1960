"""The documented defects of the released backends: the one list of findings set aside as known.

Each defect is here once, with its number in docs/findings.md, the backends it blames, the
dtype it shows in, what it applies to and, for a defect of one version line, the versions. Nothing else excuses a finding, and none of these
is an excuse for rounding: the comparator alone judges every value. The list is read in four
places:

- ``check``: a catalog entry names the defects its runs are expected to show by id
  (``known = ["tensorflow-float64-alpha"]``, :func:`expected`); ``check`` then expects exactly
  that verdict (harness.run.plan.outcome), reports it as known with its finding, and fails when
  it does not show, so a fix upstream or a loss of sensitivity is noticed;
- classification (harness.run.findings): a dtype mismatch a defect explains (the tensors it
  ``held`` in another dtype) is not a finding (:func:`known_dtype`);
- ``run`` (:func:`shown`): a failing run whose first divergence is a documented defect prints
  ``check``'s ``KNOWN`` line for it;
- ``explore`` (harness.search.evaluate): a red finding a defect may explain
  (:meth:`Defect.may_explain`) is known only when a counterfactual run of the same example with
  the cause removed (``counterfactual`` changes the scenario, ``patch`` the backend, inside this
  process) no longer shows it. A defect with neither cannot be checked that way.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np

from harness.core.components import BACKENDS
from harness.core.errors import SpecError
from harness.core.keys import parse as parse_key
from harness.spec.scenario import Scenario

if TYPE_CHECKING:
    from harness.run.findings import Finding
    from harness.run.runner import RunResult

ALPHA_LAYERS = ("LeakyReLU", "AllReLU")
RELU_FAMILY = ("ReLU", "LeakyReLU", "AllReLU")


def _always(scenario: Scenario, tensor: str | None) -> bool:
    return True


def _any_versions() -> bool:
    return True


def _numpy_before_2() -> bool:
    """NumPy 1.x: value-based promotion, where a Python int beside a float32 scalar is int64
    (NumPy 2 follows NEP 50: the Python int is weak and takes the float32)."""
    return np.lib.NumpyVersion(np.__version__) < "2.0.0"


@dataclass(frozen=True)
class Defect:
    """A documented defect (docs/findings.md #``number``).

    It concerns ``backends`` in ``dtype`` runs (None: either dtype) of networks with a layer of
    one of the kinds ``layers`` (empty: any network); ``applies`` narrows that further for a
    finding's tensor (its name without layer number). ``held``: a dtype defect's tensors (names
    without layer numbers) the backend holds in another dtype. ``counterfactual`` (the scenario with the cause removed) and ``patch`` (a
    context manager that removes it from the backend, in-process) are what explore reruns.
    ``versions``: True when the installed versions show it (a defect of one NumPy line only)."""

    id: str
    number: int
    summary: str
    backends: tuple[str, ...]
    dtype: str | None
    layers: tuple[str, ...] = ()
    applies: Callable[[Scenario, str | None], bool] = _always
    counterfactual: Callable[[Scenario], Scenario] | None = None
    patch: Callable[[], contextlib.AbstractContextManager] | None = None
    held: tuple[str, ...] = ()
    versions: Callable[[], bool] = _any_versions

    @property
    def finding(self) -> str:
        """Where it is documented: ``docs/findings.md #N``."""
        return f"docs/findings.md #{self.number}"

    def concerns(self, scenario: Scenario) -> bool:
        """True when a run of ``scenario`` can show it (its dtype and layers, the installed versions)."""
        return (self.dtype is None or scenario.dtype == self.dtype) and self.versions() and \
            (not self.layers or any(layer.kind in self.layers for layer in scenario.layers))

    def holds(self, scenario: Scenario, backend: str, tensor: str) -> bool:
        """True when this dtype defect explains ``backend`` holding ``tensor`` (``DZ2``) in another
        dtype: one of its tensors, in a layer that is of its kinds or feeds one (backpropagation
        carries the widened gradient down to every earlier layer)."""
        key = parse_key(tensor)
        later = scenario.layers[key.layer - 1:] if key.layer else scenario.layers
        return bool(self.held) and backend in self.backends and self.concerns(scenario) \
            and key.tensor in self.held and (not self.layers or any(layer.kind in self.layers for layer in later))

    def may_explain(self, scenario: Scenario, finding: "Finding") -> bool:
        """True when explore should test, by a counterfactual run, whether it explains ``finding``."""
        return (self.counterfactual is not None or self.patch is not None) and self.concerns(scenario) \
            and any(b in self.backends for b in finding.backends) and self.applies(scenario, finding.tensor)

    def entry(self) -> dict[str, Any]:
        """What a check report records as the expected defect."""
        return {"id": self.id, "dtype": self.dtype, "backends": list(self.backends), "finding": self.finding}


# ------------------------------------------------------------------------------ causes removed

def _inexact_alphas(scenario: Scenario, tensor: str | None) -> bool:
    return any(layer.kind in ALPHA_LAYERS and float(np.float32(layer.arg["alpha"])) != layer.arg["alpha"]
               for layer in scenario.layers)


def _alphas_in_float32(scenario: Scenario) -> Scenario:
    layers = tuple(
        dataclasses.replace(layer, args=(("alpha", float(np.float32(layer.arg["alpha"]))),))
        if layer.kind in ALPHA_LAYERS else layer
        for layer in scenario.layers)
    return scenario.with_(layers=layers)


@contextlib.contextmanager
def _exact_torch_log_sigmoid() -> Iterator[None]:
    """nerva-torch's log_sigmoid with softplus's shortcut above 20 removed (docs/findings.md #15)."""
    import torch
    from nerva_torch import loss_functions, matrix_operations

    def log_sigmoid(X):
        return -torch.nn.functional.softplus(-X, threshold=float("inf"))

    saved = loss_functions.log_sigmoid
    loss_functions.log_sigmoid = log_sigmoid
    try:
        yield
    finally:
        loss_functions.log_sigmoid = saved
        del matrix_operations  # imported to make sure the module the loss uses is loaded


@contextlib.contextmanager
def _stable_log_softmax_layers() -> Iterator[None]:
    """The four LogSoftmax layers with the libraries' own stable_log_softmax (docs/findings.md #16)."""
    saved = []
    for name in BACKENDS:
        try:
            layers = importlib.import_module(f"nerva_{name}.layers")
            functions = importlib.import_module(f"nerva_{name}.softmax_functions")
        except ImportError:
            continue
        saved.append((layers, layers.log_softmax))
        layers.log_softmax = functions.stable_log_softmax
    try:
        yield
    finally:
        for layers, original in saved:
            layers.log_softmax = original


# ------------------------------------------------------------------------------ the list

DEFECTS: tuple[Defect, ...] = (
    Defect("tensorflow-float64-alpha", 2,
           "nerva-tensorflow uses LeakyReLU/AllReLU alpha rounded to float32 in float64 runs",
           ("tensorflow",), "float64", ALPHA_LAYERS, applies=_inexact_alphas, counterfactual=_alphas_in_float32),
    Defect("numpy-float32-relu-dtype", 3,
           "nerva-numpy's ReLU-family derivatives are integer arrays, so in float32 runs DZ and DX of those "
           "layers (and what they feed) widen to float64",
           ("numpy",), "float32", RELU_FAMILY, held=("DZ", "DX")),
    Defect("numpy1-float32-srelu-dtype", 22,
           "with NumPy 1.x, nerva-numpy's SReLU derivative np.where(X <= tl, al, np.where(X < tr, 1, ar)) is "
           "float64 (the Python int 1 beside a float32 scalar promotes to float64), so in float32 runs DZ and DX "
           "of SReLU layers (and what they feed) widen to float64",
           ("numpy",), "float32", ("SReLU",), held=("DZ", "DX"), versions=_numpy_before_2),
    Defect("torch-float64-log-sigmoid", 15,
           "nerva-torch's log_sigmoid is -softplus(-x), and torch's softplus returns x above 20, so float64 "
           "LogisticCrossEntropy values lose up to e^-20 per element",
           ("torch",), "float64",
           applies=lambda sc, tensor: sc.loss == "LogisticCrossEntropy" and tensor == "loss",
           patch=_exact_torch_log_sigmoid),
    Defect("plain-log-softmax-layer", 16,
           "the LogSoftmax layers use the plain log_softmax, z - log(sum(exp(z))), whose error is u absolute, "
           "not u |y|: outputs near 0 are less accurate than a stable form's",
           BACKENDS, None, ("LogSoftmax",), patch=_stable_log_softmax_layers),
)
BY_ID = {d.id: d for d in DEFECTS}


def get(defect_id: str, where: str = "") -> Defect:
    """The defect with this id; SpecError naming ``where`` it was asked for when there is none."""
    if defect_id not in BY_ID:
        raise SpecError(f"{where or 'known defect'} {defect_id!r} is not a documented defect; "
                        f"the ids are {', '.join(BY_ID)} (harness/run/known.py)")
    return BY_ID[defect_id]


def expected(name: str, dtype: str, backends: list[str] | None = None) -> Defect | None:
    """The documented defect a ``check`` run of catalog entry ``name`` in ``dtype`` is expected
    to show (the entry's ``known`` ids), if any; None when ``backends`` (the run's) do not
    include every backend it blames."""
    import scenarios

    listed = [get(i, f"catalog entry {name!r}: known") for i in scenarios.catalog().get(name, {}).get("known", [])]
    for defect in listed:
        if defect.dtype in (None, dtype):
            if backends is not None and not set(defect.backends) <= set(backends):
                return None  # the defective backend is not in this run
            return defect
    return None


def known_dtype(result: "RunResult", backend: str) -> str | None:
    """The documented finding(s) that explain every one of ``backend``'s dtype mismatches in this
    run (``docs/findings.md #3``, or ``docs/findings.md #3, #22`` when it takes two), if they do."""
    found: list[Defect] = []
    for tensor in result.dtype_mismatches.get(backend, []):
        defect = next((d for d in DEFECTS if d.holds(result.scenario, backend, tensor)), None)
        if defect is None:
            return None
        if defect not in found:
            found.append(defect)
    if not found:
        return None
    return found[0].finding + "".join(f", #{d.number}" for d in found[1:])


def shown(result: "RunResult") -> Defect | None:
    """The documented defect a failing run shows, judged as ``check`` judges it (no backend raised
    and the first divergence blames exactly the defect's backends, harness.run.plan.outcome): for
    a catalog scenario the one its entry names, else any that concerns the run and applies to the
    first divergence's tensor (a dtype defect explains dtype mismatches, never a divergence). None
    when the run has no first divergence or it shows none."""
    import scenarios
    from harness.run.plan import outcome

    if result.first_divergence is None:
        return None
    sc, tensor = result.scenario, result.first_divergence[1].key[0]
    if sc.name in scenarios.catalog():
        listed = expected(sc.name, sc.dtype, result.backends)
        candidates: tuple[Defect, ...] = (listed,) if listed else ()
    else:
        candidates = tuple(d for d in DEFECTS if not d.held)
    for defect in candidates:
        if defect.concerns(sc) and set(defect.backends) <= set(result.backends) \
                and outcome(result, defect.backends) == "known" and defect.applies(sc, tensor):
            return defect
    return None
