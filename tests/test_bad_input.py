"""Whatever learners feed colorlab: every file of the corpus (tests/corpus.py) is used or refused in one
line naming it; folder runs go on past bad files and list them at the end; bad settings of every stage
stop, in one line, before any long work starts."""

import csv
import io
import json
import runpy
import sys
import tarfile

import keras
import numpy as np
import pytest
from keras import layers

from colorlab import UserError, colorize, data, download, evaluate, images, settings, training
from conftest import ROOT
from corpus import bad, corpus, good  # noqa: F401  (corpus is a fixture)

SIZES = {  # (height, width) of each good photo as stored, upright
    "good-1.jpg": (48, 64), "good-2.png": (64, 48), "one-pixel.png": (1, 1), "small.png": (12, 20),
    "wide.png": (20, 10000), "sixteen-bit.png": (16, 24), "cmyk.jpg": (30, 40), "palette-transparent.png": (32, 32),
    "grey.jpg": (30, 40), "animated.gif": (24, 32), "my photos/été à Zürich 東京.jpg": (40, 48),
    "folder.jpg/inside.png": (40, 40),
}


def one_line(message):
    return "\n" not in str(message) and "Traceback" not in str(message)


def listed(text, path, problem):
    """Whether ``text`` has a line ``  <path>: <reason>`` whose reason holds ``problem``."""
    return any(line.startswith(f"  {path}: ") and problem in line for line in text.splitlines())


# ----------------------------------------------------------------------------------------------------
# The loader


def test_every_file_of_the_corpus_loads_or_fails_in_one_line_naming_it(corpus):
    folder, cases = corpus
    assert sorted(SIZES) == good(cases)
    for name in good(cases):
        rgb = images.load(folder / name)
        assert rgb.shape == (*SIZES[name], 3) and rgb.dtype == np.float32, name
        assert 0 <= rgb.min() and rgb.max() <= 1, name
        crop = images.load(folder / name, 16, side="shorter")  # as training loads it: the crop fits
        assert min(crop.shape[:2]) == 16, name
    assert images.load(folder / "wide.png", 16, side="shorter").shape == (16, 8000, 3)
    assert images.load(folder / "one-pixel.png", 16).shape == (16, 16, 3)  # scaled up
    for name in bad(cases):
        for size in (None, 16):
            with pytest.raises(images.ImageError) as caught:
                images.load(folder / name, size)
            message = str(caught.value)
            assert message.startswith(f"{folder / name}: ") and cases[name].problem in message, message
            assert one_line(message)


def test_folder_listing_finds_every_photo_and_never_follows_a_link_loop(corpus):
    folder, cases = corpus
    found = [p.relative_to(folder).as_posix() for p in images.list_images(folder)]
    assert found == sorted(cases), "every photo and every bad file named like one, nothing else, once each"


def test_scaling_a_photo_past_the_safe_size_is_refused(tmp_path):
    images.save(tmp_path / "strip.png", np.ones((1, 2000, 3)))  # a 2000x1 strip: 400 pixels high is 800000 wide
    with pytest.raises(images.ImageError, match=r"strip.png: refused: .* would have 800000x400 pixels, more than"):
        images.load(tmp_path / "strip.png", 400, side="shorter")
    assert images.load(tmp_path / "strip.png", 16, side="shorter").shape == (16, 32000, 3)


# ----------------------------------------------------------------------------------------------------
# colorize and evaluate on the corpus folder


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    """A tiny l -> ab model with three stride-2 layers, as the stages build them."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((None, None, 1)),
        layers.Conv2D(4, 3, strides=8, padding="same", activation="relu"),
        layers.UpSampling2D(8),
        layers.Conv2D(2, 3, padding="same", activation="tanh"),
    ])
    path = tmp_path_factory.mktemp("model") / "model.keras"
    model.save(path)
    return path


def test_colorize_colours_every_good_photo_of_the_corpus_and_lists_the_bad_ones_at_the_end(corpus, model_path, tmp_path,
                                                                                            capsys):
    folder, cases = corpus
    out = tmp_path / "out"
    status = colorize.main([str(folder), "--model", str(model_path), "--out", str(out), "--size", "32", "--batch", "3"])
    captured = capsys.readouterr()
    assert status == 1
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == sorted(name.rsplit(".", 1)[0] + ".png" for name in good(cases))
    for name in good(cases):
        rgb = images.load(out / (name.rsplit(".", 1)[0] + ".png"))
        assert rgb.shape[:2] == SIZES[name], name  # the photo's own size, whatever it was
    summary = captured.out[captured.out.index(f"{len(good(cases))} colourised, 0 skipped, {len(bad(cases))} failed:"):]
    for name in bad(cases):  # listed at the end, one line each, with the reason
        assert listed(summary, folder / name, cases[name].problem), name
        assert f"failed: {folder / name}: " in captured.err  # and as they were met
    assert "Traceback" not in captured.err

    # Named one by one, bad files fail the same way; a folder named like a photo is searched.
    names = [str(folder / n) for n in ("notes.jpg", "loop.jpg", "folder.jpg", "empty.png")]
    status = colorize.main(names + ["--model", str(model_path), "--out", str(tmp_path / "one"), "--size", "32"])
    captured = capsys.readouterr()
    assert status == 1 and "1 colourised, 0 skipped, 3 failed:" in captured.out
    assert (tmp_path / "one" / "inside.png").is_file()


def test_evaluate_scores_every_good_photo_of_the_corpus_and_lists_the_bad_ones(corpus, model_path, tmp_path, capsys):
    folder, cases = corpus
    status = evaluate.main([str(folder), "--model", str(model_path), "--size", "32", "--out", str(tmp_path / "eval")])
    captured = capsys.readouterr()
    assert status == 1 and "Traceback" not in captured.err
    with open(tmp_path / "eval" / "metrics.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["photo"] for r in rows) == sorted(str(folder / n) for n in good(cases))
    for row in rows:
        name = row["photo"][len(str(folder)) + 1 :]
        assert (int(row["height"]), int(row["width"])) == SIZES[name]
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["photos"] == len(good(cases))
    assert len(summary["failed"]) == len(bad(cases))
    for name in bad(cases):
        assert listed("\n".join("  " + f for f in summary["failed"]), folder / name, cases[name].problem), name
    assert all(np.isfinite(v) for v in summary["mean"]["model"].values())  # the 1x1 photo's SSIM left out, not NaN
    tail = captured.out[captured.out.index(f"{len(bad(cases))} of {len(cases)} photos failed:"):]
    for name in bad(cases):
        assert listed(tail, folder / name, cases[name].problem), name


def test_training_batches_from_the_corpus_skip_the_bad_files(corpus, capsys):
    folder, cases = corpus
    train, validation = data.from_folder(folder, 16, 4, 8, 0.25, seed=1, workers=2, verbose=False)
    for epoch in range(2):  # 64 crops: every training photo is drawn
        train.set_epoch(epoch)
        for i in range(len(train)):
            l, ab = train[i]
            assert l.shape == (4, 16, 16, 1) and np.isfinite(ab).all()
    for i in range(len(validation)):
        validation[i]
    skipped = {**train.skipped, **validation.skipped}
    assert sorted(skipped) == sorted(str(folder / n) for n in bad(cases))
    printed = capsys.readouterr().out
    assert all(printed.count(f"skipped {folder / n}: ") == 1 for n in bad(cases))  # reported once each


# ----------------------------------------------------------------------------------------------------
# data/download.py: an archive of a learner's photos, and bad settings


def test_download_unpacks_an_archive_of_the_corpus_as_it_is(corpus, tmp_path, monkeypatch):
    folder, cases = corpus
    archive = tmp_path / "photos.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="photos")
    dest = download.fetch(archive.as_uri(), tmp_path / "data" / "photos", progress=False)
    for name in good(cases):
        assert (dest / name).read_bytes() == (folder / name).read_bytes()
    train, validation = data.from_folder(dest, 16, 2, 2, 0.25, verbose=False)  # the stages then skip what is bad
    assert len(train.paths) + len(validation.paths) == len(cases)


@pytest.mark.parametrize("args, message", [
    (["--URL=imagenette.tgz"], "--URL must be a web address (https://...) or a file:///path/to/archive, got 'imagenette.tgz'"),
    (["--URL=None"], "--URL must be a web address"),
    (["--MD5=12345"], "--MD5 must be 32 hexadecimal digits"),
    (["--RETRIES=-1"], "RETRIES must be 0 or more, got -1"),
    (["--TIMEOUT=0"], "TIMEOUT must be a positive number of seconds, got 0"),
    (["--TIMEOUT=soon"], "--TIMEOUT expects float (like 60.0), got 'soon'"),
    (["--DEST=README.md"], "README.md: DEST is a file, not a folder"),
    (["--URL=file:///no/such/archive.tgz", "--MD5=None"], "cannot download file:///no/such/archive.tgz"),
    (["--URL={zip}", "--MD5=None"], "a zip archive; this script unpacks tar archives"),
    (["--KEEP=True"], "unknown setting --KEEP; valid settings: URL, MD5, DEST, KEEP_ARCHIVE"),
])
def test_download_settings_mistakes_are_one_line(args, message, tmp_path, monkeypatch):
    zipped = tmp_path / "photos.zip"
    import zipfile

    with zipfile.ZipFile(zipped, "w") as z:
        z.writestr("photos/a.txt", "x")
    args = [a.replace("{zip}", zipped.as_uri()) for a in args]
    with pytest.raises(UserError) as caught:
        run_stage(monkeypatch, "data/download.py", f"--DEST={tmp_path / 'dest'}", *args)
    assert message in str(caught.value) and one_line(caught.value)
    assert not (tmp_path / "dest").exists()


# ----------------------------------------------------------------------------------------------------
# Bad settings of every stage: one line, before the photos are read or training starts


def run_stage(monkeypatch, script, *args):
    """Run a stage file in this process, as ``python script args`` would, so that a mistake costs no start-up."""
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "argv", [script, *map(str, args)])
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)  # settings.apply installs its own
    monkeypatch.setattr(settings, "in_notebook", lambda: False)
    return runpy.run_path(str(ROOT / script), run_name="__main__")


class Started(Exception):
    """Raised by the sentinels: the stage went further than a mistake should let it."""


@pytest.fixture
def sentinels(monkeypatch):
    """Make reading the photos or training raise Started, when a mistake must stop the stage before."""
    def arm(before):
        def training_started(*args, **kwargs):
            raise Started("training started")

        monkeypatch.setattr(keras.Model, "fit", training_started)
        if before == "photos":
            def photos_read(*args, **kwargs):
                raise Started("photos were read")

            monkeypatch.setattr(data, "from_folder", photos_read)
            monkeypatch.setattr(images, "load", photos_read)
    return arm


@pytest.fixture(scope="module")
def other_runs(tmp_path_factory, corpus):
    """OUT_DIRs of other kinds: an alpha run (no checkpoint), a checkpoint of another network."""
    root = tmp_path_factory.mktemp("runs")
    (root / "alpha").mkdir()
    for name in ("model.keras", "result.png", "settings.json"):
        (root / "alpha" / name).write_bytes(b"an alpha result")
    beta_names = {name: None for name in ("DATA", "IMAGE_SIZE", "ZOOM", "BATCH_SIZE", "STEPS_PER_EPOCH", "EPOCHS",
                                          "VALIDATION_FRACTION", "LEARNING_RATE", "WORKERS", "MIXED_PRECISION",
                                          "JIT_COMPILE", "SEED", "OUT_DIR", "OVERWRITE", "RESUME")}
    train = data.Photos([ROOT / "data" / "samples" / "chelsea.jpg"], 8, 2, 1)
    # Checkpoints of another network: one of a stage with other settings ("gan"), one of the beta stage, and
    # one with beta's settings but written from a notebook, where the stage is unknown ("mismatch").
    for name, names, stage in (("other", {"GENERATOR": "unet", "EPOCHS": 1}, "gan"), ("beta", beta_names, "beta"),
                               ("mismatch", beta_names, None)):
        model = keras.Sequential([keras.Input((None, None, 1)), layers.Conv2D(2, 3, padding="same")])
        model.compile(optimizer="adam", loss="mse")
        training.fit(model, train, epochs=1, out_dir=root / name, settings=names, verbose=0)
        state = json.loads((root / name / "checkpoint" / "state.json").read_text())
        (root / name / "checkpoint" / "state.json").write_text(json.dumps({**state, "stage": stage}))
    only_bad = root / "only_bad"
    only_bad.mkdir()
    folder, cases = corpus
    for name in ("notes.jpg", "empty.png", "truncated.jpg", "bomb.png"):
        (only_bad / name).write_bytes((folder / name).read_bytes())
    return root


ALPHA = [
    (["--EPOCH=5"], "photos", "unknown setting --EPOCH; valid settings: IMAGE, IMAGE_SIZE, EPOCHS"),
    (["--EPOCHS=ten"], "photos", "--EPOCHS expects int (like 1000), got 'ten'"),
    (["--EPOCHS=2.5"], "photos", "--EPOCHS expects int (like 1000), got '2.5'"),
    (["--EPOCHS=-3"], "photos", "EPOCHS must be at least 1, got -3"),
    (["--IMAGE_SIZE=0"], "photos", "IMAGE_SIZE must be a positive number of pixels, got 0"),
    (["--LEARNING_RATE=0"], "photos", "LEARNING_RATE must be positive, got 0.0"),
    (["--SEED=-1"], "photos", "SEED must be between 0 and 2**32 - 1, got -1"),
    (["--OVERWRITE=yes"], "photos", "--OVERWRITE expects bool (like False), got 'yes'"),
    (["--IMAGE_SIZE=100000"], "training", "astronaut.jpg: refused: scaled to 100000 pixels on its longer side"),
    (["--IMAGE=no/such/photo.jpg"], "training", "no/such/photo.jpg: no such file"),
    (["--IMAGE={corpus}/notes.jpg"], "training", "notes.jpg: not an image"),
    (["--IMAGE={corpus}/loop.jpg"], "training", "loop.jpg: symbolic link loop"),
    (["--IMAGE={corpus}/folder.jpg"], "training", "folder.jpg: is a folder, not a photo"),
    (["--IMAGE={corpus}/bomb.png"], "training", "bomb.png: refused: Image size (10000000000 pixels) exceeds limit"),
    (["--OUT_DIR={runs}/alpha"], "training", "alpha already holds the results of an earlier run: pass --OVERWRITE=True"),
    (["--OUT_DIR={runs}/alpha/model.keras"], "training", "model.keras: OUT_DIR is a file, not a folder"),
]

BETA = [
    (["--EPOCH=5"], "photos", "unknown setting --EPOCH; valid settings: DATA, IMAGE_SIZE, ZOOM"),
    (["--BATCH_SIZE=8.5"], "photos", "--BATCH_SIZE expects int (like 8), got '8.5'"),
    (["--EPOCHS=-1"], "photos", "EPOCHS must be at least 1, got -1"),
    (["--IMAGE_SIZE=12"], "photos", "IMAGE_SIZE must be a positive multiple of 8, got 12"),
    (["--IMAGE_SIZE=4"], "photos", "IMAGE_SIZE must be a positive multiple of 8, got 4"),
    (["--IMAGE_SIZE=-8"], "photos", "IMAGE_SIZE must be a positive multiple of 8, got -8"),
    (["--VALIDATION_FRACTION=1"], "photos", "VALIDATION_FRACTION must be between 0 and 1, got 1.0"),
    (["--ZOOM=0.5"], "photos", "ZOOM must be at least 1"),
    (["--SEED=-1"], "photos", "SEED must be between 0 and 2**32 - 1, got -1"),
    (["--RESUME=True", "--OUT_DIR={runs}/alpha"], "photos", "nothing to resume: {runs}/alpha holds no training run"),
    (["--RESUME=True", "--OUT_DIR={runs}/missing"], "photos", "nothing to resume: {runs}/missing holds no training run"),
    (["--DATA=no/such/folder"], "training", "no/such/folder: no such folder"),
    (["--DATA=README.md"], "training", "README.md: is a file, not a folder"),
    (["--DATA={runs}/only_bad"], "training", "only_bad: no readable photo for training among"),
    (["--OUT_DIR={runs}/alpha"], "training", "alpha already holds the results of an earlier run: pass --OVERWRITE=True"),
    (["--RESUME=True", "--OUT_DIR={runs}/other"], "photos",
     "other/checkpoint: a checkpoint of the gan stage (it has settings GENERATOR this one has not); resume it with its own stage"),
    # The same settings, another network: found when the checkpoint is loaded, still before training.
    (["--RESUME=True", "--OUT_DIR={runs}/mismatch", "--DATA=data/samples"], "training",
     "epoch-0001.weights.h5: cannot load this checkpoint into the model ("),
]


FULL = [
    (["--CLASIFIER=resnet50"], "photos", "unknown setting --CLASIFIER; valid settings: DATA, IMAGE_SIZE"),
    (["--CLASSIFIER=vgg16"], "photos", "unknown CLASSIFIER 'vgg16'; choose one of: inception_resnet_v2"),
    (["--EPOCHS=0"], "photos", "EPOCHS must be at least 1, got 0"),
    (["--IMAGE_SIZE=20"], "photos", "IMAGE_SIZE must be a positive multiple of 8, got 20"),
    (["--LEARNING_RATE=-0.1"], "photos", "LEARNING_RATE must be positive, got -0.1"),
    (["--SEED=-1"], "photos", "SEED must be between 0 and 2**32 - 1, got -1"),
    (["--EMBEDDING_CACHE=README.md"], "photos", "EMBEDDING_CACHE must be a folder; README.md is a file"),
    (["--RESUME=True", "--OUT_DIR={runs}/alpha"], "photos", "nothing to resume: {runs}/alpha holds no training run"),
    (["--RESUME=True", "--OUT_DIR={runs}/beta"], "photos",
     "beta/checkpoint: a checkpoint of the beta stage (it lacks settings CLASSIFIER, CLASSIFIER_WEIGHTS, EMBEDDING_CACHE)"),
    (["--DATA={runs}/only_bad"], "training", "only_bad: no readable photo for training among"),
    (["--OUT_DIR={runs}/alpha"], "training", "alpha already holds the results of an earlier run: pass --OVERWRITE=True"),
]


GAN = [
    (["--LAMDA=10"], "photos", "unknown setting --LAMDA; valid settings: DATA, COLOR_SPACE, IMAGE_SIZE"),
    (["--DEPTH=three"], "photos", "--DEPTH expects int (like 5), got 'three'"),
    (["--EPOCHS=-2"], "photos", "EPOCHS must be at least 1, got -2"),
    (["--IMAGE_SIZE=48", "--DEPTH=5"], "photos", "IMAGE_SIZE must be a positive multiple of 2**DEPTH = 32, got 48"),
    (["--IMAGE_SIZE=16", "--DEPTH=3"], "photos", "IMAGE_SIZE must be at least 24 for a discriminator with D_LAYERS=3, got 16"),
    (["--COLOR_SPACE=hsv"], "photos", "COLOR_SPACE must be one of lab, yuv, got 'hsv'"),
    (["--WARMUP_EPOCHS=5", "--EPOCHS=2"], "photos", "WARMUP_EPOCHS must be between 0 and EPOCHS (2), got 5"),
    (["--RESUME=True", "--OUT_DIR={runs}/other"], "photos", "other/checkpoint: a checkpoint of the gan stage"),
    (["--SEED=-1"], "photos", "SEED must be between 0 and 2**32 - 1, got -1"),
    (["--RESUME=True", "--OUT_DIR={runs}/alpha"], "photos", "nothing to resume: {runs}/alpha holds no training run"),
    (["--RESUME=True", "--OUT_DIR={runs}/beta"], "photos", "beta/checkpoint: a checkpoint of the beta stage (it lacks settings BETA_1, COLOR_SPACE"),
    (["--DATA={runs}/only_bad"], "training", "only_bad: no readable photo for training among"),
    (["--OUT_DIR={runs}/alpha"], "training", "alpha already holds the results of an earlier run: pass --OVERWRITE=True"),
]


@pytest.mark.parametrize("script, args, before, message",
                         [("alpha/train.py", *case) for case in ALPHA] + [("beta/train.py", *case) for case in BETA]
                         + [("full/train.py", *case) for case in FULL] + [("gan/train.py", *case) for case in GAN])
def test_stage_mistakes_stop_in_one_line_before_long_work(script, args, before, message, corpus, other_runs, tmp_path,
                                                          monkeypatch, sentinels):
    folder, _ = corpus
    fill = {"{corpus}": str(folder), "{runs}": str(other_runs)}
    for key, value in fill.items():
        args = [a.replace(key, value) for a in args]
        message = message.replace(key, value)
    def files():  # "mismatch" resumed: the stage may write into it (batch.png) before it loads the checkpoint
        return {p: p.stat().st_mtime_ns for p in other_runs.rglob("*") if "mismatch" not in p.parts}

    before_files = files()
    sentinels(before)
    size = ["--IMAGE_SIZE=24", "--DEPTH=3", "--WARMUP_EPOCHS=1"] if script.startswith("gan") else ["--IMAGE_SIZE=16"]
    tiny = [f"--OUT_DIR={tmp_path / 'out'}", "--EPOCHS=1", *size]
    with pytest.raises(UserError) as caught:
        run_stage(monkeypatch, script, *tiny, *args)
    assert message in str(caught.value) and one_line(caught.value), str(caught.value)
    assert not (tmp_path / "out").exists()  # nothing written, nothing started
    assert files() == before_files  # earlier runs untouched

