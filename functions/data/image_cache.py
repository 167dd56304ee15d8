"""The decoded images of a dataset version as one uint8 array per size, on disk under the data root.

``<data root>/cache/images/<fingerprint>/<size>px_<channels>ch.npy`` holds ``(N, size, size,
channels)`` uint8 in the manifest's order, and ``manifest.json`` beside it the file list of that
version (so that a later version can name what changed).  The first read decodes each image once
and streams it into the file (one image's pixels in memory at a time, however large the folder);
every later read memory-maps the file.  Images are decoded by a few threads (Pillow releases the
GIL while it decodes and resizes), a window at a time and written in order, so memory holds at
most a window of images.  Writes are atomic and under the file's lock: an interrupted build leaves
no file, and two processes asking at once decode once.

Beside each array, ``<size>px_<channels>ch.sums.npy`` holds every image's per-channel sum of
pixel values and of their squares (exact integers, ``(N, channels, 2)`` uint64), taken while the
image is decoded: the mean and std of any set of images (a task's training split) are then sums
over rows, not a pass over the pixels of every run.
"""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ..core.atomic import atomic_file, locked, write_json_atomic
from ..core.errors import DataError
from ..core.paths import data_root
from . import decode
from .files import Manifest, reader_threads

WINDOW = 64  # images decoded ahead of the writer at most


def cache_dir(fingerprint: str, root: Path | None = None) -> Path:
    return Path(root or data_root()) / "cache" / "images" / fingerprint


def cached_images(manifest: Manifest, size: int, channels: int = 3, root: Path | None = None,
                  log=None) -> np.ndarray:
    """The manifest's images as a read-only memory-mapped ``(N, size, size, channels)`` uint8
    array, decoded now if this (version, size, channels) has no cache yet."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise DataError(f"image size {size!r} must be a positive integer (pixels of the square side)")
    folder = cache_dir(manifest.fingerprint, root)
    path = folder / f"{size}px_{channels}ch.npy"
    shape = (len(manifest.entries), size, size, channels)
    if not path.exists():
        with locked(path):
            if not path.exists():
                if log is not None:
                    log(f"decoding {shape[0]} images of {manifest.name} at {size} px, {channels} channel(s), once "
                        f"(cached in {path})")
                _build(manifest, shape, path)
    save_manifest(manifest, root)
    images = np.load(path, mmap_mode="r")
    if images.shape != shape or images.dtype != np.uint8:
        raise DataError(f"{path} holds {images.dtype} {images.shape}, not the {shape} uint8 images of "
                        f"{manifest.name}: delete the file to rebuild it")
    return images


def cached_sums(manifest: Manifest, size: int, channels: int = 3, root: Path | None = None, log=None) -> np.ndarray:
    """Every image's per-channel pixel sum and sum of squares, ``(N, channels, 2)`` uint64, in the
    manifest's order (see the module doc); taken from the images where a cache predates them."""
    images = cached_images(manifest, size, channels, root, log)
    path = _sums_path(cache_dir(manifest.fingerprint, root) / f"{size}px_{channels}ch.npy")
    if not path.exists():
        with locked(path):
            if not path.exists():
                with atomic_file(path, "wb") as fh:
                    np.save(fh, np.stack([pixel_sums(image) for image in images]) if len(images) else
                            np.zeros((0, channels, 2), np.uint64))
    sums = np.load(path)
    if sums.shape != (len(images), channels, 2) or sums.dtype != np.uint64:
        raise DataError(f"{path} holds {sums.dtype} {sums.shape}, not the pixel sums of {len(images)} images: "
                        f"delete the file to rebuild it")
    return sums


def pixel_sums(image: np.ndarray) -> np.ndarray:
    """``(channels, 2)``: one ``(size, size, channels)`` uint8 image's sum of values and of squares per channel."""
    flat = image.reshape(-1, image.shape[-1])
    return np.stack([flat.sum(0, dtype=np.uint64), np.square(flat, dtype=np.uint32).sum(0, dtype=np.uint64)], axis=1)


def _sums_path(images_path: Path) -> Path:
    return images_path.with_name(images_path.stem + ".sums.npy")


def _build(manifest: Manifest, shape: tuple, path: Path) -> None:
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False, "shape": shape}
    files = [manifest.root / entry.path for entry in manifest.entries]
    sums = np.zeros((shape[0], shape[3], 2), np.uint64)

    def decoded(file: Path) -> tuple:
        pixels = decode.decode_image(file, shape[1], shape[3])
        return pixels, pixel_sums(pixels)

    with atomic_file(path, "wb") as fh, ThreadPoolExecutor(reader_threads()) as pool:
        np.lib.format.write_array_header_1_0(fh, header)
        for start in range(0, len(files), WINDOW):
            for row, (pixels, image_sums) in enumerate(pool.map(decoded, files[start:start + WINDOW]), start):
                fh.write(pixels.tobytes())
                sums[row] = image_sums
    with atomic_file(_sums_path(path), "wb") as fh:  # after the images: an interruption between leaves them to recompute
        np.save(fh, sums)


def save_manifest(manifest: Manifest, root: Path | None = None) -> None:
    """``manifest.json`` of this version beside its images (once)."""
    path = cache_dir(manifest.fingerprint, root) / "manifest.json"
    if not path.exists():
        with locked(path):
            if not path.exists():
                write_json_atomic(path, manifest.records())


def stored_manifest(fingerprint: str, root: Path | None = None) -> Manifest | None:
    """The manifest of the version ``fingerprint`` if it was ever read on this data root."""
    path = cache_dir(fingerprint, root) / "manifest.json"
    if not path.exists():
        return None
    return Manifest.from_records(json.loads(path.read_text()))
