# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Assignment: alpha, colour one photo
#
# Read `alpha/train.py` (or its notebook) first: this assignment asks you to rebuild three of its ideas
# and to check them. Fill in every cell that says `YOUR CODE HERE` or `YOUR ANSWER HERE`, and delete its
# `raise NotImplementedError()`. The cell after each answer tests it; some tests are hidden and run only
# when your work is graded, so a test that passes here is a good sign, not a promise. Each task stands
# alone: a mistake in one does not cost you the next. Before you submit, run the whole notebook (Kernel >
# Restart Kernel and Run All Cells): it takes about a minute, half of it training in task 3.
#
# | task | points |
# |---|---|
# | 1. From RGB to (l, ab) | 3 |
# | 2. Count the parameters | 2 |
# | 3. Why tanh? Train without it | 3 |
# | 4. Why tanh? Explain (written) | 2 |

# %%
import colorlab

colorlab.start_keras()  # Keras, with TensorFlow's start-up lines once and its other C++ messages off
import keras
import numpy as np
from keras import layers
from skimage import color

from colorlab import images, lab
from colorlab.settings import REPO_ROOT

SAMPLES = REPO_ROOT / "data" / "samples"  # the photos that come with the repository
astronaut = images.load(SAMPLES / "astronaut.jpg", 64)  # (64, 64, 3) float in [0, 1]

# %% [markdown]
# ## 1. From RGB to (l, ab) (3 points)
# The network sees lightness and predicts colour, both scaled to the ranges networks like: `l = L / 100`
# in [0, 1], and `ab = (a, b) / 128` in [-1, 1], the range of `tanh`.
#
# Write `to_l_ab(rgb)`: RGB `(H, W, 3)` in [0, 1] -> `l` of shape `(H, W, 1)` and `ab` of shape
# `(H, W, 2)`, scaled as above. Use scikit-image's `color.rgb2lab`, which gives L in [0, 100] and a, b
# in about [-108, 98]; do not call `colorlab.lab` (the hidden tests compare with it).

# %% nbgrader={"grade_id": "scaling", "solution": true}
def to_l_ab(rgb):
    """RGB (H, W, 3) in [0, 1] -> l (H, W, 1) in [0, 1] and ab (H, W, 2) in [-1, 1]."""
    ### BEGIN SOLUTION
    lab_values = color.rgb2lab(rgb)  # L in [0, 100]; a, b in about [-108, 98]
    return lab_values[..., :1] / 100, lab_values[..., 1:] / 128
    ### END SOLUTION


# %% nbgrader={"grade_id": "test_scaling", "grade": true, "points": 3}
l, ab = to_l_ab(astronaut)
assert l.shape == (64, 64, 1) and ab.shape == (64, 64, 2), f"got shapes {l.shape} and {ab.shape}"
assert 0 <= l.min() and l.max() <= 1, f"l must lie in [0, 1], got [{l.min():.2f}, {l.max():.2f}]"
assert -1 <= ab.min() and ab.max() <= 1, f"ab must lie in [-1, 1], got [{ab.min():.2f}, {ab.max():.2f}]"
### BEGIN HIDDEN TESTS
l_check, ab_check = lab.rgb_to_l_ab(astronaut)
np.testing.assert_allclose(l, l_check, atol=1e-3)
np.testing.assert_allclose(ab, ab_check, atol=1e-3)
np.testing.assert_allclose(lab.l_ab_to_rgb(l, ab), astronaut, atol=2e-3)  # and back
### END HIDDEN TESTS

# %% [markdown]
# ## 2. Count the parameters (2 points)
# A 3x3 convolution from `c_in` to `c_out` channels has a 3x3 filter for each pair of input and output
# channels, and a bias per output channel. Write `conv_parameters(c_in, c_out, kernel=3)`, the number of
# weights of a `kernel` x `kernel` convolution. Then, without building the network, set
# `total_parameters` to the number of weights of alpha's whole network (read its layers in
# `alpha/train.py`; `UpSampling2D` has none), and `largest` to the `(c_in, c_out)` of the convolution
# with the most weights. Check your total against `model.summary()` in the lesson, if you like.

# %% nbgrader={"grade_id": "parameters", "solution": true}
def conv_parameters(c_in, c_out, kernel=3):
    """The weights of a kernel x kernel convolution from c_in to c_out channels, biases included."""
    ### BEGIN SOLUTION
    return kernel * kernel * c_in * c_out + c_out
    ### END SOLUTION


### BEGIN SOLUTION
channels = [1, 8, 8, 16, 16, 32, 32, 32, 16, 2]  # the input's, then each convolution's, in order
total_parameters = sum(conv_parameters(c_in, c_out) for c_in, c_out in zip(channels, channels[1:]))
largest = (32, 32)  # 9,248 weights; two convolutions have it
### END SOLUTION
print(f"alpha has {total_parameters:,} weights; the largest convolution is {largest}")

# %% nbgrader={"grade_id": "test_parameters", "grade": true, "points": 2}
assert conv_parameters(1, 8) == 80, f"from 1 to 8 channels: 80 weights, not {conv_parameters(1, 8)}"
### BEGIN HIDDEN TESTS
assert conv_parameters(3, 64) == 1792 and conv_parameters(64, 64, kernel=1) == 4160
assert total_parameters == 32202, total_parameters
assert tuple(largest) == (32, 32)
### END HIDDEN TESTS

# %% [markdown]
# ## 3. Why tanh? Train without it (3 points)
# Alpha's last layer is `Conv2D(2, 3, activation="tanh", ...)`; every other layer uses `relu`. Try the
# network with `relu` at the end too, on a photo where it matters: `flower.jpg`, an orange flower among
# teal leaves, prepared below as in the lesson (64 pixels, padded to a multiple of 8).
#
# 1. Build `relu_model`: alpha's network exactly (copy it from `alpha/train.py`), but with
#    `activation="relu"` in the last layer. Compile it as the lesson does, and train it for `EPOCHS`
#    epochs on `x`, `y` (`verbose=0` keeps the output short).
# 2. Set `ab_relu` to its prediction for `x`, cropped back to the photo's size: shape `(H, W, 2)`.
# 3. Set `floor` to the lowest mean squared error that *any* network ending in `relu` can reach on this
#    photo, computed from `flower_ab` alone. (Hint: what is the best a network can do for a pixel whose
#    true `a` is -0.4, if it can only answer 0 or more?)
# 4. Set `vanished` to the set of colours the relu network can never paint, chosen from `"red"`,
#    `"green"`, `"blue"` and `"yellow"`.

# %%
EPOCHS = 100  # about 30 s on a busy 2-core CPU
keras.utils.set_random_seed(0)  # the same starting weights on every run
flower = images.load(SAMPLES / "flower.jpg", 64)  # (43, 64, 3) float in [0, 1]
flower_l, flower_ab = lab.rgb_to_l_ab(flower)  # (43, 64, 1), (43, 64, 2)
height, width = flower_l.shape[:2]
x = images.pad_to_multiple(flower_l, 8)[None]  # (1, 48, 64, 1): the input
y = images.pad_to_multiple(flower_ab, 8)[None]  # (1, 48, 64, 2): the target
grey_loss = float(np.mean(flower_ab**2))  # the loss of predicting no colour at all
print(f"predicting grey: loss {grey_loss:.5f}")

# %% nbgrader={"grade_id": "relu", "solution": true}
### BEGIN SOLUTION
relu_model = keras.Sequential(
    [
        keras.Input(shape=(None, None, 1)),
        layers.Conv2D(8, 3, activation="relu", padding="same", strides=2),
        layers.Conv2D(8, 3, activation="relu", padding="same"),
        layers.Conv2D(16, 3, activation="relu", padding="same"),
        layers.Conv2D(16, 3, activation="relu", padding="same", strides=2),
        layers.Conv2D(32, 3, activation="relu", padding="same"),
        layers.Conv2D(32, 3, activation="relu", padding="same", strides=2),
        layers.UpSampling2D(2),
        layers.Conv2D(32, 3, activation="relu", padding="same"),
        layers.UpSampling2D(2),
        layers.Conv2D(16, 3, activation="relu", padding="same"),
        layers.UpSampling2D(2),
        layers.Conv2D(2, 3, activation="relu", padding="same"),  # relu: never below 0
    ]
)
relu_model.compile(optimizer=keras.optimizers.RMSprop(0.001), loss="mse")
relu_model.fit(x, y, batch_size=1, epochs=EPOCHS, verbose=0)
ab_relu = relu_model.predict(x, verbose=0)[0, :height, :width]
floor = float(np.mean(np.minimum(flower_ab, 0) ** 2))  # the best answer for a negative value is 0
vanished = {"green", "blue"}  # negative a is green, negative b is blue
### END SOLUTION
print(f"ending in relu: loss {np.mean((ab_relu - flower_ab) ** 2):.5f}; none can go below {floor:.5f}")

# %% nbgrader={"grade_id": "test_relu", "grade": true, "points": 3}
relu_loss = float(np.mean((ab_relu - flower_ab) ** 2))
assert ab_relu.shape == flower_ab.shape, f"expected the photo's shape {flower_ab.shape}, got {ab_relu.shape}"
assert ab_relu.min() >= 0, "a network ending in relu never predicts a negative value: is the last layer relu?"
assert relu_loss < grey_loss, "the network should beat predicting grey: did it train?"
assert set(vanished) <= {"red", "green", "blue", "yellow"}
### BEGIN HIDDEN TESTS
assert abs(floor - np.mean(np.minimum(flower_ab, 0) ** 2)) < 1e-5, floor
assert relu_loss >= floor - 1e-6
assert set(vanished) == {"green", "blue"}, vanished
### END HIDDEN TESTS

# %% [markdown]
# ## 4. Why tanh? Explain (2 points, graded by hand)
# Look at the flower coloured by your relu network (`lab.l_ab_to_rgb(flower_l, ab_relu)`, shown with
# `matplotlib.pyplot.imshow`) next to the original. In a few sentences: which colours vanished, and
# why? What does `tanh` give the last layer that `relu` cannot? How much of the relu network's loss is
# the `floor`, and what does that tell you?

# %% [markdown] nbgrader={"grade_id": "explain", "grade": true, "solution": true, "points": 2}
# Green and blue vanish: the teal leaves come out grey, the flower stays orange. Green is a
# negative `a` and blue a negative `b`, and a `relu` never gives a negative number, so the best the
# network can do there is 0, no colour. `tanh` spans [-1, 1], the whole range of the scaled `ab`, so it
# can paint both ends of each axis. In this photo most pixels (the teal leaves) have a negative `a`, so
# the floor, the error left on them even by a perfect relu network, is most of the relu network's loss
# (about 0.007 of about 0.010): more training cannot remove it; only a different last activation can.
