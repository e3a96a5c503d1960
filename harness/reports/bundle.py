"""Repro bundles: one file that reruns a failure anywhere, without any RNG.

A bundle (``.npz``) holds the exact initial parameters (``state/<name>``), every batch
(``data/<step>/X``, ``data/<step>/T``) and one JSON document (``meta``) with the spec (the
complete flags of ``nerva-consistency run``), the backends, the oracle, the seed, the versions
of Python, NumPy, every framework, the Nerva libraries and Hypothesis, the platform
(:func:`harness.reports.machine.describe`: CPU model and flags, BLAS kernels, torch's CPU capability,
the variables that force kernels), the findings, the verdict, and the numbers the run produced
(every step's ratio per tensor and backend, and the first divergence).

``nerva-consistency replay FILE`` rebuilds the scenario and runs it on exactly those arrays.
The last bits of a result depend on the CPU (BLAS, oneDNN and XLA pick kernels by CPU), so:

- same platform and versions as the recording: the numbers are compared bit for bit;
- otherwise (or a schema-1 bundle, which does not say its platform): the *verdict* is compared
  (passed or not, the finding classes with the backends they blame, the first divergence's
  step, tensor and layer), and the replay says which platform fields or versions differ.
  Kink events (which side of a kink a value lands on) are decided by rounding, so a
  ``kink``/``convention`` finding that appears or vanishes is a note, not a difference.

A bundle holds the batches of the steps the run judged (a run that stopped at its first
failure needs no more to stop there again). Its name is the scenario's (or ``stem``) and a
digest of the failure: the spec, backends, oracle, inputs and verdict. A rerun that fails the
same way therefore writes the same file and replaces it (:func:`bundle_path`, and the command
line says so); a different failure gets its own. A bundle is validated before it is read
(:func:`bundle`) and is never unpickled.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import json
import os
import time
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from harness.core import components
from harness.core.errors import SpecError
from harness.core.keys import Key
from harness.judge.message import of_verdict, where
from harness.spec.memory import BYTES, estimate, memory_for
from harness.spec.rules import Archive, first_nonfinite, input_file, shape_text
from harness.run.findings import classify
from harness.reports.machine import describe, explain
from harness.reports import write
from harness.reports.report import reproduce, to_json, versions
from harness.run.runner import RunResult, run
from harness.spec.data import TARGETS
from harness.spec.flags import ADDED_LATER, NAMES, flags
from harness.spec.scenario import Scenario

BUNDLE_READS = ("nerva-consistency/bundle/1", "nerva-consistency/bundle/2")  # schema 1: no platform, no verdict
BUNDLE_SPEC = tuple(name for name in NAMES if name not in ("dataset", *ADDED_LATER))  # a bundle holds its data
ORACLES = (*components.ORACLES, "none")


def _need(cond: bool, what: str, problem: str, mend: str) -> None:
    if not cond:
        raise SpecError(f"{what} is damaged: {problem}; {mend}")


def _meta(meta: Any, what: str, mend: str, reads: tuple[str, ...]) -> dict:
    """Every key of ``meta`` that a replay reads, with its type."""
    _need(isinstance(meta, dict), what, "its meta is not a JSON object", mend)
    schema = meta.get("schema")
    if schema not in reads:
        raise SpecError(f"{what} is a bundle of schema {schema!r}; this version reads {' and '.join(reads)}")

    def has(key: str, types: type | tuple, container: dict = meta, where: str = "meta") -> Any:
        _need(key in container, what, f"{where} has no {key!r}", mend)
        _need(isinstance(container[key], types), what, f"{where}[{key!r}] is a {type(container[key]).__name__}", mend)
        return container[key]

    has("scenario", str)
    spec = has("spec", dict)
    for key in BUNDLE_SPEC:
        has(key, (str, int, float), spec, "meta['spec']")
    names = has("backends", list)
    _need(bool(names) and all(isinstance(b, str) and b for b in names), what, "meta['backends'] is not a list of names",
          mend)
    _need(has("oracle", str) in ORACLES, what, f"meta['oracle'] is {meta['oracle']!r}, not one of {', '.join(ORACLES)}",
          mend)
    versions = has("versions", dict)
    _need(all(isinstance(v, (str, type(None))) for v in versions.values()), what, "meta['versions'] holds non-text",
          mend)
    numbers = has("numbers", dict)
    per_step = has("per_step", list, numbers, "meta['numbers']")
    _need(all(isinstance(s, dict) and "step" in s and isinstance(s.get("ratio"), dict) for s in per_step), what,
          "meta['numbers']['per_step'] is not a list of steps with ratios", mend)
    has("failures", dict, numbers, "meta['numbers']")
    has("first_divergence", (dict, type(None)), numbers, "meta['numbers']")

    def verdict_like(v: dict, where: str, cls: str) -> None:
        _need(isinstance(v.get("findings"), list) and all(
            isinstance(f, dict) and isinstance(f.get(cls), str) and isinstance(f.get("backends"), list)
            and all(isinstance(b, str) for b in f["backends"]) for f in v["findings"]), what,
            f"{where} has no list of findings (class and backends)", mend)
        _need("first_divergence" in v, what, f"{where} has no 'first_divergence'", mend)
        first = v["first_divergence"]
        _need(first is None or (isinstance(first, dict) and all(k in first for k in ("step", "tensor", "layer"))),
              what, f"{where}'s first_divergence lacks step, tensor or layer", mend)

    if "verdict" in meta:
        v = has("verdict", dict)
        _need("passed" in v, what, "meta['verdict'] has no 'passed'", mend)
        verdict_like(v, "meta['verdict']", "class")
    else:  # schema 1: derived from the findings and numbers
        has("findings", list)
        verdict_like({"findings": meta["findings"], "first_divergence": numbers["first_divergence"]}, "meta", "cls")
    platform = meta.get("platform")
    _need(platform is None or isinstance(platform, dict), what, "meta['platform'] is not an object", mend)
    if platform:
        for key, types in (("blas", list), ("env", dict), ("cpu_flags", list)):
            _need(platform.get(key) is None or isinstance(platform[key], types), what,
                  f"meta['platform'][{key!r}] is a {type(platform.get(key)).__name__}", mend)
        _need(all(isinstance(e, dict) for e in platform.get("blas") or []), what,
              "meta['platform']['blas'] is not a list of objects", mend)
    return meta


def _read_meta(archive: Archive, what: str, mend: str) -> dict:
    """The bundle's meta: one JSON text, with every key a replay reads (:func:`_meta`)."""
    _need("meta" in archive.headers, what, "it has no meta (is it a nerva-consistency bundle?)", mend)
    shape, dtype = archive.headers["meta"]
    _need(dtype.kind == "U" and shape == (), what, f"its meta is {dtype} of shape {shape_text(shape)}, not one JSON text",
          mend)
    raw = archive.read("meta")
    try:
        meta = json.loads(str(raw))
    except ValueError as e:
        raise SpecError(f"{what} is damaged: its meta is not JSON ({e}); {mend}") from None
    return _meta(meta, what, mend, BUNDLE_READS)


def _scenario(meta: dict, what: str, mend: str) -> tuple[Scenario, str | None]:
    """The scenario the meta's spec builds, and the oracle it asks for (a spec that does not build
    is a damaged bundle)."""
    from harness.run import choice as oracles
    from harness.spec.scenario import DataSpec, build_scenario

    s = meta["spec"]
    ints = {key: _int(s[key], what, key, mend) for key in ("batch-size", "steps", "seed")}
    try:
        scenario = build_scenario(
            name=meta["scenario"], layers=str(s["layers"]), sizes=str(s["sizes"]), optimizers=str(s["optimizers"]),
            init_weights=str(s["init-weights"]) or None, loss=str(s["loss"]), lr=str(s["learning-rate"]),
            batch_size=ints["batch-size"], steps=ints["steps"], data=DataSpec("synthetic", str(s["targets"])),
            dtype=str(s["dtype"]), mode=str(s["mode"]), seed=ints["seed"], description=str(meta.get("description", "")))
        if scenario.data.targets not in TARGETS:
            raise SpecError(f"targets {scenario.data.targets!r} are not onehot, soft or real")
        oracle, _ = oracles.choose(scenario, meta["oracle"])
    except SpecError as e:
        raise SpecError(f"{what} is damaged: its spec is not valid ({e}); {mend}") from None
    return scenario, oracle


def _check_arrays(archive: Archive, scenario: Scenario, expected: dict[str, tuple], spec: dict, what: str,
                  mend: str) -> int:
    """Every parameter of the model with its shape (and no other), the batches 0 … n-1
    (1 <= n <= steps) with the spec's shapes, floating-point arrays only; returns n."""
    state_names = {k[len("state/"):] for k in archive.headers if k.startswith("state/")}
    for name, want in expected.items():
        _need(name in state_names, what, f"state/{name} is missing (the spec's model has {', '.join(expected)})", mend)
        got = archive.headers[f"state/{name}"][0]
        _need(got == want, what, f"state/{name} has shape {shape_text(got)}, but the spec "
                                 f"({spec['layers']}, sizes {spec['sizes']}) needs {shape_text(want)}", mend)
    extra = sorted(state_names - set(expected))
    _need(not extra, what, f"state/{extra[0] if extra else ''} is not a parameter of the spec's model", mend)
    N, D, K = scenario.batch_size, scenario.input_size, scenario.output_size
    steps_found: set[int] = set()
    for key in archive.headers:
        if key == "meta" or key.startswith("state/"):
            continue
        parts = key.split("/")
        ok = len(parts) == 3 and parts[0] == "data" and parts[1].isdigit() and parts[2] in ("X", "T")
        _need(ok, what, f"member {key!r} is not meta, state/<parameter> or data/<step>/X|T", mend)
        steps_found.add(int(parts[1]))
    n = len(steps_found)
    _need(n >= 1, what, "it holds no batch (data/0/X)", mend)
    _need(steps_found == set(range(n)), what, f"its batches are not numbered 0 … {n - 1} "
                                              f"(data/{min(set(range(n)) - steps_found, default=n)} is missing)", mend)
    _need(n <= scenario.steps, what, f"it holds {n} batches for a spec of {scenario.steps} steps", mend)
    for i in range(n):
        for name, want in (("X", (N, D)), ("T", (N, K))):
            key = f"data/{i}/{name}"
            _need(key in archive.headers, what, f"{key} is missing", mend)
            got = archive.headers[key][0]
            _need(got == want, what, f"{key} has shape {shape_text(got)}, but the spec (batch size {N}, sizes "
                                     f"{spec['sizes']}) needs {shape_text(want)}", mend)
    for key, (_, dt) in archive.headers.items():
        if key != "meta":
            _need(dt.kind == "f", what, f"{key} holds {dt}, not floating-point numbers", mend)
    return n


def bundle(text: str) -> tuple[dict, "Scenario", dict[str, np.ndarray], list[tuple[np.ndarray, np.ndarray]]]:
    """(meta, scenario, initial state, batches) of a repro bundle, every rule checked before an
    array is read: the meta's keys, a spec that builds, the memory it needs, every parameter
    the spec's model has with its shape (and no other), the batches 0 … n-1 (1 <= n <= steps)
    with the spec's shapes, finite real values."""
    from harness.spec.state import param_shapes

    path = input_file(text, "bundle", "give a .npz bundle written by a failing run or by explore")
    what = f"bundle {str(path)!r}"
    mend = "it cannot be replayed; rerun the command that wrote it to write it again"
    archive = Archive(path, what, mend, "is damaged")
    try:
        meta = _read_meta(archive, what, mend)
        s = meta["spec"]
        scenario, oracle = _scenario(meta, what, mend)
        held = sum(math.prod(shape) * BYTES for shape, _ in archive.headers.values())
        memory_for(estimate(scenario, len(meta["backends"]), oracle) + held,
                   f"{what} ({len(archive.headers)} arrays of {held:,} bytes as float64, sizes {s['sizes']}, "
                   f"batch size {s['batch-size']})", "it was written on a larger machine, or its spec was altered")
        expected = param_shapes(scenario)
        n = _check_arrays(archive, scenario, expected, s, what, mend)

        def array(key: str) -> np.ndarray:
            a = archive.read(key).astype(np.float64)
            bad = first_nonfinite(a)
            _need(bad is None, what, f"{key}{list(bad[0]) if bad else ''} is {bad[1] if bad else ''!r}, not finite", mend)
            return a

        state0 = {name: array(f"state/{name}") for name in expected}
        data = [(array(f"data/{i}/X"), array(f"data/{i}/T")) for i in range(n)]
    finally:
        archive.close()
    meta.setdefault("platform", None)
    return meta, scenario, state0, data


def _int(value: Any, what: str, key: str, mend: str) -> int:
    try:
        return int(str(value))
    except ValueError:
        raise SpecError(f"{what} is damaged: meta['spec'][{key!r}] is {value!r}, not a whole number; {mend}") from None


SCHEMA = "nerva-consistency/bundle/2"
READS = BUNDLE_READS  # schema 1: no platform, no verdict (derived on load)
assert SCHEMA in READS
DEFAULT_DIR = Path("nerva-consistency-failures")
KINK_CLASSES = ("kink", "convention")  # which side of a kink a value lands on: decided by rounding


class Differences(list):
    """What a replay found different from the recording: the list itself holds the real
    differences ([] = the recording reproduced), as before; besides it

    ``compared``  "numbers" (bit for bit), "verdict", or None (other backends: nothing compared);
    ``reasons``   why the verdict was compared: the platform fields or versions that differ, or
                  a recording that does not say its platform ([] for numbers);
    ``notes``     what differs without making the replay differ (kink events; after numbers
                  that differ, whether the verdict did too).
    """

    def __init__(self, items: Iterable[str] = (), compared: str | None = None, reasons: Iterable[str] = (),
                 notes: Iterable[str] = ()):
        super().__init__(items)
        self.compared = compared
        self.reasons = list(reasons)
        self.notes = list(notes)

    @property
    def reproduced(self) -> bool:
        """The recording reproduced: nothing but notes differs (False when nothing was compared)."""
        return self.compared is not None and not self


def _numbers(doc: dict[str, Any]) -> dict[str, Any]:
    """The part of a report that a replay on the same platform must reproduce exactly."""
    return {"per_step": [{"step": s["step"], "ratio": s["ratio"]} for s in doc["per_step"]],
            "first_divergence": doc["first_divergence"], "failures": doc["failures"]}


def _as_recorded(then: dict[str, Any], now: dict[str, Any]) -> dict[str, Any]:
    """``now``'s numbers with only the first-divergence fields the recording has: a field added
    within the schema since (``outside``, ``elements``) is not a difference."""
    a, b = then.get("first_divergence"), now.get("first_divergence")
    if isinstance(a, dict) and isinstance(b, dict):
        now = {**now, "first_divergence": {k: v for k, v in b.items() if k in a}}
    return now


def verdict(result: RunResult) -> dict[str, Any]:
    """The part of a run that must reproduce on any platform: passed or not, each finding's
    class and the backends it names, and where the first divergence is (not which element)."""
    first = result.first_divergence
    return {
        "passed": result.passed,
        "findings": [{"class": f.cls, "backends": list(f.backends)} for f in classify(result)],
        "first_divergence": None if first is None else
        {"step": first[0], "tensor": first[1].key[0], "layer": first[1].key[1]},
    }


def recorded_verdict(meta: dict[str, Any]) -> dict[str, Any]:
    """A bundle's verdict (schema 1 bundles: derived from their findings and numbers)."""
    if "verdict" in meta:
        return meta["verdict"]
    numbers = meta["numbers"]
    first = numbers["first_divergence"]
    return {
        "passed": first is None and not numbers["failures"],
        "findings": [{"class": f["cls"], "backends": list(f["backends"])} for f in meta["findings"]],
        "first_divergence": None if first is None else {k: first[k] for k in ("step", "tensor", "layer")},
    }


def _where(v: dict[str, Any]) -> str | None:
    """Where a verdict's first divergence is: ``step 0, DX of layer 2`` (None: there is none)."""
    f = v["first_divergence"]
    return None if f is None else where(f["step"], Key(f["tensor"], f["layer"]).label)


def describe_verdict(v: dict[str, Any], sentence: str | None = None) -> str:
    """One text: ``FAIL: bug (jax); first divergence at step 0, DX of layer 2``, or with the first
    divergence's ``sentence`` (:mod:`harness.judge.message`) ``…; first divergence: step 0, …``."""
    findings = ", ".join(f"{f['class']} ({', '.join(f['backends'])})" for f in v["findings"])
    at = _where(v)
    first = "" if at is None else f"first divergence: {sentence}" if sentence else f"first divergence at {at}"
    return ("PASS" if v["passed"] else "FAIL") + ": " + ("; ".join(x for x in (findings, first) if x) or "no findings")


def describe_result(result: RunResult) -> str:
    """:func:`describe_verdict` of a run, with its first divergence's sentence."""
    first = result.first_divergence
    return describe_verdict(verdict(result), None if first is None else of_verdict(*first, result.oracle))


def compare_verdicts(recorded: dict[str, Any], now: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(differences, notes) between two verdicts; kink-side findings only make notes."""
    differences, notes = [], []
    if bool(recorded["passed"]) != bool(now["passed"]):
        differences.append(f"passed: recorded {'PASS' if recorded['passed'] else 'FAIL'}, "
                           f"replay {'PASS' if now['passed'] else 'FAIL'}")

    def findings(v: dict, kink: bool) -> list[str]:
        return sorted(f"{f['class']} ({', '.join(sorted(f['backends']))})" for f in v["findings"]
                      if (f["class"] in KINK_CLASSES) == kink)

    for kink in (False, True):
        a, b = findings(recorded, kink), findings(now, kink)
        if a != b:
            text = f"recorded {'; '.join(a) or 'none'}, replay {'; '.join(b) or 'none'}"
            if kink:
                notes.append(f"kink events differ (rounding decides the side of a kink): {text}")
            else:
                differences.append(f"findings: {text}")

    then, there = _where(recorded) or "none", _where(now) or "none"
    if then != there:
        differences.append(f"first divergence: recorded {then}, replay {there}")
    return differences, notes


def _saved_data(result: RunResult) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The batches of the steps the run judged (at least one), one at a time: all a replay needs
    to stop where the run stopped. Lazily made batches are not made beyond them."""
    _, data = result.inputs
    n = len(data) if not result.stopped_early else max(1, result.steps_run)
    return itertools.islice(iter(data), min(n, len(data)))


def bundle_path(result: RunResult, directory: Path | str = DEFAULT_DIR, stem: str | None = None) -> Path:
    """Where :func:`save` writes ``result``'s bundle: the same absolute path for the same failure
    (spec, backends, oracle, inputs and verdict), so a rerun replaces its bundle."""
    sc = result.scenario
    state0, _ = result.inputs
    digest = hashlib.sha256(json.dumps([flags(sc), result.backends, result.oracle, verdict(result)],
                                       sort_keys=True, default=str).encode())
    for key in sorted(state0):
        digest.update(key.encode() + np.ascontiguousarray(state0[key]).tobytes())
    for X, T in _saved_data(result):
        digest.update(np.ascontiguousarray(X).tobytes() + np.ascontiguousarray(T).tobytes())
    name = f"{stem or f'{sc.name}-seed{sc.seed}-{sc.dtype}-{sc.mode}'}-{digest.hexdigest()[:10]}.npz"
    return Path(os.path.abspath(directory)) / name


def save(result: RunResult, directory: Path | str = DEFAULT_DIR, hypothesis: dict | None = None,
         stem: str | None = None, commands: Callable[[Path], dict[str, str]] | None = None) -> Path:
    """Write ``result``'s bundle into ``directory``; returns its path.

    ``hypothesis``: how a Hypothesis search found it (seed, reproduce blob, …); ``commands(path)``:
    the commands that reproduce it (given the bundle's path), when the ``run`` command would not (an example drawn by
    Hypothesis holds explicit arrays that no ``run`` seed regenerates: there, the ``explore``
    command with its seed and the replay of this bundle are the equivalents). ``stem``: the file
    name without its digest (default: scenario, seed, dtype and mode). The path is
    :func:`bundle_path`'s: a bundle of the same failure is replaced (atomically)."""
    if result.inputs is None:
        raise ValueError("this result does not carry its inputs")
    sc = result.scenario
    state0, _ = result.inputs
    doc = to_json(result)
    findings = classify(result)
    meta = {
        "schema": SCHEMA,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "scenario": sc.name,
        "spec": flags(sc),
        "description": sc.description,
        "backends": result.backends,
        "oracle": result.oracle if result.oracle else "none",
        "seed": sc.seed,
        "versions": versions(result.backends),
        "platform": describe(),  # after the run: the libraries its backends loaded are seen
        "hypothesis": hypothesis,
        "findings": [f.__dict__ | {"backends": list(f.backends)} for f in findings],
        "verdict": verdict(result),
        "numbers": _numbers(doc),
    }
    path = bundle_path(result, directory, stem)
    meta["reproduce"] = commands(path) if commands else reproduce(sc, result.backends, result.oracle)

    def arrays() -> Iterator[tuple[str, np.ndarray]]:  # one at a time: a long run's batches are never all held
        yield "meta", np.array(json.dumps(meta))
        yield from ((f"state/{k}", v) for k, v in state0.items())
        for i, (X, T) in enumerate(_saved_data(result)):
            yield f"data/{i}/X", X
            yield f"data/{i}/T", T

    with write.replacing(path) as out:  # written whole, then renamed over the old one
        with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as z:  # np.savez_compressed's format
            for name, a in arrays():
                with z.open(name + ".npy", "w", force_zip64=True) as f:
                    np.lib.format.write_array(f, np.asanyarray(a), allow_pickle=False)
    return path


def load(path: Path | str) -> tuple[dict, Scenario, dict[str, np.ndarray], list[tuple[np.ndarray, np.ndarray]]]:
    """(meta, scenario, initial state, batches) of a bundle of schema 1 or 2, validated
    (:func:`bundle`: a damaged bundle is a SpecError that says so). A schema-1
    bundle's ``platform`` is None (unknown); its ``tolerance`` and ``growth`` are ignored."""
    return bundle(str(path))


def replay(path: Path | str, backends: list[str] | None = None,
           compare: str = "auto", loaded: tuple | None = None) -> tuple[RunResult, Differences]:
    """Rerun a bundle; returns the result and its :class:`Differences` from the recording
    (a list: [] = reproduced; ``.compared`` and ``.reasons`` say what was compared and why).

    ``compare``: "auto" compares the numbers bit for bit when the platform and the versions
    are the recording's, else the verdict; "numbers" or "verdict" forces one (a test that must
    not depend on the CPU asks for the verdict)."""
    if compare not in ("auto", "numbers", "verdict"):
        raise ValueError(f"compare must be auto, numbers or verdict, not {compare!r}")
    meta, scenario, state0, data = loaded or load(path)
    names = backends or meta["backends"]
    result = run(scenario, names, oracle=meta["oracle"], state0=state0, data=data)
    if names != meta["backends"]:
        return result, Differences(["backends differ from the recording, nothing compared"])
    reasons = []
    if meta["platform"] is None:
        reasons.append(f"the recording does not say its platform: schema {meta['schema']}")
    else:
        changed = explain(meta["platform"], describe())
        if changed:
            reasons.append("platform differs: " + "; ".join(changed))
    now_versions = versions(names)
    changed_versions = {k: (v, now_versions.get(k)) for k, v in meta["versions"].items() if now_versions.get(k) != v}
    if changed_versions:
        reasons.append("versions differ: " + ", ".join(f"{k} {a} -> {b}" for k, (a, b) in changed_versions.items()))
    mode = compare if compare != "auto" else ("verdict" if reasons else "numbers")
    if mode == "verdict" and not reasons:
        reasons.append("the verdict was asked for")
    out = Differences(compared=mode, reasons=reasons)
    recorded, now = recorded_verdict(meta), verdict(result)
    verdict_differences, kink_notes = compare_verdicts(recorded, now)
    if mode == "numbers":
        numbers_then, numbers_now = meta["numbers"], _as_recorded(meta["numbers"], _numbers(to_json(result)))
        out += [key for key in numbers_then
                if json.dumps(numbers_then[key], sort_keys=True) != json.dumps(numbers_now.get(key), sort_keys=True)]
        if out:
            out.notes.append("the verdict " + ("differs too: " + "; ".join(verdict_differences)
                                               if verdict_differences else "is the same"))
    else:
        out += verdict_differences
        out.notes += kink_notes
    return result, out
