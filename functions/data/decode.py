"""One image file as an RGB (or grey) uint8 array of a given square size, decoded with Pillow.

Whatever the file holds becomes what a network reads: the EXIF orientation applied (a phone's
portrait photo stands upright); transparency (RGBA, LA, palette or grey with a transparent
colour) composited on white, as a drawing is seen on a page; palette, grey, CMYK and 16-bit grey
(``I;16``, ``I``: 0..65535 scaled to 0..255) as RGB; grey for one channel by ITU-R BT.601
luminance (Pillow's ``L``, the weights of :data:`functions.data.adapt.LUMINANCE`).

The size is made as the ImageNet backbones' own adaptation makes it
(:meth:`functions.models.backbones.Backbone.adapt` with its defaults): the image squashed to the
square, bicubic, antialiased when shrinking; a cached image at a network's input size is then
only normalised there.  JPEGs are decoded at the smallest DCT scale that still gives at least
the size asked (Pillow's ``draft``), which makes large photos several times faster to read.

Pillow's decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``) is kept, its warning an error.
"""
from __future__ import annotations

import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..core.errors import DataError

SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def decode_image(path, size: int, channels: int = 3) -> np.ndarray:
    """The image at ``path`` as a ``(size, size, channels)`` uint8 array (``channels`` 1 or 3)."""
    if channels not in (1, 3):
        raise DataError(f"channels={channels}: images are decoded as grey (1) or RGB (3)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                if image.format == "JPEG":
                    image.draft(image.mode, (size, size))
                image.load()  # a truncated file fails here
                ImageOps.exif_transpose(image, in_place=True)  # in place: no copy of the pixels
                image = _as_rgb_or_grey(image, channels, path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise DataError(f"{path} is refused as a possible decompression bomb ({err}); Pillow's limit "
                        f"Image.MAX_IMAGE_PIXELS = {Image.MAX_IMAGE_PIXELS} pixels is kept: shrink the image") from None
    except UnidentifiedImageError:
        raise DataError(f"{path} is not an image Pillow can read (its content is not PNG, JPEG, BMP, GIF, WebP "
                        f"or TIFF, whatever its name): replace it with the image or remove it") from None
    except OSError as err:  # a truncated or corrupt file, or one that cannot be opened
        raise DataError(f"{path} cannot be decoded ({err}): the file is damaged or truncated; replace it "
                        f"with a complete copy or remove it") from None
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BICUBIC)
    pixels = np.asarray(image, dtype=np.uint8)
    return pixels[..., None] if pixels.ndim == 2 else pixels


def _as_rgb_or_grey(image: Image.Image, channels: int, path) -> Image.Image:
    if image.mode in SIXTEEN_BIT:
        wide = np.asarray(image, dtype=np.float64)  # "I;16" and "I" both hold 0..65535 for 16-bit files
        image = Image.fromarray(np.clip(np.rint(wide / 257.0), 0, 255).astype(np.uint8), "L")
    elif image.mode == "F":
        raise DataError(f"{path} holds 32-bit floating-point pixels, which have no fixed "
                        f"range: save it as an 8- or 16-bit image")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info:
        rgba = image if image.mode == "RGBA" else image.convert("RGBA")
        image = Image.new("RGB", rgba.size, (255, 255, 255))
        image.paste(rgba, mask=rgba)  # the same pixels as Image.alpha_composite on opaque white, for every colour and alpha
    want = "L" if channels == 1 else "RGB"
    return image if image.mode == want else image.convert(want)
