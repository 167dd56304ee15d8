"""Pillow decoding: every mode as RGB or grey uint8, orientation, transparency, damaged files refused."""
import numpy as np
import pytest
from PIL import Image

from functions.core.errors import DataError
from functions.data.decode import decode_image
from functions.data.files import read_manifest

from image_files import SIDE, solid


def test_every_mode_decodes_to_rgb_uint8(image_folder):
    folder, known = image_folder
    for entry in read_manifest(folder).entries:
        pixels = decode_image(folder / entry.path, SIDE, 3)
        assert pixels.shape == (SIDE, SIDE, 3) and pixels.dtype == np.uint8
        if entry.path in known:
            assert tuple(pixels[0, 0]) == known[entry.path], entry.path


def test_transparency_is_composited_on_white(image_folder):
    folder, _ = image_folder
    palette = decode_image(folder / "cat" / "palette_transparent.PNG", SIDE)
    assert tuple(palette[-1, -1]) == (255, 255, 255)  # the transparent palette index
    half = folder / "half.png"
    solid("RGBA", (0, 0, 0, 128)).save(half)
    assert tuple(decode_image(half, SIDE)[0, 0]) == (127, 127, 127)


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_white_compositing_is_alpha_composite_s_for_every_colour_and_alpha(tmp_path, mode):
    """The cache's pixels stay those of ``Image.alpha_composite`` on opaque white: every (colour,
    alpha) pair, in each channel, once."""
    colour, alpha = np.meshgrid(np.arange(256), np.arange(256))
    bands = [colour, 255 - colour, (7 * colour) % 256][:3 if mode == "RGBA" else 1] + [alpha]
    image = Image.fromarray(np.stack(bands, -1).astype(np.uint8), mode)
    image.save(tmp_path / "all.png")
    rgba = image.convert("RGBA")
    expected = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    assert np.array_equal(decode_image(tmp_path / "all.png", 256), np.asarray(expected))


def test_cmyk_and_sixteen_bit_convert(image_folder):
    folder, _ = image_folder
    assert decode_image(folder / "dog" / "cmyk.JPEG", SIDE).min() >= 250  # no ink: white
    assert tuple(decode_image(folder / "cat" / "sixteen.tif", SIDE)[0, 0]) == (100, 100, 100)  # 257 * 100 of 65535
    assert tuple(decode_image(folder / "dog" / "wide.TIFF", SIDE)[0, 0]) == (200, 200, 200)  # mode "I"


def test_exif_orientation_is_applied(image_folder):
    folder, _ = image_folder
    pixels = decode_image(folder / "dog" / "rotated.jpg", SIDE).mean(axis=(1, 2))
    assert pixels[:SIDE // 2 - 1].max() < 40 and pixels[SIDE // 2 + 1:].min() > 215  # black on top once upright


def test_grey_is_the_luminance_and_sizes_are_squashed(tmp_path):
    path = tmp_path / "red.png"
    solid("RGB", (255, 0, 0), size=(12, 5)).save(path)
    grey = decode_image(path, 4, 1)
    assert grey.shape == (4, 4, 1) and int(grey[0, 0, 0]) == 76  # 0.299 * 255


@pytest.mark.parametrize("content, match", [
    (b"this is text, not a PNG\n", "not an image Pillow can read"),
    ("truncated", "cannot be decoded .*truncated"),
])
def test_damaged_files_are_named(image_folder, content, match):
    folder, _ = image_folder
    path = folder / "cat" / "bad.png"
    if content == "truncated":
        data = (folder / "grüne Äpfel" / "c.png").read_bytes()
        content = data[:len(data) // 2]
    path.write_bytes(content)
    with pytest.raises(DataError, match=match) as err:
        decode_image(path, SIDE)
    assert "bad.png" in str(err.value) and "\n" not in str(err.value)


def test_decompression_bombs_are_refused_with_pillow_s_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50)
    for side in (8, 11):  # above the limit (Pillow warns: an error here), above twice the limit
        path = tmp_path / f"bomb{side}.png"
        solid("L", 0, size=(side, side)).save(path)
        with pytest.raises(DataError, match=f"bomb{side}.png is refused as a possible decompression bomb .*"
                                            r"Image.MAX_IMAGE_PIXELS = 50 pixels is kept"):
            decode_image(path, SIDE)
