"""The evaluate command: metrics checked by hand and against scikit-image; the command end to end."""

import csv
import json
import math
import os

import keras
import numpy as np
import pytest
from keras import layers
from PIL import Image
from skimage import color, metrics as skmetrics

from colorlab import coloring, files, images, lab
from colorlab.commands import evaluate
from conftest import messages
from test_images import flat_png, left_red_right_blue, metadata_bomb

# ----------------------------------------------------------------------------------------------------
# The metrics


def test_colorfulness_of_grey_is_zero_and_of_two_pixels_is_the_hand_computation():
    assert evaluate.colorfulness(np.full((4, 5, 3), 0.3)) == 0.0
    greys = np.linspace(0, 1, 30).reshape(10, 3, 1).repeat(3, axis=-1)
    assert evaluate.colorfulness(greys) == pytest.approx(0, abs=1e-9)
    red_and_blue = np.array([[[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]])
    # rg = R - G = [255, 0]; yb = (R + G) / 2 - B = [127.5, -255]
    # std: 127.5 and 191.25; mean: 127.5 and -63.75 (population statistics)
    expected = math.sqrt(127.5**2 + 191.25**2) + 0.3 * math.sqrt(127.5**2 + 63.75**2)
    assert evaluate.colorfulness(red_and_blue) == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(272.62, abs=0.01)


def test_psnr_identical_is_infinite_and_a_known_error_gives_a_known_value():
    rng = np.random.default_rng(0)
    rgb = rng.random((6, 7, 3))
    assert evaluate.psnr(rgb, rgb) == math.inf
    zeros = np.zeros((3, 4, 3))
    assert evaluate.psnr(zeros, zeros + 0.1) == pytest.approx(20.0)  # MSE 0.01 -> 10 log10(1 / 0.01)
    other = np.clip(rgb + rng.normal(0, 0.05, rgb.shape), 0, 1)
    reference = skmetrics.peak_signal_noise_ratio(rgb, other, data_range=1)
    assert evaluate.psnr(rgb, other) == pytest.approx(reference)


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
        {"model_psnr": 30.0, "model_ssim": 0.9, "model_ciede2000": 5.0, "model_colorfulness": 20.0,
         "grey_psnr": math.inf, "grey_ssim": math.nan, "grey_ciede2000": 0.0, "grey_colorfulness": 0.0,
         "original_colorfulness": 0.0},
        {"model_psnr": 20.0, "model_ssim": 0.7, "model_ciede2000": 7.0, "model_colorfulness": 30.0,
         "grey_psnr": 20.0, "grey_ssim": 0.8, "grey_ciede2000": 10.0, "grey_colorfulness": 0.0,
         "original_colorfulness": 40.0},
    ]
    summary = evaluate.summarize(rows)
    expected = {"psnr": 25.0, "ssim": pytest.approx(0.8), "ciede2000": 6.0, "colorfulness": 25.0}
    assert summary["model"] == expected
    assert summary["grey"]["psnr"] == (evaluate.PSNR_CAP + 20.0) / 2 and summary["grey"]["ssim"] == 0.8
    assert summary["original"]["colorfulness"] == 20.0
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
    model = keras.Sequential([keras.Input((None, None, 1)), layers.Conv2D(2, 1, activation="tanh")],
                             name="oracle")
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
    assert model["colorfulness"] == pytest.approx(summary["original"]["colorfulness"], rel=0.1)
    assert grey["colorfulness"] < 0.1


def test_rows_use_the_same_code_as_colorize(photo_folder):
    model = oracle_model()
    rows = evaluate.evaluate(model, [photo_folder / "class1"], size=16)
    assert [r["photo"] for r in rows] == [str(photo_folder / "class1" / "1.png")]
    rgb = images.load(photo_folder / "class1" / "1.png")
    expected = evaluate.compare(rgb, coloring.colorize(model, [rgb], size=16)[0])
    assert {k: rows[0][f"model_{k}"] for k in evaluate.METRICS} == pytest.approx(expected)
    assert rows[0]["grey_psnr"] == pytest.approx(evaluate.psnr(rgb, lab.grey_rgb(rgb)))
    assert (rows[0]["width"], rows[0]["height"], rows[0]["metric_scale"]) == (20, 30, 1.0)


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

    again = evaluate.main([str(photo_folder), "--model", str(path), "--out", str(tmp_path / "eval"),
                           "--limit", "2"])
    assert again == 2 and "already holds results" in capsys.readouterr().err  # not replaced without asking
    assert evaluate.main([str(photo_folder), "--model", str(path), "--limit", "2"]) == 0
    assert "on 2 of 3 photos" in capsys.readouterr().out


def test_missing_model_is_a_one_line_error(photo_folder, tmp_path, capsys):
    assert evaluate.main([str(photo_folder), "--model", str(tmp_path / "none.keras")]) == 2
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'none.keras'}: no such model file"


def test_ciede2000_in_bands_is_the_mean_over_the_whole_image(monkeypatch):
    monkeypatch.setattr(evaluate, "BAND_PIXELS", 100)  # 5 rows of 20 per band
    rng = np.random.default_rng(3)
    original, result = rng.random((33, 20, 3)), rng.random((33, 20, 3))
    reference = np.mean(color.deltaE_ciede2000(color.rgb2lab(original), color.rgb2lab(result)))
    assert evaluate.ciede2000(original, result) == pytest.approx(reference, rel=1e-9)


@pytest.fixture(scope="module")
def oracle_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("oracle") / "model.keras"
    oracle_model().save(path)
    return path


def test_summary_json_is_valid_json_with_null_for_a_mean_over_nothing(oracle_path, tmp_path, capsys):
    rgb = photo_coloured_by_lightness(2, 2, 0)  # no SSIM window fits: SSIM is NaN, and so is its mean
    Image.fromarray((rgb * 255 + 0.5).astype(np.uint8)).save(tmp_path / "tiny.png")
    args = [str(tmp_path / "tiny.png"), "--model", str(oracle_path), "--out", str(tmp_path / "eval")]
    assert evaluate.main(args) == 0
    text = (tmp_path / "eval" / "summary.json").read_text()
    summary = json.loads(text, parse_constant=lambda name: pytest.fail(f"summary.json holds {name}"))
    assert summary["mean"]["model"]["ssim"] is None and summary["mean"]["grey"]["ssim"] is None
    assert summary["mean"]["model"]["psnr"] > 0


def test_grey_originals_are_one_warning_line(oracle_path, photo_folder, tmp_path, capsys):
    rgb = images.load(photo_folder / "class0" / "0.png")
    (tmp_path / "photos").mkdir()
    images.save(tmp_path / "photos" / "grey.png", lab.grey_rgb(rgb))
    images.save(tmp_path / "photos" / "colour.png", rgb)
    assert evaluate.main([str(tmp_path / "photos"), "--model", str(oracle_path)]) == 0
    lines = messages(capsys.readouterr().err)
    grey = tmp_path / "photos" / "grey.png"
    assert lines == [f"warning: 1 of 2 originals is already grey (colorfulness under 2: {grey}): their "
                     f"colour metrics mean nothing; evaluate on colour photos"]


def test_a_model_that_predicts_nan_fails_in_one_line_and_writes_nothing(photo_folder, tmp_path, capsys):
    model = keras.Sequential([keras.Input((None, None, 1)), layers.Conv2D(2, 1)], name="broken")
    model.layers[0].set_weights([np.full((1, 1, 1, 2), np.nan, np.float32), np.zeros(2, np.float32)])
    model.save(tmp_path / "broken.keras")
    broken = tmp_path / "broken.keras"
    status = evaluate.main([str(photo_folder), "--model", str(broken), "--out", str(tmp_path / "e")])
    lines = messages(capsys.readouterr().err)
    assert status == 2 and len(lines) == 1
    assert lines[0].startswith(f"error: {broken}: predicts colors that are not numbers (NaN)")
    assert not (tmp_path / "e").exists()


def test_big_photos_are_measured_at_a_bounded_size(oracle_path, tmp_path, monkeypatch, capsys):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "panorama.png").write_bytes(flat_png(1200, 500, grey=90))  # 600,000 pixels
    seen = []
    real_compare = evaluate.compare
    monkeypatch.setattr(evaluate, "compare",
                        lambda a, b: seen.append(a.shape[0] * a.shape[1]) or real_compare(a, b))
    monkeypatch.setattr(evaluate, "METRIC_PIXELS", 60_000)  # stands for 4 megapixels against 84
    assert evaluate.main([str(tmp_path / "photos"), "--model", str(oracle_path), "--size", "16",
                          "--out", str(tmp_path / "eval")]) == 0
    assert len(seen) == 2 and 55_000 < seen[0] <= 60_000 and seen[0] == seen[1]  # the model's and grey's
    with open(tmp_path / "eval" / "metrics.csv", newline="") as f:
        row = next(csv.DictReader(f))
    assert (row["width"], row["height"]) == ("1200", "500")  # the photo's own size ...
    assert float(row["metric_scale"]) == pytest.approx((60_000 / 600_000) ** 0.5, rel=0.01)  # ... its scale
    with pytest.raises(SystemExit):
        evaluate.main(["--help"])
    assert "scaled down" in capsys.readouterr().out


def test_load_within_scales_a_big_photo_down_keeping_its_shape(tmp_path):
    (tmp_path / "pano.png").write_bytes(flat_png(3000, 1000, grey=200))  # 3 megapixels, 40 KiB on disk
    rgb, size = evaluate.load_within(tmp_path / "pano.png", 300_000)
    assert rgb.shape[0] * rgb.shape[1] <= 300_000 and rgb.shape[0] * rgb.shape[1] > 290_000
    assert abs(rgb.shape[1] / rgb.shape[0] - 3) < 0.01
    np.testing.assert_allclose(rgb, 200 / 255, atol=1 / 255)
    assert size == evaluate.size_of(tmp_path / "pano.png") == (1000, 3000)  # the photo's own, from its header
    assert evaluate.load_within(tmp_path / "pano.png", 3_000_000)[0].shape == (1000, 3000, 3)  # within
    assert evaluate.load_within(tmp_path / "pano.png", 1)[0].shape == (1, 1, 3)


def test_size_of_is_upright(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6
    left_red_right_blue(40, 20).save(tmp_path / "rotated.jpg", exif=exif)
    assert evaluate.size_of(tmp_path / "rotated.jpg") == (40, 20)
    assert images.load(tmp_path / "rotated.jpg").shape[:2] == (40, 20)


def test_bad_photos_are_listed_and_the_rest_evaluated(oracle_path, photo_folder, tmp_path, capsys):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "profile.png").write_bytes(metadata_bomb("iCCP"))
    (tmp_path / "bad" / "text.png").write_bytes(metadata_bomb("zTXt"))
    status = evaluate.main([str(photo_folder / "class1"), str(tmp_path / "bad"), "--model", str(oracle_path)])
    captured = capsys.readouterr()
    assert status == 1 and "Traceback" not in captured.err
    assert "2 of 3 photos failed:" in captured.out and "mean over 1 photo;" in captured.out
    for name in ("profile.png", "text.png"):
        assert f"  {tmp_path / 'bad' / name}: refused: its metadata cannot be read safely" in captured.out


def test_out_never_replaces_what_evaluate_did_not_write(oracle_path, photo_folder, tmp_path, capsys):
    args = [str(photo_folder / "class1"), "--model", str(oracle_path), "--out"]
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    (mine / "summary.json").write_text("{}")  # a name evaluate writes, in a folder evaluate did not make
    stage = tmp_path / "beta"
    stage.mkdir()
    for name in ("model.keras", "settings.json"):
        (stage / name).write_text("a stage's result")
    for folder, said in ((mine, "holds files that evaluate did not write (notes.txt)"),
                         (stage, "holds the results of a stage's run (model.keras, settings.json)")):
        assert evaluate.main(args + [str(folder), "--overwrite"]) == 2
        lines = messages(capsys.readouterr().err)
        assert len(lines) == 1 and said in lines[0] and "choose another --out" in lines[0]
    assert (mine / "notes.txt").read_text() == "keep me" and (mine / "summary.json").read_text() == "{}"
    assert sorted(p.name for p in stage.iterdir()) == ["model.keras", "settings.json"]

    out = tmp_path / "eval"
    assert evaluate.main(args + [str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted([files.MARK, "metrics.csv", "summary.json"])
    assert json.loads((out / files.MARK).read_text())["stage"] == "evaluate"
    assert evaluate.main(args + [str(out)]) == 2  # not without --overwrite
    assert "already holds results" in capsys.readouterr().err
    assert evaluate.main(args + [str(out), "--overwrite"]) == 0
    for bad in (".", os.path.expanduser("~"), "/"):
        assert evaluate.main(args + [bad]) == 2
        assert "--out" in messages(capsys.readouterr().err)[0]
