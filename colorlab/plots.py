"""Figures every stage shows: the result grid and the loss curve. Saved as PNG, shown in Jupyter."""

import matplotlib
import matplotlib.pyplot as plt
import numpy as np

from colorlab.files import atomic_path

COLUMNS = ("black and white (input)", "colourised", "original")


def save_grid(path, greys, colours, originals=None, names=None):
    """One row per photo: grey input | colourised | original (the last column only if given)."""
    columns = dict(zip(COLUMNS, [greys, colours] + ([originals] if originals is not None else [])))
    return save_columns(path, columns, names)


def save_columns(path, columns, names=None):
    """One row per photo, one column per entry of ``columns`` (a dict: column title -> list of images),
    such as ``{"black and white (input)": greys, "after L1": ..., "after the GAN": ..., "original": rgbs}``."""
    columns = {title: list(images) for title, images in columns.items()}
    rows, cols = len(next(iter(columns.values()))), len(columns)
    height, width = np.asarray(next(iter(columns.values()))[0]).shape[:2]
    fig, axes = plt.subplots(rows, cols, squeeze=False, figsize=(3.2 * cols, 3.2 * rows * height / width + 0.4))
    for c, (title, images) in enumerate(columns.items()):
        for r in range(rows):
            ax = axes[r, c]
            ax.imshow(np.clip(images[r], 0, 1), interpolation="lanczos")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=10)
            if c == 0 and names is not None:
                ax.set_ylabel(str(names[r]), fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def save_loss_curve(path, history, baselines=None, title="training loss", ylabel="mean squared error"):
    """Plot each list in ``history`` (one value per epoch) on a log scale, with dashed reference lines.

    ``baselines`` maps a label to a constant, such as the loss of always predicting grey. A value that
    is NaN leaves a gap (a curve that starts late is padded with NaN at its start).
    """
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for label, values in history.items():
        ax.plot(np.arange(1, len(values) + 1), values, label=label)
    for label, value in (baselines or {}).items():
        ax.axhline(value, linestyle="--", color="grey", linewidth=1)
        ax.annotate(label, (1, value), textcoords="offset points", xytext=(2, 3), fontsize=8, color="grey")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    return _save(fig, path)


def _save(fig, path):
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    if "inline" not in matplotlib.get_backend():  # Jupyter shows open figures; a script must free them
        plt.close(fig)
    return fig
