"""Your own components: a components file (``--components FILE``) or entry point, judged like Nerva's own.

The worked example (examples/components/my_components.py: the Nerva libraries' own custom ELU,
LeCun initializer and AbsoluteError) runs in ``run`` (lockstep against the exact oracle),
``explore`` and the component suite; a copy whose gradient is wrong in ONE library is caught and
blamed on that library alone; a definition that disagrees with the libraries' code is a finding
that names the point; a bad file is exit 2 with one line; an entry point registers like a file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import adapters
from harness.cli.main import main
from harness.core import components as catalogue
from harness.run import component_files

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "components" / "my_components.py"
TWO = "numpy,torch"  # two libraries keep these runs short; the suite's other tests cover all four
MODEL = ["--layers", "MyELU(alpha=0.5);HyperbolicTangent;Linear", "--sizes", "3,5,4,2",
         "--init-weights", "MyLeCun,MyLeCun,HeNormal", "--loss", "MyAbsoluteError", "--batch-size", "4",
         "--steps", "2", "--quiet"]


@pytest.fixture(autouse=True)
def fresh_registry():
    """Every test starts and ends with the built-in components only."""
    component_files.load([], entry_point_group="none")
    yield
    component_files.load([], entry_point_group="none")


@pytest.fixture(scope="module", autouse=True)
def libraries():
    for name in TWO.split(","):
        if adapters.why_unavailable(name):
            pytest.skip(adapters.why_unavailable(name))


def wrong_gradient(tmp_path: Path, library: str) -> Path:
    """The worked example with ONE library's ELU gradient scaled by 1.01, written as a user would."""
    path = tmp_path / f"wrong_{library}.py"
    path.write_text(textwrap.dedent(f'''
        import dataclasses
        import runpy

        ns = runpy.run_path({str(EXAMPLE)!r})
        elu = ns["COMPONENTS"][0]


        def wrong(alpha=1.0):
            class Wrong(ns["make_elu"]({library!r})):
                def gradient(self, X):
                    return super().gradient(X) * 1.01

            return Wrong(alpha)


        COMPONENTS = [dataclasses.replace(elu, implementations={{**elu.implementations, {library!r}: wrong}}),
                      *ns["COMPONENTS"][1:]]
    '''))
    return path


def disagreeing_definition(tmp_path: Path) -> Path:
    """The worked example whose DEFINITION says 2 x - 1 above x = 1 (every library computes x)."""
    path = tmp_path / "disagreeing.py"
    path.write_text(textwrap.dedent(f'''
        import dataclasses
        import runpy

        import sympy as sp

        ns = runpy.run_path({str(EXAMPLE)!r})


        def elu(x, alpha):
            return sp.Piecewise((alpha * (sp.exp(x) - 1), x < 0), (x, x < 1), (2 * x - 1, True))


        COMPONENTS = [dataclasses.replace(ns["COMPONENTS"][0], definition=elu, kinks=(0.0, 1.0)),
                      *ns["COMPONENTS"][1:]]
    '''))
    return path


def run_json(tmp_path: Path, *argv: str) -> tuple[int, dict]:
    out = tmp_path / "report.json"
    code = main([*argv, "--json", str(out), "--bundle-dir", str(tmp_path / "bundles")])
    return code, json.loads(out.read_text())


# ------------------------------------------------------------------------------------- run

def test_the_worked_example_passes_lockstep_against_the_exact_oracle(tmp_path):
    code, report = run_json(tmp_path, "run", "--components", str(EXAMPLE), *MODEL, "--mode", "lockstep",
                            "--oracle", "sympy", "--backends", TWO)
    assert code == 0 and report["passed"] and report["oracle"] == "sympy"
    judged = set(report["summary"])
    assert {"DZ1", "DW1", "DY", "loss"} <= judged  # the custom activation's and loss's tensors were judged
    assert all(cell["worst"] <= 1 for row in report["summary"].values() for cell in row.values())


def test_a_wrong_gradient_in_one_librarys_copy_is_blamed_on_that_library_alone(tmp_path):
    path = wrong_gradient(tmp_path, "torch")
    code, report = run_json(tmp_path, "run", "--components", str(path), *MODEL, "--mode", "lockstep",
                            "--oracle", "sympy", "--backends", TWO)
    assert code == 1 and not report["passed"]
    first = report["first_divergence"]
    assert (first["step"], first["tensor"], first["layer"], first["backends"]) == (0, "DZ", 1, ["torch"])
    assert first["ratio"]["torch"] > 100 and first["ratio"]["numpy"] <= 1
    assert f"--components {path}" in report["reproduce"]["run"]  # the reproduce line loads the same file
    (bundle,) = (tmp_path / "bundles").glob("*.npz")  # and its bundle replays with the same file
    assert main(["replay", str(bundle), "--components", str(path)]) == 0


def test_a_definition_that_disagrees_with_the_libraries_is_a_finding_with_that_point(tmp_path):
    """Every library computes x above 1, the definition 2 x - 1: against the exact oracle both
    libraries are blamed at the first element whose Z is above 1 (He-scaled weights put some
    there), and the finding's values give that point."""
    path = disagreeing_definition(tmp_path)
    model = [*MODEL, "--layers", "MyELU(alpha=0.5);Linear", "--sizes", "3,6,2", "--init-weights", "HeNormal,HeNormal"]
    code, report = run_json(tmp_path, "run", "--components", str(path), *model, "--mode", "lockstep",
                            "--oracle", "sympy", "--backends", TWO, "--dtype", "float64")
    assert code == 1
    first = report["first_divergence"]
    assert (first["step"], first["tensor"], first["layer"]) == (0, "X", 2), first  # the activation's output
    assert sorted(first["backends"]) == ["numpy", "torch"]
    # there the libraries hold f(z) = z, the point itself (above 1), and the oracle 2 z - 1
    z = first["values"]["numpy"]
    assert z == first["values"]["torch"] and z > 1
    assert first["values"]["sympy"] == pytest.approx(2 * z - 1, rel=1e-15)


# --------------------------------------------------------------------------------- explore

def test_explore_draws_the_users_components_and_passes_on_the_worked_example(tmp_path):
    out = tmp_path / "explore.json"
    code = main(["explore", "--components", str(EXAMPLE), "--examples", "6", "--seed", "3", "--backends", TWO,
                 "--quiet", "--json", str(out), "--bundle-dir", str(tmp_path / "b")])
    report = json.loads(out.read_text())
    assert code == 0 and report["examples"] == 6 and report["defects"] == []
    drawn = report["custom_components"]
    assert sum(drawn.get(n, 0) for n in ("MyELU", "MyAbsoluteError", "MyLeCun")) >= 3, drawn


# ------------------------------------------------------------------------- component suite

def component_suite(tmp_path: Path, components: Path, select: str) -> dict[str, str]:
    """Run tests/test_components.py on a components file: test id -> passed / failed."""
    xml = tmp_path / "suite.xml"
    env = {**os.environ, "NERVA_CONSISTENCY_COMPONENTS": str(components), "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(ROOT / "tests" /
                    "test_components.py"), "-k", select, f"--junitxml={xml}"], env=env, cwd=ROOT,
                   capture_output=True, timeout=600)
    cases = {}
    for case in ET.parse(xml).getroot().iter("testcase"):
        failed = case.find("failure") is not None or case.find("error") is not None
        cases[case.get("name")] = ("failed: " + case.find("failure").get("message", "")) if failed else "passed"
    return cases


def test_the_component_suite_runs_the_worked_example_and_blames_a_wrong_gradient(tmp_path):
    cases = component_suite(tmp_path, EXAMPLE, "(MyELU or MyAbsoluteError) and numpy and float64")
    assert len(cases) >= 6 and set(cases.values()) == {"passed"}, cases
    cases = component_suite(tmp_path, wrong_gradient(tmp_path, "torch"), "test_activation_value_and_derivative and MyELU")
    cases = {name: outcome for name, outcome in cases.items() if "-derivative-" in name}
    failed = {name for name, outcome in cases.items() if outcome != "passed"}
    assert failed == {"test_activation_value_and_derivative[torch-MyELU-derivative-float32]",
                      "test_activation_value_and_derivative[torch-MyELU-derivative-float64]"}, cases
    assert len(cases) == 8  # the other three libraries' derivatives pass, in both dtypes


def test_the_component_suite_names_the_point_where_definition_and_code_disagree(tmp_path):
    cases = component_suite(tmp_path, disagreeing_definition(tmp_path), "MyELU and numpy and float64")
    (outcome,) = [outcome for name, outcome in cases.items() if "-value-" in name]
    assert outcome.startswith("failed: ") and "at point" in outcome, outcome
    point = float(outcome.split("at point")[1].strip(" ;").removeprefix("np.float64(").split(")")[0])
    assert point > 1  # where the definition (2 x - 1) leaves the libraries' x


# ----------------------------------------------------------------------------- bad files

BAD = {
    "raises on import": ("raise RuntimeError('boom')", "importing it raised RuntimeError: boom"),
    "no COMPONENTS": ("X = 1", "no COMPONENTS list"),
    "not a declaration": ("COMPONENTS = ['ELU']", "may hold only CustomActivation"),
    "a taken name": ("from harness.api import CustomActivation\n"
                     "COMPONENTS = [CustomActivation('ReLU', lambda x: x, {'numpy': object})]", "'ReLU' is already taken"),
    "a stray symbol": ("import sympy as sp\nfrom harness.api import CustomLoss\n"
                       "COMPONENTS = [CustomLoss('L1', lambda y, t: sp.Symbol('beta') * (y - t), {'numpy': object})]",
                       "not of beta"),
    "an unknown backend": ("from harness.api import CustomActivation\n"
                           "COMPONENTS = [CustomActivation('Id', lambda x: x, {'mxnet': object})]", "not mxnet"),
    "an undeclared kink": ("import sympy as sp\nfrom harness.api import CustomActivation\n"
                           "COMPONENTS = [CustomActivation('Step', lambda x: sp.Piecewise((0, x < 1), (x - 1, True)), "
                           "{'numpy': object})]", "switches branch at x = 1; add 1 to its kinks"),
    "an unknown distribution": ("from harness.api import CustomInitializer\n"
                                "COMPONENTS = [CustomInitializer('Cauchy', 'cauchy', lambda D, K: 1.0)]",
                                "distribution must be one of"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_components_file_is_one_line_and_exit_2(case, tmp_path, capsys):
    text, says = BAD[case]
    path = tmp_path / "bad.py"
    path.write_text(text + "\n")
    code = main(["run", "--components", str(path), "--layers", "ReLU;Linear", "--sizes", "2,3,2", "--backends", TWO])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("nerva-consistency: error: ") and str(path) in err and says in err, err


def test_a_backend_without_an_implementation_is_refused_before_the_run(tmp_path, capsys):
    path = tmp_path / "numpy_only.py"
    path.write_text(textwrap.dedent(f'''
        import dataclasses
        import runpy

        ns = runpy.run_path({str(EXAMPLE)!r})
        elu = ns["COMPONENTS"][0]
        COMPONENTS = [dataclasses.replace(elu, implementations={{"numpy": elu.implementations["numpy"]}})]
    '''))
    code = main(["run", "--components", str(path), "--layers", "MyELU;Linear", "--sizes", "2,3,2", "--backends", TWO])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert "MyELU has no implementation for torch" in err and "--backends numpy" in err, err


@pytest.mark.parametrize("command", ["check", "explore", "conventions"])
def test_every_command_that_takes_components_checks_the_file(command, tmp_path, capsys):
    code = main([command, "--components", str(tmp_path / "missing.py")])
    err = capsys.readouterr().err
    assert code == 2 and "not a Python file" in err and err.count("\n") == 1, err


def test_the_names_of_one_command_do_not_outlive_it(capsys):
    assert main(["run", "--components", str(EXAMPLE), *MODEL, "--backends", TWO, "--steps", "1"]) == 0
    assert "MyELU" in catalogue.LAYERS
    code = main(["run", *MODEL, "--backends", TWO])
    assert code == 2 and "unknown layer 'MyELU'" in capsys.readouterr().err
    assert "MyELU" not in catalogue.LAYERS and "ELU" in catalogue.LAYERS  # the built-in stays


# ---------------------------------------------------------------------------- entry points

def test_an_entry_point_registers_a_components_module(tmp_path, monkeypatch):
    """A distribution (here a .dist-info directory on sys.path) declaring the example's module
    under nerva_consistency.components: its names are valid in every command, no flag needed."""
    (tmp_path / "my_nerva_components.py").write_text(EXAMPLE.read_text())
    info = tmp_path / "my_nerva_components-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-nerva-components\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[nerva_consistency.components]\nmine = my_nerva_components\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    code, report = run_json(tmp_path, "run", *MODEL, "--mode", "lockstep", "--oracle", "sympy", "--backends", TWO)
    assert code == 0 and report["passed"]
    assert catalogue.SOURCES["MyELU"] == "entry point mine"
    assert "--components" not in report["reproduce"]["run"]  # installed: the same command finds it again


def test_a_kink_at_a_parameter_of_the_users_own(tmp_path):
    """A shifted ReLU, max(0, x - theta), kinked at its own parameter theta, for two libraries:
    judged against the exact oracle like Nerva's SReLU (the comparator reads the kink off the
    layer's parameter)."""
    path = tmp_path / "shifted.py"
    path.write_text(textwrap.dedent('''
        import sympy as sp
        from harness.api import CustomActivation


        def numpy_shifted(theta):
            import numpy as np
            from nerva_numpy.activation_functions import ActivationFunction

            class Shifted(ActivationFunction):
                def __call__(self, X):
                    return np.where(X < theta, 0.0 * X, X - theta)

                def gradient(self, X):
                    return np.where(X < theta, 0.0 * X, 1.0 + 0.0 * X)

            return Shifted()


        def torch_shifted(theta):
            import torch
            from nerva_torch.activation_functions import ActivationFunction

            class Shifted(ActivationFunction):
                def __call__(self, X):
                    return torch.relu(X - theta)

                def gradient(self, X):
                    return (X >= theta).to(X.dtype)

            return Shifted()


        COMPONENTS = [CustomActivation("ShiftedReLU", lambda x, theta: sp.Piecewise((0, x < theta), (x - theta, True)),
                                       {"numpy": numpy_shifted, "torch": torch_shifted}, params={"theta": None},
                                       kinks=("theta",))]
    '''))
    code, report = run_json(tmp_path, "run", "--components", str(path), "--layers", "ShiftedReLU(theta=0.25);Linear",
                            "--sizes", "3,6,2", "--batch-size", "5", "--steps", "3", "--quiet", "--mode", "lockstep",
                            "--oracle", "sympy", "--backends", TWO)
    assert code == 0 and report["passed"] and "DZ1" in report["summary"]
