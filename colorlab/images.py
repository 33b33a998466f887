"""Load any photo Pillow reads as float RGB in [0, 1] (16-bit, CMYK, transparency and EXIF orientation
included), or fail with one line that names the file and the problem (an :class:`ImageError`)."""

import errno
import os
import stat
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
        self.path, self.problem = path, problem


def load(path, size=None, side="longer"):
    """Read a photo as an (H, W, 3) float32 array in [0, 1]: exactly ``load_8bit(...) / 255``."""
    return load_8bit(path, size, side).astype(np.float32) / 255.0


def load_8bit(path, size=None, side="longer"):
    """A photo as upright (H, W, 3) uint8, scaled so that its ``side`` ("longer" or "shorter") is ``size``:
    "longer" fits it in a ``size`` square, "shorter" makes it cover one."""
    if side not in ("longer", "shorter"):
        raise ValueError(f"side must be 'longer' or 'shorter', got {side!r}")
    with open_image(path) as image:
        width, height = image.size
        target = None
        if size is not None:
            scale = size / (max(width, height) if side == "longer" else min(width, height))
            target = tuple(max(1, round(n * scale)) for n in image.size)
            safe = Image.MAX_IMAGE_PIXELS
            if safe and target[0] * target[1] > safe:  # a panorama, a typo
                raise ImageError(path, f"refused: scaled to {size} pixels on its {side} side, this "
                                       f"{width}x{height} photo would have {target[0]}x{target[1]} pixels, "
                                       f"more than the {safe} that are safe to hold")
            if image.format == "JPEG" and scale < 1:
                image.draft(None, target)  # the JPEG decoder shrinks by 1/2, 1/4 or 1/8: several times faster
        try:
            image.load()
            loaded = image.size
            rgb = _to_rgb(_upright(image))
        except (ImageError, MemoryError):
            raise
        except Exception as error:  # Pillow reports broken files with many exception types
            text = str(error).lower()  # e.g. PNG text after the pixels, too large to unpack
            if isinstance(error, ValueError) and ("too large" in text or "too much memory" in text):
                raise ImageError(path, f"refused: its metadata cannot be read safely ({error})") from None
            raise ImageError(path, f"cannot decode the image, it is truncated or corrupt ({error})") from None
    if target is not None:
        if rgb.size != loaded:  # the EXIF orientation turned the photo by 90 degrees
            target = target[::-1]
        if rgb.size != target:
            rgb = rgb.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)
    return np.asarray(rgb, dtype=np.uint8)


def save(path, rgb):
    """Write an (H, W, 3) array, 8-bit or in [0, 1], as an image file (format from the suffix), atomically."""
    array = rgb if rgb.dtype == np.uint8 else np.clip(np.float32(rgb) * 255 + 0.5, 0, 255).astype(np.uint8)
    options = {".jpg": {"quality": 95}, ".jpeg": {"quality": 95}, ".png": {"compress_level": 1}}  # 1: fast
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, **options.get(Path(path).suffix.lower(), {}))


def list_images(folder):
    """All photos under ``folder``, sorted (hidden files skipped; links to folders not followed: no loops)."""
    folder = Path(folder)
    if not folder.is_dir():
        problem = "no such folder" if not folder.exists() else "is a file, not a folder"
        raise UserError(f"{folder}: {problem}")
    found = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(root) / n for n in names if not n.startswith(".") and n.lower().endswith(EXTENSIONS)]
    return sorted(found)


def pad_to_multiple(array, multiple, shape=None):
    """Mirror-pad an (..., H, W, C) array at the bottom and right to a ``multiple`` (or to ``shape``)."""
    h, w = array.shape[-3:-1]
    height, width = shape or (h + -h % multiple, w + -w % multiple)
    pad = [(0, 0)] * (array.ndim - 3) + [(0, height - h), (0, width - w), (0, 0)]
    return np.pad(array, pad, mode="symmetric")


def resize(array, height, width, resample="bilinear", box=None):
    """Resize an (H, W, C) array, or its ``box`` (as in Pillow), with a Pillow filter: float32, unclipped."""
    array = np.asarray(array)
    if array.ndim != 3:
        raise ValueError(f"expected an (H, W, C) array, got shape {array.shape}")
    if array.shape[:2] == (height, width) and box is None:
        return array.astype(np.float32)
    size, fil = (width, height), Image.Resampling[resample.upper()]
    channels = [Image.fromarray(np.ascontiguousarray(array[..., c])).convert("F").resize(size, fil, box)
                for c in range(array.shape[-1])]  # 8-bit: made float by Pillow, a channel at a time
    return np.stack(channels, axis=-1).astype(np.float32, copy=False)


def open_image(path):
    """Pillow's (lazy) image of ``path``; an :class:`ImageError` if it is no readable photo file."""
    path = Path(path)
    try:
        info = path.stat()
        if stat.S_ISDIR(info.st_mode):
            raise ImageError(path, "is a folder, not a photo")
        if not stat.S_ISREG(info.st_mode):
            raise ImageError(path, "not a regular file (a device, a pipe or a socket), not a photo")
        if info.st_size == 0:
            raise ImageError(path, "empty file (0 bytes)")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(path)
    except (FileNotFoundError, NotADirectoryError):
        raise ImageError(path, "broken symbolic link" if path.is_symlink() else "no such file") from None
    except UnidentifiedImageError:
        raise ImageError(path, "not an image, or in a format Pillow cannot read") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageError(path, f"refused: {error}") from None
    except (ValueError, SyntaxError, EOFError) as error:  # e.g. a PNG colour profile too large to unpack
        raise ImageError(path, f"refused: its metadata cannot be read safely ({error})") from None
    except OSError as error:
        loop = error.errno == errno.ELOOP
        raise ImageError(path, "symbolic link loop" if loop else
                         f"cannot read the file ({error.strerror or error})") from None


def _upright(image):  # the EXIF orientation applied, as cameras and photo viewers expect
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # a corrupt EXIF block is no reason to refuse the pixels
        return image


def _to_rgb(image):  # any Pillow image as 8-bit RGB: 16-bit data rescaled, transparency composited on white
    if image.mode.startswith("I") or image.mode == "F":
        array = np.asarray(image, dtype=np.float64)
        full_scale = 1.0 if image.mode == "F" else 65535.0
        image = Image.fromarray(np.clip(array / full_scale * 255.0 + 0.5, 0, 255).astype(np.uint8))
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        on_white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(on_white, image.convert("RGBA")).convert("RGB")
    return image.convert("RGB")
