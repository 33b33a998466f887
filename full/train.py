# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Full: tell the colouriser what is in the photo
#
# Beta colours from what it sees around each pixel: texture, shape, the lightness of the neighbours.
# That is not always enough. A grey car could be red, blue or white; a grey shirt anything. But some
# things have a colour: grass, sky, faces, oranges, a tabby cat. If the network knew *what* is in the
# photo, it could use it.
#
# A network trained to recognize objects already knows. An **image classifier** trained on ImageNet's
# 1.3 million photos gives, for any photo, the probability of each of 1000 classes ("tabby cat",
# "space shuttle", "espresso", ...). This stage feeds those 1000 numbers, the photo's **embedding**,
# into the middle of beta's encoder-decoder: this is **fusion**. The colouriser gets two inputs, the
# lightness `l` and the embedding, and still returns `ab`.
#
# The 2017 tutorial this project grows from did the same with Inception-ResNet-v2, with two defects
# that this stage fixes:
#
# 1. It fed the classifier pixels in [0, 1] through a preprocessing step that expects [0, 255]. The
#    classifier saw an almost constant picture, and the "semantic" embedding carried almost nothing.
# 2. It computed the embedding of every photo again in every batch. The classifier is far bigger
#    than the colouriser, so most of the training time went to recomputing the same numbers. Here
#    each photo's embedding is computed once and kept on disk.
#
# Run it from the repository root with `python full/train.py` (about 5 minutes on a 2-core laptop CPU
# with the 7 sample photos), or `python full/train.py --help` to list the settings. `full/README.md`
# gives the settings for a real dataset. In Jupyter, open `full/train.ipynb`: it is generated from
# this file.

# %%
import time
from pathlib import Path

import keras
from keras import layers

from colorlab import classifiers, data, embeddings, files, fusion, images, lab, plots, settings, speed, training

# %% [markdown]
# ## Settings
# Every value that changes the result is here; the first ones are beta's. From a terminal, override
# any of them: `python full/train.py --CLASSIFIER=efficientnet_b0 --EPOCHS=30`.
#
# `CLASSIFIER_WEIGHTS` decides whether the embedding means anything:
#
# - `"imagenet"`: the classifier's ImageNet weights, fetched by Keras the first time (215 MB for
#   Inception-ResNet-v2; then kept in `~/.keras/models`). Without internet, the run stops at once with
#   a message that says what to do.
# - `"auto"` (the default): the ImageNet weights if Keras can get them (downloaded or already in its
#   cache), otherwise **random weights**, announced in capitals. So the stage always runs, offline
#   too, and tells you when its fusion is meaningless.
# - a path to a weights file for the classifier (with its 1000-class top), e.g. one copied from a
#   machine with internet: `~/.keras/models/inception_resnet_v2_weights_tf_dim_ordering_tf_kernels.h5`.
# - `None`: random weights. Everything runs (useful for tests), but the embedding says nothing about
#   the photo: fusion cannot help, and the stage says so loudly.

# %% tags=["parameters"]
DATA = "data/samples"  # a folder of photos (JPEG, PNG, WebP, BMP, TIFF; any size), searched recursively
IMAGE_SIZE = 128  # side of the square training crops, in pixels; a multiple of 8 (three stride-2 layers)
ZOOM = 1.3  # each photo's shorter side is scaled to 1 to ZOOM times IMAGE_SIZE before a crop is cut
BATCH_SIZE = 8  # crops per gradient step
STEPS_PER_EPOCH = 16  # gradient steps per epoch; with 5 training photos, that is ~25 crops of each photo
EPOCHS = 10  # total epochs; a resumed run counts the epochs done before it
VALIDATION_FRACTION = 0.25  # share of the photos kept aside, whole, to check on photos never trained on
LEARNING_RATE = 0.001  # Adam's step size (its usual default)
WORKERS = 2  # threads that read and crop photos while the model trains; 1 reads them in the main thread
MIXED_PRECISION = "auto"  # 16-bit maths: "auto" uses it on a GPU only (a CPU gains nothing); True, False, "bfloat16"
JIT_COMPILE = "auto"  # compile each training step (XLA): "auto" lets Keras choose for the backend; True, False
SEED = 0  # the same seed gives the same starting weights and the same crops, so the same result
CLASSIFIER = "inception_resnet_v2"  # the 2017 choice; or inception_v3, resnet50, efficientnet_b0, mobilenet_v3_small
CLASSIFIER_WEIGHTS = "auto"  # "imagenet", "auto" (imagenet, else random, announced), a weights file, or None
EMBEDDING_CACHE = "outputs/embeddings"  # each photo's embedding is kept here, shared by every run
OUT_DIR = "outputs/full"  # the checkpoint, result grids, logs, model and metrics are written here
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
settings.check(CLASSIFIER in classifiers.CLASSIFIERS,
               f"unknown CLASSIFIER {CLASSIFIER!r}; choose one of: {', '.join(classifiers.CLASSIFIERS)}")
settings.check(not Path(EMBEDDING_CACHE).is_file(), f"EMBEDDING_CACHE must be a folder; {EMBEDDING_CACHE} is a file")
settings.check(0 <= SEED < 2**32, f"SEED must be between 0 and 2**32 - 1, got {SEED}")
if RESUME:
    training.check_resume(OUT_DIR, config)  # a wrong OUT_DIR stops here, before any photo is read
keras.utils.set_random_seed(SEED)

# %% [markdown]
# ## The photos
# As in beta: random square crops of the training photos, streamed from disk by `WORKERS` threads
# as 8-bit RGB (split into `l` and `ab` inside the training step), and a validation set of whole
# photos the network never trains on.

# %%
train, validation = data.from_folder(
    DATA, IMAGE_SIZE, BATCH_SIZE, STEPS_PER_EPOCH, VALIDATION_FRACTION, zoom=ZOOM, seed=SEED, workers=WORKERS,
    output="rgb",
)
out_dir = files.prepare_out_dir(OUT_DIR, OVERWRITE or RESUME)  # never replaces an earlier run by accident

# %% [markdown]
# ## The classifier
# Keras ships the classic ImageNet classifiers in `keras.applications`. Each one wants its input in
# its own way: a fixed size, and a fixed scaling of the pixel values. `colorlab.classifiers` keeps
# one row per classifier, so that changing `CLASSIFIER` changes all of it together:
#
# | `CLASSIFIER` | input | after its `preprocess_input` | weights | CPU time per photo* |
# |---|---|---|---|---|
# | `inception_resnet_v2` (the 2017 choice) | 299 x 299 | [-1, 1] | 56 M | 0.35 to 0.5 s |
# | `inception_v3` | 299 x 299 | [-1, 1] | 24 M | 0.16 s |
# | `resnet50` | 224 x 224 | BGR, ImageNet mean subtracted | 26 M | 0.16 s |
# | `efficientnet_b0` | 224 x 224 | [0, 255] (it normalizes inside) | 5 M | 0.05 s |
# | `mobilenet_v3_small` | 224 x 224 | [0, 255] (it normalizes inside) | 2.6 M | 0.015 s |
#
# \*measured on a busy 2-core CPU with TensorFlow, in batches of 8 photos, after the first batch
# (which also builds the compiled graph: 3 to 11 s). The classifier is only ever *used*, never
# trained: its weights stay as they are.

# %%
classifier, weights_used = classifiers.load(CLASSIFIER, CLASSIFIER_WEIGHTS)  # may download, once
recipe = classifiers.CLASSIFIERS[CLASSIFIER]
embed = classifiers.embedder(classifier, CLASSIFIER)  # Keras model: l (N, H, W, 1) -> (N, 1000)
meaningful = weights_used is not None
print(f"{CLASSIFIER}: {classifier.count_params():,} weights ({weights_used or 'RANDOM'}), "
      f"input {recipe.size}x{recipe.size}, {embed.output.shape[-1]} classes")

# %% [markdown]
# ## What the classifier sees
# The classifier was trained on colour photos; we have only the lightness `l`. We show it the
# black-and-white photo as a screen would show it: each pixel's grey (`l` turned back into sRGB, the
# same grey in the red, green and blue channels), on the 0-255 scale of an 8-bit image, resized to
# the classifier's input size. Then, and only then, the classifier's own `preprocess_input` scales
# it the way the classifier was trained: Inception-ResNet-v2 divides by 127.5 and subtracts 1, so
# its pixels lie in [-1, 1].
#
# These steps are a Keras layer, `classifiers.ClassifierInput`, so they are saved inside the final
# model and `colorize` repeats them exactly. Below, what the classifier receives for a validation
# photo, and what the 2017 code gave it: 0-1 values into the same preprocessing, all squeezed near -1.

# %%
sample_path = validation.first_usable()  # the first validation photo that can be read
sample_l = embeddings.classifier_l(sample_path, recipe.size)[None]  # (1, size, size, 1) in [0, 1]
seen = keras.ops.convert_to_numpy(classifiers.ClassifierInput(CLASSIFIER)(sample_l))  # (1, size, size, 3)
seen_2017 = recipe.preprocess(keras.ops.convert_to_numpy(classifiers.grey_srgb(sample_l)).repeat(3, axis=-1))
print(f"{sample_path}: the classifier receives values in [{seen.min():.2f}, {seen.max():.2f}] "
      f"(documented range {recipe.input_range}); the 2017 way, [{seen_2017.min():.3f}, {seen_2017.max():.3f}]")
images.save(out_dir / "classifier_input.png", keras.ops.convert_to_numpy(classifiers.grey_srgb(sample_l))[0].repeat(3, axis=-1))

# %% [markdown]
# ## One embedding per photo, computed once
# The embedding of a photo does not change during training, so it is computed once, before training,
# and kept on disk in `EMBEDDING_CACHE`: one small file per photo, found again by the photo's
# *content* (a hash of its bytes), the classifier and a fingerprint of its weights. A second run, or
# a resumed one, reads them back in a moment; a changed photo, classifier or set of weights is
# recomputed; a damaged file is recomputed rather than trusted.
#
# **The trade-off.** The embedding is of the *whole* photo, not of the random crop (zoomed, flipped)
# that the network trains on. A crop of a face still comes from a photo of a person, and a flip does
# not change what is in it, so the whole photo's embedding describes the crop well; and at colouring
# time the network does see whole photos. Computing the embedding of each crop instead would follow
# the augmentation exactly, at the price of one classifier call per crop, every epoch: the 2017 cost.

# %%
cache = embeddings.Cache(EMBEDDING_CACHE, embed.predict_on_batch, CLASSIFIER, classifiers.fingerprint(classifier))
start = time.perf_counter()
train = embeddings.EmbeddedPhotos.attach(train, cache.get(train.paths))  # batches: ((rgb, embedding),)
validation = embeddings.EmbeddedPhotos.attach(validation, cache.get(validation.paths))
embedding_seconds = time.perf_counter() - start
(l, embedding), ab = data.split_batch(train[0])  # l (BATCH_SIZE, IMAGE_SIZE, IMAGE_SIZE, 1), embedding (BATCH_SIZE, 1000)
print(f"a batch: l {l.shape}, embedding {embedding.shape}, ab {ab.shape}")

# %% [markdown]
# What does the classifier make of the validation photo above, in grey? Its five most probable
# classes. (With ImageNet weights, `decode_predictions` names them; it downloads the class names the
# first time.)

# %%
sample_embedding = validation.embeddings[validation.paths.index(sample_path)]  # from the cache
guesses, note = classifiers.top_guesses(sample_embedding, CLASSIFIER, names=meaningful)
print(f"top-5 guesses for {sample_path}:")
for label, probability in guesses:
    print(f"  {probability:6.1%}  {label}")
if note:
    print(f"  ({note})")
if not meaningful:
    print("  These guesses are MEANINGLESS: the classifier has random weights (see CLASSIFIER_WEIGHTS above).")

# %% [markdown]
# ## The baseline: predict grey
# As in beta, the loss of predicting no colour at all on the validation photos is the number to beat.

# %%
grey_loss = data.grey_loss(validation)  # mean of ab**2 over every validation pixel
print(f"predicting grey on the {len(validation.paths)} validation photos: loss {grey_loss:.5f}")

# %% [markdown]
# ## The network: beta's encoder-decoder, with fusion in the middle
# The **encoder** is beta's: at 1/8 of the photo's size, it describes each place with 256 numbers.
#
# **Fusion** adds the photo's 1000-number embedding to that description, at every place:
#
# 1. `fusion.RepeatOverGrid` copies the embedding to each of the encoder's `h/8 x w/8` places,
#    whatever the photo's size (it reads the grid size when the model runs): (N, h/8, w/8, 1000).
# 2. `Concatenate` stacks it onto the encoder's features: 256 + 1000 numbers per place.
# 3. A **1x1 convolution** with 256 filters mixes them, place by place: each output is a learned
#    weighted sum of "what is here" and "what is in the photo", followed by ReLU. It can learn, say,
#    "smooth and bright, in a photo of the sea: sky blue".
#
# The **decoder** is beta's too: it turns the fused description into `ab` at full resolution.

# %%
policy = speed.mixed_precision(MIXED_PRECISION)  # for the colouriser's layers; the classifier stays float32
jit_compile = speed.jit_compile(JIT_COMPILE)
print(speed.describe(policy, jit_compile))
l_input = keras.Input(shape=(None, None, 1), name="l")  # any height and width that divide by 8
embedding_input = keras.Input(shape=(embed.output.shape[-1],), name="embedding")  # (N, 1000)
# encoder: what is where
x = layers.Conv2D(64, 3, activation="relu", padding="same", strides=2)(l_input)  # 1/2 size
x = layers.Conv2D(128, 3, activation="relu", padding="same")(x)
x = layers.Conv2D(128, 3, activation="relu", padding="same", strides=2)(x)  # 1/4 size
x = layers.Conv2D(256, 3, activation="relu", padding="same")(x)
x = layers.Conv2D(256, 3, activation="relu", padding="same", strides=2)(x)  # 1/8 size
x = layers.Conv2D(512, 3, activation="relu", padding="same")(x)
x = layers.Conv2D(512, 3, activation="relu", padding="same")(x)
features = layers.Conv2D(256, 3, activation="relu", padding="same")(x)  # (N, h/8, w/8, 256)
# fusion: what is in the photo, at every place
grid = fusion.RepeatOverGrid(name="repeat_embedding")([embedding_input, features])  # (N, h/8, w/8, 1000)
x = layers.Concatenate(name="concatenate")([features, grid])  # (N, h/8, w/8, 1256)
x = layers.Conv2D(256, 1, activation="relu", name="fusion")(x)  # (N, h/8, w/8, 256)
# decoder: which colour goes where
x = layers.Conv2D(128, 3, activation="relu", padding="same")(x)
x = layers.UpSampling2D(2)(x)  # 1/4 size
x = layers.Conv2D(64, 3, activation="relu", padding="same")(x)
x = layers.UpSampling2D(2)(x)  # 1/2 size
x = layers.Conv2D(32, 3, activation="relu", padding="same")(x)
x = layers.UpSampling2D(2)(x)  # full size
x = layers.Conv2D(16, 3, activation="relu", padding="same")(x)
ab_output = layers.Conv2D(2, 3, activation="tanh", padding="same", name="ab", dtype="float32")(x)  # ab in [-1, 1], per pixel
model = keras.Model([l_input, embedding_input], ab_output, name="colouriser")
model.summary()

# %% [markdown]
# ## Training
# As in beta, with `training.fit`: checkpoints after each epoch (`--RESUME=True` continues an
# interrupted run), the validation photos coloured after each epoch in `OUT_DIR/grids/`, TensorBoard
# logs in `OUT_DIR/logs`, and a clear stop if the loss becomes NaN. Each batch is
# `((rgb, embedding),)`, 8-bit crops with their photos' embeddings; `training.RGBTrainer` splits the
# crops into `l` and `ab` inside the step and gives the colouriser `[l, embedding]`, as beta's does.
# The embeddings come from memory, so a training step costs the same as beta's plus the small fusion
# layer. To colour the example photos after each epoch, `embeddings.predictor` runs the classifier
# once per photo and remembers the result. `MIXED_PRECISION` and `JIT_COMPILE` change only the speed
# (see beta).

# %%
trainer = training.RGBTrainer(model)  # ((uint8 rgb, embedding),) -> colouriser([l, embedding]) vs ab
trainer.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE), loss="mse", jit_compile=jit_compile)
names, rgbs = validation.examples(4)  # up to 4 whole validation photos, shorter side IMAGE_SIZE
predict = embeddings.predictor(embed)  # predict(model, l): the embedding of each photo, then the colouriser
start = time.perf_counter()
run = training.fit(
    trainer, train, validation, epochs=EPOCHS, out_dir=out_dir, resume=RESUME, examples=(names, rgbs),
    predict=predict, settings=config, keep_best="val_loss",  # keep the epoch with the lowest validation loss
)
print(f"trained {run.epochs} epochs in {run.seconds:.0f} s ({time.perf_counter() - start:.0f} s in this run)")

# %% [markdown]
# ## The result
# The validation photos, whole, coloured by the network, which has never trained on them. With
# random classifier weights, expect beta's result at best: the embedding says nothing about what is
# in the photo. It still differs from photo to photo, though, so with only 5 training photos it can
# serve as a *name* for each one, and help the network learn them by heart: a lower training loss
# than beta's, not a better validation loss. With ImageNet weights, the embedding starts to help once
# the network has seen enough photos of each kind of scene: thousands, not the 7 samples (see
# `full/README.md`).

# %%
train_loss, val_loss = run.history["loss"][-1], run.history["val_loss"][-1]
print(f"last epoch: training loss {train_loss:.5f}   validation loss {val_loss:.5f}   predicting grey {grey_loss:.5f}")
best_epoch = training.restore_best(model, out_dir)  # early stopping, as in beta: keep the best epoch's weights
best_val_loss = run.history["val_loss"][best_epoch - 1]
verdict = "better" if best_val_loss < grey_loss else "WORSE"
print(f"kept epoch {best_epoch} of {run.epochs}: validation loss {best_val_loss:.5f}, {verdict} than predicting grey "
      f"({best_val_loss / grey_loss:.2f}x its loss)")
colourised = training.colourise(model, rgbs, predict)
plots.save_grid(out_dir / "result.png", [lab.grey(rgb) for rgb in rgbs], colourised, rgbs, names)
if not meaningful:
    print(classifiers.random_weights_warning(CLASSIFIER, "this run's fusion carried no meaning"))

# %% [markdown]
# ## Saving: one model that colours a photo on its own
# The colouriser needs the embedding of every photo it colours. So that a user needs nothing but the
# model file, we save a model with **one** input, `l`, that contains both networks: it runs
# `ClassifierInput` and the classifier on `l`, then the colouriser on `l` and the embedding. It is
# what `OUT_DIR/model.keras` holds; the repository's `colorize` and `evaluate` tools use it like
# alpha's or beta's, with one `--model` argument. It is as big as the classifier (215 MB with
# Inception-ResNet-v2). To load it in your own code, `import colorlab.classifiers, colorlab.fusion`
# first: they define its two custom layers.
#
# The checkpoint in `OUT_DIR/checkpoint` holds the two-input colouriser's weights and its optimizer's
# state, without the classifier, for resuming.

# %%
plots.save_loss_curve(
    out_dir / "loss.png", {"training": run.history["loss"], "validation": run.history["val_loss"]},
    {"predict grey (validation)": grey_loss}, title="full: loss per epoch",
)
colouriser = keras.Model(model.inputs, model.outputs, name="colouriser")  # the same layers, without the optimizer
l_only = keras.Input(shape=(None, None, 1), name="l")
complete = keras.Model(l_only, colouriser([l_only, embed(l_only)]), name="full")  # l -> ab, classifier inside
training.save_model(complete, out_dir / "model.keras")
crops_seen = run.epochs * STEPS_PER_EPOCH * BATCH_SIZE
metrics = {
    "train_loss": train_loss, "val_loss": val_loss, "grey_val_loss": grey_loss, "epochs": run.epochs,
    "best_val_loss": best_val_loss, "best_epoch": best_epoch, "history": run.history, "seconds": run.seconds,
    "crops_per_second": crops_seen / run.seconds if run.seconds else None,
    "train_photos": len(train.paths), "validation_photos": len(validation.paths),
    "skipped_files": len({**train.skipped, **validation.skipped, **cache.skipped}),
    "classifier": CLASSIFIER, "classifier_weights": weights_used, "embedding_meaningful": meaningful,
    "classifier_fingerprint": classifiers.fingerprint(classifier), "embedding_seconds": embedding_seconds,
    "embeddings_computed": cache.computed, "embeddings_from_cache": cache.hits,
    "backend": keras.backend.backend(), "dtype_policy": policy, "jit_compile": trainer.jit_compile,
}
files.write_json(out_dir / "metrics.json", metrics)
files.write_json(out_dir / "settings.json", config)
print(f"wrote result.png, loss.png, model.keras, metrics.json and settings.json to {out_dir}")

# %% [markdown]
# ## Exercises
# 1. **Does fusion help?** Train beta and full on the same photos with the same settings (a few
#    hundred Imagenette photos: `python data/download.py`), full with `CLASSIFIER_WEIGHTS=imagenet`,
#    then compare them with `python -m colorlab.evaluate` on the same validation photos. Then train
#    full with `CLASSIFIER_WEIGHTS=None`: is the difference the classifier's knowledge, or only the
#    bigger network?
# 2. **The 2017 defect.** In `classifiers.ClassifierInput.call`, drop the `* 255.0` and train with
#    ImageNet weights. Print the top-5 guesses for a few photos. What does the classifier now "see"?
#    (The embedding cache keys on the weights, not on this code: change `embeddings.RECIPE` too, or
#    the old embeddings are reused. Why is that the right key?)
# 3. **Cost.** Time `cache.get` on 100 photos for each `CLASSIFIER`, then once more (all cached).
#    How many epochs of training would computing the embedding in every batch cost instead?
# 4. **Crop or photo?** Compute the embedding of each training crop instead of each photo (hint: call
#    `embed` inside a custom `PyDataset`). Does the validation loss improve enough to pay for it?
# 5. **Probabilities or features?** The 1000 probabilities are a narrow summary: most are near 0.
#    Build the classifier with `include_top=False, pooling="avg"` (1536 features for
#    Inception-ResNet-v2) and fuse those instead. Which carries more useful information for colour?
