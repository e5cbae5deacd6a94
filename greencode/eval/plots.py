"""quality.png, efficiency.png (bars like the paper's Fig. 8) and tradeoff.png (Pareto view).

The oracle row has no measured figures (it runs full depth): it appears in quality.png and in the
trade-off's modelled-speed-up panel, where each row's share of the oracle's saving is written beside it."""

from __future__ import annotations

import io
from pathlib import Path

from greencode.files.atomic import atomic_write_text

QUALITY = (("rougeL", "ROUGE-L"), ("bleu", "BLEU"), ("codebleu", "CodeBLEU"), ("syntax_match", "Syntax"),
           ("dataflow_match", "Dataflow"))


def _colours(rows: list[dict]) -> list:
    import matplotlib

    agents = [r for r in rows if r["policy"].startswith("agent:")]
    blues = matplotlib.colormaps["Blues"]
    others = iter(matplotlib.colormaps["tab10"].colors[1:])
    colours = []
    for row in rows:
        if row["policy"] == "base":
            colours.append("#9e9e9e")
        elif row["policy"] == "full":
            colours.append("#303030")
        elif row["policy"].startswith("agent:"):
            colours.append(blues(0.4 + 0.5 * agents.index(row) / max(1, len(agents) - 1)))
        else:
            colours.append(next(others))
    return colours


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    atomic_write_text(path, buffer.getvalue())


def _title(result: dict) -> str:
    return f"{result['model']}: {result['samples']} samples ({result['protocol']} protocol)"


def quality_plot(result: dict):
    import matplotlib.pyplot as plt
    import numpy as np

    rows = result["rows"]
    metrics = [(k, t) for k, t in QUALITY if any(r.get(k) is not None for r in rows)]
    fig, ax = plt.subplots(figsize=(max(7, 1.6 * len(metrics) + 0.35 * len(rows)), 4.2))
    width = 0.8 / len(rows)
    x = np.arange(len(metrics))
    for i, (row, colour) in enumerate(zip(rows, _colours(rows))):
        values = [row.get(k) or 0.0 for k, _ in metrics]
        ax.bar(x + (i - (len(rows) - 1) / 2) * width, values, width, label=row["label"], color=colour)
    ax.set_xticks(x, [t for _, t in metrics])
    ax.set_ylim(0, 1)
    ax.set_ylabel("score (0-1)")
    ax.set_title(f"Quality — {_title(result)}", fontsize=10)
    ax.legend(fontsize=8, ncol=min(4, len(rows)), loc="upper right")
    ax.grid(axis="y", alpha=0.3)
    return fig


def efficiency_plot(result: dict):
    import matplotlib.pyplot as plt

    all_rows = result["rows"]
    panels = (("decode_joules", f"decode energy per completion (J, {all_rows[0]['energy_source']})"),
              ("seconds_per_completion", "latency per completion (s; hatched: prefill)"),
              ("tokens_per_s", "decode throughput (tokens/s)"))
    fig, axes = plt.subplots(1, 3, figsize=(min(18, max(10, 0.65 * len(all_rows) * 3)), 4.4))
    for ax, (key, title) in zip(axes, panels):
        measured = [(r, c) for r, c in zip(all_rows, _colours(all_rows)) if r.get(key) is not None]
        rows, colours = [r for r, _ in measured], [c for _, c in measured]
        labels = [r["label"] for r in rows]
        values = [r[key] for r in rows]
        bars = ax.bar(labels, values, color=colours)
        if key == "seconds_per_completion":  # the prefill share, the same work for every policy
            ax.bar(labels, [r["prefill_seconds"] for r in rows], color="none", hatch="//", edgecolor="white")
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
        ax.set_title(title, fontsize=9)
        ax.tick_params(axis="x", labelrotation=45, labelsize=8)
        for tick in ax.get_xticklabels():
            tick.set_horizontalalignment("right")
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"Efficiency — {_title(result)}", fontsize=10)
    fig.tight_layout()
    return fig


def _pareto(points: list[tuple[float, float]], lower_x_better: bool) -> list[tuple[float, float]]:
    """The points no other point beats on both axes (quality up; cost down or speed up)."""
    ordered = sorted(points, key=lambda p: (p[0] if lower_x_better else -p[0], -p[1]))
    frontier, best = [], float("-inf")
    for x, y in ordered:
        if y > best:
            frontier.append((x, y))
            best = y
    return frontier


def _clusters(points: list[tuple[float, float]], labels: list[str], share: float = 0.08):
    """Points closer than `share` of each axis's span are labelled once, with every name stacked (policies
    that never exit sit on top of full depth)."""
    span_x = (max(p[0] for p in points) - min(p[0] for p in points)) or 1.0
    span_y = (max(p[1] for p in points) - min(p[1] for p in points)) or 1.0
    groups: list[tuple[tuple[float, float], list[str]]] = []
    for (x, y), label in zip(points, labels):
        for (gx, gy), names in groups:
            if abs(gx - x) <= share * span_x and abs(gy - y) <= share * span_y:
                names.append(label)
                break
        else:
            groups.append(((x, y), [label]))
    return groups


def tradeoff_plot(result: dict):
    import matplotlib.pyplot as plt

    all_rows = result["rows"]
    quality_key = "codebleu" if all(r.get("codebleu") is not None for r in all_rows) else "rougeL"
    panels = [("decode_joules", "rougeL", "decode energy per completion (J)", "ROUGE-L", True),
              ("tokens_per_s", quality_key, "decode throughput (tokens/s)", dict(QUALITY)[quality_key], False)]
    if any(r.get("modelled_speedup") for r in all_rows):
        panels.append(("modelled_speedup", quality_key, "modelled decode speed-up (cost model, not measured)",
                       dict(QUALITY)[quality_key], False))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.6))
    for ax, (x_key, y_key, x_title, y_title, lower_better) in zip(axes, panels):
        shown = [(r, c) for r, c in zip(all_rows, _colours(all_rows)) if r.get(x_key) is not None]
        rows, colours = [r for r, _ in shown], [c for _, c in shown]
        points = [(r[x_key], r.get(y_key) or 0.0) for r in rows]
        for (x, y), colour in zip(points, colours):
            ax.scatter(x, y, s=60, color=colour, edgecolor="black", linewidth=0.5, zorder=3)
        top = max(y for _, y in points)
        span = (top - min(y for _, y in points)) or 1.0
        names = [r["label"] + (f" ({r['oracle_saving_share']:.0%} of oracle)"
                               if x_key == "modelled_speedup" and r.get("oracle_saving_share") is not None else "")
                 for r in rows]
        for (x, y), labels in _clusters(points, names):
            text = "\n".join(", ".join(labels[i:i + 3]) for i in range(0, len(labels), 3))
            near_top = top - y < 0.2 * span  # write below the point, inside the axes
            ax.annotate(text, (x, y), textcoords="offset points", xytext=(6, -7 if near_top else 4), fontsize=8,
                        va="top" if near_top else "bottom")
        ax.margins(x=0.15, y=0.12)
        frontier = _pareto(points, lower_better)
        ax.plot(*zip(*frontier), linestyle="--", color="tab:green", alpha=0.7, label="Pareto front", zorder=2)
        ax.set_xlabel(x_title)
        ax.set_ylabel(y_title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
        ax.set_title(f"{y_title} vs {x_title.split(' (')[0]} ({'left' if lower_better else 'right'} and up is better)",
                     fontsize=9)
    fig.suptitle(f"Trade-off — {_title(result)}", fontsize=10)
    fig.tight_layout()
    return fig


def write_plots(out: Path, result: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    _save(quality_plot(result), out / "quality.png")
    _save(efficiency_plot(result), out / "efficiency.png")
    _save(tradeoff_plot(result), out / "tradeoff.png")
