"""The parser of the command line: every command and flag, with its help."""

from __future__ import annotations

import argparse

from harness.core.errors import SpecError

PROG = "nerva-consistency"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse prints usage too)
        raise SpecError(f"{message} (see {self.prog} --help)")


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description="Prove that the Nerva backends agree, tensor by tensor.")
    p.add_argument("--debug", action="store_true", help="show the traceback of an internal error")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    sub.add_parser("list", help="show the scenario catalog")

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--backends", help="comma-separated (default: every installed backend): numpy,torch,jax,tensorflow")
        q.add_argument("--json", metavar="FILE", help="write the JSON report here (check: a directory)")
        q.add_argument("--keep-going", action="store_true", help="run every step even after a mismatch")
        q.add_argument("--bundle-dir", default="nerva-consistency-failures",
                       help="where a failure's repro bundle is written (default: %(default)s)")
        q.add_argument("--quiet", action="store_true", help="no progress bar")
        q.add_argument("--oracle", choices=("auto", "sympy", "autodiff", "none"), default="auto",
                       help="reference in lockstep mode: exact sympy, float64 autodiff, or none (backends "
                            "compared with each other); auto: sympy when small enough, else autodiff")

    run = sub.add_parser("run", help="run one scenario (named or ad hoc)")
    run.add_argument("--scenario", help="a catalog name (nerva-consistency list)")
    run.add_argument("--layers", help='Nerva layer specs, e.g. "ReLU;BatchNormalization;Softmax"')
    run.add_argument("--sizes", help="input width, then each linear layer's width, e.g. 784,1024,10")
    run.add_argument("--optimizers", help='one per layer, e.g. "Momentum(0.9);GradientDescent"')
    run.add_argument("--init-weights", help="one per linear layer, e.g. XavierNormal,HeNormal")
    run.add_argument("--loss", help="SquaredError, CrossEntropy, SoftmaxCrossEntropy, LogisticCrossEntropy, "
                                    "NegativeLogLikelihood or AbsoluteError")
    run.add_argument("--learning-rate", help="a number or Constant(number)")
    run.add_argument("--batch-size", type=int)
    run.add_argument("--dataset", help="synthetic (default), digits, digits784 or a Nerva .npz file")
    run.add_argument("--targets", choices=("onehot", "soft", "real"), help="synthetic targets (default onehot)")
    run.add_argument("--steps", type=int)
    run.add_argument("--seed", type=int)
    run.add_argument("--dtype", choices=("float32", "float64"))
    run.add_argument("--mode", choices=("trajectory", "lockstep"))
    common(run)
    run.add_argument("--junit", metavar="FILE", help="write JUnit XML here (a test case per backend)")

    check = sub.add_parser("check", help="the main job: every catalog scenario marked check = true")
    check.add_argument("--seed", type=int, help="override every scenario's seed")
    common(check)
    check.add_argument("--add-seed", type=int, action="append", default=[], metavar="SEED",
                       help="also run every scenario with this seed (repeatable; the nightly adds that night's)")
    check.add_argument("--variants", choices=("catalog", "all"), default="catalog",
                       help="the dtype/mode pairs: each scenario's catalog variants (default), or all four")
    check.add_argument("--shard", metavar="K/N", help="run only the K-th of N disjoint parts of the plan "
                                                     "(deterministic; the N parts together are the whole plan)")
    check.add_argument("--junit", metavar="FILE", help="write JUnit XML here (a test case per scenario, "
                                                      "variant, seed and backend)")
    check.add_argument("--out", metavar="DIR", help="write every report here, replacing an earlier check's: json/ "
                                                   "(one per run and the cell manifest), junit.xml, index.html and "
                                                   "plots/, summary.md")

    exp = sub.add_parser("explore", help="search random networks and adversarial inputs for defects (Hypothesis)")
    exp.add_argument("--examples", type=int, default=200, help="examples to run, shrinking not counted (default %(default)s)")
    exp.add_argument("--seed", type=int, default=0, help="the search's seed: the same seed, examples and backends "
                                                        "give the same search (default %(default)s)")
    exp.add_argument("--database", metavar="DIR", help="a Hypothesis example database: failures stored there are "
                                                      "tried first, new ones saved (default: none, so a seed alone "
                                                      "decides the search)")
    exp.add_argument("--json", metavar="FILE", help="write the defects and statistics as JSON")
    exp.add_argument("--backends", help="comma-separated (default: every installed backend)")
    exp.add_argument("--oracle", choices=("auto", "sympy", "autodiff", "none"), default="auto",
                     help="reference for the lockstep examples (default auto)")
    exp.add_argument("--bundle-dir", default="nerva-consistency-failures",
                     help="where each distinct defect's repro bundle is written (default: %(default)s)")
    exp.add_argument("--quiet", action="store_true", help="no progress bar")
    exp.add_argument("--shard", metavar="K/N", help="run the K-th of N parts of the search: a 1/N share of "
                                                   "the examples with a seed of its own")

    rep = sub.add_parser("replay", help="rerun a repro bundle (no RNG) and compare with the recording: the numbers "
                                        "bit for bit on the same platform and versions, else the verdict "
                                        "(exit 0 reproduced, 1 not)")
    rep.add_argument("bundle", help="a .npz bundle written by a failing run or explore")
    rep.add_argument("--backends", help="rerun on other backends than recorded (nothing is then compared)")
    rep.add_argument("--quiet", action="store_true")

    rpt = sub.add_parser("report", help="render saved JSON reports: PNG plots and a self-contained HTML page; "
                                        "--merge: combine every shard's and cell's reports into one summary")
    rpt.add_argument("paths", nargs="+", metavar="FILE_OR_DIR",
                     help="a run's JSON report, or with --merge directories (searched recursively) and files")
    rpt.add_argument("--merge", action="store_true", help="merge: totals, cells, failing scenarios and backends, "
                                                         "findings deduplicated (exit 1 when anything is red)")
    rpt.add_argument("--out", metavar="DIR", help="where to write (default: beside the report; with --merge "
                                                 "the first directory given)")
    rpt.add_argument("--markdown", metavar="FILE", help="also append the summary as Markdown here "
                                                       "(e.g. \"$GITHUB_STEP_SUMMARY\")")
    rpt.add_argument("--no-plots", action="store_true", help="HTML without plots (no matplotlib needed)")

    conv = sub.add_parser("conventions", help="each backend's derivative exactly at each kink, beside the one-sided limits")
    conv.add_argument("--backends", help="comma-separated (default: every installed backend)")
    conv.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    conv.add_argument("--json", metavar="FILE", help="write the table as JSON")

    from harness.search.mutants import add_parser as add_mutants_parser

    add_mutants_parser(sub)
    for q in sub.choices.values():  # --debug after the subcommand too (SUPPRESS: keep one given before it)
        q.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show the traceback of an internal error")
    return p
