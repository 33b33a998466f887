"""The full stage: run as a learner runs it (a small classifier with random weights: tests never download),
what its classifier receives, its fusion, its saved model, and the embedding cache."""

import json
import re
import shutil

import keras
import numpy as np
import pytest

from colorlab import UserError, coloring, embeddings, images, lab  # lab registers GreySRGB
from conftest import ROOT, run_python, run_stage

SAMPLES = ROOT / "data" / "samples"
TINY = ["--CLASSIFIER=mobilenet_v3_small", "--CLASSIFIER_WEIGHTS=None", "--IMAGE_SIZE=32", "--EPOCHS=2",
        "--BATCH_SIZE=4", "--STEPS_PER_EPOCH=4", "--WORKERS=1"]


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("full")
    result = run_python("full/train.py", *TINY, f"--EMBEDDING_CACHE={tmp / 'cache'}",
                        f"--OUT_DIR={tmp / 'out'}")
    assert result.returncode == 0, result.stderr[-3000:]
    return tmp / "out", result.stdout, keras.saving.load_model(tmp / "out" / "model.keras")


@pytest.mark.slow
def test_full_trains_on_l_and_embedding_pairs_and_says_loudly_that_random_weights_mean_nothing(full_run):
    out, stdout, _ = full_run
    assert {"classifier_input.png", "result.png", "loss.png", "model.keras", "best.weights.h5", "history.csv",
            "metrics.json", "settings.json"} <= {p.name for p in out.iterdir()}
    assert sorted(p.name for p in (out / "grids").iterdir()) == ["epoch-0001.png", "epoch-0002.png"]
    assert "a batch: ((l (4, 32, 32, 1), embedding (4, 1000)), ab (4, 32, 32, 2))" in stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["classifier"] == "mobilenet_v3_small" and metrics["classifier_weights"] is None
    assert metrics["embedding_meaningful"] is False and "MEANINGLESS" in stdout
    assert stdout.count("has RANDOM weights") == 2  # when the classifier is loaded, and again at the end
    assert metrics["embeddings_computed"] == 7 and metrics["embeddings_from_cache"] == 0  # each photo once
    # It learned something: the kept epoch beats predicting grey on photos it never trained on
    # (measured 0.7x).
    assert metrics["best_val_loss"] < 0.9 * metrics["grey_val_loss"], metrics


@pytest.mark.slow
def test_the_saved_model_takes_l_alone_and_colors_a_photo(full_run):
    _, _, model = full_run  # loaded with only colorlab imported
    assert len(model.inputs) == 1 and tuple(model.inputs[0].shape) == (None, None, None, 1)
    # the classifier
    assert model.get_layer("embedder").get_layer("MobileNetV3Small").count_params() == 2_554_968
    rgb = images.load(SAMPLES / "chelsea.jpg", 64)
    colored = coloring.colorize(model, [rgb])[0]
    assert colored.shape == rgb.shape
    l, ab = lab.rgb_to_l_ab(colored)
    np.testing.assert_allclose(l, lab.rgb_to_l_ab(rgb)[0], atol=0.02)  # the photo's own lightness
    assert np.abs(ab).mean() > 0.005  # and colour that the grey photo has not


@pytest.mark.slow
def test_the_classifier_receives_its_preprocess_input_of_the_0_255_grey(full_run):
    _, stdout, model = full_run
    to_classifier = model.get_layer("embedder").get_layer("classifier_input")
    rgb = images.load(SAMPLES / "chelsea.jpg")[:224, :224]  # the classifier's size: no resizing
    l, _ = lab.rgb_to_l_ab(rgb)
    seen = keras.ops.convert_to_numpy(to_classifier(l[None]))[0]
    # 0-255 in, 0-255 out
    expected = keras.applications.mobilenet_v3.preprocess_input(lab.grey_rgb(rgb) * 255.0)
    # half a grey level; the 2017 input (0-1) is 100s off
    np.testing.assert_allclose(seen, expected, atol=0.5)
    assert seen.max() > 100  # measured 219
    # The stage checks the other classifiers' input layers the same way, against their own preprocess_input.
    checked = dict(re.findall(r"^  (\w+) +\[.*largest difference ([\d.]+) grey levels$", stdout, re.M))
    assert set(checked) == {"inception_resnet_v2", "inception_v3", "resnet50", "efficientnet_b0",
                            "mobilenet_v3_small"}
    assert all(float(levels) < 0.5 for levels in checked.values()), checked
    assert re.search(r"the 2017 way: \[[\d.]+, [\d.]+\], 0\.\d% of the range", stdout)


@pytest.mark.slow
def test_fusion_is_a_1x1_convolution_over_the_features_and_the_embedding_at_every_place(full_run):
    _, _, model = full_run
    colorizer = model.get_layer("colorizer")  # the colouriser's layers, (l, embedding) -> ab
    fusion = keras.Model(colorizer.input, [colorizer.get_layer("fusion_features").input,
                                            colorizer.get_layer("fusion").output])
    rng = np.random.default_rng(0)
    l, embedding = rng.random((2, 40, 24, 1), np.float32), rng.random((2, 1000), np.float32)
    features, fused = (keras.ops.convert_to_numpy(x) for x in fusion((l, embedding)))
    assert features.shape == (2, 5, 3, 256) and fused.shape == (2, 5, 3, 256)
    kernel_f, bias = colorizer.get_layer("fusion_features").get_weights()
    (kernel_e,) = colorizer.get_layer("fusion_embedding").get_weights()
    kernel = np.concatenate([kernel_f[0, 0], kernel_e])  # (1256, 256): the 2017 1x1 convolution's kernel
    # the embedding copied to every place
    repeated = np.broadcast_to(embedding[:, None, None], (2, 5, 3, 1000))
    expected = np.maximum(np.concatenate([features, repeated], axis=-1) @ kernel + bias, 0)
    np.testing.assert_allclose(fused, expected, rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------------------------------
# Mistakes: one line, before anything is written


@pytest.mark.parametrize("setting, error", [
    ("--CLASSIFIER=inception", "error: unknown CLASSIFIER 'inception'; choose one of: inception_resnet_v2, "),
    ("--CLASSIFIER_WEIGHTS=missing.weights.h5",
     "error: CLASSIFIER_WEIGHTS=missing.weights.h5: no such file; "),
])
def test_a_bad_classifier_setting_is_one_line(tmp_path, monkeypatch, setting, error):
    with pytest.raises(UserError) as raised:  # which a terminal prints as one line (test_settings.py)
        run_stage(monkeypatch, "full/train.py", setting, f"--OUT_DIR={tmp_path / 'out'}")
    assert f"{raised.value.prefix}{raised.value}".startswith(error) and "\n" not in str(raised.value)
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------------------------------
# The embedding cache


class CountingEmbed:
    """A stand-in classifier: a cheap 4-number summary of each l, and a count of the photos it saw."""

    def __init__(self):
        self.photos = 0

    def __call__(self, ls):
        self.photos += len(ls)
        return np.stack([ls.mean(axis=(1, 2, 3)), ls.std(axis=(1, 2, 3)), ls[:, :16].mean(axis=(1, 2, 3)),
                         ls[:, :, :16].mean(axis=(1, 2, 3))], axis=1)


@pytest.fixture
def photos(tmp_path):
    (tmp_path / "photos").mkdir()
    names = ["astronaut.jpg", "chelsea.jpg", "coffee.jpg"]
    for name in names:
        shutil.copy(SAMPLES / name, tmp_path / "photos" / name)
    return [tmp_path / "photos" / name for name in names]


def cache(tmp_path, embed, fingerprint="weights-1", recipe="v1", classifier="mobilenet_v3_small"):
    return embeddings.Cache(tmp_path / "cache", embed, 32, classifier, fingerprint, recipe, batch_size=2)


def test_the_cache_computes_each_photo_once_and_finds_it_again_by_content(tmp_path, photos):
    first = cache(tmp_path, embed := CountingEmbed()).get(photos, verbose=False)
    # 2 batches of 2 (one padded)
    assert first.shape == (3, 4) and np.isfinite(first).all() and embed.photos == 4
    again = cache(tmp_path, embed := CountingEmbed())  # a new run: only the files are shared
    moved = photos[0].rename(tmp_path / "renamed.jpg")
    np.testing.assert_array_equal(again.get([moved, *photos[1:]], verbose=False), first)
    assert embed.photos == 0 and again.hits == 3 and again.computed == 0
    # every write completed
    assert not [p for p in (tmp_path / "cache").rglob("*") if ".colorlab-tmp" in p.name]


@pytest.mark.parametrize("change", [{"fingerprint": "weights-2"}, {"recipe": "v2"},
                                    {"classifier": "resnet50"}])
def test_other_weights_recipe_or_classifier_recompute(tmp_path, photos, change):
    cache(tmp_path, CountingEmbed()).get(photos, verbose=False)
    other = cache(tmp_path, CountingEmbed(), **change)
    other.get(photos, verbose=False)
    assert other.computed == 3 and other.hits == 0


def test_the_fingerprint_follows_the_weights():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    before = embeddings.fingerprint(model)
    assert embeddings.fingerprint(model) == before
    kernel, bias = model.get_weights()
    model.set_weights([kernel, bias + 1e-6])  # one tiny change
    assert embeddings.fingerprint(model) != before


def truncate(path, other):
    path.write_bytes(path.read_bytes()[:100])


def tamper(path, other):  # a well-formed file whose vector no longer matches its checksum
    with np.load(path) as stored:
        fields = {key: stored[key] for key in stored.files}
    fields["embedding"] = fields["embedding"] + 0.5
    with open(path, "wb") as file:
        np.savez(file, **fields)


def foreign(path, other):  # a sound file, but another photo's
    shutil.copy(other, path)


@pytest.mark.parametrize("damage", [truncate, tamper, foreign])
def test_a_damaged_cache_file_is_recomputed_not_trusted(tmp_path, photos, damage):
    first = cache(tmp_path, CountingEmbed()).get(photos, verbose=False)
    stored = [cache(tmp_path, None).file(embeddings.photo_hash(p)) for p in photos]
    damage(stored[1], stored[2])
    second = cache(tmp_path, embed := CountingEmbed())
    np.testing.assert_array_equal(second.get(photos, verbose=False), first)
    assert second.damaged == 1 and second.computed == 1 and embed.photos == 2  # one photo, in a padded batch
    third = cache(tmp_path, CountingEmbed())
    third.get(photos, verbose=False)
    assert third.hits == 3  # the recomputed file replaced the damaged one


def test_an_unreadable_photo_gets_a_nan_row_and_a_reason(tmp_path, photos):
    broken = tmp_path / "photos" / "broken.jpg"
    broken.write_bytes(photos[0].read_bytes()[:300])
    twin = shutil.copy(photos[1], tmp_path / "photos" / "twin.jpg")
    found = cache(tmp_path, CountingEmbed())
    vectors = found.get([broken, *photos, twin], verbose=False)
    assert np.isnan(vectors[0]).all() and "truncated" in found.skipped[str(broken)].lower()
    # the twin has the same content: computed once
    assert found.computed == 3 and np.isfinite(vectors[1:]).all()
    np.testing.assert_array_equal(vectors[4], vectors[2])
