"""What a pretrained ImageNet classifier sees in a black-and-white photo: the full stage's embedding.

The full stage tells its colouriser *what* is in the photo with the 1000 class probabilities of a
``keras.applications`` classifier. Three things must be right for that to carry any meaning, and this
module does them once, for training, ``colorize`` and ``evaluate`` alike:

1. **The classifier sees the photo it was trained on, in grey.** The lightness ``l`` becomes the sRGB
   grey of that lightness (what the black-and-white photo looks like on a screen), on the 0-255 scale,
   replicated to three channels and resized to the classifier's input size (299 pixels for
   Inception-ResNet-v2).
2. **It is preprocessed exactly as that classifier expects**: its own ``preprocess_input`` on 0-255
   values (Inception-ResNet-v2 then sees [-1, 1]; EfficientNet and MobileNet-v3 normalize inside the
   model and see 0-255). The 2017 tutorial fed 0-1 values to a preprocessing that expects 0-255: the
   classifier saw an almost constant input around -1, and its "embedding" said almost nothing.
3. **The steps are Keras layers** (:class:`ClassifierInput`), so that the classifier can be saved inside
   the colouriser and a saved model needs nothing else to colour a photo.

    classifier, used = classifiers.load("inception_resnet_v2", "imagenet")  # used: what was loaded
    embed = classifiers.embedder(classifier, "inception_resnet_v2")  # Keras model: l -> (N, 1000)

``CLASSIFIERS`` lists the classifiers a stage can choose by name; add a row to use another.
"""

import hashlib
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
from keras import ops

from colorlab import UserError


@dataclass(frozen=True)
class Classifier:
    """How to build one ``keras.applications`` classifier and feed it.

    ``constructor`` and ``module`` are names in ``keras.applications`` (the module holds its
    ``preprocess_input`` and ``decode_predictions``); ``size`` is its input side in pixels;
    ``input_range`` is what its documentation says the model receives after ``preprocess_input``.
    """

    constructor: str
    module: str
    size: int
    input_range: tuple

    def build(self, weights):
        return getattr(keras.applications, self.constructor)(
            include_top=True, weights=weights, input_shape=(self.size, self.size, 3),
            classifier_activation="softmax",
        )

    def preprocess(self, rgb255):
        """The classifier's own ``preprocess_input``, on RGB in [0, 255] (a tensor or a copy of an array)."""
        return getattr(keras.applications, self.module).preprocess_input(rgb255)


# Name -> recipe. Sizes and ranges are from each model's keras.applications documentation.
CLASSIFIERS = {
    "inception_resnet_v2": Classifier("InceptionResNetV2", "inception_resnet_v2", 299, (-1.0, 1.0)),  # 2017's choice, 56M weights
    "inception_v3": Classifier("InceptionV3", "inception_v3", 299, (-1.0, 1.0)),  # 24M weights
    "resnet50": Classifier("ResNet50", "resnet50", 224, (-123.68, 151.061)),  # "caffe": BGR, ImageNet mean subtracted
    "efficientnet_b0": Classifier("EfficientNetB0", "efficientnet", 224, (0.0, 255.0)),  # normalizes inside; 5M weights
    "mobilenet_v3_small": Classifier("MobileNetV3Small", "mobilenet_v3", 224, (0.0, 255.0)),  # normalizes inside; 2.5M, fastest
}
WEIGHTS_CHOICES = '"imagenet", "auto", a path to a weights file, or None'


def spec(name):
    """The :class:`Classifier` called ``name``; a UserError that lists the choices if there is none."""
    if name not in CLASSIFIERS:
        raise UserError(f"unknown CLASSIFIER {name!r}; choose one of: {', '.join(CLASSIFIERS)}")
    return CLASSIFIERS[name]


class WeightsUnavailable(UserError):
    """The ImageNet weights could not be downloaded (or read from Keras's cache); ``cause`` says why."""

    def __init__(self, message, cause):
        super().__init__(message)
        self.cause = cause


def load(name, weights="imagenet", announce=print):
    """Build the classifier ``name`` with ``weights``; return ``(model, used)``.

    ``weights`` is
    - ``"imagenet"``: Keras's own loading code; downloads the weights the first time (then they are in
      Keras's cache, ``~/.keras/models``). A failed download is a one-line UserError that says which
      setting to change.
    - ``"auto"``: the ImageNet weights if they can be had, else random weights, announced loudly.
    - a path to a weights file (``.weights.h5``, or the ``.h5`` files Keras downloads) for this
      classifier, with its 1000-class top.
    - ``None``: random weights. Everything runs, but the embedding means nothing.

    ``used`` says what was loaded: ``"imagenet"``, the path, or None.
    """
    recipe = spec(name)
    if weights == "auto":
        try:
            return _build(recipe, name, "imagenet"), "imagenet"
        except WeightsUnavailable as error:
            announce(random_weights_warning(name, f"CLASSIFIER_WEIGHTS=auto, and the ImageNet weights could not be loaded: {error.cause}"))
            return _build(recipe, name, None), None
    if weights is None:
        announce(random_weights_warning(name, "CLASSIFIER_WEIGHTS=None"))
        return _build(recipe, name, None), None
    if weights == "imagenet":
        return _build(recipe, name, "imagenet"), "imagenet"
    if not isinstance(weights, str):
        raise UserError(f"CLASSIFIER_WEIGHTS must be {WEIGHTS_CHOICES}; got {weights!r}")
    path = Path(weights)
    if not path.is_file():
        problem = "is a folder" if path.is_dir() else "no such file"
        raise UserError(f"{path}: {problem}; CLASSIFIER_WEIGHTS must be {WEIGHTS_CHOICES}")
    model = _build(recipe, name, None)
    try:
        model.load_weights(path)
    except Exception as error:  # Keras reports mismatched files with many exception types
        raise UserError(
            f"{path}: cannot load these weights into {name} with its 1000-class top ({_first_line(error)}); "
            f"check CLASSIFIER and CLASSIFIER_WEIGHTS"
        ) from None
    return model, str(path)


def random_weights_warning(name, reason):
    """The loud notice printed when the classifier has random weights."""
    bar = "!" * 100
    return (
        f"{bar}\n!! WARNING: the {name} classifier has RANDOM weights ({reason}).\n"
        "!! The stage runs, but the embedding it gives the colouriser carries NO meaning about what is in the photo:\n"
        "!! fusion then cannot help. For real semantic features set CLASSIFIER_WEIGHTS=imagenet (needs the internet\n"
        "!! once; Keras keeps the file in ~/.keras/models) or the path of a downloaded weights file.\n"
        f"{bar}"
    )


def _build(recipe, name, weights):
    try:
        return recipe.build(weights)
    except Exception as error:
        if weights != "imagenet":
            raise
        raise WeightsUnavailable(
            f"cannot load the ImageNet weights of {name} ({_first_line(error)}). Connect to the internet once "
            f"(Keras then keeps them in ~/.keras/models), or set CLASSIFIER_WEIGHTS to the path of a weights file, "
            f"or to None to run with random weights (the embedding then means nothing)",
            _first_line(error),
        ) from None


def fingerprint(model):
    """A SHA-256 of every weight of ``model`` (names, shapes and values): equal exactly when the weights are.

    It keys the embedding cache: new weights (another download, another file, other random ones) give
    another fingerprint, so embeddings computed with the old ones are never reused.
    """
    digest = hashlib.sha256()
    for variable in model.weights:
        value = np.ascontiguousarray(variable.numpy())
        digest.update(f"{variable.path}|{value.shape}|{value.dtype}\n".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


# ----------------------------------------------------------------------------------------------------
# From l to what the classifier expects, as Keras layers (so they are saved with a model)


def grey_srgb(l):
    """The sRGB value, in [0, 1], of the grey that has lightness ``l`` (= L / 100), with ``keras.ops``.

    This is ``colorlab.lab.l_ab_to_rgb(l, 0)`` (the black-and-white photo as a screen shows it) written
    in ``keras.ops``, so that it runs inside a model on any backend: Lab -> luminance Y -> sRGB gamma.
    """
    big_l = ops.clip(l, 0.0, 1.0) * 100.0
    fy = (big_l + 16.0) / 116.0
    y = ops.where(fy > 6.0 / 29.0, fy**3, (fy - 16.0 / 116.0) / 7.787)  # luminance; a grey has R = G = B = Y
    gamma = 1.055 * ops.power(ops.maximum(y, 0.0031308), 1.0 / 2.4) - 0.055
    return ops.clip(ops.where(y > 0.0031308, gamma, 12.92 * y), 0.0, 1.0)


def fit_l(l, size):
    """Resize a batch of l, (N, H, W, 1), to (N, size, size, 1): bilinear, antialiased when shrinking.

    The photo is squeezed to a square, as the classifier's training images were; the same call runs
    inside :class:`ClassifierInput`, so l resized here passes through it unchanged.
    """
    return ops.image.resize(l, (size, size), interpolation="bilinear", antialias=True)


@keras.saving.register_keras_serializable(package="colorlab")
class ClassifierInput(keras.layers.Layer):
    """l (N, H, W, 1) in [0, 1], any H and W -> the classifier's input (N, size, size, 3), preprocessed.

    Grey sRGB on the 0-255 scale, replicated to three channels, resized to the classifier's size, then
    the classifier's own ``preprocess_input``.
    """

    def __init__(self, classifier, **kwargs):
        super().__init__(**kwargs)
        self.classifier = classifier
        self.recipe = spec(classifier)

    def call(self, l):
        l = fit_l(ops.cast(l, "float32"), self.recipe.size)  # (N, size, size, 1)
        grey255 = grey_srgb(l) * 255.0
        rgb255 = ops.concatenate([grey255, grey255, grey255], axis=-1)  # (N, size, size, 3) in [0, 255], a new
        return self.recipe.preprocess(rgb255)  # tensor: some preprocess_input functions write in place

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.recipe.size, self.recipe.size, 3)

    def get_config(self):
        return {**super().get_config(), "classifier": self.classifier}


def embedder(classifier, name):
    """A Keras model: l (N, H, W, 1) in [0, 1], any size -> the classifier's 1000 probabilities (N, 1000)."""
    l = keras.Input(shape=(None, None, 1), name="l")
    x = ClassifierInput(name, name="classifier_input")(l)
    return keras.Model(l, classifier(x), name="embedder")


def top_guesses(probabilities, name, top=5, names=True):
    """The classifier's ``top`` guesses for one photo, as ``(label, probability)`` pairs, and a note.

    With ``names``, the labels come from ``decode_predictions``, which downloads ImageNet's class names
    the first time; offline, or without ``names`` (random weights: no point fetching them), the labels
    are class numbers, and the note, if any, says why.
    """
    probabilities = np.asarray(probabilities, dtype=np.float32).reshape(1, -1)
    if not names:
        order = np.argsort(probabilities[0])[::-1][:top]
        return [(f"class {i}", float(probabilities[0, i])) for i in order], None
    try:
        decoded = getattr(keras.applications, spec(name).module).decode_predictions(probabilities, top=top)[0]
        return [(label, float(p)) for _, label, p in decoded], None
    except Exception as error:  # offline: the class-name file (imagenet_class_index.json) cannot be fetched
        order = np.argsort(probabilities[0])[::-1][:top]
        note = (f"class names unavailable ({_first_line(error)}): showing ImageNet class numbers; "
                "they download once, with internet, to ~/.keras/models/imagenet_class_index.json")
        return [(f"class {i}", float(probabilities[0, i])) for i in order], note


def _first_line(error):
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return text if len(text) <= 200 else text[:197] + "..."
