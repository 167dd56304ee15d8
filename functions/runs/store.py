"""The results store: one JSON file per sweep, merged under a lock, resumed, and refusing other parameters.

A results file is a JSON list: element 0 the parameters dict, then one record per run (design
notes, section 3).  Every computation that saves records (sweeps, clustering, sample
efficiency, the pipelines to come) keeps them in a :class:`ResultsFile`, so "resume where it
stopped" and "refuse a file written with other parameters, naming the keys" are written once.

Parameters carry a ``schema_version``.  A key that a file lacks because it was written before
that key existed counts as equal when the caller's ``legacy`` value for it (what the code did
before the key existed) equals the value asked for now; such a file is resumed and, at its next
write, stored with the current parameters.

Several processes may fill one file (two ``run`` commands with other cut points, notebooks side
by side): each write re-reads the file under its lock and adds only runs it lacks, so no process
loses another's.  A file damaged in the middle is repaired by :func:`salvage`.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Callable

from ..config import SCHEMA_KEY
from ..core.atomic import atomic_file, locked, write_json_atomic
from ..core.errors import DataError
from ..core.paths import results_dir
from ..data.catalog import percentage_key

# the sampled_cut_point of a baseline record: a network trained from scratch, no pretrained block kept
BASELINE_CUT = -1


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
        raise DataError(f"{path} is not valid JSON ({err}); it is corrupt: `python -m functions salvage {path}` "
                        f"keeps its readable runs (and the damaged file beside it); or restore it, or delete it "
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


def sweep_key(record: dict, where: str | None = None, also: tuple = ()) -> tuple:
    """A sweep run's identity: (percentage, cut point, repeat).

    A record that lacks one of them, or one of ``also`` (keys its caller reads next), is refused
    with the keys it lacks, named by ``where`` (e.g. "<file>: run record 3"; else by its content):
    a bare KeyError would surface far from the file, in a resumed sweep or a summary."""
    needed = ["sampled_percentage", "sampled_cut_point", "repeat", *also]
    missing = [k for k in needed if k not in record] if isinstance(record, dict) else needed
    if missing:
        content = repr(record)
        named = where or f"run record {content if len(content) <= 100 else content[:97] + '...'}"
        raise DataError(f"{named} lacks {missing}; every run record needs {needed}: restore the results file "
                        f"from a copy, or delete it (or move it away) to re-run its runs")
    return percentage_key(record["sampled_percentage"]), int(record["sampled_cut_point"]), int(record["repeat"])


class ResultsFile:
    """One results file being filled, possibly by several processes: refuses other parameters,
    knows which runs are on disk.

    ``key(record)`` names a run (default: :func:`sweep_key`); ``legacy`` gives, for parameters
    added after older files were written, the value the code used before them.  ``records`` is
    one list, updated in place, so a caller holding it sees what the file holds after each read.
    """

    def __init__(self, path, params: dict, key: Callable[[dict], tuple] = sweep_key, legacy: dict | None = None):
        self.path, self.params, self.key, self.legacy, self.records = Path(path), params, key, legacy, []
        self.refresh()

    def refresh(self) -> list[dict]:
        """The runs on disk now (another process may have added some), refusing other parameters."""
        if self.path.exists():
            found, records = load_results(self.path)
            refuse_other_parameters(self.path, found, self.params, self.legacy)
            self.records[:] = records
        return self.records

    def done(self) -> set:
        try:
            return {self.key(r) for r in self.refresh()}
        except DataError as err:  # a record the key cannot read: say which file holds it
            raise DataError(f"{self.path}: {err}") from None

    def add(self, *records: dict) -> list[dict]:
        """Merge runs into the file in one atomic write under its lock, so the runs of one call land
        together or not at all and no other process's runs are lost.  A run whose key the file
        already holds is dropped (the one on disk stays).  Returns the runs added."""
        with locked(self.path):
            seen, new = self.done(), []
            for record in records:
                if self.key(record) not in seen:
                    seen.add(self.key(record))
                    new.append(record)
            write_json_atomic(self.path, [self.params, *self.records, *new])
            self.records.extend(new)
        return new


def salvage(path) -> tuple[int, int, Path | None]:
    """Keep the parameters and every whole run of a damaged results file (cut short, or garbled
    in the middle), so an interrupted copy or a full disk costs only the runs it broke.  The
    damaged file is kept beside it as ``<name>.damaged``; the repaired one is written under the
    file's lock.  Returns the runs kept, the bytes that could not be read, and the copy's path
    (None when the file reads whole and is left as it is)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no results file {path}")
    with locked(path):
        raw = path.read_bytes()
        text = raw.decode("utf-8", "surrogateescape")
        values, damaged = _readable(text)
        if not values:
            raise DataError(f"cannot salvage {path}: its parameters (the list's first element) cannot be read; "
                            f"restore it from a copy or delete it")
        if not damaged:
            return len(values) - 1, 0, None
        unread = sum(len(text[start:end].encode("utf-8", "surrogateescape")) for start, end in damaged)
        copy = _unused(path.with_name(path.name + ".damaged"))
        with atomic_file(copy, "wb") as fh:
            fh.write(raw)
        write_json_atomic(path, values)
    return len(values) - 1, unread, copy


def _unused(path: Path) -> Path:
    """``path``, or ``path.2``, ``path.3``, ... when it exists: an earlier copy is never replaced."""
    n = 1
    while path.with_name(path.name + (f".{n}" if n > 1 else "")).exists():
        n += 1
    return path.with_name(path.name + (f".{n}" if n > 1 else ""))


_DECODER = json.JSONDecoder()
_SPACE = re.compile(r"\s*")
_NEXT_ELEMENT = re.compile(r",\s*\{")


def _readable(text: str) -> tuple[list[dict], list[tuple[int, int]]]:
    """The whole dicts of the JSON list in ``text``, in order, and the stretches ``(start, end)``
    that none of them covers (a missing closing bracket is an empty one at the end).  After a
    damaged element, reading resumes at the next ``{`` that follows a comma and parses as a whole
    dict followed by a list separator.  Nothing is read when the first element (the parameters)
    is damaged."""
    values, damaged = [], []
    at = text.find("[") + 1
    if at == 0:
        return [], [(0, len(text))]
    while True:
        at = _SPACE.match(text, at).end()
        if at == len(text):
            return values, damaged + [(at, at)]
        if text[at] == "]":
            rest = _SPACE.match(text, at + 1).end()
            return values, damaged + ([(rest, len(text))] if rest < len(text) else [])
        if values and text[at] == ",":
            at = _SPACE.match(text, at + 1).end()
        found = _dict_at(text, at)
        if found is None:
            if not values:
                return [], [(at, len(text))]
            resync = next((m for m in _NEXT_ELEMENT.finditer(text, at) if _dict_at(text, m.end() - 1)), None)
            damaged.append((at, resync.start() if resync else len(text.rstrip())))
            at = resync.end() - 1 if resync else len(text)
            continue
        value, at = found
        values.append(value)


def _dict_at(text: str, at: int) -> tuple[dict, int] | None:
    """The dict that starts at ``at`` and where it ends, when it is whole and a list separator
    (``,``, ``]`` or the end of the text) follows it."""
    try:
        value, end = _DECODER.raw_decode(text, at)
    except json.JSONDecodeError:
        return None
    after = _SPACE.match(text, end).end()
    following = text[after:after + 1]
    return (value, end) if isinstance(value, dict) and following in ("", ",", "]") else None
