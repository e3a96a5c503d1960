"""The plan of ``check`` and its shards: deterministic, disjoint, and together the whole plan.

No backend runs here: the plan is data (harness.run.plan), and ``check --shard`` is driven with
``_run_one`` replaced by a recorder that answers every run with an empty, passing result.
"""

from __future__ import annotations

import itertools
import sys

import pytest

import scenarios
from harness.cli import console, main as cli
from harness.run import plan as sharding
from harness.core.errors import SpecError
from harness.run.runner import RunResult

FRAMEWORKS = ("torch", "jax", "tensorflow", "nerva_torch", "nerva_jax", "nerva_tensorflow")


def test_parse_shard():
    assert sharding.parse_shard(None) == (1, 1)
    assert sharding.parse_shard("2/4") == (2, 4)
    assert str(sharding.parse_shard(" 3 / 3 ")) == "3/3"
    for bad in ("0/3", "4/3", "1/0", "a/b", "2", "1/2/3", "-1/2"):
        with pytest.raises(SpecError, match="--shard"):
            sharding.parse_shard(bad)


def test_catalog_plan_is_each_check_scenario_in_its_catalog_variants():
    seeds = {n: int(t.get("seed", 0)) for n, t in scenarios.catalog().items()}
    assert [(r.scenario, r.variant) for r in sharding.plan()] == [
        (n, v) for n, t in scenarios.catalog().items() if t.get("check")
        for v in t.get("variants", scenarios.ALL_VARIANTS)]
    assert all(r.seed == seeds[r.scenario] for r in sharding.plan())
    assert all(r.seed == 5 for r in sharding.plan(seed=5))


def test_nightly_plan_every_variant_and_tonights_seed_beside_the_fixed_one():
    names = [n for n, t in scenarios.catalog().items() if t.get("check")]
    runs = sharding.plan("all", add_seeds=[812])
    assert len(runs) == len(set(runs)) == len(names) * 4 * 2
    assert {(r.scenario, r.variant) for r in runs} == {(n, v) for n in names for v in scenarios.ALL_VARIANTS}
    assert {r.seed for r in runs if r.scenario == "upstream"} == {0, 812}
    # a seed equal to a scenario's own is not run twice
    assert len(sharding.plan("all", add_seeds=[0])) == len(names) * 4


@pytest.mark.parametrize("variants,add", [("catalog", []), ("all", [812]), ("all", [3, 4])])
def test_shards_are_disjoint_their_union_is_the_plan_and_the_split_is_deterministic(variants, add):
    whole = sharding.plan(variants, add_seeds=add)
    for n in range(1, 8):
        parts = [sharding.select(whole, sharding.Shard(k, n)) for k in range(1, n + 1)]
        flat = list(itertools.chain.from_iterable(parts))
        assert len(flat) == len(set(flat)) == len(whole), n  # none twice, none lost
        assert set(flat) == set(whole)
        for part in parts:  # each shard keeps the plan's order
            assert part == [r for r in whole if r in set(part)]
        assert parts == [sharding.select(list(whole), sharding.Shard(k, n)) for k in range(1, n + 1)]


def test_the_expensive_runs_are_spread_over_the_shards():
    whole = sharding.plan("all", add_seeds=[812])
    upstream = [r for r in whole if r.scenario == "upstream"]
    for n in (2, 4):
        parts = [sharding.select(whole, sharding.Shard(k, n)) for k in range(1, n + 1)]
        counts = [sum(r.scenario == "upstream" for r in p) for p in parts]
        assert max(counts) - min(counts) <= 1 and sum(counts) == len(upstream), counts


def test_explore_shares_add_up_to_the_budget_with_distinct_seeds():
    assert sharding.explore_share(300, 7, sharding.Shard(1, 1)) == (300, 7)
    for examples, n in ((300, 4), (10, 3), (2, 5)):
        shares = [sharding.explore_share(examples, 7, sharding.Shard(k, n)) for k in range(1, n + 1)]
        assert sum(e for e, _ in shares) == examples
        assert max(e for e, _ in shares) - min(e for e, _ in shares) <= 1
        assert len({s for _, s in shares}) == n and all(0 <= s < 2**32 for _, s in shares)
        assert shares == [sharding.explore_share(examples, 7, sharding.Shard(k, n)) for k in range(1, n + 1)]


@pytest.fixture
def recorded(monkeypatch):
    """``check`` with every run answered by an empty passing result; the runs are recorded."""
    before = {m for m in FRAMEWORKS if m in sys.modules}
    calls: list[tuple] = []

    def fake_run(scenario, backends, *args, **kw):
        calls.append((scenario.name, scenario.dtype, scenario.mode, scenario.seed))
        return RunResult(scenario, list(backends))

    monkeypatch.setattr(console, "run_one", fake_run)
    yield calls
    assert {m for m in FRAMEWORKS if m in sys.modules} == before  # nothing ran, nothing imported


def test_check_shards_together_run_exactly_the_unsharded_check(recorded, capsys):
    argv = ["check", "--backends", "numpy,torch", "--variants", "all", "--add-seed", "812", "--quiet"]
    assert cli.main(argv) == 0
    whole = list(recorded)
    assert len(whole) == len(sharding.plan("all", add_seeds=[812]))
    parts = []
    for k in (1, 2, 3):
        recorded.clear()
        assert cli.main(argv + ["--shard", f"{k}/3"]) == 0
        parts.append(list(recorded))
        assert f"shard {k}/3: {len(recorded)} of the plan's {len(whole)} run(s)" in capsys.readouterr().out
    flat = [r for p in parts for r in p]
    assert sorted(flat) == sorted(whole) and len(set(flat)) == len(flat)


def test_check_rejects_a_bad_shard(recorded, capsys):
    assert cli.main(["check", "--backends", "numpy,torch", "--shard", "4/3"]) == 2
    assert "--shard 4/3" in capsys.readouterr().err
    assert recorded == []


@pytest.mark.parametrize("extra", [[], ["--variants", "all", "--add-seed", "812"], ["--seed", "5", "--shard", "2/3"],
                                   ["--variants", "all", "--add-seed", "4", "--shard", "3/4"]])
def test_validation_prepares_exactly_the_runs_check_runs(recorded, extra):
    """The command line is validated on the plan's own runs (the same --variants, --seed,
    --add-seed and --shard), so no run of ``check`` starts unprepared."""
    from harness.cli import checks, parser

    argv = ["check", "--backends", "numpy,torch", "--quiet", *extra]
    prepared = checks.command(parser.parser().parse_args(argv)).runs
    assert cli.main(argv) == 0
    assert [(s.name, s.dtype, s.mode, s.seed) for s in prepared] == recorded


def test_check_rejects_a_bad_added_seed(recorded, capsys):
    assert cli.main(["check", "--backends", "numpy,torch", "--add-seed", "-1"]) == 2
    assert "--add-seed" in capsys.readouterr().err
    assert recorded == []


def _result(blamed=(), failures=None) -> RunResult:
    from harness.judge.compare import StepVerdict, TensorVerdict

    sc = scenarios.get("leaky-logsoftmax", steps=1)
    r = RunResult(sc, ["numpy", "torch", "tensorflow"], failures=dict(failures or {}))
    worst = {b: (9.0 if b in blamed else 0.1) for b in r.backends}
    r.steps.append(StepVerdict(0, [TensorVerdict(("X", 3), worst, {b: 0 for b in r.backends}, list(blamed))], [], 0, 0))
    return r


@pytest.mark.parametrize("blamed,failures,expected,status", [
    ((), None, None, "pass"),
    (("torch",), None, None, "fail"),
    ((), {"torch": "step 0: RuntimeError"}, None, "fail"),
    (("tensorflow",), None, ["tensorflow"], "known"),
    ((), None, ["tensorflow"], "known-missing"),  # a pass is not the expected defect
    (("tensorflow", "torch"), None, ["tensorflow"], "known-missing"),  # more than it blamed
    (("torch",), None, ["tensorflow"], "known-missing"),
    (("tensorflow",), {"numpy": "build: ValueError"}, ["tensorflow"], "known-missing"),  # and a backend raised
])
def test_outcome_pass_fail_known_and_known_missing(blamed, failures, expected, status):
    assert sharding.outcome(_result(blamed, failures), expected) == status


def test_every_known_id_of_the_catalog_is_a_documented_defect_with_its_number():
    from harness.run import known

    listed = {i for t in scenarios.catalog().values() for i in t.get("known", [])}
    assert listed and listed <= set(known.BY_ID)
    assert len(known.BY_ID) == len(known.DEFECTS)  # each defect once
    assert {d.number for d in known.DEFECTS} == {2, 3, 15, 16, 22}
    defect = known.expected("leaky-logsoftmax", "float64", ["numpy", "tensorflow"])
    assert defect.id == "tensorflow-float64-alpha" and defect.finding == "docs/findings.md #2"
    assert defect.entry() == {"id": defect.id, "dtype": "float64", "backends": ["tensorflow"],
                              "finding": "docs/findings.md #2"}
    assert known.expected("leaky-logsoftmax", "float32") is None
    assert known.expected("leaky-logsoftmax", "float64", ["numpy", "torch"]) is None  # tensorflow not in the run
    assert known.expected("relu-softmax", "float64") is None


def test_a_catalog_known_id_that_is_not_documented_is_bad_input(recorded, monkeypatch, capsys):
    table = {n: dict(t) for n, t in scenarios.catalog().items()}
    table["kink-ties"]["known"] = ["kink-ties-everything"]
    monkeypatch.setattr(scenarios, "catalog", lambda: table)
    assert cli.main(["check", "--backends", "numpy,torch"]) == 2
    assert "kink-ties-everything" in capsys.readouterr().err and recorded == []
