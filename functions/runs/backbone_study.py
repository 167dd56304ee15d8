"""The cut-point study on a pretrained backbone and a folder of images: sizes x cut points x repeats.

The question of the study folders (reuse the stages before a cut point; freeze, re-initialise
or remove the rest: :mod:`functions.models.cuts`), asked of an ImageNet network on anyone's
images.  Data sizes are images per class (small image folders) or fractions of the training
pool; every size and repeat draws one subset, shared by the baseline and every cut point, so
runs pair by repeat as in the study.

Fast in the engine's way: the first k stages are frozen, so their output for every image is
computed once per cut point and input size (:func:`~functions.train.finetune.staged`) and every
run and repeat at that cut point trains and is scored from it; only the stages after the cut
run per step.  Records keep the study's contract (``sampled_percentage``, ``sampled_cut_point``,
``repeat``, the accuracies), with the images per class and the stage name beside them, in
``<Folder>/results/<profile>/results_<backbone>_<mode>.json`` and ``baselines_<backbone>.json``.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch

from ..config import (FINE_TUNING, INPUT_SIZE, LORA_MODE, REGULARISER_WEIGHTS, SCHEMA_KEY, SCHEMA_VERSION, TUNED_LEARNING_RATES,
                      TUNED_SUFFIX, Config)
from ..core.constraints import Interval, Many, Text, check_fields, declared
from ..core.device import configure_threads
from ..core.errors import DataError
from ..data.catalog import percentage_key
from ..data.fewshot import few_shot_index
from ..data.image_dataset import load_dataset
from ..data.tasks import Split, balanced_subset, subset_seed
from ..models.cuts import CUT_MODES, check_cut, cut_backbone, random_backbone, stage_at
from ..models.registry import create_backbone
from ..train.finetune import EarlyStopping, Finetuner, FineTuneNet, staged_split
from ..train.strategies import fit_strategy, input_stage, strategy_finetuner
from ..train.trainer import RunResult, best_learning_rate
from .recheck import FLOAT32_TOLERANCE
from .store import BASELINE_CUT, ResultsFile, results_path
from .sweep import run_seed
from .executors import InProcess
from .units import Progress, run_units

PROFILE = "real"
VAL_SPLIT, SPLIT_SEED = 0.1, 0  # the validation images drawn from the training folder, as fe-vs-ft draws them


@declared
@dataclass(frozen=True)
class CutStudySettings:
    """What decides a run besides its mode, cut point, size and repeat (the results file's parameters)."""

    constraints: ClassVar[dict] = {
        "backbone": Text(help="a registered pretrained network (see python -m functions recommend-model --help)"),
        "input_size": dataclasses.replace(INPUT_SIZE, help="pixels the images are resized to"),
        "lr": Interval(float, 0, low_open=True, what="a learning rate", help="Adam's learning rate"),
        "weight_decay": Interval(float, 0, help="weight decay"),
        "max_epochs": Interval(int, 1, help="at most this many epochs"),
        "patience": Interval(int, 1, help="early stopping patience in epochs"),
        "batch_size": Interval(int, 1, help="images per training step"),
        "min_steps_per_epoch": Interval(int, 1, help="optimiser steps per epoch at least (small subsets)"),
        "seed": Interval(int, 0, help="seeds the subsets, the new weights and the batch orders"),
        "lrs": Many(Interval(float, 0, low_open=True), noun="a list of learning rates, e.g. 0.0003,0.001",
                    help="several: each run trains at each and keeps the best validation accuracy (mode <mode>-tuned)"),
    }

    backbone: str = "efficientnet_lite0"
    input_size: int = 96           # chosen by measurement: benchmarks/cut_study.py
    lr: float = 1e-3
    weight_decay: float = 0.0
    max_epochs: int = 30
    patience: int = 5
    batch_size: int = 16
    min_steps_per_epoch: int = 10  # a run on 12 images still makes 10 steps between validations
    seed: int = 0
    lrs: tuple = ()  # several learning rates a run chooses between on validation (empty: lr alone)

    def __post_init__(self):
        check_fields(self)

    @property
    def learning_rates(self) -> tuple:
        return self.lrs or (self.lr,)

    def params(self) -> dict:
        """The settings as a results file keeps them: lists for tuples, and the rates a tuned
        mode's runs choose between only in its own files (the others' predate them)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
                if k != "lrs" or v}


@declared
@dataclass(frozen=True)
class StrategySettings(CutStudySettings):
    """The cut-point study's settings and what the fine-tuning strategies add (the study CNN's defaults)."""

    constraints: ClassVar[dict] = {
        **CutStudySettings.constraints,
        "lr_decay": Interval(float, 0, 1, low_open=True, help="discriminative: each stage down from the top "
                                                               "trains at lr_decay times the rate of the one above"),
        "stage_epochs": Interval(int, 1, help="progressive: at most this many epochs per unfrozen stage"),
        "lora_alpha": Interval(float, 0, low_open=True, help="LoRA's scale (alpha / rank)"),
    }

    lr_decay: float = Config.lr_decay
    stage_epochs: int = Config.stage_epochs
    lora_alpha: float = Config.lora_alpha


def study_modes() -> list[str]:
    """The modes the study on a backbone takes (a LoRA rank as ``lora_r<rank>``; each with
    ``-tuned`` after it, where every run chooses its learning rate on validation)."""
    modes = [*CUT_MODES, *(f"lora_r{Config.lora_rank}" if s == "lora" else s for s in FINE_TUNING)]
    return modes + [mode + TUNED_SUFFIX for mode in modes]


def parse_mode(mode: str) -> tuple[str, str | None, int | None]:
    """``mode`` as (its name in results files, its fine-tuning strategy or None for a cut mode,
    its LoRA rank or None), or one line naming the modes there are."""
    if mode.endswith(TUNED_SUFFIX):
        name, strategy, rank = parse_mode(mode[:-len(TUNED_SUFFIX)])
        return name + TUNED_SUFFIX, strategy, rank
    if mode in CUT_MODES:
        return mode, None, None
    lora = LORA_MODE.fullmatch(mode)
    if lora or mode == "lora":
        rank = int(lora.group(1)) if lora else Config.lora_rank
        return f"lora_r{rank}", "lora", rank
    if mode in FINE_TUNING:
        return mode, mode, None
    raise DataError(f"mode {mode!r} is not a mode of the study on a backbone; choose one of {study_modes()} "
                    f"(or lora_r<rank>, e.g. lora_r2)")


@dataclass(frozen=True)
class Size:
    """A data size: ``per_class`` images of each class, or ``fraction`` of the training pool
    (class-balanced, as the study draws it)."""

    per_class: int | None = None
    fraction: float | None = None

    def describe(self) -> str:
        if self.per_class is not None:
            return f"{self.per_class} per class"
        return "the whole pool" if self.fraction == 1.0 else f"{self.fraction:g} of the pool"


@dataclass(frozen=True)
class CutGrid:
    """Which runs a sweep makes: sizes x cut points x repeats (one number of repeats per size)."""

    sizes: tuple
    cut_points: tuple
    repeats: tuple
    profile: str = PROFILE

    def __post_init__(self):
        if not self.sizes or not self.cut_points:
            raise DataError("a cut-point grid needs at least one data size and one cut point")
        if len(self.repeats) != len(self.sizes):
            raise DataError(f"give one number of repeats per size: {len(self.sizes)} sizes, {len(self.repeats)} "
                            f"numbers of repeats")
        for repeats in self.repeats:
            Interval(int, 1, what="the number of repeats").check("repeats", repeats)

    def repeats_for(self, size: Size) -> int:
        return self.repeats[self.sizes.index(size)]


def grid(per_class=(), fractions=(), cut_points=(), repeats=5, profile: str = PROFILE) -> CutGrid:
    """``repeats``: one number for every size, or one per size (the per-class sizes first)."""
    sizes = tuple(Size(per_class=int(n)) for n in per_class) + tuple(Size(fraction=float(f)) for f in fractions)
    repeats = (repeats,) * len(sizes) if isinstance(repeats, int) else tuple(repeats)
    return CutGrid(sizes, tuple(int(c) for c in cut_points), repeats, profile)


# The real profile, sized so that a folder's three modes finish in about an hour on 2 cores: 1, 5
# and 10 images per class (the smallest clipart class has 12 training images) at 8 repeats, where
# an exact Wilcoxon test can stay below 0.05 after Holm's correction over 5 cut points (5 * 2 /
# 2**8 = 0.039); the whole training pool, 3 to 4 times the cost of a run, at 3 repeats, reported
# with intervals.  Every other stage boundary: stem, block2, block4, block6, head (and in F all
# stages training, cut 0).
REAL_PER_CLASS, REAL_FRACTIONS, REAL_CUTS = (1, 5, 10), (1.0,), (1, 3, 5, 7, 9)
REAL_REPEATS = {"per_class": 8, "fraction": 3}


def real_grid(study: "CutStudy", per_class=None, fractions=None, cut_points=None, repeats=None) -> CutGrid:
    """The real profile's grid for ``study``, narrowed where sizes, cut points or repeats are given
    (sizes given in one unit only leave out the other's defaults)."""
    if per_class is None and fractions is None:
        per_class, fractions = REAL_PER_CLASS, REAL_FRACTIONS
    per_class, fractions = per_class or (), fractions or ()
    if repeats is None:
        repeats = (REAL_REPEATS["per_class"],) * len(per_class) + (REAL_REPEATS["fraction"],) * len(fractions)
    return grid(per_class, fractions, study.default_cuts() if cut_points is None else cut_points, repeats)


def fine_tune(network, num_classes: int, cut_point: int, train: Split, val: Split, settings: CutStudySettings,
              seed: int) -> tuple[Finetuner, RunResult]:
    """``network`` with a new head, its first ``cut_point`` stages frozen, trained by the one
    fine-tuning trainer on ``train`` (the output of those stages) with early stopping on ``val``."""
    s = settings
    tuner = Finetuner(network, num_classes, freeze_layers=network.layer_names[:cut_point], lr=s.lr,
                      weight_decay=s.weight_decay, seed=seed)
    result = tuner.fit(train, val, epochs=s.max_epochs, batch_size=s.batch_size,
                       callbacks=[EarlyStopping(s.patience)], seed=seed, inputs_at=cut_point,
                       min_steps_per_epoch=s.min_steps_per_epoch)
    result.trainable_params = tuner.trainable_parameters()
    return tuner, result


def output_folder(dataset_name: str) -> str:
    """The study folder a dataset's results go to: its name, capitalised as the study folders are
    (``clipart`` -> ``Clipart``)."""
    return dataset_name[:1].upper() + dataset_name[1:]


@dataclass(frozen=True)
class Cell:
    """The pending repeats of one (kind, cut point, size), trained one after another on the same
    staged inputs and saved together."""

    kind: str  # "results" or "baselines"
    cut_point: int
    size: Size
    repeats: tuple

    def describe(self) -> str:
        what = "baseline" if self.kind == "baselines" else f"cut {self.cut_point}"
        return f"{what}, {self.size.describe()}, repeats {list(self.repeats)}"


class CutStudy:
    """One dataset, one backbone, one mode: the task, the pretrained network, the results files."""

    def __init__(self, data, mode: str, settings: CutStudySettings = CutStudySettings(), folder: str | None = None,
                 weights=None, profile: str = PROFILE, log=print):
        configure_threads()
        self.mode, self.strategy, self.lora_rank = parse_mode(mode)
        if self.mode.endswith(TUNED_SUFFIX) and not settings.lrs:
            settings = dataclasses.replace(settings, lrs=TUNED_LEARNING_RATES)
        elif settings.lrs and not self.mode.endswith(TUNED_SUFFIX):
            self.mode += TUNED_SUFFIX  # its runs choose their learning rate: their own files
        self.cut_mode = self.mode.removesuffix(TUNED_SUFFIX)  # F, FR, FT or the strategy's name
        # a cut mode's files keep the cut study's settings alone; a strategy's add its own
        own = {f.name: getattr(settings, f.name) for f in dataclasses.fields(CutStudySettings)}
        settings = CutStudySettings(**own) if self.strategy is None else StrategySettings(**dataclasses.asdict(settings))
        self.settings, self.log = settings, log
        strategy = {"strategy": self.strategy, **{k: v for k, v in dataclasses.asdict(settings).items() if k not in own},
                    **({"lora_rank": self.lora_rank} if self.lora_rank else {}),
                    **({"regularisation_weights": list(REGULARISER_WEIGHTS[self.strategy])}
                       if self.strategy in REGULARISER_WEIGHTS else {})} if self.strategy else {}
        self.dataset = load_dataset(data)
        self.folder = folder or output_folder(self.dataset.name)
        self.backbone = create_backbone(settings.backbone, weights, settings.input_size)
        self.task = self.dataset.task(self.backbone.input_size, self.backbone.channels, VAL_SPLIT, SPLIT_SEED,
                                      log=log, pixels=True)
        self.classes = [str(c) for c in self.task.classes]
        params = {**CutStudySettings(**own).params(),
                  "weights_sha256": self.backbone.identity()["weights_sha256"], "stages": self.backbone.layer_names,
                  "data": self.dataset.version, "classes": self.classes, SCHEMA_KEY: SCHEMA_VERSION}
        self.files = {
            "results": ResultsFile(results_path(self.folder, "results", settings.backbone, self.mode, profile),
                                   {**params, "mode": self.mode, **strategy}),
            # the baselines train at the one rate whatever the mode chooses: every mode shares them
            "baselines": ResultsFile(results_path(self.folder, "baselines", settings.backbone, profile=profile),
                                     {**{k: v for k, v in params.items() if k != "lrs"}, "mode": "baseline"}),
        }
        self._staged: tuple | None = None  # (cut point, (train, val, test) through its frozen stages)
        self._fractions: dict[Size, float] = {}

    # ----------------------------------------------------------------- the grid

    def default_cuts(self) -> tuple:
        """The real profile's cut points that the backbone has (every one if it has fewer stages
        than the profile names), and in F cut 0 too (all stages train; FR at 0 is the baseline,
        FT at 0 leaves nothing)."""
        depth = len(self.backbone.layer_names)
        cuts = tuple(c for c in REAL_CUTS if c <= depth) if depth >= max(REAL_CUTS) else tuple(range(1, depth + 1))
        return ((0,) if self.cut_mode == "F" else ()) + cuts

    def subset(self, size: Size, repeat: int) -> torch.Tensor:
        """The training images of one size and repeat: the same for the baseline and every cut point."""
        y = self.task.train.y
        if size.fraction == 1.0:  # the whole pool, unbalanced as it is (a balanced draw would cap every class)
            return torch.arange(len(y))
        if size.per_class is not None:
            return few_shot_index(y, self.task.num_classes, size.per_class, self.settings.seed, repeat, self.classes)
        return balanced_subset(y, self.task.num_classes, size.fraction,
                               subset_seed(self.settings.seed, size.fraction, repeat))

    def fraction(self, size: Size) -> float:
        """The share of the training pool a size draws (the study's ``sampled_percentage``; drawn
        once per size: the grid asks it for every cell)."""
        if size not in self._fractions:
            self._fractions[size] = round(len(self.subset(size, 0)) / len(self.task.train), 6)
        return self._fractions[size]

    def cells(self, grid: CutGrid, baselines: bool = True) -> list[Cell]:
        for c in grid.cut_points:
            check_cut(self.backbone, c, "F" if self.strategy else self.cut_mode)  # a strategy cuts where F does
        for size in grid.sizes:
            self.subset(size, 0)  # an impossible size is refused before any training
        cells = []
        for kind, cuts in (("baselines", [BASELINE_CUT] if baselines else []), ("results", sorted(grid.cut_points))):
            done = self.files[kind].done()
            for cut_point in cuts:
                for size in grid.sizes:
                    key = percentage_key(self.fraction(size))
                    pending = tuple(r for r in range(grid.repeats_for(size)) if (key, cut_point, r) not in done)
                    if pending:
                        cells.append(Cell(kind, cut_point, size, pending))
        return cells

    # ----------------------------------------------------------------- one cell

    def input_stage(self, cut_point: int) -> int:
        """The stage a run at ``cut_point`` (-1: the baseline) reads its inputs after: the cut, or 0
        (the adapted images) for the baseline and the strategies that adapt the stages before the cut."""
        cut_point = max(cut_point, 0)
        return cut_point if self.strategy is None else input_stage(self.strategy, cut_point)

    def inputs(self, cut_point: int) -> tuple[Split, Split, Split]:
        """The training pool, validation and test images through the pretrained stages a run at
        ``cut_point`` leaves frozen (:meth:`input_stage`), computed once for every run that reads them."""
        start = self.input_stage(cut_point)
        if self._staged is None or self._staged[0] != start:
            self._staged = None  # the previous cut point's tensors are freed before the next are made
            splits = [self.task.train, self.task.val, self.task.test]
            self._staged = start, tuple(staged_split(self.backbone, s, start) for s in splits)
        return self._staged[1]

    def train_cell(self, cell: Cell) -> list[dict]:
        train, val, test = self.inputs(cell.cut_point)
        fraction = self.fraction(cell.size)
        return [self.train_run(cell, train, val, test, fraction, repeat) for repeat in cell.repeats]

    def train_run(self, cell: Cell, train: Split, val: Split, test: Split, fraction: float, repeat: int) -> dict:
        """One run: the network of the cell's mode and cut point (the baseline: every stage new),
        trained by the one fine-tuning trainer on the subset of ``repeat``."""
        return self._train(cell, train, val, test, fraction, repeat)[1]

    def fine_tuned(self, cut_point: int, size: Size, repeat: int = 0) -> tuple[FineTuneNet, dict]:
        """The network of one run of this mode (the sweep's seeds: the stored run's) trained
        again, and its record."""
        tuner, record = self._train(Cell("results", cut_point, size, (repeat,)), *self.inputs(cut_point),
                                    self.fraction(size), repeat)
        return tuner.net, record

    def _train(self, cell: Cell, train: Split, val: Split, test: Split, fraction: float, repeat: int,
               rates: tuple | None = None) -> tuple[Finetuner, dict]:
        """One run at each learning rate of ``rates`` (default: the settings'; a baseline trains at
        ``lr``), the one with the best validation accuracy kept."""
        rates = (self.settings.lr,) if cell.kind == "baselines" else rates or self.settings.learning_rates
        candidates = [self._train_at(cell, train, val, test, fraction, repeat, lr) for lr in rates]
        tuner, result = best_learning_rate(rates, candidates) if self.settings.lrs and cell.kind == "results" \
            else candidates[0]
        return tuner, {"lr": (result.details or {}).get("chosen_lr", rates[0]), "sampled_percentage": fraction,
                       "samples_per_class": cell.size.per_class, "sampled_cut_point": cell.cut_point,
                       "stage": "baseline" if cell.kind == "baselines" else stage_at(self.backbone, max(cell.cut_point, 0)),
                       "repeat": repeat, **result.record()}

    def _train_at(self, cell: Cell, train: Split, val: Split, test: Split, fraction: float, repeat: int,
                  lr: float) -> tuple[Finetuner, RunResult]:
        s, began = dataclasses.replace(self.settings, lr=lr, lrs=()), time.perf_counter()
        cut_point = max(cell.cut_point, 0)
        seed = run_seed(s.seed, fraction, cell.cut_point, repeat)
        subset = train.subset(self.subset(cell.size, repeat))
        if self.strategy is not None and cell.kind == "results":
            def build() -> Finetuner:
                return strategy_finetuner(self.backbone, self.strategy, cut_point, self.task.num_classes, seed,
                                          lr=s.lr, lr_decay=s.lr_decay, lora_rank=self.lora_rank,
                                          lora_alpha=s.lora_alpha, weight_decay=s.weight_decay)
            start = self.input_stage(cell.cut_point)
            tuner, result = fit_strategy(build, self.strategy, cut_point, subset, val, test, start, seed,
                                         epochs=s.max_epochs, stage_epochs=s.stage_epochs, patience=s.patience,
                                         batch_size=s.batch_size, min_steps_per_epoch=s.min_steps_per_epoch,
                                         weights=REGULARISER_WEIGHTS.get(self.strategy, ()))
        else:
            network = random_backbone(self.backbone, seed) if cell.kind == "baselines" else \
                cut_backbone(self.backbone, cut_point, self.cut_mode, seed)
            tuner, result = fine_tune(network, self.task.num_classes, cut_point, subset, val, s, seed)
            result.test_acc = float(tuner.evaluate(test, inputs_at=cut_point)["test_acc"])
        result.seconds = time.perf_counter() - began
        return tuner, result

    def recheck(self, cut_point: int, size: Size, repeat: int = 0) -> dict:
        """One stored run (``cut_point`` -1: the baseline) trained again from scratch beside its
        stored test accuracy; ``reproduced`` within the float rounding that differs between kinds
        of CPU (:data:`~functions.runs.recheck.FLOAT32_TOLERANCE`)."""
        kind = "baselines" if cut_point == BASELINE_CUT else "results"
        key = (percentage_key(self.fraction(size)), cut_point, repeat)
        stored = [r for r in self.files[kind].refresh() if self.files[kind].key(r) == key]
        if not stored:
            raise DataError(f"{self.files[kind].path} has no run at cut {cut_point}, {size.describe()}, repeat "
                            f"{repeat} to train again")
        chosen = stored[0].get("chosen_lr")  # a tuned run trains again at the rate it chose alone
        _, again = self._train(Cell(kind, cut_point, size, (repeat,)), *self.inputs(cut_point), self.fraction(size),
                               repeat, (chosen,) if chosen else None)
        return {"stored_test_acc": stored[0]["test_acc"], "test_acc": again["test_acc"],
                "reproduced": abs(again["test_acc"] - stored[0]["test_acc"]) <= FLOAT32_TOLERANCE}

    # ----------------------------------------------------------------- the sweep

    def run(self, grid: CutGrid, baselines: bool = True, progress: bool = True, on_run=None,
            executor=None) -> dict[str, Path]:
        """Every pending cell of ``grid``, saved as it ends; an interrupted sweep resumes where it
        stopped.  With a Ray ``executor`` the cells are its units: each actor receives this study
        once (the images, the pretrained network) and stages a cut point's frozen prefix itself."""
        executor = executor or InProcess()
        cells = self.cells(grid, baselines)
        shared = self if isinstance(executor, InProcess) or not cells else executor.share(self)

        def save(cell: Cell, records: list[dict]) -> None:
            added = self.files[cell.kind].add(*records)
            for record in added if on_run else ():
                on_run(record)

        summary = run_units(cells, _train_cell, save, args=(shared,), executor=executor, describe=Cell.describe,
                            size=lambda cell: len(cell.repeats), files=list(self.files.values()),
                            progress=Progress(f"{self.folder} {self.settings.backbone} {self.mode}",
                                              sum(len(c.repeats) for c in cells), show=progress))
        summary.raise_failures("cell(s) failed and are not saved",
                               "the other runs are saved, and re-running the same command retries the failed ones")
        return {kind: f.path for kind, f in self.files.items() if kind == "results" or baselines}

    def __getstate__(self) -> dict:
        """What a Ray actor needs to train cells: no staged prefix (it stages its own), no results
        files (only the driver saves) and no log function."""
        return {**self.__dict__, "_staged": None, "files": None, "log": None}


def _train_cell(cell: Cell, study: CutStudy) -> list[dict]:
    """One cell's records, in this process or on a Ray actor holding the shared study."""
    return study.train_cell(cell)
