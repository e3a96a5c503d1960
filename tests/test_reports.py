"""Reports a person or a dashboard reads: JUnit XML, plots, HTML pages, the merge of shards.

Most cases drive ``check`` with ``_run_one`` replaced by a planted-outcome runner (no backend
runs): some runs pass, one blames torch at DW1, one has torch raising, a documented defect shows
in one seed and not in another. That covers every status a report can carry, on the real plan.
The last case renders the JSON of a real (small) run.
"""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from harness.cli import console, main as cli
from harness.core.backend import BackendFailure
from harness.reports import merge
from harness.judge.compare import StepVerdict, TensorVerdict
from harness.run.runner import RunResult

BACKENDS = "numpy,torch,tensorflow"
FRAMEWORKS = ("torch", "jax", "tensorflow", "nerva_torch", "nerva_jax", "nerva_tensorflow")
PNG = b"\x89PNG\r\n\x1a\n"


def planted(scenario, backends, *args, **kw) -> RunResult:
    """A RunResult with an outcome chosen by the run's identity (see the module docstring)."""
    r = RunResult(scenario, list(backends), seconds=0.25)
    name, dtype, mode, seed = scenario.name, scenario.dtype, scenario.mode, scenario.seed
    for s in range(3):
        small = {b: 0.01 * (s + 1) * (i + 1) for i, b in enumerate(backends)}
        tensors = [TensorVerdict(("Y", None), dict(small), {b: 0 for b in backends}),
                   TensorVerdict(("DW", 1), {b: v * 3 for b, v in small.items()}, {b: 0 for b in backends}),
                   TensorVerdict(("W", 1), {b: 0.0 for b in backends}, {b: 0 for b in backends})]
        r.steps.append(StepVerdict(s, tensors, [], near_kinks=2 if s == 1 else 0, flips=1 if s == 1 else 0))
    if mode == "trajectory":
        r.resyncs = [1]
    blamed = None
    if name == "relu-softmax" and seed == 812 and (dtype, mode) == ("float32", "lockstep"):
        blamed = "torch"
    if name == "leaky-logsoftmax" and dtype == "float64" and seed == 0 and "tensorflow" in backends:
        blamed = "tensorflow"
    if blamed:
        worst = {b: (7.5 if b == blamed else 0.2) for b in backends}
        r.steps[-1].tensors[1] = TensorVerdict(("DW", 1), worst, {b: 0 for b in backends}, blamed=[blamed],
                                               index=(1, 2), values={**{b: 0.5 for b in backends}, "consensus": 0.5},
                                               allowed=1.5e-7, outside={blamed: 3}, elements=12)
    if name == "kink-ties" and (dtype, mode) == ("float64", "trajectory") and "torch" in backends:
        r.failures["torch"] = BackendFailure(2, "RuntimeError", "planted", "x.py:1")
    return r


@pytest.fixture
def fake_check(monkeypatch, tmp_path):
    before = {m for m in FRAMEWORKS if m in sys.modules}
    monkeypatch.setattr(console, "run_one", planted)
    monkeypatch.setattr(console, "save_bundle", lambda result, directory, out: Path(directory) / "planted.npz")
    monkeypatch.setattr(console, "print_result", lambda *a, **k: None)
    monkeypatch.delenv("TOX_ENV_NAME", raising=False)
    monkeypatch.delenv("NERVA_CONSISTENCY_CELL", raising=False)

    def check(*extra: str) -> int:
        return cli.main(["check", "--backends", BACKENDS, "--variants", "all", "--add-seed", "812", "--quiet",
                         "--bundle-dir", str(tmp_path / "bundles"), *extra])

    yield check
    assert {m for m in FRAMEWORKS if m in sys.modules} == before


def _expected_totals(runs: int) -> dict[str, int]:
    # planted: relu-softmax float32/lockstep seed 812 (torch) and kink-ties float64/trajectory in both
    # seeds (torch raised) fail; leaky-logsoftmax float64 shows its known defect with seed 0 in both
    # modes and misses it with seed 812 in both modes (red)
    return {"runs": runs, "passed": runs - 5 - 2, "failed": 5, "known": 2, "interrupted": 0}


def test_merged_shards_give_the_totals_of_the_unsharded_check(fake_check, tmp_path, capsys):
    whole = tmp_path / "whole"
    assert fake_check("--json", str(whole)) == 1
    printed = " ".join(capsys.readouterr().out.split())
    unsharded = merge.merge(merge.load(whole))
    n = unsharded.totals["runs"]
    assert unsharded.totals == _expected_totals(n)
    assert f"{n - 7} passed, 5 failed, 2 known defect(s) shown as expected" in printed

    codes = [fake_check("--json", str(tmp_path / "shards" / f"s{k}"), "--shard", f"{k}/3") for k in (1, 2, 3)]
    assert 1 in codes
    sharded = merge.merge(merge.load(tmp_path / "shards"))
    assert sharded.totals == unsharded.totals
    assert sharded.failed_scenarios == unsharded.failed_scenarios == {"relu-softmax": 1, "kink-ties": 2,
                                                                       "leaky-logsoftmax": 2}
    assert sharded.failed_backends == {"torch": 3, "tensorflow": 2}
    assert sharded.missing == {} and sorted(sharded.cells[next(iter(sharded.cells))]["shards"]) == ["1/3", "2/3", "3/3"]
    # findings deduplicated: torch raising in kink-ties is one finding seen with both seeds
    kinds = sorted((f.kind, f.scenario, f.variant, f.backends, len(f.seen)) for f in sharded.findings)
    assert kinds == [("error", "kink-ties", "float64/trajectory", ("torch",), 2),
                     ("inconsistency", "relu-softmax", "float32/lockstep", ("torch",), 1),
                     ("known-missing", "leaky-logsoftmax", "float64/lockstep", ("tensorflow",), 1),
                     ("known-missing", "leaky-logsoftmax", "float64/trajectory", ("tensorflow",), 1)]
    assert sharded.red


def test_a_run_a_cell_planned_but_did_not_report_is_red(fake_check, tmp_path):
    out = tmp_path / "cell"
    fake_check("--json", str(out), "--shard", "2/3", "--backends", "numpy,jax")  # nothing planted fails there
    m = merge.merge(merge.load(out))
    assert not m.red and m.totals["failed"] == 0
    victim = sorted(p for p, _ in merge.load(out).reports)[0]
    label = json.loads(victim.read_text())["check"]["run"]
    victim.unlink()
    m = merge.merge(merge.load(out))
    assert m.red and list(m.missing.values()) == [[label]]
    assert "planned, no report" in merge.markdown(m)


def test_junit_one_case_per_run_and_backend_read_by_a_junit_parser(fake_check, tmp_path):
    junitparser = pytest.importorskip("junitparser")
    path = tmp_path / "junit.xml"
    fake_check("--junit", str(path), "--json", str(tmp_path / "json"))
    runs = merge.merge(merge.load(tmp_path / "json")).totals["runs"]

    root = ET.parse(path).getroot()  # well-formed, the usual shape
    assert root.tag == "testsuites" and int(root.get("tests")) == runs * 3
    xml = junitparser.JUnitXml.fromfile(str(path))
    cases = {(suite.name, case.name): case for suite in xml for case in suite}
    assert len(cases) == runs * 3

    def outcome(suite, backend):
        case = cases[(suite, f"{suite.split(' ', 1)[1]} [{backend}]")]
        return [type(r).__name__ for r in case.result], case

    kinds, case = outcome("relu-softmax float32/lockstep seed 812", "torch")
    assert kinds == ["Failure"]
    failure = case.result[0]
    assert failure.message == ("first divergence: step 2, DW of layer 1, element [1, 2]: torch off by 7.5x the rounding "
                               "bound (twice 7.5e-08 there), 3 of 12 elements outside; values: numpy 0.5, torch 0.5, "
                               "tensorflow 0.5, consensus 0.5")
    assert "nerva-consistency run --scenario relu-softmax" in failure.text
    assert "tox -e consistency -- run" in failure.text and "replay" in failure.text
    assert outcome("relu-softmax float32/lockstep seed 812", "numpy")[0] == []
    kinds, case = outcome("kink-ties float64/trajectory seed 0", "torch")
    assert kinds == ["Error"] and "planted" in case.result[0].message
    kinds, case = outcome("leaky-logsoftmax float64/lockstep seed 0", "tensorflow")
    assert kinds == ["Skipped"] and "docs/findings.md #2" in case.result[0].message
    kinds, case = outcome("leaky-logsoftmax float64/lockstep seed 812", "tensorflow")
    assert kinds == ["Failure"] and "did not show" in case.result[0].message
    assert outcome("upstream float32/trajectory seed 0", "tensorflow")[0] == []
    totals = {k: int(root.get(k)) for k in ("failures", "errors", "skipped")}
    assert totals == {"failures": 3, "errors": 2, "skipped": 2}


def test_check_out_writes_every_report(fake_check, tmp_path):
    out = tmp_path / "nightly"
    fake_check("--out", str(out), "--shard", "1/12")
    manifest = json.loads((out / "json" / "check-1of12.json").read_text())
    assert manifest["schema"] == merge.CHECK_SCHEMA and manifest["shard"] == "1/12"
    assert manifest["counts"]["runs"] == len(manifest["runs"]) > 0
    assert manifest["installed"]["numpy"] and manifest["versions"]["numpy"]
    assert manifest["replay"].startswith("tox -e consistency -- check ") and "--shard 1/12" in manifest["replay"]
    for name in ("junit.xml", "index.html", "summary.md", "merged.json"):
        assert (out / name).is_file(), name
    pngs = list((out / "plots").glob("*.png"))
    assert len(pngs) == manifest["counts"]["runs"] and all(p.read_bytes().startswith(PNG) for p in pngs)
    page = (out / "index.html").read_text()
    assert page.count("data:image/png;base64,") == len(pngs) and "<script" not in page and "src='http" not in page


def test_replay_command_under_a_nightly_tox_env(monkeypatch):
    monkeypatch.setenv("TOX_ENV_NAME", "nightly-latest")
    argv = ["check", "--variants", "all", "--out", "reports/nightly", "--shard", "2/4", "--add-seed", "812"]
    py = "python" + ".".join(map(str, sys.version_info[:2]))
    assert merge.replay_command(argv) == (f"tox -e nightly-latest -x testenv:nightly-latest.base_python={py} "
                                          "-- --shard 2/4 --add-seed 812")
    monkeypatch.delenv("TOX_ENV_NAME")
    assert merge.replay_command(argv).startswith("tox -e consistency -- check --variants all")


def test_report_command_renders_and_merge_fails_on_red(fake_check, tmp_path, capsys):
    fake_check("--json", str(tmp_path / "json"))
    one = tmp_path / "json" / "relu-softmax-float32-lockstep-seed812.json"
    assert cli.main(["report", str(one), "--out", str(tmp_path / "one")]) == 0  # rendering succeeded
    png = (tmp_path / "one" / "relu-softmax-float32-lockstep-seed812.png").read_bytes()
    html = (tmp_path / "one" / "relu-softmax-float32-lockstep-seed812.html").read_text()
    assert png.startswith(PNG) and "data:image/png;base64," in html
    sentence = "step 2, DW of layer 1, element [1, 2]: torch off by 7.5x the rounding bound (twice 7.5e-08 there), " \
               "3 of 12 elements outside"
    assert sentence in html and "nerva-consistency run --scenario relu-softmax" in html
    summary = tmp_path / "step-summary.md"
    assert cli.main(["report", "--merge", str(tmp_path / "json"), "--out", str(tmp_path / "m"),
                     "--markdown", str(summary), "--no-plots"]) == 1
    text = summary.read_text()
    assert "## nerva-consistency: merged report: RED" in text and "| kink-ties | float64/trajectory | torch |" in text
    assert "replay with `tox -e consistency -- check" in text
    assert "| relu-softmax | float32/lockstep | torch | DW of layer 1 | 7.5 |" in text and f" seed 812 | {sentence}" in text
    green = tmp_path / "green"
    fake_check("--json", str(green), "--backends", "numpy,jax", "--shard", "1/4")
    assert cli.main(["report", "--merge", str(green), "--no-plots"]) == 0
    capsys.readouterr()
    assert cli.main(["report", "--merge", str(tmp_path / "nothing-here")]) == 2
    assert cli.main(["report", str(tmp_path / "json")]) == 2
    assert "report --merge" in capsys.readouterr().err


def test_rendering_imports_no_framework_and_plots_lazily(fake_check, tmp_path):
    fake_check("--json", str(tmp_path / "json"), "--shard", "1/12")
    code = (
        "import sys\n"
        "from harness.cli.main import main\n"
        f"main(['report', '--merge', {str(tmp_path / 'json')!r}, '--out', {str(tmp_path / 'o')!r}, '--no-plots'])\n"
        "assert 'matplotlib' not in sys.modules, 'matplotlib imported without a plot'\n"
        f"main(['report', '--merge', {str(tmp_path / 'json')!r}, '--out', {str(tmp_path / 'p')!r}])\n"
        "assert 'matplotlib' in sys.modules\n"
        f"print(sorted(m for m in {FRAMEWORKS!r} if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.backends
def test_a_real_runs_report_renders(installed, tmp_path):
    junitparser = pytest.importorskip("junitparser")
    report, xml = tmp_path / "r.json", tmp_path / "r.xml"
    code = cli.main(["run", "--scenario", "srelu-nll", "--steps", "3", "--backends", "numpy,torch", "--quiet",
                     "--json", str(report), "--junit", str(xml)])
    assert code == 0
    cases = [c for s in junitparser.JUnitXml.fromfile(str(xml)) for c in s]
    assert [c.name for c in cases] == ["float32/trajectory seed 0 [numpy]", "float32/trajectory seed 0 [torch]"]
    assert all(c.is_passed for c in cases)
    assert cli.main(["report", str(report)]) == 0
    assert (tmp_path / "r.png").read_bytes().startswith(PNG)
    assert "PASS" in (tmp_path / "r.html").read_text()
