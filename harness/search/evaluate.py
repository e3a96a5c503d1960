"""One example of the search, judged and sorted: its run, its findings' classes, the float64
rerun that names a float32-only ``bug`` ``unstable``, and the documented defect that explains a
finding.

The comparator is the only judge of a value: its bound is the rounding error a correct
implementation may have at each element, so a finding outside it is a defect, whatever the
example. :func:`evaluate` runs the example (:func:`harness.run.runner.run`), classifies its
findings (:func:`harness.run.findings.classify`) and only names the defect's kind and sorts:

- ``red``: a red finding (bug, unstable, non-finite, dtype, error) that no documented defect
  explains - it fails the search's property. A float32 ``bug`` that the same values in float64
  do not show is ``unstable`` (:func:`unstable`): a numerically unstable formula, still red;
- ``known``: a red finding explained by a documented defect (harness.run.known, the one list,
  docs/findings.md), checked by a counterfactual run with the cause removed (e.g. tensorflow's
  float64 alpha: the same example with every alpha rounded to float32 must be clean) - counted,
  not failed;
- ``other``: kink and convention findings, and non-finite values in every backend - counted,
  never failed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import traceback
from dataclasses import dataclass, field

import numpy as np

from harness.run.findings import Finding, classify
from harness.run.known import DEFECTS
from harness.run.runner import RunResult, run
from scenarios.strategies import Example


@dataclass
class Evaluation:
    """What one example showed, sorted (see the module docstring)."""

    example: Example
    result: RunResult | None
    red: list[Finding] = field(default_factory=list)
    known: list[tuple[Finding, str]] = field(default_factory=list)
    other: list[Finding] = field(default_factory=list)
    runs: int = 1  # runs made (counterfactuals included)

    def report(self) -> str:
        lines = [f"{f.cls} {'/'.join(f.backends)}: {f.detail}" for f in self.red]
        lines += [f"known ({name}): {f.detail}" for f, name in self.known]
        return "\n".join(lines + [self.example.describe()])


def _harness_error(e: BaseException) -> Finding:
    frame = traceback.extract_tb(e.__traceback__)[-1] if e.__traceback__ else None
    where = f" ({frame.filename.rsplit('/', 1)[-1]}:{frame.lineno})" if frame else ""
    return Finding("error", ("harness",), type(e).__name__, detail=f"the harness raised {type(e).__name__}: {e}{where}")


def _worst_ratio(result: RunResult) -> float:
    """The blamed backends' worst ratio (error / bound) at the run's first divergence."""
    first = result.first_divergence
    if first is None:
        return float("inf")
    _, tv = first
    return max((tv.worst.get(b, float("inf")) for b in tv.blamed), default=float("inf"))


def evaluate(example: Example, backends: list[str], *, oracle: str = "auto", known: bool = True) -> Evaluation:
    """Run one example on ``backends`` and sort its findings (red / known / other).

    A float32 ``bug`` is first named ``unstable`` or left a ``bug`` (:func:`unstable`); then a
    red finding a documented defect explains is ``known`` (``known=False``: none is).
    """
    try:
        result = run(example.scenario, list(backends), oracle=oracle, state0=example.state0, data=example.data)
        findings = classify(result)
    except Exception as e:  # the harness itself failed on this example: a defect too (of the harness)
        return Evaluation(example, None, red=[_harness_error(e)])
    ev = Evaluation(example, result)
    for f in findings:
        if not f.red:
            ev.other.append(f)
            continue
        f = unstable(example, result, f, backends, ev)
        explained = _explain(example, f, backends, oracle, ev) if known else None
        if explained:
            ev.known.append((f, explained))
        else:
            ev.red.append(f)
    return ev


def unstable(example: Example, result: RunResult, finding: Finding, backends: list[str],
             ev: Evaluation | None = None) -> Finding:
    """``finding`` as an ``unstable`` finding when only float32 shows it; otherwise unchanged.

    The rule: when a float32 example gives a ``bug`` finding blaming backends B, the same example
    is run again in float64 - the same arrays (every float32 number is exact in float64), the
    scenario with ``dtype="float64"``, the steps up to the finding's - against the same oracle,
    every step judged. If none of B is blamed at that tensor (same step, tensor and layer) there,
    the finding's class becomes ``unstable``; otherwise (B blamed there too, a backend of B
    raised, or the rerun never judged that tensor) it stays ``bug``.

    Why: the comparator's bound is the rounding error a correct implementation may have at that
    element *in the run's dtype*, so a float32 error beyond it is a defect whatever float64
    says. A right formula that loses more accuracy than a stable implementation in the same
    dtype (exp without the max subtraction, a variance as E[x^2] - E[x]^2, a difference of two
    nearly equal terms) is exactly what a float32-only finding is: numerically unstable. It is
    red like ``bug`` (unless a documented known defect explains it); the class only says where
    to look - the formula's conditioning, not its algebra. The rerun is counted in ``ev.runs``.
    """
    if finding.cls != "bug" or example.scenario.dtype != "float32" or finding.step is None:
        return finding
    steps = finding.step + 1
    wide = dataclasses.replace(example.scenario, dtype="float64", steps=steps)
    state0 = {k: v.astype(np.float64) for k, v in example.state0.items()}
    data = [(X.astype(np.float64), T.astype(np.float64)) for X, T in example.data[:steps]]
    try:
        again = run(wide, list(backends), oracle=result.oracle or "none", keep_going=True, state0=state0, data=data)
    except Exception:  # no float64 verdict: nothing shows the finding is float32's alone
        return finding
    finally:
        if ev is not None:
            ev.runs += 1
    key = (finding.tensor, finding.layer)
    tv = next((tv for v in again.steps if v.step == finding.step for tv in v.tensors if tv.key == key), None)
    if tv is None or any(b in again.failures or b in tv.blamed for b in finding.backends):
        return finding
    wide_ratio = max(tv.worst.get(b, 0.0) for b in finding.backends)
    return dataclasses.replace(
        finding, cls="unstable",
        detail=f"{finding.detail}; worst ratio {_worst_ratio(result):.3g} in float32, within the bound in float64 "
               f"(ratio {wide_ratio:.2g})")


def _explain(example: Example, finding: Finding, backends: list[str], oracle: str, ev: Evaluation) -> str | None:
    """The id of the documented defect (harness.run.known) that explains ``finding``: one that
    may explain it, and without whose cause (its counterfactual scenario, its patch) the same
    example no longer shows it."""
    for defect in DEFECTS:
        if defect.may_explain(example.scenario, finding):
            again = example if defect.counterfactual is None else \
                dataclasses.replace(example, scenario=defect.counterfactual(example.scenario))
            with (defect.patch or contextlib.nullcontext)():
                rerun = evaluate(again, backends, oracle=oracle, known=False)
            ev.runs += rerun.runs
            if all(f.signature != finding.signature for f in rerun.red):  # gone with its cause
                return defect.id
    return None
