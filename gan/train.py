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
# true colour (beta's squared error, or the absolute error used here) is lowest, on average over all
# the cars, for a prediction *between* those colours, and the average of red, blue and yellow is a
# dull brown-grey. Hedging beats any bold guess, so the network learns to hedge.
#
# The answer of **pix2pix** (Isola et al., "Image-to-Image Translation with Conditional Adversarial
# Networks", 2017) is a second network, the **discriminator**, trained at the same time to tell real
# colour photos from coloured ones. The colouring network, now called the **generator**, is rewarded
# both for being close to the true colours and for fooling the discriminator. A dull hedge is easy to
# spot, so the generator is pushed to commit to *some* plausible colour: a red car or a blue one, not
# a brown one. That is a **generative adversarial network** (GAN), and this stage builds one.
#
# Run it from the repository root with `python gan/train.py` (about 2 minutes on a 2-core laptop CPU,
# with the 7 sample photos), or `python gan/train.py --help` to list the settings. `gan/README.md`
# gives the settings for a real dataset on a GPU. In Jupyter, open `gan/train.ipynb`: it is generated
# from this file.

# %%
import math
import time

import keras
import numpy as np
from keras import layers, ops

from colorlab import backends, data, files, lab, plots, settings, speed, training

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
WARMUP_EPOCHS = 10  # the first epochs train the generator alone, with L1 ("warm start"); 0: GAN from the start
EPOCHS = 30  # total epochs, the warm-up included; a resumed run counts the epochs done before it
DEPTH = 5  # stride-2 levels of the U-Net; photos are padded to a multiple of 2**DEPTH (pix2pix: 8 at 256 px)
FILTERS = 16  # filters of the U-Net's first level, doubling at each level up to 8x (pix2pix: 64)
DROPOUT = 0.5  # dropout rate in the U-Net's 3 deepest decoder levels (pix2pix: 0.5); 0 turns it off
D_FILTERS = 16  # filters of the discriminator's first layer, doubling up to 8x (pix2pix: 64, "C64-C128-C256-C512")
D_LAYERS = 3  # stride-2 layers of the discriminator: 3 sees 70x70-pixel patches (pix2pix); 2: 34, 4: 142
LAMBDA = 100.0  # weight of the L1 loss against the adversarial loss (pix2pix: 100); 0 is a pure GAN
LEARNING_RATE = 2e-4  # Adam's step size, for both networks (pix2pix)
BETA_1 = 0.5  # Adam's momentum; 0.5 rather than the usual 0.9 is the GAN habit since DCGAN (pix2pix)
VALIDATION_FRACTION = 0.25  # share of the photos kept aside, whole, to check on photos never trained on
WORKERS = 2  # threads that read and crop photos while the model trains; 1 reads them in the main thread
MIXED_PRECISION = "auto"  # 16-bit maths: "auto" uses it on a GPU only (a CPU gains nothing); True, False, "bfloat16"
JIT_COMPILE = "auto"  # compile each training step (XLA): "auto" lets Keras choose for the backend; True, False
SEED = 0  # the same seed gives the same starting weights and the same crops
OUT_DIR = "outputs/gan"  # the checkpoint, result grids, logs, model and metrics are written here
OVERWRITE = False  # True lets a new run replace the results already in OUT_DIR
RESUME = False  # True continues an interrupted run from the last epoch saved in OUT_DIR

# %%
config = settings.apply(globals())  # --NAME=value from the terminal; nothing in Jupyter
MULTIPLE = 2**DEPTH  # every side the generator sees must divide by this (see "The generator")
settings.check(COLOR_SPACE in lab.COLOR_SPACES, f"COLOR_SPACE must be one of {', '.join(lab.COLOR_SPACES)}, got {COLOR_SPACE!r}")
settings.check(1 <= DEPTH <= 8, f"DEPTH must be between 1 and 8, got {DEPTH}")
settings.check(IMAGE_SIZE >= MULTIPLE and IMAGE_SIZE % MULTIPLE == 0,
               f"IMAGE_SIZE must be a positive multiple of 2**DEPTH = {MULTIPLE}, got {IMAGE_SIZE}")
settings.check(1 <= D_LAYERS <= 6, f"D_LAYERS must be between 1 and 6, got {D_LAYERS}")
settings.check(IMAGE_SIZE >= 3 * 2**D_LAYERS,
               f"IMAGE_SIZE must be at least {3 * 2**D_LAYERS} for a discriminator with D_LAYERS={D_LAYERS}, got {IMAGE_SIZE}")
settings.check(ZOOM >= 1, f"ZOOM must be at least 1 (1 means no zoom), got {ZOOM}")
settings.check(BATCH_SIZE >= 1, f"BATCH_SIZE must be at least 1, got {BATCH_SIZE}")
settings.check(STEPS_PER_EPOCH >= 1, f"STEPS_PER_EPOCH must be at least 1, got {STEPS_PER_EPOCH}")
settings.check(EPOCHS >= 1, f"EPOCHS must be at least 1, got {EPOCHS}")
settings.check(0 <= WARMUP_EPOCHS <= EPOCHS, f"WARMUP_EPOCHS must be between 0 and EPOCHS ({EPOCHS}), got {WARMUP_EPOCHS}")
settings.check(FILTERS >= 1 and D_FILTERS >= 1, f"FILTERS and D_FILTERS must be at least 1, got {FILTERS} and {D_FILTERS}")
settings.check(0 <= DROPOUT < 1, f"DROPOUT must be in [0, 1), got {DROPOUT}")
settings.check(LAMBDA >= 0, f"LAMBDA must be 0 or more, got {LAMBDA}")
settings.check(LEARNING_RATE > 0, f"LEARNING_RATE must be positive, got {LEARNING_RATE}")
settings.check(0 <= BETA_1 < 1, f"BETA_1 must be in [0, 1), got {BETA_1}")
settings.check(0 < VALIDATION_FRACTION < 1, f"VALIDATION_FRACTION must be between 0 and 1, got {VALIDATION_FRACTION}")
settings.check(WORKERS >= 1, f"WORKERS must be at least 1, got {WORKERS}")
settings.check(0 <= SEED < 2**32, f"SEED must be between 0 and 2**32 - 1, got {SEED}")
if RESUME:
    training.check_resume(OUT_DIR, config)  # a wrong OUT_DIR stops here, before any photo is read
backends.check_backend()  # TensorFlow, JAX or PyTorch: the ones this stage can take gradients with
keras.utils.set_random_seed(SEED)
policy = speed.mixed_precision(MIXED_PRECISION, custom_step=True)  # before the networks are built (see Training)
jit_compile = speed.jit_compile(JIT_COMPILE)
print(speed.describe(policy, jit_compile))

# %% [markdown]
# ## Two channels to guess: Lab or YUV
# As in every stage, the network sees one channel, the black-and-white photo, and guesses two. With
# `COLOR_SPACE = "lab"` they are Lab's lightness `l` and colour `ab` (see alpha). With `"yuv"` they are
# the television standard's luma `y` (0.299 R + 0.587 G + 0.114 B) and its colour differences `uv`
# (blue minus luma, red minus luma), scaled to [-1, 1] like `ab` (`colorlab.lab.rgb_to_y_uv`; the
# notebook `notebooks/color_spaces.ipynb` shows both). Lab was designed so that equal steps look like
# equal changes of colour; YUV is a plain linear mix of R, G and B. So an L1 error in `ab` weighs colour
# mistakes roughly as the eye does, and one in `uv` does not. The code below calls the two channels
# `l` and `ab` whichever space you pick.

# %% [markdown]
# ## The photos
# The same streamed pipeline as beta (`colorlab.data`): random square crops of the training photos,
# read from disk by `WORKERS` threads while the networks train, and whole photos kept aside for
# validation, never trained on. As in beta, the threads hand over 8-bit RGB crops (`output="rgb"`), and
# each training step splits them into `l` and `ab` itself (`training.split_rgb`, in `keras.ops`).
#
# Two numbers about the validation photos frame the results. The **L1 loss of predicting grey**, the
# mean absolute value of their colour channels, is the loss of the laziest answer (no colour at all).
# Their **colourfulness**, the mean length of each pixel's colour vector `ab` (0 for grey, up to about
# 0.9 for the most saturated red; photos average 0.1 to 0.2), is how colourful real photos are: the
# number a brown-and-grey colouriser falls far short of.

# %%
train, validation = data.from_folder(
    DATA, IMAGE_SIZE, BATCH_SIZE, STEPS_PER_EPOCH, VALIDATION_FRACTION, zoom=ZOOM, seed=SEED, workers=WORKERS,
    color_space=COLOR_SPACE, output="rgb",
)
out_dir = files.prepare_out_dir(OUT_DIR, OVERWRITE or RESUME)  # never replaces an earlier run by accident
rgb = train[0]  # one batch: (BATCH_SIZE, IMAGE_SIZE, IMAGE_SIZE, 3) uint8
l, ab = lab.split(rgb / 255, COLOR_SPACE)  # l (BATCH_SIZE, IMAGE_SIZE, IMAGE_SIZE, 1) in [0, 1], ab (..., 2) in [-1, 1]
print(f"a batch: l {l.shape} in [{l.min():.2f}, {l.max():.2f}], ab {ab.shape} in [{ab.min():.2f}, {ab.max():.2f}]")


def colour_statistics(dataset):
    """The L1 loss of predicting grey (mean |colour|) and the colourfulness (mean colour-vector length)."""
    total_abs = total_length = pixels = 0.0
    for i in range(len(dataset)):
        _, colour = data.split_batch(dataset[i], COLOR_SPACE)  # (batch, H, W, 2)
        total_abs += np.abs(colour).mean(axis=-1).sum()
        total_length += np.linalg.norm(colour, axis=-1).sum()
        pixels += colour[..., 0].size
    return float(total_abs / pixels), float(total_length / pixels)


grey_l1, true_colourfulness = colour_statistics(validation)
print(f"{len(validation.paths)} validation photos: L1 of predicting grey {grey_l1:.4f}, colourfulness {true_colourfulness:.4f}")

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
# sizes are padded up to a multiple (`colorlab.images.pad_to_multiple` mirrors the bottom and right
# edges) and the padding is cropped off the result; `MULTIPLE` is saved in `settings.json` beside the
# model, for the `colorize` tool.

# %%
def unet(depth, filters, dropout):
    """The pix2pix generator: grey (H, W, 1) in [0, 1] -> colour (H, W, 2) in [-1, 1]; H, W divide by 2**depth."""
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
                                dtype=speed.output_dtype())(x)  # full size; float32 under mixed precision
    return keras.Model(l, ab, name="generator")


generator = unet(DEPTH, FILTERS, DROPOUT)
generator.summary()

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
# convolutions. The patch is counted in pixels, so what it covers depends on the working size: at 64
# pixels (this stage's CPU default) a 70-pixel patch is the whole crop, and the discriminator judges
# whole crops.

# %%
def patchgan(filters, n_layers):
    """The pix2pix discriminator: (grey (H, W, 1), colour (H, W, 2)) -> logits (H / 2**n_layers - 2, W / ..., 1)."""
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
    logits = layers.Conv2D(1, 4, name="patch_scores", dtype=speed.output_dtype())(x)  # one score per patch
    return keras.Model([l, ab], logits, name="discriminator")


def receptive_field(model):
    """The side, in input pixels, of the square that one output of a chain of convolutions sees."""
    size, step = 1, 1  # step: input pixels between two neighbouring outputs of the layers so far
    for layer in model.layers:
        if isinstance(layer, layers.Conv2D):
            size += (layer.kernel_size[0] - 1) * step
            step *= layer.strides[0]
    return size


discriminator = patchgan(D_FILTERS, D_LAYERS)
discriminator.summary()
patch = receptive_field(discriminator)
grid = discriminator([np.zeros((1, IMAGE_SIZE, IMAGE_SIZE, 1)), np.zeros((1, IMAGE_SIZE, IMAGE_SIZE, 2))]).shape
print(f"each score sees a {patch}x{patch}-pixel patch; a {IMAGE_SIZE}-pixel crop gets a {grid[1]}x{grid[2]} grid of scores")

# %% [markdown]
# ## The losses
# Both networks are scored with the **binary cross-entropy**, computed from the logits (numerically
# safer than from probabilities): for a target of 1 ("real") it is `-log(sigmoid(score))`, small when
# the score is large.
#
# - The **discriminator's loss** asks for 1 on every patch of a real colouring and 0 on every patch of
#   a generated one. pix2pix halves it, so that the discriminator learns a little slower than the
#   generator.
# - The **generator's loss** has two parts. The **adversarial** part asks the discriminator to say 1
#   on the *generated* colouring: the generator gains when it fools the discriminator. The **L1**
#   part, the mean absolute difference from the true colours, times `LAMBDA`, keeps the colouring
#   close to the truth: the adversarial part alone only asks for colours that look real, not for the
#   right ones (try `LAMBDA = 0` in the exercises). pix2pix found L1 sharper than the squared error,
#   and `LAMBDA = 100` a good balance: an L1 of 0.1 then weighs 10, against an adversarial loss near 1.
#
# With both losses, the step is: colour the batch, let the discriminator score the real and the
# generated colourings, compute both losses, take the gradient of the discriminator's loss with
# respect to the discriminator's weights only, and of the generator's loss with respect to the
# generator's weights only, and let each network's Adam optimizer take its step. One forward pass
# serves both losses; both gradients are taken before either network moves (as in the TensorFlow
# pix2pix tutorial; the paper alternates, a step of one then a step of the other).
#
# ## The model: `train_step` the Keras way
# `Pix2Pix` holds both networks. Calling it colours a photo (it calls the generator), and `fit`
# trains it like any Keras model, because it overrides `train_step`, the method `fit` calls for each
# batch. Two details come from having two networks:
#
# - Keras models have one optimizer; ours has one per network. `backends.Optimizers` holds both, so
#   that `fit` carries both optimizers' states, and checkpoints save them.
# - Taking a gradient is the one thing Keras 3 leaves to the backend: TensorFlow records a gradient
#   tape, PyTorch calls `backward`, JAX transforms a function (and `fit` passes JAX's `train_step` the
#   weights as explicit values). `colorlab.backends` does that plumbing once, following the Keras
#   guides "Customizing what happens in fit()" for each backend: `backends.run_step` runs our step on
#   any backend, and `backends.minimize` takes one gradient step per (optimizer, weights) pair, each on
#   its own loss. Everything in this class is plain Keras: it runs on TensorFlow, JAX and PyTorch.
#
# `test_step` does the same for validation: it colours the validation photos and measures the L1
# loss and the colourfulness of the result.

# %%
class Pix2Pix(keras.Model):
    """A generator and a discriminator trained together by ``fit``; calling it runs the generator."""

    def __init__(self, generator, discriminator, l1_weight=100.0, color_space="lab", **kwargs):
        super().__init__(**kwargs)
        self.generator = generator
        self.discriminator = discriminator
        self.l1_weight = l1_weight
        self.color_space = color_space  # the batches are uint8 RGB, split into l and ab in each step
        self.warming_up = False  # True: train the generator with L1 alone (see "Warm start")
        self.built = True  # both networks are built already
        names = ["d_loss", "d_real", "d_fake", "g_adversarial", "g_l1", "colourfulness"]
        self.trackers = {name: keras.metrics.Mean(name=name) for name in names}  # epoch means, shown by fit

    def call(self, l, training=False):
        return self.generator(l, training=training)

    def compile(self, d_optimizer, g_optimizer, jit_compile="auto"):
        d_optimizer, g_optimizer = backends.scale_losses(d_optimizer, g_optimizer)  # float16: loss scaling
        super().compile(optimizer=backends.Optimizers(d_optimizer, g_optimizer), jit_compile=jit_compile,
                        auto_scale_loss=False)
        d_optimizer.build(self.discriminator.trainable_variables)  # each optimizer knows its own weights
        g_optimizer.build(self.generator.trainable_variables)
        self.d_optimizer, self.g_optimizer = d_optimizer, g_optimizer

    def gan_losses(self, l, ab):
        """((discriminator loss, generator loss), (adversarial part, L1 part, P(real) on real, on generated))."""
        ab_fake = self.generator(l, training=True)
        real = self.discriminator([l, ab], training=True)  # logits, one per patch
        fake = self.discriminator([l, ab_fake], training=True)
        d_loss = 0.5 * (bce(ops.ones_like(real), real) + bce(ops.zeros_like(fake), fake))
        g_adversarial = bce(ops.ones_like(fake), fake)  # the generator wants its colours called real
        g_l1 = ops.mean(ops.abs(ab - ab_fake))
        g_loss = g_adversarial + self.l1_weight * g_l1
        return (d_loss, g_loss), (g_adversarial, g_l1, ops.mean(ops.sigmoid(real)), ops.mean(ops.sigmoid(fake)))

    def train_step(self, *args):  # (data) on TensorFlow and PyTorch, (state, data) on JAX
        return backends.run_step(self, self.warmup_step if self.warming_up else self.gan_step, *args)

    def gan_step(self, data):
        l, ab = training.split_rgb(data, self.color_space)  # uint8 RGB -> l, ab, here in the compiled step
        (d_loss, _), (g_adversarial, g_l1, d_real, d_fake) = backends.minimize(
            lambda: self.gan_losses(l, ab),
            (self.d_optimizer, self.discriminator.trainable_variables),  # the discriminator's loss moves it alone
            (self.g_optimizer, self.generator.trainable_variables),  # the generator's loss moves it alone
        )
        return self.log(d_loss=d_loss, d_real=d_real, d_fake=d_fake, g_adversarial=g_adversarial, g_l1=g_l1)

    def warmup_step(self, data):
        l, ab = training.split_rgb(data, self.color_space)
        weight = self.l1_weight or 1.0  # LAMBDA x L1, as in the GAN phase (see "Warm start")
        (loss,), _ = backends.minimize(
            lambda: ((weight * ops.mean(ops.abs(ab - self.generator(l, training=True))),), ()),
            (self.g_optimizer, self.generator.trainable_variables),
        )
        return self.log(g_l1=loss / weight)

    def test_step(self, *args):
        return backends.run_step(self, self.validation_step, *args)

    def validation_step(self, data):
        l, ab = training.split_rgb(data, self.color_space)
        ab_pred = self.generator(l, training=False)
        colourfulness = ops.mean(ops.sqrt(ops.sum(ops.square(ab_pred), axis=-1)))
        return self.log(g_l1=ops.mean(ops.abs(ab - ab_pred)), colourfulness=colourfulness)

    def log(self, **values):
        """Add this batch's values to the epoch means; return the means, which fit shows and records."""
        for name, value in values.items():
            self.trackers[name].update_state(value)
        return {name: self.trackers[name].result() for name in values}

    @property
    def metrics(self):  # fit resets these at the start of each epoch and of each validation
        return list(self.trackers.values())


def bce(target, logits):
    """Binary cross-entropy, averaged over the patches of the batch."""
    return ops.mean(ops.binary_crossentropy(target, logits, from_logits=True))


# %% [markdown]
# ## Warm start
# A GAN trained from scratch spends its first epochs on a pointless duel: the generator paints noise,
# the discriminator learns to spot noise, and the adversarial loss, which dominates early on, pulls
# the generator in directions that have little to do with colouring. So for the first
# `WARMUP_EPOCHS` epochs the generator trains alone, with the L1 loss, as a plain colouriser; the
# discriminator does not train and costs nothing. Most of the colour (sky, grass, skin) comes this way,
# cheaply. Then the adversarial phase starts from a generator that already colours, and adds what L1
# cannot: commitment, vivid colour. This is the "NoGAN" lesson of the DeOldify colouriser: most of
# the training needs no GAN, and a short GAN phase at the end does the rest.
#
# The warm-up minimizes `LAMBDA` times the L1 loss, exactly the L1 part of the generator's loss to
# come. Adam scales each step by the size of the recent gradients; with gradients of the same size
# on both sides of the switch, the first adversarial steps are as small as the last warm-up ones,
# instead of a hundred times larger.
#
# Keras compiles `train_step` once per `fit`, so the `WarmUp` callback below switches the model's step
# at the start of the first adversarial epoch and asks Keras to compile the new one. It also saves the
# generator as it is at the end of the warm-up, to compare with the final one.

# %%
class WarmUp(keras.callbacks.Callback):
    """L1 alone for the first ``epochs`` epochs, then the GAN; saves the warmed-up generator to ``path``."""

    def __init__(self, epochs, path):
        super().__init__()
        self.epochs, self.path = epochs, path

    def on_epoch_begin(self, epoch, logs=None):
        warming_up = epoch < self.epochs
        if warming_up != self.model.warming_up:
            self.model.warming_up = warming_up
            self.model.make_train_function(force=True)  # compile the step of the new phase

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.epochs:
            training.save_model(self.model.generator, self.path)


# %% [markdown]
# ## Training
# Both networks train with Adam at pix2pix's settings. `training.fit` is beta's `model.fit` with
# the comforts of a long run: a checkpoint after each epoch in `OUT_DIR/checkpoint` (both networks and
# both optimizers; `--RESUME=True` continues an interrupted run from the last completed epoch), the
# validation photos coloured after each epoch in `OUT_DIR/grids/`, TensorBoard logs in
# `OUT_DIR/logs`, and a clean stop if a loss becomes NaN.
#
# Keras prints, for each epoch: `d_loss`, the discriminator's loss; `d_real` and `d_fake`, the mean
# probability it gives real and generated colourings; `g_adversarial` and `g_l1`, the two parts of the
# generator's loss (the L1 part before the `LAMBDA` weight); and, on the validation photos,
# `val_g_l1` and `val_colourfulness`. During the warm-up, only the L1 and validation numbers exist.
#
# `MIXED_PRECISION` and `JIT_COMPILE` change only the speed, as in beta. In 16-bit floats small
# gradients round to zero, so with float16 each optimizer scales its loss up before the gradients are
# taken and back down after (`backends.scale_losses`); both networks' last layers stay in float32.

# %%
model = Pix2Pix(generator, discriminator, l1_weight=LAMBDA, color_space=COLOR_SPACE)
model.compile(
    d_optimizer=keras.optimizers.Adam(LEARNING_RATE, beta_1=BETA_1),
    g_optimizer=keras.optimizers.Adam(LEARNING_RATE, beta_1=BETA_1),
    jit_compile=jit_compile,
)
names, rgbs = validation.examples(4)  # up to 4 whole validation photos, shorter side IMAGE_SIZE
start = time.perf_counter()
run = training.fit(
    model, train, validation, epochs=EPOCHS, out_dir=out_dir, resume=RESUME, examples=(names, rgbs),
    multiple=MULTIPLE, color_space=COLOR_SPACE, settings=config,
    callbacks=[WarmUp(WARMUP_EPOCHS, out_dir / "warmup.keras")],
)
print(f"trained {run.epochs} epochs in {run.seconds:.0f} s ({time.perf_counter() - start:.0f} s in this run)")

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
#   the validation colourfulness rises towards that of real photos.
# - **A winning discriminator.** `d_loss` falls towards 0, `d_real` goes to 1 and `d_fake` to 0, and
#   `g_adversarial` climbs steadily: the discriminator tells every generated colouring apart, and its
#   verdict no longer tells the generator which way to improve. Only L1 still teaches. Usual cures: a
#   smaller discriminator (`D_FILTERS`, `D_LAYERS`), a lower learning rate for it, or a longer warm-up.
# - **Mode collapse.** The generator finds one colouring that fools the discriminator and paints it
#   everywhere: `g_adversarial` suddenly falls, `d_fake` jumps up, and the grids show every photo in
#   the same tint, sepia or cyan, whatever is in it. Conditioning on the grey photo and the L1 loss
#   make it rarer than in unconditional GANs, but a low `LAMBDA` invites it.
# - **Divergence.** A loss that shoots up and stays, or NaN: `training.fit` stops, and the checkpoint
#   keeps the last good epoch.
#
# With the 7 sample photos, expect a noisy duel, often with a phase where the discriminator wins for a
# few epochs and then loses its lead: five training photos are too few for either network to learn
# much that holds on other photos (see beta's lesson on overfitting). Watch the trend of
# `val_colourfulness` more than the pictures.

# %%
history = run.history


def curve(name):
    """The value per epoch, NaN for the epochs where it was not measured (the adversarial ones during the warm-up)."""
    values = history.get(name, [])
    return [math.nan] * (run.epochs - len(values)) + values


plots.save_loss_curve(
    out_dir / "loss.png",
    {"discriminator": curve("d_loss"), "generator, adversarial": curve("g_adversarial"),
     "generator, L1 (training)": curve("g_l1"), "generator, L1 (validation)": curve("val_g_l1")},
    {"ln 2: a discriminator that cannot tell": math.log(2), "L1 of predicting grey (validation)": grey_l1},
    title="gan: losses per epoch", ylabel="loss",
)
plots.save_loss_curve(
    out_dir / "colourfulness.png", {"coloured by the generator": curve("val_colourfulness")},
    {"real photos": true_colourfulness}, title="gan: colourfulness of the validation photos", ylabel="mean colour length",
)

# %% [markdown]
# ## The result: after the warm-up, and after the GAN
# The validation photos, whole, coloured by the generator as it was at the end of the L1 warm-up, and
# as it is now. The numbers below give the colourfulness of each as a share of the real photos'.
# The L1 generator hedges: with the defaults its colours have about a third of the real photos'
# colourfulness, a faint wash. The adversarial phase should bring the share close to 100%: bolder
# colours, not always the right ones (with five training photos, expect the warm tones of those
# photos on everything; `gan/README.md` trains on Imagenette).

# %%
columns = {"black and white (input)": [lab.grey(rgb) for rgb in rgbs]}
if WARMUP_EPOCHS > 0 and (out_dir / "warmup.keras").exists():
    warmed_up = keras.saving.load_model(out_dir / "warmup.keras")
    columns[f"after the L1 warm-up ({WARMUP_EPOCHS} epochs)"] = training.colourise(warmed_up, rgbs, multiple=MULTIPLE, color_space=COLOR_SPACE)
columns[f"after the GAN ({run.epochs} epochs)"] = training.colourise(model.generator, rgbs, multiple=MULTIPLE, color_space=COLOR_SPACE)
columns["original"] = rgbs
plots.save_columns(out_dir / "result.png", columns, names)

final = {name: values[-1] for name, values in history.items()}
share = final["val_colourfulness"] / true_colourfulness
print(f"validation L1 {final['val_g_l1']:.4f} (predicting grey: {grey_l1:.4f}); colourfulness "
      f"{final['val_colourfulness']:.4f} = {100 * share:.0f}% of the real photos' {true_colourfulness:.4f}")
warmup_share = None
if 0 < WARMUP_EPOCHS <= len(history["val_colourfulness"]):
    warmup_share = history["val_colourfulness"][WARMUP_EPOCHS - 1] / true_colourfulness
    print(f"at the end of the L1 warm-up the colourfulness was {100 * warmup_share:.0f}% of the real photos'")
if "d_loss" in final:
    print(f"last epoch: d_loss {final['d_loss']:.4f} (d_real {final['d_real']:.2f}, d_fake {final['d_fake']:.2f}), "
          f"g_adversarial {final['g_adversarial']:.4f}, g_l1 {final['g_l1']:.4f}")

# %% [markdown]
# ## Saving
# Only the generator is needed to colour photos: it goes to `OUT_DIR/model.keras`. Like beta's model it
# takes one channel and returns two, `(None, None, 1) -> (None, None, 2)`, so the `colorize` and
# `evaluate` tools use it as they use beta's, with two things to know, both in `settings.json` beside
# it: `COLOR_SPACE` (a "yuv" model takes luma `y` and returns `uv`, to be joined with
# `colorlab.lab.y_uv_to_rgb`), and `MULTIPLE` (pad photos so their sides divide by it, here 2**DEPTH).
# The whole GAN, discriminator and optimizers included, stays in `OUT_DIR/checkpoint` for `RESUME`.

# %%
training.save_model(model.generator, out_dir / "model.keras")
metrics = {
    **{name: final.get(name) for name in ("d_loss", "d_real", "d_fake", "g_adversarial", "g_l1", "val_g_l1", "val_colourfulness")},
    "grey_val_l1": grey_l1, "real_colourfulness": true_colourfulness, "colourfulness_share": share,
    "colourfulness_share_after_warmup": warmup_share, "epochs": run.epochs, "warmup_epochs": WARMUP_EPOCHS,
    "seconds": run.seconds, "backend": keras.backend.backend(), "color_space": COLOR_SPACE, "multiple": MULTIPLE,
    "dtype_policy": policy, "jit_compile": model.jit_compile,
    "receptive_field": patch, "train_photos": len(train.paths), "validation_photos": len(validation.paths),
    "generator_parameters": generator.count_params(), "discriminator_parameters": discriminator.count_params(),
}
files.write_json(out_dir / "metrics.json", metrics)
files.write_json(out_dir / "settings.json", {**config, "MULTIPLE": MULTIPLE})  # MULTIPLE: derived, for colorize
print(f"wrote result.png, loss.png, colourfulness.png, model.keras, metrics.json and settings.json to {out_dir}")

# %% [markdown]
# ## Exercises
# 1. **How much L1?** Train with `--LAMBDA=1000` and with `--LAMBDA=1` (and, if you are brave,
#    `--LAMBDA=0`, a pure GAN), each into its own `--OUT_DIR`. Compare `colourfulness.png` and the
#    grids: which one is brown, which one invents colours, and which one paints the wrong ones?
# 2. **No warm start.** Run with `--WARMUP_EPOCHS=0` and compare `loss.png` and the first grids in
#    `OUT_DIR/grids/` with a warmed-up run. How many epochs does the cold start lose?
# 3. **Lab or YUV?** Train with `--COLOR_SPACE=yuv`. Both runs use the same L1 loss; why can the
#    same L1 error look worse in one space than in the other? (Hint: equal steps in `uv` are not equal
#    steps for the eye.) Compare the results side by side.
# 4. **Patch size.** Compute the receptive field for `D_LAYERS` = 1, 2 and 4 by hand, then check with
#    `receptive_field`. Train with `--D_LAYERS=1` (16x16-pixel patches): which colour mistakes can a
#    discriminator that small no longer see?
# 5. **Alternate the steps.** pix2pix alternates: one step of the discriminator, then one of the
#    generator against the updated discriminator. Write `gan_step` that way, with two calls to
#    `backends.minimize`. What does it cost per batch, and does it change the curves?
# 6. **Make the discriminator win.** Train with `--D_FILTERS=64` and `--DROPOUT=0`, and read `loss.png`
#    against the descriptions above. Then find a setting that brings the duel back.
