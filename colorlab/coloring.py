"""The one way photos are colored, by the stages' result grids and the ``colorize`` and ``evaluate`` commands:
the model (l (batch, h, w, 1) in [0, 1] -> ab in [-1, 1]) sees each photo with its shorter side ``size``
(None: as it is), mirror-padded to a ``multiple``; its ab is upsampled, brought into the sRGB gamut keeping
the lightness, and joined with the full-resolution l: only the color comes from the network. In three steps
(:func:`prepare`, :func:`predict_ab`, :func:`finish`), which the ``colorize`` command runs in threads."""

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from colorlab import images, lab

MAX_ASPECT = 4  # the working size's longer side is at most this many times its shorter side
MAX_BATCH_PIXELS = 4_000_000  # working-size pixels per model call: a batch of big photos is split
COMPILED_PIXELS = 65_536  # from this many working-size pixels per call, the network runs compiled
BAND_PIXELS = 131_072  # full-resolution pixels converted at once, on every CPU core: small temporaries
POOL = ThreadPoolExecutor(os.cpu_count() or 1, thread_name_prefix="colorlab")  # its threads start when used


def colorize(model, rgbs, size=None, multiple=8, color_space="lab"):
    """Color each (H, W, 3) RGB photo in ``rgbs`` (8-bit, or float in [0, 1]) from its lightness alone; return
    the RGB results, each of its photo's size and type (float32 for a float photo)."""
    works = [prepare(rgb, size, multiple, color_space) for rgb in rgbs]
    return [finish(rgb, ab, color_space) for rgb, ab in zip(rgbs, predict_ab(model, works))]


def prepare(rgb, size=None, multiple=8, color_space="lab"):
    """What the model sees of a photo: (its l at the working size (h, w, 1), its padded shape (h8, w8))."""
    (h, w), padded = working_shape(rgb.shape[0], rgb.shape[1], size, multiple)
    if (h, w) != rgb.shape[:2]:  # Lanczos, as the stages load photos; a channel per core
        channels = POOL.map(lambda c: images.resize(rgb[..., c : c + 1], h, w, "lanczos"), range(3))
        rgb = np.clip(np.concatenate(list(channels), axis=-1) / (255 if rgb.dtype == np.uint8 else 1), 0, 1)
    return lab.from_rgb(_float(rgb), color_space)[0], padded


def working_shape(height, width, size=None, multiple=8):
    """Where the model sees a (height, width) photo: ((h, w) scaled, (h8, w8) padded to ``multiple``)."""
    if size is not None:
        scale = min(size / min(height, width), MAX_ASPECT * size / max(height, width))  # a 10000x20 strip too
        height, width = max(1, round(height * scale)), max(1, round(width * scale))
    return (height, width), (height + -height % multiple, width + -width % multiple)


def predict_ab(model, works, max_pixels=MAX_BATCH_PIXELS):
    """Run ``model`` on ``works``, a list of (l (h, w, 1), (h8, w8) padded shape): each ab (h, w, 2)."""
    results, groups = [None] * len(works), {}
    for i, (_, padded) in enumerate(works):
        groups.setdefault(padded, []).append(i)
    for (ph, pw), members in groups.items():
        step = max(1, max_pixels // (ph * pw))  # photos of one padded shape share model calls
        for first in range(0, len(members), step):
            chunk = members[first : first + step]
            batch = np.stack([images.pad_to_multiple(works[i][0], 1, (ph, pw)) for i in chunk])
            ab = forward(model, batch)
            for k, i in enumerate(chunk):
                results[i] = ab[k, : works[i][0].shape[0], : works[i][0].shape[1]]
    return results


def forward(model, batch):
    """The model's output for ``batch``, float32: by Keras's compiled inference step (``predict_on_batch``)
    once the batch is big enough to repay compiling it (a second or two), else by calling the model."""
    import keras

    compiled = batch[..., 0].size >= COMPILED_PIXELS and hasattr(model, "predict_on_batch")
    ab = model.predict_on_batch(batch) if compiled else model(batch, training=False)
    return np.asarray(keras.ops.convert_to_numpy(ab), dtype=np.float32)


def finish(rgb, ab, color_space="lab"):
    """A photo's colors: its own l, at full resolution, joined with ``ab`` (h, w, 2) from the model, resized
    (bilinear) and brought into the sRGB gamut (:func:`fit_gamut`); a band of rows at a time, on all cores."""
    (height, width), (h, w), rows = rgb.shape[:2], ab.shape[:2], max(1, BAND_PIXELS // rgb.shape[1])
    out = np.empty(rgb.shape, np.uint8 if rgb.dtype == np.uint8 else np.float32)

    def band(top):  # Pillow's box: these rows of the whole photo's ab, exactly
        part = slice(top, min(top + rows, height))
        box = (0, top * h / height, w, part.stop * h / height)
        color = images.resize(ab, part.stop - top, width, "bilinear", box)
        if color_space == "lab":
            linear = fit_gamut(lab.rgb_to_l(rgb[part]), color[..., 0], color[..., 1])
            out[part] = lab.linear_to_rgb(linear, out.dtype)
        else:  # in YUV, colors out of the RGB cube are clipped
            result = lab.to_rgb(lab.from_rgb(_float(rgb[part]), color_space)[0], color, color_space)
            out[part] = result if out.dtype == np.float32 else result * 255 + 0.5

    list(POOL.map(band, range(0, height, rows)))
    return out


def fit_gamut(l, a, b, steps=10, tolerance=1e-6):
    """The linear sRGB planes of (l, a, b) (planes, as :func:`colorlab.lab.lab_to_linear` takes), each pixel's
    ab scaled towards 0 (same hue, less chroma) until it is an sRGB color: clipping RGB would change the
    lightness of, say, saturated blue predicted on a near-white sky (bisection on the pixels out of gamut)."""
    def inside(linear):  # every channel within [0, 1]
        return np.logical_and.reduce([(c >= -tolerance) & (c <= 1 + tolerance) for c in linear])

    some = (l > 0) & (l < 1)  # at black and at white no chroma fits: those pixels are grey
    a, b = np.where(some, a, 0), np.where(some, b, 0)
    linear = lab.lab_to_linear(l, a, b)
    if (out := ~inside(linear) & some).any():
        l, a, b = l[out], a[out], b[out]
        low, step = np.zeros(len(l), np.float32), np.float32(0.5)  # a chroma scale that fits: 0 always does
        for _ in range(steps):
            low = np.where(inside(lab.lab_to_linear(l, a * (low + step), b * (low + step))), low + step, low)
            step /= 2
        for plane, fitted in zip(linear, lab.lab_to_linear(l, a * low, b * low)):
            plane[out] = fitted
    return linear


def _float(rgb):
    return rgb.astype(np.float32) / 255 if rgb.dtype == np.uint8 else rgb
