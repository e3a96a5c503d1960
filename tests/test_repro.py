"""Repro bundles and the platform they record: describe(), its comparison, and replay's two
comparisons (the numbers bit for bit on the same platform and versions, else the verdict)."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import numpy as np
import pytest

import adapters
from harness.reports import machine as hp
from harness.reports import bundle as repro
from harness.spec.scenario import build_scenario

BLAS = [{"user_api": "blas", "internal_api": "openblas", "num_threads": 2, "prefix": "libscipy_openblas",
         "filepath": "/a/libscipy_openblas64_.so", "version": "0.3.31", "threading_layer": "pthreads",
         "architecture": "SkylakeX"},
        {"user_api": "openmp", "internal_api": "openmp", "num_threads": 2, "prefix": "libgomp",
         "filepath": "/a/libgomp.so", "version": None},
        {"user_api": "blas", "internal_api": "mkl", "num_threads": 2, "prefix": "libmkl_rt",
         "filepath": "/a/libmkl_rt.so", "version": "2024.0", "threading_layer": "intel", "corename": None}]


def test_describe_says_cpu_machine_blas_and_kernel_variables(monkeypatch):
    import threadpoolctl

    monkeypatch.setattr(threadpoolctl, "threadpool_info", lambda: [dict(e) for e in BLAS])
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_use_thunk_runtime=false")
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    d = hp.describe()
    assert json.loads(json.dumps(d)) == d  # JSON data, as a bundle stores it
    assert set(d) == {"cpu", "cpu_flags", "machine", "blas", "torch_cpu_capability", "env"}
    assert d["machine"] == platform.machine()
    assert d["cpu"]
    # the BLAS libraries (not OpenMP), without thread counts or paths
    assert d["blas"] == [{"internal_api": "mkl", "prefix": "libmkl_rt", "version": "2024.0"},
                         {"internal_api": "openblas", "prefix": "libscipy_openblas", "version": "0.3.31",
                          "architecture": "SkylakeX"}]
    assert d["env"]["XLA_FLAGS"] == "--xla_cpu_use_thunk_runtime=false"
    assert d["env"]["ATEN_CPU_CAPABILITY"] is None
    assert {"ATEN_CPU_CAPABILITY", "XLA_FLAGS", "TF_ENABLE_ONEDNN_OPTS", "OPENBLAS_CORETYPE"} <= set(d["env"])


def test_cpuinfo_x86_and_arm(tmp_path, monkeypatch):
    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Gold 6248\nflags\t\t: fpu avx2 avx512f sse2\n\n"
                   "processor\t: 1\nmodel name\t: Intel(R) Xeon(R) Gold 6248\nflags\t\t: fpu avx2 avx512f sse2\n")
    assert hp._cpuinfo(str(x86)) == ("Intel(R) Xeon(R) Gold 6248", ["avx2", "avx512f", "fpu", "sse2"])
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nBogoMIPS\t: 243.75\nFeatures\t: fp asimd sve\nCPU part\t: 0xd40\n")
    assert hp._cpuinfo(str(arm)) == ("0xd40", ["asimd", "fp", "sve"])
    assert hp._cpuinfo(str(tmp_path / "none")) == (None, None)
    # without /proc/cpuinfo: platform.processor(), and no flags
    monkeypatch.setattr(hp, "_cpuinfo", lambda path="/proc/cpuinfo": (None, None))
    monkeypatch.setattr(platform, "processor", lambda: "fakecpu")
    d = hp.describe()
    assert d["cpu"] == "fakecpu" and d["cpu_flags"] is None


def test_describe_imports_no_framework_and_reads_torch_only_when_imported():
    code = ("import sys, json; from harness.reports.machine import describe; d = describe(); "
            "print(json.dumps([d['torch_cpu_capability'], [m for m in ('torch', 'jax', 'tensorflow') if m in sys.modules]]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(out.stdout.splitlines()[-1]) == [None, []]
    if adapters.why_unavailable("torch"):
        return
    code = ("import json, torch; from harness.reports.machine import describe; "
            "print(json.dumps([describe()['torch_cpu_capability'], torch.backends.cpu.get_cpu_capability()]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    got, capability = json.loads(out.stdout.splitlines()[-1])
    assert got == capability and got


def platform_dict(**changes):
    d = {"cpu": "AMD EPYC", "cpu_flags": ["avx2", "avx512f", "fma"], "machine": "x86_64",
         "blas": [{"internal_api": "openblas", "prefix": "libscipy_openblas", "version": "0.3.31",
                   "architecture": "SkylakeX"},
                  {"internal_api": "openblas", "prefix": "libscipy_openblas", "version": "0.3.30",
                   "architecture": "SkylakeX"}],
         "torch_cpu_capability": "AVX512", "env": {name: None for name in hp.KERNEL_ENV}}
    d.update(changes)
    return d


def test_differing_names_the_fields_and_ignores_order_and_thread_counts():
    a = platform_dict()
    assert hp.differing(a, platform_dict()) == []
    shuffled = platform_dict(blas=[dict(e, num_threads=64) for e in reversed(a["blas"])],
                             cpu_flags=list(reversed(a["cpu_flags"])))
    assert hp.differing(a, shuffled) == []  # order of BLAS entries and flags, thread counts: not identity
    other = platform_dict(cpu_flags=["avx2", "fma"], torch_cpu_capability="AVX2",
                          blas=[dict(a["blas"][0], architecture="Haswell"), a["blas"][1]],
                          env={**a["env"], "XLA_FLAGS": "--xla_cpu_enable_fast_math=false"})
    assert hp.differing(a, other) == ["blas", "cpu_flags", "env.XLA_FLAGS", "torch_cpu_capability"]
    text = hp.explain(a, other)
    assert "cpu flags -avx512f" in text
    assert "torch_cpu_capability 'AVX512' -> 'AVX2'" in text
    assert any(t.startswith("blas ") and "Haswell" in t for t in text)
    assert "XLA_FLAGS None -> '--xla_cpu_enable_fast_math=false'" in text
    assert hp.differing(a, platform_dict(machine="aarch64")) == ["machine"]
    assert hp.differing(a, platform_dict(cpu_flags=None)) == ["cpu_flags"]  # unknown is not the same


def test_compare_verdicts_kink_findings_are_notes():
    bug = {"passed": False, "findings": [{"class": "bug", "backends": ["torch"]}],
           "first_divergence": {"step": 1, "tensor": "Db", "layer": 2}}
    assert repro.compare_verdicts(bug, bug) == ([], [])
    with_kink = dict(bug, findings=[*bug["findings"], {"class": "kink", "backends": ["numpy", "torch"]}])
    differences, notes = repro.compare_verdicts(bug, with_kink)
    assert differences == [] and len(notes) == 1 and notes[0].startswith("kink events differ")
    other = {"passed": False, "findings": [{"class": "bug", "backends": ["numpy"]}],
             "first_divergence": {"step": 0, "tensor": "Db", "layer": 2}}
    differences, _ = repro.compare_verdicts(bug, other)
    assert differences == ["findings: recorded bug (torch), replay bug (numpy)",
                           "first divergence: recorded step 1, Db of layer 2, replay step 0, Db of layer 2"]
    passed = {"passed": True, "findings": [], "first_divergence": None}
    assert repro.compare_verdicts(bug, passed)[0][0] == "passed: recorded FAIL, replay PASS"
    assert repro.describe_verdict(bug) == "FAIL: bug (torch); first divergence at step 1, Db of layer 2"


# ------------------------------------------------------------------ bundles, replayed

BACKENDS = ["numpy", "torch"]


@pytest.fixture(scope="module")
def two_backends():
    for name in BACKENDS:
        reason = adapters.why_unavailable(name)
        if reason:
            pytest.skip(reason)
    pytest.importorskip("harness.oracle.symbolic")
    return BACKENDS


@pytest.fixture
def bundle(two_backends, tmp_path, monkeypatch):
    """A failing run's bundle: torch's Db off by 0.1% in a tiny lockstep run against the exact
    oracle (so torch alone is blamed); the bug stays planted while the test replays it."""
    from harness.run.runner import run
    from mutants import break_bias_gradient

    break_bias_gradient(monkeypatch, "torch", "LinearLayer")
    sc = build_scenario(name="tiny", layers="ReLU;Linear", sizes="3,4,2", optimizers="GradientDescent",
                        init_weights="XavierNormal", loss="SquaredError", lr=0.1, batch_size=4, steps=2,
                        mode="lockstep", seed=3)
    result = run(sc, two_backends, oracle="sympy")
    assert not result.passed
    return repro.save(result, tmp_path / "bundles")


def rewrite(path, tmp_path, name, change):
    """A copy of the bundle at ``path`` with its meta changed by ``change(meta)``."""
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    meta = json.loads(str(arrays.pop("meta")))
    change(meta)
    out = tmp_path / name
    np.savez_compressed(out, meta=np.array(json.dumps(meta)), **arrays)
    return out


def test_a_bundle_records_its_platform_and_verdict(bundle):
    meta, scenario, _, _ = repro.load(bundle)
    assert meta["schema"] == "nerva-consistency/bundle/2"
    assert "tolerance" not in meta and "growth" not in meta
    assert hp.differing(meta["platform"], hp.describe()) == []
    assert meta["platform"]["torch_cpu_capability"]  # torch ran, so it was imported
    assert meta["verdict"] == {"passed": False, "findings": [{"class": "bug", "backends": ["torch"]}],
                               "first_divergence": {"step": 0, "tensor": "Db", "layer": 2}}


def test_same_platform_and_versions_compare_the_numbers_bit_for_bit(bundle):
    result, differences = repro.replay(bundle)
    assert differences == [] and differences.compared == "numbers"
    assert differences.reasons == [] and differences.notes == []
    assert differences.reproduced and not result.passed


def test_other_numbers_on_the_same_platform_are_a_difference(bundle, tmp_path):
    def nudge(meta):  # one ratio one ulp away from what this platform computes
        ratio = meta["numbers"]["per_step"][0]["ratio"]["Db2"]
        ratio["numpy"] = float(np.nextafter(ratio["numpy"], 2.0))

    changed = rewrite(bundle, tmp_path, "nudged.npz", nudge)
    _, differences = repro.replay(changed)
    assert differences.compared == "numbers" and differences == ["per_step"] and not differences.reproduced
    assert differences.notes == ["the verdict is the same"]


def test_another_platform_compares_the_verdict(bundle, monkeypatch):
    here = hp.describe()
    elsewhere = dict(here, cpu_flags=[f for f in here["cpu_flags"] or [] if not f.startswith("avx512")],
                     torch_cpu_capability="AVX2", env={**here["env"], "ATEN_CPU_CAPABILITY": "avx2"})
    monkeypatch.setattr(repro, "describe", lambda: elsewhere)  # the replaying machine
    result, differences = repro.replay(bundle)
    assert differences.compared == "verdict"
    assert differences == [] and differences.reproduced  # the same verdict: reproduced
    (why,) = differences.reasons
    assert why.startswith("platform differs: ") and "torch_cpu_capability" in why and "ATEN_CPU_CAPABILITY" in why
    # the verdict recorded is not the verdict of the replay: a real difference
    planted = rewrite(bundle, bundle.parent, "other-verdict.npz",
                      lambda m: m["verdict"].update(findings=[{"class": "bug", "backends": ["numpy"]}]))
    _, differences = repro.replay(planted)
    assert differences.compared == "verdict" and not differences.reproduced
    assert differences == ["findings: recorded bug (numpy), replay bug (torch)"]


def test_other_versions_compare_the_verdict(bundle, monkeypatch):
    real = repro.versions()
    monkeypatch.setattr(repro, "versions", lambda backends=(): {**real, "numpy": "0.0.1"})
    _, differences = repro.replay(bundle)
    assert differences.compared == "verdict" and differences.reproduced
    assert differences.reasons == [f"versions differ: numpy {real['numpy']} -> 0.0.1"]


def test_a_schema_1_bundle_has_no_platform_and_is_judged_by_its_verdict(bundle, tmp_path):
    def to_schema_1(meta):
        meta["schema"] = "nerva-consistency/bundle/1"
        for key in ("platform", "verdict"):
            del meta[key]
        meta["tolerance"], meta["growth"] = {"DW": [1e-5, 1e-4]}, 0.5  # schema 1 had them: ignored

    old = rewrite(bundle, tmp_path, "old.npz", to_schema_1)
    meta, _, _, _ = repro.load(old)
    assert meta["platform"] is None
    assert repro.recorded_verdict(meta) == repro.recorded_verdict(repro.load(bundle)[0])  # derived
    _, differences = repro.replay(old)
    assert differences.compared == "verdict" and differences.reproduced
    assert differences.reasons == ["the recording does not say its platform: schema nerva-consistency/bundle/1"]


def test_replay_command_says_which_comparison_and_why(bundle, monkeypatch, capsys):
    from harness.cli.main import main

    assert main(["replay", str(bundle), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "replay reproduced the recording: the same numbers; compared the numbers bit for bit " \
           "(same platform and versions as the recording)" in out
    here = hp.describe()
    monkeypatch.setattr(repro, "describe", lambda: dict(here, machine="aarch64"))
    assert main(["replay", str(bundle), "--quiet"]) == 0  # the verdict reproduced elsewhere: exit 0
    out = capsys.readouterr().out
    assert "replay reproduced the recording: the same verdict, FAIL: bug (torch); first divergence at step 0, " \
           "Db of layer 2; compared the verdict, not the numbers (platform differs: machine" in out
    planted = rewrite(bundle, bundle.parent, "passed.npz",
                      lambda m: m["verdict"].update(passed=True, findings=[], first_divergence=None))
    assert main(["replay", str(planted), "--quiet"]) == 1  # the verdict differs: exit 1
    out = capsys.readouterr().out
    assert "replay differs from the recording: passed: recorded PASS, replay FAIL" in out
