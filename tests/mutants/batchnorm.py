"""BatchNormalization (``BatchNormalizationLayer``): mean, biased variance, epsilon, the normalized
Z and the three-term backward pass.

Scenario: batchnorm-softmax-xent in float64 (``ReLU; BN; ReLU; BN; Linear``, layers 1-5), where
the float64 bound resolves what float32 cannot (the epsilon's effect is 1e-7 / Sigma). What a
bug here changes first: a forward bug ``Z2`` (the first BatchNormalization layer's normalized
input; forward order), a backward bug layer 4's tensors (the last BatchNormalization layer comes
first backward): ``DZ4``, ``Dgamma4``, ``Dbeta4``, ``DX4``.
"""

from mutants import Run, caught, mutant

BN64 = Run("batchnorm-softmax-xent", "float64")


@mutant("numpy", BN64, caught(0, "Z", 2))
def batchnorm_without_epsilon(p):
    """``inv_sqrt(Sigma)`` as ``1 / sqrt(Sigma)``, the epsilon 1e-7 dropped: a relative change of
    about 1e-7 / (2 Sigma) in Z, invisible in float32, far outside float64's bound."""
    import numpy as np

    p.set(p.module("layers"), "inv_sqrt", lambda X: 1 / np.sqrt(X))


def _feedforward(layers, variance):
    """BatchNormalization's released feedforward with the variance computed by ``variance(R, N)``."""

    def feedforward(self, X):
        self.X = X
        N, D = X.shape
        R = X - layers.row_repeat(layers.columns_mean(X), N)
        inv_sqrt_Sigma = layers.inv_sqrt(variance(R, N))
        Z = layers.hadamard(layers.row_repeat(inv_sqrt_Sigma, N), R)
        Y = layers.hadamard(layers.row_repeat(self.gamma, N), Z) + layers.row_repeat(self.beta, N)
        self.inv_sqrt_Sigma[:] = inv_sqrt_Sigma
        self.Z = Z
        return Y

    return feedforward


@mutant("torch", Run("batchnorm-softmax-xent", "float32", "trajectory"), caught(0, "Z", 2))
def batchnorm_unbiased_variance(p):
    """The variance divided by ``N - 1`` (unbiased, as ``torch.var`` defaults to) instead of N."""
    layers = p.module("layers")
    p.set(layers.BatchNormalizationLayer, "feedforward",
          _feedforward(layers, lambda R, N: layers.diag(R.T @ R) / (N - 1)))


@mutant("jax", BN64, caught(0, "Z", 2))
def batchnorm_mean_over_all_elements(p):
    """``R = X - jnp.mean(X)``: the mean over every element (no axis) instead of per column."""
    import jax.numpy as jnp

    layers = p.module("layers")

    def feedforward(self, X):
        self.X = X
        N, D = X.shape
        R = X - jnp.mean(X)
        Sigma = layers.diag(R.T @ R) / N
        self.inv_sqrt_Sigma = layers.inv_sqrt(Sigma)
        self.Z = layers.row_repeat(self.inv_sqrt_Sigma, N) * R
        return layers.row_repeat(self.gamma, N) * self.Z + layers.row_repeat(self.beta, N)

    p.set(layers.BatchNormalizationLayer, "feedforward", feedforward)


def _backpropagate(layers, dx, dgamma=None):
    """BatchNormalization's backward with DX computed by ``dx(self, N, Z, DZ)`` (and Dgamma by
    ``dgamma(self, DY, Z)`` when given), written for numpy/torch buffers."""

    def backpropagate(self, Y, DY):
        N, D = self.X.shape
        Z = self.Z
        DZ = layers.hadamard(layers.row_repeat(self.gamma, N), DY)
        self.Dbeta[:] = layers.columns_sum(DY)
        self.Dgamma[:] = dgamma(self, DY, Z) if dgamma else layers.columns_sum(layers.hadamard(DY, Z))
        self.DZ = DZ
        self.DX = dx(self, N, Z, DZ)

    return backpropagate


@mutant("tensorflow", BN64, caught(0, "DX", 4))
def batchnorm_dx_without_variance_term(p):
    """DX without its third term ``- Z * diag(Z^T DZ)``: ``inv_sqrt_Sigma / N * (N I - 1 1^T) DZ``
    (the gradient through the mean kept, the one through the variance forgotten)."""
    layers = p.module("layers")
    original = layers.BatchNormalizationLayer.backpropagate

    def backpropagate(self, Y, DY):
        original(self, Y, DY)
        N = self.X.shape[0]
        eye, ones = layers.identity(N), layers.ones(N, N)  # float64 in a float64 run (docs/nerva-api.md)
        self.DX = layers.row_repeat(self.inv_sqrt_Sigma / N, N) * ((N * eye - ones) @ self.DZ)

    p.set(layers.BatchNormalizationLayer, "backpropagate", backpropagate)


@mutant("jax", BN64, caught(0, "DX", 4))
def batchnorm_dx_without_1_over_n(p):
    """DX with ``row_repeat(inv_sqrt_Sigma, N)`` for ``row_repeat(inv_sqrt_Sigma / N, N)``: the
    1/N of the two means forgotten."""
    layers = p.module("layers")
    original = layers.BatchNormalizationLayer.backpropagate

    def backpropagate(self, Y, DY):
        original(self, Y, DY)
        self.DX = self.DX * self.X.shape[0]

    p.set(layers.BatchNormalizationLayer, "backpropagate", backpropagate)


@mutant("numpy", BN64, caught(0, "Dgamma", 4))
def batchnorm_dgamma_from_input(p):
    """``Dgamma = columns_sum(DY * X)``: the layer's input X for its normalized Z."""
    layers = p.module("layers")

    def dx(self, N, Z, DZ):
        return layers.hadamard(layers.row_repeat(self.inv_sqrt_Sigma / N, N),
                               (N * layers.identity(N) - layers.ones(N, N)) @ DZ
                               - layers.hadamard(Z, layers.row_repeat(layers.diag(Z.T @ DZ).T, N)))

    p.set(layers.BatchNormalizationLayer, "backpropagate",
          _backpropagate(layers, dx, dgamma=lambda self, DY, Z: layers.columns_sum(layers.hadamard(DY, self.X))))


@mutant("numpy", Run("elu-absolute", "float32"), caught(1, "Dbeta", 2))
def batchnorm_dbeta_from_dz(p):
    """``Dbeta = columns_sum(DZ)`` for ``columns_sum(DY)``: DZ is ``gamma * DY``, so this is right
    while gamma is still at its initial 1. In elu-absolute (ELU; BN; Linear) the first update
    moves gamma2 (Momentum), so Dbeta2 is wrong from step 1 on."""
    layers = p.module("layers")
    original = layers.BatchNormalizationLayer.backpropagate

    def backpropagate(self, Y, DY):
        original(self, Y, DY)
        self.Dbeta[:] = layers.columns_sum(self.DZ)

    p.set(layers.BatchNormalizationLayer, "backpropagate", backpropagate)
