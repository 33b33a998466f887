"""A folder of every kind of file learners feed colorlab, good and bad, built by the tests themselves.

``build(folder)`` writes it and returns the expected outcome of each file: a photo that loads (and how
it is handled), or the reason in the one-line error that names it. Every folder run (beta training,
``colorize``, ``evaluate``) is tested on it: it must use the good photos, skip the bad files, and list
them at the end.
"""

import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from test_images import metadata_bomb, png_bytes


@dataclass(frozen=True)
class Case:
    name: str  # path inside the corpus folder
    problem: str | None  # a fragment of the one-line error, or None for a photo that loads
    how: str  # what a user gets


def photo(width, height, seed=0):
    """A smooth colour picture (uint8 RGB) with some detail, so that it looks like a photo to a network."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(height, width, 1)
    rgb = np.stack([0.5 + 0.4 * np.sin(5 * x + 3 * y + p) for p in rng.uniform(0, 6, 3)], axis=-1)
    rgb += rng.normal(0, 0.03, rgb.shape)
    return (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)


def _encoded(array, fmt, **options):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def build(folder):
    """Write the corpus into ``folder`` (created); return ``{name: Case}``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cases = {}

    def add(name, problem, how, data=None):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if data is not None:
            path.write_bytes(data)
        cases[name] = Case(name, problem, how)
        return path

    # Photos that load; each is shown as the network needs it.
    add("good-1.jpg", None, "a normal JPEG", _encoded(photo(64, 48, 1), "JPEG", quality=92))
    add("good-2.png", None, "a normal PNG", _encoded(photo(48, 64, 2), "PNG"))
    add("one-pixel.png", None, "scaled up (training: to the crop size)", _encoded(photo(1, 1, 3), "PNG"))
    add("small.png", None, "smaller than a training crop: scaled up", _encoded(photo(20, 12, 4), "PNG"))
    add("wide.png", None, "10000x20: scaled so that it fits (training: a crop of it)",
        _encoded(photo(10000, 20, 5), "PNG"))
    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in photo(24, 16, 6).astype(np.uint16) * 257)
    add("sixteen-bit.png", None, "16-bit RGB: rescaled to 8 bits", png_bytes(24, 16, 16, 2, rows))
    cmyk = Image.fromarray(photo(40, 30, 7)).convert("CMYK")
    buffer = io.BytesIO()
    cmyk.save(buffer, format="JPEG")
    add("cmyk.jpg", None, "CMYK: converted to RGB", buffer.getvalue())
    palette = Image.fromarray(photo(32, 32, 8)).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    buffer = io.BytesIO()
    palette.save(buffer, format="PNG", transparency=0)
    add("palette-transparent.png", None, "palette with a transparent colour: composited on white",
        buffer.getvalue())
    add("grey.jpg", None, "greyscale: used as it is (colorize colours it)",
        _encoded(photo(40, 30, 9)[..., 0], "JPEG"))
    frames = [Image.fromarray(photo(32, 24, s)) for s in (10, 11)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    add("animated.gif", None, "animated: the first frame", buffer.getvalue())
    add("my photos/été à Zürich 東京.jpg", None, "spaces and non-ASCII in the path",
        _encoded(photo(48, 40, 12), "JPEG", quality=92))
    add("folder.jpg/inside.png", None, "a folder named like a photo is searched like any folder",
        _encoded(photo(40, 40, 13), "PNG"))

    # Files that cannot be used: one line that names the file and says why.
    add("empty.png", "empty file (0 bytes)", "skipped", b"")
    add("zero-byte.jpg", "empty file (0 bytes)", "skipped", b"")
    whole = _encoded(photo(200, 100, 14), "JPEG")
    add("truncated.jpg", "truncated or corrupt", "skipped", whole[: len(whole) // 2])
    whole = _encoded(photo(100, 100, 15), "PNG")
    add("truncated-too.png", "truncated or corrupt", "skipped", whole[: len(whole) // 2])
    add("notes.jpg", "not an image", "skipped", b"these are my notes, not pixels\n")
    add("bomb.png", "decompression bomb", "skipped", png_bytes(100_000, 100_000, 8, 2))
    add("profile-bomb.png", "metadata cannot be read safely",
        "skipped (a colour profile that unpacks past 1 MiB)", metadata_bomb("iCCP"))
    add("text-bomb.png", "metadata cannot be read safely",
        "skipped (a text chunk after the pixels that unpacks past 1 MiB)", metadata_bomb("zTXt"))
    loop = folder / "loop.jpg"
    os.symlink("loop.jpg", loop)  # a link to itself
    cases["loop.jpg"] = Case("loop.jpg", "symbolic link loop", "skipped")
    os.symlink("..", folder / "my photos" / "up")  # a folder link back up: never followed, so no endless walk
    return cases


def good(cases):
    return sorted(name for name, case in cases.items() if case.problem is None)


def bad(cases):
    return sorted(name for name, case in cases.items() if case.problem is not None)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    """``(folder, cases)``: the corpus, built once per test session. Tests must not write into it."""
    folder = tmp_path_factory.mktemp("corpus")
    return folder, build(folder)
