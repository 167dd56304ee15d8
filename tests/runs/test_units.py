"""The one unit runner: pending units, saving each, failures, Ctrl-C and progress."""
import pytest

from functions.core.errors import DataError, Interrupted
from functions.runs.executors import Failure, InProcess
from functions.runs.store import ResultsFile
from functions.runs.units import Progress, run_units


def square(unit, offset=0):
    return unit * unit + offset


class FailingOn(InProcess):
    """An executor whose task for ``bad`` comes back as a failure, as a Ray task's does."""

    def __init__(self, bad):
        super().__init__()
        self.bad = bad

    def submit(self, work, unit, *args):
        self._done.append((unit, Failure(unit, "ValueError: bad unit") if unit == self.bad else work(unit, *args)))


def test_each_unit_is_saved_in_order_with_its_arguments():
    saved = []
    summary = run_units([1, 2, 3], square, lambda unit, out: saved.append((unit, out)), args=(10,))
    assert saved == [(1, 11), (2, 14), (3, 19)] and summary.saved == 3 and not summary.failures


def test_arguments_of_each_unit_are_asked_for_right_before_it_is_submitted():
    asked, saved = [], []

    def args(unit):
        asked.append((unit, list(saved)))
        return (unit,)

    run_units([1, 2], square, lambda unit, out: saved.append(out), args=args)
    assert asked == [(1, []), (2, [2])]


def test_units_saved_elsewhere_are_skipped_and_still_counted_on_the_bar():
    done = {2}
    seen, sizes = [], []
    summary = run_units([1, 2, 3], square, lambda unit, out: seen.append(unit), skip=done.__contains__,
                        size=lambda unit: sizes.append(unit) or 2, progress=Progress("test", 6, show=False))
    assert seen == [1, 3] and summary.skipped == 1 and sorted(sizes) == [1, 2, 3]


def test_failures_are_collected_while_the_others_are_saved():
    saved = []
    summary = run_units([1, 2, 3], square, lambda unit, out: saved.append(unit), executor=FailingOn(2),
                        describe=lambda unit: f"number {unit}")
    assert saved == [1, 3] and [f.unit for f in summary.failures] == [2]
    with pytest.raises(DataError, match=r"^1 unit\(s\) failed: number 2 \(ValueError: bad unit\); rerun them$"):
        summary.raise_failures("unit(s) failed", "rerun them")
    summary.failures.clear()
    summary.raise_failures("unit(s) failed", "rerun them")  # nothing failed: no error


def test_ctrl_c_says_how_many_runs_the_files_hold_and_that_a_rerun_resumes(tmp_path):
    file = ResultsFile(tmp_path / "results.json", {"p": 1}, key=lambda r: r["unit"])

    def work(unit):
        if unit == 3:
            raise KeyboardInterrupt
        return {"unit": unit}

    with pytest.raises(Interrupted, match=r"^interrupted: 2 runs are saved in .*results\.json; re-running the "
                                          r"same command resumes from there$"):
        run_units([1, 2, 3, 4], work, lambda unit, record: file.add(record), files=[file])
    again = ResultsFile(tmp_path / "results.json", {"p": 1}, key=lambda r: r["unit"])
    pending = [u for u in [1, 2, 3, 4] if u not in again.done()]
    assert pending == [3, 4]


def test_ctrl_c_without_results_files_stays_a_keyboard_interrupt():
    def work(unit):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_units([1], work, lambda unit, out: None)


def test_the_progress_bar_counts_each_unit_by_its_size_and_shows_the_unit_in_flight(monkeypatch):
    from functions.runs import units

    bars = []

    class Bar:
        def __init__(self, **options):
            self.options, self.n, self.postfix, self.closed = options, 0, [], False
            bars.append(self)

        def update(self, n):
            self.n += n

        def set_postfix_str(self, text):
            self.postfix.append(text)

        def close(self):
            self.closed = True

    monkeypatch.setattr(units, "tqdm", Bar)
    run_units([1, 2], square, lambda unit, out: None, size=lambda unit: 3, describe=lambda unit: f"unit {unit}",
              progress=Progress("squares", 6, "cell"))
    bar, = bars
    assert bar.options == {"total": 6, "desc": "squares", "unit": "cell", "disable": False}
    assert bar.n == 6 and bar.postfix == ["unit 1", "unit 2"] and bar.closed
    run_units([], square, lambda unit, out: None, progress=Progress("nothing pending", 0))
    assert bars[-1].options["disable"]  # a resumed sweep with nothing left prints no empty bar
