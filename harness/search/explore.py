"""Hypothesis-driven search for defects: random networks, adversarial values, smallest examples.

    from harness.search.explore import explore
    defects = explore(examples=1000, seed=1, backends=["numpy", "torch", "jax", "tensorflow"])
    for d in defects:
        print(d.describe())
    print(defects.stats.summary())

Each example (:func:`scenarios.strategies.examples`) is run on the backends with the oracle
``auto`` (lockstep: exact SymPy for small nets, autodiff otherwise), and its findings are sorted
into red, known and other by :func:`harness.search.evaluate.evaluate` (the comparator is the
only judge of a value; a red finding fails the search's property).

Search (:func:`explore`): Hypothesis reports one failure per run, so the search runs in rounds.
In a round, the first example with a red finding whose signature (class, backends, tensor, layer
kind) is new *locks* the round on that signature: Hypothesis shrinks it (only that signature
counts as failing while shrinking, so the shrinker cannot slide to another defect) to the
smallest example, which becomes a :class:`Defect`. The next round runs with every signature found
so far ignored (counted in ``Defect.count``, not failed), until the example budget is spent or a
round ends without a new defect. Rounds are seeded from ``seed`` (``hypothesis.seed``): the same
seed, budget and backends give the same search.

Deduplication is by signature alone: a red finding with a found defect's signature is counted
for that defect (``Defect.count``); every red finding with a new signature is a defect of its
own, whatever was seen before it in the run.

Shrinking costs at most ``max_shrink_runs`` runs per defect (Hypothesis's own limits allow far
more): after that, new shrink candidates pass without being run and the smallest example so far
is kept. Examples Hypothesis replays are answered from a cache.
"""

from __future__ import annotations

import ast
import hashlib
import re
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

import numpy as np
from hypothesis import HealthCheck, Phase, Verbosity, given, reproduce_failure, settings
from hypothesis import seed as hypothesis_seed
from hypothesis.database import ExampleDatabase
from hypothesis.errors import Unsatisfiable
from hypothesis.strategies import SearchStrategy

import adapters
from harness.core.components import custom_components
from harness.core.errors import BackendUnavailable
from harness.run.findings import Finding
from harness.run.runner import RunResult
from harness.search.evaluate import Evaluation, evaluate
from scenarios.strategies import Example, examples as example_strategy

MAX_SHRINK_RUNS = 400  # runs per defect spent on shrinking (Hypothesis's own limits are far higher)
HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
PHASES = [Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink]  # no "explain": it re-runs a lot


# ------------------------------------------------------------------------------ stable generation

@contextmanager
def stable_generation() -> Iterator[None]:
    """Make what Hypothesis draws depend on the seed alone, not on the modules loaded.

    Hypothesis (6.13x and later) sometimes draws a constant found in the source of the *local*
    modules in ``sys.modules`` (those outside site-packages). Which ones are loaded, and whether
    this package is installed editable or as a wheel, would then change the examples a seed
    gives (the same planted bug found after a different number of examples in each process).
    Inside this context that pool is empty, so ``explore --seed S`` draws the same
    examples on every machine with the same versions. It replaces one internal function
    (``hypothesis.internal.conjecture.providers._get_local_constants``); when a Hypothesis
    release no longer has it, nothing is replaced.
    """
    try:
        from hypothesis.internal.conjecture import providers
        from hypothesis.internal.constants_ast import Constants

        original, cache = providers._get_local_constants, providers.CONSTANTS_CACHE
    except (ImportError, AttributeError):
        yield
        return
    empty = Constants()
    providers._get_local_constants = lambda: empty
    cache.cache.clear()
    try:
        yield
    finally:
        providers._get_local_constants = original
        cache.cache.clear()


# ------------------------------------------------------------------------------ the search

@dataclass
class Defect:
    """One distinct defect (one finding signature) and the smallest example that shows it."""

    finding: Finding
    example: Example  # the smallest failing example (after Hypothesis's shrinking)
    result: RunResult | None  # the run of that example
    count: int  # examples (outside shrinking) that showed it
    seed: int  # the explore seed
    round_seed: int  # the hypothesis.seed of the round that found it
    reproduce: str | None  # "@reproduce_failure('6.x', b'...')" (for a test over examples()), or None
    blob: bytes | None
    found_after: int  # examples run when it was first seen
    shrink_runs: int = 0
    seconds: float = 0.0  # to find and shrink it
    strategy: str = "scenarios.strategies.examples()"  # what the reproduce blob is for
    while_shrinking: bool = False  # first seen in a shrink candidate of another defect (not shrunk itself)

    @property
    def signature(self) -> tuple:
        return self.finding.signature

    @property
    def red(self) -> bool:
        return self.finding.red

    def hypothesis_info(self) -> dict:
        """What reproduces it through Hypothesis, JSON-ready (for a repro bundle's ``hypothesis``)."""
        import hypothesis

        return {
            "version": hypothesis.__version__, "seed": self.seed, "round_seed": self.round_seed,
            "reproduce_failure": self.reproduce, "blob": self.blob.decode("ascii") if self.blob else None,
            "strategy": self.strategy, "signature": [self.signature[0], list(self.signature[1]),
                                                                      *self.signature[2:]],
            "count": self.count, "found_after": self.found_after, "shrink_runs": self.shrink_runs,
            "size": self.example.size._asdict(), "tricks": list(self.example.tricks),
            "while_shrinking": self.while_shrinking,
        }

    def to_json(self) -> dict:
        """Its entry in the explore report (``bundle`` and ``reproduce`` are filled in once its
        bundle is saved)."""
        f = self.finding
        return {"class": f.cls, "backends": list(f.backends), "tensor": f.tensor, "layer_kind": f.layer_kind,
                "detail": f.detail, "count": self.count, "found_after": self.found_after,
                "size": self.example.size._asdict(), "bundle": None, "reproduce": None}

    def describe(self) -> str:
        f = self.finding
        head = (f"{f.cls} in {'/'.join(f.backends)}: {f.tensor or ''}"
                f"{f' of a {f.layer_kind} layer' if f.layer_kind else ''}; seen in {self.count} example(s), "
                f"first after {self.found_after}; smallest example ({self.example.size}):")
        lines = [head, f.detail, self.example.describe()]
        if self.reproduce:
            lines.append(f"reproduce: {self.reproduce} on a test over {self.strategy}")
        return "\n".join(lines)


@dataclass
class Stats:
    """What the search ran and saw besides the defects."""

    examples: int = 0  # examples run outside shrinking (the budget counts these)
    budget: int = 0
    shrink_runs: int = 0
    shrink_skipped: int = 0  # shrink candidates not run: the round's shrink budget was spent
    runs: int = 0  # backend runs in all (counterfactuals included)
    rounds: int = 0
    shrinking: Finding | None = None  # the new finding being shrunk right now, if any
    seconds: float = 0.0
    findings: Counter = field(default_factory=Counter)  # not failed: kink, convention, non-finite everywhere, known
    known: Counter = field(default_factory=Counter)  # by known defect
    oracles: Counter = field(default_factory=Counter)
    custom: Counter = field(default_factory=Counter)  # examples that used each custom component (ELU, a user's …)
    red: Counter = field(default_factory=Counter)  # by signature (outside shrinking)
    seen_while_shrinking: dict = field(default_factory=dict)  # new signature -> (Finding, smallest example)

    @property
    def rate(self) -> float:
        """Examples per second (shrinking included in the time)."""
        return self.examples / self.seconds if self.seconds else 0.0

    def summary(self) -> str:
        parts = [f"{self.examples}/{self.budget} examples in {self.seconds:.1f} s ({self.rate:.2f}/s), "
                 f"{self.rounds} round(s), {self.shrink_runs} shrink runs",
                 "oracles: " + ", ".join(f"{k or 'none'} {v}" for k, v in sorted(self.oracles.items(), key=str))]
        if self.findings:
            parts.append("not failed: " + ", ".join(f"{k} {v}" for k, v in sorted(self.findings.items())))
        if self.known:
            parts.append("known: " + ", ".join(f"{k} {v}" for k, v in sorted(self.known.items())))
        if self.seen_while_shrinking:
            parts.append(f"seen only while shrinking: {len(self.seen_while_shrinking)} signature(s)")
        return "\n".join(parts)


class Exploration(list):
    """The defects found (a list of :class:`Defect`), with ``stats``."""

    def __init__(self, defects: Iterable[Defect] = (), stats: Stats | None = None) -> None:
        super().__init__(defects)
        self.stats = stats or Stats()

    def to_json(self, *, budget: int, seed: int, shard: str | None, backends: list[str],
                defects: list[dict], interrupted: bool = False) -> dict:
        """The explore report (schema ``nerva-consistency/explore/1``): the search asked for, what
        it ran and saw, and ``defects``, each defect's entry (:meth:`Defect.to_json`, with its
        bundle and reproduce commands); ``interrupted``: the search was stopped (Ctrl-C, SIGTERM,
        SIGHUP) and this is what it had run and found by then."""
        stats = self.stats
        return {
            "schema": "nerva-consistency/explore/1", "examples": stats.examples, "budget": budget,
            "seed": seed, "shard": shard, "backends": backends, "seconds": round(stats.seconds, 1),
            "rounds": stats.rounds, "shrink_runs": stats.shrink_runs, "findings": dict(stats.findings),
            "known": dict(stats.known), "oracles": {(k or "none"): v for k, v in stats.oracles.items()},
            "custom_components": dict(stats.custom),
            "defects": defects,
            "seen_while_shrinking_not_reproduced": [f.detail for f, _ in stats.seen_while_shrinking.values()],
            "interrupted": interrupted}


class _Red(Exception):
    """Raised by the property: an example showed the round's (new) red finding."""

    def __init__(self, finding: Finding, evaluation: Evaluation) -> None:
        super().__init__(f"{finding.cls} in {'/'.join(finding.backends)}: {finding.detail}")
        self.finding, self.evaluation = finding, evaluation


class _KeepFetched(ExampleDatabase):
    """A database view for rounds after the first: entries that were already stored are never
    deleted (in such a round a stored failure of an ignored signature replays as passing, and
    Hypothesis would clear it out); entries written during the round behave normally."""

    def __init__(self, db: ExampleDatabase) -> None:
        super().__init__()
        self.db = db
        self.fetched: set[tuple[bytes, bytes]] = set()

    def fetch(self, key: bytes) -> Iterable[bytes]:
        for value in self.db.fetch(key):
            self.fetched.add((key, value))
            yield value

    def save(self, key: bytes, value: bytes) -> None:
        self.db.save(key, value)

    def delete(self, key: bytes, value: bytes) -> None:
        if (key, value) not in self.fetched:
            self.db.delete(key, value)


_BLOB = re.compile(r"@reproduce_failure\((.*?)\)")


def _reproduce(e: BaseException) -> tuple[str | None, bytes | None]:
    """The ``@reproduce_failure(...)`` decorator Hypothesis noted on the exception, if any."""
    for note in getattr(e, "__notes__", ()):
        m = _BLOB.search(note)
        if m:
            try:
                _, blob = ast.literal_eval(f"({m.group(1)})")
                return m.group(0), blob
            except (ValueError, SyntaxError):
                return m.group(0), None
    return None, None


def fingerprint(example: Example) -> bytes:
    """Identifies an example by its content (scenario and every array)."""
    h = hashlib.sha256(repr(example.scenario).encode())
    arrays = [(k, v) for k, v in sorted(example.state0.items())]
    arrays += [(f"{name}{s}", a) for s, (X, T) in enumerate(example.data) for name, a in (("X", X), ("T", T))]
    for name, a in arrays:
        a = np.ascontiguousarray(a, dtype=np.float64)
        h.update(f"{name}{a.shape}".encode())
        h.update(a.tobytes())
    return h.digest()


def round_seed(seed: int, index: int) -> int:
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, index]).generate_state(1)[0])


class _Search:
    def __init__(self, budget: int, seed: int, backends: list[str], progress: Callable | None,
                 database: ExampleDatabase | None, on_failure: Callable | None, strategy: SearchStrategy,
                 oracle: str, known: bool, max_shrink_runs: int) -> None:
        self.budget, self.seed, self.backends = budget, seed, list(backends)
        self.max_shrink_runs = max_shrink_runs
        self.strategy_name = "scenarios.strategies.examples()"
        self.cache: dict[bytes, tuple[Finding, Evaluation] | None] = {}
        self.round_shrinks = 0
        self.progress, self.database, self.on_failure = progress, database, on_failure
        self.strategy, self.oracle, self.known = strategy, oracle, known
        self.defects: dict[tuple, Defect] = {}
        self.stats = Stats(budget=budget)
        self.locked: tuple | None = None
        self.best: tuple[Finding, Evaluation] | None = None
        self.first_seen = 0

    # -- the property ------------------------------------------------------------------------
    def prop(self, example: Example) -> None:
        hit = self._judge(example)
        if hit is not None:  # one raise statement: Hypothesis tells failures apart by where they are raised
            raise _Red(*hit)

    def _judge(self, example: Example) -> tuple[Finding, Evaluation] | None:
        if self.locked is not None:  # shrinking: only the locked signature fails
            key = fingerprint(example)
            if key in self.cache:  # e.g. Hypothesis's final replay of the smallest example
                return self.cache[key]
            if self.round_shrinks >= self.max_shrink_runs:
                self.stats.shrink_skipped += 1  # the shrink budget is spent: candidates pass unrun
                return None
            self.cache[key] = self._shrink_step(example)
            return self.cache[key]
        ev = evaluate(example, self.backends, oracle=self.oracle, known=self.known)
        self.stats.runs += ev.runs
        s = self.stats
        s.examples += 1
        s.oracles[ev.result.oracle if ev.result else "error"] += 1
        s.custom.update(custom_components(example.scenario))
        for f in ev.other:
            s.findings[f.cls] += 1
        for f, name in ev.known:
            s.findings["known"] += 1
            s.known[name] += 1
        new = None
        for f in ev.red:
            s.red[f.signature] += 1
            if f.signature in self.defects:
                self.defects[f.signature].count += 1
            elif new is None:
                new = f
        if self.progress:
            self.progress(s, list(self.defects.values()))
        if new is None:
            return None
        self.locked, self.first_seen = new.signature, s.examples
        s.shrinking = new
        s.seen_while_shrinking.pop(new.signature, None)
        self._keep(new, ev)
        return new, ev

    def _shrink_step(self, example: Example) -> tuple[Finding, Evaluation] | None:
        ev = evaluate(example, self.backends, oracle=self.oracle, known=self.known)
        self.stats.runs += ev.runs
        self.stats.shrink_runs += 1
        self.round_shrinks += 1
        if self.progress:
            self.progress(self.stats, list(self.defects.values()))
        for f in ev.red:
            if f.signature == self.locked:
                self._keep(f, ev)
                return f, ev
            if f.signature not in self.defects:
                seen = self.stats.seen_while_shrinking.get(f.signature)
                if seen is None or example.weight < seen[1].weight:
                    self.stats.seen_while_shrinking[f.signature] = (f, example)
        return None

    def _keep(self, finding: Finding, ev: Evaluation) -> None:
        if self.best is None or ev.example.weight <= self.best[1].example.weight:
            self.best = (finding, ev)

    # -- rounds ------------------------------------------------------------------------------
    def _round(self, index: int) -> bool:
        """One Hypothesis run; True when it found (and shrank) a new defect."""
        self.locked, self.best, self.cache, self.round_shrinks = None, None, {}, 0
        self.stats.shrinking = None
        remaining = self.budget - self.stats.examples
        rseed = round_seed(self.seed, index)
        db = self.database if index == 0 or self.database is None else _KeepFetched(self.database)

        @settings(max_examples=remaining, deadline=None, database=db, phases=PHASES, suppress_health_check=HEALTH,
                  print_blob=True, report_multiple_bugs=False, verbosity=Verbosity.quiet, derandomize=False)
        @hypothesis_seed(rseed)
        @given(self.strategy)
        def search(example: Example) -> None:
            self.prop(example)

        start = time.perf_counter()
        self.stats.rounds += 1
        error: BaseException | None = None
        try:
            with stable_generation():
                search()
        except _Red as e:
            error = e
        except Unsatisfiable:  # no valid example left to draw: the search is over
            if self.locked is None:
                return False
        except Exception as e:  # e.g. Hypothesis's Flaky: keep what the property recorded
            if self.locked is None:
                raise
            error = e
        if self.locked is None:
            return False
        if isinstance(error, _Red):
            finding, ev = error.finding, error.evaluation
        else:
            assert self.best is not None
            finding, ev = self.best
        if self.best is not None and self.best[1].example.weight < ev.example.weight:
            finding, ev = self.best
        text, blob = _reproduce(error) if error is not None else (None, None)
        defect = Defect(finding, ev.example, ev.result, count=1, seed=self.seed, round_seed=rseed,
                        reproduce=text, blob=blob, found_after=self.first_seen, shrink_runs=self.round_shrinks,
                        seconds=time.perf_counter() - start, strategy=self.strategy_name)
        self.defects[self.locked] = defect
        self.stats.shrinking = None
        if self.on_failure:
            self.on_failure(defect)
        return True

    def _confirm_seen_while_shrinking(self) -> None:
        """Red signatures that showed up only in a shrink candidate are not lost: each one's
        smallest example is run again and, when it still shows that signature, becomes a defect
        of its own (``shrink_runs`` 0: it was not shrunk further, and it has no reproduce blob)."""
        for signature, (finding, example) in list(self.stats.seen_while_shrinking.items()):
            if signature in self.defects:
                del self.stats.seen_while_shrinking[signature]
                continue
            start = time.perf_counter()
            ev = evaluate(example, self.backends, oracle=self.oracle, known=self.known)
            self.stats.runs += ev.runs
            again = next((f for f in ev.red if f.signature == signature), None)
            if again is None:
                continue  # not reproduced (it was a consequence of the state at the time): stays counted
            del self.stats.seen_while_shrinking[signature]
            defect = Defect(again, example, ev.result, count=1, seed=self.seed, round_seed=0, reproduce=None,
                            blob=None, found_after=self.stats.examples, seconds=time.perf_counter() - start,
                            strategy=self.strategy_name, while_shrinking=True)
            self.defects[signature] = defect
            if self.on_failure:
                self.on_failure(defect)

    def run(self) -> Exploration:
        start = time.perf_counter()
        index = 0
        try:
            while self.stats.examples < self.budget:
                found = self._round(index)
                index += 1
                if not found:
                    break
            self._confirm_seen_while_shrinking()
        finally:
            self.stats.seconds = time.perf_counter() - start
        return Exploration(sorted(self.defects.values(), key=lambda d: d.found_after), self.stats)


def explore(examples: int, seed: int, backends: list[str],
            progress: Callable[[Stats, list[Defect]], None] | None = None,
            database: ExampleDatabase | None = None, on_failure: Callable[[Defect], None] | None = None, *,
            strategy: SearchStrategy[Example] | None = None, oracle: str = "auto", known: bool = True,
            max_shrink_runs: int = MAX_SHRINK_RUNS) -> Exploration:
    """Search ``examples`` examples for defects; one :class:`Defect` per finding signature.

    ``progress(stats, defects)`` is called after every run (``stats.examples`` of ``stats.budget``
    done, ``stats.shrink_runs`` while shrinking);
    ``on_failure(defect)`` once per distinct defect, when it has been shrunk. ``database``: a
    Hypothesis example database (failures found before are replayed first and new ones saved).
    ``strategy`` defaults to :func:`scenarios.strategies.examples`. Returns an
    :class:`Exploration` (a list of defects with ``.stats``).
    """
    if examples < 1:
        raise ValueError("examples must be at least 1")
    for name in backends:  # an unavailable backend is bad input, not a defect found
        reason = adapters.why_unavailable(name)
        if reason:
            raise BackendUnavailable(reason)
    search = _Search(examples, seed, backends, progress, database, on_failure,
                     strategy if strategy is not None else example_strategy(), oracle, known, max_shrink_runs)
    if strategy is not None:
        search.strategy_name = repr(strategy)
    return search.run()


def example_from_blob(blob: bytes, version: str | None = None,
                      strategy: SearchStrategy[Example] | None = None) -> Example:
    """The example a ``@reproduce_failure`` blob encodes (for the strategy it was found with)."""
    import hypothesis

    captured: list[Example] = []

    class _Got(Exception):
        pass

    @reproduce_failure(version or hypothesis.__version__, blob)
    @settings(database=None, deadline=None, suppress_health_check=HEALTH, phases=[Phase.explicit, Phase.generate],
              verbosity=Verbosity.quiet, print_blob=False)
    @given(strategy if strategy is not None else example_strategy())
    def capture(example: Example) -> None:
        captured.append(example)
        raise _Got()

    try:
        capture()
    except _Got:
        pass
    except Exception:
        if not captured:
            raise
    if not captured:
        raise ValueError("the blob did not produce an example")
    return captured[-1]
