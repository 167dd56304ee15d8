"""A folder of images as a dataset: the tensor cache, the task object, the fingerprint check."""
import numpy as np
import pytest
import torch

from functions.core.errors import DataError
from functions.data import decode, image_cache, image_dataset
from functions.data.fewshot import check_samples_per_class
from functions.data.image_dataset import load_dataset
from functions.transfer import load_dataset as api_load_dataset

from image_files import SIDE, solid


@pytest.fixture
def counted_decodes(monkeypatch):
    calls = []
    original = decode.decode_image

    def counting(path, size, channels=3):
        calls.append(path)
        return original(path, size, channels)

    monkeypatch.setattr(decode, "decode_image", counting)
    return calls


def test_images_are_decoded_once_then_read_from_the_cache(image_folder, tmp_path, counted_decodes):
    folder, known = image_folder
    dataset = load_dataset(folder, cache_root=tmp_path / "cache")
    images = dataset.images(SIDE)
    assert images.shape == (14, SIDE, SIDE, 3) and len(counted_decodes) == 14
    cache = tmp_path / "cache" / "cache" / "images" / dataset.fingerprint
    assert sorted(p.name for p in cache.iterdir()) == ["8px_3ch.npy", "8px_3ch.sums.npy", "manifest.json"]
    again = load_dataset(folder, cache_root=tmp_path / "cache").images(SIDE)  # a new process would do this
    assert len(counted_decodes) == 14 and isinstance(again, np.memmap)
    np.testing.assert_array_equal(again, images)
    grey = dataset.images(4, 1)
    assert grey.shape == (14, 4, 4, 1) and len(counted_decodes) == 28  # another size and channels: decoded once more
    row = [e.path for e in dataset.manifest.entries].index("cat/grey.png")
    assert int(grey[row, 0, 0, 0]) == 77


def test_the_pixel_sums_are_exact_and_rebuilt_where_a_cache_lacks_them(image_folder, tmp_path):
    folder, _ = image_folder
    dataset = load_dataset(folder, cache_root=tmp_path / "cache")
    sums = image_cache.cached_sums(dataset.manifest, SIDE, 3, tmp_path / "cache")
    pixels = np.asarray(dataset.images(SIDE)).astype(np.int64)
    np.testing.assert_array_equal(sums[..., 0], pixels.sum(axis=(1, 2)))
    np.testing.assert_array_equal(sums[..., 1], np.square(pixels).sum(axis=(1, 2)))
    stored = image_cache.cache_dir(dataset.fingerprint, tmp_path / "cache") / f"{SIDE}px_3ch.sums.npy"
    stored.unlink()  # a cache written before the sums were kept
    np.testing.assert_array_equal(image_cache.cached_sums(dataset.manifest, SIDE, 3, tmp_path / "cache"), sums)
    rows = np.array([0, 3, 5])
    mean, std = image_dataset.channel_mean_std(sums, rows, SIDE * SIDE)
    chosen = pixels[rows].reshape(-1, 3) / 255.0
    np.testing.assert_allclose(mean, chosen.mean(0), rtol=1e-12)
    np.testing.assert_allclose(std, chosen.std(0), rtol=1e-9)


def test_an_image_that_fails_to_decode_leaves_no_cache_file(image_folder, tmp_path):
    folder, _ = image_folder
    (folder / "dog" / "text.png").write_text("not a PNG")
    dataset = load_dataset(folder, cache_root=tmp_path / "cache")
    with pytest.raises(DataError, match="text.png is not an image Pillow can read"):
        dataset.images(SIDE)
    cache = image_cache.cache_dir(dataset.fingerprint, tmp_path / "cache")
    assert not cache.exists() or not [p for p in cache.iterdir() if p.name != "manifest.json"]


def test_the_task_is_the_built_in_datasets_task_object(image_folder, tmp_path):
    folder, _ = image_folder
    dataset = api_load_dataset(folder, cache_root=tmp_path / "cache")
    assert dataset.classes == ["cat", "dog", "grüne Äpfel"]
    assert dataset.counts()["test"] == {"cat": 1, "dog": 1, "grüne Äpfel": 1}
    task = dataset.task(SIDE, val_split=0.2, seed=3)
    assert task.dataset == f"shapes@{dataset.fingerprint[:12]}:test0.2-seed0" and task.num_classes == 3
    assert (len(task.train), len(task.val), len(task.test)) == (8, 3, 3)
    assert sorted(task.val.y.tolist()) == [0, 1, 2]  # a stratified draw: one of each class at least
    assert task.train.x.shape[1:] == (3, SIDE, SIDE) and task.train.x.dtype == torch.float32
    training = torch.cat([task.train.x, task.val.x])  # normalised by the training split's own mean and std
    assert training.mean(dim=(0, 2, 3)).abs().max() < 1e-5
    assert (training.std(dim=(0, 2, 3), unbiased=False) - 1).abs().max() < 1e-4
    images = dataset.images(SIDE)
    test_rows = [i for i, e in enumerate(dataset.manifest.entries) if e.split == "test"]
    expected = torch.from_numpy(np.asarray(images[test_rows])).permute(0, 3, 1, 2).float() / 255
    torch.testing.assert_close(task.pixels(task.test), expected, atol=1e-6, rtol=0)
    assert dataset.task(SIDE, val_split=0.2, seed=3) is task
    grey = dataset.task(4, channels=1, classes=["cat", "dog"])
    assert grey.train.x.shape[1:] == (1, 4, 4) and grey.classes == ["cat", "dog"]
    assert set(grey.test.y.tolist()) == {0, 1}


@pytest.mark.parametrize("fill_chunk", [2, 32])
def test_splits_are_the_normalised_images_bit_for_bit_whatever_the_chunk(image_folder, tmp_path, monkeypatch,
                                                                         fill_chunk):
    monkeypatch.setattr(image_dataset, "FILL_CHUNK", fill_chunk)
    folder, _ = image_folder
    dataset = load_dataset(folder, cache_root=tmp_path / "cache")
    task = dataset.task(SIDE, val_split=0.2, seed=3)
    scale = torch.tensor([1 / (255 * s) for s in task.std], dtype=torch.float32).view(1, -1, 1, 1)
    shift = torch.tensor([-m / s for m, s in zip(task.mean, task.std)], dtype=torch.float32).view(1, -1, 1, 1)
    test_rows = [i for i, e in enumerate(dataset.manifest.entries) if e.split == "test"]
    pixels = torch.from_numpy(np.asarray(dataset.images(SIDE)[test_rows])).permute(0, 3, 1, 2)
    assert torch.equal(task.test.x, pixels.float() * scale + shift)
    assert task.test.x.is_contiguous(memory_format=torch.channels_last)


def test_a_domain_column_selects_images(image_folder, tmp_path):
    folder, _ = image_folder
    (folder / "domains.csv").write_text(
        "path,label,split,domain\ncat/grey.png,cat,train,drawing\ndog/bitmap.BMP,dog,train,drawing\n"
        "cat/rgba.pNg,cat,test,drawing\ndog/anim.gif,dog,test,drawing\n"
        "cat/rgb.Jpg,cat,train,photo\ndog/photo.webp,dog,train,photo\n"
        "cat/sixteen.tif,cat,test,photo\ndog/cmyk.JPEG,dog,test,photo\n")
    dataset = load_dataset(folder / "domains.csv", cache_root=tmp_path / "cache")
    task = dataset.task(SIDE, val_split=0.0, domain="photo")
    assert (len(task.train), len(task.test)) == (2, 2)
    with pytest.raises(DataError, match=r"no domain 'sketch'; its domains are \['drawing', 'photo'\]"):
        dataset.task(SIDE, domain="sketch")


def test_more_samples_per_class_than_a_class_has_names_the_class(image_folder, tmp_path):
    folder, _ = image_folder
    task = load_dataset(folder, cache_root=tmp_path / "cache").task(SIDE, val_split=0.0)
    with pytest.raises(DataError, match="3 samples per class asked for, but class grüne Äpfel has only 2 images"):
        check_samples_per_class(task.train.y, task.num_classes, 3, task.classes)


def test_unknown_classes_are_refused(image_folder, tmp_path):
    folder, _ = image_folder
    with pytest.raises(DataError, match=r"has no class\(es\) \['bird'\]: choose two or more of"):
        load_dataset(folder, cache_root=tmp_path / "cache").task(SIDE, classes=["cat", "bird"])


def test_results_from_another_version_are_refused_naming_the_change(image_folder, tmp_path):
    folder, _ = image_folder
    first = load_dataset(folder, cache_root=tmp_path / "cache")
    first.images(4)  # reading a version keeps its file list beside its cache
    stored = first.version
    assert stored == {"name": "shapes", "fingerprint": first.fingerprint, "classes": ["cat", "dog", "grüne Äpfel"],
                      "test_split": {"fraction": 0.2, "seed": 0}}
    first.check_version(stored)
    redrawn = load_dataset(folder, seed=5, cache_root=tmp_path / "cache")
    assert redrawn.fingerprint == first.fingerprint  # the same files: one image cache for every draw
    with pytest.raises(DataError, match="test split drawn with fraction 0.2, seed 0 then, drawn with fraction 0.2, "
                                        "seed 5 now"):
        redrawn.check_version(stored)
    solid("L", 9).save(folder / "dog" / "added.png")
    second = load_dataset(folder, cache_root=tmp_path / "cache")
    with pytest.raises(DataError, match=r"fe_vs_ft.json was made from another version of shapes: "
                                        r"1 file added \(dog/added.png\); restore those files"):
        second.check_version(stored, "fe_vs_ft.json")
    with pytest.raises(DataError, match="fingerprint 000000000000 then, .* not in the cache"):
        second.check_version({**stored, "fingerprint": "0" * 64})


def test_a_prepared_dataset_is_found_by_name(image_folder, monkeypatch):
    folder, _ = image_folder
    monkeypatch.setenv("TRANSFER_DATA_ROOT", str(folder.parent))
    monkeypatch.chdir(folder / "cat")
    assert load_dataset("shapes").name == "shapes"
    with pytest.raises(DataError, match="no prepared dataset of that name .*prepare-data stamps"):
        load_dataset("stamps")
    with pytest.raises(DataError, match="MNIST is a built-in dataset, not a folder of images: load it with "
                                        "functions.data.tasks.load_task"):
        load_dataset("MNIST")


def test_a_pixels_task_reads_its_images_from_the_cache_only_when_indexed(image_folder, tmp_path):
    import pickle
    folder, _ = image_folder
    dataset = load_dataset(folder, cache_root=tmp_path / "cache")
    task = dataset.task(SIDE, val_split=0.2, seed=3, pixels=True)
    normalised = dataset.task(SIDE, val_split=0.2, seed=3)
    assert isinstance(task.train.x, image_dataset.CachedPixels) and task.pixels(task.train) is task.train.x
    assert task.train.x.shape == normalised.train.x.shape and len(task.test) == len(normalised.test)
    for split in ("train", "val", "test"):  # the same images and labels, in the same order, as the normalised task
        lazy, whole = getattr(task, split), getattr(normalised, split)
        assert torch.equal(lazy.y, whole.y)
        torch.testing.assert_close(lazy.x[:], normalised.pixels(whole), atol=1e-6, rtol=0)
    rows = torch.tensor([2, 0, 2])
    batch = task.train.x[rows]
    assert batch.is_contiguous(memory_format=torch.channels_last) and batch.dtype == torch.float32
    assert torch.equal(batch, task.train.x[:][rows]) and torch.equal(task.train.x[1], task.train.x[:][1])
    assert torch.equal(task.train.x[1:3], task.train.x[:][1:3])
    shipped = pickle.dumps(task.train.x)  # a worker receives the cache's path and the rows, not the pixels
    assert len(shipped) < 2000 and torch.equal(pickle.loads(shipped)[:], task.train.x[:])
