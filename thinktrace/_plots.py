"""Figures of the HTML reports, each returned as PNG bytes (matplotlib's object API with the Agg canvas: no pyplot
global state, no display, safe in threads). Callers embed the bytes inline (base64), so a report needs no files."""

from __future__ import annotations

import io
from typing import Mapping, Sequence

KIND_COLORS = {"baseline": "tab:blue", "trace-demos": "tab:cyan", "trace-sft": "tab:orange", "label-sft": "tab:purple",
               "refined-guideline": "tab:red", "compiled-rater": "darkred", "guideline-rules": "tab:pink",
               "guideline-examples": "tab:brown",
               "trace-sft-common": "tab:olive", "self-trace-sft": "tab:green", "shuffled-trace-sft": "tab:gray",
               "trace-sft-multitask": "darkorange", "trace-sft-label-first": "gold", "label-sft-all": "indigo",
               "shuffled-trace-sft-label-first": "silver", "shuffled-trace-sft-multitask": "darkgray"}


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _short(text: str, n: int = 28) -> str:
    text = str(text)
    return text if len(text) <= n else text[: n - 1] + "…"


def alpha_forest(rows: Sequence[Mapping], ceiling: Mapping | None = None, title: str = "",
                 xlabel: str = "Krippendorff's α vs human (95% CI)", colors: Mapping[str, str] | None = None) -> bytes:
    """Horizontal forest plot: one row per {label, value, lo, hi, kind}; the human ceiling {value, lo, hi} as a
    green band. Rows without a value are listed with an 'n/a' marker at 0. `xlabel` names the axis (e.g. a paired
    Δα); `colors` maps a kind to its colour (default: KIND_COLORS), and the legend names the kinds."""
    n = max(len(rows), 1)
    fig = _figure(7.5, 1.2 + 0.38 * n)
    ax = fig.add_subplot(1, 1, 1)
    if ceiling and ceiling.get("value") is not None:
        if ceiling.get("lo") is not None and ceiling.get("hi") is not None:
            ax.axvspan(ceiling["lo"], ceiling["hi"], color="tab:green", alpha=0.15, label="human ceiling (95% CI)")
        ax.axvline(ceiling["value"], color="tab:green", lw=1.2, label="human ceiling (LOO α)")
    ax.axvline(0, color="grey", lw=0.8, ls=":")
    seen: set[str] = set()
    for i, r in enumerate(rows):
        y = n - 1 - i
        kind = r.get("kind") or "other"
        color = (colors or KIND_COLORS).get(kind, "tab:gray")
        if r.get("value") is None:
            ax.plot([0], [y], marker="x", color="tab:gray")
            ax.annotate("α n/a", (0, y), xytext=(6, -3), textcoords="offset points", fontsize=7, color="tab:gray")
            continue
        lo = r["lo"] if r.get("lo") is not None else r["value"]
        hi = r["hi"] if r.get("hi") is not None else r["value"]
        ax.errorbar([r["value"]], [y], xerr=[[r["value"] - lo], [hi - r["value"]]], fmt="o", capsize=3,
                    color=color, label=kind if kind not in seen else None)
        seen.add(kind)
    ax.set_yticks(range(n), [_short(r.get("label", ""), 40) for r in rows][::-1] if rows else [""], fontsize=8)
    ax.set_ylim(-0.7, n - 0.3)
    ax.set_xlabel(xlabel)
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)
    return _png(fig)


def confusion_heatmap(counts: Sequence[Sequence[int]], rows: Sequence[str], cols: Sequence[str],
                      title: str = "") -> bytes:
    """Counts of human label (rows) x rater label (columns); colour = share of the row, so rare labels show."""
    import numpy as np

    m = np.asarray(counts, dtype=float)
    share = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    fig = _figure(1.4 + 0.55 * len(cols), 1.1 + 0.45 * len(rows))
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(j, i, str(int(m[i, j])), ha="center", va="center", fontsize=8,
                    color="white" if share[i, j] > 0.6 else "black")
    ax.set_xticks(range(len(cols)), [_short(c, 12) for c in cols], rotation=35, ha="right", fontsize=7)
    ax.set_yticks(range(len(rows)), [_short(r, 12) for r in rows], fontsize=7)
    ax.set_xlabel("rater", fontsize=8)
    ax.set_ylabel("human", fontsize=8)
    if title:
        ax.set_title(_short(title, 40), fontsize=9)
    return _png(fig)


def acceptance_by_attempt(points: Sequence[tuple[int, int, float | None]]) -> bytes:
    """(attempt number, attempts made, acceptance rate) -> rate line over a bar chart of the attempt counts."""
    fig = _figure(6, 3.2)
    ax = fig.add_subplot(1, 1, 1)
    xs = [p[0] for p in points]
    ax2 = ax.twinx()
    ax2.bar(xs, [p[1] for p in points], color="lightgray", width=0.6, label="attempts made")
    ax2.set_ylabel("attempts made", fontsize=8)
    ax.set_zorder(ax2.get_zorder() + 1)
    ax.patch.set_visible(False)
    ax.plot(xs, [p[2] if p[2] is not None else float("nan") for p in points], marker="o", color="tab:blue",
            label="acceptance rate")
    ax.set_ylim(0, 1.05)
    ax.set_xticks(xs)
    ax.set_xlabel("attempt number")
    ax.set_ylabel("acceptance rate")
    ax.set_title("Acceptance rate by attempt number", fontsize=10)
    ax.grid(alpha=0.3)
    return _png(fig)


def per_label_acceptance(labels: Sequence[str], rate: Sequence[float | None],
                         explained: Sequence[float | None]) -> bytes:
    """Per human label: acceptance rate of attempts and share of examples explained (grouped bars)."""
    import numpy as np

    x = np.arange(len(labels))
    fig = _figure(max(4.5, 1.0 + 0.9 * len(labels)), 3.2)
    ax = fig.add_subplot(1, 1, 1)
    nan = float("nan")
    ax.bar(x - 0.2, [v if v is not None else nan for v in rate], 0.4, label="attempts accepted", color="tab:blue")
    ax.bar(x + 0.2, [v if v is not None else nan for v in explained], 0.4, label="examples explained",
           color="tab:green")
    ax.set_xticks(x, [_short(s, 14) for s in labels], rotation=20, ha="right", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("share")
    ax.set_title("Acceptance per human label", fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def loss_curves(curves: Mapping[str, Sequence[tuple[float, float]]], title: str = "Fine-tuning loss") -> bytes:
    """Training loss against optimizer step, one line per fine-tuned variant (the report's chart of all adapters,
    and each adapter's own loss.png)."""
    fig = _figure(6.5, 3.4)
    ax = fig.add_subplot(1, 1, 1)
    for name, pts in curves.items():
        ax.plot([s for s, _ in pts], [v for _, v in pts], marker="." if len(pts) < 60 else None, lw=1.2,
                label=_short(name, 30))
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(fontsize=7)
    return _png(fig)
