"""Your own images through the other commands: zoo build measures a bank of a generated folder's
tasks, recommend-model ranks the zoo on the folder, sample-efficiency streams its images and refuses
another version of it, classify labels each of its images, and the task bank draws tasks from its
classes."""
import json
import shutil

import pandas as pd
import pytest

from colour_images import CLASSES, colour_folder, output_root  # noqa: F401 (a fixture)
from functions.__main__ import main
from functions.data.image_dataset import load_dataset
from functions.data.task_bank import DatasetPool, dataset_task, dataset_tasks


def test_the_task_bank_draws_tasks_from_a_folders_classes_up_to_its_smallest_class(tmp_path):
    folder = colour_folder(tmp_path / "paints")
    shutil.rmtree(folder / "red")
    colour_folder(tmp_path / "more", per_class=20)
    shutil.copytree(tmp_path / "more" / "red", folder / "red")  # red: 20 images, the others 10
    lines = []
    data = DatasetPool(load_dataset(folder))
    tasks = dataset_tasks(data, log=lines.append)
    smallest = int(data.train_counts().min())
    assert {t.classes for t in tasks} == {(0, 1), (0, 2), (1, 2), (0, 1, 2)}  # every subset there is
    assert {t.per_class for t in tasks} == {smallest} and all(t.dataset == "paints" for t in tasks)
    assert len(lines) == 1 and str(smallest) in lines[0] and "red" not in lines[0], lines
    whole = dataset_task(data, log=lambda *_: None)
    assert whole.classes == (0, 1, 2) and whole.n_train == 3 * smallest


@pytest.mark.slow
def test_zoo_build_measures_a_bank_of_a_folders_tasks_and_checks_the_built_in_banks_intervals_on_it(
        tmp_path, output_root, capsys):
    from functions.analysis.model_zoo import files, matrix
    from functions.data import task_bank
    from functions.models import zoo_catalog
    from functions.runs import zoo_matrix
    names = ["mnist_0-4_d6_w16", "fashion_all_d6_w16"]
    tasks = [t for t in task_bank.bank() if t.dataset == "digits" and t.n_train <= 40][:6]
    built_in, _ = zoo_matrix.build([zoo_catalog.zoo_model(n) for n in names], tasks, matrix.scores, seeds=1,
                                   log=lambda *_: None)
    files.save(built_in)
    folder = colour_folder(tmp_path / "paints")
    assert main(["zoo", "build", "--data", str(folder), "--models", *names, "--seeds", "1"]) == 0
    out = capsys.readouterr().out
    assert "trained on the built-in bank" in out and "the intervals the built-in bank gives, on these tasks" in out
    records = pd.read_csv(files.records_path("paints"))
    assert set(records["model"]) == set(names) and records["task"].nunique() == 4  # 3 pairs and all three classes
    assert records["accuracy"].between(0, 1).all() and (records["source_dataset"] == "paints").all()
    assert len(pd.read_csv(files.records_path())) == len(built_in)  # the built-in bank's records untouched
    written = json.loads((files.zoo_dir() / "recommenders_paints.json").read_text())
    assert "('trained on the built-in bank', 'weighted_tau')" in written["logme"]
    coverage = json.loads((files.zoo_dir() / "coverage_paints.json").read_text())
    assert [row["nominal"] for row in coverage] == [0.8, 0.9] and all(0 <= row["coverage"] <= 1 for row in coverage)
    assert (files.zoo_dir() / "figures" / "transferability_matrix_paints.png").exists()
    assert main(["zoo", "evaluate", "--data", str(folder)]) == 0
    assert "trained on the built-in bank" in capsys.readouterr().out
    assert main(["zoo", "pretrain", "--data", str(folder)]) == 2
    assert "--data: options of zoo build, which zoo pretrain would ignore" in capsys.readouterr().err
    twin = colour_folder(tmp_path / "other" / "paints")
    assert main(["zoo", "build", "--data", str(folder), str(twin), "--models", *names]) == 2
    assert "two datasets are named 'paints'" in capsys.readouterr().err


@pytest.mark.slow
def test_recommend_model_ranks_the_zoo_on_a_folder(tmp_path, output_root, capsys):
    from functions.analysis.model_zoo import files, matrix
    from functions.data import task_bank
    from functions.models import zoo_catalog
    from functions.runs import zoo_matrix
    models = [zoo_catalog.zoo_model(n) for n in ("mnist_0-4_d6_w16", "fashion_all_d6_w16")]
    tasks = [t for t in task_bank.bank() if t.dataset == "digits" and t.n_train <= 40][:4]
    records, _ = zoo_matrix.build(models, tasks, matrix.scores, seeds=1, log=lambda *_: None)
    files.save(records)
    folder = colour_folder(tmp_path / "paints")
    assert main(["recommend-model", "--data", str(folder), "--recommender", "logme"]) == 0
    out = capsys.readouterr().out
    version = load_dataset(folder).version
    assert version["fingerprint"][:12] in out and "blåbär, green leaves, red" in out
    assert all(m.name in out for m in models) and "measured_accuracy" not in out
    assert main(["recommend-model", "--data", str(folder), "--recommender", "logme", "--measure"]) == 0
    out = capsys.readouterr().out
    assert "measured_accuracy" in out
    table, choice = out.split("\n\n")  # the ranking, then the Pareto set
    rows = [line.split() for line in table.splitlines() if any(m.name in line.split() for m in models)]
    column = next(line.split() for line in table.splitlines() if "measured_accuracy" in line.split())
    accuracies = [float(r[len(r) - len(column) + column.index("measured_accuracy")]) for r in rows]
    assert len(rows) == 2 and all(0.0 <= a <= 1.0 for a in accuracies), out  # each probe's accuracy beside it
    assert "calibrated leaving tasks out (the records hold one dataset)" in choice
    assert main(["recommend-model"]) == 2
    assert "give a bank task (--task" in capsys.readouterr().err
    assert main(["recommend-model", "--task", "digits:0,1:10", "--measure"]) == 2
    assert "give --data PATH, or drop --measure" in capsys.readouterr().err


@pytest.mark.slow
def test_sample_efficiency_streams_a_folder_and_refuses_another_version_of_it(tmp_path, output_root, capsys):
    folder = colour_folder(tmp_path / "paints")
    argv = ["sample-efficiency", "MNIST", "--data", str(folder), "--seeds", "1", "--max-samples", "10",
            "--methods", "ncm", "--window", "2", "--no-progress"]
    assert main(argv) == 0
    path = output_root / "MNIST" / "results" / "sample_efficiency_data_paints.json"
    assert capsys.readouterr().out.splitlines()[-1] == f"wrote {path}"
    params, *records = json.loads(path.read_text())
    assert params["data"] == load_dataset(folder).version and params["classes"] == sorted(CLASSES)
    assert params["extractor"]["in_shape"] == [1, 28, 28]  # the grey study CNN gets grey at its size
    assert sorted(r["method"] for r in records) == ["adam", "ncm"]

    shutil.move(folder / "red" / "0.png", folder / "blåbär" / "moved.png")  # one image relabelled
    assert main(argv) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and str(path) in error[0] and "relabelled" in error[0], error
    assert main([*argv, "--task", "binary"]) == 2
    assert "--task binary and --data" in capsys.readouterr().err


def test_classify_labels_every_image_of_a_folder(tmp_path, output_root, capsys):
    folder = colour_folder(tmp_path / "paints", per_class=2)
    assert main(["classify", "--data", str(folder), "--top", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    named = [line[:-1] for line in lines if not line.startswith(" ")]
    assert sorted(named) == sorted(str(folder / label / f"{i}.png") for label in CLASSES for i in range(2))
    assert len(lines) == 3 * len(named)
    assert main(["classify"]) == 2
    assert "give image files, or --data" in capsys.readouterr().err
