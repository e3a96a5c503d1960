"""Compare two snapshots of JSON reports (scripts/behaviour_snapshot.sh): verdicts, blame, first
divergences, every ratio, bound and value (to 1e-12 relative), and the exit codes.

    python scripts/compare_reports.py BEFORE_DIR AFTER_DIR

Timings, paths, versions and the machine are left out; a field only the second snapshot has is
not a difference (a report may gain a field). Prints every difference; exit 1 if there is one.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

RTOL = 1e-12
IGNORED = {"seconds", "versions", "reproduce", "oracle_note", "started", "bundle", "installed", "platform",
           "finished", "argv", "command", "path", "cell", "replay"}


def _close(x, y) -> bool:
    if not isinstance(x, (int, float)) or not isinstance(y, (int, float)):
        return x == y
    if math.isnan(x) or math.isnan(y):
        return math.isnan(x) and math.isnan(y)
    if math.isinf(x) or math.isinf(y):
        return x == y
    return abs(x - y) <= RTOL * max(abs(x), abs(y)) or abs(x - y) <= 1e-300


def differences(a, b, where: str) -> list[str]:
    """Where ``b`` differs from ``a``, field by field."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in a:
            if key in IGNORED:
                continue
            out += [f"{where}.{key}: missing after"] if key not in b else differences(a[key], b[key], f"{where}.{key}")
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{where}: length {len(a)} -> {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{where}[{i}]")]
    return [] if _close(a, b) else [f"{where}: {a!r} -> {b!r}"]


def main(before: Path, after: Path) -> int:
    reports = sorted(p.relative_to(before) for p in before.rglob("*.json") if "bundles" not in str(p))
    found = []
    for rel in reports:
        if not (after / rel).exists():
            found.append(f"{rel}: missing after")
            continue
        found += differences(json.loads((before / rel).read_text()), json.loads((after / rel).read_text()), str(rel))
    codes = [(d / "rc.txt").read_text().split() for d in (before, after)]
    if codes[0] != codes[1]:
        found.append(f"exit codes {codes[0]} -> {codes[1]}")
    print(f"{len(reports)} reports compared; exit codes {'the same' if codes[0] == codes[1] else 'differ'}: "
          + " ".join(codes[0]))
    for line in found:
        print("  " + line)
    print(f"{len(found)} difference(s)")
    return 1 if found else 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print("usage: python scripts/compare_reports.py BEFORE_DIR AFTER_DIR", file=sys.stderr)
        sys.exit(2)
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
