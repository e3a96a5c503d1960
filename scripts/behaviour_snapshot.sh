#!/usr/bin/env bash
# The JSON reports a refactoring must leave unchanged (docs/findings.md, "The layout"):
#     scripts/behaviour_snapshot.sh SOURCE_TREE OUT_DIR
# runs, from SOURCE_TREE (a checkout, e.g. a `git worktree add` of the commit before), seven
# `run`s (both dtypes, both modes, against sympy and with --oracle none, the TensorFlow alpha
# failure, a known defect), a part of the mutation corpus and `check --out`, writing their JSON
# reports and exit codes (rc.txt) to OUT_DIR. Compare two snapshots with
#     python scripts/compare_reports.py BEFORE_DIR AFTER_DIR
# Uses the python on PATH (PYTHON to override), with the frameworks installed.
set -u
src=$(cd "$1" && pwd); out=$(mkdir -p "$2" && cd "$2" && pwd)
py=${PYTHON:-python3}
export PYTHONPATH="$src" TF_CPP_MIN_LOG_LEVEL=3
: > "$out/rc.txt"
cd "$out"
run() {
    local name=$1; shift
    "$py" -m harness run "$@" --json "$out/$name.json" --bundle-dir "$out/bundles" --quiet > "$out/$name.out" 2>&1
    echo "$name rc=$?" >> "$out/rc.txt"
}
run relu32traj --scenario relu-softmax --steps 5
run relu64lock --scenario relu-softmax --dtype float64 --mode lockstep --oracle sympy --steps 3
run srelu32lock --scenario srelu-nll --mode lockstep --steps 3
run bn64traj --scenario batchnorm-softmax-xent --dtype float64 --steps 4
run nooracle --scenario elu-absolute --mode lockstep --oracle none --steps 4
run tfalpha --oracle sympy --mode lockstep --dtype float64 --layers "LeakyReLU(0.1);Linear" --sizes 4,3,2
run leaky64 --scenario leaky-logsoftmax --dtype float64 --steps 3
"$py" -m harness mutants --only 'linear-*' --json "$out/mutants.json" > "$out/mutants.out" 2>&1
echo "mutants rc=$?" >> "$out/rc.txt"
"$py" -m harness check --out "$out/check" --bundle-dir "$out/check-bundles" --quiet > "$out/check.out" 2>&1
echo "check rc=$?" >> "$out/rc.txt"
