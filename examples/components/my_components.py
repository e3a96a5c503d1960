"""My own components, judged by nerva-consistency: the three of the Nerva libraries' examples/custom_components.py.

Each Nerva library's ``examples/custom_components.py`` adds an ELU activation with a hand-written
gradient, a LeCun weight initializer and an AbsoluteError loss. This file declares them once for
nerva-consistency: the SymPy forward definition of each (what the harness differentiates: the
hand-written gradients below are the code under test, never the reference), and each library's
implementation, written as in those examples. Use it with

    nerva-consistency run --components examples/components/my_components.py \\
        --layers "MyELU(alpha=0.1);HyperbolicTangent;Linear" --sizes 4,8,6,3 \\
        --init-weights MyLeCun,MyLeCun,HeNormal --loss MyAbsoluteError --mode lockstep

(The harness already ships an ``ELU`` and an ``AbsoluteError``, so these take names of their own.)
"""

import importlib
import types

import sympy as sp

from harness.api import CustomActivation, CustomInitializer, CustomLoss

LIBRARIES = ("numpy", "torch", "jax", "tensorflow")


# ------------------------
# The definitions (SymPy), as in custom_components_validation.py
# ------------------------

def elu(x, alpha):
    """ELU(alpha): alpha (exp(x) - 1) for x < 0, x otherwise."""
    return sp.Piecewise((alpha * (sp.exp(x) - 1), x < 0), (x, True))


def absolute_error(y, t):
    """One element's absolute error; the loss of a batch is the sum over its elements."""
    return sp.Abs(y - t)


# ------------------------
# The implementations, one per library, imported only when that library is used
# ------------------------

def library(name):
    """The library's activation and loss modules and the array functions the components need."""
    acts = importlib.import_module(f"nerva_{name}.activation_functions")
    losses = importlib.import_module(f"nerva_{name}.loss_functions")
    ops = importlib.import_module(f"nerva_{name}.matrix_operations")
    if name == "tensorflow":
        import tensorflow as tf

        xp = types.SimpleNamespace(where=tf.where, exp=tf.exp, ones_like=tf.ones_like, sign=tf.sign)
    else:
        xp = importlib.import_module({"numpy": "numpy", "torch": "torch", "jax": "jax.numpy"}[name])
    return acts, losses, ops, xp


def make_elu(name):
    acts, _, _, xp = library(name)

    def Elu(alpha):
        return lambda X: xp.where(X > 0, X, alpha * (xp.exp(X) - 1))

    def Elu_gradient(alpha):
        return lambda X: xp.where(X > 0, xp.ones_like(X), alpha * xp.exp(X))

    class ELUActivation(acts.ActivationFunction):
        def __init__(self, alpha=1.0):
            self.alpha = alpha

        def __call__(self, X):
            return Elu(self.alpha)(X)

        def gradient(self, X):
            return Elu_gradient(self.alpha)(X)

    return ELUActivation


def make_absolute_error(name):
    _, losses, ops, xp = library(name)

    class AbsoluteErrorLossFunction(losses.LossFunction):
        def __call__(self, Y, T):
            return ops.elements_sum(abs(Y - T))

        def gradient(self, Y, T):
            return xp.sign(Y - T)

    return AbsoluteErrorLossFunction


def implementations(make):
    """Library name -> a factory of its object: called with the component's parameters."""
    return {name: lambda *args, name=name, **kwargs: make(name)(*args, **kwargs) for name in LIBRARIES}


# ------------------------
# The declarations nerva-consistency reads
# ------------------------

COMPONENTS = [
    CustomActivation("MyELU", elu, implementations(make_elu), params={"alpha": 1.0}, kinks=(0.0,)),
    # set_weights_lecun: W = randn(K, D) * sqrt(1 / D); the harness draws W itself, from the seed
    CustomInitializer("MyLeCun", "normal", lambda D, K: (1.0 / D) ** 0.5),
    CustomLoss("MyAbsoluteError", absolute_error, implementations(make_absolute_error), kinks=("T",)),
]
