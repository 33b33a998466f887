"""The alpha stage, run as a learner runs it (in this process, to save the start-up): it learns far more than
grey or any single color, writes what it promises, refuses to overwrite itself, and a NaN loss is a failure.
(That a UserError is one line and exit status 1 from a terminal: test_settings.py.)"""

import json
import sys

import keras
import numpy as np
import pytest

from colorlab import UserError, files, images, lab
from conftest import ROOT, run_stage

# The default photo, small, with a faster rate than the default so that 150 epochs are enough.
PHOTO, SIZE, EPOCHS, RATE = "data/samples/astronaut.jpg", 32, 150, 0.003


@pytest.fixture(scope="module")
def alpha_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("alpha") / "out"
    with pytest.MonkeyPatch.context() as monkeypatch:
        stage = run_stage(monkeypatch, "alpha/train.py", f"--IMAGE_SIZE={SIZE}", f"--EPOCHS={EPOCHS}",
                          f"--LEARNING_RATE={RATE}", f"--OUT_DIR={out}")
    return out, stage


@pytest.fixture(scope="module")
def photo():
    rgb = images.load(ROOT / PHOTO, SIZE)
    return (rgb, *lab.rgb_to_l_ab(rgb))


def test_alpha_learns_far_more_than_grey_or_any_single_color(alpha_run, photo):
    out, _ = alpha_run
    _, _, ab = photo
    metrics = json.loads((out / "metrics.json").read_text())
    best_constant = float(np.mean((ab - ab.mean(axis=(0, 1))) ** 2))  # the best a color-blind model can do
    # Calibrated on this photo at this size and rate: 1 epoch gives 0.66x grey and 1.02x the best constant;
    # 150 epochs 0.095x and 0.15x.
    assert metrics["final_loss"] < 0.15 * metrics["grey_loss"]
    assert metrics["final_loss"] < 0.55 * best_constant
    assert metrics["grey_loss"] == pytest.approx(float(np.mean(ab**2)), rel=1e-4)
    assert metrics["epochs"] == EPOCHS and metrics["size"] == [SIZE, 32]


def test_alpha_writes_the_grid_curve_image_model_and_settings(alpha_run, photo):
    out, _ = alpha_run
    rgb, _, _ = photo
    for name in ["result.png", "loss.png"]:
        picture = images.load(out / name)
        assert picture.shape[0] > 100 and picture.std() > 0.05, name  # a real figure, not a blank canvas
    assert images.load(out / "colorized.png").shape == rgb.shape  # same size as the input: no distortion
    saved = json.loads((out / "settings.json").read_text())
    assert saved["IMAGE_SIZE"] == SIZE and saved["EPOCHS"] == EPOCHS and saved["IMAGE"] == PHOTO
    assert sorted(p.name for p in out.iterdir()) == [
        files.MARK, "colorized.png", "loss.png", "metrics.json", "model.keras", "result.png", "settings.json"
    ]  # and no temporary file left behind
    assert json.loads((out / files.MARK).read_text())["stage"] == "alpha"


def test_the_saved_model_reloads_and_puts_color_where_the_original_has_it(alpha_run, photo):
    out, _ = alpha_run
    _, l, ab = photo
    model = keras.saving.load_model(out / "model.keras")
    ab_pred = model.predict(images.pad_to_multiple(l, 8)[None], verbose=0)[0, : l.shape[0], : l.shape[1]]
    colorized = images.load(out / "colorized.png")
    np.testing.assert_allclose(lab.l_ab_to_rgb(l, ab_pred), colorized, atol=1.5 / 255)
    _, ab_out = lab.rgb_to_l_ab(colorized)
    assert np.corrcoef(ab_out.ravel(), ab.ravel())[0, 1] > 0.8
    assert np.abs(ab_out).mean() > 0.5 * np.abs(ab).mean()  # colorful, not washed out to grey


def test_a_second_run_into_the_same_out_dir_is_refused_in_one_line_touching_nothing(alpha_run, monkeypatch):
    out, _ = alpha_run
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    with pytest.raises(UserError) as caught:
        run_stage(monkeypatch, "alpha/train.py", "--IMAGE_SIZE=16", "--EPOCHS=1", f"--OUT_DIR={out}")
    assert str(caught.value) == (f"{out} already holds the results of an earlier alpha run: --OVERWRITE=True "
                                 f"replaces them, or choose another OUT_DIR")
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


def test_a_nan_loss_is_a_one_line_failure_and_saves_no_model(tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    with pytest.raises(UserError) as caught:  # uncaught, Python exits with status 1
        run_stage(monkeypatch, "alpha/train.py", "--IMAGE_SIZE=16", "--EPOCHS=3", "--LEARNING_RATE=1e30",
                  f"--OUT_DIR={out}")
    capsys.readouterr()
    sys.excepthook(type(caught.value), caught.value, caught.value.__traceback__)  # the stage's hook
    assert capsys.readouterr().err == ("error: the loss became NaN or infinite: training stopped; no good "
                                       "epoch was saved. A lower LEARNING_RATE usually helps\n")
    assert sorted(p.name for p in out.iterdir()) == [files.MARK]  # no model, no metrics, no picture


def test_alpha_prints_one_line_every_tenth_of_its_epochs_and_at_the_last(monkeypatch, tmp_path, capsys):
    run_stage(monkeypatch, "alpha/train.py", "--IMAGE_SIZE=16", "--EPOCHS=25", f"--OUT_DIR={tmp_path}/out")
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch ")]
    assert [line.split()[1] for line in lines] == [f"{e}/25" for e in (*range(2, 25, 2), 25)]
    assert all("loss 0." in line and line.endswith(" s)") for line in lines)


def test_the_exercise_2_cell_scores_alpha_against_grey_on_every_photo_of_the_folder(alpha_run, photo):
    out, stage = alpha_run
    scores = stage["other_photos"]  # photo name -> (alpha's loss, predicting grey's loss)
    assert sorted(scores) == sorted(path.name for path in images.list_images(ROOT / "data/samples"))
    metrics = json.loads((out / "metrics.json").read_text())
    learned, learned_grey = scores["astronaut.jpg"]  # the photo it learned: the stage's own numbers
    assert learned == pytest.approx(metrics["final_loss"], rel=1e-4)
    assert learned_grey == pytest.approx(metrics["grey_loss"], rel=1e-4)
    _, rocket_ab = lab.rgb_to_l_ab(images.load(ROOT / "data/samples/rocket.jpg", SIZE))
    assert scores["rocket.jpg"][1] == pytest.approx(float(np.mean(rocket_ab**2)), rel=1e-4)
    # Memory, not understanding: on the photos it never saw, far worse against grey than on its own.
    others = sorted(loss / grey for name, (loss, grey) in scores.items() if name != "astronaut.jpg")
    print(f"learned {learned / learned_grey:.2f}x grey; the others {[round(r, 2) for r in others]}")
    assert np.median(others) > 5 * learned / learned_grey
