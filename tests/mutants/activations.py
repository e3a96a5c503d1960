"""Activation functions (``activation_functions``): values and derivatives of the element-wise
activations, looked up by the activation objects at call time (module attributes).

What a bug here changes first: a wrong value the layer's output (the next layer's input
``X{i+1}``); a wrong derivative the layer's ``DZ{i}``, the first tensor of its backward pass.
"""

from mutants import NOT_CAUGHT, Run, caught, mutant

LEAKY = Run("leaky-logsoftmax", "float32", steps=3)  # LeakyReLU(0.1); AllReLU(0.3); LogSoftmax (W3 = 0)
SIGMOID = Run("sigmoid-logistic", "float32")  # Sigmoid; HyperbolicTangent; Linear
RELU = Run("relu-softmax", "float32")  # ReLU; ReLU; Softmax


@mutant("torch", LEAKY, caught(1, "DZ", 1))
def leaky_relu_gradient_without_alpha(p):
    """LeakyReLU's derivative copied from ReLU's: ``where(X > 0, 1, 0)`` where ``alpha`` belongs
    for X <= 0. leaky-logsoftmax starts its LogSoftmax layer at W3 = 0 (``Zero``), so nothing
    flows below layer 3 at step 0 (DX3 = DZ3 W3 = 0): layer 1's DZ is wrong from step 1 on."""
    import torch

    acts = p.module("activation_functions")
    p.set(acts, "Leaky_relu_gradient",
          lambda alpha: lambda X: torch.where(X > 0, torch.ones_like(X), torch.zeros_like(X)))


@mutant("jax", Run("leaky-logsoftmax", "float32", "trajectory"), caught(0, "X", 3))
def all_relu_comparison_flipped(p):
    """AllReLU's value ``where(X > 0, alpha * X, X)``: the comparison flipped, so positive inputs
    are scaled. Layer 2's output is layer 3's input X3."""
    import jax.numpy as jnp

    acts = p.module("activation_functions")
    p.set(acts, "All_relu", lambda alpha: lambda X: jnp.where(X > 0, alpha * X, X))


@mutant("jax", SIGMOID, caught(0, "DZ", 2))
def tanh_gradient_sign(p):
    """Tanh' as ``1 + tanh(X) ** 2``: a sign error."""
    import jax.numpy as jnp

    acts = p.module("activation_functions")
    p.set(acts, "Hyperbolic_tangent_gradient", lambda X: 1 + jnp.tanh(X) ** 2)


@mutant("torch", SIGMOID, caught(0, "DZ", 2))
def tanh_gradient_without_square(p):
    """Tanh' as ``1 - tanh(X)``: the square forgotten (the planted bug of the older
    test_mutation); wrong everywhere except where tanh is 0 or 1."""
    import torch

    acts = p.module("activation_functions")
    p.set(acts, "Hyperbolic_tangent_gradient", lambda X: 1 - torch.tanh(X))


@mutant("tensorflow", SIGMOID, caught(0, "DZ", 1))
def sigmoid_gradient_typo(p):
    """Sigmoid' as ``y * (1 - X)``: the input X typed for the output y."""
    import tensorflow as tf

    acts = p.module("activation_functions")

    def Sigmoid_gradient(X):
        y = tf.math.sigmoid(X)
        return y * (1 - X)

    p.set(acts, "Sigmoid_gradient", Sigmoid_gradient)


@mutant("numpy", Run("relu-softmax", "float32", "trajectory"), caught(0, "DZ", 2))
def relu_gradient_returns_input(p):
    """ReLU' as ``np.where(X > 0, X, 0)``: copied from ReLU itself, the derivative is the value.
    Layer 2 is the upper ReLU layer, whose DZ comes first in backward order."""
    import numpy as np

    acts = p.module("activation_functions")
    p.set(acts, "Relu_gradient", lambda X: np.where(X > 0, X, 0))


@mutant("all", SIGMOID, caught(0, "DZ", 1))
def shared_sigmoid_gradient(p):
    """Sigmoid' as ``s(X) * (1 + s(X))`` in all four libraries (one translation error copied
    into every port). Backend-vs-backend comparison cannot see it (the four agree); the exact
    oracle blames all four."""
    acts = p.module("activation_functions")
    sigmoid = acts.Sigmoid
    p.set(acts, "Sigmoid_gradient", lambda X: sigmoid(X) * (1 + sigmoid(X)))


@mutant("numpy", Run("sigmoid-logistic", "float32", "trajectory", steps=4), NOT_CAUGHT, benign=True)
def sigmoid_without_overflow(p):
    """A more accurate Sigmoid: ``e = exp(-|X|)``, then ``1 / (1 + e)`` for X >= 0 and
    ``e / (1 + e)`` below, which never overflows and keeps full relative accuracy for large
    negative X. Patched where the activations and the logistic loss look ``Sigmoid`` up."""
    import numpy as np

    def Sigmoid(X):
        e = np.exp(-np.abs(X))
        return np.where(X >= 0, 1 / (1 + e), e / (1 + e))

    p.set(p.module("activation_functions"), "Sigmoid", Sigmoid)
    p.set(p.module("loss_functions"), "Sigmoid", Sigmoid)
