"""The shared training comforts: checkpoints, resume after an interruption, the NaN stop, result grids."""

import importlib.util
import json
from pathlib import Path

import keras
import numpy as np
import pytest

from colorlab import UserError, data, training

SAMPLES = Path(__file__).resolve().parent.parent / "data" / "samples"


def tiny_model(seed):
    """A two-layer l -> ab network: enough to test the plumbing in seconds."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input(shape=(None, None, 1)),
        keras.layers.Conv2D(4, 3, activation="relu", padding="same"),
        keras.layers.Conv2D(2, 3, activation="tanh", padding="same"),
    ])
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    return model


def datasets():
    return data.from_folder(SAMPLES, image_size=16, batch_size=4, steps=3, validation_fraction=0.25,
                            zoom=1.5, seed=3, workers=2, verbose=False)


class Interrupt(keras.callbacks.Callback):
    """Press Ctrl-C as epoch ``at`` (0-based) begins."""

    def __init__(self, at):
        super().__init__()
        self.at = at

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.at:
            raise KeyboardInterrupt


def test_resume_after_an_interruption_ends_where_an_uninterrupted_run_ends(tmp_path, capsys):
    train, validation = datasets()
    names, rgbs = validation.examples(2)
    whole = tiny_model(seed=1)
    run = training.fit(whole, train, validation, epochs=4, out_dir=tmp_path / "whole", examples=(names, rgbs),
                       verbose=0)
    assert run.epochs == 4 and len(run.history["loss"]) == len(run.history["val_loss"]) == 4
    assert sorted(p.name for p in (tmp_path / "whole" / "grids").iterdir()) == [f"epoch-000{i}.png" for i in range(1, 5)]
    if importlib.util.find_spec("tensorboard"):
        assert list((tmp_path / "whole" / "logs" / "train").iterdir())

    train, validation = datasets()
    interrupted = tiny_model(seed=1)
    with pytest.raises(KeyboardInterrupt):
        training.fit(interrupted, train, validation, epochs=4, out_dir=tmp_path / "split", callbacks=[Interrupt(2)],
                     verbose=0)
    assert "interrupted: 2 epochs are saved" in capsys.readouterr().out
    state = json.loads((tmp_path / "split" / "checkpoint" / "state.json").read_text())
    assert state["epoch"] == 2 and len(state["history"]["loss"]) == 2

    train, validation = datasets()
    resumed = tiny_model(seed=2)  # other starting weights: the checkpoint must replace them, optimizer too
    run2 = training.fit(resumed, train, validation, epochs=4, out_dir=tmp_path / "split", resume=True, verbose=0)
    assert "resuming after epoch 2 of 4" in capsys.readouterr().out
    assert run2.epochs == 4
    np.testing.assert_allclose(run2.history["loss"], run.history["loss"], rtol=1e-4)
    np.testing.assert_allclose(run2.history["val_loss"], run.history["val_loss"], rtol=1e-4)
    for a, b in zip(resumed.get_weights(), whole.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    assert sorted(p.name for p in (tmp_path / "split" / "checkpoint").iterdir()) == ["epoch-0004.weights.h5", "state.json"]


def test_resume_needs_a_checkpoint_and_a_new_run_ignores_an_old_one(tmp_path):
    train, validation = datasets()
    with pytest.raises(UserError, match="nothing to resume"):
        training.fit(tiny_model(0), train, validation, epochs=1, out_dir=tmp_path, resume=True, verbose=0)
    training.fit(tiny_model(0), train, validation, epochs=2, out_dir=tmp_path, verbose=0)
    run = training.fit(tiny_model(0), train, validation, epochs=1, out_dir=tmp_path, verbose=0)
    assert run.epochs == 1 and len(run.history["loss"]) == 1  # started afresh, not from epoch 2


class NaNFromEpoch(keras.utils.PyDataset):
    """Batches whose targets turn to NaN from epoch ``bad`` (0-based) on."""

    def __init__(self, bad):
        super().__init__()
        self.bad, self.epoch = bad, 0

    def __len__(self):
        return 2

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __getitem__(self, index):
        l = np.full((2, 8, 8, 1), 0.5, np.float32)
        ab = np.full((2, 8, 8, 2), np.nan if self.epoch >= self.bad else 0.2, np.float32)
        return l, ab


def test_a_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path):
    model = tiny_model(0)
    with pytest.raises(training.TrainingDiverged, match=r"loss became nan in epoch 3, batch 1: .*last good epoch \(2\)") as error:
        training.fit(model, NaNFromEpoch(bad=2), epochs=5, out_dir=tmp_path, verbose=0)
    assert "\n" not in str(error.value)
    state = json.loads((tmp_path / "checkpoint" / "state.json").read_text())
    assert state["epoch"] == 2 and np.isfinite(state["history"]["loss"]).all()
    restored = tiny_model(1)
    training.load_checkpoint(restored, tmp_path / "checkpoint")
    assert all(np.isfinite(w).all() for w in restored.get_weights())
    assert not np.isfinite(model.get_weights()[0]).all()  # the model itself was ruined: the checkpoint was not


def test_a_nan_validation_loss_stops_training_too(tmp_path):
    with pytest.raises(training.TrainingDiverged, match="in epoch 1, on the validation data: .*no good epoch"):
        training.fit(tiny_model(0), NaNFromEpoch(bad=5), NaNFromEpoch(bad=0), epochs=3, out_dir=tmp_path, verbose=0)
    assert not (tmp_path / "checkpoint" / "state.json").exists()


def test_save_model_is_atomic(tmp_path):
    model = tiny_model(0)
    training.save_model(model, tmp_path / "model.keras")
    assert [p.name for p in tmp_path.iterdir()] == ["model.keras"]  # no temporary file left behind
    x = np.random.default_rng(0).random((1, 8, 8, 1), dtype=np.float32)
    np.testing.assert_allclose(keras.saving.load_model(tmp_path / "model.keras").predict(x, verbose=0),
                               model.predict(x, verbose=0), atol=1e-6)


def test_keep_best_keeps_the_epoch_with_the_lowest_validation_loss(tmp_path):
    model = keras.Sequential([keras.Input((None, None, 1)), keras.layers.Conv2D(2, 1)])
    checkpoint = training.Checkpoint(tmp_path / training.CHECKPOINT, keep_best="val_loss")
    checkpoint.set_model(model)
    checkpoint.on_train_begin()
    for epoch, val_loss in enumerate([0.5, 0.3, 0.4, 0.35]):
        for variable in model.weights:
            variable.assign(np.full(variable.shape, float(epoch + 1), dtype="float32"))  # weights = epoch number
        checkpoint.on_epoch_end(epoch, {"loss": 0.1, "val_loss": val_loss})
    assert checkpoint.state["best_epoch"] == 2 and checkpoint.state["epoch"] == 4
    assert training.restore_best(model, tmp_path) == 2
    assert all(np.all(keras.ops.convert_to_numpy(v) == 2.0) for v in model.weights)  # epoch 2's, not the last


def test_restore_best_without_a_kept_epoch_is_a_clear_error(tmp_path):
    model = keras.Sequential([keras.Input((None, None, 1)), keras.layers.Conv2D(2, 1)])
    checkpoint = training.Checkpoint(tmp_path / training.CHECKPOINT)  # keep_best not asked for
    checkpoint.set_model(model)
    checkpoint.on_train_begin()
    checkpoint.on_epoch_end(0, {"loss": 0.1, "val_loss": 0.2})
    with pytest.raises(training.UserError, match="no best epoch was kept"):
        training.restore_best(model, tmp_path)
