"""RGB <-> Lab (and YUV) with the one scaling every stage uses; the maths is scikit-image's (sRGB, D65).

The networks see ``l = L / 100`` in [0, 1] and predict ``ab = (a, b) / 128`` in [-1, 1] (a ``tanh``'s
range); in YUV (BT.601), luma ``y`` in [0, 1] and ``uv`` scaled like ``ab``: the most saturated sRGB
colours reach about 0.84, short of tanh's asymptote at 1.
"""

import keras
import numpy as np
from keras import ops
from skimage import color

L_SCALE = 100.0  # L is in [0, 100]
AB_SCALE = 128.0  # a and b of sRGB colours lie within about [-108, 98]
_TO_XYZ = np.float32([[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169],  # linear sRGB to XYZ
                      [0.019334, 0.119193, 0.950227]]) / np.float32([[0.95047], [1], [1.08883]])  # / D65
_TO_RGB = np.linalg.inv(_TO_XYZ)  # The maths works on planes (an array per channel): many times faster


def rgb_to_l_ab(rgb):
    """Split RGB (..., 3), in [0, 1] or 8-bit, into l (..., 1) in [0, 1] and ab (..., 2) in [-1, 1]."""
    fx, fy, fz = (_f(v) for v in _mix(_TO_XYZ, linear_rgb(rgb)))  # f(X / Xn), f(Y / Yn), f(Z / Zn)
    return (1.16 * fy - 0.16)[..., None], np.stack([(fx - fy) * 500, (fy - fz) * 200], -1) / AB_SCALE


def rgb_to_l(rgb):
    """The l of :func:`rgb_to_l_ab` alone, as a plane (...): a third of the work."""
    return 1.16 * _f(_mix(_TO_XYZ[1:2], linear_rgb(rgb))[0]) - 0.16


def l_ab_to_rgb(l, ab):
    """Join l (..., 1) and ab (..., 2) back into RGB in [0, 1]; colours out of the sRGB gamut are clipped."""
    l, ab = np.asarray(l, dtype=np.float32), np.asarray(ab, dtype=np.float32)
    if l.shape[-1:] != (1,) or ab.shape[-1:] != (2,) or l.shape[:-1] != ab.shape[:-1]:
        raise ValueError(f"expected l (..., 1) and ab (..., 2) of one size, got {l.shape} and {ab.shape}")
    return linear_to_rgb(lab_to_linear(l[..., 0], ab[..., 0], ab[..., 1]))


def lab_to_linear(l, a, b):
    """Planes l, a, b -> linear sRGB planes [r, g, b], unclipped: out of [0, 1] for colours out of gamut."""
    fy = l * np.float32(L_SCALE / 116) + np.float32(16 / 116)
    f = (fy + a * np.float32(AB_SCALE / 500), fy, np.maximum(fy - b * np.float32(AB_SCALE / 200), 0))
    return _mix(_TO_RGB, [np.where(v > 0.2068966, v * v * v, (v - np.float32(16 / 116)) / 7.787) for v in f])


def linear_rgb(rgb):
    """sRGB (..., 3) in [0, 1], or 8-bit -> linear RGB planes [r, g, b] in float32: the sRGB gamma undone."""
    if (rgb := np.asarray(rgb)).shape[-1:] != (3,):
        raise ValueError(f"expected RGB with 3 channels last, got shape {rgb.shape}")
    if rgb.dtype == np.uint8:
        return [_LINEAR_8BIT[rgb[..., c]] for c in range(3)]
    return [np.where(c > 0.04045, ((np.maximum(c, 0.04045) + 0.055) / 1.055) ** 2.4, c / 12.92)
            for c in np.moveaxis(rgb.astype(np.float32), -1, 0)]


def linear_to_rgb(planes, dtype=np.float32):
    """Linear RGB planes -> sRGB (..., 3) in [0, 1], clipped; or 8-bit (``dtype=np.uint8``), from a table."""
    if dtype == np.uint8:  # linear steps of 1/65535 move sRGB by at most 0.03 of an 8-bit level
        return np.stack([_SRGB_8BIT[np.uint16(np.clip(c * 65535 + 0.5, 0, 65535))] for c in planes], -1)
    return np.clip(np.stack([np.where(c > 0.0031308, 1.055 * np.maximum(c, 0.0031308) ** (1 / 2.4) - 0.055,
                                      12.92 * c) for c in planes], -1), 0, 1).astype(np.float32, copy=False)


def _mix(matrix, planes):  # matrix @ planes, a plane at a time (a matmul on (N, 3) calls a slow BLAS)
    return [row[0] * planes[0] + row[1] * planes[1] + row[2] * planes[2] for row in matrix]


def _f(t):  # CIE Lab's f: a cube root, linear near black
    return np.where(t > 0.008856, np.maximum(t, 0.008856) ** (1 / 3), 7.787 * t + np.float32(16 / 116))


_LINEAR_8BIT = linear_rgb(np.arange(256, dtype=np.float32)[:, None].repeat(3, 1) / 255)[0]
_SRGB_8BIT = (linear_to_rgb([np.arange(65536, dtype=np.float32) / 65535])[:, 0] * 255 + 0.5).astype(np.uint8)


# BT.601: Y = 0.299 R + 0.587 G + 0.114 B, U = 0.492 (B - Y), V = 0.877 (R - Y) (scikit-image's matrix).
U_SCALE = 0.52  # U of sRGB colours lies within [-0.436, 0.436] (yellow, blue): uv within about +-0.84, as ab
V_SCALE = 0.73  # V lies within [-0.615, 0.615] (cyan, red)


def rgb_to_y_uv(rgb):
    """Split RGB in [0, 1], shape (..., 3), into luma y (..., 1) in [0, 1] and uv (..., 2) in [-1, 1]."""
    rgb = np.asarray(rgb, dtype=np.float32)
    if rgb.shape[-1:] != (3,):
        raise ValueError(f"expected RGB with 3 channels last, got shape {rgb.shape}")
    yuv = color.rgb2yuv(rgb, channel_axis=-1)
    return yuv[..., :1].astype(np.float32), (yuv[..., 1:] / np.array([U_SCALE, V_SCALE])).astype(np.float32)


def y_uv_to_rgb(y, uv):
    """Join y (..., 1) and uv (..., 2), scaled as above, back into RGB in [0, 1] (clipped to it)."""
    y, uv = np.asarray(y, dtype=np.float32), np.asarray(uv, dtype=np.float32)
    if y.shape[-1:] != (1,) or uv.shape[-1:] != (2,) or y.shape[:-1] != uv.shape[:-1]:
        raise ValueError(f"expected y (..., 1) and uv (..., 2) of one size, got {y.shape} and {uv.shape}")
    yuv = np.concatenate([y, uv * np.array([U_SCALE, V_SCALE], dtype=np.float32)], axis=-1)
    return np.clip(color.yuv2rgb(yuv, channel_axis=-1), 0.0, 1.0).astype(np.float32)


COLOR_SPACES = {"lab": (rgb_to_l_ab, l_ab_to_rgb), "yuv": (rgb_to_y_uv, y_uv_to_rgb)}


def from_rgb(rgb, color_space="lab"):
    """RGB -> (grey, color) in ``color_space``: ``(l, ab)`` for "lab", ``(y, uv)`` for "yuv"."""
    return _converters(color_space)[0](rgb)


def to_rgb(grey, color, color_space="lab"):
    """(grey, color) in ``color_space`` -> RGB in [0, 1]: the inverse of :func:`from_rgb`."""
    return _converters(color_space)[1](grey, color)


def _converters(color_space):
    if not isinstance(color_space, str) or color_space not in COLOR_SPACES:
        raise ValueError(f"unknown colour space {color_space!r}; choose one of {', '.join(COLOR_SPACES)}")
    return COLOR_SPACES[color_space]


def grey_rgb(rgb):
    """The black-and-white version of a photo, as RGB: its own lightness with no colour (ab = 0)."""
    l, ab = rgb_to_l_ab(rgb)
    return l_ab_to_rgb(l, np.zeros_like(ab))


@keras.saving.register_keras_serializable(package="colorlab")
class GreySRGB(keras.layers.Layer):
    """l (..., 1) in [0, 1] -> the sRGB grey with that lightness: ``l_ab_to_rgb(l, 0)`` in ``keras.ops``, so
    that it runs inside a saved model on any backend."""

    def call(self, l):
        fy = (ops.clip(ops.cast(l, "float32"), 0.0, 1.0) * L_SCALE + 16.0) / 116.0
        y = ops.where(fy > 6.0 / 29.0, fy**3, (fy - 16.0 / 116.0) / 7.787)  # luminance: a grey's R = G = B
        gamma = 1.055 * ops.power(ops.maximum(y, 0.0031308), 1.0 / 2.4) - 0.055
        return ops.clip(ops.where(y > 0.0031308, gamma, 12.92 * y), 0.0, 1.0)
