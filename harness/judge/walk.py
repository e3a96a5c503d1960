"""The walk of SymPy expression trees in error arithmetic (:mod:`harness.judge.arithmetic`).

The same SymPy expressions the exact oracle evaluates (:mod:`harness.oracle.definitions` and their
``sp.diff`` derivatives) are walked here node by node on NumPy arrays of (value, error) pairs
(:func:`evaluate`): each node's error is the first-order propagation of its operands' errors
(a product carries them exactly, second order included) plus its own rounding. Operands whose
errors share an input are summed as correlated. Large evaluations run block by block.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Sequence

import numpy as np
import sympy as sp

from harness.judge import replay
from harness.judge.arithmetic import NO_ERROR, Arithmetic, Err, Pair, carries_variance, errstate, optional_map, \
    power_of_two, product_error
from harness.oracle.symbolic import Graph


# ---------------------------------------------------------------------------------------------
# Error arithmetic over SymPy expressions
# ---------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _program(exprs: tuple) -> tuple[list, list]:
    """Common subexpressions of a list of expressions (``sp.cse``), computed once."""
    replacements, reduced = sp.cse(list(exprs), symbols=sp.numbered_symbols("_e"))
    return replacements, reduced


def evaluate(exprs: Sequence[sp.Expr], env: dict[sp.Symbol, Pair], ar: Arithmetic) -> list[Pair]:
    """(value, bound) of each expression, every symbol bound in ``env`` to a (value, error) pair.

    Each node's bound is the first-order propagation of its operands' errors plus its own
    rounding (module docstring). Values broadcast like NumPy arrays.

    The rules are applied as written by :func:`eager`; an evaluation over arrays of one or two
    dimensions is executed from the plan of its structure (:mod:`harness.judge.replay`: recorded
    from these rules on its first evaluation, replayed after, falling back to them where the
    data takes another branch).
    """
    shape = _shape(env)
    if 1 <= len(shape) <= 2 and COMPILED[0]:
        return replay.run(tuple(exprs), env, ar.dtype.name, shape, lambda e: _evaluate(exprs, e, ar),
                          lambda e: eager(exprs, e, ar))
    return eager(exprs, env, ar)


def _shape(env: dict) -> tuple:
    """The broadcast shape of an environment's values and errors."""
    return np.broadcast_shapes(*(np.shape(x) for v, e in env.values() for x in (v, e.worst, e.var) if x is not None))


def eager(exprs: Sequence[sp.Expr], env: dict[sp.Symbol, Pair], ar: Arithmetic) -> list[Pair]:
    """:func:`evaluate` by the rules, node by node. Every rule is elementwise, so a large
    evaluation runs block by block along the first axis (:data:`BLOCK` elements at a time): each
    node of the tree is then one pass over arrays that stay in the CPU's cache instead of one
    over main memory, with the same result, element for element."""
    shape = _shape(env)
    size = math.prod(shape)
    if size <= 2 * BLOCK or not shape:
        return _evaluate(exprs, env, ar)
    rows = BLOCK // max(1, size // shape[0])
    if not 2 <= rows < shape[0]:  # (a block of one row could not be told from a broadcast row)
        return _evaluate(exprs, env, ar)
    parts = [_evaluate(exprs, {s: _rows_of(p, shape, r, r + rows) for s, p in env.items()}, ar)
             for r in range(0, shape[0], rows)]
    return [join_blocks([block[k] for block in parts], shape, rows) for k in range(len(exprs))]


BLOCK = 1 << 14  # elements per block of a large evaluation (a few arrays of it fit in L2)
# Whether evaluations run from their plans (:mod:`harness.judge.replay`); the tests turn it off
# to compare with the eager rules.
COMPILED = [True]


def _rows_of(pair: Pair, shape: tuple, start: int, stop: int) -> Pair:
    """Rows ``start:stop`` of a (value, error) pair broadcast to ``shape``; an operand that
    broadcasts along the first axis (a scalar, a row) is passed whole."""
    def cut(x: Any) -> Any:
        if x is None or np.ndim(x) < len(shape) or np.shape(x)[0] == 1:
            return x
        return x[start:stop]

    v, e = pair
    return cut(v), e if e is NO_ERROR else Err(cut(e.worst), cut(e.var))


def join_blocks(blocks: list[Pair], shape: tuple, rows: int) -> Pair:
    """The blocks of one result, concatenated along the first axis. A part that does not run
    along it (a scalar, a row) came from operands passed whole, so it is the same in every block."""
    def whole(xs: list) -> Any:
        if all(np.ndim(x) < len(shape) or np.shape(x)[0] == 1 for x in xs):
            return xs[0]
        return np.concatenate([np.broadcast_to(x, (min(rows, shape[0] - k * rows), *shape[1:]))
                               for k, x in enumerate(xs)], axis=0)

    errors = [b[1] for b in blocks]
    if all(e is NO_ERROR for e in errors):
        error = NO_ERROR
    else:
        var = None if any(e.var is None for e in errors) else whole([e.var for e in errors])
        error = Err(whole([e.worst for e in errors]), var)
    return whole([b[0] for b in blocks]), error


def _evaluate(exprs: Sequence[sp.Expr], env: dict[sp.Symbol, Pair], ar: Arithmetic) -> list[Pair]:
    replacements, reduced = _program(tuple(exprs))
    env = dict(env)
    # the inputs each symbol's error comes from (for correlations); an exact input has none
    sources: dict[sp.Symbol, frozenset] = {s: frozenset() if p[1] is NO_ERROR else frozenset((s,)) for s, p in env.items()}
    memo: dict[Any, Any] = {_SOURCES: sources}
    for sym, sub in replacements:
        sources[sym] = _sources_of(sub, sources)
    with errstate():
        for sym, sub in replacements:
            env[sym] = _node(sub, env, ar, memo)
        return [_node(e, env, ar, memo) for e in reduced]


_SOURCES = object()  # the key of the sources map in evaluate's memo


@functools.lru_cache(maxsize=4096)
def _free_symbols(e: Any) -> frozenset:
    """SymPy recomputes ``free_symbols`` on every access; every block of an evaluation asks again."""
    return frozenset(e.free_symbols)


def _sources_of(e: Any, sources: dict) -> frozenset:
    """The input symbols an expression's error comes from (common subexpressions expanded)."""
    return frozenset().union(*(sources.get(s, frozenset((s,))) for s in _free_symbols(e)))


def _groups(args: Sequence[Any], errors: Sequence[Err], sources: dict) -> list[Err]:
    """The errors of an operation's operands, those that share an input summed as correlated
    (:meth:`Arithmetic.correlated`): one error per group of operands that are independent of
    every other group."""
    groups: list[tuple[frozenset, list[Err]]] = []
    for a, err in zip(args, errors):
        own, members = _sources_of(a, sources), [err]
        for g in [g for g in groups if g[0] & own]:
            groups.remove(g)
            own, members = own | g[0], g[1] + members
        groups.append((own, members))
    return [Arithmetic.correlated(*members) for _, members in groups]


def _through(e: Err, worst: Any, slope: Any) -> Err:
    """An argument's error through a function: the worst case given, the standard deviation
    times the function's steepest slope where the argument can be."""
    return Err(worst, None if e.var is None else e.var * slope * slope)




def _node(e: Any, env: dict, ar: Arithmetic, memo: dict) -> Pair:
    if e in memo:
        return memo[e]
    if e.is_Symbol:
        r = env[e]
    elif e.is_Number:
        r = ar.constant(e)
    elif isinstance(e, sp.Add):
        parts = [_node(a, env, ar, memo) for a in e.args]
        v = functools.reduce(np.add, [p[0] for p in parts])
        magnitude = functools.reduce(np.add, [np.abs(p[0]) for p in parts])
        operands = _groups(e.args, [p[1] for p in parts], memo[_SOURCES])
        r = v, ar.combine(*operands, ar.local(magnitude, len(parts) - 1, carries_variance(parts), nonneg=True))
    elif isinstance(e, sp.Mul):
        sources = memo[_SOURCES]
        parts = sorted(((*_node(a, env, ar, memo), _sources_of(a, sources)) for a in e.args),
                       key=lambda p: np.ndim(p[0]))  # scalars first

        def fold(p: tuple, q: tuple) -> tuple:
            return p[0] * q[0], product_error(ar, p[:2], q[:2], shared=bool(p[2] & q[2])), p[2] | q[2]

        v, err, _ = functools.reduce(fold, parts)
        exact_factors = sum(1 for a in e.args if a.is_Number and power_of_two(float(a)))
        r = v, ar.combine(err, ar.local(v, max(len(parts) - 1 - exact_factors, 0), carries_variance(parts)))
    elif isinstance(e, sp.Pow):
        r = _pow(e, env, ar, memo)
    # The library functions carry an argument's error through their exact worst case over the
    # interval a +- e (the first-order slope underestimates it once e is not small: a measured
    # spread of trajectories need not be); the standard deviation through the steepest slope
    # on that interval (a Lipschitz bound there).
    elif isinstance(e, sp.exp):
        a, ea = _node(e.args[0], env, ar, memo)
        v = np.exp(a)
        r = v, ar.combine(_through(ea, v * np.expm1(ea.worst), v * np.exp(ea.worst)), ar.function(v, ea.var is not None))
    elif isinstance(e, sp.log):
        a, ea = _node(e.args[0], env, ar, memo)
        v = np.log(a)
        m = np.abs(a)
        inside = ea.worst < m
        worst = np.where(inside, -np.log1p(-ea.worst / np.where(m > 0, m, 1.0)), np.inf)
        steepest = np.where(inside, 1 / np.where(inside, m - ea.worst, 1.0), np.inf)
        r = v, ar.combine(_through(ea, worst, steepest), ar.function(v, ea.var is not None))
    elif isinstance(e, sp.tanh):
        a, ea = _node(e.args[0], env, ar, memo)
        v = np.tanh(a)
        nearest = np.tanh(np.fmax(np.abs(a) - ea.worst, 0.0))  # tanh' is largest nearest to 0
        steepest = 1 - nearest * nearest
        r = v, ar.combine(_through(ea, ea.worst * steepest, steepest), ar.function(v, ea.var is not None))
    elif isinstance(e, sp.Abs):
        a, ea = _node(e.args[0], env, ar, memo)
        r = np.abs(a), ea
    elif isinstance(e, sp.sign):
        a, _ = _node(e.args[0], env, ar, memo)
        r = np.sign(a), NO_ERROR
    elif isinstance(e, sp.Piecewise):
        r = _piecewise(e, env, ar, memo)
    elif isinstance(e, (sp.logic.boolalg.Boolean, sp.core.relational.Relational)):
        r = _condition(e, env, ar, memo), NO_ERROR  # a branch condition (sp.cse may name one)
    else:
        raise NotImplementedError(f"harness.judge.walk has no rule for {type(e).__name__} ({e})")
    memo[e] = r
    return r


def _pow(e: sp.Pow, env: dict, ar: Arithmetic, memo: dict) -> Pair:
    base, p = e.args
    b, eb = _node(base, env, ar, memo)
    if not p.is_Number:
        raise NotImplementedError(f"harness.judge.walk has no rule for a symbolic power ({e})")
    q = float(p)
    v = np.power(b, q)
    if q == 0.5:  # sqrt: first order, or sqrt(error) at 0
        positive = v > 0
        half = eb.scaled(1 / (2 * np.where(positive, v, 1.0)))
        at_zero = np.sqrt(eb.worst)
        prop = Err(np.where(positive, half.worst, at_zero), optional_map(half.var, lambda x: np.where(positive, x, at_zero * at_zero)))
        return v, ar.combine(prop, ar.local(v, 1, eb.var is not None))
    # |q b**(q - 1)| e_b, written |q v| (e_b / |b|): b**(q - 1) alone overflows or underflows where
    # v does not (1 / (1 + exp(501)) = 2.6e-218, but (1 + exp(501))**-2 = 0 in float64)
    nonzero = b != 0
    relative = eb.scaled(1 / np.where(nonzero, np.abs(b), 1.0)).scaled(np.abs(q * v))
    if np.all(nonzero):
        prop = relative
    else:
        at_zero = eb.scaled(np.abs(q * np.power(b, q - 1)))
        var = None if relative.var is None else np.where(nonzero, relative.var, at_zero.var)
        prop = Err(np.where(nonzero, relative.worst, at_zero.worst), var)
    if q.is_integer() and 2 <= q <= 4 and eb is not NO_ERROR:
        # a power is a product of equal factors: its error carries every order, exactly,
        # sum_j C(q, j) |b|**(q - j) e**j; at b = 0 all of it is e**q (SquaredError at Y = T,
        # where one backend's Y is not: found by explore)
        e, m = eb.worst, np.abs(b)
        higher = sum(math.comb(int(q), j) * m ** (int(q) - j) * e ** j for j in range(2, int(q) + 1))
        prop = ar.combine(prop, Err(higher, None if eb.var is None else higher * higher))
    if q.is_integer() and q > 0:
        k = int(q) - 1  # multiplications
    elif q.is_integer():
        k = int(-q)  # multiplications, then one division
    else:
        k = ar.function_ulps  # a library power or sqrt-and-divide
    return v, ar.combine(prop, ar.local(v, k, eb.var is not None))


def _condition(c: Any, env: dict, ar: Arithmetic, memo: dict) -> np.ndarray:
    if c.is_Symbol:
        return np.asarray(env[c][0], dtype=bool)
    if c is sp.true:
        return np.bool_(True)
    if c is sp.false:
        return np.bool_(False)
    if isinstance(c, sp.And):
        return functools.reduce(np.logical_and, [_condition(a, env, ar, memo) for a in c.args])
    if isinstance(c, sp.Or):
        return functools.reduce(np.logical_or, [_condition(a, env, ar, memo) for a in c.args])
    if isinstance(c, sp.Not):
        return np.logical_not(_condition(c.args[0], env, ar, memo))
    lhs, _ = _node(c.lhs, env, ar, memo)
    rhs, _ = _node(c.rhs, env, ar, memo)
    ops = {sp.StrictLessThan: np.less, sp.LessThan: np.less_equal, sp.StrictGreaterThan: np.greater,
           sp.GreaterThan: np.greater_equal, sp.Equality: np.equal, sp.Unequality: np.not_equal}
    return ops[type(c)](lhs, rhs)


def _piecewise(e: sp.Piecewise, env: dict, ar: Arithmetic, memo: dict) -> Pair:
    """The branch each element's value selects; within its error of a breakpoint, the largest
    error of any branch (a computed value may sit on the other side: ELU's output just right of 0
    moves with slope 1, not alpha). Derivatives there are the kink scan's business."""
    value = worst = var = None
    taken = near = None
    branches = []
    for expr, cond in e.args:
        v, err = _node(expr, env, ar, memo)
        c = _condition(cond, env, ar, memo)
        branches.append((v, err, c, _near_boundary(cond, env, ar, memo)))
    random = all(err.var is not None for _, err, _, _ in branches)
    for v, err, c, close in branches:
        if value is None:
            shape = np.broadcast_shapes(np.shape(v), np.shape(c))
            value, worst = np.full(shape, np.nan), np.full(shape, np.nan)
            var = np.full(shape, np.nan) if random else None
            taken, near = np.zeros(shape, dtype=bool), np.zeros(shape, dtype=bool)
        pick = np.broadcast_to(c, taken.shape) & ~taken
        value = np.where(pick, v, value)
        worst = np.where(pick, err.worst, worst)
        if random:
            var = np.where(pick, err.var, var)
        taken = taken | pick  # (new arrays, not in place: the plan's recording traces these)
        near = near | close
    if near.any():
        widest = functools.reduce(np.fmax, [np.broadcast_to(b[1].worst, shape) for b in branches])
        worst = np.where(near, np.fmax(worst, widest), worst)
        if random:
            widest = functools.reduce(np.fmax, [np.broadcast_to(b[1].var, shape) for b in branches])
            var = np.where(near, np.fmax(var, widest), var)
    return value, Err(worst, var)


def _near_boundary(c: Any, env: dict, ar: Arithmetic, memo: dict) -> np.ndarray:
    """Where a condition's two sides are within their (worst-case) errors of each other."""
    if isinstance(c, (sp.And, sp.Or, sp.Not)):
        return functools.reduce(np.logical_or, [_near_boundary(a, env, ar, memo) for a in c.args])
    if not isinstance(c, sp.core.relational.Relational):
        return np.bool_(False)
    (lhs, el), (rhs, er) = _node(c.lhs, env, ar, memo), _node(c.rhs, env, ar, memo)
    return np.abs(lhs - rhs) <= el.worst + er.worst


def bind_rows(ar: Arithmetic, symbols: Sequence[sp.Symbol], M: Pair, shift: bool) -> dict:
    """Bind row symbols z1..zK to the columns of M; ``shift``: a row may be shifted by its max."""
    v, e = M
    e = e.full(v.shape)
    if shift:
        s = ar.u * np.abs(v).max(axis=1, keepdims=True)
        e = Err(e.worst + s, optional_map(e.var, lambda x: x + s * s))
    return {s: (v[:, k], e[:, k]) for k, s in enumerate(symbols)}


@functools.lru_cache(maxsize=None)
def _numeric(exprs: tuple, symbols: tuple) -> Any:
    """The float64 NumPy values of expressions, without their errors (``sp.lambdify``)."""
    return sp.lambdify(list(symbols), list(exprs), modules="numpy", cse=True)


@functools.lru_cache(maxsize=None)
def _ratio_of_derivatives(g: sp.Expr, h: sp.Expr, x: sp.Symbol) -> sp.Expr:
    """(dg/dx) / (dh/dx): how much g moves per unit of h, both functions of x."""
    return sp.diff(g, x) / sp.diff(h, x)


def from_rounded_value(ar: Arithmetic, g: sp.Expr, h: sp.Expr, x: sp.Symbol, env: dict) -> Err:
    """The extra error of a derivative ``g(x)`` computed from the rounded value of ``h(x)``.

    Backpropagation evaluates a derivative from the forward's output rather than its input:
    the sigmoid's as Y (1 - Y), LogisticCrossEntropy's as T (Sigmoid(Y) - 1). Where h saturates,
    that form loses what the derivative's own expression keeps (at x = 30 in float32, Y rounds
    to 1 and Y (1 - Y) to 0, where the exact value is 9e-14). It is a correct implementation
    all the same, so its error is allowed: ``|dg/dh|`` times the rounding of h, with
    ``dg/dh = g'(x) / h'(x)`` from ``sp.diff`` (0 where h' is 0: piecewise-linear functions).
    """
    expr = _ratio_of_derivatives(g, h, x)
    if expr == 0 or (isinstance(expr, sp.Piecewise) and all(e == 0 or e is sp.nan for e, _ in expr.args)):
        return NO_ERROR  # piecewise-linear: the derivative does not depend on the value
    symbols = tuple(sorted(expr.free_symbols | h.free_symbols, key=str))
    with errstate():  # only values are needed here: no error arithmetic
        ratio, hv = _numeric((expr, h), symbols)(*[env[s][0] for s in symbols])
    ratio = np.where(np.isfinite(ratio), np.abs(ratio), 0.0)
    return ar.function(hv).scaled(ratio)  # h computed to within its library error


def unjudged_where_undefined(pair: Pair) -> Pair:
    """An infinite bound where the float64 evaluation of a definition or a derivative overflows
    (LogisticCrossEntropy's log(1 / (1 + exp(-y))) at y < -709): the bound is not known there,
    so the element is not failed on it; the kink scan and non-finite checks still apply."""
    v, e = pair
    bad = ~np.isfinite(v)
    if not np.any(bad):
        return pair
    e = e.full(np.shape(v))
    return v, Err(np.where(bad, np.inf, e.worst), optional_map(e.var, lambda x: np.where(bad, np.inf, x)))


def graph_env(graph: Graph, env: dict, ar: Arithmetic) -> dict:
    env = dict(env)
    for sym, expr in graph.nodes:
        env[sym] = evaluate([expr], env, ar)[0]
    return env


