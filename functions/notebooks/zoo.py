"""The model zoo's steps, one call each, for the command line and the model-zoo notebook."""
from __future__ import annotations

import json
import os

import pandas as pd

from ..analysis.model_zoo import files, intervals, matrix, recommenders, ways
from ..analysis.plots import save_figure
from ..core.atomic import locked, write_json_atomic
from ..core.device import describe_machine
from ..core.errors import DataError
from ..data.image_dataset import load_dataset
from ..data.task_bank import DatasetPool, bank, check_task, dataset_task, dataset_tasks, parse_task
from ..runs import zoo_matrix
from ..models.zoo_catalog import ZOO, ZOO_FOLDER, zoo_model
from ..runs.zoo import study_network

__all__ = ["bank_name", "build", "evaluation", "measure_ways", "family_verdict", "family_wins", "pretrain",
           "recommend_model"]


def pretrain(names=None, log=print) -> list[str]:
    """Train (or reuse) the zoo's study CNNs; returns their names."""
    chosen = [zoo_model(n) for n in names] if names else list(ZOO)
    done = []
    for model in (m for m in chosen if m.family == "study CNN"):
        study_network(model, train_if_missing=True, log=log)
        done.append(model.name)
    return done


def _pools(data) -> dict:
    """Users' datasets (prepared names, folders or CSVs) as the bank's pools, by name."""
    pools = {}
    for source in data:
        dataset = DatasetPool(load_dataset(source))
        if dataset.dataset in pools:
            raise DataError(f"two datasets are named {dataset.dataset!r} ({source}); rename one folder so that the "
                            f"tasks of each keep their own name")
        pools[dataset.dataset] = dataset
    return pools


def bank_name(data=None) -> str:
    """The name of the records of tasks drawn from ``data``'s datasets (their names joined), or of
    the built-in bank's without ``data``."""
    return _named(_pools(data) if data else None)


def _named(pools: dict | None) -> str:
    return "_".join(pools) if pools else files.BUILT_IN


def _suffix(bank_of: str) -> str:
    return "" if bank_of == files.BUILT_IN else f"_{bank_of}"


def build(names=None, seeds: int = zoo_matrix.SEEDS, log=print, executor=None,
          data=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Measure the matrix over the task bank, or with ``data`` (prepared names, folders or CSVs)
    over tasks drawn from those datasets' classes as the bank draws its own (a bank of their own,
    :func:`bank_name`), one unit per model on ``executor`` (default this process); merge it into
    the zoo's files and write the matrix figure, the timing and the recommenders' evaluation
    (:func:`evaluate_files`); returns the records of every model the files hold and the evaluation."""
    models = [zoo_model(n) for n in names] if names else list(ZOO)
    machine = describe_machine()
    pools = _pools(data) if data else None
    tasks = [t for pool in pools.values() for t in dataset_tasks(pool, log)] if pools else bank()
    name = _named(pools)
    records, timing = zoo_matrix.build(models, tasks, matrix.scores, seeds, log, executor, pools=pools)
    paths = files.save(records, name)
    records, table = evaluate_files(name)
    write_json_atomic(files.zoo_dir() / f"timing{_suffix(name)}.json", {
        "machine": machine, "models": len(models), "tasks": records["task"].nunique(), "seeds": seeds,
        "load_average_at_end": [round(v, 2) for v in os.getloadavg()], **timing.as_dict()})
    for path in paths.values():
        log(f"wrote {path}")
    return records, table


def measure_ways(names=None, data=None, log=print, progress: bool = True) -> pd.DataFrame:
    """Each model (default: the zoo) transferred each way (:data:`~functions.runs.zoo_ways.WAYS`) on
    a sample of the built-in bank's tasks or of tasks drawn from ``data``'s datasets
    (:func:`~functions.runs.zoo_ways.ways_tasks`), saved to the bank's ways file as each model ends;
    a way whose rows the file holds is not measured again, so a stopped run resumes.  Returns the
    file's rows."""
    from ..runs.cost import CostMeter
    from ..runs.units import Progress, run_units
    from ..runs.zoo_ways import WAYS, model_ways, ways_tasks
    models = [zoo_model(n) for n in names] if names else list(ZOO)
    pools = _pools(data) if data else None
    tasks = ways_tasks([t for pool in pools.values() for t in dataset_tasks(pool, log)] if pools else bank(), pools)
    if not tasks:
        raise DataError(f"no task of {', '.join(pools)} leaves a training image of every class outside its draw to "
                        f"stop fine-tuning on: their smallest classes are too small to fine-tune on")
    log(f"{len(tasks)} tasks: " + ", ".join(t.name for t in tasks))
    name, path = _named(pools), files.ways_path(_named(pools))
    stored = files.load_records(path, "ways") if path.exists() else pd.DataFrame(columns=files.WAYS_KEY)
    have = set(zip(stored["model"], stored["task"], stored["way"]))
    missing = {m.name: tuple(w for w in WAYS if any((m.name, t.name, w) not in have for t in tasks)) for m in models}
    pending = [(model, missing_ways) for model, missing_ways in missing.items() if missing_ways]
    with CostMeter() as meter:
        summary = run_units(pending, lambda unit: model_ways(zoo_model(unit[0]), tasks, meter, pools,
                                                             log=lambda *_: None, ways=unit[1]),
                            lambda unit, records: files.save_ways(pd.DataFrame(records), name),
                            describe=lambda unit: f"{unit[0]} ({', '.join(unit[1])})",
                            progress=Progress(f"zoo ways ({len(tasks)} tasks)", len(pending), unit="model",
                                              show=progress))
    summary.raise_failures("model(s) failed and are not saved", "re-running the same command measures them")
    log(f"wrote {path}")
    return files.load_records(path, "ways")


def evaluate_files(bank_of: str = files.BUILT_IN) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A bank's matrix figure and recommenders' evaluation (``recommenders.json``, or
    ``recommenders_<bank>.json``) written again from its records file; returns the records and the
    evaluation.  A bank of other images is evaluated also with the recommenders trained on the
    built-in bank alone, and the intervals that bank gives are checked on its tasks
    (``coverage_<bank>.json``, and the table's ``attrs["coverage"]``).  Evaluated as stored (six
    significant digits, as the notebook reads them): the same numbers on every machine, and scores
    equal to rounding count as ties; read under the file's lock, so the figure and evaluation
    written last cover the rows of builds side by side."""
    path, suffix = files.records_path(bank_of), _suffix(bank_of)
    with locked(path):
        records = files.load_records(path)
        built_in = None if bank_of == files.BUILT_IN else files.load_records()
        save_figure(files.matrix_figure(records), ZOO_FOLDER, f"transferability_matrix{suffix}")
        table = evaluation(records, built_in)
        write_json_atomic(files.zoo_dir() / f"recommenders{suffix}.json",
                          json.loads(table.round(4).to_json(orient="index")))
        if built_in is not None:
            table.attrs["coverage"] = intervals.coverage_on(built_in, records)
            write_json_atomic(files.zoo_dir() / f"coverage{suffix}.json",
                              json.loads(table.attrs["coverage"].reset_index().round(4).to_json(orient="records")))
    return records, table


def evaluation(records: pd.DataFrame | None = None, built_in: pd.DataFrame | None = None) -> pd.DataFrame:
    """The recommenders' evaluation of ``records`` (default: the built-in bank's), and with
    ``built_in`` (for tasks of other images) also trained on those records alone."""
    return recommenders.evaluate(files.load_records() if records is None else records, bank=built_in)


def family_wins(records: pd.DataFrame) -> pd.DataFrame:
    """Per dataset and model family: the mean linear-probe accuracy over the family's models and
    tasks, the mean over tasks of the family's best model, and the share of tasks whose best model
    is of the family (a tie counts for each family that reaches the best)."""
    keys = ["source_dataset", "family"]
    best = records.groupby("task")["accuracy"].transform("max")
    won = records[records["accuracy"] == best].groupby(keys)["task"].nunique()
    table = records.groupby(keys).agg(mean_accuracy=("accuracy", "mean"))
    table["best_model_accuracy"] = records.groupby([*keys, "task"])["accuracy"].max().groupby(keys).mean()
    tasks = records.groupby("source_dataset")["task"].nunique()
    table["tasks_won"] = won.reindex(table.index, fill_value=0) / tasks.loc[table.index.get_level_values(0)].to_numpy()
    return table


def recommend_model(task: str | None = None, recommender: str = "gradient boosting", log=print,
                    data=None, measure: bool = False, level: float = intervals.LEVEL) -> pd.DataFrame:
    """The zoo ranked for ``task`` (``<dataset>:<classes>:<n>``) by ``recommender`` trained on every
    other task of every bank (:func:`~functions.analysis.model_zoo.files.load_every_bank`); the
    measured accuracy is shown when the bank holds the task.  ``data`` (a folder, CSV or prepared
    name) instead: the user's whole task (:func:`dataset_task`), scored on its images at each model's
    input size, learned from the banks without any task of a dataset of that name (a new dataset, as
    the user's images are); its accuracies are unknown (NaN) unless ``measure``:
    then each model's linear probe is trained on the task as the zoo matrix trains it (mean of its
    seeds), to set beside the prediction.  The table's ``attrs`` name the task, and for ``data``
    the dataset's version (fingerprint and classes).  Beside the ranking, each model's predicted
    accuracy with its ``level`` conformal interval (calibrated leaving whole datasets out where the
    records hold several, fitted without the task) and its cost per image, in GFLOPs and in the
    milliseconds its features took on the machine that extracted them; ``attrs["candidates"]``
    weighs each model each way (feature extraction at two stages, fine-tuning) with their
    intervals, measured costs and Pareto set (:func:`~functions.analysis.model_zoo.ways.choose_within`
    picks among them); ``attrs["outside"]`` says where the task lies beyond the bank's tasks (there the
    intervals extrapolate)."""
    recommenders.check_recommender(recommender)
    if (task is None) == (data is None):
        raise DataError("recommend-model needs a target: give a bank task (--task <dataset>:<classes>:<n>) or your "
                        "images (--data PATH), one of them")
    source = DatasetPool(load_dataset(data)) if data is not None else None
    if source is not None:
        spec = dataset_task(source, log)
    else:
        spec = check_task(parse_task(task)) if isinstance(task, str) else check_task(task)
    records = files.load_every_bank()
    if source is not None:  # a user's dataset is a new one: tasks of it in a bank would say too much
        records = records[records["source_dataset"] != spec.dataset]
    known = records[records["task"] == spec.name]
    if known.empty:
        models = [zoo_model(n) for n in records["model"].unique()]
        task_records = pd.DataFrame([r for m in models for r in zoo_matrix.model_records(
            m, [spec], matrix.scores, seeds=zoo_matrix.SEEDS if measure else 0, log=log,
            pools={spec.dataset: source} if source else None)])
    else:
        task_records = known
    task_records = task_records.reset_index(drop=True)
    table = recommenders.recommend(records, task_records, recommender)
    others = records[records["task"] != spec.name]
    predicted = intervals.predict_with_interval(others, task_records, level)
    predicted["gflops"] = task_records["flops"].to_numpy() / 1e9
    predicted["ms_per_image"] = task_records["extraction_ms_per_image"].to_numpy()
    table = table.merge(predicted, on="model", how="left").rename_axis("rank")
    table.attrs["task"], table.attrs["level"] = spec.name, level
    table.attrs["calibration"] = predicted.attrs["calibration"]
    table.attrs["outside"] = intervals.outside_the_bank(records, task_records)
    table.attrs["candidates"] = _candidates(others, task_records, predicted[["model", *intervals.PREDICTION]],
                                            level, spec.dataset if source is not None else None)
    if source is not None:
        table.attrs["data"] = source.data.version
    return table


def _candidates(records: pd.DataFrame, task_records: pd.DataFrame, probe: pd.DataFrame, level: float,
                user_dataset: str | None) -> pd.DataFrame:
    """Model x way for the task (:func:`~functions.analysis.model_zoo.ways.candidates`): the probe's
    predictions, and each other way's, learned from every bank's tasks measured that way (none of
    the user's dataset, nor the task itself), with their measured costs; ``measured_accuracy``
    where the task was measured that way."""
    measured = files.load_every_ways()
    task = task_records["task"].iloc[0]
    if measured.empty:
        cost = pd.DataFrame(columns=["model", "way", *ways.COSTS]).set_index(["model", "way"])
        table, known = ways.candidates(probe, {}, cost, task_records), measured
    else:
        if user_dataset is not None:
            measured = measured[measured["source_dataset"] != user_dataset]
        predicted = {}
        for way in (w for w in measured["way"].unique() if w != "FE"):
            learned = ways.measured_way(records, measured, way)
            if learned["task"].nunique() > 1:
                predicted[way] = intervals.predict_with_interval(learned, task_records, level)
        table = ways.candidates(probe, predicted, ways.costs(measured), task_records)
        known = measured[(measured["task"] == task) & (measured["way"] != "FE")]
    known = pd.concat([task_records.assign(way="FE"), known])[["model", "way", "accuracy"]]
    return table.merge(known.rename(columns={"accuracy": "measured_accuracy"}), on=["model", "way"], how="left")


def verdict(table: pd.DataFrame, protocol: str = "leave one dataset out", ours: str = "gradient boosting") -> str:
    """Whether the learned recommender beats LogME alone and the baselines (pretraining accuracy,
    parameter count) in mean weighted tau under ``protocol``: one sentence with the numbers, each
    difference paired by task with its 95% bootstrap interval over tasks."""
    tau = table[(protocol, "weighted_tau")]
    best_score = tau[list(matrix.SCORES)].idxmax()
    rivals = {"logme": "LogME alone", "knn": "the k-NN baseline", "pretrain_accuracy": "the pretraining accuracy",
              "params": "the parameter count"}
    parts = []
    for name, label in rivals.items():
        gain = recommenders.tau_difference(table, ours, name, protocol)
        word = "above" if gain["ci95_low"] > 0 else "below" if gain["ci95_high"] < 0 else "not distinguishable from"
        parts.append(f"{word} {label} ({tau[name]:.2f}; difference {gain['difference']:+.2f}, 95% CI "
                     f"{gain['ci95_low']:+.2f} to {gain['ci95_high']:+.2f} over {gain['tasks']} tasks)")
    return (f"{protocol}: {ours} reaches a mean weighted tau of {tau[ours]:.2f} (95% CI "
            f"{table.loc[ours, (protocol, 'tau_ci95_low')]:.2f} to {table.loc[ours, (protocol, 'tau_ci95_high')]:.2f}), "
            + "; ".join(parts) + f". The best single score is {best_score} ({tau[best_score]:.2f}).")


def family_verdict(table: pd.DataFrame) -> str:
    """One sentence per dataset of :func:`family_wins`: which family's models win its tasks, and
    by how much their best model's accuracy leads on average."""
    lines = []
    for dataset, families in table.groupby(level="source_dataset"):
        families = families.droplevel("source_dataset").sort_values("best_model_accuracy", ascending=False)
        first, second = families.index[0], families.index[1] if len(families) > 1 else None
        line = (f"{dataset}: the {first} models' best wins {families.loc[first, 'tasks_won']:.0%} of the tasks, at "
                f"{families.loc[first, 'best_model_accuracy']:.3f} on average")
        if second is not None:
            line += (f", against {families.loc[second, 'best_model_accuracy']:.3f} for the best {second} "
                     f"({families.loc[second, 'tasks_won']:.0%} of the tasks)")
        lines.append(line + ".")
    return "\n".join(lines)
