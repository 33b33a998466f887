# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Assignment: gan, why is everything brown?
#
# Read `gan/train.py` (or its notebook) first. This assignment writes the two losses of its training
# step, measures its PatchGAN discriminator, and computes the hedge a pixel loss makes. Nothing is
# trained: the losses are checked on fixed numbers.
#
# Fill in every cell that says `YOUR CODE HERE` or `YOUR ANSWER HERE`, and delete its `raise
# NotImplementedError()`. The cell after each answer tests it; some tests are hidden and run only when your
# work is graded, so a test that passes here is a good sign, not a promise. Each task stands alone: a
# mistake in one does not cost you the next. Before you submit, run the whole notebook (Kernel > Restart
# Kernel and Run All Cells): it takes well under a minute.
#
# | task | points |
# |---|---|
# | 1. The discriminator's loss | 2 |
# | 2. The generator's loss | 2 |
# | 3. The PatchGAN's grid of scores | 2 |
# | 4. The PatchGAN's patch | 2 |
# | 5. The hedge of a pixel loss | 2 |
# | 6. Why brown? (written) | 2 |

# %%
import colorlab

colorlab.start_keras()  # Keras, with TensorFlow's start-up lines once and its other C++ messages off
import keras
import numpy as np
from keras import ops

from colorlab import lab


def bce(target, logits):
    """Binary cross-entropy, averaged over the patches of the batch (as in the stage)."""
    return ops.mean(ops.binary_crossentropy(target, logits, from_logits=True))


def value(x):
    """A loss as a Python float, whatever it is computed with (keras.ops, NumPy)."""
    return float(keras.ops.convert_to_numpy(x))


print(f"a discriminator that cannot tell: {value(bce(ops.ones((1, 4)), ops.zeros((1, 4)))):.4f} = ln 2")

# %% [markdown]
# ## 1. The discriminator's loss (2 points)
# The discriminator gives one score (a logit) per patch: above 0 means "real", below 0 "generated". Write
# `discriminator_loss(real_logits, fake_logits)`: its loss on a batch, given its scores for the real
# colourings and for the generated ones, as in pix2pix and in the stage: the binary cross-entropy (`bce`
# above) of the right answer for each, the two averaged (pix2pix halves their sum).

# %% nbgrader={"grade_id": "d_loss", "solution": true}
def discriminator_loss(real_logits, fake_logits):
    """The discriminator's loss: it should say 1 (real) to real colourings and 0 to generated ones."""
    ### BEGIN SOLUTION
    real, fake = real_logits, fake_logits
    return 0.5 * (bce(ops.ones_like(real), real) + bce(ops.zeros_like(fake), fake))  # real: 1, generated: 0
    ### END SOLUTION


# %% nbgrader={"grade_id": "test_d_loss", "grade": true, "points": 2}
undecided = np.zeros((2, 3, 3, 1), np.float32)  # scores of 0: probability 0.5 for every patch
assert abs(value(discriminator_loss(undecided, undecided)) - np.log(2)) < 1e-4
### BEGIN HIDDEN TESTS
softplus = lambda x: np.log1p(np.exp(x))  # bce(1, x) = softplus(-x), bce(0, x) = softplus(x)
real = np.array([[2.0, -1.0], [0.5, 3.0]], np.float32)
fake = np.array([[-3.0, 0.5], [1.0, -0.2]], np.float32)
expected = 0.5 * (np.mean(softplus(-real)) + np.mean(softplus(fake)))
assert abs(value(discriminator_loss(real, fake)) - expected) < 1e-4, value(discriminator_loss(real, fake))
sure = np.full((1, 2, 2, 1), 10.0, np.float32)
assert value(discriminator_loss(sure, -sure)) < 1e-3  # right and sure: no loss
### END HIDDEN TESTS

# %% [markdown]
# ## 2. The generator's loss (2 points)
# Write `generator_loss(fake_logits, ab, ab_fake, l1_weight=100.0)`: the generator's whole loss, as in
# the stage's `train_step`: the adversarial part (it wants the discriminator to call its colourings
# real), plus `l1_weight` times the L1 loss, the mean absolute difference between the true colours `ab`
# and the generated ones `ab_fake`.

# %% nbgrader={"grade_id": "g_loss", "solution": true}
def generator_loss(fake_logits, ab, ab_fake, l1_weight=100.0):
    """The generator's loss: fool the discriminator, and stay close to the true colours (L1)."""
    ### BEGIN SOLUTION
    return bce(ops.ones_like(fake_logits), fake_logits) + l1_weight * ops.mean(ops.abs(ab - ab_fake))
    ### END SOLUTION


# %% nbgrader={"grade_id": "test_g_loss", "grade": true, "points": 2}
ab_true = np.full((1, 2, 2, 2), 0.3, np.float32)
assert abs(value(generator_loss(np.zeros((1, 2, 2, 1), np.float32), ab_true, ab_true)) - np.log(2)) < 1e-4
### BEGIN HIDDEN TESTS
softplus = lambda x: np.log1p(np.exp(x))
fake = np.array([[-1.0, 2.0, 0.5]], np.float32)
ab_fake = np.array([[[[0.1, -0.2], [0.5, 0.3]]]], np.float32)  # (1, 1, 2, 2)
ab_real = np.array([[[[0.3, -0.1], [0.1, 0.3]]]], np.float32)
for weight in (100.0, 1.0):
    expected = np.mean(softplus(-fake)) + weight * np.mean(np.abs(ab_real - ab_fake))
    got = value(generator_loss(fake, ab_real, ab_fake, l1_weight=weight))
    assert abs(got - expected) < 1e-4, (weight, got, expected)
### END HIDDEN TESTS

# %% [markdown]
# ## 3. The PatchGAN's grid of scores (2 points)
# Read `patchgan` in `gan/train.py`: `d_layers` stride-2 4x4 convolutions with `padding="same"`, then two
# 4x4 convolutions with stride 1, each after a `ZeroPadding2D(1)`. Write `grid_size(image_size, d_layers)`:
# the number of rows (and columns) of the grid of scores it gives for a square input of `image_size`
# pixels, a multiple of `2 ** d_layers`. (The stage prints it for its crops; you may build the network to
# check, but work it out first.)

# %% nbgrader={"grade_id": "grid", "solution": true}
def grid_size(image_size, d_layers=3):
    """Rows of the PatchGAN's grid of scores for an image_size x image_size input."""
    ### BEGIN SOLUTION
    size = image_size // 2**d_layers  # each stride-2 "same" convolution halves the size
    return size - 2  # each stride-1 4x4 convolution after a padding of 1: size + 2 - 4 + 1 = size - 1
    ### END SOLUTION


# %% nbgrader={"grade_id": "test_grid", "grade": true, "points": 2}
assert grid_size(256, 3) == 30  # pix2pix's 30x30 grid, as the stage says
### BEGIN HIDDEN TESTS
assert grid_size(128, 3) == 14 and grid_size(64, 2) == 14 and grid_size(512, 4) == 30
assert grid_size(96, 3) == 10 and grid_size(64, 1) == 30
### END HIDDEN TESTS

# %% [markdown]
# ## 4. The PatchGAN's patch (2 points)
# Each score sees a square patch of the input: its receptive field. Write `patch_size(d_layers)`: its
# side, in pixels, for the PatchGAN with `d_layers` stride-2 layers (the padding layers do not change
# it). The stage's `receptive_field` computes it from a built network; here, work it out as a formula.

# %% nbgrader={"grade_id": "patch", "solution": true}
def patch_size(d_layers=3):
    """The side of the square of input pixels that one score of the PatchGAN sees."""
    ### BEGIN SOLUTION
    size, step = 1, 1
    for _ in range(d_layers):  # 4x4, stride 2: 3 more steps, then steps twice as wide
        size += 3 * step
        step *= 2
    return size + 3 * step + 3 * step  # the two 4x4 stride-1 layers: 9 * 2**d_layers - 2 in all
    ### END SOLUTION


# %% nbgrader={"grade_id": "test_patch", "grade": true, "points": 2}
assert patch_size(3) == 70  # pix2pix's 70x70 PatchGAN
### BEGIN HIDDEN TESTS
assert [patch_size(n) for n in (1, 2, 4, 5)] == [16, 34, 142, 286]
### END HIDDEN TESTS

# %% [markdown]
# ## 5. The hedge of a pixel loss (2 points)
# A grey car may be red, green or blue, a third each. Their `ab` are below. A network that must give one
# answer for all three is best off, under the squared error (L2), with the **mean** of the three, and
# under the absolute error (L1), with each channel's **median**. Set `hedge_l2` and `hedge_l1` to those
# two `ab` (arrays of 2 numbers), `colourfulness_l2` and `colourfulness_l1` to their lengths (the stage's
# colourfulness: the length of the vector `ab`), and `bolder` to `"L1"` or `"L2"`, whichever loss gives
# the more colourful hedge.

# %%
cars = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])  # pure red, green and blue
_, ab_cars = lab.rgb_to_l_ab(cars)  # (3, 2): each car's (a, b), scaled to [-1, 1]
print(np.round(ab_cars, 2))

# %% nbgrader={"grade_id": "hedge", "solution": true}
### BEGIN SOLUTION
hedge_l2 = ab_cars.mean(axis=0)  # the mean: about (0.19, 0.11), a dull pink-grey
hedge_l1 = np.median(ab_cars, axis=0)  # each channel's median: about (0.62, 0.52), nearly the red car's
colourfulness_l2 = float(np.linalg.norm(hedge_l2))
colourfulness_l1 = float(np.linalg.norm(hedge_l1))
bolder = "L1"
### END SOLUTION
print(f"L2 hedge {np.round(hedge_l2, 2)} ({colourfulness_l2:.2f}), L1 hedge {np.round(hedge_l1, 2)} "
      f"({colourfulness_l1:.2f}); each car: {np.round(np.linalg.norm(ab_cars, axis=1), 2)}")

# %% nbgrader={"grade_id": "test_hedge", "grade": true, "points": 2}
assert np.shape(hedge_l2) == (2,) and np.shape(hedge_l1) == (2,)
assert bolder in ("L1", "L2")
### BEGIN HIDDEN TESTS
np.testing.assert_allclose(hedge_l2, ab_cars.mean(axis=0), atol=1e-4)
np.testing.assert_allclose(hedge_l1, np.median(ab_cars, axis=0), atol=1e-4)
assert abs(colourfulness_l2 - np.hypot(*ab_cars.mean(axis=0))) < 1e-4
assert abs(colourfulness_l1 - np.hypot(*np.median(ab_cars, axis=0))) < 1e-4
assert bolder == "L1"
### END HIDDEN TESTS

# %% [markdown]
# ## 6. Why brown? (2 points, graded by hand)
# Use your numbers from task 5. In a few sentences: why does a colouriser trained with a pixel loss paint
# dull colours where it is unsure? Is the L1 hedge a colour any of the three cars has? What does the
# discriminator's loss (task 1) add to the generator's (task 2) that pushes it to commit to one colour?

# %% [markdown] nbgrader={"grade_id": "explain", "grade": true, "solution": true, "points": 2}
# Where the network cannot tell which colour is right, a pixel loss is lowest for a hedge between the
# possibilities: the mean for L2, (0.19, 0.11) here, with a colourfulness of 0.22 where each car has 0.82
# to 1.05: a dull pinkish grey. The L1 hedge, (0.62, 0.52), is bolder (0.81), but only by the luck of the
# medians: its a is the blue car's and its b the red car's, which happen to make nearly the red car's
# colour; in general, medians taken channel by channel give a pair that none of the possibilities has,
# and where the possibilities spread all around grey, the medians land near grey too. Over many objects
# that could be anything, these hedges come out brown and grey. The adversarial part of the generator's
# loss asks the discriminator to call the colouring real; a dull hedge is easy to spot as generated, so
# the generator gains by committing to some plausible colour, even if it is not the true one, while the
# L1 part keeps it close to the truth where it can.
