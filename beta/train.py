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
#
# On a computer without an NVIDIA GPU, TensorFlow (Keras's default backend) says so when it starts:
# "Could not find cuda drivers on your machine, GPU will not be used", after a "WARNING: All log
# messages before absl::InitializeLog()" line. They are harmless; `colorlab.start_keras()` in the first
# cell below shows them once (TensorFlow prints them twice) and hides TensorFlow's other C++ messages
# (`TF_CPP_MIN_LOG_LEVEL`; set it to "0" in your shell to see them all).

# %% [markdown]
# ## What to expect
# With the defaults, predicting grey on the two validation photos costs a loss of 0.01503. The network
# beats that after one epoch (validation loss 0.0101), then swings towards the colours of its five
# training photos: its validation loss rises above grey's in epochs 4 to 7 and 9 (up to 0.0519) and ends
# at `last epoch: training loss 0.01899   validation loss 0.01921   predicting grey 0.01503`. The epoch
# kept is the best one, `kept epoch 3 of 10: validation loss 0.00973, better than predicting grey (0.65x
# its loss)`; its colours are a muted sepia, the average colour of photos:
#
# ![beta: the two validation photos, grey input, colourised, original](../docs/beta_result.jpg)
#
# ![beta: training and validation loss per epoch](../docs/beta_loss.png)
#
# That took 223 s on this project's idle 2-core CPU (210 s of training); on a busy machine it takes
# longer, the losses do not change. Every output of that run is in
# [docs/executed/beta.ipynb](../docs/executed/beta.ipynb).

# %%
import time

import colorlab

colorlab.start_keras()  # TensorFlow's start-up lines once, its other C++ messages off (see above)
import keras
import numpy as np
from keras import layers

from colorlab import coloring, data, distribute, files, lab, plots, settings, training

# %% [markdown]
# ## Settings
# Every value that changes the result is here. From a terminal, override any of them:
# `python beta/train.py --DATA=data/imagenette2-320 --EPOCHS=30`.

# %% tags=["parameters"]
DATA = "data/samples"  # a folder of photos (JPEG, PNG, WebP, BMP, TIFF; any size), searched recursively
IMAGE_SIZE = 128  # side of the square training crops, in pixels; a multiple of 8 (three stride-2 layers)
ZOOM = 1.3  # each photo's shorter side is scaled to 1 to ZOOM times IMAGE_SIZE before a crop is cut
BATCH_SIZE = 8  # crops per gradient step
STEPS_PER_EPOCH = 12  # gradient steps per epoch: BATCH_SIZE x 12 = 96 crops, ~19 of each of the 5
                      # training photos
EPOCHS = 10  # total epochs; a resumed run counts the epochs done before it
VALIDATION_FRACTION = 0.25  # share of the photos kept aside, whole, to check on photos never trained on
LEARNING_RATE = 0.001  # Adam's step size (its usual default)
WORKERS = 2  # threads that read and crop photos while the model trains; 1 reads them in the main thread
MIXED_PRECISION = False  # True: 16-bit maths, about twice as fast on a recent GPU (a CPU gains nothing)
JIT_COMPILE = "auto"  # compile each training step (XLA): "auto" lets Keras choose for the backend;
                     # True, False
SEED = 0  # the same seed gives the same starting weights and the same crops, so the same result
OUT_DIR = "outputs/beta"  # the checkpoint, result grids, logs, model and metrics are written here
OVERWRITE = False  # True lets a new run replace the results already in OUT_DIR
RESUME = False  # True continues an interrupted run from the last epoch saved in OUT_DIR
DEVICES = "auto"  # "auto": every GPU here, data parallel (one: as usual); or a count (on a CPU: virtual)

# %%
config = settings.apply(globals())  # --NAME=value from the terminal; checks every value (EPOCHS >= 1, ...)
devices = distribute.Devices(DEVICES, several_machines=True)  # one device: nothing changes
settings.check(IMAGE_SIZE % 8 == 0,
               f"IMAGE_SIZE must be a multiple of 8 (three stride-2 layers), got {IMAGE_SIZE}")
keras.utils.set_random_seed(SEED)
keras.config.set_dtype_policy("mixed_float16" if MIXED_PRECISION else "float32")  # before the model is built

# %% [markdown]
# ## The photos: streamed, cropped, and a validation set
# A real dataset does not fit in memory (Imagenette's 13,000 photos would take over 20 GB as floats),
# so we never load it: `data.from_folder` keeps only the list of file names, in a
# `keras.utils.PyDataset`. When Keras asks for a batch, its `WORKERS` threads read the photos from
# disk, cut the crops and split them into Lab, while the model trains on the previous batch.
#
# Each batch is a pair, exactly what the network is trained on: the input `l`, the lightness, and the
# target `ab`, the colour it must predict, both as in alpha.
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
# `OUT_DIR/batch.png` shows the first four pairs of the first batch: the input the network gets, and
# the true colours it must learn to predict.

# %%
train, validation = data.from_folder(
    DATA, IMAGE_SIZE, BATCH_SIZE, STEPS_PER_EPOCH, VALIDATION_FRACTION, zoom=ZOOM, seed=SEED, workers=WORKERS,
    exclude=OUT_DIR,  # never train on this run's own pictures
)
train = devices.shard(train)  # several processes: each reads its own share of the photos and of each batch
out_dir = files.prepare_out_dir(OUT_DIR, "beta", OVERWRITE, RESUME)  # never replaces what it did not write
l, ab = train[0]  # one batch of pairs: the input l and the target ab
print(f"a batch: l {l.shape} in [{l.min():.2f}, {l.max():.2f}] (input), "
      f"ab {ab.shape} in [{ab.min():.2f}, {ab.max():.2f}] (target)")
inputs = lab.l_ab_to_rgb(l[:4], 0 * ab[:4])  # the first 4 crops as the network sees them, grey
targets = lab.l_ab_to_rgb(l[:4], ab[:4])  # and with the colours it must predict
plots.save_columns(out_dir / "batch.png", {"input: l": list(inputs), "target: ab (with l)": list(targets)})

# %% [markdown]
# ## The baseline: predict grey
# The laziest answer is "no colour": ab = 0 everywhere, which leaves a photo grey. Its loss on the
# validation photos is the number to beat. A network that does not beat it has learned nothing useful
# about colour, whatever its training loss says.

# %%
every_ab = np.concatenate([ab.ravel() for _, ab in validation])  # every validation pixel's target ab
grey_loss = float(np.mean(np.square(every_ab)))  # the mean squared error of predicting ab = 0
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
with devices.scope():  # several devices: each gets its copy of every weight (TensorFlow; JAX: all along)
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
            # ab in [-1, 1]; float32 under MIXED_PRECISION
            layers.Conv2D(2, 3, activation="tanh", padding="same", dtype="float32"),
        ],
        name="beta",
    )
model.summary()

# %% [markdown]
# ## Training
# The same loss as alpha, the mean squared error between the predicted and the true ab, but the Adam
# optimizer, which adapts each weight's step size and copes better with a deep network.
#
# `model.fit` trains on the `(l, ab)` batches of `train` and, after each epoch, measures the loss on
# the `validation` batches. A long run needs a few comforts, and Keras has a callback for each:
#
# - `BackupAndRestore`: after each epoch, the weights, the optimizer's state and the epoch number, in
#   `OUT_DIR/backup`. If the run is interrupted (Ctrl-C, a crash, a machine that reboots), run the same
#   command with `--RESUME=True`: it continues from the last completed epoch. To train longer, resume
#   with a larger `--EPOCHS`. It comes last in the list, so that an epoch counts as saved only once the
#   other callbacks have written it.
# - `ModelCheckpoint(save_best_only=True)`: the weights of the epoch with the lowest validation loss,
#   in `OUT_DIR/best.weights.h5` (see "Early stopping" below).
# - `CSVLogger`: each epoch's losses in `OUT_DIR/history.csv`, continued by a resumed run.
# - `LearningRateScheduler`: here it only sets the rate to `LEARNING_RATE` at each epoch, so that a
#   resumed run uses the setting, not the rate its backup holds (after a NaN stop, resume with a lower one).
# - `TensorBoard`: watch the losses live with `tensorboard --logdir OUT_DIR/logs`.
# - `TerminateOnNaN`: a stop, as an error, if the loss ever becomes NaN (not a number); the backup
#   keeps the last good epoch.
#
# Keras has no callback that shows pictures, so `training.ResultGrid` is ours: after each epoch, the
# validation photos coloured by the network so far, in `OUT_DIR/grids/`. `training.stops` turns Ctrl-C
# and a NaN stop into one line that says which epoch is saved. Keras prints a progress bar per epoch,
# with `loss` (the training loss) and `val_loss`.
#
# Two settings only change the speed. `MIXED_PRECISION` computes in 16-bit floats (the last layer keeps
# `dtype="float32"` above, so the colours and the loss stay precise); `JIT_COMPILE` compiles each step
# into fused code (XLA).

# %% [markdown]
# **Several GPUs, several machines.** The model is built and compiled inside `devices.scope()`; `model.fit`
# is the same call. With `DEVICES` above one, or "auto" on a machine with several GPUs, each device holds a
# copy of the weights and trains on its slice of every batch (`BATCH_SIZE` is the whole batch, split
# between them); their gradients are averaged before each step, so it is the same training as on one
# device, only spread out (JAX: `keras.distribution.DataParallel`; TensorFlow: its `MirroredStrategy`).
# On JAX, several processes, one per machine, each started by `python -m colorlab.commands.launch ...
# beta/train.py`, train together: each reads its own share of the photos, and only process 0 writes
# `OUT_DIR`. The README's "Several devices and machines" gives the commands.

# %%
with devices.scope():  # the optimizer's state too, on every device
    model.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE), loss="mse", jit_compile=JIT_COMPILE)
names, rgbs = validation.examples(4)  # up to 4 whole validation photos, shorter side IMAGE_SIZE
train.epoch = training.saved_epochs(out_dir / "backup")  # resumed: the crops go on where they stopped
start = time.perf_counter()
with training.stops(out_dir / "backup"):  # Ctrl-C or NaN: one line that says what is saved
    model.fit(train, validation_data=devices.whole(validation), epochs=EPOCHS, callbacks=[
        keras.callbacks.ModelCheckpoint(
            out_dir / "best.weights.h5", save_best_only=True, save_weights_only=True,
            # a resumed run's best
            initial_value_threshold=training.lowest(out_dir / "history.csv", "val_loss"),
        ),
        keras.callbacks.CSVLogger(out_dir / "history.csv", append=True),
        # the setting, also after a resume
        keras.callbacks.LearningRateScheduler(lambda epoch: LEARNING_RATE),
        keras.callbacks.TerminateOnNaN(raise_error=True),
        keras.callbacks.TensorBoard(out_dir / "logs"),  # `tensorboard --logdir OUT_DIR/logs`
        training.ResultGrid(out_dir / "grids", names, rgbs),  # ours: Keras has no picture per epoch
        # last, so that an epoch counts as saved only once everything above has written it:
        keras.callbacks.BackupAndRestore(out_dir / "backup", double_checkpoint=True, delete_checkpoint=False),
    ])
seconds = time.perf_counter() - start
history = training.history(out_dir / "history.csv")  # every epoch, those of an interrupted run included
print(f"trained {len(history['loss'])} epochs ({seconds:.0f} s in this run)")

# %% [markdown]
# ## The result
# Compare the validation loss, on photos the network never trained on, with predicting grey: below it,
# the network colours photos it never saw better than no colour at all; above it, worse.
#
# With the 7 sample photos, read the two curves in `loss.png`. The training loss falls slowly. The
# validation loss beats grey from the first epoch, while the network has only learned the average
# colours of photos, but it does not fall steadily: in some epochs it jumps above grey. Five photos are
# too few to learn what colour *things* are, so the network learns what colour *its five photos* are,
# and each epoch's step towards one of them paints its colours onto the new photos. Train longer
# (exercise 1) and watch for the epoch after which the training loss goes on falling while the
# validation loss no longer improves: **overfitting**, memorizing instead of generalizing, alpha's way
# come back. The cure is more photos,
# not a bigger network: with thousands of them (`beta/README.md` trains on Imagenette), the network
# can no longer remember each one, and only what photos share lowers its loss. Even then, expect muted
# colours: when unsure between red and green, the squared error is lowest for the grey in between.

# %%
train_loss, val_loss = history["loss"][-1], history["val_loss"][-1]
print(f"last epoch: training loss {train_loss:.5f}   validation loss {val_loss:.5f}   "
      f"predicting grey {grey_loss:.5f}")
verdict = "better" if val_loss < grey_loss else "WORSE"
print(f"on photos it never saw, the last epoch does {verdict} than predicting grey "
      f"({val_loss / grey_loss:.2f}x its loss)")

# %% [markdown]
# ## Early stopping: keep the best epoch, not the last
# The last epoch is not necessarily the best one on photos the network never saw. `ModelCheckpoint`
# kept the weights of the epoch with the lowest validation loss; we load them back, and that is the
# network we show and save. This is *early stopping*, the standard guard against overfitting: we
# trained on, but we keep the network from before it started memorizing. One catch: the validation
# photos chose the epoch, so their loss now flatters the network a little. To judge it fairly, use
# photos it never saw at all (`evaluate` on a separate folder). `result.png` shows the validation
# photos, whole, coloured by the kept network.

# %%
model.load_weights(out_dir / "best.weights.h5")  # the epoch with the lowest validation loss
best_epoch = history["val_loss"].index(min(history["val_loss"])) + 1
best_val_loss = history["val_loss"][best_epoch - 1]
verdict = "better" if best_val_loss < grey_loss else "WORSE"
print(f"kept epoch {best_epoch} of {len(history['loss'])}: validation loss {best_val_loss:.5f}, {verdict} "
      f"than predicting grey ({best_val_loss / grey_loss:.2f}x its loss)")
columns = {"black and white (input)": [lab.grey_rgb(rgb) for rgb in rgbs],
           "colorized": coloring.colorize(model, rgbs), "original": rgbs}
plots.save_columns(out_dir / "result.png", columns, names)

# %% [markdown]
# ## Saving
# The model, with the best epoch's weights, goes to `OUT_DIR/model.keras`. Like alpha's, it takes `l`
# (any size that divides by 8) and returns `ab`, so the `colorize` command colours any photo with it, at
# the photo's own resolution: `colorize photo.jpg --model outputs/beta/model.keras --out colorized/`.
# Files are written atomically: a run killed while saving never leaves a broken file.

# %%
plots.save_loss_curve(
    out_dir / "loss.png", {"training": history["loss"], "validation": history["val_loss"]},
    {"predict grey (validation)": grey_loss}, title="beta: loss per epoch",
)
training.save_model(model, out_dir / "model.keras")
metrics = {
    "train_loss": train_loss, "val_loss": val_loss, "grey_val_loss": grey_loss,
    "epochs": len(history["loss"]), "best_val_loss": best_val_loss, "best_epoch": best_epoch,
    "seconds": seconds, "train_photos": len(train.paths), "validation_photos": len(validation.paths),
    "skipped_files": len({**train.skipped, **validation.skipped}), "backend": keras.backend.backend(),
}
files.write_json(out_dir / "metrics.json", metrics)
files.write_json(out_dir / "settings.json", config)
print(f"wrote result.png, loss.png, model.keras, metrics.json and settings.json to {out_dir}")
files.unlock(out_dir)  # the run is over: other runs may use OUT_DIR, even while this kernel lives

# %% [markdown]
# ## Exercises
# Each says which setting shows its point, what to expect, and how long it took on a 2-core CPU shared
# with other jobs (load average 5 to 12, several times a quiet machine's); give each run its own
# `--OUT_DIR`. The runs use `--IMAGE_SIZE=32`, crops with a sixteenth of the default's pixels, to
# keep them short. The validation photos are `chelsea.jpg` and `china.jpg`.
#
# 1. **When does memorizing start?** Run with `--IMAGE_SIZE=32 --EPOCHS=30` (15 minutes here) and look
#    at `loss.png` and the grids in `OUT_DIR/grids/`. At which epoch do the training and validation
#    curves part? What do the validation photos look like before and after it? Measured: the training
#    loss falls all the way, from 0.037 to 0.006; the validation loss is lowest at epoch 2 (0.0080,
#    0.57x predicting grey's 0.0139), and from epoch 10 on it is above grey at every epoch, 1.4 to 5.6
#    times it. In the grids, a faint warm tint at epoch 2 becomes, from epoch 14 on, an orange wash
#    over both photos, the temple's sky included.
#    Then try `--ZOOM=2`: do more varied crops delay it? Measured (18 minutes here): within 30 epochs
#    they prevent it. The training loss no longer falls (0.027 to 0.031 from epoch 2 on), and the
#    validation loss stays below grey at every epoch (0.0081 to 0.0113, 0.58x to 0.81x).
# 2. **The 2017 defect.** Move the last `UpSampling2D` after the final `Conv2D(2, ...)` (and drop the
#    `Conv2D(16)` after it), as the original did. Train both versions and zoom into the edges of
#    objects in `result.png`. Where does the half-resolution colour show? Measured with
#    `--IMAGE_SIZE=32 --EPOCHS=10` (8 minutes here): the 2017 version's best validation loss is 0.0092
#    (0.66x predicting grey), ours 0.0080 (0.57x). At that size both kept epochs are still a faint,
#    even wash, so the blocks hardly show: they need colours that change at edges, which take longer
#    training and larger crops. You can always check the cause: in the 2017 version's prediction, every
#    2x2 block of pixels has exactly one `ab`.
# 3. **Receptive field.** Each stride-2 layer doubles the area a pixel of the next layers sums up.
#    Work out roughly how many input pixels one pixel of the 512-channel layers sees (pen and paper;
#    to check, take the gradient of one output pixel with respect to the input: it is non-zero exactly
#    where that pixel looks, and takes about 30 s with the start-up). Expect a square of 43 x 43 pixels
#    for the first of them and 59 x 59 for the second: a third to a half of the side of a 128-pixel
#    crop. Why does colouring need that much context, when alpha's small network managed one photo
#    without it?
# 4. **More data beats more epochs.** Download Imagenette (`python data/download.py`) and train on a few
#    hundred of its photos (copy them into a folder) with the same number of steps as on the samples.
#    Compare the validation loss with predicting grey, in both runs. The download is 326 MiB and needs
#    the internet, so this one was not measured here; the samples' side, at `--IMAGE_SIZE=32`, is
#    exercise 1's: 0.57x grey at best (epoch 2), and above grey at every epoch from the tenth on.
# 5. **Kill it.** Start a run with `--IMAGE_SIZE=32 --EPOCHS=6`, press Ctrl-C in the middle, then run
#    the same command with `--RESUME=True`. Compare its `loss.png` with an uninterrupted run's.
#    Measured on an idle 2-core CPU, with Ctrl-C 3 s after `history.csv` had logged epoch 3 (28 s in;
#    the resume took 25 s; an uninterrupted run 49 s): the run stopped with one line, "interrupted: 3
#    epochs are saved in ...; continue with --RESUME=True". The first three epochs match an
#    uninterrupted run's to the last digit. The resumed run trains on the same random crops (the line
#    `train.epoch = ...` before `fit` sees to that), yet its losses part a little from epoch 4 on
#    (training loss 0.0278 against 0.0271) and its validation loss at epoch 6 is 0.0118 against 0.0085:
#    Keras shuffles the order of each epoch's batches with Python's `random`, whose state no backup
#    keeps. Which would you call the "same" training? With `shuffle=False` in `model.fit` the two runs
#    match to the last digit (tests/test_beta.py checks this on tiny settings).
