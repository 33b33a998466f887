# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Assignment: colour spaces
#
# Read `notebooks/color_spaces.ipynb` first. A colouriser sees one channel and guesses two; this
# assignment asks which two, and how much the one it sees already tells about each.
#
# Fill in every cell that says `YOUR CODE HERE` or `YOUR ANSWER HERE`, and delete its `raise
# NotImplementedError()`. The cell after each answer tests it; some tests are hidden and run only when your
# work is graded, so a test that passes here is a good sign, not a promise. Each task stands alone: a
# mistake in one does not cost you the next. Before you submit, run the whole notebook (Kernel > Restart
# Kernel and Run All Cells): it takes well under a minute.
#
# | task | points |
# |---|---|
# | 1. RGB to YUV | 3 |
# | 2. Correlation with lightness | 2 |
# | 3. Luma is not lightness | 2 |
# | 4. The two predicted channels (written) | 3 |

# %%
import colorlab

colorlab.start_keras()  # Keras, with TensorFlow's start-up lines once and its other C++ messages off
import numpy as np
from skimage import color

from colorlab import images, lab
from colorlab.settings import REPO_ROOT

SAMPLES = REPO_ROOT / "data" / "samples"  # the photos that come with the repository
china = images.load(SAMPLES / "china.jpg", 160)  # (107, 160, 3) float in [0, 1]
flower = images.load(SAMPLES / "flower.jpg", 160)

# %% [markdown]
# ## 1. RGB to YUV (3 points)
# YUV is the television standard (BT.601). Luma is a weighted sum of the three channels,
# `Y = 0.299 R + 0.587 G + 0.114 B`, and the two colour channels are scaled differences from it:
# `U = 0.492 (B - Y)` and `V = 0.877 (R - Y)`.
#
# Write `rgb_to_yuv(rgb)`: RGB of any shape `(..., 3)` in [0, 1] -> YUV of the same shape, channels Y, U,
# V in that order. Write the formulas yourself with NumPy (scikit-image's `color.rgb2yuv` is the
# reference the hidden tests compare with).

# %% nbgrader={"grade_id": "yuv", "solution": true}
def rgb_to_yuv(rgb):
    """RGB (..., 3) in [0, 1] -> YUV (..., 3): Y in [0, 1], U in about [-0.44, 0.44], V in [-0.62, 0.62]."""
    ### BEGIN SOLUTION
    r, g, b = np.moveaxis(np.asarray(rgb, dtype=np.float64), -1, 0)
    y = 0.299 * r + 0.587 * g + 0.114 * b
    return np.stack([y, 0.492 * (b - y), 0.877 * (r - y)], axis=-1)
    ### END SOLUTION


# %% nbgrader={"grade_id": "test_yuv", "grade": true, "points": 3}
yuv = rgb_to_yuv(china)  # (H, W, 3)
assert yuv.shape == china.shape, f"expected the shape of the photo, {china.shape}, got {yuv.shape}"
np.testing.assert_allclose(rgb_to_yuv(np.array([1.0, 1.0, 1.0])), [1, 0, 0], atol=1e-3)  # white: no colour
np.testing.assert_allclose(rgb_to_yuv(np.array([0.0, 0.0, 0.0])), [0, 0, 0], atol=1e-3)  # black
### BEGIN HIDDEN TESTS
np.testing.assert_allclose(yuv, color.rgb2yuv(china), atol=2e-3)
primaries = np.eye(3)  # red, green, blue
np.testing.assert_allclose(rgb_to_yuv(primaries), color.rgb2yuv(primaries), atol=2e-3)
### END HIDDEN TESTS

# %% [markdown]
# ## 2. Correlation with lightness (2 points)
# How much does the black-and-white photo already say about each channel? Compute the correlation of
# each channel with Lab's lightness `l` over the pixels of `china`, a number from -1 to +1
# (`np.corrcoef` computes it). Make `correlations` a dictionary with the keys `"R"`, `"G"`, `"B"` (RGB),
# `"a"`, `"b"` (Lab, from `lab.rgb_to_l_ab`) and `"U"`, `"V"` (YUV: use scikit-image's `color.rgb2yuv`,
# so that this task does not depend on task 1), each mapped to its correlation with `l`, as a float.

# %% nbgrader={"grade_id": "correlations", "solution": true}
l, ab = lab.rgb_to_l_ab(china)  # (H, W, 1) in [0, 1] and (H, W, 2) in [-1, 1]
yuv = color.rgb2yuv(china)  # (H, W, 3): Y, U, V
### BEGIN SOLUTION
channels = {"R": china[..., 0], "G": china[..., 1], "B": china[..., 2], "a": ab[..., 0], "b": ab[..., 1],
            "U": yuv[..., 1], "V": yuv[..., 2]}
correlations = {name: float(np.corrcoef(channel.ravel(), l.ravel())[0, 1])
                for name, channel in channels.items()}
### END SOLUTION
for name, r in correlations.items():
    print(f"{name}: {r:+.2f}")

# %% nbgrader={"grade_id": "test_correlations", "grade": true, "points": 2}
assert sorted(correlations) == sorted("RGBabUV"), f"keys: R G B a b U V, not {sorted(correlations)}"
assert all(-1 <= r <= 1 for r in correlations.values()), "a correlation lies between -1 and +1"
### BEGIN HIDDEN TESTS
l_check, ab_check = lab.rgb_to_l_ab(china)
yuv_check = color.rgb2yuv(china)
expected = {"R": china[..., 0], "G": china[..., 1], "B": china[..., 2], "a": ab_check[..., 0],
            "b": ab_check[..., 1], "U": yuv_check[..., 1], "V": yuv_check[..., 2]}
for name, channel in expected.items():
    r = np.corrcoef(channel.ravel(), l_check.ravel())[0, 1]
    assert abs(correlations[name] - r) < 0.01, f"{name}: expected {r:+.3f}, got {correlations[name]:+.3f}"
### END HIDDEN TESTS

# %% [markdown]
# ## 3. Luma is not lightness (2 points)
# Y and `l` both stand for brightness, and both lie in [0, 1]. Write `largest_gap(rgb)`: the largest
# difference, in absolute value, between a pixel's luma Y and its lightness `l`, over all the pixels of
# a photo (take Y from `color.rgb2yuv`). Then compare `china` and `flower`.

# %% nbgrader={"grade_id": "gap", "solution": true}
def largest_gap(rgb):
    """The largest |Y - l| over the pixels of ``rgb`` (H, W, 3) in [0, 1]."""
    ### BEGIN SOLUTION
    l, _ = lab.rgb_to_l_ab(rgb)
    return float(np.abs(color.rgb2yuv(rgb)[..., 0] - l[..., 0]).max())
    ### END SOLUTION


print(f"china {largest_gap(china):.3f}, flower {largest_gap(flower):.3f}")

# %% nbgrader={"grade_id": "test_gap", "grade": true, "points": 2}
assert 0 < largest_gap(china) < largest_gap(flower) < 0.5
### BEGIN HIDDEN TESTS
for photo in (china, flower):
    l_check, _ = lab.rgb_to_l_ab(photo)
    expected = np.abs(color.rgb2yuv(photo)[..., 0] - l_check[..., 0]).max()
    gap = largest_gap(photo)
    assert abs(gap - expected) < 0.002, f"expected {expected:.3f}, got {gap:.3f}"
grey = np.full((4, 4, 3), 0.5)  # a mid grey: Y = 0.50, l = 0.53
assert abs(largest_gap(grey) - abs(0.5 - lab.rgb_to_l_ab(grey)[0].max())) < 0.002
### END HIDDEN TESTS

# %% [markdown]
# ## 4. The two predicted channels (3 points, graded by hand)
# In a few sentences: which two channels does a colouriser predict in Lab, and which in YUV? Why two,
# not three, as RGB would need? Use your correlations from task 2: what does a colouriser that predicted
# R, G and B spend its effort on? And why do the stages prefer Lab's two to YUV's (`gan/train.py`,
# "Two channels to guess")?

# %% [markdown] nbgrader={"grade_id": "explain", "grade": true, "solution": true, "points": 3}
# In Lab the network predicts **a** (green to red) and **b** (blue to yellow); in YUV, **U** (blue minus
# luma) and **V** (red minus luma). The third channel, L or Y, *is* the black-and-white photo: it is the
# input, so only two numbers per pixel are unknown. In RGB every channel carries brightness: R, G and B
# correlate with l at +0.97 to +1.00 on china.jpg, so a network predicting them would mostly copy its
# input back, and a small error in one of them would change the brightness too. a, b, U and V are far
# less tied to l (-0.09, -0.51, +0.51, -0.39): what they hold is the information the grey photo lost.
# Lab is preferred because it was built so that equal steps look like equal changes of colour: an error
# of 0.1 in ab looks about as bad everywhere, while YUV is a plain linear mix of R, G and B, so the same
# L1 error in uv can look small in one colour and large in another.
