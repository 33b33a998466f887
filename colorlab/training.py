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

    def __init__(self, folder, names, rgbs, model=None, multiple=8, color_space="lab"):
        super().__init__()
        self.folder, self.names, self.rgbs = Path(folder), list(names), list(rgbs)
        self.greys = [lab.grey_rgb(rgb) for rgb in self.rgbs]  # once, not every epoch
        self.colorizer, self.multiple, self.color_space = model, multiple, color_space

    def on_epoch_end(self, epoch, logs=None):
        self.folder.mkdir(parents=True, exist_ok=True)
        colored = coloring.colorize(self.colorizer or self.model, self.rgbs, multiple=self.multiple,
                                    color_space=self.color_space)
        plots.save_grid(self.folder / f"epoch-{epoch + 1:04d}.png", self.greys, colored, self.rgbs,
                        self.names, show=False)


def saved_epochs(backup):
    """How many epochs ``keras.callbacks.BackupAndRestore`` has saved in the folder ``backup`` (0 if none)."""
    try:
        metadata = files.read_json(Path(backup) / "training_metadata.json", limit=4096) if backup else None
    except UserError:
        return 0
    epoch = metadata.get("epoch") if isinstance(metadata, dict) else None
    return epoch if isinstance(epoch, int) and not isinstance(epoch, bool) and epoch >= 0 else 0


@contextlib.contextmanager
def stops(backup=None):
    """Around ``model.fit``: Ctrl-C, a NaN loss (``TerminateOnNaN(raise_error=True)``) or a full disk end in
    one line that says what ``BackupAndRestore`` kept in ``backup`` and how to go on."""
    try:
        yield
    except KeyboardInterrupt:
        done = saved_epochs(backup)
        kept = "nothing was saved"
        if backup:
            kept = f"{done} epoch{'' if done == 1 else 's'} {'is' if done == 1 else 'are'} saved in {backup}"
        go_on = f"; continue with {settings.flag('RESUME', True)}" if backup and done else ""
        print(f"\ninterrupted: {kept}{go_on}", flush=True)
        raise SystemExit(130) from None
    except RuntimeError as error:
        if "NaN or Inf loss" not in str(error):
            raise
        done = saved_epochs(backup)
        where = f" in epoch {done + 1}" if backup else ""
        kept = f"the last good epoch ({done}) is saved in {backup}" if done else "no good epoch was saved"
        raise TrainingDiverged(f"the loss became NaN or infinite{where}: training stopped; {kept}. A lower "
                               f"LEARNING_RATE usually helps") from None
    except OSError as error:  # BackupAndRestore writing on a full disk
        if not backup or error.errno not in files._CANNOT_WRITE:
            raise
        advice = f"{files._CANNOT_WRITE[error.errno]}, then continue with {settings.flag('RESUME', True)}"
        raise files.WriteError(backup, os.strerror(error.errno),
                               f"the backup of epoch {saved_epochs(backup)} is intact; {advice}") from None
    except ValueError as error:  # a backup written by another model
        if not backup or "could not be loaded" not in str(error):
            raise
        raise UserError(f"{backup}: cannot load this backup into the model "
                        f"({str(error).strip().splitlines()[0]}); was it written by another stage, or with "
                        f"other settings?") from None


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
