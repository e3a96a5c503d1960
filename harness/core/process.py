"""Process-wide settings applied before a framework is first imported: CPU only, idle thread
pools that sleep, quiet C++ logs, and NumPy's BLAS on one thread while nerva-numpy steps."""

import contextlib
import os
import sys
from typing import Iterator


def cpu_only() -> None:
    """The harness runs on the CPU by default (set NERVA_CONSISTENCY_GPU=1 to leave devices alone)."""
    if os.environ.get("NERVA_CONSISTENCY_GPU") == "1":
        return
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    # Four frameworks' thread pools share this process and its cores: an idle pool that
    # spin-waits steals the cores from the next backend (measured: torch steps 5x slower after
    # nerva-numpy's OpenBLAS, nerva-numpy 4x slower after torch's OpenMP). Idle threads sleep.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """Silence what C++ libraries write to file descriptor 2 while importing (TensorFlow's
    absl and CUDA probing lines); Python exceptions still propagate normally."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


_CONTROLLER = None


def single_threaded_blas() -> contextlib.AbstractContextManager:
    """Run NumPy's BLAS on one thread for a while (threadpoolctl).

    NumPy's OpenBLAS cannot be told to stop spin-waiting once loaded, and its spinning threads
    starve the other backends; one thread, not spinning, is also faster for nerva-numpy here
    (13 ms instead of 44 ms per upstream step on this 2-core machine).
    """
    global _CONTROLLER
    from threadpoolctl import ThreadpoolController

    if _CONTROLLER is None:
        _CONTROLLER = ThreadpoolController()
    return _CONTROLLER.limit(limits=1, user_api="blas")
