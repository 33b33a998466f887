"""colorlab.coloring and the colorize command: any photo size in, the same size and lightness out, colour
from the model; and nothing of the user's is ever replaced, followed or lost, whatever is in the way."""

import errno
import json
import os
import runpy
import signal
import subprocess
import sys
import tomllib
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest
from keras import layers
from PIL import Image
from skimage import color

from colorlab import UserError, coloring, files, images, lab, training
from colorlab.commands import colorize
from conftest import ROOT, messages
from test_images import metadata_bomb

# ----------------------------------------------------------------------------------------------------
# Models whose answer we know


def oracle_model():
    """ab = tanh(0.4 l - 0.2, 0.2 - 0.4 l) at every pixel: a 1x1 convolution, so the expected colour of
    each pixel is known exactly (and a misaligned crop or pad would show)."""
    model = keras.Sequential([keras.Input((None, None, 1)), layers.Conv2D(2, 1, activation="tanh")],
                             name="oracle")
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


def unet_model(depth=5):
    """A gan-like U-Net: ``depth`` halvings with skip connections, so it works only on sides that divide by
    2**depth (elsewhere its Concatenate fails), and predicts no colour (uv = 0)."""
    l = keras.Input((None, None, 1), name="l")
    x, skips = l, []
    for _ in range(depth):
        skips.append(x)
        x = layers.Conv2D(2, 3, strides=2, padding="same")(x)
    for skip in reversed(skips):
        x = layers.Concatenate()([layers.UpSampling2D(2)(x), skip])
    ab = layers.Conv2D(2, 1, kernel_initializer="zeros")(x)
    return keras.Model(l, ab, name="unet")


def halving_model():
    """Returns half its input's size: no padding can fix that."""
    return keras.Sequential([keras.Input((None, None, 1)), layers.Conv2D(2, 3, strides=2, padding="same")],
                            name="halving")


def nan_model():
    model = keras.Sequential([keras.Input((None, None, 1)), layers.Conv2D(2, 1)], name="broken")
    model.layers[0].set_weights([np.full((1, 1, 1, 2), np.nan, np.float32), np.zeros(2, np.float32)])
    return model


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Each model saved as ``<folder>/<name>/model.keras``, with no settings.json beside it."""
    folder = tmp_path_factory.mktemp("models")
    paths = {}
    for model in (oracle_model(), loud_model(), unet_model(), halving_model(), nan_model()):
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


def one_line_error(err):
    """The single message line of a failed command's stderr (TensorFlow's start-up log aside)."""
    lines = messages(err)
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


# ----------------------------------------------------------------------------------------------------
# Colouring (colorlab.coloring)


def test_odd_sized_photo_keeps_its_size_and_lightness_and_gets_the_model_colour(models, tmp_path):
    original = images.load(save_photo(tmp_path / "odd.png", photo(23, 37)))
    model = colorize.load_model(models["loud"])
    result = coloring.colorize(model, [original], size=16)[0]  # the model sees 16x26, padded to 16x32
    assert result.shape == (23, 37, 3) and result.dtype == np.float32
    images.save(tmp_path / "out.png", result)
    saved = images.load(tmp_path / "out.png")  # rounded to 8 bits, as a user gets it
    assert np.abs(l_of(saved) - l_of(original)).max() < 1.0  # L units: every detail of the input survives
    a, b = lab.rgb_to_l_ab(result)[1].reshape(-1, 2).T * 128
    assert a.mean() > 15 and b.mean() < -15  # the colour is the model's (magenta-blue), not the photo's


def test_colour_lands_on_the_right_pixels(models):
    rgb = photo(23, 37, seed=1)
    result = coloring.colorize(colorize.load_model(models["oracle"]), [rgb])[0]  # own size: padded to 24x40
    l, _ = lab.rgb_to_l_ab(rgb)
    got = lab.rgb_to_l_ab(result)[1]
    inside = (l[..., 0] > 0.15) & (l[..., 0] < 0.85)  # away from black and white, no gamut fitting
    assert inside.mean() > 0.5
    assert np.abs(got - oracle_ab(l))[inside].max() < 2e-3


def test_small_working_size_upsamples_colour_smoothly(models):
    rgb = photo(60, 90, seed=2)
    result = coloring.colorize(colorize.load_model(models["oracle"]), [rgb], size=30)[0]
    assert result.shape == (60, 90, 3)
    l, _ = lab.rgb_to_l_ab(rgb)
    got = lab.rgb_to_l_ab(result)[1]
    inside = (l[..., 0] > 0.15) & (l[..., 0] < 0.85)
    assert np.abs(got - oracle_ab(l))[inside].mean() < 0.01  # a smooth photo: colour at 1/3 scale is close


def test_colour_photos_count_as_their_grey_version(models):
    rgb = photo(20, 30, seed=3)
    model = colorize.load_model(models["loud"])
    np.testing.assert_allclose(coloring.colorize(model, [rgb], 16)[0],
                               coloring.colorize(model, [lab.grey_rgb(rgb)], 16)[0], atol=2e-3)


def test_batches_and_split_model_calls_give_the_same_result_as_one_photo_at_a_time(models):
    model = colorize.load_model(models["loud"])
    photos = [photo(23, 37, 0), photo(40, 30, 1), photo(24, 38, 2), photo(37, 23, 3)]
    together = coloring.colorize(model, photos, size=16)
    works = [coloring.prepare(p, 16) for p in photos]
    split = coloring.predict_ab(model, works, max_pixels=1)  # one photo per model call
    whole = coloring.predict_ab(model, works)
    for a, b in zip(split, whole):
        np.testing.assert_allclose(a, b, atol=1e-6)
    for rgb, result in zip(photos, together):
        np.testing.assert_allclose(result, coloring.colorize(model, [rgb], size=16)[0], atol=1e-5)


def test_fit_gamut_matches_scikit_image_and_keeps_lightness():
    rng = np.random.default_rng(0)
    l = rng.uniform(0, 1, (2000, 1)).astype(np.float32)
    ab = rng.uniform(-1, 1, (2000, 2)).astype(np.float32)
    inside = reference_in_gamut(l[:, 0], ab, 1e-6)
    assert 0.05 < inside.mean() < 0.95
    # Reference: scikit-image clips RGB; a colour is in gamut exactly when that round trip changes nothing.
    roundtrip = color.rgb2lab(lab.l_ab_to_rgb(l, ab)[:, None, :])[:, 0]
    error = np.abs(roundtrip - np.concatenate([l * 100, ab * 128], axis=-1)).max(axis=-1)
    assert error[inside].max() < 0.05 and error[~inside].min() > 0.05
    linear = np.stack(coloring.fit_gamut(l[:, 0], ab[:, 0], ab[:, 1]), axis=-1)  # planes, fitted
    assert linear.min() >= -1e-6 and linear.max() <= 1 + 1e-6  # in gamut, every one
    unfitted = np.stack(lab.lab_to_linear(l[:, 0], ab[:, 0], ab[:, 1]), axis=-1)
    np.testing.assert_array_equal(linear[inside], unfitted[inside])  # in-gamut colours are left alone
    fitted = color.rgb2lab(lab.linear_to_rgb(list(linear.T))[:, None, :])[:, 0]
    np.testing.assert_allclose(fitted[inside, 1:], ab[inside] * 128, atol=0.05)
    assert np.abs(fitted[:, 0] - l[:, 0] * 100).max() < 0.05  # lightness kept exactly ...
    ratio = np.linalg.norm(fitted[:, 1:], axis=-1) / np.linalg.norm(ab * 128, axis=-1)
    assert ratio[~inside].max() < 1 and np.median(ratio[~inside]) > 0.2  # ... by giving up only some chroma
    reference = reference_fit_gamut(l, ab)  # and as the bisection before the fast path did
    np.testing.assert_allclose(fitted[:, 1:], reference * 128, atol=0.2)


# Today's path, kept as the reference the fast one must match (micrograd style): coloring.colorize as it was
# before the performance work, for one photo in Lab: scikit-image's conversions, the gamut fit by bisection
# (its code copied), Pillow's resizing, the model called eagerly.

REFERENCE_WHITE = np.array([0.95047, 1.0, 1.08883], np.float32)
REFERENCE_RGB_FROM_XYZ = np.array([[3.24048134, -1.53715152, -0.49853633], [-0.96925495, 1.87599, 0.04155593],
                                   [0.05564664, -0.20404134, 1.05731107]], np.float32)


def reference_l_ab(rgb):
    lab_values = color.rgb2lab(np.asarray(rgb, np.float32))
    return (lab_values[..., :1] / 100).astype(np.float32), (lab_values[..., 1:] / 128).astype(np.float32)


def reference_rgb(l, ab):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        rgb = color.lab2rgb(np.concatenate([l * 100.0, ab * 128.0], axis=-1))
    return np.clip(rgb, 0.0, 1.0).astype(np.float32)


def reference_in_gamut(l, ab, tolerance):
    def f_inverse(f):
        return np.where(f > 6.0 / 29.0, f * f * f, (f - 16.0 / 116.0) / 7.787)

    fy = (np.clip(l, 0.0, 1.0) * 100.0 + 16.0) / 116.0
    x = f_inverse(fy + ab[:, 0] * np.float32(128.0 / 500.0)) * REFERENCE_WHITE[0]
    y = f_inverse(fy) * REFERENCE_WHITE[1]
    z = f_inverse(fy - ab[:, 1] * np.float32(128.0 / 200.0)) * REFERENCE_WHITE[2]
    inside = np.ones(len(fy), dtype=bool)
    for row in REFERENCE_RGB_FROM_XYZ:
        channel = row[0] * x + row[1] * y + row[2] * z
        inside &= (channel >= -tolerance) & (channel <= 1.0 + tolerance)
    return inside


def reference_fit_gamut(l, ab, steps=10, tolerance=1e-6):
    l, ab = np.asarray(l, dtype=np.float32), np.array(ab, dtype=np.float32)
    flat_l, flat_ab = l.reshape(-1), ab.reshape(-1, 2)
    out = ~reference_in_gamut(flat_l, flat_ab, tolerance)
    if not out.any():
        return ab
    l_out, ab_out = flat_l[out], flat_ab[out]
    low = np.zeros(len(l_out), np.float32)
    step = np.float32(0.5)
    for _ in range(steps):
        trial = low + step
        low = np.where(reference_in_gamut(l_out, ab_out * trial[:, None], tolerance), trial, low)
        step /= 2
    flat_ab[out] = ab_out * low[:, None]
    return flat_ab.reshape(ab.shape)


def reference_colorize(model, rgb, size=None, multiple=8):
    """One float RGB photo coloured as coloring.colorize coloured it before the fast path."""
    height, width = rgb.shape[:2]
    (h, w), padded = (height, width), None
    if size is not None:
        scale = min(size / min(height, width), 4 * size / max(height, width))
        h, w = max(1, round(height * scale)), max(1, round(width * scale))
    padded = (h + -h % multiple, w + -w % multiple)
    l = reference_l_ab(rgb)[0]
    resized = np.clip(images.resize(rgb, h, w, "lanczos"), 0, 1) if (h, w) != (height, width) else None
    small = l if resized is None else reference_l_ab(resized)[0]
    batch = images.pad_to_multiple(small, 1, padded)[None]
    ab = np.asarray(keras.ops.convert_to_numpy(model(batch, training=False)), np.float32)[0, :h, :w]
    ab = images.resize(ab, height, width, "bilinear")
    return reference_rgb(l, reference_fit_gamut(l, ab))


def eight_bit(rgb):
    return rgb if rgb.dtype == np.uint8 else (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)


def sample_crop(height, width):
    """A crop of a sample photo: real textures, edges and saturated colours."""
    return images.load_8bit(ROOT / "data" / "samples" / "coffee.jpg")[40 : 40 + height, 60 : 60 + width]


@pytest.mark.parametrize("name, rgb, size", [
    ("odd-sized", photo(23, 37), 16),
    ("panorama", photo(20, 300, 1), 16),  # capped at 4 x 16 wide: 4x64, padded to 8x64
    ("greyscale only", np.repeat(photo(31, 45, 2)[..., :1], 3, axis=-1), 24),
    ("a real photo", sample_crop(97, 131), 40),
    ("at its own size", photo(21, 35, 3), None),
    ("working size above its own", photo(19, 29, 4), 40),  # the colour is scaled down, not up
])
@pytest.mark.parametrize("model_name", ["loud", "oracle"])  # loud: saturated, far out of the gamut
def test_the_fast_path_gives_the_reference_pixels(models, name, rgb, size, model_name):
    model = colorize.load_model(models[model_name])
    as_float = eight_bit(rgb).astype(np.float32) / 255  # as images.load reads a photo: 8-bit / 255
    expected = eight_bit(reference_colorize(model, as_float, size))
    for given in (as_float, eight_bit(rgb)):  # float photos (the stages' grids) and 8-bit (the command)
        result = coloring.colorize(model, [given], size)[0]
        assert result.shape == rgb.shape and result.dtype == given.dtype  # 8-bit in, 8-bit out
        difference = np.abs(eight_bit(result).astype(int) - expected)
        assert difference.max() <= 1, (name, model_name, given.dtype, difference.max())


def test_the_loud_model_s_colours_are_out_of_the_gamut_so_the_fit_is_tested():
    l = np.linspace(0, 1, 101, dtype=np.float32)
    ab = np.tile(np.float32([[0.96, -0.9]]), (101, 1))  # what loud predicts
    assert not reference_in_gamut(l, ab, 1e-6).any()  # at every lightness: the fit has work everywhere


def test_the_working_size_is_the_shorter_side_as_in_training():
    assert coloring.working_shape(300, 451, 48) == ((48, 72), (48, 72))
    assert coloring.working_shape(23, 37, 16) == ((16, 26), (16, 32))
    assert coloring.working_shape(20, 10000, 16) == ((1, 64), (8, 64))  # a panorama is capped at 4 x 16
    assert colorize.working_pixels(23, 37, 16) == 16 * 32


def test_the_multiple_a_model_needs_is_found_by_trying_small_inputs(models):
    found = {name: colorize.infer_multiple(colorize.load_model(models[name]))
             for name in ("oracle", "loud", "unet")}
    assert found == {"oracle": 1, "loud": 8, "unet": 32}
    assert colorize.infer_multiple(colorize.load_model(models["halving"])) is None


def test_a_model_that_changes_the_size_or_predicts_nan_stops_in_one_line(models):
    def guarded(name):  # as the commands call a model
        return colorize._Guarded(colorize.load_model(models[name]))

    with pytest.raises(colorize.SizeMismatch) as caught:
        coloring.colorize(guarded("halving"), [photo(20, 30)], multiple=8)
    assert "into a 16x12x2 output, not 32x24x2" in str(caught.value) and "multiple" not in str(caught.value)
    with pytest.raises(colorize.SizeMismatch, match=r"fails on a 24x16 input \(.*\)"):  # U-Net's Concatenate
        coloring.colorize(guarded("unet"), [photo(16, 24)], multiple=8)
    with pytest.raises(colorize.NotANumber, match="not numbers"):
        coloring.colorize(guarded("broken"), [photo(8, 8)])


# ----------------------------------------------------------------------------------------------------
# The model and its settings.json


def test_working_settings_come_from_the_settings_beside_the_model(models, tmp_path):
    assert colorize.saved_settings(models["oracle"]) == {"size": 256, "multiple": 8, "color_space": "lab"}
    saved = {"IMAGE_SIZE": 48, "EPOCHS": 2, "MULTIPLE": 32, "COLOR_SPACE": "yuv"}
    (tmp_path / "settings.json").write_text(json.dumps(saved))
    expected = {"size": 48, "multiple": 32, "color_space": "yuv"}
    assert colorize.saved_settings(tmp_path / "model.keras") == expected
    assert colorize.resolve_settings(tmp_path / "model.keras", size=64) == (64, 32, "yuv")  # given first


def hostile_settings(folder):
    """Damaged or hostile settings.json files beside a model: name -> what the warning says."""
    cases = {}

    def case(name, make, said):
        (folder / name).mkdir()
        make(folder / name / "settings.json")
        cases[name] = said

    case("huge", lambda p: p.write_bytes(b'{"IMAGE_SIZE": 64, "x": "' + bytes(2 << 20) + b'"}'), "more than")
    case("nested", lambda p: p.write_text("[" * 100_000 + "]" * 100_000), "not valid JSON")
    case("fifo", os.mkfifo, "not a regular file")  # reading it would wait for a writer forever
    case("zeros", lambda p: os.symlink("/dev/zero", p), "not a regular file")  # endless
    case("list", lambda p: p.write_text("[256, 8]"), "holds a list, not the settings of a stage")
    wrong = {"IMAGE_SIZE": "big", "MULTIPLE": 10**9, "COLOR_SPACE": 5}
    case("types", lambda p: p.write_text(json.dumps(wrong)),
         "ignored IMAGE_SIZE='big' (expected a whole number, 1 to 8192), MULTIPLE=1000000000")
    case("bool", lambda p: p.write_text(json.dumps({"IMAGE_SIZE": True, "COLOR_SPACE": "hsv"})),
         "COLOR_SPACE='hsv'")
    case("broken", lambda p: p.write_bytes(b'{"IMAGE_SIZE": 6\xff'), "not valid JSON")
    return cases


def test_a_damaged_or_hostile_settings_json_is_ignored_in_one_line(tmp_path):
    for name, said in hostile_settings(tmp_path).items():
        warned = []
        settings = colorize.saved_settings(tmp_path / name / "model.keras", warn=warned.append)
        assert settings == {"size": 256, "multiple": 8, "color_space": "lab"}, name
        assert len(warned) == 1 and said in warned[0], warned
        assert str(tmp_path / name / "settings.json") in warned[0]
        assert "\n" not in warned[0] and len(warned[0]) < 300


def test_a_mixed_precision_model_is_loaded_in_float32_with_its_weights(models, tmp_path):
    keras.config.set_dtype_policy("mixed_float16")  # as a stage run with MIXED_PRECISION=True
    try:
        model = loud_model()
    finally:
        keras.config.set_dtype_policy("float32")
    assert model.layers[0].dtype_policy.name == "mixed_float16"
    training.save_model(model, tmp_path / "model.keras")
    loaded = colorize.load_model(tmp_path / "model.keras")
    assert {layer.dtype_policy.name for layer in loaded.layers} == {"float32"}
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        assert a.dtype == np.float32
        np.testing.assert_array_equal(a, b)
    x = photo(16, 24)[None, ..., :1]
    out = np.asarray(loaded(x))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, np.asarray(model(x), np.float32), atol=5e-3)
    float32 = keras.saving.load_model(models["loud"], compile=False)
    assert colorize.in_float32(float32) is float32  # a float32 model: as it is


def test_damaged_keras_files_say_so_not_file_not_found(models, tmp_path):
    whole = models["oracle"].read_bytes()
    (tmp_path / "half.keras").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "text.keras").write_text("this is not a zip file")
    (tmp_path / "empty.keras").write_bytes(b"")
    for name in ("half.keras", "text.keras", "empty.keras"):
        with pytest.raises(UserError) as caught:
            colorize.load_model(tmp_path / name)
        message = str(caught.value)
        assert message.startswith(f"{tmp_path / name}: damaged or not a Keras model"), message
        assert "not found" not in message.lower() and "\n" not in message
    os.mkfifo(tmp_path / "pipe.keras")
    with pytest.raises(UserError, match="pipe.keras: not a regular file"):
        colorize.load_model(tmp_path / "pipe.keras")


def test_models_that_do_not_map_l_to_ab_are_refused_in_one_line():
    rgb_in = keras.Sequential([keras.Input((None, None, 3)), layers.Conv2D(2, 1)], name="rgb_in")
    three_out = keras.Sequential([keras.Input((None, None, 1)), layers.Conv2D(3, 1)], name="three_out")
    fixed = keras.Sequential([keras.Input((64, 64, 1)), layers.Conv2D(2, 1)], name="fixed")
    with pytest.raises(UserError, match=r"takes input \(None, None, None, 3\).*\(batch, height, width, 1\)"):
        colorize.check_model(rgb_in)
    with pytest.raises(UserError, match=r"outputs \(None, None, None, 3\).*needs ab of shape \(batch, h"):
        colorize.check_model(three_out)
    with pytest.raises(UserError, match=r"takes only 64x64 inputs"):
        colorize.check_model(fixed)
    l_in = keras.Input((None, None, 1))
    two_inputs = keras.Model([l_in, keras.Input((8,), name="embedding")], layers.Conv2D(2, 1)(l_in))
    with pytest.raises(UserError, match="needs one lightness input l"):
        colorize.check_model(two_inputs)


# ----------------------------------------------------------------------------------------------------
# The command


def args_for(src, model, out, *more):
    return [str(src), "--model", str(model), "--out", str(out), *map(str, more)]


def test_folder_with_a_bad_file_does_the_rest_and_reports_it(models, tmp_path, capsys):
    src = tmp_path / "photos"
    save_photo(src / "a.jpg", photo(23, 37, 0), quality=95)
    save_photo(src / "trip" / "b.png", photo(30, 20, 1))
    (src / "trip" / "broken.jpg").write_bytes(b"not a photo at all")
    (src / "trip" / "profile.png").write_bytes(metadata_bomb("iCCP"))
    (src / "trip" / "text.png").write_bytes(metadata_bomb("iTXt"))
    out = tmp_path / "out"
    status = colorize.main(args_for(src, models["loud"], out, "--size", 16, "--batch", 2))
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
    for name in ("profile.png", "text.png"):
        assert f"  {src / 'trip' / name}: refused: its metadata cannot be read safely" in captured.out
    assert "2 colourised, 0 skipped, 3 failed" in captured.out and "Traceback" not in captured.err


def test_existing_outputs_are_skipped_unless_overwrite(models, tmp_path, capsys):
    src = save_photo(tmp_path / "in" / "p.jpg", photo(20, 30))
    out = tmp_path / "out"
    args = args_for(src, models["loud"], out, "--size", 16)
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


def test_the_threads_lose_no_photo_when_some_fail_in_the_middle(models, tmp_path, monkeypatch, capsys):
    """Reading, the network and writing run in threads of their own: a photo that fails in any of them is one
    failure line, and every other photo is written, with exactly the pixels of coloring.colorize."""
    src = tmp_path / "in"
    for i in range(9):
        save_photo(src / f"{i}.png", photo(20 + i, 30, i))
    (src / "3.png").write_bytes(b"not a photo")  # fails when read
    real_finish, real_save = coloring.finish, images.save

    def finish(rgb, ab, color_space="lab"):  # photo 5 is too large for the memory left
        if rgb.shape[0] == 25:
            raise MemoryError
        return real_finish(rgb, ab, color_space)

    def save(path, rgb):  # photo 7 cannot be written (not a full disk: the others go on)
        if Path(path).name == "7.png":
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real_save(path, rgb)

    monkeypatch.setattr(coloring, "finish", finish)
    monkeypatch.setattr(images, "save", save)
    out = tmp_path / "out"
    status = colorize.main(args_for(src, models["loud"], out, "--size", 16, "--batch", 2))
    captured = capsys.readouterr()
    assert status == 1
    assert sorted(p.name for p in out.iterdir()) == [f"{i}.png" for i in (0, 1, 2, 4, 6, 8)]
    assert "6 colourised, 0 skipped, 3 failed:" in captured.out
    assert f"  {src / '3.png'}: not an image" in captured.out
    assert f"  {src / '5.png'}: too large for the memory available" in captured.out
    assert f"  {src / '7.png'}: cannot write {out / '7.png'} (Input/output error)" in captured.out
    monkeypatch.setattr(coloring, "finish", real_finish)
    monkeypatch.setattr(images, "save", real_save)
    model = colorize.load_model(models["loud"])
    for i in (0, 4, 8):
        expected = coloring.colorize(model, [images.load_8bit(src / f"{i}.png")], 16)[0]
        np.testing.assert_array_equal(images.load_8bit(out / f"{i}.png"), expected)
    assert colorize.main(args_for(src, models["loud"], out, "--size", 16)) == 1  # again: the rest, skipped
    assert "2 colourised, 6 skipped, 1 failed" in capsys.readouterr().out


def test_an_output_path_that_is_a_folder_is_a_failure_naming_it_not_skipped(models, tmp_path, capsys):
    src = save_photo(tmp_path / "in" / "p.jpg", photo(20, 30))
    (tmp_path / "out" / "p.png").mkdir(parents=True)
    for extra in ([], ["--overwrite"]):
        assert colorize.main(args_for(src, models["loud"], tmp_path / "out", "--size", 16, *extra)) == 1
        out = capsys.readouterr().out
        assert "0 colourised, 0 skipped, 1 failed" in out and "skipped: " not in out
        assert f"  {src}: its output {tmp_path / 'out' / 'p.png'} is a folder" in out
    assert (tmp_path / "out" / "p.png").is_dir()


def test_exif_rotated_photo_comes_out_upright(models, tmp_path):
    stored = np.zeros((20, 40, 3), np.float32)
    stored[:, :20] = 0.9  # left half light, as stored; orientation 6 shows the stored left side on top
    exif = Image.Exif()
    exif[0x0112] = 6
    src = save_photo(tmp_path / "camera.jpg", stored, exif=exif.tobytes(), quality=95)
    assert colorize.main(args_for(src, models["loud"], tmp_path / "out", "--size", 16)) == 0
    written = l_of(images.load(tmp_path / "out" / "camera.png"))
    assert written.shape == (40, 20)  # upright: taller than wide
    assert written[:18].mean() > 80 and written[22:].mean() < 10  # the light half on top


def test_output_folder_inside_the_input_folder_is_not_coloured_again(models, tmp_path, capsys):
    save_photo(tmp_path / "photos" / "p.png", photo(20, 30))
    args = args_for(tmp_path / "photos", models["loud"], tmp_path / "photos" / "colour", "--size", 16)
    assert colorize.main(args) == 0
    assert colorize.main(args) == 0
    assert "0 colourised, 1 skipped, 0 failed" in capsys.readouterr().out.splitlines()[-1]
    assert sorted(p.name for p in (tmp_path / "photos").rglob("*.png")) == ["p.png", "p.png"]


@pytest.mark.parametrize("problem", ["missing", "damaged", "wrong_interface", "missing_photo", "out_a_file"])
def test_user_errors_are_one_line_and_exit_2(models, tmp_path, capsys, problem):
    src = save_photo(tmp_path / "p.png", photo(10, 10))
    named = {"missing": tmp_path / "nope.keras", "damaged": tmp_path / "junk.keras"}
    model = named.get(problem, models["loud"])
    (tmp_path / "junk.keras").write_text("this is not a zip file")
    if problem == "wrong_interface":
        model = tmp_path / "rgb.keras"
        keras.Sequential([keras.Input((None, None, 3)), layers.Conv2D(2, 1)]).save(model)
    out = tmp_path / "out"
    if problem == "out_a_file":
        out = src
    photos = tmp_path / "gone.jpg" if problem == "missing_photo" else src
    status = colorize.main(args_for(photos, model, out))
    err = one_line_error(capsys.readouterr().err)
    expected = {"missing": "nope.keras: no such model file",
                "damaged": "junk.keras: damaged or not a Keras model",
                "wrong_interface": "(batch, height, width, 1)",
                "missing_photo": "gone.jpg: no such file or folder",
                "out_a_file": "p.png: --out is a file, not a folder"}
    assert status == 2 and expected[problem] in err
    assert not (tmp_path / "out").exists()  # nothing was started


@pytest.mark.parametrize("out", [".", "/", "HOME", "data", "data/samples", "REPO"])
def test_out_must_be_a_folder_of_its_own(models, tmp_path, capsys, monkeypatch, out):
    monkeypatch.chdir(ROOT)
    out = {"HOME": str(Path.home()), "REPO": str(ROOT)}.get(out, out)
    src = save_photo(tmp_path / "p.png", photo(10, 10))
    assert colorize.main(args_for(src, models["loud"], out)) == 2
    assert "--out" in one_line_error(capsys.readouterr().err)
    assert not (ROOT / "p.png").exists() and not (ROOT / "data" / "p.png").exists()


def test_two_inputs_with_one_output_name_never_overwrite_each_other(models, tmp_path, capsys):
    save_photo(tmp_path / "in" / "x.jpg", photo(20, 30, 0))
    save_photo(tmp_path / "in" / "x.png", photo(20, 30, 1))
    out = tmp_path / "out"
    assert colorize.main(args_for(tmp_path / "in", models["loud"], out, "--size", 16)) == 1
    captured = capsys.readouterr()
    assert "x.png: its output" in captured.err and "1 colourised, 0 skipped, 1 failed" in captured.out
    written = images.load(out / "x.png")  # the first in sorted order, x.jpg
    assert np.abs(l_of(written) - l_of(images.load(tmp_path / "in" / "x.jpg"))).max() < 1.0


def test_a_photo_is_never_replaced_even_under_another_spelling_of_its_name(models, tmp_path, capsys):
    # On macOS and Windows, Photo.JPG and Photo.jpg are one file. A hard link is the same situation on any
    # disk: two names, one file, which string comparison would take for two.
    folder = tmp_path / "album"
    original = save_photo(folder / "Photo.JPG", photo(20, 30), format="JPEG", quality=90)
    os.link(original, folder / "Photo.jpg")
    before = original.read_bytes()
    args = args_for(folder, models["loud"], folder, "--size", 16, "--format", "jpg", "--overwrite")
    assert colorize.main(args) == 1
    out = capsys.readouterr().out
    assert original.read_bytes() == before and (folder / "Photo.jpg").read_bytes() == before
    assert "0 colourised, 0 skipped, 2 failed" in out
    assert f"its output would replace the input photo {folder / 'Photo.jpg'}" in out
    assert sorted(p.name for p in folder.iterdir()) == ["Photo.JPG", "Photo.jpg"]  # no temporary left either


def test_links_planted_in_the_output_folder_are_never_written_through(models, tmp_path, capsys):
    src = tmp_path / "in"
    save_photo(src / "x.png", photo(20, 30, 0))
    save_photo(src / "trip" / "y.png", photo(20, 30, 1))
    out, victim, elsewhere = tmp_path / "out", tmp_path / "victim.txt", tmp_path / "elsewhere"
    victim.write_text("precious")
    elsewhere.mkdir()
    out.mkdir()
    os.symlink(victim, out / "x.png")  # at the output's own name
    os.symlink(elsewhere, out / "trip")  # a folder on the way to an output
    assert colorize.main(args_for(src, models["loud"], out, "--size", 16)) == 1  # no --overwrite: skipped
    assert colorize.main(args_for(src, models["loud"], out, "--size", 16, "--overwrite")) == 1
    captured = capsys.readouterr().out
    assert victim.read_text() == "precious" and list(elsewhere.iterdir()) == []
    assert (out / "x.png").is_file() and not (out / "x.png").is_symlink()  # replaced, not followed
    assert images.load(out / "x.png").shape == (20, 30, 3)
    assert f"refused to write {out / 'trip' / 'y.png'}: {out / 'trip'} is a symbolic link" in captured


def test_a_killed_run_leaves_a_temporary_that_the_next_run_removes_and_only_that(models, tmp_path, capsys):
    src = save_photo(tmp_path / "in" / "a.png", photo(20, 30))
    out = tmp_path / "out"
    out.mkdir()
    # A real process, killed for real (SIGKILL) while writing a.png through files.atomic_path, as colorize
    # does.
    code = ("import os, signal, sys; from pathlib import Path; from colorlab import files\n"
            "with files.atomic_path(Path(sys.argv[1])) as tmp:\n"
            "    Path(tmp).write_bytes(b'half a png')\n"
            "    os.kill(os.getpid(), signal.SIGKILL)\n")
    killed = subprocess.run([sys.executable, "-c", code, str(out / "a.png")], cwd=ROOT, capture_output=True)
    assert killed.returncode == -signal.SIGKILL
    left = [p.name for p in out.iterdir()]
    assert len(left) == 1 and left[0].startswith(".a.png.colorlab-tmp-") and left[0].endswith(".png")
    alive = f".b.png.colorlab-tmp-{os.getppid()}-abcd1234.png"  # a process still writing: its file is kept
    similar = [".holiday.colorlab-tmp-notes.png", "a.png.colorlab-tmp-1-abcd1234.png",  # a user's files
               ".x.colorlab-tmp-12.png", ".my.colorlab-tmp-99999999-list.txt.bak"]  # with names like ours
    for name in [alive, *similar]:
        (out / name).write_text("keep")
    assert colorize.main(args_for(src, models["loud"], out, "--size", 16)) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(["a.png", alive, *similar])


def test_a_photo_with_a_name_of_251_characters_is_coloured(models, tmp_path, capsys):
    src = save_photo(tmp_path / "in" / ("p" * 247 + ".jpg"), photo(20, 30))
    too_long = save_photo(tmp_path / "in" / ("q" * 251 + ".jpg"), photo(20, 30))  # as .webp: 256 characters
    out = tmp_path / "out"
    assert colorize.main(args_for(src, models["loud"], out, "--size", 16)) == 0
    assert images.load(out / ("p" * 247 + ".png")).shape == (20, 30, 3)
    assert colorize.main(args_for(too_long, models["loud"], out, "--size", 16, "--format", "webp")) == 1
    captured = capsys.readouterr()
    assert "File name too long" in captured.out and "Traceback" not in captured.err
    assert sorted(p.name for p in out.iterdir()) == ["p" * 247 + ".png"]


def write_fails(monkeypatch, code, after=0):
    """images.save fails with ``code`` from the ``after``-th photo on, inside files.atomic_path, as a disk
    would."""
    real_save, saved = images.save, []

    def save(path, rgb):
        if len(saved) >= after:
            with files.atomic_path(path) as tmp:
                Path(tmp).write_bytes(b"half")
                raise OSError(code, os.strerror(code))
        saved.append(path)
        real_save(path, rgb)

    monkeypatch.setattr(images, "save", save)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EACCES])
def test_a_write_that_no_photo_can_pass_stops_with_the_right_advice(models, tmp_path, monkeypatch, capsys,
                                                                     code):
    for i in range(3):
        save_photo(tmp_path / "in" / f"{i}.png", photo(20, 30, i))
    write_fails(monkeypatch, code, after=1)
    assert colorize.main(args_for(tmp_path / "in", models["loud"], tmp_path / "out", "--size", 16)) == 2
    err = one_line_error(capsys.readouterr().err)
    assert err.startswith(f"error: {tmp_path / 'out' / '1.png'}: cannot write it ({os.strerror(code)})")
    assert "1 photo was coloured before it" in err
    if code == errno.ENOSPC:
        assert "run the same command again to do the rest" in err
    else:
        assert "run the same command again" not in err and "choose another --out" in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["0.png"]


def test_a_model_that_predicts_nan_fails_in_one_line_and_writes_nothing(models, tmp_path, capsys):
    src = save_photo(tmp_path / "in" / "p.png", photo(20, 30))
    assert colorize.main(args_for(src, models["broken"], tmp_path / "out", "--size", 16)) == 2
    err = one_line_error(capsys.readouterr().err)
    assert err.startswith(f"error: {models['broken']}: predicts colors that are not numbers (NaN)")
    assert not (tmp_path / "out" / "p.png").exists()


def test_a_gan_model_without_its_settings_finds_its_multiple(models, tmp_path, capsys):
    src = save_photo(tmp_path / "in" / "p.png", photo(23, 37))
    for extra in ([], ["--multiple", 8]):  # no settings.json (so 8), or a --multiple that does not fit
        args = args_for(src, models["unet"], tmp_path / "out", "--size", 16, "--overwrite", *extra)
        assert colorize.main(args) == 0
        captured = capsys.readouterr()
        notes = [line for line in messages(captured.err) if line.startswith("note: ")]
        assert notes == [f"note: {models['unet']} does not keep the size of inputs padded to multiples of 8; "
                         f"it does for multiples of 32: using --multiple 32"]
        result = images.load(tmp_path / "out" / "p.png")
        assert np.abs(l_of(result) - l_of(images.load(src))).max() < 1.0
        assert "1 colourised" in captured.out


def test_a_model_that_halves_the_resolution_is_refused_without_advice_to_pad(models, tmp_path, capsys):
    src = save_photo(tmp_path / "in" / "p.png", photo(20, 30))
    assert colorize.main(args_for(src, models["halving"], tmp_path / "out", "--size", 16)) == 2
    err = one_line_error(capsys.readouterr().err)
    assert err.startswith(f"error: {models['halving']}: turned a 24x16 input into a 12x8x2 output")
    assert err.endswith("it cannot colour photos at their input's size")
    assert "pad" not in err and "--multiple" not in err
    assert not (tmp_path / "out" / "p.png").exists()


def test_a_hostile_settings_json_beside_the_model_is_one_warning_and_the_defaults(models, tmp_path, capsys):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.keras").write_bytes(models["loud"].read_bytes())
    os.symlink("/dev/zero", folder / "settings.json")
    src = save_photo(tmp_path / "in" / "p.png", photo(20, 30))
    assert colorize.main(args_for(src, folder / "model.keras", tmp_path / "out")) == 0
    captured = capsys.readouterr()
    assert messages(captured.err) == [f"warning: {folder / 'settings.json'}: not a regular file; it was "
                                      f"ignored: colorize uses its defaults (--size 256, --multiple 8, lab)"]
    assert "(working size 256)" in captured.out


def test_batches_are_bounded_by_the_pixels_at_the_working_size_too(models, tmp_path, monkeypatch, capsys):
    for i in range(8):
        save_photo(tmp_path / "in" / f"{i}.png", photo(20, 30, i))
    calls = []

    def spy(model, works, max_pixels=coloring.MAX_BATCH_PIXELS):
        calls.append([h8 * w8 for _, (h8, w8) in works])
        return [np.zeros((*l.shape[:2], 2), np.float32) for l, _ in works]  # only the batching is under test

    def shape_only(rgb, size=None, multiple=8, color_space="lab"):  # the working shape, without making it
        return np.zeros((1, 1, 1), np.float32), coloring.working_shape(*rgb.shape[:2], size, multiple)[1]

    monkeypatch.setattr(coloring, "predict_ab", spy)
    monkeypatch.setattr(coloring, "prepare", shape_only)
    assert colorize.main(args_for(tmp_path / "in", models["loud"], tmp_path / "out", "--size", 3000)) == 0
    assert calls == [[3000 * 4504]] * 8  # 3000x4500 (padded to 4504) each: never two of them at once
    calls.clear()
    assert colorize.main(args_for(tmp_path / "in", models["loud"], tmp_path / "out2", "--size", 16,
                                  "--batch", 3)) == 0
    assert sum(map(len, calls)) == 8 and max(map(len, calls)) <= 3  # those read already, up to --batch

    # batches() itself: bounded by the photos, by their pixels as loaded, and by the working pixels.
    rgbs = {i: np.zeros((100 * (i + 1), 100, 3), np.float32) for i in range(6)}
    def sizes(**bounds):
        return [[i for i, _ in b] for b in colorize.batches(range(6), rgbs.get, **bounds)]
    assert sizes(size=4) == [[0, 1, 2, 3], [4, 5]]
    assert sizes(size=8, max_pixels=30_000) == [[0, 1], [2], [3], [4], [5]]
    assert sizes(size=8, working=lambda rgb: 2_000_000, max_working=4_000_000) == [[0, 1], [2, 3], [4, 5]]


def test_no_python_warning_reaches_the_output(models, tmp_path, monkeypatch, capsys):
    src = save_photo(tmp_path / "in" / "p.png", photo(20, 30))
    real = {step: getattr(coloring, step) for step in ("prepare", "predict_ab", "finish")}

    def noisy(step):  # in each of the command's threads
        def call(*args, **kwargs):
            warnings.warn("a library's warning", UserWarning)
            np.log(np.zeros(2))  # NumPy's RuntimeWarning: divide by zero
            return real[step](*args, **kwargs)
        return call

    for step in real:
        monkeypatch.setattr(coloring, step, noisy(step))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning that leaked would stop the command here
        assert colorize.main(args_for(src, models["loud"], tmp_path / "out", "--size", 16)) == 0
    captured = capsys.readouterr()
    assert "Warning" not in captured.err + captured.out and messages(captured.err) == []


def test_the_console_scripts_and_python_m_run_the_commands(tmp_path, monkeypatch, capsys):
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"colorize": "colorlab.commands.colorize:main",
                       "evaluate": "colorlab.commands.evaluate:main"}
    for target in scripts.values():
        module, _, function = target.partition(":")
        assert callable(getattr(__import__(module, fromlist=[function]), function))

    # python -m runs the module as __main__ (here in this process: a fresh one would spend its time importing
    # TensorFlow). A full-like model, whose saved file uses colorlab's GreySRGB layer, loads and colours.
    l = keras.Input((None, None, 1), name="l")
    grey = lab.GreySRGB()(l)
    model = keras.Model(l, layers.Conv2D(2, 1, kernel_initializer="zeros")(grey), name="full_like")
    model.save(tmp_path / "model.keras")
    save_photo(tmp_path / "in" / "p.png", photo(20, 30))
    argv = ["colorize", tmp_path / "in", "--model", tmp_path / "model.keras", "--out", tmp_path / "out",
            "--size", 16]
    monkeypatch.setattr(sys, "argv", list(map(str, argv)))
    monkeypatch.delitem(sys.modules, "colorlab.commands.colorize")  # as in a fresh process
    with pytest.raises(SystemExit) as exited:
        runpy.run_module("colorlab.commands.colorize", run_name="__main__")
    assert exited.value.code == 0
    assert (tmp_path / "out" / "p.png").is_file()
    assert "1 colourised, 0 skipped, 0 failed" in capsys.readouterr().out
