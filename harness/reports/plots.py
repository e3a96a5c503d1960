"""Plots of a run's JSON report (matplotlib, imported only when a plot is drawn).

One figure per run: a panel per tensor group (forward: X, Z, Y, loss; backward: DY, DZ, DW, Db,
DX, ...; update: the parameters after the step), and in each panel, per step, every backend's
worst error in the comparator's unit (the report's ``unit``: error / rounding bound) over the
tensors of that group, on a log scale; a panel's title names the tensors it holds. Steps are
numbered from 0, as every message and the progress line number them. The pass line (1: the bound) is drawn; steps with a kink
flip are shaded, re-anchorings (trajectory mode, after a flip) drawn as dashed lines between the
steps, the first divergence starred. Zero errors (bit-identical values) sit on the floor of the
axis, non-finite ones on its ceiling, marked.

Only the report is read, never a framework: a saved report plots anywhere.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

from harness.core.keys import parse as parse_key
from harness.reports import write

GROUPS = {
    "forward": ("X", "T", "Z", "Y", "loss"),
    "backward": ("DY", "DZ", "DW", "Db", "DX", "Dgamma", "Dbeta", "Dsrelu"),
    "update": ("W", "b", "gamma", "beta", "srelu"),
}
COLORS = {"numpy": "#1f77b4", "torch": "#d62728", "jax": "#2ca02c", "tensorflow": "#ff7f0e"}
MARKERS = {"numpy": "o", "torch": "s", "jax": "^", "tensorflow": "D"}


def group_of(tensor: str) -> str:
    base = parse_key(tensor).tensor
    for group, names in GROUPS.items():
        if base in names:
            return group
    return "forward"


def _value(x: Any) -> float:
    if isinstance(x, (int, float)):
        return float(x)
    try:
        return float(x)  # "inf", "nan"
    except (TypeError, ValueError):
        return math.nan


def series(report: dict[str, Any]) -> dict[str, dict[str, list[float]]]:
    """{group: {backend: [worst ratio per step]}} (NaN where a backend has no value)."""
    steps = report.get("per_step") or []
    backends = report.get("backends") or []
    out: dict[str, dict[str, list[float]]] = {g: {b: [] for b in backends} for g in GROUPS}
    for entry in steps:
        worst: dict[str, dict[str, float]] = {g: {} for g in GROUPS}
        for tensor, row in (entry.get("ratio") or {}).items():
            g = group_of(tensor)
            for b, r in row.items():
                v = _value(r)
                old = worst[g].get(b)
                if old is None or (v > old) or (math.isnan(v) and not math.isnan(old)):
                    worst[g][b] = v
        for g in GROUPS:
            for b in backends:
                out[g].setdefault(b, []).append(worst[g].get(b, math.nan))
    return out


def present(report: dict[str, Any]) -> dict[str, list[str]]:
    """{group: the tensor names (without layer numbers) the report holds in it, in GROUPS' order}:
    a panel's title names what it shows, not every tensor a network could have."""
    seen = {parse_key(t).tensor for e in report.get("per_step") or [] for t in (e.get("ratio") or {})}
    return {g: [n for n in names if n in seen] for g, names in GROUPS.items()}


def title(report: dict[str, Any]) -> str:
    against = f"against the {report['oracle']} oracle" if report.get("oracle") else "against the consensus"
    verdict = (report.get("check") or {}).get("status") or ("pass" if report.get("passed") else "fail")
    return (f"{report['scenario']}: {report['dtype']}, {report['mode']}, seed {report['seed']}, {against} "
            f"- {verdict.upper()}")


def figure(report: dict[str, Any]):
    """The matplotlib Figure of one run's report."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    data, names = series(report), present(report)
    per_step = report.get("per_step") or []
    steps = [e["step"] for e in per_step]
    groups = [g for g in GROUPS if any(any(not math.isnan(v) for v in vals) for vals in data.get(g, {}).values())]
    groups = groups or ["forward"]
    finite = [v for g in groups for vals in data.get(g, {}).values() for v in vals if math.isfinite(v) and v > 0]
    lo = 10 ** math.floor(math.log10(min(finite + [1.0]))) / 10
    hi = 10 ** math.ceil(math.log10(max(finite + [1.0]) * 1.01))  # at least 10: room above the pass line
    unit = (report.get("unit") or {}).get("name", "rounding bound")

    fig = Figure(figsize=(11.5, 2.6 * len(groups) + 1.2), dpi=110, layout="constrained")
    axes = fig.subplots(len(groups), 1, sharex=True, squeeze=False)[:, 0]
    flips = [e["step"] for e in per_step if e.get("flips")]
    resyncs = report.get("resyncs") or []
    fd = report.get("first_divergence")
    for ax, g in zip(axes, groups):
        lines = data.get(g, {})
        # backends often agree to the last bit: a small horizontal offset keeps every one visible
        dodge = {b: (i - (len(lines) - 1) / 2) * 0.08 for i, b in enumerate(lines)}
        for b, vals in lines.items():
            dx = dodge[b]
            xs = [s + dx for s in steps]
            ys = [lo if v == 0 else hi if math.isinf(v) else v for v in vals]
            ax.plot(xs, ys, marker=MARKERS.get(b, "o"), markersize=3.5, linewidth=1.1,
                    color=COLORS.get(b), label=b, alpha=0.85)
            bad = [(x, hi) for x, v in zip(xs, vals) if math.isinf(v)]
            if bad:
                ax.scatter(*zip(*bad), marker="x", s=60, color="black", zorder=5,
                           label=f"{b}: non-finite")
        ax.axhline(1.0, color="crimson", linestyle="--", linewidth=1.3, label="pass line (1 = the bound)")
        for i, s in enumerate(flips):
            ax.axvspan(s - 0.4, s + 0.4, color="orange", alpha=0.25, linewidth=0,
                       label="kink flip" if i == 0 else None)
        for i, s in enumerate(resyncs):
            ax.axvline(s + 0.5, color="purple", linestyle=":", linewidth=1.4,
                       label="re-anchored after the step" if i == 0 else None)
        if fd and group_of(fd["tensor"]) == g:
            blamed = {b: _value(v) for b, v in (fd.get("ratio") or {}).items() if b in fd.get("backends", [])}
            b, r = max(blamed.items(), key=lambda kv: kv[1], default=(None, math.nan))
            ax.scatter([fd["step"] + dodge.get(b, 0.0)], [hi if math.isinf(r) else r], marker="*", s=220, color="crimson",
                       edgecolor="black", zorder=6, label=f"first divergence ({fd['tensor']}"
                                                          f"{'' if fd.get('layer') is None else fd['layer']})")
        ax.set_yscale("log")
        ax.set_ylim(lo / 1.5, hi * 1.5)
        ax.set_ylabel(f"worst error /\n{unit}")
        ax.set_title(f"{g}: {', '.join(names[g])}", fontsize=9, loc="left")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.005, 1.0), borderaxespad=0.0)  # beside, never over the data
    axes[-1].set_xlabel("step (from 0, as the messages and the progress line number them)")
    axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    if steps:
        axes[-1].set_xlim(min(steps) - 0.6, max(steps) + 0.6)
    fig.suptitle(title(report), fontsize=10)
    return fig


def render_png(report: dict[str, Any], path: str | Path | None = None) -> bytes:
    """PNG bytes of the run's figure; also written to ``path`` when given."""
    fig = figure(report)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    data = buf.getvalue()
    if path is not None:
        write.data(path, data)
    return data


def available() -> str | None:
    """None when matplotlib can be imported, else why not (reports are then written without plots)."""
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:  # found, not imported: that waits for a plot
        return "matplotlib is not installed; pip install 'nerva-consistency[report]'"
    return None
