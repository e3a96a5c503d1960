"""Linear-type layers (``LinearLayer``, ``ActivationLayer``): the affine map and its gradients.

What a bug here changes first: a forward bug the layer's output (``Y`` for the last layer, else
the next layer's input ``X{i+1}``); a backward bug the gradient it writes, in the backward order
``DZ``, ``DW``, ``Db``, ``DX`` of that layer, the last layer first.
"""

from mutants import NOT_CAUGHT, Run, caught, mutant

SQUARE = Run("square-logits", "float32")
SIGMOID = Run("sigmoid-logistic", "float32")


@mutant("torch", SQUARE, caught(0, "DW", 2))
def linear_weight_gradient_transposed(p):
    """``DW = X.T @ DY`` (column-layout habit) for ``DW = DY.T @ X``: the shapes agree only when
    the layer is square, which is where the bug survives; square-logits's Linear layers are."""
    layers = p.module("layers")

    def backpropagate(self, Y, DY):
        X, W = self.X, self.W
        self.DW[:] = X.T @ DY
        self.Db[:] = layers.columns_sum(DY)
        self.DX = DY @ W

    p.set(layers.LinearLayer, "backpropagate", backpropagate)


@mutant("tensorflow", SIGMOID, caught(0, "Db", 2))
def activation_bias_gradient_mean(p):
    """``Db = reduce_mean(DZ, axis=0)`` for ``reduce_sum``: a second 1/N (DY already holds one).
    The Tanh layer 2 is the last ActivationLayer, so its Db is the first one changed."""
    import tensorflow as tf

    layers = p.module("layers")
    original = layers.ActivationLayer.backpropagate

    def backpropagate(self, Y, DY):
        original(self, Y, DY)
        self.Db.assign(tf.reduce_mean(self.DZ, axis=0))

    p.set(layers.ActivationLayer, "backpropagate", backpropagate)


@mutant("jax", Run("sigmoid-logistic", "float32", "trajectory"), caught(1, "Y"))
def linear_forward_without_bias(p):
    """``Y = X @ W.T`` without ``+ row_repeat(b, N)``: right while the biases are still at their
    initial 0, so only the second step (after the first update moved b3) shows it, at the
    output of the Linear layer 3."""
    layers = p.module("layers")

    def feedforward(self, X):
        self.X = X
        return X @ self.W.T

    p.set(layers.LinearLayer, "feedforward", feedforward)


def _activation_db_times_1_001(p):
    """numpy's ActivationLayer.backpropagate followed by ``Db * 1.001`` (both mutants below)."""
    from mutants import scale_db

    layers = p.module("layers")
    original = layers.ActivationLayer.backpropagate

    def backpropagate(self, Y, DY):
        original(self, Y, DY)
        scale_db("numpy", self)

    p.set(layers.ActivationLayer, "backpropagate", backpropagate)


@mutant("numpy", SIGMOID, caught(0, "Db", 2))
def bias_gradient_off_by_1e_3(p):
    """``Db`` 0.1 % too large (``Db * 1.001``, e.g. a stray factor): the planted bug of the older
    tests (``break_bias_gradient``); Db of the Tanh layer 2 is the first one it changes."""
    _activation_db_times_1_001(p)


@mutant("numpy", Run("relu-softmax", "float32", "trajectory"), caught(0, "Db", 2))
def bias_gradient_off_by_1e_3_in_trajectory(p):
    """The same ``Db * 1.001`` in relu-softmax's float32 *trajectory* run: caught at step 0 in
    the ReLU layer 2 (the first ActivationLayer backpropagation reaches). Once missed, when the
    bound took trajectory spreads as worst case only (docs/mutants.md, "Comparator")."""
    _activation_db_times_1_001(p)


@mutant("numpy", Run("relu-softmax", "float32", "trajectory", steps=4), NOT_CAUGHT, benign=True)
def bias_gradient_summed_backwards(p):
    """``columns_sum`` as a plain loop over the rows from the last to the first, instead of
    NumPy's own order: the same sum in another order (every Db of relu-softmax, 16 rows), here
    over four trajectory steps, so the changed roundings also move numpy's parameters."""
    import functools

    def columns_sum(X):
        return functools.reduce(lambda acc, row: acc + row, X[::-1])

    p.set(p.module("matrix_operations"), "columns_sum", columns_sum)
    p.set(p.module("layers"), "columns_sum", columns_sum)
