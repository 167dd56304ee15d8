"""Sweeps of cut points x percentages x repeats, written to results files that survive interruption.

Finished runs are appended and the file rewritten atomically, so an interrupted sweep loses at
most the cell in flight (the repeats of one cut point and percentage, which train together) and
a re-run skips what is already there.
"""
from __future__ import annotations

import numpy as np
import torch

from dataclasses import dataclass
from pathlib import Path

from ..config import ADAPTATION_MODES, ALIGNING_MODES, CUT, LEGACY_VALUES, Config, Grid, Setup, baseline_params
from ..core.device import pick_device
from ..core.errors import DataError
from ..data.catalog import percentage_key
from ..data.tasks import KeptRows, TaskData, balanced_subset, subset_seed
from ..models.study_cnn import build, cut
from ..train.engine import fit_group, staged_inputs
from ..train.strategies import train_strategy
from ..train.trainer import best_learning_rate
from .domain import domain_runs
from .executors import InProcess
from .pretrained import load_pretrained
from .store import BASELINE_CUT, ResultsFile, results_path
from .units import Progress, run_units


DOMAIN_MODES = (*ADAPTATION_MODES, "distill")


def run_seed(seed: int, percentage: float, cut_point: int, repeat: int) -> int:
    return int(np.random.SeedSequence([seed, 1 + cut_point, repeat, int(round(percentage * 1e6))]).generate_state(1)[0])


def subset_index(cfg: Config, task: TaskData, percentage: float, repeat: int) -> torch.Tensor:
    seed = subset_seed(cfg.generate_dataset_seed, percentage, repeat)
    return balanced_subset(task.train.y, task.num_classes, percentage, seed)


def _record(cfg: Config, percentage: float, cut_point: int, repeat: int, result) -> dict:
    return {"lr": (result.details or {}).get("chosen_lr", cfg.lr_fine_tune), "sampled_percentage": percentage, "sampled_cut_point": cut_point,
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
    for cut_point, start, staged in staged_inputs(pretrained, splits, cut_points, frozen=cfg.prefix_cached,
                                                  device=device):
        yield cut_point, (start, *staged)


def run_inputs(cfg: Config, task: TaskData, pretrained, cut_point: int, device) -> tuple:
    """(start block, train, val, test) on ``device`` for runs at one cut point."""
    return next(inputs_per_cut(cfg, task, pretrained, [cut_point], device))[1]


def train_group(cfg: Config, task: TaskData, pretrained, cut_point: int, runs, inputs,
                trajectory=None) -> list[tuple]:
    """The runs ``[(percentage, repeat), ...]`` at one cut point, trained together by the engine:
    fresh baselines (``pretrained`` None) or ``pretrained`` cut at ``cut_point``; a fine-tuning
    strategy's runs train one by one through its :class:`~functions.train.finetune.Finetuner`.
    Returns ``(model, result)`` per run, each model holding its best weights.  ``trajectory``
    records the first steps of one run of an aligning mode instead
    (:mod:`functions.train.reference`)."""
    if pretrained is not None and cfg.lr_fine_tunes and cfg.strategy not in ALIGNING_MODES:
        # every rate trains each run from the same seeds; per run, the best on validation is kept
        # (DANN and CORAL choose theirs with their weight, without target labels: domain_runs)
        per_rate = [train_group(cfg.replace(lr_fine_tune=lr, lr_fine_tunes=()), task, pretrained, cut_point, runs, inputs)
                    for lr in cfg.lr_fine_tunes]
        return [best_learning_rate(cfg.lr_fine_tunes, candidates) for candidates in zip(*per_rate)]
    start, train, val, test = inputs
    seeds = [run_seed(cfg.generate_dataset_seed, p, cut_point, r) for p, r in runs]
    if trajectory is not None and (cfg.strategy not in ALIGNING_MODES or len(runs) != 1 or pretrained is None):
        raise DataError(f"a float64 trajectory is recorded for one run of {list(ALIGNING_MODES)}; got mode "
                        f"{cfg.mode!r} with {len(runs)} run(s)")
    if pretrained is not None and cfg.strategy in DOMAIN_MODES:
        subsets = [subset_index(cfg, task, p, r).to(train.y.device) for p, r in runs]
        teacher_seeds = [run_seed(cfg.generate_dataset_seed, p, cfg.depth + 1, r) for p, r in runs]
        return domain_runs(cfg, task, pretrained, cut_point, inputs, subsets, seeds, teacher_seeds, trajectory)
    if pretrained is not None and cfg.strategy != CUT:
        return [train_strategy(cfg, pretrained, cut_point, task.num_classes,
                               train.subset(subset_index(cfg, task, p, r).to(train.y.device)), val, test, start, seed)
                for (p, r), seed in zip(runs, seeds)]
    in_shape = tuple(task.train.x.shape[1:])
    nets = [build(cfg, in_shape, task.num_classes, seed) if pretrained is None
            else cut(pretrained, cut_point, cfg, task.num_classes, seed) for seed in seeds]
    trains = [train.view(subset_index(cfg, task, p, r).to(train.y.device)) for p, r in runs]
    results = fit_group(nets, trains, val, test, lr=cfg.lr_fine_tune, max_epochs=cfg.num_train,
                        patience=cfg.early_stop_patience, batch_size=cfg.batch_size, seeds=seeds, start=start,
                        min_steps_per_epoch=cfg.min_steps_per_epoch, precision=cfg.precision, device=train.y.device)
    return list(zip(nets, results))


def train_run(cfg: Config, task: TaskData, pretrained, cut_point: int, percentage: float, repeat: int, inputs):
    """One run of :func:`train_group`: the sweep's run again, equal up to float rounding (the
    sweep trains a cell's repeats as one group)."""
    return train_group(cfg, task, pretrained, cut_point, [(percentage, repeat)], inputs)[0]


def pending_runs(results: ResultsFile, grid: Grid, cut_points) -> list[tuple]:
    done = results.done()
    return [(p, c, r) for c in cut_points for p in grid.percentages for r in range(grid.repeats_for(p))
            if (percentage_key(p), c, r) not in done]


@dataclass(frozen=True)
class Cell:
    """One unit of work: the pending repeats of one (kind, cut point, percentage), trained as one
    group by the engine and saved together."""

    kind: str  # "results" or "baselines"
    cut_point: int
    percentage: float
    repeats: tuple

    def describe(self) -> str:
        what = "baseline" if self.kind == "baselines" else f"cut {self.cut_point}"
        return f"{what}, percentage {self.percentage:g}, repeats {list(self.repeats)}"


def train_cell(cell: Cell, cfg: Config, task: TaskData, source, inputs, device=None) -> list[dict]:
    """The records of one cell (``source``: the pretrained model, None for baselines); ``inputs``
    as :func:`inputs_per_cut` gives them, moved to ``device`` (default: where they are)."""
    if device is not None:
        start, *splits = inputs
        inputs = (start, *(split.to(pick_device(device)) for split in splits))
    trained = train_group(cfg, task, source, cell.cut_point, [(cell.percentage, r) for r in cell.repeats], inputs)
    return [_record(cfg, cell.percentage, cell.cut_point, repeat, result)
            for repeat, (_, result) in zip(cell.repeats, trained)]


def run_sweep(setup: Setup, cfg: Config, grid: Grid, baselines: bool = True, progress: bool = True,
              log=print, on_run=None, device=None, executor=None) -> dict[str, Path]:
    """Baselines and cut-point runs of one mode, resumable; returns the results files' paths.

    ``executor`` (default: this process) runs the cells; ``on_run(record)`` is called after each
    saved run (used for progress hooks and tests).
    """
    executor = executor or InProcess()
    # the adaptation modes' references are the source-only mode and the study's own baselines
    baselines = baselines and cfg.strategy not in ADAPTATION_MODES
    if cfg.batch_norm and cfg.strategy not in ADAPTATION_MODES:
        raise DataError(f"batch_norm=true is the network variant of the adaptation modes {list(ADAPTATION_MODES)}; "
                        f"mode {cfg.mode!r} trains many runs as one group, which batch norm statistics do not allow: "
                        f"set batch_norm=false")
    for c in grid.cut_points:
        cfg.check_cut(c)
    device = pick_device(device)
    task = cfg.target_task()
    files = {"results": ResultsFile(results_path(setup.folder, "results", setup.name, cfg.mode, grid.profile), cfg.params(),
                                    legacy=LEGACY_VALUES)}
    if baselines:
        files["baselines"] = ResultsFile(results_path(setup.folder, "baselines", setup.name, profile=grid.profile),
                                         baseline_params(cfg),
                                         legacy=LEGACY_VALUES)
    todo = {kind: pending_runs(f, grid, [BASELINE_CUT] if kind == "baselines" else grid.cut_points) for kind, f in files.items()}
    pretrained = load_pretrained(setup, cfg, log, device=device) if todo["results"] else None
    cells = [cell for kind, runs in todo.items() for cell in _cells(kind, runs)]
    staged = _Staged(cfg, task, {"results": pretrained, "baselines": None}, cells, device, executor)

    def saved_elsewhere(cell: Cell) -> bool:
        done = files[cell.kind].done()
        return all((percentage_key(cell.percentage), cell.cut_point, r) in done for r in cell.repeats)

    def save(cell: Cell, records: list[dict]) -> None:
        # a cell's repeats train and are saved together, so a resumed sweep groups runs exactly as
        # an uninterrupted one does
        files[cell.kind].add(*records)
        for record in records if on_run else ():
            on_run(record)

    summary = run_units(cells, train_cell, save, args=staged.args, executor=executor, skip=saved_elsewhere,
                        size=lambda cell: len(cell.repeats), describe=Cell.describe, files=list(files.values()),
                        progress=Progress(f"{setup.folder}/{setup.name} {cfg.mode}", sum(len(v) for v in todo.values()),
                                          show=progress))
    summary.raise_failures("cell(s) failed and are not saved",
                           "the other runs are saved, and re-running the same command retries the failed ones")
    return {kind: f.path for kind, f in files.items()}


def _cells(kind: str, runs) -> list[Cell]:
    """The pending runs of one kind as cells, in increasing cut order."""
    cells: dict[tuple, list] = {}  # (cut point, percentage) -> its pending repeats
    for percentage, cut_point, repeat in runs:
        cells.setdefault((cut_point, percentage), []).append(repeat)
    return [Cell(kind, cut_point, percentage, tuple(repeats))
            for (cut_point, percentage), repeats in sorted(cells.items())]


class _Staged:
    """The arguments of each cell's :func:`train_cell`: the cells come in increasing cut order per
    kind, and each cut point's inputs are staged once, when its first cell is submitted.  In this
    process a cell gets them whole; a remote cell gets its subsets' training rows, and the task,
    the source model and the cut point's validation and test inputs through the executor's
    :meth:`share` (staged on the CPU: a remote worker moves them to its own device)."""

    def __init__(self, cfg: Config, task: TaskData, sources: dict, cells: list[Cell], device, executor):
        self.cfg, self.executor, self.whole_task = cfg, executor, task
        self.remote = not isinstance(executor, InProcess)
        self.device = "auto" if self.remote else None
        self.task = executor.share(task)
        stage_on = "cpu" if self.remote else device
        self.sources = {kind: None if source is None else executor.share(source) for kind, source in sources.items()}
        self.staging = {kind: inputs_per_cut(cfg, task, source, sorted({c.cut_point for c in cells if c.kind == kind}),
                                             stage_on) for kind, source in sources.items()}
        self.current: dict = {}  # kind -> (cut point, inputs: whole, or the shared validation and test ones)

    def args(self, cell: Cell) -> tuple:
        kind = cell.kind
        while self.current.get(kind, (None,))[0] != cell.cut_point:
            cut_point, (start, train, val, test) = next(self.staging[kind])
            # staged inputs stay valid only until the next cut point is asked for
            shared = (start, train, self.executor.share(val), self.executor.share(test)) if self.remote \
                else (start, train, val, test)
            self.current[kind] = cut_point, shared
        start, train, val, test = self.current[kind][1]
        if self.remote:
            rows = torch.cat([subset_index(self.cfg, self.whole_task, cell.percentage, r) for r in cell.repeats])
            train = KeptRows.of(train, rows)
        return self.cfg, self.task, self.sources[kind], (start, train, val, test), self.device
