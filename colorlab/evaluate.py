"""How good are a model's colours? Numbers, each beside its reference.

From a terminal (``python -m colorlab.evaluate`` is the same command)::

    evaluate data/imagenette2-320/val --model outputs/beta/model.keras --limit 500 --out outputs/beta/eval

Each colour photo is turned grey, coloured with the same code as ``colorize``, and compared with the
original. The same numbers are computed for the laziest answer, "predict grey" (ab = 0, the photo's own
lightness with no colour), so every number has its reference:

- **PSNR** (dB, higher is better) and **SSIM** (up to 1, higher is better) on RGB, from scikit-image.
  Both reward getting close on average, so a greyish guess already scores well: compare with the
  grey baseline, not with zero.
- **CIEDE2000** (lower is better): the mean perceptual colour difference per pixel; about 1 is a just
  noticeable difference, above 10 two clearly different colours.
- **colourfulness** (Hasler and Suesstrunk, 2003) of the output, against that of the original photos.
  Grey is 0; a model that plays safe with brownish colours scores far below the originals.

From Python::

    from colorlab import evaluate
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

from colorlab import UserError, colorize, files, images, lab

METRICS = ("psnr", "ssim", "ciede2000", "colourfulness")
METHODS = ("model", "grey")
PSNR_CAP = 100.0  # dB: identical images have an infinite PSNR; means use this in its place


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
    return float(skmetrics.structural_similarity(original, result, channel_axis=-1, data_range=1.0, win_size=window))


def ciede2000(original, result):
    """Mean CIEDE2000 colour difference between two RGB images, pixel by pixel, in Lab."""
    original, result = _pair(original, result)
    return float(np.mean(color.deltaE_ciede2000(color.rgb2lab(original), color.rgb2lab(result))))


def colourfulness(rgb):
    """Hasler and Suesstrunk's (2003) colourfulness of an RGB image in [0, 1], on the 0-255 scale they use.

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
        "colourfulness": colourfulness(result),
    }


# ----------------------------------------------------------------------------------------------------
# Evaluating a model


def evaluate(model, photos, size=None, batch=colorize.BATCH, multiple=None, limit=None,
             on_error=None, progress=None, color_space=None):
    """One row per photo: the metrics of the model's colours and of the grey baseline.

    ``model`` is a Keras model or a saved model's path; ``photos`` lists photo files and folders (searched
    recursively). ``limit`` keeps that many photos, spread evenly over the sorted list (so every
    class folder of a dataset is represented). A photo that cannot be read is passed to
    ``on_error(error)`` and left out; without ``on_error`` it raises. ``progress`` is called once per photo.
    """
    path = model if isinstance(model, (str, os.PathLike)) else None
    size, multiple, color_space = colorize.resolve_settings(path, size, multiple, color_space)
    if path is not None:
        model = colorize.load_model(path)
    found = spread([photo for photo, _ in colorize.find_photos(photos)], limit)
    rows = []

    def failed(item, error):
        if on_error is None:
            raise error
        on_error(error)
        if progress:
            progress()

    for loaded in colorize.batches(found, images.load, batch, on_error=failed):  # bounded in photos and pixels
        outputs = colorize.colorize_batch(model, [rgb for _, rgb in loaded], size, multiple, color_space)  # as colorize does
        for (path, rgb), result in zip(loaded, outputs):
            row = {"photo": str(path), "width": rgb.shape[1], "height": rgb.shape[0]}
            for method, image in (("model", result), ("grey", lab.grey(rgb))):
                row.update({f"{method}_{name}": value for name, value in compare(rgb, image).items()})
            row["original_colourfulness"] = colourfulness(rgb)
            rows.append(row)
            if progress:
                progress()
    return rows


def spread(items, limit):
    """``limit`` items spread evenly over ``items`` (first and last included), or all of them."""
    if limit is None or limit >= len(items):
        return list(items)
    if limit <= 0:
        return []
    return [items[i] for i in np.unique(np.linspace(0, len(items) - 1, limit).round().astype(int))]


def summarize(rows):
    """The mean of each metric over the photos, per method: {"model": {...}, "grey": {...}, "original": {...}}.

    PSNR means use at most PSNR_CAP dB per photo (identical images have an infinite PSNR); NaNs (SSIM of
    photos under 3 pixels) are left out.
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
    values = [row["original_colourfulness"] for row in rows]
    summary["original"] = {"colourfulness": float(np.mean(values)) if values else math.nan}
    return summary


def table(summary, photos=None):
    """The summary as a text table, one line per method, with which way is better."""
    head = f"{'':24}{'PSNR dB':>10}{'SSIM':>9}{'CIEDE2000':>11}{'colourfulness':>15}"
    better = f"{'':24}{'higher':>10}{'higher':>9}{'lower':>11}{'vs originals':>15}"
    lines = [head, better]
    labels = {"model": "model", "grey": "predict grey (ab = 0)"}
    for method in METHODS:
        m = summary[method]
        lines.append(f"{labels[method]:24}{m['psnr']:>10.2f}{m['ssim']:>9.4f}{m['ciede2000']:>11.2f}"
                     f"{m['colourfulness']:>15.2f}")
    lines.append(f"{'originals':24}{'-':>10}{'-':>9}{'-':>11}{summary['original']['colourfulness']:>15.2f}")
    if photos is not None:
        lines.append(f"mean over {colorize.plural(photos, 'photo')}; PSNR of identical images counts as {PSNR_CAP:.0f} dB")
    return "\n".join(lines)


def to_csv(rows):
    """The per-photo rows as CSV text (infinite PSNR written as inf)."""
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    return buffer.getvalue()


# ----------------------------------------------------------------------------------------------------
# The command


def run(paths, model_path, out_dir=None, size=None, batch=colorize.BATCH, multiple=None, limit=None,
        overwrite=False):
    """Evaluate, print the table, write the files; returns the exit status (1 if any photo failed)."""
    from tqdm import tqdm

    if out_dir is not None:
        out_dir = Path(out_dir)
        if out_dir.exists() and not out_dir.is_dir():
            raise UserError(f"{out_dir}: --out is a file, not a folder")
        if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
            raise UserError(f"{out_dir} already holds results: pass --overwrite to replace them, or another --out")
    found = colorize.find_photos(paths)
    if not found:
        raise UserError(f"no photos found in {', '.join(map(str, paths))} ({', '.join(images.EXTENSIONS)})")
    model = colorize.load_model(model_path)  # every problem with the model shows before any photo is touched
    size, multiple, color_space = colorize.resolve_settings(model_path, size, multiple)
    total = len(spread(found, limit))
    print(f"evaluating {model_path} (working size {size}) on {total} of {colorize.plural(len(found), 'photo')}",
          flush=True)

    failures = []
    with tqdm(total=total, unit="photo", disable=None, file=sys.stderr, dynamic_ncols=True) as bar:
        def on_error(error):
            failures.append(str(error))
            tqdm.write(f"failed: {error}", file=sys.stderr)

        rows = evaluate(model, paths, size, batch, multiple, limit, on_error=on_error, progress=bar.update,
                        color_space=color_space)
    if not rows:
        raise UserError(f"none of the {total} photos could be read")
    summary = summarize(rows)
    print(table(summary, len(rows)))
    if out_dir is not None:
        files.prepare_out_dir(out_dir, overwrite=True)
        files.write_text(out_dir / "metrics.csv", to_csv(rows))
        files.write_json(out_dir / "summary.json", {
            "model": str(model_path), "size": size, "photos": len(rows), "failed": failures, "mean": summary,
            "psnr_cap_db": PSNR_CAP, "inputs": [str(p) for p in paths], "limit": limit,
        })
        print(f"wrote metrics.csv (one row per photo) and summary.json to {out_dir}")
    if failures:
        print(f"{len(failures)} of {total} photos failed:" + "".join(f"\n  {failure}" for failure in failures))
    return 1 if failures else 0


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="evaluate",
        description="Colour colour photos from their grey version and compare with the originals: PSNR, SSIM, "
        "CIEDE2000 and colourfulness, for the model and for the predict-grey baseline.",
    )
    parser.add_argument("photos", nargs="+", metavar="PHOTO_OR_FOLDER", help="colour photos, or folders of them")
    parser.add_argument("--model", required=True, metavar="MODEL.keras", help="a stage's saved model")
    parser.add_argument("--out", metavar="DIR", help="write metrics.csv (per photo) and summary.json here")
    parser.add_argument("--size", type=colorize.positive_int, metavar="PIXELS",
                        help="working size, as for colorize (default: the IMAGE_SIZE beside the model)")
    parser.add_argument("--limit", type=colorize.positive_int, metavar="N",
                        help="use N photos, spread evenly over the sorted list (default: all)")
    parser.add_argument("--batch", type=colorize.positive_int, default=colorize.BATCH, help="photos per model call")
    parser.add_argument("--multiple", type=colorize.positive_int,
                        help="pad the working size to a multiple of this (default: as for colorize)")
    parser.add_argument("--overwrite", action="store_true", help="replace the results already in --out")
    args = parser.parse_args(argv)
    try:
        return run(args.photos, args.model, args.out, args.size, args.batch, args.multiple, args.limit, args.overwrite)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: nothing was written", file=sys.stderr)
        return 130


def _pair(original, result):
    original = np.asarray(original, dtype=np.float64)
    result = np.asarray(result, dtype=np.float64)
    if original.shape != result.shape or original.ndim != 3 or original.shape[-1] != 3:
        raise ValueError(f"expected two RGB images of one shape, got {original.shape} and {result.shape}")
    return original, result


if __name__ == "__main__":
    sys.exit(main())
