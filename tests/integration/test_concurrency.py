"""Processes side by side on one results file, feature cache, source model, zoo or MLflow store:
every run of each is kept, nothing is trained twice, figures show every process's runs, and MLflow
holds each saved run exactly once, as the file does."""
import json
import os
import subprocess
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from functions.__main__ import main
from functions.analysis import tradeoff
from functions.analysis.model_zoo import files as zoo_files
from functions.config import Grid, get_setup, profile
from functions.core.atomic import write_png
from functions.efficiency import benchmark
from functions.runs import sweep
from functions.runs.executors import InProcess
from functions.runs.store import load_results
from functions.runs.tracking import Tracker
from functions.models.zoo_catalog import ZOO_VERSION
from functions.core.paths import REPO_ROOT

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
          "from functions.models.registry import PretrainedRecord\n"
          "from functions.runs.features import FeatureStore\n"
          "images = torch.arange(200 * 4, dtype=torch.float32).reshape(200, 1, 2, 2) / 800\n"
          "record = PretrainedRecord('identity', 'test', 'identity', 2, 1, (0.0,), (1.0,), 2, 'file')\n"
          "backbone = Backbone(record, {'pixels': nn.Identity()})\n"
          "store = FeatureStore(backbone, ['pixels'], {'data': 'ramp'}, images, cache_dir=sys.argv[2])\n"
          "first = int(sys.argv[3])",
    work="for start in range(first, 200, 20):\n    store.get(np.arange(start, start + 10))\n"
         "    store.get(np.arange(start + 10, start + 20) % 200)")

PRETRAINER = READY.format(
    setup="from functions.config import Config, get_setup\nfrom functions.runs.pretrained import load_pretrained\n"
          "cfg = Config(num_channels=2, depth=1, num_train_pretrain=1, batch_size=256, early_stop_patience=1)",
    work="model = load_pretrained(get_setup('MNIST', 'regular'), cfg)\n"
         "print('weights', sum(float(p.double().sum()) for p in model.parameters()))")


def side_by_side(script: str, go: Path, *argv_per_process, env=None) -> list[str]:
    """Run ``script`` in one process per argument list, released together; their outputs."""
    processes = [subprocess.Popen([sys.executable, "-c", script, str(go), *argv], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT, env=env) for argv in argv_per_process]
    for process in processes:
        assert process.stdout.readline().strip() == "ready", process.communicate()[1][-2000:]
    go.touch()
    outcomes = [process.communicate(timeout=300) for process in processes]
    assert [p.returncode for p in processes] == [0] * len(processes), [err[-2000:] for _, err in outcomes]
    return [out for out, _ in outcomes]


def commands_side_by_side(output_root, *argv_per_process) -> None:
    """``python -m functions`` once per argument list, started together, one thread each."""
    env = {**os.environ, "TRANSFER_OUTPUT_ROOT": str(output_root), "OMP_NUM_THREADS": "1"}
    processes = [subprocess.Popen([sys.executable, "-m", "functions", *argv], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT, env=env) for argv in argv_per_process]
    outcomes = [process.communicate(timeout=300) for process in processes]
    assert [p.returncode for p in processes] == [0] * len(processes), [err[-2000:] for _, err in outcomes]


def drawn_again(fig, tmp_path, name) -> bytes:
    """The PNG of ``fig`` as the commands write it (equal figures give equal bytes)."""
    return write_png(fig, tmp_path / "expected" / name).read_bytes()


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


def test_two_processes_asking_for_one_missing_source_model_train_it_once(output_root):
    outputs = side_by_side(PRETRAINER, output_root / "go", [], [], env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert sum(out.count("pretraining MNIST/regular") for out in outputs) == 1, outputs
    weights = [line for out in outputs for line in out.splitlines() if line.startswith("weights")]
    assert len(weights) == 2 and weights[0] == weights[1]  # the one that waited loaded what the other wrote
    assert len(list((output_root / "MNIST" / "pretrained_models").glob("*.pt"))) == 1


def zoo_rows(model: str = "m", zoo_version: int = ZOO_VERSION, seeds: int = 3) -> pd.DataFrame:
    """A model's records on two tasks, with every column the zoo's files keep."""
    columns = dict.fromkeys((*zoo_files.MODEL_COLUMNS, *zoo_files.TASK_COLUMNS), 1)
    return pd.DataFrame([{**columns, "model": model, "task": task, "source_dataset": "MNIST", "n_train": n,
                          "logme": 0.5 + n, "zoo_version": zoo_version, "seeds": seeds}
                         for n, task in enumerate(("t0", "t1"))])


def test_two_writers_saving_zoo_records_keep_every_row(output_root):
    """Two threads: each opens the lock file itself, so they wait on each other as processes do."""
    rows = zoo_rows()
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda me: [zoo_files.save(rows.assign(model=f"{me}{i}")) for i in range(20)], "ab"))
    models = {f"{me}{i}" for me in "ab" for i in range(20)}
    records = zoo_files.load_records()
    assert Counter(zip(records.model, records.task)) == {(m, t): 1 for m in models for t in ("t0", "t1")}
    folder = zoo_files.zoo_dir()
    for name in (zoo_files.MODEL_META, "LogME.csv"):  # one row per model, written from the merged records
        table = pd.read_csv(folder / name)
        assert sorted(table.model) == sorted(models)


def test_zoo_rows_measured_otherwise_are_replaced_and_the_others_kept(output_root):
    path = zoo_files.save(zoo_rows("old"))["records"]
    zoo_rows("old").assign(zoo_version=ZOO_VERSION + 1).to_csv(path, index=False)
    zoo_files.save(zoo_rows("a"))
    assert set(zoo_files.load_records().model) == {"a"}  # a rebuild measures another version's rows again
    zoo_files.save(pd.concat([zoo_rows("a").assign(logme=9.0), zoo_rows("b")]))
    records = zoo_files.load_records()
    assert list(records.model) == ["a", "a", "b", "b"] and list(records.logme) == [0.5, 1.5, 0.5, 1.5]
    zoo_files.save(zoo_rows("c", seeds=5))
    assert set(zoo_files.load_records().model) == {"c"}


class AnotherProcessMeanwhile(InProcess):
    """Runs cells here; while the first trains, ``meanwhile`` (another process's sweep) runs."""

    def __init__(self, meanwhile):
        super().__init__()
        self.meanwhile, self.cells = meanwhile, []

    def submit(self, work, unit, *args) -> None:
        self.cells.append(unit)
        if len(self.cells) == 1:
            self.meanwhile()
        super().submit(work, unit, *args)


def test_a_sweep_skips_cells_another_process_saved_after_it_began(output_root):
    setup = get_setup("MNIST", "regular")
    cfg = profile("quick", setup)[0].replace(num_train=1)
    quiet = dict(baselines=False, progress=False, log=lambda *_: None)
    other = lambda: sweep.run_sweep(setup, cfg, Grid((0.02,), (0,), {0.02: 1}), **quiet)
    executor = AnotherProcessMeanwhile(other)
    saved = []
    path = sweep.run_sweep(setup, cfg, Grid((0.01, 0.02), (0,), {0.01: 1, 0.02: 1}), executor=executor,
                           on_run=saved.append, **quiet)["results"]
    assert [(c.cut_point, c.percentage) for c in executor.cells] == [(0, 0.01)]  # 0.02 was not trained again
    _, records = load_results(path)
    assert [(r["sampled_percentage"], r["repeat"]) for r in records] == [(0.02, 0), (0.01, 0)]
    assert saved == records[1:]


def test_two_run_commands_on_one_results_file_keep_every_run(output_root):
    """What a user meets: two sweeps of other cut points into one file (the committed source model
    is reused; one thread each, as two processes on two cores would get)."""
    common = ["--no-baselines", "--no-progress", "--percentages", "0.01", "0.02", "--repeats", "1",
              "--set", "num_train=1", "--set", "min_steps_per_epoch=20"]
    commands_side_by_side(output_root, *(["run", "MNIST", "--cuts", cut, *common] for cut in ("0", "1")))
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
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT, env=env)
                 for n in ("1", "2")]
    outcomes = [process.communicate(timeout=300) for process in processes]
    assert [p.returncode for p in processes] == [0, 0], [err[-2000:] for _, err in outcomes]
    path = output_root / "MNIST" / "results" / "fe_vs_ft_digits_study.json"
    saved = lambda: Counter((r["pipeline"], r["samples_per_class"], r["split"]) for r in load_results(path)[1])
    tracker = Tracker(uri)
    assert saved() == _logged(tracker) == {(p, n, 0): 1 for p in ("FE", "FT") for n in (1, 2)}
    figures = output_root / "MNIST" / "results" / "figures"
    for draw, name in ((tradeoff.accuracy_curves, "accuracy"), (tradeoff.pareto, "cost")):  # both calls' N
        expected = drawn_again(draw(load_results(path)[1], tradeoff.figure_title("MNIST/digits", "study")),
                               output_root, f"{name}.png")
        assert (figures / f"fe_vs_ft_{name}_digits_study.png").read_bytes() == expected
    # a process stopped after saving a run and before logging it: the file has the run, MLflow not
    runs = tracker.runs("Fine-tuning")
    tracker.client.delete_run(runs[runs["params.samples_per_class"] == "2"].run_id.iloc[0])
    assert main([*command, "--samples-per-class", "1", "2"]) == 0
    assert saved() == _logged(tracker) == {(p, n, 0): 1 for p in ("FE", "FT") for n in (1, 2)}
    for record in load_results(path)[1]:  # and they hold the same numbers
        runs = tracker.runs("Feature extraction" if record["pipeline"] == "FE" else "Fine-tuning")
        run = runs[runs["params.samples_per_class"] == str(record["samples_per_class"])]  # summaries have no N
        assert run["metrics.test_acc"].tolist() == [record["test_acc"]]


def test_sample_efficiency_side_by_side_draws_both_calls_runs(output_root, monkeypatch):
    monkeypatch.setenv("TRANSFER_FEATURE_CACHE", str(output_root / "features"))
    common = ["sample-efficiency", "MNIST", "--task", "binary", "--max-samples", "20", "--evaluation-frequency", "2",
              "--window", "2", "--pool", "60", "--no-progress"]
    commands_side_by_side(output_root, [*common, "--methods", "ridge", "--seeds", "2"],
                          [*common, "--methods", "ncm", "--seeds", "3"])
    path = benchmark.results_path("MNIST", "regular_binary")
    params, records = load_results(path)
    assert Counter((r["method"], r["seed"]) for r in records) == {
        **{("adam", s): 1 for s in range(3)}, **{("ridge", s): 1 for s in range(2)}, **{("ncm", s): 1 for s in range(3)}}
    expected = benchmark.plot_study(records, params, output_root / "expected" / path.stem)
    for figure in expected:
        assert (path.parent / "figures" / figure.name).read_bytes() == figure.read_bytes()
