"""Command line: ``nerva-consistency`` (identical to ``python -m harness``).

    nerva-consistency list                       the scenario catalog
    nerva-consistency check                      the main job: every catalog scenario marked check
    nerva-consistency run --scenario NAME        one scenario (flags below override its keys)
    nerva-consistency run --layers "ReLU;Softmax" --sizes 8,16,4 …   an ad-hoc run
    nerva-consistency explore --examples 200 --seed 0   Hypothesis searches random networks
    nerva-consistency replay FILE                 rerun a repro bundle: its numbers bit for bit on the
                                                 same platform, else its verdict
    nerva-consistency mutants                     run the mutation corpus (harness/search/mutants.py)
    nerva-consistency check --shard 2/4 --junit FILE   one shard of the main job, JUnit XML too
    nerva-consistency report FILE.json [--out DIR]     PNG and HTML of a saved report
    nerva-consistency report --merge DIR [--out DIR]   merge every shard's and cell's reports

Exit codes: 0 all backends agree, 1 an inconsistency (or a backend raised, or held NaN/Inf),
2 bad input (one line on stderr, no traceback; every input is checked by :mod:`harness.spec.rules`
before any work starts), 3 a bug in the harness itself (one line; ``--debug`` shows the
traceback), 130 / 143 / 129 interrupted by Ctrl-C / SIGTERM / SIGHUP (128 + the signal's number,
the shell's convention, so a CI system reads a cancellation as it did before; what was judged
so far is printed and its reports written; a second signal ends the process at once:
:mod:`harness.cli.signals`). An output file that cannot be written (disk full, read-only) is
exit 2 as well, after the verdict, with the path and the OS error; the previous file is left
intact (:mod:`harness.reports.write`). On exit 1 the command that reproduces the run is
printed. ``replay``: 0 the recording reproduced (numbers or verdict), 1 it did not.
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path
from typing import Sequence

from harness.cli import checks, commands, console, signals
from harness.cli.parser import PROG, parser
from harness.core.errors import SpecError

REPORT = "the nerva-consistency issue tracker"  # where a harness bug is reported
EXIT_BUG = 3


def _internal_error(e: BaseException, debug: bool) -> int:
    """An exception below the validation layer is a harness bug: one line that says so and where
    it was raised (``--debug``: the traceback first). Exit 3."""
    if debug:
        traceback.print_exception(type(e), e, e.__traceback__, file=sys.stderr)
    frames = traceback.extract_tb(e.__traceback__)
    where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
    text = " ".join(str(e).split())[:300]
    print(f"{PROG}: internal error: {type(e).__name__}{': ' + text if text else ''}{where}. This is a bug in "
          f"nerva-consistency, not in your input: please report it to {REPORT} with the command line"
          + ("" if debug else " and what --debug prints"), file=sys.stderr)
    return EXIT_BUG


def main(argv: Sequence[str] | None = None) -> int:
    """The command line. Every input is checked first (:func:`harness.cli.checks.command`); bad
    input is one line and exit 2, before any work starts. SIGTERM and SIGHUP interrupt like
    Ctrl-C while it runs (:mod:`harness.cli.signals`)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        with signals.handled():
            return _dispatch(argv)
    except SpecError as e:
        print(f"{PROG}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted" + (f" ({signals.received()})" if signals.received() else ""), file=sys.stderr)
        return signals.exit_code()
    except BrokenPipeError:  # the reader went away (… | head): nothing more to say
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except Exception as e:  # below the validation layer: a harness bug
        return _internal_error(e, debug)


def _dispatch(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    out, err = console.consoles()
    if args.command == "list":
        return commands.list_(out)
    if hasattr(args, "components"):  # before the checks: the names they declare become valid
        from harness.run.component_files import load

        load(args.components)
    checked = checks.command(args)
    if args.command == "conventions":
        return commands.conventions(args, checked, out)
    if args.command == "replay":
        return commands.replay(args, checked, out)
    if args.command == "report":
        from harness.reports.render import report_command

        return report_command(args, out)
    if args.command == "mutants":
        from harness.search.mutants import main as mutants

        return mutants(args, out, err)
    if args.command == "explore":
        return commands.explore(args, checked, out, err)
    if args.command == "run":
        return commands.run(args, checked, out, err)
    return commands.check(args, checked, out, err, argv)
