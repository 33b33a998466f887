"""Training input: photos streamed from a folder as ``(l, ab)`` batches, read by Keras's worker threads.

    train, validation = data.from_folder("data/samples", image_size=128, batch_size=8, steps=10)
    l, ab = train[0]  # (8, 128, 128, 1) in [0, 1] and (8, 128, 128, 2) in [-1, 1]
"""

import hashlib
import math
import os
import threading
from pathlib import Path

import keras
import numpy as np

from colorlab import UserError, images, lab
from colorlab.settings import SettingsError


def split_photos(paths, validation_fraction, root=None):
    """``(train, validation)`` lists of photos, chosen by a hash of each path relative to ``root``: the same
    split whatever the file order, seed or computer, so a validation photo is never trained on."""
    paths = sorted(Path(p) for p in paths)
    wanted = max(1, round(validation_fraction * len(paths))) if validation_fraction > 0 else 0
    count = min(wanted, len(paths) - 1)  # and at least one photo to train on

    def key(path):
        name = (path.relative_to(root) if root is not None else path).as_posix()
        return hashlib.sha256(name.encode("utf-8")).hexdigest(), name

    chosen = set(sorted(paths, key=key)[:count])
    return [p for p in paths if p not in chosen], [p for p in paths if p in chosen]


class Photos(keras.utils.PyDataset):
    """``(l, ab)`` batches of square crops: ``steps`` random ones per epoch (zoomed, placed and flipped as
    ``seed``, the epoch and the batch say), or each photo's centre crop once (``random=False``)."""

    def __init__(self, paths, image_size, batch_size, steps=None, *, random=True, zoom=1.0, seed=0,
                 workers=1, color_space="lab"):
        super().__init__(workers=workers, use_multiprocessing=False, max_queue_size=2 * max(1, workers))
        self.paths = [str(p) for p in paths]  # plain strings: 100k names take a few MB
        if not self.paths:
            raise ValueError("Photos needs at least one photo")
        self.image_size, self.batch_size, self.random, self.zoom = image_size, batch_size, random, zoom
        self.steps = steps if random else math.ceil(len(self.paths) / batch_size)
        self.seed, self.color_space = seed, color_space
        self.epoch = 0  # counted by on_epoch_end, which Keras calls once its threads have stopped
        self.embeddings = None  # (len(paths), D): then batches are ((l, embedding), ab)
        self.skipped = {}  # path -> why it was skipped
        self._lock = threading.Lock()

    def __len__(self):
        return self.steps

    def on_epoch_end(self):
        self.epoch += 1  # the next epoch's crops differ

    def __getitem__(self, index):
        if not 0 <= index < self.steps:
            raise IndexError(f"batch {index} of an epoch of {self.steps} batches")
        if self.random:
            first = (self.epoch * self.steps + index) * self.batch_size  # crops are numbered across epochs
            crops = [self._random_crop(first + k) for k in range(self.batch_size)]
        else:
            last = min((index + 1) * self.batch_size, len(self.paths))
            crops = [self._centre_crop(i) for i in range(index * self.batch_size, last)]
        rgb = np.stack([crop for crop, _ in crops]).astype(np.float32) / 255.0
        l, ab = lab.from_rgb(rgb, self.color_space)  # one vectorized conversion per batch
        if self.embeddings is None:
            return l, ab
        return (l, self.embeddings[[photo for _, photo in crops]]), ab

    def examples(self, count):
        """``(names, rgbs)`` of the first ``count`` readable photos, whole, shorter side ``image_size``."""
        names, rgbs = [], []
        for i, path in enumerate(self.paths):
            if len(rgbs) < count and (rgb := self._load(i, self.image_size)) is not None:
                names.append(Path(path).name)
                rgbs.append(rgb.astype(np.float32) / 255.0)
        return names, rgbs

    def first_usable(self):
        """The first photo that can be read; a UserError if none can."""
        return self.paths[self._centre_crop(0)[1]]

    def _random_crop(self, number):
        """Crop number ``number``, counted from the start of training: ((S, S, 3) uint8, photo index)."""
        rng = np.random.default_rng([self.seed, number])
        i = int(rng.integers(len(self.paths)))
        size = self.image_size if self.zoom == 1 else math.ceil(self.image_size * rng.uniform(1, self.zoom))
        while (rgb := self._load(i, size)) is None:  # unreadable: another photo, chosen by the same rng
            if len(self.skipped) >= len(self.paths):
                raise UserError(f"none of the {len(self.paths)} photos can be read (see the reasons above)")
            i = int(rng.integers(len(self.paths)))
        top, left = (rng.integers(side - self.image_size + 1) for side in rgb.shape[:2])
        crop = rgb[top : top + self.image_size, left : left + self.image_size]
        return (crop[:, ::-1] if rng.random() < 0.5 else crop), i

    def _centre_crop(self, i):
        """The centre crop of photo ``i`` (or of the next readable photo), with that photo's index."""
        for k in range(len(self.paths)):
            j = (i + k) % len(self.paths)
            if (rgb := self._load(j, self.image_size)) is not None:
                top, left = (rgb.shape[0] - self.image_size) // 2, (rgb.shape[1] - self.image_size) // 2
                return rgb[top : top + self.image_size, left : left + self.image_size], j
        raise UserError(f"none of the {len(self.paths)} photos can be read (see the reasons above)")

    def _load(self, i, size):
        """Photo ``i`` with its shorter side ``size`` pixels, as uint8 RGB; None (said once) if unreadable."""
        path = self.paths[i]
        if path in self.skipped:
            return None
        try:
            if self.embeddings is not None and not np.all(np.isfinite(self.embeddings[i])):
                raise images.ImageError(path, "no embedding: the classifier could not read it")
            return images.load_8bit(path, size, side="shorter")
        except images.ImageError as error:
            with self._lock:
                first_time = path not in self.skipped
                self.skipped[path] = error.problem
            if first_time:
                print(f"skipped {error}", flush=True)  # "<file>: <problem>", once per file
            return None


def from_folder(folder, image_size, batch_size, steps, validation_fraction=0.1, *, zoom=1.0, seed=0,
                workers=1, color_space="lab", exclude=None, verbose=True):
    """``(train, validation)`` :class:`Photos` from every photo under ``folder`` but those under ``exclude``
    (a run's OUT_DIR inside it); ``validation`` is None when ``validation_fraction`` is 0."""
    largest = math.ceil(image_size * zoom) ** 2 * 16  # the shorter side scaled to that, of a 16:1 panorama
    safe = images.Image.MAX_IMAGE_PIXELS
    if largest > safe:
        raise SettingsError(f"IMAGE_SIZE={image_size} with ZOOM={zoom} asks for photos of up to {largest:,} "
                            f"pixels, more than the {safe:,} that are safe to hold: choose a smaller "
                            f"IMAGE_SIZE")
    paths = images.list_images(folder)
    excluded = Path(os.path.realpath(exclude)) if exclude else None
    if excluded is not None and Path(os.path.realpath(folder)) in excluded.parents:  # OUT_DIR inside DATA
        paths = [p for p in paths if excluded not in Path(os.path.realpath(p)).parents]
    if not paths:
        raise UserError(f"{folder}: no photos found (looked for {', '.join(images.EXTENSIONS)} files in it "
                        f"and its subfolders)")
    if validation_fraction > 0 and len(paths) < 2:
        raise UserError(f"{folder}: only 1 photo; a validation split needs at least 2 (one to train on, one "
                        f"to check)")
    train_paths, validation_paths = split_photos(paths, validation_fraction, root=folder)
    options = dict(image_size=image_size, batch_size=batch_size, workers=workers, color_space=color_space)
    train = Photos(train_paths, steps=steps, random=True, zoom=zoom, seed=seed, **options)
    validation = Photos(validation_paths, random=False, **options) if validation_paths else None
    for photos, role in ((train, "training"), (validation or train, "validation")):
        try:
            photos.first_usable()
        except UserError:
            raise UserError(f"{folder}: no readable photo for {role} among {len(photos.paths)} "
                            f"files") from None
    if verbose:
        crops = steps * batch_size
        print(f"{folder}: {len(paths)} photos, {len(train_paths)} for training ({crops} crops of "
              f"{image_size}x{image_size} per epoch, {crops / len(train_paths):.1f} per photo), "
              f"{len(validation_paths)} for validation")
    return train, validation

