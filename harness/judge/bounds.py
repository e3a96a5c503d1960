"""The unit of judgement: a bound on the rounding error a correct implementation can make.

Every element of every traced tensor gets a bound ``E`` on ``|computed - exact|`` for an
implementation that evaluates the forward definitions of :mod:`harness.oracle.definitions` (and
their ``sp.diff`` derivatives, the chain rule and the optimizer updates) in the run's dtype, under
the rounding model of :mod:`harness.judge.arithmetic`, with the freedom to shift a row by its
maximum before exponentiating (softmax, log_softmax and the softmax cross-entropy): the row's
rounding then includes ``u * max |row|``.

The bound is a running error bound (Higham, *Accuracy and Stability of Numerical Algorithms*,
2nd ed., section 3.3), first order in the roundings (a product carries its operands' errors
exactly, second order included: :func:`harness.judge.arithmetic.product_error`): it is evaluated
alongside the values, operation by operation, with absolute values, so it carries the error of
everything a tensor depends on (forward and backward) and the conditioning of every operation
(cancellation in a sum shows as ``sum |terms|`` much larger than ``|sum|``). It needs no new copy
of the formulas: the same SymPy expressions the exact oracle evaluates are walked node by node in
error arithmetic (:func:`harness.judge.walk.evaluate`), and the contractions of the chain rule
(``DW = DZ^T X``, ``DZ_j = sum_k DY_k J_kj``, …) use the dot product rule. docs/rounding.md
justifies the choices and shows the checks of the bound itself.

Where the reference is the backends' consensus instead of the exact value (no oracle), two correct
backends can be off in opposite directions, so the comparator allows twice the bound. In
trajectory mode the bound of each step is taken at the backends' consensus parameters, and their
measured spread there enters as the parameters' error (``carried``): the growth of the tolerance
over the steps is the propagation of that spread through the step, not an assumed law (carrying
the bound itself from step to step grows geometrically: docs/rounding.md); a re-anchoring resets
it to zero.

:func:`step_bounds` walks a step layer by layer, one function per layer kind for the forward
pass and for the backward pass, then the optimizer updates.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import sympy as sp

from harness.core.components import LAYERS, LOSSES
from harness.core.keys import GRADIENT
from harness.judge.arithmetic import NAN_SEEN, NO_ERROR, Arithmetic, Err, Pair, colsum, contract, dot, larger, \
    power_of_two, stack, times
from harness.judge.walk import bind_rows, evaluate, from_rounded_value, graph_env, unjudged_where_undefined
from harness.oracle import symbolic as S
from harness.oracle.definitions import OPTIMIZER_SYMBOLS, optimizer_definition
from harness.spec.scenario import LayerSpec, Scenario

Arrays = dict[str, np.ndarray]


# ---------------------------------------------------------------------------------------------
# Components
# ---------------------------------------------------------------------------------------------

def activation_env(act: S.Activation, ar: Arithmetic, Z: Pair, srelu: Pair | None) -> dict:
    """The activation's symbols bound: its argument to Z, its parameters to their values."""
    env = {act.symbol: Z}
    if act.kind == "SReLU":
        v, e = srelu
        e = e.full(np.shape(v))
        for k, sym in enumerate(act.parameters):
            env[sym] = (np.float64(v[k]), e[k])
    else:
        env.update({sym: ar.constant(float(act.args[sym.name])) for sym in act.parameters})
    return env


def activation_derivative(ar: Arithmetic, act: S.Activation, env: dict) -> Pair:
    """f'(Z) with its error: the derivative's own expression (sp.diff), or computed from the
    rounded output Y = f(Z) as backpropagation does (Y (1 - Y)), whichever errs more."""
    d = unjudged_where_undefined(evaluate([act.derivative_expr], env, ar)[0])
    return d[0], ar.combine(d[1], from_rounded_value(ar, act.derivative_expr, act.expr, act.symbol, env))


def loss(ar: Arithmetic, name: str, Y: Pair, T: Pair) -> tuple[Err, Pair]:
    """(error of the loss L = sum over rows, (dL/dY, its error)) at Y, T (rows of K).

    The softmax cross-entropy may shift each row by its maximum, and its gradient may be computed
    from the rounded probabilities, ``p sum(t) - t``; LogisticCrossEntropy's gradient may be
    computed from the rounded Sigmoid(Y) (``LossKind.link``, :func:`from_rounded_value`).
    """
    N, K = np.shape(Y[0])
    L = S.Loss(name, K)
    shift = name == "SoftmaxCrossEntropy"
    if shift:  # the loss and its gradient do not change when a row is shifted: evaluate the
        Y = (Y[0] - Y[0].max(axis=1, keepdims=True), Y[1])  # exponentials where they cannot overflow
    env = {**bind_rows(ar, L.y, Y, shift), **bind_rows(ar, L.t, T, False)}
    per_row = unjudged_where_undefined(evaluate([L.expr], env, ar)[0])
    value_error = ar.combine(ar.total(per_row[1].full((N,))), ar.local(np.sum(np.abs(per_row[0])), N))
    grad = unjudged_where_undefined(stack(evaluate(L.gradient_exprs, env, ar), (N,)))
    if shift:
        # Backpropagation computes p sum(t) - t from the rounded probabilities p = softmax(Y),
        # each within a library exponential's error and the K roundings of its sum and quotient
        # (exp(y - logsumexp(y)) included). Where that moves the gradient more than the error
        # SymPy's form carries (a single output: log(exp(y)) is y, the gradient exactly 0, where
        # a computed p of 1 - u is correct), that is the gradient's error. p sum(t) is read off
        # the gradient itself (g + t), so softmax is not written a second time.
        pt = np.abs(grad[0] + T[0])
        grad = (grad[0], larger(grad[1].full(grad[0].shape), ar.combine(ar.function(pt), ar.local(pt, K))))
    link = LOSSES[name].link
    if link is not None:  # the gradient computed from the rounded link, T (Sigmoid(Y) - 1)
        f = S.Activation(link)
        extra = [from_rounded_value(ar, g, f.expr.subs(f.symbol, y), y, env) for g, y in zip(L.gradient_exprs, L.y)]
        grad = (grad[0], ar.combine(grad[1], Err.stack(extra, (N,), axis=1)))
    return value_error, grad


def _row_function(name: str, K: int) -> S.Graph:
    """The stable form of a row function (shifted by c = max z; d/dc is identically 0)."""
    return S.row_graph(f"stable_{name}", K)


@functools.lru_cache(maxsize=None)
def _jacobian_of_outputs(kind: str, K: int) -> tuple[tuple, tuple]:
    """(q1..qK, dF_k/dz_j for k, j) of a row function written in its outputs q, as
    backpropagation evaluates it: q_k (delta_kj - q_j) for Softmax (diag(q) - q q^T), and
    delta_kj - exp(q_j) for LogSoftmax (its outputs are log-probabilities)."""
    q = sp.symbols(f"q1:{K + 1}", real=True)
    if kind == "Softmax":
        J = tuple(q[k] * (int(k == j) - q[j]) for k in range(K) for j in range(K))
    else:
        J = tuple(int(k == j) - sp.exp(q[j]) for k in range(K) for j in range(K))
    return q, J


# ---------------------------------------------------------------------------------------------
# A step
# ---------------------------------------------------------------------------------------------

def step_bounds(scenario: Scenario, ref: Arrays, state: Arrays, carried: Arrays | None = None,
                new_state: bool = False) -> tuple[Arrays, Arrays]:
    """Bounds for every tensor of one training step, and (``new_state``) for the state it ends in.

    ``ref``: the step's values (the oracle's trace, or the consensus); ``state``: parameters and
    velocities (``W1.v``) at the start of the step; ``carried``: their errors (trajectory mode;
    None: exact, as in lockstep). Returns (bounds by trace key, bounds of the new state by state
    key, velocities included; empty unless ``new_state``: the runner judges the updated
    parameters through the trace and takes the next step's ``carried`` from the backends' spread,
    so only the tests of the propagation ask for them). Each bound is
    ``min(worst case, LAMBDA * standard deviation)`` (:class:`Arithmetic`).
    """
    ar = Arithmetic(scenario.dtype)
    seen = [any(np.isnan(np.sum(v)) for d in (ref, state, carried or {}) for v in d.values())]

    def invalid(kind: str, flag: int) -> None:
        seen[0] = True

    token = NAN_SEEN.set(seen)
    try:  # overflow, 0 * inf and inf - inf are handled where they arise
        with np.errstate(all="ignore", invalid="call", call=invalid):
            errors, new_errors = _step_errors(scenario, ref, state, carried, ar, new_state)
    finally:
        NAN_SEEN.reset(token)
    shapes = {**{k: np.shape(v) for k, v in ref.items()}, **{k: np.shape(v) for k, v in state.items()}}
    bounds = {k: _bound(ar, e, shapes[k]) for k, e in errors.items()}
    if not new_state:
        return bounds, {}
    return bounds, {k: bounds[k] if k in bounds else _bound(ar, e, shapes[k.removesuffix(".v")])
                    for k, e in new_errors.items()}


def _bound(ar: Arithmetic, e: Err, shape: tuple) -> np.ndarray:
    b = ar.bound(e)  # a new array
    return b if b.shape == shape else np.array(np.broadcast_to(b, shape))


def _step_errors(scenario: Scenario, ref: Arrays, state: Arrays, carried: Arrays | None,
                 ar: Arithmetic, velocities: bool) -> tuple[dict[str, Err], dict[str, Err]]:
    """(errors by trace key, errors of the new state): forward, loss, backward, updates (the
    new velocities' errors only with ``velocities``)."""
    carried = carried or {}
    N = ref["X"].shape[0]
    P = {k: ar.given(v, carried.get(k)) for k, v in state.items()}
    E: dict[str, Err] = {"X": NO_ERROR, "T": NO_ERROR}
    T = ar.given(ref["T"])
    saved, Y = _forward(scenario, ref, P, ar, E)
    E["loss"], grad = loss(ar, scenario.loss, Y, T)
    n_exact = power_of_two(float(N))
    DY = (ref["DY"], ar.combine(grad[1].scaled(1 / N), ar.local(ref["DY"], 0 if n_exact else 1)))
    E["DY"] = DY[1]
    _backward(scenario, ref, P, ar, E, saved, DY)
    return E, _updates(scenario, ref, P, ar, E, velocities)


# ---------------------------------------------------------------------------------------------
# The forward pass, per layer kind
# ---------------------------------------------------------------------------------------------

def _forward(scenario: Scenario, ref: Arrays, P: dict[str, Pair], ar: Arithmetic,
             E: dict[str, Err]) -> tuple[list[dict], Pair]:
    """Every layer's input and output errors into ``E``; returns what each layer keeps for the
    backward pass (its input X, its Z and its evaluated environment) and the output Y."""
    N = ref["X"].shape[0]
    h = ar.given(ref["X"])
    saved: list[dict] = []
    for i, spec in enumerate(scenario.layers, start=1):
        kind = LAYERS[spec.kind]
        E[f"X{i}"] = h[1]
        keep: dict[str, Any] = {"X": h}
        if spec.kind == "BatchNormalization":
            Z, out, extra = _forward_batch_norm(ar, i, h, P, N)
        else:
            Z = _forward_linear(ar, spec, i, h, P, ref)
            if spec.kind == "Linear":
                out, extra = Z[1], {}
            elif kind.row:
                out, extra = _forward_rows(ar, spec, Z, N)
            else:
                out, extra = _forward_activation(ar, spec, i, Z, P)
        keep.update(extra)
        if kind.has_z:
            E[f"Z{i}"] = Z[1]
        keep["Z"] = Z
        saved.append(keep)
        nxt = f"X{i + 1}" if i < len(scenario.layers) else "Y"
        h = (ref[nxt], out.full(ref[nxt].shape))
    E["Y"] = h[1]
    return saved, h


def _forward_batch_norm(ar: Arithmetic, i: int, h: Pair, P: dict[str, Pair], N: int) -> tuple[Pair, Err, dict]:
    """(Z, the output's error, what the backward pass needs) of a BatchNormalization layer."""
    bn = S.BatchNorm(N)
    m = bn.model
    cols = {x: (h[0][j], h[1].full(h[0].shape)[j]) for j, x in enumerate(m.x)}
    env = graph_env(m.graph, {**cols, m.epsilon: ar.constant(bn.epsilon)}, ar)
    Z = stack(evaluate(m.z, env, ar), (h[0].shape[1],), axis=0)
    y = evaluate([m.y], {m.zeta: Z, m.gamma: P[f"gamma{i}"], m.beta: P[f"beta{i}"]}, ar)[0]
    return Z, y[1], {"bn": (bn, env)}


def _forward_linear(ar: Arithmetic, spec: LayerSpec, i: int, h: Pair, P: dict[str, Pair], ref: Arrays) -> Pair:
    """Z = X W^T + b of a layer with weights."""
    kind = LAYERS[spec.kind]
    Z = dot(ar, h, (P[f"W{i}"][0].T, P[f"W{i}"][1].T), n=ref[f"X{i}"].shape[1] + 1,
            value=ref[f"Z{i}"] if kind.has_z else None)
    b = P[f"b{i}"]
    return (Z[0] + (0 if kind.has_z else b[0]),
            ar.combine(Z[1], b[1], ar.local(b[0], ref[f"X{i}"].shape[1] + 1)))


def _forward_rows(ar: Arithmetic, spec: LayerSpec, Z: Pair, N: int) -> tuple[Err, dict]:
    """The output's error of a Softmax or LogSoftmax layer (its stable form), and what the
    backward pass needs."""
    g = _row_function("softmax" if spec.kind == "Softmax" else "log_softmax", spec.units)
    env = bind_rows(ar, g.inputs, Z, shift=True)
    env[g.params[0]] = (Z[0].max(axis=1), NO_ERROR)  # the shift's error cancels exactly
    env = graph_env(g, env, ar)
    y = stack(evaluate(g.outputs, env, ar), (N,))
    probabilities = y[0] if spec.kind == "Softmax" else np.exp(y[0])
    return y[1], {"rows": (g, env), "probabilities": probabilities, "outputs": y}


def _forward_activation(ar: Arithmetic, spec: LayerSpec, i: int, Z: Pair, P: dict[str, Pair]) -> tuple[Err, dict]:
    """The output's error of an elementwise activation layer, and what the backward pass needs."""
    act = S.Activation(spec.kind, spec.arg)
    env = activation_env(act, ar, Z, P.get(f"srelu{i}"))
    y = evaluate([act.expr], env, ar)[0]
    return y[1], {"act": (act, env)}


# ---------------------------------------------------------------------------------------------
# The backward pass, per layer kind
# ---------------------------------------------------------------------------------------------

def _backward(scenario: Scenario, ref: Arrays, P: dict[str, Pair], ar: Arithmetic, E: dict[str, Err],
              saved: list[dict], DY: Pair) -> None:
    """Every gradient's error into ``E``, from the output layer down."""
    N = ref["X"].shape[0]
    for i in range(len(scenario.layers), 0, -1):
        spec, keep = scenario.layers[i - 1], saved[i - 1]
        if spec.kind == "BatchNormalization":
            DX = _backward_batch_norm(ar, i, keep, P, DY, N, ref, E)
        else:
            if spec.kind == "Linear":
                DZ = DY
            elif "rows" in keep:
                DZ = _backward_rows(ar, spec, i, keep, DY, N, ref)
            else:
                DZ = _backward_activation(ar, spec, i, keep, DY, ref, E)
            DX = _backward_linear(ar, spec, i, keep["X"], DZ, P, N, ref, E)
        E[f"DX{i}"] = DX[1]
        DY = DX


def _backward_batch_norm(ar: Arithmetic, i: int, keep: dict, P: dict[str, Pair], DY: Pair, N: int,
                         ref: Arrays, E: dict[str, Err]) -> Pair:
    """DZ, Dgamma and Dbeta of a BatchNormalization layer into ``E``; returns DX."""
    X, Z = keep["X"], keep["Z"]
    bn, env = keep["bn"]
    gamma = P[f"gamma{i}"]
    DZ = times(ar, DY, gamma)
    E[f"DZ{i}"] = DZ[1]
    E[f"Dgamma{i}"] = colsum(ar, times(ar, DY, Z))[1]
    E[f"Dbeta{i}"] = colsum(ar, DY)[1]
    J = evaluate([e for row in bn.jacobian_exprs for e in row], env, ar)  # J[a][b] over columns
    dz_v, dz_e = DZ[0], DZ[1].full(DZ[0].shape)
    columns = []
    for b in range(N):  # DX[b] = sum_a DZ[a] J[a][b], column by column
        absdot, err = contract(ar, [J[a * N + b] for a in range(N)], [(dz_v[a], dz_e[a]) for a in range(N)])
        columns.append(ar.combine(err, ar.local(absdot, N)))
    return ref[f"DX{i}"], Err.stack(columns, (X[0].shape[1],), axis=0)


def _backward_rows(ar: Arithmetic, spec: LayerSpec, i: int, keep: dict, DY: Pair, N: int, ref: Arrays) -> Pair:
    """DZ of a Softmax or LogSoftmax layer."""
    g, env = keep["rows"]
    K = spec.units
    J = evaluate([e for row in g.jacobian_exprs for e in row], env, ar)  # J[k][j], per row
    # Backpropagation evaluates the Jacobian from the rounded outputs: where their
    # error moves it more than the error of Z does (a single output, whose SymPy
    # Jacobian is exactly 0), that error is the Jacobian's
    q, from_q = _jacobian_of_outputs(spec.kind, K)
    J = [(v, larger(e, eq)) for (v, e), (_, eq) in zip(J, evaluate(from_q, bind_rows(ar, q, keep["outputs"], False), ar))]
    dy_v, dy_e = DY[0], DY[1].full(DY[0].shape)
    columns = []
    for j in range(K):  # DZ[:, j] = sum_k DY[:, k] J[k][j], per row
        absdot, err = contract(ar, [J[k * K + j] for k in range(K)], [(dy_v[:, k], dy_e[:, k]) for k in range(K)])
        columns.append(ar.combine(err, ar.local(absdot, K)))
    # The product computed in that form (diag(p) - p p^T, or 1 - p for log_softmax):
    # one rounding of each of its terms, even where SymPy's form of the Jacobian is
    # exactly 0, each of the size of the computed DY (its value and its error)
    p = keep["probabilities"]
    dy_m = np.abs(dy_v) + dy_e.worst
    from_outputs = ar.local(dy_m * (1 if spec.kind == "LogSoftmax" else p)
                            + p * np.sum(dy_m * (1 if spec.kind == "LogSoftmax" else p), axis=1, keepdims=True))
    return ref[f"DZ{i}"], ar.combine(Err.stack(columns, (N,), axis=1), from_outputs)


def _backward_activation(ar: Arithmetic, spec: LayerSpec, i: int, keep: dict, DY: Pair, ref: Arrays,
                         E: dict[str, Err]) -> Pair:
    """DZ of an elementwise activation layer (and SReLU's parameter gradients into ``E``)."""
    act, env = keep["act"]
    d = activation_derivative(ar, act, env)
    DZ = times(ar, DY, d)
    DZ = (ref[f"DZ{i}"], DZ[1])
    if spec.kind == "SReLU":
        dp = evaluate(list(act.parameter_derivative_exprs), env, ar)
        errs = []
        for dv, de in dp:
            prod = times(ar, DY, (np.broadcast_to(dv, DY[0].shape), de.full(DY[0].shape)))
            errs.append(ar.combine(ar.total(prod[1].full(prod[0].shape)), ar.local(np.sum(np.abs(prod[0])), prod[0].size)))
        E[f"Dsrelu{i}"] = Err.stack(errs, (), axis=0)
    return DZ


def _backward_linear(ar: Arithmetic, spec: LayerSpec, i: int, X: Pair, DZ: Pair, P: dict[str, Pair], N: int,
                     ref: Arrays, E: dict[str, Err]) -> Pair:
    """DZ (traced kinds), DW and Db of a layer with weights into ``E``; returns DX."""
    if LAYERS[spec.kind].has_z:
        E[f"DZ{i}"] = DZ[1]
    W = P[f"W{i}"]
    E[f"DW{i}"] = dot(ar, (DZ[0].T, DZ[1].full(DZ[0].shape).T), X, n=N, value=ref[f"DW{i}"])[1]
    E[f"Db{i}"] = colsum(ar, DZ)[1]
    return ref[f"DX{i}"], dot(ar, DZ, W, n=spec.units, value=ref[f"DX{i}"])[1]


# ---------------------------------------------------------------------------------------------
# The optimizer updates
# ---------------------------------------------------------------------------------------------

def _updates(scenario: Scenario, ref: Arrays, P: dict[str, Pair], ar: Arithmetic, E: dict[str, Err],
             velocities: bool) -> dict[str, Err]:
    """Every updated parameter's error into ``E``; returns the new state's errors (with
    ``velocities`` the new velocities' too: no trace holds them, so only the new state asks)."""
    new_state: dict[str, Err] = {}
    eta = ar.constant(scenario.lr)
    o = OPTIMIZER_SYMBOLS
    for i, spec in enumerate(scenario.layers, start=1):
        for param, opt in spec.optimizers:
            key = f"{param}{i}"
            x_new, v_new = optimizer_definition(opt.name)
            grad_key = GRADIENT[param] + str(i)
            env = {o.x: P[key], o.Dx: (ref[grad_key], E[grad_key]), o.eta: eta,
                   o.mu: ar.constant(opt.mu if opt.mu is not None else 0.0),
                   o.v: P.get(key + ".v", (np.float64(0.0), NO_ERROR))}
            velocity = velocities and v_new is not None
            out = evaluate([x_new] + ([v_new] if velocity else []), env, ar)
            E[key] = new_state[key] = out[0][1]
            if velocity:
                new_state[key + ".v"] = out[1][1]
    return new_state
