"""colorlab.lab against a slow-but-obvious reference of the sRGB -> CIE Lab formulas, and its contract."""

import numpy as np
import pytest

from colorlab import lab


def reference_lab(rgb):
    """sRGB (D65) -> CIE Lab, written straight from the standard's formulas, one pixel at a time."""
    out = []
    for r, g, b in np.asarray(rgb, dtype=np.float64).reshape(-1, 3):
        linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in (r, g, b)]
        x = 0.412453 * linear[0] + 0.357580 * linear[1] + 0.180423 * linear[2]
        y = 0.212671 * linear[0] + 0.715160 * linear[1] + 0.072169 * linear[2]
        z = 0.019334 * linear[0] + 0.119193 * linear[1] + 0.950227 * linear[2]
        f = [t ** (1 / 3) if t > 0.008856 else 7.787 * t + 16 / 116 for t in (x / 0.95047, y / 1.0, z / 1.08883)]
        out.append((116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])))
    return np.array(out).reshape(np.shape(rgb))


def test_matches_the_reference_formulas():
    rgb = np.random.default_rng(0).random((6, 7, 3))
    l, ab = lab.rgb_to_l_ab(rgb)
    expected = reference_lab(rgb)
    np.testing.assert_allclose(l[..., 0] * 100, expected[..., 0], atol=1e-3)
    np.testing.assert_allclose(ab * 128, expected[..., 1:], atol=1e-3)


@pytest.mark.parametrize(
    "rgb, expected_lab",
    [((1, 1, 1), (100, 0, 0)), ((0, 0, 0), (0, 0, 0)), ((1, 0, 0), (53.24, 80.09, 67.20)), ((0, 0, 1), (32.30, 79.19, -107.86))],
)
def test_known_colours(rgb, expected_lab):
    l, ab = lab.rgb_to_l_ab(np.array([[rgb]], dtype=np.float32))
    np.testing.assert_allclose([l[0, 0, 0] * 100, *(ab[0, 0] * 128)], expected_lab, atol=0.02)


def test_round_trip():
    rgb = np.random.default_rng(1).random((32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(lab.l_ab_to_rgb(*lab.rgb_to_l_ab(rgb)), rgb, atol=1e-4)


def test_grey_has_no_colour():
    grey = np.repeat(np.linspace(0, 1, 50, dtype=np.float32)[:, None, None], 3, axis=-1)
    l, ab = lab.rgb_to_l_ab(grey)
    assert np.abs(ab).max() < 1e-4
    assert np.all(np.diff(l[:, 0, 0]) > 0)  # lightness grows with the grey level


def test_ranges_over_the_whole_rgb_cube():
    axis = np.linspace(0, 1, 17)
    cube = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), axis=-1)  # every corner, edge and face
    l, ab = lab.rgb_to_l_ab(cube)
    assert l.min() >= 0 and l.max() <= 1.0 + 1e-6
    assert -1 <= ab.min() and ab.max() <= 1
    assert ab.min() < -0.8 and ab.max() > 0.7  # the scaling uses most of tanh's range


def test_batched_shapes_and_values_equal_one_photo_at_a_time():
    batch = np.random.default_rng(2).random((2, 5, 7, 3)).astype(np.float32)
    l, ab = lab.rgb_to_l_ab(batch)
    assert l.shape == (2, 5, 7, 1) and ab.shape == (2, 5, 7, 2)
    assert l.dtype == ab.dtype == np.float32
    for i in range(2):
        l_i, ab_i = lab.rgb_to_l_ab(batch[i])
        np.testing.assert_allclose(l[i], l_i, atol=1e-6)
        np.testing.assert_allclose(ab[i], ab_i, atol=1e-6)
    assert lab.l_ab_to_rgb(l, ab).shape == (2, 5, 7, 3)


def test_impossible_colours_are_clipped_into_rgb():
    l = np.full((4, 4, 1), 0.5, dtype=np.float32)
    ab = np.stack(np.meshgrid([-1, 1, -1, 1], [1, 1, -1, -1]), axis=-1).astype(np.float32)
    rgb = lab.l_ab_to_rgb(l, ab)
    assert rgb.min() >= 0 and rgb.max() <= 1


def test_wrong_shapes_are_refused():
    with pytest.raises(ValueError, match="3 channels"):
        lab.rgb_to_l_ab(np.zeros((4, 4)))
    with pytest.raises(ValueError, match="one size"):
        lab.l_ab_to_rgb(np.zeros((4, 4, 1)), np.zeros((4, 5, 2)))


# YUV (BT.601), the other colour space a stage can train in: y in [0, 1], uv = (U / 0.436, V / 0.615).


def reference_yuv(rgb):
    """BT.601 luma and colour differences, from the standard's formulas: U = 0.492 (B - Y), V = 0.877 (R - Y)."""
    r, g, b = np.moveaxis(np.asarray(rgb, dtype=np.float64), -1, 0)
    y = 0.299 * r + 0.587 * g + 0.114 * b
    return np.stack([y, 0.492 * (b - y), 0.877 * (r - y)], axis=-1)


def test_yuv_matches_the_bt601_formulas_and_scikit_image():
    from skimage import color

    rgb = np.random.default_rng(3).random((6, 7, 3))
    y, uv = lab.rgb_to_y_uv(rgb)
    expected = reference_yuv(rgb)
    np.testing.assert_allclose(y[..., 0], expected[..., 0], atol=1e-6)
    np.testing.assert_allclose(uv * [0.436, 0.615], expected[..., 1:], atol=2e-3)  # the formulas' 3 digits
    np.testing.assert_allclose(np.concatenate([y, uv * [lab.U_SCALE, lab.V_SCALE]], -1), color.rgb2yuv(rgb), atol=1e-6)


@pytest.mark.parametrize("rgb, expected_uv", [((0, 0, 1), (1, -0.163)), ((1, 1, 0), (-1, 0.163)), ((1, 0, 0), (-0.337, 1)),
                                              ((0, 1, 1), (0.337, -1))])
def test_yuv_scaling_puts_the_extreme_colours_at_plus_or_minus_one(rgb, expected_uv):
    _, uv = lab.rgb_to_y_uv(np.array([[rgb]], dtype=np.float32))
    np.testing.assert_allclose(uv[0, 0], expected_uv, atol=1e-3)


def test_yuv_round_trip_and_range_over_the_rgb_cube():
    axis = np.linspace(0, 1, 17)
    cube = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), axis=-1).astype(np.float32)
    y, uv = lab.rgb_to_y_uv(cube)
    assert y.min() >= 0 and y.max() <= 1 + 1e-6
    assert -1 - 1e-6 <= uv.min() and uv.max() <= 1 + 1e-6 and uv.min() < -0.99 and uv.max() > 0.99
    np.testing.assert_allclose(lab.y_uv_to_rgb(y, uv), cube, atol=1e-5)
    assert y.shape == cube.shape[:-1] + (1,) and uv.shape == cube.shape[:-1] + (2,) and uv.dtype == np.float32


def test_grey_has_no_yuv_colour():
    grey = np.repeat(np.linspace(0, 1, 50, dtype=np.float32)[:, None, None], 3, axis=-1)
    y, uv = lab.rgb_to_y_uv(grey)
    assert np.abs(uv).max() < 1e-6
    np.testing.assert_allclose(y[:, 0, 0], np.linspace(0, 1, 50), atol=1e-6)  # luma of grey is the grey level


def test_impossible_yuv_colours_are_clipped_into_rgb():
    y = np.full((2, 2, 1), 0.5, dtype=np.float32)
    uv = np.array([[[-1, 1], [1, 1]], [[-1, -1], [1, -1]]], dtype=np.float32)
    rgb = lab.y_uv_to_rgb(y, uv)
    assert rgb.min() >= 0 and rgb.max() <= 1


@pytest.mark.parametrize("space, convert", [("lab", lab.rgb_to_l_ab), ("yuv", lab.rgb_to_y_uv)])
def test_split_and_join_by_name(space, convert):
    rgb = np.random.default_rng(4).random((5, 6, 3)).astype(np.float32)
    grey, colour = lab.split(rgb, space)
    np.testing.assert_array_equal(grey, convert(rgb)[0])
    np.testing.assert_allclose(lab.join(grey, colour, space), rgb, atol=1e-4)
    with pytest.raises(ValueError, match="unknown colour space 'rgb'; choose one of lab, yuv"):
        lab.split(rgb, "rgb")


def test_wrong_yuv_shapes_are_refused():
    with pytest.raises(ValueError, match="3 channels"):
        lab.rgb_to_y_uv(np.zeros((4, 4)))
    with pytest.raises(ValueError, match="one size"):
        lab.y_uv_to_rgb(np.zeros((4, 4, 1)), np.zeros((4, 5, 2)))
