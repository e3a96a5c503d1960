"""The first-divergence sentence, built in one place.

Everything that tells a person where a run first left the rounding bound (the console, the
``KNOWN`` line of ``check`` and ``run`` (:func:`known`), JUnit, the merged summary and its pages, a replay, classify's
findings, the mutation table) shows :func:`sentence`, fed either from a verdict
(:func:`of_verdict`: a step and its :class:`~harness.judge.compare.TensorVerdict`) or from a JSON
report (:func:`of_report`: its ``first_divergence``), so one failure reads the same wherever it
is shown. Like the single mismatch message of ``torch.testing``, it says where (step, tensor as
:attr:`Key.label`, element), who, how far outside the bound (in units of the bound, and the
error allowed there), how many elements were outside, the worst error in ulps against an oracle,
and every value at that element:

    step 0, DZ of layer 1, element [2, 1]: tensorflow off by 5.2x the rounding bound (1.1e-16
    there), 3 of 6 elements outside, worst 12 ulps; values: numpy 0.1, tensorflow
    0.10000000000000009, sympy 0.1
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from harness.core.keys import Key


def where(step: int | None, label: str, index: Sequence[int] | None = None) -> str:
    """``step 0, DZ of layer 1, element [4, 0]``; a part that is None is left out."""
    parts = ([] if step is None else [f"step {step}"]) + [label]
    if index is not None:
        parts.append(f"element {[int(i) for i in index]}")
    return ", ".join(parts)


def _float(v: Any) -> float | None:
    """A number of a verdict or of a JSON report (whose strings "nan", "inf" are the floats)."""
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _value(v: Any) -> str:
    """A value as it round-trips."""
    x = _float(v)
    return str(v) if x is None else repr(x)


def _per_backend(numbers: Mapping[str, Any], blamed: Sequence[str], fmt: str) -> str:
    """``23`` for one blamed backend, ``jax 3, torch 1`` for several."""
    if len(blamed) == 1:
        return format(numbers[blamed[0]], fmt)
    return ", ".join(f"{b} {format(numbers[b], fmt)}" for b in blamed)


def sentence(*, step: int | None, label: str, index: Sequence[int] | None, blamed: Sequence[str],
             ratios: Mapping[str, Any], allowed: Any, twice: bool, outside: Mapping[str, int],
             elements: int | None, values: Mapping[str, Any], ulps: Mapping[str, Any] | None = None,
             majority: bool = True) -> str:
    """The one sentence of a mismatch.

    ``ratios``: error / allowed per backend (the blamed ones' largest is shown); ``allowed``: the
    error allowed at ``index``, which is ``twice`` the bound against the consensus; ``outside``:
    per blamed backend, the elements outside the bound (of ``elements``); ``values``: every
    backend's value there and the reference's; ``ulps``: with an oracle, the worst error in ulps.
    """
    worst = max((_float(ratios[b]) or 0.0 for b in blamed if b in ratios), default=math.inf)
    who = ", ".join(blamed) + ("" if majority else " (no majority: cannot tell who is right)")
    far = f"off by {worst:.3g}x the rounding bound" if math.isfinite(worst) else \
        "infinitely far outside the rounding bound"
    allowed = _float(allowed)
    if allowed is not None:
        far += f" (twice {allowed / 2:.3g} there)" if twice else f" ({allowed:.3g} there)"
    counted = [b for b in blamed if b in outside]
    if counted:
        far += f", {_per_backend(outside, counted, 'd')}" + (f" of {elements}" if elements else "") \
            + " elements outside"
    measured = [b for b in blamed if ulps and b in ulps]
    if measured:
        far += f", worst {_per_backend({b: _float(ulps[b]) for b in measured}, measured, '.3g')} ulps"
    shown = ", ".join(f"{b} {_value(v)}" for b, v in values.items())
    return f"{where(step, label, index)}: {who} {far}" + (f"; values: {shown}" if shown else "")


def known(label: str, finding: str, sentence: str) -> str:
    """The line of a run that showed a documented defect (``check``'s and ``run``'s):
    ``KNOWN leaky-logsoftmax float64 lockstep  docs/findings.md #2: step 0, …``."""
    return f"KNOWN {label:44s} {finding}: {sentence}"


def of_verdict(step: int, tv: Any, oracle: str | None = None) -> str:
    """The sentence of a failing :class:`~harness.judge.compare.TensorVerdict` of ``step``
    (``oracle``: the run's, None when the backends were judged against their consensus)."""
    return sentence(step=step, label=Key(*tv.key).label, index=tv.index, blamed=tv.blamed, ratios=tv.worst,
                    allowed=tv.allowed, twice=oracle is None, outside=tv.outside, elements=tv.elements,
                    values=tv.values or {}, ulps=tv.ulps, majority=tv.majority)


def of_report(report: Mapping[str, Any]) -> str | None:
    """The sentence of a JSON report's ``first_divergence`` (None when there is none); the ulps
    come from its step in ``per_step``. A report written before ``outside`` existed gives the
    sentence without the count."""
    fd = report.get("first_divergence")
    if not fd:
        return None
    key = Key(fd["tensor"], fd.get("layer"))
    step = next((s for s in report.get("per_step") or [] if s.get("step") == fd["step"]), {})
    return sentence(step=fd["step"], label=key.label, index=fd.get("index", []), blamed=fd.get("backends", []),
                    ratios=fd.get("ratio") or {}, allowed=fd.get("allowed"), twice=report.get("oracle") is None,
                    outside=fd.get("outside") or {}, elements=fd.get("elements"), values=fd.get("values") or {},
                    ulps=(step.get("ulps") or {}).get(key.name), majority=fd.get("majority", True))
