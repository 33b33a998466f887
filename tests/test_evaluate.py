"""colorlab.evaluate: metrics checked by hand and against scikit-image; the command end to end."""

import csv
import json
import math

import keras
import numpy as np
import pytest
from keras import layers
from PIL import Image
from skimage import metrics as skmetrics

from colorlab import colorize, evaluate, images, lab

# ----------------------------------------------------------------------------------------------------
# The metrics


def test_colourfulness_of_grey_is_zero_and_of_two_pixels_is_the_hand_computation():
    assert evaluate.colourfulness(np.full((4, 5, 3), 0.3)) == 0.0
    assert evaluate.colourfulness(np.linspace(0, 1, 30).reshape(10, 3, 1).repeat(3, axis=-1)) == pytest.approx(0, abs=1e-9)
    red_and_blue = np.array([[[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]])
    # rg = R - G = [255, 0]; yb = (R + G) / 2 - B = [127.5, -255]
    # std: 127.5 and 191.25; mean: 127.5 and -63.75 (population statistics)
    expected = math.sqrt(127.5**2 + 191.25**2) + 0.3 * math.sqrt(127.5**2 + 63.75**2)
    assert evaluate.colourfulness(red_and_blue) == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(272.62, abs=0.01)


def test_psnr_identical_is_infinite_and_a_known_error_gives_a_known_value():
    rng = np.random.default_rng(0)
    rgb = rng.random((6, 7, 3))
    assert evaluate.psnr(rgb, rgb) == math.inf
    zeros = np.zeros((3, 4, 3))
    assert evaluate.psnr(zeros, zeros + 0.1) == pytest.approx(20.0)  # MSE 0.01 -> 10 log10(1 / 0.01)
    other = np.clip(rgb + rng.normal(0, 0.05, rgb.shape), 0, 1)
    assert evaluate.psnr(rgb, other) == pytest.approx(skmetrics.peak_signal_noise_ratio(rgb, other, data_range=1))


def test_ssim_matches_scikit_image_and_handles_tiny_images():
    rng = np.random.default_rng(1)
    rgb = rng.random((16, 20, 3))
    other = np.clip(rgb + rng.normal(0, 0.1, rgb.shape), 0, 1)
    assert evaluate.ssim(rgb, rgb) == pytest.approx(1.0)
    reference = skmetrics.structural_similarity(rgb, other, channel_axis=-1, data_range=1.0)
    assert evaluate.ssim(rgb, other) == pytest.approx(reference)
    assert 0 < evaluate.ssim(rgb[:4, :5], other[:4, :5]) < 1  # a 3x3 window
    assert math.isnan(evaluate.ssim(rgb[:2, :2], other[:2, :2]))  # no window fits


def test_ciede2000_is_zero_for_identical_and_the_lightness_difference_for_greys_at_l_50():
    rgb = np.random.default_rng(2).random((5, 5, 3))
    assert evaluate.ciede2000(rgb, rgb) == 0.0
    # Two greys with mean lightness 50: CIEDE2000's lightness weight S_L is 1, so the difference is |L1 - L2|.
    grey_40 = lab.l_ab_to_rgb(np.full((3, 3, 1), 0.40), np.zeros((3, 3, 2)))
    grey_60 = lab.l_ab_to_rgb(np.full((3, 3, 1), 0.60), np.zeros((3, 3, 2)))
    assert evaluate.ciede2000(grey_40, grey_60) == pytest.approx(20.0, abs=0.01)


def test_summary_caps_infinite_psnr_and_skips_nan():
    rows = [
        {"model_psnr": 30.0, "model_ssim": 0.9, "model_ciede2000": 5.0, "model_colourfulness": 20.0,
         "grey_psnr": math.inf, "grey_ssim": math.nan, "grey_ciede2000": 0.0, "grey_colourfulness": 0.0,
         "original_colourfulness": 0.0},
        {"model_psnr": 20.0, "model_ssim": 0.7, "model_ciede2000": 7.0, "model_colourfulness": 30.0,
         "grey_psnr": 20.0, "grey_ssim": 0.8, "grey_ciede2000": 10.0, "grey_colourfulness": 0.0,
         "original_colourfulness": 40.0},
    ]
    summary = evaluate.summarize(rows)
    assert summary["model"] == {"psnr": 25.0, "ssim": pytest.approx(0.8), "ciede2000": 6.0, "colourfulness": 25.0}
    assert summary["grey"]["psnr"] == (evaluate.PSNR_CAP + 20.0) / 2 and summary["grey"]["ssim"] == 0.8
    assert summary["original"]["colourfulness"] == 20.0
    text = evaluate.table(summary, 2)
    assert "predict grey (ab = 0)" in text and "60.00" in text and "mean over 2 photos" in text


def test_spread_takes_evenly_spaced_items():
    assert evaluate.spread(list(range(10)), 3) == [0, 4, 9]
    assert evaluate.spread(list(range(4)), 10) == [0, 1, 2, 3]
    assert evaluate.spread(list(range(100)), 1) == [0]


# ----------------------------------------------------------------------------------------------------
# Evaluating a model: a model that knows the answer must beat "predict grey" by far


def oracle_model():
    """ab = tanh(0.4 l - 0.2, 0.2 - 0.4 l), exactly the colours of the photos made below."""
    model = keras.Sequential([keras.Input((None, None, 1)), layers.Conv2D(2, 1, activation="tanh")], name="oracle")
    model.layers[0].set_weights([np.array([[[[0.4, -0.4]]]], np.float32), np.array([-0.2, 0.2], np.float32)])
    return model


def photo_coloured_by_lightness(height, width, seed):
    """A photo whose colour is the oracle's function of its lightness (lightness kept in mid-range)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    l = (0.5 + 0.3 * np.sin(5 * x + 4 * y + rng.uniform(0, 6)))[..., None].astype(np.float32)
    ab = np.tanh(np.concatenate([0.4 * l - 0.2, 0.2 - 0.4 * l], axis=-1))
    return lab.l_ab_to_rgb(l, ab)


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    for i, (h, w) in enumerate([(24, 32), (30, 20), (17, 29)]):
        rgb = photo_coloured_by_lightness(h, w, i)
        (folder / f"class{i % 2}").mkdir(exist_ok=True)
        Image.fromarray((rgb * 255 + 0.5).astype(np.uint8)).save(folder / f"class{i % 2}" / f"{i}.png")
    return folder


def test_a_model_that_knows_the_colours_beats_the_grey_baseline(photo_folder):
    rows = evaluate.evaluate(oracle_model(), [photo_folder], size=32)
    assert len(rows) == 3
    summary = evaluate.summarize(rows)
    model, grey = summary["model"], summary["grey"]
    assert model["ciede2000"] < 1.0 < 5.0 < grey["ciede2000"]
    assert model["psnr"] > grey["psnr"] + 10 and model["ssim"] > grey["ssim"]
    assert model["colourfulness"] == pytest.approx(summary["original"]["colourfulness"], rel=0.1)
    assert grey["colourfulness"] < 0.1


def test_rows_use_the_same_code_as_colorize(photo_folder):
    model = oracle_model()
    rows = evaluate.evaluate(model, [photo_folder / "class1"], size=16)
    assert [r["photo"] for r in rows] == [str(photo_folder / "class1" / "1.png")]
    rgb = images.load(photo_folder / "class1" / "1.png")
    expected = evaluate.compare(rgb, colorize.colorize(model, rgb, size=16))
    assert {k: rows[0][f"model_{k}"] for k in evaluate.METRICS} == pytest.approx(expected)
    assert rows[0]["grey_psnr"] == pytest.approx(evaluate.psnr(rgb, lab.grey(rgb)))
    assert (rows[0]["width"], rows[0]["height"]) == (20, 30)


def test_command_prints_the_table_and_writes_csv_and_json(photo_folder, tmp_path, capsys):
    path = tmp_path / "oracle" / "model.keras"
    path.parent.mkdir()
    oracle_model().save(path)
    (path.parent / "settings.json").write_text(json.dumps({"IMAGE_SIZE": 32}))
    (photo_folder / "class0" / "broken.png").write_bytes(b"\x89PNG but not really")
    try:
        status = evaluate.main([str(photo_folder), "--model", str(path), "--out", str(tmp_path / "eval")])
    finally:
        (photo_folder / "class0" / "broken.png").unlink()
    captured = capsys.readouterr()
    assert status == 1 and "broken.png" in captured.err
    assert "working size 32" in captured.out and "predict grey (ab = 0)" in captured.out
    with open(tmp_path / "eval" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["photo"].rsplit("/", 1)[1] for r in rows] == ["0.png", "2.png", "1.png"]
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["photos"] == 3 and len(summary["failed"]) == 1 and summary["size"] == 32
    mean_ciede = np.mean([float(r["model_ciede2000"]) for r in rows])
    assert summary["mean"]["model"]["ciede2000"] == pytest.approx(mean_ciede, rel=1e-5)
    assert f"{summary['mean']['grey']['ciede2000']:.2f}" in captured.out

    again = evaluate.main([str(photo_folder), "--model", str(path), "--out", str(tmp_path / "eval"), "--limit", "2"])
    assert again == 2 and "already holds results" in capsys.readouterr().err  # never overwritten without asking
    assert evaluate.main([str(photo_folder), "--model", str(path), "--limit", "2"]) == 0
    assert "on 2 of 3 photos" in capsys.readouterr().out


def test_missing_model_is_a_one_line_error(photo_folder, tmp_path, capsys):
    assert evaluate.main([str(photo_folder), "--model", str(tmp_path / "none.keras")]) == 2
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'none.keras'}: no such model file"
