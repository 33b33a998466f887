# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Beta: colour photos the network never saw
#
# Alpha learned one photo by heart. Beta learns from a **folder** of photos and is judged on photos it
# never trained on: it has to *generalize*, to learn rules such as "grass is green, skin is pink, the
# sky is blue" that hold in photos it has not seen, instead of "the pixels at the top left of this one
# photo are blue".
#
# Alpha could not do that. It saw one photo, so the cheapest way to lower its loss was to remember
# where each colour sits in that photo; nothing in its training ever rewarded a rule that works
# elsewhere. Beta sees thousands of different crops of many photos, where "top left" means nothing,
# and it is tested on photos kept aside. Memorizing stops paying off; only what is shared between
# photos lowers the loss on photos it never saw.
#
# New in this stage: a training set streamed from disk in random crops, a validation set of whole
# photos the network never trains on, a much bigger encoder-decoder network, and the comforts of a long
# run (checkpoints you can resume from, TensorBoard, a result picture after every epoch).
#
# Run it from the repository root with `python beta/train.py` (2 to 5 minutes on a 2-core laptop CPU,
# with the 7 sample photos), or `python beta/train.py --help` to list the settings. `beta/README.md`
# gives the settings for a real dataset on a GPU. In Jupyter, open `beta/train.ipynb`: it is generated
# from this file.

# %%
import time

import keras
from keras import layers

from colorlab import data, files, lab, plots, settings, speed, training

# %% [markdown]
# ## Settings
# Every value that changes the result is here. From a terminal, override any of them:
# `python beta/train.py --DATA=data/imagenette2-320 --EPOCHS=30`.

# %% tags=["parameters"]
DATA = "data/samples"  # a folder of photos (JPEG, PNG, WebP, BMP, TIFF; any size), searched recursively
IMAGE_SIZE = 128  # side of the square training crops, in pixels; a multiple of 8 (three stride-2 layers)
ZOOM = 1.3  # each photo's shorter side is scaled to 1 to ZOOM times IMAGE_SIZE before a crop is cut
BATCH_SIZE = 8  # crops per gradient step
STEPS_PER_EPOCH = 12  # gradient steps per epoch: BATCH_SIZE x 12 = 96 crops, ~19 of each of the 5 training photos
EPOCHS = 10  # total epochs; a resumed run counts the epochs done before it
VALIDATION_FRACTION = 0.25  # share of the photos kept aside, whole, to check on photos never trained on
LEARNING_RATE = 0.001  # Adam's step size (its usual default)
WORKERS = 2  # threads that read and crop photos while the model trains; 1 reads them in the main thread
MIXED_PRECISION = "auto"  # 16-bit maths: "auto" uses it on a GPU only (a CPU gains nothing); True, False, "bfloat16"
JIT_COMPILE = "auto"  # compile each training step (XLA): "auto" lets Keras choose for the backend; True, False
SEED = 0  # the same seed gives the same starting weights and the same crops, so the same result
OUT_DIR = "outputs/beta"  # the checkpoint, result grids, logs, model and metrics are written here
OVERWRITE = False  # True lets a new run replace the results already in OUT_DIR
RESUME = False  # True continues an interrupted run from the last epoch saved in OUT_DIR

# %%
config = settings.apply(globals())  # --NAME=value from the terminal; nothing in Jupyter
settings.check(IMAGE_SIZE >= 8 and IMAGE_SIZE % 8 == 0, f"IMAGE_SIZE must be a positive multiple of 8, got {IMAGE_SIZE}")
settings.check(ZOOM >= 1, f"ZOOM must be at least 1 (1 means no zoom), got {ZOOM}")
settings.check(BATCH_SIZE >= 1, f"BATCH_SIZE must be at least 1, got {BATCH_SIZE}")
settings.check(STEPS_PER_EPOCH >= 1, f"STEPS_PER_EPOCH must be at least 1, got {STEPS_PER_EPOCH}")
settings.check(EPOCHS >= 1, f"EPOCHS must be at least 1, got {EPOCHS}")
settings.check(0 < VALIDATION_FRACTION < 1, f"VALIDATION_FRACTION must be between 0 and 1, got {VALIDATION_FRACTION}")
settings.check(LEARNING_RATE > 0, f"LEARNING_RATE must be positive, got {LEARNING_RATE}")
settings.check(WORKERS >= 1, f"WORKERS must be at least 1, got {WORKERS}")
settings.check(0 <= SEED < 2**32, f"SEED must be between 0 and 2**32 - 1, got {SEED}")
if RESUME:
    training.check_resume(OUT_DIR, config)  # a wrong OUT_DIR stops here, before any photo is read
keras.utils.set_random_seed(SEED)
policy = speed.mixed_precision(MIXED_PRECISION)  # before the model is built: its layers take this policy
jit_compile = speed.jit_compile(JIT_COMPILE)
print(speed.describe(policy, jit_compile))

# %% [markdown]
# ## The photos: streamed, cropped, and a validation set
# A real dataset does not fit in memory (Imagenette's 13,000 photos would take over 20 GB as floats),
# so we never load it: `data.from_folder` keeps only the list of file names. When Keras asks for a
# batch, `WORKERS` threads read the photos from disk and cut the crops, while the model trains on the
# previous batch.
#
# The threads hand over the crops as they are, 8-bit RGB (`output="rgb"`): a quarter of the bytes of
# float32 Lab. The split into `l` and `ab` happens inside the training step, with the same formulas as
# `colorlab.lab` written in `keras.ops` (`colorlab.ops`), so on a GPU it costs the CPU nothing.
#
# **Training crops.** Each photo is scaled so that its shorter side is 1 to `ZOOM` times `IMAGE_SIZE`,
# then a square of `IMAGE_SIZE` pixels is cut at a random place and flipped left-right half of the
# time. Every epoch cuts different crops, so the network never sees exactly the same picture twice,
# and a batch holds crops of different photos. Square crops of one size make a batch a single array;
# the network still colours photos of any size and shape later.
#
# **Validation photos.** `VALIDATION_FRACTION` of the photos are set aside, whole, and never trained
# on. After every epoch the network is scored on their centre crops: the *validation loss*. The
# training loss says how well the network knows its training photos; only the validation loss says
# how well it colours new ones. The choice of photos depends only on their file names, so every run
# on a folder keeps the same ones aside.
#
# `OUT_DIR/batch.png` shows the first four crops of the first batch, as the network gets them.

# %%
train, validation = data.from_folder(
    DATA, IMAGE_SIZE, BATCH_SIZE, STEPS_PER_EPOCH, VALIDATION_FRACTION, zoom=ZOOM, seed=SEED, workers=WORKERS,
    output="rgb",
)
out_dir = files.prepare_out_dir(OUT_DIR, OVERWRITE or RESUME)  # never replaces an earlier run by accident
rgb = train[0]  # one batch: (BATCH_SIZE, IMAGE_SIZE, IMAGE_SIZE, 3) uint8 in [0, 255]
l, ab = lab.rgb_to_l_ab(rgb / 255)  # what the network sees, l (..., 1) in [0, 1], and must predict, ab (..., 2)
print(f"a batch: rgb {rgb.shape} {rgb.dtype}; l {l.shape} in [{l.min():.2f}, {l.max():.2f}], "
      f"ab {ab.shape} in [{ab.min():.2f}, {ab.max():.2f}]")
crops = lab.l_ab_to_rgb(l[:4], ab[:4])  # the first 4 crops, back in RGB
plots.save_grid(out_dir / "batch.png", [lab.grey(rgb) for rgb in crops], list(crops))  # what the network sees

# %% [markdown]
# ## The baseline: predict grey
# The laziest answer is "no colour": ab = 0 everywhere, which leaves a photo grey. Its loss on the
# validation photos is the number to beat. A network that does not beat it has learned nothing useful
# about colour, whatever its training loss says.

# %%
grey_loss = data.grey_loss(validation)  # mean of ab**2 over every validation pixel
print(f"predicting grey on the {len(validation.paths)} validation photos: loss {grey_loss:.5f}")

# %% [markdown]
# ## The network: an encoder-decoder
# The **encoder** turns the lightness into a description of what is where. Three convolutions with
# `strides=2` halve the picture each time, so that a pixel of the last layers (at 1/8 size) sums up an
# area dozens of pixels across: enough context to tell sky from sea. The channels grow from 64
# to 512 as the picture shrinks: fewer places, more to say about each. The **decoder** turns that
# description back into colours, doubling the size with `UpSampling2D` until it is back at full size.
#
# This is the network of the 2017 tutorial's beta, with one defect fixed. The original ended with
# `Conv2D(2, activation="tanh")` at *half* size and then a last `UpSampling2D`: it predicted one colour
# per 2x2 block of pixels, and those colours ran over the edges of objects in a blocky way. Ours
# upsamples back to full size first and ends with two full-size convolutions, so each pixel gets its
# own colour. It costs little: the full-size layers are the smallest ones.
#
# As in alpha, only convolutions: the network takes any height and width that divide by 8.

# %%
model = keras.Sequential(
    [
        keras.Input(shape=(None, None, 1)),  # any height and width, 1 channel: l
        # encoder: what is where
        layers.Conv2D(64, 3, activation="relu", padding="same", strides=2),  # 1/2 size
        layers.Conv2D(128, 3, activation="relu", padding="same"),
        layers.Conv2D(128, 3, activation="relu", padding="same", strides=2),  # 1/4 size
        layers.Conv2D(256, 3, activation="relu", padding="same"),
        layers.Conv2D(256, 3, activation="relu", padding="same", strides=2),  # 1/8 size
        layers.Conv2D(512, 3, activation="relu", padding="same"),
        layers.Conv2D(512, 3, activation="relu", padding="same"),
        layers.Conv2D(256, 3, activation="relu", padding="same"),
        # decoder: which colour goes where
        layers.Conv2D(128, 3, activation="relu", padding="same"),
        layers.UpSampling2D(2),  # 1/4 size
        layers.Conv2D(64, 3, activation="relu", padding="same"),
        layers.UpSampling2D(2),  # 1/2 size
        layers.Conv2D(32, 3, activation="relu", padding="same"),
        layers.UpSampling2D(2),  # full size, BEFORE the colours are predicted (the fix)
        layers.Conv2D(16, 3, activation="relu", padding="same"),
        layers.Conv2D(2, 3, activation="tanh", padding="same", dtype="float32"),  # ab in [-1, 1], per pixel
    ],
    name="beta",
)
model.summary()

# %% [markdown]
# ## Training
# The same loss as alpha, the mean squared error between the predicted and the true ab, but the Adam
# optimizer, which adapts each weight's step size and copes better with a deep network.
#
# `training.fit` is Keras's `model.fit` plus what a long run needs, shared by every later stage:
#
# - after each epoch, a **checkpoint** in `OUT_DIR/checkpoint`: the weights, the optimizer's state and
#   the epoch number. If the run is interrupted (Ctrl-C, a crash, a machine that reboots), run the same
#   command with `--RESUME=True`: it continues from the last completed epoch and ends where the
#   uninterrupted run would have. To train longer, resume with a larger `--EPOCHS`.
# - after each epoch, the validation photos coloured by the network so far, in `OUT_DIR/grids/`;
# - TensorBoard logs in `OUT_DIR/logs`: watch the losses live with `tensorboard --logdir OUT_DIR/logs`;
# - a stop, with a clear message, if the loss ever becomes NaN (not a number), keeping the last good
#   checkpoint.
#
# Keras prints a progress bar per epoch, with `loss` (the training loss) and `val_loss`.
#
# The batches are 8-bit RGB, and the model takes `l`: `training.RGBTrainer(model)` sits between them.
# In each training step it splits the batch into `l` and `ab` (in `keras.ops`, on the GPU if there is
# one), runs `model` on `l` and computes the loss against `ab`: the same loss as feeding `(l, ab)`.
# `model` itself stays `l -> ab`; it is what we save and what `colorize` uses.
#
# Two settings only change the speed. `MIXED_PRECISION` computes in 16-bit floats (twice as fast
# on a recent GPU; the last layer keeps `dtype="float32"` above, so the colours and the loss stay
# precise); `JIT_COMPILE` compiles each step into fused code (XLA).

# %%
trainer = training.RGBTrainer(model)  # uint8 RGB batches -> (l, ab) -> model(l) vs ab
trainer.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE), loss="mse", jit_compile=jit_compile)
names, rgbs = validation.examples(4)  # up to 4 whole validation photos, shorter side IMAGE_SIZE
start = time.perf_counter()
run = training.fit(
    trainer, train, validation, epochs=EPOCHS, out_dir=out_dir, resume=RESUME, examples=(names, rgbs),
    settings=config, keep_best="val_loss",  # also keep the weights of the epoch with the lowest validation loss
)
print(f"trained {run.epochs} epochs in {run.seconds:.0f} s ({time.perf_counter() - start:.0f} s in this run)")

# %% [markdown]
# ## The result
# Compare the validation loss, on photos the network never trained on, with predicting grey: below it, the network colours photos it never saw better than
# no colour at all; above it, worse.
#
# With the 7 sample photos, read the two curves in `loss.png`. The training loss falls all along. The
# validation loss usually beats grey after an epoch or two, while the network has only learned the
# average colours of photos, and then climbs above it: five photos are too few to learn what colour
# *things* are, so the network learns what colour *its five photos* are, and paints their colours onto
# new ones. That is **overfitting**, memorizing instead of generalizing: alpha's way, come back. The
# cure is more photos, not a bigger network: with thousands of them (`beta/README.md` trains on
# Imagenette), the network can no longer remember each one, and only what photos share lowers its
# loss. Even then, expect muted colours: when unsure between red and green, the squared error is
# lowest for the grey in between.

# %%
train_loss, val_loss = run.history["loss"][-1], run.history["val_loss"][-1]
print(f"last epoch: training loss {train_loss:.5f}   validation loss {val_loss:.5f}   predicting grey {grey_loss:.5f}")
verdict = "better" if val_loss < grey_loss else "WORSE"
print(f"on photos it never saw, the last epoch does {verdict} than predicting grey ({val_loss / grey_loss:.2f}x its loss)")

# %% [markdown]
# ## Early stopping: keep the best epoch, not the last
# The last epoch is not necessarily the best one on photos the network never saw. `training.fit` kept
# a copy of the weights of the epoch with the lowest validation loss (`keep_best="val_loss"`); we load
# them back, and that is the network we show and save. This is *early stopping*, the standard guard
# against overfitting: we trained on, but we keep the network from before it started memorizing.
# One catch: the validation photos chose the epoch, so their loss now flatters the network a little.
# To judge it fairly, use photos it never saw at all (`evaluate` on a separate folder).
# `result.png` shows the validation photos, whole, coloured by the kept network.

# %%
best_epoch = training.restore_best(model, out_dir)  # the weights of the epoch with the lowest validation loss
best_val_loss = run.history["val_loss"][best_epoch - 1]
verdict = "better" if best_val_loss < grey_loss else "WORSE"
print(f"kept epoch {best_epoch} of {run.epochs}: validation loss {best_val_loss:.5f}, {verdict} than predicting grey "
      f"({best_val_loss / grey_loss:.2f}x its loss)")
plots.save_grid(out_dir / "result.png", [lab.grey(rgb) for rgb in rgbs], training.colourise(model, rgbs), rgbs, names)

# %% [markdown]
# ## Saving
# The model, with the best epoch's weights, goes to `OUT_DIR/model.keras`. Like alpha's, it takes `l` (any size that divides by 8) and
# returns `ab`, so the `colorize` tool colours any photo with it, at the photo's own resolution:
# `colorize photo.jpg --model outputs/beta/model.keras --out colourised/`. Files are written
# atomically: a run killed while saving never leaves a broken file.

# %%
plots.save_loss_curve(
    out_dir / "loss.png", {"training": run.history["loss"], "validation": run.history["val_loss"]},
    {"predict grey (validation)": grey_loss}, title="beta: loss per epoch",
)
training.save_model(model, out_dir / "model.keras")
crops_seen = run.epochs * STEPS_PER_EPOCH * BATCH_SIZE
metrics = {
    "train_loss": train_loss, "val_loss": val_loss, "grey_val_loss": grey_loss, "epochs": run.epochs,
    "best_val_loss": best_val_loss, "best_epoch": best_epoch,
    "seconds": run.seconds, "crops_per_second": crops_seen / run.seconds if run.seconds else None,
    "train_photos": len(train.paths), "validation_photos": len(validation.paths),
    "skipped_files": len({**train.skipped, **validation.skipped}), "backend": keras.backend.backend(),
    "dtype_policy": policy, "jit_compile": trainer.jit_compile,
}
files.write_json(out_dir / "metrics.json", metrics)
files.write_json(out_dir / "settings.json", config)
print(f"wrote result.png, loss.png, model.keras, metrics.json and settings.json to {out_dir}")

# %% [markdown]
# ## Exercises
# 1. **When does memorizing start?** Run with `--EPOCHS=30` and look at `loss.png` and the grids in
#    `OUT_DIR/grids/`. At which epoch do the training and validation curves part? What do the
#    validation photos look like before and after it? Then try `--ZOOM=2`: do more varied crops delay it?
# 2. **The 2017 defect.** Move the last `UpSampling2D` after the final `Conv2D(2, ...)` (and drop the
#    `Conv2D(16)` after it), as the original did. Train both versions and zoom into the edges of
#    objects in `result.png`. Where does the half-resolution colour show?
# 3. **Receptive field.** Each stride-2 layer doubles the area a pixel of the next layers sums up.
#    Work out roughly how many input pixels one pixel of the 512-channel layers sees. Why does
#    colouring need that much context, when alpha's small network managed one photo without it?
# 4. **More data beats more epochs.** Download Imagenette (`python data/download.py`) and train on a few
#    hundred of its photos (copy them into a folder) with the same number of steps as on the samples.
#    Compare the validation loss with predicting grey, in both runs.
# 5. **Kill it.** Start a run with `--EPOCHS=20`, press Ctrl-C in the middle, then run the same
#    command with `--RESUME=True`. Compare its `loss.png` with an uninterrupted run's.
