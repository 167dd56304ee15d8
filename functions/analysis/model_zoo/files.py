"""The zoo's files, in the layout of the model-recommendation setting: model metadata, task
metadata, one record per (model, task), the LogME matrix, and the matrix as a figure.

All go to ``zoo/results/`` under the output root.  Records carry the zoo version they were
measured with: a file from another version is refused, naming the difference.  Builds side by
side (other models, or the same) each merge their rows into what the records file holds, under
its lock, so none loses another's.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ...core.atomic import atomic_file, locked
from ...core.errors import DataError
from ...core.paths import results_dir
from ...models.zoo_catalog import ZOO, ZOO_FOLDER, ZOO_VERSION
from .matrix import score_matrix

MODEL_META = "source_model_meta_data.csv"
TASK_META = "target_dataset_meta_data.csv"
MODEL_COLUMNS = ("model", "family", "architecture", "depth", "width", "input_size", "input_channels", "params",
                 "flops", "memory_mb", "feature_dim", "pretrain_dataset", "pretrain_classes", "pretrain_accuracy",
                 "pretrain_accuracy_source")
TASK_COLUMNS = ("task", "source_dataset", "domain", "num_classes", "classes", "class_names", "n_train", "n_test")
RECORD_KEY = ["model", "task"]
WAYS_KEY = ["model", "task", "way"]
BUILT_IN = "default"  # the built-in task bank's records (record_default.csv); other banks are named by their datasets
MEASURED_WITH = ["zoo_version", "seeds"]  # a row measured otherwise is measured again, not kept


def zoo_dir() -> Path:
    return results_dir(ZOO_FOLDER)


def records_path(bank: str = BUILT_IN) -> Path:
    return zoo_dir() / f"record_{bank}.csv"


def ways_path(bank: str = BUILT_IN) -> Path:
    """The bank's accuracies and costs of each model each way (feature extraction, fine-tuning)."""
    return zoo_dir() / f"ways_{bank}.csv"


def _write_csv(frame: pd.DataFrame, path: Path) -> Path:
    with atomic_file(path, "w") as fh:
        frame.to_csv(fh, index=False, float_format="%.6g")
    return path


def save(records: pd.DataFrame, bank: str = BUILT_IN) -> dict[str, Path]:
    """The bank's records on disk merged with ``records`` (and for the built-in bank the three files
    of the upstream layout beside them: model and task metadata, the LogME matrix), written under the
    records file's lock so that another build's rows, written meanwhile, are kept; returns their paths."""
    folder, path = zoo_dir(), records_path(bank)
    with locked(path):
        records = _merged(records, path)
        written = {"records": _write_csv(records, path)}
        if bank == BUILT_IN:
            models, tasks = records.drop_duplicates("model"), records.drop_duplicates("task")
            written |= {"models": _write_csv(models[list(MODEL_COLUMNS)], folder / MODEL_META),
                        "tasks": _write_csv(tasks[list(TASK_COLUMNS)], folder / TASK_META),
                        "logme": _write_csv(score_matrix(records, "logme").reset_index(), folder / "LogME.csv")}
        return written


def save_ways(records: pd.DataFrame, bank: str = BUILT_IN) -> Path:
    """The bank's ways file merged with ``records`` under its lock (as :func:`save` merges; each
    way keeps columns of its own, so rows of another way stay whatever columns they lack)."""
    path = ways_path(bank)
    with locked(path):
        return _write_csv(_merged(records, path, WAYS_KEY, same_columns=False), path)


def _merged(records: pd.DataFrame, path: Path, key: list[str] = RECORD_KEY, same_columns: bool = True) -> pd.DataFrame:
    """The rows of ``path`` measured as ``records`` were (zoo version, seeds), then the rows of
    ``records`` whose ``key`` (model and task) they lack: as in a results file, a row on disk stays.
    With ``same_columns``, stored rows lacking a column of ``records`` are older code's, dropped."""
    stored = pd.read_csv(path) if path.exists() else pd.DataFrame()
    if not set(MEASURED_WITH) <= set(stored):  # no file, or rows that do not say how they were measured
        return records
    if same_columns and not set(records) <= set(stored):  # older code's rows, without a score this code keeps
        return records
    stored = stored[_keys(stored, MEASURED_WITH).isin(_keys(records, MEASURED_WITH))]
    fresh = records[~_keys(records, key).isin(_keys(stored, key))]
    # an empty part would turn every column's type to object (and floats lose their format)
    return pd.concat([part for part in (stored, fresh) if len(part)] or [records], ignore_index=True)


def _keys(frame: pd.DataFrame, columns: list[str]) -> pd.MultiIndex:
    return pd.MultiIndex.from_frame(frame[columns])


def load_records(path: Path | None = None, made_by: str = "build") -> pd.DataFrame:
    """A records file (or a ways file, which ``zoo ways`` makes), refused when it was measured with
    another zoo version."""
    path = Path(path or records_path())
    if not path.exists():
        raise DataError(f"no zoo records at {path}; run `python -m functions zoo {made_by}` (or `make zoo`) first")
    records = pd.read_csv(path)
    versions = sorted(int(v) for v in records["zoo_version"].unique()) if "zoo_version" in records else []
    if versions != [ZOO_VERSION]:
        theirs, ours = set(records.get("model", [])), {m.name for m in ZOO}
        raise DataError(f"{path} was measured with zoo version(s) {versions or 'none'}, this code's zoo is version "
                        f"{ZOO_VERSION} (models only in the file: {sorted(theirs - ours) or 'none'}; only in this "
                        f"zoo: {sorted(ours - theirs) or 'none'}); run `python -m functions zoo {made_by}` to measure "
                        f"again")
    return records


def load_every_bank() -> pd.DataFrame:
    """The records of every bank under ``zoo/results/`` together, the built-in bank's first: what a
    recommendation for a new task learns from (each bank's file checked as :func:`load_records`)."""
    others = sorted(p for p in zoo_dir().glob("record_*.csv") if p != records_path())
    return pd.concat([load_records(), *(load_records(p) for p in others)], ignore_index=True)


def load_every_ways() -> pd.DataFrame:
    """Every bank's ways file together (each checked as :func:`load_records`); empty when there is none."""
    paths = sorted(zoo_dir().glob("ways_*.csv"))
    return pd.concat([load_records(p, "ways") for p in paths], ignore_index=True) if paths else pd.DataFrame()


def matrix_figure(records: pd.DataFrame, value: str = "accuracy") -> Figure:
    """Models x tasks: how far each model's ``value`` falls below the task's best model (0: the
    winner, marked with a dot, as is every model of a tie), so a column shows which model wins rather than how easy the
    task is.  Tasks are grouped by dataset (separated by white lines) and labelled by classes and
    training size; models are ordered by family and pretraining accuracy."""
    matrix = score_matrix(records, value)
    order = records.drop_duplicates("model").sort_values(["family", "pretrain_accuracy"]).model
    matrix = matrix.loc[list(order)]
    below_best = matrix.max(axis=0) - matrix
    fig = Figure(figsize=(min(24, 3 + 0.13 * matrix.shape[1]), 2.2 + 0.3 * matrix.shape[0]), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(below_best.to_numpy(), aspect="auto", cmap="viridis_r", interpolation="nearest")
    rows, columns = np.nonzero(below_best.to_numpy() == 0)
    ax.plot(columns, rows, linestyle="", marker="o", markersize=2.5, color="black")
    ax.set_yticks(np.arange(len(matrix)), matrix.index, fontsize="small")
    tasks = records.drop_duplicates("task").set_index("task").loc[matrix.columns]
    ax.set_xticks(np.arange(len(tasks)), [f"{k}c {n}" for k, n in zip(tasks.num_classes, tasks.n_train)],
                  rotation=90, fontsize=min(8.0, max(4.5, 300 / len(tasks))))
    datasets = tasks.source_dataset
    starts = [i for i in range(len(datasets)) if i == 0 or datasets.iloc[i] != datasets.iloc[i - 1]]
    for start in starts[1:]:
        ax.axvline(start - 0.5, color="white", linewidth=2)
    top = ax.secondary_xaxis("top")
    top.set_xticks([(a + b) / 2 - 0.5 for a, b in zip(starts, [*starts[1:], len(datasets)])],
                   [datasets.iloc[s] for s in starts])
    ax.set_xlabel(f"target tasks ({len(datasets)}): classes (c) and training images, grouped by dataset")
    label = "linear-probe test accuracy" if value == "accuracy" else value
    fig.colorbar(image, ax=ax, label=f"{label} below the task's best model")
    fig.suptitle(f"Which model wins each task: {len(matrix)} models x {len(datasets)} tasks\n"
                 f"(dot: the task's best model, every one of a tie)")
    return fig
