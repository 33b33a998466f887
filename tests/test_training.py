"""colorlab.training, around a plain model.fit with Keras's own callbacks: the history CSVLogger keeps across
resumed runs, the one-line stops (Ctrl-C, NaN), the per-epoch result grid and the final save."""

import errno
from pathlib import Path

import keras
import numpy as np
import pytest

from colorlab import UserError, coloring, files, images, plots, training

SAMPLES = Path(__file__).resolve().parent.parent / "data" / "samples"


def tiny_model(seed=0, learning_rate=0.01):
    """Two layers, l -> ab: enough to test the plumbing in seconds."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input(shape=(None, None, 1)),
        keras.layers.Conv2D(4, 3, activation="relu", padding="same"),
        keras.layers.Conv2D(2, 3, activation="tanh", padding="same"),
    ])
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="mse", run_eagerly=True)  # no tracing
    return model


class Pairs(keras.utils.PyDataset):
    """Two batches of (l, ab) per epoch; the targets turn to NaN from epoch ``bad`` (0-based) on."""

    def __init__(self, bad=None):
        super().__init__()
        self.bad, self.epoch = bad, -1  # -1: the batches Keras reads before training, to learn their shapes

    def __len__(self):
        return 2

    def on_epoch_begin(self):
        self.epoch += 1

    def __getitem__(self, index):
        rng = np.random.default_rng([self.epoch + 1, index])
        l = rng.random((2, 8, 8, 1), dtype=np.float32)
        ab = np.concatenate([l - 0.5, 0.5 - l], axis=-1) * 0.5  # a color that follows the lightness
        if self.bad is not None and self.epoch >= self.bad:
            ab[:] = np.nan
        return l, ab


class Interrupt(keras.callbacks.Callback):
    """Press Ctrl-C as epoch ``at`` (0-based) begins."""

    def __init__(self, at):
        super().__init__()
        self.at = at

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.at:
            raise KeyboardInterrupt


def backup_callback(folder):
    return keras.callbacks.BackupAndRestore(folder, double_checkpoint=True, delete_checkpoint=False)


# ----------------------------------------------------------------------------------------------------
# history and lowest


def test_history_reads_csvlogger_across_a_resume_and_counts_an_epoch_logged_twice_once(tmp_path):
    path = tmp_path / "history.csv"
    first = tiny_model().fit(Pairs(), validation_data=Pairs(), epochs=2, verbose=0,
                             callbacks=[keras.callbacks.CSVLogger(path, append=True)])
    # A run killed after logging epoch 2 but before its backup: the resumed run does epoch 2 again.
    second = tiny_model(seed=1).fit(Pairs(), validation_data=Pairs(), initial_epoch=1, epochs=3, verbose=0,
                                    callbacks=[keras.callbacks.CSVLogger(path, append=True)])
    assert [line.split(",")[0] for line in path.read_text().splitlines()] == ["epoch", "0", "1", "1", "2"]
    history = training.history(path)
    for name in ("loss", "val_loss"):
        np.testing.assert_allclose(history[name], [first.history[name][0], *second.history[name]], rtol=1e-6)
    assert training.lowest(path, "val_loss") == pytest.approx(min(history["val_loss"]))


def test_history_has_one_list_per_logged_value_and_no_epoch_column(tmp_path):
    (tmp_path / "history.csv").write_text("epoch,loss,val_loss\n0,0.5,0.4\n")
    assert training.history(tmp_path / "history.csv") == {"loss": [0.5], "val_loss": [0.4]}


def test_history_and_lowest_of_missing_odd_or_nan_logs(tmp_path):
    assert training.history(tmp_path / "missing.csv") == {}
    assert training.lowest(tmp_path / "missing.csv", "val_loss") is None
    path = tmp_path / "history.csv"
    path.write_text("epoch,loss,val_loss\n0,0.5,nan\n1,0.4,\nnot a number,1,1\n2,0.3,0.2\n")
    history = training.history(path)
    assert history["loss"] == [0.5, 0.4, 0.3]
    assert np.isnan(history["val_loss"][:2]).all() and history["val_loss"][2] == 0.2
    assert training.lowest(path, "val_loss") == 0.2 and training.lowest(path, "accuracy") is None


# ----------------------------------------------------------------------------------------------------
# stops: Ctrl-C and a NaN loss end in one line that says what is saved


@pytest.mark.parametrize("at, saved", [(2, "2 epochs are saved in {backup}; continue with --RESUME=True"),
                                       (1, "1 epoch is saved in {backup}; continue with --RESUME=True"),
                                       (0, "0 epochs are saved in {backup}")])
def test_ctrl_c_is_one_line_that_says_what_is_saved_and_exit_status_130(tmp_path, capsys, at, saved):
    backup = tmp_path / "backup"
    with pytest.raises(SystemExit) as caught:
        with training.stops(backup):
            tiny_model().fit(Pairs(), epochs=4, verbose=0, callbacks=[backup_callback(backup), Interrupt(at)])
    assert caught.value.code == 130
    assert capsys.readouterr().out == "\ninterrupted: " + saved.format(backup=backup) + "\n"
    assert training.saved_epochs(backup) == at


def test_ctrl_c_without_a_backup(capsys):
    with pytest.raises(SystemExit):
        with training.stops():
            raise KeyboardInterrupt
    assert capsys.readouterr().out == "\ninterrupted: nothing was saved\n"


def test_a_nan_loss_is_one_line_that_names_the_last_good_epoch_whose_backup_is_intact(tmp_path):
    backup = tmp_path / "backup"
    model = tiny_model()
    with pytest.raises(training.TrainingDiverged) as caught:
        with training.stops(backup):
            model.fit(Pairs(bad=2), epochs=5, verbose=0,
                      callbacks=[backup_callback(backup), keras.callbacks.TerminateOnNaN(raise_error=True)])
    assert str(caught.value) == (f"the loss became NaN or infinite in epoch 3: training stopped; the last "
                                 f"good epoch (2) is saved in {backup}. A lower LEARNING_RATE usually helps")
    assert isinstance(caught.value, UserError)
    assert not all(np.isfinite(w).all() for w in model.get_weights())  # the model itself was ruined
    restored = tiny_model(seed=3)
    restored.fit(Pairs(), epochs=2, verbose=0, callbacks=[backup_callback(backup)])  # 2 are saved: none to do
    assert all(np.isfinite(w).all() for w in restored.get_weights())
    assert int(restored.optimizer.iterations) == 4  # the backup's two epochs of two batches


def test_a_nan_loss_without_a_backup_and_other_errors(tmp_path):
    stop = keras.callbacks.TerminateOnNaN(raise_error=True)
    expected = r"^the loss became NaN or infinite: training stopped; no good epoch was saved\. A lower "
    with pytest.raises(training.TrainingDiverged, match=expected + r"LEARNING_RATE usually helps$"):
        with training.stops():
            tiny_model().fit(Pairs(bad=0), epochs=2, verbose=0, callbacks=[stop])
    with pytest.raises(RuntimeError, match="^something else$"):
        with training.stops(tmp_path):
            raise RuntimeError("something else")


def test_a_full_disk_during_a_backup_is_one_line_and_keeps_the_previous_backup(tmp_path, monkeypatch):
    backup = tmp_path / "backup"
    real = keras.Model.save_weights
    calls = [0]

    def save_weights(self, filepath, *args, **kwargs):
        calls[0] += 1
        if calls[0] == 3:  # the backup of epoch 3
            Path(filepath).write_bytes(b"half a file")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, filepath, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "save_weights", save_weights)
    with pytest.raises(UserError) as caught:
        with training.stops(backup):
            tiny_model().fit(Pairs(), epochs=4, verbose=0, callbacks=[backup_callback(backup)])
    assert "No space left on device" in str(caught.value) and "\n" not in str(caught.value)
    assert training.saved_epochs(backup) == 2


@pytest.mark.filterwarnings("ignore:Skipping variable loading for optimizer")
def test_a_backup_of_another_network_is_refused_in_one_line(tmp_path):
    backup = tmp_path / "backup"
    tiny_model().fit(Pairs(), epochs=1, verbose=0, callbacks=[backup_callback(backup)])
    keras.utils.set_random_seed(0)
    other = keras.Sequential([keras.Input((None, None, 1)), keras.layers.Conv2D(2, 5, padding="same")])
    other.compile(optimizer="adam", loss="mse")
    with pytest.raises(UserError) as caught:
        with training.stops(backup):
            other.fit(Pairs(), epochs=2, verbose=0, callbacks=[backup_callback(backup)])
    assert "\n" not in str(caught.value) and str(backup) in str(caught.value)


def test_saved_epochs_trusts_only_what_keras_wrote(tmp_path):
    assert training.saved_epochs(tmp_path) == 0 and training.saved_epochs(None) == 0
    for text, epochs in (('{"epoch": 3, "batch": 0}', 3), ('{"epoch": "3"}', 0), ('{"epoch": true}', 0),
                         ("[3]", 0), ("garbage", 0), ('{"epoch": -2}', 0), ("x" * 10_000, 0)):
        (tmp_path / "training_metadata.json").write_text(text)
        assert training.saved_epochs(tmp_path) == epochs, text


# ----------------------------------------------------------------------------------------------------
# ResultGrid, TensorBoard


def test_result_grid_saves_one_picture_per_epoch_numbered_across_a_resume(tmp_path):
    names = ["chelsea.jpg"]
    rgbs = [images.load(SAMPLES / name, 20) for name in names]  # 20x13: not a multiple of 8
    model = tiny_model()
    grid = training.ResultGrid(tmp_path / "grids", names, rgbs)
    model.fit(Pairs(), epochs=2, verbose=0, callbacks=[grid])
    model.fit(Pairs(), initial_epoch=2, epochs=3, verbose=0, callbacks=[grid])
    grids = sorted(p.name for p in (tmp_path / "grids").iterdir())
    assert grids == ["epoch-0001.png", "epoch-0002.png", "epoch-0003.png"]
    picture = images.load(tmp_path / "grids" / "epoch-0003.png")
    assert picture.shape[1] > 1.5 * picture.shape[0] and picture.std() > 0.05  # a row of 3 pictures


def test_result_grid_colors_with_the_model_it_is_given(tmp_path, monkeypatch):
    used = []
    monkeypatch.setattr(coloring, "colorize", lambda model, rgbs, **kw: used.append((model, kw)) or rgbs)
    generator = tiny_model(seed=2)
    photo = np.full((8, 8, 3), 0.5, np.float32)
    grid = training.ResultGrid(tmp_path, ["x"], [photo], model=generator, multiple=4, color_space="yuv")
    tiny_model().fit(Pairs(), epochs=1, verbose=0, callbacks=[grid])
    assert used == [(generator, {"multiple": 4, "color_space": "yuv"})]


def test_in_jupyter_the_grids_of_the_first_last_and_every_fifth_epoch_show_as_training_goes(tmp_path,
                                                                                             monkeypatch):
    shown = []
    monkeypatch.setattr(coloring, "colorize", lambda model, rgbs, **kw: rgbs)
    monkeypatch.setattr(plots, "save_columns", lambda path, columns, names, show: shown.append(show))
    grid = training.ResultGrid(tmp_path, ["x"], [np.full((8, 8, 3), 0.5, np.float32)])
    tiny_model().fit(Pairs(), epochs=12, verbose=0, callbacks=[grid])
    assert [epoch for epoch, show in enumerate(shown, start=1) if show] == [1, 5, 10, 12]


def test_what_tensorboard_writes_is_owned_so_overwrite_may_replace_it(tmp_path):
    board = keras.callbacks.TensorBoard(tmp_path / "logs")  # as the stages use it
    tiny_model().fit(Pairs(), validation_data=Pairs(), epochs=1, verbose=0, callbacks=[board])
    logs = [p.relative_to(tmp_path).as_posix() for p in (tmp_path / "logs").rglob("*") if p.is_file()]
    assert len([name for name in logs if name.startswith("logs/train/events.out.tfevents.")]) == 1
    assert all(files.owned(name) for name in logs), logs


# ----------------------------------------------------------------------------------------------------
# save_model


def test_save_model_round_trips_and_leaves_no_temporary(tmp_path):
    model = tiny_model()
    model.fit(Pairs(), epochs=1, verbose=0)
    training.save_model(model, tmp_path / "model.keras")
    assert [p.name for p in tmp_path.iterdir()] == ["model.keras"]
    x = np.random.default_rng(0).random((1, 8, 16, 1), dtype=np.float32)
    np.testing.assert_allclose(keras.saving.load_model(tmp_path / "model.keras").predict(x, verbose=0),
                               model.predict(x, verbose=0), atol=1e-6)


def test_a_full_disk_during_the_final_save_keeps_the_previous_model_and_is_one_line(tmp_path, monkeypatch):
    first = tiny_model(seed=1)
    training.save_model(first, tmp_path / "model.keras")

    def full(self, path, *args, **kwargs):
        Path(path).write_bytes(b"half a model")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(keras.Model, "save", full)
    with pytest.raises(files.WriteError) as caught:
        training.save_model(tiny_model(seed=2), tmp_path / "model.keras")
    assert str(caught.value) == (f"{tmp_path / 'model.keras'}: cannot write it (No space left on device); "
                                 f"the previous version is intact; free some disk space, or choose a folder "
                                 f"on another disk")
    assert [p.name for p in tmp_path.iterdir()] == ["model.keras"]
    monkeypatch.undo()
    kept = keras.saving.load_model(tmp_path / "model.keras", compile=False)
    for a, b in zip(kept.get_weights(), first.get_weights()):
        np.testing.assert_array_equal(a, b)
