"""Each photo's classifier embedding, computed once and kept on disk (full's cache), reused only for the same
photo content, classifier, weights and ``recipe``: a damaged or foreign file is recomputed, never trusted."""

import hashlib
from pathlib import Path

import numpy as np

from colorlab import files, images, lab


def fingerprint(model):
    """A SHA-256 of every weight of ``model`` (names, shapes, values): equal exactly when the weights are."""
    digest = hashlib.sha256()
    for variable in model.weights:
        value = np.ascontiguousarray(variable.numpy())
        digest.update(f"{variable.path}|{value.shape}|{value.dtype}\n".encode() + value.tobytes())
    return digest.hexdigest()


def photo_hash(path):
    """SHA-256 of a file's bytes: the photo's identity, whatever its name or folder."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def classifier_l(path, size):
    """The photo's l, longer side ``size``, stretched to (size, size, 1) as the classifier's inputs are."""
    l, _ = lab.rgb_to_l_ab(images.load(path, size))
    return images.resize(l, size, size, "bilinear")


class Cache:
    """Embeddings by photo content, for one classifier and its weights; ``embed`` maps a batch of l
    (batch_size, size, size, 1) to (batch_size, D), like a Keras model's ``predict_on_batch``."""

    def __init__(self, folder, embed, size, classifier, fingerprint, recipe, batch_size=8):
        self.embed, self.size, self.batch_size = embed, size, max(1, batch_size)
        self.key = hashlib.sha256(f"{classifier}|{fingerprint}|{recipe}".encode()).hexdigest()
        self.folder = Path(folder) / f"{classifier}-{self.key[:16]}"
        self.hits = self.computed = self.damaged = 0
        self.skipped = {}  # path -> why it has no embedding

    def file(self, digest):  # where the embedding of the photo whose content hash is digest is kept
        return self.folder / digest[:2] / f"{digest}.npz"

    def read(self, digest):
        """The cached embedding of photo ``digest``; None if there is none, or its file is not sound."""
        if not self.file(digest).exists():
            return None
        try:
            with np.load(self.file(digest), allow_pickle=False) as stored:
                vector = np.asarray(stored["embedding"], dtype=np.float32)
                if (str(stored["photo"]) == digest and str(stored["key"]) == self.key and vector.ndim == 1
                        and np.all(np.isfinite(vector)) and str(stored["checksum"]) == _checksum(vector)):
                    return vector
        except Exception:  # truncated zip, bad CRC, missing array, garbage: all mean "recompute"
            pass
        self.damaged += 1
        return None

    def write(self, digest, vector):
        """Store one embedding, atomically: a run killed mid-write leaves no broken file under its name."""
        self.file(digest).parent.mkdir(parents=True, exist_ok=True)
        with files.atomic_path(self.file(digest)) as tmp, open(tmp, "wb") as out:
            np.savez(out, embedding=vector, photo=np.array(digest), key=np.array(self.key),
                     checksum=np.array(_checksum(vector)))

    def get(self, paths, verbose=True):
        """The embeddings of ``paths``, (len(paths), D) float32, cached or computed; a NaN row: unreadable."""
        paths, hits, computed = [str(p) for p in paths], self.hits, self.computed
        files.remove_temporaries(self.folder)  # the half-written files of runs killed mid-write
        digests, vectors, todo = {}, {}, {}  # path -> digest; digest -> vector; digest -> a path to compute
        for path in paths:
            try:
                digests[path] = digest = photo_hash(path)
            except OSError as error:
                self.skipped[path] = f"cannot read the file ({error.strerror or error})"
                continue
            if digest not in vectors and digest not in todo:
                if (vector := self.read(digest)) is None:
                    todo[digest] = path
                else:
                    vectors[digest], self.hits = vector, self.hits + 1
        todo = list(todo.items())
        for first in range(0, len(todo), self.batch_size):
            batch = []
            for digest, path in todo[first : first + self.batch_size]:
                try:
                    batch.append((digest, classifier_l(path, self.size)))
                except images.ImageError as error:
                    self.skipped[path] = error.problem
            if batch:  # always a full batch (the last one padded with copies): one shape, one compiled graph
                ls = [l for _, l in batch] + [batch[-1][1]] * (self.batch_size - len(batch))
                for (digest, _), vector in zip(batch, np.asarray(self.embed(np.stack(ls)), dtype=np.float32)):
                    self.write(digest, vector)  # at once: an interrupted run loses no finished work
                    vectors[digest], self.computed = vector, self.computed + 1
            if verbose and len(todo) > self.batch_size:
                done = min(first + self.batch_size, len(todo))
                print(f"  embeddings: {done}/{len(todo)} computed", flush=True)
        nan = np.full(next((v.size for v in vectors.values()), 1), np.nan, np.float32)  # no embedding
        out = np.array([vectors.get(digests.get(path), nan) for path in paths], np.float32)
        if verbose:
            print(f"embeddings of {len(paths)} photos: {self.hits - hits} from the cache, "
                  f"{self.computed - computed} computed; cache: {self.folder}", flush=True)
        return out.reshape(len(paths), nan.size)


def _checksum(vector):
    return hashlib.sha256(np.ascontiguousarray(vector, dtype=np.float32).tobytes()).hexdigest()
