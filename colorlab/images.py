"""Load any photo as float RGB in [0, 1], or fail with one line that names the file and the problem.

Handled: JPEG, PNG, WebP, BMP, TIFF (and whatever else Pillow reads); greyscale, palette, CMYK and
16-bit photos; transparency (composited on white); EXIF orientation (applied, as a photo viewer would);
animated files (the first frame is used).
"""

import errno
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from colorlab import UserError
from colorlab.files import atomic_path

EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")


class ImageError(UserError):
    """A photo that cannot be used; the message is ``"<path>: <problem>"``."""

    def __init__(self, path, problem):
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


def load(path, size=None, side="longer"):
    """Read a photo as an (H, W, 3) float32 array in [0, 1].

    With ``size``, the photo is scaled (up or down, aspect ratio kept) so that its ``side`` ("longer"
    or "shorter") is ``size`` pixels: "longer" fits the whole photo in a ``size`` square, "shorter"
    makes it cover one, so that a ``size`` x ``size`` crop can be cut from it. A big JPEG is decoded
    directly at a reduced size, which is several times faster than decoding it whole.
    """
    return load_8bit(path, size, side).astype(np.float32) / 255.0


def load_8bit(path, size=None, side="longer"):
    """As :func:`load`, but the (H, W, 3) array is uint8 in [0, 255]: a quarter of the memory.

    ``load(...)`` is exactly ``load_8bit(...) / 255`` in float32.
    """
    if side not in ("longer", "shorter"):
        raise ValueError(f"side must be 'longer' or 'shorter', got {side!r}")
    with _open(path) as image:
        target = None
        if size is not None:
            scale = size / (max(image.size) if side == "longer" else min(image.size))
            target = tuple(max(1, round(n * scale)) for n in image.size)
            if Image.MAX_IMAGE_PIXELS and target[0] * target[1] > Image.MAX_IMAGE_PIXELS:  # a panorama, a typo
                raise ImageError(path, f"refused: scaled to {size} pixels on its {side} side, this {image.size[0]}x"
                                       f"{image.size[1]} photo would have {target[0]}x{target[1]} pixels, more than "
                                       f"the {Image.MAX_IMAGE_PIXELS} that are safe to hold")
            if image.format == "JPEG" and scale < 1:
                image.draft(None, target)  # let the JPEG decoder shrink by 1/2, 1/4 or 1/8 for free
        try:
            image.load()
            loaded = image.size
            rgb = _to_rgb(_upright(image))
        except (ImageError, MemoryError):
            raise
        except Exception as error:  # Pillow reports broken files with many exception types
            raise ImageError(path, f"cannot decode the image, it is truncated or corrupt ({error})") from None
    if target is not None:
        if rgb.size != loaded:  # the EXIF orientation turned the photo by 90 degrees
            target = target[::-1]
        if rgb.size != target:
            rgb = rgb.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)
    return np.asarray(rgb, dtype=np.uint8)


def save(path, rgb):
    """Write an (H, W, 3) array in [0, 1] as an image file (format from the suffix), atomically."""
    array = np.clip(np.asarray(rgb, dtype=np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    options = {"quality": 95} if Path(path).suffix.lower() in (".jpg", ".jpeg") else {}
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, **options)


def list_images(folder):
    """All photos under ``folder`` (searched recursively, hidden files skipped), sorted by path.

    Symbolic links to files are followed, links to folders are not (so a link loop cannot hang it).
    """
    folder = Path(folder)
    if not folder.is_dir():
        problem = "no such folder" if not folder.exists() else "is a file, not a folder"
        raise UserError(f"{folder}: {problem}")
    found = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(root) / n for n in names if not n.startswith(".") and n.lower().endswith(EXTENSIONS)]
    return sorted(found)


def pad_to_multiple(array, multiple):
    """Pad an (..., H, W, C) array at the bottom and right, mirroring its edge, so H and W divide by
    ``multiple``. A network with three stride-2 layers needs multiples of 8; crop its output back with
    ``output[..., :H, :W, :]``."""
    h, w = array.shape[-3:-1]
    pad = [(0, 0)] * (array.ndim - 3) + [(0, -h % multiple), (0, -w % multiple), (0, 0)]
    return np.pad(array, pad, mode="symmetric")


def resize(array, height, width, resample="bilinear"):
    """Resize an (H, W, C) float array to (height, width), channel by channel, in 32-bit float.

    Unlike :func:`load`, nothing is rounded to 8 bits and values outside [0, 1] are kept, so it also
    suits ``ab`` or any other per-pixel quantity. ``resample`` is a Pillow filter name: "nearest",
    "bilinear", "bicubic" or "lanczos"; shrinking is anti-aliased with every filter but "nearest".
    """
    array = np.asarray(array, dtype=np.float32)
    if array.ndim != 3:
        raise ValueError(f"expected an (H, W, C) array, got shape {array.shape}")
    if array.shape[:2] == (height, width):
        return array.copy()
    fil = Image.Resampling[resample.upper()]
    channels = [np.asarray(Image.fromarray(np.ascontiguousarray(array[..., c])).resize((width, height), fil))
                for c in range(array.shape[-1])]
    return np.stack(channels, axis=-1).astype(np.float32, copy=False)


def _open(path):
    path = Path(path)
    if not path.exists():
        if path.is_symlink():
            raise ImageError(path, "symbolic link loop" if _loops(path) else "broken symbolic link")
        raise ImageError(path, "no such file")
    if path.is_dir():
        raise ImageError(path, "is a folder, not a photo")
    try:
        if path.stat().st_size == 0:
            raise ImageError(path, "empty file (0 bytes)")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(path)
    except UnidentifiedImageError:
        raise ImageError(path, "not an image, or in a format Pillow cannot read") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageError(path, f"refused: {error}") from None
    except OSError as error:
        raise ImageError(path, f"cannot read the file ({error.strerror or error})") from None


def _loops(path):
    try:
        os.stat(path)
    except OSError as error:
        return error.errno == errno.ELOOP
    return False


def _upright(image):
    """Apply the EXIF orientation tag, as cameras and photo viewers expect."""
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # a corrupt EXIF block is no reason to refuse the pixels
        return image


def _to_rgb(image):
    """Any Pillow image as 8-bit RGB; 16-bit data is rescaled, transparency composited on white."""
    if image.mode.startswith("I") or image.mode == "F":
        array = np.asarray(image, dtype=np.float64)
        full_scale = 1.0 if image.mode == "F" else 65535.0
        image = Image.fromarray(np.clip(array / full_scale * 255.0 + 0.5, 0, 255).astype(np.uint8))
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        on_white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(on_white, image.convert("RGBA")).convert("RGB")
    return image.convert("RGB")
