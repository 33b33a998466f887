"""RGB <-> Lab (and YUV) with the one scaling every stage uses; the maths is scikit-image's (sRGB, D65).

The networks see ``l = L / 100`` in [0, 1] and predict ``ab = (a, b) / 128`` in [-1, 1] (a ``tanh``'s
range); in YUV (BT.601), luma ``y`` in [0, 1] and ``uv`` scaled so that the RGB cube fills [-1, 1] exactly.
"""

import warnings

import keras
import numpy as np
from keras import ops
from skimage import color

L_SCALE = 100.0  # L is in [0, 100]
AB_SCALE = 128.0  # a and b of sRGB colours lie within about [-108, 98]


def rgb_to_l_ab(rgb):
    """Split RGB in [0, 1], shape (..., 3), into l (..., 1) in [0, 1] and ab (..., 2) in [-1, 1]."""
    rgb = np.asarray(rgb, dtype=np.float32)
    if rgb.shape[-1:] != (3,):
        raise ValueError(f"expected RGB with 3 channels last, got shape {rgb.shape}")
    lab = color.rgb2lab(rgb, channel_axis=-1)
    return (lab[..., :1] / L_SCALE).astype(np.float32), (lab[..., 1:] / AB_SCALE).astype(np.float32)


def l_ab_to_rgb(l, ab):
    """Join l (..., 1) and ab (..., 2) back into RGB in [0, 1]; colours out of the sRGB gamut are clipped."""
    l, ab = np.asarray(l, dtype=np.float32), np.asarray(ab, dtype=np.float32)
    if l.shape[-1:] != (1,) or ab.shape[-1:] != (2,) or l.shape[:-1] != ab.shape[:-1]:
        raise ValueError(f"expected l (..., 1) and ab (..., 2) of one size, got {l.shape} and {ab.shape}")
    lab = np.concatenate([l * L_SCALE, ab * AB_SCALE], axis=-1)
    with warnings.catch_warnings():  # lab2rgb warns each time it clips an out-of-gamut colour
        warnings.simplefilter("ignore", UserWarning)
        rgb = color.lab2rgb(lab, channel_axis=-1)
    return np.clip(rgb, 0.0, 1.0).astype(np.float32)


# BT.601: Y = 0.299 R + 0.587 G + 0.114 B, U = 0.492 (B - Y), V = 0.877 (R - Y) (scikit-image's matrix).
U_SCALE = 0.43601035  # the largest U of an RGB colour (pure blue); yellow has -U_SCALE
V_SCALE = 0.61497538  # the largest V of an RGB colour (pure red); cyan has -V_SCALE


def rgb_to_y_uv(rgb):
    """Split RGB in [0, 1], shape (..., 3), into luma y (..., 1) in [0, 1] and uv (..., 2) in [-1, 1]."""
    rgb = np.asarray(rgb, dtype=np.float32)
    if rgb.shape[-1:] != (3,):
        raise ValueError(f"expected RGB with 3 channels last, got shape {rgb.shape}")
    yuv = color.rgb2yuv(rgb, channel_axis=-1)
    uv = yuv[..., 1:] / np.array([U_SCALE, V_SCALE])
    return yuv[..., :1].astype(np.float32), uv.astype(np.float32)


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
