"""Training input: photos streamed from a folder as ``(l, ab)`` batches, decoded in parallel threads.

A folder of 100,000 photos does not fit in memory, and it does not have to: a :class:`Photos` dataset
keeps only the list of file names. Each batch is read from disk by one of ``workers`` threads while the
model trains on the batches before it (up to ``max_queue_size`` batches are prepared ahead)::

    train, validation = data.from_folder("data/samples", image_size=128, batch_size=8, steps=10)
    model.fit(train, validation_data=validation, epochs=5, callbacks=[data.NextEpoch(train)])

(``colorlab.training.fit`` adds the ``NextEpoch`` callback for you.)

- **Training batches** are random square crops of ``image_size`` pixels. Each photo is first scaled so
  that its *shorter* side is between 1 and ``zoom`` times ``image_size`` (a JPEG is decoded directly
  at a reduced size, which is several times faster for big photos), then cut at a random place and
  flipped left-right half of the time. Photos are drawn in a shuffled order that visits every photo
  once before any photo is seen again, across epochs. The crops of epoch 3 differ from those of
  epoch 2, yet every crop follows from ``seed``, the epoch and the batch number alone: the same
  settings give the same batches, in any thread, and after a resume.
- **Validation batches** are the centre crops of *whole* photos that are never used for training
  (:func:`split`), the same every epoch, so that validation losses of different epochs compare.
- An unreadable photo (corrupt, truncated, not an image) is reported once, in one line, and replaced
  by another photo; ``Photos.skipped`` lists what was skipped, and why.

Why the threads are our own rather than Keras's (``PyDataset(workers=...)``): Keras's queue keeps the
batches it prepared ahead when an epoch ends and serves them at the start of the next one (and on the
JAX and PyTorch backends it reads a batch before the first epoch), so which crops an epoch gets would
depend on Keras's timing, and a resumed run would differ from an uninterrupted one. Here every batch
prepared ahead is labelled with its epoch and number, and only the batch asked for is ever served.

Each batch is ``(l, ab)``: float32 arrays of shape (batch, image_size, image_size, 1) in [0, 1] and
(batch, image_size, image_size, 2) in [-1, 1] (see ``colorlab.lab``), converted from RGB with a
single call for the whole batch; with ``color_space="yuv"``, ``(y, uv)`` in the same shapes and ranges.
"""

import hashlib
import math
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import keras
import numpy as np

from colorlab import UserError, images, lab


def split(paths, validation_fraction, root=None):
    """Split photos into ``(train, validation)`` lists of whole photos, the same way every time.

    About ``validation_fraction`` of the photos go to validation (at least one as soon as there are two
    photos and the fraction is above 0; never all of them). Which ones is decided by a hash of each
    photo's path (relative to ``root`` if given): it does not depend on the order of the files, on the
    seed or on the computer, so a photo used for validation in one run on a folder is never trained on
    in another run on the same folder.
    """
    paths = sorted(Path(p) for p in paths)
    if not 0 <= validation_fraction < 1:
        raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction}")
    count = 0
    if validation_fraction > 0 and len(paths) >= 2:
        count = min(len(paths) - 1, max(1, round(validation_fraction * len(paths))))

    def key(path):
        name = (path.relative_to(root) if root is not None else path).as_posix()
        return hashlib.sha256(name.encode("utf-8")).hexdigest(), name

    chosen = set(sorted(paths, key=key)[:count])
    return [p for p in paths if p not in chosen], [p for p in paths if p in chosen]


class Photos(keras.utils.PyDataset):
    """Photos served as ``(l, ab)`` batches of square crops; only the file names are kept in memory.

    Args:
        paths: the photo files.
        image_size: side of the square crops, in pixels.
        batch_size: crops per batch.
        steps: batches per epoch. Required for training (``random=True``), where it may be any number
            (several crops per photo per epoch when photos are few, a fraction of the folder per epoch
            when they are many). Without ``random``, each photo is used once: ``ceil(len(paths) /
            batch_size)`` batches, the last one smaller.
        random: True for training (random crops, zoom and flips, shuffled photos), False for
            validation (the centre crop of each photo, in order, the same every epoch).
        zoom: for training, the photo's shorter side is scaled to between 1 and ``zoom`` times
            ``image_size`` before cropping, so that crops frame the scene more or less tightly.
        seed: every random choice follows from it (and from the epoch and batch number).
        workers: threads that read the next batches while the model trains; 1 reads each batch only
            when it is asked for. The batches are the same whatever the number.
        max_queue_size: batches prepared ahead of the model, at most.
        color_space: "lab" serves ``(l, ab)``; "yuv" serves ``(y, uv)`` (see ``colorlab.lab.split``).
    """

    def __init__(self, paths, image_size, batch_size, steps=None, *, random=True, zoom=1.0, seed=0,
                 workers=1, max_queue_size=10, color_space="lab"):
        # Keras sees one worker, so it reads batches in order and keeps none; our threads read ahead.
        super().__init__(workers=1, use_multiprocessing=False, max_queue_size=max_queue_size)
        self.paths = [str(p) for p in paths]  # plain strings: 100k names take a few MB
        if not self.paths:
            raise ValueError("Photos needs at least one photo")
        if image_size < 1 or batch_size < 1:
            raise ValueError(f"image_size and batch_size must be positive, got {image_size} and {batch_size}")
        if random and (steps is None or steps < 1):
            raise ValueError("random (training) batches need steps, the number of batches per epoch")
        if zoom < 1:
            raise ValueError(f"zoom must be at least 1, got {zoom}")
        self.threads = max(1, int(workers))
        self.image_size = image_size
        self.batch_size = batch_size
        self.random = random
        self.steps = steps if random else math.ceil(len(self.paths) / batch_size)
        self.zoom = zoom
        self.seed = seed
        lab.split(np.zeros((1, 1, 3)), color_space)  # an unknown colour space fails here, not in a reading thread
        self.color_space = color_space
        self.epoch = 0  # set by the NextEpoch callback before each epoch starts
        self.skipped = {}  # path -> why it was skipped
        self._lock = threading.Lock()
        self._orders = {}  # a shuffled order of the photos per pass; two at most (ints, not pixels)
        self._pool = None  # the reading threads, started on first use
        self._ahead = {}  # (epoch, batch number) -> Future of that batch, read ahead

    def __len__(self):
        return self.steps

    def set_epoch(self, epoch):
        """Serve the batches of ``epoch`` (0-based) from now on."""
        self.epoch = int(epoch)

    def __getitem__(self, index):
        """Batch ``index`` of the current epoch: ``(l, ab)``, float32."""
        if not 0 <= index < self.steps:
            raise IndexError(f"batch {index} of an epoch of {self.steps} batches")
        epoch = self.epoch
        if self.threads == 1:
            return self._batch(epoch, index)
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="photos")
            for key in [k for k in self._ahead if k[0] != epoch or k[1] < index]:  # no longer wanted
                self._ahead.pop(key).cancel()
            batch = self._ahead.pop((epoch, index), None) or self._pool.submit(self._batch, epoch, index)
            for ahead in range(index + 1, min(index + 1 + self.max_queue_size, self.steps)):
                if (epoch, ahead) not in self._ahead:
                    self._ahead[(epoch, ahead)] = self._pool.submit(self._batch, epoch, ahead)
        return batch.result()

    def _batch(self, epoch, index):
        """Batch ``index`` of ``epoch``, read from disk: ``(l, ab)``."""
        if self.random:
            first = (epoch * self.steps + index) * self.batch_size  # crops are numbered across epochs
            rgb = np.stack([self._random_crop(first + k) for k in range(self.batch_size)])
        else:
            numbers = range(index * self.batch_size, min((index + 1) * self.batch_size, len(self.paths)))
            rgb = np.stack([self._centre_crop(i) for i in numbers])
        return lab.split(rgb, self.color_space)  # one vectorised conversion per batch

    def first_usable(self):
        """The first photo that can be read (unreadable ones are reported and skipped); a UserError if none.

        Call it before training, so that a folder of unusable files stops the run at once, in one line.
        """
        for i, path in enumerate(self.paths):
            if self._load(i, self.image_size) is not None:
                return path
        raise UserError(f"none of the {len(self.paths)} photos can be read (see the reasons above)")

    def examples(self, count, size=None):
        """``(names, rgbs)`` of the first ``count`` readable photos, whole, shorter side ``size``
        (default ``image_size``): for result grids."""
        names, rgbs = [], []
        for i, path in enumerate(self.paths):
            if len(rgbs) == count:
                break
            rgb = self._load(i, size or self.image_size)
            if rgb is not None:
                names.append(Path(path).name)
                rgbs.append(rgb)
        return names, rgbs

    def _random_crop(self, number):
        """Crop number ``number`` (counted from the start of training), as (S, S, 3) RGB."""
        n = len(self.paths)
        rng = np.random.default_rng([self.seed, number])
        i = self._order(number // n)[number % n]
        size = self.image_size if self.zoom == 1 else math.ceil(self.image_size * rng.uniform(1, self.zoom))
        while (rgb := self._load(i, size)) is None:  # unreadable: another photo, chosen by the same rng
            i = self._replacement(rng)
        top = rng.integers(rgb.shape[0] - self.image_size + 1)
        left = rng.integers(rgb.shape[1] - self.image_size + 1)
        crop = rgb[top : top + self.image_size, left : left + self.image_size]
        return crop[:, ::-1] if rng.random() < 0.5 else crop

    def _centre_crop(self, i):
        """The centre crop of photo ``i`` (or of the next readable photo), as (S, S, 3) RGB."""
        for k in range(len(self.paths)):
            rgb = self._load((i + k) % len(self.paths), self.image_size)
            if rgb is not None:
                top = (rgb.shape[0] - self.image_size) // 2
                left = (rgb.shape[1] - self.image_size) // 2
                return rgb[top : top + self.image_size, left : left + self.image_size]
        raise UserError(f"none of the {len(self.paths)} photos can be read (see the reasons above)")

    def _order(self, number):
        """The shuffled order of the photos in pass ``number`` over them."""
        with self._lock:
            if number not in self._orders:
                rng = np.random.default_rng([self.seed, number, 1])
                self._orders = {k: v for k, v in self._orders.items() if k >= number - 1}
                self._orders[number] = rng.permutation(len(self.paths))
            return self._orders[number]

    def _replacement(self, rng):
        if len(self.skipped) >= len(self.paths):
            raise UserError(f"none of the {len(self.paths)} photos can be read (see the reasons above)")
        return int(rng.integers(len(self.paths)))

    def _load(self, i, size):
        """Photo ``i`` with its shorter side ``size`` pixels, or None if it cannot be read."""
        path = self.paths[i]
        if path in self.skipped:
            return None
        try:
            return images.load(path, size, side="shorter")
        except images.ImageError as error:
            with self._lock:
                first_time = path not in self.skipped
                self.skipped[path] = error.problem
            if first_time:
                print(f"skipped {error}", flush=True)  # "<file>: <problem>", once per file
            return None


class NextEpoch(keras.callbacks.Callback):
    """Tell a :class:`Photos` dataset which epoch starts, so that each epoch gets new crops.

    Keras calls callbacks' ``on_epoch_begin`` before it starts reading the epoch's batches, and passes
    the true epoch number, also when training resumes from a checkpoint (``initial_epoch``).
    """

    def __init__(self, dataset):
        super().__init__()
        self.dataset = dataset

    def on_epoch_begin(self, epoch, logs=None):
        self.dataset.set_epoch(epoch)


def from_folder(folder, image_size, batch_size, steps, validation_fraction=0.1, *, zoom=1.0, seed=0,
                workers=1, max_queue_size=10, color_space="lab", verbose=True):
    """Training and validation :class:`Photos` from every photo under ``folder`` (searched recursively).

    Returns ``(train, validation)``; ``validation`` is None when ``validation_fraction`` is 0. Stops
    with a one-line UserError if the folder has no photo, or no readable one, or only one photo while
    a validation split is asked for.
    """
    paths = images.list_images(folder)
    if not paths:
        kinds = ", ".join(images.EXTENSIONS)
        raise UserError(f"{folder}: no photos found (looked for {kinds} files in it and its subfolders)")
    if validation_fraction > 0 and len(paths) < 2:
        raise UserError(f"{folder}: only 1 photo; a validation split needs at least 2 (one to train on, one to check)")
    train_paths, validation_paths = split(paths, validation_fraction, root=folder)
    options = dict(image_size=image_size, batch_size=batch_size, workers=workers, max_queue_size=max_queue_size,
                   color_space=color_space)
    train = Photos(train_paths, steps=steps, random=True, zoom=zoom, seed=seed, **options)
    validation = Photos(validation_paths, random=False, **options) if validation_paths else None
    for dataset, role in ((train, "training"), (validation, "validation")):
        if dataset is not None:
            try:
                dataset.first_usable()
            except UserError:
                raise UserError(f"{folder}: no readable photo for {role} among {len(dataset.paths)} files") from None
    if verbose:
        crops = steps * batch_size
        print(f"{folder}: {len(paths)} photos, {len(train_paths)} for training ({crops} crops of "
              f"{image_size}x{image_size} per epoch, {crops / len(train_paths):.1f} per photo), "
              f"{len(validation_paths)} for validation")
    return train, validation


def grey_loss(dataset):
    """The mean squared error of predicting no colour (ab = 0) on ``dataset``: the baseline to beat."""
    total = count = 0.0
    for index in range(len(dataset)):  # a Photos dataset reads the next batches meanwhile
        _, ab = dataset[index]
        total += float(np.sum(np.square(ab, dtype=np.float64)))
        count += ab.size
    return total / count
