"""nerva-numpy: ndarrays updated in place; the optimizers hold the arrays themselves."""

import numpy as np

from adapters.nerva_driver import NervaAdapter
from harness.core.process import single_threaded_blas


class NumpyAdapter(NervaAdapter):
    name, package, framework = "numpy", "nerva_numpy", "numpy"

    def array(self, a, dtype):
        return np.array(a, dtype=dtype)

    def write(self, obj, attr, a):
        getattr(obj, attr)[...] = a

    def precision(self, dtype):
        return single_threaded_blas()
