"""colorlab.images: every kind of photo loads right; every bad file fails with one line naming it."""

import io
import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from colorlab import images
from colorlab.images import ImageError

RED, BLUE = (255, 0, 0), (0, 0, 255)


def chunk(kind, data):
    """One PNG chunk: length, type, data, CRC."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bytes(width, height, depth, colour_type, raw=b"", before=b"", after=b""):
    """A PNG written by hand, so the tests can make files Pillow will not write (16-bit RGB, bombs);
    ``before`` and ``after`` are chunks placed before and after the pixels (IDAT)."""
    header = struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, 0)
    pixels = chunk(b"IDAT", zlib.compress(raw))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + before + pixels + after + chunk(b"IEND", b"")


def metadata_bomb(kind="iCCP"):
    """A 4x4 grey PNG whose colour profile (iCCP, before the pixels) or text (zTXt, iTXt: after them) is
    1 KiB that unpacks past Pillow's limit for metadata (PngImagePlugin.MAX_TEXT_CHUNK, 1 MiB)."""
    from PIL import PngImagePlugin

    packed = zlib.compress(bytes(PngImagePlugin.MAX_TEXT_CHUNK + 1024), 9)
    data = {"iCCP": b"profile\0\0", "zTXt": b"Comment\0\0", "iTXt": b"Comment\0\1\0\0\0"}[kind] + packed
    pixels = b"".join(b"\x00" + b"\x80" * 4 for _ in range(4))
    return png_bytes(4, 4, 8, 0, pixels, **({"before": chunk(kind.encode(), data)} if kind == "iCCP" else
                                            {"after": chunk(kind.encode(), data)}))


def flat_png(width, height, grey=128, rows=64):
    """A large grey PNG made in milliseconds: the same compressed band of rows, repeated."""
    row = b"\x00" + bytes([grey]) * width
    packer = zlib.compressobj(1, zlib.DEFLATED, -15)
    band = packer.compress(row * rows) + packer.flush(zlib.Z_FULL_FLUSH)  # stands alone: it can be repeated
    full, rest = divmod(height, rows)
    tail = packer.compress(row * rest) + packer.flush()
    adler = 1
    for _ in range(full):
        adler = zlib.adler32(row * rows, adler)
    stream = b"\x78\x01" + band * full + tail + struct.pack(">I", zlib.adler32(row * rest, adler))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", stream) + chunk(b"IEND", b"")


def left_red_right_blue(width, height, mode="RGB"):
    image = Image.new("RGB", (width, height), BLUE)
    image.paste(RED, (0, 0, width // 2, height))
    return image.convert(mode)


# --- photos that must load right ---------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".png", ".bmp", ".tif", ".webp"])
def test_lossless_formats_load_exactly(tmp_path, suffix):
    pixels = np.random.default_rng(0).integers(0, 256, (23, 37, 3), dtype=np.uint8)  # odd-sized
    path = tmp_path / f"photo{suffix}"
    Image.fromarray(pixels).save(path, **({"lossless": True} if suffix == ".webp" else {}))
    rgb = images.load(path)
    assert rgb.shape == (23, 37, 3) and rgb.dtype == np.float32
    np.testing.assert_allclose(rgb, pixels / 255.0, atol=1e-6)


def test_jpeg_loads_close_to_its_pixels(tmp_path):
    left_red_right_blue(40, 20).save(tmp_path / "photo.jpg", quality=95)
    rgb = images.load(tmp_path / "photo.jpg")
    np.testing.assert_allclose(rgb[10, 5], [1, 0, 0], atol=0.05)
    np.testing.assert_allclose(rgb[10, 35], [0, 0, 1], atol=0.05)


@pytest.mark.parametrize("mode", ["L", "P", "CMYK", "1"])
def test_other_colour_modes_become_rgb(tmp_path, mode):
    path = tmp_path / ("photo.jpg" if mode == "CMYK" else "photo.png")
    left_red_right_blue(40, 20, mode).save(path)
    rgb = images.load(path)
    assert rgb.shape == (20, 40, 3)
    expected = np.asarray(left_red_right_blue(40, 20, mode).convert("RGB"), dtype=np.float32) / 255
    np.testing.assert_allclose(rgb, expected, atol=0.05)


def test_transparency_is_composited_on_white(tmp_path):
    rgba = np.zeros((2, 3, 4), dtype=np.uint8)
    rgba[..., 0] = 255  # red everywhere
    rgba[..., 3] = [[0, 128, 255], [0, 128, 255]]  # transparent, half, opaque
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    rgb = images.load(tmp_path / "rgba.png")
    np.testing.assert_allclose(rgb[0, 0], [1, 1, 1], atol=1 / 255)  # transparent: white
    np.testing.assert_allclose(rgb[0, 1], [1, 127 / 255, 127 / 255], atol=2 / 255)  # half: pink
    np.testing.assert_allclose(rgb[0, 2], [1, 0, 0], atol=1 / 255)  # opaque: red


def test_palette_transparency_is_composited_on_white(tmp_path):
    palette = Image.new("P", (2, 1))
    palette.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    palette.putpixel((1, 0), 1)
    palette.save(tmp_path / "palette.png", transparency=1)
    np.testing.assert_allclose(images.load(tmp_path / "palette.png")[0], [[1, 0, 0], [1, 1, 1]])


def test_16_bit_grey_keeps_its_brightness(tmp_path):
    grey = np.array([[0, 16384, 32768, 65535]], dtype=np.uint16)
    Image.fromarray(grey).save(tmp_path / "grey16.png")
    rgb = images.load(tmp_path / "grey16.png")
    np.testing.assert_allclose(rgb[0, :, 0], grey[0] / 65535, atol=1 / 255)  # not saturated to white
    assert np.all(rgb[..., 0] == rgb[..., 2])


def test_16_bit_rgb(tmp_path):
    pixels = np.zeros((3, 5, 3), dtype=">u2")
    pixels[...] = (40000, 1000, 65535)
    rows = b"".join(b"\x00" + row.tobytes() for row in pixels)
    (tmp_path / "rgb16.png").write_bytes(png_bytes(5, 3, 16, 2, rows))
    expected = np.array([40000, 1000, 65535]) / 65535
    np.testing.assert_allclose(images.load(tmp_path / "rgb16.png")[1, 2], expected, atol=1 / 255)


@pytest.mark.parametrize("size", [None, 10])
def test_exif_orientation_is_applied(tmp_path, size):
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    left_red_right_blue(40, 20).save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    rgb = images.load(tmp_path / "rotated.jpg", size)
    assert rgb.shape == ((40, 20, 3) if size is None else (10, 5, 3))  # upright: taller than wide
    top, bottom = rgb[: rgb.shape[0] // 4].mean(axis=(0, 1)), rgb[-rgb.shape[0] // 4 :].mean(axis=(0, 1))
    assert top[0] > 0.8 > top[2] and bottom[2] > 0.8 > bottom[0]  # the left (red) half is now on top


def test_animated_gif_uses_the_first_frame(tmp_path):
    frames = [Image.new("RGB", (8, 8), RED), Image.new("RGB", (8, 8), BLUE)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    np.testing.assert_allclose(images.load(tmp_path / "anim.gif")[4, 4], [1, 0, 0], atol=0.02)


@pytest.mark.parametrize(
    "width, height, size, expected",
    [(400, 300, 100, (75, 100)), (300, 400, 100, (100, 75)), (1, 1, 8, (8, 8)), (10000, 20, 256, (1, 256)),
     (64, 48, 64, (48, 64))],
)
def test_resize_keeps_the_aspect_ratio(tmp_path, width, height, size, expected):
    left_red_right_blue(width, height).save(tmp_path / "photo.png")
    assert images.load(tmp_path / "photo.png", size).shape == (*expected, 3)


def test_large_jpeg_is_shrunk_while_decoding(tmp_path):
    left_red_right_blue(2000, 1000).save(tmp_path / "big.jpg", quality=90)
    rgb = images.load(tmp_path / "big.jpg", 200)
    assert rgb.shape == (100, 200, 3)
    np.testing.assert_allclose(rgb[50, 20], [1, 0, 0], atol=0.05)


# --- files that must fail with one clear line ------------------------------------------------

def bad_files(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "notes.jpg").write_text("these are not pixels")
    buffer = io.BytesIO()
    left_red_right_blue(200, 100).save(buffer, format="JPEG")
    (tmp_path / "truncated.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    buffer = io.BytesIO()
    noise = np.random.default_rng(0).integers(0, 256, (100, 100, 3), dtype=np.uint8)
    Image.fromarray(noise).save(buffer, format="PNG")
    (tmp_path / "truncated.png").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    (tmp_path / "bomb.png").write_bytes(png_bytes(100_000, 100_000, 8, 2))
    (tmp_path / "folder.jpg").mkdir()
    os.symlink(tmp_path / "nowhere.jpg", tmp_path / "dangling.jpg")
    for kind in ("iCCP", "zTXt", "iTXt"):
        (tmp_path / f"{kind}-bomb.png").write_bytes(metadata_bomb(kind))
    os.mkfifo(tmp_path / "pipe.jpg")  # opening it to read would wait for a writer forever
    os.symlink("/dev/zero", tmp_path / "zeros.png")  # endless
    return {
        "missing.jpg": "no such file", "empty.jpg": "empty file", "notes.jpg": "not an image",
        "truncated.jpg": "truncated or corrupt", "truncated.png": "truncated or corrupt",
        "bomb.png": "decompression bomb", "folder.jpg": "is a folder", "dangling.jpg": "broken symbolic link",
        "iCCP-bomb.png": "refused: its metadata cannot be read safely",
        "zTXt-bomb.png": "refused: its metadata cannot be read safely",
        "iTXt-bomb.png": "refused: its metadata cannot be read safely",
        "pipe.jpg": "not a regular file", "zeros.png": "not a regular file",
    }


def test_every_bad_file_fails_with_one_line_naming_it(tmp_path):
    for name, problem in bad_files(tmp_path).items():
        for size in (None, 64):
            with pytest.raises(ImageError) as caught:
                images.load(tmp_path / name, size)
            message = str(caught.value)
            assert message.startswith(str(tmp_path / name) + ": "), message
            assert problem in message, message
            assert "\n" not in message


# --- folders, padding and saving -----------------------------------------------------------------

def test_list_images_is_recursive_sorted_and_safe(tmp_path):
    names = ["b.jpg", "a.PNG", "sub/c.webp", "sub/deeper/d.tiff", "notes.txt", ".hidden.jpg", ".cache/e.jpg"]
    for name in names:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    os.symlink(tmp_path, tmp_path / "sub" / "loop")  # a link back up must not loop forever
    found = [p.relative_to(tmp_path).as_posix() for p in images.list_images(tmp_path)]
    assert found == ["a.PNG", "b.jpg", "sub/c.webp", "sub/deeper/d.tiff"]


def test_list_images_refuses_a_missing_folder(tmp_path):
    with pytest.raises(images.UserError, match="no such folder"):
        images.list_images(tmp_path / "nope")


@pytest.mark.parametrize("shape", [(23, 37, 1), (2, 8, 8, 2), (1, 1, 3)])
def test_pad_to_multiple_keeps_the_content(shape):
    array = np.random.default_rng(0).random(shape)
    padded = images.pad_to_multiple(array, 8)
    assert padded.shape[-3] % 8 == 0 and padded.shape[-2] % 8 == 0
    assert padded.shape[-3] - shape[-3] < 8 and padded.shape[-2] - shape[-2] < 8
    np.testing.assert_array_equal(padded[..., : shape[-3], : shape[-2], :], array)


def test_save_round_trips_and_leaves_no_temporary_file(tmp_path):
    rgb = np.random.default_rng(0).random((9, 13, 3)).astype(np.float32)
    images.save(tmp_path / "out.png", rgb)
    np.testing.assert_allclose(images.load(tmp_path / "out.png"), rgb, atol=0.5 / 255 + 1e-6)
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]
