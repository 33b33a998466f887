"""colorlab.lab against references (micrograd style): scikit-image's conversions, the standard's formulas
written one pixel at a time, and, for the Keras layer GreySRGB, the NumPy conversion it stands for."""

import keras
import numpy as np
import pytest
from skimage import color

from colorlab import lab


def random_rgb(seed, shape=(6, 7)):
    rng = np.random.default_rng(seed)
    corners = np.array([[r, g, b] for r in (0, 1) for g in (0, 1) for b in (0, 1)], np.float64)
    rgb = rng.random((*shape, 3))
    rgb.reshape(-1, 3)[: len(corners)] = corners  # black, white and the primaries: the edges of every range
    return rgb


# ----------------------------------------------------------------------------------------------------
# Lab: l = L / 100 in [0, 1], ab = (a, b) / 128 in [-1, 1]


def test_l_ab_is_scikit_image_s_lab_scaled():
    rgb = random_rgb(0)
    l, ab = lab.rgb_to_l_ab(rgb)
    expected = color.rgb2lab(rgb)
    np.testing.assert_allclose(l[..., 0] * 100, expected[..., 0], atol=2e-4)
    np.testing.assert_allclose(ab * 128, expected[..., 1:], atol=2e-4)
    assert l.shape == (6, 7, 1) and ab.shape == (6, 7, 2) and l.dtype == ab.dtype == np.float32


def test_l_ab_back_to_rgb_is_scikit_image_s_inverse():
    rgb = random_rgb(1)
    lab_values = color.rgb2lab(rgb)
    back = lab.l_ab_to_rgb(lab_values[..., :1] / 100, lab_values[..., 1:] / 128)
    np.testing.assert_allclose(back, color.lab2rgb(lab_values), atol=1e-5)
    np.testing.assert_allclose(back, rgb, atol=1e-4)


def reference_lab(rgb):
    """sRGB (D65) -> CIE Lab, written straight from the standard's formulas, one pixel at a time."""
    out = []
    for r, g, b in np.asarray(rgb, dtype=np.float64).reshape(-1, 3):
        linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in (r, g, b)]
        x = 0.412453 * linear[0] + 0.357580 * linear[1] + 0.180423 * linear[2]
        y = 0.212671 * linear[0] + 0.715160 * linear[1] + 0.072169 * linear[2]
        z = 0.019334 * linear[0] + 0.119193 * linear[1] + 0.950227 * linear[2]
        ratios = (x / 0.95047, y / 1.0, z / 1.08883)
        f = [t ** (1 / 3) if t > 0.008856 else 7.787 * t + 16 / 116 for t in ratios]
        out.append((116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])))
    return np.array(out).reshape(np.shape(rgb))


def test_l_ab_matches_the_standard_s_formulas():
    rgb = random_rgb(2)
    l, ab = lab.rgb_to_l_ab(rgb)
    expected = reference_lab(rgb)
    np.testing.assert_allclose(l[..., 0] * 100, expected[..., 0], atol=1e-3)
    np.testing.assert_allclose(ab * 128, expected[..., 1:], atol=1e-3)


@pytest.mark.parametrize("rgb, expected_lab", [((1, 1, 1), (100, 0, 0)), ((0, 0, 0), (0, 0, 0)),
                                               ((1, 0, 0), (53.24, 80.09, 67.20)),
                                               ((0, 0, 1), (32.30, 79.19, -107.86))])
def test_known_colors(rgb, expected_lab):
    l, ab = lab.rgb_to_l_ab(np.array([[rgb]], dtype=np.float32))
    np.testing.assert_allclose([l[0, 0, 0] * 100, *(ab[0, 0] * 128)], expected_lab, atol=0.02)


def test_ranges_over_the_whole_rgb_cube_and_grey_has_no_color():
    axis = np.linspace(0, 1, 17)
    cube = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), axis=-1)
    l, ab = lab.rgb_to_l_ab(cube)
    assert l.min() >= 0 and l.max() <= 1 + 1e-6 and -1 <= ab.min() and ab.max() <= 1
    assert ab.min() < -0.8 and ab.max() > 0.7  # the scaling uses most of tanh's range
    grey = np.repeat(axis[:, None, None], 3, axis=-1)
    l, ab = lab.rgb_to_l_ab(grey)
    assert np.abs(ab).max() < 1e-4 and np.all(np.diff(l[:, 0, 0]) > 0)


def test_impossible_colors_are_clipped_into_rgb():
    l = np.full((4, 4, 1), 0.5, dtype=np.float32)
    ab = np.stack(np.meshgrid([-1, 1, -1, 1], [1, 1, -1, -1]), axis=-1).astype(np.float32)
    rgb = lab.l_ab_to_rgb(l, ab)
    assert rgb.min() >= 0 and rgb.max() <= 1 and rgb.dtype == np.float32


def test_batches_convert_as_single_photos():
    batch = np.random.default_rng(3).random((2, 5, 7, 3)).astype(np.float32)
    l, ab = lab.rgb_to_l_ab(batch)
    for i in range(2):
        l_i, ab_i = lab.rgb_to_l_ab(batch[i])
        np.testing.assert_array_equal(l_i, l[i])
        np.testing.assert_array_equal(ab_i, ab[i])
    assert lab.l_ab_to_rgb(l, ab).shape == (2, 5, 7, 3)


# ----------------------------------------------------------------------------------------------------
# YUV (BT.601): y in [0, 1], uv = (U / 0.52, V / 0.73): the extreme colours at about +-0.84, as in Lab


def test_y_uv_is_scikit_image_s_yuv_scaled_both_ways():
    rgb = random_rgb(4)
    y, uv = lab.rgb_to_y_uv(rgb)
    expected = color.rgb2yuv(rgb)
    np.testing.assert_allclose(y[..., 0], expected[..., 0], atol=1e-6)
    np.testing.assert_allclose(uv * [lab.U_SCALE, lab.V_SCALE], expected[..., 1:], atol=1e-6)
    np.testing.assert_allclose(lab.y_uv_to_rgb(y, uv), np.clip(color.yuv2rgb(expected), 0, 1), atol=1e-5)
    np.testing.assert_allclose(lab.y_uv_to_rgb(y, uv), rgb, atol=1e-5)


def test_yuv_matches_the_bt601_formulas():
    rgb = random_rgb(5)
    r, g, b = np.moveaxis(rgb, -1, 0)
    luma = 0.299 * r + 0.587 * g + 0.114 * b
    y, uv = lab.rgb_to_y_uv(rgb)
    np.testing.assert_allclose(y[..., 0], luma, atol=1e-6)
    differences = np.stack([0.492 * (b - luma), 0.877 * (r - luma)], -1)
    np.testing.assert_allclose(uv * [0.52, 0.73], differences, atol=2e-3)


@pytest.mark.parametrize("rgb, expected_uv", [((0, 0, 1), (0.838, -0.137)), ((1, 1, 0), (-0.838, 0.137)),
                                              ((1, 0, 0), (-0.283, 0.842)), ((0, 1, 1), (0.283, -0.842))])
def test_yuv_scaling_leaves_the_same_headroom_as_lab(rgb, expected_uv):
    _, uv = lab.rgb_to_y_uv(np.array([[rgb]], dtype=np.float32))
    np.testing.assert_allclose(uv[0, 0], expected_uv, atol=1e-3)
    _, ab = lab.rgb_to_l_ab(np.array([[(0, 0, 1), (1, 0, 0), (0, 1, 0), (1, 1, 0)]], dtype=np.float32))
    assert 0.8 < np.abs(ab).max() < 0.87  # Lab's /128: the most saturated sRGB colours stay short of 1


# ----------------------------------------------------------------------------------------------------
# By name, and mistakes


@pytest.mark.parametrize("space, forward, inverse", [("lab", lab.rgb_to_l_ab, lab.l_ab_to_rgb),
                                                     ("yuv", lab.rgb_to_y_uv, lab.y_uv_to_rgb)])
def test_from_rgb_and_to_rgb_by_name(space, forward, inverse):
    rgb = random_rgb(6).astype(np.float32)
    grey, color_part = lab.from_rgb(rgb, space)
    for got, want in zip((grey, color_part), forward(rgb)):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(lab.to_rgb(grey, color_part, space), inverse(grey, color_part))
    assert set(lab.COLOR_SPACES) == {"lab", "yuv"}


def test_grey_rgb_keeps_the_lightness_and_drops_the_color():
    rgb = random_rgb(7).astype(np.float32)
    grey = lab.grey_rgb(rgb)
    np.testing.assert_allclose(grey[..., 0], grey[..., 2], atol=1e-4)  # R = G = B
    np.testing.assert_allclose(lab.rgb_to_l_ab(grey)[0], lab.rgb_to_l_ab(rgb)[0], atol=1e-3)


def test_wrong_shapes_and_unknown_color_spaces_are_refused():
    for convert in (lab.rgb_to_l_ab, lab.rgb_to_y_uv):
        with pytest.raises(ValueError, match="3 channels"):
            convert(np.zeros((4, 4)))
    for join in (lab.l_ab_to_rgb, lab.y_uv_to_rgb):
        with pytest.raises(ValueError, match="one size"):
            join(np.zeros((4, 4, 1)), np.zeros((4, 5, 2)))
    with pytest.raises(ValueError, match="^unknown colour space 'rgb'; choose one of lab, yuv$"):
        lab.from_rgb(np.zeros((2, 2, 3)), "rgb")


# ----------------------------------------------------------------------------------------------------
# GreySRGB: the same grey as l_ab_to_rgb(l, 0), inside a model


def test_grey_srgb_layer_is_l_ab_to_rgb_with_no_color():
    edges = [0.0001, 0.07, 0.08, 0.0799, 0.08001, -0.5, 1.5]  # about the linear part's end, and out of range
    l = np.concatenate([np.linspace(0, 1, 2001), edges]).astype(np.float32)
    l = l.reshape(1, -1, 1, 1)
    got = keras.ops.convert_to_numpy(lab.GreySRGB()(l))
    want = lab.l_ab_to_rgb(np.clip(l, 0, 1), np.zeros((*l.shape[:-1], 2), np.float32))
    assert got.shape == l.shape and got.dtype == np.float32
    np.testing.assert_allclose(got[..., 0], want[..., 0], atol=2e-5)  # every channel of a grey is the same


def test_grey_srgb_is_saved_and_loaded_with_a_model(tmp_path):
    inputs = keras.Input((None, None, 1))
    model = keras.Model(inputs, lab.GreySRGB()(inputs))
    model.save(tmp_path / "grey.keras")
    loaded = keras.saving.load_model(tmp_path / "grey.keras")
    l = np.random.default_rng(8).random((2, 4, 5, 1)).astype(np.float32)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(loaded(l)), keras.ops.convert_to_numpy(model(l)))
