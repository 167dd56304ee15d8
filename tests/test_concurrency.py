"""Processes side by side on one results file, feature cache or MLflow store: every run of each is
kept, and MLflow holds each saved run exactly once, as the file does."""
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from functions.__main__ import main
from functions.runs.store import load_results
from functions.runs.tracking import Tracker

ROOT = Path(__file__).resolve().parent.parent
# both writers start together: each says it is ready, then waits for the go file
READY = ("import sys, time\nfrom pathlib import Path\n{setup}\nprint('ready', flush=True)\n"
         "while not Path(sys.argv[1]).exists():\n    time.sleep(0.01)\n{work}\n")
RESULTS_WRITER = READY.format(
    setup="from functions.runs.store import ResultsFile\n"
          "file = ResultsFile(sys.argv[2], {'lr': 0.1}, key=lambda r: r['name'])\nme = sys.argv[3]",
    work="for i in range(150):\n"
         "    file.add({'name': f'{me}{i}', 'part': 0}, {'name': f'{me}{i}b', 'part': 1}, {'name': f'shared{i}'})")
FEATURE_WRITER = READY.format(
    setup="import numpy as np, torch\nfrom torch import nn\nfrom functions.models.backbones import Backbone\n"
          "from functions.runs.features import FeatureStore\n"
          "images = torch.arange(200 * 4, dtype=torch.float32).reshape(200, 1, 2, 2) / 800\n"
          "backbone = Backbone('identity', {'pixels': nn.Identity()}, 1, 2, 0.0, 1.0, 2)\n"
          "store = FeatureStore(backbone, ['pixels'], {'data': 'ramp'}, images, cache_dir=sys.argv[2])\n"
          "first = int(sys.argv[3])",
    work="for start in range(first, 200, 20):\n    store.get(np.arange(start, start + 10))\n"
         "    store.get(np.arange(start + 10, start + 20) % 200)")


def side_by_side(script: str, go: Path, *argv_per_process, env=None) -> list[str]:
    """Run ``script`` in one process per argument list, released together; their outputs."""
    processes = [subprocess.Popen([sys.executable, "-c", script, str(go), *argv], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env) for argv in argv_per_process]
    for process in processes:
        assert process.stdout.readline().strip() == "ready", process.communicate()[1][-2000:]
    go.touch()
    outcomes = [process.communicate(timeout=300) for process in processes]
    assert [p.returncode for p in processes] == [0] * len(processes), [err[-2000:] for _, err in outcomes]
    return [out for out, _ in outcomes]


def test_two_processes_adding_to_one_results_file_keep_every_run(tmp_path):
    path = tmp_path / "results.json"
    side_by_side(RESULTS_WRITER, tmp_path / "go", [str(path), "a"], [str(path), "b"])
    params, records = load_results(path)
    names = [r["name"] for r in records]
    assert params == {"lr": 0.1} and len(names) == len(set(names)) == 2 * 300 + 150
    assert set(names) == {f"{me}{i}{part}" for me in "ab" for i in range(150) for part in ("", "b")} | \
        {f"shared{i}" for i in range(150)}
    for me in "ab":  # the runs of one call land together
        assert all(names.index(f"{me}{i}b") == names.index(f"{me}{i}") + 1 for i in range(150))


def test_two_processes_extracting_into_one_feature_cache_keep_every_image(tmp_path):
    side_by_side(FEATURE_WRITER, tmp_path / "go", [str(tmp_path), "0"], [str(tmp_path), "10"])
    (cache,) = tmp_path.glob("*.npz")
    with np.load(cache) as saved:
        ids, features, totals = saved["ids"], saved["features"], json.loads(str(saved["totals"]))
    assert sorted(ids.tolist()) == list(range(200)) and totals["images"] == 200  # each image extracted once
    assert np.allclose(features[:, 0], (4 * ids + 1.5) / 800)  # each image's own pooled pixels


def test_two_run_commands_on_one_results_file_keep_every_run(output_root):
    """What a user meets: two sweeps of other cut points into one file (the committed source model
    is reused; one thread each, as two processes on two cores would get)."""
    env = {**os.environ, "TRANSFER_OUTPUT_ROOT": str(output_root), "OMP_NUM_THREADS": "1"}
    common = ["--no-baselines", "--no-progress", "--percentages", "0.01", "0.02", "--repeats", "1",
              "--set", "num_train=1"]
    processes = [subprocess.Popen([sys.executable, "-m", "functions", "run", "MNIST", "--cuts", cut, *common],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
                 for cut in ("0", "1")]
    outcomes = [process.communicate(timeout=300) for process in processes]
    assert [p.returncode for p in processes] == [0, 0], [err[-2000:] for _, err in outcomes]
    _, records = load_results(output_root / "MNIST" / "results" / "results_regular_FR.json")
    cells = Counter((r["sampled_cut_point"], r["sampled_percentage"], r["repeat"]) for r in records)
    assert cells == {(cut, p, 0): 1 for cut in (0, 1) for p in (0.01, 0.02)}


def _logged(tracker: Tracker) -> Counter:
    """The (pipeline, N, split) of every run of the two fe-vs-ft experiments, summaries left out."""
    found = Counter()
    for experiment in ("Feature extraction", "Fine-tuning"):
        runs = tracker.runs(experiment)
        runs = runs[runs["tags.kind"].ne("summary")] if "tags.kind" in runs else runs
        found.update(zip(runs["params.pipeline"], runs["params.samples_per_class"].astype(int),
                         runs["params.split"].astype(int)))
    return found


def test_fe_vs_ft_side_by_side_then_rerun_logs_each_saved_run_once(output_root, monkeypatch):
    cache = output_root / "features"
    monkeypatch.setenv("TRANSFER_FEATURE_CACHE", str(cache))
    uri = f"sqlite:///{output_root / 'mlflow.db'}"
    command = ["fe-vs-ft", "MNIST", "--backbone", "study", "--target", "digits", "--val-per-class", "5",
               "--splits", "1", "--epochs", "2", "--patience", "1", "--no-progress", "--tracking-uri", uri]
    env = {**os.environ, "TRANSFER_OUTPUT_ROOT": str(output_root), "TRANSFER_FEATURE_CACHE": str(cache),
           "OMP_NUM_THREADS": "1"}
    processes = [subprocess.Popen([sys.executable, "-m", "functions", *command, "--samples-per-class", n],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
                 for n in ("1", "2")]
    outcomes = [process.communicate(timeout=300) for process in processes]
    assert [p.returncode for p in processes] == [0, 0], [err[-2000:] for _, err in outcomes]
    path = output_root / "MNIST" / "results" / "fe_vs_ft_digits_study.json"
    saved = lambda: Counter((r["pipeline"], r["samples_per_class"], r["split"]) for r in load_results(path)[1])
    tracker = Tracker(uri)
    assert saved() == _logged(tracker) == {(p, n, 0): 1 for p in ("FE", "FT") for n in (1, 2)}
    # a process stopped after saving a run and before logging it: the file has the run, MLflow not
    runs = tracker.runs("Fine-tuning")
    tracker.client.delete_run(runs[runs["params.samples_per_class"] == "2"].run_id.iloc[0])
    assert main([*command, "--samples-per-class", "1", "2"]) == 0
    assert saved() == _logged(tracker) == {(p, n, 0): 1 for p in ("FE", "FT") for n in (1, 2)}
    for record in load_results(path)[1]:  # and they hold the same numbers
        runs = tracker.runs("Feature extraction" if record["pipeline"] == "FE" else "Fine-tuning")
        run = runs[runs["params.samples_per_class"] == str(record["samples_per_class"])]  # summaries have no N
        assert run["metrics.test_acc"].tolist() == [record["test_acc"]]
