"""Softmax and LogSoftmax layers and the softmax functions (``softmax_functions``; the layers and
the losses import them by name, so a changed function is patched in every module that holds it,
as editing its source would).

What a bug here changes first: a wrong softmax value the layer's output (``Y`` for the output
layer), a wrong row function in the SoftmaxCrossEntropy loss its ``loss`` or ``DY``, a wrong
Jacobian the layer's ``DZ``.
"""

from mutants import NOT_CAUGHT, Run, caught, mutant

LEAKY = Run("leaky-logsoftmax", "float32", steps=3)  # LeakyReLU(0.1); AllReLU(0.3); LogSoftmax (W3 = 0)
RELU = Run("relu-softmax", "float32")  # ReLU; ReLU; Softmax, CrossEntropy
SQUARE = Run("square-logits", "float32", steps=4)  # Linear; Linear, SoftmaxCrossEntropy, growing logits


def _everywhere(p, name, function):
    """Replace the softmax function ``name`` in every module of the backend that holds it."""
    for module in ("softmax_functions", "layers", "loss_functions"):
        m = p.module(module)
        if hasattr(m, name):
            p.set(m, name, function)


@mutant("torch", LEAKY, caught(1, "DZ", 3))
def log_softmax_jacobian_transposed(p):
    """LogSoftmax's backward with its Jacobian's rows and columns swapped: ``DY J^T``, i.e.
    ``DY - rows_sum(DY * softmax(Z))`` for ``DY J = DY - softmax(Z) * rows_sum(DY)``. The two
    agree where every softmax row is uniform, as at step 0 of leaky-logsoftmax (W3 = 0, b3 = 0,
    so Z3 = 0): DZ3 is wrong from step 1 on. (Softmax's own Jacobian is symmetric, so there the
    same swap would change nothing.)"""
    layers = p.module("layers")

    def backpropagate(self, Y, DY):
        N, K = self.Z.shape
        DZ = DY - layers.column_repeat(layers.rows_sum(DY * layers.softmax(self.Z)), K)
        self.DZ = DZ
        self.DW[:] = DZ.T @ self.X
        self.Db[:] = layers.columns_sum(DZ)
        self.DX = DZ @ self.W

    p.set(layers.LogSoftmaxLayer, "backpropagate", backpropagate)


@mutant("numpy", RELU, caught(0, "DZ", 3))
def softmax_gradient_without_y(p):
    """Softmax's backward ``DZ = DY - diag(DY Y^T)`` without the outer ``Y *``."""
    layers = p.module("layers")

    def backpropagate(self, Y, DY):
        N, K = self.Z.shape
        DZ = DY - layers.column_repeat(layers.diag(DY @ Y.T), K)
        self.DZ = DZ
        self.DW[:] = DZ.T @ self.X
        self.Db[:] = layers.columns_sum(DZ)
        self.DX = DZ @ self.W

    p.set(layers.SoftmaxLayer, "backpropagate", backpropagate)


@mutant("tensorflow", RELU, caught(0, "Y"))
def softmax_normalized_over_the_batch(p):
    """Softmax normalized with ``reduce_sum(E, axis=0)``: the sum over the batch (wrong axis)
    instead of over each row; broadcasting makes it fit any shape. The output layer's Y."""
    import tensorflow as tf

    def softmax(X):
        E = tf.exp(X)
        return E / tf.reduce_sum(E, axis=0)

    _everywhere(p, "softmax", softmax)


@mutant("jax", SQUARE, caught(0, "DY"))
def stable_softmax_shifted_by_column_max(p):
    """The stable softmax shifted by ``jnp.max(X, axis=0)``, each column's maximum (wrong axis):
    a row is shifted by a different amount in each column, so its softmax changes. It feeds the
    SoftmaxCrossEntropy gradient DY; the loss value (stable_log_softmax) is untouched."""
    import jax.numpy as jnp

    def stable_softmax(X):
        E = jnp.exp(X - jnp.max(X, axis=0))
        return E / jnp.sum(E, axis=1, keepdims=True)

    _everywhere(p, "stable_softmax", stable_softmax)


@mutant("tensorflow", SQUARE, caught(2, "loss"))
def stable_log_softmax_without_max(p):
    """The "stable" log_softmax without its max subtraction, ``X - log(sum(exp(X)))``: right for
    small logits; square-logits's logits pass float32's exp range (88.7) at the third step, where
    exp overflows and the SoftmaxCrossEntropy loss becomes inf/NaN. (The LogSoftmax *layer*
    already uses this form: docs/findings.md #16; this is the loss's own function.)"""
    import tensorflow as tf

    def stable_log_softmax(X):
        return X - tf.math.log(tf.reduce_sum(tf.exp(X), axis=1, keepdims=True))

    _everywhere(p, "stable_log_softmax", stable_log_softmax)


@mutant("torch", RELU, NOT_CAUGHT, benign=True)
def softmax_gradient_diag_transposed(p):
    """Softmax's backward with ``diag(Y DY^T)`` for ``diag(DY Y^T)``: algebraically equal (each
    diagonal element is the same dot product with its factors swapped, so torch's kernels give
    the same bits here)."""
    layers = p.module("layers")

    def backpropagate(self, Y, DY):
        N, K = self.Z.shape
        DZ = Y * (DY - layers.column_repeat(layers.diag(Y @ DY.T), K))
        self.DZ = DZ
        self.DW[:] = DZ.T @ self.X
        self.Db[:] = layers.columns_sum(DZ)
        self.DX = DZ @ self.W

    p.set(layers.SoftmaxLayer, "backpropagate", backpropagate)


@mutant("jax", RELU, NOT_CAUGHT, benign=True)
def softmax_gradient_distributed(p):
    """Softmax's backward with the product distributed, ``Y * DY - Y * diag(DY Y^T)`` for
    ``Y * (DY - diag(DY Y^T))``: algebraically equal, rounded differently."""
    layers = p.module("layers")

    def backpropagate(self, Y, DY):
        N, K = self.Z.shape
        DZ = Y * DY - Y * layers.column_repeat(layers.diag(DY @ Y.T), K)
        self.DZ = DZ
        self.DW = DZ.T @ self.X
        self.Db = layers.columns_sum(DZ)
        self.DX = DZ @ self.W

    p.set(layers.SoftmaxLayer, "backpropagate", backpropagate)


@mutant("tensorflow", Run("srelu-nll", "float64"), NOT_CAUGHT, benign=True)
def softmax_layer_stable(p):
    """The Softmax layer using ``stable_softmax`` (max subtracted) instead of ``softmax``: the
    same function, rounded differently, and safe from overflow."""
    p.set(p.module("layers"), "softmax", p.module("softmax_functions").stable_softmax)
