"""colorlab.ops, the keras.ops Lab and YUV conversions, against scikit-image (through colorlab.lab), and the
uint8 training path against the float one."""

import importlib.util

import keras
import numpy as np
import pytest

from colorlab import data, lab, ops, training
from conftest import ROOT, run_python

SAMPLES = ROOT / "data" / "samples"


def numpy(x):
    return keras.ops.convert_to_numpy(x)


def test_primaries_greys_and_random_colours_match_scikit_image():
    rng = np.random.default_rng(0)
    corners = np.array([[r, g, b] for r in (0, 255) for g in (0, 255) for b in (0, 255)], np.uint8)
    greys = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1)  # both sides of every threshold
    rgb8 = np.concatenate([corners, greys, rng.integers(0, 256, (4000, 3), dtype=np.uint8)])
    want_l, want_ab = lab.rgb_to_l_ab(rgb8 / 255.0)
    for rgb in (rgb8, rgb8.astype(np.float32) / 255.0):  # uint8 in [0, 255] and float in [0, 1]
        l, ab = ops.rgb_to_l_ab(rgb)
        assert numpy(l).dtype == np.float32 and numpy(l).shape == (len(rgb8), 1) and numpy(ab).shape == (len(rgb8), 2)
        np.testing.assert_allclose(numpy(l), want_l, atol=1e-3)
        np.testing.assert_allclose(numpy(ab), want_ab, atol=1e-3)
        np.testing.assert_allclose(numpy(ops.rgb_to_l(rgb)), want_l, atol=1e-3)
    # black is l = 0, white l = 1, and greys have no colour
    np.testing.assert_allclose(numpy(ops.rgb_to_l(corners[[0, -1]])), [[0.0], [1.0]], atol=1e-3)
    np.testing.assert_allclose(numpy(ops.rgb_to_l_ab(greys)[1]), 0.0, atol=1e-3)


def test_yuv_matches_scikit_image_both_ways():
    rgb8 = np.random.default_rng(2).integers(0, 256, (3, 10, 12, 3), dtype=np.uint8)
    want_y, want_uv = lab.split(rgb8 / 255.0, "yuv")
    for rgb in (rgb8, rgb8 / 255.0):
        y, uv = ops.split(rgb, "yuv")
        np.testing.assert_allclose(numpy(y), want_y, atol=1e-3)
        np.testing.assert_allclose(numpy(uv), want_uv, atol=1e-3)
        np.testing.assert_allclose(numpy(ops.grey(rgb, "yuv")), want_y, atol=1e-3)
    np.testing.assert_allclose(numpy(ops.join(want_y, want_uv, "yuv")), rgb8 / 255.0, atol=1e-3)
    odd_uv = np.random.default_rng(3).uniform(-1, 1, want_uv.shape)  # outside the RGB cube: clipped alike
    np.testing.assert_allclose(numpy(ops.join(want_y, odd_uv, "yuv")), lab.join(want_y, odd_uv, "yuv"), atol=1e-3)
    with pytest.raises(ValueError, match="unknown colour space"):
        ops.split(rgb8, "hsv")


def test_batched_photo_shapes_match_and_the_inverse_too():
    rgb8 = np.stack([(photo * 255 + 0.5).astype(np.uint8) for photo in sample_crops(3, 24)])  # (3, 24, 24, 3)
    l, ab = ops.rgb_to_l_ab(rgb8)
    want_l, want_ab = lab.rgb_to_l_ab(rgb8 / 255.0)
    assert numpy(l).shape == (3, 24, 24, 1) and numpy(ab).shape == (3, 24, 24, 2)
    np.testing.assert_allclose(numpy(ab), want_ab, atol=1e-3)
    # back to RGB: the round trip, and predictions outside the gamut, clipped as lab.l_ab_to_rgb clips them
    np.testing.assert_allclose(numpy(ops.l_ab_to_rgb(want_l, want_ab)), rgb8 / 255.0, atol=1e-3)
    rng = np.random.default_rng(1)
    any_l, any_ab = rng.random((2, 16, 16, 1), np.float32), rng.uniform(-1, 1, (2, 16, 16, 2)).astype(np.float32)
    got = numpy(ops.l_ab_to_rgb(any_l, any_ab))
    assert got.shape == (2, 16, 16, 3) and got.min() >= 0 and got.max() <= 1
    np.testing.assert_allclose(got, lab.l_ab_to_rgb(any_l, any_ab), atol=1e-3)


def sample_crops(count, size):
    photos = data.Photos(sorted(SAMPLES.glob("*.jpg"))[:count], size, count, random=False)
    return [data.to_float(photos._centre_crop(i)) for i in range(count)]


def tiny_model(seed):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input(shape=(None, None, 1)),
        keras.layers.Conv2D(4, 3, activation="relu", padding="same"),
        keras.layers.Conv2D(2, 3, activation="tanh", padding="same"),
    ])
    return model


def test_the_uint8_training_path_gives_the_loss_of_the_float_path():
    lab_batches = data.Photos(sorted(SAMPLES.glob("*")), 16, 4, steps=2, seed=5)
    rgb_batches = data.Photos(sorted(SAMPLES.glob("*")), 16, 4, steps=2, seed=5, output="rgb")
    rgb = rgb_batches[0]
    l, ab = lab_batches[0]
    assert rgb.dtype == np.uint8 and rgb.shape == (4, 16, 16, 3) and rgb.nbytes * 4 == l.nbytes + ab.nbytes
    np.testing.assert_array_equal(data.split_batch(rgb)[1], ab)  # the same crops

    floats = tiny_model(0)
    floats.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    trainer = training.RGBTrainer(tiny_model(0))
    trainer.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    assert trainer.evaluate(rgb, verbose=0) == pytest.approx(floats.evaluate(l, ab, verbose=0), rel=1e-4)
    # one training step each, on the same batch: the same loss and the same weights after it
    float_loss = floats.train_on_batch(l, ab)
    rgb_loss = trainer.train_on_batch(rgb)
    assert rgb_loss == pytest.approx(float_loss, rel=1e-4)
    for a, b in zip(trainer.colouriser.get_weights(), floats.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-5)
    assert training.colouriser(trainer) is trainer.colouriser and training.colouriser(floats) is floats


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_ops_match_scikit_image_on_another_backend(backend):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed")
    code = (
        "import keras, numpy as np; from colorlab import lab, ops; "
        "rgb = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8); "
        "l, ab = ops.rgb_to_l_ab(rgb); want_l, want_ab = lab.rgb_to_l_ab(rgb / 255); "
        "back = ops.l_ab_to_rgb(want_l, want_ab); y, uv = ops.split(rgb, 'yuv'); "
        "errors = [np.abs(keras.ops.convert_to_numpy(x) - y).max() for x, y in "
        "((l, want_l), (ab, want_ab), (back, rgb / 255), (uv, lab.split(rgb / 255, 'yuv')[1]))]; "
        "print(keras.backend.backend(), max(errors))"
    )
    result = run_python("-c", code, env={"KERAS_BACKEND": backend}, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    name, error = result.stdout.split()[-2:]
    assert name == backend and float(error) < 1e-3
