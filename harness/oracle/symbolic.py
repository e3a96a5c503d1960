"""The exact oracle's mathematics: SymPy derivatives of the forward definitions, evaluated in mpmath.

Method
------
Every Nerva component is written once as a SymPy expression of its *forward* definition
(:mod:`harness.oracle.definitions`). Every derivative is ``sp.diff`` of those definitions - never a
hand-written backward formula. Each derivative is derived ONCE per (component, parameters, size)
(``functools.lru_cache``) and turned into a numeric function with ``sp.lambdify(...,
modules="mpmath")`` (with common-subexpression elimination for the matrix-valued ones). Per step
the oracle only *evaluates* them, on exact inputs (:mod:`harness.oracle.exact`):

- elementwise activations: the scalar derivative, per element (``vjp``: DZ = DY * f'(Z));
- row functions: the K x K Jacobian (derived once per K), a vector-Jacobian product per row;
- losses: the gradient of the per-row expression with respect to y1..yK, per row;
- BatchNormalization: per column the N x N Jacobian of Z with respect to X (derived once per N),
  plus dY/dgamma and dY/dbeta, a vector-Jacobian product per column;
- Linear: dz/dw_d, dz/dx_d and dz/db of the generic element, applied by the chain rule as sums of
  products (correctly rounded dot products, ``mpmath.fdot``).

Row functions and BatchNormalization are small computation graphs whose nodes are the forward's
own intermediate quantities (softmax: the row sum S of exponentials; BatchNormalization: the mean
m and the variance s). The total Jacobian is assembled symbolically by the chain rule over these
nodes (every local derivative from ``sp.diff``, :func:`total_jacobian`): the result is the same
expression as differentiating the fully substituted definition (tests check this), but it is
derived far faster than the substituted form for a large batch.

Kinks
-----
Every ``Piecewise`` activation knows its breakpoints (``Activation.kinks``: 0 for the ReLU family
and ELU, tl and tr for SReLU) and its one-sided derivatives there (``one_sided(point) ->
(left, right)``: the limit of the derivative of the branch active on each side). The value used
for an element EXACTLY at a breakpoint is the RIGHT-HAND derivative (the branch on the right of
the kink), for the derivative with respect to x and for SReLU's parameter gradients alike: ReLU'(0)
= 1, LeakyReLU'(0) = 1, ELU'(0) = 1, SReLU'(tl) = 1, SReLU'(tr) = ar. (The Nerva libraries use 0
for ReLU'(0): kinks are conventions, reported, never failed.)

AbsoluteError: d|y - t|/dy is ``sign(y - t)`` (SymPy's derivative of ``Abs`` for real symbols);
at y = t it is sign(0) = 0, the midpoint of the one-sided values (-1, +1) and the minimum-norm
subgradient, which is also what the custom AbsoluteError of the harness returns.
``Loss.one_sided(y, t)`` gives the one-sided pair.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Iterable, Sequence

import mpmath
import numpy as np
import sympy as sp

from harness.core.components import SRELU_PARAMS
from harness.oracle.definitions import EPSILON, OPTIMIZER_SYMBOLS, X, GraphDefinition, \
    activation_definition, activation_variant, batch_norm_definition, elementwise_loss, linear_element, \
    forget_numpy_definitions, loss_expression, loss_symbols, optimizer_definition, row_function_definition
from harness.oracle.exact import exact, from_sympy, high_precision, lambdify, matmul, matrix, mpf, rational, \
    vector


# ---------------------------------------------------------------------------------------------
# A small computation graph: inputs -> intermediate nodes -> outputs, total Jacobian by sp.diff
# ---------------------------------------------------------------------------------------------

def total_jacobian(inputs: Sequence[sp.Symbol], nodes: Sequence[tuple[sp.Symbol, sp.Expr]],
                   outputs: Sequence[sp.Expr]) -> list[list[sp.Expr]]:
    """d outputs / d inputs through intermediate nodes, by the chain rule on ``sp.diff`` partials.

    ``nodes`` are (symbol, expression) in evaluation order; an expression may use the inputs, the
    parameters (any other symbol, held fixed) and earlier nodes. The result is expressed in the
    inputs, parameters and node symbols.
    """
    n = len(inputs)
    known: dict[sp.Symbol, list[sp.Expr]] = {
        x: [sp.Integer(1) if i == j else sp.Integer(0) for j in range(n)] for i, x in enumerate(inputs)
    }

    def chain(expr: sp.Expr) -> list[sp.Expr]:
        used = [u for u in expr.free_symbols if u in known]
        partials = [(sp.diff(expr, u), known[u]) for u in used]
        return [sp.Add(*[p * d[j] for p, d in partials if d[j] != 0]) for j in range(n)]

    for sym, expr in nodes:
        known[sym] = chain(expr)
    return [chain(out) for out in outputs]


class Graph:
    """Lambdified values and total Jacobian of a graph definition (see :func:`total_jacobian`)."""

    def __init__(self, definition: GraphDefinition) -> None:
        self.inputs, self.params, self.nodes, self.outputs = definition
        args = [*self.inputs, *self.params]
        self._node_fns = []
        for sym, expr in self.nodes:
            self._node_fns.append(lambdify(args, expr))
            args.append(sym)
        self._out_fn = lambdify(args, list(self.outputs), cse=True)
        self.jacobian_exprs = total_jacobian(self.inputs, self.nodes, self.outputs)
        self._jac_fn = lambdify(args, [e for row in self.jacobian_exprs for e in row], cse=True)

    def substituted(self, exprs: Iterable[sp.Expr]) -> list[sp.Expr]:
        """Expressions with every node replaced by its definition (in the inputs and parameters)."""
        out = list(exprs)
        for sym, expr in reversed(self.nodes):
            out = [e.subs(sym, expr) for e in out]
        return out

    def _args(self, values: Sequence) -> list:
        args = list(values)
        for fn in self._node_fns:
            args.append(fn(*args))
        return args

    def values(self, values: Sequence) -> list:
        return self._out_fn(*self._args(values))

    def jacobian(self, values: Sequence) -> list[list]:
        flat = self._jac_fn(*self._args(values))
        n = len(self.inputs)
        return [flat[k * n:(k + 1) * n] for k in range(len(self.outputs))]


# ---------------------------------------------------------------------------------------------
# Activations
# ---------------------------------------------------------------------------------------------

class ActivationModel:
    """Everything derived once for one activation definition."""

    def __init__(self, kind: str, variant: str) -> None:
        self.expr, self.params = activation_definition(kind, variant)
        x, args = X, (X, *self.params)
        self.f = lambdify(args, self.expr)
        self.dexpr = sp.diff(self.expr, x)
        self.df = lambdify(args, self.dexpr)
        self.dparam_exprs = tuple(sp.diff(self.expr, p) for p in self.params)
        self.dparams = tuple(lambdify(args, e) for e in self.dparam_exprs)
        if isinstance(self.expr, sp.Piecewise):
            self.branches = [(e, c) for e, c in self.expr.args]
        else:
            self.branches = [(self.expr, sp.true)]
        # per branch: its derivative in x and in every parameter (used exactly at a breakpoint)
        self.branch_d = [lambdify(args, [sp.diff(e, x), *[sp.diff(e, p) for p in self.params]])
                         for e, _ in self.branches]
        self.breakpoints: list[sp.Expr] = []
        for _, cond in self.branches:
            for rel in cond.atoms(sp.core.relational.Relational):
                for k in sp.solve(sp.Eq(rel.lhs, rel.rhs), x):
                    if k not in self.breakpoints:
                        self.breakpoints.append(k)

    @functools.lru_cache(maxsize=4096)
    def branch_index(self, point: sp.Rational, params: tuple, side: int) -> int:
        """Which branch is active just left (side -1) or right (+1) of ``point``, exactly."""
        subs = dict(zip(self.params, params))
        kinks = [sp.sympify(k).subs(subs) for k in self.breakpoints]
        gaps = [abs(k - point) for k in kinks if k != point]
        h = min([sp.Integer(1), *gaps]) / 1024  # closer than any other breakpoint
        subs[X] = point + side * h
        for i, (_, cond) in enumerate(self.branches):
            if cond is sp.true or bool(cond.subs(subs)) is True:
                return i
        raise ValueError(f"no branch of {self.expr} is active at {point} {'+' if side > 0 else '-'} 0")

    @functools.lru_cache(maxsize=4096)
    def one_sided(self, point: sp.Rational, params: tuple) -> tuple[sp.Expr, sp.Expr]:
        subs = dict(zip(self.params, params))
        out = []
        for side, direction in ((-1, "-"), (1, "+")):
            e, _ = self.branches[self.branch_index(point, params, side)]
            out.append(sp.limit(sp.diff(e, X).subs(subs), X, point, direction))
        return out[0], out[1]


@functools.lru_cache(maxsize=None)
def activation_model(kind: str, variant: str) -> ActivationModel:
    return ActivationModel(kind, variant)


def forget_custom_components() -> None:
    """Drop everything derived from definitions by name (a command registers its custom
    components afresh, and a name may now stand for another definition)."""
    activation_model.cache_clear()
    loss_model.cache_clear()
    forget_numpy_definitions()


class Activation:
    """An elementwise activation: its SymPy definition, values, derivatives and kinks.

    ``Activation(kind, args)``: kind in ACTIVATIONS, args the kind's parameters (``alpha``; SReLU:
    ``al, tl, ar, tr``, overridden per call by ``srelu=[al, tl, ar, tr]``). ``expr`` is the
    definition in ``symbol`` with the parameters as symbols (``parameters``); ``derivative_expr``
    is its sp.diff and ``parameter_derivative_exprs`` its sp.diff in every parameter. At an element
    exactly on a breakpoint the RIGHT-HAND derivative is used.
    """

    def __init__(self, kind: str, args: dict[str, float] | None = None) -> None:
        from harness.core.components import LAYERS

        defaults = {k: v for k, v in LAYERS[kind].params.items() if v is not None} if kind in LAYERS else {}
        self.kind, self.args = kind, {**defaults, **(args or {})}
        self._m = activation_model(kind, activation_variant(kind, self.args))
        self.symbol = X
        self.expr = self._m.expr
        self.parameters = self._m.params
        self.derivative_expr = self._m.dexpr
        self.parameter_derivative_exprs = self._m.dparam_exprs

    def _p(self, srelu: Any = None) -> list:
        if self.kind == "SReLU":
            values = srelu if srelu is not None else [self.args[k] for k in SRELU_PARAMS]
            return [mpf(v) for v in np.asarray(values, dtype=object).reshape(-1)]
        return [mpf(self.args[p.name]) for p in self.parameters]

    @high_precision
    def value(self, Z: Any, srelu: Any = None) -> np.ndarray:
        Z, p, f = exact(Z), self._p(srelu), self._m.f
        out = np.empty(Z.shape, dtype=object)
        out.reshape(-1)[:] = [f(z, *p) for z in Z.reshape(-1)]
        return out

    def _derivatives(self, Z: np.ndarray, p: list, which: int) -> list:
        """which = 0: d/dx; which = 1 + k: d/d(parameter k); right-hand at breakpoints."""
        fn = self._m.df if which == 0 else self._m.dparams[which - 1]
        kinks = set(self._kinks(p))
        out = []
        for z in Z.reshape(-1):
            if z in kinks:
                i = self._m.branch_index(rational(z), tuple(rational(v) for v in p), 1)
                out.append(self._m.branch_d[i](z, *p)[which])
            else:
                out.append(fn(z, *p))
        return out

    @high_precision
    def derivative(self, Z: Any, srelu: Any = None) -> np.ndarray:
        Z = exact(Z)
        out = np.empty(Z.shape, dtype=object)
        out.reshape(-1)[:] = self._derivatives(Z, self._p(srelu), 0)
        return out

    @high_precision
    def vjp(self, Z: Any, DY: Any, srelu: Any = None) -> np.ndarray:
        """DZ = DY * f'(Z), elementwise."""
        Z, DY = exact(Z), exact(DY)
        out = np.empty(Z.shape, dtype=object)
        out.reshape(-1)[:] = [g * d for g, d in zip(DY.reshape(-1), self._derivatives(Z, self._p(srelu), 0))]
        return out

    @high_precision
    def param_gradients(self, Z: Any, DY: Any, srelu: Any = None) -> np.ndarray:
        """SReLU: [sum DY * df/dal, .. dtl, .. dar, .. dtr] over all elements."""
        if self.kind != "SReLU":
            raise ValueError(f"{self.kind} has no trainable parameters")
        Z, DY, p = exact(Z), exact(DY), self._p(srelu)
        dy = DY.reshape(-1).tolist()
        return vector([mpmath.fdot(dy, self._derivatives(Z, p, k + 1)) for k in range(len(p))])

    def _kinks(self, p: list) -> list:
        subs = dict(zip(self.parameters, p))
        out = []
        for k in self._m.breakpoints:
            if k in subs:  # a parameter (SReLU's tl, tr): its value as given
                out.append(subs[k])
            else:
                out.append(from_sympy(k.subs({s: rational(v) for s, v in subs.items()})))
        return out

    @high_precision
    def kinks(self, srelu: Any = None) -> list:
        """Where the Piecewise switches branch (ReLU family, ELU: [0]; SReLU: [tl, tr]).

        A breakpoint can be differentiable (ELU with alpha = 1): ``one_sided`` tells.
        """
        return self._kinks(self._p(srelu))

    @high_precision
    def one_sided(self, point: Any, srelu: Any = None) -> tuple:
        """(left, right) derivative at ``point``: limits of the derivatives of the branches."""
        params = tuple(rational(v) for v in self._p(srelu))
        left, right = self._m.one_sided(rational(point), params)
        return from_sympy(left), from_sympy(right)


# ---------------------------------------------------------------------------------------------
# Row functions: softmax, log_softmax and their stable forms
# ---------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def row_graph(name: str, K: int) -> Graph:
    """The graph of a row function of K entries (its definition, lambdified and differentiated)."""
    return Graph(row_function_definition(name, K))


class RowFunction:
    """softmax / stable_softmax / log_softmax / stable_log_softmax of rows of K entries.

    ``exprs``: the K outputs in ``symbols`` (z1..zK) and ``shift`` (c; used by the stable forms,
    evaluated at c = max(z)). ``jacobian_exprs``: dF_k/dz_j (with the row-sum node as a symbol).
    """

    def __init__(self, name: str, K: int) -> None:
        self.name, self.K = name, int(K)
        self._g = row_graph(name, self.K)
        self.symbols = self._g.inputs
        self.shift = self._g.params[0]
        self.exprs = self._g.substituted(self._g.outputs)
        self.jacobian_exprs = self._g.jacobian_exprs

    def _args(self, row: list) -> list:
        return [*row, max(row)]

    @high_precision
    def value(self, Z: Any) -> np.ndarray:
        Z = exact(Z)
        return matrix([self._g.values(self._args(row)) for row in Z.tolist()])

    @high_precision
    def jacobian(self, z_row: Any) -> np.ndarray:
        return matrix(self._g.jacobian(self._args(exact(z_row).reshape(-1).tolist())))

    @high_precision
    def vjp(self, Z: Any, DY: Any) -> np.ndarray:
        """DZ_j = sum_k DY_k dF_k/dz_j, per row."""
        Z, DY = exact(Z), exact(DY)
        out = []
        for row, dy in zip(Z.tolist(), DY.tolist()):
            J = self._g.jacobian(self._args(row))
            out.append([mpmath.fdot(dy, [J[k][j] for k in range(self.K)]) for j in range(self.K)])
        return matrix(out)


# ---------------------------------------------------------------------------------------------
# Losses (per row; the batch loss is the sum over rows)
# ---------------------------------------------------------------------------------------------

class LossModel:
    """A loss of rows of K: its expression, gradient expressions and their lambdified forms."""

    def __init__(self, name: str, K: int) -> None:
        self.y, self.t = loss_symbols(K)
        self.expr = loss_expression(name, self.y, self.t)
        self.gradient_exprs = [sp.diff(self.expr, yk) for yk in self.y]
        args = [*self.y, *self.t]
        self.f = lambdify(args, self.expr)
        self.grad = lambdify(args, self.gradient_exprs, cse=True)


@functools.lru_cache(maxsize=None)
def loss_model(name: str, K: int) -> LossModel:
    return LossModel(name, K)


class Loss:
    """A Nerva loss: ``expr`` of one row (``y``, ``t``); value = sum over rows; gradient dL/dY.

    The gradient is NOT divided by N (the training loop does that: ``divide``).
    """

    def __init__(self, name: str, K: int) -> None:
        self.name, self.K = name, int(K)
        self._m = loss_model(name, self.K)
        self.expr, self.y, self.t = self._m.expr, self._m.y, self._m.t
        self.gradient_exprs = self._m.gradient_exprs

    @high_precision
    def value(self, Y: Any, T: Any) -> mpmath.mpf:
        Y, T = exact(Y), exact(T)
        return mpmath.fsum(self._m.f(*y, *t) for y, t in zip(Y.tolist(), T.tolist()))

    @high_precision
    def gradient(self, Y: Any, T: Any) -> np.ndarray:
        Y, T = exact(Y), exact(T)
        return matrix([self._m.grad(*y, *t) for y, t in zip(Y.tolist(), T.tolist())])

    @high_precision
    def one_sided(self, y: Any, t: Any) -> tuple:
        """(left, right) derivative of one element's loss in y at (y, t): AbsoluteError (-1, 1) at y = t.

        Defined for the elementwise losses (:func:`harness.oracle.definitions.elementwise_loss`).
        """
        if not elementwise_loss(self.name):
            raise ValueError(f"one_sided is defined for the elementwise losses, not {self.name}")
        m = loss_model(self.name, 1)
        d = m.gradient_exprs[0].subs(m.t[0], rational(t))
        yr = rational(y)
        return tuple(from_sympy(sp.limit(d, m.y[0], yr, s)) for s in ("-", "+"))


# ---------------------------------------------------------------------------------------------
# BatchNormalization (one column of N samples; batch statistics, biased variance, epsilon)
# ---------------------------------------------------------------------------------------------

class BatchNormModel:
    """The definition of one column (:class:`harness.oracle.definitions.BatchNormDefinition`'s
    fields), its graph and the partials of the affine output."""

    def __init__(self, N: int) -> None:
        d = batch_norm_definition(N)
        self.x, self.epsilon, self.m, self.s, self.z = d.x, d.epsilon, d.m, d.s, list(d.z)
        self.graph = Graph(d.graph)
        self.gamma, self.beta, self.zeta, self.y = d.gamma, d.beta, d.zeta, d.y
        self.dy = [sp.diff(self.y, v) for v in (d.zeta, d.gamma, d.beta)]  # dY/dZ, dY/dgamma, dY/dbeta
        assert not any(d.beta in e.free_symbols for e in self.dy)  # the partials do not need beta
        self.f_y = lambdify((d.zeta, d.gamma, d.beta), self.y)
        self.f_dy = lambdify((d.zeta, d.gamma), self.dy)


@functools.lru_cache(maxsize=None)
def batchnorm_model(N: int) -> BatchNormModel:
    return BatchNormModel(N)


class BatchNorm:
    """Nerva's BatchNormalizationLayer for a batch of N rows, column by column.

    ``z_exprs``: Z_i in x1..xN and ``epsilon`` (evaluated at EPSILON, the exact value of the float
    Nerva adds); ``jacobian_exprs``: dZ_i/dx_j (with the mean ``m`` and variance ``s`` as node
    symbols); ``model``: the :class:`BatchNormModel` (its symbols and graph).
    """

    def __init__(self, N: int) -> None:
        self.N = int(N)
        self.model = batchnorm_model(self.N)
        self.symbols, self.epsilon_symbol = self.model.x, self.model.epsilon
        self.epsilon = EPSILON
        self.z_exprs = self.model.graph.substituted(self.model.z)
        self.jacobian_exprs = self.model.graph.jacobian_exprs
        self.y_expr = self.model.y

    def _columns(self, X: np.ndarray) -> list[list]:
        if X.shape[0] != self.N:
            raise ValueError(f"BatchNorm({self.N}) got a batch of {X.shape[0]} rows")
        return X.T.tolist()

    @high_precision
    def forward(self, X: Any, gamma: Any, beta: Any) -> tuple[np.ndarray, np.ndarray]:
        """(Y, Z): Y = gamma * Z + beta, Z the normalized input."""
        X, gamma, beta = exact(X), exact(gamma).reshape(-1), exact(beta).reshape(-1)
        eps = mpf(EPSILON)
        Zt = [self.model.graph.values([*col, eps]) for col in self._columns(X)]
        Z = matrix(Zt).T.copy()
        f = self.model.f_y
        Y = matrix([[f(z, g, b) for z, g, b in zip(row, gamma, beta)] for row in Z.tolist()])
        return Y, Z

    @high_precision
    def vjp(self, X: Any, gamma: Any, DY: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(DX, Dgamma, Dbeta, DZ) for the upstream gradient DY; DZ = dL/dZ (Nerva's DZ)."""
        X, gamma, DY = exact(X), exact(gamma).reshape(-1), exact(DY)
        eps = mpf(EPSILON)
        cols, dcols = self._columns(X), DY.T.tolist()
        DX, DZ, Dgamma, Dbeta = [], [], [], []
        for col, dy, g in zip(cols, dcols, gamma):
            z = self.model.graph.values([*col, eps])
            partials = [self.model.f_dy(zi, g) for zi in z]  # dY/dZ, dY/dgamma, dY/dbeta
            dz = [d * p[0] for d, p in zip(dy, partials)]
            Dgamma.append(mpmath.fdot(dy, [p[1] for p in partials]))
            Dbeta.append(mpmath.fdot(dy, [p[2] for p in partials]))
            J = self.model.graph.jacobian([*col, eps])
            DX.append([mpmath.fdot(dz, [J[i][j] for i in range(self.N)]) for j in range(self.N)])
            DZ.append(dz)
        return matrix(DX).T.copy(), vector(Dgamma), vector(Dbeta), matrix(DZ).T.copy()


# ---------------------------------------------------------------------------------------------
# Linear
# ---------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _linear_partials() -> dict[str, Any]:
    """dz/dw_d, dz/dx_d and dz/db of the generic element, by sp.diff.

    Each is a single factor of the element: dz/dw_d is the input x_d, dz/dx_d the weight w_d,
    dz/db a constant. The chain rule then reads: DW[k, d] = sum_n DZ[n, k] * X[n, d],
    DX[n, d] = sum_k DZ[n, k] * W[k, d], Db[k] = sum_n DZ[n, k] * (dz/db).
    """
    z, x, w, b = linear_element(3)
    table = {x[1]: "X", w[1]: "W"}
    dw, dx, db = sp.diff(z, w[1]), sp.diff(z, x[1]), sp.diff(z, b)
    if dw not in table or dx not in table or not db.is_number:
        raise AssertionError(f"the linear element's partials are not single factors: {dw}, {dx}, {db}")
    return {"dw": table[dw], "dx": table[dx], "db": db}


@high_precision
def linear_forward(X: Any, W: Any, b: Any) -> np.ndarray:
    """Z = X W^T + b, every entry a correctly rounded dot product."""
    X, W, b = exact(X), exact(W), exact(b).reshape(-1)
    Z = matmul(X, W.T)
    return matrix([[v + bk for v, bk in zip(row, b)] for row in Z.tolist()])


@high_precision
def linear_vjp(X: Any, W: Any, DZ: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(DX, DW, Db) for the upstream gradient DZ of Z = X W^T + b."""
    X, W, DZ = exact(X), exact(W), exact(DZ)
    p = _linear_partials()
    by = {"X": X, "W": W}
    DW = matmul(DZ.T, by[p["dw"]])  # sum_n DZ[n, k] * dz/dw_d evaluated at sample n
    DX = matmul(DZ, by[p["dx"]])  # sum_k DZ[n, k] * dz/dx_d evaluated at output k
    c = from_sympy(p["db"])
    Db = vector([mpmath.fdot(col, [c] * len(col)) for col in DZ.T.tolist()])
    return DX, DW, Db


# ---------------------------------------------------------------------------------------------
# Optimizers
# ---------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _optimizer_model(name: str) -> tuple[tuple[sp.Expr, sp.Expr | None], Callable]:
    exprs = optimizer_definition(name)
    fn = lambdify(OPTIMIZER_SYMBOLS, [e if e is not None else sp.Integer(0) for e in exprs])
    return exprs, fn


@high_precision
def optimizer_update(name: str, mu: float, x: Any, Dx: Any, v: Any, eta: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """(x_new, v_new) elementwise; v_new is None for GradientDescent (v None or zeros for it)."""
    exprs, fn = _optimizer_model(name)
    X, D = exact(x), exact(Dx)
    V = exact(np.zeros(X.shape) if v is None else v)
    e, m = mpf(eta), mpf(mu)
    pairs = [fn(a, d, w, e, m) for a, d, w in zip(X.reshape(-1), D.reshape(-1), V.reshape(-1))]
    x_new = np.empty(X.shape, dtype=object)
    x_new.reshape(-1)[:] = [p[0] for p in pairs]
    if exprs[1] is None:
        return x_new, None
    v_new = np.empty(X.shape, dtype=object)
    v_new.reshape(-1)[:] = [p[1] for p in pairs]
    return x_new, v_new
