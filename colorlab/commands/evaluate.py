"""How good are a model's colours? Numbers, each beside its reference.

From a terminal (``python -m colorlab.commands.evaluate`` is the same command)::

    evaluate data/imagenette2-320/val --model outputs/beta/model.keras --limit 500 --out outputs/beta/eval

Each colour photo is turned grey, coloured with the same code as ``colorize`` (:mod:`colorlab.coloring`),
and compared with the original. The same numbers are computed for the laziest answer, "predict grey"
(ab = 0, the photo's own lightness with no colour), so every number has its reference:

- **PSNR** (dB, higher is better) and **SSIM** (up to 1, higher is better) on RGB, from scikit-image.
  Both reward getting close on average, so a greyish guess already scores well: compare with the
  grey baseline, not with zero.
- **CIEDE2000** (lower is better): the mean perceptual colour difference per pixel; about 1 is a just
  noticeable difference, above 10 two clearly different colours.
- **colorfulness** (Hasler and Suesstrunk, 2003) of the output, against that of the original photos.
  Grey is 0; a model that plays safe with brownish colours scores far below the originals.

A photo of more than ``METRIC_PIXELS`` (4 megapixels) is scaled down to that many before it is coloured
and measured (``metric_scale`` in metrics.csv says by how much), so that a panorama of 80 megapixels
needs no more memory than a camera photo; the working size the model sees is the same either way.
Originals that are already grey are counted and named in one warning: their colour metrics mean nothing.

From Python::

    from colorlab.commands import evaluate
    rows = evaluate.evaluate("outputs/alpha/model.keras", ["data/samples"], size=256)
    print(evaluate.table(evaluate.summarize(rows)))
"""

import argparse
import csv
import io
import math
import os
import sys
from pathlib import Path

import numpy as np
from skimage import color, metrics as skmetrics

from colorlab import UserError, files, images, lab
from colorlab.commands import colorize, unlock, write_text

METRICS = ("psnr", "ssim", "ciede2000", "colorfulness")
METHODS = ("model", "grey")
PSNR_CAP = 100.0  # dB: identical images have an infinite PSNR; means use this in its place
METRIC_PIXELS = 4_000_000  # larger photos are scaled down to this many pixels before colouring and measuring
BAND_PIXELS = 250_000  # CIEDE2000 is computed this many pixels at a time
GREY_COLORFULNESS = 2.0  # originals below this are grey (or nearly: a grey JPEG saved as RGB has some noise)
WRITES = ("metrics.csv", "summary.json")  # what evaluate writes into --out, beside the folder's mark


# ----------------------------------------------------------------------------------------------------
# The metrics (RGB arrays in [0, 1], shape (H, W, 3))


def psnr(original, result):
    """Peak signal-to-noise ratio in dB on RGB in [0, 1]; ``inf`` for identical images."""
    original, result = _pair(original, result)
    if np.array_equal(original, result):
        return math.inf
    return float(skmetrics.peak_signal_noise_ratio(original, result, data_range=1.0))


def ssim(original, result):
    """Structural similarity on RGB in [0, 1] (scikit-image's defaults: a 7x7 window, averaged over the
    channels). Photos smaller than 7 pixels use the largest odd window that fits; below 3, NaN."""
    original, result = _pair(original, result)
    window = min(7, min(original.shape[:2]))
    window -= 1 - window % 2  # odd
    if window < 3:
        return math.nan
    return float(skmetrics.structural_similarity(original, result, channel_axis=-1, data_range=1.0,
                                                 win_size=window))


def ciede2000(original, result):
    """Mean CIEDE2000 colour difference between two RGB images, pixel by pixel, in Lab."""
    original, result = _pair(original, result)
    band = max(1, BAND_PIXELS // original.shape[1])  # rows at a time: scikit-image's temporaries stay small
    total = sum(float(np.sum(color.deltaE_ciede2000(color.rgb2lab(original[top : top + band]),
                                                    color.rgb2lab(result[top : top + band]))))
                for top in range(0, original.shape[0], band))
    return total / (original.shape[0] * original.shape[1])


def colorfulness(rgb):
    """Hasler and Suesstrunk's (2003) colorfulness of an RGB image in [0, 1], on the 0-255 scale they use.

    With rg = R - G and yb = (R + G) / 2 - B over all pixels:
    C = sqrt(std(rg)^2 + std(yb)^2) + 0.3 * sqrt(mean(rg)^2 + mean(yb)^2). Grey is 0; they rate about 33
    "moderately", 45 "quite" and 59 "highly" colourful.
    """
    rgb = np.asarray(rgb, dtype=np.float64).reshape(-1, 3) * 255.0
    rg = rgb[:, 0] - rgb[:, 1]
    yb = 0.5 * (rgb[:, 0] + rgb[:, 1]) - rgb[:, 2]
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))


def compare(original, result):
    """Every metric of ``result`` against ``original``, as a dict."""
    return {
        "psnr": psnr(original, result),
        "ssim": ssim(original, result),
        "ciede2000": ciede2000(original, result),
        "colorfulness": colorfulness(result),
    }


# ----------------------------------------------------------------------------------------------------
# Evaluating a model


def evaluate(model, photos, size=None, batch=colorize.BATCH, multiple=None, limit=None,
             on_error=None, progress=None, color_space=None, max_pixels=None, note=None, name=None):
    """One row per photo: the metrics of the model's colours and of the grey baseline.

    ``model`` is a Keras model or a saved model's path; ``photos`` lists photo files and folders (searched
    recursively). ``limit`` keeps that many photos, spread evenly over the sorted list (so every
    class folder of a dataset is represented). Photos above ``max_pixels`` are scaled down to it first.
    A photo that cannot be read is passed to ``on_error(error)`` and left out; without ``on_error`` it
    raises. ``progress`` is called once per photo; ``note`` gets a line about the model worth saying (a
    multiple found by trying), and ``name`` is how messages name the model (default: its file).
    """
    path = model if isinstance(model, (str, os.PathLike)) else None
    size, multiple, color_space = colorize.resolve_settings(path, size, multiple, color_space)
    if path is not None:
        model = colorize.load_model(path)
    name = name or path or f"model {getattr(model, 'name', '?')!r}"
    colorer = colorize.Colorer(model, name, size, multiple, color_space, note)
    found = spread([photo for photo, _ in colorize.find_photos(photos)], limit)
    rows, sizes = [], {}

    def load(photo):
        rgb, sizes[photo] = load_within(photo, max_pixels or METRIC_PIXELS)  # its own size: for the row
        return rgb

    def failed(item, error):
        if on_error is None:
            raise error
        on_error(error)
        if progress:
            progress()

    for loaded in colorize.batches(found, load, batch, on_error=failed, working=colorer.working_pixels):
        outputs = colorer([rgb for _, rgb in loaded])  # as colorize does, and bounded as it is
        for (photo, rgb), result in zip(loaded, outputs):
            height, width = sizes.pop(photo)
            row = {"photo": str(photo), "width": width, "height": height,
                   "metric_scale": round(rgb.shape[1] / width, 6) if width else 1.0}
            for method, image in (("model", result), ("grey", lab.grey_rgb(rgb))):
                row.update({f"{method}_{name}": value for name, value in compare(rgb, image).items()})
            row["original_colorfulness"] = colorfulness(rgb)
            rows.append(row)
            if progress:
                progress()
    return rows


def load_within(path, max_pixels):
    """A photo as ``images.load`` reads it, scaled down (keeping its shape) to at most ``max_pixels``, and
    its own (height, width)."""
    height, width = size_of(path)
    if height * width <= max_pixels:
        return images.load(path), (height, width)
    longer, shorter = max(height, width), min(height, width)
    side = max(1, int(longer * (max_pixels / (height * width)) ** 0.5))
    while side > 1 and side * max(1, round(shorter * side / longer)) > max_pixels:  # as images.load rounds
        side -= 1
    return images.load(path, side), (height, width)


def size_of(path):
    """A photo's (height, width), upright (as ``images.load`` returns it), read from its header only."""
    with images.open_image(path) as image:
        width, height = image.size
        try:
            turned = image.getexif().get(0x0112) in (5, 6, 7, 8)  # EXIF orientations that swap the sides
        except Exception:  # a corrupt EXIF block: images.load ignores it too
            turned = False
    return (width, height) if turned else (height, width)


def spread(items, limit):
    """``limit`` items spread evenly over ``items`` (first and last included), or all of them."""
    if limit is None or limit >= len(items):
        return list(items)
    if limit <= 0:
        return []
    return [items[i] for i in np.unique(np.linspace(0, len(items) - 1, limit).round().astype(int))]


def summarize(rows):
    """The mean of each metric over the photos, per method: {"model": ..., "grey": ..., "original": ...}.

    PSNR means use at most PSNR_CAP dB per photo (identical images have an infinite PSNR); NaNs (SSIM of
    photos under 3 pixels) are left out; a mean over no number is NaN (null in summary.json).
    """
    summary = {}
    for method in METHODS:
        summary[method] = {}
        for name in METRICS:
            values = np.array([row[f"{method}_{name}"] for row in rows], dtype=np.float64)
            if name == "psnr":
                values = np.minimum(values, PSNR_CAP)
            values = values[~np.isnan(values)]
            summary[method][name] = float(values.mean()) if len(values) else math.nan
    values = [row["original_colorfulness"] for row in rows]
    summary["original"] = {"colorfulness": float(np.mean(values)) if values else math.nan}
    return summary


def grey_originals(rows):
    """The photos of ``rows`` whose originals are already grey (colorfulness under GREY_COLORFULNESS)."""
    return [row["photo"] for row in rows if row["original_colorfulness"] < GREY_COLORFULNESS]


def table(summary, photos=None):
    """The summary as a text table, one line per method, with which way is better."""
    head = f"{'':24}{'PSNR dB':>10}{'SSIM':>9}{'CIEDE2000':>11}{'colorfulness':>15}"
    better = f"{'':24}{'higher':>10}{'higher':>9}{'lower':>11}{'vs originals':>15}"
    lines = [head, better]
    labels = {"model": "model", "grey": "predict grey (ab = 0)"}
    for method in METHODS:
        m = summary[method]
        lines.append(f"{labels[method]:24}{m['psnr']:>10.2f}{m['ssim']:>9.4f}{m['ciede2000']:>11.2f}"
                     f"{m['colorfulness']:>15.2f}")
    lines.append(f"{'originals':24}{'-':>10}{'-':>9}{'-':>11}{summary['original']['colorfulness']:>15.2f}")
    if photos is not None:
        lines.append(f"mean over {colorize.plural(photos, 'photo')}; PSNR of identical images counts as "
                     f"{PSNR_CAP:.0f} dB")
    return "\n".join(lines)


def to_csv(rows):
    """The per-photo rows as CSV text (infinite PSNR written as inf, NaN as nan)."""
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    return buffer.getvalue()


# ----------------------------------------------------------------------------------------------------
# The command


def check_out(out_dir, overwrite=False):
    """Refuse, before any work, an ``--out`` that evaluate must not write into: a file, a protected folder
    (see files.check_destination), a folder holding anything but an earlier evaluation, or one holding an
    earlier evaluation without ``--overwrite``. Nothing is deleted here."""
    out_dir = files.check_destination(out_dir, "--out")
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{out_dir}: --out is a file, not a folder")
    if not out_dir.is_dir():
        return out_dir
    entries = []
    for root, dirs, names in os.walk(out_dir):  # links to folders are listed, never followed
        base = Path(root).relative_to(out_dir)
        entries += [(base / n).as_posix() for n in names + [d for d in dirs if (Path(root) / d).is_symlink()]]
    mine = {files.MARK, *WRITES}
    foreign = sorted(e for e in entries if e not in mine and not files.owned(e))
    others = sorted(e for e in entries if e not in mine and files.owned(e) and "colorlab-tmp" not in e)
    if foreign or others:
        listed = (foreign + others)[:3]
        more = len(foreign) + len(others) - len(listed)
        what = "files that evaluate did not write" if foreign else "the results of a stage's run"
        raise UserError(f"{out_dir} holds {what} ({', '.join(listed)}{f' and {more} more' if more else ''}): "
                        f"nothing in it is replaced; choose another --out, such as {out_dir / 'eval'}")
    if any(e in WRITES for e in entries) and not overwrite:
        raise UserError(f"{out_dir} already holds results of an earlier evaluation: pass --overwrite to "
                        f"replace them, or another --out")
    return out_dir


def run(paths, model_path, out_dir=None, size=None, batch=colorize.BATCH, multiple=None, limit=None,
        overwrite=False):
    """Evaluate, print the table, write the files; returns the exit status (1 if any photo failed)."""
    from tqdm import tqdm

    if out_dir is not None:
        out_dir = check_out(out_dir, overwrite)
    found = colorize.find_photos(paths)
    if not found:
        raise UserError(f"no photos found in {', '.join(map(str, paths))} ({', '.join(images.EXTENSIONS)})")
    model = colorize.load_model(model_path)  # every problem with the model shows before any photo is touched
    size, multiple, color_space = colorize.resolve_settings(model_path, size, multiple)
    total = len(spread(found, limit))
    print(f"evaluating {model_path} (working size {size}) on {total} of "
          f"{colorize.plural(len(found), 'photo')}", flush=True)

    failures = []
    with tqdm(total=total, unit="photo", disable=None, file=sys.stderr, dynamic_ncols=True) as bar:
        def on_error(error):
            failures.append(str(error))
            tqdm.write(f"failed: {error}", file=sys.stderr)

        def note(text):
            tqdm.write(f"note: {text}", file=sys.stderr)

        rows = evaluate(model, paths, size, batch, multiple, limit, on_error=on_error, progress=bar.update,
                        color_space=color_space, note=note, name=model_path)
    if not rows:
        raise UserError(f"none of the {total} photos could be read")
    summary = summarize(rows)
    print(table(summary, len(rows)))
    grey = grey_originals(rows)
    if grey:
        names = ", ".join(grey[:3]) + (f" and {len(grey) - 3} more" if len(grey) > 3 else "")
        verb = "is" if len(grey) == 1 else "are"
        print(f"warning: {len(grey)} of {colorize.plural(len(rows), 'original')} {verb} already grey "
              f"(colorfulness under {GREY_COLORFULNESS:g}: {names}): their colour metrics mean nothing; "
              f"evaluate on colour photos", file=sys.stderr)
    if out_dir is not None:
        files.prepare_out_dir(out_dir, "evaluate", overwrite=overwrite)  # marks and locks it
        try:
            write_text(out_dir / "metrics.csv", to_csv(rows))
            files.write_json(out_dir / "summary.json", {
                "model": str(model_path), "size": size, "photos": len(rows), "failed": failures,
                "mean": summary, "psnr_cap_db": PSNR_CAP, "metric_pixels": METRIC_PIXELS,
                "grey_originals": grey, "inputs": [str(p) for p in paths], "limit": limit,
            })
        finally:
            unlock(out_dir)  # a notebook's kernel lives on: let other runs use the folder
        print(f"wrote metrics.csv (one row per photo) and summary.json to {out_dir}")
    if failures:
        print(f"{len(failures)} of {total} photos failed:" + "".join(f"\n  {f}" for f in failures))
    return 1 if failures else 0


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="evaluate",
        description="Colour colour photos from their grey version and compare with the originals: PSNR, "
        "SSIM, CIEDE2000 and colorfulness, for the model and for the predict-grey baseline. Photos above "
        f"{METRIC_PIXELS // 1_000_000} megapixels are scaled down to that before they are coloured and "
        "measured.",
    )
    parser.add_argument("photos", nargs="+", metavar="PHOTO_OR_FOLDER",
                        help="colour photos, or folders of them")
    parser.add_argument("--model", required=True, metavar="MODEL.keras", help="a stage's saved model")
    parser.add_argument("--out", metavar="DIR", help="write metrics.csv (per photo) and summary.json here")
    parser.add_argument("--size", type=colorize.size_argument, metavar="PIXELS",
                        help="working size, as for colorize (default: the IMAGE_SIZE beside the model)")
    parser.add_argument("--limit", type=colorize.positive_int, metavar="N",
                        help="use N photos, spread evenly over the sorted list (default: all)")
    parser.add_argument("--batch", type=colorize.positive_int, default=colorize.BATCH,
                        help="photos per model call")
    parser.add_argument("--multiple", type=colorize.multiple_argument,
                        help="pad the working size to a multiple of this (default: as for colorize)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the results of an earlier evaluation in --out")
    args = parser.parse_args(argv)
    return colorize.command(lambda: run(args.photos, args.model, args.out, args.size, args.batch,
                                        args.multiple, args.limit, args.overwrite),
                            interrupted="nothing was written")


def _pair(original, result):
    original = np.asarray(original, dtype=np.float64)
    result = np.asarray(result, dtype=np.float64)
    if original.shape != result.shape or original.ndim != 3 or original.shape[-1] != 3:
        raise ValueError(f"expected two RGB images of one shape, got {original.shape} and {result.shape}")
    return original, result


if __name__ == "__main__":
    sys.exit(main())
