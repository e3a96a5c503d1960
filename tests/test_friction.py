"""A newcomer's friction, each fix pinned by a test that fails without it.

- ``list`` fits the terminal, and 80 columns when piped;
- a ``run`` that shows a documented defect prints ``check``'s ``KNOWN`` line (one builder,
  harness.judge.message.known);
- a failing run's JSON ``reproduce`` field and its HTML page name the repro bundle and the
  ``replay`` command beside the ``run`` and ``tox`` lines;
- ``mutants`` ends with the commands that rerun it, and each mutant not as expected alone;
- the plot's panel titles name the tensors the network has; plot, messages and the progress
  line all number steps from 0.

The runs here are constructed (a planted verdict, no backend): the same on every CPU.
"""

from __future__ import annotations

import dataclasses
import io
import json
from html import escape as html_escape
from types import SimpleNamespace

import numpy as np
import pytest
from rich.console import Console

import scenarios
from harness.cli import commands, console
from harness.judge.compare import StepVerdict, TensorVerdict
from harness.reports import pages, plots
from harness.reports.report import to_json
from harness.run import known
from harness.run.runner import RunResult
from harness.search import mutants
from harness.spec.scenario import build_scenario
from test_message import BACKENDS, ORACLE, _result


def _console(width: int, terminal: bool) -> Console:
    return Console(file=io.StringIO(), width=width, force_terminal=terminal, color_system=None)


@pytest.mark.parametrize("width, terminal, fits", [(200, False, 80), (120, True, 120), (100, True, 100)],
                         ids=["piped", "terminal-120", "terminal-100"])
def test_list_fits_the_terminal_and_80_columns_when_piped(width, terminal, fits):
    out = _console(width, terminal)  # piped: consoles() gives stdout 200 columns, so names are not cut
    assert commands.list_(out) == 0
    text = out.file.getvalue()
    assert max(len(line) for line in text.splitlines()) <= fits
    for name in scenarios.catalog():
        assert f" {name} " in text  # every name whole, on one line


def _with_inputs(result):
    """The planted run with inputs, so that its bundle can be written."""
    result.inputs = ({"W1": np.zeros((3, 4)), "b1": np.zeros(3), "W2": np.zeros((2, 3)), "b2": np.zeros(2)},
                     [(np.zeros((2, 4)), np.zeros((2, 2)))])
    return result


def _run(result, monkeypatch, tmp_path):
    monkeypatch.setattr(console, "run_one", lambda *a, **k: result)
    args = SimpleNamespace(quiet=True, keep_going=False, oracle="auto")
    checked = SimpleNamespace(runs=[result.scenario], backends=result.backends, json=tmp_path / "r.json",
                              junit=None, bundle_dir=tmp_path / "bundles")
    out = Console(file=io.StringIO(), width=1000, color_system=None)
    code = commands.run(args, checked, out, out)
    return code, out.file.getvalue(), json.loads((tmp_path / "r.json").read_text())


def test_a_run_that_shows_a_documented_defect_prints_the_known_line(monkeypatch, tmp_path):
    result = _with_inputs(_result("sympy"))  # tensorflow alone off in a float64 LeakyReLU(0.1) run: #2
    assert known.shown(result).id == "tensorflow-float64-alpha"
    code, text, _ = _run(result, monkeypatch, tmp_path)
    assert code == 1  # still a failing run: check, not run, expects it
    line = f"KNOWN {'t float64 lockstep':44s} docs/findings.md #2: {ORACLE}"
    assert line in text.splitlines()
    assert text.index("FAIL t") < text.index("KNOWN ") < text.index("Repro bundle")


def test_a_run_that_no_defect_explains_prints_no_known_line(monkeypatch, tmp_path):
    result = _with_inputs(_result(None))  # jax and tensorflow, no majority: no defect blames that
    assert known.shown(result) is None
    code, text, _ = _run(result, monkeypatch, tmp_path)
    assert code == 1 and "KNOWN" not in text
    exact = _result("sympy")
    exact.scenario = exact.scenario.with_(layers=tuple(
        dataclasses.replace(layer, args=(("alpha", 0.5),)) if layer.kind == "LeakyReLU" else layer
        for layer in exact.scenario.layers))
    assert known.shown(exact) is None  # alpha 0.5 is exact in float32: #2 cannot be the cause
    relu = _result("sympy")  # numpy alone off in a float32 ReLU run: #3 is a dtype defect, no excuse for values
    relu.scenario = relu.scenario.with_(dtype="float32", layers=tuple(
        dataclasses.replace(layer, kind="ReLU", args=()) if layer.kind == "LeakyReLU" else layer
        for layer in relu.scenario.layers))
    step = relu.steps[0]
    step.tensors[-1] = dataclasses.replace(step.tensors[-1], blamed=["numpy"])
    assert relu.first_divergence[1].blamed == ["numpy"] and known.shown(relu) is None


def test_the_json_report_and_its_page_name_the_bundle_and_the_replay(monkeypatch, tmp_path):
    code, text, report = _run(_with_inputs(_result("sympy")), monkeypatch, tmp_path)
    rep = report["reproduce"]
    (saved,) = (tmp_path / "bundles").glob("*.npz")
    assert rep["bundle"] == str(saved) and f"Repro bundle: {saved}" in text
    assert rep["replay"] == f"nerva-consistency replay {saved}"
    assert rep["tox_replay"] == f"tox -e consistency -- replay {saved}"
    assert rep["run"].startswith("nerva-consistency run ") and rep["tox"].startswith("tox -e consistency -- run ")
    html = pages.run_page(report, None)
    for command in (rep["run"], rep["replay"], rep["tox_replay"]):
        assert html_escape(command) in html
    passing = to_json(_result("sympy"))  # no bundle: run and tox only
    assert set(passing["reproduce"]) == {"run", "tox"} and "replay" not in pages.run_page(passing, None)


def _row(name: str, ok: bool) -> mutants.Row:
    return mutants.Row(name, "numpy", False, True, ["numpy"], True, None, True, "s", 0.1, "linear", {}, ok, 2.0)


def test_mutants_prints_how_to_rerun_the_table_and_each_wrong_mutant():
    rows = [_row("a-bug", True), _row("b-bug", False)]
    assert mutants.reproduction(rows, "linear-*") == [
        "Reproduce with:", "  nerva-consistency mutants --only 'linear-*'", "  tox -e consistency -- mutants --only 'linear-*'",
        "Each mutant not as expected, alone:", "  nerva-consistency mutants --only b-bug"]
    assert mutants.reproduction(rows[:1], None) == [
        "Reproduce with:", "  nerva-consistency mutants", "  tox -e consistency -- mutants"]


def _report(layers: str, sizes: str, tensors: list[str], steps: int = 3) -> dict:
    sc = build_scenario(name="p", layers=layers, sizes=sizes, optimizers=";".join(["GradientDescent"] * len(
        layers.split(";"))), init_weights=None, loss="SquaredError", lr=0.01, batch_size=2, steps=steps)
    verdicts = [StepVerdict(s, [TensorVerdict((t[:-1] if t[-1].isdigit() else t, int(t[-1]) if t[-1].isdigit()
                                               else None), {b: 0.5 for b in BACKENDS}, {b: 0 for b in BACKENDS})
                                for t in tensors], [], 0, 0) for s in range(steps)]
    return json.loads(json.dumps(to_json(RunResult(sc, list(BACKENDS), verdicts, oracle=None))))


def test_the_plot_titles_name_the_tensors_the_network_has():
    pytest.importorskip("matplotlib")
    report = _report("ReLU;Linear", "4,3,2", ["X", "Z1", "Y", "loss", "DY", "DZ1", "DW1", "Db1", "DX1", "W1", "b1"])
    titles = [ax.get_title(loc="left") for ax in plots.figure(report).axes]
    assert titles == ["forward: X, Z, Y, loss", "backward: DY, DZ, DW, Db, DX", "update: W, b"]
    srelu = _report("SReLU;Linear", "4,3,2", ["Z1", "DZ1", "Dsrelu1", "srelu1", "W1"])
    assert [ax.get_title(loc="left") for ax in plots.figure(srelu).axes] == \
        ["forward: Z", "backward: DZ, Dsrelu", "update: W, srelu"]


def test_plot_and_progress_line_number_steps_alike():
    pytest.importorskip("matplotlib")
    report = _report("ReLU;Linear", "4,3,2", ["Y"], steps=3)
    ax = plots.figure(report).axes[-1]
    assert sorted(round(x) for x in ax.get_lines()[0].get_xdata()) == [0, 1, 2]  # the first step is step 0
    assert "from 0" in ax.get_xlabel()
    err = Console(file=io.StringIO(), width=200, color_system=None)
    log = console.LogProgress(err, "run", 3)
    for step in range(3):
        log.step(step, SimpleNamespace(tensors=[]))
    lines = err.file.getvalue().splitlines()
    assert lines[0].startswith("run: step 0 done (1 of 3)") and lines[-1].startswith("run: step 2 done (3 of 3)")
