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
# Run it from the repository root with `python full/train.py` (4.5 minutes with the 7 sample photos on
# an idle 2-core CPU, once their embeddings are cached), or `python full/train.py --help` for the settings.
# `full/README.md` shows what to expect and gives the settings for a real dataset. In Jupyter, open
# `full/train.ipynb`: it is generated from this file.
#
# On a computer without an NVIDIA GPU, TensorFlow (Keras's default backend) says so when it starts:
# "Could not find cuda drivers on your machine, GPU will not be used", after a "WARNING: All log
# messages before absl::InitializeLog()" line. They are harmless; `colorlab.start_keras()` in the first
# cell below shows them once (TensorFlow prints them twice) and hides TensorFlow's other C++ messages
# (`TF_CPP_MIN_LOG_LEVEL`; set it to "0" in your shell to see them all).

# %% [markdown]
# ## What to expect
# Measured offline, so with **random classifier weights** (`CLASSIFIER_WEIGHTS = None`: the ImageNet
# weights could not be downloaded), the defaults otherwise. The run announces it in capitals, then
# `inception_resnet_v2: 55,873,736 weights (RANDOM), input 299x299`. It shows what the classifier
# receives for a known photo, and what the 2017 code gave it, a black square:
# `inception_resnet_v2, the 2017 way: [-1.000, -0.994], 0.3% of the range it was trained on (the fix:
# 74%)`.
#
# ![what Inception-ResNet-v2 receives, and what the 2017 code gave it](../docs/full_classifier_input.jpg)
#
# Predicting grey on the two validation photos costs 0.01503. The run ends with `last epoch: training
# loss 0.02063   validation loss 0.01672   predicting grey 0.01503` and keeps its best epoch, `kept epoch
# 2 of 10: validation loss 0.00900, better than predicting grey (0.60x its loss)`: a muted sepia, the
# average colour of photos, like beta's. With random weights the embedding is nearly the same for every
# photo, so it cannot tell the colouriser anything.
#
# ![full with random classifier weights: the two validation photos](../docs/full_result.jpg)
#
# That took 267 s on this project's idle 2-core CPU (243 s of training), with the 7 embeddings already
# in `EMBEDDING_CACHE`; on a busy machine it takes longer, the losses do not change. Every output of that
# run is in [docs/executed/full.ipynb](../docs/executed/full.ipynb).

# %%
import time
from pathlib import Path

import colorlab

colorlab.start_keras()  # TensorFlow's start-up lines once, its other C++ messages off (see above)
import keras
import numpy as np
from keras import layers

from colorlab import UserError, coloring, data, distribute, embeddings, files, lab, plots, settings, training

# %% [markdown]
# ## Settings
# Every value that changes the result is here; the first ones are beta's. From a terminal, override
# any of them: `python full/train.py --CLASSIFIER=efficientnet_b0 --EPOCHS=30`.
#
# `CLASSIFIER_WEIGHTS` decides whether the embedding means anything:
#
# - `"imagenet"`: the classifier's ImageNet weights, fetched by Keras the first time (about 220 MB for
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
STEPS_PER_EPOCH = 12  # gradient steps per epoch: BATCH_SIZE x 12 = 96 crops, ~19 of each of the 5
                      # training photos
EPOCHS = 10  # total epochs; a resumed run counts the epochs done before it
VALIDATION_FRACTION = 0.25  # share of the photos kept aside, whole, to check on photos never trained on
LEARNING_RATE = 0.001  # Adam's step size (its usual default)
WORKERS = 2  # threads that read and crop photos while the model trains; 1 reads them in the main thread
MIXED_PRECISION = False  # True: 16-bit maths in the colouriser, about twice as fast on a recent GPU
                         # (not on a CPU)
JIT_COMPILE = "auto"  # compile each training step (XLA): "auto" lets Keras choose for the backend;
                     # True, False
SEED = 0  # the same seed gives the same starting weights and the same crops, so the same result
CLASSIFIER = "inception_resnet_v2"  # the 2017 choice; or inception_v3, resnet50, efficientnet_b0,
                                    # mobilenet_v3_small
CLASSIFIER_WEIGHTS = "auto"  # "imagenet", "auto" (imagenet, else random, announced), a weights file, or None
EMBEDDING_CACHE = "outputs/embeddings"  # each photo's embedding is kept here, shared by every run
OUT_DIR = "outputs/full"  # the checkpoint, result grids, logs, model and metrics are written here
OVERWRITE = False  # True lets a new run replace the results already in OUT_DIR
RESUME = False  # True continues an interrupted run from the last epoch saved in OUT_DIR
DEVICES = "auto"  # "auto": every GPU here, data parallel (one: as usual); or a count (on a CPU: virtual)

# %%
config = settings.apply(globals())  # --NAME=value from the terminal; checks every value (EPOCHS >= 1, ...)
devices = distribute.Devices(DEVICES)  # one device: nothing changes (several machines: beta only)
settings.check(IMAGE_SIZE % 8 == 0,
               f"IMAGE_SIZE must be a multiple of 8 (three stride-2 layers), got {IMAGE_SIZE}")
settings.check(CLASSIFIER_WEIGHTS in ("imagenet", "auto", None) or Path(CLASSIFIER_WEIGHTS).is_file(),
               f"CLASSIFIER_WEIGHTS={CLASSIFIER_WEIGHTS}: no such file; give \"imagenet\", \"auto\", "
               f"the path of a weights file, or None (random weights)")
files.check_destination(EMBEDDING_CACHE, "EMBEDDING_CACHE")  # never the repository, your home folder, ...
settings.check(not Path(EMBEDDING_CACHE).is_file(),
               f"EMBEDDING_CACHE must be a folder; {EMBEDDING_CACHE} is a file")
keras.utils.set_random_seed(SEED)

# %% [markdown]
# ## The classifiers
# Keras ships the classic ImageNet classifiers in `keras.applications`. Each wants its input in its
# own way: a fixed size, and its own scaling of the 0-255 pixel values, which its module's
# `preprocess_input` function applies. One row per classifier keeps them together, so that changing
# `CLASSIFIER` changes all of it:
#
# | `CLASSIFIER` | input | its `preprocess_input` (mode) | weights |
# |---|---|---|---|
# | `inception_resnet_v2` (the 2017 choice) | 299 x 299 | `"tf"`: x / 127.5 - 1, into [-1, 1] | 55.9 M |
# | `inception_v3` | 299 x 299 | `"tf"`: into [-1, 1] | 23.9 M |
# | `resnet50` | 224 x 224 | `"caffe"`: RGB to BGR, minus ImageNet's mean colour | 25.6 M |
# | `efficientnet_b0` | 224 x 224 | none: 0-255, it normalizes inside | 5.3 M |
# | `mobilenet_v3_small` | 224 x 224 | none: 0-255, it normalizes inside | 2.6 M |
#
# Each costs its own time per photo: exercise 4 measures it. The classifier is only ever *used*, never
# trained: its weights stay as they are.

# %%
classifiers = {  # name: (keras.applications model, its module, input side in pixels, preprocess_input's mode)
    "inception_resnet_v2": ("InceptionResNetV2", "inception_resnet_v2", 299, "tf"),
    "inception_v3": ("InceptionV3", "inception_v3", 299, "tf"),
    "resnet50": ("ResNet50", "resnet50", 224, "caffe"),
    "efficientnet_b0": ("EfficientNetB0", "efficientnet", 224, None),
    "mobilenet_v3_small": ("MobileNetV3Small", "mobilenet_v3", 224, None),
}
settings.check(CLASSIFIER in classifiers,
               f"unknown CLASSIFIER {CLASSIFIER!r}; choose one of: {', '.join(classifiers)}")

# %% [markdown]
# ## The photos
# As in beta: random square crops of the training photos, streamed from disk by `WORKERS` threads,
# and a validation set of whole photos the network never trains on.

# %%
train, validation = data.from_folder(
    DATA, IMAGE_SIZE, BATCH_SIZE, STEPS_PER_EPOCH, VALIDATION_FRACTION, zoom=ZOOM, seed=SEED, workers=WORKERS,
    exclude=OUT_DIR,  # never train on this run's own pictures
)
train = devices.shard(train)  # checks that BATCH_SIZE divides between the devices
out_dir = files.prepare_out_dir(OUT_DIR, "full", OVERWRITE, RESUME)  # never replaces what it did not write

# %% [markdown]
# ## Loading the classifier
# `keras.applications` builds the classifier and, with `weights="imagenet"`, downloads its weights
# the first time. The function below adds what `CLASSIFIER_WEIGHTS` promises: a one-line message
# when the download fails, random weights announced loudly, or a weights file of your own.

# %%
def random_weights_warning(reason):
    bar = "!" * 100
    return (f"{bar}\n!! WARNING: the {CLASSIFIER} classifier has RANDOM weights ({reason}).\n"
            "!! The stage runs, but the embedding carries NO meaning about what is in the photo: "
            "fusion cannot help.\n"
            "!! For real features, set CLASSIFIER_WEIGHTS=imagenet (the internet once; Keras then keeps "
            "the file in\n"
            f"!! ~/.keras/models) or the path of a downloaded weights file.\n{bar}")


def first_line(error):
    return (str(error).strip() or type(error).__name__).splitlines()[0][:200]


def load_classifier(name, weights):
    """keras.applications' classifier ``name`` with its 1000-class top; returns (model, the weights used)."""
    constructor, _, size, _ = classifiers[name]
    build = lambda weights: getattr(keras.applications, constructor)(weights=weights,
                                                                     input_shape=(size, size, 3))
    if weights in ("imagenet", "auto"):
        try:
            # Keras's own loading code: downloads once, then from its cache
            return build("imagenet"), "imagenet"
        except Exception as error:  # offline, Keras says "URL fetch failure on https://..."
            if weights == "imagenet":
                raise UserError(f"cannot load the ImageNet weights of {name} ({first_line(error)}): "
                                f"connect to the internet once (Keras then keeps them in ~/.keras/models), "
                                f"or set CLASSIFIER_WEIGHTS to the path of a weights file, or to None "
                                f"(random weights)") from None
            print(random_weights_warning(f"CLASSIFIER_WEIGHTS=auto, and the ImageNet weights could not be "
                                         f"loaded: {first_line(error)}"))
            return build(None), None
    model = build(None)  # random weights
    if weights is None:
        print(random_weights_warning("CLASSIFIER_WEIGHTS=None"))
        return model, None
    try:
        model.load_weights(weights)
    except Exception as error:  # Keras reports a file that does not fit with many kinds of exception
        raise UserError(f"{weights}: cannot load these weights into {name} with its 1000-class top "
                        f"({first_line(error)}); check CLASSIFIER and CLASSIFIER_WEIGHTS") from None
    return model, weights


classifier, weights_used = load_classifier(CLASSIFIER, CLASSIFIER_WEIGHTS)
meaningful = weights_used is not None
size, module = classifiers[CLASSIFIER][2], getattr(keras.applications, classifiers[CLASSIFIER][1])
print(f"{CLASSIFIER}: {classifier.count_params():,} weights ({weights_used or 'RANDOM'}), "
      f"input {size}x{size}")

# %% [markdown]
# ## What the classifier sees: the 2017 defect and its fix
# The classifier was trained on colour photos; we have only the lightness `l`. We show it the
# black-and-white photo as a screen would show it:
#
# 1. `l` resized to the classifier's square (`Resizing`; a photo of another shape is stretched to it);
# 2. each pixel's grey: `l` turned back into sRGB, in [0, 1] (`lab.GreySRGB`, the Lab maths of alpha as
#    a Keras layer);
# 3. **times 255**: the 0-255 scale of an 8-bit image, the scale every `preprocess_input` expects;
# 4. the same grey in the red, green and blue channels (`Concatenate`);
# 5. the classifier's own preprocessing, written as Keras layers: for the `"tf"` mode,
#    `Rescaling(1 / 127.5, offset=-1)`, into [-1, 1]; for `"caffe"`, a flip from RGB to BGR and then
#    ImageNet's mean colour subtracted, channel by channel (`Normalization` with that mean and a
#    variance of 1). A grey has R = G = B, so the flip changes nothing and is left out. EfficientNet
#    and MobileNet-v3 take 0-255 and normalize inside: nothing to add.
#
# Step 3 is the fix. The 2017 code skipped it: 0-1 values went into a preprocessing made for 0-255,
# and Inception-ResNet-v2 received values squeezed between -1 and -0.99, an almost uniform grey.
#
# These steps are built-in Keras layers (and `lab.GreySRGB`, which `colorlab` registers), so they are
# saved inside the final model and the `colorize` command repeats them exactly, with no code from this
# file. If you change them, change `RECIPE` too: it keys the embedding cache below, so that embeddings
# computed the old way are not reused.

# %%
RECIPE = ("whole photo, longer side = size, l stretched to a square; grey sRGB x 255, 3 channels; "
          "preprocess_input; v2")


def classifier_input(name):
    """A Keras model: l (N, H, W, 1) in [0, 1], any size -> classifier ``name``'s input (N, size, size, 3)."""
    _, _, size, mode = classifiers[name]
    l = keras.Input(shape=(None, None, 1), name="l")
    x = layers.Resizing(size, size, antialias=True)(l)  # (N, size, size, 1)
    grey = lab.GreySRGB()(x)  # the grey a screen shows for this lightness, sRGB in [0, 1]
    grey = layers.Rescaling(255.0)(grey)  # THE FIX: 0-255, the scale preprocess_input expects
    rgb = layers.Concatenate()([grey, grey, grey])  # (N, size, size, 3): R = G = B
    if mode == "tf":
        rgb = layers.Rescaling(1 / 127.5, offset=-1.0)(rgb)  # [0, 255] -> [-1, 1]
    elif mode == "caffe":  # BGR minus ImageNet's mean colour (for a grey, BGR = RGB)
        rgb = layers.Normalization(mean=[103.939, 116.779, 123.68], variance=[1.0, 1.0, 1.0])(rgb)
    return keras.Model(l, rgb, name="classifier_input")


photo_l = keras.Input(shape=(None, None, 1), name="l")
# l -> (N, 1000)
embed = keras.Model(photo_l, classifier(classifier_input(CLASSIFIER)(photo_l)), name="embedder")

# %% [markdown]
# **A check, on a real photo.** The layers above must give exactly what each classifier's own
# `preprocess_input` gives for the same black-and-white photo on the 0-255 scale (computed here with
# NumPy and scikit-image, the way Keras documents it). We check every classifier of the table, not
# only the one in use, to within half of one of the 256 grey levels. Then, for the classifier in use,
# what the 2017 code fed it. Below, what the classifier receives, shown on its own scale (its black
# is black, its white is white), next to what the 2017 code gave it.

# %%
sample_path = validation.first_usable()  # a known photo: the first validation photo that can be read
print(f"what each classifier receives for {sample_path}, against keras.applications' preprocess_input:")
for name, (_, module_name, side, _) in classifiers.items():
    # NumPy arrays: changes them in place
    preprocess = getattr(keras.applications, module_name).preprocess_input
    sample_l = embeddings.classifier_l(sample_path, side)  # (side, side, 1) in [0, 1]
    seen = keras.ops.convert_to_numpy(classifier_input(name)(sample_l[None]))[0]  # (side, side, 3)
    # (side, side, 3), R = G = B, 0-255
    grey255 = lab.l_ab_to_rgb(sample_l, np.zeros((side, side, 2))) * 255.0
    expected = preprocess(grey255.copy())
    black, white = (preprocess(np.zeros((1, 1, 3), np.float32)),
                    preprocess(np.full((1, 1, 3), 255.0, np.float32)))
    error = np.abs(seen - expected).max() / np.abs((white - black) / 255).min()  # in grey levels
    print(f"  {name:20} [{seen.min():8.2f}, {seen.max():7.2f}] "
          f"(black {black.min():.2f}, white {white.max():.2f}); largest difference {error:.3f} grey levels")
    assert error < 0.5, f"{name}: the classifier's input is not its preprocess_input of the grey photo"
    if name == CLASSIFIER:
        shown = (seen - black) / (white - black)  # on the classifier's scale: its black 0, its white 1
        seen_2017 = preprocess(grey255 / 255.0)  # the 2017 code: grey in [0, 1], into the same preprocessing
        shown_2017 = (seen_2017 - black) / (white - black)
print(f"{CLASSIFIER}, the 2017 way: [{seen_2017.min():.3f}, {seen_2017.max():.3f}], "
      f"{np.ptp(shown_2017):.1%} of the range it was trained on (the fix: {np.ptp(shown):.0%})")
plots.save_columns(out_dir / "classifier_input.png", {
    f"what {CLASSIFIER} receives": [shown], "what the 2017 code gave it": [shown_2017]},
    [Path(sample_path).name])

# %% [markdown]
# ## One embedding per photo, computed once
# The embedding of a photo does not change during training, so it is computed once, before training,
# and kept on disk in `EMBEDDING_CACHE`: one small file per photo, found again by the photo's
# *content* (a hash of its bytes), the classifier, a fingerprint of its weights and `RECIPE`. A second
# run, or a resumed one, reads them back in a moment; a changed photo, classifier, set of weights or
# recipe is recomputed; a damaged file is recomputed rather than trusted.
#
# **The trade-off.** The embedding is of the *whole* photo, not of the random crop (zoomed, flipped)
# that the network trains on. A crop of a face still comes from a photo of a person, and a flip does
# not change what is in it, so the whole photo's embedding describes the crop well; and at colouring
# time the network does see whole photos. Computing the embedding of each crop instead would follow
# the augmentation exactly, at the price of one classifier call per crop, every epoch: the 2017 cost.
#
# With the embeddings attached, each batch is a pair `((l, embedding), ab)`: the colouriser's two
# inputs, and the target.

# %%
fingerprint = embeddings.fingerprint(classifier)  # a hash of the classifier's weights
cache = embeddings.Cache(EMBEDDING_CACHE, embed.predict_on_batch, size, CLASSIFIER, fingerprint, RECIPE)
start = time.perf_counter()
train.embeddings = cache.get(train.paths)  # (training photos, 1000): one row per photo
validation.embeddings = cache.get(validation.paths)
embedding_seconds = time.perf_counter() - start
(l, embedding), ab = train[0]  # one batch: each crop with the embedding of the photo it was cut from
print(f"a batch: ((l {l.shape}, embedding {embedding.shape}), ab {ab.shape}); "
      f"l in [{l.min():.2f}, {l.max():.2f}], "
      f"each embedding sums to {embedding.sum(axis=1).mean():.3f} (probabilities), "
      f"ab in [{ab.min():.2f}, {ab.max():.2f}]")

# %% [markdown]
# What does the classifier make of the photo above, in grey? Its five most probable classes. (With
# ImageNet weights, `decode_predictions` names them; it downloads the class names the first time.)

# %%
probabilities = validation.embeddings[validation.paths.index(sample_path)]  # from the cache
top = np.argsort(probabilities)[::-1][:5]
labels = [f"class {i}" for i in top]
if meaningful:
    try:
        labels = [label for _, label, _ in module.decode_predictions(probabilities[None], top=5)[0]]
    except Exception:  # offline: the class names cannot be fetched
        print("(class names unavailable offline: ImageNet class numbers instead)")
print(f"top-5 guesses for {sample_path}:")
for i, label in zip(top, labels):
    print(f"  {probabilities[i]:6.1%}  {label}")
if not meaningful:
    print("  These guesses are MEANINGLESS: the classifier has random weights "
          "(see CLASSIFIER_WEIGHTS above).")

# %% [markdown]
# ## The baseline: predict grey
# As in beta, the loss of predicting no colour at all on the validation photos is the number to beat.

# %%
every_ab = np.concatenate([ab.ravel() for _, ab in validation])  # every validation pixel's target ab
grey_loss = float(np.mean(np.square(every_ab)))  # the mean squared error of predicting ab = 0
print(f"predicting grey on the {len(validation.paths)} validation photos: loss {grey_loss:.5f}")

# %% [markdown]
# ## The network: beta's encoder-decoder, with fusion in the middle
# The **encoder** is beta's: at 1/8 of the photo's size, it describes each place with 256 numbers.
#
# **Fusion** joins the photo's 1000-number embedding to that description, at every place. The plain
# way, the 2017 one, copies the embedding to each of the `h/8 x w/8` places, stacks it onto the 256
# features (1256 numbers per place) and mixes them with a **1x1 convolution**: at each place, each of
# its 256 outputs is a learned weighted sum of all 1256 numbers, plus a bias, then ReLU. It can learn,
# say, "smooth and bright, in a photo of the sea: sky blue".
#
# Look at that weighted sum: `W_f . features + W_e . embedding + b`. Its second part is the *same at
# every place*, since the embedding is. So we compute it once per photo, with a `Dense(256)` layer on
# the embedding, and add it to a `Conv2D(256, 1)` of the features. `Reshape` makes it (N, 1, 1, 256),
# and `Add` broadcasts it over every place, whatever the photo's size. The same weights, the same
# numbers, but the 1000 numbers are never copied to every place (at 1/8 of a 1024 x 1024 photo, that
# is 16 million numbers per photo), and only Keras's own layers are used: any Keras loads the saved
# model without code from this file.
#
# The **decoder** is beta's too: it turns the fused description into `ab` at full resolution.
#
# `MIXED_PRECISION` applies to the colouriser only: the layers below are built after it is set, and the
# classifier, built above, stays in 32-bit floats.

# %%
# for the layers built from here on
keras.config.set_dtype_policy("mixed_float16" if MIXED_PRECISION else "float32")
with devices.scope():  # several devices: each gets its copy of every weight (TensorFlow; JAX: all along)
    l_input = keras.Input(shape=(None, None, 1), name="l")  # any height and width that divide by 8
    embedding_input = keras.Input(shape=(classifier.output.shape[-1],), name="embedding")  # (N, 1000)
    # encoder: what is where
    x = layers.Conv2D(64, 3, activation="relu", padding="same", strides=2)(l_input)  # 1/2 size
    x = layers.Conv2D(128, 3, activation="relu", padding="same")(x)
    x = layers.Conv2D(128, 3, activation="relu", padding="same", strides=2)(x)  # 1/4 size
    x = layers.Conv2D(256, 3, activation="relu", padding="same")(x)
    x = layers.Conv2D(256, 3, activation="relu", padding="same", strides=2)(x)  # 1/8 size
    x = layers.Conv2D(512, 3, activation="relu", padding="same")(x)
    x = layers.Conv2D(512, 3, activation="relu", padding="same")(x)
    features = layers.Conv2D(256, 3, activation="relu", padding="same")(x)  # (N, h/8, w/8, 256)
    # fusion: a 1x1 convolution over [features, embedding at every place], computed without the copies
    # W_f . features + b, (N, h/8, w/8, 256)
    from_features = layers.Conv2D(256, 1, name="fusion_features")(features)
    # W_e . embedding
    from_embedding = layers.Dense(256, use_bias=False, name="fusion_embedding")(embedding_input)
    from_embedding = layers.Reshape((1, 1, 256))(from_embedding)  # (N, 1, 1, 256)
    x = layers.Add()([from_features, from_embedding])  # broadcast: the same W_e . embedding at every place
    x = layers.ReLU(name="fusion")(x)  # (N, h/8, w/8, 256)
    # decoder: which colour goes where
    x = layers.Conv2D(128, 3, activation="relu", padding="same")(x)
    x = layers.UpSampling2D(2)(x)  # 1/4 size
    x = layers.Conv2D(64, 3, activation="relu", padding="same")(x)
    x = layers.UpSampling2D(2)(x)  # 1/2 size
    x = layers.Conv2D(32, 3, activation="relu", padding="same")(x)
    x = layers.UpSampling2D(2)(x)  # full size
    x = layers.Conv2D(16, 3, activation="relu", padding="same")(x)
    # ab in [-1, 1], in float32
    ab_output = layers.Conv2D(2, 3, activation="tanh", padding="same", dtype="float32")(x)
    colorizer = keras.Model((l_input, embedding_input), ab_output, name="colorizer")  # (l, embedding) -> ab
colorizer.summary()

# %% [markdown]
# The colouriser needs the embedding of every photo it colours. So that colouring a photo needs only
# its lightness, we also build the **complete** model: one input, `l`; inside, the classifier's input
# layers and the classifier give the embedding, and the colouriser's layers give `ab`. They are the
# very same layers, so the complete model's weights change as the colouriser trains; we wrap them in a
# second `keras.Model` only so that the optimizer's state, which training attaches to `colorizer`, is
# not saved with it (twice the colouriser's weights, of no use for colouring). The result grids after
# each epoch and the saved `model.keras` use the complete model.

# %%
photo_l = keras.Input(shape=(None, None, 1), name="l")
# shares every layer and weight
same_layers = keras.Model(colorizer.input, colorizer.output, name="colorizer")
# l -> ab, the classifier inside
complete = keras.Model(photo_l, same_layers((photo_l, embed(photo_l))), name="full")

# %% [markdown]
# ## Training
# As in beta: the mean squared error between the predicted and the true `ab`, Adam, and Keras's
# callbacks for a long run (`BackupAndRestore` for `--RESUME=True`, `ModelCheckpoint` for the best
# epoch, `CSVLogger`, `TerminateOnNaN`, TensorBoard in `OUT_DIR/logs`). `colorizer.fit` trains the
# colouriser on the `((l, embedding), ab)` pairs; the embeddings come from memory, so a step costs
# what beta's does, plus the small fusion layers. `training.ResultGrid` colours the validation photos
# after each epoch with the complete model, classifier included, as `colorize` will.

# %%
with devices.scope():  # the optimizer's state too, on every device
    colorizer.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE), loss="mse", jit_compile=JIT_COMPILE)
names, rgbs = validation.examples(4)  # up to 4 whole validation photos, shorter side IMAGE_SIZE
train.epoch = training.saved_epochs(out_dir / "backup")  # resumed: the crops go on where they stopped
start = time.perf_counter()
with training.stops(out_dir / "backup"):  # Ctrl-C or NaN: one line that says what is saved
    colorizer.fit(train, validation_data=devices.whole(validation), epochs=EPOCHS, callbacks=[
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
        # ours: coloured by the complete model
        training.ResultGrid(out_dir / "grids", names, rgbs, model=complete),
        # last, so that an epoch counts as saved only once everything above has written it:
        keras.callbacks.BackupAndRestore(out_dir / "backup", double_checkpoint=True, delete_checkpoint=False),
    ])
seconds = time.perf_counter() - start
history = training.history(out_dir / "history.csv")  # every epoch, those of an interrupted run included
print(f"trained {len(history['loss'])} epochs ({seconds:.0f} s in this run)")

# %% [markdown]
# ## The result
# The validation photos, whole, coloured by the network, which has never trained on them. With
# random classifier weights, expect beta's result: such a classifier hardly tells photos apart, its
# 1000 probabilities all close to 1/1000 whatever the photo (see the top-5 above), so the embedding
# is nearly the same for every photo and adds nothing the network can use. With ImageNet weights, the
# embedding starts to help once the network has seen enough photos of each kind of scene: thousands,
# not the 7 samples (see `full/README.md`).
#
# As in beta, we keep the epoch with the lowest validation loss (early stopping): `ModelCheckpoint`
# saved its weights, and loading them into the colouriser updates the complete model too.

# %%
train_loss, val_loss = history["loss"][-1], history["val_loss"][-1]
print(f"last epoch: training loss {train_loss:.5f}   validation loss {val_loss:.5f}   "
      f"predicting grey {grey_loss:.5f}")
colorizer.load_weights(out_dir / "best.weights.h5")  # the epoch with the lowest validation loss
best_epoch = history["val_loss"].index(min(history["val_loss"])) + 1
best_val_loss = history["val_loss"][best_epoch - 1]
verdict = "better" if best_val_loss < grey_loss else "WORSE"
print(f"kept epoch {best_epoch} of {len(history['loss'])}: validation loss {best_val_loss:.5f}, {verdict} "
      f"than predicting grey ({best_val_loss / grey_loss:.2f}x its loss)")
colored = coloring.colorize(complete, rgbs)  # l -> ab with the complete model, as the colorize command does
columns = {"black and white (input)": [lab.grey_rgb(rgb) for rgb in rgbs], "colorized": colored,
           "original": rgbs}
plots.save_columns(out_dir / "result.png", columns, names)
if not meaningful:
    print(random_weights_warning("this run's fusion carried no meaning"))

# %% [markdown]
# ## Saving: one model that colours a photo on its own
# `OUT_DIR/model.keras` holds the complete model, with the best epoch's weights: one input, `l`, and
# both networks inside. The `colorize` and `evaluate` commands use it like alpha's or beta's, with one
# `--model` argument, and `keras.saving.load_model` loads it once `colorlab.lab` is imported (for
# `GreySRGB`). It is as big as the classifier: about 250 MB with Inception-ResNet-v2.

# %%
plots.save_loss_curve(
    out_dir / "loss.png", {"training": history["loss"], "validation": history["val_loss"]},
    {"predict grey (validation)": grey_loss}, title="full: loss per epoch",
)
training.save_model(complete, out_dir / "model.keras")
metrics = {
    "train_loss": train_loss, "val_loss": val_loss, "grey_val_loss": grey_loss,
    "epochs": len(history["loss"]), "best_val_loss": best_val_loss, "best_epoch": best_epoch,
    "seconds": seconds, "train_photos": len(train.paths), "validation_photos": len(validation.paths),
    "skipped_files": len({**train.skipped, **validation.skipped, **cache.skipped}),
    "classifier": CLASSIFIER, "classifier_weights": weights_used, "embedding_meaningful": meaningful,
    "classifier_fingerprint": fingerprint, "embedding_seconds": embedding_seconds,
    "embeddings_computed": cache.computed, "embeddings_from_cache": cache.hits,
    "backend": keras.backend.backend(),
}
files.write_json(out_dir / "metrics.json", metrics)
files.write_json(out_dir / "settings.json", config)
print(f"wrote classifier_input.png, result.png, loss.png, model.keras, metrics.json and settings.json "
      f"to {out_dir}")
files.unlock(out_dir)  # the run is over: other runs may use OUT_DIR, even while this kernel lives

# %% [markdown]
# ## Exercises
# Each says which setting shows its point, what to expect, and how long it took on a 2-core CPU shared
# with other jobs (load average 6 to 12, several times a quiet machine's). The runs below use
# `--CLASSIFIER=mobilenet_v3_small --CLASSIFIER_WEIGHTS=None`, the smallest classifier (built in
# about 20 s here), and `--IMAGE_SIZE=32`; each gets its own `--OUT_DIR`. What needs the ImageNet weights or
# Imagenette needs the internet once, and was not measured here: the text says so.
#
# 1. **Does fusion help?** Train beta and full on the same photos with the same settings (a few
#    hundred Imagenette photos: `python data/download.py`), full with `CLASSIFIER_WEIGHTS=imagenet`,
#    then compare them with `python -m colorlab.commands.evaluate` on the same validation photos. Then
#    train full with `CLASSIFIER_WEIGHTS=None`: is the difference the classifier's knowledge, or only
#    the bigger network? The second half was measured on the sample photos, `--IMAGE_SIZE=32
#    --EPOCHS=10` for both stages (6 minutes for full here): full with random weights keeps a best
#    validation loss of 0.0089 (0.64x predicting grey's 0.0139), beta 0.0080 (0.57x), from the same
#    crops. The bigger network alone does not help.
# 2. **The 2017 defect.** In `classifier_input` above, delete the `Rescaling(255.0)` line. Run the
#    check cell: what does it say, and why? Remove the `assert`, change `RECIPE` (or the cache hands
#    back the embeddings of the correct input: why is it the recipe, and not the code, that keys the
#    cache?), and train with ImageNet weights. What are the top-5 guesses now? Measured up to the check
#    (2 minutes here): the first classifier it checks, Inception-ResNet-v2, now receives values in
#    [-1.00, -0.99] instead of [-0.97, 0.51], 192 grey levels away from its `preprocess_input`, and
#    the `assert` stops the run. The top-5 guesses need the ImageNet weights.
# 3. **Fusion, checked.** Build the 2017 fusion from the trained layers: a `Conv2D(256, 1)` whose kernel
#    stacks `fusion_features`' kernel (256 x 256) on `fusion_embedding`'s (1000 x 256), applied to the
#    features concatenated with the embedding repeated at every place. Compare its output with the
#    `fusion` layer's. How many numbers does each way hold in memory for a 1024 x 768 photo? Measured
#    after one training step (`--EPOCHS=1 --STEPS_PER_EPOCH=1`, 5 minutes here, mostly start-up): the
#    two outputs differ by at most 8e-9, float rounding. At 1/8 of 1024 x 768 there are 12,288 places:
#    the 2017 way holds 12,288 x 1,256 = 15.4 million numbers, ours 12,288 x 256 = 3.1 million, plus
#    256 for the embedding's part.
# 4. **Cost.** Time `cache.get` on 100 photos for each `CLASSIFIER`, then once more (all cached).
#    How many epochs of training would computing the embedding in every batch cost instead? Measured
#    on the 7 sample photos, with an empty `EMBEDDING_CACHE` each time (random weights compute as fast
#    as ImageNet's; 2 to 4 minutes a classifier here): the first `cache.get` took 17 s
#    (`mobilenet_v3_small`), 24 s (`inception_v3`), 30 s (`resnet50`), 38 s (`efficientnet_b0`) and
#    64 s (`inception_resnet_v2`), building the classifier's graph included; the second, 0.02 to 0.34 s.
#    In every batch instead: one batch of 8 crops through the classifier took 0.33 s, 4.1 s, 4.9 s,
#    1.8 s and 10.9 s, against 2.2 s for a whole training step of full at `--IMAGE_SIZE=32`.
# 5. **Crop or photo?** Compute the embedding of each training crop instead of each photo (hint: call
#    `embed` in a `keras.utils.PyDataset` of your own). Does the validation loss improve enough to pay
#    for it? The price is exercise 4's: with `inception_resnet_v2`, 10.9 s of classifier for each
#    2.2 s step, an epoch about 6 times as long. Whether it pays needs the ImageNet weights (with
#    random ones every embedding is alike), so that half was not measured here.
# 6. **Probabilities or features?** The 1000 probabilities are a narrow summary: most are near 0.
#    Build the classifier with `include_top=False, pooling="avg"` (1536 features for
#    Inception-ResNet-v2) and fuse those instead. Which carries more useful information for colour?
#    Building it takes a while: Inception-ResNet-v2 without its top, 1536 features, took 2.5 minutes
#    here (`mobilenet_v3_small`: 576 features, 20 s). Which carries more needs the ImageNet weights, so
#    it was not measured here.
