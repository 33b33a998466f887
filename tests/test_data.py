"""The training input pipeline: what the batches hold, how they change, and what it refuses."""

import gc
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from colorlab import UserError, data, images, lab

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "data" / "samples"
# Eight clearly different colours, one per synthetic photo: a crop's mean colour tells its photo.
COLOURS = [(220, 30, 30), (30, 200, 30), (30, 30, 220), (220, 220, 30), (30, 220, 220), (220, 30, 220),
           (240, 140, 20), (120, 60, 20)]


def solid_photos(folder, count, size=(40, 30)):
    """``count`` photos of one colour each, of different kinds; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, colour in enumerate(COLOURS[:count]):
        path = folder / f"photo{i}.{('png', 'jpg', 'bmp', 'webp')[i % 4]}"
        Image.new("RGB", size, colour).save(path, **({"quality": 100} if path.suffix == ".jpg" else {}))
        paths.append(path)
    return paths


def which_colour(rgb):
    """The index in COLOURS nearest to the mean colour of an (H, W, 3) crop in [0, 1]."""
    mean = rgb.reshape(-1, 3).mean(axis=0) * 255
    return int(np.argmin([np.sum((mean - np.array(c)) ** 2) for c in COLOURS]))


def test_load_can_fit_the_shorter_side():
    rocket = SAMPLES / "rocket.jpg"  # 640x427 JPEG: decoded at a reduced size first, then resized
    assert images.load(rocket, 64, side="shorter").shape == (64, 96, 3)
    assert images.load(rocket, 64).shape == (43, 64, 3)  # the default is still the longer side
    assert images.load(rocket, 700, side="shorter").shape == (700, 1049, 3)  # small photos are enlarged
    with pytest.raises(ValueError):
        images.load(rocket, 64, side="width")


def test_batches_have_the_right_shapes_dtypes_and_ranges():
    train = data.Photos(sorted(SAMPLES.glob("*.jpg")), image_size=24, batch_size=3, steps=2, zoom=1.5)
    assert len(train) == 2
    for index in range(2):
        l, ab = train[index]
        assert l.shape == (3, 24, 24, 1) and ab.shape == (3, 24, 24, 2)
        assert l.dtype == np.float32 and ab.dtype == np.float32
        assert 0 <= l.min() and l.max() <= 1 and -1 <= ab.min() and ab.max() <= 1
        assert np.abs(ab).max() > 0.05  # real colour, not grey
    with pytest.raises(IndexError):
        train[2]


def test_training_crops_are_crops_of_the_photo_maybe_flipped():
    rocket = SAMPLES / "rocket.jpg"
    train = data.Photos([rocket], image_size=32, batch_size=8, steps=1, zoom=1.0)
    l, _ = train[0]
    whole, _ = lab.rgb_to_l_ab(images.load(rocket, 32, side="shorter"))  # (32, 48, 1)
    windows = [whole[:, x : x + 32] for x in range(whole.shape[1] - 32 + 1)]
    flipped = 0
    for crop in l:
        plain = min(np.abs(crop - w).max() for w in windows)
        mirror = min(np.abs(crop[:, ::-1] - w).max() for w in windows)
        assert min(plain, mirror) < 1e-5, "a training crop is not a window of the photo"
        flipped += mirror < plain
    assert 0 < flipped < len(l)  # some crops are flipped, some are not


def test_validation_batches_are_centre_crops_in_order():
    paths = sorted(SAMPLES.glob("*.jpg"))[:3]
    validation = data.Photos(paths, image_size=40, batch_size=2, random=False)
    assert len(validation) == 2  # 3 photos in batches of 2: the last batch is smaller
    l, ab = validation[1]
    assert l.shape == (1, 40, 40, 1)
    rgb = images.load(paths[2], 40, side="shorter")
    top, left = (rgb.shape[0] - 40) // 2, (rgb.shape[1] - 40) // 2
    expected_l, expected_ab = lab.rgb_to_l_ab(rgb[top : top + 40, left : left + 40])
    np.testing.assert_allclose(l[0], expected_l, atol=1e-6)
    np.testing.assert_allclose(ab[0], expected_ab, atol=1e-6)
    again = validation[1]
    np.testing.assert_array_equal(again[1], ab)  # the same every time


def test_crops_differ_between_epochs_and_follow_from_the_seed():
    paths = sorted(SAMPLES.glob("*.jpg"))
    train = data.Photos(paths, image_size=32, batch_size=4, steps=3, zoom=1.3, seed=5)
    first = train[1][0]
    train.set_epoch(1)
    second = train[1][0]
    assert not np.array_equal(first, second)  # a new epoch, new crops

    again = data.Photos(paths, image_size=32, batch_size=4, steps=3, zoom=1.3, seed=5)
    again.set_epoch(1)
    np.testing.assert_array_equal(again[1][0], second)  # same seed, epoch and batch: same crops
    other = data.Photos(paths, image_size=32, batch_size=4, steps=3, zoom=1.3, seed=6)
    other.set_epoch(1)
    assert not np.array_equal(other[1][0], second)


def test_batches_read_ahead_are_the_batches_asked_for():
    paths = sorted(SAMPLES.glob("*.jpg"))
    plain = data.Photos(paths, image_size=16, batch_size=2, steps=5, seed=2)  # reads only what is asked
    ahead = data.Photos(paths, image_size=16, batch_size=2, steps=5, seed=2, workers=3, max_queue_size=4)
    ahead[0]  # epoch 0: batches 1 to 4 are now being read ahead
    for epoch, index in [(1, 2), (1, 3), (0, 1), (2, 0), (2, 4)]:  # jumps, as Keras may make
        plain.set_epoch(epoch)
        ahead.set_epoch(epoch)
        np.testing.assert_array_equal(ahead[index][1], plain[index][1], err_msg=f"epoch {epoch}, batch {index}")


def test_every_photo_is_used_once_before_any_is_used_again(tmp_path):
    paths = solid_photos(tmp_path, 8)
    train = data.Photos(paths, image_size=8, batch_size=3, steps=4, seed=1)  # 12 crops per epoch, 8 photos
    seen = []
    for epoch in range(2):
        train.set_epoch(epoch)
        for index in range(len(train)):
            seen += [which_colour(rgb) for rgb in lab.l_ab_to_rgb(*train[index])]
    assert sorted(seen[:8]) == list(range(8)) and sorted(seen[8:16]) == list(range(8))  # passes span epochs
    assert seen[:8] != seen[8:16]  # each pass in a new order


def test_validation_photos_never_appear_in_training(tmp_path):
    paths = solid_photos(tmp_path / "photos", 8)
    train, validation = data.from_folder(tmp_path / "photos", image_size=8, batch_size=4, steps=5,
                                         validation_fraction=0.25, verbose=False)
    assert len(validation.paths) == 2 and len(train.paths) == 6
    assert set(train.paths) | set(validation.paths) == {str(p) for p in paths}
    kept_aside = {int(Path(p).stem[-1]) for p in validation.paths}
    for epoch in range(3):
        train.set_epoch(epoch)
        for index in range(len(train)):
            colours = {which_colour(rgb) for rgb in lab.l_ab_to_rgb(*train[index])}
            assert not colours & kept_aside, f"a validation photo was trained on in epoch {epoch}"
    seen = {which_colour(rgb) for index in range(len(validation)) for rgb in lab.l_ab_to_rgb(*validation[index])}
    assert seen == kept_aside


def test_the_split_is_deterministic_and_keeps_at_least_one_photo_aside(tmp_path):
    paths = solid_photos(tmp_path, 8)
    train, validation = data.split(paths, 0.25, root=tmp_path)
    assert (train, validation) == data.split(paths[::-1], 0.25, root=tmp_path)  # file order does not matter
    assert len(validation) == 2 and not set(train) & set(validation)
    assert len(data.split(paths[:2], 0.01)[1]) == 1  # two photos: one is kept aside
    assert len(data.split(paths[:2], 0.9)[0]) == 1  # ... and one is trained on
    assert data.split(paths, 0) == (sorted(paths), [])


def test_an_unreadable_photo_is_reported_once_and_replaced(tmp_path, capsys):
    paths = solid_photos(tmp_path, 2)
    broken = tmp_path / "broken.jpg"
    broken.write_text("this is not a photo")
    train = data.Photos(paths + [broken], image_size=8, batch_size=6, steps=4)
    for epoch in range(2):
        train.set_epoch(epoch)
        for index in range(len(train)):
            l, ab = train[index]
            assert l.shape == (6, 8, 8, 1)  # full batches: the broken file was replaced
            assert {which_colour(rgb) for rgb in lab.l_ab_to_rgb(l, ab)} <= {0, 1}
    lines = [line for line in capsys.readouterr().out.splitlines() if "broken.jpg" in line]
    assert lines == [f"skipped {broken}: not an image, or in a format Pillow cannot read"]
    assert list(train.skipped) == [str(broken)]


def test_a_folder_without_usable_photos_is_a_one_line_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no photos found") as error:
        data.from_folder(tmp_path / "empty", 8, 2, 2)
    assert "\n" not in str(error.value)

    (tmp_path / "junk").mkdir()
    for name in ("a.jpg", "b.png", "c.webp"):
        (tmp_path / "junk" / name).write_text("not a photo")
    with pytest.raises(UserError, match="no readable photo for training") as error:
        data.from_folder(tmp_path / "junk", 8, 2, 2, verbose=False)
    assert "\n" not in str(error.value)

    solid_photos(tmp_path / "one", 1)
    with pytest.raises(UserError, match="at least 2"):
        data.from_folder(tmp_path / "one", 8, 2, 2)


def test_no_decoded_photo_is_kept_between_batches():
    train = data.Photos(sorted(SAMPLES.glob("*.jpg")), image_size=64, batch_size=4, steps=6, workers=2)
    train[0]  # first use: imports and one-time set-up
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for epoch in range(3):  # 72 crops from 7 photos of up to 3.3 MB each once decoded
            train.set_epoch(epoch)
            for index in range(len(train)):
                batch = train[index]
        del batch
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 200_000, f"{grown} bytes more after 18 batches: decoded photos are being kept"
    held = [o for o in gc.get_referents(*vars(train).values()) if isinstance(o, (np.ndarray, Image.Image))]
    assert sum(getattr(o, "nbytes", 10**9) for o in held) < 100_000  # a few index arrays at most
