"""Killed, cancelled, out of disk or run twice at once: nothing judged is lost, nothing written is
half a file (harness.cli.signals, harness.reports.write; README "What is written, and when").

Done for real where the machine lets a test: the real command sent SIGTERM and SIGHUP in the
middle of a multi-step run; a writer that dies (``os._exit``) between its write and its rename;
a full and a read-only file system (a 64 kB tmpfs in a private mount namespace, ``unshare -m``,
skipped where that is not permitted); a read-only directory (as root, where chmod does not stop
a write, the writer runs as ``nobody``); two ``check --shard`` processes into one ``--out``.
Where timing would decide, it is constructed instead: a planted ``os.replace`` that holds the
writer between write and rename until the test has sent its signal, and planted runs (no
backend) wherever the backends' numbers do not matter.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import pytest

from harness.cli import console, main as cli, signals
from harness.reports import merge, write
from harness.run.runner import Interrupted

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
PLANTED_RUN = "--backends numpy,torch,tensorflow --variants all --add-seed 812 --quiet".split()


def _env(plant_dir: Path | None = None) -> dict[str, str]:
    path = [str(ROOT)] + ([str(plant_dir)] if plant_dir else []) + [os.environ.get("PYTHONPATH", "")]
    return dict(os.environ, COLUMNS="200", PYTHONPATH=os.pathsep.join(filter(None, path)))


def _plant(directory: Path, delay: float = 0.0, stall_at: int = 0, hold: str | None = None,
           hold_for: float = 0.0, only: tuple[str, ...] = ()) -> Path:
    """A ``sitecustomize`` that makes every run of the command a planted result (test_reports'
    ``planted``: no backend runs) that takes ``delay`` seconds (the ``stall_at``-th run: ten
    minutes, to be interrupted), touching ``directory/started-N`` as the N-th starts, and, like
    the runner, turns a KeyboardInterrupt into ``Interrupted`` with the one step judged so far.
    With ``hold``, the writer's ``os.replace`` onto a file of that name first touches
    ``<hold>.held`` and waits ``hold_for`` seconds (between the write and the rename). With
    ``only``, ``check`` plans only those catalog scenarios. Plots are planted too (a few bytes,
    written by the writer like a real one): matplotlib's drawing is not what these tests test."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "sitecustomize.py").write_text(textwrap.dedent(f"""
        import os, sys, time
        sys.path.insert(0, {str(TESTS)!r})
        import scenarios
        import test_reports
        from harness.cli import console
        from harness.reports import plots, write
        from harness.run.runner import Interrupted

        calls = []

        def run_one(scenario, backends, *args, **kw):
            result = test_reports.planted(scenario, backends)
            calls.append(scenario.name)
            try:
                open(os.path.join({str(directory)!r}, f"started-{{len(calls)}}"), "w").close()
                time.sleep(600 if len(calls) == {stall_at!r} else {delay!r})
            except KeyboardInterrupt:
                result.steps, result.interrupted = result.steps[:1], True
                raise Interrupted(result) from None
            return result

        console.run_one = run_one

        def render_png(report, path=None):
            if path is not None:
                write.data(path, b"planted png")
            return b"planted png"

        plots.render_png = render_png
        whole = scenarios.catalog
        if {only!r}:
            scenarios.catalog = lambda: {{n: dict(t, check=t.get("check") and n in {only!r}) for n, t in whole().items()}}
        console.save_bundle = lambda result, directory, out: os.path.join(str(directory), "planted.npz")
        real_replace = os.replace

        def replace(src, dst, *a, **k):
            if {hold!r} is not None and os.path.basename(str(dst)) == {hold!r}:
                open(str(dst) + ".held", "w").close()
                time.sleep({hold_for!r})
            return real_replace(src, dst, *a, **k)

        os.replace = replace
    """))
    return directory


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def _partials(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.name.endswith(write.SUFFIX))


# ------------------------------------------------------------------------------------ signals

@pytest.mark.backends
@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_a_run_sent_a_signal_mid_way_keeps_every_judged_step(tmp_path, installed, sig, code):
    """The real command, a long run of two real backends, sent Ctrl-C, SIGTERM or SIGHUP after its
    first steps (its progress lines arrive on a pipe from the first step on): the table of the
    steps judged on the console, the JSON report complete and ``interrupted``, the same number of
    steps in both, exit 128 + the signal, no traceback, no bundle."""
    argv = ["run", "--layers", "ReLU;Linear", "--sizes", "4,8,3", "--backends", "numpy,torch", "--steps", "1000000",
            "--json", "r.json"]
    # A test runner started in the background ignores SIGINT, and so would the child: it restores
    # Python's handler itself (a preexec_fn would fork this process, with JAX's threads in it).
    start = ("import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
             "sys.argv[0] = 'nerva-consistency'; runpy.run_module('harness', run_name='__main__')")
    proc = subprocess.Popen([sys.executable, "-c", start, *argv], cwd=tmp_path, env=_env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen, deadline = [], time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        seen.append(line)
        if "(1 of 1,000,000)" in line or not line:
            break
    assert any("loading torch" in s for s in seen), seen
    assert any("(1 of 1,000,000)" in s for s in seen), seen
    time.sleep(0.5)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == code, stderr[-2000:]
    assert "Traceback" not in stderr + stdout
    name = signal.Signals(sig).name
    judged = re.search(rf"INTERRUPTED \({name}\) ad-hoc after ([\d,]+) of 1,000,000 step\(s\) judged", stdout)
    assert judged, stdout[-2000:]
    assert "W1" in stdout and "b2" in stdout  # the table
    report = json.loads((tmp_path / "r.json").read_text())
    steps = int(judged.group(1).replace(",", ""))
    assert report["interrupted"] is True and report["steps_run"] == steps >= 1
    assert len(report["per_step"]) == steps and report["per_step"][-1]["step"] == steps - 1
    assert not (tmp_path / "nerva-consistency-failures").exists() and _partials(tmp_path) == []


@pytest.mark.backends
def test_an_explore_sent_sigterm_writes_what_it_had_searched(tmp_path, installed):
    """The real ``explore --json``, sent SIGTERM after its first progress line (a tenth of the
    budget run): exit 143 and an explore report that says ``interrupted`` and counts at least
    the examples the progress line had reported."""
    proc = subprocess.Popen([sys.executable, "-m", "harness", "explore", "--examples", "200", "--seed", "1",
                             "--backends", "numpy,torch", "--json", "e.json"], cwd=tmp_path, env=_env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen, deadline = [], time.monotonic() + 300
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        seen.append(line)
        if re.match(r"explore: \d+/200 examples", line) or not line:
            break
    done = re.match(r"explore: (\d+)/200 examples", seen[-1])
    assert done, seen
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr[-2000:]
    assert "INTERRUPTED" in stdout and "Traceback" not in stderr + stdout
    report = json.loads((tmp_path / "e.json").read_text())
    assert report["interrupted"] is True and report["budget"] == 200
    assert int(done.group(1)) <= report["examples"] < 200
    assert _partials(tmp_path) == []


def test_a_signal_while_the_reports_are_written_takes_effect_once_they_are_whole(tmp_path):
    """SIGTERM between the JSON report's write and its rename (the planted rename waits): the
    report is finished first, whole and new, then the command ends as interrupted (143)."""
    plant = _plant(tmp_path / "plant", hold="r.json", hold_for=1.5)
    (tmp_path / "r.json").write_text('{"old": true}\n')
    proc = subprocess.Popen([sys.executable, "-m", "harness", "run", "--scenario", "relu-softmax", "--backends",
                             "numpy,torch", "--quiet", "--json", "r.json"], cwd=tmp_path, env=_env(plant), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _wait_for(tmp_path / "r.json.held", proc)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr
    assert "PASS relu-softmax" in stdout and stderr.strip().endswith("nerva-consistency: interrupted (SIGTERM)")
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["scenario"] == "relu-softmax" and report["steps_run"] == 3 and report["interrupted"] is False
    assert _partials(tmp_path) == []


def test_a_second_signal_ends_the_process_at_once_and_leaves_the_previous_file(tmp_path):
    """The first SIGTERM interrupts the run; while its report is being renamed into place (held),
    a second one ends the process at once, by the signal: the previous report is intact, and the
    temporary file it leaves is never read by a merge and is removed by the next write there."""
    plant = _plant(tmp_path / "plant", stall_at=1, hold="r.json", hold_for=60)
    old = '{"old": true}\n'
    (tmp_path / "r.json").write_text(old)
    proc = subprocess.Popen([sys.executable, "-m", "harness", "run", "--scenario", "relu-softmax", "--backends",
                             "numpy,torch", "--quiet", "--json", "r.json"], cwd=tmp_path, env=_env(plant), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _wait_for(plant / "started-1", proc)  # the planted run has started and stalls: the signal interrupts it
    proc.send_signal(signal.SIGTERM)
    _wait_for(tmp_path / "r.json.held", proc)
    start = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGTERM and time.monotonic() - start < 30  # not the 60 s hold
    assert re.search(r"INTERRUPTED \(SIGTERM\) relu-softmax after 1 of [\d,]+ step\(s\) judged", stdout), stdout
    assert (tmp_path / "r.json").read_text() == old
    left = _partials(tmp_path)
    assert len(left) == 1 and left[0].name.startswith(".r.json.")
    assert merge.load(tmp_path).ignored == [tmp_path / "r.json"]  # the old file: not a report; the partial unread
    write.text(tmp_path / "other.txt", "x")  # the next write into the directory sweeps a dead writer's file
    assert _partials(tmp_path) == []


def test_signals_ignored_at_start_stay_ignored_and_the_handlers_come_back():
    """``nohup`` (SIGHUP ignored) is respected; after the command the previous handlers return."""
    before_hup, before_term = signal.getsignal(signal.SIGHUP), signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with signals.handled():
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) is not before_term
        assert signal.getsignal(signal.SIGTERM) is before_term
    finally:
        signal.signal(signal.SIGHUP, before_hup)
    assert signals.exit_code() == 130 and signals.received() is None


# ------------------------------------------------------------------------------------ the writer

def test_a_writer_killed_between_write_and_rename_leaves_the_old_file(tmp_path):
    """A process that dies (``os._exit``, no clean-up at all) inside ``os.replace``: the old file
    is intact; what it leaves is a hidden ``.partial`` that no merge reads, removed by the next
    writer in that directory once that process is gone."""
    target = tmp_path / "report.json"
    write.json_file(target, {"schema": "old"})
    code = ("import os\nfrom harness.reports import write\n"
            "os.replace = lambda *a, **k: os._exit(9)\n"
            f"write.json_file({str(target)!r}, {{'schema': 'new', 'data': list(range(100000))}})\n")
    done = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 9, done.stderr
    assert json.loads(target.read_text()) == {"schema": "old"}
    left = _partials(tmp_path)
    assert len(left) == 1 and left[0].stat().st_size > 100000  # the whole new content, never renamed
    assert merge.load(tmp_path).ignored == [target]
    write.text(tmp_path / "summary.md", "next\n")
    assert _partials(tmp_path) == [] and json.loads(target.read_text()) == {"schema": "old"}


def test_an_interruption_or_a_bug_between_write_and_rename_removes_the_temporary_file(tmp_path, monkeypatch):
    target = tmp_path / "page.html"
    target.write_text("old")
    for raised in (KeyboardInterrupt(), RuntimeError("planted")):
        def replace(*a, raised=raised, **k):
            raise raised

        monkeypatch.setattr(os, "replace", replace)
        with pytest.raises(type(raised)):
            write.text(target, "new")
        assert target.read_text() == "old" and _partials(tmp_path) == []


def test_a_bug_while_a_bundle_is_streamed_is_exit_3_and_the_old_bundle_stays(tmp_path, monkeypatch, capsys):
    """A harness bug in the middle of a bundle's arrays (planted in np.lib.format.write_array):
    the earlier bundle is intact, no temporary file, and the command says internal error (3)."""
    import numpy as np

    from test_hostile import _good_bundle

    path = _good_bundle(tmp_path / "b")
    before = path.read_bytes()
    calls = []

    def broken(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise ZeroDivisionError("planted")
        return real(*a, **k)

    real = np.lib.format.write_array
    monkeypatch.setattr(np.lib.format, "write_array", broken)
    with pytest.raises(ZeroDivisionError):
        _good_bundle(tmp_path / "b")
    assert path.read_bytes() == before and _partials(tmp_path) == []
    monkeypatch.setattr(console, "run_one", lambda *a, **k: _failing_result())
    monkeypatch.setattr(console, "print_result", lambda *a, **k: None)
    calls.clear()
    assert cli.main(["run", "--scenario", "relu-softmax", "--backends", "numpy,torch", "--quiet",
                     "--bundle-dir", str(tmp_path / "bundles")]) == 3
    assert "internal error: ZeroDivisionError: planted" in capsys.readouterr().err
    assert _partials(tmp_path) == []


def _failing_result():
    from harness.judge.compare import StepVerdict, TensorVerdict
    from harness.run.runner import RunResult
    from harness.spec.data import batches
    from harness.spec.scenario import build_scenario
    from harness.spec.state import initial_state

    sc = build_scenario(name="ad-hoc", layers="ReLU;Linear", sizes="4,8,3", optimizers="GradientDescent",
                        init_weights=None, loss="SquaredError", lr=0.01, batch_size=16, steps=1)
    r = RunResult(sc, ["numpy", "torch"], oracle=None, oracle_note="none", inputs=(initial_state(sc), batches(sc)))
    r.steps.append(StepVerdict(0, [TensorVerdict(("W", 1), {"numpy": 0.1, "torch": 9.0}, {"numpy": 0, "torch": 0},
                                                 blamed=["torch"])], [], 0, 0))
    return r


def test_a_link_keeps_pointing_at_its_target_and_a_device_is_written_into_not_replaced(tmp_path):
    real, link = tmp_path / "real.json", tmp_path / "link.json"
    real.write_text("old")
    link.symlink_to(real)
    write.text(link, "new")
    assert link.is_symlink() and real.read_text() == "new"
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    write.json_file(fifo, {"a": 1})
    reader.join(30)
    assert got == [b'{\n "a": 1\n}\n'] and fifo.is_fifo() and _partials(tmp_path) == []
    write.text(os.devnull, "nothing")
    assert Path(os.devnull).is_char_device()


def test_two_writers_of_one_path_at_once_each_leave_a_whole_file(tmp_path):
    """One writer half way through its file while another replaces the target: whoever renames
    last wins, and the target is always one of the two whole contents."""
    target = tmp_path / "r.json"
    a, b = b"A" * 300000, b"B" * 200000
    halfway, go_on = threading.Event(), threading.Event()

    def slow() -> None:
        with write.replacing(target) as f:
            f.write(a[:100000])
            halfway.set()
            go_on.wait(30)
            f.write(a[100000:])

    t = threading.Thread(target=slow)
    t.start()
    halfway.wait(30)
    write.data(target, b)
    assert target.read_bytes() == b
    go_on.set()
    t.join(30)
    assert target.read_bytes() == a and _partials(tmp_path) == []


# ------------------------------------------------------------------------------------ full, read-only

def test_a_full_disk_is_exit_2_after_the_verdict_and_the_old_report_stays(tmp_path, monkeypatch, capsys):
    """Every byte of an output goes out through os.write; made to fail with ENOSPC, the run's
    verdict is printed first, then one line names the file and the OS error (exit 2); the old
    report is intact and no temporary file is left. The same for check --out."""
    from test_reports import planted

    monkeypatch.setattr(console, "run_one", planted)
    real = os.write

    def full(fd, data):
        if fd > 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd, data)

    report = tmp_path / "r.json"
    report.write_text('{"old": true}\n')
    monkeypatch.setattr(os, "write", full)
    code = cli.main(["run", "--scenario", "relu-softmax", "--backends", "numpy,torch", "--quiet", "--json", str(report)])
    out, err = capsys.readouterr()
    assert code == 2 and "PASS relu-softmax" in out
    assert err == (f"nerva-consistency: error: cannot write {str(report)!r}: [Errno 28] No space left on device; any "
                   "previous file there is left as it was and no part of the new one: free space or choose a path you "
                   "can write to\n")
    assert report.read_text() == '{"old": true}\n' and _partials(tmp_path) == []
    code = cli.main(["check", *PLANTED_RUN, "--out", str(tmp_path / "out"), "--shard", "1/12"])
    out, err = capsys.readouterr()
    assert code == 2 and "PASS" in out and "No space left on device" in err and err.count("\n") == 1
    assert _partials(tmp_path) == []


_SMALL_FS = """
set -e
mount -t tmpfs -o size=64k tmpfs "$1"
cd "$1"
"$2" - <<'EOF'
import errno, json, os
from harness.reports import write
write.text("r.json", "old\\n")
out = {}
try:
    write.data("r.json", b"x" * 200000)
except write.WriteFailed as e:
    out["full"] = e.error.errno
out["after_full"] = [open("r.json").read(), sorted(os.listdir("."))]
os.system("mount -o remount,ro .")
try:
    write.text("r.json", "new\\n")
except write.WriteFailed as e:
    out["read_only"] = e.error.errno
out["after_read_only"] = open("r.json").read()
print(json.dumps(out))
EOF
"""


def test_a_full_and_a_read_only_file_system_for_real(tmp_path):
    """A 64 kB tmpfs, mounted in a private mount namespace (gone with the process): a 200 kB
    report fails with ENOSPC, then the file system is made read-only and a write fails with
    EROFS; each time the old file is intact and nothing else is in the directory."""
    if shutil.which("unshare") is None:
        pytest.skip("no unshare(1) here")
    fs = tmp_path / "fs"
    fs.mkdir()
    done = subprocess.run(["unshare", "-m", "sh", "-c", _SMALL_FS, "sh", str(fs), sys.executable],
                          capture_output=True, text=True, timeout=60, env=_env())
    if done.returncode != 0 and ("mount" in done.stderr or "unshare" in done.stderr):
        pytest.skip(f"a private tmpfs is not permitted here: {done.stderr.strip()[:200]}")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["full"] == errno.ENOSPC and out["after_full"] == ["old\n", ["r.json"]]
    assert out["read_only"] == errno.EROFS and out["after_read_only"] == "old\n"


def test_a_read_only_directory_is_eacces_and_the_old_file_stays():
    """chmod 555: as root that does not stop a write, so the writer then runs as ``nobody``."""
    directory = Path(tempfile.mkdtemp())
    try:
        (directory / "r.json").write_text("old\n")
        os.chmod(directory / "r.json", 0o644)
        os.chmod(directory, 0o555)
        code = ("import json, os\nfrom harness.reports import write\n"
                + ("os.setgid(65534); os.setuid(65534)\n" if os.geteuid() == 0 else "")
                + f"try:\n    write.text({str(directory / 'r.json')!r}, 'new')\n"
                "except write.WriteFailed as e:\n    print(json.dumps([e.error.errno, str(e)]))\n")
        done = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=60,
                              cwd="/")
        assert done.returncode == 0, done.stderr
        number, message = json.loads(done.stdout)
        assert number == errno.EACCES and "[Errno 13] Permission denied" in message and "r.json" in message
        assert (directory / "r.json").read_text() == "old\n" and os.listdir(directory) == ["r.json"]
    finally:
        os.chmod(directory, 0o755)
        shutil.rmtree(directory)


# ------------------------------------------------------------------------------------ check and merge

def test_concurrent_shards_into_one_out_merge_to_the_unsharded_check(tmp_path):
    """Two ``check --shard`` processes into one --out, the second started while the first is
    writing (planted runs, each taking a moment): neither removes nor overwrites the other's
    files, each shard has its own manifest, and the merge -- of the JSON, and the merged page
    the last one wrote -- has exactly the unsharded check's totals, findings and runs."""
    plant = _plant(tmp_path / "plant", delay=0.05, only=("relu-softmax", "kink-ties"))
    whole, shared = tmp_path / "whole", tmp_path / "shared"
    base = [sys.executable, "-m", "harness", "check", *PLANTED_RUN, "--bundle-dir", str(tmp_path / "b")]
    unsharded = subprocess.run(base + ["--json", str(whole)], env=_env(plant), capture_output=True, text=True,
                               timeout=300)
    assert unsharded.returncode == 1, unsharded.stderr
    first = subprocess.Popen(base + ["--out", str(shared), "--shard", "1/2"], env=_env(plant), text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not list((shared / "json").glob("*.json")):
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()
        time.sleep(0.02)
    second = subprocess.run(base + ["--out", str(shared), "--shard", "2/2"], env=_env(plant), capture_output=True,
                            text=True, timeout=300)
    first_out, first_err = first.communicate(timeout=300)
    assert {first.returncode, second.returncode} <= {0, 1}, (first_err, second.stderr)
    a, b = merge.merge(merge.load(whole)), merge.merge(merge.load(shared / "json"))
    assert a.totals == b.totals == {"runs": 16, "passed": 13, "failed": 3, "known": 0, "interrupted": 0}
    assert b.missing == {}
    assert sorted(r["check"]["run"] for _, r in a.reports) == sorted(r["check"]["run"] for _, r in b.reports)
    assert a.failed_scenarios == b.failed_scenarios and len(a.findings) == len(b.findings)
    assert sorted(p.name for p in (shared / "json").glob("check*.json")) == ["check-1of2.json", "check-2of2.json"]
    assert json.loads((shared / "merged.json").read_text())["totals"] == a.totals  # the last render saw both
    assert _partials(tmp_path) == []


def test_an_interrupted_check_is_red_with_how_far_it_got_not_missing(tmp_path, monkeypatch):
    """The third run of a shard interrupted after two of its steps: its report says so, the
    manifest says how far the check got, and the merge counts an interruption (red), not the
    runs it never reached as missing; JUnit gives that run's backends an error."""
    from test_reports import planted

    calls = []

    def run_one(scenario, backends, *a, **k):
        calls.append(scenario.name)
        result = planted(scenario, backends)
        if len(calls) == 3:
            result.steps, result.interrupted = result.steps[:2], True
            raise Interrupted(result)
        return result

    monkeypatch.setattr(console, "run_one", run_one)
    monkeypatch.setattr(console, "print_result", lambda *a, **k: None)
    monkeypatch.delenv("NERVA_CONSISTENCY_CELL", raising=False)
    out = tmp_path / "out"
    assert cli.main(["check", *PLANTED_RUN, "--out", str(out), "--shard", "1/3"]) == 130
    manifest = json.loads((out / "json" / "check-1of3.json").read_text())
    stop = manifest["interrupted"]
    stopped = next(r for _, r in merge.load(out / "json").reports if r["check"]["status"] == "interrupted")
    assert stopped["interrupted"] is True and stopped["check"]["run"] == stop["run"] and stopped["steps_run"] == 2
    assert stop["signal"] is None and stop["runs_done"] == 2 and stop["steps_run"] == 2
    assert stop["steps"] == stopped["steps"]
    assert manifest["exit"] == 130 and manifest["counts"]["interrupted"] == 1
    m = merge.merge(merge.load(out / "json"))
    (cell,) = m.cells.values()
    assert m.red and m.missing == {} and m.totals["interrupted"] == 1 and m.totals["runs"] == 3
    assert cell["interrupted"] == [{**stop, "shard": "1/3", "runs": len(manifest["runs"])}]
    assert len(cell["not_reached"]) == len(manifest["runs"]) - 3
    text = merge.markdown(m)
    assert f"shard 1/3 interrupted during {stop['run']} after 2 of {stop['steps']} step(s) judged, 2 of " \
           f"{len(manifest['runs'])} run(s) done" in text and "RED" in text and "planned, no report" not in text
    blamed = set((stopped.get("first_divergence") or {}).get("backends", [])) | set(stopped["failures"] or {})
    junit = (out / "junit.xml").read_text()  # every backend of the interrupted run not already failed
    assert junit.count('type="Interrupted"') == len(set(stopped["backends"]) - blamed) > 0


def test_sigterm_mid_check_writes_the_runs_done_and_the_merge_says_interrupted(tmp_path):
    """The real command, SIGTERM while its third run is in progress (planted, stalled there)."""
    plant = _plant(tmp_path / "plant", stall_at=3)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "harness", "check", *PLANTED_RUN, "--out", str(out)],
                            env=_env(plant), text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _wait_for(plant / "started-3", proc)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr
    assert "INTERRUPTED check during" in stdout and "Traceback" not in stderr
    stop = json.loads((out / "json" / "check.json").read_text())["interrupted"]
    assert stop["signal"] == "SIGTERM" and stop["runs_done"] == 2 and stop["steps_run"] == 1
    m = merge.merge(merge.load(out / "json"))
    assert m.red and m.missing == {} and m.totals["runs"] == stop["runs_done"] + 1
    assert json.loads((out / "merged.json").read_text())["cells"][next(iter(m.cells))]["interrupted"][0]["signal"] \
        == "SIGTERM"
    assert _partials(out) == []


def test_a_merge_never_reads_a_half_written_file(tmp_path, monkeypatch):
    """What a writer has not renamed yet is a ``.partial``: the merge does not see it at all."""
    from test_reports import planted

    monkeypatch.setattr(console, "run_one", planted)
    monkeypatch.setattr(console, "print_result", lambda *a, **k: None)
    assert cli.main(["check", *PLANTED_RUN, "--json", str(tmp_path), "--shard", "1/12"]) in (0, 1)
    before = merge.merge(merge.load(tmp_path)).totals
    one = next(p for p, r in merge.load(tmp_path).reports)
    (tmp_path / f".{one.name}.{os.getpid()}.abcdefgh{write.SUFFIX}").write_text(one.read_text()[:200])
    loaded = merge.load(tmp_path)
    assert merge.merge(loaded).totals == before and loaded.ignored == []
