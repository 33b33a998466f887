"""Bad settings and bad files given to the stages: each stops in one line that names the setting or the file,
before any long work starts (reading the photos, training), and nothing of the user's is touched.

The stages run in this process (conftest.run_stage), so a mistake costs no start-up; that a UserError is
printed as one line, with exit status 1, from a terminal is tested in test_settings.py."""

import struct
import zlib

import keras
import pytest
from PIL import Image

from colorlab import UserError, data, files, images
from colorlab.files import unlock
from conftest import ROOT, run_stage

SAMPLE = ROOT / "data" / "samples" / "chelsea.jpg"


def one_line(message):
    return "\n" not in str(message) and "Traceback" not in str(message)


def png_chunk(kind, body):
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    """A folder of files named like photos that are not usable ones."""
    folder = tmp_path_factory.mktemp("bad")
    (folder / "notes.jpg").write_text("my shopping list")
    (folder / "empty.png").write_bytes(b"")
    (folder / "truncated.jpg").write_bytes(SAMPLE.read_bytes()[:3000])
    (folder / "loop.jpg").symlink_to(folder / "loop.jpg")
    (folder / "dangling.jpg").symlink_to(folder / "gone.jpg")
    (folder / "folder.jpg").mkdir()
    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)  # 10 gigapixels, in a 70-byte file
    chunks = png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(b"")) + png_chunk(b"IEND", b"")
    (folder / "bomb.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunks)
    return folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """OUT_DIRs as earlier runs, and the user's own folders, left them."""
    root = tmp_path_factory.mktemp("runs")
    state = "backup/training_metadata.json"

    def folder(name, stage, contents):
        path = root / name
        if stage:
            files.prepare_out_dir(path, stage)
            unlock(path)
        path.mkdir(exist_ok=True)
        for relative, content in contents.items():
            (path / relative).parent.mkdir(parents=True, exist_ok=True)
            (path / relative).write_bytes(content)

    folder("alpha", "alpha", {"model.keras": b"a model", "result.png": b"a png", "settings.json": b"{}"})
    folder("gan", "gan", {"backup/latest.weights.h5": b"w", state: b'{"epoch": 1, "batch": 0}'})
    folder("killed", "beta", {"batch.png": b"killed in its first epoch"})
    folder("damaged", "beta", {"backup/latest.weights.h5": b"w", state: b'{"epoch": "1"}'})
    folder("users", None, {"logs/important.log": b"mine", "model.keras": b"my model", "notes.txt": b"mine"})
    folder("empty", None, {})
    return root


class Started(Exception):
    """Raised by the sentinels: the stage went further than a mistake should let it."""


@pytest.fixture
def sentinels(monkeypatch):
    """Make reading the photos (``before=PHOTOS``) or training (``before=TRAINING``) raise Started."""

    def arm(before):
        def started(*args, **kwargs):
            raise Started(f"the stage went on to {before}")

        monkeypatch.setattr(keras.Model, "fit", started)
        if before == PHOTOS:
            monkeypatch.setattr(data, "from_folder", started)
            monkeypatch.setattr(images, "load", started)
            monkeypatch.setattr(images, "load_8bit", started)

    return arm


PHOTOS = "photos"  # a bad setting stops the stage before it reads a photo
TRAINING = "training"  # a bad photo, DATA or OUT_DIR stops it before it trains

ALPHA = [
    ("--EPOCH=5", PHOTOS, "unknown setting --EPOCH; valid settings: IMAGE, IMAGE_SIZE, EPOCHS, LEARNING_"),
    ("--EPOCHS=ten", PHOTOS, "--EPOCHS expects int (like 1000), got 'ten'"),
    ("--EPOCHS=0", PHOTOS, "EPOCHS must be at least 1, got 0"),
    ("--IMAGE_SIZE=0", PHOTOS, "IMAGE_SIZE must be between 1 and 8192 pixels, got 0"),
    ("--IMAGE_SIZE=100000", PHOTOS, "IMAGE_SIZE must be between 1 and 8192 pixels, got 100000"),
    ("--LEARNING_RATE=0", PHOTOS, "LEARNING_RATE must be positive, got 0.0"),
    ("--LEARNING_RATE=1e999", PHOTOS, "LEARNING_RATE must be a finite number, got inf"),
    ("--SEED=-1", PHOTOS, "SEED must be between 0 and 2**32 - 1, got -1"),
    ("--OVERWRITE=yes", PHOTOS, "--OVERWRITE expects bool (like False), got 'yes'"),
    ("--IMAGE=no/such/photo.jpg", TRAINING, "no/such/photo.jpg: no such file"),
    ("--IMAGE={bad}/notes.jpg", TRAINING, "notes.jpg: not an image, or in a format Pillow cannot read"),
    ("--IMAGE={bad}/empty.png", TRAINING, "empty.png: empty file (0 bytes)"),
    ("--IMAGE={bad}/truncated.jpg", TRAINING,
     "truncated.jpg: cannot decode the image, it is truncated or corrupt"),
    ("--IMAGE={bad}/loop.jpg", TRAINING, "loop.jpg: symbolic link loop"),
    ("--IMAGE={bad}/dangling.jpg", TRAINING, "dangling.jpg: broken symbolic link"),
    ("--IMAGE={bad}/folder.jpg", TRAINING, "folder.jpg: is a folder, not a photo"),
    ("--IMAGE={bad}/bomb.png", TRAINING, "bomb.png: refused: Image size (10000000000 pixels) exceeds limit"),
    ("--OUT_DIR={runs}/alpha", TRAINING,
     "{runs}/alpha already holds the results of an earlier alpha run: --OVERWRITE=True replaces them, or "
     "choose another OUT_DIR"),
    ("--OUT_DIR={runs}/alpha/model.keras", TRAINING, "model.keras: OUT_DIR is a file, not a folder"),
    ("--OUT_DIR={runs}/users --OVERWRITE=True", TRAINING,
     "{runs}/users holds files that no colorlab run wrote (logs/important.log, model.keras, notes.txt)"),
    ("--OUT_DIR=", TRAINING, "OUT_DIR is '', the current folder: give a folder of its own"),
    ("--OUT_DIR=data", TRAINING, "which holds more than a run's results"),
]


BETA = [
    ("--EPOCH=5", PHOTOS, "unknown setting --EPOCH; valid settings: DATA, IMAGE_SIZE, ZOOM"),
    ("--BATCH_SIZE=8.5", PHOTOS, "--BATCH_SIZE expects int (like 8), got '8.5'"),
    ("--EPOCHS=-1", PHOTOS, "EPOCHS must be at least 1, got -1"),
    ("--IMAGE_SIZE=12", PHOTOS, "IMAGE_SIZE must be a multiple of 8 (three stride-2 layers), got 12"),
    ("--IMAGE_SIZE=-8", PHOTOS, "IMAGE_SIZE must be between 1 and 8192 pixels, got -8"),
    ("--IMAGE_SIZE=4096", TRAINING, "IMAGE_SIZE=4096 with ZOOM=1.3 asks for photos of up to"),
    ("--VALIDATION_FRACTION=1", PHOTOS, "VALIDATION_FRACTION must be between 0 and 1, got 1.0"),
    ("--ZOOM=0.5", PHOTOS, "ZOOM must be between 1 (no zoom) and 8, got 0.5"),
    ("--ZOOM=1e999", PHOTOS, "ZOOM must be a finite number, got inf"),
    ("--SEED=-1", PHOTOS, "SEED must be between 0 and 2**32 - 1, got -1"),
    ("--WORKERS=0", PHOTOS, "WORKERS must be at least 1, got 0"),
    ("--DATA=no/such/folder", TRAINING, "no/such/folder: no such folder"),
    ("--DATA=README.md", TRAINING, "README.md: is a file, not a folder"),
    ("--DATA={runs}/empty", TRAINING, "empty: no photos found"),
    ("--DATA={bad}", TRAINING, "no readable photo for training among"),
    ("--OUT_DIR={runs}/alpha", TRAINING,
     "{runs}/alpha already holds the results of an earlier alpha run: --OVERWRITE=True replaces them, "
     "--RESUME=True continues it, or choose another OUT_DIR"),
    ("--OUT_DIR={runs}/users --OVERWRITE=True", TRAINING,
     "{runs}/users holds files that no colorlab run wrote"),
    ("--OUT_DIR={runs}/users --RESUME=True", TRAINING, "{runs}/users holds files that no colorlab run wrote"),
    ("--OUT_DIR=", TRAINING,
     "OUT_DIR is '', the current folder: give a folder of its own, such as outputs/run1"),
    ("--OUT_DIR=data/samples", TRAINING, "which holds more than a run's results"),
    ("--RESUME=True --OUT_DIR={runs}/alpha", TRAINING,
     "nothing to resume: {runs}/alpha holds no checkpoint of a beta run (no backup/ folder); check OUT_DIR, "
     "or start a new run without --RESUME=True"),
    ("--RESUME=True --OUT_DIR={runs}/killed", TRAINING,
     "nothing to resume: {runs}/killed holds no checkpoint"),
    ("--RESUME=True --OUT_DIR={runs}/gan", TRAINING,
     "{runs}/gan holds a run of the gan stage: resume it with that stage, or check OUT_DIR"),
    ("--RESUME=True --OUT_DIR={runs}/damaged", TRAINING,
     "training_metadata.json: not a checkpoint state that Keras wrote; cannot resume from it"),
    ("--RESUME=True --OUT_DIR={runs}/missing", TRAINING,
     "nothing to resume: {runs}/missing"),
]

SHARED = [  # full and gan are being rewritten: only the settings every stage shares
    ("--EPOCHS=0", PHOTOS, "EPOCHS must be at least 1, got 0"),
    ("--SEED=-1", PHOTOS, "SEED must be between 0 and 2**32 - 1, got -1"),
]


def cases(script, table):
    for args, before, message, *marks in table:
        yield pytest.param(script, args.split(" "), before, message, marks=marks,
                           id=f"{script.split('/')[0]}:{args}")


@pytest.mark.parametrize("script, args, before, message", [
    *cases("alpha/train.py", ALPHA), *cases("beta/train.py", BETA), *cases("full/train.py", SHARED),
    *cases("gan/train.py", SHARED)])
def test_stage_mistakes_stop_in_one_line_before_long_work(script, args, before, message, bad, runs, tmp_path,
                                                          monkeypatch, sentinels):
    for key, value in {"{bad}": str(bad), "{runs}": str(runs)}.items():
        args = [a.replace(key, value) for a in args]
        message = message.replace(key, value)

    def snapshot():
        found = (*runs.rglob("*"), *bad.iterdir())
        return {p: p.stat().st_mtime_ns for p in found if p.is_file() and not p.is_symlink()}

    before_files = snapshot()
    sentinels(before)
    tiny = [f"--OUT_DIR={tmp_path / 'out'}", "--EPOCHS=1", "--IMAGE_SIZE=16"]
    try:
        with pytest.raises(UserError) as caught:
            run_stage(monkeypatch, script, *tiny, *args)
    except ImportError as error:  # a stage in the middle of its rewrite (full, gan): not this test's subject
        pytest.skip(f"{script} does not import: {error}")
    assert message in str(caught.value) and one_line(caught.value), str(caught.value)
    assert not (tmp_path / "out").exists()  # nothing written, nothing started
    assert snapshot() == before_files  # earlier runs and the user's files untouched
    assert not (ROOT / files.MARK).exists()


def test_a_second_beta_run_leaves_out_the_pictures_of_its_out_dir_inside_data(tmp_path, monkeypatch,
                                                                               sentinels, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    for sample in sorted((ROOT / "data" / "samples").glob("*.jpg"))[:4]:
        (photos / sample.name).write_bytes(sample.read_bytes())
    out = photos / "out"
    files.prepare_out_dir(out, "beta")
    unlock(out)
    for name in ("result.png", "batch.png", "grids/epoch-0001.png"):  # an earlier run's pictures
        (out / name).parent.mkdir(exist_ok=True)
        Image.open(ROOT / "data" / "samples" / "coffee.jpg").save(out / name)
    sentinels(TRAINING)
    with pytest.raises(Started):
        run_stage(monkeypatch, "beta/train.py", "--IMAGE_SIZE=16", "--EPOCHS=1", f"--DATA={photos}",
                  f"--OUT_DIR={out}", "--OVERWRITE=True")
    assert f"{photos}: 4 photos, 3 for training" in capsys.readouterr().out  # not 7
