"""Folders and CSVs read into manifests: layouts, the drawn test split, the fingerprint, bad input."""
import os
import shutil
from pathlib import Path

import pytest

from functions.core.errors import DataError
from functions.data.files import SUFFIXES, describe_changes, read_manifest

from image_files import solid


def test_every_suffix_in_mixed_case_is_listed(image_folder):
    folder, _ = image_folder
    manifest = read_manifest(folder)
    suffixes = {os.path.splitext(e.path)[1] for e in manifest.entries}
    assert {s.lower() for s in suffixes} == set(SUFFIXES)
    assert any(s != s.lower() for s in suffixes)
    assert manifest.classes == ["cat", "dog", "grüne Äpfel"]  # spaces and non-ASCII letters work


def test_the_drawn_test_split_is_seeded_stratified_and_recorded(image_folder):
    folder, _ = image_folder
    for label in ("cat", "dog"):  # 10 images per class: 2 drawn for test
        for i in range(5):
            solid("L", 10 * i + (label == "dog")).save(folder / label / f"extra{i}.png")
    a, b, other = read_manifest(folder), read_manifest(folder), read_manifest(folder, seed=1)
    assert a.entries == b.entries
    assert a.test_drawn == {"fraction": 0.2, "seed": 0}
    assert a.counts()["test"] == {"cat": 2, "dog": 2, "grüne Äpfel": 1}  # round(0.2 n), at least one
    assert {e.path for e in a.entries if e.split == "test"} != {e.path for e in other.entries if e.split == "test"}
    assert a.records()["entries"][0]["split"] in ("train", "test")


def test_given_splits_are_kept(image_folder, tmp_path):
    folder, _ = image_folder
    split_root = tmp_path / "splits"
    for split, label, name in [("train", "cat", "grey.png"), ("train", "dog", "bitmap.BMP"),
                               ("val", "cat", "rgba.pNg"), ("test", "cat", "rgb.Jpg"), ("test", "dog", "anim.gif")]:
        (split_root / split / label).mkdir(parents=True, exist_ok=True)
        shutil.copy(folder / label / name, split_root / split / label / name)
    manifest = read_manifest(split_root)
    assert manifest.test_drawn is None
    assert manifest.counts() == {"train": {"cat": 1, "dog": 1}, "val": {"cat": 1, "dog": 0},
                                 "test": {"cat": 1, "dog": 1}}
    assert {e.path for e in manifest.entries if e.split == "val"} == {"val/cat/rgba.pNg"}


def test_csv_with_domains(image_folder):
    folder, _ = image_folder
    (folder / "list.csv").write_text(
        "path,label,split,domain\n"
        "cat/grey.png,cat,train,drawing\ndog/bitmap.BMP,dog,train,drawing\n"
        "cat/rgb.Jpg,cat,test,photo\ndog/photo.webp,dog,test,photo\n", encoding="utf-8")
    manifest = read_manifest(folder / "list.csv")
    assert manifest.name == "list" and manifest.domains == ["drawing", "photo"]
    assert [(e.path, e.split, e.domain) for e in manifest.entries][0] == ("cat/grey.png", "train", "drawing")


def test_csv_without_split_column_gets_a_drawn_split(image_folder):
    folder, _ = image_folder
    rows = [f"{e.path},{e.label}" for e in read_manifest(folder).entries]
    (folder / "list.csv").write_text("path,label\n" + "\n".join(rows) + "\n", encoding="utf-8")
    manifest = read_manifest(folder / "list.csv")
    assert manifest.test_drawn is not None
    assert manifest.fingerprint == read_manifest(folder).fingerprint  # the same files, labels and draw


def test_fingerprint_is_stable_and_names_what_changed(image_folder, tmp_path):
    folder, _ = image_folder
    before = read_manifest(folder)
    moved = tmp_path / "elsewhere" / "renamed"
    shutil.copytree(folder, moved)
    assert read_manifest(moved).fingerprint == before.fingerprint  # the root's place and name do not count
    (folder / "dog" / "rotated.jpg").rename(folder / "cat" / "rotated.jpg")  # relabelled
    (folder / "cat" / "grey.png").unlink()
    solid("RGB", (1, 2, 3)).save(folder / "dog" / "new.png")
    after = read_manifest(folder)
    assert after.fingerprint != before.fingerprint
    changes = describe_changes(before, after)
    assert changes == ("1 file added (dog/new.png); 1 file removed (cat/grey.png); "
                       "1 file relabelled (dog/rotated.jpg -> cat/rotated.jpg)")
    # a relabelled file has a new path in a folder layout; in a CSV the label column changes alone
    (folder / "a.csv").write_text("path,label,split\ncat/rgb.Jpg,cat,train\ndog/bitmap.BMP,dog,train\n"
                                  "dog/photo.webp,dog,test\ncat/rgba.pNg,cat,test\n")
    first = read_manifest(folder / "a.csv")
    (folder / "a.csv").write_text("path,label,split\ncat/rgb.Jpg,dog,train\ndog/bitmap.BMP,cat,train\n"
                                  "dog/photo.webp,dog,test\ncat/rgba.pNg,cat,test\n")
    assert describe_changes(first, read_manifest(folder / "a.csv")).startswith(
        "2 files relabelled (cat/rgb.Jpg: cat -> dog, dog/bitmap.BMP: dog -> cat)")


# ----------------------------------------------------------------------------- bad input

def _refused(path, match, **kwargs):
    with pytest.raises(DataError, match=match) as err:
        read_manifest(path, **kwargs)
    assert "\n" not in str(err.value)
    return str(err.value)


def test_an_empty_class_folder_is_named(image_folder):
    folder, _ = image_folder
    (folder / "empty class").mkdir()
    assert "empty class" in _refused(folder, "holds no images: add images to it or remove it")


def test_a_single_class_is_refused(image_folder):
    folder, _ = image_folder
    for label in ("dog", "grüne Äpfel"):
        shutil.rmtree(folder / label)
    _refused(folder, "single class .'cat'.: a classifier needs at least two")


def test_a_non_image_file_in_a_class_folder_is_named(image_folder):
    folder, _ = image_folder
    (folder / "cat" / "README.txt").write_text("notes")
    (folder / "README.md").write_text("beside the class folders: ignored")
    assert "README.txt" in _refused(folder, "is not an image file .* move it out of the class folder")


def test_a_zero_byte_file_is_named(image_folder):
    folder, _ = image_folder
    (folder / "cat" / "blank.png").write_bytes(b"")
    assert "blank.png" in _refused(folder, r"is empty \(0 bytes\)")


def test_a_folder_named_like_an_image_is_refused(image_folder):
    # as root, chmod 000 does not stop reading; a folder where a file should be is the unreadable entry
    folder, _ = image_folder
    (folder / "cat" / "looks.png").mkdir()
    assert "looks.png" in _refused(folder, "folder named like an image")


def test_a_file_that_cannot_be_read_is_named(image_folder, monkeypatch):
    # as root, chmod 000 does not stop reading: the refusal of the operating system is simulated
    from functions.data import files
    folder, _ = image_folder

    def refusing(path, *args, **kwargs):
        if Path(path).name == "grey.png":
            raise PermissionError(13, "Permission denied", str(path))
        return open(path, *args, **kwargs)

    monkeypatch.setattr(files, "open", refusing, raising=False)
    assert "grey.png" in _refused(folder, r"cannot be read \(Permission denied\): check its permissions")


def test_a_pipe_named_like_an_image_is_refused(image_folder):
    folder, _ = image_folder
    os.mkfifo(folder / "cat" / "pipe.png")
    _refused(folder, "pipe.png is not a regular file")


def test_split_folders_mixed_with_class_folders_are_refused(image_folder):
    folder, _ = image_folder
    (folder / "train").mkdir()
    _refused(folder, r"mixes split folders \['train'\] with other folders \['cat', 'dog', 'grüne Äpfel'\]")


def test_symlinks_leaving_the_root_or_looping_are_refused(image_folder, tmp_path):
    folder, _ = image_folder
    outside = tmp_path / "outside.png"
    solid("L", 3).save(outside)
    (folder / "cat" / "link.png").symlink_to(outside)
    _refused(folder, "link.png is a symbolic link to .*outside.png, outside .*: copy the image")
    (folder / "cat" / "link.png").unlink()
    (folder / "cat" / "loop.png").symlink_to(folder / "cat" / "loop.png")
    _refused(folder, "loop.png is a broken or looping symbolic link")
    (folder / "cat" / "loop.png").unlink()
    (folder / "cat" / "inside.png").symlink_to(folder / "dog" / "bitmap.BMP")  # inside the root: fine
    read_manifest(folder, test_fraction=0.01)


def test_an_image_outside_any_class_folder_is_refused(image_folder):
    folder, _ = image_folder
    solid("L", 3).save(folder / "stray.png")
    _refused(folder, "stray.png is not inside a class folder")


def test_split_folders_need_train_and_test(image_folder, tmp_path):
    folder, _ = image_folder
    (tmp_path / "s" / "train" / "cat").mkdir(parents=True)
    _refused(tmp_path / "s", "no test/")


@pytest.mark.parametrize("header, rows, match", [
    ("file,label", ["cat/grey.png,cat"], r"has no column \['path'\]"),
    ("path,label,fold", ["cat/grey.png,cat,1"], r"unknown column\(s\) \['fold'\]"),
    ("path,label,split", ["cat/grey.png,cat,training"], "line 2: unknown split 'training'"),
    ("path,label", ["cat/grey.png,cat", "cat/nothere.png,cat"], "line 3: .*nothere.png does not exist"),
    ("path,label", ["cat/grey.png,cat", "dog/bitmap.BMP,dog", "cat/grey.png,cat"], "lines 2 and 4 both list"),
    ("path,label", ["cat/grey.png,"], "line 2: empty label"),
    ("path,label", [], "lists no images"),
])
def test_bad_csvs_are_refused_by_line(image_folder, header, rows, match):
    folder, _ = image_folder
    (folder / "list.csv").write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    _refused(folder / "list.csv", match)


def test_the_same_image_in_train_and_test_is_leakage(image_folder):
    folder, _ = image_folder
    shutil.copy(folder / "cat" / "grey.png", folder / "cat" / "copy.png")
    (folder / "list.csv").write_text("path,label,split\ncat/grey.png,cat,train\ndog/bitmap.BMP,dog,train\n"
                                     "cat/copy.png,cat,test\ndog/photo.webp,dog,test\n")
    _refused(folder / "list.csv", r"1 test image\(s\) have the same content as a training image \(leakage\): "
                                  r"cat/grey.png = cat/copy.png")
    # a drawn split keeps copies of one image on the same side
    manifest = read_manifest(folder, test_fraction=0.5)
    assert len({e.split for e in manifest.entries if e.path in ("cat/grey.png", "cat/copy.png")}) == 1


def test_paths_that_do_not_exist_are_named(tmp_path):
    _refused(tmp_path / "nowhere", "no such folder or CSV file")


def test_a_class_too_small_to_draw_a_test_split_is_named(image_folder):
    folder, _ = image_folder
    (folder / "grüne Äpfel" / "a.jpeg").unlink()
    (folder / "grüne Äpfel" / "b.tiff").unlink()
    _refused(folder, "class 'grüne Äpfel' has 1 image: drawing a test split needs at least two per class")
    _refused(folder, r"test fraction 1.5 must be in \(0, 1\)", test_fraction=1.5)
