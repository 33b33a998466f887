"""The beta stage, run as a learner runs it (in this process, to save the start-up), with tiny settings: the
files it writes and what they hold, the best epoch kept, and what it learned. (Killed and resumed:
test_interrupted.py. Bad settings: test_bad_input.py. The notebook: test_notebooks.py.)"""

import contextlib
import io
import json
import random
import shutil

import keras
import numpy as np
import pytest

from colorlab import data, files, images, training
from conftest import ROOT, run_stage

SAMPLES = ROOT / "data" / "samples"
# A high rate on purpose: the validation loss goes up at the last epoch, so the best epoch is not the last.
TINY = ["--IMAGE_SIZE=16", "--BATCH_SIZE=8", "--STEPS_PER_EPOCH=4", "--EPOCHS=3", "--LEARNING_RATE=0.01"]


@pytest.fixture(scope="module")
def beta_run(tmp_path_factory):
    """A run on the sample photos plus a file that is not a photo, with its OUT_DIR inside DATA:
    ``(photos, out, the stage's globals, what it printed)``."""
    photos = tmp_path_factory.mktemp("beta") / "photos"
    shutil.copytree(SAMPLES, photos)
    (photos / "broken.jpg").write_text("not a photo")
    out = photos / "out"
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as monkeypatch, contextlib.redirect_stdout(printed):
        stage = run_stage(monkeypatch, "beta/train.py", *TINY, f"--DATA={photos}", f"--OUT_DIR={out}")
    return photos, out, stage, printed.getvalue()


@pytest.fixture(scope="module")
def saved(beta_run):
    """The model the run saved, loaded once."""
    return keras.saving.load_model(beta_run[1] / "model.keras")


def test_beta_writes_its_files_and_prints_its_pairs(beta_run):
    photos, out, _, stdout = beta_run
    names = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    for name in ("batch.png", "result.png", "loss.png", "model.keras", "best.weights.h5", "history.csv",
                 "metrics.json", "settings.json", files.MARK, "backup/latest.weights.h5",
                 "backup/training_metadata.json"):
        assert name in names, name
    assert [n for n in names if n.startswith("grids/")] == ["grids/epoch-0001.png", "grids/epoch-0002.png",
                                                            "grids/epoch-0003.png"]
    assert all(files.owned(name) for name in names) and not [n for n in names if "colorlab-tmp" in n], names
    for name in ("batch.png", "result.png", "loss.png", "grids/epoch-0003.png"):
        assert images.load(out / name).std() > 0.05, name
    assert "a batch: l (8, 16, 16, 1) in [0." in stdout and "ab (8, 16, 16, 2) in [-" in stdout
    assert f"skipped {photos / 'broken.jpg'}: not an image" in stdout
    settings = json.loads((out / "settings.json").read_text())
    assert settings["IMAGE_SIZE"] == 16 and settings["DATA"] == str(photos)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs"] == 3 and metrics["skipped_files"] == 1
    assert metrics["train_photos"] + metrics["validation_photos"] == 8  # 7 samples and the broken file


def test_its_own_out_dir_inside_data_is_never_trained_on(beta_run):
    photos, out, stage, _ = beta_run
    used = stage["train"].paths + stage["validation"].paths
    assert len(used) == 8 and not [p for p in used if str(out) in p]
    # Its pictures are there now: a second run leaves them out too (run to the training: test_bad_input.py).
    assert list(out.rglob("*.png"))
    train, validation = data.from_folder(photos, 16, 8, 4, 0.25, exclude=out, verbose=False)
    assert sorted(train.paths + validation.paths) == sorted(used)


def test_the_saved_model_is_the_best_epoch_s_and_predicts_its_validation_loss(beta_run, saved):
    photos, out, stage, _ = beta_run
    metrics = json.loads((out / "metrics.json").read_text())
    history = training.history(out / "history.csv")
    assert metrics["best_val_loss"] == min(history["val_loss"])
    assert metrics["val_loss"] == history["val_loss"][-1]
    assert metrics["best_epoch"] < metrics["epochs"], "calibration: the best epoch is not the last here"
    model = saved
    validation = stage["validation"]
    assert len(validation) == 1
    l, ab = validation[0]
    val_loss = float(np.mean((model.predict(l, verbose=0) - ab) ** 2))
    assert val_loss == pytest.approx(metrics["best_val_loss"], rel=1e-4)
    assert val_loss != pytest.approx(metrics["val_loss"], rel=1e-3)  # not the last epoch's
    assert metrics["grey_val_loss"] == pytest.approx(float(np.mean(ab.astype(np.float64) ** 2)), rel=1e-5)
    # The same weights as best.weights.h5, not as the backup of the last epoch.
    best = keras.models.clone_model(model)
    best.load_weights(out / "best.weights.h5")
    for a, b in zip(model.get_weights(), best.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_beta_learned_to_color_its_training_photos(beta_run, saved):
    _, out, stage, _ = beta_run
    model = saved
    l, ab = data.Photos(stage["train"].paths, 16, 64, random=False)[0]
    loss, grey = float(np.mean((model.predict(l, verbose=0) - ab) ** 2)), float(np.mean(ab**2))
    keras.utils.set_random_seed(0)
    untrained = keras.models.clone_model(model)  # the same network, fresh weights
    untrained_loss = float(np.mean((untrained.predict(l, verbose=0) - ab) ** 2))
    # Calibrated: the run gives about 0.85x grey; an untrained network 1.0x.
    assert loss < 0.95 * grey < untrained_loss, (loss, grey, untrained_loss)
    # It colors any size that divides by 8, at full resolution.
    assert model.predict(np.zeros((1, 40, 24, 1), np.float32), verbose=0).shape == (1, 40, 24, 2)


def test_a_resumed_run_trains_on_the_crops_the_uninterrupted_run_saw(tmp_path, monkeypatch):
    """Two epochs in one go, and one epoch then ``--RESUME=True`` to two: the same second epoch. Keras
    shuffles the order of an epoch's batches with Python's ``random``, whose state no backup keeps; that is
    switched off here, so that what is compared is what a resume restores: weights, optimizer state, crops."""
    monkeypatch.setattr(random, "shuffle", lambda items: None)
    losses, resumed = {}, [["--EPOCHS=1"], ["--EPOCHS=2", "--RESUME=True"]]
    for name, runs in (("whole", [["--EPOCHS=2"]]), ("resumed", resumed)):
        for extra in runs:
            with contextlib.redirect_stdout(io.StringIO()):
                run_stage(monkeypatch, "beta/train.py", *TINY, f"--DATA={SAMPLES}",
                          f"--OUT_DIR={tmp_path / name}", *extra)
        losses[name] = training.history(tmp_path / name / "history.csv")["loss"]
    assert len(losses["whole"]) == 2 and losses["resumed"] == losses["whole"]  # to the last digit
