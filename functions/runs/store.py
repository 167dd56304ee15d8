"""The results store: one JSON file per sweep, written atomically, resumed, and refusing other parameters.

A results file is a JSON list: element 0 the parameters dict, then one record per run (design
notes, section 3).  Every computation that saves records (sweeps, clustering, sample
efficiency, the pipelines to come) keeps them in a :class:`ResultsFile`, so "resume where it
stopped" and "refuse a file written with other parameters, naming the keys" are written once.

Parameters carry a ``schema_version``.  A key that a file lacks because it was written before
that key existed counts as equal when the caller's ``legacy`` value for it (what the code did
before the key existed) equals the value asked for now; such a file is resumed and, at its next
write, stored with the current parameters.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from ..config import SCHEMA_KEY
from ..core.atomic import write_json_atomic
from ..core.errors import DataError
from ..core.paths import results_dir
from ..data.catalog import percentage_key


def results_path(folder: str, kind: str, setup_name: str, mode: str | None = None, profile: str = "quick") -> Path:
    """``<Folder>/results/baselines_<setup>.json`` or ``.../results_<setup>_<mode>.json`` (in the
    profile's own folder: see :func:`functions.core.paths.results_dir`)."""
    name = f"baselines_{setup_name}.json" if kind == "baselines" else f"results_{setup_name}_{mode}.json"
    return results_dir(folder, profile) / name


def load_results(path) -> tuple[dict, list[dict]]:
    """Parameters and run records of a results file (ours, or the upstream study's ``cuts_*``)."""
    path = Path(path)
    try:
        content = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DataError(f"{path} is not valid JSON ({err}); it is corrupt: restore it or delete it "
                        f"to re-run the sweep") from err
    if not isinstance(content, list) or not content or not isinstance(content[0], dict):
        raise DataError(f"{path} is not a results file: expected a JSON list starting with a parameters dict")
    return content[0], content[1:]


def _with_legacy(found: dict, wanted: dict, legacy: dict | None) -> dict:
    """``found`` plus the legacy value of each key asked for that it lacks."""
    return {**{k: v for k, v in (legacy or {}).items() if k in wanted and k not in found}, **found}


def differing_keys(found: dict, wanted: dict, legacy: dict | None = None) -> list[str]:
    """Keys whose values differ between stored parameters ``found`` and ``wanted``; a key missing
    from ``found`` takes its ``legacy`` value when it has one.  The schema version is not compared."""
    filled = _with_legacy(found, wanted, legacy)
    return sorted(k for k in set(filled) | set(wanted) if k != SCHEMA_KEY and filled.get(k) != wanted.get(k))


def refuse_other_parameters(path, found: dict, wanted: dict, legacy: dict | None = None) -> None:
    """Raise, naming each differing key with both values, when ``found`` is not ``wanted``."""
    filled = _with_legacy(found, wanted, legacy)
    diff = differing_keys(found, wanted, legacy)
    if diff:
        detail = ", ".join(f"{k}: file {filled.get(k)!r} vs now {wanted.get(k)!r}" for k in diff)
        raise DataError(f"{path} was written with different parameters ({detail}); "
                        f"move it away or run with the same parameters to resume")


def sweep_key(record: dict) -> tuple:
    """A sweep run's identity: (percentage, cut point, repeat)."""
    return percentage_key(record["sampled_percentage"]), int(record["sampled_cut_point"]), int(record["repeat"])


class ResultsFile:
    """One results file being filled: refuses other parameters, knows which runs are already present.

    ``key(record)`` names a run (default: :func:`sweep_key`); ``legacy`` gives, for parameters
    added after older files were written, the value the code used before them.
    """

    def __init__(self, path, params: dict, key: Callable[[dict], tuple] = sweep_key, legacy: dict | None = None):
        self.path, self.params, self.key, self.records = Path(path), params, key, []
        if self.path.exists():
            found, self.records = load_results(self.path)
            refuse_other_parameters(self.path, found, params, legacy)

    def done(self) -> set:
        return {self.key(r) for r in self.records}

    def add(self, *records: dict) -> None:
        """Append runs in one atomic write: the runs of one call land together or not at all."""
        self.records.extend(records)
        write_json_atomic(self.path, [self.params, *self.records])
