"""The first-divergence sentence (harness.judge.message) is one sentence wherever it is shown.

One constructed verdict (no backend runs: the same on every CPU), against the exact oracle and
against the consensus, rendered through every place that shows a first divergence: the console,
check's KNOWN line, JUnit, the merged summary (Markdown and HTML), a run's HTML page, repro's
describe text, the mutation table's row and classify's finding. Each must hold exactly the
sentence built from the verdict, the sentence built from the JSON report must be the same one, and
it must say how many elements were outside the bound.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from types import SimpleNamespace

import pytest
from rich.console import Console

from harness.cli import commands, console
from harness.judge.compare import StepVerdict, TensorVerdict
from harness.judge.message import of_report, of_verdict, sentence, where
from harness.reports import bundle, junit, merge, pages
from harness.reports.report import to_json
from harness.run.findings import classify
from harness.run.plan import Run
from harness.run.runner import RunResult
from harness.search import mutants
from harness.spec.scenario import build_scenario

BACKENDS = ["numpy", "torch", "jax", "tensorflow"]

ORACLE = (
    "step 0, DZ of layer 1, element [1, 2]: tensorflow off by 2.3e+07x the rounding bound (1.1e-16 there), "
    "6 of 6 elements outside, worst 3.4e+05 ulps; values: numpy 0.1, torch 0.1, jax 0.1, "
    "tensorflow 0.10000000149011612, sympy 0.1")
CONSENSUS = (
    "step 4, Db of layer 2, element [1]: jax, tensorflow (no majority: cannot tell who is right) off by 5x the "
    "rounding bound (twice 2e-07 there), jax 2, tensorflow 1 of 2 elements outside; values: numpy 0.5, "
    "torch 0.5, jax 0.500002, tensorflow 0.5000015, consensus 0.50000075")


def _result(oracle: str | None) -> RunResult:
    """A failing run of LeakyReLU;Linear (batch 2, widths 4, 3, 2) with a planted first divergence."""
    sc = build_scenario(name="t", layers="LeakyReLU(0.1);Linear", sizes="4,3,2", optimizers="GradientDescent",
                        init_weights=None, loss="SquaredError", lr=0.01, batch_size=2, steps=5, mode="lockstep",
                        dtype="float64")
    quiet = {b: 0.25 for b in BACKENDS}
    none = {b: 0 for b in BACKENDS}
    if oracle:
        ulps = {"numpy": 0.5, "torch": 0.5, "jax": 0.5, "tensorflow": 3.4e5}
        failing = TensorVerdict(("DZ", 1), {**quiet, "tensorflow": 2.3e7}, dict(none), ["tensorflow"], index=(1, 2),
                                values={"numpy": 0.1, "torch": 0.1, "jax": 0.1, "tensorflow": 0.10000000149011612,
                                        "sympy": 0.1},
                                ulps=ulps, allowed=1.1e-16, outside={"tensorflow": 6}, elements=6)
        tensors = [TensorVerdict(("Y", None), dict(quiet), dict(none), ulps={b: 0.5 for b in BACKENDS}), failing]
        step = 0
    else:
        failing = TensorVerdict(("Db", 2), {**quiet, "jax": 5.0, "tensorflow": 3.75}, dict(none), ["jax", "tensorflow"],
                                majority=False, index=(1,),
                                values={"numpy": 0.5, "torch": 0.5, "jax": 0.500002, "tensorflow": 0.5000015,
                                        "consensus": 0.50000075},
                                allowed=4e-7, outside={"jax": 2, "tensorflow": 1}, elements=2)
        tensors = [TensorVerdict(("Y", None), dict(quiet), dict(none)), failing]
        step = 4
    return RunResult(sc, list(BACKENDS), [StepVerdict(step, tensors, [], 0, 0)], oracle=oracle,
                     oracle_note=f"{oracle or 'none'}: planted", seconds=0.5)


@pytest.fixture(params=[("sympy", ORACLE), (None, CONSENSUS)], ids=["oracle", "consensus"])
def case(request, tmp_path):
    oracle, expected = request.param
    result = _result(oracle)
    report = json.loads(json.dumps(to_json(result)))  # as a saved report is read back
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report))
    return result, report, expected, merge.merge(merge.load(path))


def test_the_sentence_from_a_verdict_and_from_its_report_is_the_same(case):
    result, report, expected, _ = case
    step, tv = result.first_divergence
    assert of_verdict(step, tv, result.oracle) == expected
    assert of_report(report) == expected
    assert report["first_divergence"]["outside"] == tv.outside and report["first_divergence"]["elements"] == tv.elements


def test_every_place_that_shows_a_first_divergence_shows_the_sentence(case):
    result, report, expected, merged = case
    assert " elements outside" in expected and (" 6 of 6 " in expected or " jax 2, tensorflow 1 of 2 " in expected)
    shown: dict[str, str] = {}

    rich = Console(record=True, width=1000, color_system=None)
    console.print_result(result, rich)
    shown["console"] = rich.export_text()
    if result.oracle:  # check's KNOWN line: tensorflow blamed alone in a float64 run of a catalog entry that expects it
        known = Console(record=True, width=1000, color_system=None)
        run = Run("leaky-logsoftmax", "float64", "lockstep", 0)
        checked = SimpleNamespace(backends=list(BACKENDS), bundle_dir=None)
        status, expected_defect, saved = commands._check_one(run, result, "leaky-logsoftmax float64 lockstep", checked,
                                                             known)
        assert (status, saved) == ("known", None) and expected_defect["backends"] == ["tensorflow"]
        shown["check's KNOWN line"] = known.export_text()

    suite = junit.suite(report)
    failures = [f for case in suite.iter("testcase") for f in case.iter("failure")]
    assert len(failures) == len(result.first_divergence[1].blamed)
    shown["JUnit message"] = failures[0].get("message")
    shown["JUnit text"] = failures[0].text
    shown["JUnit XML"] = ET.tostring(suite, encoding="unicode")

    shown["merged summary"] = merge.markdown(merged)
    shown["merged page"] = pages.merge_page(merged, lambda report: None)
    shown["run page"] = pages.run_page(report, None)
    shown["repro describe"] = bundle.describe_result(result)
    caught, blamed, first, detail = mutants.verdict(result)
    shown["mutants row"] = detail
    (bug,) = [f for f in classify(result) if f.cls == "bug"]
    shown["classify"] = bug.detail

    for place, text in shown.items():
        assert expected in text, f"{place} does not show the sentence:\n{text}"
    assert shown["mutants row"] == shown["classify"] == expected
    assert shown["JUnit message"] == f"first divergence: {expected}"
    assert shown["repro describe"] == f"FAIL: bug ({', '.join(sorted(blamed))}); first divergence: {expected}"
    assert caught and blamed == sorted(result.first_divergence[1].blamed)
    assert mutants._first_text(first) == expected.split(", element")[0]  # step and tensor: where(), as in the sentence


def test_the_short_form_and_old_reports():
    assert where(3, "DW of layer 2", (0, 1)) == "step 3, DW of layer 2, element [0, 1]"
    assert where(None, "numpy ReLU value") == "numpy ReLU value"
    verdict = {"passed": False, "findings": [{"class": "bug", "backends": ["torch"]}],
               "first_divergence": {"step": 1, "tensor": "Db", "layer": 2}}
    assert bundle.describe_verdict(verdict) == "FAIL: bug (torch); first divergence at step 1, Db of layer 2"
    old = {"oracle": None, "first_divergence": {  # written before the count existed: said without it
        "step": 0, "tensor": "Y", "layer": None, "index": [0, 0], "backends": ["jax"], "majority": True,
        "ratio": {"jax": "inf", "numpy": 0.0}, "values": {"jax": "nan", "numpy": 1.0, "consensus": 1.0},
        "allowed": 2e-16}}
    assert of_report(old) == ("step 0, Y, element [0, 0]: jax infinitely far outside the rounding bound (twice 1e-16 "
                              "there); values: jax nan, numpy 1.0, consensus 1.0")
    assert of_report({"first_divergence": None}) is None


def test_numbers_of_a_component_check_fit_the_same_sentence():
    """The component suite compares one implementation with exact values: the same sentence, with
    "got" for the implementation and "exact" for the reference."""
    text = sentence(step=None, label="numpy ELU derivative", index=(3,), blamed=["got"], ratios={"got": 12.5},
                    allowed=2.2e-16, twice=False, outside={"got": 2}, elements=8, values={"got": 0.25, "exact": 0.5},
                    ulps={"got": 4.0})
    assert text == ("numpy ELU derivative, element [3]: got off by 12.5x the rounding bound (2.2e-16 there), "
                    "2 of 8 elements outside, worst 4 ulps; values: got 0.25, exact 0.5")
