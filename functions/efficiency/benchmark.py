"""Sample efficiency of streaming linear heads on frozen features: how many target samples a
method needs before validation accuracy reaches ``threshold`` and stays there for ``window``
consecutive evaluations (the milestone).

A frozen extractor turns the target task's images into features once (cached on disk under
the data root); every method then sees exactly the same seeded stream of training samples in
batches of ``batch_size`` and is evaluated on the whole validation set after every
``evaluation_frequency`` samples.  ``relative_efficiency = baseline_milestone / method_milestone``,
the baseline being the ``adam`` head.
"""
from __future__ import annotations

import dataclasses
import functools
import time
import urllib.parse
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import torch
from torch.utils.data import TensorDataset

from ..config import INPUT_SIZE, PROFILES, get_setup, profile
from ..core.atomic import locked, write_png
from ..core.constraints import Interval, Many, Maybe, Options, declared
from ..core.errors import DataError
from ..core.paths import results_dir
from ..data.catalog import SPECS, spec
from ..data.image_dataset import ImageDataset, load_dataset
from ..data.tasks import Split, load_task
from ..models.extractors import Extractor
from ..models.registry import STUDY, create_backbone, names
from ..runs.features import FeatureStore
from ..runs.pretrained import source_backbone
from ..runs.store import ResultsFile, load_results
from ..runs.units import Progress, run_units
from . import heads
from .milestone import milestone, relative_efficiency, stream_order

EXTRACTORS = tuple(names())
TASKS = ("all", "binary")  # the folder's target classes, or its first two


def source_extractor(folder: str, setup: str | None = None, profile_name: str = "quick", cut: int | None = None,
                     train_if_missing: bool = True, log=print) -> Extractor:
    """The folder's pretrained source model (:func:`functions.runs.pretrained.source_backbone`) cut at ``cut``."""
    the_setup = get_setup(folder, setup)
    cfg, _ = profile(profile_name, the_setup)
    return Extractor(source_backbone(the_setup, cfg, log, train_if_missing), cut)


def build_extractor(kind: str = "study", weights: str | None = None, folder: str = "MNIST", setup: str | None = None,
                    profile_name: str = "quick", cut: int | None = None, input_size: int = 224,
                    train_if_missing: bool = True, log=print) -> Extractor:
    """``study``: the source model file ``weights``, else the folder's pretrained source model, cut at
    ``cut``; any other network of the registry (or timm architecture with ``weights``) at ``input_size``."""
    if kind == STUDY:
        if weights:
            return Extractor(create_backbone(STUDY, weights), cut)
        return source_extractor(folder, setup, profile_name, cut, train_if_missing, log)
    return Extractor(create_backbone(kind, weights, input_size))


# ----------------------------------------------------------------------------- target features

@dataclass(frozen=True)
class TargetTask:
    """Which target images: the classes of a dataset, its seeded validation split, and optionally a
    seeded pool of at most ``pool`` training images to stream from."""

    dataset: str
    classes: tuple
    val_split: float = 0.1
    seed: int = 42
    pool: int | None = None

    def identity(self) -> dict:
        return {**asdict(self), "classes": list(self.classes)}


def target_task(folder: str = "MNIST", setup: str | None = None, task: str = "all", dataset: str | None = None,
                classes=None, pool: int | None = None, data: ImageDataset | None = None) -> TargetTask:
    """The folder's target classes (``task='all'``), its first two (``'binary'``), or any ``classes``
    of any ``dataset``; or every class of a user's images ``data`` (named by its key, which holds
    its fingerprint)."""
    the_setup = get_setup(folder, setup)
    cfg, _ = profile("quick", the_setup)
    if data is not None:
        if dataset is not None or classes is not None or task != "all":
            given = "--dataset/--classes" if dataset is not None or classes is not None else f"--task {task}"
            raise DataError(f"{given} and --data {data.name} both choose the target images; give one of them")
        return TargetTask(data.key, tuple(data.classes), cfg.val_split, cfg.generate_dataset_seed, pool)
    if dataset is not None and classes is None:
        raise DataError(f"dataset {dataset!r} is given without classes (--classes, TRANSFER_SERVICE_CLASSES): "
                        f"it would be ignored for {folder}'s target classes of {the_setup.target_dataset}; "
                        f"give the classes too, or drop the dataset")
    if classes is not None:
        return TargetTask(dataset or the_setup.target_dataset, tuple(int(c) for c in classes), cfg.val_split,
                          cfg.generate_dataset_seed, pool)
    if task not in TASKS:
        raise DataError(f"unknown task {task!r}; choose 'all' (the folder's target classes) or 'binary' "
                        f"(its first two), or give classes")
    chosen = the_setup.fine_tune_classes if task == "all" else the_setup.fine_tune_classes[:2]
    return TargetTask(the_setup.target_dataset, tuple(chosen), cfg.val_split, cfg.generate_dataset_seed, pool)


@dataclass
class TaskFeatures:
    """Frozen features of a target task: the training pool (streamed) and the validation set."""

    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    num_classes: int
    key: str
    seconds: float = 0.0  # time spent extracting (0 when read from the cache)
    from_cache: bool = False

    @property
    def dim(self) -> int:
        return self.train_x.shape[1]


@dataclass
class _ExtractorOutputs:
    """A frozen extractor's features of a task's images, and their labels, for the feature store."""

    extractor: Extractor
    dataset: str | None  # a catalog dataset, whose normalisation is undone; None: images already in [0, 1]
    layers = None  # the network's output (its cut is in its identity)
    pooling = "avg"
    view = "image"

    @property
    def network(self) -> dict:
        return self.extractor.identity()

    def __call__(self, batch: tuple) -> dict[str, np.ndarray]:
        x, y = batch
        if self.dataset is None:
            return {"features": self.extractor(x), "labels": y.numpy()}
        stats = spec(self.dataset)
        mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in (stats.mean, stats.std))
        return {"features": self.extractor(x * std + mean), "labels": y.numpy()}


def task_features(extractor: Extractor, task: TargetTask, cache_dir: Path | None = None, log=print,
                  data: ImageDataset | None = None) -> TaskFeatures:
    """Features of ``task`` under ``extractor`` from the feature store (extracted once, then read).
    ``data``: the user's images the task names (:func:`target_task`), read at the extractor's
    input size and channels."""
    if task.pool is not None and task.pool < 1:
        raise DataError(f"pool={task.pool} must be at least 1 (or None for the whole training split)")
    splits = functools.cache(lambda: _task_splits(task, data, extractor.in_shape))
    outputs = _ExtractorOutputs(extractor, task.dataset if data is None else None)
    images = {} if data is None else {"channels": extractor.in_shape[0], "size": extractor.in_shape[1]}
    stores = {name: FeatureStore.of(outputs, {**task.identity(), "split": name, **images},
                                    lambda name=name: TensorDataset(splits()[name].x, splits()[name].y), cache_dir)
              for name in ("train", "val")}
    began = time.perf_counter()
    train, val = (stores[name].split() for name in ("train", "val"))
    seconds = time.perf_counter() - began
    key = stores["train"].path.stem
    arrays = {"train_x": train["features"], "train_y": train["labels"], "val_x": val["features"],
              "val_y": val["labels"]}
    if not any(store.computed for store in stores.values()):
        return TaskFeatures(**arrays, num_classes=len(task.classes), key=key, from_cache=True)
    log(f"extracted {extractor.kind} features of {task.dataset} {list(task.classes)} "
        f"({len(arrays['train_y'])} train, {len(arrays['val_y'])} val) in {seconds:.1f} s -> {stores['train'].path}")
    return TaskFeatures(**arrays, num_classes=len(task.classes), key=key, seconds=seconds)


def _task_splits(task: TargetTask, data: ImageDataset | None = None, shape: tuple = ()) -> dict:
    """The task's training pool and validation split; a user's images ``data`` in [0, 1] at
    ``shape`` (channels, size, size)."""
    if data is not None:
        user = data.task(shape[1], shape[0], task.val_split, task.seed)
        train, val = (Split(user.pixels(split), split.y) for split in (user.train, user.val))
        return {"train": _pool_of(task, train), "val": val}
    data = load_task(task.dataset, task.classes, task.val_split, task.seed)
    return {"train": _pool_of(task, data.train), "val": data.val}


def _pool_of(task: TargetTask, train: Split) -> Split:
    """At most ``task.pool`` seeded training images to stream from."""
    if task.pool is not None:
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(task.seed))
        train = train.subset(torch.sort(order[:task.pool]).values)
    return train


# ----------------------------------------------------------------------------- protocol

# The benchmark's target task and extractor, each declared once: the command line's options and
# the service's settings are made from these.
INPUTS = {
    "task": Options(TASKS, help="all target classes or the first two"),
    "dataset": Maybe(Options(tuple(sorted(SPECS)), help="with classes: any dataset")),
    "classes": Maybe(Many(Interval(int, 0), help="any class list instead of the folder's target classes")),
    "extractor": Options(EXTRACTORS, help="the study's source CNN, or an ImageNet network"),
    "cut": Maybe(Interval(int, 0, help="study extractor: pool after the first k blocks (default: all)")),
    "input_size": dataclasses.replace(INPUT_SIZE, help="--extractor mobilenet_v2 / resnet50: side of the square "
                                                       "input"),
    "profile": Options(PROFILES, help="study extractor without weights: profile of the folder's source model"),
    "pool": Maybe(Interval(int, 1, help="draw the stream from this many training images")),
}


@declared
@dataclass(frozen=True)
class Protocol:
    """How samples arrive and when accuracy is measured."""

    # each field's type and range: checked by ``check``, and read by the command line's options
    # and the service's request schema
    constraints: ClassVar[dict] = {
        "batch_size": Interval(int, 1, help="samples per update"),
        "max_samples": Interval(int, 1, help="samples streamed in all, at most the task's pool size"),
        "evaluation_frequency": Interval(int, 1, help="validation accuracy is measured each time this many more "
                                                      "samples have been seen"),
        "threshold": Interval(float, 0.0, 1.0, what="an accuracy", help="accuracy the milestone asks for"),
        "window": Interval(int, 1, help="consecutive evaluations at or above threshold"),
    }

    batch_size: int = 1
    max_samples: int = 100
    evaluation_frequency: int = 1
    threshold: float = 0.8
    window: int = 10

    def check(self, pool_size: int) -> "Protocol":
        for name, constraint in self.constraints.items():
            problem = constraint.problem(getattr(self, name))
            if problem:
                raise heads.InputError(name, f"{name}={getattr(self, name)!r} {problem}")
        if self.max_samples > pool_size:
            raise heads.InputError("max_samples", f"max_samples={self.max_samples} exceeds the {pool_size} "
                                   f"training samples available to stream; ask for at most {pool_size}")
        return self


def single_threaded_numerics():
    """Limit BLAS and OpenMP to one thread (a context manager, or lasting if not used in ``with``).

    The heads' arrays are tiny: extra threads only add contention (scikit-learn's logistic fits,
    whose loss runs under OpenMP, were 10x slower with two threads on a busy 2-core machine), and
    one thread keeps float64 results independent of how many requests run side by side.  The
    BLAS limit is process-wide but OpenMP's applies to the calling thread only, hence a ``with``
    around the work in whichever thread does it.  scikit-learn is imported first so that the
    OpenMP runtime it brings is loaded, and so limited, too.
    """
    import sklearn.linear_model  # noqa: F401  (loads scikit-learn's OpenMP runtime)
    from threadpoolctl import threadpool_limits

    return threadpool_limits(1)


@dataclass
class Curve:
    samples: list = field(default_factory=list)
    accuracy: list = field(default_factory=list)
    final_accuracy: float = float("nan")


def learning_curve(head: heads.Head, features: TaskFeatures, order: np.ndarray, protocol: Protocol) -> Curve:
    """Stream ``order`` into ``head`` batch by batch; evaluate on the whole validation set each time
    the number of samples seen crosses a multiple of ``evaluation_frequency``."""
    curve = Curve()
    val_x = features.val_x.astype(np.float64)
    seen = 0
    for start in range(0, len(order), protocol.batch_size):
        index = order[start:start + protocol.batch_size]
        head.partial_fit(features.train_x[index].astype(np.float64), features.train_y[index])
        before, seen = seen, seen + len(index)
        if seen // protocol.evaluation_frequency > before // protocol.evaluation_frequency:
            curve.samples.append(seen)
            curve.accuracy.append(heads.accuracy(head.weights(), val_x, features.val_y))
    if curve.samples and curve.samples[-1] == seen:
        curve.final_accuracy = curve.accuracy[-1]
    else:
        curve.final_accuracy = heads.accuracy(head.weights(), val_x, features.val_y)
    return curve


def make_method(method: str, features: TaskFeatures, init=None, seed: int = 0,
                update_url: str | None = None) -> heads.Head:
    """A head of ``method``, or the outside method served at ``update_url``."""
    if update_url:
        return heads.RemoteHead(features.dim, features.num_classes, init=init, seed=seed, url=update_url)
    return heads.make_head(method, features.dim, features.num_classes, init=init, seed=seed)


def run_method(method: str, features: TaskFeatures, protocol: Protocol, seed: int, init=None,
               update_url: str | None = None) -> tuple[Curve, int | None]:
    """One method on the seeded stream: its learning curve and milestone."""
    protocol.check(len(features.train_y))
    head = make_method(method, features, init=init, seed=seed, update_url=update_url)
    try:
        with single_threaded_numerics():
            curve = learning_curve(head, features, stream_order(seed, len(features.train_y), protocol.max_samples),
                                   protocol)
    finally:
        if isinstance(head, heads.RemoteHead):
            head.close()
    return curve, milestone(curve.samples, curve.accuracy, protocol.threshold, protocol.window)


def compare_to_baseline(features: TaskFeatures, method: str, protocol: Protocol, seed: int = 0,
                        custom_weights=None, update_url: str | None = None) -> dict:
    """One custom method against the adam baseline on the same stream (the service's run_benchmark)."""
    custom, custom_milestone = run_method(method, features, protocol, seed, custom_weights, update_url)
    baseline, baseline_milestone = run_method(heads.REFERENCE_METHOD, features, protocol, seed)
    return {
        "custom_milestone": custom_milestone,
        "baseline_milestone": baseline_milestone,
        "relative_efficiency": relative_efficiency(baseline_milestone, custom_milestone),
        "learning_curves": {"samples": custom.samples, "custom_acc": custom.accuracy,
                            "baseline_acc": baseline.accuracy},
        "final_accuracy": {"custom": custom.final_accuracy, "baseline": baseline.final_accuracy},
    }


# ----------------------------------------------------------------------------- study over seeds

def results_name(folder: str, setup: str | None, task: str, dataset: str | None, classes,
                 data: ImageDataset | None = None) -> str:
    """``<setup>`` for the folder's target classes, ``<setup>_binary`` for its first two,
    ``<dataset>_<c1-c2-...>`` for any other class list, ``data_<name>`` for a user's images."""
    if data is not None:
        return f"data_{data.name}"
    if classes is not None:
        return f"{dataset or get_setup(folder, setup).target_dataset}_{'-'.join(str(int(c)) for c in classes)}"
    name = get_setup(folder, setup).name
    return name if task == "all" else f"{name}_{task}"


def results_path(folder: str, name: str) -> Path:
    """Beside the folder's sweep results (under ``$TRANSFER_OUTPUT_ROOT`` when that is set)."""
    return results_dir(folder) / f"sample_efficiency_{name}.json"


def summary(records: list[dict], baseline: str = heads.REFERENCE_METHOD) -> pd.DataFrame:
    """Per method: milestone median and IQR over the seeds that reached it, how many never did,
    relative efficiency (median over seeds where both reached) and median final accuracy."""
    frame = pd.DataFrame(records)
    rows = {}
    for method, group in frame.groupby("method", sort=False):
        reached = group["milestone"].dropna().to_numpy(dtype=float)
        ratios = group["relative_efficiency"].dropna().to_numpy(dtype=float)
        q1, med, q3 = np.percentile(reached, [25, 50, 75]) if len(reached) else (np.nan,) * 3
        rows[method] = {
            "milestone median": med, "milestone q25": q1, "milestone q75": q3,
            "never reached": f"{len(group) - len(reached)}/{len(group)}",
            "relative efficiency": np.median(ratios) if len(ratios) else np.nan,
            "final accuracy": float(np.median(group["final_accuracy"])),
        }
    table = pd.DataFrame.from_dict(rows, orient="index")
    order = [baseline] + [m for m in table.index if m != baseline] if baseline in table.index else list(table.index)
    return table.loc[order]


def format_summary(table: pd.DataFrame) -> str:
    shown = pd.DataFrame({
        "milestone median": table["milestone median"].map(lambda v: "never" if np.isnan(v) else f"{v:g}"),
        "IQR": [("-" if np.isnan(a) else f"{a:g}-{b:g}") for a, b in zip(table["milestone q25"], table["milestone q75"])],
        "never reached": table["never reached"],
        "relative efficiency": table["relative efficiency"].map(lambda v: "-" if np.isnan(v) else f"{v:.2f}"),
        "final accuracy": table["final accuracy"].map(lambda v: f"{v:.3f}"),
    }, index=table.index)
    return shown.to_string()


def plot_study(records: list[dict], params: dict, stem: Path) -> list[Path]:
    """Learning curves (median and IQR band per method, threshold line) and a milestone box plot."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    methods = list(dict.fromkeys(r["method"] for r in records))
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for method in methods:
        runs = [r for r in records if r["method"] == method]
        acc = np.array([r["accuracy"] for r in runs])
        samples = runs[0]["samples"]
        q1, med, q3 = np.percentile(acc, [25, 50, 75], axis=0)
        line, = ax.plot(samples, med, label=method)
        ax.fill_between(samples, q1, q3, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.axhline(params["threshold"], color="black", linestyle="--", linewidth=1, label=f"threshold {params['threshold']:g}")
    ax.set_xscale("log")
    ax.set_xlabel("training samples seen")
    ax.set_ylabel("validation accuracy")
    ax.set_title(f"{params['dataset']} classes {params['classes']}: median and IQR over seeds")
    ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    curves = stem.with_name(stem.name + "_curves.png")
    write_png(fig, curves, dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4.2))
    reached = [[r["milestone"] for r in records if r["method"] == m and r["milestone"] is not None] for m in methods]
    never = [sum(1 for r in records if r["method"] == m and r["milestone"] is None) for m in methods]
    total = [sum(1 for r in records if r["method"] == m) for m in methods]
    ax.boxplot([v if v else [np.nan] for v in reached], showfliers=True)
    ax.set_xticks(range(1, len(methods) + 1), [f"{m}\n{n}/{t} never" for m, n, t in zip(methods, never, total)])
    if any(reached):
        ax.set_yscale("log")
    else:  # nothing to draw on a log axis
        ax.text(0.5, 0.5, f"no method reached the milestone within {params['max_samples']} samples",
                transform=ax.transAxes, ha="center", va="center")
    ax.set_ylabel(f"samples to milestone ({params['window']} evaluations >= {params['threshold']:g})")
    ax.set_xlabel("method")
    fig.tight_layout()
    boxes = stem.with_name(stem.name + "_milestones.png")
    write_png(fig, boxes, dpi=120)
    plt.close(fig)
    return [curves, boxes]


def plot_results_file(path: Path, params: dict) -> list[Path]:
    """:func:`plot_study` of every run in the results file at ``path``, read and drawn under its
    lock: of studies side by side (other methods or seeds), the one drawing last reads every
    study's runs, so the figures left show them all."""
    with locked(path):
        return plot_study(load_results(path)[1], params, path.parent / "figures" / path.stem)


@dataclass
class StudyResult:
    path: Path
    table: pd.DataFrame
    figures: list
    params: dict
    records: list


def check_update_url(url: str, timeout: float = 5.0) -> str:
    """Refuse, before any method trains, an outside method's address that is not a URL or at
    which nothing answers (any HTTP answer will do: the service's root needs no route here)."""
    import httpx  # only outside methods need a client

    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DataError(f"update_url {url!r} (--update-url) is not an http(s) URL; give the address of the service "
                        f"that serves /model/update_weights, e.g. http://127.0.0.1:8000")
    try:
        httpx.get(url, timeout=timeout)
    except (httpx.HTTPError, ValueError) as err:
        raise DataError(f"nothing answers at update_url {url} (--update-url: {type(err).__name__}); start the "
                        f"service that serves /model/update_weights there, or fix the address") from None
    return url


def _stream_unit(unit: tuple, features: TaskFeatures, protocol: Protocol, update_url: str | None) -> tuple:
    """One (seed, method) of the study: its curve, milestone and seconds."""
    seed, method = unit
    began = time.perf_counter()
    curve, reached = run_method(method, features, protocol, seed, update_url=update_url if method == "remote" else None)
    return curve, reached, round(time.perf_counter() - began, 4)


def run_study(folder: str = "MNIST", setup: str | None = None, task: str = "all", *, methods=tuple(heads.METHODS),
              seeds: int = 10, batch_size: int = 1, max_samples: int = 1000, evaluation_frequency: int = 1,
              threshold: float = 0.8, window: int = 10, extractor: str = "study", cut: int | None = None,
              weights: str | None = None, input_size: int = 224, dataset: str | None = None, classes=None,
              pool: int | None = None, profile_name: str = "quick", update_url: str | None = None,
              results_dir: Path | None = None, plot: bool = True, progress: bool = True, log=print,
              data=None) -> StudyResult:
    """Every method (and the outside one at ``update_url``) on ``seeds`` seeded streams of a target task.

    ``extractor``/``weights``/``cut``/``input_size`` choose the frozen features (see ``build_extractor``).
    ``data`` (a folder, CSV or prepared name: :func:`~functions.data.image_dataset.load_dataset`): every
    class of the user's images as the target task, at the extractor's input size and channels; its
    version is stored in the parameters, and a results file of another version is refused.
    Writes ``<folder>/results/sample_efficiency_<name>.json`` (element 0 the parameters, then one
    record per method x seed; a re-run with the same parameters keeps the records already there),
    the two figures under ``<folder>/results/figures/``, and logs the summary table.
    """
    unknown = sorted(set(methods) - set(heads.METHODS))
    if unknown:
        raise DataError(f"unknown method(s) {unknown}; choose from {sorted(heads.METHODS)}")
    if seeds < 1:
        raise DataError(f"seeds={seeds} must be at least 1")
    if update_url:
        check_update_url(update_url)
    images = load_dataset(data) if data is not None else None
    target = target_task(folder, setup, task, dataset, classes, pool, images)
    the_extractor = build_extractor(extractor, weights, folder, setup, profile_name, cut, input_size, log=log)
    features = task_features(the_extractor, target, log=log, data=images)
    protocol = Protocol(batch_size, max_samples, evaluation_frequency, threshold, window).check(len(features.train_y))
    params = {"folder": folder, "setup": get_setup(folder, setup).name, "task": task if classes is None else "classes",
              "dataset": target.dataset, "classes": list(target.classes), "val_split": target.val_split,
              "data_seed": target.seed, "pool": target.pool, "pool_size": int(len(features.train_y)),
              "val_size": int(len(features.val_y)), "extractor": the_extractor.identity(), "profile": profile_name,
              "baseline": heads.REFERENCE_METHOD, **asdict(protocol)}
    path = results_path(folder, results_name(folder, setup, task, dataset, classes, images))
    if results_dir is not None:
        path = Path(results_dir) / path.name
    if images is not None:
        params["data"] = images.version
        if path.exists():  # another version of the images is refused naming what changed
            images.check_version(load_results(path)[0].get("data") or {}, str(path))
    file = ResultsFile(path, params, key=lambda r: (r["method"], r["seed"]))
    records = file.records
    names = [heads.REFERENCE_METHOD] + [m for m in methods if m != heads.REFERENCE_METHOD] + (["remote"] if update_url else [])
    done = file.done()
    todo = [(seed, m) for seed in range(seeds) for m in names if (m, seed) not in done]
    baseline_of = {r["seed"]: r["milestone"] for r in records if r["method"] == heads.REFERENCE_METHOD}

    def save(unit: tuple, measured: tuple) -> None:
        (seed, method), (curve, reached, seconds) = unit, measured
        if method == heads.REFERENCE_METHOD:  # each seed's reference runs first (``names``' order)
            baseline_of[seed] = reached
        file.add({"method": method, "seed": seed, "milestone": reached, "reached": reached is not None,
                  "relative_efficiency": relative_efficiency(baseline_of.get(seed), reached),
                  "final_accuracy": curve.final_accuracy, "seconds": seconds,
                  "samples": curve.samples, "accuracy": curve.accuracy,
                  **({"update_url": update_url} if method == "remote" else {})})

    run_units(todo, _stream_unit, save, args=(features, protocol, update_url), files=[file],
              describe=lambda unit: f"{unit[1]} seed {unit[0]}",
              progress=Progress(f"sample efficiency {path.stem}", len(todo), show=progress))
    chosen = [r for r in records if r["method"] in names and r["seed"] < seeds]
    table = summary(chosen)
    log(f"\n{params['dataset']} classes {params['classes']} ({params['pool_size']} training samples to stream, "
        f"{params['val_size']} validation), milestone = {window} evaluations >= {threshold:g}, over {seeds} seeds:")
    log(format_summary(table))
    log(f"wrote {path}")
    figures = plot_results_file(path, params) if plot else []
    for figure in figures:
        log(f"wrote {figure}")
    return StudyResult(path, table, figures, params, chosen)
