"""Figures every stage shows: result grids and loss curves, saved as PNG and shown once in Jupyter.

    plots.save_columns("result.png", {"input": greys, "colorized": colors, "original": rgbs}, names)
"""

import matplotlib
import matplotlib.pyplot as plt
import numpy as np

from colorlab import settings
from colorlab.files import atomic_path


def save_columns(path, columns, names=None, show=True):
    """One row per photo, one column per entry of ``columns`` (a dict: column title -> list of images)."""
    columns = {title: list(images) for title, images in columns.items()}
    first = next(iter(columns.values()))
    rows, cols = len(first), len(columns)
    height, width = np.asarray(first[0]).shape[:2]
    figsize = (3.2 * cols, 3.2 * rows * height / width + 0.4)
    fig, axes = plt.subplots(rows, cols, squeeze=False, figsize=figsize)
    for c, (title, images) in enumerate(columns.items()):
        for r, ax in enumerate(axes[:, c]):
            ax.imshow(np.clip(images[r], 0, 1), interpolation="lanczos")
            ax.set(xticks=[], yticks=[])
            if r == 0:
                ax.set_title(title, fontsize=10)
            if c == 0 and names is not None:
                ax.set_ylabel(str(names[r]), fontsize=8)
    fig.tight_layout()
    _save(fig, path, show)


def save_loss_curve(path, history, baselines=None, title="training loss", ylabel="mean squared error",
                    show=True):
    """Plot each list in ``history`` (a value per epoch; NaN: a gap) on a log scale, ``baselines`` dashed."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for label, values in history.items():
        ax.plot(np.arange(1, len(values) + 1), values, label=label)
    for label, value in (baselines or {}).items():
        ax.axhline(value, linestyle="--", color="grey", linewidth=1)
        ax.annotate(label, (1, value), textcoords="offset points", xytext=(2, 3), fontsize=8, color="grey")
    ax.set(yscale="log", xlabel="epoch", ylabel=ylabel, title=title)
    ax.legend()
    fig.tight_layout()
    _save(fig, path, show)


def _save(fig, path, show):
    """Write the figure atomically, show it once in a notebook, and close it (so no figure piles up)."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    if show and settings.in_notebook() and "inline" in matplotlib.get_backend():
        from IPython.display import display
        display(fig)
    plt.close(fig)
