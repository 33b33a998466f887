# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Assignment: beta, colour photos the network never saw
#
# Read `beta/train.py` (or its notebook) first. This assignment reads a training history for the moment
# memorizing starts, measures how much of a photo the encoder sees, and computes the number every
# validation loss must beat. Fill in every cell that says `YOUR CODE HERE` or `YOUR ANSWER HERE`, and delete
# its `raise NotImplementedError()`. The cell after each answer tests it; some tests are hidden and run only
# when your work is graded, so a test that passes here is a good sign, not a promise. Each task stands
# alone: a mistake in one does not cost you the next. Before you submit, run the whole notebook (Kernel >
# Restart Kernel and Run All Cells): it takes well under a minute.
#
# | task | points |
# |---|---|
# | 1. When does memorizing start? | 2 |
# | 2. Receptive field | 3 |
# | 3. The baseline: predict grey | 2 |
# | 4. Why so much context? (written) | 2 |

# %%
import colorlab

colorlab.start_keras()  # Keras, with TensorFlow's start-up lines once and its other C++ messages off
import keras
import numpy as np
from keras import layers

from colorlab import data, training
from colorlab.settings import REPO_ROOT

SAMPLES = REPO_ROOT / "data" / "samples"  # the photos that come with the repository

# %% [markdown]
# ## 1. When does memorizing start? (2 points)
# `history.csv`, beside this notebook, is the history of a 30-epoch run of beta, in the form
# `CSVLogger` writes it: one row per epoch, with the training `loss` and the validation `val_loss`.
# (It was made up for this assignment, shaped like a longer run on a real dataset.) Below, it is read
# with `colorlab.training.history`, as the stage reads its own: `{"loss": [...], "val_loss": [...], ...}`,
# one value per epoch. Plot the two curves if you like (`matplotlib.pyplot.plot`).
#
# Write `last_good_epoch(history)`: the epoch after which the network memorizes, that is, the epoch with
# the lowest validation loss, after which the training loss goes on falling and the validation loss
# never gets as low again. Count epochs from 1, as Keras prints them (`CSVLogger`'s `epoch` column counts
# from 0). This is the epoch `ModelCheckpoint(save_best_only=True)` keeps.

# %%
history = training.history("history.csv")  # {"loss": [30 values], "val_loss": [30 values], ...}
print(f"{len(history['loss'])} epochs; validation loss from {history['val_loss'][0]:.5f} "
      f"to {history['val_loss'][-1]:.5f}")

# %% nbgrader={"grade_id": "memorizing", "solution": true}
def last_good_epoch(history):
    """The epoch, counted from 1, with the lowest validation loss in ``history``."""
    ### BEGIN SOLUTION
    return int(np.argmin(history["val_loss"])) + 1
    ### END SOLUTION


print(f"memorizing starts after epoch {last_good_epoch(history)}")

# %% nbgrader={"grade_id": "test_memorizing", "grade": true, "points": 2}
assert 1 <= last_good_epoch(history) <= 30
### BEGIN HIDDEN TESTS
assert last_good_epoch(history) == 12, last_good_epoch(history)
other = {"loss": [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3], "val_loss": [0.5, 0.4, 0.3, 0.35, 0.29, 0.3, 0.4]}
assert last_good_epoch(other) == 5, last_good_epoch(other)
### END HIDDEN TESTS

# %% [markdown]
# ## 2. Receptive field (3 points)
# A pixel of a convolution's output depends on a square of the input: its *receptive field*. One 3x3
# convolution sees 3x3 pixels. A second one on top sees 3x3 of the first's outputs, which together cover
# 5x5 input pixels. A stride of 2 spaces the outputs 2 input pixels apart, so that every layer after it
# widens the field twice as fast.
#
# Write `receptive_field(model)`: the side, in input pixels, of the square one output of a
# `keras.Sequential` of `Conv2D` layers sees (any kernel size and stride; other layers, with no kernel,
# can be skipped; a layer's `kernel_size` and `strides` are tuples). Then set `beta_field` to the
# receptive field of one pixel of the output of beta's second 512-channel convolution, the deepest layer
# of its encoder (read its layers in `beta/train.py`).

# %% nbgrader={"grade_id": "receptive_field", "solution": true}
def receptive_field(model):
    """The side, in input pixels, of the square that one output of a chain of convolutions sees."""
    ### BEGIN SOLUTION
    size, step = 1, 1  # step: input pixels between two neighbouring outputs of the layers so far
    for layer in model.layers:
        if isinstance(layer, layers.Conv2D):
            size += (layer.kernel_size[0] - 1) * step
            step *= layer.strides[0]
    return size
    ### END SOLUTION


### BEGIN SOLUTION
encoder = keras.Sequential([
    keras.Input(shape=(None, None, 1)),
    layers.Conv2D(64, 3, activation="relu", padding="same", strides=2),  # 1/2 size
    layers.Conv2D(128, 3, activation="relu", padding="same"),
    layers.Conv2D(128, 3, activation="relu", padding="same", strides=2),  # 1/4 size
    layers.Conv2D(256, 3, activation="relu", padding="same"),
    layers.Conv2D(256, 3, activation="relu", padding="same", strides=2),  # 1/8 size
    layers.Conv2D(512, 3, activation="relu", padding="same"),
    layers.Conv2D(512, 3, activation="relu", padding="same"),
])
beta_field = receptive_field(encoder)  # 59: 1 + 2 + 2x2 + 2x2 + 2x4 + 2x4 + 2x8 + 2x8
### END SOLUTION
print(f"one pixel of beta's deepest encoder layer sees {beta_field}x{beta_field} input pixels")

# %% nbgrader={"grade_id": "test_receptive_field", "grade": true, "points": 3}
def chain(*layer_list):
    return keras.Sequential([keras.Input(shape=(None, None, 1)), *layer_list])


assert receptive_field(chain(layers.Conv2D(4, 3))) == 3
assert receptive_field(chain(layers.Conv2D(4, 3), layers.Conv2D(4, 3))) == 5
### BEGIN HIDDEN TESTS
assert receptive_field(chain(layers.Conv2D(4, 3, strides=2), layers.Conv2D(4, 3))) == 7
patchgan = chain(*[layers.Conv2D(4, 4, strides=2, padding="same") for _ in range(3)], layers.ZeroPadding2D(1),
                 layers.Conv2D(4, 4), layers.ZeroPadding2D(1), layers.Conv2D(1, 4))
assert receptive_field(patchgan) == 70  # pix2pix's 70x70 PatchGAN (the gan stage)
assert beta_field == 59, beta_field
### END HIDDEN TESTS

# %% [markdown]
# ## 3. The baseline: predict grey (2 points)
# A network that colours nothing, `ab = 0` everywhere, has a loss too: the mean of `ab ** 2` over every
# pixel. Any validation loss is judged against it. Write `grey_loss(dataset)`: that loss over every pixel
# of every batch of `dataset`, a sequence of `(l, ab)` batches such as `validation` below, whose batches
# need not all have the same size.

# %%
train, validation = data.from_folder(SAMPLES, 64, 4, 2, 0.25)  # as beta does: 64-pixel crops, 2 photos aside

# %% nbgrader={"grade_id": "grey", "solution": true}
def grey_loss(dataset):
    """The mean squared error of predicting ab = 0, over every pixel of every (l, ab) batch of dataset."""
    ### BEGIN SOLUTION
    every_ab = np.concatenate([ab.ravel() for _, ab in dataset])
    return float(np.mean(np.square(every_ab)))
    ### END SOLUTION


print(f"predicting grey on the validation photos: loss {grey_loss(validation):.5f}")

# %% nbgrader={"grade_id": "test_grey", "grade": true, "points": 2}
assert 0 < grey_loss(validation) < 0.1
### BEGIN HIDDEN TESTS
every_ab = np.concatenate([ab.ravel() for _, ab in validation])
assert abs(grey_loss(validation) - np.mean(every_ab**2)) < 1e-6
uneven = [(None, np.full((3, 2, 2, 2), 0.1)), (None, np.full((1, 2, 2, 2), 0.5))]  # batches of 3 and 1
assert abs(grey_loss(uneven) - 0.07) < 1e-6, grey_loss(uneven)  # (24 x 0.01 + 8 x 0.25) / 32
### END HIDDEN TESTS

# %% [markdown]
# ## 4. Why so much context? (2 points, graded by hand)
# Use your `beta_field`. In a few sentences: why does colouring photos the network never saw need a
# receptive field that large, when alpha's small network coloured its one photo well without it? What
# can a pixel of beta's deepest layer "know" that a 3x3 neighbourhood cannot?

# %% [markdown] nbgrader={"grade_id": "explain", "grade": true, "solution": true, "points": 2}
# One pixel of beta's deepest layer sees 59x59 input pixels, about half of a 128-pixel crop. The colour
# of a pixel is rarely written in its own grey value or its 3x3 neighbours: the same mid grey is sky,
# skin, grass or a car. What decides it is what the pixel belongs to, and that needs context: the shape
# of the object, the texture around it, whether it is at the top of an open scene. Alpha did not need
# any: it saw one photo, so it could learn "this grey at this place is blue" by heart; position and a
# few neighbours were enough to remember one photo, but they say nothing about a new one.
