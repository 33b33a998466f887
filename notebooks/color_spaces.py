# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Colour spaces: why the networks predict only two channels
#
# A colour photo stores three numbers per pixel. A black-and-white photo stores one. Which *two*
# numbers does a colouriser have to guess? It depends on how we write colour down. This notebook splits
# one photo three ways (RGB, Lab and YUV) and looks at what each channel holds.
#
# Run it in Jupyter (`notebooks/color_spaces.ipynb`), or `python notebooks/color_spaces.py`, which saves
# the figure to `OUT_FILE`. `colorlab` uses Keras, whose default backend, TensorFlow, says when it starts
# on a computer without an NVIDIA GPU: "Could not find cuda drivers on your machine, GPU will not be
# used", after a "WARNING: All log messages before absl::InitializeLog()" line. They are harmless;
# `colorlab.start_keras()` in the first cell shows them once (TensorFlow prints them twice).

# %% [markdown]
# ## What to expect
# About 15 s on a 2-core CPU. This figure, and each channel's correlation with lightness: +0.97 to +1.00
# for R, G and B; -0.10 for a and -0.48 for b; +0.48 for U and -0.37 for V. Every output of a run is in
# [docs/executed/color_spaces.ipynb](../docs/executed/color_spaces.ipynb).
#
# ![china.jpg split into RGB, Lab and YUV: the photo, then each channel](../docs/color_spaces.jpg)

# %%
from pathlib import Path

import colorlab

colorlab.start_keras()  # TensorFlow's start-up lines once (see above)
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import LinearSegmentedColormap
from skimage import color

from colorlab import files, images, lab, settings

# %% tags=["parameters"]
IMAGE = "data/samples/china.jpg"  # any photo
IMAGE_SIZE = 320  # pixels on the longer side
OUT_FILE = "outputs/color_spaces.png"  # where the figure is saved

# %%
settings.apply(globals())
rgb = images.load(IMAGE, IMAGE_SIZE)  # (H, W, 3) float in [0, 1]

# %% [markdown]
# ## Three ways to write a colour
# - **RGB**: how much red, green and blue light. Every channel looks like a black-and-white photo,
#   because every channel carries brightness. Knowing the grey photo tells you a lot about all three,
#   but none of them exactly.
# - **Lab**: **L** is lightness, the black-and-white photo itself; **a** runs from green to red and
#   **b** from blue to yellow. a and b carry no brightness: they are 0 wherever the photo has no colour.
# - **YUV**: the television standard. **Y** is luma (a weighted sum of R, G and B, close to what a
#   black-and-white camera records); **U** and **V** are blue-minus-luma and red-minus-luma.
#
# The figure draws each colour channel in the colours of its own axis, white where it is 0 (no
# colour): a from green (negative) to red (positive), b from blue to yellow, U from yellow to blue
# (U is blue minus luma, so a yellowish pixel has a negative U) and V from cyan to red. So in b the
# bluish sky is blue and the trees and roofs, a yellowish green and orange, are yellow.
#
# In Lab and YUV, one channel *is* the black-and-white photo. That channel is the network's input, and
# it only has to predict the other two: two numbers per pixel instead of three, and none of them
# repeats what it was given.

# %%
l, ab = lab.rgb_to_l_ab(rgb)  # the scaling every stage uses: l in [0, 1], ab in [-1, 1]
yuv = color.rgb2yuv(rgb)  # Y in [0, 1], U in about [-0.44, 0.44], V in about [-0.62, 0.62]
# a colour channel's map: its negative end's colour, white for 0 (no colour), its positive end's colour
axis = lambda negative, positive: LinearSegmentedColormap.from_list("axis", [negative, "white", positive])
rows = {  # each channel: (values, title, colour map, the values at the map's two ends)
    "RGB": [(rgb[..., i], name, "gray", (0, 1)) for i, name in enumerate(["R", "G", "B"])],
    "Lab": [(l[..., 0], "L (input)", "gray", (0, 1)),
            (ab[..., 0], "a: green - red", axis("tab:green", "tab:red"), (-0.5, 0.5)),
            (ab[..., 1], "b: blue - yellow", axis("tab:blue", "gold"), (-0.5, 0.5))],
    "YUV": [(yuv[..., 0], "Y (input)", "gray", (0, 1)),
            (yuv[..., 1], "U: blue - luma", axis("gold", "tab:blue"), (-0.3, 0.3)),
            (yuv[..., 2], "V: red - luma", axis("c", "tab:red"), (-0.3, 0.3))],
}
fig, axes = plt.subplots(3, 4, figsize=(13, 7.5))
for r, (space, channels) in enumerate(rows.items()):
    axes[r, 0].imshow(rgb)
    axes[r, 0].set_ylabel(space, fontsize=14)
    for c, (channel, name, cmap, (low, high)) in enumerate(channels, start=1):
        axes[r, c].imshow(channel, cmap=cmap, vmin=low, vmax=high)
        axes[r, c].set_title(name)
for ax in axes.flat:
    ax.set_xticks([])
    ax.set_yticks([])
fig.tight_layout()

# %% [markdown]
# ## How much of each channel does the grey photo already tell?
# The correlation of each channel with lightness L runs from -1 to +1: near +1 or -1, the channel
# rises or falls with L and "the grey photo already says it"; near 0, L says nothing about it. Its
# square is the share of the channel's variation that L explains.
#
# On the default photo, `china.jpg`, R, G and B correlate with L at +0.97 to +1.00: L explains over
# 90% of each, so predicting them would mostly mean copying the input. a and b are far less tied to
# it, but not equally. a hardly at all (-0.10). b clearly (-0.48): in this photo the bright sky is
# bluish (b below 0) and the darker trees and roofs yellowish (b above 0), so the brighter a pixel, the
# bluer. Still, L explains only about a quarter of b's variation (0.48 x 0.48 = 0.23): the rest is
# the information the photo lost, and what the network must guess. U mirrors b (+0.48: it grows
# towards blue where b grows towards yellow), and V follows L more than a does (-0.37). These
# correlations belong to the photo, not to the colour space: in `flower.jpg` (exercise 1) the one
# bright thing is the orange flower, and a and b rise with L.

# %%
for space, channels in rows.items():
    for channel, name, *_ in channels:
        r = np.corrcoef(channel.ravel(), l[..., 0].ravel())[0, 1]
        print(f"{space}  {name:<18} correlation with L: {r:+.2f}")

# %% [markdown]
# ## Save the figure

# %%
Path(OUT_FILE).parent.mkdir(parents=True, exist_ok=True)
with files.atomic_path(OUT_FILE) as tmp:
    fig.savefig(tmp, dpi=100)
print(f"wrote {OUT_FILE}")

# %% [markdown]
# ## Exercises
#
# The times were measured on a 2-core CPU shared with other jobs (load average about 7).
#
# 1. **Another photo.** Change `IMAGE` to `data/samples/flower.jpg` and run the notebook again (about
#    40 s). Which channel shows the flower best? Expect R (a near-white flower on near-black leaves)
#    and, in colour, a (red on green) and b (yellow on blue); in B it almost disappears into the leaves.
#    Then read the correlations: a and b now rise with L (+0.60 and +0.74, against -0.10 and -0.48 on
#    `china.jpg`), because the one bright thing in this photo is also the one orange thing.
# 2. **Colour without lightness.** On `china.jpg`, set a and b to zero and convert back with
#    `lab.l_ab_to_rgb(l, np.zeros_like(ab))`: you get the black-and-white photo. Now keep a and b and
#    set L to a constant instead, `lab.l_ab_to_rgb(np.full_like(l, 0.6), ab)` (both take well under a
#    second). What is left of the picture? Expect a flat poster: an orange-red roof, olive trees and a
#    blue-grey sky, with hardly an edge or a texture. The shapes are still there, but only as patches
#    of colour.
# 3. **Luma is not lightness.** Y and L both stand for brightness. Plot one against the other for every
#    pixel, `plt.scatter(l.ravel(), yuv[..., 0].ravel(), s=1)` (under a second). On `china.jpg` they
#    correlate at +1.00 and differ by at most 0.08, but always by a little: a mid grey has Y = 0.50 and
#    l = 0.53. On `flower.jpg` the points spread into a band: pixels with a Y of about 0.25 have l from
#    0.25 to 0.43, and Y and l are up to 0.17 apart. Y weighs the screen's R, G and B values; L is
#    computed from the light they stand for. The pixels more than 0.1 apart are the colourful ones,
#    mostly the orange flower's (the length of their `ab`: 0.45 on average, against 0.20 over the whole
#    photo). Why do saturated colours stray furthest?
