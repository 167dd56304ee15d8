"""Generated image files covering every image mode and suffix the loaders read."""
import numpy as np
from PIL import Image

SIDE = 8


def solid(mode: str, colour, size=(SIDE, SIDE)) -> Image.Image:
    return Image.new(mode, size, colour)


def write_images(folder, seed: int = 0) -> dict:
    """One image of each mode and suffix (suffixes in mixed case) spread over three classes, the
    last two named with a space and non-ASCII letters; returns {relative path: expected RGB of the
    top-left pixel} for the images whose colour is exactly known."""
    rng = np.random.default_rng(seed)
    noise = lambda: Image.fromarray(rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8), "RGB")
    palette = Image.new("P", (SIDE, SIDE), 0)
    palette.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    palette.paste(1, (0, 0, SIDE, SIDE // 2))  # top half index 1 (blue), bottom half index 0
    wide = np.full((SIDE, SIDE), 257 * 100, dtype=np.uint16)
    files = {
        "cat/grey.png": (solid("L", 77), (77, 77, 77)),
        "cat/palette_transparent.PNG": (palette, (0, 0, 255)),  # index 0 transparent: the bottom half is white
        "cat/rgb.Jpg": (noise(), None),
        "cat/rgba.pNg": (solid("RGBA", (0, 0, 255, 0)), (255, 255, 255)),  # fully transparent: white
        "cat/sixteen.tif": (Image.fromarray(wide), (100, 100, 100)),
        "dog/cmyk.JPEG": (solid("CMYK", (0, 0, 0, 0)), None),
        "dog/bitmap.BMP": (solid("RGB", (10, 200, 30)), (10, 200, 30)),
        "dog/anim.gif": (noise().convert("P"), None),
        "dog/photo.webp": (noise(), None),
        "dog/wide.TIFF": (Image.fromarray(wide.astype(np.int32) * 2), (200, 200, 200)),
        "grüne Äpfel/a.jpeg": (noise(), None),
        "grüne Äpfel/b.tiff": (noise(), None),
        "grüne Äpfel/c.png": (noise(), None),
    }
    known = {}
    for rel, (image, colour) in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        kwargs = {"transparency": 0} if rel.endswith("palette_transparent.PNG") else {}
        fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF"}.get(path.suffix.lower())
        if fmt == "JPEG":
            kwargs["quality"] = 95
        image.save(path, fmt, **kwargs)
        if colour is not None:
            known[rel] = colour
    # a JPEG whose EXIF says "rotate 90 degrees clockwise" (orientation 6): stored 8 wide, 4 high,
    # black on the left; upright it is 4 wide, 8 high, black on top
    stored = Image.new("RGB", (SIDE, SIDE // 2), (255, 255, 255))
    stored.paste((0, 0, 0), (0, 0, SIDE // 2, SIDE // 2))
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(folder / "dog" / "rotated.jpg", "JPEG", exif=exif, quality=95)
    return known
