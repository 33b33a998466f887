"""The beta stage, run as a learner runs it, with tiny settings. (Its notebook is tested with the others in
test_notebooks.py.)"""

import json
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from colorlab import data
from conftest import ROOT, messages

SAMPLES = ROOT / "data" / "samples"
TINY = ["--IMAGE_SIZE=32", "--BATCH_SIZE=8", "--STEPS_PER_EPOCH=6", "--ZOOM=1.3"]


def photos_with_a_broken_file(folder):
    """The sample photos plus a text file named like a photo."""
    shutil.copytree(SAMPLES, folder)
    (folder / "broken.jpg").write_text("not a photo")
    return folder


@pytest.mark.slow
def test_beta_learns_and_writes_its_results(script, tmp_path):
    photos = photos_with_a_broken_file(tmp_path / "photos")
    out = tmp_path / "out"
    result = script("beta/train.py", *TINY, "--EPOCHS=3", f"--DATA={photos}", f"--OUT_DIR={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"skipped {photos / 'broken.jpg'}: not an image" in result.stdout
    assert "1 unreadable file skipped" in result.stdout
    assert "predicting grey" in result.stdout

    for name in ("batch.png", "result.png", "loss.png", "model.keras", "metrics.json", "settings.json"):
        assert (out / name).stat().st_size > 0, name
    assert sorted(p.name for p in (out / "grids").iterdir()) == ["epoch-0001.png", "epoch-0002.png", "epoch-0003.png"]
    assert json.loads((out / "settings.json").read_text())["IMAGE_SIZE"] == 32
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs"] == 3 and metrics["skipped_files"] == 1 and metrics["crops_per_second"] > 0
    history = json.loads((out / "checkpoint" / "state.json").read_text())["history"]
    assert history["loss"][-1] < 0.9 * history["loss"][0], f"the training loss did not fall: {history['loss']}"

    import keras

    model = keras.saving.load_model(out / "model.keras")
    train, validation = data.from_folder(photos, 32, 8, 6, 0.25, verbose=False)
    # It reloads and predicts what it predicted when it was trained: the same validation loss.
    l, ab = validation[0]
    assert len(validation) == 1
    val_loss = float(np.mean((model.predict(l, verbose=0) - ab) ** 2))
    assert val_loss == pytest.approx(metrics["val_loss"], rel=1e-4)
    assert metrics["grey_val_loss"] == pytest.approx(float(np.mean(ab**2)), rel=1e-5)
    # It learned: on its training photos it beats predicting grey (an untrained model does not).
    l, ab = data.Photos(train.paths, 32, 64, random=False)[0]
    loss, grey = float(np.mean((model.predict(l, verbose=0) - ab) ** 2)), float(np.mean(ab**2))
    assert loss < 0.95 * grey, f"loss {loss:.5f} vs predicting grey {grey:.5f}"
    # It colours any size that divides by 8, at full resolution.
    assert model.predict(np.zeros((1, 40, 24, 1), np.float32), verbose=0).shape == (1, 40, 24, 2)


@pytest.mark.slow
def test_beta_resumes_after_being_killed(script, tmp_path):
    out = tmp_path / "out"
    state_file = out / "checkpoint" / "state.json"
    command = [sys.executable, "beta/train.py", *TINY, "--STEPS_PER_EPOCH=2", "--EPOCHS=100", f"--OUT_DIR={out}"]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            if state_file.exists() and json.loads(state_file.read_text())["epoch"] >= 2:
                break
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)  # no chance to clean up, as with a crash or a power cut
    finally:
        process.kill()
        process.wait()
    killed = json.loads(state_file.read_text())
    done = killed["epoch"]
    assert 2 <= done < 100 and not (out / "model.keras").exists()

    result = script("beta/train.py", *TINY, "--STEPS_PER_EPOCH=2", f"--EPOCHS={done + 2}", f"--OUT_DIR={out}",
                    "--RESUME=True")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"resuming after epoch {done} of {done + 2}" in result.stdout
    assert f"Epoch {done + 1}/{done + 2}" in result.stdout and "Epoch 1/" not in result.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    history = json.loads(state_file.read_text())["history"]
    assert metrics["epochs"] == done + 2 and len(history["loss"]) == len(history["val_loss"]) == done + 2
    assert history["loss"][:done] == killed["history"]["loss"]  # the epochs before the kill are kept
    assert len(list((out / "grids").iterdir())) == done + 2
    assert sorted(p.name for p in (out / "checkpoint").iterdir()) == [
        "best.weights.h5", f"epoch-{done + 2:04d}.weights.h5", "state.json"]


def test_beta_stops_with_one_line_on_a_folder_without_photos(script, tmp_path):
    (tmp_path / "empty").mkdir()
    result = script("beta/train.py", f"--DATA={tmp_path / 'empty'}", f"--OUT_DIR={tmp_path / 'out'}")
    assert result.returncode == 1
    lines = messages(result.stderr)
    assert len(lines) == 1 and lines[0].startswith(f"error: {tmp_path / 'empty'}: no photos found"), lines
    assert not (tmp_path / "out").exists()  # nothing is created before the photos are found
