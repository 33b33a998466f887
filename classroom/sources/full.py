# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Assignment: full, tell the colouriser what is in the photo
#
# Read `full/train.py` (or its notebook) first. This assignment rebuilds the two things that stage fixes
# or explains: what the classifier must be fed (the 2017 code got it wrong), and why fusion can be written
# as a `Dense` layer added at every place. No classifier is built and nothing is downloaded: the
# preprocessing is checked against Keras's own `preprocess_input` functions, which need no weights.
#
# Fill in every cell that says `YOUR CODE HERE` or `YOUR ANSWER HERE`, and delete its `raise
# NotImplementedError()`. The cell after each answer tests it; some tests are hidden and run only when your
# work is graded, so a test that passes here is a good sign, not a promise. Each task stands alone: a
# mistake in one does not cost you the next. Before you submit, run the whole notebook (Kernel > Restart
# Kernel and Run All Cells): it takes well under a minute.
#
# | task | points |
# |---|---|
# | 1. What Inception-ResNet-v2 must see | 3 |
# | 2. ResNet50's preprocessing | 2 |
# | 3. Fusion, the 2017 way | 2 |
# | 4. The 2017 defect (written) | 2 |

# %%
import colorlab

colorlab.start_keras()  # Keras, with TensorFlow's start-up lines once and its other C++ messages off
import keras
import numpy as np
from keras import layers

from colorlab import embeddings, images, lab
from colorlab.settings import REPO_ROOT

SAMPLES = REPO_ROOT / "data" / "samples"  # the photos that come with the repository
# The known photo: the cat's lightness as the stage hands it to the classifier, stretched to 299x299
sample_l = embeddings.classifier_l(SAMPLES / "chelsea.jpg", 299)[None]  # (1, 299, 299, 1) in [0, 1]

# %% [markdown]
# ## 1. What Inception-ResNet-v2 must see (3 points)
# The classifier was trained on colour photos with 8-bit values, 0 to 255, which its `preprocess_input`
# (mode `"tf"`) maps to [-1, 1] by `x / 127.5 - 1`. We have only the lightness `l`, in [0, 1]. Write
# `inception_input(l)`: `l` of shape `(N, H, W, 1)` -> what Inception-ResNet-v2 must receive for that
# black-and-white photo, shape `(N, H, W, 3)`: the grey that a screen shows for each `l` (sRGB, R = G = B;
# `lab.l_ab_to_rgb` with `ab = 0`, or the Keras layer `lab.GreySRGB`), on the scale `preprocess_input`
# expects, then that preprocessing. NumPy arrays or Keras tensors are both fine.
#
# The test feeds the known photo and compares with `keras.applications.inception_resnet_v2.preprocess_input`
# of its grey version, to within half of one of the 256 grey levels.

# %% nbgrader={"grade_id": "inception", "solution": true}
def inception_input(l):
    """l (N, H, W, 1) in [0, 1] -> Inception-ResNet-v2's input (N, H, W, 3) for that grey photo."""
    ### BEGIN SOLUTION
    grey = lab.l_ab_to_rgb(l, np.zeros(l.shape[:-1] + (2,))) * 255.0  # (N, H, W, 3), R = G = B, 0-255
    return grey / 127.5 - 1.0  # preprocess_input's "tf" mode: [0, 255] -> [-1, 1]
    ### END SOLUTION


# %% nbgrader={"grade_id": "test_inception", "grade": true, "points": 3}
seen = keras.ops.convert_to_numpy(inception_input(sample_l))  # NumPy, whatever the function returned
print(f"the classifier receives values in [{seen.min():.3f}, {seen.max():.3f}]")
assert seen.shape == (1, 299, 299, 3), f"expected (1, 299, 299, 3), got {seen.shape}"
assert -1 <= seen.min() and seen.max() <= 1, "preprocess_input's 'tf' mode gives values in [-1, 1]"
assert np.ptp(seen) > 1, f"the photo spans only {np.ptp(seen):.3f} of the range [-1, 1]: is its scale right?"
### BEGIN HIDDEN TESTS
grey255 = lab.l_ab_to_rgb(sample_l, np.zeros((1, 299, 299, 2))) * 255.0
expected = keras.applications.inception_resnet_v2.preprocess_input(grey255.copy())
assert np.abs(seen - expected).max() < 0.5 / 127.5, np.abs(seen - expected).max()
### END HIDDEN TESTS

# %% [markdown]
# ## 2. ResNet50's preprocessing (2 points)
# ResNet50's `preprocess_input` (mode `"caffe"`) is older: it expects the channels in the order blue,
# green, red, the order of the Caffe library it was first trained in, and subtracts ImageNet's mean colour
# from each: 103.939 from blue, 116.779 from green, 123.68 from red; no scaling. Write
# `resnet_input(rgb255)`: a batch of **colour** photos `(N, H, W, 3)`, RGB on the 0-255 scale -> what
# ResNet50 must receive. Write it yourself with NumPy; the hidden test compares with Keras's
# `keras.applications.resnet50.preprocess_input`.

# %%
cat255 = images.load(SAMPLES / "chelsea.jpg", 224)[None] * 255.0  # (1, 149, 224, 3), RGB, 0-255

# %% nbgrader={"grade_id": "resnet", "solution": true}
def resnet_input(rgb255):
    """RGB (N, H, W, 3) on 0-255 -> ResNet50's input: BGR, ImageNet's mean colour subtracted."""
    ### BEGIN SOLUTION
    return np.asarray(rgb255)[..., ::-1] - np.array([103.939, 116.779, 123.68])  # BGR minus the BGR mean
    ### END SOLUTION


# %% nbgrader={"grade_id": "test_resnet", "grade": true, "points": 2}
assert resnet_input(cat255).shape == cat255.shape
mid_grey = np.full((1, 1, 1, 3), 128.0)
np.testing.assert_allclose(resnet_input(mid_grey)[0, 0, 0], [24.061, 11.221, 4.32], atol=1e-3)
### BEGIN HIDDEN TESTS
expected = keras.applications.resnet50.preprocess_input(cat255.copy())
np.testing.assert_allclose(resnet_input(cat255), expected, atol=1e-3)
### END HIDDEN TESTS

# %% [markdown]
# ## 3. Fusion, the 2017 way (2 points)
# The 2017 code joined the photo's embedding (`E` numbers) to the encoder's features (`F` numbers at each
# of `h x w` places) by copying the embedding to every place, stacking it onto the features (`F + E`
# numbers per place) and applying a 1x1 convolution with `C` filters and a ReLU. A 1x1 convolution is,
# at each place, the same weighted sum: the stacked numbers times a `(F + E, C)` kernel, plus a bias.
#
# Write `fusion_2017(features, embedding, kernel, bias)` that does exactly that, with NumPy:
# `features` `(N, h, w, F)`, `embedding` `(N, E)`, `kernel` `(F + E, C)` (its first `F` rows weigh the
# features), `bias` `(C,)` -> `(N, h, w, C)`. The hidden test checks it against the stage's way, a
# `Conv2D(C, 1)` of the features plus a `Dense(C)` of the embedding added at every place, with the same
# weights.

# %% nbgrader={"grade_id": "fusion", "solution": true}
def fusion_2017(features, embedding, kernel, bias):
    """ReLU of a 1x1 convolution over [features, the embedding copied to every place]: (N, h, w, C)."""
    ### BEGIN SOLUTION
    n, h, w, _ = features.shape
    copies = np.broadcast_to(embedding[:, None, None, :], (n, h, w, embedding.shape[-1]))  # at every place
    stacked = np.concatenate([features, copies], axis=-1)  # (N, h, w, F + E)
    return np.maximum(stacked @ kernel + bias, 0)  # the same weighted sum at every place, then ReLU
    ### END SOLUTION


# %% nbgrader={"grade_id": "test_fusion", "grade": true, "points": 2}
rng = np.random.default_rng(0)
features, embedding = rng.normal(size=(2, 3, 4, 5)), rng.normal(size=(2, 7))  # F = 5, E = 7
kernel, bias = rng.normal(size=(12, 6)), rng.normal(size=6)  # C = 6
fused = np.asarray(fusion_2017(features, embedding, kernel, bias))
assert fused.shape == (2, 3, 4, 6), f"expected (2, 3, 4, 6), got {fused.shape}"
### BEGIN HIDDEN TESTS
from_features = layers.Conv2D(6, 1)
from_features.build((None, None, None, 5))
from_features.set_weights([kernel[:5][None, None], bias])
from_embedding = layers.Dense(6, use_bias=False)
from_embedding.build((None, 7))
from_embedding.set_weights([kernel[5:]])
stage_way = np.maximum(keras.ops.convert_to_numpy(from_features(features))
                       + keras.ops.convert_to_numpy(from_embedding(embedding))[:, None, None, :], 0)
np.testing.assert_allclose(fused, stage_way, atol=1e-4)
### END HIDDEN TESTS

# %% [markdown]
# ## 4. The 2017 defect (2 points, graded by hand)
# Run your `inception_input` once more with the mistake the 2017 code made, grey values in [0, 1] into
# a preprocessing made for 0-255 (`seen_2017 = lab.l_ab_to_rgb(...) / 127.5 - 1`), and print the range.
# In a few sentences: what did Inception-ResNet-v2 see, and why did its 1000 class probabilities then
# carry almost nothing about the photo? Why can the stage, run offline with random classifier weights,
# not show whether fusion helps either?

# %% [markdown] nbgrader={"grade_id": "explain", "grade": true, "solution": true, "points": 2}
# With values in [0, 1], `x / 127.5 - 1` gives values between -1 and -0.992 at most (-1 to -0.994 for the
# cat): the classifier saw an almost uniform black picture, under 1% of the range it was trained on,
# whatever the photo. Its output
# then hardly depends on the photo, so every photo gets nearly the same 1000 probabilities, and an
# embedding that is the same for every photo tells the colouriser nothing. Random weights fail the same
# way for another reason: a classifier that was never trained gives probabilities close to 1/1000 for
# every class and photo, so the embedding is again nearly constant. Only a classifier with trained
# (ImageNet) weights, fed the input it expects, can tell the colouriser what is in the photo.
