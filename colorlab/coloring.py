"""The one way photos are colored, by the stages' result grids and the ``colorize`` and ``evaluate`` commands:
the model (l (batch, h, w, 1) in [0, 1] -> ab in [-1, 1]) sees each photo with its shorter side ``size``
(None: as it is), mirror-padded to a ``multiple``; its ab is upsampled, brought into the sRGB gamut keeping
the lightness, and joined with the full-resolution l: only the color comes from the network."""

import numpy as np

from colorlab import images, lab

MAX_ASPECT = 4  # the working size's longer side is at most this many times its shorter side
MAX_BATCH_PIXELS = 4_000_000  # working-size pixels per model call: a batch of big photos is split


def colorize(model, rgbs, size=None, multiple=8, color_space="lab"):
    """Color each (H, W, 3) RGB photo in ``rgbs`` from its lightness alone; return the RGB results."""
    ls, works = [], []
    for rgb in rgbs:
        l = by_rows(lambda part: lab.from_rgb(part, color_space)[0], rgb)  # (H, W, 1), full resolution
        (h, w), padded = working_shape(l.shape[0], l.shape[1], size, multiple)
        if (h, w) == l.shape[:2]:
            small = l
        else:  # as the stages load photos
            small = lab.from_rgb(np.clip(images.resize(rgb, h, w, "lanczos"), 0, 1), color_space)[0]
        ls.append(l)
        works.append((small, padded))
    colored = []
    for l, ab in zip(ls, predict_ab(model, works)):
        ab = images.resize(ab, l.shape[0], l.shape[1], "bilinear")  # (H, W, 2)
        if color_space == "lab":
            colored.append(by_rows(lambda l, ab: lab.l_ab_to_rgb(l, fit_gamut(l, ab)), l, ab))
        else:  # in YUV, colors out of the RGB cube are clipped
            colored.append(by_rows(lambda l, ab: lab.to_rgb(l, ab, color_space), l, ab))
    return colored


def working_shape(height, width, size=None, multiple=8):
    """Where the model sees a (height, width) photo: ((h, w) scaled, (h8, w8) padded to ``multiple``)."""
    if size is not None:
        scale = min(size / min(height, width), MAX_ASPECT * size / max(height, width))  # a 10000x20 strip too
        height, width = max(1, round(height * scale)), max(1, round(width * scale))
    return (height, width), (height + -height % multiple, width + -width % multiple)


def predict_ab(model, works, max_pixels=MAX_BATCH_PIXELS):
    """Run ``model`` on ``works``, a list of (l (h, w, 1), (h8, w8) padded shape): each ab (h, w, 2)."""
    import keras

    results = [None] * len(works)
    groups = {}
    for i, (_, padded) in enumerate(works):
        groups.setdefault(padded, []).append(i)
    for (ph, pw), members in groups.items():
        step = max(1, max_pixels // (ph * pw))  # photos of one padded shape share model calls
        for first in range(0, len(members), step):
            chunk = members[first : first + step]
            batch = np.stack([images.pad_to_multiple(works[i][0], 1, (ph, pw)) for i in chunk])
            ab = np.asarray(keras.ops.convert_to_numpy(model(batch, training=False)), dtype=np.float32)
            for k, i in enumerate(chunk):
                h, w = works[i][0].shape[:2]
                results[i] = ab[k, :h, :w]
    return results


def by_rows(convert, *arrays, pixels=1_000_000):
    """``convert(*arrays)`` a band of rows at a time: scikit-image's float64 temporaries then stay small."""
    height, width = arrays[0].shape[:2]
    rows = max(1, pixels // max(1, width))
    if height <= rows:
        return convert(*arrays)
    return np.concatenate([convert(*(a[top : top + rows] for a in arrays)) for top in range(0, height, rows)])


_WHITE = np.array([0.95047, 1.0, 1.08883], np.float32)  # D65, the white point of sRGB (as scikit-image)
_RGB_FROM_XYZ = np.array([[3.24048134, -1.53715152, -0.49853633],  # XYZ to linear sRGB (as scikit-image)
                          [-0.96925495, 1.87599, 0.04155593],
                          [0.05564664, -0.20404134, 1.05731107]], np.float32)


def fit_gamut(l, ab, steps=10, tolerance=1e-6):
    """Scale each pixel's ab towards 0 (same hue, less chroma) until (l, ab) is an sRGB color: clipping RGB
    would change the lightness of, say, saturated blue predicted on a near-white sky (bisection on the
    pixels out of gamut)."""
    l, ab = np.asarray(l, dtype=np.float32), np.array(ab, dtype=np.float32)  # ab: a copy, changed below
    flat_l, flat_ab = l.reshape(-1), ab.reshape(-1, 2)
    out = ~_in_gamut(flat_l, flat_ab, tolerance)
    if not out.any():
        return ab
    l_out, ab_out = flat_l[out], flat_ab[out]
    low = np.zeros(len(l_out), np.float32)  # a chroma scale that fits: 0 (grey) always does
    step = np.float32(0.5)
    for _ in range(steps):
        trial = low + step
        low = np.where(_in_gamut(l_out, ab_out * trial[:, None], tolerance), trial, low)
        step /= 2
    flat_ab[out] = ab_out * low[:, None]
    return flat_ab.reshape(ab.shape)


def _in_gamut(l, ab, tolerance):
    """Whether each (l, ab) pixel (l: (N,), ab: (N, 2), scaled as in colorlab.lab) is in the sRGB gamut."""
    def f_inverse(f):
        return np.where(f > 6.0 / 29.0, f * f * f, (f - 16.0 / 116.0) / 7.787)

    fy = (np.clip(l, 0.0, 1.0) * lab.L_SCALE + 16.0) / 116.0
    x = f_inverse(fy + ab[:, 0] * np.float32(lab.AB_SCALE / 500.0)) * _WHITE[0]  # Lab to XYZ
    y = f_inverse(fy) * _WHITE[1]
    z = f_inverse(fy - ab[:, 1] * np.float32(lab.AB_SCALE / 200.0)) * _WHITE[2]
    inside = np.ones(len(fy), dtype=bool)
    for row in _RGB_FROM_XYZ:  # each linear sRGB channel lies in [0, 1] exactly when the color is in gamut
        channel = row[0] * x + row[1] * y + row[2] * z
        inside &= (channel >= -tolerance) & (channel <= 1.0 + tolerance)
    return inside
