"""The alpha stage, run as a learner runs it: it learns, it writes what it promises, it explains mistakes."""

import json

import keras
import numpy as np
import pytest

from colorlab import images, lab
from conftest import ROOT, messages, run_python

PHOTO, SIZE, EPOCHS = "data/samples/chelsea.jpg", 60, 300  # 60x40: not a multiple of 8 on purpose


@pytest.fixture(scope="module")
def alpha_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("alpha")
    result = run_python("alpha/train.py", f"--IMAGE={PHOTO}", f"--IMAGE_SIZE={SIZE}", f"--EPOCHS={EPOCHS}", f"--OUT_DIR={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result.stdout


@pytest.fixture(scope="module")
def photo():
    rgb = images.load(ROOT / PHOTO, SIZE)
    return (rgb, *lab.rgb_to_l_ab(rgb))


def test_alpha_learns_far_more_than_grey_or_any_single_colour(alpha_run, photo):
    out, stdout = alpha_run
    _, _, ab = photo
    metrics = json.loads((out / "metrics.json").read_text())
    best_constant = float(np.mean((ab - ab.mean(axis=(0, 1))) ** 2))  # the best a colour-blind model can do
    # Calibrated on this photo: 1 epoch gives 0.66x grey and 4.2x best-constant; 300 epochs 0.06x and 0.36x.
    assert metrics["final_loss"] < 0.15 * metrics["grey_loss"]
    assert metrics["final_loss"] < 0.55 * best_constant
    assert metrics["grey_loss"] == pytest.approx(float(np.mean(ab**2)), rel=1e-4)
    assert "final loss" in stdout and "predicting grey" in stdout


def test_alpha_writes_the_grid_curve_image_model_and_settings(alpha_run, photo):
    out, _ = alpha_run
    rgb, _, _ = photo
    for name in ["result.png", "loss.png"]:
        picture = images.load(out / name)
        assert picture.shape[0] > 100 and picture.std() > 0.05, name  # a real figure, not a blank canvas
    assert images.load(out / "colourised.png").shape == rgb.shape  # same size as the input: no distortion
    saved = json.loads((out / "settings.json").read_text())
    assert saved["IMAGE_SIZE"] == SIZE and saved["EPOCHS"] == EPOCHS and saved["IMAGE"] == PHOTO
    assert sorted(p.name for p in out.iterdir()) == [
        "colourised.png", "loss.png", "metrics.json", "model.keras", "result.png", "settings.json"
    ]  # and no temporary file left behind


def test_saved_model_reloads_and_reproduces_the_colourised_image(alpha_run, photo):
    out, _ = alpha_run
    rgb, l, _ = photo
    model = keras.saving.load_model(out / "model.keras")
    ab_pred = model.predict(images.pad_to_multiple(l, 8)[None], verbose=0)[0, : l.shape[0], : l.shape[1]]
    colourised = images.load(out / "colourised.png")
    np.testing.assert_allclose(lab.l_ab_to_rgb(l, ab_pred), colourised, atol=1.5 / 255)


def test_colour_lands_where_the_original_has_it(alpha_run, photo):
    out, _ = alpha_run
    _, _, ab = photo
    _, ab_out = lab.rgb_to_l_ab(images.load(out / "colourised.png"))
    assert np.corrcoef(ab_out.ravel(), ab.ravel())[0, 1] > 0.8
    assert np.abs(ab_out).mean() > 0.5 * np.abs(ab).mean()  # colourful, not washed out to grey


@pytest.mark.parametrize("args, message", [
    (["--EPOCHS=0"], "error: EPOCHS must be at least 1, got 0"),
    (["--IMAGE=no/such/photo.jpg"], "error: no/such/photo.jpg: no such file"),
    (["--EPOCHS=ten"], "error: --EPOCHS expects int (like 1000), got 'ten'"),
    ([], "already holds the results of an earlier run"),
])
def test_mistakes_are_one_line_and_stop_before_training(alpha_run, args, message):
    out, _ = alpha_run
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    result = run_python("alpha/train.py", "--IMAGE_SIZE=16", "--EPOCHS=1", f"--OUT_DIR={out}", *args)
    assert result.returncode != 0
    lines = messages(result.stderr)
    assert len(lines) == 1 and message in lines[0], result.stderr[-2000:]
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before  # the earlier run is untouched
