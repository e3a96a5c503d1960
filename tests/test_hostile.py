"""Hostile and malformed input through the real command line, in a subprocess.

Every case of :data:`CASES` must end with exit code 2 and exactly one line on stderr, no
traceback, and that line must name the offending input. They are all refused by the validation
layer (harness/spec/rules.py) before a framework is imported, so each takes well under a second.
The few runs that get past it use numpy and torch on a 4-8-3 network: a run whose backends all
overflow to Inf fails (exit 1, the non-finite verdict). Ctrl-C and the other signals are
tests/test_faults.py's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from harness.reports import bundle as repro
from harness.core.errors import SpecError
from harness.reports.bundle import bundle as load_bundle
from harness.spec import memory
from harness.spec.data import batches
from harness.run.runner import RunResult
from harness.spec.scenario import build_scenario
from harness.spec.state import initial_state

FRAMEWORKS = ("torch", "jax", "tensorflow", "nerva_torch", "nerva_jax", "nerva_tensorflow")
ADHOC = ["run", "--layers", "ReLU;Linear", "--sizes", "4,8,3", "--backends", "numpy,torch", "--quiet"]
UNWRITABLE = "/proc/nerva-consistency-test/out"  # no one can create files under /proc, root included


def cli_env() -> dict[str, str]:
    """The environment of a command run here (the harness quiets the frameworks itself: harness.core.process)."""
    return dict(os.environ, COLUMNS="200")


def cli(args: list[str], cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, timeout=timeout,
                          cwd=cwd, env=cli_env())


# ------------------------------------------------------------------------------------ inputs on disk

def _good_bundle(path: Path) -> Path:
    """A valid bundle of the 4-8-3 network, written without running any backend."""
    sc = build_scenario(name="ad-hoc", layers="ReLU;Linear", sizes="4,8,3", optimizers="GradientDescent",
                        init_weights=None, loss="SquaredError", lr=0.01, batch_size=16, steps=3)
    result = RunResult(sc, ["numpy", "torch"], oracle=None, oracle_note="none", inputs=(initial_state(sc), batches(sc)))
    result.stopped_early = True
    return repro.save(result, path)


def _rewrite(src: Path, dst: Path, meta=None, drop=(), **arrays) -> Path:
    with np.load(src) as f:
        content = {k: f[k] for k in f.files}
    for k in drop:
        content.pop(k)
    if meta is not None:
        content["meta"] = np.array(json.dumps(meta)) if isinstance(meta, dict) else meta
    content.update(arrays)
    np.savez(dst, **content)
    return dst


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("hostile")
    rng = np.random.default_rng(0)
    X, labels = rng.standard_normal((40, 4)), rng.integers(0, 3, 40)
    out: dict[str, Path] = {"dir": d / "a-directory"}
    out["dir"].mkdir()

    def npz(name, **arrays):
        out[name] = d / f"{name}.npz"
        np.savez(out[name], **arrays)

    npz("good", Xtrain=X, Ttrain=labels)
    (d / "empty.npz").write_bytes(b"")
    out["empty"] = d / "empty.npz"
    npz("zero", Xtrain=np.zeros((0, 4)), Ttrain=np.zeros(0, dtype=int))
    npz("rows", Xtrain=X, Ttrain=labels[:30])
    npz("strings", Xtrain=X, Ttrain=np.array(["cat"] * 40))
    npz("nan", Xtrain=np.where(np.arange(160).reshape(40, 4) == 9, np.nan, X), Ttrain=labels)
    npz("inf", Xtrain=np.where(np.arange(160).reshape(40, 4) == 13, -np.inf, X), Ttrain=labels)
    npz("half", Xtrain=X, Ttrain=np.where(labels > 0, 1.5, 0.5))
    npz("shape3", Xtrain=X, Ttrain=np.zeros((40, 3, 1)))
    npz("negative", Xtrain=X, Ttrain=labels - 1)
    npz("toohigh", Xtrain=X, Ttrain=labels + 5)
    npz("noT", Xtrain=X, Xtest=X)
    npz("objects", Xtrain=X, Ttrain=np.array([{"a": 1}] * 40, dtype=object))
    npz("complex", Xtrain=X.astype(complex), Ttrain=labels)
    npz("features", Xtrain=np.zeros((40, 7)), Ttrain=labels)
    npz("width", Xtrain=X, Ttrain=np.eye(5)[labels])
    npz("few", Xtrain=X[:5], Ttrain=labels[:5])
    (d / "text.npz").write_text("Xtrain,Ttrain\n1,2\n")
    out["text"] = d / "text.npz"
    np.save(d / "array.npy", X)
    out["npy"] = d / "array.npy"
    out["file"] = d / "a-file.txt"
    out["file"].write_text("x")
    raw = out["good"].read_bytes()
    (d / "truncated-data.npz").write_bytes(raw[: len(raw) // 2])
    out["truncated-data"] = d / "truncated-data.npz"

    good = _good_bundle(d / "bundles")
    out["bundle"] = good
    with np.load(good) as f:
        meta = json.loads(str(f["meta"]))
    raw = good.read_bytes()
    (d / "truncated.npz").write_bytes(raw[: len(raw) * 2 // 3])
    out["truncated"] = d / "truncated.npz"
    out["nospec"] = _rewrite(good, d / "nospec.npz", {k: v for k, v in meta.items() if k != "spec"})
    out["noW1"] = _rewrite(good, d / "noW1.npz", drop=["state/W1"])
    out["W77"] = _rewrite(good, d / "W77.npz", **{"state/W1": np.zeros((7, 7))})
    out["huge"] = _rewrite(good, d / "huge.npz", dict(meta, spec=dict(meta["spec"], sizes="3,1000000000,2")))
    out["nanW"] = _rewrite(good, d / "nanW.npz", **{"state/b1": np.full(8, np.nan)})
    out["noT0"] = _rewrite(good, d / "noT0.npz", drop=["data/0/T"])
    out["schema9"] = _rewrite(good, d / "schema9.npz", dict(meta, schema="nerva-consistency/bundle/9"))
    out["notjson"] = _rewrite(good, d / "notjson.npz", np.array("{spec: oops"))
    out["pickled"] = _rewrite(good, d / "pickled.npz", np.array([meta], dtype=object))
    out["caffe"] = _rewrite(good, d / "caffe.npz", dict(meta, backends=["numpy", "caffe"]))
    out["lrnan"] = _rewrite(good, d / "lrnan.npz", dict(meta, spec=dict(meta["spec"], **{"learning-rate": "nan"})))
    return {k: str(v) for k, v in out.items()}


# (id, argv with {name} standing for files[name], what the error line must mention)
CASES = [
    # numbers and integers
    ("run-seed-negative", ADHOC + ["--seed", "-1"], "-1"),
    ("check-seed-negative", ["check", "--seed", "-1", "--backends", "numpy,torch"], "-1"),
    ("explore-seed-negative", ["explore", "--seed", "-1", "--backends", "numpy,torch"], "-1"),
    ("seed-too-large", ADHOC + ["--seed", "99999999999999999999999"], "99999999999999999999999"),
    ("steps-zero", ADHOC + ["--steps", "0"], "--steps"),
    ("steps-too-many", ADHOC + ["--steps", "10000000000000"], "10000000000000"),
    ("steps-not-a-number", ADHOC + ["--steps", "1e9"], "1e9"),
    ("batch-size-zero", ADHOC + ["--batch-size", "0"], "--batch-size"),
    ("explore-examples-zero", ["explore", "--examples", "0", "--backends", "numpy,torch"], "--examples"),
    ("learning-rate-inf", ADHOC + ["--learning-rate", "inf"], "inf"),
    ("learning-rate-nan", ADHOC + ["--learning-rate", "nan"], "nan"),
    ("learning-rate-constant-inf", ADHOC + ["--learning-rate", "Constant(1e999)"], "Constant(1e999)"),
    ("learning-rate-negative", ADHOC + ["--learning-rate", "-0.5"], "-0.5"),
    ("learning-rate-schedule", ADHOC + ["--learning-rate", "Exponential(0.1)"], "Exponential(0.1)"),
    ("leaky-alpha-nan", ["run", "--layers", "LeakyReLU(alpha=nan);Linear", "--sizes", "4,8,3"], "LeakyReLU(alpha=nan)"),
    ("leaky-alpha-overflow", ["run", "--layers", "LeakyReLU(alpha=1e999);Linear", "--sizes", "4,8,3"],
     "LeakyReLU(alpha=1e999)"),
    ("elu-alpha-inf", ["run", "--layers", "ELU(alpha=-inf);Linear", "--sizes", "4,8,3"], "ELU(alpha=-inf)"),
    ("srelu-nan", ["run", "--layers", "SReLU(al=nan);Linear", "--sizes", "4,8,3"], "SReLU(al=nan)"),
    ("srelu-thresholds-reversed", ["run", "--layers", "SReLU(tl=1,tr=0);Linear", "--sizes", "4,8,3"], "SReLU(tl=1,tr=0)"),
    ("momentum-nan", ADHOC + ["--optimizers", "Momentum(nan)"], "Momentum(nan)"),
    ("momentum-negative", ADHOC + ["--optimizers", "Momentum(-5)"], "Momentum(-5)"),
    ("nesterov-above-one", ADHOC + ["--optimizers", "Nesterov(mu=1.5)"], "Nesterov(mu=1.5)"),
    ("per-parameter-momentum-inf", ADHOC + ["--optimizers", "W=Momentum(inf),b=GradientDescent"], "Momentum(inf)"),
    # lists
    ("layers-empty-item", ["run", "--layers", "ReLU;;Softmax", "--sizes", "4,8,3"], "ReLU;;Softmax"),
    ("layers-trailing-separator", ["run", "--layers", "ReLU;Linear;", "--sizes", "4,8,3"], "ReLU;Linear;"),
    ("sizes-empty-item", ADHOC[:3] + ["4,,3"] + ADHOC[4:], "4,,3"),
    ("sizes-zero", ADHOC[:3] + ["4,0,3"] + ADHOC[4:], "4,0,3"),
    ("optimizers-empty-item", ADHOC + ["--optimizers", "Momentum(0.9);;GradientDescent"], "Momentum(0.9);;GradientDescent"),
    ("init-weights-empty-item", ADHOC + ["--init-weights", "XavierNormal,,HeNormal"], "XavierNormal,,HeNormal"),
    ("backends-empty", ["run", "--layers", "ReLU;Linear", "--sizes", "4,8,3", "--backends", ""], "''"),
    ("backends-empty-item", ["run", "--layers", "ReLU;Linear", "--sizes", "4,8,3", "--backends", "numpy,,torch"],
     "numpy,,torch"),
    ("backends-unknown", ["run", "--layers", "ReLU;Linear", "--sizes", "4,8,3", "--backends", "numpy,caffe"], "caffe"),
    ("unknown-layer", ["run", "--layers", "Relu;Linear", "--sizes", "4,8,3"], "Relu"),
    # memory
    ("sizes-beyond-memory", ADHOC[:3] + ["4,1000000000,3"] + ADHOC[4:], "4,1000000000,3"),
    ("batch-beyond-memory", ADHOC + ["--batch-size", "1000000000"], "1000000000"),
    # dataset files
    ("dataset-empty-file", ADHOC + ["--dataset", "{empty}"], "{empty}"),
    ("dataset-empty-name", ADHOC + ["--dataset", ""], "''"),
    ("dataset-zero-rows", ADHOC + ["--dataset", "{zero}"], "{zero}"),
    ("dataset-rows-differ", ADHOC + ["--dataset", "{rows}"], "{rows}"),
    ("dataset-string-targets", ADHOC + ["--dataset", "{strings}"], "{strings}"),
    ("dataset-nan-input", ADHOC + ["--dataset", "{nan}"], "nan"),
    ("dataset-inf-input", ADHOC + ["--dataset", "{inf}"], "inf"),
    ("dataset-half-labels", ADHOC + ["--dataset", "{half}"], "{half}"),
    ("dataset-targets-3d", ADHOC + ["--dataset", "{shape3}"], "(40, 3, 1)"),
    ("dataset-negative-labels", ADHOC + ["--dataset", "{negative}"], "-1"),
    ("dataset-labels-too-high", ADHOC + ["--dataset", "{toohigh}"], "{toohigh}"),
    ("dataset-no-ttrain", ADHOC + ["--dataset", "{noT}"], "Ttrain"),
    ("dataset-pickled-objects", ADHOC + ["--dataset", "{objects}"], "{objects}"),
    ("dataset-complex", ADHOC + ["--dataset", "{complex}"], "complex"),
    ("dataset-features", ADHOC + ["--dataset", "{features}"], "{features}"),
    ("dataset-target-width", ADHOC + ["--dataset", "{width}"], "{width}"),
    ("dataset-fewer-rows-than-a-batch", ADHOC + ["--dataset", "{few}", "--batch-size", "16"], "{few}"),
    ("dataset-directory", ADHOC + ["--dataset", "{dir}"], "{dir}"),
    ("dataset-text-named-npz", ADHOC + ["--dataset", "{text}"], "{text}"),
    ("dataset-npy", ADHOC + ["--dataset", "{npy}"], "{npy}"),
    ("dataset-truncated", ADHOC + ["--dataset", "{truncated-data}"], "{truncated-data}"),
    ("dataset-missing", ADHOC + ["--dataset", "{dir}/missing.npz"], "{dir}/missing.npz"),
    ("dataset-missing-named-scenario", ["run", "--scenario", "relu-softmax", "--dataset", "{dir}/missing.npz",
                                        "--backends", "numpy,torch"], "{dir}/missing.npz"),
    # output paths
    ("json-unwritable", ADHOC + ["--json", UNWRITABLE + ".json"], UNWRITABLE),
    ("json-under-a-file", ADHOC + ["--json", "{file}/report.json"], "{file}"),
    ("json-is-a-directory", ADHOC + ["--json", "{dir}"], "{dir}"),
    ("json-empty-name", ADHOC + ["--json", ""], "--json"),
    ("bundle-dir-unwritable", ADHOC + ["--bundle-dir", UNWRITABLE], UNWRITABLE),
    ("bundle-dir-is-a-file", ADHOC + ["--bundle-dir", "{file}"], "{file}"),
    ("check-json-is-a-file", ["check", "--json", "{file}", "--backends", "numpy,torch"], "{file}"),
    ("explore-database-unwritable", ["explore", "--database", UNWRITABLE, "--backends", "numpy,torch"], UNWRITABLE),
    ("explore-json-unwritable", ["explore", "--json", UNWRITABLE, "--backends", "numpy,torch"], UNWRITABLE),
    ("conventions-json-unwritable", ["conventions", "--json", UNWRITABLE, "--backends", "numpy"], UNWRITABLE),
    # bundles
    ("replay-truncated", ["replay", "{truncated}"], "{truncated}"),
    ("replay-empty-file", ["replay", "{empty}"], "{empty}"),
    ("replay-directory", ["replay", "{dir}"], "{dir}"),
    ("replay-missing", ["replay", "{dir}/missing.npz"], "{dir}/missing.npz"),
    ("replay-text", ["replay", "{text}"], "{text}"),
    ("replay-dataset-not-bundle", ["replay", "{good}"], "{good}"),
    ("replay-meta-without-spec", ["replay", "{nospec}"], "'spec'"),
    ("replay-state-W1-missing", ["replay", "{noW1}"], "state/W1"),
    ("replay-state-W1-7x7", ["replay", "{W77}"], "(7, 7)"),
    ("replay-sizes-beyond-memory", ["replay", "{huge}"], "3,1000000000,2"),
    ("replay-nan-parameter", ["replay", "{nanW}"], "state/b1"),
    ("replay-batch-missing", ["replay", "{noT0}"], "data/0/T"),
    ("replay-unknown-schema", ["replay", "{schema9}"], "bundle/9"),
    ("replay-meta-not-json", ["replay", "{notjson}"], "{notjson}"),
    ("replay-pickled-meta", ["replay", "{pickled}"], "{pickled}"),
    ("replay-recorded-on-unknown-backend", ["replay", "{caffe}"], "caffe"),
    ("replay-spec-learning-rate-nan", ["replay", "{lrnan}"], "nan"),
    ("replay-backends-empty", ["replay", "{bundle}", "--backends", ""], "''"),
]


def test_the_table_has_the_cases_of_the_issue_and_at_least_40():
    assert len(CASES) >= 40 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("name, argv, named", CASES, ids=[c[0] for c in CASES])
def test_malformed_input_is_one_line_and_exit_2(files, name, argv, named):
    argv = [a.format(**files) for a in argv]
    named = named.format(**files)
    start = time.perf_counter()
    out = cli(argv)
    assert out.returncode == 2, (out.returncode, out.stderr[-2000:])
    assert "Traceback" not in out.stderr and "Traceback" not in out.stdout
    assert out.stderr.endswith("\n") and out.stderr.count("\n") == 1, out.stderr
    line = out.stderr.rstrip("\n")
    assert line.startswith("nerva-consistency: error: ")
    assert named in line, (named, line)
    assert "unpickle" not in line and "allow_pickle" not in line  # never an invitation to unpickle
    assert out.stdout == ""
    assert time.perf_counter() - start < 20  # refused up front: no framework is imported


def test_validation_imports_no_framework(files):
    """The checks of a bundle, a dataset and the memory estimate need no framework."""
    code = ("import sys; from harness.reports.bundle import bundle; from harness.spec import memory, rules; from harness.spec.scenario import build_scenario; "
            f"bundle({files['bundle']!r}); rules.dataset_file({files['good']!r}, 4, 3, 16); "
            "sc = build_scenario(name='x', layers='ReLU;Linear', sizes='4,8,3', optimizers='GradientDescent', "
            "init_weights=None, loss='SquaredError', lr=0.01, batch_size=16, steps=3); memory.memory(sc, 4, 'sympy'); "
            f"print(sorted(m for m in {FRAMEWORKS!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_a_valid_bundle_passes_validation_with_its_batches(files):
    meta, scenario, state0, data = load_bundle(files["bundle"])
    assert scenario.sizes == (4, 8, 3) and len(data) == 1  # the steps judged (none): one batch is kept
    assert set(state0) == {"W1", "b1", "W2", "b2"}


def test_memory_estimate_grows_with_the_model_and_is_refused_with_the_numbers(monkeypatch):
    sc = build_scenario(name="x", layers="ReLU;Linear", sizes="4,8,3", optimizers="GradientDescent", init_weights=None,
                        loss="SquaredError", lr=0.01, batch_size=16, steps=3)
    small = memory.estimate(sc, 2, None)
    assert small < memory.estimate(sc.with_(batch_size=1600), 2, None) < memory.estimate(sc, 2, None) * 1000
    assert memory.estimate(sc, 4, "sympy") > memory.estimate(sc, 2, None)
    monkeypatch.setattr(memory, "available_memory", lambda: small - 1)
    with pytest.raises(SpecError, match=r"sizes 4,8,3 with batch size 16 .* needs about .* available"):
        memory.memory(sc, 2, None)
    monkeypatch.setattr(memory, "available_memory", lambda: small)
    memory.memory(sc, 2, None)


# ------------------------------------------------------------------------------------ runs that start

def test_all_backends_overflowing_to_inf_is_not_a_pass(tmp_path, installed):
    """Learning rate 1e300 in float32: every backend's W overflows to Inf at step 0 and they
    agree on it. That used to PASS with every ratio 0; now it is the non-finite verdict, exit 1,
    with the tensor, step and backends, a bundle, and a rerun of the same failure replaces it."""
    argv = ADHOC + ["--learning-rate", "1e300", "--steps", "5", "--json", "r.json", "--bundle-dir", "b"]
    out = cli(argv, cwd=tmp_path)
    assert out.returncode == 1, out.stderr[-2000:]
    assert "Traceback" not in out.stderr
    assert "non-finite: step 0" in out.stdout and "numpy inf" in out.stdout and "torch inf" in out.stdout
    assert "every backend holds it" in out.stdout and "PASS" not in out.stdout and "FAIL" in out.stdout
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["passed"] is False and report["steps_run"] == 1
    assert report["non_finite"]["step"] == 0 and set(report["non_finite"]["values"]) == {"numpy", "torch"}
    # known finding 3 is printed as known, with its number
    assert "known finding, docs/findings.md #3" in out.stdout
    bundles = list((tmp_path / "b").glob("*.npz"))
    assert len(bundles) == 1 and f"replay {bundles[0]}" in out.stdout  # absolute path in the replay line
    again = cli(argv, cwd=tmp_path)
    assert again.returncode == 1
    assert "replaced the bundle of the same failure" in again.stdout
    assert list((tmp_path / "b").glob("*.npz")) == bundles


def test_an_internal_error_is_one_line_exit_3_and_debug_shows_the_traceback(tmp_path):
    """A bug below the validation layer (here planted: the catalog cannot be read) is reported
    as a harness bug in one line, not as bad input; --debug adds the traceback."""
    plant = tmp_path / "sitecustomize.py"
    plant.write_text("import scenarios\n"
                     "def broken():\n    raise ZeroDivisionError('planted')\n"
                     "scenarios.catalog = broken\n")
    env = dict(os.environ, PYTHONPATH=str(tmp_path) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-m", "harness", "list"], capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 3
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert "internal error: ZeroDivisionError: planted at sitecustomize.py:3" in out.stderr
    assert "bug in nerva-consistency" in out.stderr and "--debug" in out.stderr
    debug = subprocess.run([sys.executable, "-m", "harness", "list", "--debug"], capture_output=True, text=True,
                           timeout=60, env=env)
    assert debug.returncode == 3 and "Traceback" in debug.stderr and "planted" in debug.stderr


# ------------------------------------------------------------------------------------ bounded memory

def _verdict(step: int, worst: float, failed: bool = False, flips: int = 0):
    from harness.judge.compare import StepVerdict, TensorVerdict

    tensors = [TensorVerdict(("Y", None), {"numpy": worst, "torch": worst / 2}, {"numpy": 1, "torch": 0},
                             blamed=["numpy"] if failed else []),
               TensorVerdict(("DW", 1), {"numpy": 0.1, "torch": 0.2}, {"numpy": 0, "torch": 2})]
    return StepVerdict(step, tensors, [], 3, flips)


def test_a_long_run_keeps_its_first_steps_whole_and_folds_the_rest(monkeypatch):
    """Beyond KEEP_STEPS a verdict is merged into one (worst ratios, kink counts), unless it is
    the first to fail or to flip: the table and the first divergence stay right, memory flat."""
    from harness.run import runner
    from harness.reports.report import summary

    monkeypatch.setattr(runner, "KEEP_STEPS", 3)
    sc = build_scenario(name="x", layers="ReLU;Linear", sizes="4,8,3", optimizers="GradientDescent",
                        init_weights=None, loss="SquaredError", lr=0.01, batch_size=16, steps=100)
    result = RunResult(sc, ["numpy", "torch"])
    worst = [0.1, 0.2, 0.3, 0.9, 0.4, 2.5, 0.5, 3.0, 0.2, 0.1]
    for step, w in enumerate(worst):
        runner._keep(result, _verdict(step, w, failed=w > 1, flips=int(step == 8)))
    assert [v.step for v in result.steps] == [0, 1, 2, 5, 8]  # first 3, the first failure, the first flip
    assert result.steps_run == 10 and result.folded_steps == 5
    assert result.first_divergence[0] == 5
    table = summary(result)
    assert table["Y"]["numpy"] == {"worst": 3.0, "kinks": 10} and table["Y"]["torch"]["worst"] == 1.5
    assert table["DW1"]["torch"] == {"worst": 0.2, "kinks": 20}
    assert sum(v.near_kinks for v in result.verdicts) == 30 and sum(v.flips for v in result.verdicts) == 1
