"""The one loop every grid runs: pending units -> executor -> save -> failures -> Ctrl-C -> progress.

A grid (a sweep's cells, fe-vs-ft runs, zoo models, sample-efficiency streams, notebook points)
gives its units in the order they should start, the work that turns one unit into its outcome,
and how to save an outcome.  The executor (this process, or Ray) runs the work; this process
alone saves, as units finish, so an interrupted grid keeps every finished unit and a re-run of
the same command skips them.  A unit whose work raises on a Ray worker comes back as a
:class:`~functions.runs.executors.Failure` while the others go on; in this process an error
stops the grid, as it always did.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

from tqdm.auto import tqdm

from ..core.errors import DataError, Interrupted
from .executors import Failure, InProcess


@dataclass(frozen=True)
class Progress:
    """A progress bar over ``total`` (in the units' sizes), labelled ``desc``; ``show`` False hides it."""

    desc: str
    total: int
    unit: str = "run"
    show: bool = True


@dataclass
class Summary:
    """What a call saved and skipped (units), and the units that failed."""

    describe: Callable = str
    saved: int = 0
    skipped: int = 0
    failures: list = field(default_factory=list)

    def raise_failures(self, headline: str, rest: str) -> None:
        """One error naming each failed unit and its error, when any failed:
        ``"<n> <headline>: <unit> (<error>); ...; <rest>"``."""
        if self.failures:
            listed = "; ".join(f"{self.describe(f.unit)} ({f.error})" for f in self.failures)
            raise DataError(f"{len(self.failures)} {headline}: {listed}; {rest}")


def run_units(units: Iterable, work: Callable, save: Callable, *, args=(), executor=None,
              skip: Callable | None = None, size: Callable = lambda unit: 1, progress: Progress | None = None,
              describe: Callable = str, files=()) -> Summary:
    """Run ``work(unit, *args)`` for each of ``units``, in their order, through ``executor``
    (default: this process) and ``save(unit, outcome)`` each as it finishes (in completion order).

    ``args`` is a tuple, or a function of the unit called right before it is submitted (so what
    several units share, such as staged inputs, is prepared when the first of them starts).
    ``skip(unit)``, asked at that moment, drops a unit that another process has saved since the
    caller listed its pending ones.  ``size(unit)`` is what a unit counts on the progress bar;
    ``describe(unit)`` names it beside the bar while it runs, and among the failures.  On Ctrl-C
    the bar closes and, when ``files`` (the :class:`~functions.runs.store.ResultsFile` objects the
    units are saved in) are given, the stop becomes :class:`~functions.core.errors.Interrupted`
    saying how many runs they hold and that the same command resumes.
    """
    executor = executor or InProcess()
    summary = Summary(describe)
    bar = tqdm(total=progress.total if progress else 0, desc=progress.desc if progress else None,
               unit=progress.unit if progress else "unit",  # nothing to run: no empty bar
               disable=not (progress and progress.show) or progress.total == 0)

    def finished(outcomes) -> None:
        for unit, outcome in outcomes:
            if isinstance(outcome, Failure):
                summary.failures.append(outcome)
            else:
                save(unit, outcome)
                summary.saved += 1
            bar.update(size(unit))

    try:
        for unit in units:
            if skip is not None and skip(unit):
                summary.skipped += 1
                bar.update(size(unit))
                continue
            bar.set_postfix_str(describe(unit))
            executor.submit(work, unit, *(args(unit) if callable(args) else args))
            finished(executor.completed())  # what has finished is saved before the next unit starts
        finished(executor.completed(wait=True))
    except KeyboardInterrupt:
        if not files:
            raise
        held = sum(len(f.records) for f in files)
        raise Interrupted(f"interrupted: {held} runs are saved in {', '.join(str(f.path) for f in files)}; "
                          f"re-running the same command resumes from there") from None
    finally:
        bar.close()
    return summary
