"""The plan of ``check`` (which runs, in which order), how it is split into shards, and how a
run's result becomes its status in the check.

A *run* is one (scenario, dtype, mode, seed). This is the only plan: ``check`` runs it, the
command-line validation prepares exactly its runs (harness.cli.checks) and ``list`` shows its
variants. ``check`` runs:

- every catalog scenario marked ``check = true``, in its catalog ``variants`` (the main job) or,
  with ``--variants all``, in all four dtype/mode pairs (the nightly matrix);
- with the scenario's own seed (or ``--seed``'s, which replaces it), and each ``--add-seed`` as
  well (the nightly adds that night's seed to the fixed ones).

``--shard K/N`` runs the K-th of N parts of that plan. The split is a function of the plan
alone, never of the machine or the clock: every run goes to exactly one shard (disjoint), the
shards together are the plan (the union), and the same plan always splits the same way
(deterministic), so a red cell of the nightly matrix can be rerun on a laptop with the same
``--shard``. Runs differ in cost by orders of magnitude (``upstream`` against the small
scenarios), so the split is not round-robin: runs are dealt, most expensive first, to the shard
with the least estimated work so far (longest-processing-time first, ties to the lowest shard),
with :func:`cost` as the estimate. Within a shard the plan's own order is kept.

``explore --shard K/N`` splits a search instead (:func:`explore_share`): the example budget is
divided into N parts that add up to it, and each shard searches with its own seed derived from
(seed, K, N), so no two shards draw the same sequence; ``--shard 1/1`` is the unsharded search.

A run's status in the check (:func:`outcome`) is ``pass``, ``fail``, ``known`` (the documented
defect the catalog expects showed, exactly) or ``known-missing`` (it did not: red).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, NamedTuple, Sequence

import numpy as np

from harness.core.errors import SpecError
from harness.run.choice import SYMPY_LIMIT
from harness.spec.scenario import Scenario
from scenarios import ALL_VARIANTS

if TYPE_CHECKING:
    from harness.run.runner import RunResult

# Calibrated on the nightly plan (docs/findings.md): a small scenario costs a few seconds whatever
# its size (building four models, the per-step overhead), about 1/30 of an upstream run.
RUN_OVERHEAD = 2.5e8  # multiply-adds charged to every run
SYMPY_FACTOR = 200  # the exact oracle costs about this many float multiply-adds per multiply-add


class Shard(NamedTuple):
    index: int  # 1-based
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str | None) -> Shard:
    """``"K/N"`` with 1 <= K <= N; ``None`` is the whole plan (1/1)."""
    if text is None:
        return Shard(1, 1)
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not m:
        raise SpecError(f"--shard takes K/N (for example 2/4), not {text!r}")
    k, n = int(m[1]), int(m[2])
    if n < 1 or not 1 <= k <= n:
        raise SpecError(f"--shard {text}: K must be between 1 and N (and N at least 1)")
    return Shard(k, n)


@dataclass(frozen=True, order=True)
class Run:
    """One run of the plan."""

    scenario: str
    dtype: str
    mode: str
    seed: int

    @property
    def variant(self) -> str:
        return f"{self.dtype}/{self.mode}"

    @property
    def label(self) -> str:
        return f"{self.scenario} {self.dtype} {self.mode} seed {self.seed}"

    def filename(self, catalog_seed: int | None = None) -> str:
        """The JSON report's file name; the catalog's own seed keeps the historical name."""
        stem = f"{self.scenario}-{self.dtype}-{self.mode}"
        return f"{stem}.json" if self.seed == catalog_seed else f"{stem}-seed{self.seed}.json"


def plan(variants: str = "catalog", seed: int | None = None, add_seeds: Iterable[int] = (),
         catalog: dict | None = None) -> list[Run]:
    """Every run of ``check``, in catalog order, then variant, then seed.

    ``variants``: ``catalog`` (each scenario's ``variants`` key, default all four) or ``all``.
    ``seed`` replaces each scenario's own seed; ``add_seeds`` are run besides it (a seed equal to
    the scenario's own is not run twice).
    """
    if variants not in ("catalog", "all"):
        raise SpecError(f"--variants takes catalog or all, not {variants!r}")
    if catalog is None:
        import scenarios

        catalog = scenarios.catalog()
    runs: list[Run] = []
    for name, table in catalog.items():
        if not table.get("check"):
            continue
        own = int(table.get("seed", 0)) if seed is None else seed
        seeds = list(dict.fromkeys([own, *add_seeds]))
        pairs = ALL_VARIANTS if variants == "all" else table.get("variants", ALL_VARIANTS)
        for pair in pairs:
            dtype, _, mode = pair.partition("/")
            runs.extend(Run(name, dtype, mode, s) for s in seeds)
    return runs


def shard_plan(variants: str = "catalog", seed: int | None = None, add_seeds: Iterable[int] = (),
               shard: str | None = None) -> tuple[list[Run], list[Run]]:
    """(the whole plan, the runs of ``shard``): what ``check --variants --seed --add-seed --shard``
    runs, and what its command line is validated on."""
    planned = plan(variants, seed, add_seeds)
    return planned, select(planned, parse_shard(shard))


def scenario(run: Run) -> Scenario:
    """The scenario a run of the plan runs: its catalog entry in the run's dtype, mode and seed."""
    import scenarios

    return scenarios.get(run.scenario, seed=run.seed, dtype=run.dtype, mode=run.mode)


def outcome(result: "RunResult", expected: Sequence[str] | None) -> str:
    """A run's status in the check: ``pass``, ``fail``, ``known`` or ``known-missing``.

    ``expected``: the backends a documented defect of the run blames (None: no defect is
    expected, or its backends are not all in the run). Expected, it must show strictly: no
    backend raised and the first divergence blames exactly those backends (``known``);
    anything else is ``known-missing``, a pass included, so a fix upstream or a loss of
    sensitivity is noticed. Without one, a passing run is ``pass`` and any other ``fail``.
    """
    if expected is not None:
        first = result.first_divergence
        blamed = sorted(first[1].blamed) if first else []
        return "known" if not result.failures and blamed == sorted(expected) else "known-missing"
    return "pass" if result.passed else "fail"


def cost(run: Run, catalog: dict | None = None) -> float:
    """A static estimate of a run's work, in multiply-adds: steps x batch x the network's
    multiply-adds per sample, more for float64 and far more where lockstep uses the exact SymPy
    oracle (``auto`` picks it up to :data:`~harness.run.choice.SYMPY_LIMIT` multiply-adds per step). Only the ranking
    matters: it decides how runs are dealt to shards."""
    if catalog is None:
        import scenarios

        catalog = scenarios.catalog()
    table = catalog[run.scenario]
    sizes = [int(s) for s in str(table["sizes"]).split(",")]
    per_sample = sum(a * b for a, b in zip(sizes, sizes[1:]))
    batch, steps = int(table.get("batch-size", 1)), int(table.get("steps", 1))
    per_step = per_sample * batch
    work = steps * per_step * (1.5 if run.dtype == "float64" else 1.0)
    if run.mode == "lockstep":
        work *= SYMPY_FACTOR if per_step <= SYMPY_LIMIT else 1.2  # exact oracle, or float64 autodiff beside
    return RUN_OVERHEAD + work


def split(runs: list[Run], count: int, costs: list[float] | None = None) -> list[list[Run]]:
    """Deal ``runs`` to ``count`` shards: most expensive first, each to the shard with the least
    work so far (ties: the lowest index); every shard keeps the plan's order."""
    if costs is None:
        costs = [cost(r) for r in runs]
    load = [0.0] * count
    owner = [0] * len(runs)
    for i in sorted(range(len(runs)), key=lambda i: (-costs[i], i)):
        k = min(range(count), key=lambda j: (load[j], j))
        owner[i] = k
        load[k] += costs[i]
    return [[r for r, o in zip(runs, owner) if o == k] for k in range(count)]


def select(runs: list[Run], shard: Shard, catalog: dict | None = None) -> list[Run]:
    """The runs of ``shard`` (all of them for 1/1)."""
    if shard.count == 1:
        return list(runs)
    if catalog is None:
        import scenarios

        catalog = scenarios.catalog()
    return split(runs, shard.count, [cost(r, catalog) for r in runs])[shard.index - 1]


def explore_share(examples: int, seed: int, shard: Shard) -> tuple[int, int]:
    """(examples, seed) of one shard of ``explore --examples E --seed S``: budgets that differ by
    at most one and add up to E; 1/1 is the unsharded search itself."""
    if shard.count == 1:
        return examples, seed
    base, extra = divmod(examples, shard.count)
    budget = base + (1 if shard.index <= extra else 0)
    derived = int(np.random.SeedSequence([int(seed), shard.index, shard.count]).generate_state(1)[0] >> 1)
    return budget, derived
