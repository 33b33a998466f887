"""Each photo's classifier embedding, computed once and kept on disk, never once per batch.

A classifier such as Inception-ResNet-v2 costs about half a second per photo on a CPU, more than a
training step of the colouriser. Training sees each photo many times (a crop per epoch, or several),
so the full stage computes the embedding of every photo once, before training, and reads it back for
every crop::

    cache = embeddings.Cache("outputs/embeddings", embed, "inception_resnet_v2", classifiers.fingerprint(classifier))
    vectors = cache.get(paths)  # (len(paths), 1000) float32, computed only where not cached

**The key.** A cached embedding is used only for the same photo *content* (a SHA-256 of the file's
bytes: a renamed or moved photo is found again, an edited one is recomputed), the same classifier,
the same weights (a fingerprint of their values) and the same recipe (how a photo becomes the
classifier's input). Anything else changed means another key, hence a recomputation.

**Safe files.** Each embedding is one small ``.npz`` file (4 KB for 1000 floats), written under a
temporary name and renamed when complete. On reading, its stored key and checksum are verified: a
truncated, corrupt or foreign file is recomputed and replaced, never trusted. Several runs may share a
cache folder; deleting it only costs the time to recompute.

**The photo the classifier sees** is the whole photo (not a training crop), scaled so that its longer
side is the classifier's input size, its lightness squeezed to a square of that size
(:func:`classifiers.fit_l`): the recipe the saved model follows when it colours a photo.
"""

import hashlib
import threading
import time
from pathlib import Path

import numpy as np
from keras import ops

from colorlab import classifiers, data, files, images, lab

# Change this when the way a photo becomes the classifier's input changes: every cached embedding
# then gets a new key and is recomputed.
RECIPE = "whole photo, longer side = size (Lanczos); l squeezed to size x size (bilinear, antialias); grey sRGB 0-255; preprocess_input; v1"


def photo_hash(path, chunk=1 << 20):
    """SHA-256 of a file's bytes, as hex: the photo's identity, whatever its name or folder."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def classifier_l(path, size):
    """The lightness the classifier sees for the photo at ``path``: (size, size, 1) float32 in [0, 1]."""
    rgb = images.load(path, size)  # longer side = size
    l, _ = lab.rgb_to_l_ab(rgb)
    return np.asarray(ops.convert_to_numpy(classifiers.fit_l(l[None], size))[0], dtype=np.float32)


class Cache:
    """Embeddings of photos, by content, for one classifier with one set of weights.

    Args:
        folder: the cache's root folder; this classifier's files go in a sub-folder named after it and
            a hash of its weights' fingerprint and the recipe.
        embed: a function from a batch of l, (N, size, size, 1) in [0, 1], to embeddings (N, D), such as
            ``classifiers.embedder(...).predict_on_batch``.
        classifier: the classifier's name in ``classifiers.CLASSIFIERS`` (for its input size).
        fingerprint: ``classifiers.fingerprint(model)`` of the classifier's weights.
        batch_size: photos per call of ``embed``.
    """

    def __init__(self, folder, embed, classifier, fingerprint, batch_size=8):
        self.embed = embed
        self.size = classifiers.spec(classifier).size
        self.batch_size = max(1, batch_size)
        self.key = hashlib.sha256(f"{classifier}|{fingerprint}|{RECIPE}".encode()).hexdigest()
        self.folder = Path(folder) / f"{classifier}-{self.key[:16]}"
        self.hits = self.computed = self.corrupt = 0
        self.skipped = {}  # path -> why it cannot be read

    def file(self, digest):
        """Where the embedding of the photo with content hash ``digest`` is kept."""
        return self.folder / digest[:2] / f"{digest}.npz"

    def read(self, digest):
        """The cached embedding of photo ``digest``, or None if it is missing or its file is not sound."""
        path = self.file(digest)
        if not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as stored:
                vector = np.asarray(stored["embedding"], dtype=np.float32)
                sound = (
                    str(stored["photo"]) == digest and str(stored["key"]) == self.key
                    and vector.ndim == 1 and vector.size > 0 and np.all(np.isfinite(vector))
                    and str(stored["checksum"]) == _checksum(vector)
                )
        except Exception:  # truncated zip, bad CRC, missing array, garbage: all mean "recompute"
            sound = False
        if not sound:
            self.corrupt += 1
            return None
        return vector

    def write(self, digest, vector):
        """Store one embedding, atomically."""
        vector = np.asarray(vector, dtype=np.float32)
        path = self.file(digest)
        path.parent.mkdir(parents=True, exist_ok=True)
        with files.atomic_path(path) as tmp, open(tmp, "wb") as out:
            np.savez(out, embedding=vector, photo=np.array(digest), key=np.array(self.key),
                     checksum=np.array(_checksum(vector)))

    def get(self, paths, verbose=True):
        """The embeddings of ``paths``, (len(paths), D) float32: read from the cache, computed if missing.

        A photo that cannot be read gets a row of NaN and is listed in ``self.skipped`` (path -> reason),
        so that training never uses it.
        """
        start = time.perf_counter()
        hits_before, computed_before = self.hits, self.computed
        if self.folder.is_dir():
            files.remove_temporaries(self.folder)  # half-written by runs that were killed (not those still running)
        digests = {}
        for path in paths:
            try:
                digests[str(path)] = photo_hash(path)
            except OSError as error:
                self.skipped[str(path)] = f"cannot read the file ({error.strerror or error})"
        vectors = {}  # digest -> vector
        missing = {}  # digest -> a path with that content
        for path, digest in digests.items():
            if digest in vectors or digest in missing:
                continue
            vector = self.read(digest)
            if vector is None:
                missing[digest] = path
            else:
                vectors[digest] = vector
                self.hits += 1
        self._compute(missing, vectors, verbose)
        dim = next((v.size for v in vectors.values()), None)
        out = np.full((len(paths), dim or 1), np.nan, dtype=np.float32)
        for row, path in enumerate(paths):
            vector = vectors.get(digests.get(str(path)))
            if vector is not None:
                out[row] = vector
        if verbose:
            seconds = time.perf_counter() - start
            computed = self.computed - computed_before
            rate = f", {seconds / computed:.2f} s per photo" if computed else ""
            corrupt = f", {self.corrupt} unsound cache file(s) replaced" if self.corrupt else ""
            print(f"embeddings of {len(paths)} photos: {self.hits - hits_before} from the cache, {computed} computed "
                  f"({seconds:.1f} s{rate}{corrupt}); cache: {self.folder}", flush=True)
        return out

    def _compute(self, missing, vectors, verbose):
        """Embed the photos in ``missing`` (digest -> path), batch by batch, writing each to the cache."""
        todo = list(missing.items())
        bar = None
        if verbose and len(todo) > self.batch_size:
            from tqdm import tqdm

            bar = tqdm(total=len(todo), unit="photo", desc="embeddings", disable=None, dynamic_ncols=True)
        try:
            for first in range(0, len(todo), self.batch_size):
                batch, ls = [], []
                for digest, path in todo[first : first + self.batch_size]:
                    try:
                        ls.append(classifier_l(path, self.size))
                        batch.append(digest)
                    except images.ImageError as error:
                        self.skipped[path] = error.problem
                        if verbose:
                            print(f"skipped {error}", flush=True)
                if ls:
                    # Always a full batch (the last one padded with copies): one shape, so the classifier's
                    # compiled graph is built once, not once per batch size (seconds each, for a big one).
                    full = np.stack(ls + [ls[-1]] * (self.batch_size - len(ls)))
                    result = np.asarray(ops.convert_to_numpy(self.embed(full)), dtype=np.float32)[: len(ls)]
                    for digest, vector in zip(batch, result):
                        self.write(digest, vector)  # kept at once: an interrupted run loses no finished work
                        vectors[digest] = vector
                        self.computed += 1
                if bar is not None:
                    bar.update(min(self.batch_size, len(todo) - first))
        finally:
            if bar is not None:
                bar.close()


def _checksum(vector):
    return hashlib.sha256(np.ascontiguousarray(vector, dtype=np.float32).tobytes()).hexdigest()


# ----------------------------------------------------------------------------------------------------
# Training batches that carry each crop's embedding


class EmbeddedPhotos(data.Photos):
    """``colorlab.data.Photos`` whose batches are ``((l, embedding), ab)``: each crop with the cached
    embedding of the whole photo it was cut from, for a model with two inputs. With ``output="rgb"``,
    ``((rgb, embedding),)``: the uint8 crops, for ``colorlab.training.RGBTrainer``.

    Crops, flips, validation and unreadable photos work exactly as in ``Photos``; ``embeddings`` holds
    one row per path (from :meth:`Cache.get`), read from memory, so a batch costs no classifier call.
    """

    def __init__(self, paths, embeddings, image_size, batch_size, steps=None, **options):
        super().__init__(paths, image_size, batch_size, steps, **options)
        self.embeddings = np.asarray(embeddings, dtype=np.float32)
        if self.embeddings.ndim != 2 or len(self.embeddings) != len(self.paths):
            raise ValueError(f"expected one embedding per photo, {len(self.paths)} rows, got shape {self.embeddings.shape}")
        self._thread = threading.local()  # the photos of the batch that this worker thread is cutting
        for path, row in zip(self.paths, self.embeddings):  # no embedding (unreadable for the cache): never used
            if not np.all(np.isfinite(row)):
                self.skipped.setdefault(path, _why_unreadable(path))

    @classmethod
    def attach(cls, photos, embeddings):
        """The same dataset as ``photos`` (same photos, crops and settings), with ``embeddings`` attached."""
        embedded = cls(photos.paths, embeddings, photos.image_size, photos.batch_size,
                       photos.steps if photos.random else None, random=photos.random, zoom=photos.zoom,
                       seed=photos.seed, workers=photos.threads, max_queue_size=photos.max_queue_size,
                       color_space=photos.color_space, output=photos.output)
        embedded.skipped.update(photos.skipped)
        photos.skipped = embedded.skipped  # one record of the files skipped, shared
        return embedded

    def _batch(self, epoch, index):
        self._thread.used = []  # filled by the crops below, all cut in this thread
        batch = super()._batch(epoch, index)
        rows = self.embeddings[self._thread.used]  # (batch, D): the photo behind each crop
        if self.output == "rgb":
            return ((batch, rows),)  # one input pair, uint8 RGB and embedding; the model makes l and ab
        l, ab = batch
        return (l, rows), ab

    def _load(self, i, size):
        rgb = super()._load(i, size)
        if rgb is not None:
            self._thread.last = i  # the photo a crop is cut from (after any unreadable ones were replaced)
        return rgb

    def _random_crop(self, number):
        crop = super()._random_crop(number)
        self._thread.used.append(self._thread.last)
        return crop

    def _centre_crop(self, i):
        crop = super()._centre_crop(i)
        self._thread.used.append(self._thread.last)
        return crop


def _why_unreadable(path):
    """Why a photo got no embedding, in the words of ``images.load`` (for the list of skipped files)."""
    try:
        images.load(path, 8)
    except images.ImageError as error:
        return error.problem
    return "no embedding: the photo could not be read"


def predictor(embed):
    """``predict(model, l)`` for a two-input colouriser, as ``training.fit`` and ``training.colourise``
    take it: the embedding of the whole photo ``l`` (1, H, W, 1), computed by ``embed`` the first time
    this photo is seen and remembered, then ``model([l, embedding])``."""
    known = {}

    def predict(model, l):
        l = np.ascontiguousarray(ops.convert_to_numpy(l), dtype=np.float32)
        key = (l.shape, hashlib.sha256(l.tobytes()).hexdigest())
        if key not in known:
            known[key] = ops.convert_to_numpy(embed(l, training=False))
        return model([l, known[key]], training=False)

    return predict
