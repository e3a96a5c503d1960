"""SReLU (``SReLULayer``, ``Srelu``): the value and the gradient of its four trainable
parameters [al, tl, ar, tr].

Scenario: srelu-nll in float64 (``SReLU; Softmax``): a bug in the parameter gradient changes
``Dsrelu1`` first (after ``DZ1``, ``DW1``, ``Db1``, which it leaves alone); a bug in the value
changes the layer's output, layer 2's input ``X2``.
"""

from mutants import Run, caught, mutant

SRELU = Run("srelu-nll", "float64")


def _backpropagate(p, Al, Tl, Ar, Tr, assign):
    """SReLULayer's released backward with the four indicator functions given as
    ``F(Z, al, tl, ar, tr)``; ``assign(layer, [Dal, Dtl, Dar, Dtr])`` stores them as the backend
    does."""
    layers = p.module("layers")
    activation_backpropagate = layers.ActivationLayer.backpropagate

    def backpropagate(self, Y, DY):
        activation_backpropagate(self, Y, DY)
        Z = self.Z
        al, tl, ar, tr = self.act.x
        parts = [layers.elements_sum(layers.hadamard(DY, F(Z, al, tl, ar, tr))) for F in (Al, Tl, Ar, Tr)]
        assign(self, parts)

    p.set(layers.SReLULayer, "backpropagate", backpropagate)


@mutant("numpy", SRELU, caught(0, "Dsrelu", 1))
def srelu_dtr_uses_al(p):
    """d/dtr as ``1 - al`` (copied from d/dtl) where ``1 - ar`` belongs."""
    import numpy as np

    def assign(layer, parts):
        layer.act.Dx[:] = np.array(parts)

    _backpropagate(p,
                   lambda Z, al, tl, ar, tr: np.where(Z <= tl, Z - tl, 0),
                   lambda Z, al, tl, ar, tr: np.where(Z <= tl, 1 - al, 0),
                   lambda Z, al, tl, ar, tr: np.where((Z <= tl) | (Z < tr), 0, Z - tr),
                   lambda Z, al, tl, ar, tr: np.where((Z <= tl) | (Z < tr), 0, 1 - al),
                   assign)


@mutant("jax", SRELU, caught(0, "Dsrelu", 1))
def srelu_dal_forgets_tl(p):
    """d/dal as ``where(Z <= tl, Z, 0)``: the ``- tl`` of ``Z - tl`` forgotten."""
    import jax.numpy as jnp

    def assign(layer, parts):
        layer.act.Dx = jnp.array(parts)

    _backpropagate(p,
                   lambda Z, al, tl, ar, tr: jnp.where(Z <= tl, Z, 0),
                   lambda Z, al, tl, ar, tr: jnp.where(Z <= tl, 1 - al, 0),
                   lambda Z, al, tl, ar, tr: jnp.where((Z <= tl) | (Z < tr), 0, Z - tr),
                   lambda Z, al, tl, ar, tr: jnp.where((Z <= tl) | (Z < tr), 0, 1 - ar),
                   assign)


@mutant("torch", SRELU, caught(0, "Dsrelu", 1))
def srelu_dtl_sign(p):
    """d/dtl as ``al - 1`` for ``1 - al``: a sign error."""
    import torch

    def assign(layer, parts):
        layer.act.Dx[:] = torch.stack([torch.as_tensor(x) for x in parts])

    _backpropagate(p,
                   lambda Z, al, tl, ar, tr: torch.where(Z <= tl, Z - tl, 0),
                   lambda Z, al, tl, ar, tr: torch.where(Z <= tl, al - 1, 0),
                   lambda Z, al, tl, ar, tr: torch.where((Z <= tl) | (Z < tr), 0, Z - tr),
                   lambda Z, al, tl, ar, tr: torch.where((Z <= tl) | (Z < tr), 0, 1 - ar),
                   assign)


@mutant("tensorflow", SRELU, caught(0, "X", 2))
def srelu_left_piece_without_tl(p):
    """SReLU's left piece ``al * X`` for ``tl + al * (X - tl)``: the line through 0 instead of
    through (tl, tl), so the function jumps at tl."""
    import tensorflow as tf

    acts = p.module("activation_functions")
    p.set(acts, "Srelu", lambda al, tl, ar, tr: lambda X: tf.where(X <= tl, al * X,
                                                                  tf.where(X < tr, X, tr + ar * (X - tr))))
