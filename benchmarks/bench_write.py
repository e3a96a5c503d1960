"""What writing every report whole costs: harness.reports.write (temporary file, fsync, rename)
against a plain ``Path.write_text`` of the same JSON, in the same run and directory.

The documents are one real-sized run report each (the JSON of a planted 50-step run, as
``check`` writes one per run); both ways write the same bytes. Printed as the time per file and
the ratio, so a slower disk or a loaded machine shows in both alike.

    python benchmarks/bench_write.py [--files 200] [--dir DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _report() -> dict:
    import scenarios
    from harness.judge.compare import StepVerdict, TensorVerdict
    from harness.reports.report import to_json
    from harness.run.runner import RunResult

    backends = ["numpy", "torch", "jax", "tensorflow"]
    result = RunResult(scenarios.get("upstream"), backends)
    for s in range(50):
        tensors = [TensorVerdict((t, layer), {b: 0.01 * (s + i) for i, b in enumerate(backends)},
                                 {b: 0 for b in backends})
                   for t in ("Z", "DZ", "DW", "Db", "DX", "W", "b") for layer in (1, 2, 3)]
        result.steps.append(StepVerdict(s, tensors, [], 0, 0))
    return to_json(result)


def main() -> None:
    from harness.reports import write

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=200)
    ap.add_argument("--dir", help="where to write (default: a temporary directory)")
    args = ap.parse_args()
    text = json.dumps(_report(), indent=1) + "\n"
    with tempfile.TemporaryDirectory(dir=args.dir) as d:
        directory = Path(d)
        times = {}
        for how in ("plain", "whole", "plain", "whole"):  # interleaved: the second pass counts
            start = time.perf_counter()
            for i in range(args.files):
                path = directory / how / f"r{i}.json"
                if how == "plain":
                    path.parent.mkdir(exist_ok=True)
                    path.write_text(text)
                else:
                    write.text(path, text)
            times[how] = (time.perf_counter() - start) / args.files
    print(f"{args.files} reports of {len(text) / 1e3:.0f} kB each in {args.dir or tempfile.gettempdir()}")
    print(f"  Path.write_text:        {times['plain'] * 1e3:.2f} ms per file")
    print(f"  harness.reports.write:  {times['whole'] * 1e3:.2f} ms per file "
          f"(x{times['whole'] / times['plain']:.1f}: temporary file, fsync, rename)")


if __name__ == "__main__":
    main()
