"""Your own images through the command line: a fe-vs-ft grid on a generated folder, its results
file naming the folder's version, another version of the folder refused naming what changed, and
each bad folder refused with one line naming the file or class and the fix, exit status 2,
nothing written."""
import json
import shutil

import pytest
from PIL import Image

from colour_images import CLASSES, colour_folder, output_root  # noqa: F401 (a fixture)
from functions.__main__ import main
from functions.data.image_dataset import load_dataset

GRID = ["--backbone", "study", "--samples-per-class", "1", "2", "--splits", "1", "--val-per-class", "1",
        "--epochs", "2", "--no-track", "--no-progress"]


def test_a_fe_vs_ft_grid_runs_on_a_folder_and_refuses_another_version_of_it(tmp_path, output_root, capsys):
    folder = colour_folder(tmp_path / "paints")
    assert main(["fe-vs-ft", "MNIST", "--data", str(folder), *GRID]) == 0
    results = output_root / "MNIST" / "results" / "fe_vs_ft_paints_study.json"
    params, *records = json.loads(results.read_text())
    assert params["data"]["fingerprint"] == load_dataset(folder).fingerprint
    assert params["data"]["classes"] == sorted(CLASSES)
    assert {(r["pipeline"], r["samples_per_class"]) for r in records} == {(p, n) for p in ("FE", "FT") for n in (1, 2)}
    assert all(0.0 <= r["test_acc"] <= 1.0 for r in records)
    capsys.readouterr()

    shutil.move(folder / "red" / "0.png", folder / "blåbär" / "moved.png")  # one image relabelled
    assert main(["fe-vs-ft", "MNIST", "--data", str(folder), *GRID]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and str(results) in error[0] and "relabelled" in error[0], error
    assert json.loads(results.read_text())[1:] == records  # the file is left as it was


def test_more_samples_per_class_than_a_class_has_names_the_class(tmp_path, output_root, capsys):
    folder = colour_folder(tmp_path / "paints", per_class=6)
    argv = ["fe-vs-ft", "MNIST", "--data", str(folder), *GRID[:2], "--samples-per-class", "50", *GRID[5:]]
    assert main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert "50" in error and any(label in error for label in CLASSES), error
    assert not (output_root / "MNIST" / "results").exists() or \
        not list((output_root / "MNIST" / "results").glob("fe_vs_ft_paints_*"))


def _empty_class(folder):
    (folder / "empty").mkdir()
    return "empty"


def _single_class(folder):
    for label in list(CLASSES)[1:]:
        shutil.rmtree(folder / label)
    return "one class"


def _text_file(folder):
    (folder / "red" / "README.txt").write_text("not an image")
    return "README.txt"


def _text_png(folder):
    (folder / "red" / "note.png").write_text("a text file named like an image")
    return "note.png"


def _zero_bytes(folder):
    (folder / "red" / "zero.png").write_bytes(b"")
    return "zero.png"


def _truncated(folder):
    data = (folder / "red" / "1.png").read_bytes()
    (folder / "red" / "cut.png").write_bytes(data[: len(data) // 2])
    return "cut.png"


def _bomb(folder):
    Image.new("L", (15000, 15000)).save(folder / "red" / "bomb.png")  # 225 M pixels, past Pillow's limit
    return "bomb.png"


def _escaping_link(folder):
    outside = folder.parent / "outside.png"
    shutil.copy(folder / "red" / "1.png", outside)
    (folder / "red" / "link.png").symlink_to(outside)
    return "link.png"


def _looping_link(folder):
    (folder / "red" / "loop.png").symlink_to(folder / "red" / "loop.png")
    return "loop.png"


@pytest.mark.parametrize("damage", [_empty_class, _single_class, _text_file, _text_png, _zero_bytes, _truncated,
                                    _bomb, _escaping_link, _looping_link])
def test_a_bad_folder_is_refused_in_one_line_naming_it(tmp_path, output_root, capsys, damage):
    folder = colour_folder(tmp_path / "paints")
    named = damage(folder)
    assert main(["fe-vs-ft", "MNIST", "--data", str(folder), *GRID]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("error: "), error
    if named != "one class":
        assert named in error[0], error
    assert not list(output_root.rglob("fe_vs_ft_paints_*.json"))


def test_the_same_image_in_train_and_test_is_refused_as_leakage(tmp_path, output_root, capsys):
    for seed, split in enumerate(("train", "test")):
        colour_folder(tmp_path / "split" / split, seed=seed)
    shutil.copy(tmp_path / "split" / "train" / "red" / "3.png", tmp_path / "split" / "test" / "red" / "copy.png")
    assert main(["fe-vs-ft", "MNIST", "--data", str(tmp_path / "split"), *GRID]) == 2
    error = capsys.readouterr().err.strip()
    assert "copy.png" in error and "3.png" in error, error


@pytest.mark.parametrize("lines, named", [
    (["path", "red/0.png"], "label"),                                          # a missing column
    (["path,label,split", "red/0.png,red,training"], "training"),              # an unknown split
    (["path,label", "red/0.png,red", "red/nothere.png,red"], "nothere.png"),   # a path that does not exist
    (["path,label", "red/0.png,red", "red/1.png,red", "red/0.png,red"], "red/0.png"),  # a duplicate row
])
def test_a_bad_csv_is_refused_in_one_line_naming_it(tmp_path, output_root, capsys, lines, named):
    folder = colour_folder(tmp_path / "paints")
    table = folder / "images.csv"
    table.write_text("\n".join(lines) + "\n")
    assert main(["fe-vs-ft", "MNIST", "--data", str(table), *GRID]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and named in error[0], error
    assert not list(output_root.rglob("fe_vs_ft_*.json"))


def test_a_path_that_does_not_exist_is_named(tmp_path, output_root, capsys):
    assert main(["fe-vs-ft", "MNIST", "--data", str(tmp_path / "no such folder"), *GRID]) == 2
    assert "no such folder" in capsys.readouterr().err
