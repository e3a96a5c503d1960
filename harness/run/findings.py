"""Classify what a run found, honestly, and say which findings make a run red.

Classes:

- ``bug``        a backend outside the comparator's bound (error / bound above 1) of the exact
                 oracle (or, without one, of the majority) outside any kink's influence — red;
                 its detail is the first divergence's sentence (:mod:`harness.judge.message`);
- ``unstable``   a float32 ``bug`` whose blamed backends are within the bound at that tensor when
                 the same values run in float64: a numerically unstable formula — red. Only
                 :func:`harness.search.evaluate.unstable` gives this class (it needs that rerun;
                 :func:`classify` judges one run and says ``bug``);
- ``non-finite`` a backend produced NaN/Inf where the reference is finite (the finding names the
                 backend and the first tensor) — red when another backend stayed finite there;
                 when every backend did (``everywhere``: a limitation they share, such as the
                 unsafe log_softmax overflowing to -inf) it is reported, not red. Also a run
                 whose backends all hold the same NaN/Inf (``RunResult.nonfinite``, nothing
                 outside the bound): the run fails, the finding is ``everywhere``;
- ``dtype``      a backend held a tensor in another dtype than the run asked for — red, unless it
                 is a known finding (harness.run.known, documented in docs/findings.md);
- ``error``      a backend raised — red;
- ``kink``       elements at or near a declared non-differentiable point where backends took
                 different sides (a flip, excused) — reported, never red;
- ``convention`` backends sitting exactly on a kink and returning different derivatives there —
                 reported, never red.

Rounding noise is never a finding: the comparator's bound is the rounding error a correct
implementation may have at each element, so it stays inside by construction.
A finding's ``signature`` (class, backends, tensor name without layer number, layer kind)
identifies one defect across examples, for deduplication.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness.core.keys import Key, parse as parse_key
from harness.judge.message import of_verdict, where
from harness.run.known import known_dtype
from harness.run.runner import RunResult

RED = ("bug", "unstable", "non-finite", "dtype", "error")

@dataclass(frozen=True)
class Finding:
    cls: str
    backends: tuple[str, ...]
    tensor: str | None = None  # "DW" (the layer number is in ``layer``)
    layer: int | None = None
    layer_kind: str | None = None
    step: int | None = None
    detail: str = ""
    everywhere: bool = False  # non-finite: in every backend of the run (none stayed finite)

    @property
    def red(self) -> bool:
        return self.cls in RED and not self.everywhere

    @property
    def signature(self) -> tuple:
        return (self.cls, self.backends, self.tensor, self.layer_kind)


def _kind(result: RunResult, layer: int | None) -> str | None:
    return None if layer is None else result.scenario.layers[layer - 1].kind


def classify(result: RunResult) -> list[Finding]:
    sc = result.scenario
    out: list[Finding] = []
    for backend, failure in result.failures.items():
        out.append(Finding("error", (backend,), detail=str(failure)))
    for backend, tensors in result.dtype_mismatches.items():
        if not known_dtype(result, backend):
            out.append(Finding("dtype", (backend,), parse_key(tensors[0]).tensor,
                               detail=f"held {', '.join(tensors)} in another dtype than {sc.dtype}"))
    first = result.first_divergence
    if first is not None:
        step, tv = first
        values = tv.values or {}
        ref = values.get(result.oracle or "consensus", float("nan"))
        nonfinite = [b for b in tv.blamed if not np.isfinite(values.get(b, 0.0))]
        cls = "non-finite" if nonfinite and np.isfinite(ref) else "bug"
        who = tuple(sorted(nonfinite or tv.blamed))
        everywhere = cls == "non-finite" and len(nonfinite) == len(result.backends)
        out.append(Finding(cls, who, tv.key[0], tv.key[1], _kind(result, tv.key[1]), step,
                           of_verdict(step, tv, result.oracle) + (" - in every backend" if everywhere else ""),
                           everywhere=everywhere))
    nf = result.nonfinite
    if nf is not None and first is None:  # every backend agreed on it, so nothing was outside a bound
        everywhere = set(nf.backends) == set(result.backends)
        out.append(Finding("non-finite", tuple(sorted(nf.backends)), nf.key[0], nf.key[1], _kind(result, nf.key[1]),
                           nf.step, f"{where(nf.step, Key(*nf.key).label)}: "
                           f"{', '.join(f'{b} {v!r}' for b, v in nf.values.items())} (not compared: "
                           + ("every backend holds it" if everywhere else "inside the bound") + ")",
                           everywhere=everywhere))
    flips = [e for v in result.steps for e in v.kink_events if e["flipped"]]
    for event in flips[:1]:
        on_kink = all(v == event["point"] for v in event["values"].values())
        cls = "convention" if on_kink else "kink"
        out.append(Finding(cls, tuple(sorted(event["values"])), parse_key(event["tensor"]).tensor,
                           step=event["step"], detail=f"{event['site']} at step {event['step']}: "
                           f"values {event['values']}, gradients {event['gradient']}"))
    return out


def is_red(result: RunResult) -> bool:
    return any(f.red for f in classify(result))
