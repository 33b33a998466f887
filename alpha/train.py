# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Alpha: colour one photo
#
# The smallest network that colours a black-and-white photo. It sees only the photo's lightness and
# learns the colours of **one** photo by heart. It cannot colour any other photo (that is the next
# stage, beta), but it has every moving part of the later stages: the colour space, the network, the
# loss, the training loop and the result.
#
# Run it from the repository root with `python alpha/train.py` (about a minute on a laptop CPU), or
# `python alpha/train.py --help` to list the settings. In Jupyter, open `alpha/train.ipynb`: it is
# generated from this file.
#
# On a computer without an NVIDIA GPU, TensorFlow (Keras's default backend) says so when it starts:
# "Could not find cuda drivers on your machine, GPU will not be used", after a "WARNING: All log
# messages before absl::InitializeLog()" line. They are harmless; `colorlab.start_keras()` in the first
# cell below shows them once (TensorFlow prints them twice) and hides TensorFlow's other C++ messages
# (`TF_CPP_MIN_LOG_LEVEL`; set it to "0" in your shell to see them all).

# %% [markdown]
# ## What to expect
# With the defaults, the loss falls from 0.014 after 100 epochs to below 0.003, with spikes (RMSprop on
# one photo overshoots now and then), and the run ends with `final loss 0.00255   predicting grey
# 0.02956   (12x lower)`: twelve times better than leaving the photo grey. The result, grey input |
# colourised | original:
#
# ![alpha: grey input, colourised, original](../docs/alpha_result.jpg)
#
# That took 147 s on this project's idle 2-core CPU (1000 epochs in 135 s of it); on a busy machine it
# takes longer, the losses do not change. Every output of that run is in
# [docs/executed/alpha.ipynb](../docs/executed/alpha.ipynb).

# %%
import time

import colorlab

colorlab.start_keras()  # TensorFlow's start-up lines once, its other C++ messages off (see above)
import keras
import numpy as np
from keras import layers

from colorlab import files, images, lab, plots, settings, training

# %% [markdown]
# ## Settings
# Every value that changes the result is here. From a terminal, override any of them:
# `python alpha/train.py --IMAGE=data/samples/chelsea.jpg --EPOCHS=2000`.

# %% tags=["parameters"]
IMAGE = "data/samples/astronaut.jpg"  # the photo to learn: JPEG, PNG, WebP, BMP or TIFF
IMAGE_SIZE = 256  # pixels on the photo's longer side; any size works (see "divisible by 8" below)
EPOCHS = 1000  # one photo, so one epoch is one gradient step
LEARNING_RATE = 0.001  # RMSprop's default step size
SEED = 0  # the same seed gives the same starting weights, so the same result
OUT_DIR = "outputs/alpha"  # the result grid, loss curve, model and metrics are written here
OVERWRITE = False  # True lets a new run replace the results already in OUT_DIR

# %%
config = settings.apply(globals())  # --NAME=value from the terminal; checks every value (EPOCHS >= 1, ...)
keras.utils.set_random_seed(SEED)

# %% [markdown]
# ## From RGB to Lab
# In RGB, every one of the three numbers of a pixel mixes brightness and colour: a black-and-white
# photo gives us none of them. The Lab colour space separates the two:
#
# - **L**, lightness, from 0 (black) to 100 (white): exactly what a black-and-white photo records;
# - **a**, from green (negative) to red (positive), and **b**, from blue (negative) to yellow (positive).
#
# So the network's input is L, which we have, and it only has to guess two numbers per pixel, a and b.
# We scale both to the ranges networks like: `l = L / 100` in [0, 1], and `ab = (a, b) / 128` in
# [-1, 1], the range of the `tanh` function the network ends with. (The a and b of real colours stay
# within about -108 and +98, so /128 never leaves that range.) Every stage uses this one scaling,
# from `colorlab.lab`.

# %%
rgb = images.load(IMAGE, IMAGE_SIZE)  # (H, W, 3) float in [0, 1]
l, ab = lab.rgb_to_l_ab(rgb)  # (H, W, 1) in [0, 1], (H, W, 2) in [-1, 1]
height, width = l.shape[:2]
print(f"{IMAGE}: {width}x{height} pixels; l in [{l.min():.2f}, {l.max():.2f}], "
      f"ab in [{ab.min():.2f}, {ab.max():.2f}]")

# %% [markdown]
# ## Divisible by 8
# The network halves the picture three times and doubles it back three times, so it needs a height
# and width divisible by 8 to give back a picture of the same size. Rather than stretch the photo, we
# pad it by mirroring its bottom and right edges, and crop the padding off the prediction.
# Keras trains on *batches*; ours is a batch of one photo, hence the leading `1` in each shape.

# %%
x = images.pad_to_multiple(l, 8)[None]  # (1, H8, W8, 1): the input, lightness
y = images.pad_to_multiple(ab, 8)[None]  # (1, H8, W8, 2): the target, colour

# %% [markdown]
# ## The network
# Nine 3x3 convolutions and three upsampling layers. Each convolution looks at a pixel and its eight
# neighbours in the layer below. Three of them have `strides=2`: they keep every second pixel, so the layers
# after them see a wider part of the photo for the same cost. Three `UpSampling2D` layers then repeat each
# pixel to return to full size. `relu` (negative values become 0) makes the network non-linear; the last layer
# uses `tanh`, which squeezes any number into [-1, 1]: the range of our scaled ab, negative values (green,
# blue) included.
#
# The network only uses convolutions, so it accepts any height and width: `keras.Input(shape=(None,
# None, 1))`.

# %%
model = keras.Sequential(
    [
        keras.Input(shape=(None, None, 1)),  # any height and width, 1 channel: l
        layers.Conv2D(8, 3, activation="relu", padding="same", strides=2),  # 1/2 size
        layers.Conv2D(8, 3, activation="relu", padding="same"),
        layers.Conv2D(16, 3, activation="relu", padding="same"),
        layers.Conv2D(16, 3, activation="relu", padding="same", strides=2),  # 1/4 size
        layers.Conv2D(32, 3, activation="relu", padding="same"),
        layers.Conv2D(32, 3, activation="relu", padding="same", strides=2),  # 1/8 size
        layers.UpSampling2D(2),  # 1/4 size
        layers.Conv2D(32, 3, activation="relu", padding="same"),
        layers.UpSampling2D(2),  # 1/2 size
        layers.Conv2D(16, 3, activation="relu", padding="same"),
        layers.UpSampling2D(2),  # full size
        layers.Conv2D(2, 3, activation="tanh", padding="same"),  # 2 channels: ab in [-1, 1]
    ],
    name="alpha",
)
model.summary()

# %% [markdown]
# ## Training
# The loss is the mean squared error between the predicted and the true ab, over every pixel. RMSprop
# adjusts each weight a little against the loss's gradient at every step.
#
# With one photo, an **epoch** (one pass over the training data) is a single gradient step, so
# `EPOCHS = 1000` means 1000 small corrections. To know whether the final loss is good, compare it with
# the loss of the laziest answer: predict no colour at all (ab = 0), which leaves the photo grey.

# %%
out_dir = files.prepare_out_dir(OUT_DIR, "alpha", OVERWRITE)  # never replaces what it did not write
model.compile(optimizer=keras.optimizers.RMSprop(LEARNING_RATE), loss="mse")
start = time.perf_counter()


def progress(epoch, logs):
    """One line every EPOCHS / 10 epochs, and at the last, instead of a progress bar per epoch."""
    if (epoch + 1) % max(1, EPOCHS // 10) == 0 or epoch + 1 == EPOCHS:
        seconds = time.perf_counter() - start
        print(f"epoch {epoch + 1:>5}/{EPOCHS}  loss {logs['loss']:.5f}  ({seconds:.0f} s)")


with training.stops():  # Ctrl-C or a loss that is not a number: one line, not a traceback
    history = model.fit(x, y, batch_size=1, epochs=EPOCHS, verbose=0, callbacks=[
        keras.callbacks.TerminateOnNaN(raise_error=True),  # a loss that became NaN stops the run, as an error
        keras.callbacks.LambdaCallback(on_epoch_end=progress),  # one line every EPOCHS / 10 epochs
    ])
seconds = time.perf_counter() - start

# %% [markdown]
# ## The result
# Predict the colour, crop off the padding, and join it with the photo's own lightness.

# %%
ab_pred = model.predict(x, verbose=0)[0, :height, :width]  # (H, W, 2), padding cropped off
colorized = lab.l_ab_to_rgb(l, ab_pred)  # (H, W, 3) in [0, 1]
grey = lab.l_ab_to_rgb(l, np.zeros_like(ab))  # the black-and-white input, as the network sees it

final_loss = float(np.mean((ab_pred - ab) ** 2))
grey_loss = float(np.mean(ab**2))  # the loss of predicting ab = 0 everywhere
print(f"trained {EPOCHS} epochs in {seconds:.0f} s")
print(f"final loss {final_loss:.5f}   predicting grey {grey_loss:.5f}   "
      f"({grey_loss / final_loss:.0f}x lower)")

plots.save_columns(out_dir / "result.png", {"black and white (input)": [grey], "colorized": [colorized],
                                            "original": [rgb]})

# %%
plots.save_loss_curve(out_dir / "loss.png", {"alpha": history.history["loss"]}, {"predict grey": grey_loss})
images.save(out_dir / "colorized.png", colorized)
training.save_model(model, out_dir / "model.keras")  # atomically: a kill mid-save leaves no broken model
metrics = {"final_loss": final_loss, "grey_loss": grey_loss, "seconds": seconds, "epochs": EPOCHS,
           "size": [width, height], "backend": keras.backend.backend()}
files.write_json(out_dir / "metrics.json", metrics)
files.write_json(out_dir / "settings.json", config)
print(f"wrote result.png, loss.png, colorized.png, model.keras and metrics.json to {out_dir}")
files.unlock(out_dir)  # the run is over: other runs may use OUT_DIR, even while this kernel lives

# %% [markdown]
# ## Exercises
# Each says which photo or setting shows its point, what to expect, and how long it took on a 2-core
# CPU shared with other jobs (load average 4 to 8), where the default run took 3 to 9 minutes. Give
# each run its own `--OUT_DIR`.
#
# 1. **Why tanh?** Replace the last layer's `tanh` with `relu`, like every other layer, and train on
#    `--IMAGE=data/samples/flower.jpg`, once with each (each run as long as the default). Which colours
#    vanish from the result, and why? (Hint: which colours have a negative a or b?) Expect relu's
#    final loss to be about 4 times tanh's (0.0087 against 0.0023; predicting grey: 0.0279) and the
#    teal leaves, whose a and b are both negative, to turn grey. On the default astronaut the
#    difference is small (0.0031 against 0.0025): only 3% of its colour (of the sum of all a² + b²)
#    lies in negative values, against 26% of the flower's.
# 2. **Memory, not understanding.** Train on the default astronaut, then read the last cell's table:
#    the network colours every sample photo, and each is scored against predicting grey (about 15 s).
#    Expect 0.09x grey's loss on the astronaut and worse than grey on five of the six others: 5.4x on
#    `rocket.jpg`, whose blue night sky it paints red, 1.8x on `flower.jpg`, whose teal leaves it paints
#    red too. Only `coffee.jpg` comes out below grey (0.31x), and not by understanding: its browns and
#    reds are the warm colours the astronaut taught. To see it, load `outputs/alpha/model.keras` with
#    `keras.saving.load_model` and colour `data/samples/rocket.jpg` with it (its `l`, padded as above).
#    This is what the beta stage fixes.
# 3. **Count the parameters.** A 3x3 convolution from `c_in` to `c_out` channels has
#    `9 * c_in * c_out + c_out` weights. Count them for the whole network by hand, then check your
#    total against `model.summary()` (no training needed). Which layer has the most? Expect 32,202 in
#    all, and a tie: the two 32-to-32 convolutions around the smallest size have 9,248 each.
# 4. **How long is long enough?** At `--IMAGE_SIZE=128` (a quarter of the pixels, so about four times
#    faster), run with `--EPOCHS=100`, `300` and `3000` and compare the loss curves and the pictures.
#    Measured in one 3000-epoch run: a loss of 0.011 after 100 epochs (predicting grey: 0.029), 0.0042
#    after 300, 0.0018 after 1000 and 0.0008 after 3000; its first 300 epochs took 1.5 minutes, all
#    3000 about 9. The loss never stops falling; where does the picture stop changing?
# 5. **Scaling matters.** The 2017 tutorial fed L unscaled, from 0 to 100. Feed `l * 100` instead of
#    `l` (in `x`) and train again at `--IMAGE_SIZE=128` (about 5 minutes): what happens to the loss
#    curve, and why? Expect a wild start, 0.040 after the first epoch and 0.22 after the second (nearly
#    8 times predicting grey's 0.029), then a faster fall than with `l` (0.0045 against 0.011 after 100
#    epochs, 0.0010 against 0.0018 after 1000) with more sudden jumps on the way (11 epochs in which
#    the loss rose by half or more, against 2). Hint: by how much does one step of the first layer's
#    weights change its output, when its input is 100 times larger?

# %% [markdown]
# **For exercise 2.** The network trained above colours every photo in the folder of `IMAGE`, and each
# is scored as the photo it learned was: its loss against the loss of predicting grey. Below 1x, its
# colours are better than none; above, worse.

# %%
from pathlib import Path

other_photos = {}  # photo file name -> (alpha's loss, predicting grey's loss)
for path in images.list_images(Path(IMAGE).parent):
    l_other, ab_other = lab.rgb_to_l_ab(images.load(path, IMAGE_SIZE))  # as `l, ab` above
    h, w = l_other.shape[:2]
    ab_guess = model.predict(images.pad_to_multiple(l_other, 8)[None], verbose=0)[0, :h, :w]
    loss, grey_other = float(np.mean((ab_guess - ab_other) ** 2)), float(np.mean(ab_other**2))
    other_photos[path.name] = loss, grey_other
    learned = " (the photo it learned)" if path.resolve() == Path(IMAGE).resolve() else ""
    print(f"{path.name + ':':<18} loss {loss:.5f}   predicting grey {grey_other:.5f}   "
          f"{loss / grey_other:5.2f}x grey's loss{learned}")
