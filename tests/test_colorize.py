"""colorlab.colorize: any photo size in, the same size and lightness out, colour from the model."""

import json
import os

import keras
import numpy as np
import pytest
from keras import layers
from PIL import Image
from skimage import color

from colorlab import UserError, colorize, images, lab
from conftest import ROOT, run_python

# ----------------------------------------------------------------------------------------------------
# Models whose answer we know


def oracle_model():
    """ab = tanh(0.4 l - 0.2, 0.2 - 0.4 l) at every pixel: a 1x1 convolution, so the expected colour of
    each pixel is known exactly (and a misaligned crop or pad would show)."""
    model = keras.Sequential([keras.Input((None, None, 1)), layers.Conv2D(2, 1, activation="tanh")], name="oracle")
    model.layers[0].set_weights([np.array([[[[0.4, -0.4]]]], np.float32), np.array([-0.2, 0.2], np.float32)])
    return model


def oracle_ab(l):
    return np.tanh(np.concatenate([0.4 * l - 0.2, 0.2 - 0.4 * l], axis=-1))


def loud_model():
    """An alpha-like network (three stride-2 layers) biased to predict saturated magenta-blue: far
    outside the sRGB gamut for light and dark pixels, to test that the lightness survives."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((None, None, 1)),
        layers.Conv2D(4, 3, activation="relu", padding="same", strides=2),
        layers.Conv2D(4, 3, activation="relu", padding="same", strides=2),
        layers.Conv2D(4, 3, activation="relu", padding="same", strides=2),
        layers.UpSampling2D(8),
        layers.Conv2D(2, 3, activation="tanh", padding="same"),
    ], name="loud")
    weights, bias = model.layers[-1].get_weights()
    model.layers[-1].set_weights([weights * 0.1, np.array([2.0, -1.5], np.float32)])  # ab about (0.96, -0.9)
    return model


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    paths = {}
    for model in (oracle_model(), loud_model()):
        (folder / model.name).mkdir()
        paths[model.name] = folder / model.name / "model.keras"
        model.save(paths[model.name])
    return paths


def photo(height, width, seed=0):
    """A smooth colour photo with lightness from nearly black to nearly white."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    rgb = np.stack([0.5 + 0.45 * np.sin(6 * x + 3 * y + p) for p in rng.uniform(0, 6, 3)], axis=-1)
    return rgb.astype(np.float32)


def save_photo(path, rgb, **options):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)).save(path, **options)
    return path


def l_of(rgb):
    return lab.rgb_to_l_ab(rgb)[0][..., 0] * 100  # L in [0, 100]


# ----------------------------------------------------------------------------------------------------
# The function


def test_odd_sized_photo_keeps_its_size_and_lightness_and_gets_the_model_colour(models, tmp_path):
    original = images.load(save_photo(tmp_path / "odd.png", photo(23, 37)))
    model = colorize.load_model(models["loud"])
    result = colorize.colorize(model, tmp_path / "odd.png", size=16)  # the model sees 16x10, padded to 16x16
    assert result.shape == (23, 37, 3) and result.dtype == np.float32
    images.save(tmp_path / "out.png", result)
    saved = images.load(tmp_path / "out.png")  # rounded to 8 bits, as a user gets it
    assert np.abs(l_of(saved) - l_of(original)).max() < 1.0  # L units: every detail of the input survives
    a, b = lab.rgb_to_l_ab(result)[1].reshape(-1, 2).T * 128
    assert a.mean() > 15 and b.mean() < -15  # the colour is the model's (magenta-blue), not the photo's


def test_colour_lands_on_the_right_pixels(models):
    rgb = photo(23, 37, seed=1)
    model = colorize.load_model(models["oracle"])
    result = colorize.colorize(model, rgb, size=37)  # working size = the photo's: padded to 40x24, cropped back
    l, _ = lab.rgb_to_l_ab(rgb)
    expected = oracle_ab(l)
    got = lab.rgb_to_l_ab(result)[1]
    inside = (l[..., 0] > 0.15) & (l[..., 0] < 0.85)  # away from black and white, no gamut fitting
    assert inside.mean() > 0.5
    assert np.abs(got - expected)[inside].max() < 2e-3


def test_small_working_size_upsamples_colour_smoothly(models):
    rgb = photo(60, 90, seed=2)
    model = colorize.load_model(models["oracle"])
    result = colorize.colorize(model, rgb, size=30)
    assert result.shape == (60, 90, 3)
    l, _ = lab.rgb_to_l_ab(rgb)
    got = lab.rgb_to_l_ab(result)[1]
    inside = (l[..., 0] > 0.15) & (l[..., 0] < 0.85)
    assert np.abs(got - oracle_ab(l))[inside].mean() < 0.01  # a smooth photo: colour at 1/3 scale is close


def test_colour_photos_count_as_their_grey_version(models):
    rgb = photo(20, 30, seed=3)
    model = colorize.load_model(models["loud"])
    np.testing.assert_allclose(colorize.colorize(model, rgb, 16), colorize.colorize(model, lab.grey(rgb), 16), atol=2e-3)


def test_batches_give_the_same_result_as_one_photo_at_a_time(models):
    model = colorize.load_model(models["loud"])
    photos = [photo(23, 37, 0), photo(40, 30, 1), photo(24, 38, 2), photo(37, 23, 3)]  # shapes 16x10, 12x16, ...
    together = colorize.colorize_batch(model, photos, size=16)
    for rgb, result in zip(photos, together):
        np.testing.assert_allclose(result, colorize.colorize(model, rgb, size=16), atol=1e-5)


def test_fit_gamut_matches_scikit_image_and_keeps_lightness():
    rng = np.random.default_rng(0)
    l = rng.uniform(0, 1, (2000, 1)).astype(np.float32)
    ab = rng.uniform(-1, 1, (2000, 2)).astype(np.float32)
    inside = colorize._in_gamut(l[:, 0], ab, 1e-6)
    assert 0.05 < inside.mean() < 0.95
    # Reference: scikit-image clips RGB; a colour is in gamut exactly when that round trip changes nothing.
    roundtrip = color.rgb2lab(lab.l_ab_to_rgb(l, ab)[:, None, :])[:, 0]
    error = np.abs(roundtrip - np.concatenate([l * 100, ab * 128], axis=-1)).max(axis=-1)
    assert error[inside].max() < 0.05 and error[~inside].min() > 0.05
    fitted = colorize.fit_gamut(l, ab)
    assert colorize._in_gamut(l[:, 0], fitted, 1e-6).all()
    np.testing.assert_array_equal(fitted[inside], ab[inside])  # in-gamut colours are left alone
    kept = color.rgb2lab(lab.l_ab_to_rgb(l, fitted)[:, None, :])[:, 0, 0]
    assert np.abs(kept - l[:, 0] * 100).max() < 0.05  # lightness kept exactly ...
    ratio = np.linalg.norm(fitted, axis=-1) / np.linalg.norm(ab, axis=-1)
    assert ratio[~inside].max() < 1 and np.median(ratio[~inside]) > 0.2  # ... by giving up only some chroma


def test_working_settings_come_from_the_settings_beside_the_model(models, tmp_path):
    assert colorize.saved_settings(models["oracle"]) == {"size": 256, "multiple": 8, "color_space": "lab"}
    (tmp_path / "settings.json").write_text(json.dumps({"IMAGE_SIZE": 48, "EPOCHS": 2, "MULTIPLE": 32, "COLOR_SPACE": "yuv"}))
    assert colorize.saved_settings(tmp_path / "model.keras") == {"size": 48, "multiple": 32, "color_space": "yuv"}
    assert colorize.resolve_settings(tmp_path / "model.keras", size=64) == (64, 32, "yuv")  # given beats saved


def test_the_working_size_is_the_shorter_side_as_in_training():
    assert colorize.working_shape(300, 451, 48) == ((48, 72), (48, 72))
    assert colorize.working_shape(23, 37, 16) == ((16, 26), (16, 32))
    assert colorize.working_shape(20, 10000, 16) == ((1, 64), (8, 64))  # a panorama is capped at 4 x 16


def test_a_yuv_model_that_needs_multiples_of_32_colours_with_its_saved_settings(tmp_path):
    # Five halvings and back: it only returns its input's size for multiples of 32, and predicts no colour.
    model = keras.Sequential([keras.Input((None, None, 1)), layers.AveragePooling2D(32), layers.UpSampling2D(32),
                              layers.Conv2D(2, 1, kernel_initializer="zeros")], name="uv_zero")
    model.save(tmp_path / "model.keras")
    photo = np.random.default_rng(0).random((23, 37, 3)).astype(np.float32)
    with pytest.raises(UserError, match="pad to a larger multiple"):
        colorize.colorize(tmp_path / "model.keras", photo, size=16)  # no settings.json: multiples of 8
    (tmp_path / "settings.json").write_text(json.dumps({"IMAGE_SIZE": 16, "MULTIPLE": 32, "COLOR_SPACE": "yuv"}))
    result = colorize.colorize(tmp_path / "model.keras", photo)
    y_in, y_out = lab.rgb_to_y_uv(photo)[0], lab.rgb_to_y_uv(result)[0]
    np.testing.assert_allclose(y_out, y_in, atol=1e-5)  # the luma is the photo's own, at full size
    assert np.abs(lab.rgb_to_y_uv(result)[1]).max() < 1e-5  # and uv = 0: grey in YUV, not in Lab


def test_models_that_do_not_map_l_to_ab_are_refused_in_one_line(tmp_path):
    rgb_in = keras.Sequential([keras.Input((None, None, 3)), layers.Conv2D(2, 1)], name="rgb_in")
    three_out = keras.Sequential([keras.Input((None, None, 1)), layers.Conv2D(3, 1)], name="three_out")
    with pytest.raises(UserError, match=r"takes input \(None, None, None, 3\).*\(batch, height, width, 1\)"):
        colorize.check_model(rgb_in)
    with pytest.raises(UserError, match=r"outputs \(None, None, None, 3\).*ab of shape \(batch, height, width, 2\)"):
        colorize.check_model(three_out)
    l_in = keras.Input((None, None, 1))
    embedding = keras.Input((8,), name="embedding")
    two_inputs = keras.Model([l_in, embedding], layers.Conv2D(2, 1)(l_in))
    with pytest.raises(UserError, match="'embedding'.*EXTRA_INPUTS"):
        colorize.check_model(two_inputs)


def test_a_stage_can_plug_in_an_extra_input(monkeypatch):
    l_in = keras.Input((None, None, 1), name="l")
    shift = keras.Input((2,), name="shift")  # stands for the full stage's embedding
    ab = layers.Conv2D(2, 1, kernel_initializer="zeros")(l_in) + layers.Reshape((1, 1, 2))(shift)
    model = keras.Model([l_in, shift], ab)
    monkeypatch.setitem(colorize.EXTRA_INPUTS, "shift", lambda l: np.tile([[0.1, -0.1]], (len(l), 1)).astype("float32"))
    result = colorize.colorize(model, photo(16, 16), size=16)
    l, ab_out = lab.rgb_to_l_ab(result)
    inside = (l[..., 0] > 0.15) & (l[..., 0] < 0.85)
    np.testing.assert_allclose(ab_out[inside], np.broadcast_to([0.1, -0.1], ab_out[inside].shape), atol=2e-3)


# ----------------------------------------------------------------------------------------------------
# The command


def test_folder_with_a_bad_file_does_the_rest_and_reports_it(models, tmp_path, capsys):
    src = tmp_path / "photos"
    save_photo(src / "a.jpg", photo(23, 37, 0), quality=95)
    save_photo(src / "trip" / "b.png", photo(30, 20, 1))
    (src / "trip" / "broken.jpg").write_bytes(b"not a photo at all")
    out = tmp_path / "out"
    status = colorize.main([str(src), "--model", str(models["loud"]), "--out", str(out), "--size", "16", "--batch", "2"])
    captured = capsys.readouterr()
    assert status == 1
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == ["a.png", "trip", "trip/b.png"]
    for name, size in (("a", (23, 37)), ("trip/b", (30, 20))):
        original = images.load(next(src.glob(name + ".*")))
        written = images.load(out / f"{name}.png")
        assert written.shape[:2] == size
        assert np.abs(l_of(written) - l_of(original)).max() < 1.0
        assert (lab.rgb_to_l_ab(written)[1][..., 0] * 128).mean() > 15  # coloured by the model
    assert "broken.jpg: not an image" in captured.err
    assert "2 colourised, 0 skipped, 1 failed" in captured.out


def test_existing_outputs_are_skipped_unless_overwrite(models, tmp_path, capsys):
    src = save_photo(tmp_path / "in" / "p.jpg", photo(20, 30))
    out = tmp_path / "out"
    args = [str(src), "--model", str(models["loud"]), "--out", str(out), "--size", "16"]
    assert colorize.main(args) == 0
    first = (out / "p.png").read_bytes()
    save_photo(out / "p.png", np.zeros((5, 5, 3)))  # stands for a result the user wants to keep
    kept = (out / "p.png").read_bytes()
    capsys.readouterr()
    assert colorize.main(args) == 0
    assert (out / "p.png").read_bytes() == kept
    assert "0 colourised, 1 skipped, 0 failed" in capsys.readouterr().out
    assert colorize.main(args + ["--overwrite"]) == 0
    assert (out / "p.png").read_bytes() == first
    assert "1 colourised, 0 skipped" in capsys.readouterr().out


def test_exif_rotated_photo_comes_out_upright(models, tmp_path):
    stored = np.zeros((20, 40, 3), np.float32)
    stored[:, :20] = 0.9  # left half light, as stored; orientation 6 shows the stored left side on top
    exif = Image.Exif()
    exif[0x0112] = 6
    src = save_photo(tmp_path / "camera.jpg", stored, exif=exif.tobytes(), quality=95)
    out = tmp_path / "out"
    assert colorize.main([str(src), "--model", str(models["loud"]), "--out", str(out), "--size", "16"]) == 0
    written = l_of(images.load(out / "camera.png"))
    assert written.shape == (40, 20)  # upright: taller than wide
    assert written[:18].mean() > 80 and written[22:].mean() < 10  # the light half on top


def test_output_folder_inside_the_input_folder_is_not_coloured_again(models, tmp_path, capsys):
    save_photo(tmp_path / "photos" / "p.png", photo(20, 30))
    args = [str(tmp_path / "photos"), "--model", str(models["loud"]), "--out", str(tmp_path / "photos" / "colour"),
            "--size", "16"]
    assert colorize.main(args) == 0
    assert colorize.main(args) == 0
    assert "0 colourised, 1 skipped, 0 failed" in capsys.readouterr().out.splitlines()[-1]
    assert sorted(p.name for p in (tmp_path / "photos").rglob("*.png")) == ["p.png", "p.png"]


@pytest.mark.parametrize("problem", ["missing", "not_keras", "wrong_interface", "missing_photo"])
def test_user_errors_are_one_line_and_exit_2(models, tmp_path, capsys, problem):
    src = save_photo(tmp_path / "p.png", photo(10, 10))
    model = {"missing": tmp_path / "nope.keras", "not_keras": tmp_path / "junk.keras"}.get(problem, models["loud"])
    (tmp_path / "junk.keras").write_text("this is not a zip file")
    if problem == "wrong_interface":
        model = tmp_path / "rgb.keras"
        keras.Sequential([keras.Input((None, None, 3)), layers.Conv2D(2, 1)]).save(model)
    photos = [str(tmp_path / "gone.jpg")] if problem == "missing_photo" else [str(src)]
    status = colorize.main(photos + ["--model", str(model), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    expected = {"missing": "nope.keras: no such model file", "not_keras": "junk.keras: cannot load the model",
                "wrong_interface": "(batch, height, width, 1)", "missing_photo": "gone.jpg: no such file or folder"}
    assert status == 2 and err.startswith("error: ") and expected[problem] in err and "\n" not in err
    assert not (tmp_path / "out").exists()  # nothing was started


def test_command_line_without_traceback(tmp_path):
    env = {"PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    result = run_python("-m", "colorlab.colorize", "data/samples", "--model", tmp_path / "missing.keras",
                        "--out", tmp_path / "out", env=env, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == f"error: {tmp_path / 'missing.keras'}: no such model file"
    assert "Traceback" not in result.stderr


def test_two_inputs_with_one_output_name_never_overwrite_each_other(models, tmp_path, capsys):
    save_photo(tmp_path / "in" / "x.jpg", photo(20, 30, 0))
    save_photo(tmp_path / "in" / "x.png", photo(20, 30, 1))
    out = tmp_path / "out"
    assert colorize.main([str(tmp_path / "in"), "--model", str(models["loud"]), "--out", str(out), "--size", "16"]) == 1
    captured = capsys.readouterr()
    assert "x.png: its output" in captured.err and "1 colourised, 0 skipped, 1 failed" in captured.out
    written = images.load(out / "x.png")  # the first in sorted order, x.jpg
    assert np.abs(l_of(written) - l_of(images.load(tmp_path / "in" / "x.jpg"))).max() < 1.0
