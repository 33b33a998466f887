"""The training input: (l, ab) pairs cut from photos on disk: what they hold, how they change, what they
skip."""

from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

from colorlab import UserError, data, images, lab
from colorlab.settings import SettingsError

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "data" / "samples"
# Eight clearly different colors, one per synthetic photo: a crop's mean color tells its photo.
COLORS = [(220, 30, 30), (30, 200, 30), (30, 30, 220), (220, 220, 30), (30, 220, 220), (220, 30, 220),
          (240, 140, 20), (120, 60, 20)]


def solid_photos(folder, count, size=(40, 30)):
    """``count`` photos of one color each, of different kinds; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, rgb in enumerate(COLORS[:count]):
        path = folder / f"photo{i}.{('png', 'jpg', 'bmp', 'webp')[i % 4]}"
        Image.new("RGB", size, rgb).save(path, **({"quality": 100} if path.suffix == ".jpg" else {}))
        paths.append(path)
    return paths


def which_color(rgb):
    """The index in COLORS nearest to the mean color of an (H, W, 3) crop in [0, 1]."""
    mean = rgb.reshape(-1, 3).mean(axis=0) * 255
    return int(np.argmin([np.sum((mean - np.array(c)) ** 2) for c in COLORS]))


def photos_of(l, ab):
    return [which_color(rgb) for rgb in lab.l_ab_to_rgb(l, ab)]


def next_epoch(dataset):
    dataset.on_epoch_end()  # what Keras calls between epochs


# ----------------------------------------------------------------------------------------------------
# What a batch holds


def test_training_pairs_are_l_and_ab_of_crops_of_the_photo_maybe_flipped():
    rocket = SAMPLES / "rocket.jpg"  # 640x427: its shorter side scaled to 32 gives 32x48
    train = data.Photos([rocket], image_size=32, batch_size=8, steps=2, zoom=1.0)
    whole = np.concatenate(lab.rgb_to_l_ab(images.load(rocket, 32, side="shorter")), axis=-1)  # (32, 48, 3)
    windows = [whole[:, x : x + 32] for x in range(whole.shape[1] - 32 + 1)]
    flipped = 0
    for index in range(len(train)):
        l, ab = train[index]
        assert l.shape == (8, 32, 32, 1) and ab.shape == (8, 32, 32, 2) and l.dtype == ab.dtype == np.float32
        assert 0 <= l.min() and l.max() <= 1 and -1 <= ab.min() and ab.max() <= 1 and np.abs(ab).max() > 0.05
        for crop in np.concatenate([l, ab], axis=-1):
            plain = min(np.abs(crop - w).max() for w in windows)
            mirror = min(np.abs(crop[:, ::-1] - w).max() for w in windows)
            assert min(plain, mirror) < 1e-5, "a pair is not (l, ab) of a window of the photo"
            flipped += mirror < plain
    assert 0 < flipped < 16  # some crops are flipped, some are not
    with pytest.raises(IndexError):
        train[2]


def test_validation_pairs_are_the_centre_crops_of_whole_photos_in_order():
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
    next_epoch(validation)
    np.testing.assert_array_equal(validation[1][1], ab)  # the same every epoch


def test_yuv_pairs():
    train = data.Photos([SAMPLES / "chelsea.jpg"], image_size=16, batch_size=2, steps=1, color_space="yuv")
    y, uv = train[0]
    rgb = lab.l_ab_to_rgb(*data.Photos([SAMPLES / "chelsea.jpg"], image_size=16, batch_size=2, steps=1)[0])
    np.testing.assert_allclose(y, lab.rgb_to_y_uv(rgb)[0], atol=2e-3)
    assert uv.shape == (2, 16, 16, 2)


def test_crops_follow_from_the_seed_and_change_every_epoch():
    paths = sorted(SAMPLES.glob("*.jpg"))

    def batches(seed, epochs=2):
        train = data.Photos(paths, image_size=16, batch_size=4, steps=3, zoom=1.3, seed=seed)
        found = []
        for _ in range(epochs):
            found.append(np.concatenate([train[i][1] for i in range(len(train))]))
            next_epoch(train)
        return found

    first, second = batches(5)
    assert not np.array_equal(first, second)  # a new epoch, new crops
    again = batches(5)
    np.testing.assert_array_equal(again[0], first)  # the same seed: the same crops
    np.testing.assert_array_equal(again[1], second)
    assert not np.array_equal(batches(6)[0], first)


def test_keras_worker_threads_serve_every_batch_of_every_epoch_once():
    served = []

    class Recorded(data.Photos):
        def __getitem__(self, index):
            served.append((self.epoch, index))
            return super().__getitem__(index)

    train = Recorded(sorted(SAMPLES.glob("*.jpg")), image_size=8, batch_size=2, steps=3, workers=2)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((None, None, 1)), keras.layers.Conv2D(2, 3, padding="same")])
    model.compile(optimizer="adam", loss="mse", run_eagerly=True)
    history = model.fit(train, epochs=2, verbose=0)
    assert len(set(served)) == len(served)  # no batch of an epoch is read twice
    epochs = {}
    for epoch, index in served:
        epochs.setdefault(epoch, []).append(index)
    full = [epoch for epoch, indices in epochs.items() if sorted(indices) == [0, 1, 2]]
    assert len(full) == 2, served  # two epochs of their own (Keras may first read a batch or two: shapes)
    assert len(epochs) <= 3 and np.isfinite(history.history["loss"]).all()
    # With two threads, the same batches as with none: crops depend on the seed, epoch and batch alone.
    paths = sorted(SAMPLES.glob("*.jpg"))
    validation = data.Photos(paths, image_size=8, batch_size=2, random=False, workers=2)
    single = data.Photos(validation.paths, image_size=8, batch_size=2, random=False)
    assert model.evaluate(validation, verbose=0) == pytest.approx(model.evaluate(single, verbose=0), rel=1e-6)


def test_embeddings_come_with_the_rows_of_their_photos_and_a_nan_row_is_skipped(tmp_path, capsys):
    paths = solid_photos(tmp_path, 4)
    train = data.Photos(paths, image_size=8, batch_size=6, steps=3, seed=1)
    train.embeddings = np.array([[i, 10 * i] for i in range(4)], dtype=np.float32)
    train.embeddings[2] = np.nan  # the classifier could not read photo 2
    seen = set()
    for index in range(len(train)):
        (l, embedding), ab = train[index]
        assert l.shape == (6, 8, 8, 1) and embedding.shape == (6, 2) and ab.shape == (6, 8, 8, 2)
        colors = photos_of(l, ab)
        np.testing.assert_array_equal(embedding[:, 0], colors)  # each crop with its own photo's row
        seen |= set(colors)
    assert seen == {0, 1, 3}
    assert train.skipped == {str(paths[2]): "no embedding: the classifier could not read it"}
    assert capsys.readouterr().out.count(f"skipped {paths[2]}: no embedding") == 1


# ----------------------------------------------------------------------------------------------------
# from_folder: the split, what is left out, what is refused


def test_validation_is_whole_photos_chosen_by_name_and_never_trained_on(tmp_path):
    paths = solid_photos(tmp_path / "photos", 8)
    train, validation = data.from_folder(tmp_path / "photos", 8, 4, 5, 0.25, verbose=False)
    assert len(validation.paths) == 2 and len(train.paths) == 6
    assert set(train.paths) | set(validation.paths) == {str(p) for p in paths}
    kept_aside = {int(Path(p).stem[-1]) for p in validation.paths}
    for _ in range(2):
        for index in range(len(train)):
            assert not set(photos_of(*train[index])) & kept_aside, "a validation photo was trained on"
        next_epoch(train)
    assert {c for i in range(len(validation)) for c in photos_of(*validation[i])} == kept_aside
    # The choice depends on the names alone: not on their order, nor on where the folder is.
    copy = solid_photos(tmp_path / "elsewhere" / "copy", 8)
    _, chosen = data.split_photos(copy[::-1], 0.25, root=tmp_path / "elsewhere" / "copy")
    assert [p.name for p in chosen] == [Path(p).name for p in validation.paths]
    assert len(data.split_photos(paths[:2], 0.01)[1]) == 1 and len(data.split_photos(paths[:2], 0.99)[0]) == 1


def test_an_unreadable_photo_is_reported_once_in_one_line_and_replaced(tmp_path, capsys):
    paths = solid_photos(tmp_path, 2)
    broken = tmp_path / "broken.jpg"
    broken.write_text("this is not a photo")
    strip = tmp_path / "strip.png"  # 2000000x1: its shorter side scaled to 8 makes 128 million pixels
    Image.new("RGB", (2_000_000, 1), (10, 200, 10)).save(strip)
    train = data.Photos(paths + [broken, strip], image_size=8, batch_size=6, steps=3)
    for _ in range(2):
        for index in range(len(train)):
            l, ab = train[index]
            assert l.shape == (6, 8, 8, 1) and set(photos_of(l, ab)) <= {0, 1}  # full batches of good photos
        next_epoch(train)
    printed = capsys.readouterr().out.splitlines()
    assert [line for line in printed if "broken.jpg" in line] == [
        f"skipped {broken}: not an image, or in a format Pillow cannot read"]
    assert [line for line in printed if "strip.png" in line][0].startswith(
        f"skipped {strip}: refused: scaled to 8 pixels on its shorter side, this 2000000x1 photo would have")
    assert sorted(train.skipped) == sorted([str(broken), str(strip)])


def test_the_run_s_own_out_dir_inside_data_is_left_out(tmp_path):
    photos = tmp_path / "photos"
    paths = solid_photos(photos, 4)
    out = photos / "out"
    solid_photos(out / "grids", 2)  # an earlier run's pictures
    train, validation = data.from_folder(photos, 8, 2, 2, 0.25, exclude=out, verbose=False)
    assert sorted(train.paths + validation.paths) == sorted(map(str, paths))
    train, validation = data.from_folder(photos, 8, 2, 2, 0.25, exclude=photos / "missing", verbose=False)
    assert len(train.paths + validation.paths) == 6  # without it, they would be trained on


def test_an_absurd_image_size_is_blamed_on_the_setting_not_the_photos():
    with pytest.raises(SettingsError) as caught:
        data.from_folder(SAMPLES, 100_000, 8, 10, 0.25)
    assert str(caught.value).startswith("IMAGE_SIZE=100000 with ZOOM=1.0 asks for photos of up to ")
    assert "choose a smaller IMAGE_SIZE" in str(caught.value) and "\n" not in str(caught.value)


def test_a_folder_without_usable_photos_is_a_one_line_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no photos found") as caught:
        data.from_folder(tmp_path / "empty", 8, 2, 2)
    assert "\n" not in str(caught.value)
    (tmp_path / "junk").mkdir()
    for name in ("a.jpg", "b.png", "c.webp"):
        (tmp_path / "junk" / name).write_text("not a photo")
    with pytest.raises(UserError, match="no readable photo for training among 2 files") as caught:
        data.from_folder(tmp_path / "junk", 8, 2, 2, verbose=False)
    assert "\n" not in str(caught.value)
    solid_photos(tmp_path / "one", 1)
    with pytest.raises(UserError, match="only 1 photo; a validation split needs at least 2"):
        data.from_folder(tmp_path / "one", 8, 2, 2)
    with pytest.raises(UserError, match="no such folder"):
        data.from_folder(tmp_path / "missing", 8, 2, 2)


def test_examples_are_whole_readable_photos(tmp_path):
    paths = solid_photos(tmp_path, 3, size=(40, 30))
    (tmp_path / "a-broken.png").write_text("no")
    validation = data.Photos(sorted(tmp_path.iterdir()), image_size=12, batch_size=2, random=False)
    names, rgbs = validation.examples(2)
    assert names == ["photo0.png", "photo1.jpg"] and [r.shape for r in rgbs] == [(12, 16, 3)] * 2
    assert validation.first_usable() == str(paths[0])
