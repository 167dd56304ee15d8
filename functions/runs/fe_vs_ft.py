"""Feature extraction or fine-tuning?  Both pipelines over a few-shot grid, with what each run costs.

For N labelled images per class (several seeded splits each), the same pretrained backbone is
used twice: frozen, as a feature extractor feeding a classical classifier (FE), and fine-tuned
with a new head (FT).  Every run is scored on the official test split and charged for its time,
counted FLOPs, peak memory and energy per phase.  Runs go to one results file (element 0 the
parameters, one record per run), resumed like the sweeps, and to MLflow.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from ..config import FOLDERS, SCHEMA_KEY, SCHEMA_VERSION, Config, Setup, get_setup, profile
from ..config import INPUT_SIZE
from ..core.atomic import locked
from ..core.constraints import Boolean, Interval, Many, Maybe, Options, Text, check_fields, declared
from ..core.device import configure_threads
from ..core.errors import DataError
from ..core.paths import results_dir
from ..data.fewshot import few_shot_index, validation_index
from ..data.image_dataset import load_dataset
from ..data.tasks import Split, TaskData, load_task
from ..models.backbones import Backbone
from ..models.registry import STUDY, create_backbone
from ..train.classifiers import EMBEDDINGS, HEADS, FeatureClassifier
from ..train.evaluation import crop_scores, scores
from ..train.finetune import OPTIMIZERS, EarlyStopping, Finetuner, FineTuneNet, LearningCurve, evaluate, staged
from .cost import CostMeter, count_flops, fine_tuning_flops, fine_tuning_passes
from .executors import InProcess
from .features import FeatureStore
from .pretrained import source_backbone
from .store import ResultsFile, load_results
from .tracking import EXPERIMENTS, Tracker
from .units import Progress, run_units

PIPELINES = ("FE", "FT")


@declared
@dataclass(frozen=True)
class FeVsFtSettings:
    """Everything that decides a run's outcome besides its pipeline, N and split (the results
    file's parameters)."""

    # each field's type and range, once: checked here, and the command line's options are made from it
    constraints: ClassVar[dict] = {
        "backbone": Text(help="an ImageNet network, or 'study': the folder's own source CNN"),
        "input_size": Maybe(dataclasses.replace(INPUT_SIZE, help="pixels the images are resized to (the backbone's "
                                                                 "native size: 224 for Lite0)")),
        "layers": Maybe(Many(Text(), noun="a list of layer names",
                             help="FE: stages pooled and concatenated (default: the last; Lite0 has stem, "
                                  "block1..block7, head)")),
        "classifier": Options(HEADS, help="FE: the classifier on the features"),
        "C": Interval(float, 0, low_open=True, help="FE: inverse regularisation of the classifier"),
        "embedding": Options(EMBEDDINGS, help="FE: standardised features (standard), or the full-network "
                                              "embedding's ternary ones (fne)"),
        "frozen": Maybe(Interval(int, 0, help="FT: stages kept frozen (default: all but the last two)")),
        "hidden": Interval(int, 0, help="FT: units of a hidden layer in the head (0: none)"),
        "optimizer": Options(OPTIMIZERS, help="FT: the optimiser"),
        "lr": Interval(float, 0, low_open=True, help="FT: learning rate"),
        "weight_decay": Interval(float, 0, what="the weight decay", help="FT: weight decay"),
        "momentum": Interval(float, 0, help="FT with sgd: momentum"),
        "max_epochs": Interval(int, 1, help="FT: at most this many epochs"),
        "patience": Interval(int, 1, help="FT: early stopping patience in epochs"),
        "batch_size": Interval(int, 1, help="FT: images per training step"),
        "val_per_class": Interval(int, 1, help="images per class of the fixed validation set"),
        "crops": Boolean(help="ten-crop evaluation of the test split (10x its cost)"),
        "seed": Interval(int, 0, help="seeds the splits and the training"),
    }

    backbone: str = "efficientnet_lite0"
    input_size: int | None = 96          # None: the backbone's native size (224 for Lite0)
    layers: tuple | None = None          # FE: stages pooled and concatenated; None: the last one
    classifier: str = "linear_svc"
    C: float = 1.0
    embedding: str = "standard"          # or "fne": the full-network embedding's ternary features
    frozen: int | None = None            # FT: stages kept frozen; None: all but the last two
    hidden: int = 0                      # FT: 0 a linear head, else one hidden layer of this width
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9
    max_epochs: int = 30
    patience: int = 5
    batch_size: int = 16
    val_per_class: int = 20
    crops: bool = False                  # ten-crop evaluation of the test split
    seed: int = 0

    def __post_init__(self):
        check_fields(self)

    def params(self, backbone: Backbone, dataset: str, classes: list) -> dict:
        fields = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}
        return {**fields, "input_size": backbone.input_size, "frozen": self.frozen_depth(backbone),
                "layers": self.layers_of(backbone),
                "weights_sha256": backbone.identity()["weights_sha256"], "dataset": dataset, "classes": list(classes),
                SCHEMA_KEY: SCHEMA_VERSION}

    def layers_of(self, backbone: Backbone) -> list[str]:
        return backbone.check_layers(self.layers if self.layers else backbone.layer_names[-1:])

    def frozen_depth(self, backbone: Backbone) -> int:
        stages = len(backbone.layer_names)
        if self.frozen is not None and self.frozen > stages:
            raise DataError(f"frozen={self.frozen} (--frozen) asks for more stages than {backbone.name} has: "
                            f"{stages} ({', '.join(backbone.layer_names)}); give 0..{stages}")
        return max(stages - 2, 0) if self.frozen is None else self.frozen

    def changed(self) -> list[str]:
        """The settings whose values differ from their defaults."""
        return [f.name for f in dataclasses.fields(self) if getattr(self, f.name) != f.default]


# The settings that one pipeline alone reads (the others shape both).  Model selection (``select``)
# tries candidates of both pipelines whatever the grid runs: it chooses layers, classifier and C
# (FE), frozen depth and learning rate (FT) itself, and reads the rest of these.
PIPELINE_OF = {**dict.fromkeys(("layers", "classifier", "C", "embedding"), "FE"),
               **dict.fromkeys(("frozen", "hidden", "optimizer", "lr", "weight_decay", "momentum", "max_epochs",
                                "patience", "batch_size"), "FT")}
SELECTION_READS = ("embedding", "hidden", "optimizer", "weight_decay", "momentum", "max_epochs", "patience",
                   "batch_size")
OPTION_NAMES = {"max_epochs": "--epochs", "momentum": None}  # the command line's names, where not --<key>


def refuse_idle_settings(keys, pipelines, select: bool = False) -> None:
    """Refuse settings among ``keys`` (those given rather than left at their defaults) that only a
    pipeline which is not run would read: they would be silently ignored."""
    idle = [k for k in PIPELINE_OF if k in keys and PIPELINE_OF[k] not in pipelines
            and not (select and k in SELECTION_READS)]
    if not idle:
        return
    options = {k: OPTION_NAMES.get(k, "--" + k.replace("_", "-")) for k in idle}
    named = ", ".join(f"{k} ({options[k]})" if options[k] else k for k in idle)
    owners = " and ".join(sorted({PIPELINE_OF[k] for k in idle}))
    one, several = len(idle) == 1, len({PIPELINE_OF[k] for k in idle}) > 1
    raise DataError(f"{named} {'is a setting' if one else 'are settings'} of the {owners} "
                    f"pipeline{'s' if several else ''}, which {'are' if several else 'is'} not run: add {owners} to "
                    f"the pipelines, or drop {'it' if one else 'them'}")


def run_key(record: dict) -> tuple:
    return record["pipeline"], int(record["samples_per_class"]), int(record["split"])


TARGETS = ("folder", "digits")  # the folder's target classes, or scikit-learn's 8 x 8 digits


def results_file_path(folder: str, setup: str, backbone: str, target: str = "folder") -> Path:
    return results_dir(folder) / f"fe_vs_ft_{setup if target == 'folder' else target}_{backbone}.json"


def target_of(task: TaskData, val_per_class: int, seed: int) -> TaskData:
    """The task as images in [0, 1]: the training pool, the fixed validation set, the test split."""
    names = [str(c) for c in task.classes]
    try:
        val_index = validation_index(task.val.y, task.num_classes, val_per_class, seed, names)
    except DataError as err:
        raise DataError(f"val_per_class={val_per_class} (--val-per-class): {err}") from None
    val = Split(task.pixels(task.val)[val_index], task.val.y[val_index])
    return TaskData(task.dataset, list(task.classes), Split(task.pixels(task.train), task.train.y), val,
                    Split(task.pixels(task.test), task.test.y))


def backbone_for(setup: Setup | None, settings: FeVsFtSettings, weights=None, log=print) -> Backbone:
    """The ImageNet backbone named in ``settings``, or the folder's own source CNN ("study")."""
    if settings.backbone == STUDY and setup is None:
        raise DataError(f"backbone {STUDY!r} is a study folder's source CNN, and a folder of images has none: "
                        f"choose an ImageNet backbone, or name a study folder ({FOLDERS})")
    if settings.backbone == STUDY:
        if weights is not None:
            raise DataError(f"a weights file is for the ImageNet backbones; backbone {STUDY!r} is {setup.folder}'s "
                            f"own source model: drop the weights file (--weights)")
        return source_backbone(setup, log=log)
    return create_backbone(settings.backbone, weights, settings.input_size)


class Experiment:
    """One folder's grid: the backbone, the target task, the feature stores, the results file."""

    def __init__(self, folder: str, setup: str | None = None, settings: FeVsFtSettings = FeVsFtSettings(),
                 weights=None, meter: CostMeter | None = None, tracker: Tracker | None = None, log=print,
                 target: str = "folder", data=None):
        configure_threads()
        if target not in TARGETS:
            raise DataError(f"unknown target {target!r}; choose one of {list(TARGETS)}")
        if data is not None and target != "folder":
            raise DataError(f"--data {data} and --target {target} both name the target images; give one of them")
        # a user's images (a folder, a CSV or a prepared name): listed and hashed now, decoded below
        self.dataset = load_dataset(data) if data is not None else None
        if folder not in FOLDERS and data is None:
            raise DataError(f"{folder} is not a study folder ({FOLDERS}); give the images it is for (--data PATH)")
        # results go to a study folder (its setup's source CNN at hand) or to an image folder's own
        self.folder = folder
        self.setup = get_setup(folder, setup) if folder in FOLDERS else None
        self.settings, self.meter, self.tracker, self.log = settings, meter, tracker, log
        self.country = meter.country_iso_code if meter is not None else "FRA"
        self.backbone = backbone_for(self.setup, settings, weights, log)
        self.layers = settings.layers_of(self.backbone)  # names and depth checked before any data is read
        settings.frozen_depth(self.backbone)
        cfg = profile("quick", self.setup)[0] if self.setup else Config()  # the same validation split and seed
        if self.dataset is not None:  # at the backbone's own input size and channels, decoded once,
            # then read from the cache as each run or extraction needs its images
            task = self.dataset.task(self.backbone.input_size, self.backbone.channels, cfg.val_split,
                                     cfg.generate_dataset_seed, log=log, pixels=True)
        else:
            task = cfg.target_task() if target == "folder" else \
                load_task("digits", list(range(10)), cfg.val_split, cfg.generate_dataset_seed)
        self.target = target_of(task, settings.val_per_class, settings.seed)
        self.params = settings.params(self.backbone, self.target.dataset, self.target.classes)
        self.setup_name = self.setup.name if self.setup else self.dataset.name
        path = results_file_path(folder, self.setup_name, settings.backbone,
                                 target if self.dataset is None else self.dataset.name)
        if self.dataset is not None:
            self.params["data"] = self.dataset.version
            if path.exists():  # another version of the folder is refused naming what changed
                self.dataset.check_version(load_results(path)[0].get("data") or {}, str(path))
        self.results = ResultsFile(path, self.params, key=run_key)
        self._data = {"dataset": self.target.dataset, "classes": self.target.classes, "val_split": cfg.val_split,
                      "seed": cfg.generate_dataset_seed}
        self._stores: dict = {}
        self.stores = self.stores_for(self.layers)
        self._flops: dict = {}
        self._test_prefix: dict = {}

    def __getstate__(self) -> dict:
        """What a Ray task needs: no energy tracker (each worker has its own) and no MLflow store
        (only the driver writes)."""
        return {**self.__dict__, "meter": None, "tracker": None, "log": None}

    def prepare_shared(self, pipelines) -> None:
        """Compute here what every run of the grid reads: the validation and test features (FE)
        and the test split through the frozen stages (FT)."""
        if "FE" in pipelines:
            for split in ("val", "test"):
                self.stores[split].get(np.arange(len(self.stores[split].images)), self.meter)
        if "FT" in pipelines and not self.settings.crops:
            self._staged_test(self.settings.frozen_depth(self.backbone))

    def stores_for(self, layers) -> dict[str, FeatureStore]:
        """The feature caches of the training pool, the validation set and the test split for ``layers``."""
        layers = tuple(self.backbone.check_layers(layers))
        if layers not in self._stores:
            data, s = self._data, self.settings
            self._stores[layers] = {
                "train": FeatureStore(self.backbone, list(layers), {**data, "split": "train"}, self.target.train.x),
                "val": FeatureStore(self.backbone, list(layers),
                                    {**data, "split": "val", "per_class": s.val_per_class, "seed": s.seed},
                                    self.target.val.x),
                "test": FeatureStore(self.backbone, list(layers), {**data, "split": "test"}, self.target.test.x,
                                     crops=s.crops),
            }
        return self._stores[layers]

    # ----------------------------------------------------------------- grid

    def pending(self, samples_per_class, splits: int, pipelines=PIPELINES) -> list[tuple]:
        for n in samples_per_class:
            self.training_index(n, 0)  # refuses N above what the smallest class offers, before any work
        done = self.results.done()
        return [(p, n, s) for n in samples_per_class for s in range(splits) for p in pipelines
                if (p, n, s) not in done]

    def training_index(self, samples_per_class: int, split: int) -> torch.Tensor:
        return few_shot_index(self.target.train.y, self.target.num_classes, samples_per_class, self.settings.seed,
                              split, [str(c) for c in self.target.classes])

    def run(self, pipeline: str, samples_per_class: int, split: int) -> dict:
        index = self.training_index(samples_per_class, split)
        outcome = self._feature_extraction(index) if pipeline == "FE" else self._fine_tuning(index)
        return {"pipeline": pipeline, "samples_per_class": samples_per_class, "split": split,
                "n_train": len(index), "n_val": len(self.target.val), "n_test": len(self.target.test), **outcome}

    # ----------------------------------------------------------------- the two pipelines

    def _feature_extraction(self, index: torch.Tensor) -> dict:
        s = self.settings
        train_x = self.stores["train"].get(index.numpy(), self.meter)
        val_x = self.stores["val"].get(np.arange(len(self.target.val)), self.meter)
        test_x = self.stores["test"].get(np.arange(len(self.target.test)), self.meter)
        y_train = self.target.train.y[index].numpy()
        with self.meter.phase("classifier_training") as training:
            head = FeatureClassifier(s.classifier, s.C, s.embedding, s.seed).fit(train_x, y_train)
        with self.meter.phase("evaluation") as evaluation:
            y_test = self.target.test.y.numpy()
            if s.crops:
                views = [head.predict(v) for v in test_x]
                probabilities = [head.predict_proba(v) for v in test_x]
                result = crop_scores(y_test, views, None if probabilities[0] is None else probabilities,
                                     self.target.num_classes)
            else:
                result = scores(y_test, head.predict(test_x))
            result.update(scores(self.target.val.y.numpy(), head.predict(val_x), prefix="val"))
            result["train_acc"] = float(np.mean(head.predict(train_x) == y_train))
        extraction = self._extraction_cost(len(index))
        evaluation_cost = evaluation.record()
        evaluation_cost["evaluation_seconds"] += extraction.pop("test_seconds")
        evaluation_cost["evaluation_energy_kwh"] = (evaluation_cost["evaluation_energy_kwh"] or 0.0) + \
            extraction.pop("test_energy_kwh")
        evaluation_cost["evaluation_flops"] = extraction.pop("test_flops")
        training_cost = training.record()
        return {**result, "trainable_parameters": self._head_parameters(head), **extraction, **training_cost,
                **evaluation_cost, **self._totals(extraction, training_cost, evaluation_cost)}

    def _extraction_cost(self, n_train: int) -> dict:
        """The extraction this run needs (its training images, the validation and test sets),
        charged at the average cost per image of each cache file, and FLOPs counted per image."""
        per_image = {k: store.cost_per_image() for k, store in self.stores.items()}
        images = {"train": n_train, "val": len(self.target.val), "test": len(self.target.test)}
        flops = self._forward_flops("extract", self.layers)
        views = 10 if self.settings.crops else 1
        fit_images = images["train"] + images["val"]
        return {
            "feature_extraction_seconds": per_image["train"].seconds * images["train"] + per_image["val"].seconds * images["val"],
            "feature_extraction_energy_kwh": per_image["train"].energy_kwh * images["train"] +
                                             per_image["val"].energy_kwh * images["val"],
            "feature_extraction_flops": flops * fit_images,
            "test_seconds": per_image["test"].seconds * images["test"],
            "test_energy_kwh": per_image["test"].energy_kwh * images["test"],
            "test_flops": flops * images["test"] * views,
        }

    def _fine_tuning(self, index: torch.Tensor) -> dict:
        s = self.settings
        frozen = s.frozen_depth(self.backbone)
        train = Split(self.target.train.x[index], self.target.train.y[index])
        curve = LearningCurve()
        with self.meter.phase("fine_tuning") as tuning:
            tuner = Finetuner(self.backbone, self.target.num_classes, freeze_layers=self.backbone.layer_names[:frozen],
                              head_hidden_sizes=s.hidden, optimizer=s.optimizer, lr=s.lr, weight_decay=s.weight_decay,
                              momentum=s.momentum, seed=s.seed)
            result = tuner.fit(train, self.target.val, epochs=s.max_epochs, batch_size=s.batch_size,
                               callbacks=[EarlyStopping(s.patience), curve], seed=s.seed)
            net = tuner.net
            tuning.flops = self._fine_tuning_flops(net, len(train), result.epochs)
        prefix, prefix_cost = self._staged_test(frozen) if not s.crops else (None, {})
        with self.meter.phase("evaluation") as evaluation:
            test = evaluate(net, self.target.test, crops=True) if s.crops else \
                evaluate(net, Split(prefix, self.target.test.y), start=net.frozen)
            evaluation.flops = self._forward_flops("full", self.backbone.layer_names) * len(self.target.test) * \
                (10 if s.crops else 1)
        costs = {**tuning.record(), **evaluation.record()}
        for key, value in prefix_cost.items():  # each run is charged the whole prefix, as if alone
            costs[key] = (costs[key] or 0.0) + value
        return {**test, "train_acc": result.train_acc, "val_acc": result.val_acc, "epochs": result.epochs,
                "status": result.status, "val_curve": curve.val_acc, "trainable_parameters": net.trainable_parameters(),
                **costs, **self._totals(costs)}

    def _staged_test(self, frozen: int) -> tuple[torch.Tensor, dict]:
        """The test split through the frozen stages, computed once per grid, and what that cost."""
        if frozen not in self._test_prefix:
            with self.meter.phase("evaluation") as once:
                prefix = staged(self.backbone, self.target.test.x, frozen)
            spent = once.record()
            self._test_prefix[frozen] = prefix, {k: spent[k] or 0.0 for k in ("evaluation_seconds",
                                                                               "evaluation_energy_kwh")}
        return self._test_prefix[frozen]

    # ----------------------------------------------------------------- FLOPs, counted per image

    def _forward_flops(self, name: str, layers) -> int:
        key = (name, tuple(layers))
        if key not in self._flops:
            x = self.backbone.adapt(torch.zeros(1, self.backbone.channels, 8, 8))
            with torch.no_grad():
                self._flops[key] = count_flops(self.backbone.pooled, x, list(layers))
        return self._flops[key]

    def _fine_tuning_flops(self, net: FineTuneNet, n_train: int, epochs: int) -> int:
        key = ("tune", net.frozen)
        if key not in self._flops:
            self._flops[key] = fine_tuning_passes(self.backbone, net)
        return fine_tuning_flops(self._flops[key], n_train, len(self.target.val), epochs)

    @staticmethod
    def _head_parameters(head: FeatureClassifier) -> int:
        model = head.model
        return int(sum(np.asarray(getattr(model, a)).size for a in ("coef_", "intercept_", "dual_coef_",
                                                                      "support_vectors_", "_fit_X") if hasattr(model, a)))

    @staticmethod
    def _totals(*costs: dict) -> dict:
        """Sums over phases: ``total_*`` of the whole run, ``training_*`` without the evaluation of
        the test split (what adapting to the task costs, before any use of the model)."""
        merged = {k: v for c in costs for k, v in c.items()}
        out = {}
        for prefix, keep in (("total", lambda k: True), ("training", lambda k: not k.startswith("evaluation_"))):
            for suffix in ("seconds", "energy_kwh", "flops"):
                out[f"{prefix}_{suffix}"] = float(sum(v or 0.0 for k, v in merged.items()
                                                      if k.endswith(f"_{suffix}") and keep(k)))
        return out

    # ----------------------------------------------------------------- tracking

    def track(self, record: dict) -> None:
        if self.tracker is None:
            return
        experiment = EXPERIMENTS[record["pipeline"]]
        name = f"{self.folder}/{self.setup_name} {record['pipeline']} n={record['samples_per_class']} " \
               f"split={record['split']}"
        params = {**{k: v for k, v in self.params.items() if k != SCHEMA_KEY}, "folder": self.folder,
                  "setup": self.setup_name, "pipeline": record["pipeline"],
                  "samples_per_class": record["samples_per_class"], "split": record["split"]}
        metrics = {k: float(v) for k, v in record.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in params
                   and v is not None and math.isfinite(float(v))}
        curves = {"val_acc": record["val_curve"]} if record.get("val_curve") else None
        self.tracker.log_run(experiment, name, params, metrics, curves=curves, unique=True,
                             tags={"energy_source": self.meter.energy_source if self.meter else "not measured"})

    def track_saved(self) -> None:
        """Log the file's runs that MLflow lacks (a process stopped between saving and logging
        one), so that the file and the store hold the same runs before the grid goes on."""
        if self.tracker is not None:
            with locked(self.results.path):
                for record in self.results.refresh():
                    self.track(record)


_WORKER_METER: list = []  # a Ray worker's own energy tracker, one per worker process


def _run_unit(unit: tuple, experiment: "Experiment") -> dict:
    """One run: in the driver with its meter, or in a Ray worker (the experiment arrives without a
    meter) measured by that worker's own."""
    if experiment.meter is None:
        if not _WORKER_METER:
            _WORKER_METER.append(CostMeter(experiment.country))
        experiment.meter = _WORKER_METER[0]
    return experiment.run(*unit)


def _describe(unit: tuple) -> str:
    return f"{unit[0]} n={unit[1]} split={unit[2]}"


def run_grid(experiment: Experiment, samples_per_class, splits: int, pipelines=PIPELINES, progress: bool = True,
             on_run=None, executor=None) -> Path:
    """Every pending (pipeline, N, split) run of ``experiment``, saved (and tracked) by this
    process as it ends; resumable.  With a Ray ``executor`` each run is a task: the validation and
    test features and the frozen test prefix are computed here first, so that tasks share them
    through the object store instead of each extracting them again."""
    executor = executor or InProcess()
    experiment.track_saved()
    todo = experiment.pending(samples_per_class, splits, pipelines)
    shared = experiment
    if todo and not isinstance(executor, InProcess):
        experiment.prepare_shared({pipeline for pipeline, _, _ in todo})
        shared = executor.share(experiment)

    def save(unit: tuple, record: dict) -> None:
        with locked(experiment.results.path):  # saved and logged before another process looks
            added = experiment.results.add(record)  # empty when another process saved it first
            for stored in added:
                experiment.track(stored)
        if on_run is not None and added:
            on_run(record)

    summary = run_units(todo, _run_unit, save, args=(shared,), executor=executor, describe=_describe,
                        files=[experiment.results],
                        progress=Progress(f"{experiment.folder} FE vs FT", len(todo), show=progress))
    summary.raise_failures("run(s) failed and are not saved",
                           "the others are saved, and re-running the same command retries the failed ones")
    return experiment.results.path


@dataclass
class Study:
    path: Path
    records: list[dict]                  # the runs asked for
    trained: int = 0                     # how many of them this call trained (the rest were resumed)
    selection: list[dict] | None = None  # model-selection candidates, when asked for
    tracker: Tracker | None = None       # the driver's MLflow store, for the summary's figures
    name: str = ""                       # "<folder>/<setup or target> <backbone>"
    energy_source: str = ""              # where this machine's energy numbers come from


def run_study(folder: str, setup: str | None = None, settings: FeVsFtSettings = FeVsFtSettings(),
              samples_per_class=(1, 5, 10), splits: int = 5, pipelines=PIPELINES, weights=None, track: bool = True,
              tracking_uri: str | None = None, country: str = "FRA", select: bool = False, target: str = "folder",
              progress: bool = True, log=print, executor=None, data=None) -> Study:
    """The driver: one MLflow store (checked before any work) and one energy tracker for the
    process, the grid run or resumed, and (``select``) model selection on the largest N.
    ``target``: the folder's target classes, or "digits" (scikit-learn's 8 x 8 digits, resized to
    the backbone's input; the folder still names the source CNN for the "study" backbone).  ``data``:
    a user's images instead (a folder, a CSV or a prepared name such as ``clipart``: see
    :func:`functions.data.image_dataset.load_dataset`), at the backbone's input size."""
    from .selection import select as model_selection
    if splits < 1:
        raise DataError(f"splits={splits} must be at least 1")
    unknown = sorted(set(pipelines) - set(PIPELINES))
    if unknown:
        raise DataError(f"unknown pipeline(s) {unknown}; choose from {list(PIPELINES)}")
    refuse_idle_settings(settings.changed(), pipelines, select)
    with CostMeter(country) as meter:
        experiment = Experiment(folder, setup, settings, weights, meter, None, log, target, data)
        # the MLflow store is opened (and created) once the settings have passed the experiment's checks
        experiment.tracker = tracker = Tracker(tracking_uri) if track else None
        trained: list[dict] = []
        path = run_grid(experiment, samples_per_class, splits, pipelines, progress, trained.append, executor)
        selection = model_selection(experiment, max(samples_per_class)) if select else None
    asked = {(p, n, s) for p in pipelines for n in samples_per_class for s in range(splits)}
    shown = experiment.dataset.name if experiment.dataset is not None else \
        experiment.setup_name if target == "folder" else target
    name = f"{experiment.folder}/{shown} {settings.backbone}"
    return Study(path, [r for r in experiment.results.records if run_key(r) in asked],
                 len(trained), selection, tracker, name, meter.energy_source)
