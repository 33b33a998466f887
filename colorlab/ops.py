"""RGB <-> Lab (and YUV) as ``keras.ops``: the maths of :mod:`colorlab.lab`, inside a model, on the accelerator.

:mod:`colorlab.lab` converts NumPy arrays with scikit-image, on the CPU, in float64: the reference, and
the clearest code to read. This module computes the same thing with ``keras.ops`` in float32, so the
conversion can run inside a compiled training step (on the GPU when there is one) on any Keras
backend. Then the input pipeline only has to ship 8-bit RGB crops, a quarter of the bytes of float32
``(l, ab)``, and never converts a pixel itself (see ``colorlab.training.RGBTrainer``)::

    l, ab = ops.rgb_to_l_ab(rgb)   # rgb: uint8 in [0, 255] or float in [0, 1], shape (..., 3)
    rgb = ops.l_ab_to_rgb(l, ab)   # float32 in [0, 1]
    y, uv = ops.rgb_to_y_uv(rgb)   # and YUV, as colorlab.lab; ops.split(rgb, "yuv") by name

Same scaling as ``colorlab.lab`` (``l = L / 100``, ``ab = (a, b) / 128``), same sRGB/D65 constants as
scikit-image; ``tests/test_ops.py`` checks both directions against it to 1e-3.
"""

import numpy as np
from keras import ops

from colorlab import lab

# sRGB (linear) -> XYZ, as scikit-image's xyz_from_rgb, each row divided by the D65 white point's
# X, Y, Z, so that white maps to (1, 1, 1) and the Lab step needs no division.
_XYZ_FROM_RGB = np.array(
    [[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]]
)
_WHITE = np.array([0.95047, 1.0, 1.08883])
_XYZN_FROM_RGB = _XYZ_FROM_RGB / _WHITE[:, None]
_RGB_FROM_XYZN = np.linalg.inv(_XYZ_FROM_RGB) * _WHITE[None, :]  # the inverse, white included

# BT.601 YUV, as scikit-image's yuv_from_rgb; the scaling of u and v is colorlab.lab's
_YUV_FROM_RGB = np.array(
    [[0.299, 0.587, 0.114], [-0.14714119, -0.28886916, 0.43601035], [0.61497538, -0.51496512, -0.10001026]]
)
_RGB_FROM_YUV = np.linalg.inv(_YUV_FROM_RGB)

_EPSILON = 0.008856  # scikit-image's thresholds for the linear pieces of the Lab and sRGB curves
_KAPPA = 7.787
_F_EPSILON = 0.2068966  # _f(_EPSILON)


def to_float_rgb(rgb):
    """RGB as float32 in [0, 1]: 8-bit (uint8) values are divided by 255, floats are kept."""
    rgb = ops.convert_to_tensor(rgb)
    if "int" in str(rgb.dtype):
        return ops.cast(rgb, "float32") / 255.0
    return ops.cast(rgb, "float32")


def rgb_to_l_ab(rgb):
    """Split RGB, shape (..., 3), into l (..., 1) in [0, 1] and ab (..., 2) in [-1, 1], as float32.

    ``rgb`` is uint8 in [0, 255] or float in [0, 1]; any leading shape (one photo or a batch).
    """
    fx, fy, fz = _lab_f(rgb)
    l = (116.0 * fy - 16.0) / lab.L_SCALE
    ab = ops.concatenate([500.0 * (fx - fy), 200.0 * (fy - fz)], axis=-1) / lab.AB_SCALE
    return l, ab


def rgb_to_l(rgb):
    """Only the lightness ``l`` (..., 1) in [0, 1] of RGB: a third of the work of :func:`rgb_to_l_ab`."""
    linear = _linear(to_float_rgb(rgb))
    y = _mix(linear, _XYZN_FROM_RGB[1])
    return (116.0 * _f(y) - 16.0) / lab.L_SCALE


def l_ab_to_rgb(l, ab):
    """Join l (..., 1) and ab (..., 2), scaled as above, into RGB (..., 3) float32 in [0, 1].

    As ``colorlab.lab.l_ab_to_rgb``: colours outside the sRGB gamut are clipped to it.
    """
    l = ops.cast(l, "float32")
    ab = ops.cast(ab, "float32")
    fy = (l * lab.L_SCALE + 16.0) / 116.0
    fx = fy + ab[..., :1] * (lab.AB_SCALE / 500.0)
    fz = ops.maximum(fy - ab[..., 1:] * (lab.AB_SCALE / 200.0), 0.0)  # as scikit-image: Z >= 0
    xyz = ops.concatenate([_f_inverse(fx), _f_inverse(fy), _f_inverse(fz)], axis=-1)  # relative to white
    linear = ops.concatenate([_mix(xyz, row) for row in _RGB_FROM_XYZN], axis=-1)
    srgb = ops.where(
        linear > 0.0031308, 1.055 * ops.power(ops.maximum(linear, 0.0031308), 1.0 / 2.4) - 0.055, 12.92 * linear
    )
    return ops.clip(srgb, 0.0, 1.0)


def rgb_to_y_uv(rgb):
    """Split RGB (uint8 or float in [0, 1]), shape (..., 3), into luma y (..., 1) and uv (..., 2), as
    ``colorlab.lab.rgb_to_y_uv`` (BT.601, uv scaled to [-1, 1])."""
    rgb = to_float_rgb(rgb)
    y = _mix(rgb, _YUV_FROM_RGB[0])
    uv = ops.concatenate([_mix(rgb, _YUV_FROM_RGB[1]) / lab.U_SCALE, _mix(rgb, _YUV_FROM_RGB[2]) / lab.V_SCALE], axis=-1)
    return y, uv


def y_uv_to_rgb(y, uv):
    """Join y (..., 1) and uv (..., 2), scaled as above, into RGB float32 in [0, 1] (clipped to it)."""
    yuv = ops.concatenate([ops.cast(y, "float32"), ops.cast(uv[..., :1], "float32") * lab.U_SCALE,
                           ops.cast(uv[..., 1:], "float32") * lab.V_SCALE], axis=-1)
    return ops.clip(ops.concatenate([_mix(yuv, row) for row in _RGB_FROM_YUV], axis=-1), 0.0, 1.0)


SPLITS = {"lab": rgb_to_l_ab, "yuv": rgb_to_y_uv}
JOINS = {"lab": l_ab_to_rgb, "yuv": y_uv_to_rgb}


def split(rgb, color_space="lab"):
    """RGB -> (grey, colour) in ``color_space``, as ``colorlab.lab.split``: ``(l, ab)`` or ``(y, uv)``."""
    return SPLITS[_known(color_space)](rgb)


def join(grey, colour, color_space="lab"):
    """(grey, colour) in ``color_space`` -> RGB float32 in [0, 1]: the inverse of :func:`split`."""
    return JOINS[_known(color_space)](grey, colour)


def grey(rgb, color_space="lab"):
    """Only the grey channel of :func:`split` (``l`` or ``y``), (..., 1): less work than the whole split."""
    if _known(color_space) == "lab":
        return rgb_to_l(rgb)
    return _mix(to_float_rgb(rgb), _YUV_FROM_RGB[0])


def _known(color_space):
    if color_space not in SPLITS:
        raise ValueError(f"unknown colour space {color_space!r}; choose one of {', '.join(SPLITS)}")
    return color_space


def _lab_f(rgb):
    """scikit-image's f(X/Xn), f(Y/Yn), f(Z/Zn) of RGB, each (..., 1)."""
    linear = _linear(to_float_rgb(rgb))
    return tuple(_f(_mix(linear, row)) for row in _XYZN_FROM_RGB)


def _linear(rgb):
    """sRGB in [0, 1] -> linear light (the sRGB "gamma" curve undone)."""
    curve = ops.power((ops.maximum(rgb, 0.04045) + 0.055) / 1.055, 2.4)
    return ops.where(rgb > 0.04045, curve, rgb / 12.92)


def _f(t):
    return ops.where(t > _EPSILON, ops.power(ops.maximum(t, _EPSILON), 1.0 / 3.0), _KAPPA * t + 16.0 / 116.0)


def _f_inverse(f):
    return ops.where(f > _F_EPSILON, f * f * f, (f - 16.0 / 116.0) / _KAPPA)


def _mix(channels, row):
    """``row[0] * c0 + row[1] * c1 + row[2] * c2`` over the last axis, kept as (..., 1).

    Three multiply-adds rather than a matmul: the same on every backend, and XLA fuses them with the
    curves around them.
    """
    return (float(row[0]) * channels[..., 0:1] + float(row[1]) * channels[..., 1:2]
            + float(row[2]) * channels[..., 2:3])
