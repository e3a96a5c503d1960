"""The machine a run ran on (:func:`describe`): CPU model and flags, the BLAS libraries and their
kernels, torch's CPU capability and the variables that force kernels; and how two such
descriptions differ (:func:`differing`, :func:`explain`), for a replay elsewhere."""

import json
import os
import sys


# -- the platform a run's last bits depend on ----------------------------------------------
# BLAS, oneDNN and XLA pick their kernels by CPU, so the last bits of a result (and with them a
# flip at a kink found by rounding luck) can differ between machines with the same versions.

KERNEL_ENV = ("ATEN_CPU_CAPABILITY", "XLA_FLAGS", "TF_ENABLE_ONEDNN_OPTS", "OPENBLAS_CORETYPE",
              "MKL_ENABLE_INSTRUCTIONS", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")
"""Environment variables that force a library's kernels (their value, None when unset)."""

BLAS_FIELDS = ("internal_api", "prefix", "version", "architecture", "corename")
"""What identifies a BLAS library and its kernels in threadpoolctl's ``threadpool_info()``
(``num_threads``, ``filepath`` are not part of the identity)."""


def _cpuinfo(path: str = "/proc/cpuinfo") -> tuple[str | None, list[str] | None]:
    """Model name and feature flags of the first processor (x86: ``model name`` / ``flags``;
    ARM: ``Hardware`` or ``CPU part`` / ``Features``); (None, None) without /proc/cpuinfo."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return None, None
    fields: dict[str, str] = {}
    for line in text.split("\n\n", 1)[0].splitlines() + text.splitlines():  # first processor first
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip().lower(), value.strip())
    model = next((fields[k] for k in ("model name", "hardware", "cpu model", "processor name", "cpu part")
                  if fields.get(k)), None)
    flags = next((fields[k] for k in ("flags", "features") if k in fields), None)
    return model, (sorted(set(flags.split())) if flags is not None else None)


def _blas() -> list[dict[str, str]]:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        return []
    out = []
    for lib in threadpool_info():
        if lib.get("user_api") == "blas":
            out.append({k: str(lib[k]) for k in BLAS_FIELDS if lib.get(k) is not None})
    return sorted(out, key=lambda e: (e.get("internal_api", ""), e.get("prefix", ""), e.get("version", ""), str(e)))


def describe() -> dict:
    """What decides which CPU kernels compute a run (and so its last bits), as JSON data.

    ``cpu`` (model name) and ``cpu_flags`` from /proc/cpuinfo when present, else
    ``platform.processor()`` and None; ``machine``; ``blas``: every BLAS library loaded in this
    process with its kernels (threadpoolctl: internal_api, prefix, version, architecture or
    corename; not the thread count); ``torch_cpu_capability`` (the ISA ATen dispatches to) only
    when torch is already imported, else None (no framework is imported for this); ``env``: the
    environment variables that force kernels. Framework versions are recorded separately
    (:func:`harness.reports.report.versions`). Call it after the backends ran: only loaded libraries
    are seen.
    """
    import platform

    model, flags = _cpuinfo()
    capability = None
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            capability = str(torch.backends.cpu.get_cpu_capability())
        except Exception:  # an old or partly imported torch
            capability = None
    return {
        "cpu": model or platform.processor() or None,
        "cpu_flags": flags,
        "machine": platform.machine(),
        "blas": _blas(),
        "torch_cpu_capability": capability,
        "env": {name: os.environ.get(name) for name in KERNEL_ENV},
    }


def _blas_identity(entries: list | None) -> list[str]:
    return sorted(json.dumps({k: str(v) for k, v in e.items() if k in BLAS_FIELDS}, sort_keys=True)
                  for e in entries or [])


def differing(a: dict, b: dict) -> list[str]:
    """The fields in which two :func:`describe` results differ ([] = the same platform).

    The order of the BLAS entries and their thread counts are ignored; an environment
    variable is named as ``env.NAME``; a field missing on one side differs from a value."""
    out = []
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        if key == "blas":
            if _blas_identity(x) != _blas_identity(y):
                out.append(key)
        elif key == "env":
            x, y = x or {}, y or {}
            out += [f"env.{k}" for k in sorted(set(x) | set(y)) if x.get(k) != y.get(k)]
        elif key == "cpu_flags":
            if sorted(x or []) != sorted(y or []) or (x is None) != (y is None):
                out.append(key)
        elif x != y:
            out.append(key)
    return out


def _blas_names(entries: list | None) -> str:
    names = [" ".join(str(x) for x in (e.get("internal_api"), e.get("version"), e.get("architecture") or e.get("corename"))
                      if x) for e in entries or []]
    return ", ".join(names) or "none"


def explain(a: dict, b: dict) -> list[str]:
    """:func:`differing` with the values, one short text per field ("machine x86_64 -> aarch64";
    CPU flags as the ones gained and lost)."""
    out = []
    for key in differing(a, b):
        if key.startswith("env."):
            name = key[4:]
            out.append(f"{name} {(a.get('env') or {}).get(name)!r} -> {(b.get('env') or {}).get(name)!r}")
        elif key == "cpu_flags":
            x, y = set(a.get(key) or []), set(b.get(key) or [])
            gained, lost = sorted(y - x), sorted(x - y)
            out.append("cpu flags " + " ".join([*(f"+{f}" for f in gained[:8]), *(f"-{f}" for f in lost[:8])])
                       + (" …" if len(gained) > 8 or len(lost) > 8 else ""))
        elif key == "blas":
            out.append(f"blas {_blas_names(a.get(key))} -> {_blas_names(b.get(key))}")
        else:
            out.append(f"{key} {a.get(key)!r} -> {b.get(key)!r}")
    return out
