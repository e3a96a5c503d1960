"""Precision: an intermediate computed in a lower precision, a constant rounded to a coarser
format, a tiny relative error, and a one-ulp change a correct implementation may make.

These are the bugs the fixed tolerances of old could not see. The rounding bound can, where the
run's dtype resolves them: an error is visible when it exceeds the rounding a correct
implementation makes at that element (about 1e-16 relative in float64, 1e-7 in float32, times
the length of the sums involved).
"""

from mutants import NOT_CAUGHT, Run, caught, mutant


@mutant("numpy", Run("sigmoid-logistic", "float64"), caught(0, "X", 2))
def sigmoid_in_float32(p):
    """Sigmoid computed on ``X.astype(np.float32)`` and cast back: a float32 intermediate in a
    float64 run, with the dtype restored so no dtype check sees it. Layer 1's output is X2."""
    import numpy as np

    p.set(p.module("activation_functions"), "Sigmoid",
          lambda X: (1 / (1 + np.exp(-X.astype(np.float32)))).astype(X.dtype))


@mutant("jax", Run("batchnorm-softmax-xent", "float64"), caught(0, "Z", 2))
def batchnorm_inv_sqrt_in_float32(p):
    """BatchNormalization's ``1 / sqrt(Sigma + epsilon)`` on ``Sigma.astype(jnp.float32)``
    (nerva-jax's constructors default to float32; one slipped through)."""
    import jax.numpy as jnp

    ops = p.module("matrix_operations")
    p.set(p.module("layers"), "inv_sqrt",
          lambda X: (1 / jnp.sqrt(X.astype(jnp.float32) + ops.epsilon)).astype(X.dtype))


@mutant("torch", Run("srelu-nll", "float64"), caught(0, "DW", 2))
def weight_gradient_relative_1e_9(p):
    """The Softmax layer's DW off by a relative 1e-9 (``DW += DW * 1e-9``, e.g. a constant
    written with nine digits): a million times float64's rounding, far below any fixed
    tolerance."""
    layers = p.module("layers")
    original = layers.SoftmaxLayer.backpropagate

    def backpropagate(self, Y, DY):
        original(self, Y, DY)
        self.DW.add_(self.DW * 1e-9)

    p.set(layers.SoftmaxLayer, "backpropagate", backpropagate)


@mutant("tensorflow", Run("batchnorm-softmax-xent", "float32"), NOT_CAUGHT)
def batchnorm_epsilon_1e_8_in_float32(p):
    """BatchNormalization's epsilon written ``1e-8`` instead of Nerva's ``1e-7``, in a float32
    run. A real bug, but it moves ``1 / sqrt(Sigma + eps)`` by about 4.5e-8 / Sigma relatively:
    below float32's rounding for the unit-size variances of this scenario, so no float32 run of
    it can tell (docs/mutants.md: the float64 run of the same bug is caught)."""
    import tensorflow as tf

    p.set(p.module("layers"), "inv_sqrt", lambda X: 1 / tf.sqrt(X + 1e-8))


@mutant("tensorflow", Run("batchnorm-softmax-xent", "float64"), caught(0, "Z", 2))
def batchnorm_epsilon_1e_8_in_float64(p):
    """The same epsilon ``1e-8`` for ``1e-7`` in a float64 run: there its relative effect of
    about 4.5e-8 / Sigma is eight orders of magnitude above the rounding."""
    import tensorflow as tf

    p.set(p.module("layers"), "inv_sqrt", lambda X: 1 / tf.sqrt(X + 1e-8))


@mutant("torch", Run("relu-softmax", "float32"), NOT_CAUGHT, benign=True)
def softmax_normalizer_one_ulp(p):
    """The Softmax layer's row sums one ulp larger (``torch.nextafter(s, inf)``), as another
    summation order may give: every probability moves by at most an ulp."""
    import torch

    def softmax(X):
        E = torch.exp(X)
        s = torch.sum(E, dim=1, keepdim=True)
        return E / torch.nextafter(s, torch.full_like(s, float("inf")))

    p.set(p.module("layers"), "softmax", softmax)
