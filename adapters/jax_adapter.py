"""nerva-jax: immutable arrays rebound by name; float64 needs jax_enable_x64 while it runs."""

import contextlib

import numpy as np

from adapters.nerva_driver import NervaAdapter
from harness.core.process import cpu_only


class JaxAdapter(NervaAdapter):
    name, package, framework = "jax", "nerva_jax", "jax"

    def setup(self):
        cpu_only()
        import jax
        import jax.numpy as jnp

        self.jax, self.jnp = jax, jnp

    def array(self, a, dtype):
        return self.jnp.asarray(np.asarray(a, dtype=dtype))

    def write(self, obj, attr, a):
        setattr(obj, attr, self.array(a, getattr(obj, attr).dtype.name))

    def optimizer(self, factory, obj, attr, dattr):
        return factory(obj, attr, dattr)  # JAX's optimizers look buffers up by name

    @contextlib.contextmanager
    def precision(self, dtype):
        previous = bool(self.jax.config.jax_enable_x64)
        self.jax.config.update("jax_enable_x64", dtype == "float64")
        try:
            yield
        finally:
            self.jax.config.update("jax_enable_x64", previous)
