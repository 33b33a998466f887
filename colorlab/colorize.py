"""Colour black-and-white photos with any trained stage model, at any resolution.

From a terminal (``python -m colorlab.colorize`` is the same command)::

    colorize old_photos/ --model outputs/alpha/model.keras --out colourised/
    colorize scan.tif portrait.jpg --model outputs/beta/model.keras --out colourised/ --size 512

From Python or a notebook, the same code::

    from colorlab import colorize
    model = colorize.load_model("outputs/alpha/model.keras")
    rgb = colorize.colorize(model, "data/samples/chelsea.jpg", size=256)  # (H, W, 3) in [0, 1]

How a photo is coloured, whatever its size:

1. its lightness ``l`` is taken at full resolution (a colour photo is used as its grey version);
2. the model runs at a working size: the photo scaled so that its longer side is ``size`` pixels (by
   default the ``IMAGE_SIZE`` the model was trained at, read from the ``settings.json`` beside it),
   padded to a multiple of 8 by mirroring its bottom and right edges;
3. the predicted ``ab`` is cropped, upsampled (bilinear) to the photo's own size, pulled into the
   sRGB gamut without changing the lightness, and joined with the full-resolution ``l``.

So the output keeps every detail of the input: only the colour comes from the network, at the
network's resolution, which is how colour works in our eyes too (we see detail in lightness).

Any model that takes ``l`` (batch, height, width, 1) in [0, 1] and returns ``ab`` (batch, height,
width, 2) in [-1, 1] works: alpha's today, beta's and gan's later. The full stage's ``model.keras``
is such a model too: it holds its classifier and computes each photo's embedding from ``l`` itself
(the classifier sees the working-size photo, so ``--size 299`` or more shows it the detail it had in
training). A model with a further input works once its stage says how to compute it from ``l``::

    colorize.EXTRA_INPUTS["embedding"] = embedding_of  # (N, h, w, 1) l batch -> (N, ...) array
"""

import argparse
import json
import os
import sys
import warnings
from pathlib import Path

import numpy as np

from colorlab import UserError, files, images, lab

DEFAULT_SIZE = 256  # working size when none is given and the model has no settings.json beside it
MULTIPLE = 8  # three stride-2 layers: the working size is padded to a multiple of 2**3
MAX_ASPECT = 4  # the working size's longer side is at most this many times its shorter side
BATCH = 8  # photos per model call
MAX_BATCH_PIXELS = 12_000_000  # fewer photos per call when they are large: each pixel costs ~120 bytes in flight
FORMATS = ("png", "jpg", "webp", "tif", "bmp")

# How to compute a model input other than l, by the input's name: a function from the batch of
# working-size l, (N, h, w, 1) in [0, 1], to that input's batch. The full stage registers its embedding.
EXTRA_INPUTS = {}


# ----------------------------------------------------------------------------------------------------
# The model


def load_model(path):
    """Load a stage's saved model (``model.keras``) and check that it maps l to ab.

    Any problem (no such file, not a Keras model, the wrong inputs or outputs) is a one-line UserError.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such model file")
    if path.is_dir():
        raise UserError(f"{path}: is a folder; expected a model file such as outputs/alpha/model.keras")
    if path.suffix.lower() not in (".keras", ".h5"):
        raise UserError(f"{path}: not a Keras model file (expected a .keras file, as the stages write)")
    import keras

    from colorlab import classifiers, fusion  # noqa: F401  (registers the full stage's layers, so its models load)

    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as error:  # Keras reports bad files with many exception types
        raise UserError(f"{path}: cannot load the model ({_first_line(error)})") from None
    check_model(model, path)
    return model


def saved_settings(model_path):
    """What colorize needs to know of a saved model, from the ``settings.json`` its stage wrote beside it.

    Returns ``{"size": IMAGE_SIZE, "multiple": MULTIPLE, "color_space": COLOR_SPACE}``, each falling back
    to the default (256, 8, "lab") when the file or the setting is missing: alpha and beta save no
    MULTIPLE (their three stride-2 layers need 8); gan saves its U-Net's 2**DEPTH and its colour space.
    """
    found = {}
    path = Path(model_path).with_name("settings.json")
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
        found = found if isinstance(found, dict) else {}
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as error:
        warnings.warn(f"{path}: cannot read the model's settings ({error}); using the defaults", stacklevel=2)

    def positive(value, default):
        return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else default

    color_space = found.get("COLOR_SPACE", "lab")
    return {
        "size": positive(found.get("IMAGE_SIZE"), DEFAULT_SIZE),
        "multiple": positive(found.get("MULTIPLE"), MULTIPLE),
        "color_space": color_space if color_space in lab.COLOR_SPACES else "lab",
    }


def resolve_settings(model_path, size=None, multiple=None, color_space=None):
    """``(size, multiple, color_space)``: each one given, else the saved model's own (see saved_settings)."""
    saved = saved_settings(model_path) if model_path is not None else saved_settings(os.devnull)
    return size or saved["size"], multiple or saved["multiple"], color_space or saved["color_space"]


def check_model(model, name=None):
    """Check that ``model`` takes l (batch, height, width, 1) and returns ab (batch, height, width, 2).

    Returns the position of the l input among ``model.inputs``; every other input must have a function
    in ``EXTRA_INPUTS``. Raises a one-line UserError that names the model and what does not fit.
    """
    name = name or f"model {getattr(model, 'name', '?')!r}"
    try:
        inputs, outputs = list(model.inputs), list(model.outputs)
    except (AttributeError, ValueError):
        inputs = outputs = None
    if not inputs or not outputs:
        raise UserError(f"{name}: the model has no defined inputs; build it on keras.Input(shape=(None, None, 1))")
    shapes = [tuple(x.shape) for x in inputs]
    candidates = [i for i, shape in enumerate(shapes) if len(shape) == 4 and shape[-1] == 1]
    if len(candidates) != 1:
        raise UserError(
            f"{name}: takes input {_shapes(shapes)}, but colorize needs one lightness input l of shape "
            f"(batch, height, width, 1)"
        )
    l_index = candidates[0]
    for i, x in enumerate(inputs):
        if i != l_index and _input_name(x) not in EXTRA_INPUTS:
            raise UserError(
                f"{name}: has an input {_input_name(x)!r} of shape {_shapes([shapes[i]])} that colorize does not "
                f"know how to compute; its stage must add it to colorlab.colorize.EXTRA_INPUTS"
            )
    out_shapes = [tuple(y.shape) for y in outputs]
    if len(out_shapes) != 1 or len(out_shapes[0]) != 4 or out_shapes[0][-1] != 2:
        raise UserError(
            f"{name}: outputs {_shapes(out_shapes)}, but colorize needs ab of shape (batch, height, width, 2)"
        )
    return l_index


# ----------------------------------------------------------------------------------------------------
# Colouring


def colorize(model, photo, size=None, multiple=None, color_space=None):
    """Colour one photo: a file path or an (H, W, 3) RGB array in [0, 1]; returns RGB of the same size.

    ``model`` is a Keras model or the path of a saved one (then ``size`` defaults to the IMAGE_SIZE it
    was trained at, and ``multiple`` and ``color_space`` to what its stage saved). ``size`` is the
    working size: the model sees the photo with its shorter side scaled to that many pixels, as the
    stages cut their training crops; the output has the photo's own size and lightness.
    """
    return colorize_batch(model, [photo], size, multiple, color_space)[0]


def colorize_batch(model, photos, size=None, multiple=None, color_space=None):
    """Colour several photos (paths or RGB arrays) with as few model calls as possible.

    Photos whose padded working sizes agree go through the model together; the result does not depend
    on which photos share a batch.
    """
    path = model if isinstance(model, (str, os.PathLike)) else None
    size, multiple, color_space = resolve_settings(path, size, multiple, color_space)
    if path is not None:
        model = load_model(path)
    if size < 1 or multiple < 1:
        raise UserError(f"the working size and the multiple must be positive, got {size} and {multiple}")
    l_index = check_model(model)
    fixed = tuple(model.inputs[l_index].shape[1:3])
    fixed = None if None in fixed else fixed

    ls, works = [], []
    for photo in photos:
        rgb = images.load(photo) if isinstance(photo, (str, os.PathLike)) else _as_rgb(photo)
        l = _by_rows(lambda rgb: lab.split(rgb, color_space)[0], rgb)  # (H, W, 1): the full-resolution lightness (l, or y in YUV)
        (h, w), padded = working_shape(l.shape[0], l.shape[1], size, multiple, fixed)
        rgb_work = np.clip(images.resize(rgb, h, w, "lanczos"), 0.0, 1.0)  # as the stages load photos
        ls.append(l)
        works.append((lab.split(rgb_work, color_space)[0], padded))  # (h, w, 1), and its padded (h8, w8)
        del rgb
    abs_work = predict_ab(model, works, l_index)
    return [join(l, ab, color_space) for l, ab in zip(ls, abs_work)]


def working_shape(height, width, size, multiple=MULTIPLE, fixed=None):
    """Where the model sees a (height, width) photo: ((h, w) scaled, (h8, w8) padded).

    Scaled so that the shorter side is ``size``, as the stages cut their training crops and draw their
    grids (a panorama's longer side is capped at ``MAX_ASPECT`` x ``size``, so a 10000x20 strip does not
    become a 64000-pixel one); padded up to a multiple of ``multiple``. A model built
    for one size only (``fixed`` = its (height, width)) gets the photo fitted inside that size.
    """
    if fixed is not None:
        scale = min(fixed[0] / height, fixed[1] / width)
        h = min(fixed[0], max(1, round(height * scale)))
        w = min(fixed[1], max(1, round(width * scale)))
        return (h, w), tuple(fixed)
    scale = min(size / min(height, width), MAX_ASPECT * size / max(height, width))
    h, w = max(1, round(height * scale)), max(1, round(width * scale))
    return (h, w), (h + -h % multiple, w + -w % multiple)


def predict_ab(model, works, l_index=0):
    """Run the model on working-size l's: ``works`` is a list of (l (h, w, 1), (h8, w8) padded shape).

    Returns each photo's ab (h, w, 2), padding cropped off. One model call per padded shape.
    """
    import keras

    abs_work = [None] * len(works)
    groups = {}
    for i, (_, padded) in enumerate(works):
        groups.setdefault(padded, []).append(i)
    for (ph, pw), members in groups.items():
        batch = np.stack([_pad(works[i][0], ph, pw) for i in members])  # (N, h8, w8, 1)
        inputs = [None] * len(model.inputs)
        inputs[l_index] = batch
        for j, x in enumerate(model.inputs):
            if j != l_index:
                inputs[j] = np.asarray(EXTRA_INPUTS[_input_name(x)](batch))
        output = model(inputs if len(inputs) > 1 else batch, training=False)
        ab = keras.ops.convert_to_numpy(output).astype(np.float32)
        if ab.shape[1:3] != (ph, pw):
            raise UserError(
                f"model {model.name!r} turned a {pw}x{ph} input into a {ab.shape[2]}x{ab.shape[1]} output: it needs "
                f"other sizes; pad to a larger multiple (--multiple=16, 32, ...)"
            )
        for k, i in enumerate(members):
            h, w = works[i][0].shape[:2]
            abs_work[i] = ab[k, :h, :w]
    return abs_work


def join(l, ab_work, color_space="lab"):
    """The coloured photo: ab upsampled to l's size, brought into gamut, joined with the full-size l.

    (In YUV, ``l`` is the luma y and ``ab`` is uv; colours out of the RGB cube are clipped there.)
    """
    ab = images.resize(ab_work, l.shape[0], l.shape[1], "bilinear")  # (H, W, 2)
    if color_space != "lab":
        return _by_rows(lambda l, ab: lab.join(l, ab, color_space), l, ab)
    return _by_rows(lambda l, ab: lab.l_ab_to_rgb(l, fit_gamut(l, ab)), l, ab)


def _by_rows(convert, *arrays, pixels=1_000_000):
    """``convert(*arrays)`` for a per-pixel conversion, done a band of rows at a time: the same result,
    but its temporary arrays (several times the photo, in float64 inside scikit-image) stay small."""
    height, width = arrays[0].shape[:2]
    rows = max(1, pixels // max(1, width))
    if height <= rows:
        return convert(*arrays)
    return np.concatenate([convert(*(a[top : top + rows] for a in arrays)) for top in range(0, height, rows)])


# ----------------------------------------------------------------------------------------------------
# Keeping the lightness: colours that sRGB cannot show are desaturated, not darkened or lightened

_WHITE = np.array([0.95047, 1.0, 1.08883], np.float32)  # D65, the white point of sRGB (as scikit-image)
_RGB_FROM_XYZ = np.array(  # XYZ to linear sRGB (as scikit-image)
    [[3.24048134, -1.53715152, -0.49853633], [-0.96925495, 1.87599, 0.04155593], [0.05564664, -0.20404134, 1.05731107]],
    np.float32,
)


def fit_gamut(l, ab, steps=10, tolerance=1e-6):
    """Scale each pixel's ab towards 0 (same hue, less chroma) until (l, ab) is an sRGB colour.

    A network may predict, say, saturated blue on a near-white sky: a colour no screen can show.
    Clipping RGB (what ``lab.l_ab_to_rgb`` does alone) would change its lightness; this keeps the
    lightness of the input and gives up chroma instead, by bisection on the pixels out of gamut only
    (``steps`` halvings: the chroma kept is within 2**-steps of the most that fits).
    """
    l = np.asarray(l, dtype=np.float32)
    ab = np.array(ab, dtype=np.float32)
    flat_l, flat_ab = l.reshape(-1), ab.reshape(-1, 2)
    out = ~_in_gamut(flat_l, flat_ab, tolerance)
    if not out.any():
        return ab
    l_out, ab_out = flat_l[out], flat_ab[out]
    low = np.zeros(len(l_out), np.float32)  # a chroma scale that fits: 0 (grey) always does
    step = np.float32(0.5)
    for _ in range(steps):
        trial = low + step
        low = np.where(_in_gamut(l_out, ab_out * trial[:, None], tolerance), trial, low)
        step /= 2
    flat_ab[out] = ab_out * low[:, None]
    return flat_ab.reshape(ab.shape)


def _in_gamut(l, ab, tolerance):
    """Whether each (l, ab) pixel, scaled as in colorlab.lab, is inside the sRGB gamut (l: (N,), ab: (N, 2))."""
    fy = (np.clip(l, 0.0, 1.0) * lab.L_SCALE + 16.0) / 116.0
    x = _f_inverse(fy + ab[:, 0] * np.float32(lab.AB_SCALE / 500.0)) * _WHITE[0]  # Lab to XYZ
    y = _f_inverse(fy) * _WHITE[1]
    z = _f_inverse(fy - ab[:, 1] * np.float32(lab.AB_SCALE / 200.0)) * _WHITE[2]
    inside = np.ones(len(fy), dtype=bool)
    for row in _RGB_FROM_XYZ:  # each linear sRGB channel lies in [0, 1] exactly when the colour is in gamut
        channel = row[0] * x + row[1] * y + row[2] * z
        inside &= (channel >= -tolerance) & (channel <= 1.0 + tolerance)
    return inside


def _f_inverse(f):
    return np.where(f > 6.0 / 29.0, f * f * f, (f - 16.0 / 116.0) / 7.787)


# ----------------------------------------------------------------------------------------------------
# The command


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
        elif path.exists() or path.is_symlink():
            pairs = [(path, Path(path.name))]
        else:
            raise UserError(f"{path}: no such file or folder")
        for photo, relative in pairs:
            key = _real(photo)
            if key not in seen:
                seen.add(key)
                found.append((photo, relative))
    return found


def run(paths, model_path, out_dir, size=None, batch=BATCH, multiple=None, fmt="png", overwrite=False):
    """Colour every photo in ``paths`` into ``out_dir``; returns the exit status (1 if any photo failed)."""
    from tqdm import tqdm

    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{out_dir}: --out is a file, not a folder")
    found = find_photos(paths, exclude=out_dir)
    if not found:
        raise UserError(f"no photos found in {', '.join(map(str, paths))} ({', '.join(images.EXTENSIONS)})")
    model = load_model(model_path)  # every problem with the model shows before any photo is touched
    size, multiple, color_space = resolve_settings(model_path, size, multiple)

    jobs, skipped, failures = [], 0, []
    claimed = {}
    inputs = {_real(photo) for photo, _ in found}
    for photo, relative in found:
        target = out_dir / relative.with_suffix("." + fmt)
        if target in claimed:
            failures.append(f"{photo}: its output {target} is already the output of {claimed[target]}")
        elif _real(target) in inputs:
            failures.append(f"{photo}: its output would overwrite the input photo {target}; choose another --out")
        elif target.exists() and not overwrite:
            claimed[target] = photo
            skipped += 1
        else:
            claimed[target] = photo
            jobs.append((photo, target))
    for failure in failures:
        print(f"failed: {failure}", file=sys.stderr)

    print(f"colouring {plural(len(jobs), 'photo')} with {model_path} (working size {size}) into {out_dir}", flush=True)
    done = 0
    with tqdm(total=len(jobs), unit="photo", disable=None, file=sys.stderr, dynamic_ncols=True) as bar:
        def failed(job, error):
            failures.append(str(error))
            tqdm.write(f"failed: {error}", file=sys.stderr)
            bar.update()

        for loaded in batches(jobs, lambda job: images.load(job[0]), batch, on_error=failed):
            loaded = [(photo, target, rgb) for (photo, target), rgb in loaded]
            for photo, target, rgb in _colorize_each(model, loaded, size, multiple, color_space):
                try:
                    if isinstance(rgb, Exception):
                        raise rgb
                    target.parent.mkdir(parents=True, exist_ok=True)
                    images.save(target, rgb)
                    done += 1
                except files.WriteError as error:  # a full disk: every next photo would fail the same way
                    raise UserError(f"{error}. {done} photos were coloured before it; run the same command again "
                                    f"to do the rest (the ones done are skipped)") from None
                except (OSError, MemoryError) as error:
                    problem = "too large for the memory available" if isinstance(error, MemoryError) else (
                        f"cannot write {target} ({error.strerror or error})")
                    failures.append(f"{photo}: {problem}")
                    tqdm.write(f"failed: {photo}: {problem}", file=sys.stderr)
                bar.update()

    summary = f"{done} colourised, {skipped} skipped, {len(failures)} failed"
    if skipped:
        summary += f" (skipped: their output already exists in {out_dir}; --overwrite replaces them)"
    print(summary + (":" if failures else "") + "".join(f"\n  {failure}" for failure in failures))
    return 1 if failures else 0


def batches(items, load, size=BATCH, max_pixels=MAX_BATCH_PIXELS, on_error=None):
    """Load ``items`` one by one with ``load`` and yield lists of ``(item, rgb)``: ``size`` photos, or fewer
    once they hold ``max_pixels`` pixels, so that a folder of camera photos needs no more memory than one
    of small ones. A photo that cannot be read goes to ``on_error(item, error)`` (without it, it raises).
    """
    batch, pixels = [], 0
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
        if len(batch) >= size or pixels >= max_pixels:
            yield batch
            batch, pixels = [], 0
    if batch:
        yield batch


def _colorize_each(model, loaded, size, multiple, color_space):
    """(photo, target, rgb) for each loaded photo, in one batch; if the batch runs out of memory, one
    photo at a time, and a photo that alone does not fit gets its MemoryError in place of rgb."""
    if not loaded:
        return []
    try:
        outputs = colorize_batch(model, [rgb for _, _, rgb in loaded], size, multiple, color_space)
        return [(photo, target, rgb) for (photo, target, _), rgb in zip(loaded, outputs)]
    except MemoryError:
        results = []
        for photo, target, rgb in loaded:
            try:
                results.append((photo, target, colorize_batch(model, [rgb], size, multiple, color_space)[0]))
            except MemoryError as error:
                results.append((photo, target, error))
        return results


def positive_int(text):
    """An argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number of at least 1, got {value}")
    return value


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="colorize",
        description="Colour black-and-white photos (colour photos are used as their grey version) with a trained "
        "stage model. Outputs have the size and lightness of their input and mirror the inputs' paths.",
    )
    parser.add_argument("photos", nargs="+", metavar="PHOTO_OR_FOLDER", help="photos, or folders searched recursively")
    parser.add_argument("--model", required=True, metavar="MODEL.keras", help="a stage's saved model")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for the coloured photos")
    parser.add_argument("--size", type=positive_int, metavar="PIXELS",
                        help="working size, the shorter side the model sees (default: the IMAGE_SIZE in the "
                        f"settings.json beside the model, else {DEFAULT_SIZE})")
    parser.add_argument("--batch", type=positive_int, default=BATCH, help=f"photos per model call (default {BATCH})")
    parser.add_argument("--multiple", type=positive_int,
                        help="pad the working size to a multiple of this (default: the MULTIPLE in the settings.json "
                        f"beside the model, else {MULTIPLE}: three stride-2 layers)")
    parser.add_argument("--format", default="png", choices=FORMATS, help="output format (default png)")
    parser.add_argument("--overwrite", action="store_true", help="replace outputs that already exist")
    args = parser.parse_args(argv)
    try:
        return run(args.photos, args.model, args.out, args.size, args.batch, args.multiple, args.format, args.overwrite)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: the photos finished so far are written; run again to do the rest", file=sys.stderr)
        return 130


def _as_rgb(photo):
    """An (H, W, 3) float RGB array in [0, 1] from an RGB or grey array (8-bit arrays are scaled)."""
    array = np.asarray(photo)
    rgb = array.astype(np.float32) / 255.0 if array.dtype == np.uint8 else array.astype(np.float32)
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[..., None], 3, axis=-1)
    if rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise ValueError(f"expected a photo path or an (H, W, 3) RGB array, got shape {rgb.shape}")
    if rgb.size and (rgb.min() < -1e-3 or rgb.max() > 1.001):
        raise ValueError(f"expected RGB values in [0, 1], got [{rgb.min():.3g}, {rgb.max():.3g}]")
    return np.clip(rgb, 0.0, 1.0)


def plural(number, noun):
    """"1 photo", "2 photos"."""
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _pad(l, height, width):
    """Pad (h, w, 1) at the bottom and right to (height, width), mirroring the edge."""
    h, w = l.shape[:2]
    return np.pad(l, ((0, height - h), (0, width - w), (0, 0)), mode="symmetric")


def _real(path):
    """The absolute path with every symbolic link resolved; unlike ``Path.resolve``, a link loop is not an
    error here (loading it is, with a one-line message)."""
    return Path(os.path.realpath(path))


def _input_name(tensor):
    return getattr(tensor, "name", "?")


def _shapes(shapes):
    return " and ".join(str(tuple(s)) for s in shapes)


def _first_line(error):
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return text if len(text) <= 200 else text[:197] + "..."


if __name__ == "__main__":
    sys.exit(main())
