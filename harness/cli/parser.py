"""The parser of the command line: every command and flag, with its help.

The scenario flags of ``run`` come from :data:`harness.spec.flags.FLAGS`; the flags several
commands share are written once in :data:`SHARED`, each command choosing its own help for them.
"""

from __future__ import annotations

import argparse
from typing import Any

from harness.core.components import DTYPES, ORACLE_CHOICES
from harness.core.errors import SpecError
from harness.spec.flags import FLAGS

PROG = "nerva-consistency"
DEBUG_HELP = "show the traceback of an internal error"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse prints usage too)
        raise SpecError(f"{message} (see {self.prog} --help)")


SHARED: dict[str, dict[str, Any]] = {
    "backends": {"help": "comma-separated (default: the Nerva libraries numpy,torch,jax,tensorflow; "
                         "all: every installed backend, plug-ins too)"},
    "json": {"metavar": "FILE", "help": "write the JSON report here (check: a directory)"},
    "keep-going": {"action": "store_true", "help": "run every step even after a mismatch"},
    "bundle-dir": {"default": "nerva-consistency-failures",
                   "help": "where a failure's repro bundle is written (default: %(default)s)"},
    "quiet": {"action": "store_true", "help": "no progress bar"},
    "oracle": {"choices": ORACLE_CHOICES, "default": "auto",
               "help": "reference in lockstep mode: exact sympy, float64 autodiff, or none (backends "
                       "compared with each other); auto: sympy when small enough, else autodiff"},
    "shard": {"metavar": "K/N", "help": "run only the K-th of N disjoint parts of the plan (deterministic; the N "
                                          "parts together are the whole plan)"},
    "junit": {"metavar": "FILE"},
    "components": {"metavar": "FILE", "action": "append", "default": [],
                   "help": "a Python file of your own activations, losses and initializers (repeatable; "
                           "docs/plugins.md, \"Your own components\")"},
    "out": {"metavar": "DIR"},
}
"""The flags several commands take: the same flag, default and choices, the help a command may replace."""

COMMON = ("backends", "json", "keep-going", "bundle-dir", "quiet", "oracle", "components")
"""The shared flags of the commands that run scenarios (run, check)."""


def shared(q: argparse.ArgumentParser, name: str, **changes: Any) -> None:
    """Add the shared flag ``--name`` to ``q``, with ``changes`` (a command's own help) applied."""
    q.add_argument(f"--{name}", **{**SHARED[name], **changes})


def _run(sub: Any) -> None:
    run = sub.add_parser("run", help="run one scenario (named or ad hoc)")
    run.add_argument("--scenario", help="a catalog name (nerva-consistency list)")
    for flag in FLAGS:
        options = {key: value for key, value in (("type", flag.type), ("choices", flag.choices), ("help", flag.help))
                   if value is not None}
        run.add_argument(*flag.spellings, dest=flag.attr, **options)
    run.add_argument("--epochs", type=int, help="passes over the training set (steps = epochs x batches; "
                                                "--steps, when given, still caps the run)")
    for name in COMMON:
        shared(run, name)
    shared(run, "junit", help="write JUnit XML here (a test case per backend)")


def _check(sub: Any) -> None:
    check = sub.add_parser("check", help="the main job: every catalog scenario marked check = true")
    check.add_argument("--seed", type=int, help="override every scenario's seed")
    for name in COMMON:
        shared(check, name)
    check.add_argument("--add-seed", type=int, action="append", default=[], metavar="SEED",
                       help="also run every scenario with this seed (repeatable; the nightly adds that night's)")
    check.add_argument("--variants", choices=("catalog", "all"), default="catalog",
                       help="the dtype/mode pairs: each scenario's catalog variants (default), or all four")
    shared(check, "shard")
    shared(check, "junit", help="write JUnit XML here (a test case per scenario, variant, seed and backend)")
    shared(check, "out", help="write every report here, replacing an earlier check's: json/ (one per run and the "
                              "cell manifest), junit.xml, index.html and plots/, summary.md")


def _explore(sub: Any) -> None:
    exp = sub.add_parser("explore", help="search random networks and adversarial inputs for defects (Hypothesis)")
    exp.add_argument("--examples", type=int, default=200, help="examples to run, shrinking not counted (default %(default)s)")
    exp.add_argument("--seed", type=int, default=0, help="the search's seed: the same seed, examples and backends "
                                                        "give the same search (default %(default)s)")
    exp.add_argument("--database", metavar="DIR", help="a Hypothesis example database: failures stored there are "
                                                      "tried first, new ones saved (default: none, so a seed alone "
                                                      "decides the search)")
    shared(exp, "json", help="write the defects and statistics as JSON")
    shared(exp, "backends", help="comma-separated (default: the four Nerva libraries; all: plug-ins too)")
    shared(exp, "oracle", help="reference for the lockstep examples (default auto)")
    shared(exp, "bundle-dir", help="where each distinct defect's repro bundle is written (default: %(default)s)")
    shared(exp, "quiet")
    shared(exp, "components")
    shared(exp, "shard", help="run the K-th of N parts of the search: a 1/N share of the examples with a seed of its own")


def _replay(sub: Any) -> None:
    rep = sub.add_parser("replay", help="rerun a repro bundle (no RNG) and compare with the recording: the numbers "
                                        "bit for bit on the same platform and versions, else the verdict "
                                        "(exit 0 reproduced, 1 not)")
    rep.add_argument("bundle", help="a .npz bundle written by a failing run or explore")
    shared(rep, "components", help="the components file(s) the recorded run used (its reproduce lines name them)")
    shared(rep, "backends", help="rerun on other backends than recorded (nothing is then compared)")
    shared(rep, "quiet", help=None)


def _report(sub: Any) -> None:
    rpt = sub.add_parser("report", help="render saved JSON reports: PNG plots and a self-contained HTML page; "
                                        "--merge: combine every shard's and cell's reports into one summary")
    rpt.add_argument("paths", nargs="+", metavar="FILE_OR_DIR",
                     help="a run's JSON report, or with --merge directories (searched recursively) and files")
    rpt.add_argument("--merge", action="store_true", help="merge: totals, cells, failing scenarios and backends, "
                                                         "findings deduplicated (exit 1 when anything is red)")
    shared(rpt, "out", help="where to write (default: beside the report; with --merge the first directory given)")
    rpt.add_argument("--markdown", metavar="FILE", help="also append the summary as Markdown here "
                                                       "(e.g. \"$GITHUB_STEP_SUMMARY\")")
    rpt.add_argument("--no-plots", action="store_true", help="HTML without plots (no matplotlib needed)")


def _conventions(sub: Any) -> None:
    conv = sub.add_parser("conventions", help="each backend's derivative exactly at each kink, beside the one-sided limits")
    shared(conv, "backends", help="comma-separated (default: the four Nerva libraries; all: plug-ins too)")
    conv.add_argument("--dtype", choices=DTYPES, default="float32")
    shared(conv, "json", help="write the table as JSON")
    shared(conv, "components")


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description="Prove that the Nerva backends agree, tensor by tensor.")
    p.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    sub.add_parser("list", help="show the scenario catalog")
    for add in (_run, _check, _explore, _replay, _report, _conventions):
        add(sub)
    from harness.search.mutants import add_parser as add_mutants_parser

    add_mutants_parser(sub)
    for q in sub.choices.values():  # --debug after the subcommand too (SUPPRESS: keep one given before it)
        q.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    return p
