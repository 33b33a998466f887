"""Training comforts shared by the stages, so that no stage repeats them.

:func:`fit` is ``model.fit`` plus what a long run needs; every stage that trains on a folder of
photos calls it the same way::

    run = training.fit(model, train, validation, epochs=EPOCHS, out_dir=out_dir, resume=RESUME,
                       examples=validation.examples(4), settings=config)
    run.history["loss"], run.history["val_loss"], run.seconds

What it adds, each piece also usable on its own:

- :class:`Checkpoint`: after every epoch, the model's weights with its optimizer state, the epoch
  number and the loss history, written atomically into ``OUT_DIR/checkpoint``; ``resume=True``
  continues from the last completed epoch, so an interrupted run (Ctrl-C, a killed process, a crash)
  ends where an uninterrupted one would have.
- :class:`ResultGrid`: after every epoch, a few photos the model never trained on, coloured by it, in
  ``OUT_DIR/grids/epoch-0001.png`` ... (grey | colourised | original).
- TensorBoard logs in ``OUT_DIR/logs`` (``tensorboard --logdir OUT_DIR/logs``) and Keras's progress bar.
- :class:`StopOnNaN`: a loss that becomes NaN or infinite stops training with a clear message; the
  checkpoint keeps the last good epoch.
- ``keep_best="val_loss"``: the checkpoint also keeps the weights of the epoch with the lowest
  validation loss (``OUT_DIR/checkpoint/best.weights.h5``); :func:`restore_best` loads them back, so
  the saved model is the one that coloured unseen photos best, not the last, possibly overfitted, one
  ("early stopping", without stopping).
- :func:`save_model`: the final ``.keras`` file, written atomically.
- :class:`RGBTrainer`: trains an ``l -> ab`` model on batches of 8-bit RGB crops, converted to Lab
  inside the compiled training step (on the accelerator), while the model itself stays ``l -> ab``.
"""

import contextlib
import importlib.util
import json
import math
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from colorlab import UserError, files, images, lab, ops, plots

CHECKPOINT = "checkpoint"  # sub-folders of OUT_DIR that fit() writes
BEST = "best.weights.h5"  # in CHECKPOINT: the weights of the best epoch, with keep_best
GRIDS = "grids"
LOGS = "logs"


class TrainingDiverged(UserError):
    """The loss became NaN or infinite."""


@dataclass
class Run:
    """What :func:`fit` returns: the loss history of every epoch (resumed ones included) and the
    training time in seconds, summed over interrupted and resumed runs."""

    history: dict
    seconds: float
    epochs: int


def fit(model, train, validation=None, *, epochs, out_dir, resume=False, examples=None, predict=None,
        multiple=8, color_space="lab", settings=None, callbacks=(), verbose="auto", keep_best=None):
    """Train a compiled ``model`` on ``train`` (a ``keras.utils.PyDataset``, e.g. ``colorlab.data.Photos``)
    for ``epochs`` epochs in all, with checkpoints, resume, result grids, TensorBoard and a NaN stop.

    Args:
        model: a compiled Keras model.
        train, validation: datasets of ``(inputs, targets)`` batches; ``validation`` may be None.
            A dataset with a ``set_epoch`` method (``colorlab.data.Photos``) is told each epoch's number.
            Batches are read in order (``shuffle=False``): the dataset shuffles, from its seed, so that a
            resumed run reads exactly the batches an uninterrupted one would.
        epochs: the total number of epochs, counting those done before a resume.
        out_dir: the run's folder; ``checkpoint/``, ``grids/`` and ``logs/`` are written in it. A new
            run (``resume=False``) deletes those three sub-folders left by an earlier run.
        resume: continue from the checkpoint in ``out_dir`` (a UserError if there is none).
        examples: ``(names, rgbs)`` of photos to colour after each epoch (see :class:`ResultGrid`).
        predict, multiple, color_space: passed to :class:`ResultGrid`.
        settings: the run's settings (a dict), stored with the checkpoint; on resume, changed values
            are listed.
        callbacks: more Keras callbacks.
        verbose: passed to ``model.fit``; "auto" shows Keras's progress bar.
        keep_best: a logged metric to minimise, such as "val_loss": the checkpoint then also keeps the
            weights of the epoch where it was lowest, for :func:`restore_best`.

    Returns a :class:`Run`. Raises :class:`TrainingDiverged` if the loss became NaN or infinite.
    """
    out_dir = Path(out_dir)
    folder = out_dir / CHECKPOINT
    if resume:
        check_resume(out_dir, settings)
    state = load_checkpoint(model, folder) if resume else None
    if resume and state is None:  # killed (or diverged) before its first epoch was saved: that is epoch 0
        print(f"note: the run in {out_dir} stopped before its first epoch was saved: starting it from the beginning")
    if state is None:
        for name in (CHECKPOINT, GRIDS, LOGS):  # an earlier run's leftovers would mix with this run's
            shutil.rmtree(out_dir / name, ignore_errors=True)
        state = {"epoch": 0, "history": {}, "seconds": 0.0}
    else:
        print(f"resuming after epoch {state['epoch']} of {epochs}, from {folder}")
        _report_changes(state.get("settings") or {}, settings or {})
        if state["epoch"] >= epochs:
            print(f"the checkpoint has {state['epoch']} epochs already: nothing to train (raise EPOCHS to train more)")

    stop = StopOnNaN()
    checkpoint = Checkpoint(folder, state, settings, keep_best)
    all_callbacks = [stop]
    if hasattr(train, "set_epoch"):
        from colorlab.data import NextEpoch

        all_callbacks.insert(0, NextEpoch(train))
    if examples is not None and len(examples[1]):
        all_callbacks.append(ResultGrid(out_dir / GRIDS, *examples, predict=predict, multiple=multiple,
                                        color_space=color_space))
    tensorboard = tensorboard_callback(out_dir / LOGS)
    if tensorboard is not None:
        all_callbacks.append(tensorboard)
    # The checkpoint comes last: an epoch counts as done only once everything it writes is written,
    # so a run killed in between redoes the epoch rather than miss its grid or logs.
    all_callbacks += list(callbacks) + [checkpoint]

    try:
        # shuffle=False: Keras would reorder the batches with Python's global random state, which no
        # checkpoint holds; a resumed epoch would then differ. The dataset shuffles, reproducibly.
        model.fit(train, validation_data=validation, epochs=epochs, initial_epoch=state["epoch"],
                  shuffle=False, callbacks=all_callbacks, verbose=verbose)
    except KeyboardInterrupt:
        done = checkpoint.state["epoch"]
        saved = f"{done} epoch{'' if done == 1 else 's'} {'is' if done == 1 else 'are'} saved"
        print(f"\ninterrupted: {saved} in {folder}; continue with --RESUME=True", flush=True)
        raise
    finally:
        skipped = {**getattr(train, "skipped", {}), **getattr(validation, "skipped", {})}
        listed = "".join(f"\n  {path}: {problem}" for path, problem in sorted(skipped.items()))
        print(f"{len(skipped)} unreadable file{'' if len(skipped) == 1 else 's'} skipped{':' if skipped else ''}{listed}")
    if stop.found is not None:
        epoch, where, loss = stop.found
        good = checkpoint.state["epoch"]
        kept = f"the last good epoch ({good}) is saved in {folder}" if good else "no good epoch was saved"
        raise TrainingDiverged(f"the loss became {loss} in epoch {epoch + 1}, {where}: training stopped; {kept}. "
                               f"A lower LEARNING_RATE usually helps")
    return Run(history=checkpoint.state["history"], seconds=checkpoint.state["seconds"],
               epochs=checkpoint.state["epoch"])


def check_resume(out_dir, settings=None):
    """Stop with a one-line UserError unless ``out_dir`` holds a run that ``resume=True`` can continue:
    a checkpoint, or the ``checkpoint`` folder of a run stopped before its first epoch was saved.

    With the run's ``settings``, a checkpoint written by another stage (each side has settings the other
    lacks) is refused too. A stage calls it before reading any photo, so that a wrong OUT_DIR costs no time.
    """
    folder = Path(out_dir) / CHECKPOINT
    if not folder.is_dir():
        raise UserError(f"nothing to resume: {out_dir} holds no training run of a stage (no {CHECKPOINT} folder); "
                        f"check --OUT_DIR, or start a new run without --RESUME=True")
    state = _read_state(folder)
    if state is None:
        return
    if not (folder / state["model"]).is_file():
        raise UserError(f"{folder / 'state.json'}: names {state['model']}, which is missing; the checkpoint cannot "
                        f"be resumed: start a new run with --OVERWRITE=True")
    theirs, ours = set(state.get("settings") or {}), set(settings or {})
    stage, our_stage = state.get("stage"), _stage()
    other_stage = stage and our_stage and stage != our_stage  # and not a copy of this stage: other settings too
    if theirs and ours and theirs != ours and (other_stage or (theirs - ours and ours - theirs)):
        which = f"the {stage} stage" if stage else "another stage"
        extra = f"it has settings {', '.join(sorted(theirs - ours))} this one has not" if theirs - ours else \
            f"it lacks settings {', '.join(sorted(ours - theirs))}"
        raise UserError(f"{folder}: a checkpoint of {which} ({extra}); resume it with its own stage, or check --OUT_DIR")


def _stage():
    """The folder of the stage file being run ("beta" for beta/train.py), or None (in a notebook)."""
    path = getattr(sys.modules.get("__main__"), "__file__", None)
    return Path(path).resolve().parent.name if path and not path.endswith("ipykernel_launcher.py") else None


def _read_state(folder):
    """The checkpoint's state.json as a dict, None if there is none, a UserError if it is damaged."""
    path = Path(folder) / "state.json"
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise UserError(f"{path}: unreadable checkpoint state ({error})") from None
    if not isinstance(state, dict) or not isinstance(state.get("model"), str) or not isinstance(state.get("epoch"), int):
        raise UserError(f"{path}: not a checkpoint state written by colorlab.training")
    return state


def save_model(model, path):
    """Save ``model`` as a ``.keras`` file, atomically: a kill mid-save leaves the previous file intact.

    A model trained with mixed precision is saved as its float32 copy (the same weights), so that it
    colours photos at full precision anywhere, a CPU included, where float16 is slow.
    """
    model = float32_copy(model)
    with files.atomic_path(path) as tmp:
        model.save(tmp)


def float32_copy(model):
    """``model`` itself if every layer computes in float32; else a copy whose layers all do, same weights."""
    if all(layer.dtype_policy.compute_dtype == "float32" for layer in _all_layers(model)):
        return model
    config = _float32_policies(keras.saving.serialize_keras_object(model))
    copy = keras.saving.deserialize_keras_object(config)
    copy.set_weights(model.get_weights())
    return copy


def _float32_policies(config):
    """A serialized model with every mixed dtype policy (nested models included) replaced by float32."""
    if isinstance(config, dict):
        if config.get("class_name") == "DTypePolicy" and str(config.get("config", {}).get("name", "")).startswith("mixed"):
            return {**config, "config": {**config["config"], "name": "float32"}}
        return {key: _float32_policies(value) for key, value in config.items()}
    if isinstance(config, list):
        return [_float32_policies(value) for value in config]
    return config


def _all_layers(model):
    layers = getattr(model, "layers", None) or []
    return [model] + [inner for layer in layers for inner in _all_layers(layer)]


class RGBTrainer(keras.Model):
    """Trains ``model`` (``l -> ab``, the stage's network) on batches of 8-bit RGB crops.

    ``colorlab.data.Photos(output="rgb")`` serves uint8 RGB crops, a quarter of the bytes of float32
    ``(l, ab)``. Each training step then splits them into ``l`` (the input) and ``ab`` (the target) with
    ``colorlab.ops``, the ``keras.ops`` version of ``colorlab.lab``, inside the compiled step, on the
    GPU when there is one, instead of in the reading threads on the CPU::

        trainer = training.RGBTrainer(model)
        trainer.compile(optimizer="adam", loss="mse")   # the loss of model(l) against ab
        training.fit(trainer, train, validation, ...)     # batches: uint8 (N, H, W, 3)
        training.save_model(model, "model.keras")         # still l -> ab: colorize works unchanged

    The loss is the one ``model.compile(loss=...)`` would compute on ``(l, ab)`` batches, up to
    float32 rounding. A batch may also be ``(rgb, *more)`` (as a 1-tuple of inputs): the model then gets
    ``[l, *more]``, e.g. the full stage's embedding. With ``color_space="yuv"`` the model gets ``y``
    and is trained to predict ``uv``. The trainer has no weights of its own; its checkpoints hold the
    model's weights and the optimizer state.
    """

    def __init__(self, model, color_space="lab", **kwargs):
        super().__init__(name=kwargs.pop("name", f"{model.name}_on_rgb"), **kwargs)
        self.colouriser = model
        self.color_space = color_space
        self.built = True  # nothing to build: every weight belongs to `model`, which is built

    def call(self, inputs, training=False):
        rgb, more = _rgb_and_more(inputs)
        l = ops.grey(rgb, self.color_space)  # (N, H, W, 1) in [0, 1]
        return self.colouriser([l, *more] if more else l, training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        rgb, _ = _rgb_and_more(x)
        _, ab = ops.split(rgb, self.color_space)  # the target, (N, H, W, 2) in [-1, 1]
        return super().compute_loss(x, ab, y_pred, sample_weight, training=training)


    # Checkpoints: the file of ``model`` itself with this trainer's optimizer (the optimizer's slots
    # belong to ``model``'s weights), laid out exactly as if ``model`` had been compiled and trained
    # alone. So a checkpoint loads into ``model``, into a trainer around it, or into either's copy.
    def save_weights(self, filepath, *args, **kwargs):
        with self._optimizer_lent():
            return self.colouriser.save_weights(filepath, *args, **kwargs)

    def load_weights(self, filepath, *args, **kwargs):
        with self._optimizer_lent():
            return self.colouriser.load_weights(filepath, *args, **kwargs)

    @contextlib.contextmanager
    def _optimizer_lent(self):
        before = getattr(self.colouriser, "optimizer", None)
        self.colouriser.optimizer = self.optimizer
        try:
            yield
        finally:
            self.colouriser.optimizer = before


def split_rgb(data, color_space="lab"):
    """For a custom ``train_step``: a batch of uint8 RGB crops (as ``fit`` passes it) -> ``(l, ab)``
    (or ``(y, uv)``), computed with ``colorlab.ops`` inside the compiled step. A batch that is already
    ``(l, ab)`` is returned as it is."""
    x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
    if y is not None:
        return x, y
    return ops.split(x, color_space)


def _rgb_and_more(inputs):
    if isinstance(inputs, (tuple, list)):
        return inputs[0], list(inputs[1:])
    return inputs, []


def colouriser(model):
    """The ``l -> ab`` model inside ``model`` (an :class:`RGBTrainer`), or ``model`` itself."""
    return getattr(model, "colouriser", model)


class Checkpoint(keras.callbacks.Callback):
    """After each epoch, save everything needed to resume into ``folder``, atomically.

    ``folder/epoch-0007.weights.h5`` holds the weights and the optimizer's state (of every optimizer the
    model holds, so a GAN's two are saved too); ``folder/state.json`` holds the epoch number, the loss
    history, the training seconds and the settings, and names that file. The state is written after the
    weights and replaces the previous one in a single rename, so whenever the process dies it names a
    complete file. The state also holds the model's random-number generator states (see
    :func:`random_states`). Weights rather than a whole ``.keras`` model: any model can be checkpointed, even
    one whose configuration cannot be saved, since the stage rebuilds the model before resuming. An epoch whose loss is NaN or infinite is not
    saved, so the checkpoint always holds the last good epoch.

    With ``keep_best`` (a logged metric, such as "val_loss"), an epoch that lowers it also writes
    ``folder/best.weights.h5``, before the state that records it as ``best_epoch``.
    """

    def __init__(self, folder, state=None, settings=None, keep_best=None):
        super().__init__()
        self.folder = Path(folder)
        self.state = {"epoch": 0, "history": {}, "seconds": 0.0, **(state or {})}
        self.settings = settings
        self.keep_best = keep_best
        self._start = self._seconds_before = None

    def on_train_begin(self, logs=None):
        self.folder.mkdir(parents=True, exist_ok=True)
        for stray in self.folder.glob(".*.tmp-*"):  # left by a process killed mid-save
            stray.unlink(missing_ok=True)
        self._start, self._seconds_before = time.perf_counter(), self.state["seconds"]

    def on_epoch_end(self, epoch, logs=None):
        logs = {name: float(value) for name, value in (logs or {}).items()}
        if not all(math.isfinite(value) for value in logs.values()):
            return
        history = {name: list(values) for name, values in self.state["history"].items()}
        for name, value in logs.items():
            history.setdefault(name, []).append(value)
        model_file = f"epoch-{epoch + 1:04d}.weights.h5"
        try:
            with files.atomic_path(self.folder / model_file) as tmp:
                self.model.save_weights(tmp)
            best_epoch = self.state.get("best_epoch")
            if self.keep_best in logs and logs[self.keep_best] <= min(history[self.keep_best]):
                with files.atomic_path(self.folder / BEST) as tmp:
                    shutil.copyfile(self.folder / model_file, tmp)
                best_epoch = epoch + 1
            state = {"epoch": epoch + 1, "model": model_file, "best_epoch": best_epoch, "history": history,
                     "settings": self.settings,
                     "seconds": self._seconds_before + time.perf_counter() - self._start,
                     "random_states": [np.asarray(v.numpy()).tolist() for v in random_states(self.model)],
                     "stage": _stage()}
            files.write_json(self.folder / "state.json", state)  # the commit: from now on, resume uses this epoch
        except files.WriteError as error:  # a full disk: say what is kept, in one line
            done = self.state["epoch"]
            kept = (f"the checkpoint of epoch {done} is intact: free some space, then continue with --RESUME=True"
                    if done else "no epoch was saved yet")
            raise files.WriteError(self.folder, error.reason, f"epoch {epoch + 1} was not saved; {kept}") from None
        self.state = state
        for old in self.folder.glob("epoch-*.weights.h5"):
            if old.name != model_file:
                old.unlink(missing_ok=True)


def load_checkpoint(model, folder):
    """Load the checkpoint in ``folder`` into ``model`` (weights and optimizer state); return its state
    dict (``epoch``, ``history``, ``seconds``, ``settings``), or None if there is no checkpoint."""
    folder = Path(folder)
    state = _read_state(folder)
    if state is None:
        return None
    path = folder / state["model"]
    if model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)  # so that its saved state has somewhere to go
    rates = _learning_rates(model)
    try:
        model.load_weights(path)
    except (OSError, ValueError) as error:
        problem = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"{path}: cannot load this checkpoint into the model ({problem}); was it written by "
                        f"another stage, or with other settings?") from None
    for optimizer, rate in rates:  # the weights file holds the rate of the run that wrote it: the setting wins
        optimizer.learning_rate = rate
    saved = state.get("random_states") or []
    variables = random_states(model)
    if len(saved) == len(variables):
        for variable, value in zip(variables, saved):
            variable.assign(np.asarray(value, dtype=variable.dtype))
    return state


def _learning_rates(model):
    """``(optimizer, learning rate)`` of every optimizer the model holds with a plain (not scheduled) rate."""
    found = [getattr(model, "optimizer", None)] + [value for value in vars(model).values()
                                                   if isinstance(value, keras.optimizers.Optimizer)]
    found += [inner for optimizer in found for inner in getattr(optimizer, "optimizers", [])]  # a GAN's, wrapped
    rates, seen = [], set()
    for optimizer in found:
        if optimizer is None or id(optimizer) in seen:
            continue
        seen.add(id(optimizer))
        if not isinstance(getattr(optimizer, "_learning_rate", None), keras.optimizers.schedules.LearningRateSchedule):
            rates.append((optimizer, float(keras.ops.convert_to_numpy(optimizer.learning_rate))))
    return rates


def restore_best(model, out_dir):
    """Load the weights of the best epoch kept by ``fit(..., keep_best=...)`` into ``model``; return
    that epoch's number. (The optimizer's state comes back too; it does not matter for predicting.)"""
    folder = Path(out_dir) / CHECKPOINT
    try:
        epoch = json.loads((folder / "state.json").read_text(encoding="utf-8")).get("best_epoch")
    except (OSError, ValueError) as error:
        raise UserError(f"{folder / 'state.json'}: cannot find the best epoch ({error})") from None
    if epoch is None or not (folder / BEST).exists():
        raise UserError(f"{folder}: no best epoch was kept; train with keep_best='val_loss'")
    model.load_weights(folder / BEST)
    return epoch


def random_states(model):
    """The model's variables that ``save_weights`` leaves out: the states of its random-number
    generators (dropout's). The checkpoint keeps them, so that a resumed run draws the same random
    numbers (the same dropout masks) as an uninterrupted one."""
    saved = {id(v) for v in model.weights}
    return [v for v in model.non_trainable_variables if id(v) not in saved]


class ResultGrid(keras.callbacks.Callback):
    """After each epoch, colour a few fixed photos and save ``folder/epoch-0001.png``, ...: one row per
    photo, grey input | colourised | original.

    Args:
        folder: where the grids go.
        names, rgbs: the photos, as RGB arrays in [0, 1] of any size (whole photos show best what the
            model does; use photos it never trains on).
        predict: ``predict(model, l) -> ab`` for one batch ``l`` of shape (1, H, W, 1); the default
            calls the model on ``l``. A model with other inputs passes its own.
        multiple: the photos are padded so that their sides divide by it (8 for three stride-2 layers),
            and the padding is cropped off the prediction.
        color_space: the one the model works in (see :func:`colourise`).
    """

    def __init__(self, folder, names, rgbs, predict=None, multiple=8, color_space="lab"):
        super().__init__()
        self.folder = Path(folder)
        self.names, self.rgbs = list(names), list(rgbs)
        self.predict, self.multiple, self.color_space = predict, multiple, color_space

    def on_epoch_end(self, epoch, logs=None):
        if not all(math.isfinite(float(value)) for value in (logs or {}).values()):
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        colourised = colourise(colouriser(self.model), self.rgbs, self.predict, self.multiple, self.color_space)
        greys = [lab.grey(rgb) for rgb in self.rgbs]
        plots.save_grid(self.folder / f"epoch-{epoch + 1:04d}.png", greys, colourised, self.rgbs, self.names)


def colourise(model, rgbs, predict=None, multiple=8, color_space="lab"):
    """Colour each photo in ``rgbs`` (RGB, any size) from its lightness alone; return the RGB results.

    ``color_space`` is the one the model was trained in: a "lab" model takes l and returns ab, a "yuv"
    model takes luma y and returns uv (see ``colorlab.lab.split``)."""
    results = []
    for rgb in rgbs:
        l, _ = lab.split(rgb, color_space)
        x = images.pad_to_multiple(l, multiple)[None]  # (1, H8, W8, 1)
        ab = predict(model, x) if predict else model(x, training=False)
        ab = keras.ops.convert_to_numpy(ab)[0, : l.shape[0], : l.shape[1]]
        results.append(lab.join(l, ab, color_space))
    return results


class StopOnNaN(keras.callbacks.Callback):
    """Stop training at the first batch whose loss is NaN or infinite, or after the first epoch whose
    validation loss is; ``found`` says where: ``(epoch, "batch 3" or "on the validation data", loss)``.

    The loss is the ``loss`` log, or, for a model that logs no ``loss``, every value it logs.

    Unlike ``keras.callbacks.TerminateOnNaN`` it lets :func:`fit` say, after training, what happened and
    which epoch the checkpoint holds.
    """

    def __init__(self):
        super().__init__()
        self.found = None
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        # A model with several losses and no "loss" (a GAN's d_loss, g_l1, ...) is checked on all its logs.
        for value in [logs["loss"]] if "loss" in logs else logs.values():
            self._check(value, f"batch {batch + 1}")

    def on_epoch_end(self, epoch, logs=None):
        for name, value in (logs or {}).items():
            self._check(value, "on the validation data" if name.startswith("val_") else name)

    def _check(self, loss, where):
        if loss is not None and not np.isfinite(float(loss)) and self.found is None:
            self.found = (self.epoch, where, float(loss))
            self.model.stop_training = True


def tensorboard_callback(log_dir):
    """``keras.callbacks.TensorBoard`` writing to ``log_dir``; None, with a one-line note, if the
    ``tensorboard`` and ``tensorflow`` packages it writes with (whatever the Keras backend) are missing."""
    missing = [name for name in ("tensorflow", "tensorboard") if importlib.util.find_spec(name) is None]
    if missing:
        print(f"note: no TensorBoard logs, as {' and '.join(missing)} is not installed (pip install {' '.join(missing)})")
        return None
    return keras.callbacks.TensorBoard(log_dir=str(log_dir))


def _report_changes(before, now):
    changed = [f"{name} {before[name]!r} -> {now[name]!r}" for name in now
               if name in before and before[name] != now[name] and name not in ("EPOCHS", "RESUME", "OVERWRITE")]
    if changed:
        print(f"note: settings changed since the checkpoint was written: {', '.join(changed)}")


class PrintEvery(keras.callbacks.Callback):
    """Print one line every ``every`` epochs (and at the last), instead of one progress bar per epoch."""

    def __init__(self, every, epochs):
        super().__init__()
        self.every = max(1, every)
        self.epochs = epochs
        self.start = None

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        done = epoch + 1
        if done % self.every == 0 or done == self.epochs:
            values = "  ".join(f"{name} {value:.5f}" for name, value in (logs or {}).items())
            print(f"epoch {done:>5}/{self.epochs}  {values}  ({time.perf_counter() - self.start:.0f} s)", flush=True)
