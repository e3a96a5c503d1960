"""The walk's evaluation compiled: one recorded plan, replayed as one fused loop.

:func:`harness.judge.walk.evaluate` applies the error-arithmetic rules node by node, each node
one NumPy pass over the arrays (a few dozen passes for an optimizer update). The rules stay the
definition; this module changes only how a large evaluation is executed:

1. **Record.** The rules run once on traced values (:mod:`harness.judge.trace`): NumPy arrays
   that compute as usual (the recording's result *is* the eager result) and note every operation
   (elementwise ufuncs, ``np.where``, broadcasts; the reductions the rules branch on).
2. **Guard.** A Python branch taken on data (``if np.all(b != 0)``, ``near.any()``, NaN checks,
   a sign test of a scalar) is recorded as a guard with the outcome it had. Anything else that
   would let data steer the rules (``float()`` of a traced value, a concrete array that is not
   one constant) stops the recording: that evaluation stays eager.
3. **Compile.** The graph becomes the source of one numba loop (``nogil``, IEEE arithmetic, no
   fast-math) over the broadcast shape, every node one scalar expression, every guard's
   reduction computed in the same pass. The source is written to a file named by its hash in
   :func:`cache_dir`, so numba's on-disk cache serves a second process.
4. **Replay.** An evaluation of the same structure (:func:`signature`: the expressions, which
   inputs carry errors, their broadcast patterns, the dtype, the NaN state) calls the kernel;
   if any guard's outcome differs, or a NaN appears where the recording saw none (the eager rules
   would then have taken their NaN branches), the result is discarded and the evaluation runs
   eagerly. Nothing is replayed past a branch it did not record.

The eager evaluation stays the reference: tests/test_replay.py compares the two on every catalog
scenario, both dtypes and both modes.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import os
import re
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable

import numpy as np

from harness.core.process import user_cache, writable_dir
from harness.judge.arithmetic import NAN_SEEN, NO_ERROR, Err, errstate
from harness.judge.trace import Graph, Line, Traced, Unsupported, concrete, literal, pattern

# Evaluations of at least this many elements run compiled; smaller ones node by node in NumPy
# (a compile costs more than it saves there, and the many small structures of the tests and of
# explore would each compile once).
COMPILE_SIZE = 1 << 15
# Graphs of more nodes than this are not compiled (replayed node by node in NumPy at every size):
# the many outputs of a Jacobian over a row (softmax, batch normalization) make a loop whose
# compile costs more than any run saves.
MAX_NODES = 256
# Run the kernels' Python source instead of compiling it (the same source, element by element,
# in NumPy scalars): the tests replay the plans of every catalog scenario this way, whose
# compiles would cost minutes; the compiled kernels are tested on the large ones.
INTERPRET = [False]


# ---------------------------------------------------------------------------------------------
# The kernel: the graph as one loop
# ---------------------------------------------------------------------------------------------

_REDUCTION_START = {"any": "False", "all": "True"}


def source(graph: Graph, outputs: list[str], check_nan: bool) -> str:
    """The numba source of the graph's loop over a 2-d broadcast shape (R, C): every input that
    runs along an axis and every output a 2-d view (broadcast axes of stride 0), every scalar
    input a number and every scalar node computed once before the loop; the guards' reductions
    and the NaN flag into ``flags``."""
    scalar = {name for name, p in graph.shapes.items() if all(q == 1 for q in p)}
    args = ", ".join(graph.inputs + [f"o{k}" for k in range(len(outputs))])
    head = ["import numpy as np", "from numba import njit", "",
            '@njit(nogil=True, cache=True, error_model="numpy", fastmath=False)',
            f"def kernel(R, C, {args}, flags):  # pragma: no cover - compiled"]
    before = ["nan = False"]
    for name, kind, _ in graph.reductions:
        if kind == "sum_isnan":
            before += [f"{name}n = False", f"{name}p = False", f"{name}m = False"]
        else:
            before.append(f"{name} = {_REDUCTION_START[kind]}")
    body = [f"{a}_ = {a}[i, j]" for a in graph.inputs if a not in scalar]
    if check_nan:  # (the recording's inputs held no NaN; these do not either, or the plan does not hold)
        body += [f"nan |= {a}_ != {a}_" for a in graph.inputs if a not in scalar]
        before += [f"nan |= {a} != {a}" for a in graph.inputs if a in scalar]
    rename = {a: f"{a}_" for a in graph.inputs if a not in scalar}
    checks = nan_checks(graph, outputs) if check_nan else {}
    for line in graph.lines:
        name = line.name
        made = " & ".join([f"({name} != {name})"] + [f"({rename.get(x, x)} == {rename.get(x, x)})" for x in checks.get(name, ())])
        check = [f"nan |= {made}"] if name in checks else []
        (before if name in scalar else body).extend([f"{name} = {_renamed(line.expression, rename)}", *check])
    for name, kind, operand in graph.reductions:
        x = rename.get(operand, operand)
        if kind == "sum_isnan":
            body += [f"{name}n |= np.isnan({x})", f"{name}p |= {x} == np.inf", f"{name}m |= {x} == -np.inf"]
        else:
            body.append(f"{name} {'|' if kind == 'any' else '&'}= {x}")
    body += [f"o{k}[i, j] = {rename.get(name, name)}" for k, name in enumerate(outputs)]
    after = [f"flags[{k}] = {f'{name}n or ({name}p and {name}m)' if kind == 'sum_isnan' else name}"
             for k, (name, kind, _) in enumerate(graph.reductions)] + [f"flags[{len(graph.reductions)}] = nan"]
    loop = ["for i in range(R):", "    for j in range(C):"]
    return "\n".join(head + ["    " + x for x in before + loop] + ["            " + x for x in body]
                     + ["    " + x for x in after]) + "\n"


def nan_checks(graph: Graph, outputs: list[str]) -> dict[str, tuple]:
    """Where the loop looks for a NaN made (the recording saw none, and its inputs hold none):
    line name -> the operands that must not be NaN for a NaN there to count as made there.

    A NaN made anywhere reaches, through the operations that propagate one, a line whose result
    is an output, read by a guard, dropped or consumed by one that does not propagate it
    (a selection, fmax, a comparison): there a plain ``t != t`` finds it, and only there is it
    looked for. Lines downstream of a NaN literal (a Piecewise's initial NaN, every element of
    which is then replaced) are checked where they are made, with their operands not NaN.
    """
    tainted: set[str] = set()
    consumers: dict[str, list[Line]] = {}
    for line in graph.lines:
        if any(x == "np.nan" or x in tainted for x in line.operands):
            tainted.add(line.name)
        for x in line.operands:
            consumers.setdefault(x, []).append(line)
    read = set(outputs) | {operand for _, _, operand in graph.reductions}
    checks: dict[str, tuple] = {}
    for line in graph.lines:
        if line.boolean:
            continue
        if line.name in tainted:
            if line.invalid:
                checks[line.name] = line.operands
            continue
        uses = consumers.get(line.name, [])
        if line.name in read or not uses or any(not u.propagates or u.name in tainted for u in uses):
            checks[line.name] = ()
    return checks


def _renamed(expression: str, rename: dict[str, str]) -> str:
    """The expression with the inputs' names replaced by the loop's local copies."""
    return re.sub(r"\ba\d+\b", lambda m: rename.get(m.group(0), m.group(0)), expression)


def cache_dir() -> Path:
    """Where the kernels' sources (and beside them numba's compiled code) are kept: the
    ``NERVA_CONSISTENCY_CACHE`` directory if set and writable, else the per-user cache
    (:func:`harness.core.process.user_cache`, ``kernels``), else a new temporary directory (then
    every process compiles again: nothing is lost but time)."""
    override = os.environ.get("NERVA_CONSISTENCY_CACHE")
    path = (override and writable_dir(override)) or user_cache("kernels")
    return Path(path) if path else Path(tempfile.mkdtemp(prefix="nerva-consistency-kernels-"))


def compiled(text: str) -> Callable:
    """The kernel of a source: written once to a file named by its hash (numba caches compiled
    code by file), imported as a module of its own."""
    digest = hashlib.sha1(text.encode()).hexdigest()[:20]
    name = f"nerva_consistency_plan_{digest}"
    if name in sys.modules:
        return _runnable(sys.modules[name].kernel)
    path = cache_dir() / f"{name}.py"
    if not path.exists() or path.read_text() != text:
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules[name] = module
    return _runnable(module.kernel)


def _runnable(kernel: Any) -> Callable:
    return kernel.py_func if INTERPRET[0] else kernel


# ---------------------------------------------------------------------------------------------
# Plans: recorded once per structure, replayed after
# ---------------------------------------------------------------------------------------------

class Plan:
    """A recorded evaluation ready to replay: its graph, what each output is (a node, an input
    passed through, or a constant), the guards' outcomes, and its two executions: every node one
    NumPy call (small evaluations: the same ufuncs on the same operands as the rules, bit for
    bit, without walking the expressions again) or, from :data:`COMPILE_SIZE` elements, the
    compiled loop (its kernel compiled on first use)."""

    def __init__(self, graph: Graph, template: list, outputs: list[str], check_nan: bool) -> None:
        self.graph, self.template, self.outputs, self.check_nan = graph, template, outputs, check_nan
        self.scalar_inputs = [all(q == 1 for q in graph.shapes[a]) for a in graph.inputs]
        self.expected = np.array([outcome for _, outcome in graph.guards] + [False])
        self.order = [next(k for k, (name, _, _) in enumerate(graph.reductions) if name == g) for g, _ in graph.guards]
        self._kernel: Callable | None = None

    @property
    def kernel(self) -> Callable | None:
        """The compiled loop, or None for a graph of more than :data:`MAX_NODES` nodes."""
        if self._kernel is None and len(self.graph.lines) <= MAX_NODES:
            self._kernel = compiled(source(self.graph, self.outputs, self.check_nan))
        return self._kernel

    def replay(self, components: list, shape: tuple) -> list | None:
        """The evaluation's results, or None where a guard's outcome differs (or a NaN was made
        that the recording did not see): then the caller evaluates eagerly."""
        if math.prod(shape) >= COMPILE_SIZE and self.kernel is not None:
            return self._compiled(components, shape)
        return self._numpy(components, shape)

    def _compiled(self, components: list, shape: tuple) -> list | None:
        full2 = _shape2(shape)
        views = [np.asarray(x).reshape(-1)[0] if scalar else np.broadcast_to(np.reshape(x, _shape2(np.shape(x))), full2)
                 for x, scalar in zip(components, self.scalar_inputs)]
        outs = [np.empty(_pattern_shape(self.graph.shapes[name], self.graph.ndims[name], shape)) for name in self.outputs]
        flags = np.zeros(len(self.graph.reductions) + 1, dtype=np.bool_)
        self.kernel(*full2, *views, *(_writable_view(o, full2) for o in outs), flags)
        if not np.array_equal(flags[self.order + [-1]], self.expected):
            return None
        made = {name: o if o.ndim else o[()] for name, o in zip(self.outputs, outs)}
        return _rebuild(self.template, made, components)

    def _numpy(self, components: list, shape: tuple) -> list | None:
        values = dict(zip(self.graph.inputs, components))
        seen = NAN_SEEN.get()
        with errstate():  # as the rules run: a NaN made is reported to the step
            for line in self.graph.lines:
                args = [values[x] if x in values else literal(x) for x in line.operands]
                if line.ufunc == "alias":
                    p = self.graph.shapes[line.name]
                    values[line.name] = np.broadcast_to(args[0], _pattern_shape(p, self.graph.ndims[line.name], shape))
                else:
                    values[line.name] = getattr(np, line.ufunc)(*args)
        if self.check_nan and seen[0]:
            return None  # the rules would have looked for it from there on
        reductions = {name: _reduced(kind, values[operand]) for name, kind, operand in self.graph.reductions}
        if any(reductions[name] != outcome for name, outcome in self.graph.guards):
            return None
        return _rebuild(self.template, values, components)


def _reduced(kind: str, x: Any) -> bool:
    """A guard's reduction, as the rules compute it."""
    if kind == "sum_isnan":
        return bool(np.isnan(np.sum(x)))
    return bool(np.any(x) if kind == "any" else np.all(x))


def _shape2(shape: tuple) -> tuple:
    return (1,) * (2 - len(shape)) + tuple(shape)


def _pattern_shape(p: tuple, ndim: int, shape: tuple) -> tuple:
    """The shape of a node of broadcast pattern ``p`` (and ``ndim`` dimensions, as recorded) in an
    evaluation of ``shape``."""
    return tuple(1 if q == 1 else d for q, d in zip(p, shape))[len(shape) - ndim:]


def _writable_view(out: np.ndarray, full2: tuple) -> np.ndarray:
    """A 2-d view of ``out`` over the broadcast shape: its broadcast axes of stride 0 (every
    element there is written with the same value)."""
    o2 = out.reshape(_shape2(out.shape))
    strides = tuple(0 if n == 1 else s for n, s in zip(o2.shape, o2.strides))
    return np.lib.stride_tricks.as_strided(o2, full2, strides)


def _rebuild(template: list, made: dict, components: list) -> list:
    def leaf(t: tuple) -> Any:
        kind, x = t
        if kind == "node":
            return made[x]
        if kind == "input":
            return components[x]
        return x

    results = []
    for v, e in template:
        error = e if e is NO_ERROR else Err(leaf(e[0]), None if e[1] is None else leaf(e[1]))
        results.append((leaf(v), error))
    return results


def _components(env: dict) -> tuple[list, list]:
    """The environment's arrays in order (each value, worst case and variance that is there) and
    its structure (which symbol, which part)."""
    components, structure = [], []
    for sym, (v, e) in env.items():
        parts = [v] if e is NO_ERROR else [v, e.worst] + ([] if e.var is None else [e.var])
        components += parts
        structure.append((sym, e is NO_ERROR, e is not NO_ERROR and e.var is None))
    return components, structure


def signature(exprs: tuple, env: dict, dtype: str, shape: tuple) -> tuple[tuple, list]:
    """(What a plan is recorded for: the expressions, the dtype, the NaN state of the step, and
    for every input which parts it has and their broadcast patterns against ``shape``; the
    environment's arrays in order, :func:`_components`)."""
    components, structure = _components(env)
    kinds = tuple((np.asarray(x).dtype.str, pattern(np.shape(x), len(shape)), np.ndim(x)) for x in components)
    seen = NAN_SEEN.get()
    key = exprs, dtype, None if seen is None else seen[0], pattern(shape, len(shape)), tuple(structure), kinds
    return key, components


TRANSIENT = "transient"


def record(rules: Callable[[dict], list], evaluate: Callable[[dict], list], env: dict, shape: tuple) -> tuple[list, Any]:
    """Evaluate once by ``rules`` (the walk, unblocked) on traced values: (the results, as the
    eager rules give them; the plan, or None where the rules did something a plan cannot replay
    (where the tracing itself stopped, ``evaluate``, the walk as it runs eagerly, gives the
    results), or :data:`TRANSIENT` where the NaN state changed on the way)."""
    graph = Graph(len(shape))
    components, structure = _components(env)
    if not all(np.asarray(x).dtype == np.float64 for x in components):
        return evaluate(env), None
    traced = [graph.input(x) for x in components]
    names = {t.name: k for k, t in enumerate(traced)}
    it = iter(traced)
    tenv = {sym: (next(it), NO_ERROR) if exact else (next(it), Err(next(it), None if no_var else next(it)))
            for sym, exact, no_var in structure}
    seen = NAN_SEEN.get()
    before = None if seen is None else seen[0]
    try:
        results = rules(tenv)
    except Exception:  # Unsupported, or anything the traced values do that arrays would not
        return evaluate(env), None
    values = [(concrete(v), e if e is NO_ERROR else Err(concrete(e.worst), concrete(e.var))) for v, e in results]
    template, outputs = [], []

    def leaf(x: Any) -> tuple:
        if isinstance(x, Traced):
            if x.name in names:
                return "input", names[x.name]
            if x.dtype != np.float64:
                raise Unsupported("a result that is not a number")
            if x.name not in outputs:
                outputs.append(x.name)
            return "node", x.name
        if np.ndim(x):
            raise Unsupported("a result that is a concrete array")
        return "const", x

    try:
        for v, e in results:
            template.append((leaf(v), e if e is NO_ERROR else (leaf(e.worst), None if e.var is None else leaf(e.var))))
    except Unsupported:
        return values, None
    if (None if seen is None else seen[0]) != before:
        return values, TRANSIENT  # a NaN made on the way: the branches taken were mixed
    return values, Plan(graph, template, outputs, check_nan=before is False)


_PLANS: dict[tuple, list[Plan] | None] = {}  # by signature: the variants recorded (None: stays eager)
_SEEN: set[tuple] = set()  # the structures evaluated once, eagerly
_LOCK = threading.Lock()
VARIANTS = 4  # plans per structure, one per set of guard outcomes seen (a kink near or not)
# The first evaluation of a structure runs eagerly and the second is recorded, so that what is
# evaluated once (a search's ever new networks) does not pay the tracing.
EAGER_FIRST = True


def run(exprs: tuple, env: dict, dtype: str, shape: tuple, rules: Callable[[dict], list],
        evaluate: Callable[[dict], list]) -> list:
    """``evaluate(env)``'s results (the eager walk), from a plan of their structure where one's
    guards hold (recorded from ``rules``, the walk unblocked), else eagerly; a structure is
    recorded on its second evaluation (:data:`EAGER_FIRST`), and an evaluation no plan fits as a
    new variant (up to :data:`VARIANTS`)."""
    key, components = signature(exprs, env, dtype, shape)
    with _LOCK:
        plans = _PLANS.get(key, [])
        first = EAGER_FIRST and key not in _PLANS and key not in _SEEN
        if first:
            _SEEN.add(key)
    if plans is None or first:
        return evaluate(env)
    for k, plan in enumerate(plans):
        results = plan.replay(components, shape)
        if results is not None:
            if k:  # the variant that fits now is tried first next time
                with _LOCK:
                    plans.insert(0, plans.pop(k))
            return results
    if len(plans) >= VARIANTS:
        return evaluate(env)
    results, plan = record(rules, evaluate, env, shape)
    with _LOCK:
        if plan is None and not plans:
            _PLANS[key] = None
        elif isinstance(plan, Plan):
            _PLANS[key] = [plan, *plans]
    return results
