"""The runner: drive every backend through the same SGD steps and judge each step.

Modes (docs/design.md, "Two ways to run steps"):

- ``trajectory``: every backend follows its own trajectory from identical initial parameters,
  as nerva-sympy's test did; rounding differences accumulate. The bound of each step is taken
  at the backends' consensus parameters and carries their measured spread there as the
  parameters' error (running error analysis: a posteriori, from the computed values), so the
  tolerance grows exactly as far as the trajectories have actually parted, through the same
  first-order propagation as every other error (:mod:`harness.judge.bounds`). When a step has a
  kink *flip* (backends legitimately took different sides of a non-differentiable point),
  their parameters differ by a legitimate, non-rounding amount from then on; the runner then re-anchors every backend to
  the consensus parameters and optimizer velocities, records the step in ``resyncs`` and goes
  on. Without a flip the trajectories are never touched.
- ``lockstep``: before each step every backend is reset to the same reference state (the
  oracle's state after the previous step, rounded to the run's dtype, or without an oracle the
  consensus), so each step is checked at the same point. With an oracle (harness.run.choice) every
  tensor is judged against its value, not the median.

A backend that raises while building or stepping is reported as that backend's failure with
its error message; the others go on. So is a backend whose trace breaks the contract
(:mod:`harness.run.contract`: a declared tensor missing, neither float64 nor the run's dtype, not
the scenario's shape),
and one that raises in ``get_state`` or ``set_state``. A backend that does not provide the
minimum is refused before any step (SpecError); what it may leave out is in ``RunResult.omitted``.
By default the run stops after the first step with a
mismatch (what follows is a consequence); ``keep_going`` runs every step.

Non-finite values never pass: the first tensor (in forward, backward, update order) in which a
backend holds a NaN or Inf is recorded (``RunResult.nonfinite``: step, tensor, backends), and the
run fails even when every backend agrees on it; it stops there unless ``keep_going``. The judge's
ratios, which read every traced value anyway, tell whether a step has one; only then is it
localised (:func:`first_nonfinite`), and what the backends recorded in the next step, begun
meanwhile, is put back (:meth:`_Session.collect`).

Traces keep the dtype the backend computed in (float32 copies in a float32 run): the upcast to
float64 happens where the judge reads them, inside its compiled kernels or at the start of a
NumPy computation (:func:`harness.judge.compare.float64`), so every number is the one a float64
trace gives.

Batches are taken from ``data`` one step at a time (:class:`harness.spec.data.Batches` makes them
lazily), and the verdicts of a long run are kept whole only for its first :data:`KEEP_STEPS`
steps (and, after them, the first failing and the first flipping step); the others are merged
into ``RunResult.folded`` (worst ratio, kink counts, ulps per tensor and backend), so a run's
memory does not grow with its number of steps. Ctrl-C stops the run after the judgement in
flight: :class:`Interrupted` (a KeyboardInterrupt) carries what was judged.

Speed: the judgement of a step (its reference, its rounding bound, every ratio) runs in a
worker thread while the backends compute the next step (NumPy releases the GIL, and so do the
frameworks' kernels); only the cheap kink scan, which decides re-anchoring, runs before the
next step starts. Every BLAS and OpenMP pool runs on one thread for the run
(:func:`harness.core.process.run_threads`). In trajectory mode the point of a step is taken from
what is already there: the parameters from the backends' traces of the previous step (their
consensus is that step's reference, kept by the judge), the velocities read from the backends.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

import adapters
from harness.core.backend import BackendFailure
from harness.core.errors import BackendUnavailable
from harness.core.process import run_threads
from harness.run import contract
from harness.judge.compare import StepVerdict, TensorVerdict, compilable, consensus, consensus_and_spread, float64, \
    judge, key_name, reference as reference_trace, scan_kinks, tensor_order
from harness.spec.data import batches, epoch_steps, weights
from harness.run.choice import choose as choose_oracle
from harness.judge.bounds import step_bounds
from harness.spec.scenario import Scenario
from harness.spec.state import as_dtype, initial_state


KEEP_STEPS = 1000  # verdicts kept whole; later ones are folded unless they are the first to fail or to flip


@dataclass(frozen=True)
class NonFinite:
    """The first tensor in which a backend held NaN or Inf: its step, (tensor, layer) and the
    backends, each with its first non-finite value."""

    step: int
    key: tuple[str, int | None]
    values: dict[str, float]

    @property
    def backends(self) -> list[str]:
        return list(self.values)

    @property
    def name(self) -> str:
        return key_name(self.key)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a run; ``result`` holds the steps judged until then."""

    def __init__(self, result: "RunResult"):
        super().__init__("interrupted")
        self.result = result


@dataclass
class RunResult:
    scenario: Scenario
    backends: list[str]
    steps: list[StepVerdict] = field(default_factory=list)
    failures: dict[str, BackendFailure] = field(default_factory=dict)  # backend -> what it raised
    resyncs: list[int] = field(default_factory=list)
    dtype_mismatches: dict[str, list[str]] = field(default_factory=dict)
    omitted: dict[str, list[str]] = field(default_factory=dict)  # backend -> tensors it does not provide: not judged
    oracle: str | None = None  # the reference the backends were judged against (None: each other)
    oracle_note: str = ""
    inputs: tuple | None = None  # (initial state, batches) the run used: what a repro bundle stores
    seconds: float = 0.0
    stopped_early: bool = False
    nonfinite: NonFinite | None = None  # the first NaN/Inf a backend held (a failure, even if all agree)
    interrupted: bool = False
    folded: StepVerdict | None = None  # steps after KEEP_STEPS that are not kept whole, merged into one
    folded_steps: int = 0

    @property
    def steps_run(self) -> int:
        """Steps judged: those kept whole in ``steps`` and those folded."""
        return len(self.steps) + self.folded_steps

    @property
    def verdicts(self) -> list[StepVerdict]:
        """Every step's verdict, the folded ones as one (last): what a summary over the run reads."""
        return self.steps + ([self.folded] if self.folded is not None else [])

    @property
    def first_divergence(self):
        for verdict in self.steps:
            if verdict.first_failure is not None:
                return verdict.step, verdict.first_failure
        return None

    @property
    def passed(self) -> bool:
        return not self.failures and self.first_divergence is None and self.nonfinite is None


def _consensus_state(states: list[dict[str, np.ndarray]], dtype: str) -> dict[str, np.ndarray]:
    return {k: as_dtype(consensus([s[k] for s in states]), dtype) for k in states[0]}


def run(scenario: Scenario, backends: list[str], progress: Callable[[int, StepVerdict], None] | None = None,
        keep_going: bool = False, oracle: str | None = "auto",
        state0: dict[str, np.ndarray] | None = None,
        data: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
        status: Callable[[str], None] | None = None) -> RunResult:
    """Run ``scenario`` on ``backends``; ``oracle``: auto | sympy | autodiff | none (harness.run.choice).

    ``state0`` (initial parameters) and ``data`` (one (X, T) per step) default to the ones the
    scenario's seed makes; give them to run on explicit values (Hypothesis examples, replayed
    bundles). They must already be exact in the run's dtype. ``status(text)`` is told what the
    run does before its first step ("loading torch": the first use of a framework imports it).
    """
    session = _build(scenario, backends, oracle, state0, data, status)
    session.progress, session.keep_going = progress, keep_going
    result, start, data = session.result, session.start, session.result.inputs[1]
    if status:
        status("step 0")
    try:
        with run_threads():  # the frameworks are loaded now: their pools can be found
            for step, (X, T) in enumerate(data):
                if not session.active or session.advance(step, X, T):
                    break
            if session.pending is not None:
                session.collect()
    except KeyboardInterrupt:
        result.interrupted = True
    finally:
        session.worker.shutdown(wait=True, cancel_futures=True)
        for model in session.models:
            getattr(model, "close", lambda: None)()  # a library's own loop ends (adapters.nerva_native)
    pending = session.pending
    if result.interrupted and pending is not None and pending[1].done() and not pending[1].cancelled() \
            and pending[1].exception() is None:
        session._record(*pending[1].result())  # the judgement that was in flight
    result.stopped_early = result.steps_run < scenario.steps
    result.seconds = time.perf_counter() - start
    if result.interrupted:
        raise Interrupted(result)
    return result


def _build(scenario: Scenario, backends: list[str], oracle: str | None, state0: dict[str, np.ndarray] | None,
           data: Sequence[tuple[np.ndarray, np.ndarray]] | None, status: Callable[[str], None] | None) -> "_Session":
    """The run set up: its oracle chosen, its initial state and batches, the adapters loaded (an
    unavailable backend is bad input: BackendUnavailable), then the oracle built (its failure
    is a harness bug: it raises) and every backend (a backend's failure is recorded, the others
    go on) at the initial state. Ctrl-C raises :class:`Interrupted`."""
    oracle, note = choose_oracle(scenario, oracle)
    native = scenario.build == "nerva"
    if native:
        from adapters import nerva_native
    if state0 is None:
        state0 = nerva_native.initial_state(scenario) if native else initial_state(scenario)
        state0.update(weights(scenario))  # --load-weights: the user's file
    data = batches(scenario) if data is None else data
    result = RunResult(scenario, list(backends), oracle=oracle, oracle_note=note, inputs=(state0, data))
    models = _load(backends, result)
    if native:  # each library builds, loads, feeds and trains itself, observed (adapters.nerva_native)
        models = {name: nerva_native.NativeBackend(model) for name, model in models.items()}
    result.omitted = contract.omitted(scenario, models, oracle)
    start = time.perf_counter()
    exact, active = None, {}
    try:
        if oracle is not None:
            if status:
                status(f"loading the {oracle} oracle")
            exact = adapters.load_oracle(oracle)
            exact.build(scenario, state0)
        for name, model in models.items():
            if status:
                status(f"loading {name}")
            try:
                model.build(scenario, state0)
                active[name] = model
            except Exception as e:  # a backend's own failure: report it, keep the others going
                result.failures[name] = BackendFailure.of(e, None)
    except KeyboardInterrupt:
        result.interrupted, result.seconds = True, time.perf_counter() - start
        raise Interrupted(result) from None
    session = _Session(result, active, exact, state0, start)
    session.models = list(models.values())
    return session


def _load(backends: list[str], result: RunResult) -> dict:
    """The adapters of ``backends`` (an unavailable one: BackendUnavailable); one whose module or
    constructor raises is that backend's failure, recorded in ``result``."""
    models = {}
    for name in backends:
        try:
            models[name] = adapters.load(name)
        except BackendUnavailable:
            raise
        except Exception as e:
            result.failures[name] = BackendFailure.of(e, None)
    return models


class _Session:
    """A run in progress: the backends still going, the oracle, the point the next step starts
    from, and the judgement in flight.

    The judgement of step s (the expensive part) runs in a worker thread while the backends
    compute step s + 1; only the cheap kink scan must finish first (it decides re-anchoring).
    """

    def __init__(self, result: RunResult, active: dict, exact, state0: dict[str, np.ndarray], start: float) -> None:
        self.result, self.scenario, self.oracle, self.start = result, result.scenario, result.oracle, start
        self.active, self.exact = active, exact
        self.progress: Callable[[int, StepVerdict], None] | None = None
        self.keep_going = False
        self.reference = state0
        # each backend's parameters at the start of a step
        self.before = {name: state0 for name in [*active, *([self.oracle] if self.oracle else [])]}
        self.pending: tuple[int, Future] | None = None
        self.want = {name: contract.provided(self.scenario, m) for name, m in active.items()}
        self.models: list = []  # every backend built, also those that failed (closed at the end)
        self.epoch_steps = epoch_steps(self.scenario) if self.scenario.schedule is not None else 1
        self.traced = False  # whether ``before`` holds the previous step's traces (not a state set)
        self.memo: dict[str, dict] = {}  # the judge's previous reference ("ref"), written by the worker
        self.recorded: tuple = ({}, {}, [])  # failures, dtype mismatches, resyncs when the pending step was submitted
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="judge")

    def collect(self) -> bool:
        """Record the pending verdict; True when the run should stop there.

        The judge finds a step's first non-finite value (:func:`_assess`), so the backends have
        gone on a step by then: without ``keep_going`` the run stops at that step, and what was
        recorded after it (re-anchoring, the next step's failures) is put back as it was."""
        assert self.pending is not None
        step, future = self.pending
        self.pending = None
        verdict, nonfinite = future.result()
        stop = self._record(verdict, nonfinite)
        if self.progress:
            self.progress(step, verdict)
        return stop or (verdict.first_failure is not None and not self.keep_going)

    def _record(self, verdict: StepVerdict, nonfinite: "NonFinite | None") -> bool:
        """Keep a judged step; True when it is the run's first non-finite one and the run stops there."""
        result = self.result
        _keep(result, verdict)
        if nonfinite is None or result.nonfinite is not None:
            return False
        result.nonfinite = nonfinite
        if self.keep_going:
            return False
        result.failures, result.dtype_mismatches, result.resyncs = self.recorded
        return True

    def advance(self, step: int, X: np.ndarray, T: np.ndarray) -> bool:
        """One step: every backend's trace, the previous step's verdict collected, this step's
        judgement submitted, then the re-anchoring. True when the run stops here."""
        scenario, result, oracle = self.scenario, self.result, self.oracle
        if scenario.schedule is not None:  # the learning rate of this step's epoch, from here on
            scenario = scenario.with_(lr=scenario.eta(step // self.epoch_steps))
        # The point the bound is evaluated at: parameters and velocities at the start of the
        # step. In trajectory mode each backend is at its own point; the bound is taken at
        # their consensus and carries their measured spread as the parameters' error.
        if oracle is not None or scenario.mode == "lockstep":
            point: dict | _Start = self.reference
        else:
            point = self._start(step)
        traces = self._traces(step, X, T, scenario.lr)
        if self.pending is not None and self.collect():
            return True  # the previous step failed; this step's traces are not judged
        if not traces:
            return True
        if oracle is not None:
            traces[oracle] = self.exact.step(X, T, scenario.lr)
        scan = scan_kinks(scenario, step, traces, self.before, oracle)
        self.pending = (step, self.worker.submit(_assess, scenario, step, traces, scan, oracle, point, self.memo))
        # what a non-finite value in this step puts back (NaN and Inf only spread from here: collect)
        self.recorded = (dict(result.failures), {k: list(v) for k, v in result.dtype_mismatches.items()},
                         list(result.resyncs))
        self.reanchor(step, traces, scan)
        return False

    def _start(self, step: int) -> "_Start":
        """Every backend's state at the start of a trajectory step: its parameters as it traced
        them (or as the run set them), its velocities read (no trace holds them); one that
        raises is recorded and dropped."""
        keys = list(self.result.inputs[0])
        states = []
        for name, model in list(self.active.items()):
            try:
                read = contract.velocities(model)
            except Exception as e:
                self.result.failures[name] = BackendFailure.of(e, step)
                del self.active[name]
                continue
            state = {k: self.before[name][k] for k in keys}
            state.update(read)
            states.append(state)
        return _Start(states, self.traced)

    def _traces(self, step: int, X: np.ndarray, T: np.ndarray, lr: float) -> dict[str, dict[str, np.ndarray]]:
        """Every active backend's trace of one step; one that raises is recorded and dropped."""
        result, dtype = self.result, self.scenario.dtype
        traces = {}
        for name, model in list(self.active.items()):
            try:
                trace = model.step(X, T, lr)
            except Exception as e:
                result.failures[name] = BackendFailure.of(e, step)
                del self.active[name]
                continue
            problem = contract.check(trace, self.scenario, self.want[name], self.reference, X, T)
            if problem:
                result.failures[name] = BackendFailure(step, "broken contract", problem)
                del self.active[name]
                continue
            traces[name] = trace
            wrong = {k for k, d in (getattr(model, "dtypes", None) or {}).items() if d != dtype}
            if wrong:
                result.dtype_mismatches[name] = sorted(wrong | set(result.dtype_mismatches.get(name, [])))
        return traces

    def _call(self, step: int, method: str, *args) -> dict:
        """``method(*args)`` of every active backend, by name; one that raises is recorded and dropped."""
        out = {}
        for name, model in list(self.active.items()):
            try:
                out[name] = getattr(model, method)(*args)
                problem = contract.state_problem(out[name], self.scenario, self.reference) if method == "get_state" else None
            except Exception as e:
                self.result.failures[name] = BackendFailure.of(e, step)
                out.pop(name, None)
                del self.active[name]
                continue
            if problem:
                self.result.failures[name] = BackendFailure(step, "broken contract", problem)
                del out[name], self.active[name]
        return out

    def reanchor(self, step: int, traces: dict, scan) -> None:
        """Where the next step starts: with an oracle (lockstep) everyone at the oracle's state;
        in lockstep without one, or after a kink flip in trajectory mode (recorded in
        ``resyncs``), everyone at the consensus; otherwise each backend where it got to."""
        scenario, oracle = self.scenario, self.oracle
        if oracle is not None:
            self.reference = {k: as_dtype(v, scenario.dtype) for k, v in self.exact.get_state().items()}
            self.exact.set_state(self.reference)
            self._call(step, "set_state", self.reference)
            self.before = {name: self.reference for name in [*self.active, oracle]}
            self.traced = False
        elif scenario.mode == "lockstep" or scan.flips:
            states = list(self._call(step, "get_state").values())
            if not states:
                return
            self.reference = _consensus_state(states, scenario.dtype)
            self._call(step, "set_state", self.reference)
            if scenario.mode == "trajectory":
                self.result.resyncs.append(step)
            self.before = {name: self.reference for name in self.active}
            self.traced = False
        else:
            self.before = dict(traces)  # the traces hold each backend's updated parameters
            self.traced = True


def _keep(result: RunResult, verdict: StepVerdict) -> None:
    """Keep ``verdict`` whole (the first KEEP_STEPS steps, then the first failing and the first
    flipping step), or fold it into ``result.folded``."""
    kept = result.steps
    if len(kept) < KEEP_STEPS or (verdict.first_failure is not None and result.first_divergence is None) \
            or (verdict.flips and not any(v.flips for v in kept)):
        kept.append(verdict)
        return
    result.folded_steps += 1
    old = result.folded
    if old is None:
        result.folded = StepVerdict(verdict.step, [TensorVerdict(t.key, dict(t.worst), dict(t.kinks),
                                                                 ulps=None if t.ulps is None else dict(t.ulps))
                                                   for t in verdict.tensors], [], verdict.near_kinks, verdict.flips)
        return
    merged = {t.key: t for t in old.tensors}
    for t in verdict.tensors:
        m = merged.get(t.key)
        if m is None:
            old.tensors.append(TensorVerdict(t.key, dict(t.worst), dict(t.kinks),
                                             ulps=None if t.ulps is None else dict(t.ulps)))
            continue
        for b, w in t.worst.items():
            m.worst[b] = max(m.worst.get(b, 0.0), w)
        for b, n in t.kinks.items():
            m.kinks[b] = m.kinks.get(b, 0) + n
        if t.ulps is not None:
            m.ulps = {b: max((m.ulps or {}).get(b, 0.0), u) for b, u in t.ulps.items()}
    old.step, old.near_kinks, old.flips = verdict.step, old.near_kinks + verdict.near_kinks, old.flips + verdict.flips


def first_nonfinite(scenario: Scenario, step: int, traces: dict[str, dict[str, np.ndarray]]) -> NonFinite | None:
    """The first tensor, in the comparator's order, in which a backend's trace holds NaN or Inf
    (the judge calls it only for a step in which its ratios met one: ``StepVerdict.finite``)."""
    order = tensor_order(scenario)
    named = {key_name(k) for k in order}
    order += [(name, None) for name in sorted({n for trace in traces.values() for n in trace} - named)]
    for key in order:
        name = key_name(key)
        values = {}
        for backend, trace in traces.items():
            a = trace.get(name)
            if a is not None:
                bad = ~np.isfinite(a)
                if bad.any():
                    values[backend] = float(np.asarray(a)[bad].flat[0])
        if values:
            return NonFinite(step, key, values)
    return None


@dataclass(frozen=True)
class _Start:
    """Every backend's state at the start of a trajectory step; ``traced``: its parameters are
    the ones the backends traced in the previous step, whose consensus is that step's reference."""

    states: list[dict[str, np.ndarray]]
    traced: bool


def _assess(scenario: Scenario, step: int, traces: dict, scan, oracle: str | None,
            point: dict[str, np.ndarray] | _Start, memo: dict[str, dict]) -> tuple[StepVerdict, NonFinite | None]:
    """The reference, the rounding bound at ``point`` and the judgement of one step; where the
    judgement met a NaN or Inf in a backend's trace, the first one (:func:`first_nonfinite`).

    ``point``: the state the step started from, or (trajectory mode) every backend's state: the
    bound is then taken at their consensus and carries their measured spread as the error of
    the parameters. ``memo["ref"]`` is the previous step's reference (the worker judges the
    steps in order), ``memo["spread"]`` the spread of the traced parameters around it, with the
    arrays it is of (taken where the start's parameters are those very arrays); this step's
    replace them.
    """
    carried = None
    if isinstance(point, _Start):
        states, previous = point.states, memo.get("ref") if point.traced else None
        known = memo.get("spread", {}) if previous is not None else {}
        point, carried = {}, {}
        for k in states[0]:  # each parameter's consensus and spread, each from one pass where it can
            values = [st[k] for st in states]
            far = known[k][1] if k in known and _same_arrays(known[k][0], values) else None
            point[k], far = (previous[k], far) if previous is not None and k in previous else consensus_and_spread(values)
            carried[k] = far if far is not None else _pairwise_spread(values, point[k])
    spreads: dict[str, np.ndarray] = {}
    ref = memo["ref"] = reference_trace(scenario, traces, oracle, spreads)
    memo["spread"] = {k: ([t[k] for t in traces.values() if k in t], s) for k, s in spreads.items()}
    bounds, _ = step_bounds(scenario, ref, point, carried)
    verdict = judge(scenario, step, traces, scan, bounds, oracle, ref)
    if verdict.finite:
        return verdict, None
    return verdict, first_nonfinite(scenario, step, {b: t for b, t in traces.items() if b != oracle})


def _same_arrays(these: Sequence[np.ndarray], those: Sequence[np.ndarray]) -> bool:
    """Whether two lists hold the very same array objects, in the same order."""
    return len(these) == len(those) and all(a is b for a, b in zip(these, those))


def _pairwise_spread(values: list[np.ndarray], centre: np.ndarray) -> np.ndarray:
    """Element-wise largest distance of any backend's value from the consensus (float64; a
    float32 value read as float64)."""
    if compilable([*values, centre], np.shape(centre)):
        from harness.judge import kernels  # the same numbers in one pass

        return kernels.spread(values, centre)
    values = [float64(v) for v in values]
    out = np.abs(values[0] - centre)
    for v in values[1:]:
        np.maximum(out, np.abs(v - centre), out=out)
    return out
