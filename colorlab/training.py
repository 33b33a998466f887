"""What the stages' ``model.fit`` needs that Keras's own callbacks (``BackupAndRestore``, ``ModelCheckpoint``,
``CSVLogger``, ``TensorBoard``, ``TerminateOnNaN``) do not give."""

import contextlib
import csv
import math
import os
from pathlib import Path

import keras

from colorlab import UserError, coloring, files, lab, plots, settings


class TrainingDiverged(UserError):
    """The loss became NaN or infinite."""


class ResultGrid(keras.callbacks.Callback):
    """After each epoch, ``folder/epoch-0001.png``, ...: ``rgbs`` colored by ``model`` (default: the fit)."""

    def __init__(self, folder, names, rgbs, model=None, multiple=8, color_space="lab", show_every=5):
        super().__init__()
        self.folder, self.names, self.rgbs = Path(folder), list(names), list(rgbs)
        self.greys = [lab.grey_rgb(rgb) for rgb in self.rgbs]  # once, not every epoch
        self.colorizer, self.multiple, self.color_space = model, multiple, color_space
        self.show_every = show_every

    def on_epoch_end(self, epoch, logs=None):
        self.folder.mkdir(parents=True, exist_ok=True)
        colored = coloring.colorize(self.colorizer or self.model, self.rgbs, multiple=self.multiple,
                                    color_space=self.color_space)
        columns = {"black and white (input)": self.greys, f"colorized after epoch {epoch + 1}": colored,
                   "original": self.rgbs}
        last = (self.params or {}).get("epochs")
        show = epoch == 0 or (epoch + 1) % self.show_every == 0 or epoch + 1 == last  # shown in Jupyter
        plots.save_columns(self.folder / f"epoch-{epoch + 1:04d}.png", columns, self.names, show)


def saved_epochs(backup):
    """How many epochs ``keras.callbacks.BackupAndRestore`` has saved in the folder ``backup`` (0 if none)."""
    metadata = None
    with contextlib.suppress(UserError):  # a damaged file: none saved
        metadata = files.read_json(Path(backup) / "training_metadata.json", limit=4096) if backup else None
    epoch = metadata.get("epoch") if isinstance(metadata, dict) else None
    return epoch if type(epoch) is int and epoch >= 0 else 0


class Interrupted(UserError):
    """Ctrl-C (or Jupyter's interrupt) during training: the one line says what is saved and how to go on."""

    prefix = ""


@contextlib.contextmanager
def stops(backup=None):
    """Around ``model.fit``: Ctrl-C, a NaN loss (``TerminateOnNaN(raise_error=True)``) or a full disk end in
    one line that says what ``BackupAndRestore`` kept in ``backup`` and how to go on."""
    try:
        yield
    except KeyboardInterrupt:
        done = saved_epochs(backup)
        plural = "epochs are" if done != 1 else "epoch is"
        kept = f"{done} {plural} saved in {backup}" if backup else "nothing was saved"
        go_on = f"; continue with {settings.flag('RESUME', True)}" if backup and done else ""
        if settings.in_notebook():
            raise Interrupted(f"interrupted: {kept}{go_on}") from None
        print(f"\ninterrupted: {kept}{go_on}", flush=True)
        raise SystemExit(130) from None
    except (RuntimeError, OSError, ValueError) as error:
        done = saved_epochs(backup)
        if isinstance(error, RuntimeError) and "NaN or Inf loss" in str(error):
            where = f" in epoch {done + 1}" if backup else ""
            kept = f"the last good epoch ({done}) is saved in {backup}" if done else "no good epoch was saved"
            raise TrainingDiverged(f"the loss became NaN or infinite{where}: training stopped; {kept}. A "
                                   f"lower LEARNING_RATE usually helps") from None
        if backup and isinstance(error, OSError) and error.errno in files._CANNOT_WRITE:  # a full disk
            advice = f"{files._CANNOT_WRITE[error.errno]}, then continue with {settings.flag('RESUME', True)}"
            raise files.WriteError(backup, os.strerror(error.errno),
                                   f"the backup of epoch {done} is intact; {advice}") from None
        if backup and isinstance(error, ValueError) and "could not be loaded" in str(error):
            raise UserError(f"{backup}: cannot load this backup into the model "
                            f"({str(error).strip().splitlines()[0]}); was it written by another stage, or "
                            f"with other settings?") from None  # a backup written by another model
        raise


def history(path):
    """``CSVLogger(path, append=True)``'s history over resumed runs: {name: [value per epoch]}, an epoch
    logged twice (by a run killed before its backup) counted once, the last."""
    rows = {}
    with contextlib.suppress(FileNotFoundError), open(path, newline="", encoding="utf-8") as file:
        for row in csv.DictReader(file):
            with contextlib.suppress(KeyError, ValueError):
                epoch = int(row.pop("epoch"))
                rows[epoch] = {name: float(value) for name, value in row.items() if value != ""}
    names = {name: None for row in rows.values() for name in row}
    return {name: [rows[e].get(name, math.nan) for e in sorted(rows)] for name in names}


def lowest(path, name):
    """The lowest ``name`` in the CSVLogger file ``path``, or None: where a resumed ModelCheckpoint starts."""
    values = [v for v in history(path).get(name, []) if math.isfinite(v)]
    return min(values) if values else None


def save_model(model, path):
    """Save ``model`` atomically: a run killed mid-save leaves the previous file, never a broken one."""
    with files.atomic_path(path) as tmp:
        model.save(tmp)
