"""Three ways to transfer each zoo model, measured side by side on a sample of a bank's tasks, with
what each costs: feature extraction (the matrix's linear probe on the frozen last stage), feature
extraction at the stage chosen on validation, and fine-tuning (the last two stages and a new
head, as the FE-vs-FT study fine-tunes).

All see the task's first training draw, are scored on its test images and are charged by the
same cost meter: wall time, energy, and counted FLOPs of everything that adapting the model to
the task takes (the training images' forward passes and the probes' fits; or the fine-tuning with
its validation passes).  The stage is chosen, and fine-tuning stops early, on a validation set of
pool training images that the draw left out, never on test images.
"""
from __future__ import annotations

import numpy as np
import torch

from ..core.device import forward_chunk
from ..core.errors import DataError
from ..data.task_bank import TaskSpec, pool, task_labels, task_rows
from ..data.tasks import Split
from ..models.zoo_catalog import ZOO_VERSION, ZooModel
from ..train.classifiers import FeatureClassifier
from ..train.finetune import EarlyStopping, Finetuner, evaluate
from ..train.trainer import passes_per_epoch
from .cost import CostMeter, count_flops, fine_tuning_flops, fine_tuning_passes
from .zoo import metadata, network, pool_features
from .zoo_matrix import PROBE, linear_probe

WAYS = ("FE", "FE-layer", "FT")
TASKS_PER_DATASET = 4  # tasks of each dataset measured each way, from its fewest training images per class
# the FE-vs-FT study's fine-tuning recipe (its defaults), applied to every model alike
RECIPE = {"optimizer": "adam", "lr": 1e-3, "weight_decay": 1e-4, "batch_size": 16, "max_epochs": 30, "patience": 5,
          "min_steps_per_epoch": 25}
VAL_PER_CLASS = 5
VAL_SEED = 11
DRAW = 0  # the training draw every way sees (the matrix's scores see it too)


def ways_tasks(tasks: list[TaskSpec], pools: dict | None = None) -> list[TaskSpec]:
    """Per dataset, ``TASKS_PER_DATASET`` of its tasks at its fewest training images per class,
    spread over its class counts (fewest to most): where transfer matters most, and where
    fine-tuning each of them stays affordable on a CPU.  Only tasks whose draw leaves a pool
    training image of every class to stop fine-tuning on qualify: a dataset whose smallest class
    every draw takes whole has none (``pools``: as for :func:`model_ways`)."""
    chosen = []
    for dataset in dict.fromkeys(t.dataset for t in tasks):
        counts = np.bincount(np.asarray(((pools or {}).get(dataset) or pool(dataset)).train_y))
        own = [t for t in tasks if t.dataset == dataset
               and all(counts[c] > -(-t.n_train // len(t.classes)) for c in t.classes)]
        if not own:
            continue
        smallest = min(t.per_class for t in own)
        few = sorted((t for t in own if t.per_class == smallest), key=lambda t: len(t.classes))
        picks = np.unique(np.linspace(0, len(few) - 1, min(TASKS_PER_DATASET, len(few))).round().astype(int))
        chosen += [few[i] for i in picks]
    return chosen


def validation_rows(task: TaskSpec, train_rows: np.ndarray, data) -> np.ndarray:
    """``VAL_PER_CLASS`` pool training images per class of the task that its draw left out (as many
    as remain, at least one per class)."""
    labels, rng = np.asarray(data.train_y), np.random.default_rng([VAL_SEED, *task.classes, task.n_train])
    rows = []
    for c in task.classes:
        left = np.setdiff1d(np.flatnonzero(labels == c), train_rows)
        if not len(left):
            raise DataError(f"task {task.name}: its draw takes every training image of class {c}, leaving none to "
                            f"stop fine-tuning on; choose a task with fewer training images per class")
        rows.append(rng.permutation(left)[:VAL_PER_CLASS])
    return np.sort(np.concatenate(rows))


def head_input(net) -> str:
    """What the new head reads, shaped as the network's own: an ImageNet network's last stage
    averaged over space, a study CNN's last block whole (its own head flattens it)."""
    return "avg" if net.grid is None else "flatten"


@torch.inference_mode()
def stage_features(net, images: torch.Tensor, stop: int | None = None) -> list[np.ndarray]:
    """Each stage's output for ``images`` (the first ``stop`` stages; default all), each read as the
    probe reads the last one (averaged over space, or a study CNN's grid), in chunks."""
    backbone = net.backbone.eval()
    parts, chunk = [[] for _ in backbone.layer_names[:stop]], forward_chunk(images.device)
    for i in range(0, len(images), chunk):
        h = backbone.adapt(images[i:i + chunk])
        for stage, part in enumerate(parts):
            h = backbone.run(h, stage, stage + 1)
            part.append(net.features(h).numpy())
    return [np.concatenate(part) for part in parts]


def chosen_stage(net, split: dict) -> tuple[int, float, FeatureClassifier]:
    """The stage whose probe, fitted on the training images, scores best on the validation images
    (the deepest of a tie), that accuracy, and the probe."""
    train, val = stage_features(net, split["train"].x), stage_features(net, split["val"].x)
    probes = [FeatureClassifier(PROBE, seed=DRAW).fit(t, split["train"].y.numpy()) for t in train]
    scores = [float((probe.predict(v) == split["val"].y.numpy()).mean()) for probe, v in zip(probes, val)]
    best = len(scores) - 1 - int(np.argmax(scores[::-1]))
    return best, scores[best], probes[best]


def protocol(frozen: int, stages: list[str], pooling: str) -> dict:
    """How each way's accuracy was obtained, kept beside it."""
    head = ", ".join(f"{k} {v}" for k, v in FeatureClassifier(PROBE).protocol().items())
    r = RECIPE
    return {"FE": f"linear probe ({head}) on the frozen last stage's features of training draw {DRAW}",
            "FE-layer": f"linear probe ({head}) on the frozen stage whose probe scores best on {VAL_PER_CLASS} "
                        f"validation images per class (pool training images outside the draw) among {len(stages)} "
                        f"({', '.join(stages)}), training draw {DRAW}",
            "FT": f"stages {stages[frozen]} to {stages[-1]} fine-tuned ({frozen} of {len(stages)} frozen) with a new "
                  f"linear head on the last stage {'averaged' if pooling == 'avg' else 'flattened'}: {r['optimizer']} lr "
                  f"{r['lr']:g}, weight decay {r['weight_decay']:g}, batch {r['batch_size']}, at least "
                  f"{r['min_steps_per_epoch']} steps per epoch, at most {r['max_epochs']} epochs, early stopping "
                  f"after {r['patience']} on {VAL_PER_CLASS} validation images per class (pool training images "
                  f"outside the draw), training draw {DRAW}, seed 0"}


def model_ways(model: ZooModel, tasks: list[TaskSpec], meter: CostMeter, pools: dict | None = None,
               log=print, ways=WAYS) -> list[dict]:
    """A record per task and way of ``ways`` for ``model``: its accuracy and cost by feature
    extraction at the last stage (FE) and at the stage chosen on validation (FE-layer), and by
    fine-tuning (FT) (``pools``: as for :func:`~functions.runs.zoo_matrix.model_records`)."""
    net = network(model, log=log)
    backbone, row = net.backbone, metadata(model, net)
    frozen = max(len(backbone.layer_names) - 2, 0)
    pooling = head_input(net)
    protocols = protocol(frozen, backbone.layer_names, pooling)
    size, channels = backbone.input_size, backbone.channels
    with torch.no_grad():  # one image through every stage
        forward_flops = count_flops(backbone.run, backbone.adapt(torch.zeros(1, channels, size, size)))
    records = []
    for dataset in dict.fromkeys(t.dataset for t in tasks):
        source = (pools or {}).get(dataset) or pool(dataset)
        feats = pool_features(net, source)  # the matrix's cached features: its probe, its test images
        train_images, test_images = source.images("train", size, channels), source.images("test", size, channels)
        for task in (t for t in tasks if t.dataset == dataset):
            train_rows, test_rows = task_rows(task, DRAW, source)
            val_rows = validation_rows(task, train_rows, source)
            split = {name: Split(images[rows], torch.from_numpy(task_labels(task, np.asarray(labels)[rows], source)))
                     for name, images, labels, rows in (("train", train_images, source.train_y, train_rows),
                                                        ("val", train_images, source.train_y, val_rows),
                                                        ("test", test_images, source.test_y, test_rows))}
            n_train, measured = len(train_rows), {}
            if "FE" in ways:
                with meter.phase("adapting") as fe:  # what a user pays: the training images' features, the probe's fit
                    features = net(split["train"].x)[0].numpy()
                    FeatureClassifier(PROBE, seed=DRAW).fit(features, split["train"].y.numpy())
                    fe.flops = row["flops"] * n_train
                measured["FE"] = linear_probe(feats, task, DRAW, source)[0], fe, {}
            if "FE-layer" in ways:
                with meter.phase("adapting") as layered:  # every stage's features of the training and validation images
                    stage, val_accuracy, probe = chosen_stage(net, split)
                    layered.flops = forward_flops * (n_train + len(val_rows))
                accuracy = float((probe.predict(stage_features(net, split["test"].x, stage + 1)[stage]) ==
                                  split["test"].y.numpy()).mean())
                measured["FE-layer"] = accuracy, layered, {"layer": backbone.layer_names[stage],
                                                           "val_accuracy": val_accuracy}
            if "FT" in ways:
                with meter.phase("adapting") as ft:
                    tuner = Finetuner(backbone, len(task.classes), freeze_layers=backbone.layer_names[:frozen],
                                      optimizer=RECIPE["optimizer"], lr=RECIPE["lr"],
                                      weight_decay=RECIPE["weight_decay"], pooling=pooling, seed=0)
                    result = tuner.fit(split["train"], split["val"], epochs=RECIPE["max_epochs"],
                                       batch_size=RECIPE["batch_size"], callbacks=[EarlyStopping(RECIPE["patience"])],
                                       min_steps_per_epoch=RECIPE["min_steps_per_epoch"])
                    ft.flops = fine_tuning_flops(fine_tuning_passes(backbone, tuner.net), n_train, len(val_rows),
                                                 result.epochs, passes_per_epoch(n_train, RECIPE["batch_size"],
                                                                                 RECIPE["min_steps_per_epoch"]))
                measured["FT"] = (evaluate(tuner.net, split["test"])["test_acc"], ft,
                                  {"epochs": result.epochs, "val_accuracy": result.val_acc})
            for way, (accuracy, phase, extra) in measured.items():
                spent = phase.record()
                energy = spent["adapting_energy_kwh"]
                records.append({
                    "model": model.name, "family": model.family, "task": task.name, "source_dataset": dataset,
                    "num_classes": len(task.classes), "n_train": n_train, "n_val": len(val_rows),
                    "n_test": len(test_rows), "way": way, "accuracy": float(accuracy), **extra,
                    "adapt_seconds_per_image": spent["adapting_seconds"] / n_train,
                    "adapt_gflops_per_image": spent["adapting_flops"] / n_train / 1e9,
                    "adapt_mwh_per_image": np.nan if energy is None else energy * 1e6 / n_train,
                    "inference_gflops_per_image": row["flops"] / 1e9, "protocol": protocols[way],
                    "energy_source": meter.energy_source, "seeds": 1, "zoo_version": ZOO_VERSION})
    return records
