"""Domain adaptation of a cut backbone: labelled images of one dataset, unlabelled images of
another with the same classes (clipart drawings to Tux Paint's stamps).

Per cut point k and repeat, the source model is the backbone transferred to the source images as
the cut-point study's mode F trains it on its whole training pool (first k stages frozen with
their ImageNet statistics, the rest and a new head fine-tuned, early stopping on the source's
validation images; the same seed, so the same run as that study's).  Each adaptation method then
starts from it (:func:`functions.train.adaptation.adapt`, on the network's trainable stages:
:class:`~functions.models.stage_view.StageView`): ``source_only`` as it is; ``adabn`` with the
BatchNorm statistics of the trained stages estimated again on the target images; ``dann`` and
``coral`` trained on, aligning the pooled features the classifier reads, each at two weights of
which the one with the lower target risk estimate is kept (no target label is used for training
or for choosing).  ``<method>-tuned`` (DANN, CORAL, MCC, CDAN) chooses the learning rate too, and
DANN its reversal schedule, by the same estimate; it runs where the source's validation accuracy
picks the cut (:func:`functions.notebooks.backbone_adaptation.chosen_cut`).  Accuracy is measured
on the target's test images, and the source model's on the source's test images beside it.
Files: ``<Source>_to_<Target>/results/real/results_<backbone>_<method>.json``, in the study's
contract (``sampled_percentage`` is 1.0: every training image of the target, unlabelled).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from ..config import (ADAPTATION_MODES, ALIGNING_MODES, SCHEMA_KEY, SCHEMA_VERSION, TUNED_LEARNING_RATES,
                      TUNED_SETTINGS, TUNED_SUFFIX, TUNED_WITH_RATE)
from ..core.constraints import Interval, declared
from ..core.device import configure_threads
from ..core.errors import DataError
from ..data.catalog import percentage_key
from ..data.image_dataset import load_dataset
from ..data.tasks import Split
from ..models.cuts import check_cut, cut_backbone, stage_at
from ..models.registry import create_backbone
from ..models.stage_view import StageView
from ..train.adaptation import adapt
from ..train.finetune import staged_split
from .backbone_study import PROFILE, SPLIT_SEED, VAL_SPLIT, CutStudySettings, fine_tune, output_folder
from .recheck import FLOAT32_TOLERANCE
from .store import ResultsFile, results_path
from .sweep import run_seed
from .units import Progress, run_units

# cut points where the stages after the cut can move the features: block4 and block6 of an
# EfficientNet (the clipart study's validation picks block6 at every size), at 8 repeats, where an
# exact Wilcoxon test of three methods against source only stays below 0.05 after Holm (3 * 2 / 2**8)
ADAPTATION_CUTS, ADAPTATION_REPEATS = (5, 7), 8
ALIGNMENT_WEIGHTS = {method: TUNED_SETTINGS[method][f"{method}_weights"] for method in ALIGNING_MODES}
# the methods whose learning rate (and DANN's reversal schedule) each run chooses too
TUNED_METHODS = tuple(f"{method}{TUNED_SUFFIX}" for method in ALIGNING_MODES)
METHODS = (*ADAPTATION_MODES, *TUNED_METHODS)


def candidates(method: str, lr: float) -> dict:
    """What one run of ``method`` chooses between by the target risk estimate: its weights, and for
    a ``-tuned`` method the learning rates of the study CNN's ``-tuned`` modes (DANN's schedules too)."""
    base = method.removesuffix(TUNED_SUFFIX)
    tuned = base != method
    return {"weights": ALIGNMENT_WEIGHTS.get(base, (1.0,)), "lrs": TUNED_LEARNING_RATES if tuned else (lr,),
            "schedules": TUNED_WITH_RATE.get(base, {}).get(f"{base}_schedules", ("ramp",)) if tuned else ("ramp",)}


@declared
@dataclass(frozen=True)
class AdaptationSettings(CutStudySettings):
    """The cut-point study's settings (the source model's training) and the adaptation's schedule."""

    constraints: ClassVar[dict] = {
        **CutStudySettings.constraints,
        "adapt_epochs": Interval(int, 1, help="DANN's and CORAL's epochs (passes over the target images; no "
                                              "early stopping: no target label to stop on)"),
        "adapt_min_steps": Interval(int, 1, help="DANN's and CORAL's optimiser steps per epoch at least"),
    }

    adapt_epochs: int = 10
    adapt_min_steps: int = 20  # 200 steps in all: about 15 batches of 16 make a pass over a few hundred images

    def __post_init__(self):
        super().__post_init__()
        if self.lrs:
            raise DataError(f"lrs={list(self.lrs)}: an adaptation method trains at lr, or chooses its rate as "
                            f"<method>{TUNED_SUFFIX} (e.g. dann{TUNED_SUFFIX}); drop lrs")


@dataclass(frozen=True)
class Cell:
    """One cut point and repeat: its source model, then each pending method from it."""

    cut_point: int
    repeat: int
    methods: tuple

    def describe(self) -> str:
        return f"cut {self.cut_point}, repeat {self.repeat}: {', '.join(self.methods)}"


class AdaptationStudy:
    """One backbone transferred from ``source`` images to unlabelled ``target`` images of the same
    classes by each of ``methods``; the results files of each method."""

    def __init__(self, source, target, methods=ADAPTATION_MODES, settings: AdaptationSettings = AdaptationSettings(),
                 folder: str | None = None, weights=None, profile: str = PROFILE, log=print):
        configure_threads()
        unknown = [m for m in methods if m not in METHODS]
        if unknown or not methods:
            raise DataError(f"adaptation method(s) {unknown or '(none)'}: choose from {list(METHODS)}")
        self.methods, self.settings, self.log = tuple(methods), settings, log
        source_data, target_data = load_dataset(source), load_dataset(target)
        self.source_name, self.target_name = source_data.name, target_data.name
        self.folder = folder or f"{output_folder(source_data.name)}_to_{output_folder(target_data.name)}"
        self.backbone = create_backbone(settings.backbone, weights, settings.input_size)
        size, channels = self.backbone.input_size, self.backbone.channels
        self.source = source_data.task(size, channels, VAL_SPLIT, SPLIT_SEED, log=log, pixels=True)
        self.target = target_data.task(size, channels, VAL_SPLIT, SPLIT_SEED, log=log, pixels=True)
        self.classes = [str(c) for c in self.source.classes]
        if [str(c) for c in self.target.classes] != self.classes:
            raise DataError(f"{target_data.name}'s classes {list(self.target.classes)} are not {source_data.name}'s "
                            f"{self.classes}: adaptation transfers one set of classes to another domain; give two "
                            f"datasets with the same class names")
        params = {**settings.params(), "weights_sha256": self.backbone.identity()["weights_sha256"],
                  "stages": self.backbone.layer_names, "source_data": source_data.version,
                  "data": target_data.version, "classes": self.classes, SCHEMA_KEY: SCHEMA_VERSION}
        self.profile = profile
        self.files = {m: ResultsFile(self.path(m), {**params, "mode": m, **self._chosen_between(m)})
                      for m in self.methods}
        self._staged: tuple | None = None  # (cut point, the five splits through its frozen stages)

    def path(self, method: str) -> Path:
        """The results file of ``method`` (one of this study's or not)."""
        return results_path(self.folder, "results", self.settings.backbone, method, self.profile)

    def _chosen_between(self, method: str) -> dict:
        """The results file's record of what each run of ``method`` chooses between."""
        options = candidates(method, self.settings.lr)
        base = method.removesuffix(TUNED_SUFFIX)
        return {"alignment_weights": list(ALIGNMENT_WEIGHTS.get(base, ())),
                **({"lrs": list(options["lrs"])} if len(options["lrs"]) > 1 else {}),
                **({"dann_schedules": list(options["schedules"])} if len(options["schedules"]) > 1 else {})}

    def cells(self, cut_points=ADAPTATION_CUTS, repeats: int = ADAPTATION_REPEATS) -> list[Cell]:
        depth = len(self.backbone.layer_names)
        for c in cut_points:
            check_cut(self.backbone, c, "F")
            if not 1 <= c < depth:
                raise DataError(f"adaptation cut point {c} is outside 1..{depth - 1}: the stages before it stay "
                                f"frozen and at least one stage after it must train (and hold the BatchNorm "
                                f"statistics AdaBN estimates)")
        Interval(int, 1, what="the number of repeats").check("repeats", repeats)
        key = percentage_key(1.0)
        done = {m: f.done() for m, f in self.files.items()}
        cells = []
        for cut_point in sorted(cut_points):
            for repeat in range(repeats):
                pending = tuple(m for m in self.methods if (key, cut_point, repeat) not in done[m])
                if pending:
                    cells.append(Cell(cut_point, repeat, pending))
        return cells

    def inputs(self, cut_point: int) -> dict[str, Split]:
        """Source training, validation and test images and target training and test images through
        the first ``cut_point`` ImageNet stages, computed once per cut point."""
        if self._staged is None or self._staged[0] != cut_point:
            self._staged = None
            splits = {"source_train": self.source.train, "source_val": self.source.val,
                      "source_test": self.source.test, "target_train": self.target.train,
                      "target_test": self.target.test}
            self._staged = cut_point, {name: staged_split(self.backbone, s, cut_point)
                                       for name, s in splits.items()}
        return self._staged[1]

    def train_cell(self, cell: Cell) -> list[tuple[str, dict]]:
        s, k = self.settings, cell.cut_point
        splits = self.inputs(k)
        seed = run_seed(s.seed, 1.0, k, cell.repeat)
        began = time.perf_counter()
        tuner, source_result = fine_tune(cut_backbone(self.backbone, k, "F", seed), self.source.num_classes, k,
                                         splits["source_train"], splits["source_val"], s, seed)
        source_seconds = time.perf_counter() - began
        source_test_acc = float(tuner.evaluate(splits["source_test"], inputs_at=k)["test_acc"])
        view = StageView.of(tuner.net, k)
        records = []
        for method in cell.methods:
            _, result = adapt(method.removesuffix(TUNED_SUFFIX), view, len(view.blocks), splits["source_train"],
                              splits["source_val"], splits["target_train"], splits["target_test"],
                              **candidates(method, s.lr), epochs=s.adapt_epochs, batch_size=s.batch_size,
                              min_steps_per_epoch=s.adapt_min_steps, seed=seed)
            record = result.record()
            records.append((method, {
                "lr": record.get("chosen_lr", s.lr), "sampled_percentage": 1.0, "samples_per_class": None,
                "sampled_cut_point": k, "stage": stage_at(self.backbone, k), "repeat": cell.repeat, **record,
                "source_test_acc": source_test_acc, "source_val_acc": source_result.val_acc,
                "source_epochs": source_result.epochs, "source_seconds": source_seconds}))
        return records

    def recheck(self, cut_point: int, repeat: int = 0, methods=("source_only", "adabn")) -> list[dict]:
        """Stored runs of ``methods`` at one cut point and repeat trained again from scratch (their
        source model included) beside their stored test accuracy; ``reproduced`` within the float
        rounding that differs between kinds of CPU.  The default methods are the ones that do not
        train on their own: DANN's float32 run ends elsewhere on each kind of CPU."""
        key = (percentage_key(1.0), cut_point, repeat)
        stored = {}
        for method in methods:
            if method not in self.files:
                raise DataError(f"{method!r} is not one of this study's methods {list(self.methods)}")
            stored[method] = [r for r in self.files[method].refresh() if self.files[method].key(r) == key]
            if not stored[method]:
                raise DataError(f"{self.files[method].path} has no run at cut {cut_point}, repeat {repeat} to train "
                                f"again")
        again = dict(self.train_cell(Cell(cut_point, repeat, tuple(methods))))
        return [{"method": m, "cut": cut_point, "repeat": repeat, "stored_test_acc": stored[m][0]["test_acc"],
                 "test_acc": again[m]["test_acc"],
                 "reproduced": abs(again[m]["test_acc"] - stored[m][0]["test_acc"]) <= FLOAT32_TOLERANCE}
                for m in methods]

    def run(self, cut_points=ADAPTATION_CUTS, repeats: int = ADAPTATION_REPEATS,
            progress: bool = True) -> dict[str, Path]:
        """Every pending cell, saved as it ends; an interrupted sweep resumes where it stopped."""
        cells = self.cells(cut_points, repeats)

        def save(cell: Cell, records: list[tuple[str, dict]]) -> None:
            for method, record in records:
                self.files[method].add(record)

        summary = run_units(cells, self.train_cell, save, describe=Cell.describe,
                            size=lambda cell: len(cell.methods), files=list(self.files.values()),
                            progress=Progress(f"{self.folder} {self.settings.backbone}",
                                              sum(len(c.methods) for c in cells), show=progress))
        summary.raise_failures("cell(s) failed and are not saved",
                               "the other runs are saved, and re-running the same command retries the failed ones")
        return {m: f.path for m, f in self.files.items()}
