# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # GAN: why is everything brown?
#
# Beta's colours are right where it is sure (sky, grass) and muted everywhere else: greyish, often
# brownish. The 2017 tutorial this project grows from admitted the same of its own results: "mostly
# black and white or lightly colored in brown". The network is not broken; its loss asks for exactly
# that. A car in a grey photo may be red, blue or yellow. A loss that compares each pixel with the
# true colour is lowest, over all the cars the network has seen, for a *hedge*, and the loss decides
# which hedge:
#
# - **L2**, beta's squared error, is lowest for the **mean** of the possible colours. A car that is red,
#   blue or yellow, a third each, gets (a, b) = (0.36, 0.14): a dull rose-red, with 0.39 of colourfulness
#   (the length of the vector `ab`, explained below) where each true colour has 0.76 to 1.05.
# - **L1**, the absolute error used in this stage, is lowest for the **median** of each channel, `a`
#   and `b` taken separately. A median follows the majority instead of averaging (two red cars for one
#   blue: L1 paints red, L2 a magenta-pink (0.62, 0.07)), so L1 hedges less, one reason pix2pix chose it. But
#   where the possibilities spread all around grey, as the colours of cars, clothes and walls do, each
#   channel's median lands in the middle too; and as `a` and `b` are chosen separately, their pair can
#   be a colour that none of the possibilities has.
#
# Either way, a pixel loss rewards the safe middle, and the network learns to hedge. There are two
# classic answers. **Zhang, Isola and Efros** ("Colorful Image Colorization", 2016) turn colouring into
# a *classification*: the network gives a probability to each of 313 quantized `ab` bins, rare
# colourful bins are weighted up in the loss (class rebalancing) so that the common dull ones do not
# dominate, and the colour is read from the distribution, not averaged away.
#
# This stage builds the other answer, **pix2pix** (Isola et al., "Image-to-Image Translation with
# Conditional Adversarial Networks", 2017): a second network, the **discriminator**, trained at the
# same time to tell real colour photos from coloured ones. The colouring network, now called the
# **generator**, is rewarded both for being close to the true colours (L1) and for fooling the
# discriminator. A dull hedge is easy to spot, so the generator is pushed to commit to *some* plausible
# colour: a red car or a blue one, not a dull rose one. That is a **generative adversarial network**
# (GAN).
#
# New in this stage: a training step written by hand, the `train_step` of a `keras.Model` with two
# networks, two losses and two optimizers, as in the GAN examples of keras.io. It takes its gradients
# with TensorFlow's `GradientTape`, so this stage runs on TensorFlow, Keras's default backend.
#
# Run it from the repository root with `python gan/train.py` (3 to 5 minutes on a 2-core laptop CPU,
# with the 7 sample photos), or `python gan/train.py --help` to list the settings. `gan/README.md`
# gives the settings for a real dataset on a GPU. In Jupyter, open `gan/train.ipynb`: it is generated
# from this file.
#
# On a computer without an NVIDIA GPU, TensorFlow (Keras's default backend) says so when it starts:
# "Could not find cuda drivers on your machine, GPU will not be used", after a "WARNING: All log
# messages before absl::InitializeLog()" line. They are harmless; `colorlab.start_keras()` in the first
# cell below shows them once (TensorFlow prints them twice) and hides TensorFlow's other C++ messages
# (`TF_CPP_MIN_LOG_LEVEL`; set it to "0" in your shell to see them all).

# %% [markdown]
# ## What to expect
# With the defaults, the two validation photos give the baselines, `2 validation photos: L1 of predicting
# grey 0.0974, colourfulness 0.1480`. Ten epochs of L1 alone give the hedge: `after the L1 warm-up:
# validation L1 0.1001 (predicting grey: 0.0974), colourfulness 0.0459 (real photos: 0.1480)`, 31% of
# the real photos' colourfulness. Twenty adversarial epochs later the colours are as strong as real ones,
# though not right (five training photos teach warm tones, and it paints them everywhere): `validation L1
# 0.1128 (predicting grey: 0.0974); colourfulness 0.1474 = 100% of the real photos' 0.1480`, and
# `last epoch: d_loss 0.5013 (d_real 0.63, d_fake 0.36), g_adversarial 1.1479, g_l1 0.0774`.
#
# ![gan: grey input, after the L1 warm-up, after the GAN, original](../docs/gan_result.jpg)
#
# ![gan: the losses per epoch](../docs/gan_loss.png)
# ![gan: colourfulness per epoch](../docs/gan_colorfulness.png)
#
# That took 202 s on this project's idle 2-core CPU (187 s of training); on a busy machine it takes
# longer, the numbers do not change. Every output of that run is in
# [docs/executed/gan.ipynb](../docs/executed/gan.ipynb).

# %%
import math
import time

import colorlab

colorlab.start_keras()  # TensorFlow's start-up lines once, its other C++ messages off (see above)
import keras
import numpy as np
from keras import layers, ops

from colorlab import coloring, data, distribute, files, lab, plots, settings, training

# %% [markdown]
# ## Settings
# Every value that changes the result is here. From a terminal, override any of them:
# `python gan/train.py --LAMBDA=10 --OUT_DIR=outputs/gan-lambda10`.

# %% tags=["parameters"]
DATA = "data/samples"  # a folder of photos (JPEG, PNG, WebP, BMP, TIFF; any size), searched recursively
COLOR_SPACE = "lab"  # "lab": predict a and b from lightness L; "yuv": predict U and V from luma Y
IMAGE_SIZE = 128  # side of the square training crops, in pixels; a multiple of 2**DEPTH
ZOOM = 1.3  # each photo's shorter side is scaled to 1 to ZOOM times IMAGE_SIZE before a crop is cut
BATCH_SIZE = 8  # crops per gradient step (pix2pix used 1; batch normalization wants a few)
STEPS_PER_EPOCH = 12  # gradient steps per epoch: 96 crops, ~19 of each of the 5 training photos
WARMUP_EPOCHS = 10  # the first epochs train the generator alone, with L1 ("warm start"); 0: GAN at once
EPOCHS = 30  # total epochs, the warm-up included; a resumed run counts the epochs done before it
DEPTH = 5  # stride-2 levels of the U-Net; photos are padded to a multiple of 2**DEPTH (pix2pix: 8 at 256 px)
FILTERS = 16  # filters of the U-Net's first level, doubling at each level up to 8x (pix2pix: 64)
DROPOUT = 0.5  # dropout rate in the U-Net's 3 deepest decoder levels (pix2pix: 0.5); 0 turns it off
D_FILTERS = 16  # filters of the discriminator's first layer, doubling up to 8x (pix2pix: 64, "C64-...-C512")
D_LAYERS = 3  # stride-2 layers of the discriminator: 3 sees 70x70-pixel patches (pix2pix); 2: 34, 4: 142
LAMBDA = 100.0  # weight of the L1 loss against the adversarial loss (pix2pix: 100); 0 is a pure GAN
LEARNING_RATE = 2e-4  # Adam's step size, for both networks (pix2pix)
BETA_1 = 0.5  # Adam's momentum; 0.5 rather than the usual 0.9 is the GAN habit since DCGAN (pix2pix)
VALIDATION_FRACTION = 0.25  # share of the photos kept aside, whole, to check on photos never trained on
WORKERS = 2  # threads that read and crop photos while the model trains; 1 reads them in the main thread
MIXED_PRECISION = False  # True: bfloat16 maths, faster on a recent GPU (a CPU gains nothing)
JIT_COMPILE = "auto"  # compile each training step (XLA): "auto" lets Keras choose (on a GPU); True, False
SEED = 0  # the same seed gives the same starting weights and the same crops
OUT_DIR = "outputs/gan"  # the checkpoints, result grids, logs, models and metrics are written here
OVERWRITE = False  # True lets a new run replace the results already in OUT_DIR
RESUME = False  # True continues an interrupted run from the last epoch saved in OUT_DIR
DEVICES = "auto"  # "auto": every GPU here, data parallel (one: as usual); or a count (on a CPU: virtual)

# %%
config = settings.apply(globals())  # --NAME=value from the terminal; checks every value (EPOCHS >= 1, ...)
MULTIPLE = 2**DEPTH  # every side the generator sees must divide by this (see "The generator")
settings.check(keras.backend.backend() == "tensorflow",
               f"gan's training step is written for TensorFlow (its GradientTape), not the Keras backend "
               f"{keras.backend.backend()!r}: run it with KERAS_BACKEND=tensorflow python gan/train.py")
settings.check(COLOR_SPACE in lab.COLOR_SPACES,
               f"COLOR_SPACE must be one of {', '.join(lab.COLOR_SPACES)}, got {COLOR_SPACE!r}")
settings.check(1 <= DEPTH <= 8 and 1 <= D_LAYERS <= 6,
               f"DEPTH must be 1 to 8 and D_LAYERS 1 to 6, got {DEPTH} and {D_LAYERS}")
settings.check(IMAGE_SIZE % MULTIPLE == 0,
               f"IMAGE_SIZE must be a positive multiple of 2**DEPTH = {MULTIPLE}, got {IMAGE_SIZE}")
settings.check(IMAGE_SIZE >= 3 * 2**D_LAYERS,
               f"IMAGE_SIZE must be at least {3 * 2**D_LAYERS} for a discriminator with D_LAYERS={D_LAYERS}, "
               f"got {IMAGE_SIZE}")
settings.check(WARMUP_EPOCHS <= EPOCHS,
               f"WARMUP_EPOCHS must be between 0 and EPOCHS ({EPOCHS}), got {WARMUP_EPOCHS}")
devices = distribute.Devices(DEVICES)  # one device: nothing changes; several: MirroredStrategy
keras.utils.set_random_seed(SEED)
keras.config.set_dtype_policy("mixed_bfloat16" if MIXED_PRECISION else "float32")  # before the networks exist

# %% [markdown]
# ## Two channels to guess: Lab or YUV
# As in every stage, the network sees one channel, the black-and-white photo, and guesses two. With
# `COLOR_SPACE = "lab"` they are Lab's lightness `l` and colour `ab` (see alpha). With `"yuv"` they are the
# television standard's luma `y` (0.299 R + 0.587 G + 0.114 B) and its colour differences `uv` (blue minus
# luma, red minus luma), scaled like `ab` so that the most saturated colours reach about ±0.84, short of
# tanh's ±1 (`colorlab.lab.rgb_to_y_uv`; the notebook `notebooks/color_spaces.ipynb` shows both). Lab was
# designed so that equal steps look like equal changes of colour; YUV is a plain linear mix of R, G and B. So
# an L1 error in `ab` weighs colour mistakes roughly as the eye does, and one in `uv` does not. The code below
# calls the two channels `l` and `ab` whichever space you pick.

# %% [markdown]
# ## The photos
# The same streamed pipeline as beta (`colorlab.data`): batches of `(l, ab)` pairs, random square crops
# of the training photos read from disk by `WORKERS` threads while the networks train, and whole photos
# kept aside for validation, never trained on.
#
# Two numbers about the validation photos frame the results. The **L1 loss of predicting grey**, the
# mean absolute value of their colour channels, is the loss of the laziest answer (no colour at all).
# Their **colourfulness**, the mean length of each pixel's colour vector `ab`, is how colourful real
# photos are: the number a brown-and-grey colouriser falls far short of. In this scaling a grey pixel
# has 0, pure yellow 0.76, pure red 0.82, pure green 0.94 and pure blue 1.05 (the most colourful sRGB
# colour); the sample photos average 0.09 (`china.jpg`) to 0.34 (`coffee.jpg`).

# %%
train, validation = data.from_folder(
    DATA, IMAGE_SIZE, BATCH_SIZE, STEPS_PER_EPOCH, VALIDATION_FRACTION, zoom=ZOOM, seed=SEED, workers=WORKERS,
    color_space=COLOR_SPACE, exclude=OUT_DIR,  # never train on this run's own pictures
)
out_dir = files.prepare_out_dir(OUT_DIR, "gan", OVERWRITE, RESUME)  # never replaces what it did not write
l, ab = train[0]  # one batch of pairs: the input l and the target ab
print(f"a batch: l {l.shape} in [{l.min():.2f}, {l.max():.2f}] (input), "
      f"ab {ab.shape} in [{ab.min():.2f}, {ab.max():.2f}] (target)")


def color_statistics(dataset):
    """The L1 loss of predicting grey (mean |ab|) and the colourfulness (mean length of ab) of a dataset."""
    total_abs = total_length = pixels = 0.0
    for i in range(len(dataset)):
        _, ab = dataset[i]  # (batch, H, W, 2)
        total_abs += np.abs(ab).mean(axis=-1).sum()
        total_length += np.linalg.norm(ab, axis=-1).sum()
        pixels += ab[..., 0].size
    return float(total_abs / pixels), float(total_length / pixels)


grey_l1, true_colorfulness = color_statistics(validation)
print(f"{len(validation.paths)} validation photos: L1 of predicting grey {grey_l1:.4f}, "
      f"colourfulness {true_colorfulness:.4f}")

# %% [markdown]
# ## The generator: a U-Net
# The generator is an encoder-decoder, like beta's, with two changes, both from pix2pix.
#
# **Strided 4x4 convolutions, both ways.** Each encoder level halves the picture with a stride-2
# convolution and doubles the filters (up to 8 times `FILTERS`); each decoder level doubles it back
# with a stride-2 *transposed* convolution, a convolution that learns how to upsample. Batch
# normalization keeps every layer's outputs at a steady scale, which a GAN's moving target needs; the
# encoder uses LeakyReLU (negative values shrink instead of vanishing, so gradients still flow), the
# decoder ReLU and, in its three deepest levels, dropout (pix2pix's only source of randomness).
#
# **Skip connections.** Each decoder level also receives, concatenated to its input, the output of
# the encoder level of the same size. The deep levels know *what* is in the photo; the skips hand the
# decoder *where* its edges are at full resolution, so colours stop at the edge of an object instead
# of bleeding over it. Drawn as a diagram, encoder on the left and decoder on the right, the
# connections make a U: hence the name.
#
# The network is fully convolutional, so it trains on `IMAGE_SIZE` crops and colours photos of any
# size, on one condition: with `DEPTH` stride-2 levels, the height and width must divide by 2**DEPTH
# (32 with the defaults), or the upsampled maps would not line up with their skips. Photos of other
# sizes are padded up to a multiple (mirroring the bottom and right edges; `coloring.colorize` does it)
# and the padding is cropped off the result; `MULTIPLE` is saved in `settings.json` beside the model,
# for the `colorize` command.

# %%
def unet(depth, filters, dropout):
    """The pix2pix generator: grey (H, W, 1) in [0, 1] -> colour (H, W, 2) in [-1, 1], H and W multiples of
    2**depth."""
    l = keras.Input(shape=(None, None, 1), name="l")  # any height and width
    x = layers.Rescaling(2.0, offset=-1.0)(l)  # [0, 1] -> [-1, 1], centred like the colours
    skips = []
    for level in range(depth):  # encoder: 1/2, 1/4, ... 1/2**depth of the size
        x = layers.Conv2D(filters * min(2**level, 8), 4, strides=2, padding="same", use_bias=level == 0)(x)
        if level > 0:  # pix2pix: no batch normalization on the first layer
            x = layers.BatchNormalization()(x)
        x = layers.LeakyReLU(0.2)(x)
        skips.append(x)
    for level, skip in enumerate(reversed(skips[:-1])):  # decoder: back up, one skip per level
        x = layers.Conv2DTranspose(skip.shape[-1], 4, strides=2, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        if level < 3 and dropout > 0:
            x = layers.Dropout(dropout)(x)
        x = layers.ReLU()(x)
        x = layers.Concatenate()([x, skip])  # the skip connection: same size, channels side by side
    ab = layers.Conv2DTranspose(2, 4, strides=2, padding="same", activation="tanh", name="ab",
                                dtype="float32")(x)  # full size; float32 under MIXED_PRECISION
    return keras.Model(l, ab, name="generator")


with devices.scope():  # several devices: each gets its copy of every weight (MirroredStrategy)
    generator = unet(DEPTH, FILTERS, DROPOUT)
generator.summary()

# %% [markdown]
# ## Warm start: the generator alone, with L1
# A GAN trained from scratch spends its first epochs on a pointless duel: the generator paints noise,
# the discriminator learns to spot noise, and the adversarial loss pulls the generator in directions
# that have little to do with colouring. So for the first `WARMUP_EPOCHS` epochs the generator trains
# alone, as a plain colouriser: `compile` with the L1 loss (`"mae"`, the mean absolute error) and
# `fit`, exactly as beta trains. Most of the colour (sky, grass, skin) comes this way, cheaply. The
# adversarial phase then starts from a generator that already colours, and adds what L1 cannot:
# commitment, vivid colour. This is the "NoGAN" lesson of the DeOldify colouriser: most of the training
# needs no GAN, and a short GAN phase at the end does the rest.
#
# `colorfulness` is a Keras metric (any function of the truth and the prediction is one): Keras
# reports it on the training batches and, as `val_colorfulness`, on the validation photos after each
# epoch. Watch it stay far below the real photos' value while the training L1 loss falls: the hedge,
# measured.
#
# The callbacks are beta's: the epochs' numbers in `OUT_DIR/warmup.csv`, a stop on NaN, TensorBoard
# logs, the validation photos coloured after each epoch in `OUT_DIR/grids/`, and a backup after each
# epoch in `OUT_DIR/backup/warmup` (for `RESUME`). Keras calls them in this order, so the backup comes
# last: a run interrupted between two of them repeats that epoch, logs it again (`training.history`
# keeps the last) and redraws it, but never resumes after an epoch that it did not log or draw.
#
# At the end of the warm-up the generator is saved as `OUT_DIR/warmup.keras`, to compare with the
# final one. What we save is `colorizer`, a second `keras.Model` over the generator's own layers (so
# always with its current weights) that is never compiled: a compiled model's file records its
# `compile` settings, and whoever loads it would need this file's `colorfulness` function to rebuild
# them.

# %%
def colorfulness(ab_true, ab_pred):
    """The length of each predicted colour vector, (batch, H, W), which Keras averages: 0 is grey. (A Keras
    metric gets the truth too; this one does not need it.)"""
    return ops.sqrt(ops.sum(ops.square(ab_pred), axis=-1))


with devices.scope():  # the optimizer's state too, on every device
    generator.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE, beta_1=BETA_1), loss="mae",
                      metrics=[colorfulness], jit_compile=JIT_COMPILE)
colorizer = keras.Model(generator.input, generator.output, name="generator")  # same layers, never compiled
names, rgbs = validation.examples(4)  # up to 4 whole validation photos, shorter side IMAGE_SIZE
train.epoch = training.saved_epochs(out_dir / "backup" / "warmup")  # resumed: the crops go on from there
start = time.perf_counter()
with training.stops(out_dir / "backup" / "warmup"):  # Ctrl-C or NaN: one line that says what is saved
    generator.fit(train, validation_data=validation, epochs=WARMUP_EPOCHS, callbacks=[
        keras.callbacks.CSVLogger(out_dir / "warmup.csv", append=True),
        keras.callbacks.TerminateOnNaN(raise_error=True),
        keras.callbacks.TensorBoard(out_dir / "logs"),  # `tensorboard --logdir OUT_DIR/logs`
        training.ResultGrid(out_dir / "grids", names, rgbs, multiple=MULTIPLE, color_space=COLOR_SPACE),
        keras.callbacks.BackupAndRestore(out_dir / "backup" / "warmup", double_checkpoint=True,
                                         delete_checkpoint=False),  # last: an epoch saved is logged and drawn
    ])
training.save_model(colorizer, out_dir / "warmup.keras")  # the L1 colouriser, for the comparison at the end
warmup = training.history(out_dir / "warmup.csv")  # every warm-up epoch, those of an interrupted run included
if warmup:
    print(f"after the L1 warm-up: validation L1 {warmup['val_loss'][-1]:.4f} "
          f"(predicting grey: {grey_l1:.4f}), colourfulness {warmup['val_colorfulness'][-1]:.4f} "
          f"(real photos: {true_colorfulness:.4f})")

# %% [markdown]
# ## The discriminator: a PatchGAN
# The discriminator gets a grey photo *and* a colouring of it (real or generated), stacked as 3
# channels, and says how real the colouring looks. Giving it the grey photo makes it a *conditional*
# GAN: it does not ask "is this a plausible colour photo?" but "is this a plausible colouring *of this
# photo*?", so the generator cannot ignore its input and paint any nice picture.
#
# It does not give one verdict per photo but one per **patch**: it is a small fully convolutional
# network whose outputs are a grid of scores (logits: above 0 "real", below 0 "generated"), each
# computed from one square of the input. pix2pix's reasoning: the L1 loss already gets the broad
# colours right, so the discriminator only needs to judge local texture and colour, patch by patch;
# with fewer weights it trains faster, and, being convolutional, it takes any size. Its layers are
# pix2pix's C64-C128-C256-C512 (a 4x4 convolution with that many filters, then batch normalization and
# LeakyReLU; the first three with stride 2), then a 4x4 convolution to one score.
#
# **Receptive field.** How big is a patch? Follow the layers from the input up: a 4x4 convolution
# adds 3 steps of its input to the area one output sees, and a stride of 2 doubles the size of a step
# for every layer after it. For C64 (stride 2), C128 (2), C256 (2), C512 (1) and the last layer (1):
# 1 + 3x1 + 3x2 + 3x4 + 3x8 + 3x8 = **70 pixels**. On a 256-pixel photo the discriminator gives a
# 30x30 grid of scores, each about a 70x70 patch, overlapping by 62 pixels (8 pixels between
# neighbours): pix2pix's "70x70 PatchGAN". `receptive_field` below does that sum for any chain of
# convolutions. The patch is counted in pixels, so what it covers depends on the working size: on this
# stage's 128-pixel crops (the default, sized for a CPU) the discriminator gives a 14x14 grid of scores
# and each 70-pixel patch spans more than half the crop, so it judges large parts of the picture at once.

# %%
def patchgan(filters, n_layers):
    """The pix2pix discriminator: (grey (H, W, 1), colour (H, W, 2)) -> logits (H / 2**n_layers - 2, ...)."""
    l = keras.Input(shape=(None, None, 1), name="l")
    ab = keras.Input(shape=(None, None, 2), name="ab")
    x = layers.Concatenate()([layers.Rescaling(2.0, offset=-1.0)(l), ab])  # (H, W, 3), all in [-1, 1]
    for i in range(n_layers):  # C64, C128, C256: halve the size, double the filters
        x = layers.Conv2D(filters * min(2**i, 8), 4, strides=2, padding="same", use_bias=i == 0)(x)
        if i > 0:
            x = layers.BatchNormalization()(x)
        x = layers.LeakyReLU(0.2)(x)
    x = layers.ZeroPadding2D(1)(x)  # then two stride-1 layers, each padded by 1 (so -1 pixel) as in pix2pix
    x = layers.Conv2D(filters * min(2**n_layers, 8), 4, use_bias=False)(x)  # C512
    x = layers.BatchNormalization()(x)
    x = layers.LeakyReLU(0.2)(x)
    x = layers.ZeroPadding2D(1)(x)
    logits = layers.Conv2D(1, 4, name="patch_scores", dtype="float32")(x)  # one score per patch, in float32
    return keras.Model([l, ab], logits, name="discriminator")


def receptive_field(model):
    """The side, in input pixels, of the square that one output of a chain of convolutions sees."""
    size, step = 1, 1  # step: input pixels between two neighbouring outputs of the layers so far
    for layer in model.layers:
        if isinstance(layer, layers.Conv2D):
            size += (layer.kernel_size[0] - 1) * step
            step *= layer.strides[0]
    return size


with devices.scope():
    discriminator = patchgan(D_FILTERS, D_LAYERS)
discriminator.summary()
patch = receptive_field(discriminator)
crop = np.zeros((1, IMAGE_SIZE, IMAGE_SIZE, 1))
grid = discriminator([crop, np.zeros((1, IMAGE_SIZE, IMAGE_SIZE, 2))]).shape  # (1, rows, columns, 1) scores
print(f"each score sees a {patch}x{patch}-pixel patch; a {IMAGE_SIZE}-pixel crop gets a {grid[1]}x{grid[2]} "
      f"grid of scores")

# %% [markdown]
# ## The losses
# Both networks are scored with the **binary cross-entropy**, computed from the logits (numerically
# safer than from probabilities): for a target of 1 ("real") it is `-log(sigmoid(score))`, small when
# the score is large.
#
# - The **discriminator's loss** asks for 1 on every patch of a real colouring and 0 on every patch of
#   a generated one. pix2pix halves it, "which slows down the rate at which D learns relative to G"
#   (with plain gradient descent; Adam scales its steps to the gradients' size, so here halving changes
#   only the number you read).
# - The **generator's loss** has two parts. The **adversarial** part asks the discriminator to say 1
#   on the *generated* colouring: the generator gains when it fools the discriminator. The **L1**
#   part, the mean absolute difference from the true colours, times `LAMBDA`, keeps the colouring
#   close to the truth: the adversarial part alone only asks for colours that look real, not for the
#   right ones (try `LAMBDA = 0` in the exercises). pix2pix found L1 sharper than the squared error,
#   and `LAMBDA = 100` a good balance: an L1 of 0.1 then weighs 10, against an adversarial loss near 1.
#
# ## The training step, written out
# `Pix2Pix` is a `keras.Model` that holds both networks and overrides `train_step`, the method `fit`
# calls for each batch, as the GAN examples of keras.io do. One step: colour the batch, let the
# discriminator score the real and the generated colourings, compute both losses, take the gradient of
# the discriminator's loss with respect to the discriminator's weights only, and of the generator's
# loss with respect to the generator's weights only, and let each network's own Adam optimizer take
# its step. One forward pass serves both losses, and both gradients are taken before either network
# moves (as in TensorFlow's pix2pix tutorial; the paper alternates, a step of one network and then a
# step of the other: exercise 5).
#
# Taking a gradient is the one thing Keras 3 leaves to its backend. On TensorFlow, a `tf.GradientTape`
# records the operations run inside its `with` block, and `tape.gradient(loss, weights)` then goes back
# through them. We open one tape per network. (JAX and PyTorch take gradients in their own ways; the
# Keras guide "Customizing what happens in fit()" shows each.)
#
# The step returns the numbers Keras prints and logs: `d_loss`, the discriminator's loss; `d_real` and
# `d_fake`, the mean probability it gives real and generated colourings; `g_adversarial` and `g_l1`,
# the two parts of the generator's loss (the L1 part before the `LAMBDA` weight); and `loss`, the
# generator's whole loss, `g_adversarial + LAMBDA * g_l1`, the number `TerminateOnNaN` watches (it
# reads the key `loss`). Each is the mean over the epoch so far: a `keras.metrics.Mean` per number,
# which Keras resets at the start of every epoch because the `metrics` property lists them.
# `test_step` colours the validation photos and measures the L1 loss and the colourfulness.
#
# The two optimizers are new. Adam adapts its steps to the size of the recent gradients, and the
# generator's gradients are now about `LAMBDA` times those of the warm-up (its L1 part is weighted by
# `LAMBDA`, and the adversarial part comes on top): the warm-up's Adam would take steps far too large
# at first. `compile` builds each one for its own network's weights at once, so that `BackupAndRestore`
# finds their states to restore; the generator's also fills Keras's own optimizer slot, whose step
# count and learning rate TensorBoard shows.

# %%
import tensorflow as tf  # the default Keras backend: its GradientTape takes the gradients of the step


class Pix2Pix(keras.Model):
    """A generator and a discriminator trained together by ``fit``; calling it runs the generator."""

    def __init__(self, generator, discriminator, l1_weight=100.0):
        super().__init__()
        self.generator, self.discriminator, self.l1_weight = generator, discriminator, l1_weight
        self.built = True  # both networks are built already (BackupAndRestore checks)
        names = ["loss", "d_loss", "g_adversarial", "g_l1", "d_real", "d_fake", "colorfulness"]
        self.means = {name: keras.metrics.Mean(name=name) for name in names}  # the epoch means fit shows

    @property
    def metrics(self):  # what fit resets at the start of each epoch and of each validation
        return list(self.means.values())

    def compile(self, d_optimizer, g_optimizer, jit_compile="auto"):
        super().compile(optimizer=g_optimizer, jit_compile=jit_compile)
        self.d_optimizer, self.g_optimizer = d_optimizer, g_optimizer
        d_optimizer.build(self.discriminator.trainable_variables)  # each optimizer knows its own network
        g_optimizer.build(self.generator.trainable_variables)

    def call(self, l, training=False):
        return self.generator(l, training=training)

    def train_step(self, data):
        l, ab = data  # a batch of pairs: lightness and its true colours
        with tf.GradientTape() as d_tape, tf.GradientTape() as g_tape:
            ab_fake = self.generator(l, training=True)
            real = self.discriminator([l, ab], training=True)  # logits, one per patch
            fake = self.discriminator([l, ab_fake], training=True)
            d_loss = 0.5 * (bce(ops.ones_like(real), real) + bce(ops.zeros_like(fake), fake))
            g_adversarial = bce(ops.ones_like(fake), fake)  # the generator wants its colours called real
            g_l1 = ops.mean(ops.abs(ab - ab_fake))
            g_loss = g_adversarial + self.l1_weight * g_l1
        d_weights, g_weights = self.discriminator.trainable_variables, self.generator.trainable_variables
        self.d_optimizer.apply_gradients(zip(d_tape.gradient(d_loss, d_weights), d_weights))  # each loss
        self.g_optimizer.apply_gradients(zip(g_tape.gradient(g_loss, g_weights), g_weights))  # moves its own
        return self.record(loss=g_loss, d_loss=d_loss, g_adversarial=g_adversarial, g_l1=g_l1,
                           d_real=ops.mean(ops.sigmoid(real)), d_fake=ops.mean(ops.sigmoid(fake)))

    def test_step(self, data):
        l, ab = data
        ab_fake = self.generator(l, training=False)
        l1 = ops.mean(ops.abs(ab - ab_fake), axis=(1, 2, 3))  # one value per photo, as Keras's "mae" averages
        return self.record(g_l1=l1, colorfulness=colorfulness(ab, ab_fake))

    def record(self, **values):
        """Add this batch's values to the epoch means; return the means so far, which fit prints and logs."""
        for name, value in values.items():
            self.means[name].update_state(value)
        return {name: self.means[name].result() for name in values}


def bce(target, logits):
    """Binary cross-entropy, averaged over the patches of the batch."""
    return ops.mean(ops.binary_crossentropy(target, logits, from_logits=True))


# %% [markdown]
# ## Training the GAN
# The GAN phase is a second `fit`, of the whole `Pix2Pix`, from epoch `WARMUP_EPOCHS` to `EPOCHS`
# (`initial_epoch` numbers its epochs after the warm-up's), with the same callbacks, its own backup
# folder `OUT_DIR/backup/gan` and its own history, `OUT_DIR/history.csv`. Its backup holds both
# networks and both optimizers.
#
# **Resuming.** Run the same command with `--RESUME=True` and each `fit` resumes from its own backup.
# Interrupted in the warm-up, the warm-up continues where it stopped. Interrupted in the GAN phase, the
# warm-up's `BackupAndRestore` finds all of its epochs done and trains none, and the GAN phase
# continues.
#
# `MIXED_PRECISION` and `JIT_COMPILE` change only the speed, as in beta. Mixed precision uses bfloat16
# here, not beta's float16: bfloat16 keeps float32's range of exponents, so small gradients do not
# round to zero and a hand-written step needs no loss scaling (with float16, Keras scales the loss in
# its own `train_step` only). Both networks' last layers stay in float32.

# %%
with devices.scope():  # both optimizers' states, on every device
    model = Pix2Pix(generator, discriminator, l1_weight=LAMBDA)
    model.compile(
        d_optimizer=keras.optimizers.Adam(LEARNING_RATE, beta_1=BETA_1),
        g_optimizer=keras.optimizers.Adam(LEARNING_RATE, beta_1=BETA_1),
        jit_compile=JIT_COMPILE,
    )
train.epoch += max(0, training.saved_epochs(out_dir / "backup" / "gan") - WARMUP_EPOCHS)  # as above
with training.stops(out_dir / "backup" / "gan"):
    model.fit(train, validation_data=validation, initial_epoch=WARMUP_EPOCHS, epochs=EPOCHS, callbacks=[
        keras.callbacks.CSVLogger(out_dir / "history.csv", append=True),
        keras.callbacks.TerminateOnNaN(raise_error=True),  # watches `loss`: the generator's whole loss
        keras.callbacks.TensorBoard(out_dir / "logs"),  # `tensorboard --logdir OUT_DIR/logs`
        training.ResultGrid(out_dir / "grids", names, rgbs, multiple=MULTIPLE, color_space=COLOR_SPACE),
        keras.callbacks.BackupAndRestore(out_dir / "backup" / "gan", double_checkpoint=True,
                                         delete_checkpoint=False),
    ])
seconds = time.perf_counter() - start
history = training.history(out_dir / "history.csv")  # the GAN epochs, those of an interrupted run included
epochs = len(warmup.get("loss", [])) + len(history.get("loss", []))
print(f"trained {epochs} epochs ({seconds:.0f} s in this run)")

# %% [markdown]
# ## Reading GAN curves
# A GAN's losses do not fall to zero: two networks play against each other, and each one's progress
# is the other's setback. `loss.png` shows them per epoch (the adversarial curves start after the
# warm-up). What to look for:
#
# - **A healthy duel.** `d_loss` hovers around a constant, often between 0.3 and 0.7 (ln 2 = 0.69 is
#   a discriminator that cannot tell at all: it says 0.5 to everything), `d_real` stays above
#   `d_fake` without either reaching 0 or 1, and `g_adversarial` wobbles without a trend. The L1 loss
#   rises a little when the adversarial phase starts (bold colours are sometimes the wrong ones), and
#   the validation colourfulness (`colorfulness.png`) rises towards that of real photos.
# - **A winning discriminator.** `d_loss` falls towards 0, `d_real` goes to 1 and `d_fake` to 0, and
#   `g_adversarial` climbs steadily: the discriminator tells every generated colouring apart, and its
#   verdict no longer tells the generator which way to improve. Only L1 still teaches. Usual cures: a
#   smaller discriminator (`D_FILTERS`, `D_LAYERS`), a lower learning rate for it, or a longer warm-up.
# - **Mode collapse.** The generator finds one colouring that fools the discriminator and paints it
#   everywhere: `g_adversarial` suddenly falls, `d_fake` jumps up, and the grids show every photo in
#   the same tint, sepia or cyan, whatever is in it. Conditioning on the grey photo and the L1 loss
#   make it rarer than in unconditional GANs, but a low `LAMBDA` invites it.
# - **Divergence.** A loss that shoots up and stays, or NaN: `TerminateOnNaN` stops, and the backup
#   keeps the last good epoch.
#
# In TensorBoard (`tensorboard --logdir OUT_DIR/logs`) both phases share one timeline; `epoch_loss`
# jumps at the switch, from the warm-up's L1 loss to the generator's whole loss, about `LAMBDA` times
# larger.
#
# With the 7 sample photos, expect a noisy duel: five training photos are too few for either network
# to learn much that holds on other photos (see beta's lesson on overfitting). Watch the trend of
# `val_colorfulness` more than the pictures.

# %%
def curve(name, warmup_name=None):
    """One value per epoch of both phases: the warm-up's ``warmup_name`` (NaN if None), then the GAN's."""
    first = warmup.get(warmup_name, [math.nan] * len(warmup.get("loss", [])))
    return first + history.get(name, [])


plots.save_loss_curve(
    out_dir / "loss.png",
    {"discriminator": curve("d_loss"), "generator, adversarial": curve("g_adversarial"),
     "generator, L1 (training)": curve("g_l1", "loss"),
     "generator, L1 (validation)": curve("val_g_l1", "val_loss")},
    {"ln 2: a discriminator that cannot tell": math.log(2), "L1 of predicting grey (validation)": grey_l1},
    title="gan: losses per epoch", ylabel="loss",
)
plots.save_loss_curve(
    out_dir / "colorfulness.png",
    {"coloured by the generator": curve("val_colorfulness", "val_colorfulness")},
    {"real photos": true_colorfulness}, title="gan: colourfulness of the validation photos",
    ylabel="mean colour length",
)

# %% [markdown]
# ## The result: after the warm-up, and after the GAN
# The validation photos, whole, coloured by the generator as it was at the end of the L1 warm-up, and
# as it is now. The numbers below give the colourfulness of each as a share of the real photos'. The
# L1 generator hedges: its colours are a faint wash. The adversarial phase should bring the share up,
# towards 100%: bolder colours, not always the right ones (with five training photos, expect the warm
# tones of those photos on everything; `gan/README.md` trains on Imagenette).

# %%
warmed_up = keras.saving.load_model(out_dir / "warmup.keras")
columns = {
    "black and white (input)": [lab.grey_rgb(rgb) for rgb in rgbs],
    f"after the L1 warm-up ({WARMUP_EPOCHS} epochs)": coloring.colorize(warmed_up, rgbs, multiple=MULTIPLE,
                                                                        color_space=COLOR_SPACE),
    f"after the GAN ({epochs} epochs)": coloring.colorize(generator, rgbs, multiple=MULTIPLE,
                                                           color_space=COLOR_SPACE),
    "original": rgbs,
}
plots.save_columns(out_dir / "result.png", columns, names)

val_l1 = curve("val_g_l1", "val_loss")[-1]  # the last epoch, of whichever phase
val_colorfulness = curve("val_colorfulness", "val_colorfulness")[-1]
share = val_colorfulness / true_colorfulness
print(f"validation L1 {val_l1:.4f} (predicting grey: {grey_l1:.4f}); colourfulness {val_colorfulness:.4f} = "
      f"{100 * share:.0f}% of the real photos' {true_colorfulness:.4f}")
warmup_colorfulness = warmup["val_colorfulness"][-1] if warmup else None
if warmup_colorfulness is not None:
    print(f"at the end of the L1 warm-up the colourfulness was "
          f"{100 * warmup_colorfulness / true_colorfulness:.0f}% of the real photos'")
final = {name: values[-1] for name, values in history.items()}  # the last GAN epoch (empty without one)
if final:
    print(f"last epoch: d_loss {final['d_loss']:.4f} (d_real {final['d_real']:.2f}, "
          f"d_fake {final['d_fake']:.2f}), "
          f"g_adversarial {final['g_adversarial']:.4f}, g_l1 {final['g_l1']:.4f}")

# %% [markdown]
# ## Saving
# Only the generator is needed to colour photos: it goes to `OUT_DIR/model.keras`. Like beta's model it
# takes one channel and returns two, `(None, None, 1) -> (None, None, 2)`, so the `colorize` and
# `evaluate` commands use it as they use beta's, with two things to know, both in `settings.json`
# beside it: `COLOR_SPACE` (a "yuv" model takes luma `y` and returns `uv`), and `MULTIPLE` (photos are
# padded so that their sides divide by it, here 2**DEPTH). The whole GAN, discriminator and optimizers
# included, stays in `OUT_DIR/backup/gan` for `RESUME`.

# %%
training.save_model(colorizer, out_dir / "model.keras")  # the generator's layers and weights, uncompiled
metrics = {
    **{name: final.get(name) for name in ("d_loss", "d_real", "d_fake", "g_adversarial", "g_l1")},
    "val_g_l1": val_l1, "val_colorfulness": val_colorfulness, "grey_val_l1": grey_l1,
    "real_colorfulness": true_colorfulness, "colorfulness_share": share,
    "warmup_val_colorfulness": warmup_colorfulness, "epochs": epochs, "warmup_epochs": WARMUP_EPOCHS,
    "seconds": seconds, "backend": keras.backend.backend(), "color_space": COLOR_SPACE, "multiple": MULTIPLE,
    "receptive_field": patch, "train_photos": len(train.paths), "validation_photos": len(validation.paths),
    "generator_parameters": generator.count_params(),
    "discriminator_parameters": discriminator.count_params(),
}
files.write_json(out_dir / "metrics.json", metrics)
files.write_json(out_dir / "settings.json", {**config, "MULTIPLE": MULTIPLE})  # MULTIPLE, for colorize
print(f"wrote result.png, loss.png, colorfulness.png, model.keras, metrics.json, settings.json to {out_dir}")
files.unlock(out_dir)  # the run is over: other runs may use OUT_DIR, even while this kernel lives

# %% [markdown]
# ## Exercises
# Each says which setting shows its point, what to expect, and how long it took on a 2-core CPU shared
# with other jobs (load average 6 to 12, several times a quiet machine's). The runs were made with
# `--IMAGE_SIZE=32 --EPOCHS=10 --WARMUP_EPOCHS=4` besides the setting named, each into its own
# `--OUT_DIR`, in 3.5 to 8 minutes each. At that size the pictures stay a faint wash, and the numbers
# printed at the end tell the runs apart. With these settings alone: validation L1 0.108 (predicting
# grey: 0.094), colourfulness 38% of the real photos' (38% after the warm-up too), and at the last
# epoch `d_loss` 0.44, `d_real` 0.67, `d_fake` 0.34, `g_adversarial` 1.18.
#
# 1. **How much L1?** Train with `--LAMBDA=1000` and with `--LAMBDA=1` (and, if you are brave,
#    `--LAMBDA=0`, a pure GAN), each into its own `--OUT_DIR`. Compare `colorfulness.png` and the
#    grids: which one is brown, which one invents colours, and which one paints the wrong ones?
#    Measured: `--LAMBDA=1000` stays where the warm-up left it (colourfulness 38%, validation L1
#    0.107) while its discriminator pulls ahead (`d_loss` 0.25, `d_real` 0.80, `d_fake` 0.21).
#    `--LAMBDA=1` and `--LAMBDA=0` raise the colourfulness to 52% and 53%, and the validation L1 with
#    it, to 0.117 and 0.118: more colour, not the right one (at `--LAMBDA=1` the cat turns blue-grey).
# 2. **No warm start.** Run with `--WARMUP_EPOCHS=0` and compare `loss.png` and the first grids in
#    `OUT_DIR/grids/` with a warmed-up run. How many epochs does the cold start lose? And the other
#    way round: `--WARMUP_EPOCHS=30` trains with L1 alone. How colourful does it get? Measured, with
#    `--EPOCHS=10`: the cold start loses nothing measurable at this size, ending at validation L1
#    0.109 and 41% colourfulness against the warmed-up 0.108 and 38%, with a stronger discriminator
#    (`d_loss` 0.37 against 0.44). L1 alone, `--WARMUP_EPOCHS=10`, ends at 0.108 and 40%, with about
#    half the training time (no discriminator): in 10 epochs of 32-pixel crops, the adversarial phase
#    has not yet added colour; it needs longer training on larger crops.
# 3. **Lab or YUV?** Train with `--COLOR_SPACE=yuv`. Both runs use the same L1 loss; why can the
#    same L1 error look worse in one space than in the other? (Hint: equal steps in `uv` are not equal
#    steps for the eye.) Compare the results side by side. Measured: validation L1 0.116 against
#    predicting grey's 0.098 (both in `uv`), colourfulness 35% of the real photos'; the Lab run gives
#    0.108 against 0.094, and 38%. Each is 1.15 to 1.2 times its own grey, so the losses alone cannot
#    say which looks better: the pictures must.
# 4. **Patch size.** Compute the receptive field for `D_LAYERS` = 1, 2 and 4 by hand, then check with
#    `receptive_field` (expect 16, 34 and 142 pixels). Train with `--D_LAYERS=1` (16x16-pixel
#    patches): which colour mistakes can a discriminator that small no longer see? Measured: it cannot
#    tell real from generated at all, d_loss 0.692 at the last epoch (ln 2 = 0.693) with d_real 0.51
#    and d_fake 0.49, against 0.44, 0.67 and 0.34 with 70-pixel patches.
# 5. **Alternate the steps.** pix2pix alternates: one step of the discriminator, then one of the
#    generator against the updated discriminator. Rewrite `train_step` that way, with a tape for the
#    discriminator's step and a second forward pass and tape for the generator's. What does it cost per
#    batch, and does it change the curves? Measured: the curves end close to the simultaneous step's
#    (d_loss 0.46 against 0.44, validation L1 0.106 against 0.108), a little more colourful (46% of the
#    real photos' against 38%). The step runs the generator and the discriminator once more each; at
#    this size the load of the shared cores hid that cost (230 to 350 ms a step, against 220 to 320).
# 6. **Make the discriminator win.** Train with `--D_FILTERS=64` and `--DROPOUT=0`, and read `loss.png`
#    against the descriptions above. Then find a setting that brings the duel back. Measured (8
#    minutes here: the discriminator does up to 16 times the multiplications): over the 6 GAN epochs
#    `g_adversarial` climbs from 1.15 to 1.97 (1.18 at the end with the defaults) and `d_real` and
#    `d_fake` drift apart to 0.71 and 0.27, while `d_loss` stays between 0.41 and 0.63: a discriminator
#    on its way to winning, not there yet. The other extreme is exercise 4's `--D_LAYERS=1`.
# 7. **The L2 hedge, by hand.** With `colorlab.lab.rgb_to_l_ab`, find the `ab` of a red, a green and a
#    blue car, and the colour that minimizes the squared error and the absolute error when each is
#    equally likely (seconds, no training). Which is more colourful? For pure sRGB red, green and blue,
#    expect ab = (0.63, 0.53), (-0.67, 0.65) and (0.62, -0.84). The squared error's answer, their mean
#    (0.19, 0.11), is a dull rose-brown of colourfulness 0.22; the absolute error's, each channel's
#    median (0.62, 0.53), is a vivid red of 0.81, though no car has it: its a comes from the blue car
#    and its b from the red one. Then read how Zhang et al. (2016) avoid both.
