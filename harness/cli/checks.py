"""The whole-command input checks: everything a command line gives (names, spec strings,
numbers, data files, bundles, output paths, memory), checked after argparse and before any work
starts. The leaf rules they apply live in :mod:`harness.spec.rules`; what is refused, and why,
is listed in the README ("Validation: what bad input is")."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.core.errors import SpecError
from harness.spec import flags
from harness.spec.memory import memory
from harness.spec.rules import integer, items, output_dir, output_file, seed, steps
from harness.spec.scenario import Scenario


def backends(text: str | None, at_least: int = 2, flag: str = "--backends") -> list[str]:
    """The backends of a ``--backends`` flag (None: the four Nerva libraries installed; ``all``:
    every installed backend, plug-ins too); names are checked without importing anything."""
    import adapters

    if text is None:
        names = adapters.defaults()
    elif text.strip() == adapters.ALL:
        names = adapters.available()
    else:
        if not text.strip():
            raise SpecError(f"{flag} {text!r} names no backend: give e.g. {flag} numpy,torch "
                            "(or leave the flag out for the four Nerva libraries, or give all)")
        names = items(text, text.split(","), flag, ",", "numpy,torch")
        for name in names:
            reason = adapters.why_unavailable(name)
            if reason:
                raise SpecError(reason)
        if len(set(names)) != len(names):
            raise SpecError(f"backend listed twice in {flag} {text!r}")
    if len(names) < at_least:
        raise SpecError(f"need at least {'two backends to compare' if at_least == 2 else f'{at_least} backend(s)'}, "
                        f"have {', '.join(names) or 'none'}: install more "
                        "(pip install 'nerva-consistency[all]' -c constraints.txt)")
    return names


def ready(scenario: "Scenario", n_backends: int, oracle: str | None) -> str | None:
    """A scenario that can start: its data source read and checked (a dataset file, the rows for
    a batch), its oracle available, its buffers within memory. Returns the oracle chosen."""
    from harness.run import choice as oracles
    from harness.spec.data import batches, weights

    batches(scenario)
    weights(scenario)
    if scenario.build == "nerva":
        import adapters

        reason = adapters.why_unavailable(scenario.init_from)
        if reason:
            raise SpecError(f"--init-from {scenario.init_from}: {reason}")
    chosen, _ = oracles.choose(scenario, oracle)
    memory(scenario, n_backends, chosen)
    return chosen


def scenario_from_flags(args: Any) -> "Scenario":
    """The scenario of ``run``'s flags: a catalog entry with the flags given as overrides, or an
    ad-hoc model (``--layers`` and ``--sizes`` needed, the rest defaulted)."""
    import scenarios
    from harness.spec.data import with_build, with_epochs

    given = flags.given(args)
    if args.scenario is not None:
        scenario = with_build(scenarios.get(args.scenario, **given), given.get("build", "harness"))
    else:
        missing = [f"--{k}" for k in ("layers", "sizes") if k not in given]
        if missing:
            raise SpecError(f"give --scenario NAME, or an ad-hoc model with {' and '.join(missing)}")
        scenario = with_build(scenarios.from_table("ad-hoc", {**flags.AD_HOC_DEFAULTS, **given}), given.get("build"))
    return with_epochs(scenario, getattr(args, "epochs", None), "steps" in given)


class Checked:
    """What a command line asked for, checked: ``backends``, ``runs`` (the scenarios to run),
    ``bundle`` (replay: the loaded bundle), and the output paths (absolute, writable)."""

    def __init__(self, **kw: Any):
        self.backends: list[str] = []
        self.runs: list[Any] = []
        self.bundle: tuple | None = None
        self.json: Path | None = None
        self.bundle_dir: Path | None = None
        self.database: Path | None = None
        self.junit: Path | None = None
        self.out: Path | None = None
        self.__dict__.update(kw)


def command(args: Any) -> Checked:
    """Check everything a command line gives (after argparse has parsed it) before any work:
    names, spec strings, numbers, data files, bundles, output paths and memory. SpecError on the
    first problem."""
    out = Checked()
    cmd = args.command
    json_flag = getattr(args, "json", None)
    if cmd in ("run", "explore", "conventions", "mutants") and json_flag is not None:
        out.json = output_file(json_flag, "--json")
    elif cmd == "check" and json_flag is not None:
        out.json = output_dir(json_flag, "--json")
    if getattr(args, "bundle_dir", None) is not None:
        out.bundle_dir = output_dir(args.bundle_dir, "--bundle-dir")
    if getattr(args, "junit", None) is not None:
        out.junit = output_file(args.junit, "--junit")
    if cmd == "check" and getattr(args, "out", None) is not None:
        out.out = output_dir(args.out, "--out")
    if getattr(args, "shard", None):
        from harness.run.plan import parse_shard

        parse_shard(args.shard)
    for flag, check in (("seed", seed), ("steps", steps), ("batch_size", integer), ("examples", integer)):
        if getattr(args, flag, None) is not None:
            check(getattr(args, flag), "--" + flag.replace("_", "-"))
    if cmd == "run":
        out.backends = backends(args.backends)
        scenario = scenario_from_flags(args)
        ready(scenario, len(out.backends), args.oracle)
        from harness.run.component_files import check_implemented

        check_implemented(scenario, out.backends)
        out.runs = [scenario]
    elif cmd == "check":
        from harness.run import known, plan

        out.backends = backends(args.backends)
        for extra in args.add_seed:
            seed(extra, "--add-seed")
        _, runs = plan.shard_plan(args.variants, args.seed, args.add_seed, args.shard)
        for run in runs:  # exactly the runs check will run
            scenario = plan.scenario(run)
            known.expected(run.scenario, run.dtype)  # the catalog's known ids are documented defects
            ready(scenario, len(out.backends), args.oracle)
            out.runs.append(scenario)
    elif cmd == "explore":
        out.backends = backends(args.backends)
        if args.database is not None:
            out.database = output_dir(args.database, "--database")
    elif cmd == "replay":
        out.backends = backends(args.backends) if args.backends is not None else []
        from harness.reports.bundle import bundle

        out.bundle = bundle(args.bundle)
        if not out.backends:
            import adapters

            for name in out.bundle[0]["backends"]:
                reason = adapters.why_unavailable(name)
                if reason:
                    raise SpecError(f"bundle {args.bundle!r} was recorded on {name}, which cannot run here ({reason}); "
                                    "replay it on others with --backends")
    elif cmd == "conventions":
        out.backends = backends(args.backends, at_least=1)
    return out
