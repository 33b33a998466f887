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
# the figure to `OUT_FILE`.

# %%
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
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
#   **b** from blue to yellow. a and b carry no brightness: they are flat wherever the photo has no colour.
# - **YUV**: the television standard. **Y** is luma (a weighted sum of R, G and B, close to what a
#   black-and-white camera records); **U** and **V** are blue-minus-luma and red-minus-luma.
#
# In Lab and YUV, one channel *is* the black-and-white photo. That channel is the network's input, and
# it only has to predict the other two: two numbers per pixel instead of three, and none of them
# repeats what it was given.

# %%
l, ab = lab.rgb_to_l_ab(rgb)  # the scaling every stage uses: l in [0, 1], ab in [-1, 1]
yuv = color.rgb2yuv(rgb)  # Y in [0, 1], U in about [-0.44, 0.44], V in about [-0.62, 0.62]
rows = {
    "RGB": [(rgb[..., i], name, "gray", (0, 1)) for i, name in enumerate(["R", "G", "B"])],
    "Lab": [(l[..., 0], "L (input)", "gray", (0, 1)), (ab[..., 0], "a: green - red", "RdYlGn_r", (-0.6, 0.6)),
            (ab[..., 1], "b: blue - yellow", "RdYlBu_r", (-0.6, 0.6))],
    "YUV": [(yuv[..., 0], "Y (input)", "gray", (0, 1)),
            (yuv[..., 1], "U: blue - luma", "coolwarm", (-0.3, 0.3)),
            (yuv[..., 2], "V: red - luma", "coolwarm", (-0.3, 0.3))],
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
# The correlation of each channel with lightness L: close to 1 means "the grey photo already says it".
# R, G and B all correlate strongly with L, so predicting them would mostly mean copying the input.
# a and b correlate weakly: they are the information the photo lost, and what the network must guess.

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
# 1. Change `IMAGE` to `data/samples/flower.jpg`. Which channel shows the flower best?
# 2. Set a and b to zero and convert back with `lab.l_ab_to_rgb`: you get the black-and-white photo.
#    Now set L to a constant 0.6 instead and keep a and b: what is left of the picture?
# 3. Y and L both stand for brightness. Plot one against the other for every pixel. Are they the same?
