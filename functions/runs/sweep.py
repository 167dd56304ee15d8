"""Sweeps of cut points x percentages x repeats, written to results files that survive interruption.

Finished runs are appended and the file rewritten atomically, so an interrupted sweep loses at
most the cell in flight (the repeats of one cut point and percentage, which train together) and
a re-run skips what is already there.
"""
from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from pathlib import Path

from ..config import LEGACY_VALUES, Config, Grid, Setup, baseline_params
from ..core.device import pick_device
from ..core.errors import Interrupted
from ..data.catalog import percentage_key
from ..data.tasks import TaskData, balanced_subset, subset_seed
from ..models.study_cnn import build, cut
from ..train.engine import fit_group, staged_inputs
from .pretrained import load_pretrained
from .store import ResultsFile, results_path


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
    the next one is asked for (see :func:`functions.train.engine.staged_inputs`)."""
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
    nets = [build(cfg, in_shape, task.num_classes, seed) if pretrained is None
            else cut(pretrained, cut_point, cfg, task.num_classes, seed) for seed in seeds]
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
            if (percentage_key(p), c, r) not in done]


def run_sweep(setup: Setup, cfg: Config, grid: Grid, baselines: bool = True, progress: bool = True,
              log=print, on_run=None, device=None) -> dict[str, Path]:
    """Baselines and cut-point runs of one mode, resumable; returns the results files' paths.

    ``on_run(record)`` is called after each saved run (used for progress hooks and tests).
    """
    for c in grid.cut_points:
        cfg.check_cut(c)
    device = pick_device(device)
    task = cfg.target_task()
    files = {"results": ResultsFile(results_path(setup.folder, "results", setup.name, cfg.mode), cfg.params(),
                                    legacy=LEGACY_VALUES)}
    if baselines:
        files["baselines"] = ResultsFile(results_path(setup.folder, "baselines", setup.name), baseline_params(cfg),
                                         legacy=LEGACY_VALUES)
    todo = {kind: pending_runs(f, grid, [-1] if kind == "baselines" else grid.cut_points) for kind, f in files.items()}
    total = sum(len(v) for v in todo.values())
    pretrained = load_pretrained(setup, cfg, log) if todo["results"] else None
    bar = tqdm(total=total, desc=f"{setup.folder}/{setup.name} {cfg.mode}", disable=not progress, unit="run")
    try:
        _train_pending(cfg, task, pretrained, todo, files, device, bar, on_run)
    except KeyboardInterrupt:
        bar.close()
        saved = sum(len(f.records) for f in files.values())
        raise Interrupted(f"interrupted: {saved} runs are saved in {', '.join(str(f.path) for f in files.values())}; "
                          f"re-running the same command resumes from there") from None
    bar.close()
    return {kind: f.path for kind, f in files.items()}


def _train_pending(cfg, task, pretrained, todo: dict, files: dict, device, bar, on_run) -> None:
    """Train the pending runs cell by cell, in increasing cut order, saving each cell as it ends."""
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

