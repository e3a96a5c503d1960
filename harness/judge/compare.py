"""The comparator: pure functions from traces to verdicts.

Rules (docs/design.md for the data flow; docs/rounding.md for the unit):

- **Reference.** With an oracle (lockstep) each element is compared with its exact value. Without
  one it is compared with the backends' consensus, the element-wise median (with four backends
  the mean of the middle two): one wrong backend cannot move the median out of the cluster of
  correct ones.
- **Unit.** Every element has its own bound ``E`` (:mod:`harness.judge.bounds`): the error a correct
  implementation of the forward definitions, in the run's dtype, can make at that point, carried
  through everything the element depends on. An element's *ratio* is ``|value - reference| /
  bound``, where the bound is ``E`` against the exact value (plus the float64 rounding of the
  oracle's value) and ``2 E`` against the consensus (two correct backends can be off in opposite
  directions). Above 1 is a mismatch; there is no other tolerance. In trajectory mode ``E``
  includes the parameters' bound carried over from the previous steps (:mod:`harness.judge.bounds`).
- **Kinks.** Non-differentiable points are declared per function in
  :mod:`harness.core.components`. An element is *at* a kink when the interval spanned by the
  backends' (and the oracle's) values contains the kink (ReLU family: Z = 0; SReLU: Z = tl,
  tr; AbsoluteError: Y = T); such elements are counted as kink events. Where the values lie on
  different sides of the kink, or where the gradients there disagree (exactly on the kink that
  is a convention), the element *flipped*: each side's
  derivative is correct, so its gradient (DZ of that layer, or DY for the loss) and everything it
  influences in the rest of the backward pass and the update is marked as kink-influenced
  (``propagate``), element by element where the algebra allows (a Linear layer's DW row, a
  softmax row, a BatchNormalization column). A flip is recognised by the sides, not by the size
  of its effect, and the runner re-anchors after every step with a flip (trajectory mode).
  Kink-influenced elements outside the bound are counted as kinks, never as failures; all other
  elements are still judged, so a real bug at the same place still fails.
- **Localization.** Tensors are judged in forward order, then backward order, then the update
  (``tensor_order``); the first failing tensor of the first failing step is the first
  divergence, with the element where the blamed backend is worst, every backend's value, and
  how many elements of the tensor each blamed backend has outside the bound.
- **Blame.** The backends with an element outside the bound. Without an oracle, when more than
  half of them are outside, there is no majority and the verdict says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from harness.core.keys import GRADIENT, Key, key_name
from harness.core.components import LAYERS, LOSSES, SRELU_PARAMS
from harness.spec.scenario import Scenario

MAX_EVENTS_PER_STEP = 20
# At a kink element, derivatives (gradient / incoming gradient) further apart than this many units
# of the dtype's unit roundoff, relatively, are different one-sided derivatives: a convention.
# Rounding moves the derivative a backend used by a few units (one product, an alpha rounded to
# the dtype); two sides differ by |f'(0+) - f'(0-)|, however small (ELU with alpha = 0.99999).
KINK_TIE_UNITS = 64



def tensor_order(scenario: Scenario) -> list[Key]:
    """Forward order, then backward order, then the parameters after the update."""
    L = len(scenario.layers)
    kinds = [LAYERS[layer.kind] for layer in scenario.layers]
    forward: list[Key] = [("X", None), ("T", None)]
    for i, k in enumerate(kinds, 1):
        forward.append(("X", i))
        if k.has_z:
            forward.append(("Z", i))
    forward += [("Y", None), ("loss", None), ("DY", None)]
    backward: list[Key] = []
    for i in range(L, 0, -1):
        k = kinds[i - 1]
        if k.has_z:
            backward.append(("DZ", i))
        if k.has_weights:
            backward += [("DW", i), ("Db", i)]
        else:
            backward += [("Dgamma", i), ("Dbeta", i)]
        if "srelu" in k.trainable:
            backward.append(("Dsrelu", i))
        backward.append(("DX", i))
    update: list[Key] = [(p, i) for i, k in enumerate(kinds, 1) for p in k.trainable]
    return forward + backward + update


def allowed(scenario: Scenario, bounds: dict[str, np.ndarray], name: str, ref: np.ndarray,
            oracle: str | None) -> np.ndarray:
    """The error allowed for each element of tensor ``name``.

    Against the exact oracle: the bound, plus the oracle's own rounding of the exact value to
    float64. Against the consensus, or against the float64 autodiff oracle in a float64 run (a
    correct implementation in the same precision): twice the bound, since the reference can be
    off by as much as the backend in the other direction. Against autodiff in a float32 run, its
    float64 error is 2**-29 of the float32 bound's; 2**-20 of it is added.
    """
    E = np.asarray(bounds[name], dtype=np.float64)
    scale, coefficient = allowance(scenario, oracle)
    with np.errstate(invalid="ignore", over="ignore"):
        return E * scale if coefficient == 0 else E + np.abs(ref) * coefficient


def allowance(scenario: Scenario, oracle: str | None) -> tuple[float, float]:
    """(scale, coefficient) of :func:`allowed`: the error allowed is ``E * scale``, or with a
    coefficient ``E + |ref| * coefficient`` (the exact oracle's value is the exact one rounded to
    float64)."""
    if oracle is None or (oracle == "autodiff" and scenario.dtype == "float64"):
        return 2.0, 0.0
    if oracle == "autodiff":
        return 1 + 2.0 ** -20, 0.0
    return 1.0, 2.0 ** -53


def float64(a: np.ndarray) -> np.ndarray:
    """A traced tensor as the float64 array the judge reads: a float32 trace upcast (exactly), a
    float64 one as it is. A trace keeps the dtype the backend computed in (harness.run.contract);
    every NumPy computation on it goes through here, so that float32 never meets float32 (or a
    Python scalar, which would stay float32) in an operation that rounds."""
    return a if getattr(a, "dtype", np.float64) == np.float64 else np.asarray(a, dtype=np.float64)


def consensus(values: list[np.ndarray]) -> np.ndarray:
    """Element-wise median, ignoring NaN where some backends are finite; always float64.

    Three and four backends (the common cases) use min/max networks: no stacking, no
    cancellation (one huge outlier cannot move the result), identical values come back exactly.
    Four large arrays take the compiled kernel, which reads float32 traces as they are.
    """
    n = len(values)
    if n == 4 and np.ndim(values[0]) and compilable(values, np.shape(values[0])):
        from harness.judge import kernels  # the same numbers in one pass

        return kernels.median4(*values)
    values = [float64(v) for v in values]
    if n == 1:
        return values[0]
    if n == 2:
        return (values[0] + values[1]) / 2
    if n == 3:
        a, b, c = values
        return np.fmax(np.fmin(a, b), np.fmin(np.fmax(a, b), c))
    if n == 4:
        a, b, c, d = values
        if np.ndim(a) == 0:
            finite = sorted(float(v) for v in values if not np.isnan(v))
            return np.float64(np.median(finite)) if finite else np.float64("nan")
        return _median4(a, b, c, d)
    with np.errstate(invalid="ignore"):
        return np.nanmedian(np.stack(values), axis=0)


def _median4(a: np.ndarray, b: np.ndarray, c: np.ndarray, d: np.ndarray) -> np.ndarray:
    """The mean of the middle two of four arrays, in NumPy (what :mod:`harness.judge.kernels`
    computes in one pass)."""
    low = np.fmin(a, b)  # the two middle values of four: max of the minima, min of the maxima
    high = np.fmin(c, d)
    np.fmax(low, high, out=low)
    np.fmax(a, b, out=high)
    mid = np.fmax(c, d)
    np.fmin(high, mid, out=high)
    with np.errstate(invalid="ignore", over="ignore"):
        np.subtract(high, low, out=mid)
        mid *= 0.5
        mid += low  # low + (high - low) / 2: exact when equal, cannot overflow
    bad = ~np.isfinite(mid)
    if bad.any():  # inf - inf where both middle values are the same inf: that inf
        mid = np.where(bad & (low == high), low, mid)
    return mid


def _pairwise(op: np.ufunc, values: list[np.ndarray]) -> np.ndarray:
    """op over a few arrays without stacking them (a fresh array; the inputs are untouched)."""
    if len(values) == 1:
        return np.array(values[0])
    out = np.asarray(op(values[0], values[1]))  # asarray: 0-d inputs give a NumPy scalar
    for v in values[2:]:
        op(out, v, out=out)
    return out


def ratio(value: np.ndarray, ref: np.ndarray, allowed: np.ndarray | float) -> np.ndarray:
    """|value - ref| / allowed; equal values (non-finite ones too) count as equal, any difference
    where nothing is allowed (an exact result) is infinitely far."""
    if np.shape(value) != np.shape(ref):
        return np.full(np.shape(ref), np.inf)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):  # 0 allowed: x / 0 is inf, 0 / 0 nan
        r = np.asarray(np.subtract(value, ref))
        np.abs(r, out=r)
        r = r / allowed
    bad = ~np.isfinite(r)
    if bad.any():
        same = (value == ref) | (np.isnan(value) & np.isnan(ref))
        r = np.where(bad, np.where(same, 0.0, np.inf), r)
    return r


def near(values: list[np.ndarray], point: np.ndarray | float, reach: np.ndarray | float) -> np.ndarray:
    """Elements whose values, widened by ``reach`` (their bound), reach the kink ``point``."""
    lo, hi = _pairwise(np.minimum, values), _pairwise(np.maximum, values)
    return (lo - reach <= point) & (point <= hi + reach)


def kink_points(scenario: Scenario, layer: int, params: dict[str, np.ndarray]) -> list[float]:
    spec = scenario.layers[layer - 1]
    points = []
    for kink in LAYERS[spec.kind].kinks:
        if isinstance(kink.at, str):  # one of the layer's own parameters, e.g. SReLU's (trained) tl
            srelu = params.get(f"srelu{layer}")
            trained = srelu is not None and kink.at in SRELU_PARAMS
            points.append(float(srelu[SRELU_PARAMS.index(kink.at)]) if trained else spec.arg[kink.at])
        else:
            points.append(float(kink.at))
    return points


def _linear_part(mZ: np.ndarray) -> dict[str, np.ndarray]:
    """Influence through Y = X W^T + b: DW = DZ^T X, Db = colsum DZ, DX = DZ W."""
    rows_k = mZ.any(axis=0)  # output units touched
    rows_n = mZ.any(axis=1)  # samples touched
    return {"DW": rows_k[:, None], "Db": rows_k, "DX": rows_n[:, None]}


def propagate(scenario: Scenario, shapes: dict[str, tuple], seeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Kink influence, element by element, from the loss down through every layer.

    ``seeds`` maps "DY" to the elements where the backends took different sides of the loss's
    kink, and "Z<i>" to those of layer i's activation kinks (they change DZ<i> there).
    Returns boolean masks (broadcastable to each tensor's shape) for every tensor of the
    backward pass and of the update.
    """
    masks: dict[str, np.ndarray] = {}
    m = seeds.get("DY", np.zeros(shapes["DY"], dtype=bool))
    masks["DY"] = m
    for i in range(len(scenario.layers), 0, -1):
        kind = LAYERS[scenario.layers[i - 1].kind]
        if kind.row:
            mZ = np.broadcast_to(m.any(axis=1, keepdims=True), m.shape)
        else:
            mZ = m
        if f"Z{i}" in seeds:
            mZ = mZ | seeds[f"Z{i}"]
        if kind.has_z:
            masks[f"DZ{i}"] = mZ
        if kind.has_weights:
            part = _linear_part(mZ)
            masks[f"DW{i}"], masks[f"Db{i}"] = part["DW"], part["Db"]
            masks[f"W{i}"], masks[f"b{i}"] = part["DW"], part["Db"]
            m = np.broadcast_to(part["DX"], shapes[f"DX{i}"])
        else:  # BatchNormalization mixes each column over the batch
            cols = mZ.any(axis=0)
            masks[f"Dgamma{i}"] = masks[f"Dbeta{i}"] = masks[f"gamma{i}"] = masks[f"beta{i}"] = cols
            m = np.broadcast_to(cols[None, :], shapes[f"DX{i}"])
        if "srelu" in kind.trainable:
            masks[f"Dsrelu{i}"] = masks[f"srelu{i}"] = np.full(4, bool(mZ.any()))
        masks[f"DX{i}"] = m
    return masks


@dataclass
class TensorVerdict:
    key: Key
    worst: dict[str, float]  # per backend: largest error / bound outside kink influence
    kinks: dict[str, int]  # per backend: elements outside the bound excused by a kink
    blamed: list[str] = field(default_factory=list)
    majority: bool = True
    index: tuple[int, ...] | None = None  # the blamed backends' worst element
    values: dict[str, float] | None = None  # every backend's value there, and the reference
    ulps: dict[str, float] | None = None  # with an oracle: per backend, worst error in ulps of the dtype
    allowed: float | None = None  # the error allowed at ``index`` (the bound there)
    outside: dict[str, int] = field(default_factory=dict)  # per blamed backend: elements outside the bound
    #                                                        (kink-excused ones not counted)
    elements: int = 0  # elements of the tensor (set with ``outside``)

    @property
    def failed(self) -> bool:
        return bool(self.blamed)


@dataclass
class StepVerdict:
    step: int
    tensors: list[TensorVerdict]
    kink_events: list[dict]
    near_kinks: int  # elements near a kink in this step
    flips: int  # of those, elements where the backends took different sides
    finite: bool = True  # every value of the backends' traces finite (False: the runner localises the first
    #                      non-finite tensor, harness.run.runner.first_nonfinite)

    @property
    def first_failure(self) -> TensorVerdict | None:
        return next((t for t in self.tensors if t.failed), None)


@dataclass
class KinkScan:
    """What a step's kinks did: flipped elements (``seeds`` for :func:`propagate`) and events."""

    seeds: dict[str, np.ndarray]
    events: list[dict]
    near: int
    flips: int


def _present(scenario: Scenario, traces: dict[str, dict[str, np.ndarray]]) -> list[Key]:
    """The scenario's tensors that some trace holds: each is judged among the backends that hold
    it (a backend may leave out what it does not provide: harness.run.contract)."""
    return [k for k in tensor_order(scenario) if any(key_name(k) in t for t in traces.values())]


def scan_kinks(scenario: Scenario, step: int, traces: dict[str, dict[str, np.ndarray]],
               params_before: dict[str, dict[str, np.ndarray]], oracle: str | None = None) -> KinkScan:
    """Which elements are within reach of a non-differentiable point, and which *flipped*?

    An element flipped where the backends took different sides of the kink, or disagree on
    its gradient there (on the kink itself that is a convention): each side's derivative is
    correct. Cheap (it reads Z, DZ, Y, DY only), so the runner decides on re-anchoring from it
    before the full judgement (and before the rounding bound is known). ``params_before``
    (backend -> parameters at the start of the step) gives each backend's own kink positions
    where they are parameters (SReLU's tl, tr). With an ``oracle`` its trace takes part like a
    backend.

    An element is *at* a kink when the participants' values lie on both sides of it or on it.
    Where they all lie strictly on one side, every one of them used the same branch, and the
    element is judged like any other (in units of its bound); so only the sides matter here.
    """
    backends = list(traces)
    present = {key_name(k) for k in _present(scenario, traces)}
    seeds: dict[str, np.ndarray] = {}
    events: list[dict] = []
    near_total = flips = 0

    u = float(np.finfo(scenario.dtype).eps) / 2
    tiny = float(np.finfo(scenario.dtype).tiny)

    def inspect(site: str, tensor: str, grad: str, points: dict[str, np.ndarray | float],
                upstream: str | None = None) -> np.ndarray | None:
        nonlocal near_total, flips
        backends = [b for b in traces if tensor in traces[b]]  # sides: who holds Z; gradients: who holds DZ too
        graded = [b for b in backends if grad in traces[b] and (upstream is None or upstream in traces[b])]
        offsets = [float64(traces[b][tensor]) - float64(points[b]) for b in backends]  # each backend's own kink
        mask = near(offsets, 0.0, 0.0)
        if not mask.any():
            return None
        sides = [np.sign(d[mask]) for d in offsets]
        disagree = np.logical_or.reduce([sd != sides[0] for sd in sides[1:]])
        grads = [float64(traces[b][grad][mask]) for b in graded]  # judged only where it matters
        # On the kink itself: a convention where the derivatives used differ by more than
        # rounding (KINK_TIE_UNITS). The derivative a backend used is its gradient over the
        # incoming one (DZ / DX_next), which the incoming gradient's own rounding leaves alone.
        if upstream is not None:
            ups = [float64(traces[b][upstream][mask]) for b in graded]
            usable = np.logical_and.reduce([np.abs(x) >= tiny for x in ups])
            with np.errstate(divide="ignore", invalid="ignore"):
                grads = [np.where(usable, g / np.where(usable, x, 1.0), g) for g, x in zip(grads, ups)]
        g_ref = (grads[graded.index(oracle)] if oracle else consensus(grads)) if grads else None
        disagree |= np.logical_or.reduce([ratio(g, g_ref, KINK_TIE_UNITS * u * np.abs(g_ref) + tiny) > 1 for g in grads])

        flipped = np.zeros_like(mask)
        flipped[mask] = disagree
        near_total += int(mask.sum())
        flips += int(flipped.sum())
        for index in zip(*np.nonzero(mask)):
            if len(events) >= MAX_EVENTS_PER_STEP:
                break
            idx = tuple(int(i) for i in index)
            point = points[backends[0]]
            events.append({
                "step": step, "site": site, "tensor": tensor, "index": list(idx),
                "point": float(point[idx] if np.ndim(point) else point), "flipped": bool(flipped[idx]),
                "values": {b: float(traces[b][tensor][idx]) for b in backends},
                "gradient": {b: float(traces[b][grad][idx]) for b in graded},
            })
        return flipped

    for i, spec in enumerate(scenario.layers, 1):
        if f"Z{i}" not in present:
            continue
        per_backend = {b: kink_points(scenario, i, params_before.get(b, {})) for b in backends if f"Z{i}" in traces[b]}
        for j, _ in enumerate(LAYERS[spec.kind].kinks):
            upstream = f"DX{i + 1}" if i < len(scenario.layers) else "DY"
            flipped = inspect(f"{spec.kind} layer {i}", f"Z{i}", f"DZ{i}", {b: p[j] for b, p in per_backend.items()},
                              upstream if upstream in present else None)
            if flipped is not None and flipped.any():
                seeds[f"Z{i}"] = seeds.get(f"Z{i}", False) | flipped
    if LOSSES[scenario.loss].kinks and "Y" in present:
        flipped = inspect(f"{scenario.loss} loss", "Y", "DY", {b: traces[b]["T"] for b in backends})
        if flipped is not None and flipped.any():
            seeds["DY"] = flipped
    return KinkScan(seeds, events, near_total, flips)


def reference(scenario: Scenario, traces: dict[str, dict[str, np.ndarray]], oracle: str | None = None,
              spreads: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """What each tensor is judged against: the oracle's trace, or the backends' consensus.

    ``spreads``: a dict to receive, for the parameters after the update (the next trajectory
    step's point is their consensus), the backends' spread around it where the compiled median
    of four computes both in one pass (the spread :func:`harness.run.runner._assess` would
    otherwise take in a pass of its own at the next step)."""
    if oracle is not None:
        return traces[oracle]
    backends = list(traces)
    ref = {}
    for key in _present(scenario, traces):
        name = key_name(key)
        values = [traces[b][name] for b in backends if name in traces[b]]
        ref[name], far = consensus_and_spread(values, spreads is not None and key[0] in GRADIENT)
        if far is not None:
            spreads[name] = far
    return ref


def consensus_and_spread(values: list[np.ndarray], spread: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """:func:`consensus` (the first value where their shapes differ) and, with ``spread`` where
    the compiled median of four takes the values, their spread around it (the largest distance
    of any value) from the same pass; else (consensus, None)."""
    if spread and len(values) == 4 and np.ndim(values[0]) and compilable(values, np.shape(values[0])):
        from harness.judge import kernels

        return kernels.median4(*values, with_spread=True)
    if all(np.shape(v) == np.shape(values[0]) for v in values):
        return consensus(values), None
    return float64(values[0]), None


def judge(scenario: Scenario, step: int, traces: dict[str, dict[str, np.ndarray]], scan: KinkScan,
          bounds: dict[str, np.ndarray], oracle: str | None = None,
          ref_trace: dict[str, np.ndarray] | None = None) -> StepVerdict:
    """Judge every tensor of one step in units of its bound, excusing what the scan's flips influence.

    With ``oracle`` (the name of one of the traces), the reference is that trace, not the
    median: blame is then "outside the bound of the exact value", and each backend's worst
    error is also given in ulps of the run's dtype (``TensorVerdict.ulps``). ``ref_trace``: the
    reference already computed (:func:`reference`), to avoid computing the consensus twice.

    The ratios read every value of every backend's trace, so they also tell whether all of them
    are finite (``StepVerdict.finite``; the compiled pass says so at no cost, a NumPy one sums):
    the run localises a NaN or Inf only in a step that has one.
    """
    everyone = [b for b in traces if b != oracle]
    order = _present(scenario, {b: traces[b] for b in everyone})
    shapes = {key_name(k): next(t[key_name(k)] for t in traces.values() if key_name(k) in t).shape for k in order}
    influence = propagate(scenario, shapes, scan.seeds) if scan.seeds else {}
    refs = ref_trace if ref_trace is not None else reference(scenario, {b: traces[b] for b in everyone} if oracle is None else traces, oracle)
    scratch: dict[tuple, np.ndarray] = {}  # one work array per shape: big allocations are slow
    verdicts = []
    named = {key_name(k) for k in order}  # a trace's other keys (a plug-in's extras) are only tested for finiteness
    finite = all(_finite(a) for b in everyone for n, a in traces[b].items() if n not in named)
    for key in order:
        name = key_name(key)
        backends = [b for b in everyone if name in traces[b]]
        values = [traces[b][name] for b in backends]
        ref = refs[name]
        worst, seen = _compiled_worst(scenario, bounds, name, values, ref, oracle, influence.get(name))
        finite = finite and (seen if worst is not None else all(_finite(v) for v in values))
        if worst is not None and max(worst) <= 1:  # the common case: every ratio in one pass
            worst, kinks, kept = dict(zip(backends, worst)), {b: 0 for b in backends}, {}
        else:  # a failure to localise, a flip step's excused elements, other shapes
            worst, kinks, kept, permitted = _ratios(scenario, bounds, name, [float64(v) for v in values], ref,
                                                    oracle, influence.get(name), backends, scratch)
        blamed = [b for b in backends if worst[b] > 1]
        majority = oracle is not None or 2 * len(blamed) < len(backends)
        v = TensorVerdict(key, worst, kinks, blamed, majority=majority)
        if oracle is not None:
            v.ulps = {b: ulp_error(traces[b][name], ref, scenario.dtype, influence.get(name)) for b in backends}
        if blamed:
            who = max(blamed, key=lambda b: worst[b])
            r = kept[who]
            idx = np.unravel_index(int(np.argmax(r)), r.shape) if r.ndim else ()
            v.index = tuple(int(i) for i in idx)
            v.values = {b: _at(traces[b][name], v.index) for b in backends}
            v.values[oracle or "consensus"] = _at(ref, v.index)
            v.allowed = _at(permitted, v.index)
            v.outside = {b: int(np.count_nonzero(kept[b] > 1)) for b in blamed}
            v.elements = int(np.size(ref))
        verdicts.append(v)
    return StepVerdict(step, verdicts, scan.events, scan.near, scan.flips, finite)


def _finite(a: np.ndarray) -> bool:
    """Whether every value of ``a`` is finite, in one pass (a finite float64 sum has only finite
    terms; a sum that overflows says False, and the localisation then finds nothing)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return bool(np.isfinite(np.sum(a, dtype=np.float64)))


# Elements from which a tensor's passes run compiled (harness.judge.kernels): small networks (the
# tests, most of explore's examples) stay in NumPy and never pay for importing numba.
KERNEL_SIZE = 1 << 15
KERNEL_DTYPES = (np.float64, np.float32)


def compilable(arrays: list, shape: tuple) -> bool:
    """Whether the compiled kernels take these arrays: float64 or float32 NumPy arrays (the
    kernels compute in float64) of one shape, of at least :data:`KERNEL_SIZE` elements."""
    return math.prod(shape) >= KERNEL_SIZE and all(isinstance(a, np.ndarray) and a.dtype in KERNEL_DTYPES
                                                   and a.shape == shape for a in arrays)


def _compiled_worst(scenario: Scenario, bounds: dict[str, np.ndarray], name: str, values: list[np.ndarray],
                    ref: np.ndarray, oracle: str | None,
                    excused: np.ndarray | None) -> tuple[list[float] | None, bool]:
    """Every backend's worst ratio in tensor ``name`` from the compiled kernel (the numbers of
    :func:`_ratios`) and whether every value was finite, or (None, False) where it does not
    apply (excused elements, other shapes, scalars)."""
    if not np.ndim(ref) or (excused is not None and excused.any()):
        return None, False
    E = bounds[name]
    if not compilable([*values, ref, E], np.shape(ref)):
        return None, False
    from harness.judge import kernels

    worst, finite = kernels.worst_ratios(values, ref, E, *allowance(scenario, oracle))
    return [float(w) for w in worst], finite


def _ratios(scenario: Scenario, bounds: dict[str, np.ndarray], name: str, values: list[np.ndarray],
            ref: np.ndarray, oracle: str | None, excused: np.ndarray | None, backends: list[str],
            scratch: dict[tuple, np.ndarray]) -> tuple[dict, dict, dict, np.ndarray]:
    """(worst ratio, kink-excused elements outside the bound, the ratios of a backend outside
    it, the error allowed) of every backend in tensor ``name``."""
    permitted = np.broadcast_to(allowed(scenario, bounds, name, ref, oracle), np.shape(ref))
    # Ratios only need a few digits: the work arrays are float32 (half the memory traffic);
    # the reference and the differences themselves are computed in float64.
    # Where a bound is far below float32's normal range (float64 runs) the float32 work array
    # would round it coarsely: those tensors take the float64 path.
    fast = bool(np.ndim(ref)) and permitted.size > 0 and float(permitted.min()) >= 2.0 ** -100
    with np.errstate(over="ignore"):  # beyond float32's range: inf, and the float64 path below
        denominator = permitted.astype(np.float32) if fast else permitted
    worst, kinks, kept = {}, {b: 0 for b in backends}, {}
    for b, value in zip(backends, values):
        if value.shape != np.shape(ref) or not fast:
            r = ratio(value, ref, permitted)
        else:
            work = scratch.setdefault(ref.shape, np.empty(ref.shape, dtype=np.float32))
            r = _ratio_into(work, value, ref, denominator, permitted)
        if excused is not None and r.ndim and excused.any():  # a flip step: the kink's share
            r = np.array(r)                                   # is excused, not judged
            ex = np.broadcast_to(excused, r.shape)
            kinks[b] = int((ex & (r > 1)).sum())
            r[ex] = 0.0
        worst[b] = float(r.max()) if r.size else 0.0
        if worst[b] > 1:  # rare: keep this backend's ratios to localize the failure
            kept[b] = np.array(r)
    return worst, kinks, kept, permitted


def ulp_error(value: np.ndarray, exact: np.ndarray, dtype: str, excused: np.ndarray | None = None) -> float:
    """Worst |value - exact| in ulps of ``dtype`` at the tensor's scale (its largest |exact|).

    Element-wise ulps of values near zero measure cancellation, not accuracy (an exact 1e-12
    computed as 3e-12 is "10^15 ulps" off); the tensor's scale is what the dtype resolves.
    Kink-influenced elements are excused.
    """
    if value.shape != exact.shape:
        return float("inf")
    value, exact = float64(value), float64(exact)
    with np.errstate(invalid="ignore", over="ignore"):
        err = np.abs(value - exact)
        if excused is not None and err.ndim:
            err = np.where(np.broadcast_to(excused, err.shape), 0.0, err)
        err = np.where(np.isnan(err) & ((value == exact) | (np.isnan(value) & np.isnan(exact))), 0.0, err)
        finite = np.abs(exact[np.isfinite(exact)]) if np.ndim(exact) else np.abs(np.atleast_1d(exact))
        scale = float(finite.max()) if finite.size else 0.0
        spacing = float(np.spacing(np.asarray(scale, dtype=dtype)))
        return float(np.max(err) / spacing) if np.size(err) else 0.0


def _ratio_into(work: np.ndarray, value: np.ndarray, ref: np.ndarray, denominator: np.ndarray,
                permitted: np.ndarray) -> np.ndarray:
    """:func:`ratio` written into ``work`` (same numbers, no allocation); ``denominator`` is
    ``permitted`` in float32."""
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        np.subtract(value, ref, out=work, casting="same_kind")
        np.abs(work, out=work)
        np.divide(work, denominator, out=work)
    if not np.isfinite(work.max()):  # non-finite values, exact results, or beyond float32's range
        return ratio(value, ref, permitted)
    return work


def compare_step(scenario: Scenario, step: int, traces: dict[str, dict[str, np.ndarray]],
                 params_before: dict[str, dict[str, np.ndarray]], bounds: dict[str, np.ndarray],
                 oracle: str | None = None) -> StepVerdict:
    """Judge one step's traces (backend -> tensor name -> float64 array): kinks, then tensors."""
    scan = scan_kinks(scenario, step, traces, params_before, oracle)
    return judge(scenario, step, traces, scan, bounds, oracle)


def _at(a: np.ndarray, index: tuple[int, ...]) -> float:
    try:
        return float(a[index])
    except (IndexError, ValueError):
        return float("nan")
