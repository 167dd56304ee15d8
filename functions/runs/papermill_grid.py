"""Run a notebook over a grid of parameters with papermill, one output folder per grid point.

Each point's executed notebook and the results files it writes go to
``<out>/<key=value,...>/``; a failing point does not stop the others, and all failures are
reported at the end.
"""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import DataError
from .units import Progress, run_units


@dataclass
class PointOutcome:
    parameters: dict
    folder: Path
    error: str | None = None


def grid_points(grid: dict) -> list[dict]:
    """Every combination of the grid's values, in a stable order."""
    for key, values in grid.items():
        if not isinstance(values, (list, tuple)) or not values:
            raise DataError(f"grid value of {key!r} must be a non-empty list, got {values!r}")
    keys = list(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


def check_parameters(notebook: Path, grid: dict, fixed: dict | None) -> None:
    """Refuse names that the notebook's ``parameters`` cell does not define (papermill would only
    warn, and run every point with the defaults), and a name given both fixed and on the grid."""
    import papermill

    both = sorted(set(grid) & set(fixed or {}))
    if both:
        raise DataError(f"{both} given both as --grid and as --param; give each parameter once")
    known = list(papermill.inspect_notebook(str(notebook)))
    unknown = sorted((set(grid) | set(fixed or {})) - set(known))
    if unknown:
        raise DataError(f"{notebook.name} has no parameter(s) {unknown}; its parameters cell defines {known}")


def check_grid(notebook, grid: dict, fixed: dict | None = None) -> tuple[Path, list[dict]]:
    """The notebook's resolved path and the grid's points, once the notebook, the grid's values and
    every parameter name have passed their checks (a caller checks before it starts an executor)."""
    notebook = Path(notebook).resolve()
    if not notebook.is_file():
        raise DataError(f"no notebook {notebook}; give the path of a study notebook, e.g. MNIST/empirical.ipynb")
    points = grid_points(grid)
    check_parameters(notebook, grid, fixed)
    return notebook, points


def point_name(parameters: dict) -> str:
    """A folder name that says which parameters made its contents."""
    text = ",".join(f"{k}={v}" for k, v in parameters.items())
    return re.sub(r"[^A-Za-z0-9=,._-]+", "", text.replace(" ", "")) or "default"


def execute(notebook: Path, output: Path, parameters: dict | None = None, timeout: int = 3600) -> None:
    """Run ``notebook`` into ``output`` with the ``python3`` kernel (this interpreter), in the
    notebook's folder, with a start-up and an execution limit."""
    import papermill

    papermill.execute_notebook(str(notebook), str(output), parameters=parameters or {}, kernel_name="python3",
                               cwd=str(Path(notebook).parent), progress_bar=False, execution_timeout=timeout,
                               start_timeout=120)


def run_point(point: dict, notebook: Path, out: Path, fixed: dict | None, timeout: int) -> PointOutcome:
    """One grid point executed into its own folder; an error is kept in the outcome, not raised."""
    folder = (Path(out) / point_name(point)).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    parameters = {**(fixed or {}), **point, "output_root": str(folder)}
    outcome = PointOutcome(point, folder)
    try:
        execute(notebook, folder / notebook.name, parameters, timeout)
    except Exception as err:  # a failed point is reported at the end; the sweep goes on
        outcome.error = f"{type(err).__name__}: {str(err).strip().splitlines()[-1] if str(err).strip() else ''}"
    return outcome


def _indexed_point(index: int, points: list[dict], notebook: Path, out: Path, fixed: dict | None,
                   timeout: int) -> PointOutcome:
    """:func:`run_point` as an executor's unit, named by its place in the grid."""
    return run_point(points[index], notebook, out, fixed, timeout)


def run_grid(notebook: Path, grid: dict, out: Path, fixed: dict | None = None, timeout: int = 3600,
             progress: bool = True, executor=None) -> list[PointOutcome]:
    """Every grid point, through ``executor`` (default: one after another in this process; on Ray,
    one task per point); outcomes in grid order."""
    notebook, points = check_grid(notebook, grid, fixed)
    outcomes = {}
    summary = run_units(range(len(points)), _indexed_point, outcomes.__setitem__,
                        args=(points, notebook, Path(out).resolve(), fixed, timeout), executor=executor,
                        describe=lambda index: point_name(points[index]),
                        progress=Progress(f"sweep {notebook.name}", len(points), "notebook", progress))
    for failure in summary.failures:  # a task whose worker died
        point = points[failure.unit]
        outcomes[failure.unit] = PointOutcome(point, (Path(out) / point_name(point)).resolve(), failure.error)
    return [outcome for _, outcome in sorted(outcomes.items())]
