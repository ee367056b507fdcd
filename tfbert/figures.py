"""Matplotlib figures as PNG bytes: TensorBoard images and the head-comparison chart.

Figures are built with `matplotlib.figure.Figure`, never pyplot, so no global state or
display backend is involved.
"""

import io

import numpy as np
from matplotlib.figure import Figure


def png_bytes(figure: Figure) -> bytes:
    """The figure as a PNG image (a fixed size: figures of one kind stack into one batch)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def confusion_matrix_figure(matrix: np.ndarray, label_names) -> Figure:
    """Counts with true labels as rows and predicted labels as columns."""
    size = 2 + 0.6 * len(label_names)
    figure = Figure(figsize=(size, size), dpi=100, layout="constrained")
    axes = figure.add_subplot()
    axes.imshow(matrix, cmap="Blues")
    ticks = np.arange(len(label_names))
    axes.set_xticks(ticks, label_names, rotation=45, ha="right")
    axes.set_yticks(ticks, label_names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    darkest = matrix.max() or 1
    for (row, column), count in np.ndenumerate(matrix):
        color = "white" if count > darkest / 2 else "black"
        axes.text(column, row, str(count), ha="center", va="center", color=color)
    return figure


def attention_figure(tokens: list[str], weights: np.ndarray, title: str) -> Figure:
    """Heatmap of one token's attention: `weights` (heads, seq), a row per head plus their mean."""
    rows = np.concatenate([weights, weights.mean(axis=0, keepdims=True)])  # (heads + 1, seq)
    figure = Figure(figsize=(10, 3.5), dpi=100, layout="constrained")
    axes = figure.add_subplot()
    image = axes.imshow(rows, cmap="viridis", aspect="auto", vmin=0)
    axes.set_xticks(np.arange(len(tokens)), tokens, rotation=90, fontsize=7)
    axes.set_yticks(np.arange(len(rows)), [f"head {head}" for head in range(len(weights))] + ["mean"])
    axes.set_title(title, fontsize=9)
    figure.colorbar(image, ax=axes)
    return figure


def metric_bars_figure(groups: list[str], metrics: dict, time: tuple | None) -> Figure:
    """Grouped bars with ±std error bars.

    Args:
        groups: one label per group of runs (the x axis).
        metrics: metric name -> (means, stds), each a list in `groups` order.
        time: (means, stds) of training seconds per group, drawn in a second panel, or None.
    """
    panels = 2 if time else 1
    figure = Figure(figsize=(4 + 1.2 * len(groups) * panels, 4), dpi=100, layout="constrained")
    axes = figure.add_subplot(1, panels, 1)
    positions = np.arange(len(groups))
    width = 0.8 / max(len(metrics), 1)
    lowest = 0.0  # a correlation can be negative
    for number, (name, (means, stds)) in enumerate(metrics.items()):
        offset = (number - (len(metrics) - 1) / 2) * width
        axes.bar(positions + offset, means, width, yerr=stds, capsize=3, label=name)
        lowest = min(lowest, *(mean - std for mean, std in zip(means, stds)))
    axes.set_xticks(positions, groups)
    axes.set_ylabel("test score")
    axes.set_ylim(lowest - 0.05 if lowest < 0 else 0, 1.05)
    if metrics:
        axes.legend(loc="lower right", fontsize=8)
    if time:
        time_axes = figure.add_subplot(1, panels, 2)
        time_axes.bar(positions, time[0], yerr=time[1], capsize=3, color="gray")
        time_axes.set_xticks(positions, groups)
        time_axes.set_ylabel("training time (s)")
    return figure
