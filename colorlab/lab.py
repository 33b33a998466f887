"""RGB <-> Lab with the one scaling every stage uses.

The networks see lightness ``l = L / 100`` in [0, 1] and predict ``ab = (a, b) / 128`` in [-1, 1],
the range of a ``tanh`` output. The maths is scikit-image's (sRGB, D65 white point); this module only
fixes the scaling and the array shapes, so no stage can scale differently from another.
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


def grey(rgb):
    """The black-and-white version of a photo, as RGB: its own lightness with no colour (ab = 0)."""
    l, ab = rgb_to_l_ab(rgb)
    return l_ab_to_rgb(l, np.zeros_like(ab))
