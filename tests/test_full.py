"""The full stage: the classifier sees what it expects, embeddings are cached safely, fusion fits any size."""

import json
import shutil

import keras
import numpy as np
import pytest
from keras import ops
from PIL import Image

from colorlab import UserError, classifiers, data, embeddings, fusion, images, lab, training
from conftest import ROOT, run_python

SAMPLES = ["astronaut", "chelsea", "coffee", "rocket"]


def sample(name):
    return ROOT / "data" / "samples" / f"{name}.jpg"


# ----------------------------------------------------------------------------------------------------
# What the classifier receives


class Spy(keras.layers.Layer):
    """Stands in for a classifier: records the tensor it is fed, returns its mean per channel."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def call(self, x):
        self.seen.append(ops.convert_to_numpy(x))
        return ops.mean(x, axis=(1, 2))

    def compute_output_shape(self, shape):
        return (shape[0], shape[-1])


def fed_to_classifier(name, l):
    spy = Spy()
    classifiers.embedder(spy, name)(l)  # eagerly, so the spy sees real values
    assert len(spy.seen) == 1
    return spy.seen[0]


@pytest.mark.parametrize("name", ["inception_resnet_v2", "resnet50", "mobilenet_v3_small"])
def test_the_classifier_receives_its_documented_input_range(name):
    recipe = classifiers.CLASSIFIERS[name]
    low, high = recipe.input_range
    ramp = np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(1, 64, 64, 1)  # black to white
    x = fed_to_classifier(name, ramp)
    assert x.shape == (1, recipe.size, recipe.size, 3)  # resized to the classifier's size, three channels
    assert x.min() == pytest.approx(low, abs=0.01 * (high - low))  # black reaches the bottom of the range
    assert x.max() == pytest.approx(high, abs=0.01 * (high - low))  # and white the top
    # A real grey photo spreads over most of the range. The 2017 defect (0-1 values into a preprocessing
    # that expects 0-255) squeezed every photo into 1/255 of it, around one end.
    l, _ = lab.rgb_to_l_ab(images.load(sample("astronaut"), 128))
    x = fed_to_classifier(name, l[None])
    assert x.min() >= low - 1e-3 and x.max() <= high + 1e-3
    assert x.max() - x.min() > 0.6 * (high - low)


def test_the_classifier_input_is_the_grey_photo_preprocessed_as_keras_documents():
    # Reference: the black-and-white photo in sRGB (scikit-image's Lab maths), x255, preprocess_input.
    rgb = images.load(sample("chelsea"))[:299, :299]  # 299x299: no resizing, so only the pixel values compare
    l, ab = lab.rgb_to_l_ab(rgb)
    reference = keras.applications.inception_resnet_v2.preprocess_input(lab.l_ab_to_rgb(l, np.zeros_like(ab)) * 255.0)
    x = fed_to_classifier("inception_resnet_v2", l[None])[0]
    np.testing.assert_allclose(x, reference, atol=2e-3)  # [-1, 1]: 2e-3 is a quarter of one 0-255 step
    assert np.ptp(x[..., 0] - x[..., 2]) == 0  # grey: three equal channels


def test_caffe_preprocessing_gets_bgr_minus_the_imagenet_mean():
    black = np.zeros((1, 32, 32, 1), np.float32)
    x = fed_to_classifier("resnet50", black)
    np.testing.assert_allclose(x[0, 0, 0], [-103.939, -116.779, -123.68], atol=1e-3)


@pytest.fixture(scope="module")
def resnet():
    """ResNet-50 with random weights: the smallest keras.applications classifier whose random outputs vary."""
    keras.utils.set_random_seed(0)
    model, used = classifiers.load("resnet50", None, announce=lambda message: None)
    assert used is None
    return model, classifiers.embedder(model, "resnet50")


def test_different_photos_give_different_embeddings_and_the_2017_scaling_would_not(resnet):
    model, embed = resnet
    ls = np.stack([embeddings.classifier_l(sample(name), 224) for name in SAMPLES])
    vectors = embed.predict_on_batch(ls)
    assert vectors.shape == (4, 1000) and np.allclose(vectors.sum(axis=1), 1, atol=1e-4)  # probabilities
    distances = [np.abs(vectors[i] - vectors[j]).sum() for i in range(4) for j in range(i)]
    # The 2017 way: grey in [0, 1] (not 0-255) into the same preprocessing and classifier.
    recipe = classifiers.CLASSIFIERS["resnet50"]
    grey01 = ops.repeat(classifiers.grey_srgb(ls), 3, axis=-1)
    old = model.predict_on_batch(recipe.preprocess(grey01))
    old_distances = [np.abs(old[i] - old[j]).sum() for i in range(4) for j in range(i)]
    assert min(distances) > 0.02  # measured: 0.06 to 1.3 (L1 distance between probability vectors)
    assert min(distances) > 100 * max(old_distances)  # measured: at most 1e-5 the 2017 way


def test_the_saved_recipe_and_the_cache_see_the_same_photo(resnet, tmp_path):
    _, embed = resnet
    cache = embeddings.Cache(tmp_path, embed.predict_on_batch, "resnet50", "fp")
    cached = cache.get([sample("chelsea")], verbose=False)[0]
    l, _ = lab.rgb_to_l_ab(images.load(sample("chelsea"), 224))  # 224x149: any size goes into the embedder
    np.testing.assert_allclose(embed.predict_on_batch(l[None])[0], cached, atol=1e-5)


# ----------------------------------------------------------------------------------------------------
# Choosing and loading the classifier


def test_unknown_classifier_lists_the_choices():
    with pytest.raises(UserError, match="unknown CLASSIFIER 'inception'; choose one of: inception_resnet_v2, "):
        classifiers.load("inception", None)


@pytest.fixture
def offline(monkeypatch):
    """MobileNetV3Small as if there were no internet: asking for ImageNet weights fails as Keras does."""
    real = keras.applications.MobileNetV3Small

    def fake(*args, weights="imagenet", **kwargs):
        if weights == "imagenet":
            raise Exception("URL fetch failure on https://storage.googleapis.com/...: None -- [Errno -2] Name or service not known")
        return real(*args, weights=weights, **kwargs)

    monkeypatch.setattr(keras.applications, "MobileNetV3Small", fake)


def test_a_failed_download_is_one_message_naming_the_setting(offline):
    with pytest.raises(UserError) as caught:
        classifiers.load("mobilenet_v3_small", "imagenet")
    message = str(caught.value)
    assert "\n" not in message and "CLASSIFIER_WEIGHTS" in message and "URL fetch failure" in message


def test_auto_falls_back_to_random_weights_loudly(offline):
    said = []
    model, used = classifiers.load("mobilenet_v3_small", "auto", announce=said.append)
    assert used is None and model.output.shape == (None, 1000)
    assert len(said) == 1 and "RANDOM weights" in said[0] and "NO meaning" in said[0] and "URL fetch failure" in said[0]


def test_weights_from_a_file_and_the_fingerprint_follows_the_weights(tmp_path):
    keras.utils.set_random_seed(1)
    original, _ = classifiers.load("mobilenet_v3_small", None, announce=lambda m: None)
    path = tmp_path / "mine.weights.h5"
    original.save_weights(path)
    loaded, used = classifiers.load("mobilenet_v3_small", str(path))
    assert used == str(path)
    assert classifiers.fingerprint(loaded) == classifiers.fingerprint(original)
    keras.utils.set_random_seed(2)
    other, _ = classifiers.load("mobilenet_v3_small", None, announce=lambda m: None)
    assert classifiers.fingerprint(other) != classifiers.fingerprint(original)
    weights = loaded.get_layer("logits").get_weights()
    weights[1][0] += 1e-3  # one bias of one class
    loaded.get_layer("logits").set_weights(weights)
    assert classifiers.fingerprint(loaded) != classifiers.fingerprint(original)


def test_a_bad_weights_file_is_one_message(tmp_path):
    with pytest.raises(UserError, match="no such file; CLASSIFIER_WEIGHTS must be"):
        classifiers.load("mobilenet_v3_small", str(tmp_path / "missing.weights.h5"))
    junk = tmp_path / "junk.weights.h5"
    junk.write_bytes(b"not an HDF5 file")
    with pytest.raises(UserError, match="cannot load these weights into mobilenet_v3_small"):
        classifiers.load("mobilenet_v3_small", str(junk))


def test_top_guesses_offline_show_class_numbers_with_a_note(monkeypatch):
    def no_internet(*args, **kwargs):
        raise Exception("URL fetch failure on https://storage.googleapis.com/.../imagenet_class_index.json")

    monkeypatch.setattr(keras.applications.inception_resnet_v2, "decode_predictions", no_internet)
    probabilities = np.full(1000, 0.5 / 998, np.float32)
    probabilities[[7, 42]] = [0.3, 0.2]
    guesses, note = classifiers.top_guesses(probabilities, "inception_resnet_v2", top=2)
    assert guesses == [("class 7", pytest.approx(0.3)), ("class 42", pytest.approx(0.2))]
    assert "imagenet_class_index.json" in note and "internet" in note


# ----------------------------------------------------------------------------------------------------
# Fusion


@pytest.mark.parametrize("height, width", [(1, 1), (3, 5), (16, 9), (40, 40)])
def test_repeat_over_grid_copies_the_vector_to_every_place(height, width):
    vector = np.random.default_rng(0).normal(size=(2, 1000)).astype(np.float32)
    features = np.zeros((2, height, width, 256), np.float32)
    grid = ops.convert_to_numpy(fusion.RepeatOverGrid()([vector, features]))
    assert grid.shape == (2, height, width, 1000)
    np.testing.assert_array_equal(grid, np.broadcast_to(vector[:, None, None], grid.shape))


def test_fusion_block_takes_any_size_and_survives_saving(tmp_path):
    embedding = keras.Input(shape=(1000,), name="embedding")
    features = keras.Input(shape=(None, None, 256), name="features")
    grid = fusion.RepeatOverGrid()([embedding, features])
    mixed = keras.layers.Conv2D(256, 1, activation="relu")(keras.layers.Concatenate()([features, grid]))
    model = keras.Model([embedding, features], mixed)
    assert tuple(model.output.shape) == (None, None, None, 256)
    model.save(tmp_path / "fusion.keras")
    reloaded = keras.saving.load_model(tmp_path / "fusion.keras")
    rng = np.random.default_rng(0)
    for height, width in [(2, 3), (8, 8), (5, 13)]:
        inputs = [rng.random((2, 1000), np.float32), rng.random((2, height, width, 256), np.float32)]
        out = ops.convert_to_numpy(reloaded(inputs))
        assert out.shape == (2, height, width, 256)
        np.testing.assert_allclose(out, ops.convert_to_numpy(model(inputs)), atol=1e-5)


# ----------------------------------------------------------------------------------------------------
# The embedding cache


class CountingEmbed:
    """A stand-in classifier: a cheap 8-number summary of each l, and a count of the photos it saw."""

    def __init__(self):
        self.photos = 0

    def __call__(self, ls):
        self.photos += len(ls)
        quarters = [ls[:, :112, :112], ls[:, :112, 112:], ls[:, 112:, :112], ls[:, 112:, 112:]]
        return np.stack([q.mean(axis=(1, 2, 3)) for q in quarters] + [q.std(axis=(1, 2, 3)) for q in quarters], axis=1)


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in SAMPLES:
        shutil.copy(sample(name), folder / f"{name}.jpg")
    return [folder / f"{name}.jpg" for name in SAMPLES]


def cache_for(tmp_path, embed, classifier="mobilenet_v3_small", fingerprint="weights-1"):
    return embeddings.Cache(tmp_path / "cache", embed, classifier, fingerprint, batch_size=3)


def test_a_cache_hit_returns_the_same_vector_without_the_classifier(tmp_path, photos):
    embed = CountingEmbed()
    cache = cache_for(tmp_path, embed)
    first = cache.get(photos, verbose=False)
    assert cache.computed == 4 and embed.photos > 0 and first.shape == (4, 8) and np.isfinite(first).all()
    assert len({tuple(row) for row in first}) == 4  # four photos, four embeddings
    again = CountingEmbed()
    cache = cache_for(tmp_path, again)  # a new run: only the files on disk are shared
    np.testing.assert_array_equal(cache.get(photos, verbose=False), first)
    assert again.photos == 0 and cache.hits == 4 and cache.computed == 0
    moved = tmp_path / "elsewhere.jpg"
    photos[0].rename(moved)  # the key is the content, not the name
    np.testing.assert_array_equal(cache.get([moved], verbose=False)[0], first[0])
    assert again.photos == 0
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file() and ".tmp-" in p.name]  # no temp files left


def test_a_changed_photo_classifier_or_weights_recomputes(tmp_path, photos):
    embed = CountingEmbed()
    first = cache_for(tmp_path, embed).get(photos, verbose=False)
    rgb = images.load(photos[1])
    images.save(photos[1], rgb[:, ::-1])  # the photo, mirrored: same name, new content
    cache = cache_for(tmp_path, embed)
    second = cache.get(photos, verbose=False)
    assert cache.computed == 1 and cache.hits == 3  # only the changed photo
    np.testing.assert_array_equal(second[[0, 2, 3]], first[[0, 2, 3]])
    assert not np.array_equal(second[1], first[1])
    cache = cache_for(tmp_path, embed, classifier="efficientnet_b0")
    cache.get(photos, verbose=False)
    assert cache.computed == 4  # another classifier: nothing reused
    cache = cache_for(tmp_path, embed, fingerprint="weights-2")
    cache.get(photos, verbose=False)
    assert cache.computed == 4  # other weights: nothing reused


def corrupt_truncated(path, other):
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


def corrupt_garbage(path, other):
    path.write_bytes(b"\x00garbage" * 100)


def corrupt_values(path, other):  # a well-formed file whose vector no longer matches its checksum
    with np.load(path) as stored:
        fields = {key: stored[key] for key in stored.files}
    fields["embedding"] = fields["embedding"] + 0.5
    with open(path, "wb") as out:
        np.savez(out, **fields)


def corrupt_foreign(path, other):  # a sound file, but another photo's
    shutil.copy(other, path)


@pytest.mark.parametrize("damage", [corrupt_truncated, corrupt_garbage, corrupt_values, corrupt_foreign])
def test_a_corrupt_cache_file_is_recomputed_not_trusted(tmp_path, photos, damage):
    embed = CountingEmbed()
    cache = cache_for(tmp_path, embed)
    first = cache.get(photos, verbose=False)
    files = [cache.file(embeddings.photo_hash(p)) for p in photos]
    damage(files[2], files[3])
    cache = cache_for(tmp_path, embed)
    np.testing.assert_array_equal(cache.get(photos, verbose=False), first)
    assert cache.computed == 1 and cache.corrupt == 1
    embed.photos = 0
    cache_for(tmp_path, embed).get(photos, verbose=False)
    assert embed.photos == 0  # the recomputed file replaced the bad one


def test_unreadable_and_duplicate_photos(tmp_path, photos):
    broken = photos[0].with_name("broken.jpg")
    broken.write_bytes(photos[0].read_bytes()[:300])
    twin = photos[1].with_name("twin.jpg")
    shutil.copy(photos[1], twin)
    embed = CountingEmbed()
    cache = cache_for(tmp_path, embed)
    vectors = cache.get([broken, *photos, twin], verbose=False)
    assert cache.computed == 4  # the twin is the same content: computed once
    assert np.isnan(vectors[0]).all() and str(broken) in cache.skipped
    np.testing.assert_array_equal(vectors[5], vectors[2])


def test_a_photo_saved_differently_is_a_different_photo(tmp_path, photos):
    # The key is the file's bytes: the same picture re-encoded is recomputed (correct, if not minimal).
    embed = CountingEmbed()
    cache_for(tmp_path, embed).get(photos[:1], verbose=False)
    Image.open(photos[0]).save(photos[0], quality=50)
    cache = cache_for(tmp_path, embed)
    cache.get(photos[:1], verbose=False)
    assert cache.computed == 1


# ----------------------------------------------------------------------------------------------------
# The stage, run as a learner runs it (a small classifier with random weights: tests never download)

TINY = ["--IMAGE_SIZE=32", "--BATCH_SIZE=4", "--STEPS_PER_EPOCH=4", "--EPOCHS=3", "--WORKERS=1",
        "--CLASSIFIER=mobilenet_v3_small", "--CLASSIFIER_WEIGHTS=None"]


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("full")
    result = run_python("full/train.py", *TINY, f"--EMBEDDING_CACHE={tmp / 'cache'}", f"--OUT_DIR={tmp / 'out'}")
    assert result.returncode == 0, result.stderr[-3000:]
    return tmp, result.stdout


def test_full_stage_trains_and_says_loudly_that_random_weights_mean_nothing(full_run):
    tmp, stdout = full_run
    metrics = json.loads((tmp / "out" / "metrics.json").read_text())
    loss = metrics["history"]["loss"]
    assert len(loss) == 3 and loss[-1] < 0.8 * loss[0]  # it learns (measured: 0.099 -> 0.032)
    assert np.isfinite(metrics["val_loss"]) and metrics["grey_val_loss"] > 0
    assert metrics["classifier"] == "mobilenet_v3_small" and metrics["classifier_weights"] is None
    assert metrics["embedding_meaningful"] is False
    assert metrics["embeddings_computed"] == 7 and metrics["embeddings_from_cache"] == 0  # 7 photos, once each
    assert stdout.count("RANDOM weights") >= 2 and "MEANINGLESS" in stdout  # at the start and at the end
    assert "the classifier receives values in [" in stdout and "top-5 guesses" in stdout
    out = tmp / "out"
    assert {"result.png", "loss.png", "classifier_input.png", "model.keras", "metrics.json", "settings.json",
            "checkpoint", "grids"} <= {p.name for p in out.iterdir()}
    assert sorted(p.name for p in (out / "grids").iterdir()) == ["epoch-0001.png", "epoch-0002.png", "epoch-0003.png"]
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]  # every write completed
    assert json.loads((out / "settings.json").read_text())["CLASSIFIER_WEIGHTS"] is None


def test_the_saved_model_needs_only_l_and_matches_the_trained_colouriser(full_run):
    tmp, _ = full_run
    complete = keras.saving.load_model(tmp / "out" / "model.keras")
    assert len(complete.inputs) == 1 and tuple(complete.inputs[0].shape) == (None, None, None, 1)
    embed = complete.get_layer("embedder")  # the classifier, inside the model
    trained = keras.models.clone_model(complete.get_layer("colouriser"))  # (l, embedding) -> ab, new weights
    trained.compile(optimizer=keras.optimizers.Adam(), loss="mse")
    state = training.load_checkpoint(trained, tmp / "out" / "checkpoint")
    assert state["epoch"] == 3
    assert training.restore_best(trained, tmp / "out") == state["best_epoch"]  # the saved model is the best epoch
    rng = np.random.default_rng(0)
    for height, width in [(8, 8), (24, 16), (40, 56)]:
        l = rng.random((2, height, width, 1), dtype=np.float32)
        ab = ops.convert_to_numpy(complete(l))
        assert ab.shape == (2, height, width, 2) and np.abs(ab).max() <= 1
        embedding = ops.convert_to_numpy(embed(l))
        np.testing.assert_allclose(ab, ops.convert_to_numpy(trained([l, embedding])), atol=1e-5)


def test_colorize_and_evaluate_take_the_full_model_alone(full_run):
    tmp, _ = full_run
    model = tmp / "out" / "model.keras"
    code = (  # a fresh process: nothing of the full stage is imported before the tools load the model
        "import sys; from colorlab import colorize, evaluate; "
        f"sys.exit(colorize.main(['data/samples/chelsea.jpg', '--model', r'{model}', '--out', r'{tmp / 'colourised'}']) "
        f"or evaluate.main(['data/samples/coffee.jpg', '--model', r'{model}', '--out', r'{tmp / 'evaluation'}']))"
    )
    result = run_python("-c", code)
    assert result.returncode == 0, result.stderr[-3000:]
    rgb = images.load(tmp / "colourised" / "chelsea.png")
    assert rgb.shape == images.load(sample("chelsea")).shape
    summary = json.loads((tmp / "evaluation" / "summary.json").read_text())
    assert summary["photos"] == 1 and np.isfinite(summary["mean"]["model"]["ciede2000"])


def test_fusion_lets_the_embedding_decide_the_colour(full_run):
    # Two kinds of photo with the same lightness statistics, one reddish, one greenish: only the
    # embedding tells them apart. The stage's network (fresh weights) must learn to use it.
    tmp, _ = full_run
    colouriser = keras.saving.load_model(tmp / "out" / "model.keras").get_layer("colouriser")
    keras.utils.set_random_seed(0)
    model = keras.models.clone_model(colouriser)  # the stage's two-input network, new random weights
    rng = np.random.default_rng(0)
    kind = rng.integers(2, size=32)
    l = rng.random((32, 16, 16, 1), dtype=np.float32)
    ab = np.broadcast_to(np.where(kind, 0.3, -0.3)[:, None, None, None], (32, 16, 16, 2)).astype(np.float32)
    embedding = np.zeros((32, 1000), np.float32)
    embedding[np.arange(32), kind] = 1.0
    model.compile(optimizer=keras.optimizers.Adam(0.001), loss="mse")
    history = model.fit([l, embedding], ab, batch_size=16, epochs=15, verbose=0).history["loss"]
    blind = float(np.mean((ab - ab.mean()) ** 2))  # the best any colour-blind-to-the-embedding model does: 0.09
    assert history[-1] < 0.1 * blind, history
    answer = ops.convert_to_numpy(model([l[:2], embedding[[1, 0]]]))  # the same l with the other embedding
    assert np.sign(answer.mean(axis=(1, 2, 3))).tolist() == np.sign(np.where(kind[[1, 0]], 0.3, -0.3)).tolist()


def test_a_second_run_reads_every_embedding_from_the_cache(full_run):
    tmp, _ = full_run
    result = run_python("full/train.py", *TINY, "--EPOCHS=4", "--RESUME=True",
                        f"--EMBEDDING_CACHE={tmp / 'cache'}", f"--OUT_DIR={tmp / 'out'}")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp / "out" / "metrics.json").read_text())
    assert metrics["embeddings_computed"] == 0 and metrics["embeddings_from_cache"] == 7
    assert metrics["epochs"] == 4 and len(metrics["history"]["loss"]) == 4  # resumed: 3 + 1



# ----------------------------------------------------------------------------------------------------
# Batches with embeddings


@pytest.mark.parametrize("random", [True, False])
def test_each_crop_comes_with_the_embedding_of_its_own_photo(tmp_path, random):
    # Eight flat grey photos, each of its own lightness; photo 3 is unreadable (replaced by another),
    # photo 5 readable but without an embedding.
    paths = []
    for i in range(8):
        path = tmp_path / f"photo{i}.png"
        Image.new("RGB", (40, 30), (20 + 30 * i,) * 3).save(path)
        paths.append(path)
    paths[3].write_bytes(b"not a png")
    lightness = [float(lab.rgb_to_l_ab(np.full((1, 1, 3), (20 + 30 * i) / 255, np.float32))[0].item()) for i in range(8)]
    vectors = np.eye(8, dtype=np.float32)  # photo i's "embedding" names it
    vectors[5] = np.nan  # as the cache leaves a photo it could not read: the photo must never be used
    photos = data.Photos(paths, image_size=16, batch_size=5, steps=6 if random else None, random=random,
                         seed=1, workers=2)
    embedded = embeddings.EmbeddedPhotos.attach(photos, vectors)
    assert len(embedded) == len(photos) and embedded.paths == photos.paths
    seen = set()
    for index in range(len(embedded)):
        (l, rows), ab = embedded[index]
        np.testing.assert_array_equal(l, photos[index][0])  # the same crops as the dataset it wraps
        assert rows.shape == (len(l), 8) and ab.shape == (len(l), 16, 16, 2)
        for crop, row in zip(l, rows):
            photo = int(np.argmax(row))
            assert photo not in (3, 5) and abs(float(crop.mean()) - lightness[photo]) < 1e-3  # the crop is of that photo
            seen.add(photo)
    assert len(seen) >= 5 and str(paths[3]) in embedded.skipped and str(paths[5]) in embedded.skipped
