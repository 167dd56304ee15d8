"""Sweeps of cut points x percentages x repeats, written to results files that survive interruption.

A results file is a JSON list: element 0 the parameters dict, then one record per run (see
design notes, section 3).  Finished runs are appended and the file rewritten atomically, so
an interrupted sweep loses at most the cell in flight (the repeats of one cut point and
percentage, which train together) and a re-run skips what is already there.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from . import models
from .atomic import atomic_file
from .config import Config, Grid, Setup, baseline_params, source_params
from .data import REPO_ROOT, DataError, TaskData, balanced_subset, load_task, subset_seed
from .engine import fit_group, staged_inputs
from .training import fit


def output_root() -> Path:
    """Where study folders' results and source models go: ``$TRANSFER_OUTPUT_ROOT`` or the repository."""
    return Path(os.environ.get("TRANSFER_OUTPUT_ROOT", REPO_ROOT)).resolve()


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


# ----------------------------------------------------------------------------- files

def results_path(folder: str, kind: str, setup_name: str, mode: str | None = None) -> Path:
    """``<Folder>/results/baselines_<setup>.json`` or ``.../results_<setup>_<mode>.json``."""
    name = f"baselines_{setup_name}.json" if kind == "baselines" else f"results_{setup_name}_{mode}.json"
    return output_root() / folder / "results" / name


def write_json_atomic(path: Path, obj) -> None:
    with atomic_file(path) as fh:
        json.dump(obj, fh, indent=1)
        fh.write("\n")


def load_results(path: Path) -> tuple[dict, list[dict]]:
    """Parameters and run records of a results file (ours, or the upstream study's ``cuts_*``)."""
    path = Path(path)
    try:
        content = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DataError(f"{path} is not valid JSON ({err}); it is corrupt: restore it or delete it "
                        f"to re-run the sweep") from err
    if not isinstance(content, list) or not content or not isinstance(content[0], dict):
        raise DataError(f"{path} is not a results file: expected a JSON list starting with a parameters dict")
    return content[0], content[1:]


def differing_keys(a: dict, b: dict) -> list[str]:
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


class ResultsFile:
    """One results file being filled: refuses other parameters, skips runs already present."""

    def __init__(self, path: Path, params: dict):
        self.path, self.params, self.records = Path(path), params, []
        if self.path.exists():
            found, self.records = load_results(self.path)
            diff = differing_keys(found, params)
            if diff:
                detail = ", ".join(f"{k}: file {found.get(k)!r} vs now {params.get(k)!r}" for k in diff)
                raise DataError(f"{self.path} was written with different parameters ({detail}); "
                                f"move it away or run with the same parameters to resume")

    @staticmethod
    def key(percentage, cut_point, repeat) -> tuple:
        return round(float(percentage), 12), int(cut_point), int(repeat)

    def done(self) -> set:
        return {self.key(r["sampled_percentage"], r["sampled_cut_point"], r["repeat"]) for r in self.records}

    def add(self, *records: dict) -> None:
        """Append runs in one atomic write: the repeats of a cell land together or not at all."""
        self.records.extend(records)
        write_json_atomic(self.path, [self.params, *self.records])


# ----------------------------------------------------------------------------- source models

def _config_hash(params: dict) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:10]


def pretrained_path(setup: Setup, cfg: Config) -> Path:
    """One file per source configuration, so quick and paper models live side by side.  With an
    output root of its own (a papermill sweep), a model committed in the repository is reused."""
    name = Path(setup.folder) / "pretrained_models" / f"{setup.name}_{_config_hash(source_params(cfg))}.pt"
    committed = REPO_ROOT / name
    return committed if committed.exists() and not (output_root() / name).exists() else output_root() / name


def load_pretrained(setup: Setup, cfg: Config, log=print, train_if_missing: bool = True) -> models.StudyCNN:
    """The source model for ``cfg``: loaded when a file with the same config exists, else trained."""
    path = pretrained_path(setup, cfg)
    if not path.exists():
        if not train_if_missing:
            raise DataError(f"no pretrained model {path}; run `python -m functions pretrain {setup.folder} "
                            f"--setup {setup.name}` with the same parameters")
        task = load_task(cfg.source_dataset, cfg.pre_train_classes, cfg.val_split, cfg.generate_dataset_seed)
        pretrain(setup, cfg, task, log)
    saved = torch.load(path, map_location="cpu", weights_only=True)
    if saved["config"] != source_params(cfg):
        raise DataError(f"{path} holds a model for other parameters "
                        f"{differing_keys(saved['config'], source_params(cfg))}; delete it to retrain")
    model = models.StudyCNN(cfg, tuple(saved["in_shape"]), len(cfg.pre_train_classes))
    model.load_state_dict(saved["state_dict"])
    return model.to(memory_format=torch.channels_last)


def pretrained_info(setup: Setup, cfg: Config) -> dict:
    """What pretraining recorded beside the model: its config, epochs and accuracies."""
    return json.loads(pretrained_path(setup, cfg).with_suffix(".json").read_text())


def pretrain(setup: Setup, cfg: Config, task: TaskData, log=print) -> dict:
    """Train the source network on all source training data and save it with its config."""
    model = models.build(cfg, tuple(task.train.x.shape[1:]), task.num_classes, cfg.generate_dataset_seed)
    log(f"pretraining {setup.folder}/{setup.name} on {task.dataset} classes {task.classes} "
        f"({len(task.train)} images)")
    result = fit(model, task.train, task.val, task.test, lr=cfg.lr_pretrain, max_epochs=cfg.num_train_pretrain,
                 patience=cfg.early_stop_patience, batch_size=cfg.batch_size, seed=cfg.generate_dataset_seed)
    info = {"config": source_params(cfg), "in_shape": list(task.train.x.shape[1:]), **result.record()}
    path = pretrained_path(setup, cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({**info, "state_dict": model.state_dict()}, path)
    write_json_atomic(path.with_suffix(".json"), info)
    log(f"saved {path.name}: source test accuracy {result.test_acc:.4f}")
    return info


# ----------------------------------------------------------------------------- sweeps

def run_seed(seed: int, percentage: float, cut_point: int, repeat: int) -> int:
    return int(np.random.SeedSequence([seed, 1 + cut_point, repeat, int(round(percentage * 1e6))]).generate_state(1)[0])


def subset_index(cfg: Config, task: TaskData, percentage: float, repeat: int) -> torch.Tensor:
    seed = subset_seed(cfg.generate_dataset_seed, percentage, repeat)
    return balanced_subset(task.train.y, task.num_classes, percentage, seed)


def _record(cfg: Config, percentage: float, cut_point: int, repeat: int, result) -> dict:
    return {"lr": cfg.lr_fine_tune, "sampled_percentage": percentage, "sampled_cut_point": cut_point,
            "repeat": repeat, **result.record()}


def inputs_per_cut(cfg: Config, task: TaskData, pretrained, cut_points, device):
    """``(cut_point, (start block, train, val, test))`` on ``device`` in increasing cut order
    (baselines: ``pretrained`` None).  Frozen prefixes are computed block by block, so each
    pretrained block runs once per image over a whole sweep; a cut point's inputs are valid until
    the next one is asked for (see :func:`functions.engine.staged_inputs`)."""
    splits = [task.train, task.val, task.test]
    if pretrained is None:
        for cut_point in cut_points:
            yield cut_point, (0, *(s.to(device) for s in splits))
        return
    for cut_point, start, staged in staged_inputs(pretrained, splits, cut_points, frozen=cfg.freeze, device=device):
        yield cut_point, (start, *staged)


def run_inputs(cfg: Config, task: TaskData, pretrained, cut_point: int, device) -> tuple:
    """(start block, train, val, test) on ``device`` for runs at one cut point."""
    return next(inputs_per_cut(cfg, task, pretrained, [cut_point], device))[1]


def train_group(cfg: Config, task: TaskData, pretrained, cut_point: int, runs, inputs) -> list[tuple]:
    """The runs ``[(percentage, repeat), ...]`` at one cut point, trained together by the engine:
    fresh baselines (``pretrained`` None) or ``pretrained`` cut at ``cut_point``.
    Returns ``(model, result)`` per run, each model holding its best weights."""
    start, train, val, test = inputs
    seeds = [run_seed(cfg.generate_dataset_seed, p, cut_point, r) for p, r in runs]
    in_shape = tuple(task.train.x.shape[1:])
    nets = [models.build(cfg, in_shape, task.num_classes, seed) if pretrained is None
            else models.cut(pretrained, cut_point, cfg, task.num_classes, seed) for seed in seeds]
    trains = [train.view(subset_index(cfg, task, p, r).to(train.y.device)) for p, r in runs]
    results = fit_group(nets, trains, val, test, lr=cfg.lr_fine_tune, max_epochs=cfg.num_train,
                        patience=cfg.early_stop_patience, batch_size=cfg.batch_size, seeds=seeds, start=start,
                        device=train.y.device)
    return list(zip(nets, results))


def train_run(cfg: Config, task: TaskData, pretrained, cut_point: int, percentage: float, repeat: int, inputs):
    """One run of :func:`train_group`: the sweep's run again, equal up to float rounding (the
    sweep trains a cell's repeats as one group)."""
    return train_group(cfg, task, pretrained, cut_point, [(percentage, repeat)], inputs)[0]


def pending_runs(results: ResultsFile, grid: Grid, cut_points) -> list[tuple]:
    done = results.done()
    return [(p, c, r) for c in cut_points for p in grid.percentages for r in range(grid.repeats_for(p))
            if ResultsFile.key(p, c, r) not in done]


def run_sweep(setup: Setup, cfg: Config, grid: Grid, baselines: bool = True, progress: bool = True,
              log=print, on_run=None, device=None) -> dict[str, Path]:
    """Baselines and cut-point runs of one mode, resumable; returns the results files' paths.

    ``on_run(record)`` is called after each saved run (used for progress hooks and tests).
    """
    for c in grid.cut_points:
        cfg.check_cut(c)
    device = device or pick_device()
    task = load_task(cfg.target_dataset, cfg.fine_tune_classes, cfg.val_split, cfg.generate_dataset_seed)
    files = {"results": ResultsFile(results_path(setup.folder, "results", setup.name, cfg.mode), cfg.params())}
    if baselines:
        files["baselines"] = ResultsFile(results_path(setup.folder, "baselines", setup.name), baseline_params(cfg))
    todo = {kind: pending_runs(f, grid, [-1] if kind == "baselines" else grid.cut_points) for kind, f in files.items()}
    total = sum(len(v) for v in todo.values())
    pretrained = load_pretrained(setup, cfg, log) if todo["results"] else None
    bar = tqdm(total=total, desc=f"{setup.folder}/{setup.name} {cfg.mode}", disable=not progress, unit="run")
    for kind, runs in todo.items():
        source = pretrained if kind == "results" else None
        cells: dict[tuple, list] = {}  # (cut point, percentage) -> its pending runs
        for percentage, cut_point, repeat in runs:
            cells.setdefault((cut_point, percentage), []).append((percentage, repeat))
        for cut_point, inputs in inputs_per_cut(cfg, task, source, sorted({c for c, _ in cells}), device):
            for (_, percentage), repeats in sorted(item for item in cells.items() if item[0][0] == cut_point):
                trained = train_group(cfg, task, source, cut_point, repeats, inputs)
                # a cell's repeats train and are saved together, so a resumed sweep groups runs
                # exactly as an uninterrupted one does
                records = [_record(cfg, percentage, cut_point, repeat, result)
                           for (_, repeat), (_, result) in zip(repeats, trained)]
                files[kind].add(*records)
                bar.update(len(records))
                for record in records if on_run else ():
                    on_run(record)
    bar.close()
    return {kind: f.path for kind, f in files.items()}


# ----------------------------------------------------------------------------- summaries

def records_frame(*paths: Path) -> pd.DataFrame:
    """All run records of the given results files in one table (baseline rows have cut -1)."""
    rows = [rec for path in paths for rec in load_results(path)[1]]
    return pd.DataFrame(rows)


def summary_table(frame: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """Mean +- std test accuracy per cut point (rows; baseline first) and percentage (columns)."""
    stats = frame.groupby(["sampled_cut_point", "sampled_percentage"])["test_acc"].agg(["mean", "std", "count"])
    cell = stats.apply(lambda r: f"{r['mean']:.{digits}f} ± {0 if np.isnan(r['std']) else r['std']:.{digits}f}"
                       f" (n={int(r['count'])})", axis=1)
    table = cell.unstack("sampled_percentage")
    table.index = ["baseline" if c == -1 else f"cut {c}" for c in table.index]
    table.columns = [f"{p:g}" for p in table.columns]
    return table
