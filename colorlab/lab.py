"""RGB <-> Lab (and YUV) with the one scaling every stage uses.

The networks see lightness ``l = L / 100`` in [0, 1] and predict ``ab = (a, b) / 128`` in [-1, 1],
the range of a ``tanh`` output. The maths is scikit-image's (sRGB, D65 white point); this module only
fixes the scaling and the array shapes, so no stage can scale differently from another.

YUV (BT.601, as ``skimage.color.rgb2yuv``) is the other choice a stage can make (``COLOR_SPACE``): the
network sees luma ``y = Y`` in [0, 1] and predicts ``uv = (U / 0.436, V / 0.615)``, scaled so that the
RGB cube fills [-1, 1] exactly (pure blue has u = 1, yellow u = -1, red v = 1, cyan v = -1).
:func:`split` and :func:`join` take the colour space's name, for code that works in either.
"""

import warnings

import numpy as np
from skimage import color

L_SCALE = 100.0  # L is in [0, 100]
AB_SCALE = 128.0  # a and b of sRGB colours lie within about [-108, 98]


def rgb_to_l_ab(rgb):
    """Split RGB in [0, 1], shape (..., 3), into l (..., 1) in [0, 1] and ab (..., 2) in [-1, 1]."""
    rgb = np.asarray(rgb, dtype=np.float32)
    if rgb.shape[-1:] != (3,):
        raise ValueError(f"expected RGB with 3 channels last, got shape {rgb.shape}")
    lab = color.rgb2lab(rgb, channel_axis=-1)
    l = lab[..., :1] / L_SCALE
    ab = lab[..., 1:] / AB_SCALE
    return l.astype(np.float32), ab.astype(np.float32)


def l_ab_to_rgb(l, ab):
    """Join l (..., 1) and ab (..., 2), scaled as above, back into RGB in [0, 1].

    Colours outside the sRGB gamut (a network can predict them) are clipped to it.
    """
    l = np.asarray(l, dtype=np.float32)
    ab = np.asarray(ab, dtype=np.float32)
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
    y = np.asarray(y, dtype=np.float32)
    uv = np.asarray(uv, dtype=np.float32)
    if y.shape[-1:] != (1,) or uv.shape[-1:] != (2,) or y.shape[:-1] != uv.shape[:-1]:
        raise ValueError(f"expected y (..., 1) and uv (..., 2) of one size, got {y.shape} and {uv.shape}")
    yuv = np.concatenate([y, uv * np.array([U_SCALE, V_SCALE], dtype=np.float32)], axis=-1)
    return np.clip(color.yuv2rgb(yuv, channel_axis=-1), 0.0, 1.0).astype(np.float32)


COLOR_SPACES = {"lab": (rgb_to_l_ab, l_ab_to_rgb), "yuv": (rgb_to_y_uv, y_uv_to_rgb)}


def split(rgb, color_space="lab"):
    """RGB -> (grey, colour) in ``color_space``: ``(l, ab)`` for "lab", ``(y, uv)`` for "yuv"."""
    return _converters(color_space)[0](rgb)


def join(grey, colour, color_space="lab"):
    """(grey, colour) in ``color_space`` -> RGB in [0, 1]: the inverse of :func:`split`."""
    return _converters(color_space)[1](grey, colour)


def _converters(color_space):
    try:
        return COLOR_SPACES[color_space]
    except (KeyError, TypeError):
        raise ValueError(f"unknown colour space {color_space!r}; choose one of {', '.join(COLOR_SPACES)}") from None


def grey(rgb):
    """The black-and-white version of a photo, as RGB: its own lightness with no colour (ab = 0)."""
    l, ab = rgb_to_l_ab(rgb)
    return l_ab_to_rgb(l, np.zeros_like(ab))
