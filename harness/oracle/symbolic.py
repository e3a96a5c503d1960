"""The exact oracle's mathematics: SymPy derivatives of the forward definitions, evaluated in mpmath.

Method
------
Every Nerva component is written once as a SymPy expression of its *forward* definition, exactly
as the libraries compute it (``nerva_numpy``'s layers, activations, softmax and loss functions):

- activations of one real symbol ``x`` (ReLU, LeakyReLU, AllReLU, ELU and SReLU as ``Piecewise``
  with their parameters as symbols too);
- row functions of ``z1..zK`` (softmax, log_softmax, and the stable forms written with a shift
  symbol ``c``: softmax(z - c), evaluated at c = max(z); their derivative with respect to ``c`` is
  identically 0, so the partial Jacobian with respect to z is the total one);
- losses of one row ``y1..yK``, ``t1..tK`` (the batch loss is the sum over rows, as in Nerva);
- BatchNormalization of one column ``x1..xN`` (batch mean ``m``, biased variance ``s``,
  ``Z = (x - m) / sqrt(s + epsilon)``, ``Y = gamma * Z + beta``);
- the linear element ``z = sum_d x_d w_d + b`` and the optimizer updates (GradientDescent,
  Momentum, Nesterov).

Every derivative is ``sp.diff`` of those definitions - never a hand-written backward formula. Each
derivative is derived ONCE per (component, parameters, size) (``functools.lru_cache``) and turned
into a numeric function with ``sp.lambdify(..., modules="mpmath")`` (with common-subexpression
elimination for the matrix-valued ones). Per step the oracle only *evaluates* them:

- elementwise activations: the scalar derivative, per element (``vjp``: DZ = DY * f'(Z));
- row functions: the K x K Jacobian (derived once per K), a vector-Jacobian product per row;
- losses: the gradient of the per-row expression with respect to y1..yK, per row;
- BatchNormalization: per column the N x N Jacobian of Z with respect to X (derived once per N),
  plus dY/dgamma and dY/dbeta, a vector-Jacobian product per column;
- Linear: dz/dw_d, dz/dx_d and dz/db of the generic element, applied by the chain rule as sums of
  products (correctly rounded dot products, ``mpmath.fdot``).

Row functions and BatchNormalization are written as a small computation graph whose nodes are the
forward's own intermediate quantities (softmax: the row sum S of exponentials; BatchNormalization:
the mean m and the variance s). The total Jacobian is assembled symbolically by the chain rule
over these nodes (every local derivative from ``sp.diff``): the result is the same expression as
differentiating the fully substituted definition (tests check this), but it is derived in well
under a second where the substituted form takes minutes for N = 32.

Numbers
-------
Inputs are float arrays; every float is converted EXACTLY (``exact``: a binary float is a dyadic
rational, and ``mpf`` holds it without rounding). Exact/high-precision tensors are NumPy object
arrays of ``mpmath.mpf``. All arithmetic runs at ``DPS`` = 40 significant digits (or the caller's
``mpmath.mp.dps`` if that is higher), set locally with ``mpmath.workdps``; the global precision is
never changed permanently. ``to_float64`` rounds once, to nearest. The relative error of an oracle
value is ~1e-38 (more where a formula cancels catastrophically, e.g. ELU's exp(x) - 1 for
|x| < 1e-20), far below float64's 1.1e-16.

epsilon of BatchNormalization: Nerva adds the Python float ``1e-7``. The oracle uses the exact
value of that binary64 float, ``EPSILON = sp.Rational(1e-7)`` =
3602879701896397/36028797018963968 (not 1/10**7). Float32 backends round it to float32 when they
add it (a relative change of ~2e-9 in epsilon, invisible next to the variance).

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

Thread safety: ``mpmath.workdps`` changes mpmath's global context for the duration of a call, so
do not run the oracle concurrently with other mpmath work in another thread.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Iterable, Sequence

import mpmath
import numpy as np
import sympy as sp
from mpmath import libmp

from harness.core.components import SRELU_PARAMS

DPS = 40
EPSILON = sp.Rational(1e-7)  # the exact value of the binary64 float 1e-7 that Nerva adds
ACTIVATIONS = ("ReLU", "Sigmoid", "HyperbolicTangent", "LeakyReLU", "AllReLU", "ELU", "SReLU")
ROW_FUNCTIONS = ("softmax", "stable_softmax", "log_softmax", "stable_log_softmax")
LOSSES = ("SquaredError", "CrossEntropy", "SoftmaxCrossEntropy", "LogisticCrossEntropy",
          "NegativeLogLikelihood", "AbsoluteError")
OPTIMIZERS = ("GradientDescent", "Momentum", "Nesterov")


# ---------------------------------------------------------------------------------------------
# Numbers: exact conversion, precision, rounding back
# ---------------------------------------------------------------------------------------------

def _precision():
    """A context with at least DPS digits (the caller's higher precision is kept)."""
    return mpmath.workdps(max(DPS, mpmath.mp.dps))


def _high_precision(fn: Callable) -> Callable:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with _precision():
            return fn(*args, **kwargs)

    return wrapper


def _mpf(v: Any) -> mpmath.mpf:
    """One number as an mpf, exactly for binary floats and integers."""
    if isinstance(v, mpmath.mpf):
        return v
    if isinstance(v, (bool, int, np.integer)):
        return mpmath.mp.make_mpf(libmp.from_int(int(v)))
    if isinstance(v, (float, np.floating)):
        if not np.isfinite(v):
            return mpmath.mp.make_mpf(libmp.from_float(float(v)))
        p, q = v.as_integer_ratio()  # q is a power of two: p / q is the float's exact value
        return mpmath.mp.make_mpf(libmp.from_man_exp(int(p), -(int(q).bit_length() - 1)))
    if isinstance(v, sp.Basic):
        return _from_sympy(v)
    if isinstance(v, np.ndarray) and v.shape == ():
        return _mpf(v[()])
    with _precision():
        return mpmath.mpf(v)


def _from_sympy(v: sp.Basic) -> mpmath.mpf:
    with _precision():
        if v.is_Rational:
            return mpmath.mp.make_mpf(libmp.from_rational(int(v.p), int(v.q), mpmath.mp.prec, libmp.round_nearest))
        return mpmath.mpf(sp.Float(v.evalf(mpmath.mp.dps + 10), mpmath.mp.dps + 10))


def _rational(v: Any) -> sp.Rational:
    """The exact rational value of a float or mpf."""
    m = _mpf(v)
    if not mpmath.isfinite(m):
        raise ValueError(f"{v!r} is not finite")
    sign, man, exp, _ = m._mpf_
    return (-1) ** sign * sp.Integer(int(man)) * sp.Integer(2) ** int(exp)


def exact(a: Any) -> np.ndarray:
    """An object array of mpf holding the exact values of a float array (or scalar).

    Binary floats (float16/32/64, longdouble) and integers are converted without rounding; mpf
    elements are kept as they are.
    """
    arr = a if isinstance(a, np.ndarray) else np.asarray(a, dtype=object if _is_mp(a) else None)
    out = np.empty(arr.shape, dtype=object)
    flat = out.reshape(-1)
    # tolist() gives Python floats (exact) except for extended precision, kept as NumPy scalars
    values = arr.reshape(-1) if arr.dtype == object or arr.dtype.itemsize > 8 else arr.reshape(-1).tolist()
    for k, v in enumerate(values):
        flat[k] = _mpf(v)
    return out


def _is_mp(a: Any) -> bool:
    return isinstance(a, mpmath.mpf) or (isinstance(a, (list, tuple)) and any(isinstance(v, mpmath.mpf) for v in a))


def to_float64(a: Any) -> np.ndarray:
    """Round every element once, to nearest, to a float64 array of the same shape."""
    arr = a if isinstance(a, np.ndarray) else np.asarray(a, dtype=object)
    out = np.empty(arr.shape, dtype=np.float64)
    flat = out.reshape(-1)
    with mpmath.workdps(max(DPS, mpmath.mp.dps)):
        for k, v in enumerate(arr.reshape(-1)):
            flat[k] = float(v) if isinstance(v, mpmath.mpf) else float(_mpf(v))
    return out


def _obj(rows: Sequence) -> np.ndarray:
    out = np.empty((len(rows), len(rows[0]) if len(rows) else 0), dtype=object)
    for i, row in enumerate(rows):
        out[i, :] = list(row) if len(row) else []
    return out


def _vec(values: Sequence) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    for k, v in enumerate(values):
        out[k] = v
    return out


def _matmul(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """A @ B on object arrays of mpf, each entry a correctly rounded dot product (mpmath.fdot)."""
    rows, cols = A.tolist(), B.T.tolist()
    return _obj([[mpmath.fdot(r, c) for c in cols] for r in rows])


@_high_precision
def divide(a: Any, n: Any) -> np.ndarray:
    """a / n elementwise at high precision (the training loop's DY = gradient / N)."""
    A, d = exact(a), _mpf(n)
    out = np.empty(A.shape, dtype=object)
    out.reshape(-1)[:] = [v / d for v in A.reshape(-1)]
    return out


def _lambdify(args: Sequence[sp.Symbol], expr: Any, cse: bool = False) -> Callable:
    return sp.lambdify(list(args), expr, modules="mpmath", cse=cse)


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


class _Graph:
    """Lambdified values and total Jacobian of a graph (see :func:`total_jacobian`)."""

    def __init__(self, inputs: Sequence[sp.Symbol], params: Sequence[sp.Symbol],
                 nodes: Sequence[tuple[sp.Symbol, sp.Expr]], outputs: Sequence[sp.Expr]) -> None:
        self.inputs, self.params, self.nodes, self.outputs = tuple(inputs), tuple(params), tuple(nodes), tuple(outputs)
        args = [*self.inputs, *self.params]
        self._node_fns = []
        for sym, expr in self.nodes:
            self._node_fns.append(_lambdify(args, expr))
            args.append(sym)
        self._out_fn = _lambdify(args, list(self.outputs), cse=True)
        self.jacobian_exprs = total_jacobian(self.inputs, self.nodes, self.outputs)
        self._jac_fn = _lambdify(args, [e for row in self.jacobian_exprs for e in row], cse=True)

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

_x = sp.Symbol("x", real=True)
_alpha = sp.Symbol("alpha", real=True)
_al, _tl, _ar, _tr = sp.symbols("al tl ar tr", real=True)


def _activation_definition(kind: str, variant: str) -> tuple[sp.Expr, tuple[sp.Symbol, ...]]:
    """The forward definition of an activation, as nerva_numpy.activation_functions computes it."""
    x, a = _x, _alpha
    if kind == "ReLU":  # max(0, x)
        return sp.Piecewise((0, x < 0), (x, True)), ()
    if kind == "Sigmoid":  # 1 / (1 + exp(-x))
        return 1 / (1 + sp.exp(-x)), ()
    if kind == "HyperbolicTangent":
        return sp.tanh(x), ()
    if kind == "LeakyReLU":  # max(alpha x, x): which branch is the max depends on alpha <= 1
        if variant == "alpha<=1":
            return sp.Piecewise((a * x, x < 0), (x, True)), (a,)
        return sp.Piecewise((x, x < 0), (a * x, True)), (a,)
    if kind == "AllReLU":  # where(x < 0, alpha x, x)
        return sp.Piecewise((a * x, x < 0), (x, True)), (a,)
    if kind == "ELU":  # where(x > 0, x, alpha (exp(x) - 1))
        return sp.Piecewise((x, x > 0), (a * (sp.exp(x) - 1), True)), (a,)
    if kind == "SReLU":  # x <= tl: tl + al (x - tl); tl < x < tr: x; x >= tr: tr + ar (x - tr)
        return sp.Piecewise((_tl + _al * (x - _tl), x <= _tl), (x, x < _tr), (_tr + _ar * (x - _tr), True)), \
            (_al, _tl, _ar, _tr)
    raise ValueError(f"unknown activation {kind!r}; choose one of {', '.join(ACTIVATIONS)}")


class _ActivationModel:
    """Everything derived once for one activation definition."""

    def __init__(self, kind: str, variant: str) -> None:
        self.expr, self.params = _activation_definition(kind, variant)
        x, args = _x, (_x, *self.params)
        self.f = _lambdify(args, self.expr)
        self.dexpr = sp.diff(self.expr, x)
        self.df = _lambdify(args, self.dexpr)
        self.dparam_exprs = tuple(sp.diff(self.expr, p) for p in self.params)
        self.dparams = tuple(_lambdify(args, e) for e in self.dparam_exprs)
        if isinstance(self.expr, sp.Piecewise):
            self.branches = [(e, c) for e, c in self.expr.args]
        else:
            self.branches = [(self.expr, sp.true)]
        # per branch: its derivative in x and in every parameter (used exactly at a breakpoint)
        self.branch_d = [_lambdify(args, [sp.diff(e, x), *[sp.diff(e, p) for p in self.params]])
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
        subs[_x] = point + side * h
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
            out.append(sp.limit(sp.diff(e, _x).subs(subs), _x, point, direction))
        return out[0], out[1]


@functools.lru_cache(maxsize=None)
def _activation_model(kind: str, variant: str) -> _ActivationModel:
    return _ActivationModel(kind, variant)


class Activation:
    """An elementwise activation: its SymPy definition, values, derivatives and kinks.

    ``Activation(kind, args)``: kind in ACTIVATIONS, args the kind's parameters (``alpha``; SReLU:
    ``al, tl, ar, tr``, overridden per call by ``srelu=[al, tl, ar, tr]``). ``expr`` is the
    definition in ``symbol`` with the parameters as symbols (``parameters``); ``derivative_expr``
    is its sp.diff. At an element exactly on a breakpoint the RIGHT-HAND derivative is used.
    """

    def __init__(self, kind: str, args: dict[str, float] | None = None) -> None:
        from harness.core.components import LAYERS

        defaults = {k: v for k, v in LAYERS[kind].params.items() if v is not None} if kind in LAYERS else {}
        self.kind, self.args = kind, {**defaults, **(args or {})}
        variant = ""
        if kind == "LeakyReLU":
            variant = "alpha<=1" if float(self.args["alpha"]) <= 1 else "alpha>1"
        self._m = _activation_model(kind, variant)
        self.symbol = _x
        self.expr = self._m.expr
        self.parameters = self._m.params
        self.derivative_expr = self._m.dexpr

    def _p(self, srelu: Any = None) -> list:
        if self.kind == "SReLU":
            values = srelu if srelu is not None else [self.args[k] for k in SRELU_PARAMS]
            return [_mpf(v) for v in np.asarray(values, dtype=object).reshape(-1)]
        if self.parameters:
            return [_mpf(self.args["alpha"])]
        return []

    @_high_precision
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
                i = self._m.branch_index(_rational(z), tuple(_rational(v) for v in p), 1)
                out.append(self._m.branch_d[i](z, *p)[which])
            else:
                out.append(fn(z, *p))
        return out

    @_high_precision
    def derivative(self, Z: Any, srelu: Any = None) -> np.ndarray:
        Z = exact(Z)
        out = np.empty(Z.shape, dtype=object)
        out.reshape(-1)[:] = self._derivatives(Z, self._p(srelu), 0)
        return out

    @_high_precision
    def vjp(self, Z: Any, DY: Any, srelu: Any = None) -> np.ndarray:
        """DZ = DY * f'(Z), elementwise."""
        Z, DY = exact(Z), exact(DY)
        out = np.empty(Z.shape, dtype=object)
        out.reshape(-1)[:] = [g * d for g, d in zip(DY.reshape(-1), self._derivatives(Z, self._p(srelu), 0))]
        return out

    @_high_precision
    def param_gradients(self, Z: Any, DY: Any, srelu: Any = None) -> np.ndarray:
        """SReLU: [sum DY * df/dal, .. dtl, .. dar, .. dtr] over all elements."""
        if self.kind != "SReLU":
            raise ValueError(f"{self.kind} has no trainable parameters")
        Z, DY, p = exact(Z), exact(DY), self._p(srelu)
        dy = DY.reshape(-1).tolist()
        return _vec([mpmath.fdot(dy, self._derivatives(Z, p, k + 1)) for k in range(len(p))])

    def _kinks(self, p: list) -> list:
        subs = dict(zip(self.parameters, p))
        out = []
        for k in self._m.breakpoints:
            if k in subs:  # a parameter (SReLU's tl, tr): its value as given
                out.append(subs[k])
            else:
                out.append(_from_sympy(k.subs({s: _rational(v) for s, v in subs.items()})))
        return out

    @_high_precision
    def kinks(self, srelu: Any = None) -> list:
        """Where the Piecewise switches branch (ReLU family, ELU: [0]; SReLU: [tl, tr]).

        A breakpoint can be differentiable (ELU with alpha = 1): ``one_sided`` tells.
        """
        return self._kinks(self._p(srelu))

    @_high_precision
    def one_sided(self, point: Any, srelu: Any = None) -> tuple:
        """(left, right) derivative at ``point``: limits of the derivatives of the branches."""
        params = tuple(_rational(v) for v in self._p(srelu))
        left, right = self._m.one_sided(_rational(point), params)
        return _from_sympy(left), _from_sympy(right)


# ---------------------------------------------------------------------------------------------
# Row functions: softmax, log_softmax and their stable forms
# ---------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _row_graph(name: str, K: int) -> _Graph:
    if name not in ROW_FUNCTIONS:
        raise ValueError(f"unknown row function {name!r}; choose one of {', '.join(ROW_FUNCTIONS)}")
    z = sp.symbols(f"z1:{K + 1}", real=True)
    c = sp.Symbol("c", real=True)  # the shift of the stable forms (evaluated at max z)
    shift = c if name.startswith("stable_") else 0
    if name.endswith("log_softmax"):  # z - c - log(sum exp(z - c))
        L = sp.Symbol("L", real=True)
        nodes = [(L, sp.log(sp.Add(*[sp.exp(zj - shift) for zj in z])))]
        outputs = [zk - shift - L for zk in z]
    else:  # exp(z - c) / sum exp(z - c)
        S = sp.Symbol("S", positive=True)
        nodes = [(S, sp.Add(*[sp.exp(zj - shift) for zj in z]))]
        outputs = [sp.exp(zk - shift) / S for zk in z]
    return _Graph(z, (c,), nodes, outputs)


class RowFunction:
    """softmax / stable_softmax / log_softmax / stable_log_softmax of rows of K entries.

    ``exprs``: the K outputs in ``symbols`` (z1..zK) and ``shift`` (c; used by the stable forms,
    evaluated at c = max(z)). ``jacobian_exprs``: dF_k/dz_j (with the row-sum node as a symbol).
    """

    def __init__(self, name: str, K: int) -> None:
        self.name, self.K = name, int(K)
        self._g = _row_graph(name, self.K)
        self.symbols = self._g.inputs
        self.shift = self._g.params[0]
        self.exprs = self._g.substituted(self._g.outputs)
        self.jacobian_exprs = self._g.jacobian_exprs

    def _args(self, row: list) -> list:
        return [*row, max(row)]

    @_high_precision
    def value(self, Z: Any) -> np.ndarray:
        Z = exact(Z)
        return _obj([self._g.values(self._args(row)) for row in Z.tolist()])

    @_high_precision
    def jacobian(self, z_row: Any) -> np.ndarray:
        return _obj(self._g.jacobian(self._args(exact(z_row).reshape(-1).tolist())))

    @_high_precision
    def vjp(self, Z: Any, DY: Any) -> np.ndarray:
        """DZ_j = sum_k DY_k dF_k/dz_j, per row."""
        Z, DY = exact(Z), exact(DY)
        out = []
        for row, dy in zip(Z.tolist(), DY.tolist()):
            J = self._g.jacobian(self._args(row))
            out.append([mpmath.fdot(dy, [J[k][j] for k in range(self.K)]) for j in range(self.K)])
        return _obj(out)


# ---------------------------------------------------------------------------------------------
# Losses (per row; the batch loss is the sum over rows)
# ---------------------------------------------------------------------------------------------

def _loss_expr(name: str, y: Sequence[sp.Symbol], t: Sequence[sp.Symbol]) -> sp.Expr:
    if name == "SquaredError":  # sum (y - t)^2
        return sp.Add(*[(yk - tk) ** 2 for yk, tk in zip(y, t)])
    if name == "CrossEntropy":  # -sum t log y
        return -sp.Add(*[tk * sp.log(yk) for yk, tk in zip(y, t)])
    if name == "SoftmaxCrossEntropy":  # -sum t log_softmax(y)
        lse = sp.log(sp.Add(*[sp.exp(yk) for yk in y]))
        return -sp.Add(*[tk * (yk - lse) for yk, tk in zip(y, t)])
    if name == "LogisticCrossEntropy":  # -sum t log(sigmoid(y))
        return -sp.Add(*[tk * sp.log(1 / (1 + sp.exp(-yk))) for yk, tk in zip(y, t)])
    if name == "NegativeLogLikelihood":  # -log(sum y t)
        return -sp.log(sp.Add(*[yk * tk for yk, tk in zip(y, t)]))
    if name == "AbsoluteError":  # sum |y - t|
        return sp.Add(*[sp.Abs(yk - tk) for yk, tk in zip(y, t)])
    raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")


class _LossModel:
    def __init__(self, name: str, K: int) -> None:
        self.y = sp.symbols(f"y1:{K + 1}", real=True)
        self.t = sp.symbols(f"t1:{K + 1}", real=True)
        self.expr = _loss_expr(name, self.y, self.t)
        self.gradient_exprs = [sp.diff(self.expr, yk) for yk in self.y]
        args = [*self.y, *self.t]
        self.f = _lambdify(args, self.expr)
        self.grad = _lambdify(args, self.gradient_exprs, cse=True)


@functools.lru_cache(maxsize=None)
def _loss_model(name: str, K: int) -> _LossModel:
    return _LossModel(name, K)


ELEMENTWISE_LOSSES = ("SquaredError", "CrossEntropy", "LogisticCrossEntropy", "AbsoluteError")


class Loss:
    """A Nerva loss: ``expr`` of one row (``y``, ``t``); value = sum over rows; gradient dL/dY.

    The gradient is NOT divided by N (the training loop does that: ``divide``).
    """

    def __init__(self, name: str, K: int) -> None:
        self.name, self.K = name, int(K)
        self._m = _loss_model(name, self.K)
        self.expr, self.y, self.t = self._m.expr, self._m.y, self._m.t
        self.gradient_exprs = self._m.gradient_exprs

    @_high_precision
    def value(self, Y: Any, T: Any) -> mpmath.mpf:
        Y, T = exact(Y), exact(T)
        return mpmath.fsum(self._m.f(*y, *t) for y, t in zip(Y.tolist(), T.tolist()))

    @_high_precision
    def gradient(self, Y: Any, T: Any) -> np.ndarray:
        Y, T = exact(Y), exact(T)
        return _obj([self._m.grad(*y, *t) for y, t in zip(Y.tolist(), T.tolist())])

    @_high_precision
    def one_sided(self, y: Any, t: Any) -> tuple:
        """(left, right) derivative of one element's loss in y at (y, t): AbsoluteError (-1, 1) at y = t.

        Defined for the elementwise losses (ELEMENTWISE_LOSSES).
        """
        if self.name not in ELEMENTWISE_LOSSES:
            raise ValueError(f"one_sided is defined for the elementwise losses {ELEMENTWISE_LOSSES}")
        m = _loss_model(self.name, 1)
        d = m.gradient_exprs[0].subs(m.t[0], _rational(t))
        yr = _rational(y)
        return tuple(_from_sympy(sp.limit(d, m.y[0], yr, s)) for s in ("-", "+"))


# ---------------------------------------------------------------------------------------------
# BatchNormalization (one column of N samples; batch statistics, biased variance, epsilon)
# ---------------------------------------------------------------------------------------------

class _BatchNormModel:
    def __init__(self, N: int) -> None:
        self.x = sp.symbols(f"x1:{N + 1}", real=True)
        self.epsilon = sp.Symbol("epsilon", positive=True)
        self.m, self.s = sp.Symbol("m", real=True), sp.Symbol("s", nonnegative=True)
        nodes = [(self.m, sp.Add(*self.x) / N),  # the column mean
                 (self.s, sp.Add(*[(xi - self.m) ** 2 for xi in self.x]) / N)]  # biased variance
        self.z = [(xi - self.m) / sp.sqrt(self.s + self.epsilon) for xi in self.x]  # R * inv_sqrt(Sigma)
        self.graph = _Graph(self.x, (self.epsilon,), nodes, self.z)
        gamma, beta, zeta = sp.symbols("gamma beta zeta", real=True)
        self.gamma, self.beta, self.zeta = gamma, beta, zeta
        self.y = gamma * zeta + beta  # Y = gamma * Z + beta, per element
        self.dy = [sp.diff(self.y, v) for v in (zeta, gamma, beta)]  # dY/dZ, dY/dgamma, dY/dbeta
        assert not any(beta in d.free_symbols for d in self.dy)  # the partials do not need beta
        self.f_y = _lambdify((zeta, gamma, beta), self.y)
        self.f_dy = _lambdify((zeta, gamma), self.dy)


@functools.lru_cache(maxsize=None)
def _batchnorm_model(N: int) -> _BatchNormModel:
    return _BatchNormModel(N)


class BatchNorm:
    """Nerva's BatchNormalizationLayer for a batch of N rows, column by column.

    ``z_exprs``: Z_i in x1..xN and ``epsilon`` (evaluated at EPSILON, the exact value of the float
    1e-7); ``jacobian_exprs``: dZ_i/dx_j (with the mean ``m`` and variance ``s`` as node symbols).
    """

    def __init__(self, N: int) -> None:
        self.N = int(N)
        self._m = _batchnorm_model(self.N)
        self.symbols, self.epsilon_symbol = self._m.x, self._m.epsilon
        self.epsilon = EPSILON
        self.z_exprs = self._m.graph.substituted(self._m.z)
        self.jacobian_exprs = self._m.graph.jacobian_exprs
        self.y_expr = self._m.y

    def _columns(self, X: np.ndarray) -> list[list]:
        if X.shape[0] != self.N:
            raise ValueError(f"BatchNorm({self.N}) got a batch of {X.shape[0]} rows")
        return X.T.tolist()

    @_high_precision
    def forward(self, X: Any, gamma: Any, beta: Any) -> tuple[np.ndarray, np.ndarray]:
        """(Y, Z): Y = gamma * Z + beta, Z the normalized input."""
        X, gamma, beta = exact(X), exact(gamma).reshape(-1), exact(beta).reshape(-1)
        eps = _mpf(EPSILON)
        Zt = [self._m.graph.values([*col, eps]) for col in self._columns(X)]
        Z = _obj(Zt).T.copy()
        f = self._m.f_y
        Y = _obj([[f(z, g, b) for z, g, b in zip(row, gamma, beta)] for row in Z.tolist()])
        return Y, Z

    @_high_precision
    def vjp(self, X: Any, gamma: Any, DY: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(DX, Dgamma, Dbeta, DZ) for the upstream gradient DY; DZ = dL/dZ (Nerva's DZ)."""
        X, gamma, DY = exact(X), exact(gamma).reshape(-1), exact(DY)
        eps = _mpf(EPSILON)
        cols, dcols = self._columns(X), DY.T.tolist()
        DX, DZ, Dgamma, Dbeta = [], [], [], []
        for col, dy, g in zip(cols, dcols, gamma):
            z = self._m.graph.values([*col, eps])
            partials = [self._m.f_dy(zi, g) for zi in z]  # dY/dZ, dY/dgamma, dY/dbeta
            dz = [d * p[0] for d, p in zip(dy, partials)]
            Dgamma.append(mpmath.fdot(dy, [p[1] for p in partials]))
            Dbeta.append(mpmath.fdot(dy, [p[2] for p in partials]))
            J = self._m.graph.jacobian([*col, eps])
            DX.append([mpmath.fdot(dz, [J[i][j] for i in range(self.N)]) for j in range(self.N)])
            DZ.append(dz)
        return _obj(DX).T.copy(), _vec(Dgamma), _vec(Dbeta), _obj(DZ).T.copy()


# ---------------------------------------------------------------------------------------------
# Linear
# ---------------------------------------------------------------------------------------------

def linear_element(D: int) -> tuple[sp.Expr, tuple, tuple, sp.Symbol]:
    """(z, x, w, b): one output of a linear layer, z = sum_d x_d w_d + b."""
    x = sp.symbols(f"x1:{D + 1}", real=True)
    w = sp.symbols(f"w1:{D + 1}", real=True)
    b = sp.Symbol("b", real=True)
    return sp.Add(*[xd * wd for xd, wd in zip(x, w)]) + b, x, w, b


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


@_high_precision
def linear_forward(X: Any, W: Any, b: Any) -> np.ndarray:
    """Z = X W^T + b, every entry a correctly rounded dot product."""
    X, W, b = exact(X), exact(W), exact(b).reshape(-1)
    Z = _matmul(X, W.T)
    return _obj([[v + bk for v, bk in zip(row, b)] for row in Z.tolist()])


@_high_precision
def linear_vjp(X: Any, W: Any, DZ: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(DX, DW, Db) for the upstream gradient DZ of Z = X W^T + b."""
    X, W, DZ = exact(X), exact(W), exact(DZ)
    p = _linear_partials()
    by = {"X": X, "W": W}
    DW = _matmul(DZ.T, by[p["dw"]])  # sum_n DZ[n, k] * dz/dw_d evaluated at sample n
    DX = _matmul(DZ, by[p["dx"]])  # sum_k DZ[n, k] * dz/dx_d evaluated at output k
    c = _from_sympy(p["db"])
    Db = _vec([mpmath.fdot(col, [c] * len(col)) for col in DZ.T.tolist()])
    return DX, DW, Db


# ---------------------------------------------------------------------------------------------
# Optimizers
# ---------------------------------------------------------------------------------------------

_ox, _oDx, _ov, _oeta, _omu = sp.symbols("x Dx v eta mu", real=True)


@functools.lru_cache(maxsize=None)
def _optimizer_model(name: str) -> tuple[tuple[sp.Expr, sp.Expr | None], Callable]:
    x, Dx, v, eta, mu = _ox, _oDx, _ov, _oeta, _omu
    if name == "GradientDescent":  # x <- x - eta Dx
        exprs = (x - eta * Dx, None)
    elif name == "Momentum":  # v <- mu v - eta Dx; x <- x + v
        v_new = mu * v - eta * Dx
        exprs = (x + v_new, v_new)
    elif name == "Nesterov":  # v <- mu v - eta Dx; x <- x + mu v - eta Dx (the new v)
        v_new = mu * v - eta * Dx
        exprs = (x + mu * v_new - eta * Dx, v_new)
    else:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")
    fn = _lambdify((x, Dx, v, eta, mu), [e if e is not None else sp.Integer(0) for e in exprs])
    return exprs, fn


def optimizer_expressions(name: str) -> tuple[sp.Expr, sp.Expr | None]:
    """(x_new, v_new) in the symbols x, Dx, v, eta, mu (v_new None for GradientDescent)."""
    return _optimizer_model(name)[0]


@_high_precision
def optimizer_update(name: str, mu: float, x: Any, Dx: Any, v: Any, eta: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """(x_new, v_new) elementwise; v_new is None for GradientDescent (v None or zeros for it)."""
    exprs, fn = _optimizer_model(name)
    X, D = exact(x), exact(Dx)
    V = exact(np.zeros(X.shape) if v is None else v)
    e, m = _mpf(eta), _mpf(mu)
    pairs = [fn(a, d, w, e, m) for a, d, w in zip(X.reshape(-1), D.reshape(-1), V.reshape(-1))]
    x_new = np.empty(X.shape, dtype=object)
    x_new.reshape(-1)[:] = [p[0] for p in pairs]
    if exprs[1] is None:
        return x_new, None
    v_new = np.empty(X.shape, dtype=object)
    v_new.reshape(-1)[:] = [p[1] for p in pairs]
    return x_new, v_new
