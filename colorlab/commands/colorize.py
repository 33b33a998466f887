"""Colour black-and-white photos with any trained stage model, at any resolution.

From a terminal (``python -m colorlab.commands.colorize`` is the same command)::

    colorize old_photos/ --model outputs/alpha/model.keras --out colourised/
    colorize scan.tif portrait.jpg --model outputs/beta/model.keras --out colourised/ --size 512

From Python or a notebook, the same code::

    from colorlab import coloring, images
    from colorlab.commands import colorize
    model = colorize.load_model("outputs/alpha/model.keras")
    size, multiple, color_space = colorize.resolve_settings("outputs/alpha/model.keras")
    rgb = coloring.colorize(model, [images.load("data/samples/chelsea.jpg")], size, multiple, color_space)[0]

How a photo is coloured is :mod:`colorlab.coloring`'s (the stages' result grids use it too): the output
has the photo's own size and lightness; only the colour comes from the network, which sees the photo at
a working size, its shorter side ``--size`` pixels (by default the ``IMAGE_SIZE`` the model was trained
at, from the ``settings.json`` beside it), padded to a multiple of ``--multiple`` (``MULTIPLE`` there,
else 8). A model that needs another multiple (a gan model copied without its ``settings.json``) is
tried on small inputs to find it. Any model from ``l`` (batch, height, width, 1) to ``ab`` (batch,
height, width, 2) works; the full stage's ``model.keras`` holds its classifier and works alone.

Three threads share the work, so that the network seldom waits: one reads each photo (8-bit) and
prepares what the network sees, the main one runs the network on the photos ready (up to ``--batch`` at
once), and one finishes each photo at full resolution and writes it. Queues of one photo between them
keep the memory flat, however many photos there are.

What it never does: replace a photo (even on a file system that does not tell ``Photo.JPG`` from
``Photo.jpg``), replace an output without ``--overwrite``, write through a symbolic link planted in the
output folder, write black photos for a model that predicts NaN, or leave a half-written file (each is
written under a temporary name and renamed; those of a killed run are removed by the next one).
"""

import argparse
import errno
import os
import re
import stat
import sys
import warnings
from pathlib import Path

import numpy as np

from colorlab import UserError, coloring, files, images, lab  # lab: registers the full stage's layer

DEFAULT_SIZE = 256  # working size when none is given and the model has no settings.json beside it
MULTIPLE = 8  # three stride-2 layers: the working size is padded to a multiple of 2**3
MAX_SIZE = 8192  # the largest working size (as the stages' IMAGE_SIZE)
MAX_MULTIPLE = 1024
BATCH = 8  # photos per model call, at most (evaluate)
PIPELINE_BATCH = 1  # colorize: a photo per call keeps reading and writing busy while the network works
MAX_BATCH_PIXELS = 12_000_000  # photos in one model call, in pixels at full size (3 bytes each, 8-bit)
MAX_WORKING_PIXELS = coloring.MAX_BATCH_PIXELS  # pixels the model sees at once: ~120 bytes each in flight
MAX_SETTINGS_BYTES = 256 * 1024  # a stage's settings.json is a few hundred bytes
FORMATS = ("png", "jpg", "webp", "tif", "bmp")


# ----------------------------------------------------------------------------------------------------
# The model and its settings


class ModelError(UserError):
    """A model that cannot color: ``"model '<name>' <problem>"`` (``problem`` alone, for other messages)."""

    def __init__(self, model, problem):
        super().__init__(f"model {getattr(model, 'name', '?')!r} {problem}")
        self.problem = problem


class SizeMismatch(ModelError):
    """The model returned another size than its input's (or failed at that size)."""


class NotANumber(ModelError):
    """The model predicted NaN or infinite colors: broken weights."""


def load_model(path):
    """Load a stage's saved model (``model.keras``), in float32, and check that it maps l to ab.

    Any problem (no such file, a damaged file, not a Keras model, the wrong inputs or outputs) is a
    one-line UserError that names the file.
    """
    path = Path(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise UserError(f"{path}: no such model file" if not path.is_symlink() else
                        f"{path}: broken symbolic link, no model file behind it") from None
    except OSError as error:
        raise UserError(f"{path}: cannot read the model file ({error.strerror or error})") from None
    if stat.S_ISDIR(info.st_mode):
        raise UserError(f"{path}: is a folder; expected a model file such as outputs/alpha/model.keras")
    if not stat.S_ISREG(info.st_mode):
        raise UserError(f"{path}: not a regular file (a device or a pipe); expected a model file such as "
                        f"outputs/alpha/model.keras")
    if path.suffix.lower() not in (".keras", ".h5"):
        raise UserError(f"{path}: not a Keras model file (expected a .keras file, as the stages write)")
    import keras

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = keras.saving.load_model(path, compile=False)
    except Exception as error:  # Keras reports bad files with many exception types
        reason = _first_line(error)
        if "not found" in reason.lower() or "no such file" in reason.lower():  # Keras's words for "not a zip"
            reason = "it is not a complete .keras archive"
        raise UserError(f"{path}: damaged or not a Keras model ({reason}); save it again from its "
                        f"stage") from None
    check_model(model, path)
    return in_float32(model)


def in_float32(model):
    """``model`` itself, or, if any of its layers use a mixed dtype policy (a stage's MIXED_PRECISION), its
    float32 copy with the same weights: photos are coloured at full precision, and fast on a CPU."""
    import keras

    if not any(layer.dtype_policy.name.startswith("mixed") for layer in model._flatten_layers()):
        return model
    copy = keras.saving.deserialize_keras_object(_float32_config(keras.saving.serialize_keras_object(model)))
    copy.set_weights(model.get_weights())
    return copy


def _float32_config(config):
    """A serialized model with every mixed dtype policy (nested models included) replaced by float32."""
    if isinstance(config, dict):
        policy = config.get("class_name") == "DTypePolicy"
        if policy and str(config.get("config", {}).get("name")).startswith("mixed"):
            return {**config, "config": {**config["config"], "name": "float32"}}
        return {key: _float32_config(value) for key, value in config.items()}
    return [_float32_config(value) for value in config] if isinstance(config, list) else config


def check_model(model, name=None):
    """Check that ``model`` takes l (batch, height, width, 1) of any size and returns ab (batch, height,
    width, 2). Raises a one-line UserError that names the model and what does not fit."""
    name = name or f"model {getattr(model, 'name', '?')!r}"
    try:
        inputs, outputs = list(model.inputs), list(model.outputs)
    except (AttributeError, ValueError):
        inputs = outputs = None
    if not inputs or not outputs:
        raise UserError(f"{name}: the model has no defined inputs; build it on "
                        f"keras.Input(shape=(None, None, 1))")
    shapes = [tuple(x.shape) for x in inputs]
    if len(shapes) != 1 or len(shapes[0]) != 4 or shapes[0][-1] != 1:
        raise UserError(f"{name}: takes input {_shapes(shapes)}, but colorize needs one lightness input l "
                        f"of shape (batch, height, width, 1)")
    if shapes[0][1] is not None or shapes[0][2] is not None:
        raise UserError(f"{name}: takes only {shapes[0][2]}x{shapes[0][1]} inputs; colorize needs a model "
                        f"built on keras.Input(shape=(None, None, 1)), to colour photos of any size")
    out_shapes = [tuple(y.shape) for y in outputs]
    if len(out_shapes) != 1 or len(out_shapes[0]) != 4 or out_shapes[0][-1] != 2:
        raise UserError(f"{name}: outputs {_shapes(out_shapes)}, but colorize needs ab of shape "
                        f"(batch, height, width, 2)")


def saved_settings(model_path, warn=None):
    """What colorize needs to know of a saved model, from the ``settings.json`` its stage wrote beside it.

    Returns ``{"size": IMAGE_SIZE, "multiple": MULTIPLE, "color_space": COLOR_SPACE}``, each falling back
    to the default (256, 8, "lab") when the file or the setting is missing: alpha and beta save no
    MULTIPLE (their three stride-2 layers need 8); gan saves its U-Net's 2**DEPTH and its colour space.
    The file is read defensively (a regular file of at most 256 KiB, nested at most 20 deep): a damaged
    or hostile one, or a value of the wrong type, is ignored with one line passed to ``warn`` (default:
    printed to stderr), never an error.
    """
    warn = warn or (lambda text: print(f"warning: {text}", file=sys.stderr))
    defaults = {"size": DEFAULT_SIZE, "multiple": MULTIPLE, "color_space": "lab"}
    if model_path is None:
        return defaults
    path = Path(model_path).with_name("settings.json")
    fallback = f"colorize uses its defaults (--size {DEFAULT_SIZE}, --multiple {MULTIPLE}, lab)"
    try:
        found = files.read_json(path, limit=MAX_SETTINGS_BYTES)
    except UserError as error:
        warn(f"{str(error).removesuffix('; it was ignored')}; it was ignored: {fallback}")
        return defaults
    if found is None:
        return defaults
    if not isinstance(found, dict):
        kind = type(found).__name__
        warn(f"{path}: holds a {kind}, not the settings of a stage; it was ignored: {fallback}")
        return defaults

    settings, bad = dict(defaults), []
    for key, name, largest in (("IMAGE_SIZE", "size", MAX_SIZE), ("MULTIPLE", "multiple", MAX_MULTIPLE)):
        value = found.get(key)
        if value is None:
            continue
        if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= largest:
            settings[name] = value
        else:
            bad.append(f"{key}={_brief(value)} (expected a whole number, 1 to {largest})")
    value = found.get("COLOR_SPACE")
    if value is not None:
        if isinstance(value, str) and value in lab.COLOR_SPACES:
            settings["color_space"] = value
        else:
            bad.append(f"COLOR_SPACE={_brief(value)} (expected {' or '.join(map(repr, lab.COLOR_SPACES))})")
    if bad:
        warn(f"{path}: ignored {', '.join(bad)}; colorize uses its default for each")
    return settings


def resolve_settings(model_path, size=None, multiple=None, color_space=None, warn=None):
    """``(size, multiple, color_space)``: each one given, else the saved model's own (see saved_settings)."""
    saved = saved_settings(model_path, warn) if None in (size, multiple, color_space) else {}
    return size or saved["size"], multiple or saved["multiple"], color_space or saved["color_space"]


class Colorer:
    """A model and its settings, colouring photos with :mod:`colorlab.coloring`: all at once
    (``colorer(rgbs)``, which is :func:`~colorlab.coloring.colorize`), or in its three steps, as :func:`run`.

    A model that does not return its input's size at the multiple it was given (a gan model copied without
    its ``settings.json``, a wrong ``--multiple``) is tried on small inputs once: if another multiple fits,
    it is used from then on, with a note; if none does, it is a one-line UserError. So is a model that
    predicts NaN: nothing is written for it.
    """

    def __init__(self, model, name, size, multiple, color_space, note=None):
        self.model, self.name = model, name
        self.size, self.multiple, self.color_space = size, multiple, color_space
        self.note = note or _note
        self.inferred = False

    def __call__(self, rgbs):
        return self._guarded(lambda model: coloring.colorize(model, rgbs, self.size, self.multiple,
                                                             self.color_space))

    def prepare(self, rgb):
        """Step 1, for one photo: what the model sees of it (and the multiple it was padded to)."""
        return coloring.prepare(rgb, self.size, self.multiple, self.color_space), self.multiple

    def predict(self, rgbs, prepared):
        """Step 2: the model's ab for each photo, from ``prepared`` (done again if the multiple changed)."""
        return self._guarded(lambda model: coloring.predict_ab(model, [
            work if multiple == self.multiple else self.prepare(rgb)[0] for rgb, (work, multiple) in
            zip(rgbs, prepared)]))

    def finish(self, rgb, ab):
        """Step 3, for one photo: its colours at its own size."""
        return coloring.finish(rgb, ab, self.color_space)

    def working_pixels(self, rgb):
        """The pixels the model sees for this photo (its padded working size)."""
        return working_pixels(rgb.shape[0], rgb.shape[1], self.size, self.multiple)

    def _guarded(self, call):
        """``call(model)``, the model's output checked; a size mismatch retried once at the multiple found."""
        try:
            return call(_Guarded(self.model))
        except SizeMismatch as error:
            if self.inferred:
                raise self._cannot(error, self.multiple) from None
            self.inferred, tried = True, self.multiple
            found = infer_multiple(self.model)
            if found is None or found == tried:
                raise self._cannot(error, found) from None
            self.note(f"{self.name} does not keep the size of inputs padded to multiples of {tried}; it does "
                      f"for multiples of {found}: using --multiple {found}")
            self.multiple = found
            return self._guarded(call)
        except ModelError as error:  # NotANumber
            raise UserError(f"{self.name}: {error.problem}") from None

    def _cannot(self, error, found):
        if found is None:
            return UserError(f"{self.name}: {error.problem}, and keeps the size of none of the inputs it "
                             f"was tried on (sides dividing by 1, 2, 4, ... 256): it cannot colour photos at "
                             f"their input's size")
        return UserError(f"{self.name}: {error.problem}: it cannot colour photos at their input's size")


# ----------------------------------------------------------------------------------------------------
# Finding photos, and where their colour versions go


def find_photos(paths, exclude=None):
    """The photos named by ``paths`` (files, or folders searched recursively), each with the relative
    path its output mirrors: a file's own name, or its path inside the folder named.

    A path that does not exist is a UserError. Photos under ``exclude`` (the output folder, when it lies
    inside an input folder) are left out, so that a second run does not colour its own outputs.
    """
    exclude = _real(exclude) if exclude is not None else None
    found, seen = [], set()
    for arg in paths:
        path = Path(arg)
        if path.is_dir():
            inside = exclude is not None and exclude != _real(path) and exclude.is_relative_to(_real(path))
            pairs = [(p, p.relative_to(path)) for p in images.list_images(path)]
            if inside:
                pairs = [(p, r) for p, r in pairs if not _real(p).is_relative_to(exclude)]
        elif os.path.lexists(path):
            pairs = [(path, Path(path.name))]
        else:
            raise UserError(f"{path}: no such file or folder")
        for photo, relative in pairs:
            key = _real(photo)
            if key not in seen:
                seen.add(key)
                found.append((photo, relative))
    return found


def identity(path):
    """What the file system says a path is, (device, inode), following links; None if nothing is there.

    Two paths are one file exactly when their identities agree, whatever their spelling: on a
    case-insensitive disk (macOS, Windows) ``Photo.JPG`` and ``Photo.jpg`` are one file."""
    try:
        info = os.stat(path)
    except (OSError, ValueError):
        return None
    return info.st_dev, info.st_ino


def link_on_the_way(out_dir, target):
    """The first symbolic link among the folders from ``out_dir`` (excluded) down to ``target``'s folder,
    or None: colorize never writes through a link planted in its output folder."""
    folder = Path(out_dir)
    for part in Path(target).parent.relative_to(out_dir).parts:
        folder = folder / part
        if folder.is_symlink():
            return folder
    return None


# ----------------------------------------------------------------------------------------------------
# The command


def run(paths, model_path, out_dir, size=None, batch=PIPELINE_BATCH, multiple=None, fmt="png",
        overwrite=False):
    """Colour every photo in ``paths`` into ``out_dir``; returns the exit status (1 if any photo failed)."""
    from tqdm import tqdm

    out_dir = files.check_destination(out_dir, "--out")
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{out_dir}: --out is a file, not a folder")
    found = find_photos(paths, exclude=out_dir)
    if not found:
        raise UserError(f"no photos found in {', '.join(map(str, paths))} ({', '.join(images.EXTENSIONS)})")
    model = load_model(model_path)  # every problem with the model shows before any photo is touched
    size, multiple, color_space = resolve_settings(model_path, size, multiple)
    colorer = Colorer(model, model_path, size, multiple, color_space)
    if out_dir.is_dir():
        files.remove_temporaries(out_dir)  # what a killed run left half-written

    jobs, skipped, failures, claimed = [], 0, [], {}
    inputs = {identity(photo) for photo, _ in found} - {None}
    for photo, relative in found:
        target = out_dir / relative.with_suffix("." + fmt)
        key = os.path.normcase(target)
        problem = _refusal(photo, target, out_dir, inputs, claimed.get(key))
        if problem:
            failures.append(problem)
        elif os.path.lexists(target) and not overwrite:
            claimed[key] = photo
            skipped += 1
        else:
            claimed[key] = photo
            jobs.append((photo, target))
    for failure in failures:
        print(f"failed: {failure}", file=sys.stderr)

    print(f"colouring {plural(len(jobs), 'photo')} with {model_path} (working size {size}) into {out_dir}",
          flush=True)
    counts, written = {"done": 0, "skipped": skipped}, {}  # written: identity -> the photo coloured in it

    def write(job, rgb):  # in the writing thread, one photo at a time
        photo, target = job
        other = written.get(identity(target) or target)
        if problem := _refusal(photo, target, out_dir, inputs, other, written=True):
            raise _Failed(problem)
        if os.path.lexists(target) and not overwrite:  # it appeared since: someone else's
            counts["skipped"] += 1
        else:
            _write(target, rgb)
            written[identity(target) or target] = photo
            counts["done"] += 1

    with tqdm(total=len(jobs), unit="photo", disable=None, file=sys.stderr, dynamic_ncols=True) as bar:
        def failed(problem):
            failures.append(problem)
            tqdm.write(f"failed: {problem}", file=sys.stderr)

        try:
            pipeline(colorer, jobs, lambda job: images.load_8bit(job[0]), write, failed, bar.update, batch)
        except files.WriteError as error:  # every next photo would fail the same way: stop
            raise _stopped(error, counts["done"], out_dir) from None

    summary = f"{counts['done']} colourised, {counts['skipped']} skipped, {len(failures)} failed"
    if counts["skipped"]:
        summary += f" (skipped: their output already exists in {out_dir}; --overwrite replaces them)"
    print(summary + (":" if failures else "") + "".join(f"\n  {failure}" for failure in failures))
    return 1 if failures else 0


def pipeline(colorer, jobs, load, write, failed, done, batch=PIPELINE_BATCH, max_pixels=MAX_BATCH_PIXELS,
             max_working=MAX_WORKING_PIXELS):
    """Colour ``jobs`` in three threads at once, so that reading and writing photos overlap the network: one
    reads each photo (``load(job)``, 8-bit RGB) and prepares it (:meth:`Colorer.prepare`); this one runs the
    network on the photos ready, up to ``batch`` per call (fewer once they hold ``max_pixels`` pixels, or
    ``max_working`` at the working size); one finishes each photo and passes it to ``write(job, rgb)``.
    Between them, queues of at most ``max_pixels`` pixels (or one photo): the memory stays flat, whatever
    the number of photos.

    A photo that cannot be read, coloured or written goes to ``failed(one line)`` and the others go on;
    ``done()`` is called once per photo, failed or not. A ``files.WriteError`` (a full disk), a UserError (a
    model that predicts NaN) or Ctrl-C stops it all, once the photos already coloured are written.
    """
    import threading

    _give_back_freed_memory()
    lock, stop, fatal = threading.Lock(), threading.Event(), []
    ready, coloured = _Photos(max_pixels, stop), _Photos(max_pixels, stop)

    def report(problem=None):  # from any of the threads
        with lock:
            if problem is not None:
                failed(problem)
            done()

    def read():
        try:
            for job in jobs:
                if not ready.room():  # waits: the next photo is read only when the queue has room for it
                    return
                try:
                    rgb = load(job)
                except images.ImageError as error:
                    report(str(error))
                    continue
                ready.put((job, rgb, colorer.prepare(rgb)), rgb.shape[0] * rgb.shape[1])
        except BaseException as error:  # a bug, or memory: raised in the main thread
            ready.put(error)
        ready.put(_END)

    def finish_and_write():
        while (item := coloured.get(until_stop=False)) is not _END:
            (photo, target), rgb, ab = item
            del item  # the photo is freed once finished, before its colours are written
            try:
                if isinstance(ab, MemoryError):
                    raise ab
                rgb = colorer.finish(rgb, ab)
                write((photo, target), rgb)
                report()
            except _Failed as error:
                report(str(error))
            except (OSError, MemoryError) as error:
                report(f"{photo}: " + ("too large for the memory available" if isinstance(error, MemoryError)
                                       else f"cannot write {target} ({error.strerror or error})"))
            except BaseException as error:  # a full disk (files.WriteError) or a bug: raised in the main one
                fatal.append(error)
                return stop.set()
            finally:
                rgb = ab = None

    reader = threading.Thread(target=read, name="colorize-read", daemon=True)
    writer = threading.Thread(target=finish_and_write, name="colorize-write", daemon=True)
    reader.start()
    writer.start()
    try:
        pending = ready.get()
        while pending is not _END and not stop.is_set():
            if isinstance(pending, BaseException):
                raise pending
            group, pending = [pending], None
            while len(group) < batch and (pending := ready.get(wait=False)) is not None:
                if pending is _END or isinstance(pending, BaseException) or _too_many(
                        group + [pending], colorer, max_pixels, max_working):
                    break  # kept for the next call
                group.append(pending)
                pending = None
            for item in _predict_each(colorer, group):
                if coloured.room():
                    coloured.put(item, item[1].shape[0] * item[1].shape[1])
            group = item = None
            pending = ready.get() if pending is None else pending
    except BaseException:
        stop.set()  # the reader stops; the writer still writes the photos coloured so far
        raise
    finally:
        coloured.put(_END)
        writer.join()
        stop.set()
        reader.join(timeout=5)
    if fatal:
        raise fatal[0]


_END = object()  # the last item of a queue


def _give_back_freed_memory(threshold=4 << 20):
    """Have the C library map arrays of ``threshold`` bytes or more on their own, so that each is given back
    to the system when freed. glibc's malloc otherwise raises that threshold as big blocks are freed, then
    keeps what the threads free for later (here, photo-sized holes in several of its arenas): the colorize
    command's memory would grow by a few photos. Elsewhere (macOS, Windows) nothing to do."""
    try:
        import ctypes

        ctypes.CDLL(None).mallopt(-3, threshold)  # M_MMAP_THRESHOLD, fixed: no longer raised
    except Exception:  # no glibc here
        pass


class _Photos:
    """A queue of photos between two threads, bounded by their pixels: ``room()`` waits while it holds
    ``limit`` pixels or more, so that a thread reads or passes on a photo only when there is room for it."""

    def __init__(self, limit, stop):
        import collections
        import threading

        self.items, self.pixels, self.limit, self.stop = collections.deque(), 0, limit, stop
        self.changed = threading.Condition()

    def room(self):
        """Wait until the queue holds fewer than ``limit`` pixels; False if the run stopped meanwhile."""
        with self.changed:
            while self.pixels >= self.limit and not self.stop.is_set():
                self.changed.wait(0.1)
            return not self.stop.is_set()

    def put(self, item, pixels=0):
        with self.changed:
            self.items.append((item, pixels))
            self.pixels += pixels
            self.changed.notify_all()

    def get(self, wait=True, until_stop=True):
        """The next item: None if there is none and ``wait`` is False; ``_END`` once the run stops (unless
        ``until_stop`` is False: the writer writes what was coloured before a stop)."""
        with self.changed:
            while not self.items:
                if not wait:
                    return None
                if until_stop and self.stop.is_set():
                    return _END
                self.changed.wait(0.1)
            item, pixels = self.items.popleft()
            self.pixels -= pixels
            self.changed.notify_all()
            return item


def _too_many(group, colorer, max_pixels, max_working):
    """Whether ``group`` of (job, rgb, prepared) holds more than one model call should take."""
    pixels = sum(rgb.shape[0] * rgb.shape[1] for _, rgb, _ in group)
    working = sum(colorer.working_pixels(rgb) for _, rgb, _ in group)
    return len(group) > 1 and (pixels > max_pixels or working > max_working)


def _predict_each(colorer, group):
    """(job, rgb, ab) for each photo of ``group``; if the model runs out of memory on them all, one photo at a
    time, and a photo that alone does not fit gets its MemoryError in place of ab."""
    try:
        predicted = colorer.predict([rgb for _, rgb, _ in group], [prepared for *_, prepared in group])
        return [(job, rgb, ab) for (job, rgb, _), ab in zip(group, predicted)]
    except MemoryError:
        results = []
        for job, rgb, prepared in group:
            try:
                results.append((job, rgb, colorer.predict([rgb], [prepared])[0]))
            except MemoryError as error:
                results.append((job, rgb, error))
        return results


def _refusal(photo, target, out_dir, inputs, other, written=False):
    """Why ``photo`` must not be written to ``target`` (one line naming both), or None."""
    if other is not None:
        same = " (this disk does not tell upper from lower case)" if written else ""
        return f"{photo}: its output {target} is already the output of {other}{same}"
    if identity(target) in inputs:
        return f"{photo}: its output would replace the input photo {target}; choose another --out or --format"
    if _is_folder(target):
        return (f"{photo}: its output {target} is a folder: nothing was written for it; rename that "
                f"folder or choose another --out")
    link = link_on_the_way(out_dir, target)
    if link is not None:
        return (f"{photo}: refused to write {target}: {link} is a symbolic link, and colorize writes only "
                f"inside --out")
    return None


def _is_folder(path):
    """A folder, not a link to one; False for a name the file system refuses (too long, say)."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except (OSError, ValueError):
        return False


class _Failed(Exception):
    """One photo that cannot be written; the others go on."""


def _write(target, rgb):
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        if error.errno in _CANNOT_WRITE:  # a full disk or a read-only folder: as a failed write
            raise files.WriteError(target.parent, os.strerror(error.errno), "nothing was written",
                                   disk_full=error.errno in _DISK_FULL) from None
        raise
    images.save(target, rgb)


_DISK_FULL = tuple(getattr(errno, name) for name in ("ENOSPC", "EDQUOT") if hasattr(errno, name))
_CANNOT_WRITE = _DISK_FULL + tuple(getattr(errno, name) for name in ("EROFS", "EACCES", "EPERM")
                                   if hasattr(errno, name))


def _stopped(error, done, out_dir):
    """The one line for a write that no photo after it can pass: a full disk, a read-only folder..."""
    before = f"{plural(done, 'photo')} {'was' if done == 1 else 'were'} coloured before it"
    if error.disk_full:
        return UserError(f"{error}. {before}; run the same command again to do the rest (the ones done are "
                         f"skipped)")
    return UserError(f"{error.path}: cannot write it ({error.reason}); {before}; choose another --out "
                     f"(a folder you may write to)")


def batches(items, load, size=BATCH, max_pixels=MAX_BATCH_PIXELS, on_error=None, working=None,
            max_working=MAX_WORKING_PIXELS):
    """Load ``items`` one by one with ``load`` and yield lists of ``(item, rgb)``: ``size`` photos, or fewer
    once they hold ``max_pixels`` pixels, or once ``working(rgb)`` (the pixels the model will see for each)
    adds up to ``max_working``: so a folder of camera photos, or small photos coloured at ``--size 3000``,
    need no more memory than small ones. A photo that cannot be read goes to ``on_error(item, error)``
    (without it, it raises).
    """
    batch, pixels, seen = [], 0, 0
    for item in items:
        try:
            rgb = load(item)
        except images.ImageError as error:
            if on_error is None:
                raise
            on_error(item, error)
            continue
        batch.append((item, rgb))
        pixels += rgb.shape[0] * rgb.shape[1]
        seen += working(rgb) if working is not None else 0
        if len(batch) >= size or pixels >= max_pixels or seen >= max_working:
            yield batch
            batch, pixels, seen = [], 0, 0
    if batch:
        yield batch


def positive_int(text, largest=None):
    """An argparse type: a whole number of at least 1 (and at most ``largest``)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1 or (largest is not None and value > largest):
        raise argparse.ArgumentTypeError(f"expected a number from 1 to {largest}, got {value}" if largest else
                                         f"expected a number of at least 1, got {value}")
    return value


def size_argument(text):
    return positive_int(text, MAX_SIZE)


def multiple_argument(text):
    return positive_int(text, MAX_MULTIPLE)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="colorize",
        description="Colour black-and-white photos (colour photos are used as their grey version) with a "
        "trained stage model. Outputs have the size and lightness of their input and mirror the inputs' "
        "paths.",
    )
    parser.add_argument("photos", nargs="+", metavar="PHOTO_OR_FOLDER",
                        help="photos, or folders searched recursively")
    parser.add_argument("--model", required=True, metavar="MODEL.keras", help="a stage's saved model")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for the coloured photos")
    parser.add_argument("--size", type=size_argument, metavar="PIXELS",
                        help="working size, the shorter side the model sees (default: the IMAGE_SIZE in the "
                        f"settings.json beside the model, else {DEFAULT_SIZE})")
    parser.add_argument("--batch", type=positive_int, default=PIPELINE_BATCH,
                        help=f"photos per model call, at most, of those read and waiting (default "
                        f"{PIPELINE_BATCH}: on a CPU batches are no faster; more may help a GPU)")
    parser.add_argument("--multiple", type=multiple_argument,
                        help="pad the working size to a multiple of this (default: the MULTIPLE in the "
                        f"settings.json beside the model, else {MULTIPLE}: three stride-2 layers; a model "
                        "that needs another is tried on small inputs to find it)")
    parser.add_argument("--format", default="png", choices=FORMATS, help="output format (default png)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace outputs that already exist (never a photo)")
    args = parser.parse_args(argv)
    return command(lambda: run(args.photos, args.model, args.out, args.size, args.batch, args.multiple,
                               args.format, args.overwrite),
                   interrupted="the photos finished so far are written; run again to do the rest")


def command(body, interrupted):
    """Run a command's ``body``: Python warnings silenced (the command says what matters in its own lines),
    a UserError printed as one line with exit status 2, Ctrl-C as one line with 130."""
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            return body()
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted: {interrupted}", file=sys.stderr)
        return 130


def _note(text):
    from tqdm import tqdm

    tqdm.write(f"note: {text}", file=sys.stderr)  # above the progress bar, if one is shown


def plural(number, noun):
    """"1 photo", "2 photos"."""
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _real(path):
    """The absolute path with every symbolic link resolved; unlike ``Path.resolve``, a link loop is not an
    error here (loading it is, with a one-line message)."""
    return Path(os.path.realpath(path))


def _shapes(shapes):
    return " and ".join(str(tuple(s)) for s in shapes)


def _brief(value):
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _first_line(error):
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return text if len(text) <= 200 else text[:197] + "..."



# ----------------------------------------------------------------------------------------------------
# Probing a model: what it does at a given input size


def working_pixels(height, width, size=None, multiple=8):
    """How many pixels the model sees for a (height, width) photo: its padded working size's area."""
    (_, _), (h8, w8) = coloring.working_shape(height, width, size, multiple)
    return h8 * w8


class _Guarded:
    """``model`` called through :func:`run_model`, its output checked: another size than its input's (or a
    failure at that size) is a :class:`SizeMismatch`, colors that are not numbers a :class:`NotANumber`."""

    def __init__(self, model):
        self.model, self.name = model, model.name

    def __call__(self, batch, training=False):
        ab, (ph, pw) = run_model(self.model, batch), batch.shape[1:3]
        if ab.ndim != 4 or ab.shape[1:] != (ph, pw, 2):
            got = "x".join(map(str, (ab.shape[2], ab.shape[1], *ab.shape[3:]))) if ab.ndim >= 3 else "?"
            raise SizeMismatch(self.model, f"turned a {pw}x{ph} input into a {got} output, not {pw}x{ph}x2")
        if not np.all(np.isfinite(ab)):
            raise NotANumber(self.model, "predicts colors that are not numbers (NaN): its weights are "
                                         "broken; retrain it, or use another model")
        return ab


def run_model(model, batch):
    """The model's output for ``batch`` (:func:`colorlab.coloring.forward`), as a float32 NumPy array. A model
    that fails at this input size (a U-Net whose skip connections no longer line up) is a
    :class:`SizeMismatch`; running out of memory is a MemoryError."""
    try:
        return coloring.forward(model, batch)
    except MemoryError:
        raise
    except Exception as error:  # each backend has its own error types for shapes that do not fit
        text = str(error).strip()
        if type(error).__name__ == "ResourceExhaustedError" or "out of memory" in text.lower():
            raise MemoryError(f"out of memory on a {batch.shape[2]}x{batch.shape[1]} input") from None
        lines = [line for line in _plain(text).splitlines() if re.search(r"shape|size|dimension", line, re.I)]
        if not lines:
            raise  # not about sizes: a bug worth its traceback
        reason = lines[-1] if "ConcatOp" not in text else next(line for line in lines if "ConcatOp" in line)
        size = f"{batch.shape[2]}x{batch.shape[1]}"
        raise SizeMismatch(model, f"fails on a {size} input ({_short(reason)})") from None


def infer_multiple(model, largest=256):
    """The smallest power of two ``m`` (up to ``largest``) such that ``model`` returns ab of its input's size
    for inputs whose sides divide by ``m`` (tried on an m x 2m and a 3m x m input); None if there is none,
    as for a model that halves the resolution."""
    m = 1
    while m <= largest:
        try:
            if all(run_model(model, np.full((1, h, w, 1), 0.5, np.float32)).shape == (1, h, w, 2)
                   for h, w in ((m, 2 * m), (3 * m, m))):
                return m
        except SizeMismatch:
            pass
        m *= 2
    return None


def _plain(text):
    return re.sub("\x1b\\[[0-9;]*m", "", text)  # TensorFlow's messages carry terminal colour codes


def _short(text, limit=160):
    text = " ".join(_plain(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


if __name__ == "__main__":
    sys.exit(main())
