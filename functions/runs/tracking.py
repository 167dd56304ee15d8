"""MLflow tracking: one driver process writes every run to one store that users compare runs in.

The store is ``$MLFLOW_TRACKING_URI`` or a SQLite file in the output root (MLflow 3 refuses its
old file store).  SQLite does not take many writers, so workers hand their records to the driver,
which alone holds a :class:`Tracker`, and drivers on one SQLite store (two commands, notebooks
side by side) take turns through its lock file for every change; for many writers, run ``mlflow
server`` and point ``MLFLOW_TRACKING_URI`` at it.  The client is an ``MlflowClient`` bound to that
URI: nothing of MLflow's global state changes.
"""
from __future__ import annotations

import logging
import math
import os
import re
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path

import httpx
import pandas as pd
from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.validation import MAX_METRICS_PER_BATCH, MAX_PARAMS_TAGS_PER_BATCH

from ..core import paths
from ..core.atomic import locked
from ..core.errors import DataError

# the MLflow experiment each fe-vs-ft pipeline logs to
EXPERIMENTS = {"FE": "Feature extraction", "FT": "Fine-tuning"}

SQLITE_PREFIX = "sqlite:///"
# a dead server must fail a run in seconds, not after MLflow's default minutes of retries
HTTP_KNOBS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}
HEALTH_TIMEOUT_S = 3.0
# loggers that narrate the creation and migration of a new SQLite store
CHATTY_LOGGERS = ("mlflow.store.db.utils", "alembic")


def default_uri(output_root: Path | None = None) -> str:
    """``$MLFLOW_TRACKING_URI``, else ``sqlite:///<absolute output root>/mlflow.db``: absolute, so
    kernels and workers that change directory still find the same store."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    root = Path(output_root).resolve() if output_root is not None else paths.output_root()
    return f"{SQLITE_PREFIX}{root / 'mlflow.db'}"


def _sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (absolute), or None for other stores."""
    if not uri.startswith(SQLITE_PREFIX):
        return None
    return Path(uri[len(SQLITE_PREFIX):]).resolve()


def _refuse_unwritable(db: Path) -> None:
    """Raise before anything is created when the database's folder cannot be made or written."""
    existing = db.parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise DataError(f"cannot write the MLflow store {db}: {existing} is not a writable folder; "
                        f"set TRANSFER_OUTPUT_ROOT to a writable folder, or MLFLOW_TRACKING_URI to "
                        f"another store (sqlite:////abs/path/mlflow.db or http://host:port)")


def _refuse_unreachable(uri: str) -> None:
    """Raise within seconds when no MLflow server answers ``<uri>/health``."""
    try:
        response = httpx.get(f"{uri.rstrip('/')}/health", timeout=HEALTH_TIMEOUT_S)
    except httpx.HTTPError as err:
        raise DataError(f"no MLflow server answers at {uri} ({err}); start one (mlflow server "
                        f"--host 127.0.0.1 --port PORT ...) or unset MLFLOW_TRACKING_URI to log to "
                        f"the local SQLite store") from err
    if not response.is_success:
        raise DataError(f"{uri}/health answered HTTP {response.status_code}: not a working MLflow "
                        f"server; check MLFLOW_TRACKING_URI")


@contextmanager
def _quiet():
    """Keep MLflow's table-creation messages off the user's terminal; warnings still show."""
    loggers = [logging.getLogger(name) for name in CHATTY_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _exclusive(db: Path | None):
    """One process at a time changes a SQLite store: two drivers creating a new store's tables or
    an experiment at once both try (one fails: "table ... already exists"), and concurrent
    writes fail with "database is locked"."""
    return locked(db) if db is not None else nullcontext()


def _artifact_folder(name: str) -> str:
    """An experiment name as one safe folder name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "experiment"


def _finite(key: str, value) -> float | None:
    """``value`` as a float, None when it is missing or not finite (nothing to plot)."""
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError) as err:
        raise DataError(f"metric {key!r} is {value!r}, not a number; log it as a parameter "
                        f"or a tag instead") from err
    return number if math.isfinite(number) else None


def _chunks(items: list, size: int):
    return (items[i:i + size] for i in range(0, len(items), size))


class Tracker:
    """The driver's handle on one tracking store: experiments by name, finished runs in one call."""

    def __init__(self, uri: str | None = None):
        self.uri = uri or default_uri()
        self.db = _sqlite_path(self.uri)
        if self.db is not None:
            _refuse_unwritable(self.db)
            self.uri = f"{SQLITE_PREFIX}{self.db}"  # a later change of directory moves nothing
        elif self.uri.startswith(("http://", "https://")):
            _refuse_unreachable(self.uri)
            for knob, value in HTTP_KNOBS.items():
                os.environ.setdefault(knob, value)
        try:
            if self.db is not None:
                self.db.parent.mkdir(parents=True, exist_ok=True)
            with _quiet(), _exclusive(self.db):
                self.client = MlflowClient(tracking_uri=self.uri)
                self.client.search_experiments(max_results=1)  # the store's tables exist when this returns
        except MlflowException as err:
            raise DataError(f"MLflow cannot open the tracking store {self.uri}: {err.message}; "
                            f"set MLFLOW_TRACKING_URI to a working store") from err
        self._experiments: dict[str, str] = {}

    def experiment_id(self, name: str) -> str:
        """The id of experiment ``name``, created (with its artifacts next to a SQLite store) or
        restored when it was deleted."""
        if name not in self._experiments:
            with _exclusive(self.db):  # two drivers on one new store would both create it
                self._experiments[name] = self._get_or_create(name)
        return self._experiments[name]

    def _get_or_create(self, name: str) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is None:
            location = (str(self.db.parent / "mlartifacts" / _artifact_folder(name))
                        if self.db is not None else None)
            return self.client.create_experiment(name, artifact_location=location)
        if found.lifecycle_stage == "deleted":
            self.client.restore_experiment(found.experiment_id)
        return found.experiment_id

    def log_run(self, experiment: str, run_name: str, params: dict, metrics: dict[str, float],
                curves: dict[str, list[float]] | None = None, artifacts: list[Path] | None = None,
                tags: dict | None = None, unique: bool = False) -> str:
        """Log one finished run and return its id.  Parameters are stored as strings; NaN and
        infinite values are skipped (MLflow cannot plot them); a curve's step is its epoch index.
        Bad input is refused before the run is created.  ``unique``: when a finished run of that
        name and exactly these parameters is in the experiment, nothing is logged and its id is
        returned, so a results record logged again (a rerun, another process) stays one run."""
        stamp = int(time.time() * 1000)
        param_list = [Param(str(key), str(value)) for key, value in params.items()]
        metric_list = [Metric(key, number, stamp, 0) for key, value in metrics.items()
                       if (number := _finite(key, value)) is not None]
        metric_list += [Metric(key, number, stamp, step) for key, values in (curves or {}).items()
                        for step, value in enumerate(values) if (number := _finite(key, value)) is not None]
        files = [Path(path) for path in artifacts or []]
        missing = [str(path) for path in files if not path.is_file()]
        if missing:
            raise DataError(f"artifacts to log are not files: {', '.join(missing)}; write them first "
                            f"or leave them out of artifacts")
        with _exclusive(self.db):
            found = self._logged(experiment, run_name, param_list) if unique else None
            return found or self._create(experiment, run_name, param_list, metric_list, files, tags)

    def _logged(self, experiment: str, run_name: str, params: list[Param]) -> str | None:
        """The id of a finished run of ``experiment`` named ``run_name`` with exactly ``params``."""
        quote = '"' if "'" in run_name else "'"
        runs = self.client.search_runs([self.experiment_id(experiment)],
                                       f"attributes.run_name = {quote}{run_name}{quote} "
                                       f"and attributes.status = 'FINISHED'")
        wanted = {p.key: p.value for p in params}
        return next((run.info.run_id for run in runs if run.data.params == wanted), None)

    def _create(self, experiment: str, run_name: str, param_list: list[Param], metric_list: list[Metric],
                files: list[Path], tags: dict | None) -> str:
        run_id = self.client.create_run(self.experiment_id(experiment), run_name=run_name,
                                        tags={str(k): str(v) for k, v in (tags or {}).items()}).info.run_id
        try:
            for chunk in _chunks(param_list, MAX_PARAMS_TAGS_PER_BATCH):
                self.client.log_batch(run_id, params=chunk)
            for chunk in _chunks(metric_list, MAX_METRICS_PER_BATCH):
                self.client.log_batch(run_id, metrics=chunk)
            for path in files:
                self.client.log_artifact(run_id, str(path))
        except MlflowException as err:
            self.client.set_terminated(run_id, "FAILED")
            raise DataError(f"MLflow refused run {run_name!r} of {experiment!r} ({err.message}); "
                            f"fix the name or value it names; the partial run {run_id} is marked "
                            f"FAILED") from err
        self.client.set_terminated(run_id, "FINISHED")
        return run_id

    def runs(self, experiment: str) -> pd.DataFrame:
        """Every run of ``experiment``, one row each: ``run_id``, ``run_name``, ``status``,
        ``start_time``, then ``params.*`` (strings), ``metrics.*`` (last values) and ``tags.*``."""
        found = self.client.get_experiment_by_name(experiment)
        if found is None:
            names = sorted(e.name for e in self.client.search_experiments())
            raise DataError(f"no experiment {experiment!r} in {self.uri}; it has: "
                            f"{', '.join(names) or 'none'}")
        rows, token = [], None
        while True:
            page = self.client.search_runs([found.experiment_id], page_token=token)
            rows += [{"run_id": run.info.run_id, "run_name": run.info.run_name,
                      "status": run.info.status,
                      "start_time": pd.to_datetime(run.info.start_time, unit="ms", utc=True),
                      **{f"params.{k}": v for k, v in run.data.params.items()},
                      **{f"metrics.{k}": v for k, v in run.data.metrics.items()},
                      **{f"tags.{k}": v for k, v in run.data.tags.items() if not k.startswith("mlflow.")}}
                     for run in page]
            token = page.token
            if not token:
                return pd.DataFrame(rows)
