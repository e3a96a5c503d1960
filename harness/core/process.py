"""Process-wide settings for the frameworks that share this process, applied here only.

Before a framework is first imported (each adapter calls these in its ``setup``):
:func:`cpu_only` (no GPU, idle OpenMP threads that sleep, quiet TensorFlow logs, JAX's compiled
executables kept on disk: :func:`jax_compilation_cache`) and :func:`quiet_stderr` (the C++ lines a
framework writes while importing). While nerva-numpy
steps: :func:`single_threaded_blas` (NumPy's BLAS on one thread). For a whole run, once the
frameworks are loaded: :func:`run_threads` (every BLAS and OpenMP pool on one thread, unless the
user set a thread count).
"""

import contextlib
import os
import sys
from typing import Iterator


def cpu_only() -> None:
    """Set, unless already set, what must be in the environment before a framework is imported:
    no visible CUDA device, JAX on the CPU, OpenMP's idle threads sleeping and TensorFlow's C++
    logs off. NERVA_CONSISTENCY_GPU=1 leaves the environment alone (all four settings); JAX's
    compilation cache (:func:`jax_compilation_cache`) is set up either way."""
    jax_compilation_cache()
    if os.environ.get("NERVA_CONSISTENCY_GPU") == "1":
        return
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    # Four frameworks' thread pools share this process and its cores: an idle pool that
    # spin-waits steals the cores from the next backend (torch after nerva-numpy's OpenBLAS,
    # nerva-numpy after torch's OpenMP, several times slower). Idle threads sleep.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def user_cache(name: str) -> str | None:
    """The per-user directory ``name`` of nerva-consistency's caches (``$XDG_CACHE_HOME``, else
    ``~/.cache``, then ``nerva-consistency/NAME``), made if need be; None where it cannot be
    written (a cache is then not kept: nothing is lost but time)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return writable_dir(os.path.join(base, "nerva-consistency", name))


def writable_dir(path: str) -> str | None:
    """``path``, made if need be, where it is a directory this process can write to; else None."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError:
        return None
    return path if os.access(path, os.W_OK) else None


def jax_compilation_cache() -> None:
    """Keep the executables JAX compiles in a per-user directory (JAX's persistent compilation
    cache), so that a later process loads them instead of compiling them again.

    nerva-jax runs eagerly: every operation is compiled by XLA once per shape and dtype, and a
    search draws networks of ever new shapes, so compiling is most of what nerva-jax costs in
    ``explore`` and the component suite (docs/findings.md, "Explore at the frameworks' pace").
    An executable loaded from the cache is the one XLA compiled for the same program, compile
    options and jaxlib version (all in the cache's key), so the values computed do not change.
    Every executable is kept, however short its compile. Set before JAX is imported, through the
    environment, only where the user has not: ``JAX_COMPILATION_CACHE_DIR`` chooses the directory,
    ``JAX_ENABLE_COMPILATION_CACHE=false`` turns the cache off; without a writable directory
    (``$XDG_CACHE_HOME`` or ``~/.cache``, then ``nerva-consistency/jax``) nothing is set.
    """
    if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
        path = user_cache("jax")
        if path is None:
            return
        os.environ["JAX_COMPILATION_CACHE_DIR"] = path
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")


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
    """Run NumPy's BLAS on one thread for a while (threadpoolctl; the controller is made once).

    NumPy's OpenBLAS cannot be told to stop spin-waiting once loaded, and its spinning threads
    starve the other backends; one thread, not spinning, is also faster for nerva-numpy's small
    matrices (docs/findings.md has the timings).
    """
    global _CONTROLLER
    from threadpoolctl import ThreadpoolController

    if _CONTROLLER is None:
        _CONTROLLER = ThreadpoolController()
    return _CONTROLLER.limit(limits=1, user_api="blas")


# The variables by which a user asks for a number of BLAS or OpenMP threads; any of them set
# leaves the pools as the frameworks made them.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def run_threads() -> contextlib.AbstractContextManager:
    """One thread for every BLAS and OpenMP pool loaded so far (NumPy's OpenBLAS, torch's OpenMP),
    for as long as the context lasts: a run's four backends and its judge share the cores, and
    two threads per pool contend with each other and spin into the work after them
    (docs/findings.md, "One thread for the run"). A thread count set in the environment
    (:data:`THREAD_VARIABLES`) is the user's choice and is left alone.

    The pools are found when the context is entered, so enter it after the frameworks are
    imported (the runner does, after building the backends).
    """
    if any(os.environ.get(name) for name in THREAD_VARIABLES):
        return contextlib.nullcontext()
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController().limit(limits=1)
