"""What each dataset is: class counts, split sizes, first labels, checksums, normalisation.

Plain facts, no torch: the config validates classes against them without loading a tensor
library, and :mod:`functions.data.sources` checks decoded files against them.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..core.errors import DataError

@dataclass(frozen=True)
class DatasetSpec:
    """What a correct copy of a dataset looks like once decoded."""

    name: str
    num_classes: int
    train_count: int
    test_count: int
    train_first_labels: tuple
    test_first_labels: tuple
    # sha256 of the decoded uint8 image array and int64 label array (train, test); None: unknown
    sha256: dict | None
    mean: tuple
    std: tuple
    image_shape: tuple  # (channels, height, width) of one decoded image

SPECS = {
    "MNIST": DatasetSpec(
        "MNIST", 10, 60000, 10000, (5, 0, 4, 1, 9), (7, 2, 1, 0, 4),
        {
            "train_images": "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757",
            "train_labels": "e474323ac02fc156161b0bbb1f8c9cfeb327a74bcd9f9680a8385269a24f566c",
            "test_images": "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161",
            "test_labels": "2fd8de6bdb8d11780b4b96dc57847bcfe6953f7c32aa48bfcd8237c3b7847243",
        },
        (0.1307,), (0.3081,), (1, 28, 28),
    ),
    "FashionMNIST": DatasetSpec(
        "FashionMNIST", 10, 60000, 10000, (9, 0, 0, 3, 0), (9, 2, 1, 1, 6),
        {
            "train_images": "2e487a6c89124f78f2d7521542223cafe96f7123c3ca13d447772ac6ecbb3012",
            "train_labels": "e3245b63f7c40d1c8b652835f19744d970c1613b40ddac6bcfc87b9c46e16a0b",
            "test_images": "c867c93ff95360594e8ec3287995350b824dd110b11595c0e13d5423f621867a",
            "test_labels": "d51d859896c55775b9e9e219b77ff03bcec1b6ac322f313544dc3f9e7bc94fae",
        },
        (0.2860,), (0.3530,), (1, 28, 28),
    ),
    "CIFAR10": DatasetSpec(
        "CIFAR10", 10, 50000, 10000, (6, 9, 9, 4, 1), (3, 8, 8, 0, 6),
        None,
        (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), (3, 32, 32),
    ),
    # scikit-learn's 8 x 8 digits (shipped inside scikit-learn) have no official test split: the
    # test split is every third image of each class in the dataset's order (see data.sources)
    "digits": DatasetSpec(
        "digits", 10, 1201, 596, (0, 1, 2, 3, 4), (0, 1, 2, 3, 4),
        {
            "train_images": "6814ee925cf0c102743bfa5eab4e018f844610bb6d84ef9618594ac9df2c5f94",
            "train_labels": "18714af397865d4a5a4eabf515c3137929ca82fe0d4bb3416f3dc77be2a16c26",
            "test_images": "3640f4c6fac83c98209efd6c5536436a2c085d70f0e093581820253b2bc32b19",
            "test_labels": "0041e7b58280cc39c75dc02a0505f405af15ae32c1a54ecc74be1c942c2b63dd",
        },
        (0.3048,), (0.3757,), (1, 8, 8),
    ),
}

def check_adaptable(have: tuple, want: tuple, what: str = "target images") -> None:
    """Refuse shapes no adaptation maps onto each other: channels other than equal or grey <-> RGB,
    and sizes that are not positive."""
    if len(have) != 3 or len(want) != 3 or min(*have, *want) < 1:
        raise DataError(f"{what} of shape {tuple(have)} cannot be adapted to {tuple(want)}: give image shapes as "
                        f"(channels, height, width) with positive sizes")
    channels = {have[0], want[0]}
    if len(channels) == 2 and channels != {1, 3}:
        raise DataError(f"{what} have {have[0]} channel(s) and the network takes {want[0]}: only grey (1) <-> RGB (3) "
                        f"is adapted; convert the images first or pick a network for {have[0]}-channel images")


def spec(name: str) -> DatasetSpec:
    if name not in SPECS:
        raise DataError(f"unknown dataset {name!r}; choose one of {sorted(SPECS)}")
    return SPECS[name]

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

def check_percentage(percentage: float) -> float:
    percentage = float(percentage)
    if not 0 < percentage <= 1:
        raise DataError(f"percentage {percentage} is outside (0, 1]: give the fraction of the training "
                        f"data to use, e.g. 0.01 for 1%")
    return percentage

def percentage_key(percentage: float) -> float:
    """One rounding for "the same percentage" everywhere: values read back from JSON, computed
    as fractions or typed on the command line compare equal after it."""
    return round(float(percentage), 12)

def same_percentage(a: float, b: float) -> bool:
    return percentage_key(a) == percentage_key(b)


@dataclass(frozen=True)
class ImageFolderSpec:
    """An image folder ``<data root>/<name>/<label>/<image>.png`` built from one Debian package's PNGs."""

    name: str
    package: str
    version: str  # pinned: another version would give other files, and so another fingerprint
    licence: str
    image_root: str  # the PNGs' folder inside the package
    # label -> the package's folders under image_root that make it ("x/**": x and every folder below)
    classes: dict
    skip: tuple  # file name patterns left out (the package's mirrored copies of an image)
    counts: dict  # label -> images after de-duplication (see data.debian_images.class_files)
    fingerprint: str  # data.files.fingerprint over the built folder, split ""


# Twelve classes both packages draw: drawings (clipart) against photo cut-outs and drawings (stamps)
IMAGE_FOLDERS = {
    "clipart": ImageFolderSpec(
        "clipart", "openclipart-png", "1:0.18+dfsg-19", "public domain (Open Clip Art Library)",
        "usr/share/openclipart/png",
        {
            "birds": ("animals/birds/**",),
            "clothing": ("people/clothing/**",),
            "fish": ("animals/fish/**",),
            "flowers": ("plants/flowers/**",),
            "fruit": ("food/fruit/**",),
            "houses": ("buildings/homes/**",),
            "insects": ("animals/bugs/**",),
            "mammals": ("animals/mammals/**",),
            "music": ("recreation/music/**",),
            "sports": ("recreation/sports/**",),
            "tools": ("tools",),  # not tools/weapons nor tools/toys
            "vehicles": ("transportation/vehicles/**",),
        },
        (),
        {"birds": 48, "clothing": 56, "fish": 16, "flowers": 32, "fruit": 87, "houses": 38,
         "insects": 49, "mammals": 111, "music": 75, "sports": 65, "tools": 107, "vehicles": 59},
        "af690e0eadd8896a1f43a267676a2ee492fe9e24beecce8db93a55b36a97328a",
    ),
    "stamps": ImageFolderSpec(
        "stamps", "tuxpaint-stamps-default", "2022.06.04-1", "GPL-2 (Tux Paint stamps)",
        "usr/share/tuxpaint/stamps",
        {
            "birds": ("animals/birds/**",),
            "clothing": ("clothes/**",),
            "fish": ("animals/fish/**",),
            "flowers": ("plants/flowers/**",),
            "fruit": ("food/fruit/**",),
            "houses": ("town/houses/**",),
            "insects": ("animals/insects/**",),
            "mammals": ("animals/mammals/**",),
            "music": ("hobbies/music/**",),
            "sports": ("sports/**",),
            "tools": ("household/tools/**",),
            "vehicles": ("vehicles/**",),
        },
        ("*_mirror.png", "*_flip.png"),
        {"birds": 38, "clothing": 19, "fish": 11, "flowers": 25, "fruit": 41, "houses": 32,
         "insects": 20, "mammals": 67, "music": 11, "sports": 12, "tools": 12, "vehicles": 34},
        "f9433c65e961150efedfaa38aa96818a0c1866abbafaab3a7b1d4cdf3acc9fd8",
    ),
}


def dataset_names() -> list:
    """Every dataset ``prepare-data`` makes: the decoded-array ones, then the image folders."""
    return sorted(SPECS) + sorted(IMAGE_FOLDERS)
